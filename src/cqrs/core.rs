//! The sans-IO parts of event sourcing, generic over the domain: the [`EventStore`]
//! (append-only streams with optimistic concurrency and a global log), the command side
//! ([`Aggregate`], [`Repository`] with snapshots), upcasting ([`Upcast`]), and the query
//! side ([`Projection`], [`ProjectionRunner`]: a catch-up subscription with a
//! checkpoint).
//!
//! None of them reads a clock or spawns a task; the tokio adapter and the simulated
//! world drive them.

use crate::config::ConfigError;
use std::collections::BTreeMap;
use std::fmt;

/// The identity of one stream (one aggregate instance).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream-{}", self.0)
    }
}

/// What an append expects of its stream (EventStoreDB's `expectedRevision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check: append at the end, whatever the stream holds.
    Any,
    /// The stream must have no event yet.
    NoStream,
    /// The stream's last event must have exactly this version (`Exact(0)` is
    /// [`NoStream`](ExpectedVersion::NoStream)).
    Exact(u64),
}

impl ExpectedVersion {
    /// True when a stream at `version` meets this expectation.
    pub fn admits(self, version: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => version == 0,
            ExpectedVersion::Exact(v) => v == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Why an append wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Optimistic concurrency: someone else appended first. Reload and decide again.
    #[error("conflict on {stream}: expected {expected}, but the stream is at version {actual}")]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append arrived.
        actual: u64,
    },
    /// An append must carry at least one event.
    #[error("an append to {stream} carried no event")]
    Empty {
        /// The stream.
        stream: StreamId,
    },
    /// An append may carry at most [`EventStore::batch_max`] events.
    #[error("an append of {len} events to {stream} exceeds the limit of {max}")]
    BatchTooLarge {
        /// The stream.
        stream: StreamId,
        /// Events in the append.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// What an accepted append wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appended {
    /// The stream's version before the append.
    pub from_version: u64,
    /// The stream's version after it (the version of its last event).
    pub to_version: u64,
    /// Global position of the first event written.
    pub first_position: u64,
    /// Global position of the last event written.
    pub last_position: u64,
}

/// One event as stored: its stream, version in the stream (1, 2, ...) and position in
/// the global log (1, 2, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded<E> {
    /// The stream.
    pub stream: StreamId,
    /// Version in the stream, from 1, without gaps.
    pub version: u64,
    /// Position in the global log, from 1, without gaps.
    pub position: u64,
    /// The event.
    pub event: E,
}

impl<E> Recorded<E> {
    /// The same record with its event mapped (e.g. upcast).
    pub fn map<F>(&self, f: impl FnOnce(&E) -> F) -> Recorded<F> {
        Recorded {
            stream: self.stream,
            version: self.version,
            position: self.position,
            event: f(&self.event),
        }
    }
}

/// Test-only defects of the reference parts (the mutants of the harness).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// None: the reference.
    #[default]
    None,
    /// (a) Events are pushed to projections after commit; no checkpoint, no catch-up.
    PushNoCheckpoint,
    /// (b) The checkpoint is written before the event is applied.
    CheckpointBeforeApply,
    /// (c) Appends skip the version check (last writer wins).
    NoVersionCheck,
    /// (d) Apply does not skip events it already applied.
    NonIdempotentApply,
    /// A snapshot holds the state one event before the version it claims.
    StaleSnapshot,
    /// A rebuild resets the live read model instead of building a new one beside it.
    RebuildInPlace,
    /// As [`CheckpointBeforeApply`](Flaw::CheckpointBeforeApply), and a query reports
    /// the read model at the checkpoint, ahead of what it applied.
    PositionAheadOfApply,
}

