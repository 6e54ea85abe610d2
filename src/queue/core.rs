//! The sans-IO task queue core: the producer's [`Outbox`], the [`Queue`] of jobs with
//! leases, and the targets' [`Inbox`] that applies each unique job once.
//!
//! **Jobs.** A [`Job`] has a [`JobType`] (a short validated name: "send_email"), a
//! [`Payload`] (serde data, stored as JSON text so one queue carries many job types and
//! a durable store keeps plain text), an optional run-at instant (not due before it)
//! and one of two identities ([`Slot`]):
//!
//! - **Keyed** ([`Job::keyed`]): "bring `key` up to `version`": the latest version wins.
//!   A newer version of the same key *coalesces* with an older one that has not been
//!   handed out yet (the older is counted as superseded); when the older one is out on
//!   a lease, the newer waits behind it and becomes due when the lease ends. An older
//!   or equal version than one enqueued before is a [`Enqueued::Duplicate`].
//! - **Unique** ([`Job::unique`]): one job, identified by a [`JobId`] the producer
//!   gives (the [`Outbox`] assigns them as it stages), runs once; enqueueing the same id
//!   again is a [`Enqueued::Duplicate`], so a producer that retries an enqueue whose
//!   reply it lost makes no second job. The targets make the *effect* once: they
//!   dedupe by job id and fence ([`Inbox`]). The store remembers every key and id it
//!   accepted (the highest version per key), so its dedupe window is its whole life; a
//!   long-lived store should bound it (the SQL stores of the next issue will).
//!
//! **Leases.** [`lease`](Queue::lease) hands the earliest due job to a worker with a
//! [`LeaseToken`] carrying a *fencing token* (a number that only grows, kept in the
//! durable store so a restart never reuses one) and hides it for the visibility
//! timeout. [`heartbeat`](Queue::heartbeat) extends the lease; [`ack`](Queue::ack)
//! finishes the job; [`nack`](Queue::nack) fails the attempt, with the error's text. A
//! lease that is not acknowledged in time expires: the job is visible again, and the
//! late worker is *fenced*: its ack, nack and heartbeat are refused with [`Fenced`],
//! and a target refuses its apply once it has seen a newer fencing token for the key.
//!
//! **Retries.** After a failed attempt `n` (1-based) the job waits
//!
//! ```text
//! delay_n = uniform(0, min(cap, base · 2^(n−1)))      (full jitter, capped)
//! ```
//!
//! ([`Backoff`]); an expired lease counts as an attempt and is visible again at once.
//! After `attempts_max` attempts the job moves to the dead-letter queue with the last
//! error recorded, and its [history](DeadLetter::history) of failed attempts:
//! inspectable ([`dead_letters`](Queue::dead_letters)), redrivable
//! ([`redrive`](Queue::redrive), which keeps each key's order: a dead version older
//! than one enqueued since is settled as superseded, never delivered after it; or
//! automatically, [`redrive_after`](QueueConfigBuilder::redrive_after)), and kept until
//! the [retention limit](QueueConfigBuilder::dead_letters_max), if one is set, drops
//! it (none by default: never deleted).
//!
//! **Targets.** A job may name the [target](Job::target) it is delivered to; with
//! [`leases_per_target_max`](QueueConfigBuilder::leases_per_target_max), `lease`
//! skips the jobs of a target that has that many leases out, so a slow target cannot
//! hold every worker.
//!
//! **Durability.** Each command's writes (all of them, or none) are committed to the
//! queue's [`Store`] before the command answers: the model of a store whose
//! transaction commits (and syncs) before the reply, as the SQL stores' do. A crash
//! loses what was not committed, so the reference loses nothing it answered; a restart
//! ([`TaskQueue::restart`](crate::queue::contract::TaskQueue::restart), [`Queue::recover`]) rebuilds the in-memory indexes from the
//! committed store alone, so nothing acknowledged to a producer or a worker is lost,
//! and leases keep their deadlines. (The `ack_before_commit` mutant answers first and
//! commits only every 8 commands, a lagging group commit: the simulated queue's crashes
//! lose what it answered since, and the invariants catch it.) The
//! store also keeps the wall-clock [`Origin`] of its instants once an adapter sets it
//! ([`Queue::set_origin`]), so a queue recovered by a later process maps every stored
//! instant (a dead letter's `at`) to the wall clock, and continues on the same scale.
//!
//! **Conservation.** At every instant, jobs enqueued = done + superseded + pending +
//! leased + retrying + dead + discarded ([`QueueCounts::balanced`]; discarded is 0
//! without a retention limit).
//!
//! Call order for a worker: `lease` → deliver (heartbeat every third of the visibility
//! timeout while it takes long) → `ack` on success, `nack` on failure. Time is passed
//! in; the core never reads a clock.
//!
//! ```
//! use faultline::clock::Instant;
//! use faultline::name::Name;
//! use faultline::queue::{Inbox, Job, JobType, Outbox, Payload, Queue, QueueConfig};
//!
//! const EMAIL: JobType = JobType::from_static("send_email");
//! const SYNC: JobType = JobType::from_static("sync_profile");
//! let mut outbox = Outbox::new();
//! let mut queue = Queue::new(QueueConfig::builder().build()?);
//! let t = Instant::ZERO;
//!
//! // The caller's write and its jobs, in one step; then the relay moves them.
//! let key = Name::new("user-7")?;
//! outbox.write(|tx| {
//!     tx.stage(Job::keyed(SYNC, key, 1, Payload::encode(&"Ada")?));
//!     tx.stage_unique(EMAIL, Payload::encode(&"ada@example.com")?);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! outbox.write(|tx| {
//!     tx.stage(Job::keyed(SYNC, key, 2, Payload::encode(&"Ada L.")?));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! outbox.relay(|job| { queue.enqueue(job, t); true });
//!
//! let mut inbox = Inbox::new();
//! let mut synced = Vec::new();
//! while let Some(lease) = queue.lease(t) {
//!     if lease.job.key.is_keyed() {
//!         synced.push(lease.job.payload.decode::<String>()?);
//!     } else {
//!         inbox.apply(lease.job.key, lease.token.fence());
//!     }
//!     queue.ack(&lease.token, t)?;
//! }
//! assert_eq!(synced, ["Ada L."], "version 2 coalesced with version 1");
//! assert_eq!(inbox.len(), 1);
//! assert!(queue.counts().balanced());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::clock::{Instant, Origin};
use crate::config::ConfigError;
use crate::name::{Name, NameError};
use crate::retry::{Backoff, RetryPolicy};
use crate::splitmix::SplitMix64;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The type of a job ("send_email", "sync_profile"): a [`Name`], so it is `Copy`,
/// validated, and serializes as a plain string. A worker dispatches on it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct JobType(Name);

impl JobType {
    /// `s` as a job type, or why it is not a valid [`Name`].
    pub fn new(s: &str) -> Result<Self, NameError> {
        Name::new(s).map(JobType)
    }
    /// A job type from a literal, for constants (see [`Name::from_static`]).
    pub const fn from_static(s: &'static str) -> Self {
        JobType(Name::from_static(s))
    }
    /// The type's name.
    pub fn name(&self) -> Name {
        self.0
    }
    /// The type as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<Name> for JobType {
    fn from(n: Name) -> Self {
        JobType(n)
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of a unique job, given by its producer (the [`Outbox`] assigns them).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct JobId(pub u64);

/// How a job is identified within its type.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Keyed: a newer version of the key replaces an older one (latest wins).
    Key(Name),
    /// Unique: this one job, run once.
    Id(JobId),
}

/// What a job is about: its type and its key or id. One job per key is in the queue
/// at a time (plus one newer version waiting behind a lease).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct JobKey {
    /// The job's type.
    pub job_type: JobType,
    /// Its key or id.
    pub slot: Slot,
}

impl JobKey {
    /// The key `key` of `job_type` (a keyed job).
    pub fn keyed(job_type: JobType, key: Name) -> Self {
        JobKey {
            job_type,
            slot: Slot::Key(key),
        }
    }
    /// The unique job `id` of `job_type`.
    pub fn unique(job_type: JobType, id: JobId) -> Self {
        JobKey {
            job_type,
            slot: Slot::Id(id),
        }
    }
    /// True for a keyed job (latest version wins), false for a unique one.
    pub fn is_keyed(&self) -> bool {
        matches!(self.slot, Slot::Key(_))
    }
    /// The key of a keyed job.
    pub fn key(&self) -> Option<Name> {
        match self.slot {
            Slot::Key(k) => Some(k),
            Slot::Id(_) => None,
        }
    }
    /// The id of a unique job.
    pub fn id(&self) -> Option<JobId> {
        match self.slot {
            Slot::Key(_) => None,
            Slot::Id(id) => Some(id),
        }
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.slot {
            Slot::Key(k) => write!(f, "{}:{k}", self.job_type),
            Slot::Id(id) => write!(f, "{}#{}", self.job_type, id.0),
        }
    }
}

/// A payload that could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payload: {0}")]
pub struct PayloadError(pub String);

/// A job's data, kept as JSON text: encode any serde type with [`Payload::encode`],
/// read it back with [`Payload::decode`]. Cloning is cheap (an `Arc`). Kept as text so
/// one queue carries jobs of many types, each with its own payload type, and a durable
/// store keeps it as it is.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Payload(Arc<str>);

impl Default for Payload {
    /// `null`: no data.
    fn default() -> Self {
        Payload(Arc::from("null"))
    }
}

impl Payload {
    /// `value` as JSON.
    pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        serde_json::to_string(value)
            .map(|s| Payload(Arc::from(s)))
            .map_err(|e| PayloadError(e.to_string()))
    }
    /// The payload as a `T`, or why it is not one.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        serde_json::from_str(&self.0).map_err(|e| PayloadError(e.to_string()))
    }
    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// One job: its identity, version, data, earliest run time and target.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// Type and key (or id).
    pub key: JobKey,
    /// The key's version (always 1 for a unique job).
    pub version: u64,
    /// The data.
    pub payload: Payload,
    /// Not due before this instant (`None`: due when enqueued).
    pub run_at: Option<Instant>,
    /// The target the job is delivered to ("billing", "search"), if it names one:
    /// [`QueueConfig::leases_per_target_max`] limits the leases out at once per
    /// target, so a slow target cannot hold every worker. `None` (the default, and
    /// what a job stored before targets existed reads as): no target, never limited.
    /// The SQL stores do not keep it yet (a job read back from them has none; they
    /// refuse a per-target limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Name>,
}

impl fmt::Debug for Job {
    /// As derived, with `target` shown only when there is one: a job without a target
    /// prints as it did before targets existed (the simulated worlds' traces, and so
    /// their golden digests, include it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Job");
        d.field("key", &self.key)
            .field("version", &self.version)
            .field("payload", &self.payload)
            .field("run_at", &self.run_at);
        if self.target.is_some() {
            d.field("target", &self.target);
        }
        d.finish()
    }
}

impl Job {
    /// Version `version` of `key` of `job_type`: latest version wins.
    pub fn keyed(job_type: JobType, key: Name, version: u64, payload: Payload) -> Self {
        Job {
            key: JobKey::keyed(job_type, key),
            version,
            payload,
            run_at: None,
            target: None,
        }
    }
    /// The unique job `id` of `job_type`: runs once.
    pub fn unique(job_type: JobType, id: JobId, payload: Payload) -> Self {
        Job {
            key: JobKey::unique(job_type, id),
            version: 1,
            payload,
            run_at: None,
            target: None,
        }
    }
    /// The same job, not due before `at`.
    pub fn run_at(mut self, at: Instant) -> Self {
        self.run_at = Some(at);
        self
    }
    /// The same job, delivered to `target` (see [`Job::target`]).
    pub fn for_target(mut self, target: Name) -> Self {
        self.target = Some(target);
        self
    }
    /// The job's type.
    pub fn job_type(&self) -> JobType {
        self.key.job_type
    }
}

/// The handle of one lease: hand it back to `heartbeat`, `ack` or `nack`. Its
/// [`fence`](LeaseToken::fence) goes with the delivery, so a target can refuse a worker
/// whose lease was taken over.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LeaseToken {
    key: JobKey,
    fence: u64,
}

