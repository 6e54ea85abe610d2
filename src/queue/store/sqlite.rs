//! The queue in a SQLite file: [`SqliteJobs`], the outbox inside the caller's
//! transaction ([`SqliteOutbox`]) and a version-checked target ([`apply_once`]).
//!
//! ```no_run
//! use faultline::clock::Instant;
//! use faultline::queue::store::JobStore;
//! use faultline::queue::store::sqlite::SqliteJobs;
//! use faultline::queue::{Job, JobId, JobType, Payload, QueueConfig};
//!
//! const EMAIL: JobType = JobType::from_static("send_email");
//! let mut jobs = SqliteJobs::open("queue.sqlite", QueueConfig::builder().build()?)?;
//! let now = Instant::ZERO;
//! jobs.enqueue(Job::unique(EMAIL, JobId(1), Payload::encode(&"ada@example.com")?), now)?;
//! if let Some(lease) = jobs.lease(now)? {
//!     // deliver lease.job, then:
//!     jobs.ack(&lease.token, now)?.expect("the lease is still ours");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **The database is the authority.** No copy of the queue is kept in memory: every
//! command is one `BEGIN IMMEDIATE` transaction that reads and writes the tables
//! (`faultline_queue_jobs`, `faultline_queue_high`, `faultline_queue_dead`,
//! `faultline_queue_counters`, `faultline_queue_meta`, `faultline_queue_origin`,
//! `faultline_outbox`, `faultline_applied`, created by the versioned migrations of
//! component `queue`).
//!
//! **Durability.** The database is opened by [`crate::store::sqlite::open`]: WAL mode,
//! `synchronous = FULL`, so a command returns `Ok` only after its commit is fsynced. What
//! a command acknowledged survives a killed process and a power cut; a command that
//! returned `Err` (or never returned: the process died) committed all of its change or
//! none of it. Fencing tokens come from a counter row written in the same transaction
//! as the lease, so they only grow, across crashes too.
//!
//! **Concurrency.** Many processes may open one file (on one machine: SQLite's locks
//! need a local file system). One writes at a time: a command waits for another's
//! transaction up to [`BUSY_TIMEOUT`](crate::store::sqlite::BUSY_TIMEOUT), then fails
//! with `SQLITE_BUSY` (a [`StoreError::Sqlite`]; retry it). Reads (`counts`,
//! `dead_letters`, `next_due`) do not wait for writers (WAL). For workers on many
//! machines use [`super::postgres`].

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::JobStore;
use super::sql::{
    self, DEAD_COLS, Delta, JOB_COLS, KEY_ORDER, KeyCols, ROW_COLS, RawDead, RawJob, RawRow, Row,
    Tx,
};
use crate::clock::{Instant, Origin};
use crate::queue::core::{
    Applied, DeadLetter, Enqueued, Fenced, Job, JobId, JobKey, Lease, LeaseToken, Nacked,
    QueueConfig, QueueCounts, Staging,
};
use crate::store::{Migration, StoreError};

/// The component name of the queue's schema in `faultline_schema`.
pub const COMPONENT: &str = "queue";

