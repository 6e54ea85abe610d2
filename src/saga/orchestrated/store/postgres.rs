//! [`PostgresLog`]: the saga log on a Postgres server (feature `postgres`).

use std::marker::PhantomData;
use std::path::PathBuf;

use ::postgres::Client;

use super::{LogStore, StoreError, ends_finished, kind, saga_column};
use crate::saga::orchestrated::history::SagaHistory;
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Order, Refusal, SagaData, SagaId};
use crate::store::Migration;

/// The schema of the saga log (component `saga_log`), one migration per version.
pub const MIGRATIONS: &[Migration] = &["CREATE TABLE faultline_saga_log (
         seq BIGSERIAL PRIMARY KEY,
         saga BIGINT NOT NULL,
         kind TEXT NOT NULL,
         finished BOOLEAN NOT NULL DEFAULT FALSE,
         line TEXT NOT NULL
     );
     CREATE INDEX faultline_saga_log_by_saga ON faultline_saga_log (saga, seq);
     CREATE TABLE faultline_saga_log_owner (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         epoch BIGINT NOT NULL
     );
     INSERT INTO faultline_saga_log_owner (id, epoch) VALUES (1, 0);"];

/// The saga log on a Postgres server: one row per record (its encoded line of the
/// [versioned format](crate::saga::orchestrated::log#the-stored-format), with its saga
/// and kind in columns of their own) in the table `faultline_saga_log`.
///
/// Each append is one committed transaction (durable when it returns, as the server's
/// `synchronous_commit` makes a commit), which first takes a share lock on the owner
/// row and checks this store's epoch: opening another `PostgresLog` on the database
/// takes the log over (its epoch update waits for an append in progress), and this one
/// then fails with [`StoreError::Fenced`] (see [one writer](super#one-writer)).
/// [`compact`](LogStore::compact) is one `DELETE` transaction. One database (or
/// schema on the search path) holds one log.
///
/// It uses the synchronous `postgres` client, which must not be called on a tokio
/// runtime thread: the tokio runner calls it on blocking threads, and
/// [`open`](PostgresLog::open) and dropping it are safe anywhere (they run on a thread
/// of their own).
pub struct PostgresLog<P = Order, R = Refusal> {
    client: Option<Client>,
    name: PathBuf,
    epoch: i64,
    records: PhantomData<fn() -> (P, R)>,
}

impl<P, R> std::fmt::Debug for PostgresLog<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLog")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<P: SagaData, R: SagaData> PostgresLog<P, R> {
    /// Connects to `url` (see [`store::postgres::connect`](crate::store::postgres::connect)),
    /// brings the `saga_log` schema up to date and takes the log over. Safe to call on
    /// a tokio runtime thread (it blocks it meanwhile).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the server cannot be reached or the schema
    /// migrated (or is newer).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let owned = url.to_owned();
        let opened = std::thread::scope(|s| {
            s.spawn(move || -> Result<(Client, i64), StoreError> {
                let mut client = crate::store::postgres::connect(&owned)?;
                crate::store::postgres::migrate(&mut client, "saga_log", MIGRATIONS)?;
                let row = client
                    .query_one(
                        "UPDATE faultline_saga_log_owner SET epoch = epoch + 1 WHERE id = 1
                         RETURNING epoch",
                        &[],
                    )
                    .map_err(db)?;
                Ok((client, row.get(0)))
            })
            .join()
        });
        let (client, epoch) = opened.map_err(|_| {
            StoreError::Io(std::io::Error::other(
                "the Postgres connecting thread panicked",
            ))
        })??;
        Ok(PostgresLog {
            client: Some(client),
            name: PathBuf::from("postgres:faultline_saga_log"),
            epoch,
            records: PhantomData,
        })
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Io(std::io::Error::other("the Postgres log is closed")))
    }

    fn decode(&self, rows: Vec<::postgres::Row>) -> Result<Vec<LogRecord<P, R>>, StoreError> {
        rows.into_iter()
            .map(|row| {
                let seq: i64 = row.get(0);
                let line: String = row.get(1);
                LogRecord::decode_line(line.as_bytes()).map_err(|problem| StoreError::Corrupt {
                    path: self.name.clone(),
                    line: usize::try_from(seq).unwrap_or(usize::MAX),
                    problem,
                })
            })
            .collect()
    }

    /// In `tx`: the owner row's share lock, and an error unless this store holds the
    /// log's epoch.
    fn check_epoch(tx: &mut ::postgres::Transaction<'_>, held: i64) -> Result<(), StoreError> {
        let current: i64 = tx
            .query_one(
                "SELECT epoch FROM faultline_saga_log_owner WHERE id = 1 FOR SHARE",
                &[],
            )
            .map_err(db)?
            .get(0);
        if current == held {
            Ok(())
        } else {
            Err(StoreError::Fenced { held, current })
        }
    }
}

fn db(e: ::postgres::Error) -> StoreError {
    StoreError::Database(e.into())
}

impl<P, R> Drop for PostgresLog<P, R> {
    fn drop(&mut self) {
        // The client's drop blocks on a runtime of its own, which panics on a tokio
        // runtime thread: drop it on a thread of its own.
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

impl<P: SagaData, R: SagaData> LogStore<P, R> for PostgresLog<P, R> {
    fn append(&mut self, record: &LogRecord<P, R>) -> Result<(), StoreError> {
        let held = self.epoch;
        let mut tx = self.client()?.transaction().map_err(db)?;
        Self::check_epoch(&mut tx, held)?;
        tx.execute(
            "INSERT INTO faultline_saga_log (saga, kind, finished, line) VALUES ($1, $2, $3, $4)",
            &[
                &saga_column(record.saga()),
                &kind(record),
                &ends_finished(record),
                &record.encode_line(),
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    fn load(&mut self) -> Result<Vec<LogRecord<P, R>>, StoreError> {
        let rows = self
            .client()?
            .query("SELECT seq, line FROM faultline_saga_log ORDER BY seq", &[])
            .map_err(db)?;
        self.decode(rows)
    }

    fn history(&mut self, saga: SagaId) -> Result<Option<SagaHistory<P, R>>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT seq, line FROM faultline_saga_log WHERE saga = $1 ORDER BY seq",
                &[&saga_column(saga)],
            )
            .map_err(db)?;
        Ok(SagaHistory::of(saga, &self.decode(rows)?))
    }

    fn compact(&mut self) -> Result<usize, StoreError> {
        let held = self.epoch;
        let mut tx = self.client()?.transaction().map_err(db)?;
        Self::check_epoch(&mut tx, held)?;
        let removed = tx
            .execute(
                "DELETE FROM faultline_saga_log
                 WHERE kind NOT IN ('started', 'ended')
                   AND saga IN (SELECT saga FROM faultline_saga_log WHERE finished)",
                &[],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}