impl LeaseToken {
    /// A token for `key` with fencing token `fence` (for queues other than [`Queue`]
    /// that implement the contract).
    pub fn new(key: JobKey, fence: u64) -> Self {
        LeaseToken { key, fence }
    }
    /// The job's key.
    pub fn key(&self) -> JobKey {
        self.key
    }
    /// The fencing token: larger for every lease handed out, across restarts.
    pub fn fence(&self) -> u64 {
        self.fence
    }
}

/// A job handed to a worker.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The job.
    pub job: Job,
    /// Hand back with `heartbeat`, `ack` or `nack`.
    pub token: LeaseToken,
    /// 1 for the first attempt of this version, then 2, 3, ...
    pub attempt: u32,
    /// The lease expires at this instant unless extended.
    pub deadline: Instant,
    /// The job came back from the dead-letter queue.
    pub redriven: bool,
}

/// The lease is no longer valid: it expired (and the job may be with another worker),
/// or the job was settled. The worker must not act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("lease {fence} on {key} is no longer valid (expired or taken over)")]
pub struct Fenced {
    /// The job's key (boxed: a key holds two inline names, and the error stays small).
    pub key: Box<JobKey>,
    /// The refused fencing token.
    pub fence: u64,
}

impl Fenced {
    /// The refusal of lease `fence` on `key`.
    pub fn new(key: JobKey, fence: u64) -> Self {
        Fenced {
            key: Box::new(key),
            fence,
        }
    }
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueued {
    /// A new job for its key.
    New,
    /// It replaced an older version that was waiting (which counts as superseded).
    Coalesced,
    /// It waits behind a lease of an older version.
    Queued,
    /// This version (or a newer one), or this unique id, was enqueued before: nothing
    /// changed.
    Duplicate,
}

/// What a nack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nacked {
    /// The job is retried at `at`.
    Retry {
        /// When it is due again.
        at: Instant,
    },
    /// A newer version of the key was waiting: the failed one is superseded.
    Superseded,
    /// The last attempt failed: the job is in the dead-letter queue.
    DeadLettered,
}

/// The error a dead letter records when its last attempt was a lease that expired.
pub const LEASE_EXPIRED: &str = "lease expired";

/// How many failed attempts a job (and then its dead letter) keeps in its
/// [`history`](DeadLetter::history): the last 16; older ones are dropped first.
pub const ATTEMPT_HISTORY_MAX: usize = 16;

/// One failed attempt of a job, as a [`DeadLetter`]'s history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// The attempt's number: 1 for the first attempt of this version (of this life:
    /// a redriven job counts from 1 again).
    pub attempt: u32,
    /// When it failed (the nack, or the lease's expiry as the queue saw it).
    pub at: Instant,
    /// Its error: the nack's text, or [`LEASE_EXPIRED`].
    pub error: String,
}

/// A job that failed `attempts_max` attempts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The job.
    pub job: Job,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up on.
    pub at: Instant,
    /// The error of the last attempt: the nack's text, or [`LEASE_EXPIRED`].
    pub last_error: String,
    /// When it was redriven, if it was (it stays listed, until the
    /// [retention limit](QueueConfig::dead_letters_max) drops it).
    pub redriven_at: Option<Instant>,
    /// The failed attempts of this life of the job, oldest first: the last
    /// [`ATTEMPT_HISTORY_MAX`] (the last one's error is `last_error`). Kept by the
    /// sans-IO [`Queue`] (and so by the tokio adapter's `SharedQueue` and the memory
    /// store); the SQL stores keep the last error only (empty here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// How often the job was redriven before it died this time (0: never).
    /// [Automatic redrive](QueueConfigBuilder::redrive_after) puts a letter back only while
    /// this is below its `redrives_max`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where the jobs are: jobs enqueued = done + superseded + pending + leased +
/// retrying + dead + discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QueueCounts {
    /// Jobs accepted from producers (duplicates not counted).
    pub enqueued: u64,
    /// Jobs acknowledged by a worker.
    pub done: u64,
    /// Jobs replaced by a newer version of their key before they were done.
    pub superseded: u64,
    /// Jobs waiting for their first attempt (or behind a lease of their key).
    pub pending: u64,
    /// Jobs out on a lease.
    pub leased: u64,
    /// Jobs waiting for a retry.
    pub retrying: u64,
    /// Jobs in the dead-letter queue (not redriven).
    pub dead: u64,
    /// Leases that expired (a counter, not a place).
    pub expired: u64,
    /// Retries scheduled (a counter).
    pub retries: u64,
    /// Dead letters redriven (a counter).
    pub redriven: u64,
    /// Jobs whose dead letter the [retention limit](QueueConfig::dead_letters_max)
    /// dropped before it was redriven: given up for good (a place). Always 0 without
    /// a limit.
    pub discarded: u64,
    /// Dead letters the retention limit dropped, redriven ones included (a counter).
    pub dead_letters_dropped: u64,
}

impl QueueCounts {
    /// Jobs somewhere in the queue or settled.
    pub fn accounted(&self) -> u64 {
        self.done
            + self.superseded
            + self.pending
            + self.leased
            + self.retrying
            + self.dead
            + self.discarded
    }
    /// True when every job enqueued is accounted for.
    pub fn balanced(&self) -> bool {
        self.enqueued == self.accounted()
    }
    /// Jobs not yet settled: pending, leased or retrying.
    pub fn in_flight(&self) -> u64 {
        self.pending + self.leased + self.retrying
    }
}

/// A validated queue configuration; build it with [`QueueConfig::builder`].
///
/// Serde: an object keyed by the builder's methods, read through the builder: a bad
/// value is refused with its [`ConfigError`], an unknown key too, and a key left out
/// keeps the default (see [`config`](crate::config#reading-a-configuration-from-a-file)).
///
/// ```
/// use faultline::queue::QueueConfig;
/// use std::time::Duration;
///
/// let config: QueueConfig = serde_json::from_str(
///     r#"{
///         "visibility_timeout": {"secs": 120, "nanos": 0},
///         "backoff": {"base": {"secs": 0, "nanos": 500000000}, "cap": {"secs": 60, "nanos": 0}}
///     }"#,
/// )?;
/// assert_eq!(config.visibility_timeout(), Duration::from_secs(120));
/// assert_eq!(config.attempts_max(), 25); // left out: the default
/// let json = serde_json::to_string(&config)?;
/// assert_eq!(serde_json::from_str::<QueueConfig>(&json)?, config);
///
/// let err = serde_json::from_str::<QueueConfig>(r#"{"attempts": 3}"#).unwrap_err();
/// assert!(err.to_string().contains("unknown field `attempts`"));
/// let err = serde_json::from_str::<QueueConfig>(r#"{"attempts_max": 0}"#).unwrap_err();
/// assert!(err.to_string().contains("`attempts_max` must be between 1 and 1000, got 0"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    visibility_timeout: Duration,
    attempts_max: u32,
    backoff: Backoff,
    leases_per_target_max: Option<u32>,
    dead_letters_max: Option<usize>,
    redrive: Option<AutoRedrive>,
}

/// The automatic redrive policy of [`QueueConfigBuilder::redrive_after`]: a dead letter
/// goes back in the queue `after` it died, as [`Queue::redrive`] would put it back,
/// while the job was redriven fewer than `redrives_max` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoRedrive {
    after: Duration,
    redrives_max: u32,
}

impl AutoRedrive {
    /// How long after it died a dead letter is redriven.
    pub fn after(&self) -> Duration {
        self.after
    }
    /// How often one job is redriven automatically at most; a letter of a job
    /// redriven that often stays dead (a manual [`Queue::redrive`] still puts it back).
    pub fn redrives_max(&self) -> u32 {
        self.redrives_max
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            attempts_max: 25,
            backoff: Backoff::default(),
            leases_per_target_max: None,
            dead_letters_max: None,
            redrive: None,
        }
    }
}

impl QueueConfig {
    /// Defaults: a 30 s visibility timeout (SQS's), 25 attempts (Asynq's), backoff from
    /// 100 ms up to 10 s, no per-target lease limit, every dead letter kept, no
    /// automatic redrive.
    pub fn builder() -> QueueConfigBuilder {
        let d = QueueConfig::default();
        QueueConfigBuilder {
            visibility_timeout: d.visibility_timeout,
            attempts_max: d.attempts_max,
            backoff: (d.backoff.base(), d.backoff.cap()),
            leases_per_target_max: d.leases_per_target_max,
            dead_letters_max: d.dead_letters_max,
            redrive: d.redrive.map(|r| (r.after, r.redrives_max)),
        }
    }
    /// The most leases out at once on the jobs of one [target](Job::target) (`None`:
    /// no limit, the default).
    pub fn leases_per_target_max(&self) -> Option<u32> {
        self.leases_per_target_max
    }
    /// The most dead letters kept (`None`: all of them, the default); see
    /// [`QueueConfigBuilder::dead_letters_max`] for which one goes first.
    pub fn dead_letters_max(&self) -> Option<usize> {
        self.dead_letters_max
    }
    /// The automatic redrive policy (`None`: off, the default).
    pub fn redrive(&self) -> Option<AutoRedrive> {
        self.redrive
    }
    /// How long a lease hides a task.
    pub fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }
    /// Attempts before a task is dead-lettered.
    pub fn attempts_max(&self) -> u32 {
        self.attempts_max
    }
    /// The retry backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

/// Builder for [`QueueConfig`].
#[derive(Clone, Debug)]
pub struct QueueConfigBuilder {
    visibility_timeout: Duration,
    attempts_max: u32,
    backoff: (Duration, Duration),
    leases_per_target_max: Option<u32>,
    dead_letters_max: Option<usize>,
    redrive: Option<(Duration, u32)>,
}

