//! The event store in Postgres, for writers on many machines: [`PostgresEvents`], and
//! [`PostgresProjector`], which commits a projection's read-model change and its
//! checkpoint in one transaction.
//!
//! The tables (component [`COMPONENT`]): `faultline_es_events` (primary key
//! `(stream, version)`, the global position unique), `faultline_es_head` (one row: the
//! last position handed out), `faultline_es_snapshots`, `faultline_es_checkpoints`.
//!
//! An append is one statement (a function the migration creates,
//! `faultline_es_append`: one round trip, its own transaction) that first locks the
//! head row (`SELECT … FOR UPDATE`): appends from every connection take turns on it,
//! so positions are handed out without gaps (a rolled-back append rolls its positions back too) and **committed in
//! position order** (the next append gets the lock only once the previous one has
//! committed), which is what a projection reading after its checkpoint relies on.
//! Under the lock the stream's version is read, checked against the expectation and
//! the events inserted; the primary key `(stream, version)` is the database's own
//! guarantee that no two appends ever hold one version, even one that bypassed the
//! lock. The price: appends to the whole store are serialized (one at a time, each
//! holding the lock until its commit has reached the WAL on disk).
//!
//! Synchronous (the `postgres` crate): never call it on a tokio runtime thread (the
//! driver blocks on a runtime of its own and panics there); use `spawn_blocking`.

use std::marker::PhantomData;

use postgres::error::SqlState;
use postgres::{Client, Statement, Transaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BATCH_MAX, Batch, CheckpointStore, EventStorage, from_json, to_i64, to_json, to_u64};
use crate::cqrs::core::{AppendError, Appended, ExpectedVersion, Recorded, StreamId};
use crate::store::{Migration, StoreError};

/// The migrations component of the event store's tables.
pub const COMPONENT: &str = "event_store";

/// The event store's schema, one migration per version.
pub const MIGRATIONS: &[Migration] = &["CREATE TABLE faultline_es_events (
         stream BIGINT NOT NULL,
         version BIGINT NOT NULL CHECK (version >= 1),
         position BIGINT NOT NULL UNIQUE,
         event TEXT NOT NULL,
         PRIMARY KEY (stream, version)
     );
     CREATE TABLE faultline_es_head (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         position BIGINT NOT NULL
     );
     INSERT INTO faultline_es_head (id, position) VALUES (1, 0);
     CREATE TABLE faultline_es_snapshots (
         stream BIGINT PRIMARY KEY,
         version BIGINT NOT NULL,
         state TEXT NOT NULL
     );
     CREATE TABLE faultline_es_checkpoints (
         name TEXT PRIMARY KEY,
         position BIGINT NOT NULL
     );
     -- One append, in one statement (so one round trip, its own transaction): lock the
     -- head row (appends take turns: positions gap-free, committed in order), read the
     -- stream's version (a fresh snapshot per statement inside a volatile function, so
     -- it sees the append that held the lock before), check it, insert, move the head.
     CREATE FUNCTION faultline_es_append(
         p_stream BIGINT, p_any BOOLEAN, p_expected BIGINT, p_events TEXT[]
     ) RETURNS TABLE (o_actual BIGINT, o_head BIGINT, o_written BOOLEAN)
     LANGUAGE plpgsql VOLATILE AS $$
     DECLARE
         v_head BIGINT;
         v_actual BIGINT;
     BEGIN
         SELECT h.position INTO v_head FROM faultline_es_head h WHERE h.id = 1 FOR UPDATE;
         SELECT coalesce(max(e.version), 0) INTO v_actual
             FROM faultline_es_events e WHERE e.stream = p_stream;
         IF NOT p_any AND v_actual <> p_expected THEN
             RETURN QUERY SELECT v_actual, v_head, false;
             RETURN;
         END IF;
         INSERT INTO faultline_es_events (stream, version, position, event)
             SELECT p_stream, v_actual + t.i, v_head + t.i, t.e
             FROM unnest(p_events) WITH ORDINALITY AS t(e, i);
         UPDATE faultline_es_head SET position = v_head + cardinality(p_events) WHERE id = 1;
         RETURN QUERY SELECT v_actual, v_head, true;
     END
     $$;"];

