//! The simulator's queue world driving the real SQLite store: a [`TaskQueue`] over
//! [`SqliteJobs`] in a file (on `/dev/shm` when there is one, so fsync is cheap), whose
//! `restart` drops the connection and reopens the file. The world's invariants judge it
//! by the policy it declares (the same full-jitter backoff as the reference).

use std::cell::RefCell;
use std::path::PathBuf;

use faultline::clock::Instant;
use faultline::queue::contract::{QueuePolicy, TaskQueue};
use faultline::queue::store::JobStore;
use faultline::queue::store::sqlite::SqliteJobs;
use faultline::queue::world::{QueueKnobs, QueueWorld, run};
use faultline::queue::{
    DeadLetter, Enqueued, Fenced, Job, JobKey, Lease, LeaseToken, Nacked, QueueConfig, QueueCounts,
};
use faultline_sim::prelude::*;

/// The real store behind the contract. The contract's methods cannot fail, so a store
/// error panics (a failed test); the world's reads take `&self`, hence the `RefCell`.
struct SqliteQueue {
    jobs: RefCell<SqliteJobs>,
    path: PathBuf,
    config: QueueConfig,
    /// The broken variant: a restart loses the database (a store that is not durable).
    amnesia: bool,
}

impl SqliteQueue {
    fn new(path: PathBuf, config: QueueConfig, amnesia: bool) -> Self {
        SqliteQueue {
            jobs: RefCell::new(SqliteJobs::open(&path, config).expect("open")),
            path,
            config,
            amnesia,
        }
    }
    fn j(&self) -> std::cell::RefMut<'_, SqliteJobs> {
        self.jobs.borrow_mut()
    }
}

impl TaskQueue for SqliteQueue {
    fn policy(&self) -> QueuePolicy {
        QueuePolicy::from(&self.config)
    }
    fn enqueue(&mut self, job: Job, now: Instant) -> Enqueued {
        self.j().enqueue(job, now).expect("enqueue")
    }
    fn lease(&mut self, now: Instant) -> Option<Lease> {
        self.j().lease(now).expect("lease")
    }
    fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced> {
        self.j().heartbeat(token, now).expect("heartbeat")
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced> {
        self.j().ack(token, now).expect("ack")
    }
    fn nack(&mut self, token: &LeaseToken, error: &str, now: Instant) -> Result<Nacked, Fenced> {
        self.j().nack(token, error, now).expect("nack")
    }
    fn lease_of(&self, key: JobKey, now: Instant) -> Option<LeaseToken> {
        self.j().lease_of(key, now).expect("lease_of")
    }
    fn counts(&self) -> QueueCounts {
        self.j().counts().expect("counts")
    }
    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.j().dead_letters().expect("dead_letters")
    }
    fn redrive(&mut self, now: Instant) -> usize {
        self.j().redrive(now).expect("redrive")
    }
    fn restart(&mut self, _now: Instant) {
        // The process dies: the connection goes; a new one opens the file.
        if self.amnesia {
            let gone = self.path.with_extension("lost");
            *self.jobs.borrow_mut() = SqliteJobs::open(&gone, self.config).expect("stand-in");
            for ext in ["sqlite", "sqlite-wal", "sqlite-shm"] {
                let _ = std::fs::remove_file(self.path.with_extension(ext));
            }
        }
        let fresh = SqliteJobs::open(&self.path, self.config).expect("reopen");
        *self.jobs.borrow_mut() = fresh;
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.j().next_due().expect("next_due")
    }
}

fn db_path(seed: u64) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.join(format!(
            "faultline-queue-world-{}-{seed}",
            std::process::id()
        ))
    } else {
        crate::support::temp_dir(&format!("queue-world-{seed}"))
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join("db.sqlite")
}

/// Runs the queue world on seeds `0..seeds`; returns the seeds that failed, with the
/// invariant broken.
fn sweep(seeds: u64, amnesia: bool) -> Vec<(u64, String)> {
    let mut failed = Vec::new();
    for seed in 0..seeds {
        let knobs = QueueKnobs::from_seed(seed);
        let config = *knobs.reference_queue().expect("config").config();
        let path = db_path(seed);
        let queue = SqliteQueue::new(path.clone(), config, amnesia);
        let world = QueueWorld::new(knobs.clone(), queue).expect("world");
        let (report, _) = run(world, knobs.fault_plan(), TraceMode::Off);
        if let Some(inv) = report.outcome.invariant() {
            failed.push((seed, inv.to_string()));
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    failed
}

fn seeds() -> u64 {
    std::env::var("FAULTLINE_QUEUE_WORLD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// Runs the queue world on the SQLite store for `FAULTLINE_QUEUE_WORLD_SEEDS` seeds
/// (default 20).
#[test]
fn the_queue_world_holds_its_invariants_on_sqlite() {
    let seeds = seeds();
    let started = std::time::Instant::now();
    let failed = sweep(seeds, false);
    println!(
        "queue world on SQLite: {seeds} seeds, {} failed, in {:?}",
        failed.len(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "invariants broken on SQLite: {failed:?}");
}

/// The same world catches the store when a restart loses its file.
#[test]
fn the_queue_world_catches_a_sqlite_store_that_forgets_on_restart() {
    let seeds = seeds();
    let failed = sweep(seeds, true);
    println!(
        "queue world on a forgetful SQLite: {seeds} seeds, {} caught: {failed:?}",
        failed.len()
    );
    assert!(
        !failed.is_empty(),
        "a store that loses everything on restart passed"
    );
}
