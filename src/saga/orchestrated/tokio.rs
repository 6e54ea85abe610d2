//! The tokio adapter for sagas: a [`SagaRunner`] that drives the sans-IO
//! [`Orchestrator`] with async participants, a pluggable durable log ([`LogStore`], in
//! [`store`](super::store): memory, a file, SQLite, Postgres; re-exported here), and
//! recovery after a process crash.
//!
//! The runner holds no policy of its own: it drives the same sans-IO driver core (the
//! output pipeline between the orchestrator and its log and links) that the simulated
//! checkout world drives, so what it runs is what the simulator verifies. It feeds that
//! core its inputs and `now`, and carries out the orchestrator's outputs in order, on a
//! background task:
//!
//! - [`Output::Append`]: [`LogStore::append`] is called, and no later output is
//!   performed until it returned (write-ahead). A store that blocks
//!   ([`LogStore::blocks`]: a file, a database) is called on a blocking thread
//!   (`spawn_blocking`), one record at a time and in order, with no lock of the runner
//!   held: an fsync or a database round trip never stalls the runtime's threads (and
//!   the synchronous Postgres client, which panics on them, works). [`MemoryLog`] is
//!   called inline. If an append fails, the runner *halts*: it performs nothing more,
//!   and [`wait_at_rest`](SagaRunner::wait_at_rest) reports [`RunnerError::Halted`].
//!   Build a new runner over the log to recover.
//! - [`Output::Send`]: the orchestrator is told the command left
//!   ([`Orchestrator::on_sent`], so a configuration with
//!   [`deadline_from_sent`](crate::saga::SagaConfigBuilder::deadline_from_sent) works
//!   too), and the step's participant is called on its own task; its reply is fed back
//!   with [`Orchestrator::on_reply`]. A participant resolves to [`Reply::Ok`],
//!   [`Reply::Refused`] (a business refusal, with the definition's reason) or
//!   [`Reply::Failed`] for a transport failure it noticed (connection refused, a 503,
//!   its own client timeout): the attempt ends at once and the next one follows after
//!   the backoff. A participant that never resolves (a lost reply) is the step
//!   timeout: the orchestrator retries or compensates when the attempt's deadline
//!   passes. (Its task lives until it resolves or the runner is dropped, so a
//!   participant should bound its own calls, answering `Failed` when they time out.)
//! - Timers: the driver sleeps until [`Orchestrator::poll_timeout`] (or until woken by a
//!   reply or a new saga) and calls [`Orchestrator::handle_timeout`].
//! - [`Output::Alert`]: kept, see [`alerts`](SagaRunner::alerts).
//!
//! A runner always starts from its log: [`SagaRunnerBuilder::build`] loads the store and
//! [recovers](Orchestrator::recover) every saga not at rest (over an empty log, that is a
//! fresh orchestrator). Restarting after a crash is building a new runner over the same
//! store. Dropping a runner stops it at once (in-flight participant calls are
//! cancelled, as in a crash; an append already under way on a blocking thread is
//! waited for) and it writes nothing to its store afterwards.
//!
//! [`submit`](SagaRunner::submit) starts a saga and returns once its first records
//! are durable: the moment to tell a client it was accepted. The runner compacts its
//! log when asked ([`compact`](SagaRunner::compact)), on a schedule of the caller's.
//!
//! Time comes from `tokio::time::Instant` (nanoseconds since the runner was built), so
//! tokio's paused clock drives everything in tests (a blocking append holds the paused
//! clock still while it runs, as tokio does for every `spawn_blocking` task).
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use faultline::saga::orchestrated::tokio::{MemoryLog, SagaRunner};
//! use faultline::saga::{
//!     Command, InventoryService, Order, PaymentService, Reply, SagaConfig, SagaId,
//!     SagaState, Services, StepId,
//! };
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The three services, reached over the network in real life.
//!     let services = Arc::new(Mutex::new(Services::new(
//!         InventoryService::new([(1, 10)]),
//!         PaymentService::new(),
//!     )));
//!     let call = {
//!         let services = Arc::clone(&services);
//!         move |cmd: Command| {
//!             let services = Arc::clone(&services);
//!             async move {
//!                 tokio::time::sleep(Duration::from_millis(5)).await; // the round trip
//!                 match services.lock() {
//!                     Ok(mut s) => s.handle(&cmd),
//!                     Err(_) => Reply::Failed, // a poisoned lock: the call failed
//!                 }
//!             }
//!         }
//!     };
//!     let log = MemoryLog::new();
//!     let runner = SagaRunner::builder(SagaConfig::default(), log.clone())
//!         .step(StepId::ORDER, call.clone(), call.clone())
//!         .step(StepId::INVENTORY, call.clone(), call.clone())
//!         .step(StepId::PAYMENT, call.clone(), call)
//!         .build()?;
//!     runner.start(SagaId(1), Order { item: 1, qty: 2, amount: 500 })?;
//!     runner.wait_at_rest().await?;
//!     assert_eq!(runner.state(SagaId(1)), Some(SagaState::Completed));
//!     assert_eq!(services.lock().map_err(|e| e.to_string())?.inventory.available(1), 8);
//!     assert!(log.len() > 6, "every intent, outcome and the end were logged");
//!     Ok(())
//! }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::tokio::runtime::Handle;
use ::tokio::sync::{Notify, watch};
use ::tokio::task::{JoinHandle, JoinSet};

use crate::clock::Instant;
use crate::name::Name;
use crate::observe::SagaObserver;
use crate::saga::orchestrated::config::SagaConfig;
#[cfg(doc)]
use crate::saga::orchestrated::core::Output;
use crate::saga::orchestrated::core::{AlertReason, Orchestrator, SagaTotals};
use crate::saga::orchestrated::driver::{Perform, Pipeline};
use crate::saga::orchestrated::history::SagaHistory;
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{
    Command, Kind, Order, Refusal, Reply, SagaData, SagaId, SagaState, StepId,
};

use crate::rt::lock;

// ----- the durable log (in `super::store`) -----

pub use super::store::{FileLog, LogStore, MemoryLog, StoreError};

// ----- the runner -----

/// Why the runner could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A configured step has no participant.
    #[error("no participant for the {0} step")]
    MissingStep(StepId),
    /// The runner must be built inside a tokio runtime.
    #[error("no tokio runtime: build the saga runner inside one")]
    NoRuntime,
    /// Loading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saga id is already known (started before, possibly before a restart).
    #[error("{0} is already known")]
    AlreadyKnown(SagaId),
    /// A log append failed, so the runner stopped; build a new runner over the log to
    /// recover.
    #[error("the saga runner halted after a log append failed: {0}")]
    Halted(String),
}

