//! Task queue throughput: enqueue + lease + ack operations per second for the sans-IO
//! core and for the tokio worker pool, each next to the queue a Rust user would
//! otherwise write; and simulated events per second of the profile-sync world.
//!
//! - `queue/core`: every iteration enqueues [`TASKS`] tasks (distinct (profile, target)
//!   keys, so nothing coalesces), then leases and acks each one. Throughput is in tasks
//!   (one enqueue + one lease + one ack each). Time is a constant [`Instant`].
//!   - `faultline`: the reference [`Queue`] (leases with deadlines and fencing tokens,
//!     per-key coalescing, conservation counters, the write-through store).
//!   - `vecdeque_heap`: the hand-rolled peer: a `VecDeque` of ready tasks, a `HashMap`
//!     of leased ones by lease id, and a `BinaryHeap` of lease deadlines for the
//!     visibility timeout (checked on every lease), no coalescing, no fencing, no
//!     dead letters. It does less work than `faultline`: no lookup by key at all (it
//!     hashes a `u64` lease id), no version check, no fencing token, no attempts, no
//!     counters; a lighter bound, not the same work.
//!   - `same_work`: the peer that does the same work by hand ([`SameWork`], under a
//!     hundred lines): per-key coalescing and duplicate refusal over every key ever
//!     accepted (one `HashMap` by [`JobKey`]), a fencing token checked with the
//!     deadline on ack, lease deadlines in a `BinaryHeap` checked on every lease
//!     (expiry is a failed attempt), retries with attempts (a capped exponential
//!     backoff in a second heap) and a dead-letter list, conservation counters. Still
//!     lighter than `faultline` in what it does not keep: no durable store (nor its
//!     clock and origin), no attempt history, no redrive, no per-target limit, no
//!     jitter, and `HashMap` order where the core's is deterministic (due, key).
//! - `queue/pool`: [`TASKS`] tasks through 4 worker tasks on a current-thread runtime,
//!   each delivery an `async` function that returns `Ok` at once. Includes spawning the
//!   workers and shutting them down (a few microseconds per iteration).
//!   - `faultline`: [`WorkerPool`] over a [`SharedQueue`]: lease, deliver (with the
//!     heartbeat timer armed), ack; `settled` then `shutdown`.
//!   - `mpsc_workers`: the peer: a `tokio::sync::mpsc` channel whose receiver the 4
//!     workers share behind a `tokio::sync::Mutex`; a task is "acked" by counting it.
//!     Nothing survives a crash and nothing is retried: less work than `faultline`.
//!   - `same_work`: the same-work peer: the [`SameWork`] queue behind a
//!     `std::sync::Mutex`, the 4 workers leasing with a deadline and a fencing token
//!     and acking with it, an idle worker parked on a `Notify` each enqueue pings. (No
//!     heartbeat timer, no shutdown report, no store.)
//! - `queue/world`: the whole simulated profile-sync world of seed 7 (its knobs and its
//!   fault plan, trace off) through `faultline_sim::Simulation` with the reference
//!   bounds. Throughput is in simulated events.
//!
//! Setup is outside the timed part where criterion allows; every figure is checked
//! once before it is measured.
//!
//! Run with `cargo bench --bench queue`; `cargo bench --bench queue -- --test` runs
//! each function once as a smoke test.

// Bench code, not user input: a failed setup or a wrong count should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/mod.rs"]
mod support;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use faultline::clock::Instant;
use faultline::queue::pattern::QueuePattern;
use faultline::queue::profile::{self, ProfileId, TargetId};
use faultline::queue::tokio::{PoolConfig, SharedQueue, WorkerPool};
use faultline::queue::{Job as Task, JobKey, LeaseToken, Queue, QueueConfig};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Tasks per iteration.
const TASKS: u64 = 1_000;
/// Workers in the pool benchmarks.
const WORKERS: usize = 4;
/// The world's seed (the golden seed).
const WORLD_SEED: u64 = 7;

fn task(i: u64) -> Task {
    profile::job(ProfileId(i / 4), TargetId((i % 4) as u32), 1)
}

fn config() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn core_run(queue: &mut Queue) -> u64 {
    let now = Instant::from_millis(1);
    for i in 0..TASKS {
        queue.enqueue(task(i), now);
    }
    let mut n = 0;
    while let Some(lease) = queue.lease(now) {
        queue.ack(&lease.token, now).unwrap();
        n += 1;
    }
    assert_eq!(n, TASKS);
    n
}

/// The peer: what a Rust user writes for "a queue with a visibility timeout".
#[derive(Default)]
struct HandRolled {
    ready: VecDeque<Task>,
    leased: HashMap<u64, (Task, Instant)>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
}

impl HandRolled {
    fn enqueue(&mut self, task: Task) {
        self.ready.push_back(task);
    }
    fn lease(&mut self, now: Instant, visibility: Duration) -> Option<(u64, Task)> {
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some((task, _)) = self.leased.remove(&id) {
                self.ready.push_back(task);
            }
        }
        let task = self.ready.pop_front()?;
        self.next_id += 1;
        let deadline = now + visibility;
        self.leased.insert(self.next_id, (task.clone(), deadline));
        self.deadlines.push(Reverse((deadline, self.next_id)));
        Some((self.next_id, task))
    }
    fn ack(&mut self, id: u64) -> bool {
        self.leased.remove(&id).is_some()
    }
}

