//! The CQRS world in the tokio harness (`cqrs-tokio`): real async command handling and
//! real projection tasks run against an event store that is an async endpoint of the
//! world, under the fault plans of the sans-IO world's names.
//!
//! - **The far side** is the [`Store`]: an append-only log (the sans-IO
//!   [`EventStore`]) behind async calls that take time (a latency drawn from the seed's
//!   `think_ms`, so commands on one item race between load and append) and consult the
//!   [`FaultState`] when they are called. The target `writer` (the store's command side)
//!   suffers `outage` (calls refused), `slow` (added latency) and `errors` (a call fails,
//!   nothing written); the nodes `proj-p` crash (their reads are refused, and the
//!   projection's volatile state is lost at the crash); the links `dispatch->proj-p`
//!   carry projection `p`'s reads and drop (the read fails), delay, or duplicate them
//!   (the answer carries the record before the one asked for again). The store logs
//!   every append it acknowledged, every conflict it refused and every read.
//! - **The clients** are the world's engine events (the sans-IO knobs: items, clients,
//!   rates, withdraw and legacy shares): each spawns a task that hands its command to the
//!   code under test and logs the answer.
//! - **The code under test** is a [`HostedInventory`] built by a [`Factory`] once per run
//!   inside the runtime, from the [`Store`] and the knobs. The reference
//!   ([`reference_factory`]) handles a command with the command policy the tokio
//!   [`EventSourcedService`] drives (load, decide, append at the version loaded, back off
//!   and reload on a conflict), and serves each read model from an
//!   [`EventSourcedService`] replica of the log with its [`ProjectionTask`]: a puller task
//!   copies the store's log into the replica, and the service's projection task folds it.
//!
//! The world checks, from the observations only (the store's ledger and the clients'
//! answers, and the read models as queried):
//!
//! - `cqrs.no_lost_write`: every acknowledged append takes the next versions of its
//!   stream and the next positions of the log, without gaps, and a conflict is refused
//!   only when the stream has moved; every command answered as appended has its events
//!   in the log at the versions and positions it was told, and they are the events the
//!   command decides on the stream as it stood just before them (a write decided on a
//!   stale state, a lost update, fails this).
//! - `cqrs.caught_up`: a read model that reports position `n` is the fold of the logged
//!   events 1..=`n`; at rest every read model is the fold of the whole log.
//! - `cqrs.monotonic_reads`: a query never sees a read model go back in position.
//!
//! White-box, where the code under test says its checkpoint
//! ([`HostedInventory::checkpoint`]) and the world is asked to
//! ([`CqrsTokioWorld::white_box`]): a checkpoint never passes the read model's position,
//! and at rest it is the log's head (`cqrs.caught_up`). The black-box checks stand alone.

use crate::config::ConfigError;
use crate::cqrs::core::{
    Aggregate, AppendError, Appended, EventStore, ExpectedVersion, Recorded, Repository, StreamId,
    Upcast,
};
use crate::cqrs::driver::{self, CommandPolicy, Next, Outcome};
use crate::cqrs::invariants::{CAUGHT_UP, CqrsChecker, MONOTONIC_READS, NO_LOST_WRITE};
use crate::cqrs::item::{Item, ItemCommand, ItemEvent, ItemRejection, StockView, StoredEvent};
use crate::cqrs::tokio::{EventSourcedService, ProjectionTask};
use crate::cqrs::world::{CqrsKnobs, PROJECTIONS, WRITER, dispatch_link, projection_name};
use crate::harness::hosted::{Rerun, TokioHost, VirtualClock};
use faultline_sim::prelude::*;
use faultline_sim::{FaultKindTag, FaultState, RunReport, Simulation, TraceMode};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

pub mod pattern;

/// Coverage marks of the hosted CQRS world.
pub const MARKS: &[&str] = &[
    "cqrs.conflict",
    "cqrs.rejected",
    "cqrs.upcast",
    "cqrs.rebuild",
    "cqrs-tokio.unavailable",
    "cqrs-tokio.read_failed",
    "cqrs-tokio.redelivery",
];

/// The invariants the hosted world checks (names of the sans-IO world's).
pub const INVARIANTS: [&str; 3] = [NO_LOST_WRITE, CAUGHT_UP, MONOTONIC_READS];

/// How often the world drains observations and queries the read models.
const TICK: SimDuration = SimDuration::from_millis(10);

/// Most records one projection read returns.
const READ_MAX: usize = 64;