impl QueueConfigBuilder {
    /// How long a lease hides a task (1 ms to 12 hours, SQS's bound). Default: 30 s.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }
    /// Attempts before a task is dead-lettered (1 to 1,000). Default: 25.
    pub fn attempts_max(mut self, n: u32) -> Self {
        self.attempts_max = n;
        self
    }
    /// Retry backoff: full jitter up to `min(cap, base · 2^(n−1))`. Default: base
    /// 100 ms, cap 10 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
        self
    }
    /// At most `n` leases out at once on the jobs of one [target](Job::target) (1 to
    /// 1,000,000). Default: no limit.
    ///
    /// [`lease`](Queue::lease) then hands out the earliest due job whose target has
    /// fewer than `n` leases out, skipping (not waiting behind) the jobs of a full
    /// target; jobs without a target are never limited. So a target that hangs holds
    /// at most `n` workers, and the others keep serving the healthy targets. A lease
    /// counts until it is acked, nacked or expires. Each lease then walks past the due
    /// jobs of the full targets (the cost grows with a sick target's backlog).
    /// Honoured by the sans-IO [`Queue`]
    /// (so by `SharedQueue` and the memory store); the SQL stores do not keep targets
    /// yet and refuse it when opened ([`StoreError::Unsupported`](crate::store::StoreError::Unsupported)).
    pub fn leases_per_target_max(mut self, n: u32) -> Self {
        self.leases_per_target_max = Some(n);
        self
    }
    /// Keeps at most `n` dead letters (1 to 10,000,000). Default: every one, forever.
    ///
    /// The policy, when one more job dies with `n` letters kept: the oldest letter
    /// already redriven is dropped (it is history: its job went back in the queue);
    /// when none was redriven, the oldest letter is dropped and its job is given up for
    /// good, counted as [`discarded`](QueueCounts::discarded). Every drop counts in
    /// [`dead_letters_dropped`](QueueCounts::dead_letters_dropped). The SQL stores
    /// refuse it when opened ([`StoreError::Unsupported`](crate::store::StoreError::Unsupported)).
    pub fn dead_letters_max(mut self, n: usize) -> Self {
        self.dead_letters_max = Some(n);
        self
    }
    /// Redrives each dead letter automatically `after` it died (1 ms to 7 days), as
    /// [`Queue::redrive`] does (keeping each key's order), while its job was redriven
    /// fewer than `redrives_max` times (1 to 1,000; counted per job across its lives:
    /// [`DeadLetter::redrives`]). Default: off (only a manual redrive puts a letter
    /// back). The redrive happens on the first [`lease`](Queue::lease) at or after
    /// that instant, and [`poll_timeout`](Queue::poll_timeout) includes it, so an idle
    /// worker wakes for it and leases the job. Each lease and poll then scans the dead
    /// letters, so bound them with [`dead_letters_max`](Self::dead_letters_max) when
    /// many may pile up. The SQL stores refuse it when opened
    /// ([`StoreError::Unsupported`](crate::store::StoreError::Unsupported)).
    pub fn redrive_after(mut self, after: Duration, redrives_max: u32) -> Self {
        self.redrive = Some((after, redrives_max));
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<QueueConfig, ConfigError> {
        if self.visibility_timeout < Duration::from_millis(1)
            || self.visibility_timeout > Duration::from_secs(12 * 3_600)
        {
            return Err(ConfigError::new(
                "visibility_timeout",
                format!("must be 1 ms to 12 h, got {:?}", self.visibility_timeout),
            ));
        }
        let retry = RetryPolicy::new(
            self.attempts_max,
            Backoff::new(self.backoff.0, self.backoff.1)?,
        )?;
        if let Some(n) = self.leases_per_target_max
            && !(1..=1_000_000).contains(&n)
        {
            return Err(ConfigError::new(
                "leases_per_target_max",
                format!("must be 1 to 1000000, got {n}"),
            ));
        }
        if let Some(n) = self.dead_letters_max
            && !(1..=10_000_000).contains(&n)
        {
            return Err(ConfigError::new(
                "dead_letters_max",
                format!("must be 1 to 10000000, got {n}"),
            ));
        }
        let redrive = match self.redrive {
            None => None,
            Some((after, _))
                if after < Duration::from_millis(1)
                    || after > Duration::from_secs(7 * 24 * 3_600) =>
            {
                return Err(ConfigError::new(
                    "redrive_after",
                    format!("must wait 1 ms to 7 days, got {after:?}"),
                ));
            }
            Some((_, n)) if !(1..=1_000).contains(&n) => {
                return Err(ConfigError::new(
                    "redrive_after",
                    format!("redrives_max must be 1 to 1000, got {n}"),
                ));
            }
            Some((after, redrives_max)) => Some(AutoRedrive {
                after,
                redrives_max,
            }),
        };
        Ok(QueueConfig {
            visibility_timeout: self.visibility_timeout,
            attempts_max: retry.attempts_max(),
            backoff: retry.backoff(),
            leases_per_target_max: self.leases_per_target_max,
            dead_letters_max: self.dead_letters_max,
            redrive,
        })
    }
}

/// A deliberate defect, set only by [`crate::queue::mutants`]. The reference has none.
#[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    None,
    /// `due()` without leases: a task handed out stays due (a lease-less outbox poller).
    DueWithoutLeases,
    /// The queue takes no lease and honestly says so: a task handed out stays due, and
    /// the lease reports its deadline as `now`.
    NoLease,
    /// A heartbeat is accepted and reports the extended deadline, but the lease is not
    /// extended: the task is visible again at the original deadline.
    HeartbeatNotExtended,
    /// A heartbeat is accepted but extends nothing, and honestly reports the unchanged
    /// deadline.
    HeartbeatIgnored,
    /// A task is dropped after its last attempt (an outbox's `MarkFailed` with no dead
    /// letter).
    DropAfterMaxAttempts,
    /// Leases never expire: a crashed worker's task is stuck.
    LeaseNeverExpires,
    /// Acks and heartbeats are taken without checking the fencing token.
    NoFencing,
    /// Each command answers before its writes are committed; they are committed every
    /// 8 commands (a lagging group commit), and a restart loses the rest.
    AckBeforeCommit,
    /// Redrive puts a dead version back even when a newer one was enqueued since.
    RedriveOutOfOrder,
    /// The run-at is ignored: a job is due when it is enqueued.
    RunAtIgnored,
    /// The per-target lease limit is ignored: a target's jobs are handed out however
    /// many leases it has out.
    TargetLimitIgnored,
    /// A dead letter keeps no error text: an operator cannot tell why it died.
    DeadLetterWithoutError,
    /// A unique job replaces a unique job of the same type still waiting for its first
    /// attempt, as if jobs without a key were keyed by their type: the replaced one is
    /// counted as superseded and never runs.
    UniqueCoalesceByType,
    /// Each enqueue writes its version in a task of its own that lands up to
    /// `ENQUEUE_TASK_LAG_NS` later, last write wins (no version guard on the write): of
    /// two versions of a key enqueued closer together than that, the older may land
    /// last and overwrite the newer one, which is never delivered.
    EnqueueInOwnTask,
    // World-side flaws (the queue ignores them).
    /// The worker acks the lease before it delivers.
    AckBeforeDelivery,
    /// The replica writes whatever version arrives unless it holds that very one: no
    /// version check, and no fence check (which is a version check of the lease).
    NoVersionCheck,
    /// The replica re-applies the version it holds.
    ReapplySameVersion,
    /// The target's inbox applies every delivery of a unique job (no dedupe by id).
    NoDedupe,
    /// The profile is written, then its jobs enqueued directly (no outbox): lost when
    /// the queue is down.
    NonAtomicOutbox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Due at `due`.
    Ready { due: Instant },
    /// Out on lease `fence` until `deadline`.
    Leased { fence: u64, deadline: Instant },
}

/// A newer version waiting behind the lease of an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiting {
    version: u64,
    payload: Payload,
    run_at: Option<Instant>,
    target: Option<Name>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    version: u64,
    payload: Payload,
    run_at: Option<Instant>,
    /// Attempts of this version so far.
    attempts: u32,
    state: State,
    /// A newer version waiting for the lease of this one to end.
    /// (Boxed: it is rare, and the entries move as the slab grows.)
    next: Option<Box<Waiting>>,
    redriven: bool,
    target: Option<Name>,
    /// The failed attempts of this version (of this life), the last
    /// [`ATTEMPT_HISTORY_MAX`].
    history: Vec<Attempt>,
    /// How often this job was redriven (carried across its lives).
    redrives: u32,
}

impl Entry {
    fn job(&self, key: JobKey) -> Job {
        Job {
            key,
            version: self.version,
            payload: self.payload.clone(),
            run_at: self.run_at,
            target: self.target,
        }
    }
}

/// Removes `item` from the index `set`, the first one without a search (jobs are
/// mostly settled in the order they were leased).
fn remove_from(set: &mut BTreeSet<(Instant, JobKey)>, item: (Instant, JobKey)) {
    if set.first() == Some(&item) {
        set.pop_first();
    } else {
        set.remove(&item);
    }
}

/// When a job enqueued at `now` with `run_at` is due.
fn due_at(now: Instant, run_at: Option<Instant>) -> Instant {
    run_at.map_or(now, |at| at.max(now))
}

/// The longest an enqueue's own task takes to land under [`Flaw::EnqueueInOwnTask`]:
/// just under a millisecond.
const ENQUEUE_TASK_LAG_NS: u64 = 999_999;

/// The jobs of a [`Store`] by key: one ordered map of every key ever accepted to its
/// highest version and (while the key has a job in the queue) the slot of its
/// [`Entry`] in a slab. A command searches the map once for both (the highest version
/// and the job were two maps), the map's nodes move small records, and settling a job
/// frees its slot without a search (a slot's generation tells a stale record).
#[derive(Clone, Debug, Default)]
struct Jobs {
    keys: BTreeMap<JobKey, KeyRecord>,
    slots: Vec<Cell>,
    /// Slots free for reuse.
    free: Vec<usize>,
}

/// What [`Jobs`] knows of a key.
#[derive(Clone, Copy, Debug, Default)]
struct KeyRecord {
    /// The highest version ever enqueued (`None`: none was, only a job put back).
    high: Option<u64>,
    /// Where its job is, if it has one (stale once the slot's generation moved on).
    at: Option<Handle>,
}

/// A slot of [`Jobs`] and the generation it had when it was filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Handle {
    index: usize,
    generation: u64,
}

/// A slot of [`Jobs`]' slab.
#[derive(Clone, Debug)]
struct Cell {
    /// Moves on each time the slot is freed.
    generation: u64,
    entry: Option<Entry>,
}

impl Jobs {
    /// The job of `handle`, if the handle is current.
    fn at(&self, handle: Handle) -> Option<&Entry> {
        let cell = self.slots.get(handle.index)?;
        if cell.generation != handle.generation {
            return None;
        }
        cell.entry.as_ref()
    }
    fn at_mut(&mut self, handle: Handle) -> Option<&mut Entry> {
        let cell = self.slots.get_mut(handle.index)?;
        if cell.generation != handle.generation {
            return None;
        }
        cell.entry.as_mut()
    }
    /// Where `key`'s job is, if it has one.
    fn handle(&self, key: &JobKey) -> Option<Handle> {
        let h = self.keys.get(key)?.at?;
        self.at(h).map(|_| h)
    }
    fn get(&self, key: &JobKey) -> Option<&Entry> {
        self.at(self.keys.get(key)?.at?)
    }
    fn get_mut(&mut self, key: &JobKey) -> Option<&mut Entry> {
        let h = self.keys.get(key)?.at?;
        self.at_mut(h)
    }
    fn contains_key(&self, key: &JobKey) -> bool {
        self.get(key).is_some()
    }
    /// The highest version ever enqueued for `key`.
    fn high(&self, key: &JobKey) -> Option<u64> {
        self.keys.get(key)?.high
    }
    /// Records version `version` of `key` as enqueued, unless it (or a newer one) was:
    /// then `None`. Otherwise, where the key's job is, if it has one.
    fn accept(&mut self, key: JobKey, version: u64) -> Option<Option<Handle>> {
        let record = self.keys.entry(key).or_default();
        if record.high.is_some_and(|h| h >= version) {
            return None;
        }
        record.high = Some(version);
        let at = record.at;
        Some(at.filter(|h| self.at(*h).is_some()))
    }
    /// Puts `entry` in a free slot (`key` has none): where it is.
    fn fill(&mut self, entry: Entry) -> Handle {
        match self.free.pop() {
            Some(index) => {
                let cell = &mut self.slots[index];
                cell.entry = Some(entry);
                Handle {
                    index,
                    generation: cell.generation,
                }
            }
            None => {
                self.slots.push(Cell {
                    generation: 0,
                    entry: Some(entry),
                });
                Handle {
                    index: self.slots.len() - 1,
                    generation: 0,
                }
            }
        }
    }
    /// Gives `key` the job `entry` (replacing the one it has, if any).
    fn insert(&mut self, key: JobKey, entry: Entry) {
        if let Some(e) = self.get_mut(&key) {
            *e = entry;
            return;
        }
        self.place(key, entry);
    }
    /// Gives `key`, which has no job, the job `entry`.
    fn place(&mut self, key: JobKey, entry: Entry) {
        let h = self.fill(entry);
        self.keys.entry(key).or_default().at = Some(h);
    }
    /// Takes the job of `handle` out (its key keeps its highest version).
    fn remove_at(&mut self, handle: Handle) -> Option<Entry> {
        let cell = self.slots.get_mut(handle.index)?;
        if cell.generation != handle.generation {
            return None;
        }
        let entry = cell.entry.take()?;
        cell.generation += 1;
        self.free.push(handle.index);
        Some(entry)
    }
    /// Drops the job of `handle` (its key keeps its highest version).
    fn free_at(&mut self, handle: Handle) {
        if let Some(cell) = self.slots.get_mut(handle.index)
            && cell.generation == handle.generation
            && cell.entry.is_some()
        {
            cell.entry = None;
            cell.generation += 1;
            self.free.push(handle.index);
        }
    }
    fn remove(&mut self, key: &JobKey) -> Option<Entry> {
        let h = self.handle(key)?;
        self.remove_at(h)
    }
    /// The jobs, in no particular order.
    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|c| c.entry.as_ref())
    }
    /// The jobs in key order.
    fn iter(&self) -> impl Iterator<Item = (&JobKey, &Entry)> {
        self.keys
            .iter()
            .filter_map(|(k, r)| Some((k, self.at(r.at?)?)))
    }
}

