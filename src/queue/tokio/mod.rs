//! The tokio adapter: [`SharedQueue`], the sans-IO [`Queue`] behind a mutex,
//! [`StoreQueue`], a durable [`JobStore`](crate::queue::store::JobStore) (SQLite,
//! Postgres) whose commands run on blocking threads, and a [`WorkerPool`] of N tasks
//! that lease tasks from either, run a pluggable async delivery function, extend their
//! leases with heartbeats while it runs, and ack or nack the result.
//!
//! - **Producing.** [`enqueue`](SharedQueue::enqueue) (or
//!   [`relay`](SharedQueue::relay) from an [`Outbox`]) accepts tasks and wakes an idle
//!   worker.
//! - **Delivering.** Each worker takes the earliest due task, calls the delivery
//!   function with it, and meanwhile sends a heartbeat every third of the visibility
//!   timeout (in whole milliseconds). `Ok` acks the job; `Err` nacks it with the
//!   error's text (retried after the backoff, dead-lettered after `attempts_max` with
//!   that text as the dead letter's last error). If a heartbeat is refused (the lease expired,
//!   e.g. the process was paused longer than the timeout), the worker drops the delivery
//!   future at once: it has lost the task to another worker and must not act on it.
//!   An idle worker sleeps until a task is enqueued, the next retry is due, or the poll
//!   interval passes, whichever comes first.
//! - **Shutdown** ([`WorkerPool::shutdown`]) is graceful: no worker takes a new task;
//!   each finishes (and acks or nacks) the delivery in hand; then the tasks are joined.
//!   What is still queued stays queued (and, with a durable store, survives).
//!
//! Every worker task is a driver, not a second implementation: when to lease, how long
//! to sleep, when to heartbeat, whether to ack, nack or drop, and when to exit are
//! decided by the same sans-IO worker core that the simulated workers of the
//! [queue world](crate::queue) drive under fault plans; the task only feeds it `now`
//! and what happened, and carries out what it asks.
//!
//! Time comes from `tokio::time::Instant`, converted to the core's [`Instant`]
//! (nanoseconds since the queue's origin, which its store keeps across restarts), so a paused tokio clock
//! (`#[tokio::test(start_paused = true)]`) drives leases and backoff in tests.
//!
//! A poisoned lock is recovered, never turned into a panic: every critical section only
//! calls the core, which never panics on its inputs. A delivery function that panics
//! (when called or while polled) counts as a failed delivery: the task is nacked and
//! retried like on an `Err`, and the worker goes on.
//!
//! # Example: sync profile updates to two services
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use faultline::queue::profile::{self, ProfileId, ProfileService, Replica, TargetId};
//! use faultline::queue::tokio::{PoolConfig, SharedQueue, WorkerPool};
//! use faultline::queue::{Outbox, QueueConfig};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let queue = SharedQueue::new(QueueConfig::builder().build()?);
//!     let replicas = Arc::new(Mutex::new([Replica::new(), Replica::new()]));
//!     let pool = WorkerPool::spawn(&queue, PoolConfig::builder().workers(2).build()?, {
//!         let replicas = Arc::clone(&replicas);
//!         move |lease| {
//!             let replicas = Arc::clone(&replicas);
//!             async move {
//!                 // An HTTP call to the target service in real life.
//!                 let (p, t) = profile::parse(&lease.job.key).ok_or("not a profile sync")?;
//!                 let mut r = replicas.lock().map_err(|e| e.to_string())?;
//!                 r[t.0 as usize].apply(p, lease.job.version, lease.token.fence());
//!                 Ok::<(), String>(())
//!             }
//!         }
//!     })?;
//!
//!     let mut profiles = ProfileService::new(&[TargetId(0), TargetId(1)]);
//!     let mut outbox = Outbox::new();
//!     outbox.write(|tx| profiles.update(tx, ProfileId(1)))?;
//!     outbox.write(|tx| profiles.update(tx, ProfileId(1)))?;
//!     queue.relay(&mut outbox);
//!     queue.settled().await;
//!
//!     let report = pool.shutdown().await;
//!     assert_eq!(report.panicked, 0);
//!     let r = replicas.lock().map_err(|e| e.to_string())?;
//!     assert_eq!(r[0].version(ProfileId(1)), Some(2));
//!     assert_eq!(r[1].version(ProfileId(1)), Some(2));
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use ::tokio::sync::Notify;
use ::tokio::task::JoinHandle;

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::queue::core::{
    DeadLetter, Enqueued, Fenced, Job, Lease, LeaseToken, Nacked, Outbox, Queue, QueueConfig,
    QueueCounts,
};
use crate::queue::worker::{
    Beat, Next, Outcome, Settled, WorkerConfig, WorkerCore, heartbeat_every,
};

use crate::name::Name;
use crate::observe::{NackEnd, QueueObserver};
use crate::rt::lock;

mod store;
pub use self::store::{SETTLED_POLL, StoreQueue};

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Whichever of `a` and `b` finishes first (`a` when both are ready).
async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    })
    .await
}

struct Shared {
    queue: Mutex<Queue>,
    /// Tokio's clock when the adapter was built, where the queue's clock read `base`.
    origin: ::tokio::time::Instant,
    /// The queue's instant at `origin`: zero for a new queue; for a recovered one, the
    /// time since its stored origin (its scale continues across restarts).
    base: Instant,
    /// The wall-clock origin of the queue's instants (kept in its store).
    wall: crate::clock::Origin,
    /// Woken when a task is enqueued or redriven.
    work: Notify,
    /// Woken whenever a task settles (for [`SharedQueue::settled`]).
    settled: Notify,
    /// Its `tracing` events and metrics.
    observer: QueueObserver,
}

impl Shared {
    /// Tells the observer of a lease.
    fn observe_lease(&self, lease: &Lease) {
        self.observer
            .leased(&lease.job.key, lease.attempt, lease.job.target);
    }

    /// Nacks under the lock and tells the observer.
    fn nack(&self, token: &LeaseToken, error: &str, now: Instant) -> Result<Nacked, Fenced> {
        let mut q = lock(&self.queue);
        let r = q.nack(token, error, now);
        let end = r.as_ref().ok().map(nack_end);
        self.observer.nacked(&token.key(), error, end, levels(&q));
        r
    }
}

/// Tells `observer` the queue's levels after a command (read only when a metric wants
/// them).
fn levels(q: &Queue) -> impl FnOnce() -> (u64, u64) + '_ {
    move || q.levels()
}

/// How a nack ended, as the observer counts it.
fn nack_end(nacked: &Nacked) -> NackEnd {
    match nacked {
        Nacked::Retry { .. } => NackEnd::Retry,
        Nacked::Superseded => NackEnd::Superseded,
        Nacked::DeadLettered => NackEnd::DeadLettered,
    }
}

