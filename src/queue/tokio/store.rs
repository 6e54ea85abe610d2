//! [`StoreQueue`]: a durable [`JobStore`] (SQLite, Postgres, or your own) for the
//! [`WorkerPool`](super::WorkerPool) and for producers in a tokio service.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::tokio::sync::Notify;

use crate::clock::{Instant, Origin};
use crate::queue::core::{
    DeadLetter, Enqueued, Fenced, Job, Lease, LeaseToken, Nacked, QueueCounts,
};
use crate::queue::store::JobStore;
use crate::rt::lock;
use crate::store::StoreError;

/// How often an idle worker of a [`StoreQueue`] looks for work enqueued by another
/// process at the latest, and how often [`StoreQueue::settled`] looks: the pool's own
/// poll interval applies too, whichever is shorter.
pub const SETTLED_POLL: Duration = Duration::from_millis(20);

type Make<S> = dyn Fn() -> Result<S, StoreError> + Send + Sync;

struct Inner<S: Send + 'static> {
    make: Box<Make<S>>,
    /// Store handles (connections) not in use; one per concurrent command at most.
    idle: Mutex<Vec<S>>,
    visibility: Duration,
    /// Tokio's clock when the queue was opened, where the queue's clock read `base`.
    origin: ::tokio::time::Instant,
    base: Instant,
    wall: Origin,
    work: Notify,
    settled: Notify,
    errors: AtomicU64,
}

impl<S: Send + 'static> Drop for Inner<S> {
    fn drop(&mut self) {
        // The last handle may go on a runtime thread, where closing a connection must
        // not block (the sync Postgres client panics there): the idle handles are
        // closed on a thread of their own.
        let idle = std::mem::take(&mut *lock(&self.idle));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("faultline-store-close".into())
                .spawn(move || drop(idle));
        }
    }
}

/// A durable [`JobStore`] for a tokio service: producers call its async commands, and
/// a [`WorkerPool`](super::WorkerPool) spawned on it delivers its jobs (the same pool,
/// driven by the same worker core, as on an in-memory [`SharedQueue`](super::SharedQueue)).
///
/// Every command runs on a blocking thread (`spawn_blocking`) with a store handle of
/// its own from a small pool of handles the `make` function opens (one database
/// connection each), so a commit's fsync never stalls the runtime, and the synchronous
/// Postgres client is never called on a runtime thread (where it would panic).
///
/// Time: the queue's instants are on the scale of the wall-clock origin the store
/// keeps (the first process to open it sets it), so processes on several machines
/// sharing one Postgres database agree on due times and lease deadlines (as well as
/// their wall clocks agree); the scale then advances with tokio's clock (a paused test
/// clock drives it).
///
/// Workers of other processes are not woken by an enqueue here: they find it within
/// their poll interval (or [`SETTLED_POLL`]).
///
/// A store error in a worker is counted ([`store_errors`](StoreQueue::store_errors))
/// and taken as the safe answer: no lease, or a refused heartbeat, ack or nack. The
/// lease then expires and the job is delivered again (at least once; a target that
/// checks versions or dedupes by job id keeps the effect once).
///
/// ```
/// use faultline::queue::store::sqlite::SqliteJobs;
/// use faultline::queue::tokio::{PoolConfig, StoreQueue, WorkerPool};
/// use faultline::queue::{Job, JobId, JobType, Payload, QueueConfig};
///
/// const EMAIL: JobType = JobType::from_static("send_email");
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let config = QueueConfig::builder().build()?;
///     let path = std::env::temp_dir().join(format!("jobs-{}.sqlite", std::process::id()));
///     # let _ = std::fs::remove_file(&path);
///     // One connection per command in flight; PostgresJobs::connect(url, config) for
///     // workers on many machines sharing one database.
///     let queue = StoreQueue::open(move || SqliteJobs::open(&path, config)).await?;
///     let pool = WorkerPool::spawn(&queue, PoolConfig::builder().build()?, |lease| async move {
///         let to: String = lease.job.payload.decode().map_err(|e| e.to_string())?;
///         println!("mail to {to}"); // an SMTP call in real life
///         Ok::<(), String>(())
///     })?;
///     queue.enqueue(Job::unique(EMAIL, JobId(1), Payload::encode("ada@example.com")?)).await?;
///     queue.settled().await?;
///     pool.shutdown().await;
///     Ok(())
/// }
/// ```
pub struct StoreQueue<S: Send + 'static> {
    inner: Arc<Inner<S>>,
}

