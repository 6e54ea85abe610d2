//! The queue in Postgres, for workers on many machines: [`PostgresJobs`], the outbox
//! inside the caller's transaction ([`PostgresOutbox`]) and a version-checked target
//! ([`apply_once`]).
//!
//! ```no_run
//! use faultline::clock::Instant;
//! use faultline::queue::store::JobStore;
//! use faultline::queue::store::postgres::PostgresJobs;
//! use faultline::queue::{Job, JobType, Payload, QueueConfig};
//! use faultline::name::Name;
//!
//! const SYNC: JobType = JobType::from_static("sync_profile");
//! let mut jobs = PostgresJobs::connect(
//!     "postgres://app@db.internal/app",
//!     QueueConfig::builder().build()?,
//! )?;
//! let now = Instant::ZERO; // each process maps its clock onto the stored origin
//! jobs.enqueue(Job::keyed(SYNC, Name::new("user-7")?, 3, Payload::encode(&"Ada")?), now)?;
//! while let Some(lease) = jobs.lease(now)? {
//!     // deliver lease.job (at the target: apply_once in its transaction), then:
//!     if jobs.ack(&lease.token, now)?.is_err() {
//!         // fenced: the lease expired and another worker took the job over
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **The database is the authority.** No copy of the queue is kept in memory; every
//! command is one transaction on the tables of component `queue` (the same tables as
//! the SQLite store's, with `BIGINT`, `BOOLEAN` and `TEXT COLLATE "C"` columns so keys
//! sort bytewise everywhere).
//!
//! **Durability.** A command returns `Ok` after its commit, which returns after the WAL
//! reached disk with the server's defaults (`fsync = on`, `synchronous_commit = on`):
//! what a command acknowledged survives a killed worker, a killed server and a power
//! cut of the server. A command that failed committed all of its change or none.
//! Fencing tokens come from the sequence `faultline_queue_fence`: they only grow,
//! across crashes of either side (a sequence may skip numbers, never repeat one).
//!
//! **Concurrency.** Any number of workers on any number of machines share one
//! database, each with its own `PostgresJobs` (its own connection). A lease takes the
//! earliest due row with `FOR UPDATE SKIP LOCKED`, so workers never wait for each other
//! nor get the same job; `ack`, `nack` and `heartbeat` check the fencing token in the
//! `WHERE` of their `UPDATE` (never read, then write), so a worker whose lease expired
//! and was taken over is refused however the commands interleave; enqueues of one key
//! take turns on its high-water row. Counters are spread over 16 rows so acks do not
//! queue behind one hot row. Every transaction waits for at most one row another holds,
//! so commands do not deadlock. This client is synchronous: call it from threads of
//! your own or `spawn_blocking`, never on a tokio runtime thread (it panics there).

use std::sync::atomic::{AtomicU32, Ordering};

use std::collections::HashMap;

use postgres::{Client, Statement, Transaction};

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

/// How many rows the counters are spread over.
const SHARDS: u32 = 16;

/// The advisory lock that makes relays and redrives take turns (each locks the rows
/// of several keys).
const BATCH_LOCK: i64 = 7_046_547;