fn hand_rolled_run(queue: &mut HandRolled) -> u64 {
    let now = Instant::from_millis(1);
    let visibility = Duration::from_secs(30);
    for i in 0..TASKS {
        queue.enqueue(task(i));
    }
    let mut n = 0;
    while let Some((id, _task)) = queue.lease(now, visibility) {
        assert!(queue.ack(id));
        n += 1;
    }
    queue.deadlines.clear();
    assert_eq!(n, TASKS);
    n
}

/// The same-work peer: what a Rust user writes for the queue's promises, by hand (under
/// a hundred lines). Per key (every key ever accepted, in one `HashMap`): its highest
/// version (an older or equal one is a duplicate) and its job; a newer version
/// coalesces with a waiting one or waits behind a leased one. Leases carry a fencing
/// token checked with the deadline on ack and nack; the deadlines sit in a
/// `BinaryHeap` checked on every lease (an expired lease is a failed attempt). A failed
/// attempt is retried after a capped exponential backoff (a second heap; no jitter)
/// or, after `ATTEMPTS_MAX`, goes to a dead-letter list with its error; the counters
/// balance. No durable store, no history of attempts, no redrive, no per-target limit.
#[derive(Default)]
struct SameWork {
    keys: Keys,
    ready: VecDeque<JobKey>,
    retries: BinaryHeap<Reverse<(Instant, JobKey)>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, JobKey)>>,
    dead: Vec<(Task, String)>,
    fence_next: u64,
    /// enqueued, done, superseded, dead.
    counts: [u64; 4],
}

struct Live {
    task: Task,
    attempts: u32,
    lease: Option<(u64, Instant)>,
    next: Option<Task>,
}

type Keys = HashMap<JobKey, (u64, Option<Live>)>;

/// The job of lease `fence` on `key` if it is the current lease, unexpired at `by`.
fn leased(
    keys: &mut Keys,
    key: JobKey,
    fence: u64,
    by: Option<Instant>,
) -> Option<&mut Option<Live>> {
    let (_, slot) = keys.get_mut(&key)?;
    let (f, deadline) = slot.as_ref()?.lease?;
    (f == fence && by.is_none_or(|by| deadline > by)).then_some(slot)
}

fn live(task: Task) -> Option<Live> {
    let (attempts, lease, next) = (0, None, None);
    Some(Live {
        task,
        attempts,
        lease,
        next,
    })
}

