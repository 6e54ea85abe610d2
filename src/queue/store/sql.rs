//! What the SQL stores share: the queue's semantics written once over a transaction
//! ([`Tx`]), the row codecs, the integer conversions and the retry jitter. The SQL
//! text of each dialect lives in its own module; the decisions live here, so SQLite and
//! Postgres cannot drift apart from each other (nor, the conformance suite checks,
//! from the sans-IO [`Queue`](crate::queue::Queue)).

use std::time::{Duration, SystemTime};

use crate::clock::{Instant, Origin};
use crate::name::Name;
use crate::queue::core::{
    Applied, DeadLetter, Enqueued, Fenced, Job, JobId, JobKey, JobType, LEASE_EXPIRED, Lease,
    LeaseToken, Nacked, Payload, QueueConfig, QueueCounts, Slot,
};
use crate::splitmix::SplitMix64;
use crate::store::StoreError;

/// Refuses a configuration with the knobs the SQL stores do not implement yet (the
/// per-target lease limit, dead-letter retention, automatic redrive): a queue that
/// silently ignored them would not isolate the targets it was asked to.
pub(crate) fn supported(config: &QueueConfig) -> Result<(), StoreError> {
    let what = if config.leases_per_target_max().is_some() {
        "leases_per_target_max"
    } else if config.dead_letters_max().is_some() {
        "dead_letters_max"
    } else if config.redrive().is_some() {
        "redrive_after"
    } else {
        return Ok(());
    };
    Err(StoreError::Unsupported { what })
}

/// `v` as a database integer, or [`StoreError::OutOfRange`].
pub(crate) fn int(what: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange { what, value: v })
}

/// A database integer read back as a `u64`, or [`StoreError::Corrupt`] when negative.
pub(crate) fn uint(what: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(what, format!("negative value {v}")))
}

pub(crate) fn corrupt(what: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

pub(crate) fn instant(v: i64) -> Result<Instant, StoreError> {
    uint("instant", v).map(Instant::from_nanos)
}

pub(crate) fn at(i: Instant) -> Result<i64, StoreError> {
    int("instant", i.as_nanos())
}

pub(crate) fn opt_at(i: Option<Instant>) -> Result<Option<i64>, StoreError> {
    i.map(at).transpose()
}

pub(crate) fn opt_instant(v: Option<i64>) -> Result<Option<Instant>, StoreError> {
    v.map(instant).transpose()
}

/// A job key as columns: `job_type`, `kind` (0 keyed, 1 unique), `slot` (the key's
/// name, empty for a unique job), `id` (the unique id, 0 for a keyed job). Ordered by
/// these columns (bytewise text), keys sort as [`JobKey`]'s `Ord` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyCols {
    pub job_type: String,
    pub kind: i64,
    pub slot: String,
    pub id: i64,
}

pub(crate) fn key_cols(key: JobKey) -> Result<KeyCols, StoreError> {
    let (kind, slot, id) = match key.slot {
        Slot::Key(k) => (0, k.as_str().to_owned(), 0),
        Slot::Id(JobId(id)) => (1, String::new(), int("job id", id)?),
    };
    Ok(KeyCols {
        job_type: key.job_type.as_str().to_owned(),
        kind,
        slot,
        id,
    })
}

pub(crate) fn decode_key(c: &KeyCols) -> Result<JobKey, StoreError> {
    let job_type = JobType::new(&c.job_type).map_err(|e| corrupt("job type", e.to_string()))?;
    match c.kind {
        0 => Ok(JobKey::keyed(
            job_type,
            Name::new(&c.slot).map_err(|e| corrupt("job key", e.to_string()))?,
        )),
        1 => Ok(JobKey::unique(job_type, JobId(uint("job id", c.id)?))),
        k => Err(corrupt("job kind", format!("unknown kind {k}"))),
    }
}

/// A newer version waiting behind the lease of an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Next {
    pub version: u64,
    pub payload: Payload,
    pub run_at: Option<Instant>,
}

