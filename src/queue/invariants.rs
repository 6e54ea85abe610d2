//! The queue's promises, checked by the world against its own records:
//!
//! 1. `queue.no_lost_update`: at quiescence every target holds the latest version of
//!    every profile (and the outbox is empty).
//! 2. `queue.never_backwards`: a target's version of a profile never goes backwards.
//! 3. `queue.at_most_once`: each (update, target) takes effect at most once, however
//!    often it is delivered.
//! 4. `queue.single_lease`: at most one unexpired lease per task; the task of a crashed
//!    worker is leasable again once its lease's deadline has passed (the world's idle
//!    workers poll every poll interval, so it runs again within lease + poll interval).
//! 5. `queue.conservation`: at every step, tasks enqueued = done + superseded +
//!    pending + leased + retrying + dead, and the queue's count of enqueued tasks is the
//!    number the producers were told were accepted.
//! 6. `queue.retry_or_dead_letter`: the delay before retry n lies in
//!    `[0, min(cap, base·2^(n−1))]` and the task is not handed out before it; after the
//!    last attempt the task is in the dead-letter queue (or superseded by a newer
//!    version), never nowhere.
//! 7. `queue.redrive_order`: per (profile, target), the queue never hands out a version
//!    older than one it handed out before, redriven dead letters included.

use crate::clock::Instant;
use crate::queue::core::{DeadLetter, Lease, Nacked, QueueCounts, Task, TaskKey};
use crate::retry::Backoff;
use faultline_sim::Violation;
use std::collections::{BTreeMap, BTreeSet};

/// Names of the invariants, in order.
pub const INVARIANTS: [&str; 7] = [
    NO_LOST_UPDATE,
    NEVER_BACKWARDS,
    AT_MOST_ONCE,
    SINGLE_LEASE,
    CONSERVATION,
    RETRY_OR_DEAD_LETTER,
    REDRIVE_ORDER,
];

/// The invariant `queue.no_lost_update` (see the list above).
pub const NO_LOST_UPDATE: &str = "queue.no_lost_update";
/// The invariant `queue.never_backwards` (see the list above).
pub const NEVER_BACKWARDS: &str = "queue.never_backwards";
/// The invariant `queue.at_most_once` (see the list above).
pub const AT_MOST_ONCE: &str = "queue.at_most_once";
/// The invariant `queue.single_lease` (see the list above).
pub const SINGLE_LEASE: &str = "queue.single_lease";
/// The invariant `queue.conservation` (see the list above).
pub const CONSERVATION: &str = "queue.conservation";
/// The invariant `queue.retry_or_dead_letter` (see the list above).
pub const RETRY_OR_DEAD_LETTER: &str = "queue.retry_or_dead_letter";
/// The invariant `queue.redrive_order` (see the list above).
pub const REDRIVE_ORDER: &str = "queue.redrive_order";

/// The queue checker: fed by the world as the run goes, asked at rest.
#[derive(Clone, Debug)]
pub struct QueueChecker {
    /// Attempts before dead-lettering, per the configuration.
    pub attempts_max: u32,
    /// The backoff, per the configuration.
    pub backoff: Backoff,
    /// Tasks the queue told producers it accepted (duplicates excluded).
    pub accepted: u64,
    /// Highest version enqueued per key.
    pub enqueued_high: BTreeMap<TaskKey, u64>,
    /// (key, version) that took effect at their target.
    pub applied: BTreeSet<(TaskKey, u64)>,
    /// The version each target holds, as seen through its applies.
    pub held: BTreeMap<TaskKey, u64>,
    /// Unexpired leases as the world saw them handed out: key -> (fence, deadline).
    pub leases: BTreeMap<TaskKey, (u64, Instant)>,
    /// Highest version handed out per key.
    pub leased_high: BTreeMap<TaskKey, u64>,
    /// A retry's due time per key: (version, at).
    pub retry_at: BTreeMap<TaskKey, (u64, Instant)>,
    /// Tasks done, by the attempt that succeeded.
    pub attempts_histogram: BTreeMap<u32, u64>,
}

impl QueueChecker {
    /// A checker for these settings.
    pub fn new(attempts_max: u32, backoff: Backoff) -> Self {
        QueueChecker {
            attempts_max,
            backoff,
            accepted: 0,
            enqueued_high: BTreeMap::new(),
            applied: BTreeSet::new(),
            held: BTreeMap::new(),
            leases: BTreeMap::new(),
            leased_high: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            attempts_histogram: BTreeMap::new(),
        }
    }

    /// The queue accepted `task` (not as a duplicate).
    pub fn on_accepted(&mut self, task: Task) {
        self.accepted += 1;
        let h = self.enqueued_high.entry(task.key).or_insert(0);
        *h = (*h).max(task.version);
    }

    /// The queue handed out `lease` at `now`.
    pub fn on_lease(&mut self, lease: &Lease, now: Instant) -> Result<(), Violation> {
        let key = lease.task.key;
        let v = lease.task.version;
        if let Some((fence, deadline)) = self.leases.get(&key)
            && *deadline > now
            && *fence != lease.token.fence()
        {
            return Err(Violation::new(
                SINGLE_LEASE,
                format!(
                    "{key} was leased again (fence {}, version {v}) while lease {fence} was unexpired until {deadline}: \
                     two workers deliver the same task",
                    lease.token.fence()
                ),
            ));
        }
        if let Some(high) = self.leased_high.get(&key)
            && v < *high
        {
            return Err(Violation::new(
                REDRIVE_ORDER,
                format!(
                    "{key}: version {v}{} was handed out after version {high}",
                    if lease.redriven { " (redriven)" } else { "" }
                ),
            ));
        }
        if let Some((rv, at)) = self.retry_at.get(&key)
            && *rv == v
            && now < *at
        {
            return Err(Violation::new(
                RETRY_OR_DEAD_LETTER,
                format!("{key} version {v} was retried at {now}, before its backoff ended at {at}"),
            ));
        }
        self.retry_at.remove(&key);
        self.leased_high.insert(key, v);
        self.leases
            .insert(key, (lease.token.fence(), lease.deadline));
        Ok(())
    }