/// The queue's schema, one migration per version.
pub const MIGRATIONS: &[Migration] = &[
    // 1: jobs, high-water marks, dead letters, counters, the fence and outbox-id
    //    counters, the origin, the outbox and the version-checked target.
    "CREATE TABLE faultline_queue_jobs (
         job_type TEXT NOT NULL,
         kind INTEGER NOT NULL,
         slot TEXT NOT NULL,
         id INTEGER NOT NULL,
         version INTEGER NOT NULL,
         payload TEXT NOT NULL,
         run_at INTEGER,
         attempts INTEGER NOT NULL,
         leased INTEGER NOT NULL,
         at_ns INTEGER NOT NULL,
         fence INTEGER,
         next_version INTEGER,
         next_payload TEXT,
         next_run_at INTEGER,
         redriven INTEGER NOT NULL,
         PRIMARY KEY (job_type, kind, slot, id)
     );
     CREATE INDEX faultline_queue_jobs_at ON faultline_queue_jobs
         (leased, at_ns, job_type, kind, slot, id);
     CREATE TABLE faultline_queue_high (
         job_type TEXT NOT NULL,
         kind INTEGER NOT NULL,
         slot TEXT NOT NULL,
         id INTEGER NOT NULL,
         version INTEGER NOT NULL,
         PRIMARY KEY (job_type, kind, slot, id)
     );
     CREATE TABLE faultline_queue_dead (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         job_type TEXT NOT NULL,
         kind INTEGER NOT NULL,
         slot TEXT NOT NULL,
         id INTEGER NOT NULL,
         version INTEGER NOT NULL,
         payload TEXT NOT NULL,
         run_at INTEGER,
         attempts INTEGER NOT NULL,
         died_at INTEGER NOT NULL,
         last_error TEXT NOT NULL,
         redriven_at INTEGER
     );
     CREATE TABLE faultline_queue_counters (
         shard INTEGER PRIMARY KEY,
         enqueued INTEGER NOT NULL DEFAULT 0,
         done INTEGER NOT NULL DEFAULT 0,
         superseded INTEGER NOT NULL DEFAULT 0,
         expired INTEGER NOT NULL DEFAULT 0,
         retries INTEGER NOT NULL DEFAULT 0,
         redriven INTEGER NOT NULL DEFAULT 0
     );
     INSERT INTO faultline_queue_counters (shard) VALUES (0);
     CREATE TABLE faultline_queue_meta (
         name TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     );
     INSERT INTO faultline_queue_meta (name, value) VALUES ('fence_next', 1), ('outbox_id_next', 1);
     CREATE TABLE faultline_queue_origin (
         one INTEGER PRIMARY KEY CHECK (one = 1),
         system_secs INTEGER NOT NULL,
         system_nanos INTEGER NOT NULL,
         instant INTEGER NOT NULL
     );
     CREATE TABLE faultline_outbox (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         job_type TEXT NOT NULL,
         kind INTEGER NOT NULL,
         slot TEXT NOT NULL,
         id INTEGER NOT NULL,
         version INTEGER NOT NULL,
         payload TEXT NOT NULL,
         run_at INTEGER
     );
     CREATE TABLE faultline_applied (
         job_type TEXT NOT NULL,
         kind INTEGER NOT NULL,
         slot TEXT NOT NULL,
         id INTEGER NOT NULL,
         version INTEGER NOT NULL,
         fence INTEGER NOT NULL,
         PRIMARY KEY (job_type, kind, slot, id)
     );",
];

/// Creates or migrates the queue's tables in `conn` (the outbox's and the target's
/// too: run it on a target's own database before [`apply_once`]). Returns the schema
/// version.
///
/// # Errors
///
/// [`StoreError`] from [`crate::store::sqlite::migrate`].
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    crate::store::sqlite::migrate(conn, COMPONENT, MIGRATIONS)
}

/// The durable queue in a SQLite database. See the [module docs](self).
#[derive(Debug)]
pub struct SqliteJobs {
    conn: Connection,
    config: QueueConfig,
}

