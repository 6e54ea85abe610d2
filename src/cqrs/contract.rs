//! The contract the simulated world drives: [`EventSourced`], the write side (an event
//! store with snapshots) and the read side (projection runners) of the inventory. The
//! reference [`Inventory`] implements it; so can your own store and projections, which
//! then get the invariants, the fault plans, shrinking and the reports.
//!
//! The world plays the clients (load, decide, append at the version loaded), the
//! dispatcher that pushes committed events to the projections over a faulty link, the
//! crashes, the rebuilds and the queries.
//!
//! # What the world observes, and what it trusts
//!
//! The world keeps its own ledger of every append it got `Ok` for (the events, their
#![cfg_attr(
    feature = "sim",
    doc = "versions and positions: [`CqrsChecker`](crate::cqrs::invariants::CqrsChecker)), and"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "versions and positions: `CqrsChecker`, in `cqrs::invariants`, feature `sim`), and"
)]
//! compares what the system reports with it. Per method:
//!
//! | method | observed or trusted | why |
//! |---|---|---|
//! | [`append`](EventSourced::append) | observed: an `Ok` must follow the versions and positions the ledger expects (no two commands that loaded the same version both append, no gap), and enters the ledger; a conflict must be one the ledger admits (`cqrs.no_lost_write`) | the ledger is the world's record of what was acknowledged |
//! | [`rehydrate`](EventSourced::rehydrate) | compared at every load: state and version equal the fold of the ledger's events of the item (`cqrs.snapshot_fold`); `folded`, `upcast` and `snapshot_version` feed figures and coverage only | |
//! | [`read_stream`](EventSourced::read_stream), [`read_all`](EventSourced::read_all) | compared at rest with the ledger, event by event (`cqrs.no_lost_write`); the dispatcher pushes events from the ledger, not from `read_all` | a store that drops an acknowledged append is caught however consistent its own head is |
//! | [`head`](EventSourced::head) | not read: the log's head is the ledger's | |
//! | [`query`](EventSourced::query) | compared at every step: a read model reporting position `n` must be the fold of the ledger's events 1..=`n` (`cqrs.caught_up`), its position never go back (`cqrs.monotonic_reads`), and at rest equal the fold of the whole ledger | the position is a self-report: trusted, a read model claiming events it had not applied made the checkpoint check pass and its late apply look like a replay (mutant `position_ahead_of_apply`: caught on 500/500 seeds before, all 500 as `cqrs.idempotent_replay`; after, all 500 as `cqrs.caught_up`) |
//! | [`checkpoint`](EventSourced::checkpoint) | compared: never past the read model's position (itself checked against the ledger), and at rest the ledger's head (`cqrs.caught_up`) | a checkpoint is only the projection's say; the ledger says what it may say |
//! | [`step`](EventSourced::step) | its report only labels the trace and tells the world when a projection is idle (the run may then stop); a re-applied event is checked for no change (`cqrs.idempotent_replay`), and any change the report hides breaks the fold check above | stopping early cannot hide a lag: at rest every read model is compared with the ledger |
//! | [`deliver`](EventSourced::deliver), [`crash`](EventSourced::crash), [`rebuild`](EventSourced::rebuild), [`snapshot_if_due`](EventSourced::snapshot_if_due) | inputs the world gives; a snapshot is judged by the next load | |
//! | [`projections`](EventSourced::projections) | trusted for how many read models there are | the world must know how many to drive |

use crate::config::ConfigError;
use crate::cqrs::core::{
    AppendError, Appended, ExpectedVersion, ProjectionRunner, Recorded, Rehydrated, Repository,
    Step, StreamId, Upcast,
};
use crate::cqrs::item::{Item, ItemEvent, StockView, StoredEvent};