    /// A heartbeat extended the lease `fence` on `key` to `deadline`.
    pub fn on_heartbeat(&mut self, key: TaskKey, fence: u64, deadline: Instant) {
        if let Some(l) = self.leases.get_mut(&key)
            && l.0 == fence
        {
            l.1 = deadline;
        }
    }

    /// The lease `fence` on `key` was acked (`attempt` was its attempt number).
    pub fn on_ack(&mut self, key: TaskKey, fence: u64, attempt: u32) {
        self.release(key, fence);
        *self.attempts_histogram.entry(attempt).or_insert(0) += 1;
    }

    fn release(&mut self, key: TaskKey, fence: u64) {
        if self.leases.get(&key).is_some_and(|l| l.0 == fence) {
            self.leases.remove(&key);
        }
    }

    /// Attempt `attempt` of `task` under lease `fence` was nacked at `now` with
    /// `outcome`; `dead` is the queue's dead-letter queue after it.
    pub fn on_nack(
        &mut self,
        task: Task,
        fence: u64,
        attempt: u32,
        outcome: Nacked,
        now: Instant,
        dead: &[DeadLetter],
    ) -> Result<(), Violation> {
        let key = task.key;
        self.release(key, fence);
        let newer = self
            .enqueued_high
            .get(&key)
            .is_some_and(|h| *h > task.version);
        match outcome {
            Nacked::Retry { at } => {
                let ceiling = self.backoff.ceiling(attempt);
                let delay = at.saturating_since(now);
                if at < now || delay > ceiling {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} attempt {attempt} failed at {now}; the retry is due at {at}, \
                             outside [0, min(cap, base·2^(n−1))] = [0, {ceiling:?}]"
                        ),
                    ));
                }
                if attempt >= self.attempts_max {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} failed its last attempt ({attempt} of {}) and was scheduled for another",
                            self.attempts_max
                        ),
                    ));
                }
                self.retry_at.insert(key, (task.version, at));
            }
            Nacked::Superseded => {
                if !newer {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} version {} was called superseded, but no newer version was enqueued",
                            task.version
                        ),
                    ));
                }
            }
            Nacked::DeadLettered => {
                let there = dead
                    .iter()
                    .rev()
                    .any(|d| d.task == task && d.redriven_at.is_none());
                if !there {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} version {} failed its last attempt ({attempt}) and is not in the dead-letter queue: \
                             it is nowhere",
                            task.version
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A target applied `version` of `key`'s profile with effect.
    pub fn on_applied(&mut self, key: TaskKey, version: u64) -> Result<(), Violation> {
        let held = self.held.get(&key).copied().unwrap_or(0);
        if version < held {
            return Err(Violation::new(
                NEVER_BACKWARDS,
                format!("{key} went back from version {held} to {version}"),
            ));
        }
        if !self.applied.insert((key, version)) {
            return Err(Violation::new(
                AT_MOST_ONCE,
                format!("{key} version {version} took effect a second time"),
            ));
        }
        self.held.insert(key, version);
        Ok(())
    }

    /// A worker holding the lease `fence` on `key` crashed; `now` is past the lease's
    /// deadline and the queue still reports `still` as the key's unexpired lease.
    pub fn on_crashed_lease_check(
        &self,
        key: TaskKey,
        fence: u64,
        still: Option<u64>,
        now: Instant,
    ) -> Result<(), Violation> {
        if still == Some(fence) {
            return Err(Violation::new(
                SINGLE_LEASE,
                format!(
                    "the worker holding lease {fence} on {key} crashed; at {now}, past the lease's deadline, \
                     the task is still hidden"
                ),
            ));
        }
        Ok(())
    }

    /// Checks conservation against the queue's `counts`.
    pub fn check_conservation(&self, c: &QueueCounts) -> Result<(), Violation> {
        if !c.balanced() || c.enqueued != self.accepted {
            return Err(Violation::new(
                CONSERVATION,
                format!(
                    "{} tasks accepted from producers, the queue counts {} enqueued; \
                     done {} + superseded {} + pending {} + leased {} + retrying {} + dead {} = {}",
                    self.accepted,
                    c.enqueued,
                    c.done,
                    c.superseded,
                    c.pending,
                    c.leased,
                    c.retrying,
                    c.dead,
                    c.accounted()
                ),
            ));
        }
        Ok(())
    }

    /// At rest: every target holds `latest` of every profile (keys given per target).
    pub fn finish(
        &self,
        latest: &[(TaskKey, u64)],
        backlog: usize,
        counts: &QueueCounts,
    ) -> Result<(), Violation> {
        if backlog > 0 {
            return Err(Violation::new(
                NO_LOST_UPDATE,
                format!("{backlog} outbox rows never reached the queue"),
            ));
        }
        let mut lost = Vec::new();
        for (key, v) in latest {
            let held = self.held.get(key).copied().unwrap_or(0);
            if held < *v {
                lost.push(format!("{key} holds {held}, latest {v}"));
            }
        }
        if let Some(first) = lost.first() {
            return Err(Violation::new(
                NO_LOST_UPDATE,
                format!(
                    "at rest, {} (profile, target) pairs miss the latest version, e.g. {first}; \
                     the queue: {} in flight, {} dead",
                    lost.len(),
                    counts.in_flight(),
                    counts.dead
                ),
            ));
        }
        self.check_conservation(counts)
    }
}