impl SqliteJobs {
    /// Opens (creating if need be) the queue in the database file at `path`, with
    /// `config` (every process opening one file should give the same one).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>, config: QueueConfig) -> Result<Self, StoreError> {
        SqliteJobs::from_connection(crate::store::sqlite::open(path)?, config)
    }

    /// The queue in `conn` (opened by [`crate::store::sqlite::open`], or configured
    /// alike), migrating its schema.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the schema cannot be migrated;
    /// [`StoreError::Unsupported`] for a `config` with a per-target lease limit,
    /// dead-letter retention or automatic redrive (this store has none of them yet).
    pub fn from_connection(mut conn: Connection, config: QueueConfig) -> Result<Self, StoreError> {
        super::sql::supported(&config)?;
        migrate(&mut conn)?;
        Ok(SqliteJobs { conn, config })
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The connection, for the caller's own transactions in the same database (an
    /// [`SqliteOutbox`] next to the caller's row change, say).
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The unexpired lease on `key` at `now`, if any (what
    /// [`Queue::lease_of`](crate::queue::Queue::lease_of) answers).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the table cannot be read.
    pub fn lease_of(
        &mut self,
        key: JobKey,
        now: Instant,
    ) -> Result<Option<LeaseToken>, StoreError> {
        let k = sql::key_cols(key)?;
        let fence: Option<Option<i64>> = self
            .conn
            .prepare_cached(&format!(
                "SELECT fence FROM faultline_queue_jobs WHERE {WHERE_KEY} AND leased AND at_ns > ?5"
            ))?
            .query_row(
                params![k.job_type, k.kind, k.slot, k.id, sql::at(now)?],
                |r| r.get(0),
            )
            .optional()?;
        fence
            .flatten()
            .map(|f| Ok(LeaseToken::new(key, sql::uint("fence", f)?)))
            .transpose()
    }

    /// Moves every outbox row of this database into the queue, in commit order, in one
    /// transaction: a crash in the middle moves all or none. Returns how many rows
    /// were moved (duplicates included: a row relayed before, or a version not newer
    /// than one enqueued, is a [`Enqueued::Duplicate`] and makes no job).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the transaction failed: nothing was moved.
    pub fn relay(&mut self, now: Instant) -> Result<usize, StoreError> {
        self.write(|tx, d| {
            let rows = {
                let mut st = tx.0.prepare_cached(&format!(
                    "SELECT seq, {JOB_COLS} FROM faultline_outbox ORDER BY seq"
                ))?;
                let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, raw_job(r, 1)?)))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let Some(&(last, _)) = rows.last() else {
                return Ok(0);
            };
            let n = rows.len();
            for (_, raw) in rows {
                sql::enqueue(tx, d, raw.decode()?, now)?;
            }
            tx.0.prepare_cached("DELETE FROM faultline_outbox WHERE seq <= ?1")?
                .execute([last])?;
            Ok(n)
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, then adds its counter changes and
    /// commits.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut SqliteTx<'_>, &mut Delta) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut d = Delta::default();
        let out = {
            let mut stx = SqliteTx(&tx);
            let out = f(&mut stx, &mut d)?;
            stx.add_counts(&d)?;
            out
        };
        tx.commit()?;
        Ok(out)
    }
}

impl JobStore for SqliteJobs {
    fn visibility_timeout(&self) -> std::time::Duration {
        self.config.visibility_timeout()
    }
    fn origin(&mut self, proposed: Origin) -> Result<Origin, StoreError> {
        let (secs, nanos) = sql::system_cols(proposed.system_time())?;
        let inst = sql::at(proposed.instant())?;
        self.write(|tx, _| {
            tx.0.prepare_cached(
                "INSERT OR IGNORE INTO faultline_queue_origin (one, system_secs, system_nanos, instant)
                 VALUES (1, ?1, ?2, ?3)",
            )?
            .execute(params![secs, nanos, inst])?;
            let (s, n, i): (i64, i64, i64) = tx.0.query_row(
                "SELECT system_secs, system_nanos, instant FROM faultline_queue_origin",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            sql::origin_from(s, n, i)
        })
    }

    fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
        self.write(|tx, d| sql::enqueue(tx, d, job, now))
    }

    fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
        let config = self.config;
        self.write(|tx, d| sql::lease(tx, d, &config, now))
    }

    fn heartbeat(
        &mut self,
        token: &LeaseToken,
        now: Instant,
    ) -> Result<Result<Instant, Fenced>, StoreError> {
        let config = self.config;
        self.write(|tx, d| sql::heartbeat(tx, d, &config, token, now))
    }

    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
        let config = self.config;
        self.write(|tx, d| sql::ack(tx, d, &config, token, now))
    }

    fn nack(
        &mut self,
        token: &LeaseToken,
        error: &str,
        now: Instant,
    ) -> Result<Result<Nacked, Fenced>, StoreError> {
        let config = self.config;
        self.write(|tx, d| sql::nack(tx, d, &config, token, error, now))
    }

    fn redrive(&mut self, now: Instant) -> Result<usize, StoreError> {
        self.write(|tx, d| sql::redrive(tx, d, now))
    }

    fn counts(&mut self) -> Result<QueueCounts, StoreError> {
        let v: [i64; 10] = self.conn.prepare_cached(sql::COUNTS)?.query_row([], |r| {
            let mut v = [0i64; 10];
            for (i, x) in v.iter_mut().enumerate() {
                *x = r.get(i)?;
            }
            Ok(v)
        })?;
        sql::counts_from(v)
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {DEAD_COLS} FROM faultline_queue_dead ORDER BY seq"
        ))?;
        let rows = st.query_map([], raw_dead)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.decode()?.1);
        }
        Ok(out)
    }

    fn next_due(&mut self) -> Result<Option<Instant>, StoreError> {
        let min: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(at_ns) FROM faultline_queue_jobs")?
            .query_row([], |r| r.get(0))?;
        sql::opt_instant(min)
    }
}

