//! Where the events live: the [`EventStorage`] trait (streams with optimistic
//! concurrency, the global log, snapshots), the [`CheckpointStore`] of projections, a
//! durable command path over them ([`StoredRepository`]), and their stores.
//!
//! - [`MemoryEvents`]: today's in-memory [`EventStore`] behind a mutex, with snapshots
//!   and checkpoints beside it; clones share it. Survives a dropped handle, not a
//!   process.
#![cfg_attr(
    feature = "sqlite",
    doc = "- [`sqlite::SqliteEvents`] (feature `sqlite`): one file, one writer at a time."
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "- `sqlite::SqliteEvents` (feature `sqlite`): one file, one writer at a time."
)]
#![cfg_attr(
    feature = "postgres",
    doc = "- [`postgres::PostgresEvents`] (feature `postgres`): many processes on many machines."
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "- `postgres::PostgresEvents` (feature `postgres`): many processes on many machines."
)]
//!
//! Every store passes the same [`conformance`] suite. On both databases the version
//! check is the database's: `(stream, version)` is the primary key of the events
//! table, so two writers appending at the same expected version cannot both commit;
//! and every append takes one lock (SQLite's write lock, a head row on Postgres) for
//! its transaction, so positions are handed out and **committed in position order**: a
//! reader that saw position `p` will never later see a new event below `p`, which is
//! what lets a projection resume after its checkpoint without skipping anything.
//!
//! Exactly-once projections, when the read model lives in the same database as the
#![cfg_attr(
    feature = "sqlite",
    doc = "events: [`sqlite::SqliteProjector`] (feature `sqlite`) and"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "events: `sqlite::SqliteProjector` (feature `sqlite`) and"
)]
#![cfg_attr(
    feature = "postgres",
    doc = "[`postgres::PostgresProjector`] (feature `postgres`) hand your"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "`postgres::PostgresProjector` (feature `postgres`) hand your"
)]
//! code the open transaction with the events after the stored checkpoint, and commit
//! your read-model change and the new checkpoint together.
//!
//! ```
//! use faultline::cqrs::store::{EventStorage, MemoryEvents, StoredRepository};
//! use faultline::cqrs::{Item, ItemCommand, StoredEvent, StreamId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `SqliteEvents::open(path)?` or `PostgresEvents::connect(url)?` in production.
//! let store = MemoryEvents::<StoredEvent>::new();
//! let mut repo = StoredRepository::<Item, StoredEvent, _>::new(store.clone(), 10, 5)?;
//! repo.execute(StreamId(1), &ItemCommand::Restock { units: 8 })??;
//! repo.execute(StreamId(1), &ItemCommand::Withdraw { units: 5 })??;
//! assert_eq!(repo.rehydrate(StreamId(1))?.state.stock, 3);
//! assert_eq!(store.clone().head()?, 3); // restock, withdraw, low stock
//! # Ok(())
//! # }
//! ```

pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ConfigError;
use crate::cqrs::core::{
    Aggregate, AppendError, Appended, CURRENT_SCHEMA, EventStore, ExecuteError, Executed,
    ExpectedVersion, Recorded, Rehydrated, Snapshot, StreamId, Upcast,
};
use crate::store::StoreError;

/// Most events one append may carry, in every store ([`EventStore::BATCH_MAX_DEFAULT`]).
pub const BATCH_MAX: usize = EventStore::<()>::BATCH_MAX_DEFAULT;

/// A durable event store: append-only streams with optimistic concurrency, one global
/// log across them, and the latest snapshot of each stream. Events are `S` (on the
/// databases: serde types stored as JSON text).
///
/// The promises, checked by the [`conformance`] suite:
///
/// - an append writes all of its events or none, with consecutive versions in its
///   stream (from 1, without gaps) and consecutive positions in the global log (from
///   1, without gaps), and only if the stream is at the expected version;
/// - two appends at the same expected version: one wins, the other gets
///   [`AppendError::WrongExpectedVersion`] and writes nothing, even from two machines;
/// - positions are committed in position order: once [`read_all`](Self::read_all)
///   returned position `p`, no later read finds a new event at a position below `p`;
/// - an append is durable when it returns `Ok(Ok(_))`.
///
/// A command's `Err` means the store may or may not have applied it (the connection
/// broke during the commit); the inner `Result` is the event store's answer.
pub trait EventStorage<S> {
    /// Appends `events` to `stream` if it is at `expected`: all of them or none.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed (the append may or may not be written).
    /// The inner [`AppendError`] is a refusal: a conflict, an empty batch, or one of
    /// more than [`BATCH_MAX`] events; nothing is written then.
    fn append(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: &[S],
    ) -> Result<Result<Appended, AppendError>, StoreError>;