const READ_ALL: &str = "SELECT stream, version, position, event FROM faultline_es_events
     WHERE position > $1 ORDER BY position LIMIT $2";

/// The statements the store runs most, prepared once per connection.
#[derive(Debug)]
struct Prepared {
    append: Statement,
    version: Statement,
    read_all: Statement,
}

impl Prepared {
    fn new(client: &mut Client) -> Result<Self, StoreError> {
        Ok(Prepared {
            append: client.prepare(
                "SELECT o_actual, o_head, o_written FROM faultline_es_append($1, $2, $3, $4)",
            )?,
            version: client.prepare(
                "SELECT coalesce(max(version), 0)::BIGINT FROM faultline_es_events WHERE stream = $1",
            )?,
            read_all: client.prepare(READ_ALL)?,
        })
    }
}

/// An [`EventStorage`] and [`CheckpointStore`] in one Postgres database, shared by any
/// number of processes and machines. Events are serde types stored as JSON text.
pub struct PostgresEvents<S> {
    client: Client,
    prepared: Prepared,
    _events: PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for PostgresEvents<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEvents").finish_non_exhaustive()
    }
}

impl<S> PostgresEvents<S> {
    /// Connects to `url` (see [`crate::store::postgres::connect`]) and brings the
    /// event store schema up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the server cannot be reached or the schema migrated.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::from_client(crate::store::postgres::connect(url)?)
    }

    /// The store over `client`, after bringing the event store schema up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the schema cannot be migrated.
    pub fn from_client(mut client: Client) -> Result<Self, StoreError> {
        crate::store::postgres::migrate(&mut client, COMPONENT, MIGRATIONS)?;
        let prepared = Prepared::new(&mut client)?;
        Ok(PostgresEvents {
            client,
            prepared,
            _events: PhantomData,
        })
    }

    /// The connection (to query your own tables in the same database).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

