//! The tokio adapter: an [`EventSourcedService`] that handles commands from many tasks
//! (load, decide — possibly async —, append at the version loaded, retry on conflict
//! with jittered backoff), and [`ProjectionTask`]s that run a [`ProjectionRunner`] in
//! the background, woken by every append and polling as a fallback.
//!
//! The store here is the in-memory [`Repository`] (it survives nothing but a dropped
//! handle); the durable twin of its command path is
//! [`StoredRepository`](crate::cqrs::store::StoredRepository) over an
//! [`EventStorage`](crate::cqrs::store::EventStorage) (SQLite, Postgres), which is
//! synchronous: call it from `tokio::task::spawn_blocking`.
//!
//! The store lives behind a `std::sync::Mutex` held only for the synchronous store
//! calls, never across an `.await`: the decision runs unlocked, which is exactly where
//! two commands on one aggregate can race, and the version check settles it. Time is
//! `tokio::time`, so tests drive it with a paused clock.
//!
//! The adapter is a driver: what it does after each attempt (done, refused, back off and
//! decide again, give up), the expected version it appends at, and when a projection
//! task steps, yields or sleeps until its next poll are decided by the sans-IO command
//! policy and projection follower that the simulated world's clients and projections
//! drive too; the adapter feeds them outcomes and `now` and carries out what they say.
//!
//! ```
//! use faultline::cqrs::tokio::EventSourcedService;
//! use faultline::cqrs::{Item, ItemCommand, ProjectionRunner, Repository, StockView, StreamId};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let service = EventSourcedService::new(Repository::<Item>::new(50)?, 5)?;
//! let view = service.spawn_projection(ProjectionRunner::<StockView>::new(100)?, Duration::from_secs(1));
//! service.execute(StreamId(1), ItemCommand::Restock { units: 9 }).await?;
//! service.execute(StreamId(1), ItemCommand::Withdraw { units: 2 }).await?;
//! let model = view.wait_for(service.head()).await;
//! assert_eq!(model.stock[&StreamId(1)], 7);
//! # Ok(())
//! # }
//! ```

use crate::config::ConfigError;
use crate::cqrs::core::{
    Aggregate, AppendError, ExecuteError, Executed, Projection, ProjectionRunner, Rehydrated,
    Repository, StreamId, Upcast,
};
use crate::cqrs::driver::{CommandPolicy, Follow, Follower, Next, Outcome, expected_at};
#[cfg(doc)]
use crate::retry::RetryPolicy;
use crate::splitmix::SplitMix64;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::rt::{lock, now_since, tokio_instant};

/// The seed of the service's backoff jitter.
const JITTER_SEED: u64 = 0x6371_7273_5f6a_6974;

struct Shared<A: Aggregate, S> {
    repo: Mutex<Repository<A, S>>,
    head: watch::Sender<u64>,
    conflicts: AtomicU64,
    /// Tokio's clock when the service was built.
    started: tokio::time::Instant,
    /// The wall-clock time at `started`.
    wall: crate::clock::Origin,
    jitter: Mutex<SplitMix64>,
}

/// Command handling over a shared [`Repository`], for many tasks at once. Cheap to
/// clone (an `Arc`).
pub struct EventSourcedService<A: Aggregate, S = <A as Aggregate>::Event> {
    shared: Arc<Shared<A, S>>,
    policy: CommandPolicy,
}