    /// `stream`'s events with version `from_version` or later, in version order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read, or holds an event that does not
    /// read back as `S` ([`StoreError::Corrupt`]).
    fn read_stream(
        &mut self,
        stream: StreamId,
        from_version: u64,
    ) -> Result<Vec<Recorded<S>>, StoreError>;

    /// Up to `max` events of the global log after position `after`, in position order.
    ///
    /// # Errors
    ///
    /// As [`read_stream`](Self::read_stream).
    fn read_all(&mut self, after: u64, max: usize) -> Result<Vec<Recorded<S>>, StoreError>;

    /// Position of the last event of the global log (0 when empty).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn head(&mut self) -> Result<u64, StoreError>;

    /// Version of `stream`'s last event (0 when it has none).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn version(&mut self, stream: StreamId) -> Result<u64, StoreError>;

    /// Saves `state` as `stream`'s snapshot at `version` (JSON), unless the stream
    /// already has one at a later version: the latest snapshot wins.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be written.
    fn save_snapshot(
        &mut self,
        stream: StreamId,
        version: u64,
        state: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// `stream`'s latest snapshot: its version and state (JSON), if it has one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn load_snapshot(
        &mut self,
        stream: StreamId,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError>;
}

/// Where projections keep their checkpoints (the position of the last event each has
/// applied), by projection name.
pub trait CheckpointStore {
    /// The checkpoint saved for `projection` (0 when none).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    fn load_checkpoint(&mut self, projection: &str) -> Result<u64, StoreError>;

    /// Saves `position` as `projection`'s checkpoint, durably.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be written.
    fn save_checkpoint(&mut self, projection: &str, position: u64) -> Result<(), StoreError>;
}

/// What one run of an exactly-once projector committed
#[cfg_attr(feature = "sqlite", doc = "([`sqlite::SqliteProjector::run_batch`],")]
#[cfg_attr(
    not(feature = "sqlite"),
    doc = "(`sqlite::SqliteProjector::run_batch`,"
)]
#[cfg_attr(
    feature = "postgres",
    doc = "[`postgres::PostgresProjector::run_batch`])."
)]
#[cfg_attr(
    not(feature = "postgres"),
    doc = "`postgres::PostgresProjector::run_batch`)."
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Events handed to the projection (0 when it was caught up).
    pub applied: usize,
    /// The checkpoint now: every event up to it is in the read model.
    pub checkpoint: u64,
}

#[derive(Debug)]
struct Memory<S> {
    events: EventStore<S>,
    snapshots: BTreeMap<StreamId, (u64, serde_json::Value)>,
    checkpoints: BTreeMap<String, u64>,
}

/// The in-memory store: the sans-IO [`EventStore`] behind a mutex, with snapshots and
/// checkpoints beside it. Clones are handles to the same store.
#[derive(Debug)]
pub struct MemoryEvents<S> {
    inner: Arc<Mutex<Memory<S>>>,
}

