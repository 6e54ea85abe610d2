//! The queue's promises, checked by the world against its own records (what it sees
//! at the boundary it owns: which worker holds a delivery of which task since when,
//! the heartbeats it sent and the queue accepted, what the targets applied, what the
//! producers were told) and judged by the policy the queue *declares*
//! ([`QueuePolicy`], from [`TaskQueue::policy`](crate::queue::contract::TaskQueue::policy)),
//! not by the reference's settings:
//!
//! 1. `queue.no_lost_update`: at quiescence every target holds the latest version of
//!    every keyed job (every profile) and the outbox is empty.
//! 2. `queue.never_backwards`: a target's version of a profile never goes backwards.
//! 3. `queue.at_most_once`: each (update, target) takes effect at most once, however
//!    often it is delivered.
//! 4. `queue.single_lease`: at most one worker holds a delivery of a task at a time.
//!    The world itself records each delivery it was handed (worker, fence, since when)
//!    and hides it until the lease time + the *declared* visibility timeout, extended by
//!    every heartbeat the queue accepted; another worker handed the same task before
//!    then is a violation whatever the queue reports. The deadline a lease or a
//!    heartbeat reports must be that same instant (a mismatch is a violation of its
//!    own). The task of a crashed worker is leasable again once that deadline has
//!    passed (the world's idle workers poll every poll interval, so it runs again
//!    within lease + poll interval). Under a declared per-target lease limit
//!    ([`QueuePolicy::leases_per_target_max`]), the world also never sees more than
//!    that many deliveries of one target's jobs held at once (counted the same way,
//!    by the target the producer committed).
//! 5. `queue.conservation`: at every step, tasks enqueued = done + superseded +
//!    pending + leased + retrying + dead, and the queue's count of enqueued tasks is the
//!    number the producers were told were accepted.
//! 6. `queue.retry_or_dead_letter`: the delay before retry n lies within the declared
//!    backoff's bounds ([`BackoffPolicy::bounds`]; for the reference's full jitter
//!    `[0, min(cap, base·2^(n−1))]`) and the task is not handed out before it; after
//!    the declared last attempt the task is in the dead-letter queue (or superseded by
//!    a newer version), never nowhere.
//! 7. `queue.redrive_order`: per key, the queue never hands out a version older than
//!    one it handed out before, redriven dead letters included.
//! 8. `queue.exactly_once`: every unique (unkeyed) job a producer committed takes
//!    effect exactly once by the end, counted at the targets (which dedupe by job id
//!    and fence), never from what the queue reports: a second effect is a violation at
//!    once, a job with none at rest.
//! 9. `queue.not_before_run_at`: a job committed with a run-at instant is not handed
//!    to a worker before it (judged by the run-at the producer committed, not by the
//!    one the lease reports).
//!
//! 10. `queue.fences_grow`: per key, every lease the queue hands out carries a larger
//!     fencing token than every lease of that key before it, across restarts (a target
//!     that refuses a lower fence than it has seen relies on it). A queue that answered
//!     a lease before committing it, and lost it in a crash, hands the same token out
//!     again.
//!
//! Invariants 1 to 3 are about keyed jobs (the profile copies), 8 about unique ones;
//! the others hold for every job. A dead letter must also record the error of the
//! failed last attempt (part of 6).

use crate::clock::Instant;
use crate::name::Name;
use crate::queue::contract::{BackoffPolicy, QueuePolicy};
use crate::queue::core::{DeadLetter, Job, JobKey, Lease, Nacked, QueueCounts};
use faultline_sim::Violation;
use std::collections::{BTreeMap, BTreeSet};

/// Names of the invariants, in order.
pub const INVARIANTS: [&str; 10] = [
    NO_LOST_UPDATE,
    NEVER_BACKWARDS,
    AT_MOST_ONCE,
    SINGLE_LEASE,
    CONSERVATION,
    RETRY_OR_DEAD_LETTER,
    REDRIVE_ORDER,
    EXACTLY_ONCE,
    NOT_BEFORE_RUN_AT,
    FENCES_GROW,
];