/// One row of `faultline_queue_jobs`: the queue's entry for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub key: JobKey,
    pub version: u64,
    pub payload: Payload,
    pub run_at: Option<Instant>,
    pub attempts: u32,
    pub leased: bool,
    /// Due at (ready) or the lease's deadline (leased).
    pub at: Instant,
    pub fence: Option<u64>,
    pub next: Option<Next>,
    pub redriven: bool,
}

impl Row {
    fn job(&self) -> Job {
        Job {
            key: self.key,
            version: self.version,
            payload: self.payload.clone(),
            run_at: self.run_at,
            target: None,
        }
    }
}

/// The columns of a [`Row`], in the order of [`ROW_COLS`].
pub(crate) struct RawRow {
    pub key: KeyCols,
    pub version: i64,
    pub payload: String,
    pub run_at: Option<i64>,
    pub attempts: i64,
    pub leased: bool,
    pub at: i64,
    pub fence: Option<i64>,
    pub next_version: Option<i64>,
    pub next_payload: Option<String>,
    pub next_run_at: Option<i64>,
    pub redriven: bool,
}

/// The job table's columns, in [`RawRow`]'s order.
pub(crate) const ROW_COLS: &str = "job_type, kind, slot, id, version, payload, run_at, attempts, leased, at_ns, fence, next_version, next_payload, next_run_at, redriven";

/// The key order, as the sans-IO queue's (`(instant, JobKey)`).
pub(crate) const KEY_ORDER: &str = "job_type, kind, slot, id";

impl RawRow {
    pub(crate) fn decode(self) -> Result<Row, StoreError> {
        let next = match (self.next_version, self.next_payload) {
            (Some(v), Some(p)) => Some(Next {
                version: uint("version", v)?,
                payload: payload(p)?,
                run_at: opt_instant(self.next_run_at)?,
            }),
            (None, None) => None,
            _ => return Err(corrupt("queue job", "half a waiting version")),
        };
        Ok(Row {
            key: decode_key(&self.key)?,
            version: uint("version", self.version)?,
            payload: payload(self.payload)?,
            run_at: opt_instant(self.run_at)?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt("attempts", format!("{}", self.attempts)))?,
            leased: self.leased,
            at: instant(self.at)?,
            fence: self.fence.map(|f| uint("fence", f)).transpose()?,
            next,
            redriven: self.redriven,
        })
    }

    pub(crate) fn encode(row: &Row) -> Result<RawRow, StoreError> {
        Ok(RawRow {
            key: key_cols(row.key)?,
            version: int("version", row.version)?,
            payload: row.payload.as_json().to_owned(),
            run_at: opt_at(row.run_at)?,
            attempts: i64::from(row.attempts),
            leased: row.leased,
            at: at(row.at)?,
            fence: row.fence.map(|f| int("fence", f)).transpose()?,
            next_version: row
                .next
                .as_ref()
                .map(|n| int("version", n.version))
                .transpose()?,
            next_payload: row.next.as_ref().map(|n| n.payload.as_json().to_owned()),
            next_run_at: row
                .next
                .as_ref()
                .map(|n| opt_at(n.run_at))
                .transpose()?
                .flatten(),
            redriven: row.redriven,
        })
    }
}

/// Stored JSON text as a [`Payload`] (checked: a payload that is not JSON is corrupt).
pub(crate) fn payload(text: String) -> Result<Payload, StoreError> {
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| corrupt("payload", e.to_string()))?;
    // The text as it was stored (a `Payload` deserializes from its JSON text as a
    // string), not re-encoded: equal payloads stay equal.
    serde_json::from_value(serde_json::Value::String(text))
        .map_err(|e| corrupt("payload", e.to_string()))
}

