//! Fallback: the answer a caller gets when the API can't give one (breaker open, budget
//! spent, bulkhead full, timeout, or the call failed).
//!
//! Sans-IO: the caller reports successes with [`Fallback::on_success`] and asks for a
//! substitute with [`Fallback::take`], passing `now` each time.

use std::time::Duration;

use crate::clock::Instant;

/// What to answer when the API can't.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FallbackPolicy<T> {
    /// No substitute: the caller sees the error.
    None,
    /// Always this value.
    Default(T),
    /// The last value the API returned, if there is one no older than `max_age`
    /// (`None`: any age).
    LastGood {
        /// How old the last good value may be; older counts as absent.
        max_age: Option<Duration>,
    },
    /// The last good value as in [`LastGood`](FallbackPolicy::LastGood), else `default`.
    LastGoodOr {
        /// The answer when there is no fresh last good value.
        default: T,
        /// How old the last good value may be; older counts as absent.
        max_age: Option<Duration>,
    },
}

impl<T> FallbackPolicy<T> {
    /// Whether the policy ever answers with the last good value.
    pub fn uses_last_good(&self) -> bool {
        matches!(
            self,
            FallbackPolicy::LastGood { .. } | FallbackPolicy::LastGoodOr { .. }
        )
    }
}

/// A fallback per a [`FallbackPolicy`], remembering the last good value when the policy
/// needs it.
///
/// A last good value recorded at `at` is fresh at `now` while `now - at <= max_age`
/// (saturating, so a `now` before `at` counts as age zero).
///
/// ```
/// use std::time::Duration;
/// use faultline::breaker::fallback::{Fallback, FallbackPolicy};
/// use faultline::clock::Instant;
///
/// let mut fallback = Fallback::new(FallbackPolicy::LastGoodOr {
///     default: "unknown".to_string(),
///     max_age: Some(Duration::from_secs(60)),
/// });
/// assert_eq!(fallback.take(Instant::ZERO).as_deref(), Some("unknown"));
///
/// fallback.on_success(&"sunny".to_string(), Instant::from_millis(1_000));
/// assert_eq!(fallback.take(Instant::from_millis(61_000)).as_deref(), Some("sunny"));
/// // Too old now: back to the default.
/// assert_eq!(fallback.take(Instant::from_millis(61_001)).as_deref(), Some("unknown"));
/// assert_eq!(fallback.used_total(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback<T: Clone> {
    policy: FallbackPolicy<T>,
    last_good: Option<(T, Instant)>,
    used_total: u64,
}

impl<T: Clone> Fallback<T> {
    /// A fallback answering per `policy`, with no last good value yet.
    pub fn new(policy: FallbackPolicy<T>) -> Self {
        Fallback {
            policy,
            last_good: None,
            used_total: 0,
        }
    }

    // Getters.

    /// The policy.
    pub fn policy(&self) -> &FallbackPolicy<T> {
        &self.policy
    }

    /// The last good value and when it was recorded, whatever its age. Always `None`
    /// under a policy that does not [use it](FallbackPolicy::uses_last_good).
    pub fn last_good(&self) -> Option<(&T, Instant)> {
        self.last_good.as_ref().map(|(value, at)| (value, *at))
    }

    /// The answer the policy gives at `now`, without counting a use.
    pub fn fallback(&self, now: Instant) -> Option<T> {
        match &self.policy {
            FallbackPolicy::None => None,
            FallbackPolicy::Default(value) => Some(value.clone()),
            FallbackPolicy::LastGood { max_age } => self.fresh_last_good(now, *max_age).cloned(),
            FallbackPolicy::LastGoodOr { default, max_age } => Some(
                self.fresh_last_good(now, *max_age)
                    .unwrap_or(default)
                    .clone(),
            ),
        }
    }

    /// How many times [`take`](Self::take) returned a value.
    pub fn used_total(&self) -> u64 {
        self.used_total
    }

    fn fresh_last_good(&self, now: Instant, max_age: Option<Duration>) -> Option<&T> {
        let (value, at) = self.last_good.as_ref()?;
        match max_age {
            Some(max_age) if now.saturating_since(*at) > max_age => None,
            _ => Some(value),
        }
    }

    // Inputs.

    /// Records that the API answered `value` at `now`. Clones it only when the policy
    /// [uses the last good value](FallbackPolicy::uses_last_good).
    pub fn on_success(&mut self, value: &T, now: Instant) {
        if self.policy.uses_last_good() {
            self.last_good = Some((value.clone(), now));
        }
    }

    // Commands.

