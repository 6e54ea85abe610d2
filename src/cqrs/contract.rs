//! The contract the simulated world drives: [`EventSourced`], the write side (an event
//! store with snapshots) and the read side (projection runners) of the inventory. The
//! reference [`Inventory`] implements it; so can your own store and projections, which
//! then get the invariants, the fault plans, shrinking and the reports.
//!
//! The world plays the clients (load, decide, append at the version loaded), the
//! dispatcher that pushes committed events to the projections over a faulty link, the
//! crashes, the rebuilds and the queries.

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
            .map(|r| r.read_model().clone())
            .unwrap_or_default()
    }
    fn checkpoint(&self, p: usize) -> u64 {
        self.runners.get(p).map_or(0, ProjectionRunner::checkpoint)
    }
}