/// A dead letter's columns.
pub(crate) struct RawDead {
    pub seq: i64,
    pub key: KeyCols,
    pub version: i64,
    pub payload: String,
    pub run_at: Option<i64>,
    pub attempts: i64,
    pub at: i64,
    pub last_error: String,
    pub redriven_at: Option<i64>,
}

/// The dead-letter table's columns, in [`RawDead`]'s order.
pub(crate) const DEAD_COLS: &str = "seq, job_type, kind, slot, id, version, payload, run_at, attempts, died_at, last_error, redriven_at";

impl RawDead {
    pub(crate) fn decode(self) -> Result<(i64, DeadLetter), StoreError> {
        Ok((
            self.seq,
            DeadLetter {
                job: Job {
                    key: decode_key(&self.key)?,
                    version: uint("version", self.version)?,
                    payload: payload(self.payload)?,
                    run_at: opt_instant(self.run_at)?,
                    target: None,
                },
                attempts: u32::try_from(self.attempts)
                    .map_err(|_| corrupt("attempts", format!("{}", self.attempts)))?,
                at: instant(self.at)?,
                last_error: self.last_error,
                redriven_at: opt_instant(self.redriven_at)?,
                history: Vec::new(),
                redrives: 0,
            },
        ))
    }
}

/// An outbox row (a job) as columns.
pub(crate) struct RawJob {
    pub key: KeyCols,
    pub version: i64,
    pub payload: String,
    pub run_at: Option<i64>,
}

/// The outbox's job columns, in [`RawJob`]'s order.
pub(crate) const JOB_COLS: &str = "job_type, kind, slot, id, version, payload, run_at";

impl RawJob {
    pub(crate) fn encode(job: &Job) -> Result<RawJob, StoreError> {
        Ok(RawJob {
            key: key_cols(job.key)?,
            version: int("version", job.version)?,
            payload: job.payload.as_json().to_owned(),
            run_at: opt_at(job.run_at)?,
        })
    }
    pub(crate) fn decode(self) -> Result<Job, StoreError> {
        Ok(Job {
            key: decode_key(&self.key)?,
            version: uint("version", self.version)?,
            payload: payload(self.payload)?,
            run_at: opt_instant(self.run_at)?,
            target: None,
        })
    }
}

/// A wall-clock time as (seconds, nanoseconds) since the Unix epoch, seconds negative
/// before it (nanoseconds always `0..1e9`).
pub(crate) fn system_cols(t: SystemTime) -> Result<(i64, i64), StoreError> {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => Ok((
            int("origin seconds", d.as_secs())?,
            i64::from(d.subsec_nanos()),
        )),
        Err(e) => {
            let d = e.duration();
            let secs = int("origin seconds", d.as_secs())?;
            let nanos = i64::from(d.subsec_nanos());
            if nanos == 0 {
                Ok((-secs, 0))
            } else {
                Ok((-secs - 1, 1_000_000_000 - nanos))
            }
        }
    }
}

pub(crate) fn origin_from(secs: i64, nanos: i64, inst: i64) -> Result<Origin, StoreError> {
    let n = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| corrupt("origin", format!("nanoseconds {nanos}")))?;
    let epoch = SystemTime::UNIX_EPOCH;
    let t = if secs >= 0 {
        epoch.checked_add(Duration::new(secs.unsigned_abs(), n))
    } else {
        epoch
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(n))))
    };
    let t = t.ok_or_else(|| corrupt("origin", format!("{secs} s is out of range")))?;
    Ok(Origin::new(t, instant(inst)?))
}

/// The retry delay after attempt `attempts` of the lease `fence` on `key`: full jitter
/// within the backoff's ceiling, drawn from a hash of key and fence (deterministic, and
/// different for every lease, since a fence is never handed out twice).
pub(crate) fn jitter(config: &QueueConfig, key: JobKey, fence: u64, attempts: u32) -> Duration {
    // FNV-1a over the key's text, then the fence.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.to_string().bytes().chain(fence.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    config.backoff().delay(attempts, &mut SplitMix64(h))
}