impl<S> Clone for MemoryEvents<S> {
    fn clone(&self) -> Self {
        MemoryEvents {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> Default for MemoryEvents<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> MemoryEvents<S> {
    /// An empty store.
    pub fn new() -> Self {
        Self::from_store(EventStore::new())
    }

    /// A store around `events` (say, one a [`Repository`](crate::cqrs::Repository)
    /// filled).
    pub fn from_store(events: EventStore<S>) -> Self {
        MemoryEvents {
            inner: Arc::new(Mutex::new(Memory {
                events,
                snapshots: BTreeMap::new(),
                checkpoints: BTreeMap::new(),
            })),
        }
    }

    /// Runs `f` on the [`EventStore`] inside.
    pub fn with_store<R>(&self, f: impl FnOnce(&EventStore<S>) -> R) -> R {
        f(&self.lock().events)
    }

    fn lock(&self) -> MutexGuard<'_, Memory<S>> {
        // Every command leaves the store consistent before anything that can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: Clone> EventStorage<S> for MemoryEvents<S> {
    fn append(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: &[S],
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        Ok(self
            .lock()
            .events
            .append(stream, expected, events.iter().cloned()))
    }
    fn read_stream(
        &mut self,
        stream: StreamId,
        from_version: u64,
    ) -> Result<Vec<Recorded<S>>, StoreError> {
        Ok(self
            .lock()
            .events
            .read_stream(stream, from_version)
            .cloned()
            .collect())
    }
    fn read_all(&mut self, after: u64, max: usize) -> Result<Vec<Recorded<S>>, StoreError> {
        Ok(self.lock().events.read_all(after, max).to_vec())
    }
    fn head(&mut self) -> Result<u64, StoreError> {
        Ok(self.lock().events.head())
    }
    fn version(&mut self, stream: StreamId) -> Result<u64, StoreError> {
        Ok(self.lock().events.version(stream))
    }
    fn save_snapshot(
        &mut self,
        stream: StreamId,
        version: u64,
        state: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut m = self.lock();
        let later = m.snapshots.get(&stream).is_some_and(|(v, _)| *v > version);
        if !later {
            m.snapshots.insert(stream, (version, state.clone()));
        }
        Ok(())
    }
    fn load_snapshot(
        &mut self,
        stream: StreamId,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
        Ok(self.lock().snapshots.get(&stream).cloned())
    }
}

impl<S> CheckpointStore for MemoryEvents<S> {
    fn load_checkpoint(&mut self, projection: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .checkpoints
            .get(projection)
            .copied()
            .unwrap_or(0))
    }
    fn save_checkpoint(&mut self, projection: &str, position: u64) -> Result<(), StoreError> {
        self.lock()
            .checkpoints
            .insert(projection.to_owned(), position);
        Ok(())
    }
}

/// An event as JSON text, for the database stores.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn to_json<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("cannot be written as JSON: {e}"),
    })
}

/// JSON text read back, for the database stores.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("{e}: {text}"),
    })
}

/// A stored integer as a `u64`, for the database stores (which store `i64`).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn to_u64(what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("negative value {v}"),
    })
}

/// A `u64` as a stored integer, for the database stores.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn to_i64(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("{v} does not fit a signed 64-bit column"),
    })
}

/// What [`StoredRepository::execute`] answers when the store did not fail: the
/// events written, or why none were.
pub type Outcome<A> =
    Result<Executed<<A as Aggregate>::Event>, ExecuteError<<A as Aggregate>::Rejection>>;

/// The command side of one aggregate type over an [`EventStorage`]: the durable twin of
/// the in-memory [`Repository`](crate::cqrs::Repository). It rehydrates a stream from
/// its latest snapshot and the events after it, decides, appends at the version it
/// loaded, and on a conflict (another writer appended meanwhile, in this process or
/// another) loads and decides again, up to `attempts_max` times. It saves a snapshot
/// every `snapshot_every` events.
///
/// It is synchronous, like the stores: from async code, call it on a blocking thread
/// (`tokio::task::spawn_blocking`), never on a runtime thread.
#[derive(Debug)]
pub struct StoredRepository<A, S, St> {
    store: St,
    snapshot_every: u64,
    attempts_max: u32,
    _types: PhantomData<fn() -> (A, S)>,
}