/// An in-memory event store: append-only streams with optimistic concurrency, and one
/// global log across them (positions 1, 2, ...), as EventStoreDB's `$all`.
///
/// Events are stored as given (`S`, possibly an old schema); readers
/// [upcast](Upcast) them.
///
/// ```
/// use faultline::cqrs::{AppendError, EventStore, ExpectedVersion, StreamId};
///
/// let mut store: EventStore<&str> = EventStore::new();
/// let cart = StreamId(1);
/// store.append(cart, ExpectedVersion::NoStream, vec!["opened"]).unwrap();
/// store.append(cart, ExpectedVersion::Exact(1), vec!["added", "added"]).unwrap();
/// // A writer that read the stream at version 1 lost the race: nothing is written.
/// let late = store.append(cart, ExpectedVersion::Exact(1), vec!["removed"]);
/// assert!(matches!(late, Err(AppendError::WrongExpectedVersion { actual: 3, .. })));
/// assert_eq!(store.version(cart), 3);
/// assert_eq!(store.head(), 3);
/// ```
#[derive(Clone, Debug)]
pub struct EventStore<S> {
    log: Vec<Recorded<S>>,
    /// Per stream: the global positions of its events, by version - 1.
    streams: BTreeMap<StreamId, Vec<u64>>,
    batch_max: usize,
    pub(crate) flaw: Flaw,
}

impl<S> Default for EventStore<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> EventStore<S> {
    /// Most events one append may carry by default.
    pub const BATCH_MAX_DEFAULT: usize = 1_024;

    /// An empty store.
    pub fn new() -> Self {
        EventStore {
            log: Vec::new(),
            streams: BTreeMap::new(),
            batch_max: Self::BATCH_MAX_DEFAULT,
            flaw: Flaw::None,
        }
    }

    /// An empty store whose appends carry at most `batch_max` events.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on `batch_max` when it is zero.
    pub fn with_batch_max(batch_max: usize) -> Result<Self, ConfigError> {
        if batch_max == 0 {
            return Err(ConfigError::new("batch_max", "must be at least 1, got 0"));
        }
        Ok(EventStore {
            batch_max,
            ..Self::new()
        })
    }

    /// Most events one append may carry.
    pub fn batch_max(&self) -> usize {
        self.batch_max
    }

    /// Position of the last event in the global log (0 when empty).
    pub fn head(&self) -> u64 {
        self.log.len() as u64
    }

    /// Version of `stream`'s last event (0 when it has none).
    pub fn version(&self, stream: StreamId) -> u64 {
        self.streams.get(&stream).map_or(0, |v| v.len() as u64)
    }

    /// The streams that have events, in id order.
    pub fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams.keys().copied()
    }

    /// Appends `events` to `stream` if it is at the `expected` version: all of them,
    /// with consecutive versions and positions, or none.
    ///
    /// # Errors
    ///
    /// [`AppendError::WrongExpectedVersion`] when another writer got there first;
    /// [`AppendError::Empty`] and [`AppendError::BatchTooLarge`] on the size. Nothing
    /// is written on any error.
    pub fn append<I>(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: I,
    ) -> Result<Appended, AppendError>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: ExactSizeIterator,
    {
        let events = events.into_iter();
        let len = events.len();
        if len == 0 {
            return Err(AppendError::Empty { stream });
        }
        if len > self.batch_max {
            return Err(AppendError::BatchTooLarge {
                stream,
                len,
                max: self.batch_max,
            });
        }
        let actual = self.version(stream);
        if !expected.admits(actual) && self.flaw != Flaw::NoVersionCheck {
            return Err(AppendError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            });
        }
        let positions = self.streams.entry(stream).or_default();
        let first_position = self.log.len() as u64 + 1;
        positions.reserve(len);
        self.log.reserve(len);
        for event in events.take(len) {
            let position = self.log.len() as u64 + 1;
            positions.push(position);
            self.log.push(Recorded {
                stream,
                version: positions.len() as u64,
                position,
                event,
            });
        }
        Ok(Appended {
            from_version: actual,
            to_version: positions.len() as u64,
            first_position,
            last_position: self.log.len() as u64,
        })
    }

    /// `stream`'s events with version `from_version` or later, in version order.
    pub fn read_stream(
        &self,
        stream: StreamId,
        from_version: u64,
    ) -> impl Iterator<Item = &Recorded<S>> + '_ {
        let positions = self.streams.get(&stream).map_or(&[][..], Vec::as_slice);
        let skip = from_version.saturating_sub(1) as usize;
        positions
            .iter()
            .skip(skip)
            .filter_map(|p| self.log.get((*p - 1) as usize))
    }

    /// Up to `max` events of the global log after position `after`, in order.
    pub fn read_all(&self, after: u64, max: usize) -> &[Recorded<S>] {
        let from = (after as usize).min(self.log.len());
        let to = from.saturating_add(max).min(self.log.len());
        &self.log[from..to]
    }

    /// The event at global `position`, if written.
    pub fn get(&self, position: u64) -> Option<&Recorded<S>> {
        position
            .checked_sub(1)
            .and_then(|i| self.log.get(i as usize))
    }
}

