//! The sans-IO task queue core: the producer's [`Outbox`], the [`Queue`] with leases,
//! and the targets' [`Replica`] that applies with a version check.
//!
//! **Tasks.** One task per (profile, target service), keyed by [`TaskKey`]: "bring
//! `target` up to `version` of `profile`". A newer version of the same key *coalesces*
//! with an older one that has not been handed out yet (the older is counted as
//! superseded); when the older one is out on a lease, the newer waits behind it and
//! becomes due when the lease ends.
//!
//! **Leases.** [`lease`](Queue::lease) hands the earliest due task to a worker with a
//! [`LeaseToken`] carrying a *fencing token* (a number that only grows, kept in the
//! durable store so a restart never reuses one) and hides it for the visibility
//! timeout. [`heartbeat`](Queue::heartbeat) extends the lease; [`ack`](Queue::ack)
//! finishes the task; [`nack`](Queue::nack) fails the attempt. A lease that is not
//! acknowledged in time expires: the task is visible again, and the late worker is
//! *fenced*: its ack, nack and heartbeat are refused with [`Fenced`], and a
//! [`Replica`] refuses its apply once it has seen a newer fencing token for the key.
//!
//! **Retries.** After a failed attempt `n` (1-based) the task waits
//!
//! ```text
//! delay_n = uniform(0, min(cap, base · 2^(n−1)))      (full jitter, capped)
//! ```
//!
//! ([`Backoff`]); an expired lease counts as an attempt and is visible again at once.
//! After `attempts_max` attempts the task moves to the dead-letter queue: inspectable
//! ([`dead_letters`](Queue::dead_letters)), redrivable ([`redrive`](Queue::redrive),
//! which keeps each key's order: a dead version older than one enqueued since is
//! settled as superseded, never delivered after it), never deleted.
//!
//! **Durability.** Every change is written to the queue's [`Store`] before the call
//! returns (the model of a write-ahead store that is synced before a reply). A restart
//! ([`Queue::recover`]) rebuilds the in-memory indexes from the store alone, so nothing
//! acknowledged to a producer or a worker is lost, and leases keep their deadlines.
//!
//! **Conservation.** At every instant, tasks enqueued = done + superseded + pending +
//! leased + retrying + dead ([`QueueCounts::balanced`]).
//!
//! Call order for a worker: `lease` → deliver (heartbeat every third of the visibility
//! timeout while it takes long) → `ack` on success, `nack` on failure. Time is passed
//! in; the core never reads a clock.
//!
//! ```
//! use faultline::clock::Instant;
//! use faultline::queue::{Outbox, ProfileId, Queue, QueueConfig, Replica, TargetId};
//!
//! let targets = [TargetId(0), TargetId(1)];
//! let mut outbox = Outbox::new(&targets);
//! let mut queue = Queue::new(QueueConfig::builder().build()?);
//! let mut replicas = [Replica::new(), Replica::new()];
//! let t = Instant::ZERO;
//!
//! // The profile write and its two tasks, in one step; then the relay moves them.
//! outbox.update(ProfileId(7));
//! outbox.update(ProfileId(7)); // coalesces with the first in the queue
//! outbox.relay(|task| { queue.enqueue(task, t); true });
//!
//! while let Some(lease) = queue.lease(t) {
//!     let replica = &mut replicas[lease.task.key.target.0 as usize];
//!     replica.apply(lease.task.key.profile, lease.task.version, lease.token.fence());
//!     queue.ack(&lease.token, t)?;
//! }
//! assert_eq!(replicas[0].version(ProfileId(7)), Some(2));
//! assert_eq!(replicas[1].version(ProfileId(7)), Some(2));
//! assert!(queue.counts().balanced());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::retry::{Backoff, RetryPolicy};
use crate::splitmix::SplitMix64;
use std::collections::{BTreeMap, BTreeSet, VecDeque, btree_map};
use std::fmt;
use std::time::Duration;

/// A user profile's id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ProfileId(pub u64);

/// A target service's id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetId(pub u32);

/// What a task is about: one profile at one target service.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TaskKey {
    /// The profile.
    pub profile: ProfileId,
    /// The target service.
    pub target: TargetId,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}@t{}", self.profile.0, self.target.0)
    }
}