/// Why a store call wrote or returned nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store is in an outage (or the reader is crashed): the call was refused.
    #[error("the store is unavailable")]
    Unavailable,
    /// The store failed the call; nothing was written.
    #[error("the store failed the call")]
    Failed,
    /// The answer was lost on the way.
    #[error("the answer was lost on the way")]
    Lost,
    /// The append was refused: the stream is not at the expected version.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// What the world saw, in the order it happened.
#[derive(Clone, Debug)]
enum Obs {
    /// The store acknowledged an append.
    Acked {
        item: StreamId,
        expected: ExpectedVersion,
        appended: Appended,
        events: Vec<ItemEvent>,
        upcast: bool,
    },
    /// The store refused an append as a conflict.
    Conflict {
        item: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// The store failed or refused a call.
    Refused { call: &'static str, why: StoreError },
    /// A stream was read.
    StreamRead { item: StreamId, version: u64 },
    /// Projection `p` read the log.
    LogRead {
        p: usize,
        after: u64,
        n: usize,
        again: bool,
    },
    /// A client got its answer.
    Answer {
        client: u32,
        item: StreamId,
        command: ItemCommand,
        answer: Answer,
    },
}

/// The answer a client gets for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Appended: where its events went.
    Appended(Appended),
    /// The item refused the command.
    Rejected(ItemRejection),
    /// Given up after conflicts; the stream was last seen at `actual`.
    Conflict {
        /// The stream's version at the last conflict.
        actual: u64,
    },
    /// The store could not be reached or failed.
    Failed(StoreError),
}

type Log = Rc<RefCell<Vec<(SimTime, Obs)>>>;

struct StoreInner {
    store: EventStore<StoredEvent>,
    faults: Rc<RefCell<FaultState>>,
    rng: SimRng,
    think_ms: (u64, u64),
}

/// The event store: the far side of the world, an async endpoint that consults the
/// fault plan when called and logs what it did. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Rc<RefCell<StoreInner>>,
    log: Log,
    clock: VirtualClock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    fn note(&self, obs: Obs) {
        self.log.borrow_mut().push((self.clock.now(), obs));
    }

    /// The latency of one command-side call, and whether it is refused, decided now.
    fn command_call(&self, call: &'static str) -> (Duration, Option<StoreError>) {
        let now = self.clock.now();
        let mut inner = self.inner.borrow_mut();
        let (lo, hi) = inner.think_ms;
        let base = 1 + inner.rng.between(lo, hi) / 2;
        let faults = Rc::clone(&inner.faults);
        let mut state = faults.borrow_mut();
        let mut view = state.view(now);
        let extra = view.extra_latency(WRITER);
        let refused = if view.is_down(WRITER) {
            Some(StoreError::Unavailable)
        } else if view.injects_error(WRITER) {
            Some(StoreError::Failed)
        } else {
            None
        };
        if let Some(why) = &refused {
            drop(state);
            drop(inner);
            self.note(Obs::Refused {
                call,
                why: why.clone(),
            });
        }
        let latency = Duration::from_millis(base) + Duration::from_nanos(extra.as_nanos());
        (latency, refused)
    }

    /// Appends `events` to `item` if it is at `expected`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Append`] on a conflict; the others when the store is down, fails
    /// the call, or the append carries no event.
    pub async fn append(
        &self,
        item: StreamId,
        expected: ExpectedVersion,
        events: Vec<StoredEvent>,
    ) -> Result<Appended, StoreError> {
        let (latency, refused) = self.command_call("append");
        tokio::time::sleep(latency).await;
        if let Some(why) = refused {
            return Err(why);
        }
        let current: Vec<ItemEvent> = events.iter().map(Upcast::upcast).collect();
        let upcast = events
            .iter()
            .any(|e| matches!(e, StoredEvent::RestockedV1 { .. }));
        let result = self.inner.borrow_mut().store.append(item, expected, events);
        match result {
            Ok(appended) => {
                self.note(Obs::Acked {
                    item,
                    expected,
                    appended,
                    events: current,
                    upcast,
                });
                Ok(appended)
            }
            Err(e) => {
                if let AppendError::WrongExpectedVersion { actual, .. } = &e {
                    self.note(Obs::Conflict {
                        item,
                        expected,
                        actual: *actual,
                    });
                }
                Err(StoreError::Append(e))
            }
        }
    }