impl<A: Aggregate, S> std::fmt::Debug for EventSourcedService<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSourcedService")
            .field("attempts_max", &self.policy.attempts_max())
            .field("backoff", &self.policy.backoff())
            .field("conflicts", &self.shared.conflicts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate, S> Clone for EventSourcedService<A, S> {
    fn clone(&self) -> Self {
        EventSourcedService {
            shared: Arc::clone(&self.shared),
            policy: self.policy,
        }
    }
}

impl<A, S> EventSourcedService<A, S>
where
    A: Aggregate + Send + 'static,
    A::Event: Send,
    S: Upcast<Current = A::Event> + From<A::Event> + Clone + Send + Sync + 'static,
{
    /// A service over `repo` that tries a conflicting command up to `attempts_max`
    /// times, with a jittered backoff from 1 ms doubling to 100 ms between tries.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on `attempts_max` outside 1 to [`RetryPolicy::ATTEMPTS_MAX_LIMIT`].
    pub fn new(repo: Repository<A, S>, attempts_max: u32) -> Result<Self, ConfigError> {
        let policy = CommandPolicy::new(attempts_max, CommandPolicy::default_backoff())?;
        let head = repo.store().head();
        let (started, wall) = crate::rt::start();
        Ok(EventSourcedService {
            shared: Arc::new(Shared {
                repo: Mutex::new(repo),
                head: watch::Sender::new(head),
                conflicts: AtomicU64::new(0),
                started,
                wall,
                jitter: Mutex::new(SplitMix64(JITTER_SEED)),
            }),
            policy,
        })
    }

    /// Loads `stream` (from its snapshot, then the later events).
    pub fn rehydrate(&self, stream: StreamId) -> Rehydrated<A> {
        lock(&self.shared.repo).rehydrate(stream)
    }

    /// The global log's head.
    pub fn head(&self) -> u64 {
        lock(&self.shared.repo).store().head()
    }

    /// The time since the service was built, on tokio's clock (so a paused clock drives
    /// it): a timestamp for the user's own records, convertible by
    /// [`origin`](EventSourcedService::origin).
    pub fn now(&self) -> crate::clock::Instant {
        now_since(self.shared.started)
    }

    /// Where this service's instants ([`now`](EventSourcedService::now)) sit on the wall
    /// clock: the wall-clock time read when it was built (its instant
    /// [`Instant::ZERO`](crate::clock::Instant::ZERO); later offsets come from tokio's
    /// clock).
    pub fn origin(&self) -> crate::clock::Origin {
        self.shared.wall
    }

    /// Conflicts met so far (each one retried or returned).
    pub fn conflicts(&self) -> u64 {
        self.shared.conflicts.load(Ordering::Relaxed)
    }

    /// Runs `f` on the repository (reads, or appends a user makes by hand).
    pub fn with_repository<R>(&self, f: impl FnOnce(&mut Repository<A, S>) -> R) -> R {
        let mut repo = lock(&self.shared.repo);
        let before = repo.store().head();
        let r = f(&mut repo);
        let after = repo.store().head();
        drop(repo);
        if after != before {
            self.shared.head.send_replace(after);
        }
        r
    }

    /// Handles `command` on `stream`: load, decide, append at the version loaded;
    /// on a conflict, backs off and does it all again.
    ///
    /// # Errors
    ///
    /// [`ExecuteError::Rejected`] when the aggregate refuses; [`ExecuteError::Append`]
    /// with the last conflict after `attempts_max` tries. Nothing is written on error.
    pub async fn execute(
        &self,
        stream: StreamId,
        command: A::Command,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Rejection>> {
        self.execute_with(stream, |state: A| {
            let decided = state.decide(&command);
            async move { decided }
        })
        .await
    }

    /// Like [`execute`](Self::execute) with an async decision: `decide` gets the state
    /// loaded and may await (call another service, say) before returning the events.
    /// The store is not locked meanwhile; if another command appended to `stream` in
    /// the meantime, the append conflicts and `decide` runs again on the new state.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute).
    pub async fn execute_with<F, Fut>(
        &self,
        stream: StreamId,
        mut decide: F,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Rejection>>
    where
        F: FnMut(A) -> Fut,
        Fut: Future<Output = Result<Vec<A::Event>, A::Rejection>>,
    {
        // The decisions (the expected version, what follows each outcome, the backoff)
        // are the sans-IO command policy's, the one the simulated clients drive.
        let mut command = self.policy.start();
        loop {
            let loaded = self.rehydrate(stream);
            let (outcome, result) = match decide(loaded.state).await {
                Err(why) => (Outcome::Rejected, Err(ExecuteError::Rejected(why))),
                Ok(events) => {
                    let expected = expected_at(loaded.version);
                    let result = lock(&self.shared.repo).commit(stream, expected, events);
                    match result {
                        Ok(done) => {
                            if done.appended.last_position >= done.appended.first_position {
                                self.shared.head.send_replace(done.appended.last_position);
                            }
                            (Outcome::Appended, Ok(done))
                        }
                        Err(ExecuteError::Append(
                            conflict @ AppendError::WrongExpectedVersion { .. },
                        )) => {
                            self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
                            (Outcome::Conflict, Err(ExecuteError::Append(conflict)))
                        }
                        // Not an outcome of the policy's: returned as it is.
                        Err(other) => return Err(other),
                    }
                }
            };
            let next = {
                let mut jitter = lock(&self.shared.jitter);
                self.policy.on_outcome(&mut command, outcome, &mut *jitter)
            };
            match next {
                Next::Done | Next::GiveUp => return result,
                Next::RetryAfter(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// Spawns a task that runs `runner` against this service's store: it steps until
    /// idle whenever an append lands (and every `poll` as a fallback, on a fixed cadence
    /// from the spawn), and publishes its read model's position. Must be called inside
    /// a tokio runtime.
    ///
    /// When to step, yield or sleep is the sans-IO follower's decision, the one the
    /// simulated projections drive: woken at the start, by appends, by a
    #[cfg_attr(
        feature = "sim",
        doc = "[`rebuild`](ProjectionTask::rebuild) and by a [`crash`](ProjectionTask::crash)
(the restart), it steps until idle, yielding every 1 024 steps."
    )]
    #[cfg_attr(
        not(feature = "sim"),
        doc = "[`rebuild`](ProjectionTask::rebuild) and by a `crash` (the restart, feature `sim`),
it steps until idle, yielding every 1 024 steps."
    )]
    ///
    /// The runner's read model and checkpoint live in this process's memory, in the
    #[cfg_attr(
        feature = "sim",
        doc = "task: they survive a [`crash`](ProjectionTask::crash) of the runner (which this"
    )]
    #[cfg_attr(
        not(feature = "sim"),
        doc = "task: they survive a `crash` of the runner (which this"
    )]
    /// adapter simulates), not a restart of the process, which rebuilds the model
    /// from the log. For a read model and checkpoint that survive the process, keep
    /// the events in a database ([`crate::cqrs::store`]) and project with
    /// `cqrs::store::sqlite::SqliteProjector` or `cqrs::store::postgres::PostgresProjector`
    /// (read model and checkpoint committed in one transaction), on a blocking thread.
    pub fn spawn_projection<P>(
        &self,
        runner: ProjectionRunner<P>,
        poll: Duration,
    ) -> ProjectionTask<P>
    where
        P: Projection<Event = A::Event> + Send + 'static,
    {
        self.spawn_named_projection(runner, poll, crate::observe::UNNAMED)
    }

    /// As [`spawn_projection`](Self::spawn_projection), under `name`: the
    /// `projection` label of its metrics (`faultline_projection_lag`, the events
    /// appended that it has not applied yet, and `faultline_projection_position`).
    pub fn spawn_named_projection<P>(
        &self,
        runner: ProjectionRunner<P>,
        poll: Duration,
        name: crate::name::Name,
    ) -> ProjectionTask<P>
    where
        P: Projection<Event = A::Event> + Send + 'static,
    {
        let observer = crate::observe::ProjectionObserver::new(name);
        let runner = Arc::new(Mutex::new(runner));
        let position = watch::Sender::new(lock(&runner).read_model().position());
        let wake = Arc::new(Notify::new());
        let shared = Arc::clone(&self.shared);
        let task_runner = Arc::clone(&runner);
        let task_position = position.clone();
        let task_wake = Arc::clone(&wake);
        let mut head = shared.head.subscribe();
        let origin = tokio::time::Instant::now();
        let mut follower = Follower::new(now_since(origin), poll);
        let handle = tokio::spawn(async move {
            // Started: like a restart, it catches up with what is there.
            follower.wake();
            loop {
                let step = {
                    let repo = lock(&shared.repo);
                    let mut r = lock(&task_runner);
                    let step = r.step(repo.store());
                    let position = r.read_model().position();
                    task_position.send_replace(position);
                    observer.stepped(position, *shared.head.borrow());
                    step
                };
                match follower.stepped(step) {
                    Follow::Step => {}
                    Follow::Yield => tokio::task::yield_now().await,
                    Follow::Sleep { until } => {
                        let deadline = tokio_instant(origin, until);
                        let poll_sleep = async {
                            match deadline {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        };
                        // Biased: the same wake-up wins every time two are ready.
                        match woken(head.changed(), task_wake.notified(), poll_sleep).await {
                            // Never: the task holds the sender (in `shared`).
                            Woken::Append(Err(_)) => return,
                            Woken::Append(Ok(())) => {
                                head.borrow_and_update();
                                follower.wake();
                            }
                            Woken::Asked => {
                                follower.wake();
                            }
                            Woken::Poll => {
                                follower.poll_fired(now_since(origin));
                            }
                        }
                    }
                }
            }
        });
        ProjectionTask {
            runner,
            position: position.subscribe(),
            wake,
            handle,
        }
    }
}