/// The queue's schema, one migration per version.
pub const MIGRATIONS: &[Migration] = &[
    // 1: jobs, high-water marks, dead letters, counters, the fence and outbox-id
    //    sequences, the origin, the outbox and the version-checked target.
    r#"CREATE TABLE faultline_queue_jobs (
         job_type TEXT COLLATE "C" NOT NULL,
         kind BIGINT NOT NULL,
         slot TEXT COLLATE "C" NOT NULL,
         id BIGINT NOT NULL,
         version BIGINT NOT NULL,
         payload TEXT NOT NULL,
         run_at BIGINT,
         attempts BIGINT NOT NULL,
         leased BOOLEAN NOT NULL,
         at_ns BIGINT NOT NULL,
         fence BIGINT,
         next_version BIGINT,
         next_payload TEXT,
         next_run_at BIGINT,
         redriven BOOLEAN NOT NULL,
         PRIMARY KEY (job_type, kind, slot, id)
     );
     CREATE INDEX faultline_queue_jobs_at ON faultline_queue_jobs
         (leased, at_ns, job_type, kind, slot, id);
     CREATE TABLE faultline_queue_high (
         job_type TEXT COLLATE "C" NOT NULL,
         kind BIGINT NOT NULL,
         slot TEXT COLLATE "C" NOT NULL,
         id BIGINT NOT NULL,
         version BIGINT NOT NULL,
         PRIMARY KEY (job_type, kind, slot, id)
     );
     CREATE TABLE faultline_queue_dead (
         seq BIGSERIAL PRIMARY KEY,
         job_type TEXT COLLATE "C" NOT NULL,
         kind BIGINT NOT NULL,
         slot TEXT COLLATE "C" NOT NULL,
         id BIGINT NOT NULL,
         version BIGINT NOT NULL,
         payload TEXT NOT NULL,
         run_at BIGINT,
         attempts BIGINT NOT NULL,
         died_at BIGINT NOT NULL,
         last_error TEXT NOT NULL,
         redriven_at BIGINT
     );
     CREATE INDEX faultline_queue_dead_undriven ON faultline_queue_dead (seq)
         WHERE redriven_at IS NULL;
     CREATE TABLE faultline_queue_counters (
         shard BIGINT PRIMARY KEY,
         enqueued BIGINT NOT NULL DEFAULT 0,
         done BIGINT NOT NULL DEFAULT 0,
         superseded BIGINT NOT NULL DEFAULT 0,
         expired BIGINT NOT NULL DEFAULT 0,
         retries BIGINT NOT NULL DEFAULT 0,
         redriven BIGINT NOT NULL DEFAULT 0
     );
     INSERT INTO faultline_queue_counters (shard) SELECT generate_series(0, 15);
     CREATE SEQUENCE faultline_queue_fence;
     CREATE SEQUENCE faultline_outbox_id;
     CREATE TABLE faultline_queue_origin (
         one BIGINT PRIMARY KEY CHECK (one = 1),
         system_secs BIGINT NOT NULL,
         system_nanos BIGINT NOT NULL,
         instant BIGINT NOT NULL
     );
     CREATE TABLE faultline_outbox (
         seq BIGSERIAL PRIMARY KEY,
         job_type TEXT COLLATE "C" NOT NULL,
         kind BIGINT NOT NULL,
         slot TEXT COLLATE "C" NOT NULL,
         id BIGINT NOT NULL,
         version BIGINT NOT NULL,
         payload TEXT NOT NULL,
         run_at BIGINT
     );
     CREATE TABLE faultline_applied (
         job_type TEXT COLLATE "C" NOT NULL,
         kind BIGINT NOT NULL,
         slot TEXT COLLATE "C" NOT NULL,
         id BIGINT NOT NULL,
         version BIGINT NOT NULL,
         fence BIGINT NOT NULL,
         PRIMARY KEY (job_type, kind, slot, id)
     );"#,
];

/// Creates or migrates the queue's tables (the outbox's and the target's too: run it
/// on a target's own database before [`apply_once`]). Returns the schema version.
///
/// # Errors
///
/// [`StoreError`] from [`crate::store::postgres::migrate`].
pub fn migrate(client: &mut Client) -> Result<i64, StoreError> {
    crate::store::postgres::migrate(client, COMPONENT, MIGRATIONS)
}

static NEXT_SHARD: AtomicU32 = AtomicU32::new(0);

/// The durable queue in a Postgres database. See the [module docs](self).
pub struct PostgresJobs {
    client: Client,
    config: QueueConfig,
    shard: i64,
    statements: HashMap<String, Statement>,
}

