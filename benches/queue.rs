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
//!     dead letters.
//! - `queue/pool`: [`TASKS`] tasks through 4 worker tasks on a current-thread runtime,
//!   each delivery an `async` function that returns `Ok` at once. Includes spawning the
//!   workers and shutting them down (a few microseconds per iteration).
//!   - `faultline`: [`WorkerPool`] over a [`SharedQueue`]: lease, deliver (with the
//!     heartbeat timer armed), ack; `settled` then `shutdown`.
//!   - `mpsc_workers`: the peer: a `tokio::sync::mpsc` channel whose receiver the 4
//!     workers share behind a `tokio::sync::Mutex`; a task is "acked" by counting it.
//!     Nothing survives a crash and nothing is retried.
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
use faultline::queue::{Job as Task, Queue, QueueConfig};
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
    group.finish();
}

fn world(c: &mut Criterion) {
    support::world_events(c, "queue/world", &QueuePattern, WORLD_SEED);
}

criterion_group!(benches, core, pool, world);
criterion_main!(benches);