/// What woke an idle projection task.
enum Woken<C> {
    /// An append moved the head (or the service is gone: `Err`).
    Append(C),
    /// A rebuild or a crash asked it to step.
    Asked,
    /// Its poll is due.
    Poll,
}

/// Whichever of the three finishes first, in this order when several are ready.
async fn woken<C, E: Future<Output = C>, N: Future, S: Future>(
    append: E,
    asked: N,
    poll: S,
) -> Woken<C> {
    let (mut append, mut asked, mut poll) = (pin!(append), pin!(asked), pin!(poll));
    poll_fn(|cx| {
        if let Poll::Ready(c) = append.as_mut().poll(cx) {
            return Poll::Ready(Woken::Append(c));
        }
        if asked.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Woken::Asked);
        }
        if poll.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Woken::Poll);
        }
        Poll::Pending
    })
    .await
}

/// A projection running in its own task; the task stops when this is dropped.
pub struct ProjectionTask<P: Projection> {
    runner: Arc<Mutex<ProjectionRunner<P>>>,
    position: watch::Receiver<u64>,
    wake: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl<P: Projection> ProjectionTask<P> {
    /// The read model now (a query).
    pub fn query(&self) -> P {
        lock(&self.runner).read_model().clone()
    }

    /// The durable checkpoint now.
    pub fn checkpoint(&self) -> u64 {
        lock(&self.runner).checkpoint()
    }

    /// Waits until the read model has applied `position`, and returns it (read your
    /// own writes: pass the position an append returned).
    pub async fn wait_for(&self, position: u64) -> P {
        let mut rx = self.position.clone();
        // An error means the task is gone; the model is then as it will stay.
        let _ = rx.wait_for(|p| *p >= position).await;
        self.query()
    }

    /// True while a rebuild runs beside the live read model.
    pub fn rebuilding(&self) -> bool {
        lock(&self.runner).rebuilding()
    }

    /// Starts rebuilding the read model from scratch beside the live one.
    pub fn rebuild(&self) {
        lock(&self.runner).rebuild();
        self.wake.notify_one();
    }

    /// Simulates a crash and restart of the runner (its volatile state is lost): a hook
    /// of the simulated worlds, compiled only with the `sim` feature (a service restarts
    /// its process instead).
    #[cfg(any(test, feature = "sim"))]
    pub fn crash(&self) {
        lock(&self.runner).crash();
        self.wake.notify_one();
    }
}

impl<P: Projection> Drop for ProjectionTask<P> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod lockstep;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cqrs::core::ExpectedVersion;
    use crate::cqrs::item::{Item, ItemCommand, ItemEvent, ItemRejection, StockView, StoredEvent};
    use std::sync::atomic::AtomicU32;
    use tokio_test::{assert_err, assert_ok};