/// The queue shared between producers and a [`WorkerPool`]. Cloning is cheap (an
/// `Arc`).
#[derive(Clone)]
pub struct SharedQueue {
    shared: Arc<Shared>,
}

impl fmt::Debug for SharedQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedQueue")
            .field("counts", &self.counts())
            .finish()
    }
}

impl SharedQueue {
    /// An empty queue. Call inside a tokio runtime (it reads tokio's clock).
    pub fn new(config: QueueConfig) -> Self {
        Self::from_queue(Queue::new(config))
    }

    /// As [`new`](SharedQueue::new), under `name`: the `queue` field of its `tracing`
    /// events and the `queue` label of its metrics (default: `unnamed`).
    pub fn named(config: QueueConfig, name: Name) -> Self {
        Self::from_queue_named(Queue::new(config), name)
    }

    /// Wraps `queue`, e.g. one [recovered](Queue::recover) from its store. A queue whose
    /// store holds a wall-clock origin (every queue an adapter built before) keeps it,
    /// and its clock continues from that origin's scale: the instants stored by an
    /// earlier process (dead letters, due times, lease deadlines) keep their meaning.
    /// A new queue gets the wall clock read now as its origin, stored with it.
    pub fn from_queue(queue: Queue) -> Self {
        Self::from_queue_named(queue, crate::observe::UNNAMED)
    }

    /// As [`from_queue`](SharedQueue::from_queue), under `name` (see
    /// [`named`](SharedQueue::named)).
    pub fn from_queue_named(mut queue: Queue, name: Name) -> Self {
        let (origin, now) = crate::rt::start();
        let wall = queue.set_origin(now);
        // The wall time since the stored origin, but never before the latest instant
        // the store saw (a wall clock set back, or one that stood still, as a paused
        // test's does, does not move the scale back).
        let base = wall
            .saturating_instant(now.system_time())
            .max(queue.store().clock_high());
        SharedQueue {
            shared: Arc::new(Shared {
                queue: Mutex::new(queue),
                origin,
                base,
                wall,
                work: Notify::new(),
                settled: Notify::new(),
                observer: QueueObserver::new(name),
            }),
        }
    }

    /// The queue's clock now (on its scale: see [`origin`](SharedQueue::origin)).
    pub fn now(&self) -> Instant {
        let shared = &self.shared;
        shared
            .base
            .saturating_add(::tokio::time::Instant::now().saturating_duration_since(shared.origin))
    }

    /// The queue's instant of the wall-clock time `t` (clamped: a time before the
    /// scale's start is its first instant), e.g. for a job's
    /// [`run_at`](crate::queue::Job::run_at).
    pub fn instant_at(&self, t: std::time::SystemTime) -> Instant {
        self.shared.wall.saturating_instant(t)
    }

    /// Where this queue's instants sit on the wall clock: `origin().to_system_time(at)`
    /// is the [`SystemTime`](std::time::SystemTime) of any instant it reports (a
    /// [`DeadLetter`]'s `at`, a [`Lease`]'s `deadline`, a [`Nacked::Retry`]'s `at`).
    /// Read once when the queue was first built and kept in its durable store, so a
    /// queue [recovered](Queue::recover) by a later process into
    /// [`from_queue`](SharedQueue::from_queue) has the same origin, and the instants the
    /// earlier process stored map to the wall clock too; later offsets come from
    /// tokio's clock.
    pub fn origin(&self) -> crate::clock::Origin {
        self.shared.wall
    }

    /// Accepts `job` and wakes an idle worker.
    pub fn enqueue(&self, job: Job) -> Enqueued {
        let now = self.now();
        let r = {
            let mut q = lock(&self.shared.queue);
            let r = q.enqueue(job, now);
            let accepted = u64::from(r != Enqueued::Duplicate);
            self.shared.observer.enqueued(accepted, levels(&q));
            r
        };
        self.shared.work.notify_waiters();
        r
    }

    /// Moves every row of `outbox` into the queue; returns how many.
    pub fn relay(&self, outbox: &mut Outbox) -> usize {
        let now = self.now();
        let n = {
            let mut q = lock(&self.shared.queue);
            let mut accepted = 0;
            let n = outbox.relay(|job| {
                accepted += u64::from(q.enqueue(job, now) != Enqueued::Duplicate);
                true
            });
            self.shared.observer.enqueued(accepted, levels(&q));
            n
        };
        self.shared.work.notify_waiters();
        n
    }

    /// Leases the earliest due task, if any: for a worker loop of your own (the
    /// [`WorkerPool`]'s workers lease through the same queue).
    pub fn lease(&self) -> Option<Lease> {
        let now = self.now();
        let lease = lock(&self.shared.queue).lease(now);
        if let Some(lease) = &lease {
            self.shared.observe_lease(lease);
        }
        lease
    }

    /// Extends the lease `token` by the visibility timeout; the new deadline, or
    /// [`Fenced`] when the lease has expired or was taken over.
    pub fn heartbeat(&self, token: &LeaseToken) -> Result<Instant, Fenced> {
        let now = self.now();
        lock(&self.shared.queue).heartbeat(token, now)
    }

    /// Acks the lease `token`: the task is done. (Under a
    /// [per-target limit](crate::queue::QueueConfigBuilder::leases_per_target_max) it
    /// also wakes the idle workers: its target has room again.)
    pub fn ack(&self, token: &LeaseToken) -> Result<(), Fenced> {
        let now = self.now();
        let (r, limited) = {
            let mut q = lock(&self.shared.queue);
            let r = q.ack(token, now);
            self.shared.observer.acked(r.is_err(), levels(&q));
            (r, q.config().leases_per_target_max().is_some())
        };
        if limited {
            self.shared.work.notify_waiters();
        }
        self.shared.settled.notify_waiters();
        r
    }

    /// Nacks the lease `token` with `error` (a dead letter records the last one):
    /// retried after the backoff, or dead-lettered.
    pub fn nack(&self, token: &LeaseToken, error: &str) -> Result<Nacked, Fenced> {
        let now = self.now();
        let r = self.shared.nack(token, error, now);
        self.shared.work.notify_waiters();
        self.shared.settled.notify_waiters();
        r
    }

    /// How long a lease (or an accepted heartbeat) hides a task.
    pub fn visibility_timeout(&self) -> Duration {
        lock(&self.shared.queue).config().visibility_timeout()
    }

    /// Where the tasks are.
    pub fn counts(&self) -> QueueCounts {
        lock(&self.shared.queue).counts()
    }

