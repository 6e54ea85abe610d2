//! The durable queue's throughput: jobs per second for enqueue + lease + ack of
//! [`JOBS_DURABLE`] unique jobs per iteration ([`JOBS_MEMORY`] in memory) (one enqueue, one lease, one ack each, every one a committed
//! transaction) through faultline's SQL stores, each next to a minimal hand-written
//! SQL queue doing the same work on the same database, in the same group, so the ratio
//! comes from one run.
//!
//! - `queue_store/sqlite_file`: a SQLite file in the temp dir, both opened with
//!   [`faultline::store::sqlite::open`]: WAL mode, `synchronous = FULL` (every commit
//!   waits for the WAL's fsync, so this measures the disk as much as the code).
//! - `queue_store/sqlite_memory`: the same on a private in-memory database (no fsync):
//!   the code's own cost.
//! - `queue_store/postgres`: a database of its own on the server
//!   [`TestServer::shared`] gives (`FAULTLINE_PG_URL`, or a throwaway local one, with
//!   `fsync = on`); without one the group is skipped with one printed line
//!   (`FAULTLINE_REQUIRE_PG=1` makes that a failure).
//!
//! In each group:
//! - `faultline`: [`SqliteJobs`] / [`PostgresJobs`] behind the [`JobStore`] trait.
//! - `faultline_pool` (file and Postgres): the path a tokio service runs, the same
//!   jobs enqueued through a [`StoreQueue`] and delivered by a [`WorkerPool`] of 2
//!   workers (each command on a blocking thread, a pooled handle, the pool's own lease,
//!   heartbeat and ack), the iteration ending when [`StoreQueue::settled`] sees none
//!   in flight.
//! - `hand_sql`: the peer ([`Peer`], under 100 lines for both dialects): one table,
//!   an `INSERT` per job, a lease that is one `UPDATE … RETURNING` taking the oldest job
//!   whose deadline is unset or past (`FOR UPDATE SKIP LOCKED` in Postgres) and setting
//!   its deadline, and a `DELETE` on ack. It does less: no fencing token (an ack
//!   after the lease expired is not refused), no per-key coalescing or versions, no
//!   dedupe of a unique id enqueued twice, no attempts, backoff or dead letters, no
//!   run-at, no counters, no wall-clock origin.
//!
//! Run with `cargo bench --bench queue_store`; `cargo bench --bench queue_store --
//! --test` runs each function once.

// Bench code, not user input: a failed setup or a wrong count should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use faultline::clock::Instant;
use faultline::queue::store::JobStore;
use faultline::queue::store::postgres::PostgresJobs;
use faultline::queue::store::sqlite::SqliteJobs;
use faultline::queue::tokio::{PoolConfig, StoreQueue, WorkerPool};
use faultline::queue::{Job, JobId, JobType, Lease, Payload, QueueConfig};
use faultline::store::postgres::TestServer;
use faultline::store::{Migration, StoreError, postgres as pg, sqlite};
use std::path::PathBuf;
use std::time::Duration;

/// Jobs per iteration on a database that fsyncs each commit.
const JOBS_DURABLE: u64 = 20;
/// Jobs per iteration in memory.
const JOBS_MEMORY: u64 = 200;
const EMAIL: JobType = JobType::from_static("email");
const VISIBILITY_NS: i64 = 30_000_000_000;

fn config() -> QueueConfig {
    QueueConfig::builder().build().expect("config")
}

/// Enqueues `n` unique jobs from id `*next` on, then leases and acks until none is
/// left; returns how many were acked.
fn faultline_round(jobs: &mut dyn JobStore, next: &mut u64, n: u64) -> u64 {
    let t = Instant::from_millis(1);
    for _ in 0..n {
        let job = Job::unique(EMAIL, JobId(*next), Payload::encode(&*next).unwrap());
        *next += 1;
        jobs.enqueue(job, t).unwrap();
    }
    let mut acked = 0;
    while let Some(lease) = jobs.lease(t).unwrap() {
        jobs.ack(&lease.token, t).unwrap().unwrap();
        acked += 1;
    }
    acked
}