/// One task: bring `key.target` up to `version` of `key.profile`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Task {
    /// Profile and target.
    pub key: TaskKey,
    /// The profile's version to deliver.
    pub version: u64,
}

/// The handle of one lease: hand it back to `heartbeat`, `ack` or `nack`. Its
/// [`fence`](LeaseToken::fence) goes with the delivery, so a target can refuse a worker
/// whose lease was taken over.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LeaseToken {
    key: TaskKey,
    fence: u64,
}

impl LeaseToken {
    /// A token for `key` with fencing token `fence` (for queues other than [`Queue`]
    /// that implement the contract).
    pub fn new(key: TaskKey, fence: u64) -> Self {
        LeaseToken { key, fence }
    }
    /// The task's key.
    pub fn key(&self) -> TaskKey {
        self.key
    }
    /// The fencing token: larger for every lease handed out, across restarts.
    pub fn fence(&self) -> u64 {
        self.fence
    }
}

/// A task handed to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The task.
    pub task: Task,
    /// Hand back with `heartbeat`, `ack` or `nack`.
    pub token: LeaseToken,
    /// 1 for the first attempt of this version, then 2, 3, ...
    pub attempt: u32,
    /// The lease expires at this instant unless extended.
    pub deadline: Instant,
    /// The task came back from the dead-letter queue.
    pub redriven: bool,
}

/// The lease is no longer valid: it expired (and the task may be with another worker),
/// or the task was settled. The worker must not act on it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[error("lease {fence} on {key} is no longer valid (expired or taken over)")]
pub struct Fenced {
    /// The task's key.
    pub key: TaskKey,
    /// The refused fencing token.
    pub fence: u64,
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueued {
    /// A new task for its key.
    New,
    /// It replaced an older version that was waiting (which counts as superseded).
    Coalesced,
    /// It waits behind a lease of an older version.
    Queued,
    /// This version (or a newer one) was enqueued before: nothing changed.
    Duplicate,
}

/// What a nack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nacked {
    /// The task is retried at `at`.
    Retry {
        /// When it is due again.
        at: Instant,
    },
    /// A newer version of the key was waiting: the failed one is superseded.
    Superseded,
    /// The last attempt failed: the task is in the dead-letter queue.
    DeadLettered,
}

/// A task that failed `attempts_max` attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The task.
    pub task: Task,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up on.
    pub at: Instant,
    /// When it was redriven, if it was (it stays listed).
    pub redriven_at: Option<Instant>,
}

/// Where the tasks are: tasks enqueued = done + superseded + pending + leased +
/// retrying + dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueCounts {
    /// Tasks accepted from producers (duplicates not counted).
    pub enqueued: u64,
    /// Tasks acknowledged by a worker.
    pub done: u64,
    /// Tasks replaced by a newer version of their key before they were done.
    pub superseded: u64,
    /// Tasks waiting for their first attempt (or behind a lease of their key).
    pub pending: u64,
    /// Tasks out on a lease.
    pub leased: u64,
    /// Tasks waiting for a retry.
    pub retrying: u64,
    /// Tasks in the dead-letter queue (not redriven).
    pub dead: u64,
    /// Leases that expired (a counter, not a place).
    pub expired: u64,
    /// Retries scheduled (a counter).
    pub retries: u64,
    /// Dead letters redriven (a counter).
    pub redriven: u64,
}

impl QueueCounts {
    /// Tasks somewhere in the queue or settled.
    pub fn accounted(&self) -> u64 {
        self.done + self.superseded + self.pending + self.leased + self.retrying + self.dead
    }
    /// True when every task enqueued is accounted for.
    pub fn balanced(&self) -> bool {
        self.enqueued == self.accounted()
    }
    /// Tasks not yet settled: pending, leased or retrying.
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
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            attempts_max: 25,
            backoff: Backoff::default(),
        }
    }
}

