//! The event store in SQLite: [`SqliteEvents`], and [`SqliteProjector`], which commits a
//! projection's read-model change and its checkpoint in one transaction.
//!
//! One file holds the events (`faultline_es_events`: `(stream, version)` unique, the
//! global position the primary key), the latest snapshot per stream
//! (`faultline_es_snapshots`) and the projections' checkpoints
//! (`faultline_es_checkpoints`), created by the migrations of component
//! [`COMPONENT`]. Each append is one `BEGIN IMMEDIATE` transaction: SQLite's write lock
//! orders the appends, so positions are handed out and committed in order, and the
//! unique `(stream, version)` makes a second winner at one version impossible. A
//! commit returns after the WAL is fsynced ([`crate::store::sqlite::open`]).
//!
//! ```
//! use faultline::cqrs::store::EventStorage;
//! use faultline::cqrs::store::sqlite::SqliteEvents;
//! use faultline::cqrs::{ExpectedVersion, StreamId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("faultline-doc-es-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("events.sqlite");
//! # let _ = std::fs::remove_file(&path);
//! let mut store = SqliteEvents::<String>::open(&path)?;
//! let cart = StreamId(1);
//! store.append(cart, ExpectedVersion::NoStream, &["opened".to_owned()])??;
//! let late = store.append(cart, ExpectedVersion::NoStream, &["opened".to_owned()])?;
//! assert!(late.is_err(), "the stream exists: a conflict, nothing written");
//! assert_eq!(store.read_stream(cart, 1)?.len(), 1);
//! # drop(store); std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::marker::PhantomData;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BATCH_MAX, Batch, CheckpointStore, EventStorage, from_json, to_i64, to_json, to_u64};
use crate::cqrs::core::{AppendError, Appended, ExpectedVersion, Recorded, StreamId};
use crate::store::{Migration, StoreError};

/// The migrations component of the event store's tables.
pub const COMPONENT: &str = "event_store";

/// The event store's schema, one migration per version.
pub const MIGRATIONS: &[Migration] = &["CREATE TABLE faultline_es_events (
         position INTEGER PRIMARY KEY,
         stream INTEGER NOT NULL,
         version INTEGER NOT NULL CHECK (version >= 1),
         event TEXT NOT NULL,
         UNIQUE (stream, version)
     );
     CREATE TABLE faultline_es_snapshots (
         stream INTEGER PRIMARY KEY,
         version INTEGER NOT NULL,
         state TEXT NOT NULL
     );
     CREATE TABLE faultline_es_checkpoints (
         name TEXT PRIMARY KEY,
         position INTEGER NOT NULL
     );"];

/// An [`EventStorage`] and [`CheckpointStore`] in one SQLite database. Events are
/// serde types stored as JSON text.
#[derive(Debug)]
pub struct SqliteEvents<S> {
    conn: Connection,
    _events: PhantomData<fn() -> S>,
}