/// An event as stored, possibly in an older schema, read as the current one.
///
/// The current event type upcasts to itself; an enum of every schema ever written
/// upcasts each old variant (as Marten's and Axon's upcasters do, on read, never
/// rewriting the log).
pub trait Upcast {
    /// The current event type.
    type Current;
    /// The schema version this event was written in.
    fn schema_version(&self) -> u32;
    /// The event in the current schema.
    fn upcast(&self) -> Self::Current;
}

/// An aggregate: state folded from its events, which decides the events a command
/// produces (or rejects it, producing none).
pub trait Aggregate: Clone + Default + fmt::Debug + PartialEq {
    /// A request to change the aggregate.
    type Command: fmt::Debug;
    /// What happened to it.
    type Event: Clone + fmt::Debug;
    /// Why a command was refused.
    type Rejection: std::error::Error;

    /// The events `command` produces from this state, or why it is refused. Must not
    /// change the state (applying the events does that).
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// The state after `event`.
    fn apply(&mut self, event: &Self::Event);

    /// `self` after every event of `events`, in order.
    fn fold<'a>(mut self, events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        for e in events {
            self.apply(e);
        }
        self
    }
}

/// An aggregate's state as of a version, saved so rehydration need not fold every event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot<A> {
    /// The version the state is as of.
    pub version: u64,
    /// The state after events 1..=version.
    pub state: A,
}

/// An aggregate loaded from its stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rehydrated<A> {
    /// The state.
    pub state: A,
    /// The stream's version the state is as of.
    pub version: u64,
    /// The version of the snapshot it started from, if one was used.
    pub snapshot_version: Option<u64>,
    /// Events folded on top of the snapshot (or from the start).
    pub folded: u64,
    /// Events read in an old schema and upcast.
    pub upcast: u64,
}

/// Why a command wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<R: std::error::Error> {
    /// The aggregate refused it; no event was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] R),
    /// The append failed (a conflict: reload and decide again); no event was written.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// What an accepted command did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Executed<E> {
    /// Where the events went.
    pub appended: Appended,
    /// The events, as decided.
    pub events: Vec<E>,
    /// The version of the snapshot taken after it, if one was due.
    pub snapshot: Option<u64>,
}

/// The command side of one aggregate type: an [`EventStore`] of its streams, snapshots
/// every `snapshot_every` events, and command execution with optimistic concurrency.
///
/// ```
/// use faultline::cqrs::{ExecuteError, ExpectedVersion, Item, ItemCommand, Repository, StreamId};
///
/// let mut repo = Repository::<Item>::new(2).unwrap();
/// let item = StreamId(7);
/// repo.execute(item, &ItemCommand::Restock { units: 10 }).unwrap();
/// repo.execute(item, &ItemCommand::Withdraw { units: 4 }).unwrap();
/// // Refused by the aggregate: nothing is appended.
/// let refused = repo.execute(item, &ItemCommand::Withdraw { units: 50 });
/// assert!(matches!(refused, Err(ExecuteError::Rejected(_))));
/// let loaded = repo.rehydrate(item);
/// assert_eq!(loaded.state.stock, 6);
/// assert_eq!(loaded.snapshot_version, Some(2)); // snapshot every 2 events
/// ```
#[derive(Clone, Debug)]
pub struct Repository<A: Aggregate, S = <A as Aggregate>::Event> {
    store: EventStore<S>,
    snapshots: BTreeMap<StreamId, Snapshot<A>>,
    snapshot_every: u64,
    pub(crate) flaw: Flaw,
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: Upcast<Current = A::Event> + Clone,
{
    /// A repository that snapshots a stream every `snapshot_every` events.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on `snapshot_every` when it is zero.
    pub fn new(snapshot_every: u64) -> Result<Self, ConfigError> {
        if snapshot_every == 0 {
            return Err(ConfigError::new(
                "snapshot_every",
                "must be at least 1, got 0",
            ));
        }
        Ok(Repository {
            store: EventStore::new(),
            snapshots: BTreeMap::new(),
            snapshot_every,
            flaw: Flaw::None,
        })
    }

    /// Gives the repository and its store a defect (the mutants).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn set_flaw(&mut self, flaw: Flaw) {
        self.flaw = flaw;
        self.store.flaw = flaw;
    }

