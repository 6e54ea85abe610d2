//! The contract the simulated world drives: [`TaskQueue`]. The reference [`Queue`]
//! implements it; so can your own queue (a wrapper around SQS, Asynq, River or a
//! table), which then gets the invariants, the fault plans, shrinking and the reports.
//!
//! The world plays the producers, the workers and the target services; the queue only
//! has to keep its tasks. A queue process that is down is modelled by the world not
//! calling it; [`restart`](TaskQueue::restart) is the crash: what the queue did not
//! keep durably is gone.
//!
//! **Declared policy.** A queue states the policy it implements, from its own
//! configuration, through [`policy`](TaskQueue::policy): its visibility timeout, its
//! attempts before the dead-letter queue, and its retry backoff's family and bounds
//! ([`BackoffPolicy`]). The invariants judge it by that declaration, not by the
//! reference's settings: a queue with capped additive jitter, declared as such, passes;
//! the same queue declaring the reference's full-jitter exponential backoff is caught.
//!
//! **Observed and trusted.** The invariants are checked from what the world itself
//! sees at the boundary it owns (which worker holds a delivery of which task since
//! when, the heartbeats it sent and the queue accepted, the replies of the targets,
//! what producers were told). What the queue says about itself is *compared* with those
//! facts (a mismatch is a violation of its own), never used instead of them. Per
//! method, the doc says which it is:
//!
//! | method | observed or trusted |
//! |---|---|
//! | [`policy`](TaskQueue::policy) | trusted: it is the yardstick, read once; every later answer is judged against it |
//! | [`enqueue`](TaskQueue::enqueue) | observed: the world counts what producers were told was accepted |
//! | [`lease`](TaskQueue::lease) | observed: the world records which worker holds which task since when, until `now` + the declared visibility timeout; the reported `deadline` is only compared |
//! | [`heartbeat`](TaskQueue::heartbeat) | observed: an accepted heartbeat extends the world's deadline to `now` + the declared timeout; the returned deadline is only compared |
//! | [`ack`](TaskQueue::ack), [`nack`](TaskQueue::nack) | observed: an accepted one ends the world's record of the delivery; a nack's retry instant is judged by the declared backoff and then enforced at the next lease |
//! | [`lease_of`](TaskQueue::lease_of) | trusted, but only to *accuse*: a crashed worker's lease still reported past its deadline is a violation; a queue that lies "released" is caught by the deliveries that follow (or never come) |
//! | [`counts`](TaskQueue::counts) | compared: `enqueued` with the world's own count of accepted tasks; the places must balance; the world cannot see inside the queue |
//! | [`dead_letters`](TaskQueue::dead_letters) | compared: a job whose last attempt failed must be listed there, with the failed nack's error as its last error; the world's targets tell whether it ever arrives |
//! | [`redrive`](TaskQueue::redrive) | observed: what is handed out after it is checked for order per key |
//! | [`restart`](TaskQueue::restart), [`poll_timeout`](TaskQueue::poll_timeout) | commands and hints: nothing is judged from them, only from what follows |

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::queue::core::{
    DeadLetter, Enqueued, Fenced, Job, JobKey, Lease, LeaseToken, Nacked, Queue, QueueConfig,
    QueueCounts,
};
use std::fmt;
use std::time::Duration;

/// The retry backoff family a queue implements, and its bounds. Retry `n` follows
/// the `n`-th failed attempt (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffPolicy {
    /// Full jitter, exponential and capped (the reference's, [`crate::retry::Backoff`]):
    /// `delay_n = uniform(0, min(cap, base·2^(n−1)))`.
    FullJitterExponential {
        /// The ceiling of the first retry.
        base: Duration,
        /// The largest ceiling.
        cap: Duration,
    },
    /// Capped additive (linear) jitter: `delay_n = min(cap, base·n + uniform(0, jitter))`.
    AdditiveJitter {
        /// The linear step: retry `n` waits at least `base·n` (up to `cap`).
        base: Duration,
        /// The most added on top of `base·n`.
        jitter: Duration,
        /// The largest delay.
        cap: Duration,
    },
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        delay: Duration,
    },
}