fn record<S: DeserializeOwned>(row: &postgres::Row) -> Result<Recorded<S>, StoreError> {
    let stream: i64 = row.try_get(0)?;
    let version: i64 = row.try_get(1)?;
    let position: i64 = row.try_get(2)?;
    let event: &str = row.try_get(3)?;
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

fn read_after<S: DeserializeOwned>(
    client: &mut impl postgres::GenericClient,
    statement: Option<&Statement>,
    after: u64,
    max: usize,
) -> Result<Vec<Recorded<S>>, StoreError> {
    let after = to_i64("position", after)?;
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = match statement {
        Some(s) => client.query(s, &[&after, &max])?,
        None => client.query(READ_ALL, &[&after, &max])?,
    };
    rows.iter().map(record).collect()
}

fn stream_version(
    client: &mut impl postgres::GenericClient,
    statement: &Statement,
    stream: StreamId,
) -> Result<u64, StoreError> {
    let v: i64 = client
        .query_one(statement, &[&i64::from(stream.0)])?
        .try_get(0)?;
    to_u64("faultline_es_events.version", v)
}

impl<S: Serialize + DeserializeOwned> EventStorage<S> for PostgresEvents<S> {
    fn append(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: &[S],
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        if events.is_empty() {
            return Ok(Err(AppendError::Empty { stream }));
        }
        if events.len() > BATCH_MAX {
            return Ok(Err(AppendError::BatchTooLarge {
                stream,
                len: events.len(),
                max: BATCH_MAX,
            }));
        }
        let json = events
            .iter()
            .map(|e| to_json("event", e))
            .collect::<Result<Vec<_>, _>>()?;
        let (any, expected_version) = match expected {
            ExpectedVersion::Any => (true, 0),
            ExpectedVersion::NoStream => (false, 0),
            ExpectedVersion::Exact(v) => (false, to_i64("version", v)?),
        };
        // One statement, its own transaction: committed (and durable) when it returns.
        let row = self.client.query_one(
            &self.prepared.append,
            &[&i64::from(stream.0), &any, &expected_version, &json],
        );
        let row = match row {
            Ok(row) => row,
            // The primary key (stream, version): another writer holds this version
            // (one that bypassed the head lock). Nothing was written.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let actual = stream_version(&mut self.client, &self.prepared.version, stream)?;
                return Ok(Err(AppendError::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                }));
            }
            Err(e) => return Err(e.into()),
        };
        let actual = to_u64("faultline_es_events.version", row.try_get(0)?)?;
        let head = to_u64("faultline_es_head.position", row.try_get(1)?)?;
        let written: bool = row.try_get(2)?;
        if !written {
            return Ok(Err(AppendError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            }));
        }
        let n = events.len() as u64;
        Ok(Ok(Appended {
            from_version: actual,
            to_version: actual + n,
            first_position: head + 1,
            last_position: head + n,
        }))
    }

    fn read_stream(
        &mut self,
        stream: StreamId,
        from_version: u64,
    ) -> Result<Vec<Recorded<S>>, StoreError> {
        let rows = self.client.query(
            "SELECT stream, version, position, event FROM faultline_es_events
             WHERE stream = $1 AND version >= $2 ORDER BY version",
            &[&i64::from(stream.0), &to_i64("version", from_version)?],
        )?;
        rows.iter().map(record).collect()
    }

    fn read_all(&mut self, after: u64, max: usize) -> Result<Vec<Recorded<S>>, StoreError> {
        read_after(&mut self.client, Some(&self.prepared.read_all), after, max)
    }

    fn head(&mut self) -> Result<u64, StoreError> {
        let h: i64 = self
            .client
            .query_one("SELECT position FROM faultline_es_head WHERE id = 1", &[])?
            .try_get(0)?;
        to_u64("faultline_es_head.position", h)
    }

    fn version(&mut self, stream: StreamId) -> Result<u64, StoreError> {
        stream_version(&mut self.client, &self.prepared.version, stream)
    }

    fn save_snapshot(
        &mut self,
        stream: StreamId,
        version: u64,
        state: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO faultline_es_snapshots (stream, version, state) VALUES ($1, $2, $3)
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version, state = excluded.state
             WHERE excluded.version >= faultline_es_snapshots.version",
            &[
                &i64::from(stream.0),
                &to_i64("version", version)?,
                &to_json("snapshot", state)?,
            ],
        )?;
        Ok(())
    }

    fn load_snapshot(
        &mut self,
        stream: StreamId,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
        let row = self.client.query_opt(
            "SELECT version, state FROM faultline_es_snapshots WHERE stream = $1",
            &[&i64::from(stream.0)],
        )?;
        row.map(|r| {
            let v: i64 = r.try_get(0)?;
            let s: &str = r.try_get(1)?;
            Ok((
                to_u64("faultline_es_snapshots.version", v)?,
                from_json(&format!("snapshot of {stream}"), s)?,
            ))
        })
        .transpose()
    }
}

fn load_checkpoint_on(
    client: &mut impl postgres::GenericClient,
    projection: &str,
    for_update: bool,
) -> Result<u64, StoreError> {
    let sql = if for_update {
        "SELECT position FROM faultline_es_checkpoints WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT position FROM faultline_es_checkpoints WHERE name = $1"
    };
    match client.query_opt(sql, &[&projection])? {
        Some(r) => to_u64("faultline_es_checkpoints.position", r.try_get(0)?),
        None => Ok(0),
    }
}