impl<A, S, St> StoredRepository<A, S, St>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: Upcast<Current = A::Event> + From<A::Event>,
    St: EventStorage<S>,
{
    /// A repository over `store` that snapshots a stream every `snapshot_every` events
    /// and tries a conflicting command up to `attempts_max` times.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `snapshot_every` or `attempts_max` is zero.
    pub fn new(store: St, snapshot_every: u64, attempts_max: u32) -> Result<Self, ConfigError> {
        if snapshot_every == 0 {
            return Err(ConfigError::new(
                "snapshot_every",
                "must be at least 1, got 0",
            ));
        }
        if attempts_max == 0 {
            return Err(ConfigError::new(
                "attempts_max",
                "must be at least 1, got 0",
            ));
        }
        Ok(StoredRepository {
            store,
            snapshot_every,
            attempts_max,
            _types: PhantomData,
        })
    }

    /// The store.
    pub fn store(&mut self) -> &mut St {
        &mut self.store
    }

    /// Loads `stream`: its latest snapshot, then the events after it, upcast. A
    /// snapshot that no longer reads as `A` (its type changed) is ignored and the
    /// stream folded from its first event: a snapshot is a cache, the events are the
    /// truth.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub fn rehydrate(&mut self, stream: StreamId) -> Result<Rehydrated<A>, StoreError> {
        let snapshot = self
            .store
            .load_snapshot(stream)?
            .and_then(|(version, json)| {
                serde_json::from_value::<A>(json)
                    .ok()
                    .map(|state| Snapshot { version, state })
            });
        let (mut state, from, snapshot_version) = match snapshot {
            Some(s) => (s.state, s.version, Some(s.version)),
            None => (A::default(), 0, None),
        };
        let mut version = from;
        let mut folded = 0;
        let mut upcast = 0;
        for r in self.store.read_stream(stream, from + 1)? {
            if r.event.schema_version() != CURRENT_SCHEMA {
                upcast += 1;
            }
            state.apply(&r.event.upcast());
            version = r.version;
            folded += 1;
        }
        Ok(Rehydrated {
            state,
            version,
            snapshot_version,
            folded,
            upcast,
        })
    }

    /// Handles `command` on `stream`: load, decide, append at the version loaded; on a
    /// conflict, load and decide again, up to `attempts_max` times. Saves a snapshot
    /// when `snapshot_every` events were written since the last one. A command that
    /// decides no event appends nothing and succeeds with an empty range.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store failed (the events may or may not be written).
    /// The inner [`ExecuteError::Rejected`] when the aggregate refuses,
    /// [`ExecuteError::Append`] with the last conflict after `attempts_max` tries;
    /// nothing is written then.
    pub fn execute(
        &mut self,
        stream: StreamId,
        command: &A::Command,
    ) -> Result<Outcome<A>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let loaded = self.rehydrate(stream)?;
            let events = match loaded.state.decide(command) {
                Ok(e) => e,
                Err(why) => return Ok(Err(ExecuteError::Rejected(why))),
            };
            if events.is_empty() {
                let h = self.store.head()?;
                return Ok(Ok(Executed {
                    appended: Appended {
                        from_version: loaded.version,
                        to_version: loaded.version,
                        first_position: h + 1,
                        last_position: h,
                    },
                    events,
                    snapshot: None,
                }));
            }
            let stored: Vec<S> = events.iter().cloned().map(S::from).collect();
            let expected = ExpectedVersion::Exact(loaded.version);
            match self.store.append(stream, expected, &stored)? {
                Ok(appended) => {
                    let since = loaded.snapshot_version.unwrap_or(0);
                    let snapshot = if appended.to_version >= since + self.snapshot_every {
                        let state = loaded.state.fold(events.iter());
                        let json =
                            serde_json::to_value(&state).map_err(|e| StoreError::Corrupt {
                                what: format!("snapshot of {stream}"),
                                detail: format!("cannot be written as JSON: {e}"),
                            })?;
                        self.store
                            .save_snapshot(stream, appended.to_version, &json)?;
                        Some(appended.to_version)
                    } else {
                        None
                    };
                    return Ok(Ok(Executed {
                        appended,
                        events,
                        snapshot,
                    }));
                }
                Err(conflict @ AppendError::WrongExpectedVersion { .. })
                    if attempt < self.attempts_max =>
                {
                    let _ = conflict;
                }
                Err(e) => return Ok(Err(ExecuteError::Append(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cqrs::item::{Item, ItemCommand, ItemRejection, StoredEvent};

    /// A store whose first appends conflict, as if another writer got there first.
    struct Contended {
        inner: MemoryEvents<StoredEvent>,
        conflicts_left: u32,
    }

    impl EventStorage<StoredEvent> for Contended {
        fn append(
            &mut self,
            stream: StreamId,
            expected: ExpectedVersion,
            events: &[StoredEvent],
        ) -> Result<Result<Appended, AppendError>, StoreError> {
            if self.conflicts_left > 0 {
                self.conflicts_left -= 1;
                // Another writer restocks one unit first.
                let rival = [StoredEvent::Current(crate::cqrs::ItemEvent::Restocked {
                    units: 1,
                })];
                self.inner
                    .append(stream, ExpectedVersion::Any, &rival)?
                    .ok();
            }
            self.inner.append(stream, expected, events)
        }
        fn read_stream(
            &mut self,
            s: StreamId,
            v: u64,
        ) -> Result<Vec<Recorded<StoredEvent>>, StoreError> {
            self.inner.read_stream(s, v)
        }
        fn read_all(&mut self, a: u64, m: usize) -> Result<Vec<Recorded<StoredEvent>>, StoreError> {
            self.inner.read_all(a, m)
        }
        fn head(&mut self) -> Result<u64, StoreError> {
            self.inner.head()
        }
        fn version(&mut self, s: StreamId) -> Result<u64, StoreError> {
            self.inner.version(s)
        }
        fn save_snapshot(
            &mut self,
            s: StreamId,
            v: u64,
            j: &serde_json::Value,
        ) -> Result<(), StoreError> {
            self.inner.save_snapshot(s, v, j)
        }
        fn load_snapshot(
            &mut self,
            s: StreamId,
        ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
            self.inner.load_snapshot(s)
        }
    }

    #[test]
    fn execute_retries_conflicts_then_gives_up_and_snapshots() {
        let inner = MemoryEvents::<StoredEvent>::new();
        let store = Contended {
            inner: inner.clone(),
            conflicts_left: 2,
        };
        let mut repo = StoredRepository::<Item, StoredEvent, _>::new(store, 3, 3).unwrap();
        let done = repo
            .execute(StreamId(1), &ItemCommand::Restock { units: 5 })
            .unwrap()
            .unwrap();
        // Two rival restocks landed first; the third attempt appended at version 2.
        assert_eq!(done.appended.from_version, 2);
        assert_eq!(done.snapshot, Some(3));
        let loaded = repo.rehydrate(StreamId(1)).unwrap();
        assert_eq!(loaded.state.stock, 7);
        assert_eq!((loaded.snapshot_version, loaded.folded), (Some(3), 0));

        repo.store().conflicts_left = 5;
        let gave_up = repo
            .execute(StreamId(1), &ItemCommand::Restock { units: 1 })
            .unwrap();
        assert!(matches!(
            gave_up,
            Err(ExecuteError::Append(
                AppendError::WrongExpectedVersion { .. }
            ))
        ));
        let refused = repo
            .execute(StreamId(2), &ItemCommand::Withdraw { units: 1 })
            .unwrap();
        assert!(matches!(
            refused,
            Err(ExecuteError::Rejected(ItemRejection::Insufficient { .. }))
        ));
        assert!(StoredRepository::<Item, StoredEvent, _>::new(inner.clone(), 0, 1).is_err());
        assert!(StoredRepository::<Item, StoredEvent, _>::new(inner, 1, 0).is_err());
    }

    #[test]
    fn an_unreadable_snapshot_is_ignored_and_the_stream_folded() {
        let mut store = MemoryEvents::<StoredEvent>::new();
        let mut repo = StoredRepository::<Item, StoredEvent, _>::new(store.clone(), 1, 1).unwrap();
        repo.execute(StreamId(1), &ItemCommand::Restock { units: 4 })
            .unwrap()
            .unwrap();
        store
            .save_snapshot(StreamId(1), 9, &serde_json::json!("not an item"))
            .unwrap();
        let loaded = repo.rehydrate(StreamId(1)).unwrap();
        assert_eq!((loaded.state.stock, loaded.snapshot_version), (4, None));
    }
}