fn key_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<KeyCols> {
    Ok(KeyCols {
        job_type: r.get(i)?,
        kind: r.get(i + 1)?,
        slot: r.get(i + 2)?,
        id: r.get(i + 3)?,
    })
}

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        key: key_at(r, 0)?,
        version: r.get(4)?,
        payload: r.get(5)?,
        run_at: r.get(6)?,
        attempts: r.get(7)?,
        leased: r.get(8)?,
        at: r.get(9)?,
        fence: r.get(10)?,
        next_version: r.get(11)?,
        next_payload: r.get(12)?,
        next_run_at: r.get(13)?,
        redriven: r.get(14)?,
    })
}

fn raw_dead(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDead> {
    Ok(RawDead {
        seq: r.get(0)?,
        key: key_at(r, 1)?,
        version: r.get(5)?,
        payload: r.get(6)?,
        run_at: r.get(7)?,
        attempts: r.get(8)?,
        at: r.get(9)?,
        last_error: r.get(10)?,
        redriven_at: r.get(11)?,
    })
}

fn raw_job(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        key: key_at(r, i)?,
        version: r.get(i + 4)?,
        payload: r.get(i + 5)?,
        run_at: r.get(i + 6)?,
    })
}

const WHERE_KEY: &str = "job_type = ?1 AND kind = ?2 AND slot = ?3 AND id = ?4";

/// A command's transaction (the connection inside `BEGIN IMMEDIATE`).
pub(crate) struct SqliteTx<'a>(&'a Connection);

impl SqliteTx<'_> {
    fn rows(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Row>, StoreError> {
        let mut st = self.0.prepare_cached(sql)?;
        let raws = st.query_map(p, raw_row)?;
        let mut out = Vec::new();
        for r in raws {
            out.push(r?.decode()?);
        }
        Ok(out)
    }
}