impl<S: Send + 'static> Clone for StoreQueue<S> {
    fn clone(&self) -> Self {
        StoreQueue {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Send + 'static> fmt::Debug for StoreQueue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreQueue")
            .field("origin", &self.inner.wall)
            .field("store_errors", &self.inner.errors.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: JobStore + Send + 'static> StoreQueue<S> {
    /// Opens the queue: `make` opens one store handle (a connection) and is called
    /// again whenever the commands in flight need another. Reads (or, for a new store,
    /// sets) the wall-clock origin. Call inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the first handle cannot be opened or its origin read.
    pub async fn open<F>(make: F) -> Result<Self, StoreError>
    where
        F: Fn() -> Result<S, StoreError> + Send + Sync + 'static,
    {
        let make: Arc<Make<S>> = Arc::new(make);
        let (origin, now) = crate::rt::start();
        let opened = {
            let make = Arc::clone(&make);
            blocking(move || {
                let mut store = make()?;
                let wall = store.origin(now)?;
                Ok((store, wall))
            })
            .await?
        };
        let (store, wall) = opened;
        let visibility = store.visibility_timeout();
        let base = wall.saturating_instant(now.system_time());
        let make: Box<Make<S>> = Box::new(move || make());
        Ok(StoreQueue {
            inner: Arc::new(Inner {
                make,
                idle: Mutex::new(vec![store]),
                visibility,
                origin,
                base,
                wall,
                work: Notify::new(),
                settled: Notify::new(),
                errors: AtomicU64::new(0),
            }),
        })
    }

    /// Runs `f` with a store handle on a blocking thread: for what the trait does not
    /// cover (a store's own `relay` of its outbox, say).
    ///
    /// # Errors
    ///
    /// What `f` returns, or [`StoreError`] when no handle could be opened.
    pub async fn with<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> Result<R, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let taken = lock(&inner.idle).pop();
            let mut store = match taken {
                Some(s) => s,
                None => (inner.make)()?,
            };
            let r = f(&mut store);
            // A handle whose command failed may hold a broken connection: dropped.
            if r.is_ok() {
                lock(&inner.idle).push(store);
            }
            r
        })
        .await
    }

    /// The queue's clock now.
    pub fn now(&self) -> Instant {
        self.inner.base.saturating_add(
            ::tokio::time::Instant::now().saturating_duration_since(self.inner.origin),
        )
    }

    /// Where the queue's instants sit on the wall clock (kept in the store).
    pub fn origin(&self) -> Origin {
        self.inner.wall
    }

    /// The queue's instant of the wall-clock time `t` (for a job's run-at).
    pub fn instant_at(&self, t: std::time::SystemTime) -> Instant {
        self.inner.wall.saturating_instant(t)
    }

    /// Store errors the pool's workers met (each taken as the safe answer).
    pub fn store_errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Accepts `job` durably and wakes an idle worker of this process.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: the job may or may not be accepted.
    pub async fn enqueue(&self, job: Job) -> Result<Enqueued, StoreError> {
        let now = self.now();
        let r = self.with(move |s| s.enqueue(job, now)).await;
        self.inner.work.notify_waiters();
        r
    }

    /// Leases the earliest due job, for a worker loop of your own.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    pub async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        let now = self.now();
        self.with(move |s| s.lease(now)).await
    }

    /// Extends the lease `token`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    pub async fn heartbeat(
        &self,
        token: LeaseToken,
    ) -> Result<Result<Instant, Fenced>, StoreError> {
        let now = self.now();
        self.with(move |s| s.heartbeat(&token, now)).await
    }

    /// Acks the lease `token`.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: the ack may or may not be recorded.
    pub async fn ack(&self, token: LeaseToken) -> Result<Result<(), Fenced>, StoreError> {
        let now = self.now();
        let r = self.with(move |s| s.ack(&token, now)).await;
        self.inner.settled.notify_waiters();
        r
    }

    /// Nacks the lease `token` with `error`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    pub async fn nack(
        &self,
        token: LeaseToken,
        error: String,
    ) -> Result<Result<Nacked, Fenced>, StoreError> {
        let now = self.now();
        let r = self.with(move |s| s.nack(&token, &error, now)).await;
        self.inner.work.notify_waiters();
        self.inner.settled.notify_waiters();
        r
    }

    /// Puts the dead letters back; returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed.
    pub async fn redrive(&self) -> Result<usize, StoreError> {
        let now = self.now();
        let r = self.with(move |s| s.redrive(now)).await;
        self.inner.work.notify_waiters();
        r
    }

    /// Where the jobs are.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub async fn counts(&self) -> Result<QueueCounts, StoreError> {
        self.with(JobStore::counts).await
    }

    /// Every dead letter.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.with(JobStore::dead_letters).await
    }

    /// Waits until no job is pending, leased or retrying in the store (whoever works
    /// on it: this process's workers or another's), looking at least every
    /// [`SETTLED_POLL`].
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub async fn settled(&self) -> Result<(), StoreError> {
        loop {
            let notified = self.inner.settled.notified();
            if self.counts().await?.in_flight() == 0 {
                return Ok(());
            }
            let _ = ::tokio::time::timeout(SETTLED_POLL, notified).await;
        }
    }

    /// Waits until [`settled`](StoreQueue::settled), then says whether every job
    /// reached its target ([`Drained::synced`](super::Drained::synced)) or which were
    /// given up on: the dead letters not redriven. The counts and the letters are two
    /// reads, so a job another process enqueues or kills in between may show in one
    /// and not the other. Unlike [`SharedQueue::drained`](super::SharedQueue::drained)
    /// it does not wait for automatic redrives (the SQL stores have none).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub async fn drained(&self) -> Result<super::Drained, StoreError> {
        self.settled().await?;
        let counts = self.counts().await?;
        let dead_letters = self
            .dead_letters()
            .await?
            .into_iter()
            .filter(|d| d.redriven_at.is_none())
            .collect();
        Ok(super::Drained {
            counts,
            dead_letters,
        })
    }

    fn failed<T>(&self, r: Result<T, StoreError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(_) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Runs `f` on a blocking thread; a panic in it is an error, not a panic here.
async fn blocking<R, F>(f: F) -> Result<R, StoreError>
where
    R: Send + 'static,
    F: FnOnce() -> Result<R, StoreError> + Send + 'static,
{
    ::tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io(std::io::Error::other(format!(
            "the store's thread failed: {e}"
        ))))
    })
}