    /// The event store.
    pub fn store(&self) -> &EventStore<S> {
        &self.store
    }

    /// Events between snapshots.
    pub fn snapshot_every(&self) -> u64 {
        self.snapshot_every
    }

    /// The latest snapshot of `stream`.
    pub fn snapshot(&self, stream: StreamId) -> Option<&Snapshot<A>> {
        self.snapshots.get(&stream)
    }

    /// Loads `stream`: its latest snapshot, then the events after it, upcast.
    pub fn rehydrate(&self, stream: StreamId) -> Rehydrated<A> {
        let (mut state, from, snapshot_version) = match self.snapshots.get(&stream) {
            Some(s) => (s.state.clone(), s.version, Some(s.version)),
            None => (A::default(), 0, None),
        };
        let mut version = from;
        let mut folded = 0;
        let mut upcast = 0;
        for r in self.store.read_stream(stream, from + 1) {
            if r.event.schema_version() != CURRENT_SCHEMA {
                upcast += 1;
            }
            state.apply(&r.event.upcast());
            version = r.version;
            folded += 1;
        }
        Rehydrated {
            state,
            version,
            snapshot_version,
            folded,
            upcast,
        }
    }

    /// Appends `events` (already decided) to `stream` at `expected`; see
    /// [`EventStore::append`].
    ///
    /// # Errors
    ///
    /// As [`EventStore::append`].
    pub fn append<I>(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: I,
    ) -> Result<Appended, AppendError>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: ExactSizeIterator,
    {
        self.store.append(stream, expected, events)
    }

    /// Saves a snapshot of `stream` if `snapshot_every` events were written since the
    /// last one; returns its version.
    pub fn snapshot_if_due(&mut self, stream: StreamId) -> Option<u64> {
        let since = self.snapshots.get(&stream).map_or(0, |s| s.version);
        if self.store.version(stream) < since.saturating_add(self.snapshot_every) {
            return None;
        }
        let loaded = self.rehydrate(stream);
        let state = if self.flaw == Flaw::StaleSnapshot {
            // The state one event short of the version it claims.
            A::default().fold(
                self.store
                    .read_stream(stream, 1)
                    .take(loaded.version.saturating_sub(1) as usize)
                    .map(|r| r.event.upcast())
                    .collect::<Vec<_>>()
                    .iter(),
            )
        } else {
            loaded.state
        };
        self.snapshots.insert(
            stream,
            Snapshot {
                version: loaded.version,
                state,
            },
        );
        Some(loaded.version)
    }