/// What each invariant promises, in words (the list above), in the order of
/// [`INVARIANTS`]: what `faultline list` prints beside each name.
pub const PROMISES: [(&str, &str); 10] = [
    (
        NO_LOST_UPDATE,
        "At quiescence every target holds the latest version of every keyed job (every profile) and the outbox is empty.",
    ),
    (
        NEVER_BACKWARDS,
        "A target's version of a profile never goes backwards.",
    ),
    (
        AT_MOST_ONCE,
        "Each (update, target) takes effect at most once, however often it is delivered.",
    ),
    (
        SINGLE_LEASE,
        "At most one worker holds a delivery of a task at a time. The world itself records each delivery it was handed (worker, fence, since when) and hides it until the lease time + the declared visibility timeout, extended by every heartbeat the queue accepted; another worker handed the same task before then is a violation whatever the queue reports. The deadline a lease or a heartbeat reports must be that same instant (a mismatch is a violation of its own). The task of a crashed worker is leasable again once that deadline has passed (the world's idle workers poll every poll interval, so it runs again within lease + poll interval). Under a declared per-target lease limit, the world never sees more than that many deliveries of one target's jobs held at once (counted the same way, by the target the producer committed).",
    ),
    (
        CONSERVATION,
        "At every step, tasks enqueued = done + superseded + pending + leased + retrying + dead, and the queue's count of enqueued tasks is the number the producers were told were accepted.",
    ),
    (
        RETRY_OR_DEAD_LETTER,
        "The delay before retry n lies within the declared backoff's bounds (BackoffPolicy::bounds; for the reference's full jitter [0, min(cap, base·2^(n−1))]) and the task is not handed out before it; after the declared last attempt the task is in the dead-letter queue (or superseded by a newer version), never nowhere.",
    ),
    (
        REDRIVE_ORDER,
        "Per key, the queue never hands out a version older than one it handed out before, redriven dead letters included.",
    ),
    (
        EXACTLY_ONCE,
        "Every unique (unkeyed) job a producer committed takes effect exactly once by the end, counted at the targets (which dedupe by job id and fence), never from what the queue reports: a second effect is a violation at once, a job with none at rest.",
    ),
    (
        NOT_BEFORE_RUN_AT,
        "A job committed with a run-at instant is not handed to a worker before it (judged by the run-at the producer committed, not by the one the lease reports).",
    ),
    (
        FENCES_GROW,
        "Per key, every lease the queue hands out carries a larger fencing token than every lease of that key before it, across restarts (a target that refuses a lower fence than it has seen relies on it). A queue that answered a lease before committing it, and lost it in a crash, hands the same token out again.",
    ),
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
/// The invariant `queue.exactly_once` (see the list above).
pub const EXACTLY_ONCE: &str = "queue.exactly_once";
/// The invariant `queue.not_before_run_at` (see the list above).
pub const NOT_BEFORE_RUN_AT: &str = "queue.not_before_run_at";
/// The invariant `queue.fences_grow` (see the list above).
pub const FENCES_GROW: &str = "queue.fences_grow";

/// A delivery the world saw handed to one of its workers: who holds which task since
/// when, and until when the declared visibility timeout hides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The worker (`worker-N`).
    pub worker: u32,
    /// The lease's fencing token.
    pub fence: u64,
    /// The version handed out.
    pub version: u64,
    /// When the worker was handed the task.
    pub since: Instant,
    /// The lease time (or the last accepted heartbeat) + the declared visibility
    /// timeout: the world's own deadline, not the one the queue reports.
    pub deadline: Instant,
    /// The target of the job handed out, as the producer committed it.
    pub target: Option<Name>,
}