    /// Every dead letter, redriven ones included.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.shared.queue).dead_letters().to_vec()
    }

    /// Puts the dead letters back (keeping each key's order); returns how many.
    pub fn redrive(&self) -> usize {
        let now = self.now();
        let n = lock(&self.shared.queue).redrive(now);
        self.shared.work.notify_waiters();
        n
    }

    /// A copy of the queue's durable store (what a restart would keep).
    pub fn store(&self) -> crate::queue::core::Store {
        lock(&self.shared.queue).store().clone()
    }

    /// Waits until nothing is in flight: no job is pending (waiting for its first
    /// attempt, a run-at in the future included, or a newer version waiting behind a
    /// lease), leased, or waiting for a retry ([`QueueCounts::in_flight`] is 0). Then
    /// every job accepted so far was acked, superseded or dead-lettered, and nothing
    /// more happens until the next enqueue or redrive.
    ///
    /// Dead letters may remain: `settled` does not tell "synced" from "given up on";
    /// read [`counts`](SharedQueue::counts)`().dead` or use
    /// [`drained`](SharedQueue::drained), which says which, and which also waits for
    /// the dead letters that [automatic redrive](crate::queue::QueueConfigBuilder::redrive_after)
    /// will still put back. Returns at once when nothing is in flight; it looks again
    /// whenever a job settles (an ack or a nack, here or by a pool's worker), so it
    /// waits for ever when no worker delivers.
    pub async fn settled(&self) {
        loop {
            let notified = self.shared.settled.notified();
            if self.counts().in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every job accepted so far is acked, superseded or dead-lettered for
    /// good: nothing is pending, leased or waiting for a retry (as for
    /// [`settled`](SharedQueue::settled)), and no dead letter is waiting for an
    /// [automatic redrive](crate::queue::QueueConfigBuilder::redrive_after) (without
    /// that policy, the same moment as `settled`). Returns what it found:
    /// [`Drained::synced`] is true when no dead letter remains (the redriven ones
    /// aside), so "everything reached its target" and "some jobs were given up on"
    /// are told apart.
    ///
    /// ```
    /// use faultline::queue::tokio::{PoolConfig, SharedQueue, WorkerPool};
    /// use faultline::queue::{Job, JobId, JobType, Payload, QueueConfig};
    ///
    /// const EMAIL: JobType = JobType::from_static("send_email");
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let queue = SharedQueue::new(QueueConfig::builder().attempts_max(1).build()?);
    ///     let pool = WorkerPool::spawn(&queue, PoolConfig::builder().build()?, |lease| async move {
    ///         if lease.job.key.id() == Some(JobId(2)) { Err("550 no such user") } else { Ok(()) }
    ///     })?;
    ///     queue.enqueue(Job::unique(EMAIL, JobId(1), Payload::default()));
    ///     queue.enqueue(Job::unique(EMAIL, JobId(2), Payload::default()));
    ///     let drained = queue.drained().await;
    ///     assert!(!drained.synced());
    ///     assert_eq!(drained.dead_letters[0].last_error, "550 no such user");
    ///     pool.shutdown().await;
    ///     Ok(())
    /// }
    /// ```
    pub async fn drained(&self) -> Drained {
        loop {
            let notified = self.shared.settled.notified();
            {
                let q = lock(&self.shared.queue);
                let counts = q.counts();
                if counts.in_flight() == 0 && q.redrives_scheduled() == 0 {
                    return Drained {
                        counts,
                        dead_letters: q
                            .dead_letters()
                            .iter()
                            .filter(|d| d.redriven_at.is_none())
                            .cloned()
                            .collect(),
                    };
                }
            }
            notified.await;
        }
    }
}

/// What [`SharedQueue::drained`] found: nothing in flight, and no dead letter waiting
/// for an automatic redrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drained {
    /// The queue's counts at that moment.
    pub counts: QueueCounts,
    /// The dead letters not redriven, oldest first: the jobs given up on (each with
    /// its last error and attempt history).
    pub dead_letters: Vec<DeadLetter>,
}

impl Drained {
    /// True when every job reached its target (acked, or superseded by a newer
    /// version that was): no dead letter remains.
    pub fn synced(&self) -> bool {
        self.dead_letters.is_empty()
    }
}

/// A validated pool configuration; build it with [`PoolConfig::builder`].
///
/// Serde: an object keyed by the builder's methods, read through the builder (a bad
/// value is refused with its [`ConfigError`], an unknown key too, a key left out keeps
/// the default), e.g. `{"workers": 8, "poll_interval": {"secs": 0, "nanos":
/// 250000000}}`; see [`config`](crate::config#reading-a-configuration-from-a-file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    workers: usize,
    poll_interval: Duration,
}

impl PoolConfig {
    /// Defaults: 4 workers, a 1 s poll interval.
    pub fn builder() -> PoolConfigBuilder {
        PoolConfigBuilder {
            workers: 4,
            poll_interval: Duration::from_secs(1),
        }
    }
    /// Worker tasks.
    pub fn workers(&self) -> usize {
        self.workers
    }
    /// Longest sleep of an idle worker.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

/// Builder for [`PoolConfig`].
#[derive(Clone, Debug)]
pub struct PoolConfigBuilder {
    workers: usize,
    poll_interval: Duration,
}

impl PoolConfigBuilder {
    /// Worker tasks (1 to 1,024). Default: 4.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Longest sleep of an idle worker (1 ms to 1 hour). Default: 1 s.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<PoolConfig, ConfigError> {
        if self.workers == 0 || self.workers > 1_024 {
            return Err(ConfigError::new(
                "workers",
                format!("must be 1 to 1024, got {}", self.workers),
            ));
        }
        if self.poll_interval < Duration::from_millis(1)
            || self.poll_interval > Duration::from_secs(3_600)
        {
            return Err(ConfigError::new(
                "poll_interval",
                format!("must be 1 ms to 1 h, got {:?}", self.poll_interval),
            ));
        }
        Ok(PoolConfig {
            workers: self.workers,
            poll_interval: self.poll_interval,
        })
    }
}

/// Counters of a pool, shared by its workers.
#[derive(Debug, Default)]
struct PoolCounters {
    delivered: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    heartbeats: AtomicU64,
    panics: AtomicU64,
}

/// What a pool did, as [`WorkerPool::shutdown`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolReport {
    /// Deliveries acked.
    pub delivered: u64,
    /// Deliveries that failed (nacked).
    pub failed: u64,
    /// Deliveries dropped because their lease was lost (a heartbeat or the ack refused).
    pub abandoned: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Deliveries that panicked (counted as failed too: nacked like an `Err`).
    pub panicked: u64,
}