    /// Loads `stream`, decides `command`, appends its events at the version loaded
    /// (all or none), and snapshots if due.
    ///
    /// # Errors
    ///
    /// [`ExecuteError::Rejected`] when the aggregate refuses (nothing written);
    /// [`ExecuteError::Append`] on a conflict (nothing written: reload and retry).
    pub fn execute(
        &mut self,
        stream: StreamId,
        command: &A::Command,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Rejection>>
    where
        S: From<A::Event>,
    {
        let loaded = self.rehydrate(stream);
        let events = loaded
            .state
            .decide(command)
            .map_err(ExecuteError::Rejected)?;
        self.commit(stream, ExpectedVersion::Exact(loaded.version), events)
    }

    /// Appends decided `events` at `expected` and snapshots if due. A command that
    /// decided no event appends nothing and succeeds with an empty range.
    ///
    /// # Errors
    ///
    /// [`ExecuteError::Append`] on a conflict.
    pub fn commit(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<A::Event>,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Rejection>>
    where
        S: From<A::Event>,
    {
        if events.is_empty() {
            let v = self.store.version(stream);
            let h = self.store.head();
            return Ok(Executed {
                appended: Appended {
                    from_version: v,
                    to_version: v,
                    first_position: h + 1,
                    last_position: h,
                },
                events,
                snapshot: None,
            });
        }
        let stored = events.iter().cloned().map(S::from);
        let appended = self.store.append(stream, expected, stored)?;
        let snapshot = self.snapshot_if_due(stream);
        Ok(Executed {
            appended,
            events,
            snapshot,
        })
    }
}

/// The schema version of events written by this code.
pub const CURRENT_SCHEMA: u32 = 2;

/// A read model kept by following the global log.
pub trait Projection: Clone + Default + fmt::Debug + PartialEq {
    /// The (current-schema) events it reads.
    type Event;

    /// Position of the last event applied (0 when none).
    fn position(&self) -> u64;

    /// Applies `record` (its position is greater than [`position`](Projection::position))
    /// and advances the position to it.
    fn apply(&mut self, record: &Recorded<Self::Event>);
}

/// What one [`ProjectionRunner::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Applied (or, already applied, skipped) the event at this position.
    Applied {
        /// Its position.
        position: u64,
        /// It was at or below the read model's position: a replay, skipped.
        replay: bool,
    },
    /// Wrote the checkpoint at this position.
    Checkpointed {
        /// The checkpoint.
        position: u64,
    },
    /// A rebuild caught up and its read model replaced the live one.
    Swapped {
        /// The new read model's position.
        position: u64,
    },
    /// Nothing to do: caught up with the log and checkpointed.
    Idle,
}

/// A catch-up subscription: it follows the global log from its checkpoint, applies each
/// event to its read model, and writes the checkpoint every `checkpoint_every` events
/// (and when caught up). The read model and the checkpoint are durable but written
/// separately, so after a crash the runner replays from the checkpoint and the read
/// model skips what it already applied (idempotent by position).
///
/// Call order: [`handle_delivery`](Self::handle_delivery) when an event is pushed (a
/// fast path, may be duplicated or late), [`step`](Self::step) until it returns
/// [`Step::Idle`] (each step does one thing, so a crash can fall between apply and
/// checkpoint), [`crash`](Self::crash) and [`rebuild`](Self::rebuild) as they happen.
#[derive(Clone, Debug)]
pub struct ProjectionRunner<P: Projection> {
    /// Durable: the read model queries see.
    live: P,
    /// Durable: every event up to here is applied to `live`.
    checkpoint: u64,
    /// Volatile: next event is after this position.
    cursor: u64,
    since_checkpoint: u64,
    checkpoint_every: u64,
    /// Volatile: a read model being rebuilt from scratch beside the live one.
    shadow: Option<P>,
    pending_checkpoint: Option<u64>,
    pub(crate) flaw: Flaw,
}

impl<P: Projection> ProjectionRunner<P> {
    /// A runner from an empty read model, checkpointing every `checkpoint_every` events.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on `checkpoint_every` when it is zero.
    pub fn new(checkpoint_every: u64) -> Result<Self, ConfigError> {
        if checkpoint_every == 0 {
            return Err(ConfigError::new(
                "checkpoint_every",
                "must be at least 1, got 0",
            ));
        }
        Ok(ProjectionRunner {
            live: P::default(),
            checkpoint: 0,
            cursor: 0,
            since_checkpoint: 0,
            checkpoint_every,
            shadow: None,
            pending_checkpoint: None,
            flaw: Flaw::None,
        })
    }

    /// The read model queries see.
    pub fn read_model(&self) -> &P {
        &self.live
    }

    /// Whether a query reports the read model at its checkpoint (a mutant's defect).
    pub(crate) fn reports_checkpoint_as_position(&self) -> bool {
        self.flaw == Flaw::PositionAheadOfApply
    }

    /// The durable checkpoint.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// True while a rebuild runs.
    pub fn rebuilding(&self) -> bool {
        self.shadow.is_some()
    }

    fn apply_live(&mut self, record: &Recorded<P::Event>) -> bool {
        let replay = record.position <= self.live.position();
        if !replay || self.flaw == Flaw::NonIdempotentApply {
            self.live.apply(record);
        }
        replay
    }

