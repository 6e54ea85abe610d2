//! Engine throughput: how many events per second the `faultline-sim` engine processes,
//! next to other ways of doing the same virtual-time work.
//!
//! Three workloads, one criterion group each, every one reported as events per second
//! (`Throughput::Elements` = events in the workload):
//!
//! - `engine/sequential_timers`: one actor, 1,000,000 sequential 1 ms timers (each, when
//!   it fires, schedules the next). The queue never holds more than one timer.
//! - `engine/many_actors`: 1,000 actors x 1,000 timers each, each actor with one timer
//!   outstanding (about 1,000 pending), durations from a seeded counter-based RNG
//!   ([`duration_ms`]): the `n`-th duration of an actor is a hash of `(seed, actor, n)`,
//!   the same few instructions for every implementation and no memory read. (Until
//!   issue 20 they were drawn into an 8 MB table read actor by actor; that read missed
//!   the cache on nearly every event, was the largest cost of every implementation, the
//!   bare heap's too, and hid the queue being measured.)
//! - `engine/ping_pong`: 1,000,000 messages between two actors, 1 ms latency per hop.
//!
//! Each group compares, on the same work:
//!
//! - `faultline_sim`: a [`World`] run by [`Simulation`] (trace off, healthy plan, so the
//!   whole run is the liveness phase and `is_quiescent` is asked after every event);
//! - `tokio_paused`: tasks on a current-thread tokio runtime with paused (auto-advancing)
//!   time, `tokio::time::sleep` as the timer and `tokio::sync::mpsc` as the link;
//! - `bare_heap`: the floor, a hand-written loop over a `BinaryHeap` of
//!   `Reverse<(time, seq, payload)>` with no engine around it;
//! - `turmoil_udp` (ping-pong only): UDP between two turmoil hosts over a 1 ms link.
//!
//! Run with `cargo bench --bench engine`; `cargo bench --bench engine -- --test` runs
//! each function once as a smoke test (that is what CI does).

// Bench code, not user input: a failed setup or a wrong count should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use faultline_sim::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Timers in the sequential workload.
const SEQ_TIMERS: u64 = 1_000_000;
/// Actors in the many-actors workload.
const ACTORS: usize = 1_000;
/// Timers per actor in the many-actors workload.
const TIMERS_PER_ACTOR: usize = 1_000;
/// Messages (hops) in the ping-pong workload (even: each round trip is two).
const PING_PONG_MSGS: u64 = 1_000_000;
/// Messages for turmoil, which is far slower: fewer of them keep the bench quick, and
/// its own `Throughput` keeps its events/s comparable with the others.
const TURMOIL_MSGS: u64 = 20_000;
/// Seed of the many-actors durations (and of turmoil).
const SEED: u64 = 0x5eed;
/// One millisecond in nanoseconds (the heap's time unit).
const MS: u64 = 1_000_000;

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// A simulation whose bounds never trip on these workloads.
fn simulation() -> Simulation {
    Simulation::new(SEED)
        .plan(FaultPlan::healthy(0))
        .trace(TraceMode::Off)
        .events_max(10_000_000)
        .liveness_max(SimDuration::from_secs(10_000_000))
}

