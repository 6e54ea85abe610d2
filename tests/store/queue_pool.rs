//! The path a tokio service runs: a `WorkerPool` on a `StoreQueue` over the SQLite and
//! the Postgres store, with producers enqueueing through the same queue: every job is
//! delivered, once per id at a target that dedupes, and nothing runs on a runtime
//! thread that would block it (the sync Postgres client panics there).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline::queue::store::JobStore;
use faultline::queue::store::postgres::PostgresJobs;
use faultline::queue::store::sqlite::SqliteJobs;
use faultline::queue::tokio::{PoolConfig, StoreQueue, WorkerPool};
use faultline::queue::{Enqueued, Job, JobId, JobType, Lease, Payload, QueueConfig};
use faultline::store::StoreError;

use crate::support;

const MAIL: JobType = JobType::from_static("send_mail");
const JOBS: u64 = 300;

fn config() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(5))
        .attempts_max(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
        .build()
        .unwrap()
}

/// Three workers deliver `JOBS` unique jobs, every fifth failing once; returns how
/// often each id took effect.
fn run_pool<S, F>(make: F) -> BTreeMap<u64, u32>
where
    S: JobStore + Send + 'static,
    F: Fn() -> Result<S, StoreError> + Send + Sync + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let queue = StoreQueue::open(make).await.unwrap();
        let effects: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
        let failed_once: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::default();
        let pool = WorkerPool::spawn(
            &queue,
            PoolConfig::builder()
                .workers(3)
                .poll_interval(Duration::from_millis(10))
                .build()
                .unwrap(),
            {
                let effects = Arc::clone(&effects);
                move |lease: Lease| {
                    let effects = Arc::clone(&effects);
                    let failed_once = Arc::clone(&failed_once);
                    async move {
                        let id = lease.job.key.id().ok_or("not a unique job")?.0;
                        if id % 5 == 0
                            && !failed_once
                                .lock()
                                .unwrap()
                                .insert(id, true)
                                .unwrap_or(false)
                        {
                            return Err("503 on the first try");
                        }
                        *effects.lock().unwrap().entry(id).or_insert(0) += 1;
                        Ok(())
                    }
                }
            },
        )
        .unwrap();
        for i in 0..JOBS {
            let job = Job::unique(MAIL, JobId(i), Payload::encode(&i).unwrap());
            assert_eq!(queue.enqueue(job).await.unwrap(), Enqueued::New);
        }
        queue.settled().await.unwrap();
        let report = pool.shutdown().await;
        let c = queue.counts().await.unwrap();
        assert_eq!(
            (c.enqueued, c.done, c.in_flight(), c.dead),
            (JOBS, JOBS, 0, 0)
        );
        assert!(c.retries >= JOBS / 5, "every fifth job was retried: {c:?}");
        assert_eq!(report.delivered, JOBS);
        assert_eq!(queue.store_errors(), 0);
        effects.lock().unwrap().clone()
    })
}

#[test]
fn a_worker_pool_on_sqlite_delivers_every_job() {
    let path = support::sqlite_path("queue-pool");
    let effects = run_pool(move || SqliteJobs::open(&path, config()));
    assert_eq!(effects.len() as u64, JOBS);
    assert!(
        effects.values().all(|&n| n == 1),
        "each id took effect once"
    );
}

#[test]
fn a_worker_pool_on_postgres_delivers_every_job() {
    let Some(url) = support::pg_url("queue::pool") else {
        return;
    };
    let effects = run_pool(move || PostgresJobs::connect(&url, config()));
    assert_eq!(effects.len() as u64, JOBS);
    assert!(
        effects.values().all(|&n| n == 1),
        "each id took effect once"
    );
}