impl<S> SqliteEvents<S> {
    /// Opens (creating if need be) the database at `path` and brings its event store
    /// schema up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::from_connection(crate::store::sqlite::open(path)?)
    }

    /// The store over `conn` (opened with [`crate::store::sqlite::open`], say), after
    /// bringing its event store schema up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the schema cannot be migrated.
    pub fn from_connection(mut conn: Connection) -> Result<Self, StoreError> {
        crate::store::sqlite::migrate(&mut conn, COMPONENT, MIGRATIONS)?;
        Ok(SqliteEvents {
            conn,
            _events: PhantomData,
        })
    }

    /// The connection (to query your own tables in the same file).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The connection back.
    pub fn into_connection(self) -> Connection {
        self.conn
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn stream_version(tx: &Connection, stream: StreamId) -> Result<u64, StoreError> {
    let v: i64 = tx
        .prepare_cached(
            "SELECT coalesce(max(version), 0) FROM faultline_es_events WHERE stream = ?1",
        )?
        .query_row([i64::from(stream.0)], |r| r.get(0))?;
    to_u64("faultline_es_events.version", v)
}

fn head_of(conn: &Connection) -> Result<u64, StoreError> {
    let h: i64 = conn
        .prepare_cached("SELECT coalesce(max(position), 0) FROM faultline_es_events")?
        .query_row([], |r| r.get(0))?;
    to_u64("faultline_es_events.position", h)
}

fn record<S: DeserializeOwned>(
    stream: i64,
    version: i64,
    position: i64,
    event: &str,
) -> Result<Recorded<S>, StoreError> {
    let stream = u32::try_from(stream).map_err(|_| StoreError::Corrupt {
        what: "faultline_es_events.stream".to_owned(),
        detail: format!("{stream} is not a stream id"),
    })?;
    Ok(Recorded {
        stream: StreamId(stream),
        version: to_u64("faultline_es_events.version", version)?,
        position: to_u64("faultline_es_events.position", position)?,
        event: from_json(&format!("event at position {position}"), event)?,
    })
}

type Row = (i64, i64, i64, String);

fn rows_to_records<S: DeserializeOwned>(rows: Vec<Row>) -> Result<Vec<Recorded<S>>, StoreError> {
    rows.into_iter()
        .map(|(s, v, p, e)| record(s, v, p, &e))
        .collect()
}

/// Up to `max` events after `after`, read on `conn` (a transaction's, too).
fn read_after<S: DeserializeOwned>(
    conn: &Connection,
    after: u64,
    max: usize,
) -> Result<Vec<Recorded<S>>, StoreError> {
    let after = to_i64("position", after)?;
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT stream, version, position, event FROM faultline_es_events
             WHERE position > ?1 ORDER BY position LIMIT ?2",
        )?
        .query_map([after, max], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    rows_to_records(rows)
}

/// Checks the expectation and writes the events, inside `tx`.
fn append_in<S: Serialize>(
    tx: &Transaction<'_>,
    stream: StreamId,
    expected: ExpectedVersion,
    events: &[S],
) -> Result<Result<Appended, AppendError>, StoreError> {
    let actual = stream_version(tx, stream)?;
    if !expected.admits(actual) {
        return Ok(Err(AppendError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }));
    }
    let head = head_of(tx)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO faultline_es_events (position, stream, version, event)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, e) in events.iter().enumerate() {
        let i = i as u64 + 1;
        let json = to_json("event", e)?;
        let written = insert.execute(params![
            to_i64("position", head + i)?,
            i64::from(stream.0),
            to_i64("version", actual + i)?,
            json
        ]);
        match written {
            Ok(_) => {}
            // The unique (stream, version): another writer holds this version. Under
            // the write lock this cannot happen; the constraint is the backstop.
            Err(e) if is_constraint(&e) => {
                drop(insert);
                return Ok(Err(AppendError::WrongExpectedVersion {
                    stream,
                    expected,
                    actual: stream_version(tx, stream)?,
                }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let n = events.len() as u64;
    Ok(Ok(Appended {
        from_version: actual,
        to_version: actual + n,
        first_position: head + 1,
        last_position: head + n,
    }))
}

fn check_batch<S>(stream: StreamId, events: &[S]) -> Option<AppendError> {
    if events.is_empty() {
        Some(AppendError::Empty { stream })
    } else if events.len() > BATCH_MAX {
        Some(AppendError::BatchTooLarge {
            stream,
            len: events.len(),
            max: BATCH_MAX,
        })
    } else {
        None
    }
}

impl<S: Serialize + DeserializeOwned> EventStorage<S> for SqliteEvents<S> {
    fn append(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: &[S],
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        if let Some(refused) = check_batch(stream, events) {
            return Ok(Err(refused));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let answer = append_in(&tx, stream, expected, events)?;
        if answer.is_ok() {
            tx.commit()?;
        }
        Ok(answer)
    }

    fn read_stream(
        &mut self,
        stream: StreamId,
        from_version: u64,
    ) -> Result<Vec<Recorded<S>>, StoreError> {
        let from = to_i64("version", from_version)?;
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT stream, version, position, event FROM faultline_es_events
                 WHERE stream = ?1 AND version >= ?2 ORDER BY version",
            )?
            .query_map([i64::from(stream.0), from], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        rows_to_records(rows)
    }

    fn read_all(&mut self, after: u64, max: usize) -> Result<Vec<Recorded<S>>, StoreError> {
        read_after(&self.conn, after, max)
    }

    fn head(&mut self) -> Result<u64, StoreError> {
        head_of(&self.conn)
    }

    fn version(&mut self, stream: StreamId) -> Result<u64, StoreError> {
        stream_version(&self.conn, stream)
    }

    fn save_snapshot(
        &mut self,
        stream: StreamId,
        version: u64,
        state: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO faultline_es_snapshots (stream, version, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version, state = excluded.state
                 WHERE excluded.version >= faultline_es_snapshots.version",
            )?
            .execute(params![
                i64::from(stream.0),
                to_i64("version", version)?,
                to_json("snapshot", state)?
            ])?;
        Ok(())
    }

    fn load_snapshot(
        &mut self,
        stream: StreamId,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
        let row: Option<(i64, String)> = self
            .conn
            .prepare_cached("SELECT version, state FROM faultline_es_snapshots WHERE stream = ?1")?
            .query_row([i64::from(stream.0)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(v, s)| {
            Ok((
                to_u64("faultline_es_snapshots.version", v)?,
                from_json(&format!("snapshot of {stream}"), &s)?,
            ))
        })
        .transpose()
    }
}

fn load_checkpoint_on(conn: &Connection, projection: &str) -> Result<u64, StoreError> {
    let p: Option<i64> = conn
        .prepare_cached("SELECT position FROM faultline_es_checkpoints WHERE name = ?1")?
        .query_row([projection], |r| r.get(0))
        .optional()?;
    p.map_or(Ok(0), |p| to_u64("faultline_es_checkpoints.position", p))
}

fn save_checkpoint_on(
    conn: &Connection,
    projection: &str,
    position: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO faultline_es_checkpoints (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )?
    .execute(params![projection, to_i64("position", position)?])?;
    Ok(())
}

impl<S> CheckpointStore for SqliteEvents<S> {
    fn load_checkpoint(&mut self, projection: &str) -> Result<u64, StoreError> {
        load_checkpoint_on(&self.conn, projection)
    }
    fn save_checkpoint(&mut self, projection: &str, position: u64) -> Result<(), StoreError> {
        save_checkpoint_on(&self.conn, projection, position)
    }
}

/// An exactly-once projection whose read model lives in the same SQLite database as
/// the events: each [`run_batch`](Self::run_batch) reads the events after the stored
/// checkpoint, hands them to your code with the open transaction, and commits your
/// read-model change and the new checkpoint together. A crash, or an error from your
/// code, rolls both back: an event is never counted twice, nor skipped.
///
/// ```
/// use faultline::cqrs::store::EventStorage;
/// use faultline::cqrs::store::sqlite::{SqliteEvents, SqliteProjector};
/// use faultline::cqrs::{ExpectedVersion, StreamId};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("faultline-doc-proj-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("events.sqlite");
/// # let _ = std::fs::remove_file(&path);
/// let mut events = SqliteEvents::<u64>::open(&path)?;
/// events.append(StreamId(1), ExpectedVersion::Any, &[5, 7])??;
/// let mut totals = SqliteProjector::<u64>::open(&path, "totals", 100)?;
/// totals.connection().execute_batch("CREATE TABLE IF NOT EXISTS totals (n INTEGER)")?;
/// totals.connection().execute("INSERT INTO totals VALUES (0)", [])?;
/// let batch = totals.run_batch(|tx, records| {
///     for r in records {
///         tx.execute("UPDATE totals SET n = n + ?1", [r.event as i64])?;
///     }
///     Ok::<_, rusqlite::Error>(())
/// })??;
/// assert_eq!((batch.applied, batch.checkpoint), (2, 2));
/// let n: i64 = totals.connection().query_row("SELECT n FROM totals", [], |r| r.get(0))?;
/// assert_eq!(n, 12);
/// # drop((events, totals)); std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteProjector<S> {
    conn: Connection,
    name: String,
    batch_max: usize,
    _events: PhantomData<fn() -> S>,
}

impl<S: DeserializeOwned> SqliteProjector<S> {
    /// The projection `name` over the database at `path`, handing out up to
    /// `batch_max` events per batch (at least 1).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>, name: &str, batch_max: usize) -> Result<Self, StoreError> {
        Self::from_connection(crate::store::sqlite::open(path)?, name, batch_max)
    }

    /// The projection `name` over `conn`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the schema cannot be migrated.
    pub fn from_connection(
        mut conn: Connection,
        name: &str,
        batch_max: usize,
    ) -> Result<Self, StoreError> {
        crate::store::sqlite::migrate(&mut conn, COMPONENT, MIGRATIONS)?;
        Ok(SqliteProjector {
            conn,
            name: name.to_owned(),
            batch_max: batch_max.max(1),
            _events: PhantomData,
        })
    }

    /// The connection (to create and query the read model).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The projection's committed checkpoint.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database cannot be read.
    pub fn checkpoint(&self) -> Result<u64, StoreError> {
        load_checkpoint_on(&self.conn, &self.name)
    }

    /// In one `BEGIN IMMEDIATE` transaction: reads the checkpoint and up to
    /// `batch_max` events after it, calls `apply` with the transaction and the events
    /// (none: `apply` is not called), saves the new checkpoint and commits. Returns
    /// `apply`'s error, with nothing committed, when it fails.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database failed (nothing is committed, or all is: the
    /// commit's answer was lost). The inner `Err` is `apply`'s, rolled back.
    pub fn run_batch<E, F>(&mut self, apply: F) -> Result<Result<Batch, E>, StoreError>
    where
        F: FnOnce(&Transaction<'_>, &[Recorded<S>]) -> Result<(), E>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let checkpoint = load_checkpoint_on(&tx, &self.name)?;
        let records = read_after::<S>(&tx, checkpoint, self.batch_max)?;
        let Some(last) = records.last().map(|r| r.position) else {
            return Ok(Ok(Batch {
                applied: 0,
                checkpoint,
            }));
        };
        if let Err(e) = apply(&tx, &records) {
            return Ok(Err(e));
        }
        save_checkpoint_on(&tx, &self.name, last)?;
        tx.commit()?;
        Ok(Ok(Batch {
            applied: records.len(),
            checkpoint: last,
        }))
    }
}