    fn service(attempts_max: u32) -> EventSourcedService<Item, StoredEvent> {
        EventSourcedService::new(Repository::new(4).unwrap(), attempts_max).unwrap()
    }

    /// Two commands load version 1 at once and decide slowly: one appends, the other
    /// conflicts, decides again on the new state, and appends.
    #[tokio::test(start_paused = true)]
    async fn the_service_time_converts_to_wall_clock_time() {
        let before = std::time::SystemTime::now();
        let built = tokio::time::Instant::now();
        let s = service(3);
        let origin = s.origin();
        assert!(
            before <= origin.system_time() && origin.system_time() <= std::time::SystemTime::now()
        );
        assert_eq!(origin.instant(), crate::clock::Instant::ZERO);
        tokio::time::advance(Duration::from_secs(7)).await;
        let now = s.now();
        assert_eq!(now, crate::clock::Instant::from_millis(7_000));
        assert_eq!(
            origin.to_system_time(now),
            origin.system_time() + built.elapsed()
        );
        assert_eq!(s.clone().origin(), origin);
    }

    #[tokio::test(start_paused = true)]
    async fn racing_commands_conflict_and_retry() {
        let s = service(3);
        assert_ok!(
            s.execute(StreamId(1), ItemCommand::Restock { units: 10 })
                .await
        );
        let decisions = Arc::new(AtomicU32::new(0));
        let slow_withdraw = |units: u64| {
            let s = s.clone();
            let decisions = Arc::clone(&decisions);
            tokio::spawn(async move {
                s.execute_with(StreamId(1), move |state: Item| {
                    let decisions = Arc::clone(&decisions);
                    async move {
                        decisions.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        state.decide(&ItemCommand::Withdraw { units })
                    }
                })
                .await
            })
        };
        let (a, b) = (slow_withdraw(3), slow_withdraw(4));
        assert_ok!(a.await.unwrap());
        assert_ok!(b.await.unwrap());
        assert_eq!(s.conflicts(), 1);
        assert_eq!(decisions.load(Ordering::Relaxed), 3);
        let loaded = s.rehydrate(StreamId(1));
        assert_eq!(loaded.state.stock, 3);
        assert_eq!(loaded.version, 4, "restock, withdraw, withdraw + low stock");
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_is_returned_after_attempts_max_and_a_refusal_at_once() {
        let s = service(1);
        let slow = |units: u64| {
            let s = s.clone();
            tokio::spawn(async move {
                s.execute_with(StreamId(2), move |state: Item| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    state.decide(&ItemCommand::Restock { units })
                })
                .await
            })
        };
        let (a, b) = (slow(1), slow(2));
        let results = [a.await.unwrap(), b.await.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.iter().any(|r| matches!(
            r,
            Err(ExecuteError::Append(AppendError::WrongExpectedVersion {
                actual: 1,
                ..
            }))
        )));
        let refused = s
            .execute(StreamId(2), ItemCommand::Withdraw { units: 99 })
            .await;
        assert!(matches!(
            refused,
            Err(ExecuteError::Rejected(ItemRejection::Insufficient { .. }))
        ));
        assert_eq!(s.rehydrate(StreamId(2)).version, 1);
        assert_err!(EventSourcedService::new(
            Repository::<Item>::new(4).unwrap(),
            0
        ));
    }