/// An event-sourced inventory the world can drive.
pub trait EventSourced {
    /// Loads `item`: from its latest snapshot, if any, then the later events, upcast.
    fn rehydrate(&self, item: StreamId) -> Rehydrated<Item>;
    /// Every event of `item` from version 1, upcast.
    fn read_stream(&self, item: StreamId) -> Vec<Recorded<ItemEvent>>;
    /// Appends `events` to `item` if it is at `expected`: all or none.
    ///
    /// # Errors
    ///
    /// [`AppendError::WrongExpectedVersion`] on a conflict.
    fn append(
        &mut self,
        item: StreamId,
        expected: ExpectedVersion,
        events: Vec<StoredEvent>,
    ) -> Result<Appended, AppendError>;
    /// Saves a snapshot of `item` if one is due; returns its version.
    fn snapshot_if_due(&mut self, item: StreamId) -> Option<u64>;
    /// The global log's last position.
    fn head(&self) -> u64;
    /// The whole global log, upcast.
    fn read_all(&self) -> Vec<Recorded<ItemEvent>>;
    /// How many projections run.
    fn projections(&self) -> usize;
    /// A committed event pushed to projection `p` (possibly duplicated or late).
    fn deliver(&mut self, p: usize, record: &Recorded<ItemEvent>);
    /// Projection `p` does its next thing.
    fn step(&mut self, p: usize) -> Step;
    /// Projection `p` crashed and restarts: its volatile state is gone.
    fn crash(&mut self, p: usize);
    /// Projection `p` rebuilds its read model from scratch.
    fn rebuild(&mut self, p: usize);
    /// Projection `p`'s read model, as a query sees it.
    fn query(&self, p: usize) -> StockView;
    /// Projection `p`'s durable checkpoint.
    fn checkpoint(&self, p: usize) -> u64;
}

/// The reference: a [`Repository`] of items over one event store, and projection
/// runners that keep [`StockView`]s.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// The write side.
    pub repository: Repository<Item, StoredEvent>,
    /// The read side.
    pub runners: Vec<ProjectionRunner<StockView>>,
}

impl Inventory {
    /// An inventory snapshotting every `snapshot_every` events, with one projection
    /// per entry of `checkpoint_every`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `snapshot_every` or a `checkpoint_every` is zero.
    pub fn new(snapshot_every: u64, checkpoint_every: &[u64]) -> Result<Self, ConfigError> {
        Ok(Inventory {
            repository: Repository::new(snapshot_every)?,
            runners: checkpoint_every
                .iter()
                .map(|k| ProjectionRunner::new(*k))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl EventSourced for Inventory {
    fn rehydrate(&self, item: StreamId) -> Rehydrated<Item> {
        self.repository.rehydrate(item)
    }
    fn read_stream(&self, item: StreamId) -> Vec<Recorded<ItemEvent>> {
        self.repository
            .store()
            .read_stream(item, 1)
            .map(|r| r.map(Upcast::upcast))
            .collect()
    }
    fn append(
        &mut self,
        item: StreamId,
        expected: ExpectedVersion,
        events: Vec<StoredEvent>,
    ) -> Result<Appended, AppendError> {
        self.repository.append(item, expected, events)
    }
    fn snapshot_if_due(&mut self, item: StreamId) -> Option<u64> {
        self.repository.snapshot_if_due(item)
    }
    fn head(&self) -> u64 {
        self.repository.store().head()
    }
    fn read_all(&self) -> Vec<Recorded<ItemEvent>> {
        self.repository
            .store()
            .read_all(0, usize::MAX)
            .iter()
            .map(|r| r.map(Upcast::upcast))
            .collect()
    }
    fn projections(&self) -> usize {
        self.runners.len()
    }
    fn deliver(&mut self, p: usize, record: &Recorded<ItemEvent>) {
        if let Some(r) = self.runners.get_mut(p) {
            r.handle_delivery(record);
        }
    }
    fn step(&mut self, p: usize) -> Step {
        match self.runners.get_mut(p) {
            Some(r) => r.step(self.repository.store()),
            None => Step::Idle,
        }
    }
    fn crash(&mut self, p: usize) {
        if let Some(r) = self.runners.get_mut(p) {
            r.crash();
        }
    }
    fn rebuild(&mut self, p: usize) {
        if let Some(r) = self.runners.get_mut(p) {
            r.rebuild();
        }
    }
    fn query(&self, p: usize) -> StockView {
        self.runners
            .get(p)
            .map(|r| {
                let mut view = r.read_model().clone();
                if r.reports_checkpoint_as_position() {
                    view.position = view.position.max(r.checkpoint());
                }
                view
            })
            .unwrap_or_default()
    }
    fn checkpoint(&self, p: usize) -> u64 {
        self.runners.get(p).map_or(0, ProjectionRunner::checkpoint)
    }
}