    /// Every event of `item`, in version order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] or [`StoreError::Failed`] under a fault.
    pub async fn read_stream(
        &self,
        item: StreamId,
    ) -> Result<Vec<Recorded<StoredEvent>>, StoreError> {
        let (latency, refused) = self.command_call("read_stream");
        tokio::time::sleep(latency).await;
        if let Some(why) = refused {
            return Err(why);
        }
        let records: Vec<_> = self
            .inner
            .borrow()
            .store
            .read_stream(item, 0)
            .cloned()
            .collect();
        self.note(Obs::StreamRead {
            item,
            version: records.len() as u64,
        });
        Ok(records)
    }

    /// Up to `max` records of the global log after position `after`, for projection
    /// `reader` (over its link).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] while `reader` is crashed, [`StoreError::Lost`] when
    /// its link drops the read.
    pub async fn read_all(
        &self,
        reader: usize,
        after: u64,
        max: usize,
    ) -> Result<Vec<Recorded<StoredEvent>>, StoreError> {
        let now = self.clock.now();
        let (refused, fate) = {
            let inner = self.inner.borrow();
            let mut state = inner.faults.borrow_mut();
            let mut view = state.view(now);
            let down = view.is_crashed(&projection_name(reader));
            let fate = view.link(&dispatch_link(reader));
            let refused = if down {
                Some(StoreError::Unavailable)
            } else if fate.dropped {
                Some(StoreError::Lost)
            } else {
                None
            };
            (refused, fate)
        };
        tokio::time::sleep(
            Duration::from_millis(1) + Duration::from_nanos(fate.extra_delay.as_nanos()),
        )
        .await;
        if let Some(why) = refused {
            self.note(Obs::Refused {
                call: "read_all",
                why: why.clone(),
            });
            return Err(why);
        }
        let again = fate.copies > 1 && after > 0;
        let from = if again { after - 1 } else { after };
        let records: Vec<_> = self.inner.borrow().store.read_all(from, max).to_vec();
        self.note(Obs::LogRead {
            p: reader,
            after,
            n: records.len(),
            again,
        });
        Ok(records)
    }
}

/// A boxed future of the hosted runtime (not `Send`).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// The code under test: command handling and read models over the world's [`Store`].
pub trait HostedInventory {
    /// Handles `command` on `item` (a `legacy` restock is written in schema 1); resolves
    /// with the answer the client gets.
    fn execute(&self, item: StreamId, command: ItemCommand, legacy: bool) -> LocalFuture<Answer>;
    /// The number of read models.
    fn projections(&self) -> usize;
    /// Read model `p` now.
    fn query(&self, p: usize) -> StockView;
    /// Read model `p`'s durable checkpoint, if it has one to show.
    fn checkpoint(&self, p: usize) -> Option<u64>;
    /// Read model `p`'s process crashed and restarted (volatile state lost).
    fn crash(&self, p: usize);
    /// Read model `p` is rebuilt from scratch.
    fn rebuild(&self, p: usize);
}

/// Builds the code under test for one run, inside the runtime, from the store and the
/// knobs.
pub type Factory = Rc<dyn Fn(&Store, &CqrsKnobs) -> Result<Box<dyn HostedInventory>, ConfigError>>;

/// A defect of the reference, for the mutants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Defect {
    /// None.
    #[default]
    None,
    /// After a conflict, the command appends the same events again at the version the
    /// conflict reported, without reloading and deciding again (a lost update).
    RetryWithoutReload,
    /// After a failed read, the projection's puller moves its cursor past the event it
    /// could not read.
    SkipAfterReadError,
    /// After a failed read, the projection starts over from an empty replica.
    RestartOnReadError,
}

/// The reference code under test, with `defect`.
pub fn factory_with(defect: Defect) -> Factory {
    Rc::new(move |store, knobs| {
        Ok(Box::new(Reference::new(store.clone(), knobs, defect)?) as Box<dyn HostedInventory>)
    })
}

/// The reference code under test: faultline's command policy and
/// [`EventSourcedService`] projections (see the [module docs](self)).
pub fn reference_factory() -> Factory {
    factory_with(Defect::None)
}

struct View {
    replica: EventSourcedService<Item, StoredEvent>,
    task: ProjectionTask<StockView>,
}

struct Reference {
    store: Store,
    policy: CommandPolicy,
    jitter: Rc<RefCell<SimRng>>,
    views: Vec<Rc<RefCell<View>>>,
    defect: Defect,
}