impl QueueConfig {
    /// Defaults: a 30 s visibility timeout (SQS's), 25 attempts (Asynq's), backoff from
    /// 100 ms up to 10 s.
    pub fn builder() -> QueueConfigBuilder {
        let d = QueueConfig::default();
        QueueConfigBuilder {
            visibility_timeout: d.visibility_timeout,
            attempts_max: d.attempts_max,
            backoff: (d.backoff.base(), d.backoff.cap()),
        }
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
}

impl QueueConfigBuilder {
    /// How long a lease hides a task (1 ms to 12 hours, SQS's bound).
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }
    /// Attempts before a task is dead-lettered (1 to 1,000).
    pub fn attempts_max(mut self, n: u32) -> Self {
        self.attempts_max = n;
        self
    }
    /// Retry backoff: full jitter up to `min(cap, base · 2^(n−1))`.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
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
        Ok(QueueConfig {
            visibility_timeout: self.visibility_timeout,
            attempts_max: retry.attempts_max(),
            backoff: retry.backoff(),
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
    /// Changes are synced to the store every 8 operations only; a restart loses the rest.
    VolatileStore,
    /// Redrive puts a dead version back even when a newer one was enqueued since.
    RedriveOutOfOrder,
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
    /// The profile is written, then the task enqueued directly (no outbox): lost when
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    version: u64,
    /// Attempts of this version so far.
    attempts: u32,
    state: State,
    /// A newer version waiting for the lease of this one to end.
    next: Option<u64>,
    redriven: bool,
}

/// The longest an enqueue's own task takes to land under [`Flaw::EnqueueInOwnTask`]:
/// just under a millisecond.
const ENQUEUE_TASK_LAG_NS: u64 = 999_999;

/// The queue's durable state: everything a restart keeps. The reference [`Queue`]
/// writes every change here before it returns.
#[derive(Clone, Debug, Default)]
pub struct Store {
    entries: BTreeMap<TaskKey, Entry>,
    dead: Vec<DeadLetter>,
    /// Highest version ever enqueued per key.
    high: BTreeMap<TaskKey, u64>,
    /// The next fencing token.
    fence_next: u64,
    counts: QueueCounts,
    rng: u64,
}

/// The task queue. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Queue {
    config: QueueConfig,
    store: Store,
    /// Volatile indexes, rebuilt from the store on recovery.
    ready: BTreeSet<(Instant, TaskKey)>,
    expiries: BTreeSet<(Instant, TaskKey)>,
    /// What the store really holds under [`Flaw::VolatileStore`].
    synced: Option<Store>,
    ops: u32,
    pub(crate) flaw: Flaw,
    /// Under [`Flaw::EnqueueInOwnTask`]: per key, the version whose write lands last
    /// and when, and the tasks' own delays.
    landing: BTreeMap<TaskKey, (u64, Instant)>,
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

    /// A queue rebuilt from its durable `store` after a restart: tasks, leases (with
    /// their deadlines), dead letters, counters and the fencing counter come back.
    pub fn recover(config: QueueConfig, store: Store) -> Self {
        let mut q = Queue {
            config,
            store,
            ready: BTreeSet::new(),
            expiries: BTreeSet::new(),
            synced: None,
            ops: 0,
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
        for (key, e) in &self.store.entries {
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
        self.synced.as_ref().unwrap_or(&self.store)
    }

    /// Where every task is, and the counters.
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

    /// Every dead letter ever, in the order they died (redriven ones stay listed).
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.store.dead
    }

    /// The unexpired lease on `key` at `now`, if any.
    pub fn lease_of(&self, key: TaskKey, now: Instant) -> Option<LeaseToken> {
        match self.store.entries.get(&key)?.state {
            State::Leased { fence, deadline } if deadline > now || self.never_expires() => {
                Some(LeaseToken { key, fence })
            }
            _ => None,
        }
    }

    /// The version the queue holds for `key` (waiting, out or retrying), if any.
    pub fn version_of(&self, key: TaskKey) -> Option<u64> {
        self.store
            .entries
            .get(&key)
            .map(|e| e.next.unwrap_or(e.version))
    }

    /// When something next becomes due or a lease expires: the instant to call
    /// [`lease`](Queue::lease) again (it may be `<= now`: something is due already).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.ready.first().map(|(t, _)| *t);
        let exp = if self.never_expires() {
            None
        } else {
            self.expiries.first().map(|(t, _)| *t)
        };
        match (due, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn never_expires(&self) -> bool {
        self.flaw == Flaw::LeaseNeverExpires
    }

    // ----- commands -----

    /// Accepts `task` (durably, before returning). A newer version than the key holds
    /// coalesces with a waiting one or waits behind a leased one.
    pub fn enqueue(&mut self, task: Task, now: Instant) -> Enqueued {
        let key = task.key;
        match self.store.high.entry(key) {
            btree_map::Entry::Occupied(mut o) => {
                if *o.get() >= task.version {
                    return Enqueued::Duplicate;
                }
                o.insert(task.version);
            }
            btree_map::Entry::Vacant(v) => {
                v.insert(task.version);
            }
        }
        self.store.counts.enqueued += 1;
        if self.flaw == Flaw::EnqueueInOwnTask && self.lands_under_an_older(task, now) {
            // The defect: the older version's write lands after this one's and
            // overwrites it; the newer version is gone as if superseded.
            self.store.counts.superseded += 1;
            self.sync();
            return Enqueued::Coalesced;
        }
        let out = match self.store.entries.entry(key) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert(Entry {
                    version: task.version,
                    attempts: 0,
                    state: State::Ready { due: now },
                    next: None,
                    redriven: false,
                });
                self.ready.insert((now, key));
                Enqueued::New
            }
            btree_map::Entry::Occupied(mut slot) => {
                let e = slot.get_mut();
                match e.state {
                    State::Ready { due } => {
                        self.store.counts.superseded += 1;
                        e.version = task.version;
                        e.attempts = 0;
                        e.redriven = false;
                        e.state = State::Ready { due: now };
                        self.ready.remove(&(due, key));
                        self.ready.insert((now, key));
                        Enqueued::Coalesced
                    }
                    State::Leased { .. } => {
                        if e.next.replace(task.version).is_some() {
                            self.store.counts.superseded += 1;
                            Enqueued::Coalesced
                        } else {
                            Enqueued::Queued
                        }
                    }
                }
            }
        };
        self.sync();
        out
    }

    /// Under [`Flaw::EnqueueInOwnTask`]: whether `task`'s write, landing after its own
    /// delay, is overwritten by the write of the version before it, still waiting and
    /// landing later.
    fn lands_under_an_older(&mut self, task: Task, now: Instant) -> bool {
        let key = task.key;
        let lands = now + Duration::from_nanos(self.task_delays.next() % ENQUEUE_TASK_LAG_NS);
        let waiting = self.store.entries.get(&key).and_then(|e| match e.state {
            State::Ready { .. } => Some(e.version),
            State::Leased { .. } => e.next,
        });
        match self.landing.get(&key) {
            Some(&(older, at)) if at > lands && waiting == Some(older) => true,
            _ => {
                self.landing.insert(key, (task.version, lands));
                false
            }
        }
    }

    /// Hands out the earliest task due at `now`, hidden until the lease's deadline.
    /// Expired leases are processed first.
    pub fn lease(&mut self, now: Instant) -> Option<Lease> {
        self.expire(now);
        let lease = loop {
            let &(due, key) = self.ready.first()?;
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
                self.ready.pop_first();
                continue;
            };
            let fence = self.store.fence_next;
            self.store.fence_next += 1;
            let deadline = if self.flaw == Flaw::NoLease {
                now
            } else {
                now + self.config.visibility_timeout
            };
            e.attempts += 1;
            let lease = Lease {
                task: Task {
                    key,
                    version: e.version,
                },
                token: LeaseToken { key, fence },
                attempt: e.attempts,
                deadline,
                redriven: e.redriven,
            };
            // Under the `DueWithoutLeases` and `NoLease` defects the task stays due, so
            // the next poll hands it out again.
            if !matches!(self.flaw, Flaw::DueWithoutLeases | Flaw::NoLease) {
                e.state = State::Leased { fence, deadline };
                self.ready.pop_first();
                self.expiries.insert((deadline, key));
            }
            break lease;
        };
        self.sync();
        Some(lease)
    }