/// The hand-written SQL queue, on SQLite or Postgres.
pub enum Peer {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

const PEER_SQLITE: &[Migration] = &["CREATE TABLE faultline_bench_peer_jobs (
     id INTEGER PRIMARY KEY, payload TEXT NOT NULL, deadline INTEGER)"];
const PEER_POSTGRES: &[Migration] = &["CREATE TABLE faultline_bench_peer_jobs (
     id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL, deadline BIGINT)"];

impl Peer {
    fn sqlite(mut c: rusqlite::Connection) -> Peer {
        sqlite::migrate(&mut c, "bench_peer", PEER_SQLITE).unwrap();
        Peer::Sqlite(c)
    }
    fn postgres(mut c: postgres::Client) -> Peer {
        pg::migrate(&mut c, "bench_peer", PEER_POSTGRES).unwrap();
        Peer::Postgres(c)
    }
    fn enqueue(&mut self, payload: &str) {
        let sql = "INSERT INTO faultline_bench_peer_jobs (payload) VALUES ($1)";
        match self {
            Peer::Sqlite(c) => drop(c.execute(sql, [payload]).unwrap()),
            Peer::Postgres(c) => drop(c.execute(sql, &[&payload]).unwrap()),
        }
    }
    /// The oldest job not leased (or whose lease expired), leased until now + 30 s.
    fn lease(&mut self, now: i64) -> Option<(i64, String)> {
        let deadline = now + VISIBILITY_NS;
        match self {
            Peer::Sqlite(c) => {
                use rusqlite::OptionalExtension;
                c.query_row(
                    "UPDATE faultline_bench_peer_jobs SET deadline = ?1
                     WHERE id = (SELECT id FROM faultline_bench_peer_jobs
                                 WHERE deadline IS NULL OR deadline <= ?2
                                 ORDER BY id LIMIT 1)
                     RETURNING id, payload",
                    [deadline, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .unwrap()
            }
            Peer::Postgres(c) => c
                .query_opt(
                    "UPDATE faultline_bench_peer_jobs SET deadline = $1
                     WHERE id = (SELECT id FROM faultline_bench_peer_jobs
                                 WHERE deadline IS NULL OR deadline <= $2
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, payload",
                    &[&deadline, &now],
                )
                .unwrap()
                .map(|r| (r.get(0), r.get(1))),
        }
    }
    fn ack(&mut self, id: i64) {
        let sql = "DELETE FROM faultline_bench_peer_jobs WHERE id = $1";
        match self {
            Peer::Sqlite(c) => drop(c.execute(sql, [id]).unwrap()),
            Peer::Postgres(c) => drop(c.execute(sql, &[&id]).unwrap()),
        }
    }
    fn round(&mut self, next: &mut u64, n: u64) -> u64 {
        for _ in 0..n {
            self.enqueue(&serde_json::to_string(&*next).unwrap());
            *next += 1;
        }
        let mut acked = 0;
        while let Some((id, _payload)) = self.lease(1_000_000) {
            self.ack(id);
            acked += 1;
        }
        acked
    }
}

fn temp_file(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "faultline-bench-queue-store-{what}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("db.sqlite")
}

/// One group: `ours` and `peer` over `n` jobs per iteration, each checked once first;
/// `more` adds the group's other functions.
fn group(
    c: &mut Criterion,
    name: &str,
    n: u64,
    mut ours: Box<dyn JobStore>,
    mut peer: Peer,
    more: impl FnOnce(&mut BenchmarkGroup<'_, WallTime>),
) {
    let (mut next_ours, mut next_peer) = (0, 0);
    assert_eq!(faultline_round(ours.as_mut(), &mut next_ours, n), n);
    assert_eq!(peer.round(&mut next_peer, n), n);
    let mut g = c.benchmark_group(format!("queue_store/{name}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(n));
    g.bench_function("faultline", |b| {
        b.iter(|| faultline_round(ours.as_mut(), &mut next_ours, n))
    });
    g.bench_function("hand_sql", |b| b.iter(|| peer.round(&mut next_peer, n)));
    more(&mut g);
    g.finish();
}

/// `faultline_pool`: `n` jobs per iteration through a [`StoreQueue`] over the stores
/// `make` opens, delivered by a [`WorkerPool`] of 2 workers; checked once first.
fn pool<S, F>(g: &mut BenchmarkGroup<'_, WallTime>, n: u64, make: F)
where
    S: JobStore + Send + 'static,
    F: Fn() -> Result<S, StoreError> + Send + Sync + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (queue, workers) = rt.block_on(async {
        let queue = StoreQueue::open(make).await.unwrap();
        let config = PoolConfig::builder().workers(2).build().unwrap();
        let deliver = |_: Lease| async { Ok::<(), String>(()) };
        let workers = WorkerPool::spawn(&queue, config, deliver).unwrap();
        (queue, workers)
    });
    let round = |next: &mut u64| {
        rt.block_on(async {
            for _ in 0..n {
                let job = Job::unique(EMAIL, JobId(*next), Payload::encode(&*next).unwrap());
                *next += 1;
                queue.enqueue(job).await.unwrap();
            }
            queue.settled().await.unwrap();
        })
    };
    let mut next = 0;
    round(&mut next);
    let c = rt.block_on(queue.counts()).unwrap();
    assert_eq!((c.enqueued, c.done), (n, n), "{c:?}");
    g.bench_function("faultline_pool", |b| b.iter(|| round(&mut next)));
    let report = rt.block_on(workers.shutdown());
    assert_eq!(report.delivered, next, "every job delivered once");
    assert_eq!(queue.store_errors(), 0);
}

fn sqlite_file(c: &mut Criterion) {
    let ours = SqliteJobs::open(temp_file("faultline"), config()).unwrap();
    let peer = Peer::sqlite(sqlite::open(temp_file("peer")).unwrap());
    let path = temp_file("faultline-pool");
    group(c, "sqlite_file", JOBS_DURABLE, Box::new(ours), peer, |g| {
        pool(g, JOBS_DURABLE, move || SqliteJobs::open(&path, config()));
    });
}

fn sqlite_memory(c: &mut Criterion) {
    let ours = SqliteJobs::from_connection(sqlite::open_in_memory().unwrap(), config()).unwrap();
    let peer = Peer::sqlite(sqlite::open_in_memory().unwrap());
    // No pool here: a private in-memory database cannot be opened by a second handle.
    group(
        c,
        "sqlite_memory",
        JOBS_MEMORY,
        Box::new(ours),
        peer,
        |_| {},
    );
}

fn postgres(c: &mut Criterion) {
    let server = match TestServer::shared() {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("{}", TestServer::skip_line("bench queue_store/postgres"));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let ours = PostgresJobs::connect(&server.fresh_database().unwrap(), config()).unwrap();
    let peer = Peer::postgres(pg::connect(&server.fresh_database().unwrap()).unwrap());
    let url = server.fresh_database().unwrap();
    group(c, "postgres", JOBS_DURABLE, Box::new(ours), peer, |g| {
        pool(g, JOBS_DURABLE, move || {
            PostgresJobs::connect(&url, config())
        });
    });
}

criterion_group!(benches, sqlite_file, sqlite_memory, postgres);
criterion_main!(benches);