    /// The answer the policy gives at `now`, counted in
    /// [`used_total`](Self::used_total) when there is one.
    pub fn take(&mut self, now: Instant) -> Option<T> {
        let answer = self.fallback(now);
        if answer.is_some() {
            self.used_total = self.used_total.saturating_add(1);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    #[test]
    fn none_never_answers() {
        let mut fallback = Fallback::<u32>::new(FallbackPolicy::None);
        assert_eq!(fallback.fallback(at_ms(0)), None);
        fallback.on_success(&7, at_ms(0));
        assert_eq!(fallback.last_good(), None);
        assert_eq!(fallback.take(at_ms(1)), None);
        assert_eq!(fallback.used_total(), 0);
    }

    #[test]
    fn default_always_answers() {
        let mut fallback = Fallback::new(FallbackPolicy::Default(5u32));
        assert_eq!(fallback.fallback(at_ms(0)), Some(5));
        fallback.on_success(&9, at_ms(0));
        assert_eq!(fallback.last_good(), None);
        assert_eq!(fallback.take(at_ms(1)), Some(5));
        assert_eq!(fallback.take(Instant::from_nanos(u64::MAX)), Some(5));
        assert_eq!(fallback.used_total(), 2);
    }

    #[test]
    fn last_good_absent_until_a_success() {
        let mut fallback = Fallback::<u32>::new(FallbackPolicy::LastGood { max_age: None });
        assert_eq!(fallback.take(at_ms(0)), None);
        assert_eq!(fallback.used_total(), 0);
        fallback.on_success(&1, at_ms(10));
        fallback.on_success(&2, at_ms(20));
        assert_eq!(fallback.last_good(), Some((&2, at_ms(20))));
        assert_eq!(fallback.take(Instant::from_nanos(u64::MAX)), Some(2));
        assert_eq!(fallback.used_total(), 1);
    }

    #[test]
    fn last_good_expires_after_max_age() {
        let mut fallback = Fallback::new(FallbackPolicy::LastGood {
            max_age: Some(Duration::from_millis(100)),
        });
        fallback.on_success(&"a", at_ms(1_000));
        assert_eq!(fallback.fallback(at_ms(1_000)), Some("a"));
        assert_eq!(fallback.fallback(at_ms(1_100)), Some("a")); // exactly max_age: fresh
        assert_eq!(fallback.fallback(Instant::from_nanos(1_100_000_001)), None);
        assert_eq!(fallback.take(at_ms(2_000)), None);
        assert_eq!(fallback.used_total(), 0);
        // Still remembered, just too old.
        assert_eq!(fallback.last_good(), Some((&"a", at_ms(1_000))));
        // A new success refreshes it.
        fallback.on_success(&"b", at_ms(2_000));
        assert_eq!(fallback.take(at_ms(2_050)), Some("b"));
        assert_eq!(fallback.used_total(), 1);
    }

    #[test]
    fn zero_max_age_only_at_the_same_instant() {
        let fallback = {
            let mut f = Fallback::new(FallbackPolicy::LastGood {
                max_age: Some(Duration::ZERO),
            });
            f.on_success(&1u8, at_ms(5));
            f
        };
        assert_eq!(fallback.fallback(at_ms(5)), Some(1));
        assert_eq!(fallback.fallback(Instant::from_nanos(5_000_001)), None);
    }

    #[test]
    fn now_before_success_counts_as_fresh() {
        let mut fallback = Fallback::new(FallbackPolicy::LastGood {
            max_age: Some(Duration::from_millis(1)),
        });
        fallback.on_success(&3u8, at_ms(100));
        assert_eq!(fallback.fallback(at_ms(0)), Some(3));
    }

    #[test]
    fn last_good_or_falls_back_to_default() {
        let mut fallback = Fallback::new(FallbackPolicy::LastGoodOr {
            default: 0u32,
            max_age: Some(Duration::from_secs(1)),
        });
        assert_eq!(fallback.take(at_ms(0)), Some(0));
        fallback.on_success(&42, at_ms(0));
        assert_eq!(fallback.take(at_ms(1_000)), Some(42));
        assert_eq!(fallback.take(at_ms(1_001)), Some(0));
        assert_eq!(fallback.used_total(), 3);
    }

    #[test]
    fn last_good_or_without_max_age_keeps_forever() {
        let mut fallback = Fallback::new(FallbackPolicy::LastGoodOr {
            default: String::from("default"),
            max_age: None,
        });
        fallback.on_success(&String::from("fresh"), at_ms(0));
        assert_eq!(
            fallback.take(Instant::from_nanos(u64::MAX)).as_deref(),
            Some("fresh")
        );
    }

    #[test]
    fn fallback_does_not_count_a_use() {
        let mut fallback = Fallback::new(FallbackPolicy::Default(1u8));
        for _ in 0..3 {
            assert_eq!(fallback.fallback(at_ms(0)), Some(1));
        }
        assert_eq!(fallback.used_total(), 0);
        assert_eq!(fallback.take(at_ms(0)), Some(1));
        assert_eq!(fallback.used_total(), 1);
    }

    #[test]
    fn policy_getter_and_uses_last_good() {
        let fallback = Fallback::new(FallbackPolicy::Default(1u8));
        assert_eq!(fallback.policy(), &FallbackPolicy::Default(1));
        assert!(!FallbackPolicy::<u8>::None.uses_last_good());
        assert!(!FallbackPolicy::Default(1u8).uses_last_good());
        assert!(FallbackPolicy::<u8>::LastGood { max_age: None }.uses_last_good());
        assert!(
            FallbackPolicy::LastGoodOr {
                default: 1u8,
                max_age: None
            }
            .uses_last_good()
        );
    }
}