    /// An event pushed after its commit. Applied at once when it is the next one; a
    /// duplicate is handed to the read model (which skips it); one ahead of a gap is
    /// left for [`step`](Self::step) to read from the log. Returns whether it was
    /// the next event.
    pub fn handle_delivery(&mut self, record: &Recorded<P::Event>) -> bool {
        if self.flaw == Flaw::PushNoCheckpoint {
            self.apply_live(record);
            return true;
        }
        if self.shadow.is_some() || record.position > self.cursor + 1 {
            return false;
        }
        self.apply_live(record);
        if record.position == self.cursor + 1 {
            self.cursor = record.position;
            self.since_checkpoint += 1;
            return true;
        }
        false
    }

    /// Does the next thing: write a due checkpoint, apply the next event from `store`,
    /// advance a rebuild, or nothing.
    pub fn step<S>(&mut self, store: &EventStore<S>) -> Step
    where
        S: Upcast<Current = P::Event>,
    {
        if self.flaw == Flaw::PushNoCheckpoint {
            return Step::Idle;
        }
        if let Some(position) = self.pending_checkpoint.take() {
            // CheckpointBeforeApply: the apply that should have come first.
            if let Some(r) = store.get(position) {
                let replay = self.apply_live(&r.map(Upcast::upcast));
                return Step::Applied { position, replay };
            }
        }
        if let Some(shadow) = self.shadow.as_mut() {
            let target = self.live.position();
            if shadow.position() >= target {
                let position = shadow.position();
                self.live = shadow.clone();
                self.shadow = None;
                self.checkpoint = position;
                self.cursor = position;
                self.since_checkpoint = 0;
                return Step::Swapped { position };
            }
            if let Some(r) = store.read_all(shadow.position(), 1).first() {
                let position = r.position;
                shadow.apply(&r.map(Upcast::upcast));
                return Step::Applied {
                    position,
                    replay: false,
                };
            }
        }
        let next = store.read_all(self.cursor, 1).first();
        let due = self.since_checkpoint >= self.checkpoint_every
            || (next.is_none() && self.checkpoint < self.cursor);
        if due {
            self.checkpoint = self.cursor;
            self.since_checkpoint = 0;
            return Step::Checkpointed {
                position: self.checkpoint,
            };
        }
        let Some(r) = next else {
            return Step::Idle;
        };
        let position = r.position;
        self.cursor = position;
        self.since_checkpoint += 1;
        if self.flaw == Flaw::CheckpointBeforeApply || self.flaw == Flaw::PositionAheadOfApply {
            self.checkpoint = position;
            self.since_checkpoint = 0;
            self.pending_checkpoint = Some(position);
            return Step::Checkpointed { position };
        }
        let replay = self.apply_live(&r.map(Upcast::upcast));
        Step::Applied { position, replay }
    }

    /// The runner crashed and restarted: what was volatile is gone; it resumes after the
    /// durable checkpoint (replaying what the read model may already hold).
    pub fn crash(&mut self) {
        self.cursor = self.checkpoint;
        self.since_checkpoint = 0;
        self.shadow = None;
        self.pending_checkpoint = None;
    }