impl SameWork {
    const ATTEMPTS_MAX: u32 = 25;
    fn enqueue(&mut self, task: Task) -> bool {
        let (high, slot) = self.keys.entry(task.key).or_insert((0, None));
        if *high >= task.version {
            return false;
        }
        *high = task.version;
        self.counts[0] += 1;
        match slot {
            Some(l) if l.lease.is_some() => {
                self.counts[2] += u64::from(l.next.replace(task).is_some())
            }
            Some(l) => (self.counts[2], l.task, l.attempts) = (self.counts[2] + 1, task, 0),
            None => {
                self.ready.push_back(task.key);
                *slot = live(task);
            }
        }
        true
    }
    fn lease(&mut self, now: Instant, visibility: Duration) -> Option<(LeaseToken, Task)> {
        while let Some(&Reverse((deadline, fence, key))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            self.nack(key, fence, None, now, "lease expired");
        }
        while let Some(&Reverse((_, key))) = self.retries.peek().filter(|r| r.0.0 <= now) {
            self.retries.pop();
            self.ready.push_back(key);
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(l) = self.keys.get_mut(&key).and_then(|(_, l)| l.as_mut()) else {
                continue;
            };
            let (fence, deadline) = (self.fence_next + 1, now + visibility);
            (self.fence_next, l.lease, l.attempts) =
                (fence, Some((fence, deadline)), l.attempts + 1);
            self.deadlines.push(Reverse((deadline, fence, key)));
            return Some((LeaseToken::new(key, fence), l.task.clone()));
        }
        None
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> bool {
        let Some(slot) = leased(&mut self.keys, token.key(), token.fence(), Some(now)) else {
            return false;
        };
        let next = slot.as_mut().and_then(|l| l.next.take());
        let due = next.is_some();
        *slot = next.and_then(live);
        self.counts[1] += 1;
        if due {
            self.ready.push_back(token.key());
        }
        true
    }
    /// Lease `fence` on `key` failed: a nack (its lease checked unexpired at `by`) or an
    /// expiry (`by` is `None`).
    fn nack(
        &mut self,
        key: JobKey,
        fence: u64,
        by: Option<Instant>,
        now: Instant,
        error: &str,
    ) -> bool {
        let Some(slot) = leased(&mut self.keys, key, fence, by) else {
            return false;
        };
        let l = slot.as_mut().unwrap();
        if let Some(next) = l.next.take() {
            self.counts[2] += 1;
            *slot = live(next);
            self.ready.push_back(key);
        } else if l.attempts >= Self::ATTEMPTS_MAX {
            self.counts[3] += 1;
            self.dead
                .push((slot.take().unwrap().task, error.to_owned()));
        } else {
            l.lease = None;
            let backoff = Duration::from_millis(100 << l.attempts.min(7));
            self.retries
                .push(Reverse((now + backoff.min(Duration::from_secs(10)), key)));
        }
        true
    }
}

fn same_work_run(queue: &mut SameWork) -> u64 {
    let now = Instant::from_millis(1);
    let visibility = Duration::from_secs(30);
    for i in 0..TASKS {
        assert!(queue.enqueue(task(i)));
    }
    let mut n = 0;
    while let Some((token, _task)) = queue.lease(now, visibility) {
        assert!(queue.ack(&token, now));
        n += 1;
    }
    assert_eq!(n, TASKS);
    assert_eq!(
        queue.counts[0],
        queue.counts[1] + queue.counts[2] + queue.counts[3]
    );
    n
}

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue/core");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(TASKS));
    group.bench_function("faultline", |b| {
        b.iter_batched(
            || Queue::new(config()),
            |mut q| {
                black_box(core_run(&mut q));
                q
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("vecdeque_heap", |b| {
        b.iter_batched(
            HandRolled::default,
            |mut q| {
                black_box(hand_rolled_run(&mut q));
                q
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("same_work", |b| {
        b.iter_batched(
            SameWork::default,
            |mut q| {
                black_box(same_work_run(&mut q));
                q
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

async fn pool_run() -> u64 {
    let queue = SharedQueue::new(config());
    let pool_config = PoolConfig::builder()
        .workers(WORKERS)
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let delivered = Arc::new(AtomicU64::new(0));
    let pool = WorkerPool::spawn(&queue, pool_config, {
        let delivered = Arc::clone(&delivered);
        move |_lease| {
            delivered.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), &str>(()) }
        }
    })
    .unwrap();
    for i in 0..TASKS {
        queue.enqueue(task(i));
    }
    queue.settled().await;
    let report = pool.shutdown().await;
    assert_eq!(report.delivered, TASKS);
    assert_eq!(delivered.load(Ordering::Relaxed), TASKS);
    TASKS
}

async fn mpsc_run() -> u64 {
    let (tx, rx) = tokio::sync::mpsc::channel::<Task>(TASKS as usize);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let rx = Arc::clone(&rx);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(task) = next else { break };
                    let deliver = async move { Ok::<Task, ()>(task) };
                    if deliver.await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for i in 0..TASKS {
        tx.send(task(i)).await.unwrap();
    }
    drop(tx);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), TASKS);
    TASKS
}

/// The same-work pool peer: [`SameWork`] behind a `std::sync::Mutex`, 4 worker tasks
/// that lease (with a deadline and a fencing token), deliver, and ack with the token;
/// an idle worker waits on a `tokio::sync::Notify` that each enqueue pings.
async fn same_work_pool_run() -> u64 {
    let queue = Arc::new((
        std::sync::Mutex::new(SameWork::default()),
        tokio::sync::Notify::new(),
    ));
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = tokio::time::Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (queue, closed) = (Arc::clone(&queue), Arc::clone(&closed));
            tokio::spawn(async move {
                let (mut done, visibility) = (0u64, Duration::from_secs(30));
                loop {
                    let idle = queue.1.notified();
                    tokio::pin!(idle);
                    idle.as_mut().enable();
                    let now = Instant::from_nanos(start.elapsed().as_nanos() as u64);
                    let leased = queue.0.lock().unwrap().lease(now, visibility);
                    let Some((token, task)) = leased else {
                        if closed.load(Ordering::Acquire) {
                            break done;
                        }
                        idle.await;
                        continue;
                    };
                    if async move { Ok::<Task, ()>(task) }.await.is_ok() {
                        done += u64::from(queue.0.lock().unwrap().ack(&token, now));
                    }
                }
            })
        })
        .collect();
    for i in 0..TASKS {
        queue.0.lock().unwrap().enqueue(task(i));
        queue.1.notify_one();
    }
    closed.store(true, Ordering::Release);
    queue.1.notify_waiters();
    let mut done = 0;
    for w in workers {
        done += w.await.unwrap();
    }
    assert_eq!(done, TASKS);
    TASKS
}

fn pool(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("queue/pool");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(TASKS));
    group.bench_function("faultline", |b| {
        b.iter(|| black_box(runtime.block_on(pool_run())));
    });
    group.bench_function("mpsc_workers", |b| {
        b.iter(|| black_box(runtime.block_on(mpsc_run())));
    });
    group.bench_function("same_work", |b| {
        b.iter(|| black_box(runtime.block_on(same_work_pool_run())));
    });
    group.finish();
}

fn world(c: &mut Criterion) {
    support::world_events(c, "queue/world", &QueuePattern, WORLD_SEED);
}

criterion_group!(benches, core, pool, world);
criterion_main!(benches);