/// The queue checker: fed by the world as the run goes, asked at rest.
#[derive(Clone, Debug)]
pub struct QueueChecker {
    /// The policy the queue declared: visibility timeout, attempts, backoff.
    pub policy: QueuePolicy,
    /// Tasks the queue told producers it accepted (duplicates excluded).
    pub accepted: u64,
    /// Highest version enqueued per key.
    pub enqueued_high: BTreeMap<JobKey, u64>,
    /// (key, version) that took effect at their target.
    pub applied: BTreeSet<(JobKey, u64)>,
    /// The version each target holds, as seen through its applies.
    pub held: BTreeMap<JobKey, u64>,
    /// Deliveries the world's workers hold, as the world saw them handed out and
    /// extended: key -> the holder (until the observed deadline, or an accepted ack or
    /// nack).
    pub holds: BTreeMap<JobKey, Hold>,
    /// Highest version handed out per key.
    pub leased_high: BTreeMap<JobKey, u64>,
    /// A retry's due time per key: (version, at).
    pub retry_at: BTreeMap<JobKey, (u64, Instant)>,
    /// Tasks done, by the attempt that succeeded.
    pub attempts_histogram: BTreeMap<u32, u64>,
    /// Unique jobs the producers committed (the world's record, not the queue's).
    pub unique_committed: BTreeSet<JobKey>,
    /// Effects of unique jobs seen at the targets, per job.
    pub effects: BTreeMap<JobKey, u32>,
    /// The run-at instants producers committed, per job.
    pub run_at: BTreeMap<JobKey, Instant>,
    /// The largest fencing token handed out per key.
    pub fence_high: BTreeMap<JobKey, u64>,
    /// The target each job's producer committed (only jobs that name one).
    pub committed_target: BTreeMap<JobKey, Name>,
    /// The most deliveries of one target's jobs the world saw held at once (counted
    /// only under a declared per-target limit).
    pub target_holds_max: u32,
}

impl QueueChecker {
    /// A checker judging by the declared `policy`.
    pub fn new(policy: QueuePolicy) -> Self {
        QueueChecker {
            policy,
            accepted: 0,
            enqueued_high: BTreeMap::new(),
            applied: BTreeSet::new(),
            held: BTreeMap::new(),
            holds: BTreeMap::new(),
            leased_high: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            attempts_histogram: BTreeMap::new(),
            unique_committed: BTreeSet::new(),
            effects: BTreeMap::new(),
            run_at: BTreeMap::new(),
            fence_high: BTreeMap::new(),
            committed_target: BTreeMap::new(),
            target_holds_max: 0,
        }
    }

    /// A producer committed the job `key` for `target`.
    pub fn on_committed_target(&mut self, key: JobKey, target: Name) {
        self.committed_target.insert(key, target);
    }

    /// A producer committed the job `key` not to run before `at`.
    pub fn on_committed_run_at(&mut self, key: JobKey, at: Instant) {
        self.run_at.insert(key, at);
    }

    /// A producer committed the unique job `key` (it must take effect exactly once).
    pub fn on_committed_unique(&mut self, key: JobKey) {
        self.unique_committed.insert(key);
    }

    /// A target applied the unique job `key` with effect.
    pub fn on_effect(&mut self, key: JobKey) -> Result<(), Violation> {
        let n = self.effects.entry(key).or_insert(0);
        *n += 1;
        if *n > 1 {
            return Err(Violation::new(
                EXACTLY_ONCE,
                format!("the unique job {key} took effect {n} times at its target"),
            ));
        }
        Ok(())
    }

    /// The queue accepted `job` (not as a duplicate).
    pub fn on_accepted(&mut self, job: &Job) {
        self.accepted += 1;
        let h = self.enqueued_high.entry(job.key).or_insert(0);
        *h = (*h).max(job.version);
    }