/// Why a pool could not be spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// Not called from within a tokio runtime, so there is nowhere to run the workers.
    #[error("WorkerPool::spawn must be called within a tokio runtime")]
    NoRuntime,
}

/// A boxed delivery future of a [`Handlers`] table.
pub type Delivery = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

type Handler = Arc<dyn Fn(Lease) -> Delivery + Send + Sync>;

/// One async handler per job type, for a [`WorkerPool`]
/// ([`WorkerPool::spawn_handlers`]): each lease goes to the handler of its job's type;
/// a job of a type with no handler fails with "no handler for job type …" (retried,
/// then dead-lettered with that error, until a pool that knows the type redrives it).
///
/// ```
/// use faultline::queue::tokio::{Handlers, PoolConfig, SharedQueue, WorkerPool};
/// use faultline::queue::{Job, JobId, JobType, Payload, QueueConfig};
///
/// const EMAIL: JobType = JobType::from_static("send_email");
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let queue = SharedQueue::new(QueueConfig::builder().build()?);
///     let handlers = Handlers::new().on(EMAIL, |lease| async move {
///         let to: String = lease.job.payload.decode().map_err(|e| e.to_string())?;
///         assert_eq!(to, "ada@example.com"); // an SMTP call in real life
///         Ok::<(), String>(())
///     });
///     let pool = WorkerPool::spawn_handlers(&queue, PoolConfig::builder().build()?, handlers)?;
///     queue.enqueue(Job::unique(EMAIL, JobId(1), Payload::encode("ada@example.com")?));
///     queue.settled().await;
///     assert_eq!(pool.shutdown().await.delivered, 1);
///     Ok(())
/// }
/// ```
#[derive(Clone, Default)]
pub struct Handlers {
    by_type: std::collections::BTreeMap<crate::queue::JobType, Handler>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_type.keys()).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// Delivers the jobs of `job_type` with `handler` (replacing an earlier one): `Ok`
    /// acks, `Err` nacks with the error's text.
    pub fn on<F, Fut, E>(mut self, job_type: crate::queue::JobType, handler: F) -> Self
    where
        F: Fn(Lease) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let handler: Handler = Arc::new(move |lease| {
            let fut = handler(lease);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self.by_type.insert(job_type, handler);
        self
    }

    /// The job types handled.
    pub fn job_types(&self) -> impl Iterator<Item = crate::queue::JobType> + '_ {
        self.by_type.keys().copied()
    }

    /// Delivers `lease` with its type's handler.
    pub fn dispatch(&self, lease: Lease) -> Delivery {
        match self.by_type.get(&lease.job.job_type()) {
            Some(h) => h(lease),
            None => {
                let t = lease.job.job_type();
                Box::pin(async move { Err(format!("no handler for job type {t}")) })
            }
        }
    }
}

/// N worker tasks delivering the tasks of a [`SharedQueue`] (in memory) or of a
/// [`StoreQueue`] (a durable [`JobStore`](crate::queue::store::JobStore): SQLite,
/// Postgres): the same workers, driven by the same sans-IO worker core, on either.
#[derive(Debug)]
pub struct WorkerPool<Q: PoolQueue = SharedQueue> {
    queue: Q,
    stop: Arc<AtomicBool>,
    counters: Arc<PoolCounters>,
    handles: Vec<JoinHandle<()>>,
}

impl<Q: PoolQueue> WorkerPool<Q> {
    /// Spawns `config.workers()` tasks on the current tokio runtime, each delivering
    /// leases with `deliver`: `Ok` acks the job, `Err` nacks it with the error's text
    /// (which a dead letter records as its last error). The lease gives the job (its
    /// type to dispatch on, its payload) and its fencing token (send the token along,
    /// so a target can refuse a worker whose lease was taken over). One function serves
    /// every job type: match on [`Job::job_type`](crate::queue::Job::job_type).
    ///
    /// # Errors
    ///
    /// [`SpawnError::NoRuntime`] outside a tokio runtime.
    pub fn spawn<F, Fut, E>(
        queue: &Q,
        config: PoolConfig,
        deliver: F,
    ) -> Result<WorkerPool<Q>, SpawnError>
    where
        F: Fn(Lease) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let runtime = ::tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
        let deliver = Arc::new(deliver);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(PoolCounters::default());
        let handles = (0..config.workers)
            .map(|_| {
                runtime.spawn(work(
                    queue.clone(),
                    config,
                    Arc::clone(&deliver),
                    Arc::clone(&stop),
                    Arc::clone(&counters),
                ))
            })
            .collect();
        Ok(WorkerPool {
            queue: queue.clone(),
            stop,
            counters,
            handles,
        })
    }

    /// Spawns a pool whose workers deliver each lease with the handler of its job's
    /// type ([`Handlers`]).
    ///
    /// # Errors
    ///
    /// [`SpawnError::NoRuntime`] outside a tokio runtime.
    pub fn spawn_handlers(
        queue: &Q,
        config: PoolConfig,
        handlers: Handlers,
    ) -> Result<WorkerPool<Q>, SpawnError> {
        WorkerPool::spawn(queue, config, move |lease| handlers.dispatch(lease))
    }

    /// Where the instants of the pool's queue sit on the wall clock: its
    /// [`SharedQueue::origin`] or [`StoreQueue::origin`].
    pub fn origin(&self) -> crate::clock::Origin {
        self.queue.wall()
    }

    /// Stops taking tasks, lets every worker finish the delivery in hand, and joins
    /// them.
    pub async fn shutdown(self) -> PoolReport {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.work().notify_waiters();
        for h in self.handles {
            // A worker never panics (deliveries are guarded); a join error means the
            // runtime is shutting down, and the worker's lease simply expires.
            let _ = h.await;
        }
        let c = &self.counters;
        PoolReport {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            heartbeats: c.heartbeats.load(Ordering::Relaxed),
            panicked: c.panics.load(Ordering::Relaxed),
        }
    }
}

/// The error text a nack carries when a delivery had no outcome within the worker's
/// delivery timeout (the pool's workers have none: a delivery function owns its own).
const DELIVERY_TIMED_OUT: &str = "the delivery timed out";

/// The error text a nack carries when the delivery panicked.
pub const DELIVERY_PANICKED: &str = "the delivery panicked";

/// A failed delivery: its error's text, and whether it panicked.
struct Failure {
    error: String,
    panicked: bool,
}

impl Failure {
    fn panic() -> Self {
        Failure {
            error: DELIVERY_PANICKED.to_owned(),
            panicked: true,
        }
    }
}