fn view(checkpoint_every: u64, poll: Duration) -> Result<View, ConfigError> {
    let replica = EventSourcedService::new(Repository::new(1_000)?, 1)?;
    let task = replica.spawn_projection(
        crate::cqrs::core::ProjectionRunner::new(checkpoint_every)?,
        poll,
    );
    Ok(View { replica, task })
}

impl Reference {
    fn new(store: Store, knobs: &CqrsKnobs, defect: Defect) -> Result<Self, ConfigError> {
        let policy = CommandPolicy::new(
            knobs
                .attempts_max
                .clamp(1, crate::retry::RetryPolicy::ATTEMPTS_MAX_LIMIT),
            CommandPolicy::default_backoff(),
        )?;
        let poll = Duration::from_millis(knobs.poll_ms);
        let mut views = Vec::new();
        for p in 0..PROJECTIONS {
            let every = knobs.checkpoint_every.get(p).copied().unwrap_or(1);
            let v = Rc::new(RefCell::new(view(every, poll)?));
            tokio::task::spawn_local(pull(store.clone(), p, Rc::clone(&v), every, poll, defect));
            views.push(v);
        }
        Ok(Reference {
            store,
            policy,
            jitter: Rc::new(RefCell::new(
                SimRng::new(knobs.seed).fork("cqrs-tokio.jitter"),
            )),
            views,
            defect,
        })
    }
}

/// Copies the store's log into projection `p`'s replica, polling when caught up.
async fn pull(
    store: Store,
    p: usize,
    v: Rc<RefCell<View>>,
    checkpoint_every: u64,
    poll: Duration,
    defect: Defect,
) {
    let mut after = 0u64;
    loop {
        match store.read_all(p, after, READ_MAX).await {
            Ok(records) => {
                let mut copied = 0;
                for r in records {
                    if r.position != after + 1 {
                        continue; // already copied (a duplicated read)
                    }
                    let appended = v.borrow().replica.with_repository(|repo| {
                        repo.append(r.stream, ExpectedVersion::Any, vec![r.event])
                    });
                    if appended.is_err() {
                        break;
                    }
                    after = r.position;
                    copied += 1;
                }
                if copied == 0 {
                    tokio::time::sleep(poll).await;
                }
            }
            Err(_) => {
                match defect {
                    Defect::SkipAfterReadError => after += 1,
                    Defect::RestartOnReadError => {
                        if let Ok(fresh) = view(checkpoint_every, poll) {
                            *v.borrow_mut() = fresh;
                            after = 0;
                        }
                    }
                    Defect::None | Defect::RetryWithoutReload => {}
                }
                tokio::time::sleep(poll.min(Duration::from_millis(50))).await;
            }
        }
    }
}

/// A restock of the old client is written in schema 1.
fn stored(events: &[ItemEvent], legacy: bool) -> Vec<StoredEvent> {
    events
        .iter()
        .map(|e| match (*e, legacy) {
            (ItemEvent::Restocked { units }, true) => {
                StoredEvent::RestockedV1 { dozens: units / 12 }
            }
            (e, _) => StoredEvent::Current(e),
        })
        .collect()
}

async fn handle(
    store: Store,
    policy: CommandPolicy,
    jitter: Rc<RefCell<SimRng>>,
    defect: Defect,
    item: StreamId,
    command: ItemCommand,
    legacy: bool,
) -> Answer {
    let mut run = policy.start();
    // What to append without deciding again (the defect's stale retry).
    let mut stale: Option<(ExpectedVersion, Vec<StoredEvent>)> = None;
    loop {
        let (expected, events) = match stale.take() {
            Some(s) => s,
            None => {
                let records = match store.read_stream(item).await {
                    Ok(r) => r,
                    Err(e) => return Answer::Failed(e),
                };
                let version = records.last().map_or(0, |r| r.version);
                let state = Item::default().fold(
                    records
                        .iter()
                        .map(|r| r.event.upcast())
                        .collect::<Vec<_>>()
                        .iter(),
                );
                match state.decide(&command) {
                    Err(why) => return Answer::Rejected(why),
                    Ok(events) => (driver::expected_at(version), stored(&events, legacy)),
                }
            }
        };
        match store.append(item, expected, events.clone()).await {
            Ok(appended) => return Answer::Appended(appended),
            Err(StoreError::Append(AppendError::WrongExpectedVersion { actual, .. })) => {
                let next =
                    policy.on_outcome(&mut run, Outcome::Conflict, &mut *jitter.borrow_mut());
                match next {
                    Next::RetryAfter(delay) => {
                        tokio::time::sleep(delay).await;
                        if defect == Defect::RetryWithoutReload {
                            stale = Some((ExpectedVersion::Exact(actual), events));
                        }
                    }
                    Next::Done | Next::GiveUp => return Answer::Conflict { actual },
                }
            }
            Err(e) => return Answer::Failed(e),
        }
    }
}