    fn valid(&self, token: &LeaseToken, now: Instant, ack: bool) -> Result<(), Fenced> {
        let fenced = Fenced {
            key: token.key,
            fence: token.fence,
        };
        let e = self.store.entries.get(&token.key).ok_or(fenced)?;
        if matches!(self.flaw, Flaw::DueWithoutLeases | Flaw::NoLease)
            || (ack && self.flaw == Flaw::NoFencing)
        {
            return Ok(());
        }
        match e.state {
            State::Leased { fence, deadline }
                if fence == token.fence && (deadline > now || self.never_expires()) =>
            {
                Ok(())
            }
            _ => Err(fenced),
        }
    }

    /// Extends the lease to `now + visibility_timeout`; returns the new deadline.
    pub fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced> {
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
        self.sync();
        Ok(deadline)
    }

    /// The task was delivered: it is done (and a newer version waiting behind it
    /// becomes due).
    pub fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced> {
        self.expire(now);
        self.valid(token, now, true)?;
        self.store.counts.done += 1;
        self.finish(token.key, now);
        self.sync();
        Ok(())
    }

    /// The delivery failed: retried after the backoff, superseded by a newer version
    /// waiting behind it, or dead-lettered after the last attempt.
    pub fn nack(&mut self, token: &LeaseToken, now: Instant) -> Result<Nacked, Fenced> {
        self.expire(now);
        self.valid(token, now, true)?;
        let out = self.fail(token.key, now, true);
        self.sync();
        Ok(out)
    }