impl Tx for SqliteTx<'_> {
    fn raise_high(&mut self, key: JobKey, version: u64) -> Result<bool, StoreError> {
        let k = sql::key_cols(key)?;
        let v = sql::int("version", version)?;
        let n = self
            .0
            .prepare_cached(
                "INSERT INTO faultline_queue_high (job_type, kind, slot, id, version)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job_type, kind, slot, id) DO UPDATE SET version = excluded.version
                 WHERE faultline_queue_high.version < excluded.version",
            )?
            .execute(params![k.job_type, k.kind, k.slot, k.id, v])?;
        Ok(n == 1)
    }

    fn high(&mut self, key: JobKey) -> Result<Option<u64>, StoreError> {
        let k = sql::key_cols(key)?;
        let v: Option<i64> = self
            .0
            .prepare_cached(&format!(
                "SELECT version FROM faultline_queue_high WHERE {WHERE_KEY}"
            ))?
            .query_row(params![k.job_type, k.kind, k.slot, k.id], |r| r.get(0))
            .optional()?;
        v.map(|v| sql::uint("version", v)).transpose()
    }

    fn load(&mut self, key: JobKey) -> Result<Option<Row>, StoreError> {
        let k = sql::key_cols(key)?;
        Ok(self
            .rows(
                &format!("SELECT {ROW_COLS} FROM faultline_queue_jobs WHERE {WHERE_KEY}"),
                params![k.job_type, k.kind, k.slot, k.id],
            )?
            .pop())
    }

    fn save(&mut self, row: &Row) -> Result<(), StoreError> {
        let r = RawRow::encode(row)?;
        self.0
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO faultline_queue_jobs ({ROW_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ))?
            .execute(params![
                r.key.job_type,
                r.key.kind,
                r.key.slot,
                r.key.id,
                r.version,
                r.payload,
                r.run_at,
                r.attempts,
                r.leased,
                r.at,
                r.fence,
                r.next_version,
                r.next_payload,
                r.next_run_at,
                r.redriven
            ])?;
        Ok(())
    }

    fn delete(&mut self, key: JobKey) -> Result<(), StoreError> {
        let k = sql::key_cols(key)?;
        self.0
            .prepare_cached(&format!(
                "DELETE FROM faultline_queue_jobs WHERE {WHERE_KEY}"
            ))?
            .execute(params![k.job_type, k.kind, k.slot, k.id])?;
        Ok(())
    }

    fn claim(&mut self, token: &LeaseToken, now: Instant) -> Result<Option<Row>, StoreError> {
        let k = sql::key_cols(token.key())?;
        let fence = sql::int("fence", token.fence())?;
        let now = sql::at(now)?;
        Ok(self
            .rows(
                &format!(
                    "UPDATE faultline_queue_jobs SET fence = fence
                     WHERE {WHERE_KEY} AND leased AND fence = ?5 AND at_ns > ?6
                     RETURNING {ROW_COLS}"
                ),
                params![k.job_type, k.kind, k.slot, k.id, fence, now],
            )?
            .pop())
    }

    fn extend(
        &mut self,
        token: &LeaseToken,
        now: Instant,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let k = sql::key_cols(token.key())?;
        let fence = sql::int("fence", token.fence())?;
        let n = self
            .0
            .prepare_cached(&format!(
                "UPDATE faultline_queue_jobs SET at_ns = ?7
                 WHERE {WHERE_KEY} AND leased AND fence = ?5 AND at_ns > ?6"
            ))?
            .execute(params![
                k.job_type,
                k.kind,
                k.slot,
                k.id,
                fence,
                sql::at(now)?,
                sql::at(deadline)?
            ])?;
        Ok(n == 1)
    }

    fn expired(&mut self, now: Instant) -> Result<Vec<Row>, StoreError> {
        self.rows(
            &format!(
                "SELECT {ROW_COLS} FROM faultline_queue_jobs WHERE leased AND at_ns <= ?1
                 ORDER BY at_ns, {KEY_ORDER}"
            ),
            [sql::at(now)?],
        )
    }

    fn first_due(&mut self, now: Instant) -> Result<Option<Row>, StoreError> {
        Ok(self
            .rows(
                &format!(
                    "SELECT {ROW_COLS} FROM faultline_queue_jobs WHERE NOT leased AND at_ns <= ?1
                     ORDER BY at_ns, {KEY_ORDER} LIMIT 1"
                ),
                [sql::at(now)?],
            )?
            .pop())
    }

    fn next_fence(&mut self) -> Result<u64, StoreError> {
        let f: i64 = self
            .0
            .prepare_cached(
                "UPDATE faultline_queue_meta SET value = value + 1 WHERE name = 'fence_next'
                 RETURNING value - 1",
            )?
            .query_row([], |r| r.get(0))?;
        sql::uint("fence", f)
    }

    fn push_dead(&mut self, dead: &DeadLetter) -> Result<(), StoreError> {
        let j = RawJob::encode(&dead.job)?;
        self.0
            .prepare_cached(
                "INSERT INTO faultline_queue_dead
                 (job_type, kind, slot, id, version, payload, run_at, attempts, died_at, last_error, redriven_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                j.key.job_type,
                j.key.kind,
                j.key.slot,
                j.key.id,
                j.version,
                j.payload,
                j.run_at,
                i64::from(dead.attempts),
                sql::at(dead.at)?,
                dead.last_error,
                sql::opt_at(dead.redriven_at)?
            ])?;
        Ok(())
    }

    fn undriven(&mut self) -> Result<Vec<(i64, DeadLetter)>, StoreError> {
        let mut st = self.0.prepare_cached(&format!(
            "SELECT {DEAD_COLS} FROM faultline_queue_dead WHERE redriven_at IS NULL ORDER BY seq"
        ))?;
        let rows = st.query_map([], raw_dead)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.decode()?);
        }
        Ok(out)
    }

    fn mark_redriven(&mut self, seq: i64, now: Instant) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE faultline_queue_dead SET redriven_at = ?2 WHERE seq = ?1")?
            .execute(params![seq, sql::at(now)?])?;
        Ok(())
    }

    fn add_counts(&mut self, d: &Delta) -> Result<(), StoreError> {
        if d.is_zero() {
            return Ok(());
        }
        self.0
            .prepare_cached(
                "UPDATE faultline_queue_counters SET enqueued = enqueued + ?1, done = done + ?2,
                 superseded = superseded + ?3, expired = expired + ?4, retries = retries + ?5,
                 redriven = redriven + ?6 WHERE shard = 0",
            )?
            .execute(params![
                d.enqueued,
                d.done,
                d.superseded,
                d.expired,
                d.retries,
                d.redriven
            ])?;
        Ok(())
    }
}