impl HostedInventory for Reference {
    fn execute(&self, item: StreamId, command: ItemCommand, legacy: bool) -> LocalFuture<Answer> {
        Box::pin(handle(
            self.store.clone(),
            self.policy,
            Rc::clone(&self.jitter),
            self.defect,
            item,
            command,
            legacy,
        ))
    }

    fn projections(&self) -> usize {
        self.views.len()
    }

    fn query(&self, p: usize) -> StockView {
        self.views
            .get(p)
            .map(|v| v.borrow().task.query())
            .unwrap_or_default()
    }

    fn checkpoint(&self, p: usize) -> Option<u64> {
        self.views.get(p).map(|v| v.borrow().task.checkpoint())
    }

    fn crash(&self, p: usize) {
        if let Some(v) = self.views.get(p) {
            v.borrow().task.crash();
        }
    }

    fn rebuild(&self, p: usize) {
        if let Some(v) = self.views.get(p) {
            v.borrow().task.rebuild();
        }
    }
}

/// The fault plans of the hosted world: the sans-IO world's names, with the kinds an
/// async store meets (see the [module docs](self)).
pub fn fault_profile(knobs: &CqrsKnobs) -> FaultProfile {
    let mut p = FaultProfile::new(knobs.horizon_ms)
        .kinds([
            FaultKindTag::Outage,
            FaultKindTag::Slow,
            FaultKindTag::Errors,
            FaultKindTag::Crash,
            FaultKindTag::Drop,
            FaultKindTag::Duplicate,
            FaultKindTag::Delay,
        ])
        .faults(1, 8)
        .duration_ms(50, 2_000)
        .latency_ms_max(300)
        .target(WRITER);
    for i in 0..PROJECTIONS {
        p = p.node(projection_name(i)).link(dispatch_link(i));
    }
    p
}

/// The fault plan this seed generates for the hosted world.
pub fn fault_plan(knobs: &CqrsKnobs) -> FaultPlan {
    FaultPlan::generate(
        &mut SimRng::new(knobs.seed).fork("cqrs-tokio.plan"),
        &fault_profile(knobs),
    )
}

/// The hosted world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostedCqrsEvent {
    /// Client `client` sends its next command.
    Command {
        /// Client index.
        client: u32,
    },
    /// Projection `p` is rebuilt.
    Rebuild {
        /// Projection index.
        p: u32,
    },
    /// Drain the observations, query the read models.
    Tick,
}

/// Figures of one hosted run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HostedCqrsStats {
    /// Commands sent.
    pub commands: u64,
    /// Commands answered as appended.
    pub accepted: u64,
    /// Commands the item refused.
    pub rejected: u64,
    /// Appends the store refused as conflicts.
    pub conflicts: u64,
    /// Commands given up after conflicts.
    pub gave_up: u64,
    /// Commands failed by the store.
    pub failed: u64,
    /// Events acknowledged by the store.
    pub events: u64,
    /// Store calls refused or failed.
    pub refused: u64,
    /// Reads of the log by projections.
    pub log_reads: u64,
    /// Largest projection lag seen at a tick, events.
    pub lag_max: u64,
    /// Queries of the read models.
    pub queries: u64,
}

struct Run {
    host: TokioHost,
    faults: Rc<RefCell<FaultState>>,
    log: Log,
    service: Box<dyn HostedInventory>,
}

/// The hosted CQRS world around the code a [`Factory`] builds.
pub struct CqrsTokioWorld {
    knobs: CqrsKnobs,
    factory: Factory,
    /// Whether the white-box checkpoint checks run (the black-box ones always do).
    pub white_box: bool,
    run: Option<Run>,
    /// The checker, fed from the observations.
    pub checker: CqrsChecker,
    busy: Vec<bool>,
    last: Vec<StockView>,
    rng_commands: SimRng,
    /// Figures of the run.
    pub stats: HostedCqrsStats,
    /// Projection lag over time: (time, projection, head - read model position).
    pub lags: Vec<(SimTime, usize, u64)>,
}