    /// Puts every dead letter not yet redriven back in the queue, in the order they
    /// died; one older than a version enqueued since is settled as superseded (the
    /// newer carries the newer data), so each key's order is kept. Returns how many
    /// were redriven.
    pub fn redrive(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for i in 0..self.store.dead.len() {
            let letter = self.store.dead[i];
            if letter.redriven_at.is_some() {
                continue;
            }
            n += 1;
            self.store.dead[i].redriven_at = Some(now);
            self.store.counts.dead -= 1;
            self.store.counts.redriven += 1;
            let key = letter.task.key;
            let newer = self.store.high.get(&key).copied().unwrap_or(0) > letter.task.version;
            let live = self.store.entries.get(&key).copied();
            if self.flaw == Flaw::RedriveOutOfOrder {
                // The defect: the dead version goes back whatever came since.
                match live {
                    Some(mut e) => {
                        match e.state {
                            State::Ready { .. } => {
                                self.store.counts.superseded += 1;
                                e.version = letter.task.version;
                            }
                            State::Leased { .. } => {
                                if e.next.replace(letter.task.version).is_some() {
                                    self.store.counts.superseded += 1;
                                }
                            }
                        }
                        e.redriven = true;
                        self.store.entries.insert(key, e);
                    }
                    None => self.revive(letter.task, now),
                }
                continue;
            }
            if newer || live.is_some() {
                self.store.counts.superseded += 1;
            } else {
                self.revive(letter.task, now);
            }
        }
        self.sync();
        n
    }

    fn revive(&mut self, task: Task, now: Instant) {
        self.store.entries.insert(
            task.key,
            Entry {
                version: task.version,
                attempts: 0,
                state: State::Ready { due: now },
                next: None,
                redriven: true,
            },
        );
        self.ready.insert((now, task.key));
    }

    /// The queue process crashes and restarts: the in-memory state is gone, and the
    /// queue is rebuilt from its durable store.
    pub fn restart(&mut self) {
        if let Some(synced) = self.synced.take() {
            self.store = synced;
        }
        self.reindex();
    }

    // ----- internals -----