/// The outbox inside the caller's SQLite transaction: each staged job is a row of
/// `faultline_outbox` written in `tx`, so the caller's own row change and its jobs
/// commit together or not at all. [`SqliteJobs::relay`] moves committed rows into the
/// queue (when the queue lives in the same database; otherwise a relay of your own
/// reads the table).
///
/// Unique-job ids ([`Staging::next_id`]) come from a counter row of the same database,
/// written in `tx`: unique across the database once committed (the id of a write
/// rolled back may be handed out again, as [`Staging`] allows). `next_id` cannot
/// return an error: when the counter cannot be read, the id returned is 0 and the
/// outbox is *poisoned*: every later [`stage`](Staging::stage) fails with that error,
/// and so does [`finish`](SqliteOutbox::finish) (call it before you commit if you use
/// ids without staging them; or use [`try_next_id`](SqliteOutbox::try_next_id)).
///
/// ```
/// use faultline::queue::store::sqlite::{SqliteJobs, SqliteOutbox};
/// use faultline::queue::{JobType, Payload, QueueConfig, Staging};
///
/// const EMAIL: JobType = JobType::from_static("send_email");
/// let conn = faultline::store::sqlite::open_in_memory()?;
/// let mut jobs = SqliteJobs::from_connection(conn, QueueConfig::builder().build()?)?;
/// let conn = jobs.connection_mut();
/// conn.execute_batch("CREATE TABLE users (name TEXT)")?;
/// let tx = conn.transaction()?;
/// tx.execute("INSERT INTO users (name) VALUES ('ada')", [])?;
/// let mut outbox = SqliteOutbox::new(&tx);
/// outbox.stage_unique(EMAIL, Payload::encode(&"ada@example.com")?)?;
/// outbox.finish()?;
/// tx.commit()?;
/// assert_eq!(jobs.relay(faultline::clock::Instant::ZERO)?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteOutbox<'a, 'c> {
    tx: &'a Transaction<'c>,
    poisoned: Option<String>,
}