/// The queue's durable state: everything a restart keeps. The reference [`Queue`]
/// writes every change here before it returns.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// The jobs in the queue, and the highest version ever enqueued per key (unique
    /// jobs: every id ever accepted).
    entries: Jobs,
    dead: Vec<DeadLetter>,
    /// The next fencing token.
    fence_next: u64,
    counts: QueueCounts,
    rng: u64,
    /// Where the instants sit on the wall clock, once an adapter set it.
    origin: Option<Origin>,
    /// The latest `now` any command was given: a recovered queue's clock resumes no
    /// earlier than this.
    clock_high: Instant,
}

impl Store {
    /// The wall-clock origin of the stored instants, if one was set
    /// ([`Queue::set_origin`]).
    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// The latest instant any command was given: a queue recovered from this store
    /// should resume its clock no earlier (the tokio adapter does).
    pub fn clock_high(&self) -> Instant {
        self.clock_high
    }
}

/// The task queue. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Queue {
    config: QueueConfig,
    store: Store,
    /// Volatile indexes, rebuilt from the store on recovery.
    ready: BTreeSet<(Instant, JobKey)>,
    expiries: BTreeSet<(Instant, JobKey)>,
    /// What the store has committed, when it lags the working state (only under
    /// [`Flaw::AckBeforeCommit`]; the reference commits every command's writes before
    /// it answers, so its working state is its committed store).
    committed: Option<Store>,
    /// Commands answered, for [`Flaw::AckBeforeCommit`]'s group commit.
    commands: u32,
    pub(crate) flaw: Flaw,
    /// Under [`Flaw::EnqueueInOwnTask`]: per key, the version whose write lands last
    /// and when, and the tasks' own delays.
    landing: BTreeMap<JobKey, (u64, Instant)>,
    task_delays: SplitMix64,
}