impl BackoffPolicy {
    /// The full-jitter exponential policy of a reference [`crate::retry::Backoff`].
    pub fn full_jitter(backoff: crate::retry::Backoff) -> Self {
        BackoffPolicy::FullJitterExponential {
            base: backoff.base(),
            cap: backoff.cap(),
        }
    }

    /// The shortest and the longest delay the policy allows before retry `retry`
    /// (both included). Saturating: no retry number overflows.
    pub fn bounds(&self, retry: u32) -> (Duration, Duration) {
        let n = u128::from(retry.max(1));
        match *self {
            BackoffPolicy::FullJitterExponential { base, cap } => {
                let shift = retry.max(1) - 1;
                let hi = if shift >= 64 {
                    cap
                } else {
                    nanos(base.as_nanos().saturating_mul(1u128 << shift)).min(cap)
                };
                (Duration::ZERO, hi)
            }
            BackoffPolicy::AdditiveJitter { base, jitter, cap } => {
                let lo = base.as_nanos().saturating_mul(n);
                let hi = lo.saturating_add(jitter.as_nanos());
                (nanos(lo).min(cap), nanos(hi).min(cap))
            }
            BackoffPolicy::Fixed { delay } => (delay, delay),
        }
    }

    /// The formula in words, for messages.
    pub fn formula(&self) -> &'static str {
        match self {
            BackoffPolicy::FullJitterExponential { .. } => {
                "full-jitter exponential uniform(0, min(cap, base·2^(n−1)))"
            }
            BackoffPolicy::AdditiveJitter { .. } => {
                "capped additive jitter min(cap, base·n + uniform(0, jitter))"
            }
            BackoffPolicy::Fixed { .. } => "fixed delay",
        }
    }
}

impl fmt::Display for BackoffPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackoffPolicy::FullJitterExponential { base, cap } => {
                write!(f, "{} with base {base:?}, cap {cap:?}", self.formula())
            }
            BackoffPolicy::AdditiveJitter { base, jitter, cap } => write!(
                f,
                "{} with base {base:?}, jitter {jitter:?}, cap {cap:?}",
                self.formula()
            ),
            BackoffPolicy::Fixed { delay } => write!(f, "{} of {delay:?}", self.formula()),
        }
    }
}

/// Nanoseconds as a [`Duration`], saturating at `u64::MAX` nanoseconds.
fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// The policy a queue implements, as it declares it from its own configuration
/// ([`TaskQueue::policy`]); the invariants judge the queue by it.
///
/// ```
/// use std::time::Duration;
/// use faultline::queue::{BackoffPolicy, QueueConfig, QueuePolicy};
///
/// let config = QueueConfig::builder().attempts_max(5).build()?;
/// let policy = QueuePolicy::from(&config);
/// assert_eq!(policy.attempts_max, 5);
/// assert_eq!(policy.backoff.bounds(2), (Duration::ZERO, Duration::from_millis(200)));
///
/// let linear = BackoffPolicy::AdditiveJitter {
///     base: Duration::from_millis(100),
///     jitter: Duration::from_millis(50),
///     cap: Duration::from_secs(1),
/// };
/// assert_eq!(linear.bounds(3), (Duration::from_millis(300), Duration::from_millis(350)));
/// # Ok::<(), faultline::config::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueuePolicy {
    /// How long a lease (or an accepted heartbeat) hides a task from other workers.
    pub visibility_timeout: Duration,
    /// Attempts of a version before it moves to the dead-letter queue.
    pub attempts_max: u32,
    /// The delay before each retry.
    pub backoff: BackoffPolicy,
    /// The most leases out at once on the jobs of one [target](crate::queue::Job::target),
    /// if the queue limits them (`None`: no limit, and nothing is checked). With a
    /// limit, `queue.single_lease` also requires that the world never sees more than
    /// that many deliveries of one target's jobs held at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases_per_target_max: Option<u32>,
}