impl std::fmt::Debug for PostgresJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresJobs")
            .field("config", &self.config)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl PostgresJobs {
    /// Connects to the database at `url` (see [`crate::store::postgres::connect`]) and
    /// migrates the queue's schema; `config` should be the same in every worker.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the server cannot be reached or the schema migrated.
    pub fn connect(url: &str, config: QueueConfig) -> Result<Self, StoreError> {
        PostgresJobs::from_client(crate::store::postgres::connect(url)?, config)
    }

    /// The queue over `client`, migrating its schema.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the schema cannot be migrated;
    /// [`StoreError::Unsupported`] for a `config` with a per-target lease limit,
    /// dead-letter retention or automatic redrive (this store has none of them yet).
    pub fn from_client(mut client: Client, config: QueueConfig) -> Result<Self, StoreError> {
        super::sql::supported(&config)?;
        migrate(&mut client)?;
        let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) ^ std::process::id();
        Ok(PostgresJobs {
            client,
            config,
            shard: i64::from(n % SHARDS),
            statements: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The client, for the caller's own transactions in the same database (a
    /// [`PostgresOutbox`] next to the caller's row change, say).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Moves every committed outbox row of this database into the queue, in commit
    /// order, in one transaction: a crash in the middle moves all or none. Relays on
    /// several machines take turns. Returns how many rows were moved (duplicates
    /// included: a row relayed before, or a version not newer than one enqueued, is a
    /// [`Enqueued::Duplicate`] and makes no job).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the transaction failed: nothing was moved.
    pub fn relay(&mut self, now: Instant) -> Result<usize, StoreError> {
        self.write(|tx, d| {
            tx.ex("SELECT pg_advisory_xact_lock($1)", &[&BATCH_LOCK])?;
            let rows = tx.q(
                &format!("SELECT seq, {JOB_COLS} FROM faultline_outbox ORDER BY seq FOR UPDATE"),
                &[],
            )?;
            let mut seqs = Vec::with_capacity(rows.len());
            for r in rows {
                seqs.push(r.try_get::<_, i64>(0)?);
                sql::enqueue(tx, d, raw_job(&r, 1)?.decode()?, now)?;
            }
            tx.0.execute("DELETE FROM faultline_outbox WHERE seq = ANY($1)", &[&seqs])?;
            Ok(seqs.len())
        })
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut PgTx<'_, '_>, &mut Delta) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.client.transaction()?;
        let mut d = Delta::default();
        let out = {
            let mut ptx = PgTx(&mut tx, self.shard, &mut self.statements);
            let out = f(&mut ptx, &mut d)?;
            ptx.add_counts(&d)?;
            out
        };
        tx.commit()?;
        Ok(out)
    }
}

impl JobStore for PostgresJobs {
    fn visibility_timeout(&self) -> std::time::Duration {
        self.config.visibility_timeout()
    }
    fn origin(&mut self, proposed: Origin) -> Result<Origin, StoreError> {
        let (secs, nanos) = sql::system_cols(proposed.system_time())?;
        let inst = sql::at(proposed.instant())?;
        self.write(|tx, _| {
            tx.0.execute(
                "INSERT INTO faultline_queue_origin (one, system_secs, system_nanos, instant)
                 VALUES (1, $1, $2, $3) ON CONFLICT DO NOTHING",
                &[&secs, &nanos, &inst],
            )?;
            let r = tx.0.query_one(
                "SELECT system_secs, system_nanos, instant FROM faultline_queue_origin",
                &[],
            )?;
            sql::origin_from(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)
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
        self.write(|tx, d| {
            tx.ex("SELECT pg_advisory_xact_lock($1)", &[&BATCH_LOCK])?;
            sql::redrive(tx, d, now)
        })
    }

    fn counts(&mut self) -> Result<QueueCounts, StoreError> {
        let r = self.client.query_one(sql::COUNTS, &[])?;
        let mut v = [0i64; 10];
        for (i, x) in v.iter_mut().enumerate() {
            *x = r.try_get(i)?;
        }
        sql::counts_from(v)
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = self.client.query(
            &format!("SELECT {DEAD_COLS} FROM faultline_queue_dead ORDER BY seq"),
            &[],
        )?;
        rows.iter().map(|r| Ok(raw_dead(r)?.decode()?.1)).collect()
    }

    fn next_due(&mut self) -> Result<Option<Instant>, StoreError> {
        let r = self
            .client
            .query_one("SELECT MIN(at_ns) FROM faultline_queue_jobs", &[])?;
        sql::opt_instant(r.try_get(0)?)
    }
}

fn key_at(r: &postgres::Row, i: usize) -> Result<KeyCols, postgres::Error> {
    Ok(KeyCols {
        job_type: r.try_get(i)?,
        kind: r.try_get(i + 1)?,
        slot: r.try_get(i + 2)?,
        id: r.try_get(i + 3)?,
    })
}

fn raw_row(r: &postgres::Row) -> Result<RawRow, postgres::Error> {
    Ok(RawRow {
        key: key_at(r, 0)?,
        version: r.try_get(4)?,
        payload: r.try_get(5)?,
        run_at: r.try_get(6)?,
        attempts: r.try_get(7)?,
        leased: r.try_get(8)?,
        at: r.try_get(9)?,
        fence: r.try_get(10)?,
        next_version: r.try_get(11)?,
        next_payload: r.try_get(12)?,
        next_run_at: r.try_get(13)?,
        redriven: r.try_get(14)?,
    })
}

fn raw_dead(r: &postgres::Row) -> Result<RawDead, postgres::Error> {
    Ok(RawDead {
        seq: r.try_get(0)?,
        key: key_at(r, 1)?,
        version: r.try_get(5)?,
        payload: r.try_get(6)?,
        run_at: r.try_get(7)?,
        attempts: r.try_get(8)?,
        at: r.try_get(9)?,
        last_error: r.try_get(10)?,
        redriven_at: r.try_get(11)?,
    })
}

fn raw_job(r: &postgres::Row, i: usize) -> Result<RawJob, postgres::Error> {
    Ok(RawJob {
        key: key_at(r, i)?,
        version: r.try_get(i + 4)?,
        payload: r.try_get(i + 5)?,
        run_at: r.try_get(i + 6)?,
    })
}

const WHERE_KEY: &str = "job_type = $1 AND kind = $2 AND slot = $3 AND id = $4";

/// A command's transaction, the counter shard it adds to, and the connection's
/// prepared statements (looked up by text, never iterated).
pub(crate) struct PgTx<'a, 'c>(
    &'a mut Transaction<'c>,
    i64,
    &'a mut HashMap<String, Statement>,
);

type Params<'p> = &'p [&'p (dyn postgres::types::ToSql + Sync)];

impl PgTx<'_, '_> {
    /// The statement of `sql`, prepared once per connection.
    fn prep(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(st) = self.2.get(sql) {
            return Ok(st.clone());
        }
        let st = self.0.prepare(sql)?;
        self.2.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
    fn q(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<postgres::Row>, StoreError> {
        let st = self.prep(sql)?;
        Ok(self.0.query(&st, p)?)
    }
    fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<postgres::Row>, StoreError> {
        Ok(self.q(sql, p)?.into_iter().next())
    }
    fn ex(&mut self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        let st = self.prep(sql)?;
        Ok(self.0.execute(&st, p)?)
    }
    fn rows(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let rows = self.q(sql, p)?;
        rows.iter().map(|r| raw_row(r)?.decode()).collect()
    }
}

impl Tx for PgTx<'_, '_> {
    fn raise_high(&mut self, key: JobKey, version: u64) -> Result<bool, StoreError> {
        let k = sql::key_cols(key)?;
        let v = sql::int("version", version)?;
        let n = self.ex(
            "INSERT INTO faultline_queue_high (job_type, kind, slot, id, version)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_type, kind, slot, id) DO UPDATE SET version = EXCLUDED.version
             WHERE faultline_queue_high.version < EXCLUDED.version",
            &[&k.job_type, &k.kind, &k.slot, &k.id, &v],
        )?;
        Ok(n == 1)
    }

    fn high(&mut self, key: JobKey) -> Result<Option<u64>, StoreError> {
        let k = sql::key_cols(key)?;
        let r = self.opt(
            &format!("SELECT version FROM faultline_queue_high WHERE {WHERE_KEY} FOR UPDATE"),
            &[&k.job_type, &k.kind, &k.slot, &k.id],
        )?;
        r.map(|r| sql::uint("version", r.try_get(0)?)).transpose()
    }

    fn load(&mut self, key: JobKey) -> Result<Option<Row>, StoreError> {
        let k = sql::key_cols(key)?;
        Ok(self
            .rows(
                &format!(
                    "SELECT {ROW_COLS} FROM faultline_queue_jobs WHERE {WHERE_KEY} FOR UPDATE"
                ),
                &[&k.job_type, &k.kind, &k.slot, &k.id],
            )?
            .pop())
    }

    fn save(&mut self, row: &Row) -> Result<(), StoreError> {
        let r = RawRow::encode(row)?;
        self.ex(
            &format!(
                "INSERT INTO faultline_queue_jobs ({ROW_COLS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (job_type, kind, slot, id) DO UPDATE SET
                 version = EXCLUDED.version, payload = EXCLUDED.payload, run_at = EXCLUDED.run_at,
                 attempts = EXCLUDED.attempts, leased = EXCLUDED.leased, at_ns = EXCLUDED.at_ns,
                 fence = EXCLUDED.fence, next_version = EXCLUDED.next_version,
                 next_payload = EXCLUDED.next_payload, next_run_at = EXCLUDED.next_run_at,
                 redriven = EXCLUDED.redriven"
            ),
            &[
                &r.key.job_type,
                &r.key.kind,
                &r.key.slot,
                &r.key.id,
                &r.version,
                &r.payload,
                &r.run_at,
                &r.attempts,
                &r.leased,
                &r.at,
                &r.fence,
                &r.next_version,
                &r.next_payload,
                &r.next_run_at,
                &r.redriven,
            ],
        )?;
        Ok(())
    }

    fn delete(&mut self, key: JobKey) -> Result<(), StoreError> {
        let k = sql::key_cols(key)?;
        self.ex(
            &format!("DELETE FROM faultline_queue_jobs WHERE {WHERE_KEY}"),
            &[&k.job_type, &k.kind, &k.slot, &k.id],
        )?;
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
                     WHERE {WHERE_KEY} AND leased AND fence = $5 AND at_ns > $6
                     RETURNING {ROW_COLS}"
                ),
                &[&k.job_type, &k.kind, &k.slot, &k.id, &fence, &now],
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
        let (now, deadline) = (sql::at(now)?, sql::at(deadline)?);
        let n = self.ex(
            &format!(
                "UPDATE faultline_queue_jobs SET at_ns = $7
                 WHERE {WHERE_KEY} AND leased AND fence = $5 AND at_ns > $6"
            ),
            &[
                &k.job_type,
                &k.kind,
                &k.slot,
                &k.id,
                &fence,
                &now,
                &deadline,
            ],
        )?;
        Ok(n == 1)
    }

    fn expired(&mut self, now: Instant) -> Result<Vec<Row>, StoreError> {
        let now = sql::at(now)?;
        self.rows(
            &format!(
                "SELECT {ROW_COLS} FROM faultline_queue_jobs WHERE leased AND at_ns <= $1
                 ORDER BY at_ns, {KEY_ORDER} FOR UPDATE SKIP LOCKED"
            ),
            &[&now],
        )
    }

    fn first_due(&mut self, now: Instant) -> Result<Option<Row>, StoreError> {
        let now = sql::at(now)?;
        Ok(self
            .rows(
                &format!(
                    "SELECT {ROW_COLS} FROM faultline_queue_jobs WHERE NOT leased AND at_ns <= $1
                     ORDER BY at_ns, {KEY_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED"
                ),
                &[&now],
            )?
            .pop())
    }

    fn next_fence(&mut self) -> Result<u64, StoreError> {
        let r = self.q("SELECT nextval('faultline_queue_fence')", &[])?;
        let r = r.first().ok_or_else(|| sql::corrupt("fence", "no value"))?;
        sql::uint("fence", r.try_get(0)?)
    }

    fn push_dead(&mut self, dead: &DeadLetter) -> Result<(), StoreError> {
        let j = RawJob::encode(&dead.job)?;
        let attempts = i64::from(dead.attempts);
        let at = sql::at(dead.at)?;
        let redriven = sql::opt_at(dead.redriven_at)?;
        self.ex(
            "INSERT INTO faultline_queue_dead
             (job_type, kind, slot, id, version, payload, run_at, attempts, died_at, last_error, redriven_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &j.key.job_type,
                &j.key.kind,
                &j.key.slot,
                &j.key.id,
                &j.version,
                &j.payload,
                &j.run_at,
                &attempts,
                &at,
                &dead.last_error,
                &redriven,
            ],
        )?;
        Ok(())
    }

    fn undriven(&mut self) -> Result<Vec<(i64, DeadLetter)>, StoreError> {
        let rows = self.q(
            &format!(
                "SELECT {DEAD_COLS} FROM faultline_queue_dead WHERE redriven_at IS NULL
                 ORDER BY seq FOR UPDATE"
            ),
            &[],
        )?;
        rows.iter().map(|r| raw_dead(r)?.decode()).collect()
    }

    fn mark_redriven(&mut self, seq: i64, now: Instant) -> Result<(), StoreError> {
        let now = sql::at(now)?;
        self.ex(
            "UPDATE faultline_queue_dead SET redriven_at = $2 WHERE seq = $1",
            &[&seq, &now],
        )?;
        Ok(())
    }

    fn add_counts(&mut self, d: &Delta) -> Result<(), StoreError> {
        if d.is_zero() {
            return Ok(());
        }
        let shard = self.1;
        self.ex(
            "UPDATE faultline_queue_counters SET enqueued = enqueued + $1, done = done + $2,
             superseded = superseded + $3, expired = expired + $4, retries = retries + $5,
             redriven = redriven + $6 WHERE shard = $7",
            &[
                &d.enqueued,
                &d.done,
                &d.superseded,
                &d.expired,
                &d.retries,
                &d.redriven,
                &shard,
            ],
        )?;
        Ok(())
    }
}

/// The outbox inside the caller's Postgres transaction: each staged job is a row of
/// `faultline_outbox` written in `tx`, so the caller's own row change and its jobs
/// commit together or not at all. [`PostgresJobs::relay`] moves committed rows into
/// the queue.
///
/// Unique-job ids ([`Staging::next_id`]) come from the sequence `faultline_outbox_id`:
/// unique across the database, even between transactions that roll back. `next_id`
/// cannot return an error: when the sequence cannot be read, the id returned is 0 and
/// the outbox is *poisoned*: every later [`stage`](Staging::stage) fails, and so does
/// [`finish`](PostgresOutbox::finish) (or use
/// [`try_next_id`](PostgresOutbox::try_next_id)).
///
/// ```no_run
/// use faultline::queue::store::postgres::{PostgresJobs, PostgresOutbox};
/// use faultline::queue::{JobType, Payload, QueueConfig, Staging};
///
/// const EMAIL: JobType = JobType::from_static("send_email");
/// let mut jobs = PostgresJobs::connect("postgres://app@db/app", QueueConfig::builder().build()?)?;
/// let mut tx = jobs.client_mut().transaction()?;
/// tx.execute("UPDATE users SET email = $1 WHERE id = 7", &[&"ada@example.com"])?;
/// let mut outbox = PostgresOutbox::new(&mut tx);
/// outbox.stage_unique(EMAIL, Payload::encode(&"ada@example.com")?)?;
/// outbox.finish()?;
/// tx.commit()?;
/// jobs.relay(faultline::clock::Instant::ZERO)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PostgresOutbox<'a, 'c> {
    tx: &'a mut Transaction<'c>,
    poisoned: Option<String>,
}

impl std::fmt::Debug for PostgresOutbox<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOutbox")
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<'a, 'c> PostgresOutbox<'a, 'c> {
    /// The outbox in the caller's transaction `tx` (on a database migrated by
    /// [`migrate`] or [`PostgresJobs::connect`]).
    pub fn new(tx: &'a mut Transaction<'c>) -> Self {
        PostgresOutbox { tx, poisoned: None }
    }

    /// The caller's transaction, for more of its own statements.
    pub fn transaction(&mut self) -> &mut Transaction<'c> {
        self.tx
    }

    /// A new unique-job id, or why the sequence could not be read.
    ///
    /// # Errors
    ///
    /// [`StoreError::Postgres`] when the sequence cannot be read.
    pub fn try_next_id(&mut self) -> Result<JobId, StoreError> {
        let r = self
            .tx
            .query_one("SELECT nextval('faultline_outbox_id')", &[])?;
        Ok(JobId(sql::uint("job id", r.try_get(0)?)?))
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

impl Staging for PostgresOutbox<'_, '_> {
    type Error = StoreError;

    fn stage(&mut self, job: Job) -> Result<(), StoreError> {
        self.check()?;
        let j = RawJob::encode(&job)?;
        self.tx.execute(
            &format!(
                "INSERT INTO faultline_outbox ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                &j.key.job_type,
                &j.key.kind,
                &j.key.slot,
                &j.key.id,
                &j.version,
                &j.payload,
                &j.run_at,
            ],
        )?;
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
/// the target's own row change, in a database migrated by [`migrate`]): the Postgres
/// twin of [`sqlite::apply_once`](super::sqlite::apply_once), with the same answers.
/// Two workers applying one key at once take turns on its row; the one whose lease was
/// taken over gets [`Applied::Fenced`] and must not write.
///
/// # Errors
///
/// [`StoreError`] when the table cannot be read or written (roll back).
pub fn apply_once(tx: &mut Transaction<'_>, lease: &Lease) -> Result<Applied, StoreError> {
    let k = sql::key_cols(lease.job.key)?;
    let version = sql::int("version", lease.job.version)?;
    let fence = sql::int("fence", lease.token.fence())?;
    let inserted = tx.execute(
        "INSERT INTO faultline_applied (job_type, kind, slot, id, version, fence)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[&k.job_type, &k.kind, &k.slot, &k.id, &version, &fence],
    )?;
    if inserted == 1 {
        return Ok(Applied::Applied);
    }
    let r = tx.query_one(
        &format!("SELECT version, fence FROM faultline_applied WHERE {WHERE_KEY} FOR UPDATE"),
        &[&k.job_type, &k.kind, &k.slot, &k.id],
    )?;
    let out = sql::decide(r.try_get(0)?, r.try_get(1)?, version, fence);
    if out == Applied::Fenced {
        return Ok(out);
    }
    tx.execute(
        &format!(
            "UPDATE faultline_applied SET version = GREATEST(version, $5),
             fence = GREATEST(fence, $6) WHERE {WHERE_KEY}"
        ),
        &[&k.job_type, &k.kind, &k.slot, &k.id, &version, &fence],
    )?;
    Ok(out)
}
