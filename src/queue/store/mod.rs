//! Where the queue's jobs live: the [`JobStore`] trait, and its stores.
//!
//! A [`JobStore`] is the whole durable queue: it accepts jobs, leases them with a
//! visibility timeout and a fencing token, takes heartbeats, acks and nacks, keeps the
//! dead letters and redrives them, with the same semantics as the sans-IO [`Queue`]
//! (keyed jobs coalesce and never go backwards, unique jobs run once per id, a job is
//! never handed out before its run-at, a fencing token is never handed out twice and
//! only grows). Every command is durable when it returns `Ok`.
//!
//! - [`MemoryJobs`]: the sans-IO [`Queue`] behind a mutex; clones share it. Survives a
//!   dropped handle, not a process.
#![cfg_attr(
    feature = "sqlite",
    doc = "- [`sqlite::SqliteJobs`] (feature `sqlite`): a file path is all it needs; every"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "- `sqlite::SqliteJobs` (feature `sqlite`): a file path is all it needs; every"
)]
//!   command is one fsynced transaction; many processes on one machine, one writer at
#![cfg_attr(
    feature = "sqlite",
    doc = "  a time. With [`sqlite::SqliteOutbox`] (jobs staged in the caller's own
  transaction) and [`sqlite::apply_once`] (a version-checked target)."
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "  a time. With `sqlite::SqliteOutbox` (jobs staged in the caller's own
  transaction) and `sqlite::apply_once` (a version-checked target)."
)]
#![cfg_attr(
    feature = "postgres",
    doc = "- [`postgres::PostgresJobs`] (feature `postgres`): workers on many machines sharing"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "- `postgres::PostgresJobs` (feature `postgres`): workers on many machines sharing"
)]
//!   one database (`FOR UPDATE SKIP LOCKED` leases, fences checked in the `UPDATE`),
#![cfg_attr(
    feature = "postgres",
    doc = "  with [`postgres::PostgresOutbox`] and [`postgres::apply_once`]."
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "  with `postgres::PostgresOutbox` and `postgres::apply_once`."
)]
//!
//! Every store passes the same [`conformance`] suite, which compares every answer with
//! the sans-IO [`Queue`]; run it on your own store with [`conformance::run`].
//!
//! | what happens | memory | SQLite | Postgres |
//! |---|---|---|---|
//! | the handle is dropped | kept (clones) | kept | kept |
//! | the process is killed | lost | kept: every `Ok` was fsynced | kept |
//! | the machine loses power | lost | kept (`synchronous = FULL`) | kept (server defaults) |
//! | a command returns `Err` | — | all of it or none | all of it or none |

pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Instant, Origin};
use crate::queue::core::{
    DeadLetter, Enqueued, Fenced, Job, Lease, LeaseToken, Nacked, Queue, QueueConfig, QueueCounts,
};
use crate::store::StoreError;

/// A durable task queue. The commands take `now` (a [`crate::clock::Instant`] on the
/// store's [`origin`](JobStore::origin) scale), like the sans-IO [`Queue`]; a store
/// shared by several processes or machines compares instants from all of them, so
/// each process maps its wall clock onto the origin the store keeps.
///
/// A command's `Err` means the store may or may not have applied it (the connection
/// broke during the commit); the caller retries or gives up, never assumes. The inner
/// `Result` of `heartbeat`, `ack` and `nack` is the queue's answer: [`Fenced`] when the
/// lease is no longer valid.
pub trait JobStore {
    /// How long a lease (or an accepted heartbeat) hides a job: the store's
    /// configuration, which a worker uses to pace its heartbeats.
    fn visibility_timeout(&self) -> std::time::Duration;

    /// The wall-clock origin of the store's instants: the one stored, or `proposed`,
    /// which is stored when there is none yet (the first process to start sets it).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read or written.
    fn origin(&mut self, proposed: Origin) -> Result<Origin, StoreError>;

    /// Accepts `job`, durably ([`Queue::enqueue`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed: the job may or may not be accepted.
    fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError>;

    /// Hands out the earliest job due at `now`, expired leases first
    /// ([`Queue::lease`]). Two callers never hold valid leases on one job at once.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed: no lease was handed out, or one was that
    /// no caller will see (it expires).
    fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError>;

    /// Extends the lease to `now` + the visibility timeout ([`Queue::heartbeat`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    fn heartbeat(
        &mut self,
        token: &LeaseToken,
        now: Instant,
    ) -> Result<Result<Instant, Fenced>, StoreError>;

    /// The job was delivered ([`Queue::ack`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed: the ack may or may not be recorded.
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError>;

    /// The delivery failed with `error` ([`Queue::nack`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    fn nack(
        &mut self,
        token: &LeaseToken,
        error: &str,
        now: Instant,
    ) -> Result<Result<Nacked, Fenced>, StoreError>;

    /// Puts the dead letters back ([`Queue::redrive`]); returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    fn redrive(&mut self, now: Instant) -> Result<usize, StoreError>;

    /// Where the jobs are, and the counters ([`Queue::counts`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn counts(&mut self) -> Result<QueueCounts, StoreError>;

    /// Every dead letter, in the order they died ([`Queue::dead_letters`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, StoreError>;

    /// When something next becomes due or a lease expires, if anything is queued: when
    /// to call [`lease`](JobStore::lease) again at the latest.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn next_due(&mut self) -> Result<Option<Instant>, StoreError>;
}

/// The in-memory store: the sans-IO [`Queue`] behind a mutex. Clones are handles to
/// the same queue.
#[derive(Clone, Debug)]
pub struct MemoryJobs {
    queue: Arc<Mutex<Queue>>,
}

impl MemoryJobs {
    /// An empty queue with `config`.
    pub fn new(config: QueueConfig) -> Self {
        MemoryJobs::from_queue(Queue::new(config))
    }

    /// A store around `queue` (a recovered one, say).
    pub fn from_queue(queue: Queue) -> Self {
        MemoryJobs {
            queue: Arc::new(Mutex::new(queue)),
        }
    }

    fn q(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held cannot leave the queue half-changed in a way
        // the next command cannot read (every command leaves it consistent or panics
        // before it writes), so the poison is cleared.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobStore for MemoryJobs {
    fn visibility_timeout(&self) -> std::time::Duration {
        self.q().config().visibility_timeout()
    }
    fn origin(&mut self, proposed: Origin) -> Result<Origin, StoreError> {
        Ok(self.q().set_origin(proposed))
    }
    fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
        Ok(self.q().enqueue(job, now))
    }
    fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
        Ok(self.q().lease(now))
    }
    fn heartbeat(
        &mut self,
        token: &LeaseToken,
        now: Instant,
    ) -> Result<Result<Instant, Fenced>, StoreError> {
        Ok(self.q().heartbeat(token, now))
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
        Ok(self.q().ack(token, now))
    }
    fn nack(
        &mut self,
        token: &LeaseToken,
        error: &str,
        now: Instant,
    ) -> Result<Result<Nacked, Fenced>, StoreError> {
        Ok(self.q().nack(token, error, now))
    }
    fn redrive(&mut self, now: Instant) -> Result<usize, StoreError> {
        Ok(self.q().redrive(now))
    }
    fn counts(&mut self) -> Result<QueueCounts, StoreError> {
        Ok(self.q().counts())
    }
    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.q().dead_letters().to_vec())
    }
    fn next_due(&mut self) -> Result<Option<Instant>, StoreError> {
        Ok(self.q().poll_timeout())
    }
}