/// What a participant's call resolves to: the service's [`Reply`] (`Ok`, `Refused`
/// with the reason, or `Failed` for a transport failure: retried after the backoff).
/// A future that never resolves is a lost reply: the attempt times out.
pub type ReplyFuture<R = Refusal> = Pin<Box<dyn Future<Output = Reply<R>> + Send>>;

/// A participant: sends one command to its service and resolves to the reply.
///
/// It is called with the orchestrator's lock released, and the returned future runs on
/// its own task; it may be cancelled at any await point (when the runner is dropped).
pub type ServiceCall<P = Order, R = Refusal> =
    Arc<dyn Fn(Command<P>) -> ReplyFuture<R> + Send + Sync>;

fn service_call<P, R, F, Fut>(f: F) -> ServiceCall<P, R>
where
    F: Fn(Command<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply<R>> + Send + 'static,
{
    Arc::new(move |cmd| Box::pin(f(cmd)) as ReplyFuture<R>)
}

/// Builder for [`SagaRunner`]: the configuration (whose steps are the definition), the
/// log, and one action and one compensation participant per configured step.
pub struct SagaRunnerBuilder<P = Order, R = Refusal> {
    config: SagaConfig,
    store: Box<dyn LogStore<P, R>>,
    steps: BTreeMap<(StepId, Kind), ServiceCall<P, R>>,
    name: Name,
}

impl<P, R> std::fmt::Debug for SagaRunnerBuilder<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunnerBuilder")
            .field("config", &self.config)
            .field("steps", &self.steps.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<P: SagaData, R: SagaData> SagaRunnerBuilder<P, R> {
    /// The participants of `step`: `action` does it, `compensation` undoes it. Each is
    /// an async function of the [`Command`] resolving to its [`Reply`] (see
    /// [`ReplyFuture`]). Replaces any participants given before for `step`.
    pub fn step<A, AF, C, CF>(mut self, step: StepId, action: A, compensation: C) -> Self
    where
        A: Fn(Command<P>) -> AF + Send + Sync + 'static,
        AF: Future<Output = Reply<R>> + Send + 'static,
        C: Fn(Command<P>) -> CF + Send + Sync + 'static,
        CF: Future<Output = Reply<R>> + Send + 'static,
    {
        self.steps
            .insert((step, Kind::Action), service_call(action));
        self.steps
            .insert((step, Kind::Compensation), service_call(compensation));
        self
    }

    /// What its `tracing` events and metrics call the runner (the `runner` field and
    /// label). Default: `unnamed`.
    pub fn name(mut self, name: Name) -> Self {
        self.name = name;
        self
    }

    /// Loads the log, recovers every saga not at rest (resending what may not have
    /// been done) and starts the driver task on the current tokio runtime. A store that
    /// [blocks](LogStore::blocks) is loaded on a thread of its own while the calling
    /// thread waits (building happens once, at startup).
    ///
    /// # Errors
    ///
    /// [`RunnerError::MissingStep`] if a configured step has no participants,
    /// [`RunnerError::NoRuntime`] outside a tokio runtime, [`RunnerError::Store`] if
    /// the log cannot be loaded.
    pub fn build(mut self) -> Result<SagaRunner<P, R>, RunnerError> {
        if let Some(step) = self
            .config
            .steps()
            .iter()
            .find(|s| !self.steps.contains_key(&(**s, Kind::Action)))
        {
            return Err(RunnerError::MissingStep(*step));
        }
        let handle = Handle::try_current().map_err(|_| RunnerError::NoRuntime)?;
        let blocking = self.store.blocks();
        let store: &mut dyn LogStore<P, R> = &mut *self.store;
        let records = off_runtime(blocking, || store.load())?;
        let (origin, wall) = crate::rt::start();
        let mut orch = Orchestrator::recover(self.config, &records, Instant::ZERO);
        let pipeline = Pipeline::recovering(&mut orch, Instant::ZERO);
        let (changes, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                orch,
                pipeline,
                durable: 0,
                alerts: Vec::new(),
                halted: None,
                stopped: false,
            }),
            store: Mutex::new(self.store),
            blocking,
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Tasks {
                set: JoinSet::new(),
                stopped: false,
            }),
            steps: self.steps,
            observer: SagaObserver::new(self.name),
            handle: handle.clone(),
            origin,
            wall,
            wake: Notify::new(),
            changes,
        });
        let sends = {
            let mut inner = lock(&shared.inner);
            pump(&shared, &mut inner, true)
        };
        dispatch(&shared, sends);
        let driver = handle.spawn(drive(Arc::clone(&shared)));
        Ok(SagaRunner { shared, driver })
    }
}

struct Inner<P, R> {
    orch: Orchestrator<P, R>,
    /// The driver core: which output may be carried out now.
    pipeline: Pipeline<P, R>,
    /// How many records the store made durable since the runner was built.
    durable: u64,
    alerts: Vec<(SagaId, AlertReason)>,
    /// Why an append failed, once one did (the pipeline is then halted): nothing more
    /// is performed.
    halted: Option<String>,
    /// Set when the runner was dropped: nothing more is performed.
    stopped: bool,
}

struct Tasks {
    set: JoinSet<()>,
    stopped: bool,
}

struct Shared<P, R> {
    inner: Mutex<Inner<P, R>>,
    /// The log. Lock order: never take `inner` while holding it, except inline (a
    /// store that does not block is called under `inner`; no write runs off thread).
    store: Mutex<Box<dyn LogStore<P, R>>>,
    /// The store blocks: it is called on blocking threads.
    blocking: bool,
    /// Set when the runner is dropped, before waiting for the write in progress: a
    /// write that has not begun then never does.
    closed: AtomicBool,
    tasks: Mutex<Tasks>,
    steps: BTreeMap<(StepId, Kind), ServiceCall<P, R>>,
    handle: Handle,
    origin: ::tokio::time::Instant,
    /// The wall-clock time at `origin`.
    wall: crate::clock::Origin,
    /// Wakes the driver: the earliest timer may have changed.
    wake: Notify,
    /// Bumped whenever the orchestrator may have changed.
    changes: watch::Sender<u64>,
    /// Its `tracing` events and metrics.
    observer: SagaObserver,
}

impl<P, R> Shared<P, R> {
    fn now(&self) -> Instant {
        crate::rt::now_since(self.origin)
    }

    fn deadline(&self, at: Instant) -> Option<::tokio::time::Instant> {
        crate::rt::tokio_instant(self.origin, at)
    }
}