/// The counters and the places, in one statement (one snapshot).
pub(crate) const COUNTS: &str = "SELECT
     (SELECT CAST(COALESCE(SUM(enqueued), 0) AS BIGINT) FROM faultline_queue_counters),
     (SELECT CAST(COALESCE(SUM(done), 0) AS BIGINT) FROM faultline_queue_counters),
     (SELECT CAST(COALESCE(SUM(superseded), 0) AS BIGINT) FROM faultline_queue_counters),
     (SELECT CAST(COALESCE(SUM(expired), 0) AS BIGINT) FROM faultline_queue_counters),
     (SELECT CAST(COALESCE(SUM(retries), 0) AS BIGINT) FROM faultline_queue_counters),
     (SELECT CAST(COALESCE(SUM(redriven), 0) AS BIGINT) FROM faultline_queue_counters),
     (SELECT COUNT(*) FROM faultline_queue_jobs WHERE NOT leased AND attempts = 0)
       + (SELECT COUNT(*) FROM faultline_queue_jobs WHERE next_version IS NOT NULL),
     (SELECT COUNT(*) FROM faultline_queue_jobs WHERE leased),
     (SELECT COUNT(*) FROM faultline_queue_jobs WHERE NOT leased AND attempts > 0),
     (SELECT COUNT(*) FROM faultline_queue_dead WHERE redriven_at IS NULL)";

/// [`COUNTS`]'s answer as counts.
pub(crate) fn counts_from(v: [i64; 10]) -> Result<QueueCounts, StoreError> {
    let u = |i: usize| uint("count", v[i]);
    Ok(QueueCounts {
        enqueued: u(0)?,
        done: u(1)?,
        superseded: u(2)?,
        expired: u(3)?,
        retries: u(4)?,
        redriven: u(5)?,
        pending: u(6)?,
        leased: u(7)?,
        retrying: u(8)?,
        dead: u(9)?,
        ..QueueCounts::default()
    })
}

/// Changes to the counters a command makes, written once at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub enqueued: i64,
    pub done: i64,
    pub superseded: i64,
    pub expired: i64,
    pub retries: i64,
    pub redriven: i64,
}

impl Delta {
    pub(crate) fn is_zero(&self) -> bool {
        *self == Delta::default()
    }
}

/// One open transaction of a SQL store: the primitive reads and writes the queue's
/// commands are made of. Every read of a job row takes that row's write lock (Postgres:
/// `FOR UPDATE`, waiting; the sweeps `SKIP LOCKED`; SQLite: the transaction is
/// `IMMEDIATE`, one writer at a time).
pub(crate) trait Tx {
    /// Raises the key's high-water mark to `version` if it is below (or absent); false
    /// when it is not (a duplicate). Atomic: two enqueues of one key take turns.
    fn raise_high(&mut self, key: JobKey, version: u64) -> Result<bool, StoreError>;
    /// The key's high-water mark, locked.
    fn high(&mut self, key: JobKey) -> Result<Option<u64>, StoreError>;
    /// The key's job row, locked.
    fn load(&mut self, key: JobKey) -> Result<Option<Row>, StoreError>;
    /// Inserts or replaces the row.
    fn save(&mut self, row: &Row) -> Result<(), StoreError>;
    /// Deletes the key's row.
    fn delete(&mut self, key: JobKey) -> Result<(), StoreError>;
    /// The row of `token`'s lease, locked, if the lease is valid at `now` (the fence
    /// check is in the locking statement's `WHERE`).
    fn claim(&mut self, token: &LeaseToken, now: Instant) -> Result<Option<Row>, StoreError>;
    /// Moves the deadline of `token`'s lease to `deadline` if it is valid at `now` (one
    /// `UPDATE` with the fence check in its `WHERE`); false when it is not.
    fn extend(
        &mut self,
        token: &LeaseToken,
        now: Instant,
        deadline: Instant,
    ) -> Result<bool, StoreError>;
    /// Leased rows whose deadline is at or before `now`, in (deadline, key) order,
    /// locked (rows another transaction holds are skipped).
    fn expired(&mut self, now: Instant) -> Result<Vec<Row>, StoreError>;
    /// The first ready row due at `now`, in (due, key) order, locked (rows another
    /// transaction holds are skipped).
    fn first_due(&mut self, now: Instant) -> Result<Option<Row>, StoreError>;
    /// A new fencing token: larger than every one handed out before.
    fn next_fence(&mut self) -> Result<u64, StoreError>;
    /// Appends a dead letter.
    fn push_dead(&mut self, dead: &DeadLetter) -> Result<(), StoreError>;
    /// The dead letters not yet redriven, in the order they died, locked.
    fn undriven(&mut self) -> Result<Vec<(i64, DeadLetter)>, StoreError>;
    /// Marks dead letter `seq` redriven at `now`.
    fn mark_redriven(&mut self, seq: i64, now: Instant) -> Result<(), StoreError>;
    /// Adds `delta` to the counters.
    fn add_counts(&mut self, delta: &Delta) -> Result<(), StoreError>;
}