/// Runs `deliver(lease)`, turning a panic (in the call or in the future) into a
/// failure.
async fn guarded<F, Fut, E>(deliver: &F, lease: Lease) -> Result<(), Failure>
where
    F: Fn(Lease) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let Ok(fut) = catch_unwind(AssertUnwindSafe(|| deliver(lease))) else {
        return Err(Failure::panic());
    };
    let mut fut = pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(r.map_err(|e| Failure {
                error: e.to_string(),
                panicked: false,
            })),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_panic) => Poll::Ready(Err(Failure::panic())),
        },
    )
    .await
}

/// One worker task: a driver of the sans-IO [`WorkerCore`], which decides every step;
/// this loop only feeds it `now` and what happened, and carries out what it asks.
async fn work<Q, F, Fut, E>(
    queue: Q,
    config: PoolConfig,
    deliver: Arc<F>,
    stop: Arc<AtomicBool>,
    counters: Arc<PoolCounters>,
) where
    Q: PoolQueue,
    F: Fn(Lease) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display,
{
    let visibility = queue.visibility();
    let mut core = WorkerCore::new(WorkerConfig {
        heartbeat: Some(heartbeat_every(visibility)),
        poll: config.poll_interval,
        delivery_timeout: None,
    });
    let mut next = core.start();
    // Registered before each lease, so work enqueued between the lease and the sleep
    // still wakes this worker.
    let mut notified = pin!(queue.work().notified());
    loop {
        next = match next {
            Next::Exit => break,
            Next::Lease => {
                if stop.load(Ordering::SeqCst) {
                    core.stop()
                } else {
                    notified.set(queue.work().notified());
                    let now = queue.now();
                    let (lease, due) = queue.lease_next(now).await;
                    core.on_lease(now, lease, due)
                }
            }
            Next::Sleep { until } => {
                if stop.load(Ordering::SeqCst) {
                    core.stop()
                } else {
                    race(notified.as_mut(), queue.sleep_until(until)).await;
                    core.on_wake()
                }
            }
            Next::Deliver(lease) => {
                let delivery = pin!(guarded(&*deliver, *lease));
                let (next, panicked) = drive(&queue, &mut core, delivery).await;
                if panicked {
                    counters.panics.fetch_add(1, Ordering::Relaxed);
                }
                if core.take_wake_idle() {
                    queue.work().notify_waiters();
                }
                queue.settled_notify().notify_waiters();
                next
            }
            // Only reached between deliveries, where the core never asks for these.
            Next::Wait | Next::Heartbeat(_) | Next::Ack(_) | Next::Nack(_) | Next::Abandon => {
                core.abandon()
            }
        };
    }
    let t = core.tally();
    counters.delivered.fetch_add(t.delivered, Ordering::Relaxed);
    counters.failed.fetch_add(t.failed, Ordering::Relaxed);
    counters.abandoned.fetch_add(t.abandoned, Ordering::Relaxed);
    counters
        .heartbeats
        .fetch_add(t.heartbeats, Ordering::Relaxed);
}