    /// Starts rebuilding the read model from scratch: a new one follows the log from
    /// position 0 beside the live one, which keeps serving queries until the new one
    /// has caught up with it and replaces it (so no query sees the model go back).
    pub fn rebuild(&mut self) {
        if self.flaw == Flaw::RebuildInPlace {
            self.live = P::default();
            self.checkpoint = 0;
            self.cursor = 0;
            self.since_checkpoint = 0;
            return;
        }
        if self.flaw == Flaw::PushNoCheckpoint {
            return;
        }
        self.shadow = Some(P::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Count {
        position: u64,
        sum: u64,
    }

    impl Upcast for u64 {
        type Current = u64;
        fn schema_version(&self) -> u32 {
            CURRENT_SCHEMA
        }
        fn upcast(&self) -> u64 {
            *self
        }
    }

    impl Projection for Count {
        type Event = u64;
        fn position(&self) -> u64 {
            self.position
        }
        fn apply(&mut self, r: &Recorded<u64>) {
            self.sum += r.event;
            self.position = r.position;
        }
    }

    fn drain(r: &mut ProjectionRunner<Count>, s: &EventStore<u64>) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..1_000 {
            let st = r.step(s);
            steps.push(st);
            if st == Step::Idle {
                break;
            }
        }
        steps
    }

    #[test]
    fn versions_and_positions_have_no_gaps() {
        let mut s = EventStore::new();
        let a = s
            .append(StreamId(1), ExpectedVersion::NoStream, vec![1u64, 2])
            .unwrap();
        let b = s
            .append(StreamId(2), ExpectedVersion::Any, vec![3u64])
            .unwrap();
        let c = s
            .append(StreamId(1), ExpectedVersion::Exact(2), vec![4u64])
            .unwrap();
        assert_eq!((a.first_position, a.last_position, a.to_version), (1, 2, 2));
        assert_eq!((b.first_position, b.to_version), (3, 1));
        assert_eq!((c.from_version, c.to_version, c.last_position), (2, 3, 4));
        let v: Vec<_> = s
            .read_stream(StreamId(1), 1)
            .map(|r| (r.version, r.position))
            .collect();
        assert_eq!(v, vec![(1, 1), (2, 2), (3, 4)]);
        assert_eq!(
            s.append(StreamId(2), ExpectedVersion::NoStream, vec![5]),
            Err(AppendError::WrongExpectedVersion {
                stream: StreamId(2),
                expected: ExpectedVersion::NoStream,
                actual: 1
            })
        );
        assert_eq!(
            s.append(StreamId(2), ExpectedVersion::Any, vec![]),
            Err(AppendError::Empty {
                stream: StreamId(2)
            })
        );
        assert_eq!(s.head(), 4);
        assert!(EventStore::<u64>::with_batch_max(0).is_err());
        let mut small = EventStore::with_batch_max(1).unwrap();
        assert!(matches!(
            small.append(StreamId(1), ExpectedVersion::Any, vec![1u64, 2]),
            Err(AppendError::BatchTooLarge { len: 2, max: 1, .. })
        ));
    }

    #[test]
    fn runner_replays_after_a_crash_without_double_applying() {
        let mut s = EventStore::new();
        for i in 1..=10u64 {
            s.append(StreamId(1), ExpectedVersion::Any, vec![i])
                .unwrap();
        }
        let mut r = ProjectionRunner::<Count>::new(4).unwrap();
        // Apply 5 events: checkpoint at 4, the 5th applied but not checkpointed.
        let mut applied = 0;
        while applied < 5 {
            if let Step::Applied { .. } = r.step(&s) {
                applied += 1;
            }
        }
        assert_eq!(r.checkpoint(), 4);
        assert_eq!(r.read_model().position, 5);
        r.crash();
        let steps = drain(&mut r, &s);
        assert!(steps.contains(&Step::Applied {
            position: 5,
            replay: true
        }));
        assert_eq!(r.read_model().sum, 55);
        assert_eq!(r.checkpoint(), 10);
    }

    #[test]
    fn deliveries_fast_path_duplicates_and_gaps() {
        let mut s = EventStore::new();
        for i in 1..=3u64 {
            s.append(StreamId(1), ExpectedVersion::Any, vec![i])
                .unwrap();
        }
        let mut r = ProjectionRunner::<Count>::new(100).unwrap();
        let rec = |p: u64| s.get(p).unwrap().clone();
        assert!(r.handle_delivery(&rec(1)));
        assert!(!r.handle_delivery(&rec(1)), "a duplicate");
        assert!(!r.handle_delivery(&rec(3)), "a gap");
        assert_eq!(r.read_model().sum, 1);
        drain(&mut r, &s);
        assert_eq!(r.read_model().sum, 6);
        assert_eq!(r.checkpoint(), 3);
    }

    #[test]
    fn rebuild_never_shows_an_older_model() {
        let mut s = EventStore::new();
        for i in 1..=6u64 {
            s.append(StreamId(1), ExpectedVersion::Any, vec![i])
                .unwrap();
        }
        let mut r = ProjectionRunner::<Count>::new(2).unwrap();
        drain(&mut r, &s);
        r.rebuild();
        let mut seen = r.read_model().position;
        for _ in 0..100 {
            let st = r.step(&s);
            assert!(r.read_model().position >= seen);
            seen = r.read_model().position;
            if st == Step::Idle {
                break;
            }
        }
        assert!(!r.rebuilding());
        assert_eq!(r.read_model().sum, 21);
    }
}