/// What a target does with a delivery of `version` under `fence` when it applied
/// `held` under fencing tokens up to `seen`.
pub(crate) fn decide(held: i64, seen: i64, version: i64, fence: i64) -> Applied {
    if fence < seen {
        Applied::Fenced
    } else if version > held {
        Applied::Applied
    } else {
        Applied::Stale
    }
}

/// When a job enqueued at `now` with `run_at` is due.
fn due_at(now: Instant, run_at: Option<Instant>) -> Instant {
    run_at.map_or(now, |at| at.max(now))
}

/// [`Queue::enqueue`](crate::queue::Queue::enqueue), in `tx`.
pub(crate) fn enqueue(
    tx: &mut impl Tx,
    d: &mut Delta,
    job: Job,
    now: Instant,
) -> Result<Enqueued, StoreError> {
    let key = job.key;
    // Checked before anything is written, so an out-of-range job changes nothing.
    int("version", job.version)?;
    opt_at(job.run_at)?;
    if !tx.raise_high(key, job.version)? {
        return Ok(Enqueued::Duplicate);
    }
    d.enqueued += 1;
    let due = due_at(now, job.run_at);
    let out = match tx.load(key)? {
        None => {
            tx.save(&Row {
                key,
                version: job.version,
                payload: job.payload,
                run_at: job.run_at,
                attempts: 0,
                leased: false,
                at: due,
                fence: None,
                next: None,
                redriven: false,
            })?;
            Enqueued::New
        }
        Some(mut row) if !row.leased => {
            d.superseded += 1;
            row.version = job.version;
            row.payload = job.payload;
            row.run_at = job.run_at;
            row.attempts = 0;
            row.redriven = false;
            row.at = due;
            tx.save(&row)?;
            Enqueued::Coalesced
        }
        Some(mut row) => {
            let had = row.next.replace(Next {
                version: job.version,
                payload: job.payload,
                run_at: job.run_at,
            });
            tx.save(&row)?;
            if had.is_some() {
                d.superseded += 1;
                Enqueued::Coalesced
            } else {
                Enqueued::Queued
            }
        }
    };
    Ok(out)
}

/// Fails every lease expired at `now` (an attempt, no backoff, error
/// [`LEASE_EXPIRED`]).
pub(crate) fn expire(
    tx: &mut impl Tx,
    d: &mut Delta,
    config: &QueueConfig,
    now: Instant,
) -> Result<(), StoreError> {
    for row in tx.expired(now)? {
        d.expired += 1;
        fail(tx, d, config, row, LEASE_EXPIRED, now, false)?;
    }
    Ok(())
}