/// Carries out what the pipeline hands out, in order: appends (durable on return) and
/// alerts now; the sends (their intents are durable, the orchestrator told they left)
/// are returned for [`dispatch`], which calls their participants once the lock is
/// released (after the appends that follow them in this batch: on a real disk a send's
/// deadline may so start an fsync or two before its participant is called, never
/// later). Wakes the driver (the earliest timer may have changed) unless the driver is
/// the caller.
fn pump<P: SagaData, R: SagaData>(
    shared: &Arc<Shared<P, R>>,
    inner: &mut Inner<P, R>,
    wake_driver: bool,
) -> Vec<(Command<P>, u32)> {
    let mut sends = Vec::new();
    if inner.stopped {
        return sends;
    }
    while let Some(due) = inner.pipeline.next(&mut inner.orch, shared.now()) {
        match &due.perform {
            Perform::Write(record) => shared.observer.record(record, inner.orch.in_flight()),
            Perform::Alert(saga, reason) => shared.observer.alert(*saga, reason),
            Perform::Send(..) => {}
        }
        match due.perform {
            Perform::Write(record) if shared.blocking => {
                // The pipeline hands out nothing more until the write is reported.
                write_off_thread(shared, record);
            }
            Perform::Write(record) => {
                let written = lock(&shared.store).append(&record);
                written_out(inner, written);
            }
            Perform::Send(cmd, attempt) => sends.push((cmd, attempt)),
            Perform::Alert(saga, reason) => inner.alerts.push((saga, reason)),
        }
    }
    shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    if wake_driver {
        shared.wake.notify_one();
    }
    sends
}

/// Reports a write's result to the pipeline.
fn written_out<P: SagaData, R: SagaData>(inner: &mut Inner<P, R>, written: Result<(), StoreError>) {
    match written {
        Ok(()) => {
            inner.durable += 1;
            inner.pipeline.durable();
        }
        Err(e) => {
            inner.halted = Some(e.to_string());
            inner.pipeline.append_failed();
        }
    }
}

/// Appends `record` on a blocking thread, then (the lock of the store released)
/// reports it to the pipeline and carries out what follows, as a reply does. Nothing
/// else is written meanwhile (the pipeline hands out nothing while a write is in
/// progress), so records reach the store in order, one at a time.
fn write_off_thread<P: SagaData, R: SagaData>(shared: &Arc<Shared<P, R>>, record: LogRecord<P, R>) {
    let task_shared = Arc::clone(shared);
    // Detached: the runner's drop waits for it through the store's lock.
    drop(shared.handle.spawn_blocking(move || {
        let written = {
            let mut store = lock(&task_shared.store);
            if task_shared.closed.load(Ordering::SeqCst) {
                return; // the runner was dropped: write nothing more
            }
            store.append(&record)
        };
        let sends = {
            let mut inner = lock(&task_shared.inner);
            let inner = &mut *inner;
            if inner.stopped {
                return;
            }
            written_out(inner, written);
            pump(&task_shared, inner, true)
        };
        dispatch(&task_shared, sends);
    }));
}

/// Runs `f` off the runtime's threads when the store blocks (on a scoped thread of its
/// own, the caller's thread waiting), inline otherwise.
fn off_runtime<T: Send>(
    blocking: bool,
    f: impl FnOnce() -> Result<T, StoreError> + Send,
) -> Result<T, StoreError> {
    if !blocking || Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|_| {
        Err(StoreError::Io(std::io::Error::other(
            "the saga log's thread panicked",
        )))
    })
}

/// Calls the participants of `sends`, each on its own task, feeding replies back.
fn dispatch<P: SagaData, R: SagaData>(shared: &Arc<Shared<P, R>>, sends: Vec<(Command<P>, u32)>) {
    for (cmd, attempt) in sends {
        // A command without a participant gets no reply: it times out.
        let Some(call) = shared.steps.get(&(cmd.step, cmd.kind)) else {
            continue;
        };
        let reply = call(cmd.clone());
        let task_shared = Arc::clone(shared);
        let task = async move {
            let reply = reply.await;
            let sends = {
                let mut inner = lock(&task_shared.inner);
                let inner = &mut *inner;
                if inner.stopped {
                    return;
                }
                let now = task_shared.now();
                if !inner
                    .pipeline
                    .reply(&mut inner.orch, &cmd, attempt, Some(reply), now)
                {
                    return; // a stale answer, or halted: nothing changed
                }
                pump(&task_shared, inner, true)
            };
            dispatch(&task_shared, sends);
        };
        let mut tasks = lock(&shared.tasks);
        if tasks.stopped {
            return;
        }
        while tasks.set.try_join_next().is_some() {}
        tasks.set.spawn_on(task, &shared.handle);
    }
}

/// The driver: handles the timers, and stops when the runner halts or is dropped.
async fn drive<P: SagaData, R: SagaData>(shared: Arc<Shared<P, R>>) {
    loop {
        let (sends, next) = {
            let mut inner = lock(&shared.inner);
            let inner = &mut *inner;
            if inner.stopped || inner.pipeline.is_halted() {
                return;
            }
            let now = shared.now();
            inner.pipeline.timer(&mut inner.orch, now);
            let sends = pump(&shared, inner, false);
            (sends, Pipeline::wake_at(&inner.orch, shared.now()))
        };
        dispatch(&shared, sends);
        let woken = shared.wake.notified();
        match next.and_then(|at| shared.deadline(at)) {
            Some(deadline) => {
                let _ = ::tokio::time::timeout_at(deadline, woken).await;
            }
            None => woken.await,
        }
    }
}

/// Runs sagas against async participants, durably, on a background task. See the
/// [module docs](self).
///
/// Dropping the runner stops it at once, like a crash: in-flight calls are cancelled
/// and nothing more is written to the log.
pub struct SagaRunner<P = Order, R = Refusal> {
    shared: Arc<Shared<P, R>>,
    driver: JoinHandle<()>,
}

impl<P: SagaData, R: SagaData> std::fmt::Debug for SagaRunner<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = lock(&self.shared.inner);
        f.debug_struct("SagaRunner")
            .field("in_flight", &inner.orch.in_flight())
            .field("alerts", &inner.alerts)
            .field("halted", &inner.halted)
            .finish_non_exhaustive()
    }
}

impl<P: SagaData, R: SagaData> SagaRunner<P, R> {
    /// A builder over `config` (whose steps are the definition, in execution order)
    /// and the durable `store` (which may hold the log of a previous run:
    /// [`build`](SagaRunnerBuilder::build) recovers from it).
    pub fn builder(
        config: SagaConfig,
        store: impl LogStore<P, R> + 'static,
    ) -> SagaRunnerBuilder<P, R> {
        SagaRunnerBuilder {
            config,
            store: Box::new(store),
            steps: BTreeMap::new(),
            name: crate::observe::UNNAMED,
        }
    }