    /// The queue handed `lease` to worker `worker` at `now`.
    pub fn on_lease(&mut self, lease: &Lease, worker: u32, now: Instant) -> Result<(), Violation> {
        let key = lease.job.key;
        let v = lease.job.version;
        let fence = lease.token.fence();
        if let Some(h) = self.holds.get(&key)
            && h.deadline > now
        {
            return Err(Violation::new(
                SINGLE_LEASE,
                format!(
                    "{key} version {v} was handed to worker-{worker} (fence {fence}) at {now} while worker-{} \
                     has held a delivery of it (version {}, fence {}) since {}, hidden by the declared visibility \
                     timeout of {:?} until {}: two workers deliver the same task",
                    h.worker,
                    h.version,
                    h.fence,
                    h.since,
                    self.policy.visibility_timeout,
                    h.deadline
                ),
            ));
        }
        let deadline = now.saturating_add(self.policy.visibility_timeout);
        if lease.deadline != deadline {
            return Err(Violation::new(
                SINGLE_LEASE,
                format!(
                    "{key} version {v}: the lease handed to worker-{worker} (fence {fence}) at {now} reports its \
                     deadline as {}, but the declared visibility timeout of {:?} hides it until {deadline}",
                    lease.deadline, self.policy.visibility_timeout
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
        if let Some(at) = self.run_at.get(&key)
            && now < *at
        {
            return Err(Violation::new(
                NOT_BEFORE_RUN_AT,
                format!(
                    "{key} was handed to worker-{worker} at {now}, before the run-at {at} its producer committed"
                ),
            ));
        }
        if let Some(high) = self.fence_high.get(&key)
            && fence <= *high
        {
            return Err(Violation::new(
                FENCES_GROW,
                format!(
                    "{key} version {v} was handed to worker-{worker} at {now} with fence {fence}, \
                     no larger than the fence {high} of an earlier lease of it: a target cannot tell \
                     the new holder from the old one (did a restart lose a lease it had answered?)"
                ),
            ));
        }
        let target = self.committed_target.get(&key).copied();
        if let (Some(max), Some(t)) = (self.policy.leases_per_target_max, target) {
            // The world's own count: deliveries of this target's jobs it saw handed
            // out and not yet acked, nacked or past their observed deadline.
            let held: Vec<&Hold> = self
                .holds
                .iter()
                .filter(|(k, h)| **k != key && h.target == Some(t) && h.deadline > now)
                .map(|(_, h)| h)
                .collect();
            if held.len() >= max as usize {
                let workers: Vec<String> = held
                    .iter()
                    .map(|h| format!("worker-{} (fence {}, since {})", h.worker, h.fence, h.since))
                    .collect();
                return Err(Violation::new(
                    SINGLE_LEASE,
                    format!(
                        "{key} version {v} of target {t} was handed to worker-{worker} (fence {fence}) at {now} \
                         while {} deliveries of that target's jobs were held ({}): more than the declared \
                         {max} leases per target",
                        held.len(),
                        workers.join(", ")
                    ),
                ));
            }
            self.target_holds_max = self.target_holds_max.max(held.len() as u32 + 1);
        }
        self.fence_high.insert(key, fence);
        self.retry_at.remove(&key);
        self.leased_high.insert(key, v);
        self.holds.insert(
            key,
            Hold {
                worker,
                fence,
                version: v,
                since: now,
                deadline,
                target,
            },
        );
        Ok(())
    }

    /// The queue accepted a heartbeat of lease `fence` on `key` at `now` and reported
    /// the new deadline `reported`: the world's own deadline moves to `now` + the
    /// declared visibility timeout, and the report must say the same.
    pub fn on_heartbeat(
        &mut self,
        key: JobKey,
        fence: u64,
        reported: Instant,
        now: Instant,
    ) -> Result<(), Violation> {
        let deadline = now.saturating_add(self.policy.visibility_timeout);
        if let Some(h) = self.holds.get_mut(&key)
            && h.fence == fence
        {
            h.deadline = deadline;
        }
        if reported != deadline {
            return Err(Violation::new(
                SINGLE_LEASE,
                format!(
                    "{key}: the heartbeat of lease {fence} at {now} reports the new deadline as {reported}, \
                     but the declared visibility timeout of {:?} extends it to {deadline}",
                    self.policy.visibility_timeout
                ),
            ));
        }
        Ok(())
    }

    /// The world's deadline of the delivery under lease `fence` on `key`, while the
    /// world records one.
    pub fn hold_deadline(&self, key: JobKey, fence: u64) -> Option<Instant> {
        self.holds
            .get(&key)
            .filter(|h| h.fence == fence)
            .map(|h| h.deadline)
    }

    /// The lease `fence` on `key` was acked (`attempt` was its attempt number).
    pub fn on_ack(&mut self, key: JobKey, fence: u64, attempt: u32) {
        self.release(key, fence);
        *self.attempts_histogram.entry(attempt).or_insert(0) += 1;
    }

    fn release(&mut self, key: JobKey, fence: u64) {
        if self.holds.get(&key).is_some_and(|h| h.fence == fence) {
            self.holds.remove(&key);
        }
    }

    /// Attempt `attempt` of `task` under lease `fence` failed with `error` and was
    /// nacked at `now` with `outcome`; `dead` is the queue's dead-letter queue after it.
    #[allow(clippy::too_many_arguments)] // one nack's facts, as the world saw them
    pub fn on_nack(
        &mut self,
        task: &Job,
        fence: u64,
        attempt: u32,
        outcome: Nacked,
        error: &str,
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
                let backoff: BackoffPolicy = self.policy.backoff;
                let (lo, hi) = backoff.bounds(attempt);
                let delay = at.saturating_since(now);
                if at < now || delay < lo || delay > hi {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} version {} attempt {attempt} failed at {now}; the retry is due at {at} \
                             (after {delay:?}), outside [{lo:?}, {hi:?}], the bounds of the declared {backoff}",
                            task.version
                        ),
                    ));
                }
                if attempt >= self.policy.attempts_max {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} version {} failed its last attempt ({attempt} of the declared {}) and was \
                             scheduled for another",
                            task.version, self.policy.attempts_max
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
                let there = dead.iter().rev().find(|d| {
                    d.job.key == key && d.job.version == task.version && d.redriven_at.is_none()
                });
                if let Some(d) = there
                    && d.last_error != error
                {
                    return Err(Violation::new(
                        RETRY_OR_DEAD_LETTER,
                        format!(
                            "{key} version {} failed its last attempt ({attempt}) with {error:?}, but its dead letter \
                             records the last error as {:?}",
                            task.version, d.last_error
                        ),
                    ));
                }
                if there.is_none() {
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
    pub fn on_applied(&mut self, key: JobKey, version: u64) -> Result<(), Violation> {
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
        key: JobKey,
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

    /// At rest: every target holds `latest` of every keyed job, and every unique job
    /// committed took effect exactly once.
    pub fn finish(
        &self,
        latest: &[(JobKey, u64)],
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
                    "at rest, {} keys (profile, target pairs) miss the latest version, e.g. {first}; \
                     the queue: {} in flight, {} dead",
                    lost.len(),
                    counts.in_flight(),
                    counts.dead
                ),
            ));
        }
        let never: Vec<&JobKey> = self
            .unique_committed
            .iter()
            .filter(|k| !self.effects.contains_key(k))
            .collect();
        if let Some(first) = never.first() {
            return Err(Violation::new(
                EXACTLY_ONCE,
                format!(
                    "at rest, {} of {} unique jobs committed never took effect at their target, e.g. {first}; \
                     the queue: {} in flight, {} dead, {} superseded",
                    never.len(),
                    self.unique_committed.len(),
                    counts.in_flight(),
                    counts.dead,
                    counts.superseded
                ),
            ));
        }
        self.check_conservation(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::core::LeaseToken;
    use crate::queue::profile::{self, ProfileId, TargetId};
    use std::time::Duration;

    const VT: Duration = Duration::from_millis(100);

    fn key() -> JobKey {
        profile::key(ProfileId(1), TargetId(0))
    }

    fn job() -> Job {
        profile::job(ProfileId(1), TargetId(0), 1)
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn checker(backoff: BackoffPolicy) -> QueueChecker {
        QueueChecker::new(QueuePolicy {
            visibility_timeout: VT,
            attempts_max: 5,
            backoff,
            leases_per_target_max: None,
        })
    }

    fn full_jitter() -> BackoffPolicy {
        BackoffPolicy::FullJitterExponential {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(1_000),
        }
    }

    /// A lease of version 1 under `fence`, reporting `deadline`.
    fn lease(fence: u64, deadline: Instant) -> Lease {
        Lease {
            job: job(),
            token: LeaseToken::new(key(), fence),
            attempt: 1,
            deadline,
            redriven: false,
        }
    }

    fn invariant(r: Result<(), Violation>) -> String {
        r.err().map(|v| v.invariant.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_second_worker_within_the_declared_timeout_is_caught_whatever_the_report() {
        let mut c = checker(full_jitter());
        c.on_lease(&lease(1, ms(100)), 0, ms(0)).unwrap();
        let r = c.on_lease(&lease(2, ms(150)), 1, ms(50));
        assert_eq!(invariant(r), SINGLE_LEASE);
        // At the declared deadline the first hold is over.
        c.on_lease(&lease(3, ms(200)), 1, ms(100)).unwrap();
        // An accepted ack ends a hold early.
        c.on_ack(key(), 3, 1);
        c.on_lease(&lease(4, ms(220)), 0, ms(120)).unwrap();
    }

    #[test]
    fn an_accepted_heartbeat_extends_the_hold_and_its_report_is_compared() {
        let mut c = checker(full_jitter());
        c.on_lease(&lease(1, ms(100)), 0, ms(0)).unwrap();
        c.on_heartbeat(key(), 1, ms(190), ms(90)).unwrap();
        let r = c.on_lease(&lease(2, ms(250)), 1, ms(150));
        assert_eq!(invariant(r), SINGLE_LEASE, "held until 190 ms");
        let r = c.on_heartbeat(key(), 1, ms(100), ms(95));
        assert_eq!(
            invariant(r),
            SINGLE_LEASE,
            "reported 100 ms, declared 195 ms"
        );
    }

    #[test]
    fn a_reported_deadline_other_than_the_declared_one_is_caught() {
        let mut c = checker(full_jitter());
        let r = c.on_lease(&lease(1, ms(0)), 0, ms(0));
        let v = r.unwrap_err();
        assert_eq!(v.invariant, SINGLE_LEASE);
        assert!(v.to_string().contains("p1@t0"), "{v}");
    }

    #[test]
    fn retries_are_judged_by_the_declared_backoff() {
        let additive = BackoffPolicy::AdditiveJitter {
            base: Duration::from_millis(10),
            jitter: Duration::from_millis(10),
            cap: Duration::from_millis(1_000),
        };
        let retry = |backoff, at| {
            let mut c = checker(backoff);
            c.on_accepted(&job());
            c.on_nack(&job(), 1, 1, Nacked::Retry { at }, "down", ms(0), &[])
        };
        // 15 ms after the first failure: additive allows [10, 20] ms, full jitter [0, 10].
        retry(additive, ms(15)).unwrap();
        assert_eq!(
            invariant(retry(full_jitter(), ms(15))),
            RETRY_OR_DEAD_LETTER
        );
        // 5 ms: below the additive floor.
        assert_eq!(invariant(retry(additive, ms(5))), RETRY_OR_DEAD_LETTER);
        retry(full_jitter(), ms(5)).unwrap();
    }

    #[test]
    fn a_dead_letter_must_record_the_last_error() {
        let letter = |error: &str| DeadLetter {
            job: job(),
            attempts: 5,
            at: ms(0),
            last_error: error.into(),
            redriven_at: None,
            history: Vec::new(),
            redrives: 0,
        };
        let nack = |dead: &[DeadLetter]| {
            let mut c = checker(full_jitter());
            c.on_accepted(&job());
            c.on_nack(&job(), 1, 5, Nacked::DeadLettered, "503", ms(0), dead)
        };
        nack(&[letter("503")]).unwrap();
        assert_eq!(invariant(nack(&[letter("timeout")])), RETRY_OR_DEAD_LETTER);
        assert_eq!(invariant(nack(&[])), RETRY_OR_DEAD_LETTER);
    }

    #[test]
    fn a_job_handed_out_before_its_committed_run_at_is_caught() {
        let mut c = checker(full_jitter());
        c.on_committed_run_at(key(), ms(50));
        let r = c.on_lease(&lease(1, ms(149)), 0, ms(49));
        assert_eq!(invariant(r), NOT_BEFORE_RUN_AT);
        c.on_lease(&lease(2, ms(150)), 0, ms(50)).unwrap();
    }

    #[test]
    fn a_unique_job_must_take_effect_exactly_once() {
        let mail = crate::queue::JobType::from_static("mail");
        let a = JobKey::unique(mail, crate::queue::JobId(1));
        let b = JobKey::unique(mail, crate::queue::JobId(2));
        let mut c = checker(full_jitter());
        c.on_committed_unique(a);
        c.on_committed_unique(b);
        c.on_effect(a).unwrap();
        let counts = QueueCounts::default();
        let v = c.finish(&[], 0, &counts).unwrap_err();
        assert_eq!(v.invariant, EXACTLY_ONCE);
        assert!(v.to_string().contains("mail#2"), "{v}");
        c.on_effect(b).unwrap();
        c.finish(&[], 0, &counts).unwrap();
        assert_eq!(invariant(c.on_effect(b)), EXACTLY_ONCE);
    }
}
