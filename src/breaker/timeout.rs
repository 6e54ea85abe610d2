//! Per-call timeout: a fixed duration after which a call in flight counts as failed.
//!
//! Sans-IO: the policy only does the arithmetic. The caller records when the call
//! started and asks, with the current time, whether it has expired.

use std::time::Duration;

use crate::clock::Instant;
use crate::config::ConfigError;

/// How long a single call may take before it counts as timed out.
///
/// A call started at `started` expires at `deadline(started) = started + duration`
/// (saturating at the largest [`Instant`]); it is expired when `now >= deadline`.
///
/// ```
/// use std::time::Duration;
/// use faultline::breaker::timeout::TimeoutPolicy;
/// use faultline::clock::Instant;
///
/// let policy = TimeoutPolicy::new(Duration::from_millis(250))?;
/// let started = Instant::from_millis(1_000);
/// assert_eq!(policy.deadline(started), Instant::from_millis(1_250));
/// assert!(!policy.is_expired(started, Instant::from_millis(1_249)));
/// assert!(policy.is_expired(started, Instant::from_millis(1_250)));
/// # Ok::<(), faultline::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "TimeoutPolicyData", into = "TimeoutPolicyData")]
pub struct TimeoutPolicy {
    duration: Duration,
}

/// The serde form of [`TimeoutPolicy`], read back through [`TimeoutPolicy::new`] (so a
/// zero duration is refused with its [`ConfigError`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutPolicyData {
    duration: Duration,
}

impl From<TimeoutPolicy> for TimeoutPolicyData {
    fn from(policy: TimeoutPolicy) -> Self {
        TimeoutPolicyData {
            duration: policy.duration,
        }
    }
}

impl TryFrom<TimeoutPolicyData> for TimeoutPolicy {
    type Error = ConfigError;

    fn try_from(data: TimeoutPolicyData) -> Result<Self, ConfigError> {
        TimeoutPolicy::new(data.duration)
    }
}

impl TimeoutPolicy {
    /// A timeout of `duration`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `duration` if it is zero (every call would time out).
    pub fn new(duration: Duration) -> Result<Self, ConfigError> {
        if duration.is_zero() {
            return Err(ConfigError::new(
                "duration",
                "must be greater than zero, got 0ns",
            ));
        }
        Ok(TimeoutPolicy { duration })
    }

    // Getters.

    /// The time a call may take.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When a call started at `started` expires: `started + duration`, saturating.
    pub fn deadline(&self, started: Instant) -> Instant {
        started.saturating_add(self.duration)
    }

    /// Whether a call started at `started` has expired at `now` (`now >= deadline`).
    ///
    /// A `now` before `started` is not expired.
    pub fn is_expired(&self, started: Instant, now: Instant) -> bool {
        now >= self.deadline(started)
    }

    /// Time left at `now` before a call started at `started` expires; zero once expired.
    ///
    /// Handy for arming a timer (e.g. `tokio::time::timeout`) for the rest of the call.
    pub fn remaining(&self, started: Instant, now: Instant) -> Duration {
        self.deadline(started).saturating_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_duration_is_rejected() {
        let err = TimeoutPolicy::new(Duration::ZERO).unwrap_err();
        assert_eq!(err.field, "duration");
        assert!(err.to_string().contains("`duration`"), "{err}");
    }

    #[test]
    fn smallest_duration_is_accepted() {
        let policy = TimeoutPolicy::new(Duration::from_nanos(1)).unwrap();
        assert_eq!(policy.duration(), Duration::from_nanos(1));
        let started = Instant::from_nanos(10);
        assert_eq!(policy.deadline(started), Instant::from_nanos(11));
        assert!(!policy.is_expired(started, Instant::from_nanos(10)));
        assert!(policy.is_expired(started, Instant::from_nanos(11)));
    }

    #[test]
    fn expires_exactly_at_deadline() {
        let policy = TimeoutPolicy::new(Duration::from_millis(100)).unwrap();
        let started = Instant::from_millis(5);
        assert_eq!(policy.deadline(started), Instant::from_nanos(105_000_000));
        assert!(!policy.is_expired(started, started));
        assert!(!policy.is_expired(started, Instant::from_nanos(104_999_999)));
        assert!(policy.is_expired(started, Instant::from_nanos(105_000_000)));
        assert!(policy.is_expired(started, Instant::from_nanos(u64::MAX)));
    }

    #[test]
    fn now_before_start_is_not_expired() {
        let policy = TimeoutPolicy::new(Duration::from_millis(1)).unwrap();
        let started = Instant::from_millis(10);
        assert!(!policy.is_expired(started, Instant::ZERO));
        assert_eq!(
            policy.remaining(started, Instant::ZERO),
            Duration::from_millis(11)
        );
    }

    #[test]
    fn deadline_saturates() {
        let policy = TimeoutPolicy::new(Duration::MAX).unwrap();
        assert_eq!(
            policy.deadline(Instant::ZERO),
            Instant::from_nanos(u64::MAX)
        );
        let policy = TimeoutPolicy::new(Duration::from_secs(1)).unwrap();
        let started = Instant::from_nanos(u64::MAX - 5);
        assert_eq!(policy.deadline(started), Instant::from_nanos(u64::MAX));
        assert!(!policy.is_expired(started, Instant::from_nanos(u64::MAX - 1)));
        assert!(policy.is_expired(started, Instant::from_nanos(u64::MAX)));
    }

    #[test]
    fn remaining_counts_down_to_zero() {
        let policy = TimeoutPolicy::new(Duration::from_millis(100)).unwrap();
        let started = Instant::from_millis(0);
        assert_eq!(
            policy.remaining(started, started),
            Duration::from_millis(100)
        );
        assert_eq!(
            policy.remaining(started, Instant::from_millis(40)),
            Duration::from_millis(60)
        );
        assert_eq!(
            policy.remaining(started, Instant::from_millis(100)),
            Duration::ZERO
        );
        assert_eq!(
            policy.remaining(started, Instant::from_millis(500)),
            Duration::ZERO
        );
    }
}