    /// A named projection's lag gauge is the events appended that it has not applied:
    /// zero once it caught up, and its position gauge is the log's head.
    #[cfg(feature = "metrics")]
    #[test]
    fn a_projection_reports_its_lag_and_position() {
        let head = Arc::new(std::sync::Mutex::new(0));
        let out = Arc::clone(&head);
        let recorded = crate::observe::testing::recorded(move || async move {
            let s = service(3);
            let view = s.spawn_named_projection(
                ProjectionRunner::<StockView>::new(3).unwrap(),
                Duration::from_secs(1),
                crate::name::Name::from_static("stock"),
            );
            for _ in 0..5 {
                assert_ok!(
                    s.execute(StreamId(1), ItemCommand::Restock { units: 2 })
                        .await
                );
            }
            view.wait_for(s.head()).await;
            *out.lock().unwrap() = s.head();
        });
        let head = *head.lock().unwrap();
        assert!(head >= 5, "{head}");
        let labels = [("projection", "stock")];
        assert_eq!(recorded.gauge("faultline_projection_lag", &labels), 0.0);
        assert_eq!(
            recorded.gauge("faultline_projection_position", &labels),
            head as f64
        );
    }

    /// The projection task follows appends, replays after a crash without changing the
    /// model, and a rebuild ends equal to the live model.
    #[tokio::test(start_paused = true)]
    async fn projection_task_follows_the_log() {
        let s = service(3);
        let view = s.spawn_projection(
            ProjectionRunner::<StockView>::new(3).unwrap(),
            Duration::from_secs(1),
        );
        for i in 0..20u64 {
            let cmd = if i % 3 == 2 {
                ItemCommand::Withdraw { units: 1 }
            } else {
                ItemCommand::Restock { units: 2 }
            };
            assert_ok!(s.execute(StreamId((i % 2) as u32), cmd).await);
        }
        // An old client's event, written by hand in schema 1.
        s.with_repository(|r| {
            r.append(
                StreamId(0),
                ExpectedVersion::Any,
                vec![StoredEvent::RestockedV1 { dozens: 1 }],
            )
        })
        .unwrap();
        let head = s.head();
        let model = view.wait_for(head).await;
        let log: Vec<_> = s.with_repository(|r| {
            r.store()
                .read_all(0, usize::MAX)
                .iter()
                .map(|x| x.map(Upcast::upcast))
                .collect()
        });
        assert_eq!(model, StockView::fold(&log));
        assert!(
            log.iter()
                .any(|r| r.event == ItemEvent::Restocked { units: 12 })
        );
        view.crash();
        view.rebuild();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(view.query(), model);
        assert_eq!(view.checkpoint(), head);
    }
}