impl CqrsTokioWorld {
    /// A world for `knobs` around the code `factory` builds.
    pub fn new(knobs: CqrsKnobs, factory: Factory) -> Self {
        CqrsTokioWorld {
            busy: vec![false; knobs.clients as usize],
            last: vec![StockView::default(); PROJECTIONS],
            rng_commands: SimRng::new(knobs.seed).fork("cqrs.commands"),
            knobs,
            factory,
            white_box: true,
            run: None,
            checker: CqrsChecker::default(),
            stats: HostedCqrsStats::default(),
            lags: Vec::new(),
        }
    }

    /// The world with the white-box checks on or off.
    pub fn with_white_box(mut self, on: bool) -> Self {
        self.white_box = on;
        self
    }

    /// The knobs.
    pub fn knobs(&self) -> &CqrsKnobs {
        &self.knobs
    }

    fn run_mut(&mut self) -> Result<&mut Run, Violation> {
        self.run
            .as_mut()
            .ok_or_else(|| Violation::new("sim.world", "the hosted world was not started"))
    }

    /// Runs the tasks up to now and judges what they did.
    fn settle(&mut self, ctx: &mut Ctx<HostedCqrsEvent>) -> Result<(), Violation> {
        let now = ctx.now();
        let run = self.run_mut()?;
        run.host.advance_to(now);
        let hits = run.faults.borrow_mut().take_hits();
        let observed: Vec<(SimTime, Obs)> = std::mem::take(&mut *run.log.borrow_mut());
        ctx.add_fault_hits(&hits);
        for (t, obs) in observed {
            self.observe(ctx, t, obs)?;
        }
        Ok(())
    }

    fn observe(
        &mut self,
        ctx: &mut Ctx<HostedCqrsEvent>,
        t: SimTime,
        obs: Obs,
    ) -> Result<(), Violation> {
        match obs {
            Obs::Acked {
                item,
                expected,
                appended,
                events,
                upcast,
            } => {
                ctx.record(
                    "store",
                    format_args!(
                        "{t}: appended {} event(s) to {item} at {expected}: versions {}..={}, positions {}..={}",
                        events.len(),
                        appended.from_version + 1,
                        appended.to_version,
                        appended.first_position,
                        appended.last_position
                    ),
                );
                if upcast {
                    ctx.cover("cqrs.upcast");
                }
                self.stats.events += events.len() as u64;
                self.checker.on_ack(item, expected, &appended, &events)?;
            }
            Obs::Conflict {
                item,
                expected,
                actual,
            } => {
                ctx.record(
                    "store",
                    format_args!("{t}: conflict on {item}: expected {expected}, at {actual}"),
                );
                ctx.cover("cqrs.conflict");
                self.stats.conflicts += 1;
                self.checker.on_conflict(item, expected, actual)?;
            }
            Obs::Refused { call, why } => {
                ctx.record("store", format_args!("{t}: {call} refused: {why}"));
                self.stats.refused += 1;
                if call == "read_all" {
                    ctx.cover("cqrs-tokio.read_failed");
                } else {
                    ctx.cover("cqrs-tokio.unavailable");
                }
            }
            Obs::StreamRead { item, version } => {
                ctx.record(
                    "store",
                    format_args!("{t}: read {item} at version {version}"),
                );
            }
            Obs::LogRead { p, after, n, again } => {
                self.stats.log_reads += 1;
                if again {
                    ctx.cover("cqrs-tokio.redelivery");
                }
                ctx.record(
                    "store",
                    format_args!(
                        "{t}: {} read {n} record(s) after {after}{}",
                        projection_name(p),
                        if again { " (one again)" } else { "" }
                    ),
                );
            }
            Obs::Answer {
                client,
                item,
                command,
                answer,
            } => {
                ctx.record(
                    format!("client-{client}"),
                    format_args!("{t}: {command:?} on {item}: {answer:?}"),
                );
                if let Some(b) = self.busy.get_mut(client as usize) {
                    *b = false;
                }
                match answer {
                    Answer::Appended(a) => {
                        self.stats.accepted += 1;
                        self.check_answer(item, &command, &a)?;
                    }
                    Answer::Rejected(_) => {
                        ctx.cover("cqrs.rejected");
                        self.stats.rejected += 1;
                    }
                    Answer::Conflict { .. } => self.stats.gave_up += 1,
                    Answer::Failed(_) => self.stats.failed += 1,
                }
            }
        }
        Ok(())
    }