    /// Starts `saga` with its payload. Over a store that does not block
    /// ([`MemoryLog`]), its `Started` record and first intent are durable when this
    /// returns, and its first command is on its way. Over one that blocks (a file, a
    /// database), they are being written on a blocking thread when this returns, and the
    /// command leaves once they are durable: to know when a saga is durably accepted
    /// (before telling a client so), use [`submit`](SagaRunner::submit).
    ///
    /// # Errors
    ///
    /// [`RunnerError::AlreadyKnown`] if the id was started before (a client resubmitting
    /// after a restart can treat it as success), [`RunnerError::Halted`] after a log
    /// append failed (this one included, over a store that does not block).
    pub fn start(&self, saga: SagaId, payload: P) -> Result<(), RunnerError> {
        self.start_counting(saga, payload).map(|_| ())
    }

    /// Starts `saga` with its payload, like [`start`](SagaRunner::start), and waits
    /// until its `Started` record and first intent are durable: when this returns
    /// `Ok`, a crash no longer loses the saga (a runner built over the log recovers
    /// it). The moment to tell a client its saga was accepted.
    ///
    /// # Errors
    ///
    /// [`RunnerError::AlreadyKnown`] if the id was started before,
    /// [`RunnerError::Halted`] if a log append failed before its records were durable.
    pub async fn submit(&self, saga: SagaId, payload: P) -> Result<(), RunnerError> {
        let target = self.start_counting(saga, payload)?;
        let mut changes = self.shared.changes.subscribe();
        loop {
            {
                let inner = lock(&self.shared.inner);
                if inner.durable >= target {
                    return Ok(());
                }
                if let Some(message) = &inner.halted {
                    return Err(RunnerError::Halted(message.clone()));
                }
            }
            if changes.changed().await.is_err() {
                return Err(RunnerError::Halted("the runner stopped".to_owned()));
            }
        }
    }

    /// Starts `saga`; returns the count of durable records at which its records
    /// queued so far are durable.
    fn start_counting(&self, saga: SagaId, payload: P) -> Result<u64, RunnerError> {
        let (sends, target) = {
            let mut inner = lock(&self.shared.inner);
            if let Some(message) = &inner.halted {
                return Err(RunnerError::Halted(message.clone()));
            }
            let inner = &mut *inner;
            let now = self.shared.now();
            if !inner.pipeline.start(&mut inner.orch, saga, payload, now) {
                return Err(RunnerError::AlreadyKnown(saga));
            }
            let target =
                inner.durable + u64::try_from(inner.pipeline.pending_writes()).unwrap_or(u64::MAX);
            let sends = pump(&self.shared, inner, true);
            if let Some(message) = &inner.halted {
                return Err(RunnerError::Halted(message.clone()));
            }
            (sends, target)
        };
        dispatch(&self.shared, sends);
        Ok(target)
    }

    /// Waits until every saga is at rest (completed, compensated or failed).
    ///
    /// # Errors
    ///
    /// [`RunnerError::Halted`] if a log append failed: the sagas will not progress.
    pub async fn wait_at_rest(&self) -> Result<(), RunnerError> {
        let mut changes = self.shared.changes.subscribe();
        loop {
            {
                let inner = lock(&self.shared.inner);
                if let Some(message) = &inner.halted {
                    return Err(RunnerError::Halted(message.clone()));
                }
                if inner.pipeline.is_at_rest(&inner.orch) {
                    return Ok(());
                }
            }
            // The sender lives in `shared`, which outlives this borrow of `self`.
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Where this runner's time sits on the wall clock: the wall-clock time read when it
    /// was built (its instant [`Instant::ZERO`]; later offsets come from tokio's clock).
    /// A runner rebuilt after a crash starts a new origin.
    pub fn origin(&self) -> crate::clock::Origin {
        self.shared.wall
    }

    /// `saga`'s state, if known.
    pub fn state(&self, saga: SagaId) -> Option<SagaState> {
        lock(&self.shared.inner).orch.state(saga)
    }

    /// Every known saga with its state, in id order.
    pub fn sagas(&self) -> Vec<(SagaId, SagaState)> {
        lock(&self.shared.inner).orch.sagas().collect()
    }

    /// True when every saga is at rest.
    pub fn is_at_rest(&self) -> bool {
        let inner = lock(&self.shared.inner);
        inner.pipeline.is_at_rest(&inner.orch)
    }

    /// The orchestrator's counters since this runner was built.
    pub fn totals(&self) -> SagaTotals {
        lock(&self.shared.inner).orch.totals()
    }

    /// The alerts raised since this runner was built: sagas that ended
    /// [`SagaState::Failed`] and need a human.
    pub fn alerts(&self) -> Vec<(SagaId, AlertReason)> {
        lock(&self.shared.inner).alerts.clone()
    }

    /// `saga`'s history as its durable log records tell it ([`SagaHistory::of`]): its
    /// payload, where it stands, and per step the attempts, the outcome (with the
    /// refusal reason) and the compensation. `None` if the log does not know it.
    /// Reads the store ([`LogStore::history`]), so it shows what survives a crash.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the log cannot be read.
    pub fn history(&self, saga: SagaId) -> Result<Option<SagaHistory<P, R>>, StoreError> {
        let mut store = lock(&self.shared.store);
        let store: &mut dyn LogStore<P, R> = &mut **store;
        off_runtime(self.shared.blocking, || store.history(saga))
    }

    /// Compacts the log now ([`LogStore::compact`]: the records of sagas that are
    /// finished, completed or compensated, go, but for their finished markers; sagas
    /// still running keep every record), on a blocking thread if the store blocks.
    /// Returns how many records were removed. Appends wait meanwhile. The runner
    /// compacts only when asked: call it on a schedule of your own (for example every
    /// hour, or after every thousand sagas).
    ///
    /// # Errors
    ///
    /// [`RunnerError::Store`] when the compaction failed (the log is then unchanged,
    /// and the runner goes on).
    pub async fn compact(&self) -> Result<usize, RunnerError> {
        let shared = Arc::clone(&self.shared);
        let compact = move || {
            let mut store = lock(&shared.store);
            if shared.closed.load(Ordering::SeqCst) {
                return Ok(0);
            }
            store.compact()
        };
        if !self.shared.blocking {
            return Ok(compact()?);
        }
        match ::tokio::task::spawn_blocking(compact).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(RunnerError::Store(StoreError::Io(std::io::Error::other(
                format!("the compaction's thread failed: {e}"),
            )))),
        }
    }
}

impl<P, R> Drop for SagaRunner<P, R> {
    fn drop(&mut self) {
        // After this, no task performs anything (they check `stopped` under the lock).
        lock(&self.shared.inner).stopped = true;
        self.driver.abort();
        {
            let mut tasks = lock(&self.shared.tasks);
            tasks.stopped = true;
            tasks.set.abort_all();
        }
        // No write begins after this, and one in progress (on a blocking thread) ends
        // before the drop returns: a runner built next over the same log is its only
        // writer.
        self.shared.closed.store(true, Ordering::SeqCst);
        drop(lock(&self.shared.store));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::orchestrated::history::ActionOutcome;
    use crate::saga::orchestrated::log::{LineError, LogRecord};
    use crate::saga::services::{InventoryService, OrderStatus, PaymentService, Services};
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    const ORDER: Order = Order {
        item: 1,
        qty: 2,
        amount: 500,
    };
    const S1: SagaId = SagaId(1);

    /// A file log of the checkout (its payload and refusal types).
    type CheckoutLog = FileLog;
    const LATENCY: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> SagaConfig {
        SagaConfig::builder()
            .step_timeout(ms(100))
            .backoff(ms(10), ms(100))
            .build()
            .unwrap()
    }

    type Shared = Arc<Mutex<Services>>;

    fn services(payment: PaymentService) -> Shared {
        Arc::new(Mutex::new(Services::new(
            InventoryService::new([(1, 10)]),
            payment,
        )))
    }

    /// The real service behind an async call with some latency.
    fn call(
        services: &Shared,
    ) -> impl Fn(Command) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Clone + Send + Sync + 'static
    {
        let services = Arc::clone(services);
        move |cmd| {
            let services = Arc::clone(&services);
            Box::pin(async move {
                ::tokio::time::sleep(LATENCY).await;
                services.lock().unwrap().handle(&cmd)
            })
        }
    }

    fn runner(store: impl LogStore + 'static, services: &Shared) -> SagaRunner {
        let c = call(services);
        SagaRunner::builder(config(), store)
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, c.clone(), c.clone())
            .step(StepId::PAYMENT, c.clone(), c)
            .build()
            .unwrap()
    }