impl<'a, 'c> SqliteOutbox<'a, 'c> {
    /// The outbox in the caller's transaction `tx` (on a database migrated by
    /// [`migrate`] or [`SqliteJobs::open`]).
    pub fn new(tx: &'a Transaction<'c>) -> Self {
        SqliteOutbox { tx, poisoned: None }
    }

    /// A new unique-job id, or why the counter could not be read.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] when the counter row cannot be written.
    pub fn try_next_id(&mut self) -> Result<JobId, StoreError> {
        let id: i64 = self
            .tx
            .prepare_cached(
                "UPDATE faultline_queue_meta SET value = value + 1 WHERE name = 'outbox_id_next'
                 RETURNING value - 1",
            )?
            .query_row([], |r| r.get(0))?;
        Ok(JobId(sql::uint("job id", id)?))
    }

    /// `Ok` unless a [`next_id`](Staging::next_id) failed (the outbox is poisoned: do
    /// not commit).
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] naming the failure of `next_id`.
    pub fn finish(self) -> Result<(), StoreError> {
        self.check()
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(e) => Err(sql::corrupt("outbox id", e.clone())),
            None => Ok(()),
        }
    }
}

impl Staging for SqliteOutbox<'_, '_> {
    type Error = StoreError;

    fn stage(&mut self, job: Job) -> Result<(), StoreError> {
        self.check()?;
        let j = RawJob::encode(&job)?;
        self.tx
            .prepare_cached(&format!(
                "INSERT INTO faultline_outbox ({JOB_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))?
            .execute(params![
                j.key.job_type,
                j.key.kind,
                j.key.slot,
                j.key.id,
                j.version,
                j.payload,
                j.run_at
            ])?;
        Ok(())
    }

    fn next_id(&mut self) -> JobId {
        match self.try_next_id() {
            Ok(id) => id,
            Err(e) => {
                self.poisoned.get_or_insert(e.to_string());
                JobId(0)
            }
        }
    }
}

/// Applies the job of `lease` at a target, in the caller's transaction `tx` (next to
/// the target's own row change, in the target's database migrated by [`migrate`]):
/// [`Applied::Applied`] when its version is newer than the one applied for its key (a
/// unique job: the first time), so the caller makes the change; [`Applied::Stale`]
/// when this or a newer version was applied (acknowledge without effect);
/// [`Applied::Fenced`] when a lease with a larger fencing token applied this key
/// already: the caller's lease was taken over, and it must not write. Fencing is
/// enforced here, at the target, not only at the queue's ack: a worker that lost its
/// lease cannot overwrite a newer version.
///
/// # Errors
///
/// [`StoreError`] when the table cannot be read or written (roll back).
pub fn apply_once(tx: &Transaction<'_>, lease: &Lease) -> Result<Applied, StoreError> {
    let k = sql::key_cols(lease.job.key)?;
    let version = sql::int("version", lease.job.version)?;
    let fence = sql::int("fence", lease.token.fence())?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO faultline_applied (job_type, kind, slot, id, version, fence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![k.job_type, k.kind, k.slot, k.id, version, fence])?;
    if inserted == 1 {
        return Ok(Applied::Applied);
    }
    let (held, seen): (i64, i64) = tx
        .prepare_cached(&format!(
            "SELECT version, fence FROM faultline_applied WHERE {WHERE_KEY}"
        ))?
        .query_row(params![k.job_type, k.kind, k.slot, k.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let out = sql::decide(held, seen, version, fence);
    if out == Applied::Fenced {
        return Ok(out);
    }
    tx.prepare_cached(&format!(
        "UPDATE faultline_applied SET version = MAX(version, ?5), fence = MAX(fence, ?6)
         WHERE {WHERE_KEY}"
    ))?
    .execute(params![k.job_type, k.kind, k.slot, k.id, version, fence])?;
    Ok(out)
}
