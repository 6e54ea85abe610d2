//! The queue's stores: the conformance suite on memory, SQLite and Postgres; the outbox
//! inside the caller's transaction; the version-checked target; Postgres workers on
//! their own connections; the suite catching broken SQL stores.

use std::collections::BTreeSet;
use std::time::Duration;

use faultline::clock::{Instant, Origin};
use faultline::name::Name;
use faultline::queue::store::conformance::{self, Failure};
use faultline::queue::store::postgres::{self as pg, PostgresJobs, PostgresOutbox};
use faultline::queue::store::sqlite::{self as lite, SqliteJobs, SqliteOutbox};
use faultline::queue::store::{JobStore, MemoryJobs};
use faultline::queue::{
    Applied, Enqueued, Fenced, Job, JobType, Lease, LeaseToken, Nacked, Payload, QueueConfig,
    QueueCounts, Staging,
};
use faultline::store::StoreError;

use crate::support;

const SYNC: JobType = JobType::from_static("sync_profile");
const EMAIL: JobType = JobType::from_static("send_email");
const T0: Instant = Instant::ZERO;

fn config() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_millis(100))
        .attempts_max(3)
        .build()
        .unwrap()
}

fn user(n: u64) -> Name {
    Name::new(&format!("user-{n}")).unwrap()
}

#[test]
fn memory_passes_the_conformance_suite() {
    conformance::run(|c| Ok(MemoryJobs::new(c))).unwrap();
}

#[test]
fn sqlite_passes_the_conformance_suite() {
    conformance::run(|c| SqliteJobs::open(support::sqlite_path("queue-conformance"), c)).unwrap();
}

#[test]
fn sqlite_in_memory_passes_the_conformance_suite() {
    conformance::run(|c| {
        SqliteJobs::from_connection(faultline::store::sqlite::open_in_memory()?, c)
    })
    .unwrap();
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let mut urls = Vec::new();
    for _ in conformance::CASES {
        match support::pg_url("queue conformance") {
            Some(u) => urls.push(u),
            None => return,
        }
    }
    conformance::run(|c| PostgresJobs::connect(&urls.pop().expect("a database per case"), c))
        .unwrap();
}

/// A reopened SQLite file keeps jobs, leases, fences, dead letters and the origin.
#[test]
fn sqlite_keeps_everything_across_a_reopen() {
    let path = support::sqlite_path("queue-reopen");
    let origin = Origin::new(std::time::SystemTime::UNIX_EPOCH, T0);
    let (lease, counts) = {
        let mut q = SqliteJobs::open(&path, config()).unwrap();
        q.origin(origin).unwrap();
        q.enqueue(Job::keyed(SYNC, user(1), 1, Payload::default()), T0)
            .unwrap();
        q.enqueue(Job::keyed(SYNC, user(2), 1, Payload::default()), T0)
            .unwrap();
        let l = q.lease(T0).unwrap().unwrap();
        (l, q.counts().unwrap())
    };
    let mut q = SqliteJobs::open(&path, config()).unwrap();
    assert_eq!(q.counts().unwrap(), counts);
    let later = Origin::new(std::time::SystemTime::now(), Instant::from_millis(9));
    assert_eq!(q.origin(later).unwrap(), origin);
    let b = q.lease(Instant::from_millis(1)).unwrap().unwrap();
    assert!(b.token.fence() > lease.token.fence());
    assert_ne!(b.job.key, lease.job.key, "the leased job stays leased");
    q.ack(&lease.token, Instant::from_millis(2))
        .unwrap()
        .unwrap();
    assert_eq!(
        q.enqueue(Job::keyed(SYNC, user(1), 1, Payload::default()), T0)
            .unwrap(),
        Enqueued::Duplicate
    );
}

/// Values past `i64::MAX` are refused with an error, and change nothing.
#[test]
fn sqlite_refuses_values_it_cannot_store() {
    let mut q = SqliteJobs::open(support::sqlite_path("queue-range"), config()).unwrap();
    let huge = Job::keyed(SYNC, user(1), u64::MAX, Payload::default());
    assert!(matches!(
        q.enqueue(huge, T0),
        Err(StoreError::OutOfRange { .. })
    ));
    let late =
        Job::keyed(SYNC, user(1), 1, Payload::default()).run_at(Instant::from_nanos(u64::MAX));
    assert!(matches!(
        q.enqueue(late, T0),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        q.lease(Instant::from_nanos(u64::MAX)),
        Err(StoreError::OutOfRange { .. })
    ));
    assert_eq!(q.counts().unwrap(), QueueCounts::default());
}

