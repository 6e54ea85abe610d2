//! Worker isolation, on tokio's paused clock: a sick target (it answers after 3 s)
//! must not starve a healthy one (it answers in 5 ms) when the queue limits the
//! leases per target; without the limit it does (which shows the test can fail).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::tokio::time::Instant as TokioInstant;

use super::{PoolConfig, SharedQueue, WorkerPool};
use crate::name::Name;
use crate::queue::core::{Job, JobId, JobKey, JobType, Lease, Payload, QueueConfig};
use crate::rt::lock;

const SYNC: JobType = JobType::from_static("sync");
const HEALTHY: Name = Name::from_static("healthy");
const SICK: Name = Name::from_static("sick");

/// One healthy and one sick job every `EVERY`, `ROUNDS` times (10 s).
const ROUNDS: u64 = 100;
const EVERY: Duration = Duration::from_millis(100);
const WORKERS: usize = 4;
const HEALTHY_ANSWER: Duration = Duration::from_millis(5);

/// What one run measured.
struct Run {
    /// The healthy target's propagation lags (enqueue to delivered; the ack follows
    /// at the same instant), sorted.
    lags: Vec<Duration>,
    /// The most deliveries to the sick target at once, as the target saw them.
    sick_at_once_max: u32,
}

impl Run {
    fn p50(&self) -> Duration {
        self.lags[self.lags.len() / 2]
    }
}

/// Runs the scenario: 4 workers, the sick target answering after `sick_answer`, the
/// queue limiting the leases per target to `limit` (or not).
async fn run(sick_answer: Duration, limit: Option<u32>) -> Run {
    let mut config = QueueConfig::builder().visibility_timeout(Duration::from_secs(30));
    if let Some(n) = limit {
        config = config.leases_per_target_max(n);
    }
    let queue = SharedQueue::new(config.build().unwrap());
    let enqueued: Arc<Mutex<BTreeMap<JobKey, TokioInstant>>> = Arc::default();
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let sick_now = Arc::new(AtomicU32::new(0));
    let sick_max = Arc::new(AtomicU32::new(0));
    let pool = WorkerPool::spawn(
        &queue,
        PoolConfig::builder()
            .workers(WORKERS)
            .poll_interval(Duration::from_millis(50))
            .build()
            .unwrap(),
        {
            let enqueued = Arc::clone(&enqueued);
            let lags = Arc::clone(&lags);
            let sick_now = Arc::clone(&sick_now);
            let sick_max = Arc::clone(&sick_max);
            move |lease: Lease| {
                let enqueued = Arc::clone(&enqueued);
                let lags = Arc::clone(&lags);
                let sick_now = Arc::clone(&sick_now);
                let sick_max = Arc::clone(&sick_max);
                async move {
                    if lease.job.target == Some(SICK) {
                        let n = sick_now.fetch_add(1, Ordering::SeqCst) + 1;
                        sick_max.fetch_max(n, Ordering::SeqCst);
                        ::tokio::time::sleep(sick_answer).await;
                        sick_now.fetch_sub(1, Ordering::SeqCst);
                    } else {
                        ::tokio::time::sleep(HEALTHY_ANSWER).await;
                        let at = lock(&enqueued)
                            .get(&lease.job.key)
                            .copied()
                            .ok_or("a job nobody enqueued")?;
                        lock(&lags).push(at.elapsed());
                    }
                    Ok::<(), &str>(())
                }
            }
        },
    )
    .unwrap();
    for round in 0..ROUNDS {
        for (i, target) in [HEALTHY, SICK].into_iter().enumerate() {
            let job = Job::unique(SYNC, JobId(2 * round + i as u64), Payload::default())
                .for_target(target);
            lock(&enqueued).insert(job.key, TokioInstant::now());
            queue.enqueue(job);
        }
        ::tokio::time::sleep(EVERY).await;
    }
    // Every healthy job delivered, within a bound (the sick backlog may remain).
    let give_up = TokioInstant::now() + Duration::from_secs(1_000);
    while lock(&lags).len() < ROUNDS as usize && TokioInstant::now() < give_up {
        ::tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.shutdown().await;
    let mut lags = lock(&lags).clone();
    assert_eq!(
        lags.len(),
        ROUNDS as usize,
        "every healthy job was delivered"
    );
    lags.sort();
    Run {
        lags,
        sick_at_once_max: sick_max.load(Ordering::SeqCst),
    }
}

#[::tokio::test(start_paused = true)]
async fn a_per_target_limit_keeps_the_healthy_targets_lag_while_another_target_is_sick() {
    let baseline = run(HEALTHY_ANSWER, None).await;
    let limited = run(Duration::from_secs(3), Some(2)).await;
    let unlimited = run(Duration::from_secs(3), None).await;
    let (b, l, u) = (baseline.p50(), limited.p50(), unlimited.p50());
    assert!(
        l <= 2 * b,
        "with 2 leases per target, the healthy p50 is {l:?}, more than 2x the all-healthy {b:?}"
    );
    assert!(
        u > 2 * b,
        "without the limit the sick target should starve the healthy one: p50 {u:?} vs {b:?}"
    );
    assert!(
        limited.sick_at_once_max <= 2,
        "the sick target saw {} deliveries at once",
        limited.sick_at_once_max
    );
    assert_eq!(
        unlimited.sick_at_once_max, WORKERS as u32,
        "without the limit it holds every worker"
    );
}