impl QueuePolicy {
    /// Checks that the declaration makes sense: a visibility timeout above zero, at
    /// least one attempt, and a cap no lower than the base (or than the fixed delay).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.visibility_timeout.is_zero() {
            return Err(ConfigError::new(
                "visibility_timeout",
                "must be greater than zero, got 0ns",
            ));
        }
        if self.attempts_max == 0 {
            return Err(ConfigError::new(
                "attempts_max",
                "must be at least 1, got 0",
            ));
        }
        match self.backoff {
            BackoffPolicy::FullJitterExponential { base, cap }
            | BackoffPolicy::AdditiveJitter { base, cap, .. }
                if cap < base =>
            {
                Err(ConfigError::new(
                    "cap",
                    format!("must be at least `base` ({base:?}), got {cap:?}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl From<&QueueConfig> for QueuePolicy {
    /// The reference's policy: its visibility timeout, attempts, full-jitter backoff
    /// and per-target lease limit.
    fn from(config: &QueueConfig) -> Self {
        QueuePolicy {
            visibility_timeout: config.visibility_timeout(),
            attempts_max: config.attempts_max(),
            backoff: BackoffPolicy::full_jitter(config.backoff()),
            leases_per_target_max: config.leases_per_target_max(),
        }
    }
}

/// A task queue the world can drive. See the [module docs](self) for which answers
/// the world observes and which it trusts.
pub trait TaskQueue {
    /// The policy this queue implements, from its own configuration. Trusted: it is
    /// the yardstick the invariants judge every later answer by (read once, when the
    /// world is built).
    fn policy(&self) -> QueuePolicy;
    /// Accepts `job`; once this returns, the job must survive a restart. Observed:
    /// the world counts what it was told was accepted (everything but
    /// [`Enqueued::Duplicate`]) and compares the queue's `counts().enqueued` with it.
    fn enqueue(&mut self, job: Job, now: Instant) -> Enqueued;
    /// The next task due at `now`, leased until `now` + the declared visibility
    /// timeout. Observed: the world records which worker holds a delivery of which task
    /// since when, and until when the declaration hides it; a second worker handed the
    /// same task before then is a violation, whatever the queue reports. The lease's
    /// `deadline` is compared with the declared one, never used instead of it.
    fn lease(&mut self, now: Instant) -> Option<Lease>;
    /// Extends a lease to `now` + the visibility timeout; the new deadline, or
    /// [`Fenced`] when it is no longer valid. Observed: an accepted heartbeat extends
    /// the world's own deadline of the delivery; the returned one is only compared.
    fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced>;
    /// The task was delivered. Observed: an accepted ack ends the world's record of the
    /// delivery (a refused one does not: the lease lasts its declared time).
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced>;
    /// The delivery failed with `error` (the worker's text of it). Observed: an
    /// accepted nack ends the world's record of the delivery; a retry's instant is
    /// judged by the declared backoff, and the job handed out before it is a
    /// violation; a dead-lettered job must be listed in
    /// [`dead_letters`](TaskQueue::dead_letters) with `error` as its last error;
    /// "superseded" needs a newer version the world enqueued.
    fn nack(&mut self, token: &LeaseToken, error: &str, now: Instant) -> Result<Nacked, Fenced>;
    /// The unexpired lease on `key`, if any. Trusted only to accuse: asked once a
    /// crashed worker's lease has passed its (observed) deadline, a lease still
    /// reported is a violation; a queue that wrongly says "released" is caught by what
    /// it hands out (or never hands out) next.
    fn lease_of(&self, key: JobKey, now: Instant) -> Option<LeaseToken>;
    /// Where the tasks are (enqueued = done + superseded + pending + leased +
    /// retrying + dead). Compared: `enqueued` with the world's count of accepted tasks,
    /// and the places must balance; the world cannot see inside the queue, so the
    /// split between places is the queue's word (the targets' copies are the facts).
    fn counts(&self) -> QueueCounts;
    /// Every dead letter, redriven ones included. Compared: a task whose last attempt
    /// failed must be listed, not yet redriven.
    fn dead_letters(&self) -> Vec<DeadLetter>;
    /// Puts the dead letters back, keeping each key's order; returns how many. What it
    /// hands out afterwards is observed (no version after a newer one, per key).
    fn redrive(&mut self, now: Instant) -> usize;
    /// The queue process crashed and restarts from its durable state. A command:
    /// judged by what the queue does afterwards.
    fn restart(&mut self, now: Instant);
    /// When to call [`lease`](TaskQueue::lease) again at the latest. A hint: the world's
    /// workers poll on their own schedule and judge nothing from it.
    fn poll_timeout(&self) -> Option<Instant>;
}

impl TaskQueue for Queue {
    fn policy(&self) -> QueuePolicy {
        QueuePolicy::from(self.config())
    }
    fn enqueue(&mut self, job: Job, now: Instant) -> Enqueued {
        Queue::enqueue(self, job, now)
    }
    fn lease(&mut self, now: Instant) -> Option<Lease> {
        Queue::lease(self, now)
    }
    fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced> {
        Queue::heartbeat(self, token, now)
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced> {
        Queue::ack(self, token, now)
    }
    fn nack(&mut self, token: &LeaseToken, error: &str, now: Instant) -> Result<Nacked, Fenced> {
        Queue::nack(self, token, error, now)
    }
    fn lease_of(&self, key: JobKey, now: Instant) -> Option<LeaseToken> {
        Queue::lease_of(self, key, now)
    }
    fn counts(&self) -> QueueCounts {
        Queue::counts(self)
    }
    fn dead_letters(&self) -> Vec<DeadLetter> {
        Queue::dead_letters(self).to_vec()
    }
    fn redrive(&mut self, now: Instant) -> usize {
        Queue::redrive(self, now)
    }
    fn restart(&mut self, _now: Instant) {
        Queue::restart(self);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Queue::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Backoff;

    #[test]
    fn the_full_jitter_declaration_has_the_reference_ceilings() {
        for (base, cap) in [(1, 1), (5, 100), (200, 4_000), (7, u64::MAX / 2)] {
            let b = Backoff::new(Duration::from_nanos(base), Duration::from_nanos(cap)).unwrap();
            let p = BackoffPolicy::full_jitter(b);
            for n in 1..80 {
                assert_eq!(
                    p.bounds(n),
                    (Duration::ZERO, b.ceiling(n)),
                    "{base} {cap} {n}"
                );
            }
        }
    }

    #[test]
    fn additive_and_fixed_bounds_saturate_at_the_cap() {
        let ms = Duration::from_millis;
        let p = BackoffPolicy::AdditiveJitter {
            base: ms(100),
            jitter: ms(30),
            cap: ms(250),
        };
        assert_eq!(p.bounds(1), (ms(100), ms(130)));
        assert_eq!(p.bounds(2), (ms(200), ms(230)));
        assert_eq!(p.bounds(3), (ms(250), ms(250)));
        assert_eq!(p.bounds(u32::MAX), (ms(250), ms(250)));
        let f = BackoffPolicy::Fixed { delay: ms(40) };
        assert_eq!(f.bounds(9), (ms(40), ms(40)));
    }

    #[test]
    fn a_declaration_that_makes_no_sense_is_refused() {
        let ok = QueuePolicy::from(&QueueConfig::default());
        ok.validate().unwrap();
        let zero = QueuePolicy {
            visibility_timeout: Duration::ZERO,
            ..ok
        };
        assert_eq!(zero.validate().unwrap_err().field, "visibility_timeout");
        let none = QueuePolicy {
            attempts_max: 0,
            ..ok
        };
        assert_eq!(none.validate().unwrap_err().field, "attempts_max");
    }
}