impl Queue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        let store = Store {
            rng: 0x7175_6575_655f_6a69,
            fence_next: 1,
            ..Store::default()
        };
        Queue::recover(config, store)
    }

    /// A queue rebuilt from its durable `store` after a restart: jobs, leases (with
    /// their deadlines), dead letters, counters, the fencing counter and the wall-clock
    /// origin come back.
    pub fn recover(config: QueueConfig, store: Store) -> Self {
        let mut q = Queue {
            config,
            store,
            ready: BTreeSet::new(),
            expiries: BTreeSet::new(),
            committed: None,
            commands: 0,
            flaw: Flaw::None,
            landing: BTreeMap::new(),
            task_delays: SplitMix64(0x656e_7175_6575_655f),
        };
        q.reindex();
        q
    }

    fn reindex(&mut self) {
        self.ready.clear();
        self.expiries.clear();
        for (key, e) in self.store.entries.iter() {
            match e.state {
                State::Ready { due } => {
                    self.ready.insert((due, *key));
                }
                State::Leased { deadline, .. } => {
                    self.expiries.insert((deadline, *key));
                }
            }
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The durable store (what a restart keeps).
    pub fn store(&self) -> &Store {
        self.committed.as_ref().unwrap_or(&self.store)
    }

    /// Where the queue's instants sit on the wall clock, kept in the store (set by an
    /// adapter with [`set_origin`](Queue::set_origin)).
    pub fn origin(&self) -> Option<Origin> {
        self.store.origin
    }

    /// Where every job is, and the counters.
    pub fn counts(&self) -> QueueCounts {
        let mut c = self.store.counts;
        c.pending = 0;
        c.leased = 0;
        c.retrying = 0;
        for e in self.store.entries.values() {
            match e.state {
                State::Leased { .. } => c.leased += 1,
                State::Ready { .. } if e.attempts == 0 => c.pending += 1,
                State::Ready { .. } => c.retrying += 1,
            }
            if e.next.is_some() {
                c.pending += 1;
            }
        }
        c
    }

    /// The jobs in the queue and not settled (pending, leased or retrying), and the jobs
    /// dead now (not redriven), from the counters alone (no walk over the jobs, unlike
    /// [`counts`](Queue::counts)): what the adapters' gauges read after each command.
    pub fn levels(&self) -> (u64, u64) {
        let c = &self.store.counts;
        let settled = c.done + c.superseded + c.dead + c.discarded;
        (c.enqueued.saturating_sub(settled), c.dead)
    }

    /// Every dead letter ever, in the order they died (redriven ones stay listed).
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.store.dead
    }

    /// The unexpired lease on `key` at `now`, if any.
    pub fn lease_of(&self, key: JobKey, now: Instant) -> Option<LeaseToken> {
        match self.store.entries.get(&key)?.state {
            State::Leased { fence, deadline } if deadline > now || self.never_expires() => {
                Some(LeaseToken { key, fence })
            }
            _ => None,
        }
    }

    /// The version the queue holds for `key` (waiting, out or retrying), if any.
    pub fn version_of(&self, key: JobKey) -> Option<u64> {
        self.store
            .entries
            .get(&key)
            .map(|e| e.next.as_ref().map_or(e.version, |n| n.version))
    }

    /// When something next becomes due or a lease expires: the instant to call
    /// [`lease`](Queue::lease) again (it may be `<= now`: something is due already).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = if self.config.leases_per_target_max.is_some() {
            // The earliest due job of a target with room: the jobs of a full target
            // wait for one of its leases to end (an ack or a nack, whose worker leases
            // again, or an expiry, which is below).
            let full = self.full_targets();
            self.ready
                .iter()
                .find(|(_, k)| {
                    !self
                        .store
                        .entries
                        .get(k)
                        .and_then(|e| e.target)
                        .is_some_and(|t| full.contains(&t))
                })
                .map(|(t, _)| *t)
        } else {
            self.ready.first().map(|(t, _)| *t)
        };
        let exp = if self.never_expires() {
            None
        } else {
            self.expiries.first().map(|(t, _)| *t)
        };
        [due, exp, self.next_redrive()].into_iter().flatten().min()
    }

    /// The targets with [`leases_per_target_max`](QueueConfig::leases_per_target_max)
    /// leases out (none without a limit).
    fn full_targets(&self) -> BTreeSet<Name> {
        let Some(max) = self.config.leases_per_target_max else {
            return BTreeSet::new();
        };
        if self.flaw == Flaw::TargetLimitIgnored {
            return BTreeSet::new();
        }
        let mut out: BTreeMap<Name, u32> = BTreeMap::new();
        for (_, key) in &self.expiries {
            if let Some(e) = self.store.entries.get(key)
                && let (Some(t), State::Leased { .. }) = (e.target, e.state)
            {
                *out.entry(t).or_insert(0) += 1;
            }
        }
        out.into_iter()
            .filter(|(_, n)| *n >= max)
            .map(|(t, _)| t)
            .collect()
    }

    /// How many leases are out on the jobs of `target` (what
    /// [`leases_per_target_max`](QueueConfig::leases_per_target_max) limits); it walks
    /// every job in the queue.
    pub fn leases_of_target(&self, target: Name) -> usize {
        self.store
            .entries
            .values()
            .filter(|e| e.target == Some(target) && matches!(e.state, State::Leased { .. }))
            .count()
    }

    /// Dead letters that [automatic redrive](QueueConfigBuilder::redrive_after) will
    /// still put back (0 when it is off): not redriven yet, of a job redriven fewer
    /// than `redrives_max` times.
    pub fn redrives_scheduled(&self) -> usize {
        let Some(r) = self.config.redrive else {
            return 0;
        };
        self.store
            .dead
            .iter()
            .filter(|d| d.redriven_at.is_none() && d.redrives < r.redrives_max)
            .count()
    }

    /// When automatic redrive puts the next dead letter back, if it is on and one is
    /// waiting.
    fn next_redrive(&self) -> Option<Instant> {
        let r = self.config.redrive?;
        self.store
            .dead
            .iter()
            .filter(|d| d.redriven_at.is_none() && d.redrives < r.redrives_max)
            .map(|d| d.at.saturating_add(r.after))
            .min()
    }

    fn never_expires(&self) -> bool {
        self.flaw == Flaw::LeaseNeverExpires
    }

    // ----- commands -----

    /// Records where the queue's instants sit on the wall clock, durably, unless the
    /// store holds an origin already (a recovered queue keeps its first one: every
    /// stored instant is on that scale). Returns the origin in force.
    pub fn set_origin(&mut self, origin: Origin) -> Origin {
        let o = *self.store.origin.get_or_insert(origin);
        if let Some(s) = self.committed.as_mut() {
            s.origin.get_or_insert(o);
        }
        o
    }

    /// Accepts `job` (durably, before returning). A newer version than the key holds
    /// coalesces with a waiting one or waits behind a leased one; a unique id seen
    /// before is a duplicate. The job is due at `now` or at its run-at, whichever is
    /// later.
    pub fn enqueue(&mut self, job: Job, now: Instant) -> Enqueued {
        self.store.clock_high = self.store.clock_high.max(now);
        let key = job.key;
        let Some(mut live) = self.store.entries.accept(key, job.version) else {
            return Enqueued::Duplicate;
        };
        self.store.counts.enqueued += 1;
        if self.flaw == Flaw::EnqueueInOwnTask && self.lands_under_an_older(&job, now) {
            // The defect: the older version's write lands after this one's and
            // overwrites it; the newer version is gone as if superseded.
            self.store.counts.superseded += 1;
            self.commit();
            return Enqueued::Coalesced;
        }
        if self.flaw == Flaw::UniqueCoalesceByType && !key.is_keyed() {
            self.replace_a_waiting_unique(key.job_type);
            live = self.store.entries.handle(&key);
        }
        let due = if self.flaw == Flaw::RunAtIgnored {
            now
        } else {
            due_at(now, job.run_at)
        };
        let out = match live.and_then(|h| self.store.entries.at_mut(h)) {
            None => {
                self.store.entries.place(
                    key,
                    Entry {
                        version: job.version,
                        payload: job.payload,
                        run_at: job.run_at,
                        attempts: 0,
                        state: State::Ready { due },
                        next: None,
                        redriven: false,
                        target: job.target,
                        history: Vec::new(),
                        redrives: 0,
                    },
                );
                self.ready.insert((due, key));
                Enqueued::New
            }
            Some(e) => match e.state {
                State::Ready { due: old } => {
                    self.store.counts.superseded += 1;
                    e.version = job.version;
                    e.payload = job.payload;
                    e.run_at = job.run_at;
                    e.target = job.target;
                    e.attempts = 0;
                    e.history.clear();
                    e.redriven = false;
                    e.state = State::Ready { due };
                    self.ready.remove(&(old, key));
                    self.ready.insert((due, key));
                    Enqueued::Coalesced
                }
                State::Leased { .. } => {
                    let waiting = Waiting {
                        version: job.version,
                        payload: job.payload,
                        run_at: job.run_at,
                        target: job.target,
                    };
                    if e.next.replace(Box::new(waiting)).is_some() {
                        self.store.counts.superseded += 1;
                        Enqueued::Coalesced
                    } else {
                        Enqueued::Queued
                    }
                }
            },
        };
        self.commit();
        out
    }

    /// Under [`Flaw::UniqueCoalesceByType`]: drops a unique job of `job_type` that waits
    /// for its first attempt, counted as superseded.
    fn replace_a_waiting_unique(&mut self, job_type: JobType) {
        let victim = self.store.entries.iter().find_map(|(k, e)| {
            (k.job_type == job_type
                && !k.is_keyed()
                && e.attempts == 0
                && matches!(e.state, State::Ready { .. }))
            .then_some(*k)
        });
        if let Some(k) = victim
            && let Some(e) = self.store.entries.remove(&k)
            && let State::Ready { due } = e.state
        {
            self.ready.remove(&(due, k));
            self.store.counts.superseded += 1;
        }
    }

    /// Under [`Flaw::EnqueueInOwnTask`]: whether `job`'s write, landing after its own
    /// delay, is overwritten by the write of the version before it, still waiting and
    /// landing later.
    fn lands_under_an_older(&mut self, job: &Job, now: Instant) -> bool {
        let key = job.key;
        let lands = now + Duration::from_nanos(self.task_delays.next() % ENQUEUE_TASK_LAG_NS);
        let waiting = self.store.entries.get(&key).and_then(|e| match e.state {
            State::Ready { .. } => Some(e.version),
            State::Leased { .. } => e.next.as_ref().map(|n| n.version),
        });
        match self.landing.get(&key) {
            Some(&(older, at)) if at > lands && waiting == Some(older) => true,
            _ => {
                self.landing.insert(key, (job.version, lands));
                false
            }
        }
    }

    /// Hands out the earliest job due at `now`, hidden until the lease's deadline.
    /// Expired leases are processed first (then, with [automatic
    /// redrive](QueueConfigBuilder::redrive_after), the dead letters whose time came).
    /// A job is never handed out before its run-at. With a
    /// [per-target limit](QueueConfigBuilder::leases_per_target_max), the jobs of a
    /// target that has that many leases out are skipped: the earliest due job of a
    /// target with room goes.
    pub fn lease(&mut self, now: Instant) -> Option<Lease> {
        self.store.clock_high = self.store.clock_high.max(now);
        self.expire(now);
        self.redrive_due(now);
        let full = self.full_targets();
        // The index entry after which to look (the ones before belong to full targets).
        let mut after: Option<(Instant, JobKey)> = None;
        let lease = loop {
            let next = match after {
                None => self.ready.first(),
                Some(a) => self
                    .ready
                    .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .next(),
            };
            let &(due, key) = next?;
            if due > now {
                return None;
            }
            let Some(e) = self
                .store
                .entries
                .get_mut(&key)
                .filter(|e| e.state == State::Ready { due })
            else {
                // A stale index entry (only a flawed queue leaves one).
                self.ready.remove(&(due, key));
                continue;
            };
            if e.target.is_some_and(|t| full.contains(&t)) {
                after = Some((due, key));
                continue;
            }
            let fence = self.store.fence_next;
            self.store.fence_next += 1;
            let deadline = if self.flaw == Flaw::NoLease {
                now
            } else {
                now + self.config.visibility_timeout
            };
            e.attempts += 1;
            let lease = Lease {
                job: e.job(key),
                token: LeaseToken { key, fence },
                attempt: e.attempts,
                deadline,
                redriven: e.redriven,
            };
            // Under the `DueWithoutLeases` and `NoLease` defects the job stays due, so
            // the next poll hands it out again.
            if !matches!(self.flaw, Flaw::DueWithoutLeases | Flaw::NoLease) {
                e.state = State::Leased { fence, deadline };
                if after.is_none() {
                    self.ready.pop_first();
                } else {
                    self.ready.remove(&(due, key));
                }
                self.expiries.insert((deadline, key));
            }
            break lease;
        };
        self.commit();
        Some(lease)
    }

    /// Where the job of `token` is, if the token is valid at `now`.
    fn valid(&self, token: &LeaseToken, now: Instant, ack: bool) -> Result<Handle, Fenced> {
        let fenced = || Fenced::new(token.key, token.fence);
        let h = self.store.entries.handle(&token.key).ok_or_else(fenced)?;
        let e = self.store.entries.at(h).ok_or_else(fenced)?;
        if matches!(self.flaw, Flaw::DueWithoutLeases | Flaw::NoLease)
            || (ack && self.flaw == Flaw::NoFencing)
        {
            return Ok(h);
        }
        match e.state {
            State::Leased { fence, deadline }
                if fence == token.fence && (deadline > now || self.never_expires()) =>
            {
                Ok(h)
            }
            _ => Err(fenced()),
        }
    }

    /// Extends the lease to `now + visibility_timeout`; returns the new deadline.
    pub fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced> {
        self.store.clock_high = self.store.clock_high.max(now);
        self.expire(now);
        self.valid(token, now, false)?;
        let deadline = now + self.config.visibility_timeout;
        let key = token.key;
        if self.flaw == Flaw::HeartbeatNotExtended {
            // The defect: the extension is reported, not made.
            return Ok(deadline);
        }
        if self.flaw == Flaw::HeartbeatIgnored {
            // The defect: nothing is extended, and the old deadline is reported.
            if let Some(State::Leased { deadline: old, .. }) =
                self.store.entries.get(&key).map(|e| e.state)
            {
                return Ok(old);
            }
        }
        if let Some(e) = self.store.entries.get_mut(&key)
            && let State::Leased {
                fence,
                deadline: old,
            } = e.state
        {
            e.state = State::Leased { fence, deadline };
            self.expiries.remove(&(old, key));
            self.expiries.insert((deadline, key));
        }
        self.commit();
        Ok(deadline)
    }

    /// The job was delivered: it is done (and a newer version waiting behind it
    /// becomes due).
    pub fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced> {
        self.store.clock_high = self.store.clock_high.max(now);
        self.expire(now);
        let h = self.valid(token, now, true)?;
        self.store.counts.done += 1;
        self.finish_at(token.key, h, now);
        self.commit();
        Ok(())
    }

    /// The delivery failed with `error` (recorded; a dead letter shows the last one):
    /// retried after the backoff, superseded by a newer version waiting behind it, or
    /// dead-lettered after the last attempt.
    pub fn nack(
        &mut self,
        token: &LeaseToken,
        error: &str,
        now: Instant,
    ) -> Result<Nacked, Fenced> {
        self.store.clock_high = self.store.clock_high.max(now);
        self.expire(now);
        self.valid(token, now, true)?;
        let out = self.fail(token.key, error, now, true);
        self.commit();
        Ok(out)
    }

    /// Puts every dead letter not yet redriven back in the queue, in the order they
    /// died; one older than a version enqueued since is settled as superseded (the
    /// newer carries the newer data), so each key's order is kept. Returns how many
    /// were redriven.
    pub fn redrive(&mut self, now: Instant) -> usize {
        self.store.clock_high = self.store.clock_high.max(now);
        let mut n = 0;
        for i in 0..self.store.dead.len() {
            if self.store.dead[i].redriven_at.is_some() {
                continue;
            }
            n += 1;
            self.redrive_one(i, now);
        }
        self.commit();
        n
    }

    /// Automatic redrive: puts back the dead letters whose time came at `now`.
    fn redrive_due(&mut self, now: Instant) {
        let Some(r) = self.config.redrive else {
            return;
        };
        let mut changed = false;
        for i in 0..self.store.dead.len() {
            let d = &self.store.dead[i];
            if d.redriven_at.is_none()
                && d.redrives < r.redrives_max
                && d.at.saturating_add(r.after) <= now
            {
                self.redrive_one(i, now);
                changed = true;
            }
        }
        if changed {
            self.commit();
        }
    }

    /// Puts the dead letter `i` (not redriven yet) back in the queue.
    fn redrive_one(&mut self, i: usize, now: Instant) {
        let job = self.store.dead[i].job.clone();
        let redrives = self.store.dead[i].redrives.saturating_add(1);
        self.store.dead[i].redriven_at = Some(now);
        self.store.counts.dead -= 1;
        self.store.counts.redriven += 1;
        let key = job.key;
        let newer = self.store.entries.high(&key).unwrap_or(0) > job.version;
        let live = self.store.entries.contains_key(&key);
        if self.flaw == Flaw::RedriveOutOfOrder {
            // The defect: the dead version goes back whatever came since.
            match self.store.entries.get_mut(&key) {
                Some(e) => {
                    match e.state {
                        State::Ready { .. } => {
                            self.store.counts.superseded += 1;
                            e.version = job.version;
                            e.payload = job.payload;
                        }
                        State::Leased { .. } => {
                            let waiting = Waiting {
                                version: job.version,
                                payload: job.payload,
                                run_at: None,
                                target: job.target,
                            };
                            if e.next.replace(Box::new(waiting)).is_some() {
                                self.store.counts.superseded += 1;
                            }
                        }
                    }
                    e.redriven = true;
                }
                None => self.revive(job, redrives, now),
            }
            return;
        }
        if newer || live {
            self.store.counts.superseded += 1;
        } else {
            self.revive(job, redrives, now);
        }
    }

    fn revive(&mut self, job: Job, redrives: u32, now: Instant) {
        self.store.entries.insert(
            job.key,
            Entry {
                version: job.version,
                payload: job.payload,
                run_at: job.run_at,
                attempts: 0,
                state: State::Ready { due: now },
                next: None,
                redriven: true,
                target: job.target,
                history: Vec::new(),
                redrives,
            },
        );
        self.ready.insert((now, job.key));
    }

    /// The queue process crashes and restarts: the in-memory state is gone, and the
    /// queue is rebuilt from its committed store (uncommitted writes are lost; the
    /// reference has none). The simulated worlds' crash, reached through
    /// [`TaskQueue::restart`](crate::queue::contract::TaskQueue::restart); a service
    /// restarts its process and [`recover`](Queue::recover)s instead.
    pub(crate) fn restart(&mut self) {
        if let Some(committed) = self.committed.take() {
            self.store = committed;
        }
        self.reindex();
    }

    /// Moves the due instant of `key`'s waiting (ready) job to `at`: the conformance
    /// suite steers this model to the retry instant a store drew, so both stay in step
    /// (their jitter draws differ). False when the key has no ready job.
    pub(crate) fn steer_due(&mut self, key: JobKey, at: Instant) -> bool {
        let Some(e) = self.store.entries.get_mut(&key) else {
            return false;
        };
        let State::Ready { due } = e.state else {
            return false;
        };
        e.state = State::Ready { due: at };
        self.ready.remove(&(due, key));
        self.ready.insert((at, key));
        true
    }

    // ----- internals -----

    /// Leases whose deadline passed: the attempt failed; the job is visible again.
    fn expire(&mut self, now: Instant) {
        if self.never_expires() {
            return;
        }
        let mut changed = false;
        while let Some(&(deadline, key)) = self.expiries.first() {
            if deadline > now {
                break;
            }
            self.expiries.pop_first();
            let current = matches!(
                self.store.entries.get(&key).map(|e| e.state),
                Some(State::Leased { deadline: d, .. }) if d == deadline
            );
            if !current {
                continue;
            }
            self.store.counts.expired += 1;
            self.fail(key, LEASE_EXPIRED, now, false);
            changed = true;
        }
        if changed {
            self.commit();
        }
    }

    /// Drops `key`'s lease from the expiry index.
    fn unlease(&mut self, key: JobKey) {
        if let Some(State::Leased { deadline, .. }) = self.store.entries.get(&key).map(|e| e.state)
        {
            self.expiries.remove(&(deadline, key));
        }
    }

    /// The lease on `key` ended in failure with `error` (a nack, or expiry without
    /// backoff).
    fn fail(&mut self, key: JobKey, error: &str, now: Instant, backoff: bool) -> Nacked {
        self.unlease(key);
        let Some(e) = self.store.entries.get_mut(&key) else {
            return Nacked::Superseded;
        };
        if e.next.is_some() {
            self.store.counts.superseded += 1;
            self.finish(key, now);
            return Nacked::Superseded;
        }
        let attempts = e.attempts;
        if self.flaw != Flaw::DeadLetterWithoutError {
            if e.history.len() >= ATTEMPT_HISTORY_MAX {
                e.history.remove(0);
            }
            e.history.push(Attempt {
                attempt: attempts,
                at: now,
                error: error.to_owned(),
            });
        }
        if attempts >= self.config.attempts_max {
            if let Some(e) = self.store.entries.remove(&key)
                && self.flaw != Flaw::DropAfterMaxAttempts
            {
                self.store.counts.dead += 1;
                self.store.dead.push(DeadLetter {
                    job: e.job(key),
                    attempts: e.attempts,
                    at: now,
                    last_error: if self.flaw == Flaw::DeadLetterWithoutError {
                        String::new()
                    } else {
                        error.to_owned()
                    },
                    redriven_at: None,
                    history: e.history,
                    redrives: e.redrives,
                });
                self.retain_dead();
            }
            return Nacked::DeadLettered;
        }
        let at = if backoff {
            let mut rng = SplitMix64(self.store.rng);
            let d = self.config.backoff.delay(attempts, &mut rng);
            self.store.rng = rng.0;
            self.store.counts.retries += 1;
            now + d
        } else {
            now
        };
        if let Some(entry) = self.store.entries.get_mut(&key) {
            if let State::Ready { due } = entry.state {
                self.ready.remove(&(due, key));
            }
            entry.state = State::Ready { due: at };
        }
        self.ready.insert((at, key));
        Nacked::Retry { at }
    }

    /// The retention limit: drops dead letters beyond
    /// [`dead_letters_max`](QueueConfig::dead_letters_max), the oldest redriven one
    /// first, else the oldest (its job discarded).
    fn retain_dead(&mut self) {
        let Some(max) = self.config.dead_letters_max else {
            return;
        };
        while self.store.dead.len() > max {
            let i = self
                .store
                .dead
                .iter()
                .position(|d| d.redriven_at.is_some())
                .unwrap_or(0);
            let letter = self.store.dead.remove(i);
            self.store.counts.dead_letters_dropped += 1;
            if letter.redriven_at.is_none() {
                self.store.counts.dead -= 1;
                self.store.counts.discarded += 1;
            }
        }
    }

    /// The current version of `key` is settled: a version waiting behind it becomes
    /// due (at its run-at, if later), or the key leaves the queue.
    fn finish(&mut self, key: JobKey, now: Instant) {
        if let Some(h) = self.store.entries.handle(&key) {
            self.finish_at(key, h, now);
        }
    }

    /// [`finish`](Self::finish) of `key`, whose job is at `h`.
    fn finish_at(&mut self, key: JobKey, h: Handle, now: Instant) {
        let Some(e) = self.store.entries.at_mut(h) else {
            return;
        };
        match e.state {
            State::Leased { deadline, .. } => {
                remove_from(&mut self.expiries, (deadline, key));
            }
            State::Ready { due } => {
                remove_from(&mut self.ready, (due, key));
            }
        }
        match e.next.take() {
            Some(w) => {
                let due = due_at(now, w.run_at);
                e.version = w.version;
                e.payload = w.payload;
                e.run_at = w.run_at;
                e.target = w.target;
                e.attempts = 0;
                e.history.clear();
                e.redriven = false;
                e.state = State::Ready { due };
                self.ready.insert((due, key));
            }
            None => {
                self.store.entries.free_at(h);
            }
        }
    }

    /// The end of a command that changed the store: its writes commit (for the
    /// reference, in place: the working state is the committed store). Under
    /// [`Flaw::AckBeforeCommit`] the command answers uncommitted, and every 8th
    /// command commits everything so far.
    fn commit(&mut self) {
        if self.flaw != Flaw::AckBeforeCommit {
            return;
        }
        self.commands += 1;
        if self.committed.is_none() || self.commands.is_multiple_of(8) {
            self.committed = Some(self.store.clone());
        }
    }
}