    /// Leases whose deadline passed: the attempt failed; the task is visible again.
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
            self.fail(key, now, false);
            changed = true;
        }
        if changed {
            self.sync();
        }
    }

    /// Drops `key`'s lease from the expiry index.
    fn unlease(&mut self, key: TaskKey) {
        if let Some(State::Leased { deadline, .. }) = self.store.entries.get(&key).map(|e| e.state)
        {
            self.expiries.remove(&(deadline, key));
        }
    }

    /// The lease on `key` ended in failure (a nack, or expiry without backoff).
    fn fail(&mut self, key: TaskKey, now: Instant, backoff: bool) -> Nacked {
        self.unlease(key);
        let Some(e) = self.store.entries.get(&key).copied() else {
            return Nacked::Superseded;
        };
        if e.next.is_some() {
            self.store.counts.superseded += 1;
            self.finish(key, now);
            return Nacked::Superseded;
        }
        if e.attempts >= self.config.attempts_max {
            self.store.entries.remove(&key);
            if self.flaw != Flaw::DropAfterMaxAttempts {
                self.store.counts.dead += 1;
                self.store.dead.push(DeadLetter {
                    task: Task {
                        key,
                        version: e.version,
                    },
                    attempts: e.attempts,
                    at: now,
                    redriven_at: None,
                });
            }
            return Nacked::DeadLettered;
        }
        let at = if backoff {
            let mut rng = SplitMix64(self.store.rng);
            let d = self.config.backoff.delay(e.attempts, &mut rng);
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

    /// The current version of `key` is settled: a version waiting behind it becomes
    /// due, or the key leaves the queue.
    fn finish(&mut self, key: TaskKey, now: Instant) {
        let Some(e) = self.store.entries.get_mut(&key) else {
            return;
        };
        match e.state {
            State::Leased { deadline, .. } => {
                self.expiries.remove(&(deadline, key));
            }
            State::Ready { due } => {
                self.ready.remove(&(due, key));
            }
        }
        match e.next.take() {
            Some(v) => {
                e.version = v;
                e.attempts = 0;
                e.redriven = false;
                e.state = State::Ready { due: now };
                self.ready.insert((now, key));
            }
            None => {
                self.store.entries.remove(&key);
            }
        }
    }

    fn sync(&mut self) {
        if self.flaw != Flaw::VolatileStore {
            return;
        }
        self.ops += 1;
        if self.synced.is_none() || self.ops.is_multiple_of(8) {
            self.synced = Some(self.store.clone());
        }
    }
}

/// The profile service's side: profiles and their outbox, written together in one
/// atomic step, and the relay that moves outbox rows to the queue.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    targets: Vec<TargetId>,
    versions: BTreeMap<ProfileId, u64>,
    rows: VecDeque<Task>,
}

impl Outbox {
    /// A profile service whose profiles are copied to `targets`.
    pub fn new(targets: &[TargetId]) -> Self {
        Outbox {
            targets: targets.to_vec(),
            ..Outbox::default()
        }
    }

    /// Writes a new version of `profile` and, in the same step, one outbox row per
    /// target. Returns the new version (1 for the first write).
    pub fn update(&mut self, profile: ProfileId) -> u64 {
        let v = self.write(profile);
        for t in &self.targets {
            self.rows.push_back(Task {
                key: TaskKey {
                    profile,
                    target: *t,
                },
                version: v,
            });
        }
        v
    }

    /// Writes a new version of `profile` *without* its outbox rows: the dual write of
    /// a service with no outbox (for the mutant that shows why the outbox exists).
    pub(crate) fn write(&mut self, profile: ProfileId) -> u64 {
        let v = self.versions.entry(profile).or_insert(0);
        *v += 1;
        *v
    }

    /// The latest version of `profile`.
    pub fn version(&self, profile: ProfileId) -> Option<u64> {
        self.versions.get(&profile).copied()
    }

    /// Every profile and its latest version.
    pub fn versions(&self) -> &BTreeMap<ProfileId, u64> {
        &self.versions
    }

    /// Rows not yet accepted by the queue.
    pub fn backlog(&self) -> usize {
        self.rows.len()
    }

    /// Hands the rows to `enqueue` in order, removing each one it accepts (true); stops
    /// at the first it refuses (the queue is down: try again later). Returns how many
    /// were accepted.
    pub fn relay(&mut self, mut enqueue: impl FnMut(Task) -> bool) -> usize {
        let mut n = 0;
        while let Some(task) = self.rows.front() {
            if !enqueue(*task) {
                break;
            }
            self.rows.pop_front();
            n += 1;
        }
        n
    }
}

/// What a replica did with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// The version was newer: it took effect.
    Applied,
    /// The replica holds this version or a newer one: acknowledged without effect.
    Stale,
    /// The delivery's fencing token is older than one already seen for this profile:
    /// refused (the worker's lease was taken over).
    Fenced,
}