    /// A command answered as appended at `a`: its events are in the log there, and they
    /// are what the command decides on the stream as it stood before them.
    fn check_answer(
        &self,
        item: StreamId,
        command: &ItemCommand,
        a: &Appended,
    ) -> Result<(), Violation> {
        let rec = self.checker.streams.get(&item);
        let events = rec.map(|r| r.events.as_slice()).unwrap_or_default();
        let from = usize::try_from(a.from_version).unwrap_or(usize::MAX);
        let to = usize::try_from(a.to_version).unwrap_or(usize::MAX);
        let Some(mine) = events.get(from..to).filter(|m| !m.is_empty()) else {
            return Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "{command:?} on {item} was answered as appended at versions {}..={}, but the store \
                     acknowledged {} event(s) of {item}: the write vanished",
                    a.from_version + 1,
                    a.to_version,
                    events.len()
                ),
            ));
        };
        let positions: Vec<u64> = mine.iter().map(|(p, _)| *p).collect();
        let want_positions: Vec<u64> = (a.first_position..=a.last_position).collect();
        if positions != want_positions {
            return Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "{command:?} on {item} was answered at positions {}..={}; the log holds its versions at {positions:?}",
                    a.first_position, a.last_position
                ),
            ));
        }
        let before = Item::default().fold(events[..from].iter().map(|(_, e)| e));
        let got: Vec<ItemEvent> = mine.iter().map(|(_, e)| *e).collect();
        match before.decide(command) {
            Ok(want) if want == got => Ok(()),
            decided => Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "{command:?} on {item} appended {got:?} at version {}, but on {item} as it stood there \
                     ({before:?}) the command decides {decided:?}: the write was decided on a stale state \
                     and overwrote what came in between (a lost update)",
                    a.from_version + 1
                ),
            )),
        }
    }

    fn query_all(&mut self, ctx: &mut Ctx<HostedCqrsEvent>) -> Result<(), Violation> {
        let head = self.checker.head();
        for p in 0..PROJECTIONS {
            let (after, checkpoint) = {
                let run = self.run_mut()?;
                (run.service.query(p), run.service.checkpoint(p))
            };
            self.stats.queries += 1;
            let lag = head.saturating_sub(after.position);
            self.stats.lag_max = self.stats.lag_max.max(lag);
            self.lags.push((ctx.now(), p, lag));
            let checkpoint = checkpoint.filter(|_| self.white_box).unwrap_or(0);
            let before = std::mem::replace(&mut self.last[p], after.clone());
            self.checker
                .after_projection(p, &before, &after, checkpoint, None)?;
        }
        Ok(())
    }

    fn quiet(&self) -> bool {
        let head = self.checker.head();
        let Some(run) = self.run.as_ref() else {
            return false;
        };
        self.busy.iter().all(|b| !b)
            && (0..PROJECTIONS).all(|p| {
                run.service.query(p).position == head
                    && (!self.white_box || run.service.checkpoint(p).is_none_or(|c| c == head))
            })
    }
}

impl Rerun for CqrsTokioWorld {
    fn fresh(&self) -> Self {
        CqrsTokioWorld::new(self.knobs.clone(), Rc::clone(&self.factory))
            .with_white_box(self.white_box)
    }
}