/// [`Queue::lease`](crate::queue::Queue::lease), in `tx`.
pub(crate) fn lease(
    tx: &mut impl Tx,
    d: &mut Delta,
    config: &QueueConfig,
    now: Instant,
) -> Result<Option<Lease>, StoreError> {
    expire(tx, d, config, now)?;
    let Some(mut row) = tx.first_due(now)? else {
        return Ok(None);
    };
    let fence = tx.next_fence()?;
    let deadline = now + config.visibility_timeout();
    at(deadline)?;
    row.attempts = row.attempts.saturating_add(1);
    row.leased = true;
    row.at = deadline;
    row.fence = Some(fence);
    tx.save(&row)?;
    Ok(Some(Lease {
        job: row.job(),
        token: LeaseToken::new(row.key, fence),
        attempt: row.attempts,
        deadline,
        redriven: row.redriven,
    }))
}

/// [`Queue::heartbeat`](crate::queue::Queue::heartbeat), in `tx`.
pub(crate) fn heartbeat(
    tx: &mut impl Tx,
    d: &mut Delta,
    config: &QueueConfig,
    token: &LeaseToken,
    now: Instant,
) -> Result<Result<Instant, Fenced>, StoreError> {
    let deadline = now + config.visibility_timeout();
    at(deadline)?;
    // The lease's own row first (the fence check is the UPDATE's WHERE), then the
    // sweep, which skips rows others hold: a transaction waits for one row at most.
    let ok = tx.extend(token, now, deadline)?;
    expire(tx, d, config, now)?;
    Ok(if ok {
        Ok(deadline)
    } else {
        Err(Fenced::new(token.key(), token.fence()))
    })
}

/// [`Queue::ack`](crate::queue::Queue::ack), in `tx`.
pub(crate) fn ack(
    tx: &mut impl Tx,
    d: &mut Delta,
    config: &QueueConfig,
    token: &LeaseToken,
    now: Instant,
) -> Result<Result<(), Fenced>, StoreError> {
    let claimed = tx.claim(token, now)?;
    expire(tx, d, config, now)?;
    let Some(row) = claimed else {
        return Ok(Err(Fenced::new(token.key(), token.fence())));
    };
    d.done += 1;
    finish(tx, row, now)?;
    Ok(Ok(()))
}

/// [`Queue::nack`](crate::queue::Queue::nack), in `tx`.
pub(crate) fn nack(
    tx: &mut impl Tx,
    d: &mut Delta,
    config: &QueueConfig,
    token: &LeaseToken,
    error: &str,
    now: Instant,
) -> Result<Result<Nacked, Fenced>, StoreError> {
    let claimed = tx.claim(token, now)?;
    expire(tx, d, config, now)?;
    let Some(row) = claimed else {
        return Ok(Err(Fenced::new(token.key(), token.fence())));
    };
    fail(tx, d, config, row, error, now, true).map(Ok)
}

/// The lease on `row` ended in failure with `error`.
fn fail(
    tx: &mut impl Tx,
    d: &mut Delta,
    config: &QueueConfig,
    mut row: Row,
    error: &str,
    now: Instant,
    backoff: bool,
) -> Result<Nacked, StoreError> {
    if row.next.is_some() {
        d.superseded += 1;
        finish(tx, row, now)?;
        return Ok(Nacked::Superseded);
    }
    if row.attempts >= config.attempts_max() {
        tx.delete(row.key)?;
        tx.push_dead(&DeadLetter {
            job: row.job(),
            attempts: row.attempts,
            at: now,
            last_error: error.to_owned(),
            redriven_at: None,
            history: Vec::new(),
            redrives: 0,
        })?;
        return Ok(Nacked::DeadLettered);
    }
    let due = if backoff {
        d.retries += 1;
        let fence = row.fence.unwrap_or(0);
        now + jitter(config, row.key, fence, row.attempts)
    } else {
        now
    };
    at(due)?;
    row.leased = false;
    row.fence = None;
    row.at = due;
    tx.save(&row)?;
    Ok(Nacked::Retry { at: due })
}