/// Where a write stages its jobs: the in-memory [`OutboxTx`] of an [`Outbox`], or (the
/// point of the outbox pattern) the caller's own database transaction, which inserts
/// each staged job as an outbox row next to the caller's row change, so both commit or
/// neither does.
///
/// Code that produces jobs is written against this trait (as the profile-sync
/// [`ProfileService`](crate::queue::profile::ProfileService) is), so the same code
/// stages into memory today and into a SQL transaction tomorrow.
pub trait Staging {
    /// Why staging failed (an in-memory outbox never fails: [`std::convert::Infallible`]).
    type Error;
    /// Stages `job`: it is committed with the write, or not at all.
    fn stage(&mut self, job: Job) -> Result<(), Self::Error>;
    /// A new unique-job id, never handed out before by this outbox (it is committed
    /// with the write; an id of a write that failed may be reused).
    fn next_id(&mut self) -> JobId;
    /// Stages a unique job of `job_type` under a new id; returns the id.
    fn stage_unique(&mut self, job_type: JobType, payload: Payload) -> Result<JobId, Self::Error> {
        let id = self.next_id();
        self.stage(Job::unique(job_type, id, payload))?;
        Ok(id)
    }
}

/// One in-memory write of an [`Outbox`]: the jobs it stages commit when the closure
/// given to [`Outbox::write`] returns `Ok`, and are discarded when it returns `Err`.
#[derive(Debug)]
pub struct OutboxTx {
    staged: Vec<Job>,
    id_next: u64,
}

impl OutboxTx {
    /// Stages `job` (see [`Staging::stage`]).
    pub fn stage(&mut self, job: Job) {
        self.staged.push(job);
    }
    /// Stages a unique job of `job_type` under a new id; returns the id.
    pub fn stage_unique(&mut self, job_type: JobType, payload: Payload) -> JobId {
        let id = Staging::next_id(self);
        self.stage(Job::unique(job_type, id, payload));
        id
    }
    /// The jobs staged so far in this write.
    pub fn staged(&self) -> &[Job] {
        &self.staged
    }
}

impl Staging for OutboxTx {
    type Error = std::convert::Infallible;
    fn stage(&mut self, job: Job) -> Result<(), Self::Error> {
        OutboxTx::stage(self, job);
        Ok(())
    }
    fn next_id(&mut self) -> JobId {
        let id = JobId(self.id_next);
        self.id_next = self.id_next.saturating_add(1);
        id
    }
}

/// The producer's outbox: jobs staged together with the producer's own write, and the
/// relay that moves them into the queue.
///
/// **The contract.**
/// - *Atomic with the caller's write*: [`write`](Outbox::write) runs the caller's
///   closure with an [`OutboxTx`]; the jobs it stages are committed if and only if the
///   closure returns `Ok`. In memory the caller's own change is the closure's business
///   (make it the closure's last step, or keep it in the same transaction when the
///   outbox is a table of your database: implement [`Staging`] for that transaction).
/// - *At least once into the queue*: [`relay`](Outbox::relay) hands the committed jobs
///   to the queue in commit order and removes each one only once the queue accepted
///   it; a relay that stops (the queue is down, the relay crashed before removing the
///   row) sends the rest, or the same row again, later.
/// - *Once in the queue*: a row sent twice is a [`Enqueued::Duplicate`]: a keyed job's
///   version is not newer than one enqueued before, a unique job's id was seen. Keyed
///   jobs coalesce by key (latest version wins); unique jobs run once each.
///
/// ```
/// use faultline::queue::{JobType, Outbox, Payload};
///
/// const EMAIL: JobType = JobType::from_static("send_email");
/// let mut outbox = Outbox::new();
/// let mut users = vec!["ada"];
/// // The caller's write fails: nothing is staged.
/// let failed: Result<(), &str> = outbox.write(|tx| {
///     tx.stage_unique(EMAIL, Payload::default());
///     Err("the user row violates a constraint")
/// });
/// assert!(failed.is_err());
/// assert_eq!(outbox.backlog(), 0);
/// // It succeeds: the row and the job commit together.
/// outbox.write(|tx| {
///     tx.stage_unique(EMAIL, Payload::encode(&"grace@example.com").map_err(|e| e.to_string())?);
///     users.push("grace");
///     Ok::<_, String>(())
/// })?;
/// assert_eq!(outbox.backlog(), 1);
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Debug)]
pub struct Outbox {
    rows: VecDeque<Job>,
    id_next: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// An empty outbox; its unique-job ids start at 1.
    pub fn new() -> Self {
        Outbox::with_first_id(JobId(1))
    }

    /// An empty outbox whose unique-job ids start at `first` (give every producer of
    /// one queue its own range).
    pub fn with_first_id(first: JobId) -> Self {
        Outbox {
            rows: VecDeque::new(),
            id_next: first.0,
        }
    }

    /// Runs the caller's write `f`: the jobs it stages commit with it when it returns
    /// `Ok`, and are discarded when it returns `Err` (its error is returned).
    pub fn write<T, E>(&mut self, f: impl FnOnce(&mut OutboxTx) -> Result<T, E>) -> Result<T, E> {
        let mut tx = OutboxTx {
            staged: Vec::new(),
            id_next: self.id_next,
        };
        let out = f(&mut tx)?;
        self.id_next = tx.id_next;
        self.rows.extend(tx.staged);
        Ok(out)
    }

    /// Committed jobs not yet accepted by the queue.
    pub fn backlog(&self) -> usize {
        self.rows.len()
    }

    /// The committed jobs not yet accepted, in commit order.
    pub fn rows(&self) -> impl Iterator<Item = &Job> {
        self.rows.iter()
    }

    /// Hands the rows to `enqueue` in commit order, removing each one it accepts
    /// (true); stops at the first it refuses (the queue is down: try again later).
    /// Returns how many were accepted.
    pub fn relay(&mut self, mut enqueue: impl FnMut(Job) -> bool) -> usize {
        let mut n = 0;
        while let Some(job) = self.rows.front() {
            if !enqueue(job.clone()) {
                break;
            }
            self.rows.pop_front();
            n += 1;
        }
        n
    }
}

/// What a target did with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// It took effect.
    Applied,
    /// The target holds this (or a newer) version, or applied this job before:
    /// acknowledged without effect.
    Stale,
    /// The delivery's fencing token is older than one already seen for this key:
    /// refused (the worker's lease was taken over).
    Fenced,
}