impl World for CqrsTokioWorld {
    type Event = HostedCqrsEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<HostedCqrsEvent>) -> Result<(), Violation> {
        let mut host = TokioHost::new()
            .map_err(|e| Violation::new("sim.world", format!("no runtime: {e}")))?;
        let faults = Rc::new(RefCell::new(FaultState::new(
            ctx.plan().clone(),
            ctx.rng().fork("hosted.faults"),
        )));
        let log: Log = Rc::new(RefCell::new(Vec::new()));
        let store = Store {
            inner: Rc::new(RefCell::new(StoreInner {
                store: EventStore::new(),
                faults: Rc::clone(&faults),
                rng: ctx.rng().fork("cqrs-tokio.store"),
                think_ms: self.knobs.think_ms,
            })),
            log: Rc::clone(&log),
            clock: host.clock(),
        };
        let factory = Rc::clone(&self.factory);
        let knobs = self.knobs.clone();
        let service = host
            .block_on(async move { factory(&store, &knobs) })
            .map_err(|e| Violation::new("sim.world", format!("the code under test: {e}")))?;
        self.run = Some(Run {
            host,
            faults,
            log,
            service,
        });
        for c in 0..self.knobs.clients {
            self.schedule_command(ctx, c);
        }
        for (p, at) in self.knobs.rebuild_at_ms.iter().enumerate() {
            if let Some(at) = at {
                ctx.schedule_at(
                    SimTime::from_millis(*at),
                    HostedCqrsEvent::Rebuild { p: p as u32 },
                );
            }
        }
        ctx.schedule_in(TICK, HostedCqrsEvent::Tick);
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<HostedCqrsEvent>,
        event: HostedCqrsEvent,
    ) -> Result<(), Violation> {
        self.settle(ctx)?;
        match event {
            HostedCqrsEvent::Tick => {
                self.query_all(ctx)?;
                if ctx.now() < ctx.horizon() || !self.quiet() {
                    ctx.schedule_in(TICK, HostedCqrsEvent::Tick);
                }
            }
            HostedCqrsEvent::Rebuild { p } => {
                ctx.cover("cqrs.rebuild");
                ctx.record(projection_name(p as usize), "rebuild from scratch starts");
                self.run_mut()?.service.rebuild(p as usize);
            }
            HostedCqrsEvent::Command { client } => {
                self.schedule_command(ctx, client);
                if self.busy.get(client as usize).copied().unwrap_or(true) {
                    return Ok(());
                }
                let (item, command, legacy) = self.knobs.draw_command(&mut self.rng_commands);
                self.stats.commands += 1;
                self.busy[client as usize] = true;
                let run = self.run_mut()?;
                let answer = run.service.execute(item, command, legacy);
                let log = Rc::clone(&run.log);
                let clock = run.host.clock();
                run.host.spawn(async move {
                    let answer = answer.await;
                    log.borrow_mut().push((
                        clock.now(),
                        Obs::Answer {
                            client,
                            item,
                            command,
                            answer,
                        },
                    ));
                });
            }
        }
        Ok(())
    }

    fn on_fault(
        &mut self,
        ctx: &mut Ctx<HostedCqrsEvent>,
        edge: FaultEdge,
    ) -> Result<(), Violation> {
        self.settle(ctx)?;
        if edge.fault.kind.is_crash()
            && edge.started
            && let Some(p) = (0..PROJECTIONS).find(|p| projection_name(*p) == edge.fault.target)
        {
            ctx.record(projection_name(p), "crashed: volatile state lost");
            self.run_mut()?.service.crash(p);
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<HostedCqrsEvent>) -> Result<(), Violation> {
        self.settle(ctx)
    }

    fn is_quiescent(&self, ctx: &Ctx<HostedCqrsEvent>) -> bool {
        ctx.is_healed() && self.quiet()
    }

    fn finish(&mut self, ctx: &mut Ctx<HostedCqrsEvent>) -> Result<(), Violation> {
        self.settle(ctx)?;
        self.query_all(ctx)?;
        let want = StockView::fold(&self.checker.log);
        let head = self.checker.head();
        let run = self.run_mut()?;
        let views: Vec<(StockView, Option<u64>)> = (0..PROJECTIONS)
            .map(|p| (run.service.query(p), run.service.checkpoint(p)))
            .collect();
        for (p, (view, checkpoint)) in views.into_iter().enumerate() {
            if view != want {
                return Err(Violation::new(
                    CAUGHT_UP,
                    format!(
                        "at rest {}'s read model is {view:?}; the fold of the log is {want:?}",
                        projection_name(p)
                    ),
                ));
            }
            if let Some(c) = checkpoint.filter(|c| self.white_box && *c != head) {
                return Err(Violation::new(
                    CAUGHT_UP,
                    format!(
                        "at rest {}'s checkpoint is {c}, the log's head is {head}",
                        projection_name(p)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl CqrsTokioWorld {
    fn schedule_command(&mut self, ctx: &mut Ctx<HostedCqrsEvent>, client: u32) {
        let mean = 1_000_000_000 / u64::from(self.knobs.commands_per_sec.max(1));
        let next = ctx.now()
            + SimDuration::from_nanos(self.rng_commands.between(mean / 2, mean + mean / 2));
        if next < ctx.horizon() {
            ctx.schedule_at(next, HostedCqrsEvent::Command { client });
        }
    }
}

/// Runs `world` under `plan` twice (the determinism check), the one way the hosted CQRS
/// world is run.
pub fn run(
    world: CqrsTokioWorld,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, CqrsTokioWorld) {
    let sim = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(2_000_000)
        .liveness_max(SimDuration::from_secs(120))
        .replay_hint("cargo run --release -- replay cqrs-tokio --seed {seed}");
    crate::harness::hosted::simulate_twice(&sim, world)
}