/// A target service's copy of the profiles: applies a version only if it holds an
/// older one, and refuses deliveries from a lease that was taken over.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    held: BTreeMap<ProfileId, (u64, u64)>,
    pub(crate) flaw: Option<Flaw>,
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Self {
        Replica::default()
    }

    /// The version of `profile` held, if any.
    pub fn version(&self, profile: ProfileId) -> Option<u64> {
        self.held.get(&profile).map(|h| h.0)
    }

    /// Applies `version` of `profile`, delivered under fencing token `fence`.
    pub fn apply(&mut self, profile: ProfileId, version: u64, fence: u64) -> Applied {
        let (held, seen) = self.held.get(&profile).copied().unwrap_or((0, 0));
        if fence < seen && self.flaw != Some(Flaw::NoVersionCheck) {
            return Applied::Fenced;
        }
        let newer = match self.flaw {
            Some(Flaw::NoVersionCheck) => version != held,
            Some(Flaw::ReapplySameVersion) => version >= held,
            _ => version > held,
        };
        if newer {
            self.held.insert(profile, (version, fence));
            Applied::Applied
        } else {
            self.held.insert(profile, (held, fence.max(seen)));
            Applied::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: u64) -> TaskKey {
        TaskKey {
            profile: ProfileId(p),
            target: TargetId(0),
        }
    }

    fn task(p: u64, v: u64) -> Task {
        Task {
            key: key(p),
            version: v,
        }
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
        assert_eq!(a.task.version, 2);
        assert_eq!(q.enqueue(task(1, 3), T0), Enqueued::Queued);
        assert_eq!(q.enqueue(task(1, 4), T0), Enqueued::Coalesced);
        assert_eq!(q.lease(T0), None, "one lease per key");
        q.ack(&a.token, ms(1)).unwrap();
        let b = q.lease(ms(1)).unwrap();
        assert_eq!((b.task.version, b.attempt), (4, 1));
        q.ack(&b.token, ms(2)).unwrap();
        let c = q.counts();
        assert_eq!((c.enqueued, c.done, c.superseded), (4, 2, 2));
        assert!(c.balanced());
    }

    #[test]
    fn retries_back_off_within_the_formula_then_dead_letter_and_redrive() {
        let mut q = queue(3);
        q.enqueue(task(1, 1), T0);
        let mut now = T0;
        for attempt in 1..=3u32 {
            let l = q.lease(now).unwrap();
            assert_eq!(l.attempt, attempt);
            match q.nack(&l.token, now).unwrap() {
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
    fn redrive_of_a_stale_version_is_superseded() {
        let mut q = queue(1);
        q.enqueue(task(1, 1), T0);
        let l = q.lease(T0).unwrap();
        assert_eq!(q.nack(&l.token, T0).unwrap(), Nacked::DeadLettered);
        q.enqueue(task(1, 2), T0);
        assert_eq!(q.redrive(T0), 1);
        let l = q.lease(T0).unwrap();
        assert_eq!(l.task.version, 2);
        assert_eq!(q.lease(T0), None);
        q.ack(&l.token, T0).unwrap();
        assert!(q.counts().balanced());
    }

    #[test]
    fn a_restart_keeps_tasks_leases_and_fences() {
        let mut q = queue(5);
        q.enqueue(task(1, 1), T0);
        q.enqueue(task(2, 1), T0);
        let a = q.lease(T0).unwrap();
        let before = q.counts();
        let mut r = Queue::recover(*q.config(), q.store().clone());
        assert_eq!(r.counts(), before);
        assert_eq!(r.lease_of(a.token.key(), ms(1)), Some(a.token));
        let b = r.lease(ms(1)).unwrap();
        assert!(b.token.fence() > a.token.fence());
        r.ack(&a.token, ms(2)).unwrap();
    }

    #[test]
    fn the_outbox_writes_rows_with_the_profile_and_relays_in_order() {
        let mut o = Outbox::new(&[TargetId(0), TargetId(1)]);
        assert_eq!(o.update(ProfileId(3)), 1);
        assert_eq!(o.update(ProfileId(3)), 2);
        assert_eq!(o.backlog(), 4);
        let mut seen = Vec::new();
        assert_eq!(
            o.relay(|t| {
                seen.push(t);
                seen.len() < 3
            }),
            2
        );
        assert_eq!(o.backlog(), 2);
        assert_eq!(o.relay(|_| true), 2);
        assert_eq!(seen[0].version, 1);
    }

    #[test]
    fn the_replica_applies_newer_versions_once_and_refuses_old_fences() {
        let mut r = Replica::new();
        assert_eq!(r.apply(ProfileId(1), 2, 5), Applied::Applied);
        assert_eq!(r.apply(ProfileId(1), 2, 6), Applied::Stale);
        assert_eq!(r.apply(ProfileId(1), 1, 7), Applied::Stale);
        assert_eq!(r.apply(ProfileId(1), 3, 4), Applied::Fenced);
        assert_eq!(r.version(ProfileId(1)), Some(2));
    }
}