impl<S: JobStore + Send + 'static> super::PoolQueue for StoreQueue<S> {}

impl<S: JobStore + Send + 'static> super::sealed::Backing for StoreQueue<S> {
    fn now(&self) -> Instant {
        StoreQueue::now(self)
    }
    fn wall(&self) -> Origin {
        self.inner.wall
    }
    fn visibility(&self) -> Duration {
        self.inner.visibility
    }
    fn work(&self) -> &Notify {
        &self.inner.work
    }
    fn settled_notify(&self) -> &Notify {
        &self.inner.settled
    }
    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send {
        // Other processes' enqueues wake no one here: look again within SETTLED_POLL.
        let cap = self.now().saturating_add(SETTLED_POLL);
        super::sleep_until(self.inner.origin, self.inner.base, at.min(cap))
    }
    async fn lease_next(&self, now: Instant) -> (Option<Lease>, Option<Instant>) {
        let r = self
            .with(move |s| {
                let lease = s.lease(now)?;
                let due = if lease.is_none() { s.next_due()? } else { None };
                Ok((lease, due))
            })
            .await;
        self.failed(r).unwrap_or((None, None))
    }
    async fn extend(&self, token: LeaseToken, now: Instant) -> bool {
        let r = self.with(move |s| s.heartbeat(&token, now)).await;
        matches!(self.failed(r), Some(Ok(_)))
    }
    async fn settle_ack(&self, token: LeaseToken, now: Instant) -> bool {
        let r = self.with(move |s| s.ack(&token, now)).await;
        matches!(self.failed(r), Some(Ok(())))
    }
    async fn settle_nack(&self, token: LeaseToken, error: String, now: Instant) -> Option<Nacked> {
        let r = self.with(move |s| s.nack(&token, &error, now)).await;
        self.failed(r).and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::store::MemoryJobs;
    use crate::queue::tokio::{PoolConfig, WorkerPool};
    use crate::queue::{JobId, JobType, Payload, QueueConfig};

    const JOB: JobType = JobType::from_static("job");

    /// A store that fails every `every`-th command (before doing it, or after: the
    /// caller cannot tell), like a database connection that drops.
    struct Flaky {
        inner: MemoryJobs,
        calls: Arc<AtomicU64>,
        every: u64,
    }

    impl Flaky {
        fn fail(&self) -> Result<(), StoreError> {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            if n % self.every == self.every - 1 {
                Err(StoreError::Io(std::io::Error::other("connection reset")))
            } else {
                Ok(())
            }
        }
    }

    impl JobStore for Flaky {
        fn visibility_timeout(&self) -> Duration {
            self.inner.visibility_timeout()
        }
        fn origin(&mut self, p: Origin) -> Result<Origin, StoreError> {
            self.inner.origin(p)
        }
        fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
            self.inner.enqueue(job, now)
        }
        fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
            self.fail()?;
            self.inner.lease(now)
        }
        fn heartbeat(
            &mut self,
            t: &LeaseToken,
            now: Instant,
        ) -> Result<Result<Instant, Fenced>, StoreError> {
            self.fail()?;
            self.inner.heartbeat(t, now)
        }
        fn ack(&mut self, t: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
            // Fails after the ack is recorded half the time: the worker cannot know.
            let r = self.inner.ack(t, now);
            self.fail()?;
            r
        }
        fn nack(
            &mut self,
            t: &LeaseToken,
            e: &str,
            now: Instant,
        ) -> Result<Result<Nacked, Fenced>, StoreError> {
            self.fail()?;
            self.inner.nack(t, e, now)
        }
        fn redrive(&mut self, now: Instant) -> Result<usize, StoreError> {
            self.inner.redrive(now)
        }
        fn counts(&mut self) -> Result<QueueCounts, StoreError> {
            self.inner.counts()
        }
        fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, StoreError> {
            self.inner.dead_letters()
        }
        fn next_due(&mut self) -> Result<Option<Instant>, StoreError> {
            self.inner.next_due()
        }
    }

    fn config() -> QueueConfig {
        QueueConfig::builder()
            .visibility_timeout(Duration::from_millis(300))
            .attempts_max(50)
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
            .build()
            .unwrap()
    }

    async fn deliver_all(
        make: impl Fn() -> Result<Flaky, StoreError> + Send + Sync + 'static,
    ) -> (StoreQueue<Flaky>, Vec<u64>) {
        let queue = StoreQueue::open(make).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pool = WorkerPool::spawn(
            &queue,
            PoolConfig::builder()
                .workers(3)
                .poll_interval(Duration::from_millis(5))
                .build()
                .unwrap(),
            {
                let seen = Arc::clone(&seen);
                move |lease: Lease| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let id = lease.job.key.id().map_or(0, |i| i.0);
                        lock(&seen).push(id);
                        Ok::<(), String>(())
                    }
                }
            },
        )
        .unwrap();
        for i in 0..40 {
            let job = Job::unique(JOB, JobId(i), Payload::encode(&i).unwrap());
            assert_eq!(queue.enqueue(job).await.unwrap(), Enqueued::New);
        }
        queue.settled().await.unwrap();
        let report = pool.shutdown().await;
        assert_eq!(report.panicked, 0);
        let mut seen = lock(&seen).clone();
        seen.sort_unstable();
        seen.dedup();
        (queue, seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_on_a_store_delivers_every_job() {
        let jobs = MemoryJobs::new(config());
        let calls = Arc::new(AtomicU64::new(0));
        let (queue, seen) = deliver_all(move || {
            Ok(Flaky {
                inner: jobs.clone(),
                calls: Arc::clone(&calls),
                every: u64::MAX,
            })
        })
        .await;
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        let c = queue.counts().await.unwrap();
        assert_eq!((c.enqueued, c.done, c.in_flight()), (40, 40, 0));
        assert_eq!(queue.store_errors(), 0);
        let drained = queue.drained().await.unwrap();
        assert!(drained.synced());
        assert_eq!(drained.counts, c);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_errors_in_workers_lose_nothing() {
        let jobs = MemoryJobs::new(config());
        let calls = Arc::new(AtomicU64::new(0));
        let (queue, seen) = deliver_all(move || {
            Ok(Flaky {
                inner: jobs.clone(),
                calls: Arc::clone(&calls),
                every: 4,
            })
        })
        .await;
        assert_eq!(
            seen,
            (0..40).collect::<Vec<_>>(),
            "every job delivered at least once"
        );
        let c = queue.counts().await.unwrap();
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.dead, 0);
        assert!(c.balanced());
        assert!(
            queue.store_errors() > 0,
            "the flaky store failed some commands"
        );
    }
}