/// Sleeps until the instant `at` of a scale that read `base` at tokio's `origin`
/// (forever if it does not fit tokio's clock).
async fn sleep_until(origin: ::tokio::time::Instant, base: Instant, at: Instant) {
    let since = Instant::ZERO.saturating_add(at.saturating_since(base));
    match crate::rt::tokio_instant(origin, since) {
        Some(t) => ::tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A queue a [`WorkerPool`] works on: [`SharedQueue`] (the sans-IO queue in memory) or
/// [`StoreQueue`] (a durable [`JobStore`](crate::queue::store::JobStore)). Sealed: the
/// workers' needs are the crate's business; your own queue goes into the simulator
/// through [`TaskQueue`](crate::queue::contract::TaskQueue), or into a pool as a
/// [`JobStore`](crate::queue::store::JobStore) in a [`StoreQueue`].
pub trait PoolQueue: sealed::Backing {}

pub(crate) mod sealed {
    use std::future::Future;
    use std::time::Duration;

    use crate::clock::{Instant, Origin};
    use crate::queue::core::{Lease, LeaseToken, Nacked};

    /// What a worker needs of its queue. Each command's future is ready at once for
    /// the in-memory queue (no extra yield point: the workers' schedule is the same as
    /// before there were two backings) and runs on a blocking thread for a store.
    pub trait Backing: Clone + Send + Sync + 'static {
        /// The queue's clock now.
        fn now(&self) -> Instant;
        /// The wall-clock origin of the queue's instants.
        fn wall(&self) -> Origin;
        /// How long a lease hides a job.
        fn visibility(&self) -> Duration;
        /// Woken when work may be due (an enqueue, a redrive, a nack).
        fn work(&self) -> &::tokio::sync::Notify;
        /// Woken whenever a job settles.
        fn settled_notify(&self) -> &::tokio::sync::Notify;
        /// Sleeps until the queue's instant `at`.
        fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send;
        /// A lease of the earliest due job, and (when there is none) when the next one
        /// is due.
        fn lease_next(
            &self,
            now: Instant,
        ) -> impl Future<Output = (Option<Lease>, Option<Instant>)> + Send;
        /// A heartbeat: whether the lease was extended.
        fn extend(&self, token: LeaseToken, now: Instant) -> impl Future<Output = bool> + Send;
        /// An ack: whether it was accepted.
        fn settle_ack(&self, token: LeaseToken, now: Instant) -> impl Future<Output = bool> + Send;
        /// A nack: what it did, or `None` when it was refused.
        fn settle_nack(
            &self,
            token: LeaseToken,
            error: String,
            now: Instant,
        ) -> impl Future<Output = Option<Nacked>> + Send;
    }
}

impl PoolQueue for SharedQueue {}

impl sealed::Backing for SharedQueue {
    fn now(&self) -> Instant {
        SharedQueue::now(self)
    }
    fn wall(&self) -> crate::clock::Origin {
        self.shared.wall
    }
    fn visibility(&self) -> Duration {
        self.visibility_timeout()
    }
    fn work(&self) -> &Notify {
        &self.shared.work
    }
    fn settled_notify(&self) -> &Notify {
        &self.shared.settled
    }
    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send {
        sleep_until(self.shared.origin, self.shared.base, at)
    }
    fn lease_next(
        &self,
        now: Instant,
    ) -> impl Future<Output = (Option<Lease>, Option<Instant>)> + Send {
        let mut q = lock(&self.shared.queue);
        let lease = q.lease(now);
        if let Some(lease) = &lease {
            self.shared.observe_lease(lease);
        }
        // The next due time only matters when nothing is due now.
        let due = if lease.is_none() {
            q.poll_timeout()
        } else {
            None
        };
        std::future::ready((lease, due))
    }
    fn extend(&self, token: LeaseToken, now: Instant) -> impl Future<Output = bool> + Send {
        std::future::ready(lock(&self.shared.queue).heartbeat(&token, now).is_ok())
    }
    fn settle_ack(&self, token: LeaseToken, now: Instant) -> impl Future<Output = bool> + Send {
        let mut q = lock(&self.shared.queue);
        let fenced = q.ack(&token, now).is_err();
        self.shared.observer.acked(fenced, levels(&q));
        std::future::ready(!fenced)
    }
    fn settle_nack(
        &self,
        token: LeaseToken,
        error: String,
        now: Instant,
    ) -> impl Future<Output = Option<Nacked>> + Send {
        std::future::ready(self.shared.nack(&token, &error, now).ok())
    }
}

/// Carries one delivery through to its settlement as the core says: waits for its
/// outcome or the core's next timer, heartbeats, acks or nacks, or drops the delivery
/// future at once when the lease is lost. Returns the core's next step after it and
/// whether the delivery panicked.
async fn drive<Q, D>(
    queue: &Q,
    core: &mut WorkerCore,
    mut delivery: std::pin::Pin<&mut D>,
) -> (Next, bool)
where
    Q: PoolQueue,
    D: Future<Output = Result<(), Failure>>,
{
    let mut panicked = false;
    // What the nack carries: the delivery's error, or that no outcome came in time.
    let mut error = String::from(DELIVERY_TIMED_OUT);
    let mut next = Next::Wait;
    loop {
        next = match next {
            Next::Wait => {
                let wake = core.wake_at();
                let timer = async move {
                    match wake {
                        Some(at) => queue.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                match race(delivery.as_mut(), timer).await {
                    Either::Left(Ok(())) => core.on_outcome(Outcome::Delivered),
                    Either::Left(Err(f)) => {
                        panicked = f.panicked;
                        error = f.error;
                        core.on_outcome(Outcome::Failed)
                    }
                    Either::Right(()) => core.on_timer(queue.now()),
                }
            }
            Next::Heartbeat(token) => {
                let now = queue.now();
                let beat = if queue.extend(token, now).await {
                    Beat::Extended
                } else {
                    Beat::Refused
                };
                core.on_heartbeat(now, beat)
            }
            Next::Ack(token) => {
                let now = queue.now();
                let settled = if queue.settle_ack(token, now).await {
                    Settled::Acked
                } else {
                    Settled::Refused
                };
                return (core.on_settled(settled), panicked);
            }
            Next::Nack(token) => {
                let now = queue.now();
                let settled = match queue.settle_nack(token, error, now).await {
                    Some(n) => Settled::Nacked(n),
                    None => Settled::Refused,
                };
                return (core.on_settled(settled), panicked);
            }
            // The lease is gone: another worker may have the task now. Dropping the
            // delivery future (when this returns) cancels it.
            Next::Abandon => return (core.abandon(), panicked),
            other @ (Next::Lease | Next::Sleep { .. } | Next::Deliver(_) | Next::Exit) => {
                return (other, panicked);
            }
        };
    }
}

#[cfg(test)]
mod isolation;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::profile::{self, ProfileId, ProfileService, Replica, TargetId};
    use std::sync::atomic::AtomicU32;

    fn task(p: u64, t: u32, v: u64) -> Job {
        profile::job(ProfileId(p), TargetId(t), v)
    }

    /// The queue's counters follow what its commands answered, and its gauges equal
    /// what `counts()` finds walking the jobs.
    #[cfg(feature = "metrics")]
    #[test]
    fn commands_are_counted_and_levels_match_the_counts() {
        let seen = Arc::new(Mutex::new(QueueCounts::default()));
        let out = Arc::clone(&seen);
        let recorded = crate::observe::testing::recorded(move || async move {
            let q = SharedQueue::named(config(2), Name::from_static("sync"));
            for p in 0..4 {
                assert_ne!(q.enqueue(task(p, 1, 1)), Enqueued::Duplicate);
            }
            assert_eq!(q.enqueue(task(0, 1, 1)), Enqueued::Duplicate);
            let a = q.lease().unwrap();
            q.ack(&a.token).unwrap();
            assert!(q.ack(&a.token).is_err(), "acked twice: fenced");
            let b = q.lease().unwrap();
            assert!(matches!(q.nack(&b.token, "down"), Ok(Nacked::Retry { .. })));
            ::tokio::time::advance(Duration::from_secs(2)).await;
            // The retried job comes back first or later; fail it until it dies.
            loop {
                let l = q.lease().unwrap();
                if l.job.key == b.job.key {
                    assert_eq!(q.nack(&l.token, "down"), Ok(Nacked::DeadLettered));
                    break;
                }
                q.ack(&l.token).unwrap();
            }
            *out.lock().unwrap() = q.counts();
        });
        let c = *seen.lock().unwrap();
        let labels = [("queue", "sync")];
        let counter = |name| recorded.counter(name, &labels);
        assert_eq!(counter("faultline_queue_enqueued_total"), 4);
        assert_eq!(counter("faultline_queue_fenced_total"), 1);
        assert_eq!(counter("faultline_queue_acks_total"), c.done);
        let nacks = |outcome| {
            recorded.counter(
                "faultline_queue_nacks_total",
                &[("queue", "sync"), ("outcome", outcome)],
            )
        };
        assert_eq!(
            ["retry", "superseded", "dead_lettered"].map(nacks),
            [1, 0, 1]
        );
        assert_eq!(
            counter("faultline_queue_leases_total"),
            c.done + 2,
            "every ack and both nacks had a lease"
        );
        assert_eq!(
            recorded.gauge("faultline_queue_unsettled", &labels),
            (c.pending + c.leased + c.retrying) as f64
        );
        assert_eq!(
            recorded.gauge("faultline_queue_dead_letters", &labels),
            c.dead as f64
        );
        assert_eq!(c.dead, 1);
    }

    fn config(attempts: u32) -> QueueConfig {
        QueueConfig::builder()
            .visibility_timeout(Duration::from_secs(3))
            .attempts_max(attempts)
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .build()
            .unwrap()
    }

    fn pool(n: usize) -> PoolConfig {
        PoolConfig::builder()
            .workers(n)
            .poll_interval(Duration::from_millis(50))
            .build()
            .unwrap()
    }

    #[test]
    fn spawning_outside_a_runtime_is_an_error() {
        let q = ::tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async { SharedQueue::new(config(5)) });
        let err =
            WorkerPool::spawn(&q, pool(1), |_lease| async { Ok::<(), String>(()) }).unwrap_err();
        assert_eq!(err, SpawnError::NoRuntime);
    }

    #[test]
    fn pool_config_is_validated() {
        assert!(PoolConfig::builder().workers(0).build().is_err());
        assert!(
            PoolConfig::builder()
                .poll_interval(Duration::ZERO)
                .build()
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_update_reaches_every_target_once_at_its_latest_version() {
        let q = SharedQueue::new(config(5));
        let replicas = Arc::new(Mutex::new(vec![Replica::new(); 3]));
        let effects = Arc::new(AtomicU32::new(0));
        let p = WorkerPool::spawn(&q, pool(4), {
            let replicas = Arc::clone(&replicas);
            let effects = Arc::clone(&effects);
            move |lease: Lease| {
                let replicas = Arc::clone(&replicas);
                let effects = Arc::clone(&effects);
                async move {
                    ::tokio::time::sleep(Duration::from_millis(20)).await;
                    let (p, t) = profile::parse(&lease.job.key).ok_or("not a profile sync")?;
                    let r = lock(&replicas)[t.0 as usize].apply(
                        p,
                        lease.job.version,
                        lease.token.fence(),
                    );
                    if r == crate::queue::Applied::Applied {
                        effects.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), &str>(())
                }
            }
        })
        .unwrap();
        let mut profiles = ProfileService::new(&[TargetId(0), TargetId(1), TargetId(2)]);
        let mut outbox = Outbox::new();
        for round in 0..5 {
            for p in 0..4 {
                let _ = outbox.write(|tx| profiles.update(tx, ProfileId(p)));
            }
            q.relay(&mut outbox);
            ::tokio::time::sleep(Duration::from_millis(7 * round)).await;
        }
        q.settled().await;
        let report = p.shutdown().await;
        let r = lock(&replicas);
        for t in 0..3 {
            for p in 0..4 {
                assert_eq!(r[t].version(ProfileId(p)), Some(5));
            }
        }
        let c = q.counts();
        assert!(c.balanced());
        assert_eq!(c.enqueued, 60);
        assert_eq!(u64::from(effects.load(Ordering::Relaxed)), c.done);
        assert_eq!(report.delivered, c.done);
        assert!(c.superseded > 0, "bursts coalesce");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_and_a_lease_deadline_convert_to_wall_clock_time() {
        let before = std::time::SystemTime::now();
        let built = ::tokio::time::Instant::now();
        let q = SharedQueue::new(config(1));
        let after = std::time::SystemTime::now();
        let origin = q.origin();
        assert!(before <= origin.system_time() && origin.system_time() <= after);
        assert_eq!(origin.instant(), Instant::ZERO);
        // Paused: the wall clock moves on, the queue's time only with tokio's clock.
        ::tokio::time::advance(Duration::from_secs(90)).await;
        q.enqueue(task(1, 0, 1));
        ::tokio::time::advance(Duration::from_millis(500)).await;
        let lease = q.lease().unwrap();
        let leased = origin.system_time() + built.elapsed();
        assert_eq!(built.elapsed(), Duration::from_millis(90_500));
        assert_eq!(
            origin.to_system_time(lease.deadline),
            leased + Duration::from_secs(3)
        );
        ::tokio::time::advance(Duration::from_millis(1_250)).await;
        assert_eq!(q.nack(&lease.token, "503"), Ok(Nacked::DeadLettered));
        let letters = q.dead_letters();
        let died = origin.system_time() + built.elapsed();
        assert_eq!(origin.to_system_time(letters[0].at), died);
        assert_eq!(origin.to_instant(died), Some(letters[0].at));
        assert_eq!(letters[0].last_error, "503");
        let pool = WorkerPool::spawn(&q, pool(1), |_| async { Ok::<(), &str>(()) }).unwrap();
        assert_eq!(pool.origin(), origin);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovered_queue_keeps_its_origin_so_old_dead_letters_map_to_wall_time() {
        let first = SharedQueue::new(config(1));
        let origin = first.origin();
        ::tokio::time::advance(Duration::from_secs(90)).await;
        first.enqueue(task(1, 0, 1));
        first.enqueue(task(2, 0, 1));
        let lease = first.lease().unwrap();
        assert_eq!(first.nack(&lease.token, "503"), Ok(Nacked::DeadLettered));
        let died = first.dead_letters()[0].at;
        assert_eq!(died, Instant::from_millis(90_000));
        let store = first.store();
        drop(first);

        // The next process: a later tokio clock, a later wall clock.
        ::tokio::time::advance(Duration::from_secs(30)).await;
        let second = SharedQueue::from_queue(Queue::recover(config(1), store));
        assert_eq!(second.origin(), origin, "the stored origin, not a new one");
        let letter = &second.dead_letters()[0];
        assert_eq!(
            second.origin().to_system_time(letter.at),
            origin.system_time() + Duration::from_secs(90)
        );
        // Its clock continues the first one's scale: the wall time since the origin,
        // and never before the last instant the store saw (the wall clock stood still
        // here while tokio's was paused and advanced).
        let now = second.now();
        assert!(now >= died, "{now} continues after {died}");
        // And a job leased now gets a deadline on the same scale.
        let l = second.lease().unwrap();
        assert_eq!(l.deadline, now + Duration::from_secs(3));
        // A fresh queue (no stored origin) starts its own.
        let fresh = SharedQueue::new(config(1));
        assert_eq!(fresh.now(), Instant::ZERO);
        assert_eq!(fresh.store().origin(), Some(fresh.origin()));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_then_dead_letter_and_a_redrive_delivers() {
        let q = SharedQueue::new(config(3));
        let up = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let p = WorkerPool::spawn(&q, pool(2), {
            let up = Arc::clone(&up);
            let calls = Arc::clone(&calls);
            move |_lease| {
                let up = up.load(Ordering::SeqCst);
                calls.fetch_add(1, Ordering::SeqCst);
                async move { if up { Ok(()) } else { Err("target down") } }
            }
        })
        .unwrap();
        q.enqueue(task(1, 0, 1));
        q.enqueue(Job::unique(
            crate::queue::JobType::from_static("mail"),
            crate::queue::JobId(1),
            crate::queue::Payload::default(),
        ));
        let start = ::tokio::time::Instant::now();
        while q.counts().dead == 0 {
            ::tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while q.counts().dead < 2 {
            ::tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        // Two backoffs of at most 100 ms and 200 ms, plus polling.
        assert!(start.elapsed() <= Duration::from_millis(300 + 2 * 60));
        assert_eq!(q.dead_letters().len(), 2);
        for letter in q.dead_letters() {
            assert_eq!(letter.last_error, "target down");
        }
        up.store(true, Ordering::SeqCst);
        assert_eq!(q.redrive(), 2);
        q.settled().await;
        let report = p.shutdown().await;
        assert_eq!((report.delivered, report.failed), (2, 6));
        let c = q.counts();
        assert_eq!((c.done, c.dead, c.redriven), (2, 0, 2));
        assert_eq!(q.dead_letters().len(), 2, "never deleted");
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_automatic_redrives_and_says_what_was_given_up() {
        let q = SharedQueue::new(
            QueueConfig::builder()
                .attempts_max(2)
                .backoff(Duration::from_millis(100), Duration::from_secs(1))
                .redrive_after(Duration::from_secs(60), 1)
                .build()
                .unwrap(),
        );
        let calls = Arc::new(AtomicU32::new(0));
        let p = WorkerPool::spawn(&q, pool(2), {
            let calls = Arc::clone(&calls);
            move |lease: Lease| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match profile::parse(&lease.job.key) {
                        Some((_, TargetId(1))) => {
                            Err(format!("target down, attempt {}", lease.attempt))
                        }
                        _ => Ok(()),
                    }
                }
            }
        })
        .unwrap();
        q.enqueue(task(1, 0, 1));
        q.enqueue(task(1, 1, 1));
        let start = ::tokio::time::Instant::now();
        // settled: nothing in flight, the dead letter is there, its redrive ahead.
        q.settled().await;
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(q.counts().dead, 1);
        // drained: also waits for the automatic redrive (60 s later) to be used up.
        let drained = q.drained().await;
        assert!(
            start.elapsed() >= Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
        assert!(!drained.synced());
        assert_eq!(drained.counts.done, 1);
        assert_eq!(drained.counts.redriven, 1);
        let letter = &drained.dead_letters[0];
        assert_eq!(letter.job.key, task(1, 1, 1).key);
        assert_eq!(letter.redrives, 1);
        let errors: Vec<&str> = letter.history.iter().map(|a| a.error.as_str()).collect();
        assert_eq!(errors, ["target down, attempt 1", "target down, attempt 2"]);
        assert_eq!(letter.last_error, "target down, attempt 2");
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // A later job is delivered; the old letter stays given up on.
        q.enqueue(task(2, 0, 1));
        assert!(
            q.drained().await.dead_letters.len() == 1,
            "the old letter stays"
        );
        p.shutdown().await;
        let fresh = SharedQueue::new(config(5));
        let d = fresh.drained().await;
        assert!(d.synced());
        assert_eq!(d.counts, QueueCounts::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_delivery_is_a_failure_and_the_worker_goes_on() {
        let q = SharedQueue::new(config(5));
        let calls = Arc::new(AtomicU32::new(0));
        let p = WorkerPool::spawn(&q, pool(1), {
            let calls = Arc::clone(&calls);
            move |_lease| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                assert!(n != 0, "the delivery function panics (on purpose)");
                async move {
                    assert!(n != 1, "the delivery future panics (on purpose)");
                    Ok::<(), String>(())
                }
            }
        })
        .unwrap();
        q.enqueue(task(1, 0, 1));
        q.settled().await;
        let report = p.shutdown().await;
        assert_eq!(
            (report.panicked, report.failed, report.delivered),
            (2, 2, 1)
        );
        assert!(q.dead_letters().is_empty());
        let c = q.counts();
        assert_eq!((c.done, c.retries, c.expired), (1, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn each_job_type_goes_to_its_handler_and_an_unknown_type_dead_letters() {
        let mail = crate::queue::JobType::from_static("mail");
        let other = crate::queue::JobType::from_static("other");
        let q = SharedQueue::new(config(2));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let synced = Arc::new(AtomicU32::new(0));
        let handlers = Handlers::new()
            .on(mail, {
                let sent = Arc::clone(&sent);
                move |lease: Lease| {
                    let sent = Arc::clone(&sent);
                    async move {
                        let to: String = lease.job.payload.decode().map_err(|e| e.to_string())?;
                        lock(&sent).push(to);
                        Ok::<(), String>(())
                    }
                }
            })
            .on(profile::SYNC_PROFILE, {
                let synced = Arc::clone(&synced);
                move |_lease| {
                    synced.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<(), &str>(()) }
                }
            });
        assert_eq!(handlers.job_types().count(), 2);
        let p = WorkerPool::spawn_handlers(&q, pool(2), handlers).unwrap();
        let payload = |s: &str| crate::queue::Payload::encode(s).unwrap();
        q.enqueue(Job::unique(mail, crate::queue::JobId(1), payload("a@x")));
        q.enqueue(Job::unique(mail, crate::queue::JobId(2), payload("b@x")));
        q.enqueue(task(1, 0, 1));
        q.enqueue(Job::unique(other, crate::queue::JobId(1), payload("?")));
        q.settled().await;
        p.shutdown().await;
        let mut sent = lock(&sent).clone();
        sent.sort();
        assert_eq!(sent, ["a@x", "b@x"]);
        assert_eq!(synced.load(Ordering::SeqCst), 1);
        let dead = q.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].job.job_type(), other);
        assert_eq!(dead[0].last_error, "no handler for job type other");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_a_slow_delivery_leased() {
        let q = SharedQueue::new(config(5));
        let calls = Arc::new(AtomicU32::new(0));
        let p = WorkerPool::spawn(&q, pool(3), {
            let calls = Arc::clone(&calls);
            move |_lease| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    ::tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<(), String>(())
                }
            }
        })
        .unwrap();
        q.enqueue(task(1, 0, 1));
        q.settled().await;
        let report = p.shutdown().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no other worker got it");
        assert_eq!(q.counts().expired, 0);
        assert!(report.heartbeats >= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_the_delivery_in_hand_finish_and_takes_nothing_new() {
        let q = SharedQueue::new(config(5));
        let p = WorkerPool::spawn(&q, pool(1), |_lease| async {
            ::tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<(), String>(())
        })
        .unwrap();
        q.enqueue(task(1, 0, 1));
        q.enqueue(task(2, 0, 1));
        ::tokio::time::sleep(Duration::from_millis(100)).await;
        let report = p.shutdown().await;
        assert_eq!(report.delivered, 1);
        let c = q.counts();
        assert_eq!((c.done, c.pending, c.leased), (1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_from_the_store_keeps_what_was_accepted() {
        let q = SharedQueue::new(config(5));
        q.enqueue(task(1, 0, 1));
        q.enqueue(task(1, 1, 1));
        let store = q.store();
        let r = SharedQueue::from_queue(Queue::recover(config(5), store));
        assert_eq!(r.counts(), q.counts());
        let mut t = tokio_test::task::spawn(r.settled());
        assert!(t.poll().is_pending());
    }
}