fn save_checkpoint_on(
    client: &mut impl postgres::GenericClient,
    projection: &str,
    position: u64,
) -> Result<(), StoreError> {
    client.execute(
        "INSERT INTO faultline_es_checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        &[&projection, &to_i64("position", position)?],
    )?;
    Ok(())
}

impl<S> CheckpointStore for PostgresEvents<S> {
    fn load_checkpoint(&mut self, projection: &str) -> Result<u64, StoreError> {
        load_checkpoint_on(&mut self.client, projection, false)
    }
    fn save_checkpoint(&mut self, projection: &str, position: u64) -> Result<(), StoreError> {
        save_checkpoint_on(&mut self.client, projection, position)
    }
}

/// An exactly-once projection whose read model lives in the same Postgres database as
/// the events, the twin of [`SqliteProjector`](super::sqlite::SqliteProjector): each
/// [`run_batch`](Self::run_batch) locks the projection's checkpoint row (so two
/// instances of one projection, on two machines, take turns instead of both applying
/// a batch), reads the events after it, hands them to your code with the open
/// transaction, and commits your read-model change and the new checkpoint together.
pub struct PostgresProjector<S> {
    client: Client,
    name: String,
    batch_max: usize,
    _events: PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for PostgresProjector<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProjector")
            .field("name", &self.name)
            .field("batch_max", &self.batch_max)
            .finish_non_exhaustive()
    }
}

impl<S: DeserializeOwned> PostgresProjector<S> {
    /// The projection `name` over the database at `url`, handing out up to
    /// `batch_max` events per batch (at least 1).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the server cannot be reached or the schema migrated.
    pub fn connect(url: &str, name: &str, batch_max: usize) -> Result<Self, StoreError> {
        Self::from_client(crate::store::postgres::connect(url)?, name, batch_max)
    }

    /// The projection `name` over `client`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the schema cannot be migrated.
    pub fn from_client(
        mut client: Client,
        name: &str,
        batch_max: usize,
    ) -> Result<Self, StoreError> {
        crate::store::postgres::migrate(&mut client, COMPONENT, MIGRATIONS)?;
        Ok(PostgresProjector {
            client,
            name: name.to_owned(),
            batch_max: batch_max.max(1),
            _events: PhantomData,
        })
    }

    /// The connection (to create and query the read model).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The projection's committed checkpoint.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database cannot be read.
    pub fn checkpoint(&mut self) -> Result<u64, StoreError> {
        load_checkpoint_on(&mut self.client, &self.name, false)
    }

    /// In one transaction: locks and reads the checkpoint, reads up to `batch_max`
    /// events after it, calls `apply` with the transaction and the events (none:
    /// `apply` is not called), saves the new checkpoint and commits. Returns `apply`'s
    /// error, with nothing committed, when it fails.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database failed (nothing is committed, or all is: the
    /// commit's answer was lost). The inner `Err` is `apply`'s, rolled back.
    pub fn run_batch<E, F>(&mut self, apply: F) -> Result<Result<Batch, E>, StoreError>
    where
        F: FnOnce(&mut Transaction<'_>, &[Recorded<S>]) -> Result<(), E>,
    {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "INSERT INTO faultline_es_checkpoints (name, position) VALUES ($1, 0)
             ON CONFLICT (name) DO NOTHING",
            &[&self.name],
        )?;
        let checkpoint = load_checkpoint_on(&mut tx, &self.name, true)?;
        let records = read_after::<S>(&mut tx, None, checkpoint, self.batch_max)?;
        let Some(last) = records.last().map(|r| r.position) else {
            tx.commit()?;
            return Ok(Ok(Batch {
                applied: 0,
                checkpoint,
            }));
        };
        if let Err(e) = apply(&mut tx, &records) {
            return Ok(Err(e));
        }
        save_checkpoint_on(&mut tx, &self.name, last)?;
        tx.commit()?;
        Ok(Ok(Batch {
            applied: records.len(),
            checkpoint: last,
        }))
    }
}