    /// The invariants at rest: conserved, no extra effects, completed sagas hold all
    /// their effects and compensated ones none.
    fn check(runner: &SagaRunner, services: &Shared) {
        let s = services.lock().unwrap();
        assert!(s.is_conserved());
        assert!(s.effects_max() <= 1);
        for (saga, state) in runner.sagas() {
            match state {
                SagaState::Completed => assert!(s.holds_all(saga), "{saga}"),
                SagaState::Compensated => assert!(!s.holds(saga), "{saga}"),
                other => panic!("{saga} is {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_origin_is_read_when_the_runner_is_built() {
        let svc = services(PaymentService::new());
        let before = std::time::SystemTime::now();
        let r = runner(MemoryLog::new(), &svc);
        let origin = r.origin();
        assert!(
            before <= origin.system_time() && origin.system_time() <= std::time::SystemTime::now()
        );
        assert_eq!(origin.instant(), Instant::ZERO);
        // A runner rebuilt later (after a crash) starts its own origin.
        ::tokio::time::advance(Duration::from_secs(5)).await;
        let again = runner(MemoryLog::new(), &svc).origin();
        assert!(again.system_time() >= origin.system_time());
        assert_eq!(again.instant(), Instant::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn happy_path_completes() {
        let svc = services(PaymentService::new());
        let log = MemoryLog::new();
        let r = runner(log.clone(), &svc);
        r.start(S1, ORDER).unwrap();
        r.start(SagaId(2), ORDER).unwrap();
        assert!(matches!(
            r.start(S1, ORDER),
            Err(RunnerError::AlreadyKnown(S1))
        ));
        r.wait_at_rest().await.unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Completed));
        assert_eq!(r.state(SagaId(2)), Some(SagaState::Completed));
        assert_eq!(svc.lock().unwrap().inventory.available(1), 6);
        assert_eq!(svc.lock().unwrap().payment.captured_total(), 1_000);
        check(&r, &svc);
        let ones: Vec<LogRecord> = log
            .records()
            .into_iter()
            .filter(|x| x.saga() == S1)
            .collect();
        assert_eq!(ones.len(), 8, "{ones:?}");
        assert_eq!(
            ones.last(),
            Some(&LogRecord::Ended {
                saga: S1,
                state: SagaState::Completed
            })
        );
        assert!(r.alerts().is_empty());
        assert_eq!(r.totals().sends, 6);
    }

    /// Started and ended sagas and begun compensations are counted by the runner's name, and the
    /// running gauge comes back to zero at rest.
    #[cfg(feature = "metrics")]
    #[test]
    fn sagas_are_counted_by_how_they_end() {
        let recorded = crate::observe::testing::recorded(|| async {
            let svc = services(PaymentService::new().with_declined([S1]));
            let c = call(&svc);
            let r = SagaRunner::builder(config(), MemoryLog::new())
                .name(Name::from_static("checkout"))
                .step(StepId::ORDER, c.clone(), c.clone())
                .step(StepId::INVENTORY, c.clone(), c.clone())
                .step(StepId::PAYMENT, c.clone(), c)
                .build()
                .unwrap();
            r.start(S1, ORDER).unwrap();
            r.start(SagaId(2), ORDER).unwrap();
            r.wait_at_rest().await.unwrap();
        });
        let sagas = |state| {
            recorded.counter(
                "faultline_sagas_total",
                &[("runner", "checkout"), ("state", state)],
            )
        };
        assert_eq!(
            ["started", "completed", "compensated", "failed"].map(sagas),
            [2, 1, 1, 0]
        );
        // The refused saga compensated its two steps before payment.
        assert_eq!(
            recorded.counter(
                "faultline_saga_compensations_total",
                &[("runner", "checkout")]
            ),
            2
        );
        assert_eq!(
            recorded.gauge("faultline_sagas_running", &[("runner", "checkout")]),
            0.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_compensates_in_reverse() {
        let svc = services(PaymentService::new().with_declined([S1]));
        let log = MemoryLog::new();
        let r = runner(log.clone(), &svc);
        r.start(S1, ORDER).unwrap();
        r.wait_at_rest().await.unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Compensated));
        let compensations: Vec<StepId> = log
            .records()
            .into_iter()
            .filter_map(|x| match x {
                LogRecord::CompensationDone { step, .. } => Some(step),
                _ => None,
            })
            .collect();
        assert_eq!(compensations, vec![StepId::INVENTORY, StepId::ORDER]);
        let s = svc.lock().unwrap();
        assert_eq!(s.inventory.available(1), 10);
        assert_eq!(s.orders.status(S1), Some(OrderStatus::Cancelled));
        drop(s);
        check(&r, &svc);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_participant_times_out_is_retried_then_compensated() {
        let svc = services(PaymentService::new());
        let c = call(&svc);
        let begun = ::tokio::time::Instant::now();
        let r = SagaRunner::builder(config(), MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, c.clone(), c.clone())
            // The charge never answers (a black-holed request), its refund does.
            .step(StepId::PAYMENT, |_| std::future::pending(), c)
            .build()
            .unwrap();
        r.start(S1, ORDER).unwrap();
        r.wait_at_rest().await.unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Compensated));
        let t = r.totals();
        assert_eq!((t.timeouts, t.action_retries), (3, 2));
        assert_eq!(t.compensations, 3, "payment (unknown outcome) included");
        assert!(begun.elapsed() >= ms(300), "{:?}", begun.elapsed());
        check(&r, &svc);
    }

    /// With deadlines counted from the send, the runner reports every send (through the
    /// driver core), so a silent participant still times out (on main it hung: the
    /// deadline never started).
    #[tokio::test(start_paused = true)]
    async fn a_silent_participant_times_out_with_deadlines_from_sends() {
        let svc = services(PaymentService::new());
        let c = call(&svc);
        let config = SagaConfig::builder()
            .step_timeout(ms(100))
            .backoff(ms(10), ms(100))
            .deadline_from_sent(true)
            .build()
            .unwrap();
        let r = SagaRunner::builder(config, MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, c.clone(), c.clone())
            .step(StepId::PAYMENT, |_| std::future::pending(), c)
            .build()
            .unwrap();
        r.start(S1, ORDER).unwrap();
        ::tokio::time::timeout(Duration::from_secs(3_600), r.wait_at_rest())
            .await
            .expect("a silent participant times out")
            .unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Compensated));
        assert_eq!((r.totals().timeouts, r.totals().action_retries), (3, 2));
        check(&r, &svc);
    }