/// The row's current version is settled: the version waiting behind it becomes due,
/// or the row goes.
fn finish(tx: &mut impl Tx, mut row: Row, now: Instant) -> Result<(), StoreError> {
    match row.next.take() {
        Some(n) => {
            row.at = due_at(now, n.run_at);
            row.version = n.version;
            row.payload = n.payload;
            row.run_at = n.run_at;
            row.attempts = 0;
            row.redriven = false;
            row.leased = false;
            row.fence = None;
            tx.save(&row)
        }
        None => tx.delete(row.key),
    }
}

/// [`Queue::redrive`](crate::queue::Queue::redrive), in `tx`.
pub(crate) fn redrive(tx: &mut impl Tx, d: &mut Delta, now: Instant) -> Result<usize, StoreError> {
    let mut n = 0;
    at(now)?;
    for (seq, dead) in tx.undriven()? {
        n += 1;
        tx.mark_redriven(seq, now)?;
        d.redriven += 1;
        let job = dead.job;
        let newer = tx.high(job.key)?.unwrap_or(0) > job.version;
        let live = tx.load(job.key)?.is_some();
        if newer || live {
            d.superseded += 1;
        } else {
            tx.save(&Row {
                key: job.key,
                version: job.version,
                payload: job.payload,
                run_at: job.run_at,
                attempts: 0,
                leased: false,
                at: now,
                fence: None,
                next: None,
                redriven: true,
            })?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_the_sql_stores_lack_are_refused_not_ignored() {
        supported(&QueueConfig::default()).unwrap();
        for (config, knob) in [
            (
                QueueConfig::builder().leases_per_target_max(2),
                "leases_per_target_max",
            ),
            (
                QueueConfig::builder().dead_letters_max(10),
                "dead_letters_max",
            ),
            (
                QueueConfig::builder().redrive_after(Duration::from_secs(1), 1),
                "redrive_after",
            ),
        ] {
            let err = supported(&config.build().unwrap()).unwrap_err();
            assert!(
                matches!(err, StoreError::Unsupported { what } if what == knob),
                "{err}"
            );
        }
        #[cfg(feature = "sqlite")]
        {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            let config = QueueConfig::builder()
                .leases_per_target_max(1)
                .build()
                .unwrap();
            let err =
                crate::queue::store::sqlite::SqliteJobs::from_connection(conn, config).unwrap_err();
            assert!(err.to_string().contains("`leases_per_target_max`"), "{err}");
        }
    }

    #[test]
    fn origins_round_trip_before_and_after_the_epoch() {
        let e = SystemTime::UNIX_EPOCH;
        for t in [
            e + Duration::new(1_700_000_000, 5),
            e,
            e - Duration::new(3, 250),
            e - Duration::from_secs(7),
        ] {
            let (s, n) = system_cols(t).unwrap();
            let o = origin_from(s, n, 42).unwrap();
            assert_eq!(o.system_time(), t);
            assert_eq!(o.instant(), Instant::from_nanos(42));
        }
    }

    #[test]
    fn a_value_past_i64_is_an_error_not_a_panic() {
        assert!(matches!(
            int("version", u64::MAX),
            Err(StoreError::OutOfRange { .. })
        ));
        assert!(matches!(
            uint("version", -1),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_jitter_stays_within_the_ceiling_and_differs_by_fence() {
        let config = QueueConfig::builder()
            .backoff(Duration::from_millis(10), Duration::from_millis(40))
            .build()
            .unwrap();
        let key = JobKey::unique(JobType::from_static("t"), JobId(1));
        let mut seen = std::collections::BTreeSet::new();
        for fence in 0..200 {
            for attempt in 1..6 {
                let d = jitter(&config, key, fence, attempt);
                assert!(d <= config.backoff().ceiling(attempt));
                seen.insert(d);
            }
        }
        assert!(seen.len() > 500, "draws differ: {}", seen.len());
    }
}