/// Checks a faultline run passed and processed `world_events` events plus the horizon.
fn check(report: &RunReport, world_events: u64) {
    report.assert_pass();
    // +1: the engine's own horizon event (at time zero with a healthy(0) plan).
    assert_eq!(report.events, world_events + 1, "wrong event count");
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// (a) sequential timers
// ---------------------------------------------------------------------------------

struct Sequential {
    fired: u64,
}

impl World for Sequential {
    type Event = ();
    fn start(&mut self, ctx: &mut Ctx<()>) -> Result<(), Violation> {
        ctx.schedule_in(SimDuration::from_millis(1), ());
        Ok(())
    }
    #[inline]
    fn handle(&mut self, ctx: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
        self.fired += 1;
        if self.fired < SEQ_TIMERS {
            ctx.schedule_in(SimDuration::from_millis(1), ());
        }
        Ok(())
    }
    #[inline]
    fn is_quiescent(&self, _: &Ctx<()>) -> bool {
        self.fired == SEQ_TIMERS
    }
}

fn sequential_heap() -> u64 {
    let mut heap: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::with_capacity(16);
    let mut seq = 0u64;
    heap.push(Reverse((MS, seq, 0)));
    seq += 1;
    let mut fired = 0u64;
    let mut now = 0u64;
    while let Some(Reverse((t, _, actor))) = heap.pop() {
        now = t;
        fired += 1;
        if fired < SEQ_TIMERS {
            heap.push(Reverse((t + MS, seq, actor)));
            seq += 1;
        }
    }
    assert_eq!(fired, SEQ_TIMERS);
    now
}

fn bench_sequential(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/sequential_timers");
    configure(&mut group);
    group.throughput(Throughput::Elements(SEQ_TIMERS));

    group.bench_function("faultline_sim", |b| {
        let sim = simulation();
        b.iter(|| {
            let mut world = Sequential { fired: 0 };
            let report = sim.run(&mut world);
            check(&report, SEQ_TIMERS);
            black_box(report.end)
        })
    });

    group.bench_function("tokio_paused", |b| {
        b.iter(|| {
            let rt = paused_runtime();
            let fired = rt.block_on(async {
                let mut fired = 0u64;
                for _ in 0..SEQ_TIMERS {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    fired += 1;
                }
                fired
            });
            assert_eq!(fired, SEQ_TIMERS);
            black_box(fired)
        })
    });

    group.bench_function("bare_heap", |b| b.iter(|| black_box(sequential_heap())));

    group.finish();
}

// ---------------------------------------------------------------------------------
// (b) many actors
// ---------------------------------------------------------------------------------

/// The `n`-th timer duration of `actor`, in milliseconds, uniform in 1..=1000:
/// SplitMix64's finalizer over `(SEED, actor, n)`, a counter-based generator (no state,
/// no memory read).
///
/// Milliseconds rather than microseconds because tokio's timer wheel has a 1 ms
/// resolution: sub-millisecond sleeps would be rounded up and fired in batches, so
/// tokio would be doing different (easier) work than the others.
#[inline(always)]
fn duration_ms(actor: usize, n: usize) -> u64 {
    let mut z = SEED ^ ((actor as u64) << 32 | n as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    1 + (((z >> 32) * 1_000) >> 32)
}

struct ManyActors {
    /// Timers fired so far, per actor.
    fired: Vec<u32>,
    /// Timers still to fire, over all actors.
    remaining: u64,
}

impl ManyActors {
    fn new() -> ManyActors {
        ManyActors {
            fired: vec![0; ACTORS],
            remaining: (ACTORS * TIMERS_PER_ACTOR) as u64,
        }
    }
}

impl World for ManyActors {
    /// The actor whose timer fired.
    type Event = u32;
    fn start(&mut self, ctx: &mut Ctx<u32>) -> Result<(), Violation> {
        for actor in 0..ACTORS {
            let d = duration_ms(actor, 0);
            ctx.schedule_in(SimDuration::from_millis(d), actor as u32);
        }
        Ok(())
    }
    #[inline]
    fn handle(&mut self, ctx: &mut Ctx<u32>, actor: u32) -> Result<(), Violation> {
        self.remaining -= 1;
        let a = actor as usize;
        self.fired[a] += 1;
        let n = self.fired[a] as usize;
        if n < TIMERS_PER_ACTOR {
            let d = duration_ms(a, n);
            ctx.schedule_in(SimDuration::from_millis(d), actor);
        }
        Ok(())
    }
    #[inline]
    fn is_quiescent(&self, _: &Ctx<u32>) -> bool {
        self.remaining == 0
    }
}

fn many_actors_heap() -> u64 {
    let mut heap: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::with_capacity(ACTORS);
    let mut fired = vec![0u32; ACTORS];
    let mut seq = 0u64;
    for actor in 0..ACTORS {
        heap.push(Reverse((duration_ms(actor, 0) * MS, seq, actor as u32)));
        seq += 1;
    }
    let mut total = 0u64;
    let mut now = 0u64;
    while let Some(Reverse((t, _, actor))) = heap.pop() {
        now = t;
        total += 1;
        let a = actor as usize;
        fired[a] += 1;
        let n = fired[a] as usize;
        if n < TIMERS_PER_ACTOR {
            heap.push(Reverse((t + duration_ms(a, n) * MS, seq, actor)));
            seq += 1;
        }
    }
    assert_eq!(total, (ACTORS * TIMERS_PER_ACTOR) as u64);
    now
}

fn bench_many_actors(c: &mut Criterion) {
    let events = (ACTORS * TIMERS_PER_ACTOR) as u64;

    let mut group = c.benchmark_group("engine/many_actors");
    configure(&mut group);
    group.throughput(Throughput::Elements(events));

    group.bench_function("faultline_sim", |b| {
        let sim = simulation();
        b.iter(|| {
            let mut world = ManyActors::new();
            let report = sim.run(&mut world);
            check(&report, events);
            black_box(report.end)
        })
    });

    group.bench_function("tokio_paused", |b| {
        b.iter(|| {
            let rt = paused_runtime();
            let total = rt.block_on(async {
                let mut tasks = Vec::with_capacity(ACTORS);
                for actor in 0..ACTORS {
                    tasks.push(tokio::spawn(async move {
                        for n in 0..TIMERS_PER_ACTOR {
                            let d = duration_ms(actor, n);
                            tokio::time::sleep(Duration::from_millis(d)).await;
                        }
                        TIMERS_PER_ACTOR as u64
                    }));
                }
                let mut total = 0u64;
                for t in tasks {
                    total += t.await.unwrap();
                }
                total
            });
            assert_eq!(total, events);
            black_box(total)
        })
    });

    group.bench_function("bare_heap", |b| b.iter(|| black_box(many_actors_heap())));

    group.finish();
}

// ---------------------------------------------------------------------------------
// (c) ping-pong
// ---------------------------------------------------------------------------------

struct PingPong {
    hops: u64,
}

impl World for PingPong {
    /// The actor (0 or 1) the message is delivered to.
    type Event = u8;
    fn start(&mut self, ctx: &mut Ctx<u8>) -> Result<(), Violation> {
        // Actor 0 sends the first message to actor 1.
        ctx.schedule_in(SimDuration::from_millis(1), 1);
        Ok(())
    }
    #[inline]
    fn handle(&mut self, ctx: &mut Ctx<u8>, to: u8) -> Result<(), Violation> {
        self.hops += 1;
        if self.hops < PING_PONG_MSGS {
            // The receiver replies to the other side.
            ctx.schedule_in(SimDuration::from_millis(1), 1 - to);
        }
        Ok(())
    }
    #[inline]
    fn is_quiescent(&self, _: &Ctx<u8>) -> bool {
        self.hops == PING_PONG_MSGS
    }
}

fn ping_pong_heap() -> u64 {
    let mut heap: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::with_capacity(16);
    let mut seq = 0u64;
    heap.push(Reverse((MS, seq, 1)));
    seq += 1;
    let mut hops = 0u64;
    let mut now = 0u64;
    while let Some(Reverse((t, _, to))) = heap.pop() {
        now = t;
        hops += 1;
        if hops < PING_PONG_MSGS {
            heap.push(Reverse((t + MS, seq, 1 - to)));
            seq += 1;
        }
    }
    assert_eq!(hops, PING_PONG_MSGS);
    now
}

/// Ping-pong on tokio: each hop is `sleep(1 ms)` (the link latency) then a send.
fn ping_pong_tokio() -> u64 {
    let rt = paused_runtime();
    rt.block_on(async {
        let (to_b, mut at_b) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_a, mut at_a) = tokio::sync::mpsc::channel::<u64>(1);
        let a = tokio::spawn(async move {
            let mut hops = 0u64;
            while hops < PING_PONG_MSGS {
                tokio::time::sleep(Duration::from_millis(1)).await;
                to_b.send(hops).await.unwrap();
                hops = at_a.recv().await.unwrap();
            }
            hops
            // Dropping `to_b` here ends B's loop.
        });
        let b = tokio::spawn(async move {
            while let Some(hops) = at_b.recv().await {
                tokio::time::sleep(Duration::from_millis(1)).await;
                // Both hops (A's and this one) are done once this arrives.
                to_a.send(hops + 2).await.unwrap();
            }
        });
        let hops = a.await.unwrap();
        b.await.unwrap();
        assert_eq!(hops, PING_PONG_MSGS);
        hops
    })
}

const PORT: u16 = 7_000;

/// Ping-pong over turmoil's simulated UDP: `TURMOIL_MSGS / 2` round trips, 1 ms per hop.
fn ping_pong_turmoil() -> u64 {
    let mut sim = turmoil::Builder::new()
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(1_000_000))
        .rng_seed(SEED)
        .build();
    sim.host("server", || async {
        let sock = turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
        let mut buf = [0u8; 8];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            sock.send_to(&buf[..n], from).await?;
        }
    });
    let hops = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counted = hops.clone();
    sim.client("client", async move {
        let sock = turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
        let server = (turmoil::lookup("server"), PORT);
        let mut buf = [0u8; 8];
        for i in 0..TURMOIL_MSGS / 2 {
            sock.send_to(&i.to_le_bytes(), server).await?;
            let (n, _) = sock.recv_from(&mut buf).await?;
            assert_eq!(u64::from_le_bytes(buf[..n].try_into()?), i);
            counted.set(counted.get() + 2);
        }
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(hops.get(), TURMOIL_MSGS);
    hops.get()
}

fn bench_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/ping_pong");
    configure(&mut group);
    group.throughput(Throughput::Elements(PING_PONG_MSGS));

    group.bench_function("faultline_sim", |b| {
        let sim = simulation();
        b.iter(|| {
            let mut world = PingPong { hops: 0 };
            let report = sim.run(&mut world);
            check(&report, PING_PONG_MSGS);
            black_box(report.end)
        })
    });

    group.bench_function("tokio_paused", |b| b.iter(|| black_box(ping_pong_tokio())));

    group.bench_function("bare_heap", |b| b.iter(|| black_box(ping_pong_heap())));

    // Turmoil is much slower per message: it runs TURMOIL_MSGS (not PING_PONG_MSGS)
    // messages, and its own Throughput says so, so events/s stays comparable.
    group.throughput(Throughput::Elements(TURMOIL_MSGS));
    group.bench_function("turmoil_udp", |b| b.iter(|| black_box(ping_pong_turmoil())));

    group.finish();
}

criterion_group!(
    benches,
    bench_sequential,
    bench_many_actors,
    bench_ping_pong
);
criterion_main!(benches);