// ----- the outbox inside the caller's transaction -----

fn profile_write_sqlite(
    jobs: &mut SqliteJobs,
    n: u64,
    version: u64,
    commit: bool,
) -> Result<(), StoreError> {
    let conn = jobs.connection_mut();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO profiles (id, version) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        rusqlite::params![i64::try_from(n).unwrap(), i64::try_from(version).unwrap()],
    )?;
    let mut outbox = SqliteOutbox::new(&tx);
    outbox.stage(Job::keyed(
        SYNC,
        user(n),
        version,
        Payload::encode(&version).unwrap(),
    ))?;
    outbox.stage_unique(
        EMAIL,
        Payload::encode(&format!("user {n} changed")).unwrap(),
    )?;
    outbox.finish()?;
    if commit {
        tx.commit()?;
    }
    Ok(())
}

#[test]
fn sqlite_outbox_commits_with_the_callers_row_or_not_at_all() {
    let mut jobs = SqliteJobs::open(support::sqlite_path("queue-outbox"), config()).unwrap();
    jobs.connection_mut()
        .execute_batch("CREATE TABLE profiles (id INTEGER PRIMARY KEY, version INTEGER)")
        .unwrap();
    // Rolled back: neither the profile row nor its jobs.
    profile_write_sqlite(&mut jobs, 1, 1, false).unwrap();
    assert_eq!(jobs.relay(T0).unwrap(), 0);
    let rows: i64 = jobs
        .connection_mut()
        .query_row("SELECT COUNT(*) FROM profiles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(jobs.counts().unwrap().enqueued, 0);
    // Committed: both, and the relay moves the jobs once.
    profile_write_sqlite(&mut jobs, 1, 1, true).unwrap();
    profile_write_sqlite(&mut jobs, 1, 2, true).unwrap();
    profile_write_sqlite(&mut jobs, 2, 1, true).unwrap();
    assert_eq!(jobs.relay(T0).unwrap(), 6);
    assert_eq!(jobs.relay(T0).unwrap(), 0, "moved rows are gone");
    let c = jobs.counts().unwrap();
    assert_eq!((c.enqueued, c.superseded, c.pending), (6, 1, 5));
    let mut ids = BTreeSet::new();
    let mut synced = Vec::new();
    while let Some(l) = jobs.lease(T0).unwrap() {
        match l.job.key.id() {
            Some(id) => assert!(ids.insert(id), "unique ids are unique"),
            None => synced.push((l.job.key.key().unwrap(), l.job.version)),
        }
        jobs.ack(&l.token, T0).unwrap().unwrap();
    }
    assert_eq!(ids.len(), 3);
    synced.sort();
    assert_eq!(synced, [(user(1), 2), (user(2), 1)]);
}

/// A relay that dies mid-way (its transaction never commits) moves nothing; the next
/// moves everything once.
#[test]
fn sqlite_relay_moves_all_or_nothing() {
    let path = support::sqlite_path("queue-relay");
    let mut jobs = SqliteJobs::open(&path, config()).unwrap();
    jobs.connection_mut()
        .execute_batch("CREATE TABLE profiles (id INTEGER PRIMARY KEY, version INTEGER)")
        .unwrap();
    for n in 0..5 {
        profile_write_sqlite(&mut jobs, n, 1, true).unwrap();
    }
    // Another connection holds the write lock: the relay fails (busy), moving nothing.
    let mut other = faultline::store::sqlite::open(&path).unwrap();
    other.busy_timeout(Duration::from_millis(10)).unwrap();
    let blocker = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let mut second = SqliteJobs::open(&path, config());
    // Opening migrates under the same lock: it fails or waits; either way no rows move.
    if let Ok(s) = second.as_mut() {
        assert!(s.relay(T0).is_err());
    }
    blocker.rollback().unwrap();
    assert_eq!(jobs.counts().unwrap().enqueued, 0);
    assert_eq!(jobs.relay(T0).unwrap(), 10);
    assert_eq!(jobs.counts().unwrap().enqueued, 10);
}

#[test]
fn postgres_outbox_commits_with_the_callers_row_or_not_at_all() {
    let Some(url) = support::pg_url("queue outbox") else {
        return;
    };
    let mut jobs = PostgresJobs::connect(&url, config()).unwrap();
    jobs.client_mut()
        .batch_execute("CREATE TABLE profiles (id BIGINT PRIMARY KEY, version BIGINT)")
        .unwrap();
    let write = |jobs: &mut PostgresJobs, n: i64, version: u64, commit: bool| {
        let mut tx = jobs.client_mut().transaction().unwrap();
        let v = i64::try_from(version).unwrap();
        tx.execute(
            "INSERT INTO profiles (id, version) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
            &[&n, &v],
        )
        .unwrap();
        let mut outbox = PostgresOutbox::new(&mut tx);
        let key = user(n.unsigned_abs());
        outbox
            .stage(Job::keyed(
                SYNC,
                key,
                version,
                Payload::encode(&version).unwrap(),
            ))
            .unwrap();
        outbox
            .stage_unique(EMAIL, Payload::encode(&"changed").unwrap())
            .unwrap();
        outbox.finish().unwrap();
        if commit {
            tx.commit().unwrap();
        }
    };
    write(&mut jobs, 1, 1, false);
    assert_eq!(jobs.relay(T0).unwrap(), 0);
    let rows: i64 = jobs
        .client_mut()
        .query_one("SELECT COUNT(*) FROM profiles", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    write(&mut jobs, 1, 1, true);
    write(&mut jobs, 1, 2, true);
    write(&mut jobs, 2, 1, true);
    assert_eq!(jobs.relay(T0).unwrap(), 6);
    assert_eq!(jobs.relay(T0).unwrap(), 0);
    let c = jobs.counts().unwrap();
    assert_eq!((c.enqueued, c.superseded, c.pending), (6, 1, 5));
    let mut ids = BTreeSet::new();
    while let Some(l) = jobs.lease(T0).unwrap() {
        if let Some(id) = l.job.key.id() {
            assert!(ids.insert(id));
        }
        jobs.ack(&l.token, T0).unwrap().unwrap();
    }
    assert_eq!(
        ids.len(),
        3,
        "ids from the sequence, unique though one write rolled back"
    );
}

// ----- the version-checked target -----

/// A stale worker whose lease was taken over cannot overwrite the newer version at the
/// target, and each version takes effect once.
#[test]
fn sqlite_target_applies_each_version_once_and_fences_a_stale_worker() {
    let mut jobs = SqliteJobs::open(support::sqlite_path("queue-target"), config()).unwrap();
    let mut target = faultline::store::sqlite::open_in_memory().unwrap();
    lite::migrate(&mut target).unwrap();
    target
        .execute_batch("CREATE TABLE replica (id TEXT PRIMARY KEY, version INTEGER)")
        .unwrap();
    let deliver = |target: &mut rusqlite::Connection, lease: &Lease| -> Applied {
        let tx = target.transaction().unwrap();
        let out = lite::apply_once(&tx, lease).unwrap();
        if out == Applied::Applied {
            tx.execute(
                "INSERT OR REPLACE INTO replica (id, version) VALUES (?1, ?2)",
                rusqlite::params![
                    lease.job.key.to_string(),
                    i64::try_from(lease.job.version).unwrap()
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        out
    };
    check_target(&mut jobs, |l| deliver(&mut target, l));
    let v: i64 = target
        .query_row(
            "SELECT version FROM replica WHERE id = 'sync_profile:user-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, 2, "the newer version stays");
}

/// The script both targets run: v1 leased by a worker that stalls past its lease and
/// is taken over (same version, larger fence): the stale worker's apply is fenced; then
/// v2: applied once, and the worker holding v1's older lease is fenced again.
fn check_target<S: JobStore>(jobs: &mut S, mut deliver: impl FnMut(&Lease) -> Applied) {
    let t = Instant::from_millis;
    jobs.enqueue(Job::keyed(SYNC, user(1), 1, Payload::default()), t(0))
        .unwrap();
    let stale = jobs.lease(t(0)).unwrap().unwrap();
    let fresh = jobs.lease(t(200)).unwrap().unwrap();
    assert_eq!((fresh.job.version, fresh.attempt), (1, 2), "taken over");
    assert_eq!(deliver(&fresh), Applied::Applied);
    assert_eq!(
        deliver(&stale),
        Applied::Fenced,
        "the stale worker is refused"
    );
    assert!(jobs.ack(&stale.token, t(201)).unwrap().is_err());
    jobs.ack(&fresh.token, t(201)).unwrap().unwrap();
    jobs.enqueue(Job::keyed(SYNC, user(1), 2, Payload::default()), t(250))
        .unwrap();
    let v2 = jobs.lease(t(250)).unwrap().unwrap();
    assert_eq!(deliver(&v2), Applied::Applied);
    assert_eq!(
        deliver(&v2),
        Applied::Stale,
        "redelivered: no second effect"
    );
    assert_eq!(deliver(&fresh), Applied::Fenced, "v1 cannot overwrite v2");
    assert_eq!(deliver(&stale), Applied::Fenced);
    jobs.ack(&v2.token, t(251)).unwrap().unwrap();
    // A unique job: once, however often delivered.
    jobs.enqueue(
        Job::unique(EMAIL, faultline::queue::JobId(9), Payload::default()),
        t(300),
    )
    .unwrap();
    let a = jobs.lease(t(300)).unwrap().unwrap();
    assert_eq!(deliver(&a), Applied::Applied);
    assert_eq!(deliver(&a), Applied::Stale);
}

#[test]
fn postgres_target_applies_each_version_once_and_fences_a_stale_worker() {
    let Some(url) = support::pg_url("queue target") else {
        return;
    };
    let mut jobs = PostgresJobs::connect(&url, config()).unwrap();
    let mut target = faultline::store::postgres::connect(&url).unwrap();
    pg::migrate(&mut target).unwrap();
    target
        .batch_execute("CREATE TABLE replica (id TEXT PRIMARY KEY, version BIGINT)")
        .unwrap();
    check_target(&mut jobs, |lease| {
        let mut tx = target.transaction().unwrap();
        let out = pg::apply_once(&mut tx, lease).unwrap();
        if out == Applied::Applied {
            let v = i64::try_from(lease.job.version).unwrap();
            tx.execute(
                "INSERT INTO replica (id, version) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                &[&lease.job.key.to_string(), &v],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        out
    });
    let v: i64 = target
        .query_one(
            "SELECT version FROM replica WHERE id = 'sync_profile:user-1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
}

// ----- many workers on one Postgres -----

/// Four threads, each with its own connection, lease and ack 1,000 jobs: every job is
/// done once, no fencing token is handed out twice, and the counts balance.
#[test]
fn postgres_four_workers_deliver_every_job_once() {
    let Some(url) = support::pg_url("queue concurrency") else {
        return;
    };
    let config = QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut producer = PostgresJobs::connect(&url, config).unwrap();
    const JOBS: u64 = 1_000;
    for i in 0..JOBS {
        let job = if i % 2 == 0 {
            Job::keyed(SYNC, user(i), 1, Payload::encode(&i).unwrap())
        } else {
            Job::unique(
                EMAIL,
                faultline::queue::JobId(i),
                Payload::encode(&i).unwrap(),
            )
        };
        assert_eq!(producer.enqueue(job, T0).unwrap(), Enqueued::New);
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut q = PostgresJobs::connect(&url, config).unwrap();
                let mut done = Vec::new();
                let t = Instant::from_millis(1);
                while let Some(l) = q.lease(t).unwrap() {
                    q.ack(&l.token, t).unwrap().unwrap();
                    done.push((l.job.payload.decode::<u64>().unwrap(), l.token.fence()));
                }
                done
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut fences = BTreeSet::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let done = w.join().unwrap();
        per_worker.push(done.len());
        for (job, fence) in done {
            assert!(seen.insert(job), "job {job} done twice");
            assert!(fences.insert(fence), "fence {fence} handed out twice");
        }
    }
    assert_eq!(seen.len() as u64, JOBS, "every job done");
    let c = producer.counts().unwrap();
    assert_eq!((c.enqueued, c.done, c.in_flight()), (JOBS, JOBS, 0));
    assert!(c.balanced(), "{c:?}");
    println!("jobs per worker: {per_worker:?}");
}

// ----- the suite catches broken SQL stores -----

/// A SQLite store with one defect.
struct Broken {
    inner: SqliteJobs,
    defect: Defect,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Defect {
    /// An ack that skips the fence check: a refused ack is reported as accepted.
    AckWithoutFence,
    /// A lease that ignores run-at: jobs are stored without it.
    LeaseIgnoresRunAt,
    /// A heartbeat that reports an extension it did not make.
    HeartbeatNotStored,
}

impl JobStore for Broken {
    forward_reads!();
    fn enqueue(&mut self, mut job: Job, now: Instant) -> Result<Enqueued, StoreError> {
        if self.defect == Defect::LeaseIgnoresRunAt {
            job.run_at = None;
        }
        self.inner.enqueue(job, now)
    }
    fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
        self.inner.lease(now)
    }
    fn heartbeat(
        &mut self,
        token: &LeaseToken,
        now: Instant,
    ) -> Result<Result<Instant, Fenced>, StoreError> {
        if self.defect == Defect::HeartbeatNotStored {
            return Ok(Ok(now + self.inner.config().visibility_timeout()));
        }
        self.inner.heartbeat(token, now)
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
        let r = self.inner.ack(token, now)?;
        if self.defect == Defect::AckWithoutFence {
            return Ok(Ok(()));
        }
        Ok(r)
    }
    fn nack(
        &mut self,
        token: &LeaseToken,
        error: &str,
        now: Instant,
    ) -> Result<Result<Nacked, Fenced>, StoreError> {
        self.inner.nack(token, error, now)
    }
}

#[test]
fn the_suite_catches_broken_sqlite_stores() {
    for (case, defect) in [
        ("fencing", Defect::AckWithoutFence),
        ("run_at", Defect::LeaseIgnoresRunAt),
        ("heartbeat", Defect::HeartbeatNotStored),
        ("differential", Defect::AckWithoutFence),
    ] {
        let r: Result<(), Failure> = conformance::run_case(case, |c| {
            Ok(Broken {
                inner: SqliteJobs::from_connection(faultline::store::sqlite::open_in_memory()?, c)?,
                defect,
            })
        });
        let f = r.expect_err(&format!("{defect:?} passed `{case}`"));
        assert_eq!(f.case, case, "{f}");
        println!("{defect:?}: {f}");
    }
}

// ----- a rough figure (not a bench: the benches compare with a hand-written queue) -----

fn throughput<S: JobStore>(q: &mut S, keys: std::ops::Range<u64>) -> f64 {
    let started = std::time::Instant::now();
    let n = keys.end - keys.start;
    for i in keys {
        q.enqueue(
            Job::keyed(SYNC, user(i), 1, Payload::encode(&i).unwrap()),
            T0,
        )
        .unwrap();
        let l = q.lease(T0).unwrap().unwrap();
        q.ack(&l.token, T0).unwrap().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Jobs/s of enqueue + lease + ack, one worker, on each store (`--ignored --nocapture`).
#[test]
#[ignore = "a figure, not a check"]
fn enqueue_lease_ack_per_second() {
    let dir = support::temp_dir("queue-throughput");
    let mut lite = SqliteJobs::open(dir.join("db.sqlite"), config()).unwrap();
    println!(
        "sqlite (file, fsync per commit): {:.0} jobs/s",
        throughput(&mut lite, 0..500)
    );
    if let Some(url) = support::pg_url("queue throughput") {
        let mut pg = PostgresJobs::connect(&url, config()).unwrap();
        println!(
            "postgres (local, one connection): {:.0} jobs/s",
            throughput(&mut pg, 0..300)
        );
        // Without the wait for the WAL's fsync: what the disk costs.
        pg.client_mut()
            .batch_execute("SET synchronous_commit = off")
            .unwrap();
        println!(
            "postgres (synchronous_commit off): {:.0} jobs/s",
            throughput(&mut pg, 300..600)
        );
    }
}

/// The target script has teeth: a target that checks versions but not fences (it
/// applies a delivery of the version it holds again, and lets a stale worker write) is
/// caught.
#[test]
fn the_target_script_catches_a_target_without_fencing() {
    let mut jobs = MemoryJobs::new(config());
    let mut held: std::collections::BTreeMap<faultline::queue::JobKey, u64> = Default::default();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_target(&mut jobs, |lease| {
            let v = held.entry(lease.job.key).or_insert(0);
            if lease.job.version >= *v {
                *v = lease.job.version;
                Applied::Applied
            } else {
                Applied::Stale
            }
        })
    }));
    assert!(
        caught.is_err(),
        "a target without fencing passed the script"
    );
}