/// A target's record of the unique jobs it applied: each job's effect takes place once
/// however often it is delivered (dedupe by job key), and a delivery under a fencing
/// token older than one seen for the job is refused.
#[derive(Clone, Debug, Default)]
pub struct Inbox {
    seen: BTreeMap<JobKey, u64>,
    pub(crate) flaw: Option<Flaw>,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Inbox::default()
    }

    /// Applies the job `key`, delivered under fencing token `fence`: [`Applied::Applied`]
    /// the first time (do the effect), [`Applied::Stale`] after, [`Applied::Fenced`]
    /// for a token older than one seen.
    pub fn apply(&mut self, key: JobKey, fence: u64) -> Applied {
        if self.flaw == Some(Flaw::NoDedupe) {
            self.seen.insert(key, fence);
            return Applied::Applied;
        }
        match self.seen.get_mut(&key) {
            None => {
                self.seen.insert(key, fence);
                Applied::Applied
            }
            Some(seen) if fence < *seen => Applied::Fenced,
            Some(seen) => {
                *seen = fence;
                Applied::Stale
            }
        }
    }

    /// True once the job `key` took effect.
    pub fn contains(&self, key: JobKey) -> bool {
        self.seen.contains_key(&key)
    }

    /// How many jobs took effect.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no job took effect.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC: JobType = JobType::from_static("sync");
    const MAIL: JobType = JobType::from_static("mail");

    fn name(p: u64) -> Name {
        Name::new(&format!("p{p}")).unwrap()
    }

    fn key(p: u64) -> JobKey {
        JobKey::keyed(SYNC, name(p))
    }

    fn task(p: u64, v: u64) -> Job {
        Job::keyed(SYNC, name(p), v, Payload::default())
    }

    fn queue(attempts: u32) -> Queue {
        Queue::new(
            QueueConfig::builder()
                .visibility_timeout(Duration::from_millis(100))
                .attempts_max(attempts)
                .backoff(Duration::from_millis(10), Duration::from_millis(40))
                .build()
                .unwrap(),
        )
    }

    const T0: Instant = Instant::ZERO;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn config_is_validated() {
        assert!(QueueConfig::builder().attempts_max(0).build().is_err());
        assert!(
            QueueConfig::builder()
                .visibility_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            QueueConfig::builder()
                .backoff(Duration::from_secs(2), Duration::from_secs(1))
                .build()
                .is_err()
        );
    }

    #[test]
    fn a_lease_hides_the_task_until_it_expires_then_fences_the_late_worker() {
        let mut q = queue(5);
        q.enqueue(task(1, 1), T0);
        let a = q.lease(T0).unwrap();
        assert_eq!(q.lease(ms(50)), None, "hidden while leased");
        let b = q.lease(ms(100)).unwrap();
        assert!(b.token.fence() > a.token.fence());
        assert_eq!(b.attempt, 2);
        assert!(
            q.ack(&a.token, ms(101)).is_err(),
            "the late worker is fenced"
        );
        assert!(q.heartbeat(&a.token, ms(101)).is_err());
        q.ack(&b.token, ms(101)).unwrap();
        let c = q.counts();
        assert_eq!((c.done, c.expired, c.in_flight()), (1, 1, 0));
        assert!(c.balanced());
    }

    #[test]
    fn heartbeats_extend_the_lease() {
        let mut q = queue(5);
        q.enqueue(task(1, 1), T0);
        let a = q.lease(T0).unwrap();
        assert_eq!(q.heartbeat(&a.token, ms(80)).unwrap(), ms(180));
        assert_eq!(q.lease(ms(150)), None);
        q.ack(&a.token, ms(170)).unwrap();
    }

    #[test]
    fn newer_versions_coalesce_and_wait_behind_a_lease() {
        let mut q = queue(5);
        assert_eq!(q.enqueue(task(1, 1), T0), Enqueued::New);
        assert_eq!(q.enqueue(task(1, 2), T0), Enqueued::Coalesced);
        assert_eq!(q.enqueue(task(1, 2), T0), Enqueued::Duplicate);
        let a = q.lease(T0).unwrap();
        assert_eq!(a.job.version, 2);
        assert_eq!(q.enqueue(task(1, 3), T0), Enqueued::Queued);
        let four = Job::keyed(SYNC, name(1), 4, Payload::encode(&"four").unwrap());
        assert_eq!(q.enqueue(four, T0), Enqueued::Coalesced);
        assert_eq!(q.lease(T0), None, "one lease per key");
        q.ack(&a.token, ms(1)).unwrap();
        let b = q.lease(ms(1)).unwrap();
        assert_eq!((b.job.version, b.attempt), (4, 1));
        assert_eq!(b.job.payload.decode::<String>().unwrap(), "four");
        q.ack(&b.token, ms(2)).unwrap();
        let c = q.counts();
        assert_eq!((c.enqueued, c.done, c.superseded), (4, 2, 2));
        assert!(c.balanced());
    }

    #[test]
    fn unique_jobs_run_once_each_and_an_id_seen_is_a_duplicate() {
        let mut q = queue(5);
        let a = Job::unique(MAIL, JobId(1), Payload::encode(&"a@x").unwrap());
        let b = Job::unique(MAIL, JobId(2), Payload::encode(&"b@x").unwrap());
        assert_eq!(q.enqueue(a.clone(), T0), Enqueued::New);
        assert_eq!(q.enqueue(b, T0), Enqueued::New);
        assert_eq!(q.enqueue(a.clone(), T0), Enqueued::Duplicate);
        let first = q.lease(T0).unwrap();
        let second = q.lease(T0).unwrap();
        assert_ne!(first.job.key, second.job.key, "no coalescing without a key");
        q.ack(&first.token, T0).unwrap();
        assert_eq!(
            q.enqueue(a, ms(1)),
            Enqueued::Duplicate,
            "not even once done"
        );
        q.ack(&second.token, T0).unwrap();
        assert_eq!(q.lease(ms(1)), None);
        let c = q.counts();
        assert_eq!((c.enqueued, c.done, c.superseded), (2, 2, 0));
    }

    #[test]
    fn a_job_with_a_future_run_at_is_not_leased_before_it() {
        let mut q = queue(5);
        let later = Job::unique(MAIL, JobId(1), Payload::default()).run_at(ms(500));
        q.enqueue(later, T0);
        q.enqueue(task(1, 1), T0);
        let now = q.lease(T0).unwrap();
        assert_eq!(now.job.key, key(1), "the due job goes first");
        q.ack(&now.token, T0).unwrap();
        assert_eq!(q.poll_timeout(), Some(ms(500)));
        for t in [0, 1, 250, 499] {
            assert_eq!(q.lease(ms(t)), None, "not before its run-at ({t} ms)");
        }
        let l = q.lease(ms(500)).unwrap();
        assert_eq!(l.job.run_at, Some(ms(500)));
        // A run-at in the past is due at once; a newer version behind a lease keeps
        // its own run-at.
        q.enqueue(task(2, 1).run_at(T0), ms(600));
        let a = q.lease(ms(600)).unwrap();
        q.enqueue(task(2, 2).run_at(ms(900)), ms(600));
        q.ack(&a.token, ms(610)).unwrap();
        assert_eq!(q.lease(ms(899)), None);
        assert_eq!(q.lease(ms(900)).unwrap().job.version, 2);
    }

    #[test]
    fn retries_back_off_within_the_formula_then_dead_letter_with_the_last_error() {
        let mut q = queue(3);
        q.enqueue(task(1, 1), T0);
        let mut now = T0;
        for attempt in 1..=3u32 {
            let l = q.lease(now).unwrap();
            assert_eq!(l.attempt, attempt);
            match q.nack(&l.token, &format!("error {attempt}"), now).unwrap() {
                Nacked::Retry { at } => {
                    let ceiling = q.config().backoff().ceiling(attempt);
                    assert!(at.saturating_since(now) <= ceiling);
                    assert_eq!(q.lease(now).filter(|_| at > now), None);
                    now = at;
                }
                Nacked::DeadLettered => assert_eq!(attempt, 3),
                Nacked::Superseded => panic!("nothing newer"),
            }
        }
        assert_eq!(q.dead_letters().len(), 1);
        assert_eq!(q.dead_letters()[0].last_error, "error 3");
        assert_eq!(q.counts().dead, 1);
        assert!(q.counts().balanced());
        assert_eq!(q.redrive(now), 1);
        let l = q.lease(now).unwrap();
        assert!(l.redriven);
        q.ack(&l.token, now).unwrap();
        assert_eq!(q.dead_letters().len(), 1, "never deleted");
        assert!(q.dead_letters()[0].redriven_at.is_some());
        assert!(q.counts().balanced());
    }

    #[test]
    fn an_expired_last_attempt_records_that_the_lease_expired() {
        let mut q = queue(1);
        q.enqueue(task(1, 1), T0);
        let _ = q.lease(T0).unwrap();
        assert_eq!(q.lease(ms(100)), None);
        assert_eq!(q.dead_letters()[0].last_error, LEASE_EXPIRED);
    }

    #[test]
    fn redrive_of_a_stale_version_is_superseded() {
        let mut q = queue(1);
        q.enqueue(task(1, 1), T0);
        let l = q.lease(T0).unwrap();
        assert_eq!(q.nack(&l.token, "down", T0).unwrap(), Nacked::DeadLettered);
        q.enqueue(task(1, 2), T0);
        assert_eq!(q.redrive(T0), 1);
        let l = q.lease(T0).unwrap();
        assert_eq!(l.job.version, 2);
        assert_eq!(q.lease(T0), None);
        q.ack(&l.token, T0).unwrap();
        assert!(q.counts().balanced());
    }

    #[test]
    fn a_restart_keeps_tasks_leases_fences_and_the_origin() {
        let mut q = queue(5);
        let wall = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let origin = Origin::new(wall, T0);
        assert_eq!(q.set_origin(origin), origin);
        q.enqueue(task(1, 1), T0);
        q.enqueue(task(2, 1), T0);
        let a = q.lease(T0).unwrap();
        let before = q.counts();
        let mut r = Queue::recover(*q.config(), q.store().clone());
        assert_eq!(r.counts(), before);
        assert_eq!(r.origin(), Some(origin));
        let later = Origin::new(wall + Duration::from_secs(60), ms(60_000));
        assert_eq!(r.set_origin(later), origin, "the first origin stays");
        assert_eq!(r.lease_of(a.token.key(), ms(1)), Some(a.token));
        let b = r.lease(ms(1)).unwrap();
        assert!(b.token.fence() > a.token.fence());
        r.ack(&a.token, ms(2)).unwrap();
    }

    #[test]
    fn a_failed_write_stages_nothing_and_a_committed_one_relays_in_order() {
        let mut o = Outbox::new();
        let r: Result<(), &str> = o.write(|tx| {
            tx.stage(task(1, 1));
            tx.stage_unique(MAIL, Payload::default());
            Err("constraint violated")
        });
        assert_eq!(r, Err("constraint violated"));
        assert_eq!(o.backlog(), 0);
        let id = o
            .write(|tx| {
                tx.stage(task(3, 1));
                let id = tx.stage_unique(MAIL, Payload::default());
                tx.stage(task(3, 2));
                Ok::<_, ()>(id)
            })
            .unwrap();
        assert_eq!(id, JobId(1), "the failed write's id is not burnt");
        assert_eq!(o.backlog(), 3);
        let mut seen = Vec::new();
        assert_eq!(
            o.relay(|t| {
                seen.push(t);
                seen.len() < 2
            }),
            1
        );
        assert_eq!(o.backlog(), 2);
        assert_eq!(o.relay(|_| true), 2);
        assert_eq!(seen[0].version, 1);
        assert_eq!(seen[1].key, JobKey::unique(MAIL, JobId(1)));
    }

    #[test]
    fn a_relay_that_sends_a_row_twice_makes_one_job() {
        let mut o = Outbox::new();
        o.write(|tx| {
            tx.stage(task(1, 1));
            tx.stage_unique(MAIL, Payload::default());
            Ok::<_, ()>(())
        })
        .unwrap();
        let mut q = queue(5);
        let rows: Vec<Job> = o.rows().cloned().collect();
        for job in &rows {
            assert_ne!(q.enqueue(job.clone(), T0), Enqueued::Duplicate);
        }
        // The relay crashed before removing the rows: it sends them again.
        assert_eq!(o.relay(|job| q.enqueue(job, T0) == Enqueued::Duplicate), 2);
        assert_eq!(q.counts().enqueued, 2);
    }

    #[test]
    fn the_inbox_applies_a_unique_job_once_and_refuses_old_fences() {
        let mut i = Inbox::new();
        let k = JobKey::unique(MAIL, JobId(9));
        assert_eq!(i.apply(k, 5), Applied::Applied);
        assert_eq!(i.apply(k, 6), Applied::Stale);
        assert_eq!(i.apply(k, 4), Applied::Fenced);
        assert!(i.contains(k));
        assert_eq!(i.len(), 1);
    }

    fn target(t: &str) -> Name {
        Name::new(t).unwrap()
    }

    fn for_target(id: u64, t: &str) -> Job {
        Job::unique(MAIL, JobId(id), Payload::default()).for_target(target(t))
    }

    fn limited(config: QueueConfigBuilder) -> Queue {
        Queue::new(
            config
                .visibility_timeout(Duration::from_millis(100))
                .backoff(Duration::from_millis(10), Duration::from_millis(40))
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn the_new_knobs_are_validated_and_off_by_default() {
        let d = QueueConfig::builder().build().unwrap();
        assert_eq!(
            (d.leases_per_target_max(), d.dead_letters_max(), d.redrive()),
            (None, None, None)
        );
        assert_eq!(d, QueueConfig::default());
        for (b, field) in [
            (
                QueueConfig::builder().leases_per_target_max(0),
                "leases_per_target_max",
            ),
            (
                QueueConfig::builder().leases_per_target_max(1_000_001),
                "leases_per_target_max",
            ),
            (
                QueueConfig::builder().dead_letters_max(0),
                "dead_letters_max",
            ),
            (
                QueueConfig::builder().redrive_after(Duration::ZERO, 3),
                "redrive_after",
            ),
            (
                QueueConfig::builder().redrive_after(Duration::from_secs(1), 0),
                "redrive_after",
            ),
            (
                QueueConfig::builder().redrive_after(Duration::from_secs(8 * 24 * 3_600), 1),
                "redrive_after",
            ),
        ] {
            assert_eq!(b.build().unwrap_err().field, field);
        }
        let c = QueueConfig::builder()
            .leases_per_target_max(2)
            .dead_letters_max(10)
            .redrive_after(Duration::from_secs(60), 3)
            .build()
            .unwrap();
        assert_eq!(c.leases_per_target_max(), Some(2));
        assert_eq!(c.dead_letters_max(), Some(10));
        let r = c.redrive().unwrap();
        assert_eq!((r.after(), r.redrives_max()), (Duration::from_secs(60), 3));
        // Serde: the new keys read through the builder; a default config writes none.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<QueueConfig>(&json).unwrap(), c);
        let plain = serde_json::to_string(&d).unwrap();
        assert!(!plain.contains("leases_per_target_max"), "{plain}");
        let err = serde_json::from_str::<QueueConfig>(r#"{"leases_per_target_max": 0}"#);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("leases_per_target_max")
        );
    }

    #[test]
    fn a_full_target_is_skipped_not_waited_behind() {
        let mut q = limited(QueueConfig::builder().leases_per_target_max(2));
        for id in 1..=4 {
            q.enqueue(for_target(id, "sick"), T0);
        }
        q.enqueue(for_target(5, "healthy"), ms(1));
        q.enqueue(task(1, 1), ms(2)); // no target: never limited
        let a = q.lease(ms(2)).unwrap();
        let b = q.lease(ms(2)).unwrap();
        assert_eq!(
            (a.job.key.id(), b.job.key.id()),
            (Some(JobId(1)), Some(JobId(2)))
        );
        assert_eq!(q.leases_of_target(target("sick")), 2);
        // The sick target is full: its older jobs are skipped, the others go.
        assert_eq!(q.lease(ms(2)).unwrap().job.key.id(), Some(JobId(5)));
        assert_eq!(q.lease(ms(2)).unwrap().job.key, key(1));
        assert_eq!(q.lease(ms(2)), None, "only the full target's jobs are left");
        // Nothing with room is due: the next instant is the first lease's expiry, not
        // the full target's due jobs (an idle worker does not spin on them).
        assert_eq!(q.poll_timeout(), Some(ms(102)));
        // An ack makes room: the sick target's next job goes, in order.
        q.ack(&a.token, ms(3)).unwrap();
        let c = q.lease(ms(3)).unwrap();
        assert_eq!(c.job.key.id(), Some(JobId(3)));
        assert_eq!(q.lease(ms(3)), None);
        // So does a nack, and an expiry.
        assert!(matches!(
            q.nack(&b.token, "timeout", ms(4)).unwrap(),
            Nacked::Retry { .. }
        ));
        assert_eq!(q.lease(ms(4)).unwrap().job.key.id(), Some(JobId(4)));
        assert_eq!(q.leases_of_target(target("sick")), 2);
        assert_eq!(q.leases_of_target(target("healthy")), 1);
        assert!(q.counts().balanced());
    }

    #[test]
    fn without_a_limit_one_target_takes_every_lease() {
        let mut q = queue(5);
        for id in 1..=4 {
            q.enqueue(for_target(id, "sick"), T0);
        }
        for _ in 1..=4 {
            assert!(q.lease(T0).is_some());
        }
        assert_eq!(q.leases_of_target(target("sick")), 4);
    }

    #[test]
    fn a_target_survives_coalescing_a_restart_and_serde() {
        let mut q = limited(QueueConfig::builder().leases_per_target_max(1));
        let sync = |v| task(1, v).for_target(target("billing"));
        q.enqueue(sync(1), T0);
        let a = q.lease(T0).unwrap();
        assert_eq!(a.job.target, Some(target("billing")));
        q.enqueue(sync(2), T0); // waits behind the lease
        q.enqueue(for_target(9, "billing"), T0);
        let mut r = Queue::recover(*q.config(), q.store().clone());
        assert_eq!(
            r.lease(ms(1)),
            None,
            "the restart kept the lease and its target"
        );
        r.ack(&a.token, ms(1)).unwrap();
        let nine = r.lease(ms(1)).unwrap();
        assert_eq!(
            nine.job.key.id(),
            Some(JobId(9)),
            "the earliest due goes first"
        );
        assert_eq!(r.lease(ms(1)), None, "version 2 waits: billing is full");
        r.ack(&nine.token, ms(1)).unwrap();
        let b = r.lease(ms(1)).unwrap();
        assert_eq!((b.job.version, b.job.target), (2, Some(target("billing"))));
        let json = serde_json::to_string(&b.job).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), b.job);
        // A job stored before targets existed reads as one without.
        let old = serde_json::to_string(&task(3, 1)).unwrap();
        assert!(!old.contains("target"), "{old}");
        assert_eq!(serde_json::from_str::<Job>(&old).unwrap().target, None);
    }

    #[test]
    fn a_dead_letter_keeps_its_attempt_history_bounded() {
        let attempts = u32::try_from(ATTEMPT_HISTORY_MAX).unwrap() + 4;
        let mut q = queue(attempts);
        q.enqueue(task(1, 1), T0);
        let mut now = T0;
        for n in 1..=attempts {
            let l = q.lease(now).unwrap();
            if n == 3 {
                // This attempt's lease expires.
                now = l.deadline;
                continue;
            }
            match q.nack(&l.token, &format!("error {n}"), now).unwrap() {
                Nacked::Retry { at } => now = at,
                Nacked::DeadLettered => assert_eq!(n, attempts),
                Nacked::Superseded => panic!("nothing newer"),
            }
        }
        let d = &q.dead_letters()[0];
        assert_eq!(d.history.len(), ATTEMPT_HISTORY_MAX);
        assert_eq!(d.history[0].attempt, 5, "the oldest dropped first");
        let last = d.history.last().unwrap();
        assert_eq!((last.attempt, last.error.as_str()), (attempts, "error 20"));
        assert_eq!(d.last_error, last.error);
        assert_eq!(d.redrives, 0);
        let json = serde_json::to_string(d).unwrap();
        assert_eq!(&serde_json::from_str::<DeadLetter>(&json).unwrap(), d);
    }

    #[test]
    fn an_expiry_is_an_attempt_in_the_history() {
        let mut q = queue(2);
        q.enqueue(task(1, 1), T0);
        let _ = q.lease(T0).unwrap();
        let b = q.lease(ms(100)).unwrap();
        q.nack(&b.token, "503", ms(150)).unwrap();
        let h = &q.dead_letters()[0].history;
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].attempt, h[0].at, h[0].error.as_str()),
            (1, ms(100), LEASE_EXPIRED)
        );
        assert_eq!(
            (h[1].attempt, h[1].at, h[1].error.as_str()),
            (2, ms(150), "503")
        );
    }

    #[test]
    fn a_newer_version_starts_a_fresh_history() {
        let mut q = queue(2);
        q.enqueue(task(1, 1), T0);
        let a = q.lease(T0).unwrap();
        let Nacked::Retry { at } = q.nack(&a.token, "old", T0).unwrap() else {
            panic!("one attempt left");
        };
        q.enqueue(task(1, 2), at); // coalesces with the retrying version 1
        let b = q.lease(at).unwrap();
        assert_eq!((b.job.version, b.attempt), (2, 1));
        let Nacked::Retry { at } = q.nack(&b.token, "new 1", at).unwrap() else {
            panic!("one attempt left");
        };
        let c = q.lease(at).unwrap();
        q.nack(&c.token, "new 2", at).unwrap();
        let errors: Vec<&str> = q.dead_letters()[0]
            .history
            .iter()
            .map(|a| a.error.as_str())
            .collect();
        assert_eq!(errors, ["new 1", "new 2"]);
    }

    /// Kills job `id` (one attempt) at `now`.
    fn kill(q: &mut Queue, id: u64, now: Instant) {
        q.enqueue(Job::unique(MAIL, JobId(id), Payload::default()), now);
        let l = q.lease(now).unwrap();
        assert_eq!(q.nack(&l.token, "down", now).unwrap(), Nacked::DeadLettered);
    }

    #[test]
    fn the_retention_limit_drops_redriven_letters_first_then_the_oldest() {
        let mut q = limited(QueueConfig::builder().attempts_max(1).dead_letters_max(3));
        for id in 1..=3 {
            kill(&mut q, id, ms(id));
        }
        assert_eq!(q.redrive(ms(10)), 3);
        // The three redriven jobs die again; a fourth dies: each pushes out the oldest
        // redriven letter.
        for _ in 0..3 {
            let l = q.lease(ms(11)).unwrap();
            q.nack(&l.token, "still down", ms(11)).unwrap();
        }
        let ids = |q: &Queue| -> Vec<(u64, bool)> {
            q.dead_letters()
                .iter()
                .map(|d| (d.job.key.id().unwrap().0, d.redriven_at.is_some()))
                .collect()
        };
        assert_eq!(ids(&q), [(1, false), (2, false), (3, false)]);
        let c = q.counts();
        assert_eq!((c.dead, c.dead_letters_dropped, c.discarded), (3, 3, 0));
        assert_eq!(q.dead_letters()[0].redrives, 1);
        // None redriven now: the oldest goes, and its job is discarded.
        kill(&mut q, 4, ms(12));
        assert_eq!(ids(&q), [(2, false), (3, false), (4, false)]);
        let c = q.counts();
        assert_eq!((c.dead, c.dead_letters_dropped, c.discarded), (3, 4, 1));
        assert!(c.balanced(), "{c:?}");
        // Without a limit nothing is dropped.
        let mut q = queue(1);
        for id in 1..=20 {
            kill(&mut q, id, ms(id));
        }
        assert_eq!(q.dead_letters().len(), 20);
        assert_eq!(q.counts().dead_letters_dropped, 0);
    }

    #[test]
    fn automatic_redrive_puts_letters_back_after_the_delay_up_to_the_max() {
        let mut q = limited(
            QueueConfig::builder()
                .attempts_max(1)
                .redrive_after(Duration::from_millis(500), 2),
        );
        kill(&mut q, 1, T0);
        assert_eq!(q.redrives_scheduled(), 1);
        assert_eq!(q.poll_timeout(), Some(ms(500)), "a worker wakes for it");
        assert_eq!(q.lease(ms(499)), None);
        let l = q.lease(ms(500)).unwrap();
        assert!(l.redriven);
        assert_eq!(q.redrives_scheduled(), 0);
        q.nack(&l.token, "down", ms(500)).unwrap();
        assert_eq!(q.dead_letters()[1].redrives, 1);
        let l = q.lease(ms(1_000)).unwrap();
        q.nack(&l.token, "down", ms(1_000)).unwrap();
        // Redriven twice: it stays dead.
        assert_eq!(q.dead_letters()[2].redrives, 2);
        assert_eq!(q.redrives_scheduled(), 0);
        assert_eq!(q.poll_timeout(), None);
        assert_eq!(q.lease(ms(10_000)), None);
        let c = q.counts();
        assert_eq!((c.dead, c.redriven), (1, 2));
        assert!(c.balanced());
        // A manual redrive still puts it back.
        assert_eq!(q.redrive(ms(10_000)), 1);
        assert!(q.lease(ms(10_000)).is_some());
        // Off by default: a dead letter stays dead.
        let mut q = queue(1);
        kill(&mut q, 1, T0);
        assert_eq!((q.redrives_scheduled(), q.poll_timeout()), (0, None));
        assert_eq!(q.lease(ms(1_000_000)), None);
    }

    #[test]
    fn automatic_redrive_keeps_each_keys_order() {
        let mut q = limited(
            QueueConfig::builder()
                .attempts_max(1)
                .redrive_after(Duration::from_millis(500), 3),
        );
        q.enqueue(task(1, 1), T0);
        let l = q.lease(T0).unwrap();
        q.nack(&l.token, "down", T0).unwrap();
        q.enqueue(task(1, 2), ms(10));
        let l = q.lease(ms(10)).unwrap();
        q.ack(&l.token, ms(10)).unwrap();
        assert_eq!(q.lease(ms(500)), None, "version 1 is settled as superseded");
        let c = q.counts();
        assert_eq!((c.redriven, c.superseded, c.done), (1, 1, 1));
        assert!(c.balanced());
    }

    #[test]
    fn a_job_without_a_target_prints_as_before_targets_existed() {
        let job = task(1, 2);
        assert_eq!(
            format!("{job:?}"),
            "Job { key: JobKey { job_type: JobType(\"sync\"), slot: Key(\"p1\") }, \
             version: 2, payload: Payload(\"null\"), run_at: None }"
        );
        let aimed = format!("{:?}", job.for_target(target("billing")));
        assert!(aimed.ends_with(", target: Some(\"billing\") }"), "{aimed}");
    }

    #[test]
    fn payloads_and_keys_round_trip_through_serde() {
        let job = Job::unique(MAIL, JobId(3), Payload::encode(&("a", 1)).unwrap()).run_at(ms(5));
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), job);
        assert_eq!(
            job.payload.decode::<(String, u32)>().unwrap(),
            ("a".into(), 1)
        );
        assert!(job.payload.decode::<u32>().is_err());
        assert_eq!(key(1).to_string(), "sync:p1");
        assert_eq!(job.key.to_string(), "mail#3");
    }
}
