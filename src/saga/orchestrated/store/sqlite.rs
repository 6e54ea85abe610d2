//! [`SqliteLog`]: the saga log in a SQLite database (feature `sqlite`).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{LogStore, StoreError, ends_finished, kind, saga_column};
use crate::saga::orchestrated::history::SagaHistory;
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Order, Refusal, SagaData, SagaId};
use crate::store::Migration;

/// The schema of the saga log (component `saga_log`), one migration per version.
pub const MIGRATIONS: &[Migration] = &["CREATE TABLE faultline_saga_log (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         saga INTEGER NOT NULL,
         kind TEXT NOT NULL,
         finished INTEGER NOT NULL DEFAULT 0,
         line TEXT NOT NULL
     );
     CREATE INDEX faultline_saga_log_by_saga ON faultline_saga_log (saga, seq);
     CREATE TABLE faultline_saga_log_owner (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         epoch INTEGER NOT NULL
     );
     INSERT INTO faultline_saga_log_owner (id, epoch) VALUES (1, 0);"];

/// The saga log in a SQLite database: one row per record (its encoded line of the
/// [versioned format](crate::saga::orchestrated::log#the-stored-format), with its saga
/// and kind in columns of their own for compaction and history lookups) in the table
/// `faultline_saga_log`.
///
/// Each append is one committed transaction: with the WAL in `synchronous = FULL` mode
/// ([`store::sqlite::open`](crate::store::sqlite::open)), durable when it returns. The
/// database may hold the participants' own tables too (one file for everything).
/// [`compact`](LogStore::compact) is one `DELETE` transaction. One database holds one
/// log (one definition). Opening a `SqliteLog` takes the log over: one opened earlier
/// fails its next append with [`StoreError::Fenced`] (see [one
/// writer](super#one-writer)).
#[derive(Debug)]
pub struct SqliteLog<P = Order, R = Refusal> {
    conn: Connection,
    path: PathBuf,
    epoch: i64,
    records: PhantomData<fn() -> (P, R)>,
}

impl<P: SagaData, R: SagaData> SqliteLog<P, R> {
    /// Opens (creating if need be) the database at `path`, brings the `saga_log`
    /// schema up to date and takes the log over.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database cannot be opened or migrated (or
    /// holds a newer schema).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = crate::store::sqlite::open(&path)?;
        Self::with_connection(conn, path)
    }

    /// The log in a private in-memory database (durable across nothing): for tests.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when SQLite cannot allocate it.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = crate::store::sqlite::open_in_memory()?;
        Self::with_connection(conn, PathBuf::from(":memory:"))
    }

    fn with_connection(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        crate::store::sqlite::migrate(&mut conn, "saga_log", MIGRATIONS)?;
        let epoch: i64 = conn
            .query_row(
                "UPDATE faultline_saga_log_owner SET epoch = epoch + 1 WHERE id = 1
                 RETURNING epoch",
                [],
                |r| r.get(0),
            )
            .map_err(crate::store::StoreError::from)?;
        Ok(SqliteLog {
            conn,
            path,
            epoch,
            records: PhantomData,
        })
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the caller's own tables in the same database (do not write
    /// the `faultline_` tables through it).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn fenced(&self) -> Result<StoreError, StoreError> {
        let current: i64 = self
            .conn
            .query_row(
                "SELECT epoch FROM faultline_saga_log_owner WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .map_err(crate::store::StoreError::from)?;
        Ok(StoreError::Fenced {
            held: self.epoch,
            current,
        })
    }

    fn decode(&self, rows: Vec<(i64, String)>) -> Result<Vec<LogRecord<P, R>>, StoreError> {
        rows.into_iter()
            .map(|(seq, line)| {
                LogRecord::decode_line(line.as_bytes()).map_err(|problem| StoreError::Corrupt {
                    path: self.path.join("faultline_saga_log"),
                    line: usize::try_from(seq).unwrap_or(usize::MAX),
                    problem,
                })
            })
            .collect()
    }

    fn lines(&self, saga: Option<SagaId>) -> Result<Vec<(i64, String)>, rusqlite::Error> {
        let (sql, args): (&str, Vec<i64>) = match saga {
            None => (
                "SELECT seq, line FROM faultline_saga_log ORDER BY seq",
                vec![],
            ),
            Some(s) => (
                "SELECT seq, line FROM faultline_saga_log WHERE saga = ?1 ORDER BY seq",
                vec![saga_column(s)],
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect()
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.into())
}

impl<P: SagaData, R: SagaData> LogStore<P, R> for SqliteLog<P, R> {
    fn append(&mut self, record: &LogRecord<P, R>) -> Result<(), StoreError> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO faultline_saga_log (saga, kind, finished, line)
                 SELECT ?1, ?2, ?3, ?4
                 WHERE (SELECT epoch FROM faultline_saga_log_owner WHERE id = 1) = ?5",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    saga_column(record.saga()),
                    kind(record),
                    ends_finished(record),
                    record.encode_line(),
                    self.epoch
                ])
            })
            .map_err(db)?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(self.fenced()?)
        }
    }

    fn load(&mut self) -> Result<Vec<LogRecord<P, R>>, StoreError> {
        let rows = self.lines(None).map_err(db)?;
        self.decode(rows)
    }

    fn history(&mut self, saga: SagaId) -> Result<Option<SagaHistory<P, R>>, StoreError> {
        let rows = self.lines(Some(saga)).map_err(db)?;
        Ok(SagaHistory::of(saga, &self.decode(rows)?))
    }

    fn compact(&mut self) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let epoch: Option<i64> = tx
            .query_row(
                "SELECT epoch FROM faultline_saga_log_owner WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if epoch != Some(self.epoch) {
            return Err(StoreError::Fenced {
                held: self.epoch,
                current: epoch.unwrap_or(0),
            });
        }
        let removed = tx
            .execute(
                "DELETE FROM faultline_saga_log
                 WHERE kind NOT IN ('started', 'ended')
                   AND saga IN (SELECT saga FROM faultline_saga_log WHERE finished = 1)",
                [],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(removed)
    }
}