    /// A participant that fails fast ("failed, retry now") is retried after the backoff,
    /// long before the step timeout would have passed.
    #[tokio::test(start_paused = true)]
    async fn a_failed_reply_is_retried_before_the_step_timeout() {
        let svc = services(PaymentService::new());
        let c = call(&svc);
        let calls: Arc<Mutex<Vec<::tokio::time::Instant>>> = Arc::default();
        let flaky = {
            let (c, calls) = (c.clone(), Arc::clone(&calls));
            move |cmd| {
                let mut calls = calls.lock().unwrap();
                calls.push(::tokio::time::Instant::now());
                let first = calls.len() == 1;
                let reply = c(cmd);
                async move {
                    if first {
                        ::tokio::time::sleep(ms(1)).await; // connection refused
                        Reply::Failed
                    } else {
                        reply.await
                    }
                }
            }
        };
        let r = SagaRunner::builder(config(), MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, flaky, c.clone())
            .step(StepId::PAYMENT, c.clone(), c)
            .build()
            .unwrap();
        r.start(S1, ORDER).unwrap();
        r.wait_at_rest().await.unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Completed));
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "one failed attempt, one retry");
        let gap = calls[1] - calls[0];
        let timeout = config().step_timeout();
        // The failure came after 1 ms; the backoff after attempt 1 is at most its base.
        assert!(
            gap < timeout,
            "retried after {gap:?}, the timeout is {timeout:?}"
        );
        assert!(gap <= ms(1) + ms(10), "{gap:?}");
        let t = r.totals();
        assert_eq!((t.failed_replies, t.timeouts, t.action_retries), (1, 0, 1));
        check(&r, &svc);
    }

    /// A step whose every attempt fails fast compensates the saga (that step included:
    /// its outcome is unknown), without waiting out any timeout; a compensation that
    /// fails fast is retried likewise.
    #[tokio::test(start_paused = true)]
    async fn failed_replies_spend_the_attempts_then_compensate() {
        let svc = services(PaymentService::new());
        let c = call(&svc);
        let refunds = Arc::new(AtomicU64::new(0));
        let flaky_refund = {
            let (c, refunds) = (c.clone(), Arc::clone(&refunds));
            move |cmd| {
                let first = refunds.fetch_add(1, Ordering::SeqCst) == 0;
                let reply = c(cmd);
                async move { if first { Reply::Failed } else { reply.await } }
            }
        };
        let begun = ::tokio::time::Instant::now();
        let r = SagaRunner::builder(config(), MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, c.clone(), c.clone())
            .step(
                StepId::PAYMENT,
                |_| async { Reply::<Refusal>::Failed },
                flaky_refund,
            )
            .build()
            .unwrap();
        r.start(S1, ORDER).unwrap();
        r.wait_at_rest().await.unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Compensated));
        let t = r.totals();
        assert_eq!((t.failed_replies, t.timeouts), (4, 0), "{t:?}");
        assert_eq!(t.compensations, 3, "payment (unknown outcome) included");
        assert_eq!(t.compensation_retries, 1);
        assert_eq!(refunds.load(Ordering::SeqCst), 2);
        assert!(
            begun.elapsed() < config().step_timeout(),
            "{:?}",
            begun.elapsed()
        );
        check(&r, &svc);
    }

    #[tokio::test(start_paused = true)]
    async fn a_compensation_that_never_answers_fails_with_an_alert() {
        let svc = services(PaymentService::new().with_declined([S1]));
        let c = call(&svc);
        let config = SagaConfig::builder()
            .step_timeout(ms(100))
            .backoff(ms(10), ms(100))
            .compensation_attempts_max(2)
            .build()
            .unwrap();
        let r = SagaRunner::builder(config, MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, c.clone(), |_| std::future::pending())
            .step(StepId::PAYMENT, c.clone(), c)
            .build()
            .unwrap();
        r.start(S1, ORDER).unwrap();
        r.wait_at_rest().await.unwrap();
        assert_eq!(r.state(S1), Some(SagaState::Failed));
        assert_eq!(r.alerts().len(), 1);
        assert_eq!(r.alerts()[0].0, S1);
    }

    fn mixed_orders() -> Vec<(SagaId, Order)> {
        (1..=4)
            .map(|n| {
                (
                    SagaId(n),
                    Order {
                        item: 1,
                        qty: 1,
                        amount: 100 * n,
                    },
                )
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_runner_dropped_mid_flight_is_recovered_over_the_same_log() {
        let mut resent = 0;
        for crash_after in (0..=60).step_by(5) {
            let svc = services(PaymentService::new().with_declined([SagaId(2)]));
            let log = MemoryLog::new();
            let first = runner(log.clone(), &svc);
            for (saga, order) in mixed_orders() {
                first.start(saga, order).unwrap();
            }
            ::tokio::time::sleep(ms(crash_after)).await;
            drop(first);
            let written = log.len();
            ::tokio::time::sleep(ms(500)).await;
            assert_eq!(log.len(), written, "a dropped runner writes nothing");

            let second = runner(log.clone(), &svc);
            second.wait_at_rest().await.unwrap();
            let states: Vec<SagaState> = second.sagas().into_iter().map(|x| x.1).collect();
            use SagaState::{Compensated, Completed};
            assert_eq!(
                states,
                vec![Completed, Compensated, Completed, Completed],
                "crash after {crash_after} ms"
            );
            check(&second, &svc);
            assert_eq!(svc.lock().unwrap().inventory.available(1), 7);
            resent += second.totals().resumed;
        }
        assert!(resent > 0, "some crash left an intent without its outcome");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_append_halts_the_runner() {
        struct Failing(usize);
        impl LogStore for Failing {
            fn append(&mut self, _: &LogRecord) -> Result<(), StoreError> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk full").into());
                }
                self.0 -= 1;
                Ok(())
            }
            fn load(&mut self) -> Result<Vec<LogRecord>, StoreError> {
                Ok(Vec::new())
            }
        }
        let svc = services(PaymentService::new());
        let r = runner(Failing(3), &svc);
        r.start(S1, ORDER).unwrap();
        let err = r.wait_at_rest().await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(matches!(
            r.start(SagaId(2), ORDER),
            Err(RunnerError::Halted(_))
        ));
        // The third append (the inventory intent) failed: its command was never sent.
        let s = svc.lock().unwrap();
        assert_eq!(s.orders.status(S1), Some(OrderStatus::Placed));
        assert_eq!(s.inventory.reservation(S1), None);
    }

    #[tokio::test]
    async fn a_missing_participant_is_a_build_error() {
        let svc = services(PaymentService::new());
        let c = call(&svc);
        let err = SagaRunner::builder(config(), MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c)
            .build()
            .unwrap_err();
        assert!(matches!(err, RunnerError::MissingStep(StepId::INVENTORY)));
    }

    #[test]
    fn building_outside_a_runtime_is_an_error() {
        let svc = services(PaymentService::new());
        let c = call(&svc);
        let err = SagaRunner::builder(config(), MemoryLog::new())
            .step(StepId::ORDER, c.clone(), c.clone())
            .step(StepId::INVENTORY, c.clone(), c.clone())
            .step(StepId::PAYMENT, c.clone(), c)
            .build()
            .unwrap_err();
        assert!(matches!(err, RunnerError::NoRuntime));
    }

    // ----- the file log -----

    fn temp_path(name: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "faultline-saga-{}-{n}-{name}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A file log at `path` holding `records`, then the raw bytes `tail` after them
    /// (a torn, corrupt or newer line).
    fn file_log_then(path: &Path, records: &[LogRecord], tail: &[u8]) {
        let mut log = CheckoutLog::open(path).unwrap();
        for record in records {
            log.append(record).unwrap();
        }
        drop(log);
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(tail).unwrap();
    }

    fn every_kind() -> Vec<LogRecord> {
        vec![
            LogRecord::Started {
                saga: S1,
                payload: ORDER,
            },
            LogRecord::StepIntent {
                saga: S1,
                step: StepId::ORDER,
                attempt: 1,
            },
            LogRecord::StepOutcome {
                saga: S1,
                step: StepId::ORDER,
                ok: true,
                refusal: None,
            },
            LogRecord::StepIntent {
                saga: S1,
                step: StepId::INVENTORY,
                attempt: 2,
            },
            LogRecord::StepOutcome {
                saga: S1,
                step: StepId::INVENTORY,
                ok: false,
                refusal: Some(Refusal::OutOfStock),
            },
            LogRecord::CompensationIntent {
                saga: S1,
                step: StepId::ORDER,
                attempt: 1,
            },
            LogRecord::CompensationDone {
                saga: S1,
                step: StepId::ORDER,
            },
            LogRecord::Ended {
                saga: S1,
                state: SagaState::Compensated,
            },
            LogRecord::Ended {
                saga: SagaId(u64::MAX),
                state: SagaState::Failed,
            },
        ]
    }

    #[test]
    fn file_log_round_trips_every_record() {
        let path = temp_path("round-trip");
        let mut log = CheckoutLog::open(&path).unwrap();
        assert_eq!(log.load().unwrap(), Vec::new());
        for record in every_kind() {
            log.append(&record).unwrap();
        }
        assert_eq!(log.load().unwrap(), every_kind());
        drop(log);
        let mut reopened = CheckoutLog::open(&path).unwrap();
        assert_eq!(reopened.load().unwrap(), every_kind());
        assert_eq!(reopened.path(), path.as_path());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn file_log_ignores_a_torn_last_line_and_appends_after_it() {
        let path = temp_path("torn");
        let records = every_kind();
        file_log_then(
            &path,
            &records[..3],
            br#"{"type":"step_intent","saga":1,"st"#,
        );
        let mut log = CheckoutLog::open(&path).unwrap();
        assert_eq!(log.load().unwrap(), records[..3].to_vec());
        log.append(&records[3]).unwrap();
        drop(log);
        let mut log = CheckoutLog::open(&path).unwrap();
        assert_eq!(log.load().unwrap(), records[..4].to_vec());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn file_log_reports_a_corrupt_line_in_the_middle() {
        let path = temp_path("corrupt");
        file_log_then(
            &path,
            &every_kind()[..1],
            b"{\"type\":\"started\",\"saga\":\n",
        );
        let mut log = CheckoutLog::open(&path).unwrap_err();
        assert!(
            matches!(&log, StoreError::Corrupt { path: p, line: 2, problem: LineError::Malformed(_) } if p == &path),
            "{log}"
        );
        let message = log.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
        // Also a well-formed line that is not a record, followed by more records.
        std::fs::write(
            &path,
            "{\"type\":\"ended\",\"saga\":1,\"state\":\"running\"}\n{}\n",
        )
        .unwrap();
        log = CheckoutLog::open(&path).unwrap_err();
        assert!(
            matches!(
                log,
                StoreError::Corrupt {
                    line: 1,
                    problem: LineError::Impossible(_),
                    ..
                }
            ),
            "{log}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn file_log_refuses_a_line_of_a_newer_format_version() {
        let path = temp_path("newer");
        file_log_then(
            &path,
            &every_kind()[..1],
            b"{\"v\":4,\"type\":\"started\",\"saga\":2,\"payload\":{}}\n",
        );
        let err = CheckoutLog::open(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Corrupt {
                    line: 2,
                    problem: LineError::NewerVersion {
                        version: 4,
                        supported: 3
                    },
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("line 2") && message.contains("version 4"),
            "{message}"
        );
        // Nothing was cut off: the newer line is still there for the newer build.
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"v\":4"));
        // A torn newer line at the end is a torn line like any other.
        std::fs::write(
            &path,
            format!("{}\n{{\"v\":4,\"ty", every_kind()[0].encode_line()),
        )
        .unwrap();
        let mut log = CheckoutLog::open(&path).unwrap();
        assert_eq!(log.load().unwrap(), every_kind()[..1].to_vec());
        std::fs::remove_file(&path).unwrap();
    }

    /// A log written by the unversioned (version 1) `FileLog`: three sagas, two in
    /// flight (saga 2 on its second attempt), one compensated; and a torn last line.
    const V1_LOG: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/saga_log_v1.jsonl"
    ));

    #[tokio::test(start_paused = true)]
    async fn a_version_1_file_log_is_read_recovered_and_appended_to() {
        let path = temp_path("v1");
        std::fs::write(&path, format!("{V1_LOG}{{\"type\":\"step_in")).unwrap();
        let old = CheckoutLog::open(&path).unwrap().load().unwrap();
        assert_eq!(old.len(), V1_LOG.lines().count());
        assert_eq!(
            old[0],
            LogRecord::Started {
                saga: S1,
                payload: ORDER
            }
        );
        assert_eq!(
            old[8],
            LogRecord::StepIntent {
                saga: SagaId(2),
                step: StepId::ORDER,
                attempt: 2
            }
        );
        // Torn tail cut off, the old lines kept byte for byte.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), V1_LOG);

        let svc = services(PaymentService::new());
        let runner = runner(CheckoutLog::open(&path).unwrap(), &svc);
        runner.wait_at_rest().await.unwrap();
        assert_eq!(runner.totals().recovered, 2);
        assert_eq!(runner.state(S1), Some(SagaState::Completed));
        assert_eq!(runner.state(SagaId(2)), Some(SagaState::Completed));
        assert_eq!(runner.state(SagaId(3)), Some(SagaState::Compensated));
        check(&runner, &svc);
        drop(runner);

        // The file now holds the old lines, then version 3 lines, and reads whole.
        let text = std::fs::read_to_string(&path).unwrap();
        let new_lines = text.strip_prefix(V1_LOG).unwrap();
        assert!(!new_lines.is_empty());
        assert!(
            new_lines.lines().all(|l| l.starts_with("{\"v\":3,")),
            "{new_lines}"
        );
        let all = CheckoutLog::open(&path).unwrap().load().unwrap();
        assert_eq!(all[..old.len()], old[..]);
        for saga in [S1, SagaId(2)] {
            assert!(all.contains(&LogRecord::Ended {
                saga,
                state: SagaState::Completed
            }));
        }
        std::fs::remove_file(&path).unwrap();
    }

    /// A log written by the version 2 `FileLog` (main before the generic saga): four
    /// checkout sagas, two completed, saga 3 declined at payment and compensated,
    /// saga 4 in flight at the crash (its inventory intent without an outcome).
    const V2_LOG: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/saga_log_v2.jsonl"
    ));

    #[tokio::test(start_paused = true)]
    async fn a_version_2_file_log_is_migrated_recovered_and_appended_to() {
        let path = temp_path("v2");
        std::fs::write(&path, V2_LOG).unwrap();
        let old = CheckoutLog::open(&path).unwrap().load().unwrap();
        assert_eq!(old.len(), V2_LOG.lines().count());
        assert_eq!(
            old[0],
            LogRecord::Started {
                saga: S1,
                payload: ORDER
            }
        );
        // A refusal of version 2 has no reason: the migrated record says so.
        assert!(old.contains(&LogRecord::StepOutcome {
            saga: SagaId(3),
            step: StepId::PAYMENT,
            ok: false,
            refusal: None
        }));
        let h = SagaHistory::of(SagaId(3), &old).unwrap();
        assert_eq!(h.state, SagaState::Compensated);
        assert_eq!(
            h.step(StepId::PAYMENT).map(|s| s.outcome),
            Some(ActionOutcome::Refused(None))
        );
        assert!(h.step(StepId::ORDER).is_some_and(|s| s.compensated));
        assert!(h.step(StepId::INVENTORY).is_some_and(|s| s.compensated));
        let h = SagaHistory::of(SagaId(4), &old).unwrap();
        assert_eq!(h.state, SagaState::Running);
        assert_eq!(
            h.step(StepId::INVENTORY).map(|s| s.outcome),
            Some(ActionOutcome::Unknown)
        );

        // The new runner recovers saga 4 from the old lines and finishes it.
        let svc = services(PaymentService::new());
        {
            // The services' state as the old run left it (durable services).
            let mut s = svc.lock().unwrap();
            for record in &old {
                if let LogRecord::StepOutcome {
                    saga,
                    step,
                    ok: true,
                    ..
                } = record
                {
                    let payload = SagaHistory::of(*saga, &old).unwrap().payload;
                    s.handle(&Command::action(*saga, *step, payload));
                }
                if let LogRecord::CompensationDone { saga, step } = record {
                    let payload = SagaHistory::of(*saga, &old).unwrap().payload;
                    s.handle(&Command::compensation(*saga, *step, payload));
                }
            }
        }
        let runner = runner(CheckoutLog::open(&path).unwrap(), &svc);
        runner.wait_at_rest().await.unwrap();
        assert_eq!(runner.totals().recovered, 1);
        assert_eq!(runner.state(SagaId(4)), Some(SagaState::Completed));
        assert_eq!(runner.state(SagaId(3)), Some(SagaState::Compensated));
        check(&runner, &svc);
        drop(runner);
        // The old lines are kept byte for byte, the new ones are version 3.
        let text = std::fs::read_to_string(&path).unwrap();
        let new_lines = text.strip_prefix(V2_LOG).unwrap();
        assert!(!new_lines.is_empty());
        assert!(
            new_lines.lines().all(|l| l.starts_with("{\"v\":3,")),
            "{new_lines}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_runner_over_a_reopened_file_log_completes_the_saga() {
        let path = temp_path("restart");
        let svc = services(PaymentService::new());
        let first = runner(CheckoutLog::open(&path).unwrap(), &svc);
        first.start(S1, ORDER).unwrap();
        first.start(SagaId(2), ORDER).unwrap();
        ::tokio::time::sleep(ms(15)).await; // the orders are placed, inventory in flight
        drop(first);
        let before = CheckoutLog::open(&path).unwrap().load().unwrap();
        assert!(before.len() >= 4, "{before:?}");
        assert!(!before.iter().any(|x| matches!(x, LogRecord::Ended { .. })));

        // A "process restart": a new file handle on the same path.
        let second = runner(CheckoutLog::open(&path).unwrap(), &svc);
        assert!(matches!(
            second.start(S1, ORDER),
            Err(RunnerError::AlreadyKnown(S1))
        ));
        second.wait_at_rest().await.unwrap();
        assert_eq!(second.state(S1), Some(SagaState::Completed));
        assert_eq!(second.state(SagaId(2)), Some(SagaState::Completed));
        assert_eq!(second.totals().recovered, 2);
        check(&second, &svc);
        drop(second);
        let after = CheckoutLog::open(&path).unwrap().load().unwrap();
        for saga in [S1, SagaId(2)] {
            assert!(after.contains(&LogRecord::Ended {
                saga,
                state: SagaState::Completed
            }));
        }
        std::fs::remove_file(&path).unwrap();
    }
}
