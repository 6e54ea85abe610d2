//! Retries: exponential [`Backoff`] with full jitter, a tower-style [`RetryBudget`] that
//! keeps retries to a fraction of recent traffic, and a [`RetryPolicy`] that bounds the
//! number of attempts.
//!
//! Sans-IO: time is passed in as `now`, randomness as `rng`. Random draws use only
//! [`rand::Rng::next_u64`] and an unbiased multiply-and-reject (Lemire) reduction, so a
//! seeded generator gives the same delays whatever the `rand` version.

use std::time::Duration;

use crate::clock::Instant;
use crate::config::ConfigError;

/// Exponential backoff with *full jitter* and a cap.
///
/// The delay before retry `n` (1-based: retry 1 follows the first failed attempt) is
///
/// ```text
/// delay_n = uniform(0, min(cap, base·2^(n−1)))
/// ```
///
/// drawn uniformly at nanosecond resolution, both ends included. The upper bound is
/// [`ceiling`](Backoff::ceiling); it saturates at `cap`, so huge retry numbers neither
/// overflow nor panic. Full jitter spreads the retries of many clients over the whole
/// interval instead of synchronising them.
///
/// ```
/// use std::time::Duration;
/// use faultline::retry::Backoff;
/// use rand::SeedableRng;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))?;
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
/// assert_eq!(backoff.ceiling(5), Duration::from_secs(1)); // 1.6 s, capped
///
/// let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
/// let delay = backoff.delay(3, &mut rng);
/// assert!(delay <= Duration::from_millis(400));
/// # Ok::<(), faultline::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "BackoffData", into = "BackoffData")]
pub struct Backoff {
    base_nanos: u64,
    cap_nanos: u64,
}

/// The serde form of [`Backoff`]: what [`Backoff::new`] takes, read back through it
/// (so a zero `base` or a `cap` below it is refused with its [`ConfigError`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffData {
    base: Duration,
    cap: Duration,
}

impl From<Backoff> for BackoffData {
    fn from(backoff: Backoff) -> Self {
        BackoffData {
            base: backoff.base(),
            cap: backoff.cap(),
        }
    }
}

impl TryFrom<BackoffData> for Backoff {
    type Error = ConfigError;

    fn try_from(data: BackoffData) -> Result<Self, ConfigError> {
        Backoff::new(data.base, data.cap)
    }
}

impl Default for Backoff {
    /// `base` 100 ms, `cap` 10 s.
    fn default() -> Self {
        Backoff {
            base_nanos: 100_000_000,
            cap_nanos: 10_000_000_000,
        }
    }
}

impl Backoff {
    /// A backoff starting at `base` and doubling up to `cap`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `base` if it is zero, on field `cap` if it is below
    /// `base` or above `u64::MAX` nanoseconds (about 584 years).
    pub fn new(base: Duration, cap: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::new(
                "base",
                "must be greater than zero, got 0ns",
            ));
        }
        if cap < base {
            return Err(ConfigError::new(
                "cap",
                format!("must be at least `base` ({base:?}), got {cap:?}"),
            ));
        }
        let Ok(cap_nanos) = u64::try_from(cap.as_nanos()) else {
            return Err(ConfigError::new(
                "cap",
                format!("must be at most {} nanoseconds, got {cap:?}", u64::MAX),
            ));
        };
        // base <= cap, so base fits too.
        let base_nanos = u64::try_from(base.as_nanos()).unwrap_or(cap_nanos);
        Ok(Backoff {
            base_nanos,
            cap_nanos,
        })
    }

    // Getters.

    /// The ceiling of the first retry.
    pub fn base(&self) -> Duration {
        Duration::from_nanos(self.base_nanos)
    }

    /// The largest ceiling.
    pub fn cap(&self) -> Duration {
        Duration::from_nanos(self.cap_nanos)
    }

    /// The largest delay before retry `retry`: `min(cap, base·2^(retry−1))`, zero for
    /// retry 0. Saturating: any retry number past the cap gives `cap`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        Duration::from_nanos(self.ceiling_nanos(retry))
    }

    fn ceiling_nanos(&self, retry: u32) -> u64 {
        let Some(shift) = retry.checked_sub(1) else {
            return 0;
        };
        if shift >= u64::BITS {
            return self.cap_nanos;
        }
        // base < 2^64 and shift < 64, so the shift fits in a u128.
        let doubled = u128::from(self.base_nanos) << shift;
        u64::try_from(doubled)
            .unwrap_or(u64::MAX)
            .min(self.cap_nanos)
    }

    // Commands.

    /// A delay before retry `retry`, uniform in `[0, ceiling(retry)]` (both ends
    /// included) at nanosecond resolution.
    ///
    /// Retry 0 gives zero without drawing; otherwise this usually draws one `u64`
    /// from `rng` (more only on the rare rejections of the unbiased reduction).
    pub fn delay(&self, retry: u32, rng: &mut (impl rand::Rng + ?Sized)) -> Duration {
        if retry == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(uniform_inclusive(rng, self.ceiling_nanos(retry)))
    }
}

/// How many fresh draws [`uniform_below`] takes before it gives up rejecting. With an
/// honest generator each rejection has probability below 1/2 (usually far below), so
/// running out happens with probability under 2^-64; the limit only guards against a
/// degenerate generator (e.g. one that always returns 0) looping forever.
const LEMIRE_DRAWS_MAX: u32 = 64;

/// Uniform in `[0, max]`, both ends included.
fn uniform_inclusive(rng: &mut (impl rand::Rng + ?Sized), max: u64) -> u64 {
    match max.checked_add(1) {
        Some(n) => uniform_below(rng, n),
        None => rng.next_u64(),
    }
}

/// Uniform in `[0, n)` by Lemire's multiply-and-reject ("Fast random integer generation
/// in an interval", 2019): the high word of `x·n` is the result, and draws whose low
/// word falls below `2^64 mod n` are rejected to remove the bias. `n == 0` gives 0.
fn uniform_below(rng: &mut (impl rand::Rng + ?Sized), n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut product = u128::from(rng.next_u64()) * u128::from(n);
    // Truncation intended: the low word of the product.
    if (product as u64) < n {
        let threshold = n.wrapping_neg() % n; // 2^64 mod n
        let mut draws = 1;
        while (product as u64) < threshold && draws < LEMIRE_DRAWS_MAX {
            product = u128::from(rng.next_u64()) * u128::from(n);
            draws += 1;
        }
    }
    (product >> 64) as u64
}

/// Number of time slots in a [`RetryBudget`]'s window.
const BUDGET_SLOTS: usize = 10;

/// One `ttl / 10` slice of a [`RetryBudget`]'s window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BudgetSlot {
    /// Which slice of time (`now / slot_nanos`) the counts belong to.
    epoch: u64,
    first_attempts: u64,
    retries: u64,
}

/// A retry budget, like tower's: retries may not exceed a percentage of the recent first
/// attempts, plus a small reserve so that a quiet client can still retry.
///
/// Over the window (the last `ttl`), a retry is allowed when
///
/// ```text
/// retries + 1 <= floor(first_attempts · retry_percent / 100) + min_per_sec · ceil(ttl in s)
/// ```
///
/// in exact integer arithmetic. The window is a ring of 10 slots, each `ttl / 10` long,
/// keyed by `now`: a slot covers `[k·ttl/10, (k+1)·ttl/10)`, and the window is the
/// current slot and the 9 before it (so between 0.9·ttl and ttl of history). A `now`
/// earlier than the latest one seen is treated as the latest one seen.
///
/// ```
/// use std::time::Duration;
/// use faultline::retry::RetryBudget;
/// use faultline::clock::Instant;
///
/// // Retries up to 20% of first attempts, no reserve.
/// let mut budget = RetryBudget::new(Duration::from_secs(10), 0, 20)?;
/// let now = Instant::from_millis(0);
/// for _ in 0..10 {
///     budget.deposit(now);
/// }
/// assert!(budget.try_withdraw(now));
/// assert!(budget.try_withdraw(now));
/// assert!(!budget.try_withdraw(now)); // 3 > 20% of 10
/// assert_eq!(budget.exhausted_total(), 1);
/// // Ten seconds later the window has moved on.
/// assert_eq!(budget.first_attempts(Instant::from_millis(10_000)), 0);
/// # Ok::<(), faultline::config::ConfigError>(())
/// ```
///
/// Its serde form is its configuration, what [`RetryBudget::new`] takes and read back
/// through it (so a bad `ttl` or `retry_percent` is refused with its [`ConfigError`]):
/// `{"ttl": {"secs": 10, "nanos": 0}, "min_per_sec": 10, "retry_percent": 20}`. The
/// window's counts are state, not configuration, and are not written: a budget read
/// back starts empty, as a new one does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RetryBudgetData", into = "RetryBudgetData")]
pub struct RetryBudget {
    ttl: Duration,
    min_per_sec: u32,
    retry_percent: u32,
    /// `ttl / 10` in nanoseconds (at least 100 ms, since `ttl >= 1 s`).
    slot_nanos: u64,
    /// `min_per_sec · ceil(ttl in s)`.
    reserve: u64,
    slots: [BudgetSlot; BUDGET_SLOTS],
    /// The latest `now` seen by an input.
    latest: Instant,
    exhausted_total: u64,
}

/// The serde form of [`RetryBudget`]: its configuration, read back through
/// [`RetryBudget::new`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBudgetData {
    ttl: Duration,
    min_per_sec: u32,
    retry_percent: u32,
}

impl From<RetryBudget> for RetryBudgetData {
    fn from(budget: RetryBudget) -> Self {
        RetryBudgetData {
            ttl: budget.ttl,
            min_per_sec: budget.min_per_sec,
            retry_percent: budget.retry_percent,
        }
    }
}

impl TryFrom<RetryBudgetData> for RetryBudget {
    type Error = ConfigError;

    fn try_from(data: RetryBudgetData) -> Result<Self, ConfigError> {
        RetryBudget::new(data.ttl, data.min_per_sec, data.retry_percent)
    }
}

impl Default for RetryBudget {
    /// tower's defaults: `ttl` 10 s, `min_per_sec` 10, `retry_percent` 20.
    fn default() -> Self {
        RetryBudget::with_valid(Duration::from_secs(10), 10, 20)
    }
}

impl RetryBudget {
    /// The shortest accepted `ttl`.
    pub const TTL_MIN: Duration = Duration::from_secs(1);
    /// The longest accepted `ttl`.
    pub const TTL_MAX: Duration = Duration::from_secs(60);
    /// The largest accepted `retry_percent` (ten retries per first attempt).
    pub const RETRY_PERCENT_MAX: u32 = 1000;

    /// A budget over a window of `ttl`, allowing `retry_percent` retries per 100 first
    /// attempts plus a reserve of `min_per_sec` retries per second of `ttl`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `ttl` if it is outside 1 s..=60 s, on field
    /// `retry_percent` if it is above 1000.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_percent: u32) -> Result<Self, ConfigError> {
        if ttl < Self::TTL_MIN || ttl > Self::TTL_MAX {
            return Err(ConfigError::new(
                "ttl",
                format!(
                    "must be between {:?} and {:?}, got {ttl:?}",
                    Self::TTL_MIN,
                    Self::TTL_MAX
                ),
            ));
        }
        if retry_percent > Self::RETRY_PERCENT_MAX {
            return Err(ConfigError::new(
                "retry_percent",
                format!(
                    "must be at most {}, got {retry_percent}",
                    Self::RETRY_PERCENT_MAX
                ),
            ));
        }
        Ok(RetryBudget::with_valid(ttl, min_per_sec, retry_percent))
    }

    /// Builds from validated values (`ttl` in 1 s..=60 s).
    fn with_valid(ttl: Duration, min_per_sec: u32, retry_percent: u32) -> Self {
        // ttl <= 60 s, so its nanoseconds fit in a u64.
        let ttl_nanos = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let ttl_secs = ttl_nanos.div_ceil(1_000_000_000);
        RetryBudget {
            ttl,
            min_per_sec,
            retry_percent,
            slot_nanos: (ttl_nanos / BUDGET_SLOTS as u64).max(1),
            reserve: u64::from(min_per_sec).saturating_mul(ttl_secs),
            slots: [BudgetSlot::default(); BUDGET_SLOTS],
            latest: Instant::ZERO,
            exhausted_total: 0,
        }
    }

    // Getters.

    /// The window's length.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Retries per second of `ttl` always allowed, whatever the traffic.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// Retries allowed per 100 first attempts.
    pub fn retry_percent(&self) -> u32 {
        self.retry_percent
    }

    /// First attempts deposited within the window ending at `now`.
    pub fn first_attempts(&self, now: Instant) -> u64 {
        self.window(now).0
    }

    /// Retries withdrawn within the window ending at `now`.
    pub fn retries(&self, now: Instant) -> u64 {
        self.window(now).1
    }

    /// How many more retries [`try_withdraw`](Self::try_withdraw) would allow at `now`
    /// with no further deposits.
    pub fn remaining(&self, now: Instant) -> u64 {
        let (first_attempts, retries) = self.window(now);
        self.allowed(first_attempts).saturating_sub(retries)
    }

    /// How many withdrawals were refused since creation.
    pub fn exhausted_total(&self) -> u64 {
        self.exhausted_total
    }

    /// `floor(first_attempts · retry_percent / 100) + reserve`, saturating.
    fn allowed(&self, first_attempts: u64) -> u64 {
        let earned = u128::from(first_attempts) * u128::from(self.retry_percent) / 100;
        u64::try_from(earned)
            .unwrap_or(u64::MAX)
            .saturating_add(self.reserve)
    }

    /// The slice of time `now` falls in, with a backwards `now` clamped to the latest.
    fn epoch(&self, now: Instant) -> u64 {
        now.max(self.latest).as_nanos() / self.slot_nanos
    }

    /// (first attempts, retries) summed over the slots inside the window ending at `now`.
    fn window(&self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        let oldest = epoch.saturating_sub(BUDGET_SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|slot| slot.epoch >= oldest && slot.epoch <= epoch)
            .fold((0, 0), |(first_attempts, retries), slot| {
                (
                    first_attempts.saturating_add(slot.first_attempts),
                    retries.saturating_add(slot.retries),
                )
            })
    }

    /// Moves the clock to `now` (never backwards) and returns the current slot, cleared
    /// if it last held an older slice of time.
    fn current_slot(&mut self, now: Instant) -> &mut BudgetSlot {
        let epoch = self.epoch(now);
        self.latest = now.max(self.latest);
        // The modulo is below 10, so the cast is lossless.
        let slot = &mut self.slots[(epoch % BUDGET_SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = BudgetSlot {
                epoch,
                first_attempts: 0,
                retries: 0,
            };
        }
        slot
    }

    // Inputs.

    /// Records a first attempt at `now`.
    pub fn deposit(&mut self, now: Instant) {
        let slot = self.current_slot(now);
        slot.first_attempts = slot.first_attempts.saturating_add(1);
    }

    /// Asks to retry at `now`: records the retry and returns `true` if the budget allows
    /// it; otherwise records nothing but a refusal (see
    /// [`exhausted_total`](Self::exhausted_total)) and returns `false`.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let (first_attempts, retries) = self.window(now);
        if retries.saturating_add(1) > self.allowed(first_attempts) {
            // Still advance the clock, so a later backwards `now` is clamped to this one.
            self.latest = now.max(self.latest);
            self.exhausted_total = self.exhausted_total.saturating_add(1);
            return false;
        }
        let slot = self.current_slot(now);
        slot.retries = slot.retries.saturating_add(1);
        true
    }
}

/// How many times to try a call, and how long to wait between tries.
///
/// Attempts are numbered from 1 (the first try). After attempt `n` fails, the wait
/// before attempt `n + 1` is `backoff.delay(n)`, until `attempts_max` attempts are spent.
///
/// ```
/// use std::time::Duration;
/// use faultline::retry::{Backoff, RetryPolicy};
/// use rand::SeedableRng;
///
/// let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))?;
/// let policy = RetryPolicy::new(3, backoff)?;
/// let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(1);
///
/// let after_first = policy.next_delay(1, &mut rng).unwrap_or_default();
/// assert!(after_first <= Duration::from_millis(50));
/// let after_second = policy.next_delay(2, &mut rng).unwrap_or_default();
/// assert!(after_second <= Duration::from_millis(100));
/// assert_eq!(policy.next_delay(3, &mut rng), None); // three attempts spent
/// # Ok::<(), faultline::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RetryPolicyData", into = "RetryPolicyData")]
pub struct RetryPolicy {
    attempts_max: u32,
    backoff: Backoff,
}

/// The serde form of [`RetryPolicy`], read back through [`RetryPolicy::new`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryPolicyData {
    attempts_max: u32,
    backoff: Backoff,
}

impl From<RetryPolicy> for RetryPolicyData {
    fn from(policy: RetryPolicy) -> Self {
        RetryPolicyData {
            attempts_max: policy.attempts_max,
            backoff: policy.backoff,
        }
    }
}

impl TryFrom<RetryPolicyData> for RetryPolicy {
    type Error = ConfigError;

    fn try_from(data: RetryPolicyData) -> Result<Self, ConfigError> {
        RetryPolicy::new(data.attempts_max, data.backoff)
    }
}

impl RetryPolicy {
    /// The largest accepted `attempts_max`.
    pub const ATTEMPTS_MAX_LIMIT: u32 = 1_000;

    /// At most `attempts_max` attempts in total (the first one included), waiting per
    /// `backoff` between them.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `attempts_max` if it is 0 or above
    /// [`ATTEMPTS_MAX_LIMIT`](Self::ATTEMPTS_MAX_LIMIT).
    pub fn new(attempts_max: u32, backoff: Backoff) -> Result<Self, ConfigError> {
        if attempts_max == 0 || attempts_max > Self::ATTEMPTS_MAX_LIMIT {
            return Err(ConfigError::new(
                "attempts_max",
                format!(
                    "must be between 1 and {}, got {attempts_max}",
                    Self::ATTEMPTS_MAX_LIMIT
                ),
            ));
        }
        Ok(RetryPolicy {
            attempts_max,
            backoff,
        })
    }

    /// A single attempt, never retried (with the default [`Backoff`], never used).
    pub fn none() -> Self {
        RetryPolicy {
            attempts_max: 1,
            backoff: Backoff::default(),
        }
    }

    // Getters.

    /// Attempts in total, the first one included.
    pub fn attempts_max(&self) -> u32 {
        self.attempts_max
    }

    /// The wait between attempts.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    // Commands.

    /// The wait before the next attempt, after attempt `attempt_just_failed` (1-based)
    /// failed: `None` when `attempt_just_failed >= attempts_max` (give up), else
    /// `Some(backoff.delay(attempt_just_failed))`. Attempt 0 (nothing has failed yet)
    /// gives `Some(Duration::ZERO)`. Draws from `rng` only for a `Some` after an
    /// attempt >= 1 (see [`Backoff::delay`]).
    pub fn next_delay(
        &self,
        attempt_just_failed: u32,
        rng: &mut (impl rand::Rng + ?Sized),
    ) -> Option<Duration> {
        if attempt_just_failed >= self.attempts_max {
            return None;
        }
        Some(self.backoff.delay(attempt_just_failed, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// Replays scripted `u64`s, then a constant; counts draws.
    struct ScriptRng {
        script: VecDeque<u64>,
        then: u64,
        draws: u32,
    }

    impl ScriptRng {
        fn new(script: &[u64], then: u64) -> Self {
            ScriptRng {
                script: script.iter().copied().collect(),
                then,
                draws: 0,
            }
        }
    }

    impl rand::TryRng for ScriptRng {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            Ok(self.try_next_u64()? as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            self.draws += 1;
            Ok(self.script.pop_front().unwrap_or(self.then))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            for byte in dst {
                *byte = self.try_next_u64()? as u8;
            }
            Ok(())
        }
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn at_ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    // Lemire helper.

    #[test]
    fn uniform_below_exact_values() {
        // n = 10: result = floor(x · 10 / 2^64).
        let mut rng = ScriptRng::new(&[u64::MAX], 0);
        assert_eq!(uniform_below(&mut rng, 10), 9);
        // x = 2^63 + 1: x · 10 = 5·2^64 + 10, low word 10 >= 10, accepted.
        let mut rng = ScriptRng::new(&[(1 << 63) + 1], 0);
        assert_eq!(uniform_below(&mut rng, 10), 5);
        assert_eq!(rng.draws, 1);
        // x = 2^63: low word 0 < 2^64 mod 10 = 6, rejected; u64::MAX then gives 9.
        let mut rng = ScriptRng::new(&[1 << 63], u64::MAX);
        assert_eq!(uniform_below(&mut rng, 10), 9);
        assert_eq!(rng.draws, 2);
        // A power of two never rejects: 0 maps to 0 in one draw.
        let mut rng = ScriptRng::new(&[0], 0);
        assert_eq!(uniform_below(&mut rng, 8), 0);
        assert_eq!(rng.draws, 1);
        // n = 1 is always 0.
        let mut rng = ScriptRng::new(&[u64::MAX], 0);
        assert_eq!(uniform_below(&mut rng, 1), 0);
        // n = 0 is 0 without drawing.
        let mut rng = ScriptRng::new(&[], 0);
        assert_eq!(uniform_below(&mut rng, 0), 0);
        assert_eq!(rng.draws, 0);
    }

    #[test]
    fn uniform_below_rejects_biased_draws() {
        // n = 3: 2^64 mod 3 = 1, so x = 0 (low word 0 < 1) is rejected and redrawn.
        let mut rng = ScriptRng::new(&[0, u64::MAX], 0);
        assert_eq!(uniform_below(&mut rng, 3), 2);
        assert_eq!(rng.draws, 2);
        // x = 1: low word 3 >= 1, accepted, high word 0.
        let mut rng = ScriptRng::new(&[1], 0);
        assert_eq!(uniform_below(&mut rng, 3), 0);
        assert_eq!(rng.draws, 1);
    }

    #[test]
    fn uniform_below_gives_up_on_a_stuck_generator() {
        let mut rng = ScriptRng::new(&[], 0);
        assert_eq!(uniform_below(&mut rng, 3), 0);
        assert_eq!(rng.draws, LEMIRE_DRAWS_MAX);
    }

    #[test]
    fn uniform_inclusive_full_range_is_one_draw() {
        let mut rng = ScriptRng::new(&[12_345], 0);
        assert_eq!(uniform_inclusive(&mut rng, u64::MAX), 12_345);
        assert_eq!(rng.draws, 1);
        let mut rng = ScriptRng::new(&[u64::MAX], 0);
        assert_eq!(uniform_inclusive(&mut rng, 0), 0);
    }

    #[test]
    fn uniform_below_is_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[uniform_below(&mut rng, 6) as usize] += 1;
        }
        for count in counts {
            assert!((9_500..=10_500).contains(&count), "{counts:?}");
        }
    }

    // Backoff.

    #[test]
    fn backoff_validation() {
        let err = Backoff::new(Duration::ZERO, ms(10)).unwrap_err();
        assert_eq!(err.field, "base");
        let err = Backoff::new(ms(10), ms(9)).unwrap_err();
        assert_eq!(err.field, "cap");
        let err = Backoff::new(ms(10), Duration::MAX).unwrap_err();
        assert_eq!(err.field, "cap");
        let err = Backoff::new(
            ms(10),
            Duration::from_nanos(u64::MAX) + Duration::from_nanos(1),
        )
        .unwrap_err();
        assert_eq!(err.field, "cap");
        // Boundaries accepted.
        let b = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1)).unwrap();
        assert_eq!(b.base(), Duration::from_nanos(1));
        assert_eq!(b.cap(), Duration::from_nanos(1));
        let b = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(u64::MAX)).unwrap();
        assert_eq!(b.cap(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn backoff_default() {
        let b = Backoff::default();
        assert_eq!(b.base(), ms(100));
        assert_eq!(b.cap(), Duration::from_secs(10));
        assert_eq!(Backoff::new(b.base(), b.cap()), Ok(b));
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::new(ms(100), ms(1_000)).unwrap();
        assert_eq!(b.ceiling(0), Duration::ZERO);
        assert_eq!(b.ceiling(1), ms(100));
        assert_eq!(b.ceiling(2), ms(200));
        assert_eq!(b.ceiling(3), ms(400));
        assert_eq!(b.ceiling(4), ms(800));
        assert_eq!(b.ceiling(5), ms(1_000));
        assert_eq!(b.ceiling(6), ms(1_000));
        assert_eq!(b.ceiling(64), ms(1_000));
        assert_eq!(b.ceiling(65), ms(1_000));
        assert_eq!(b.ceiling(u32::MAX), ms(1_000));
    }

    #[test]
    fn ceiling_saturates_without_overflow() {
        let b = Backoff::new(Duration::from_nanos(3), Duration::from_nanos(u64::MAX)).unwrap();
        assert_eq!(b.ceiling(1), Duration::from_nanos(3));
        assert_eq!(b.ceiling(63), Duration::from_nanos(3 << 62));
        // 3·2^63 overflows a u64: saturates at the cap.
        assert_eq!(b.ceiling(64), Duration::from_nanos(u64::MAX));
        assert_eq!(b.ceiling(65), Duration::from_nanos(u64::MAX));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_nanos(u64::MAX));
        let b = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(u64::MAX)).unwrap();
        assert_eq!(b.ceiling(64), Duration::from_nanos(1 << 63));
        assert_eq!(b.ceiling(65), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn delay_exact_values() {
        let b = Backoff::new(ms(1), ms(1_000)).unwrap();
        // Ceiling at retry 1 is 1_000_000 ns: 1_000_001 outcomes.
        let mut rng = ScriptRng::new(&[u64::MAX], 0);
        assert_eq!(b.delay(1, &mut rng), ms(1)); // top end included
        let mut rng = ScriptRng::new(&[1 << 63], 0);
        assert_eq!(b.delay(1, &mut rng), Duration::from_nanos(500_000));
        let mut rng = ScriptRng::new(&[1 << 63], 0);
        // retry 3: ceiling 4 ms, 4_000_001 outcomes.
        assert_eq!(b.delay(3, &mut rng), Duration::from_nanos(2_000_000));
        let mut rng = ScriptRng::new(&[u64::MAX], 0);
        assert_eq!(b.delay(u32::MAX, &mut rng), ms(1_000));
    }

    #[test]
    fn delay_zero_retry_draws_nothing() {
        let b = Backoff::new(ms(1), ms(10)).unwrap();
        let mut rng = ScriptRng::new(&[], u64::MAX);
        assert_eq!(b.delay(0, &mut rng), Duration::ZERO);
        assert_eq!(rng.draws, 0);
    }

    #[test]
    fn delay_hits_both_ends_of_a_tiny_range() {
        let b = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen = [false; 2];
        for _ in 0..200 {
            let d = b.delay(7, &mut rng);
            assert!(d <= Duration::from_nanos(1));
            seen[d.as_nanos() as usize] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn delay_stays_under_ceiling_with_mean_near_half() {
        let b = Backoff::new(ms(10), ms(300)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for retry in 1..=8 {
            let ceiling = b.ceiling(retry);
            let mut sum = Duration::ZERO;
            for _ in 0..4_000 {
                let d = b.delay(retry, &mut rng);
                assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
                sum += d;
            }
            let mean = sum / 4_000;
            let half = ceiling / 2;
            let tolerance = ceiling / 20; // 5% of the ceiling
            assert!(
                mean.abs_diff(half) <= tolerance,
                "retry {retry}: mean {mean:?}, expected about {half:?}"
            );
        }
    }

    #[test]
    fn delay_is_deterministic_for_a_seed() {
        let b = Backoff::new(ms(10), ms(300)).unwrap();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..=10).map(|n| b.delay(n, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn delay_accepts_a_dyn_rng() {
        let b = Backoff::new(ms(10), ms(300)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let rng: &mut dyn rand::Rng = &mut rng;
        assert!(b.delay(2, rng) <= ms(20));
    }

    // RetryBudget.

    #[test]
    fn budget_validation() {
        let err = RetryBudget::new(Duration::from_nanos(999_999_999), 0, 20).unwrap_err();
        assert_eq!(err.field, "ttl");
        let err = RetryBudget::new(Duration::ZERO, 0, 20).unwrap_err();
        assert_eq!(err.field, "ttl");
        let err =
            RetryBudget::new(Duration::from_secs(60) + Duration::from_nanos(1), 0, 20).unwrap_err();
        assert_eq!(err.field, "ttl");
        let err = RetryBudget::new(Duration::from_secs(10), 0, 1_001).unwrap_err();
        assert_eq!(err.field, "retry_percent");
        assert!(RetryBudget::new(Duration::from_secs(1), 0, 0).is_ok());
        assert!(RetryBudget::new(Duration::from_secs(60), u32::MAX, 1_000).is_ok());
    }

    #[test]
    fn budget_getters_and_default() {
        let budget = RetryBudget::new(Duration::from_secs(5), 3, 25).unwrap();
        assert_eq!(budget.ttl(), Duration::from_secs(5));
        assert_eq!(budget.min_per_sec(), 3);
        assert_eq!(budget.retry_percent(), 25);
        assert_eq!(budget.remaining(Instant::ZERO), 15);
        assert_eq!(budget.exhausted_total(), 0);
        let default = RetryBudget::default();
        assert_eq!(
            default,
            RetryBudget::new(Duration::from_secs(10), 10, 20).unwrap()
        );
        assert_eq!(default.remaining(Instant::ZERO), 100);
    }

    #[test]
    fn budget_percent_of_first_attempts() {
        let mut budget = RetryBudget::new(Duration::from_secs(10), 0, 20).unwrap();
        let now = at_ms(500);
        assert_eq!(budget.remaining(now), 0);
        assert!(!budget.try_withdraw(now));
        for _ in 0..10 {
            budget.deposit(now);
        }
        assert_eq!(budget.first_attempts(now), 10);
        assert_eq!(budget.remaining(now), 2);
        assert!(budget.try_withdraw(now));
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));
        assert_eq!(budget.retries(now), 2);
        assert_eq!(budget.remaining(now), 0);
        assert_eq!(budget.exhausted_total(), 3);
        // Five more first attempts earn one more retry.
        for _ in 0..5 {
            budget.deposit(now);
        }
        assert_eq!(budget.remaining(now), 1);
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));
        assert_eq!(budget.retries(now), 3);
        assert_eq!(budget.exhausted_total(), 4);
    }

    #[test]
    fn budget_floors_the_earned_retries() {
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 50).unwrap();
        for _ in 0..3 {
            budget.deposit(Instant::ZERO);
        }
        // floor(3 · 50 / 100) = 1.
        assert_eq!(budget.remaining(Instant::ZERO), 1);
        assert!(budget.try_withdraw(Instant::ZERO));
        assert!(!budget.try_withdraw(Instant::ZERO));
        // floor(1 · 99 / 100) = 0.
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 99).unwrap();
        budget.deposit(Instant::ZERO);
        assert!(!budget.try_withdraw(Instant::ZERO));
    }

    #[test]
    fn budget_reserve_uses_ttl_seconds_rounded_up() {
        let budget = RetryBudget::new(ms(1_500), 10, 0).unwrap();
        assert_eq!(budget.remaining(Instant::ZERO), 20);
        let budget = RetryBudget::new(Duration::from_secs(1), 10, 0).unwrap();
        assert_eq!(budget.remaining(Instant::ZERO), 10);
        let budget =
            RetryBudget::new(Duration::from_secs(1) + Duration::from_nanos(1), 10, 0).unwrap();
        assert_eq!(budget.remaining(Instant::ZERO), 20);
        let budget = RetryBudget::new(Duration::from_secs(60), u32::MAX, 0).unwrap();
        assert_eq!(budget.remaining(Instant::ZERO), u64::from(u32::MAX) * 60);
    }

    #[test]
    fn budget_reserve_allows_retries_without_traffic() {
        let mut budget = RetryBudget::new(Duration::from_secs(2), 1, 0).unwrap();
        assert!(budget.try_withdraw(at_ms(0)));
        assert!(budget.try_withdraw(at_ms(10)));
        assert!(!budget.try_withdraw(at_ms(20)));
        assert_eq!(budget.exhausted_total(), 1);
    }

    #[test]
    fn budget_reserve_and_percent_add_up() {
        let mut budget = RetryBudget::new(Duration::from_secs(1), 2, 1_000).unwrap();
        budget.deposit(Instant::ZERO);
        // 1 · 1000 / 100 + 2 · 1 = 12.
        assert_eq!(budget.remaining(Instant::ZERO), 12);
        for _ in 0..12 {
            assert!(budget.try_withdraw(Instant::ZERO));
        }
        assert!(!budget.try_withdraw(Instant::ZERO));
    }

    #[test]
    fn budget_window_slides_slot_by_slot() {
        // ttl 1 s: ten slots of 100 ms.
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 100).unwrap();
        budget.deposit(at_ms(0)); // slot 0
        budget.deposit(at_ms(250)); // slot 2
        assert!(budget.try_withdraw(at_ms(250)));
        assert_eq!(budget.first_attempts(at_ms(999)), 2);
        // At 1000 ms slot 0 leaves the window.
        assert_eq!(budget.first_attempts(Instant::from_nanos(999_999_999)), 2);
        assert_eq!(budget.first_attempts(at_ms(1_000)), 1);
        assert_eq!(budget.retries(at_ms(1_000)), 1);
        assert_eq!(budget.remaining(at_ms(1_000)), 0);
        // At 1200 ms slot 2 leaves too.
        assert_eq!(budget.first_attempts(at_ms(1_199)), 1);
        assert_eq!(budget.first_attempts(at_ms(1_200)), 0);
        assert_eq!(budget.retries(at_ms(1_200)), 0);
    }

    #[test]
    fn budget_reuses_ring_slots() {
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 100).unwrap();
        budget.deposit(at_ms(50)); // epoch 0, slot 0
        budget.deposit(at_ms(1_050)); // epoch 10, slot 0 again: the old count is cleared
        assert_eq!(budget.first_attempts(at_ms(1_050)), 1);
        for t in (1_100..2_000).step_by(100) {
            budget.deposit(at_ms(t));
        }
        assert_eq!(budget.first_attempts(at_ms(1_999)), 10);
        assert_eq!(budget.first_attempts(at_ms(2_000)), 9);
    }

    #[test]
    fn budget_handles_big_jumps() {
        let mut budget = RetryBudget::new(Duration::from_secs(10), 0, 100).unwrap();
        for _ in 0..5 {
            budget.deposit(at_ms(0));
        }
        let far = Instant::from_nanos(u64::MAX);
        assert_eq!(budget.first_attempts(far), 0);
        assert!(!budget.try_withdraw(far));
        budget.deposit(far);
        assert_eq!(budget.first_attempts(far), 1);
        assert!(budget.try_withdraw(far));
        assert_eq!(budget.retries(far), 1);
    }

    #[test]
    fn budget_treats_backwards_time_as_latest() {
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 100).unwrap();
        budget.deposit(at_ms(5_000));
        budget.deposit(at_ms(1_000)); // counted at 5 s
        assert_eq!(budget.first_attempts(at_ms(5_000)), 2);
        assert_eq!(budget.first_attempts(at_ms(0)), 2);
        assert_eq!(budget.first_attempts(at_ms(5_999)), 2);
        assert_eq!(budget.first_attempts(at_ms(6_000)), 0);
        assert!(budget.try_withdraw(at_ms(10)));
        assert_eq!(budget.retries(at_ms(5_000)), 1);
    }

    #[test]
    fn budget_refusal_still_advances_the_clock() {
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 100).unwrap();
        budget.deposit(at_ms(0));
        assert!(!budget.try_withdraw(at_ms(3_000))); // deposit expired by then
        assert_eq!(budget.retries(at_ms(3_000)), 0);
        // A now before 3 s counts as 3 s: the old deposit stays expired.
        assert!(!budget.try_withdraw(at_ms(0)));
        assert_eq!(budget.first_attempts(at_ms(0)), 0);
        assert_eq!(budget.exhausted_total(), 2);
    }

    #[test]
    fn budget_zero_everything_refuses_all() {
        let mut budget = RetryBudget::new(Duration::from_secs(1), 0, 0).unwrap();
        for _ in 0..100 {
            budget.deposit(at_ms(1));
        }
        assert!(!budget.try_withdraw(at_ms(1)));
        assert_eq!(budget.remaining(at_ms(1)), 0);
        assert_eq!(budget.retries(at_ms(1)), 0);
    }

    // RetryPolicy.

    #[test]
    fn policy_validation() {
        let backoff = Backoff::default();
        let err = RetryPolicy::new(0, backoff).unwrap_err();
        assert_eq!(err.field, "attempts_max");
        let limit = RetryPolicy::ATTEMPTS_MAX_LIMIT;
        let err = RetryPolicy::new(limit + 1, backoff).unwrap_err();
        assert_eq!(err.field, "attempts_max");
        assert_eq!(RetryPolicy::new(1, backoff).unwrap().attempts_max(), 1);
        assert_eq!(RetryPolicy::new(100, backoff).unwrap().attempts_max(), 100);
        assert_eq!(
            RetryPolicy::new(limit, backoff).unwrap().attempts_max(),
            limit
        );
        assert_eq!(RetryPolicy::new(100, backoff).unwrap().backoff(), backoff);
    }

    #[test]
    fn policy_next_delay_follows_attempts() {
        let backoff = Backoff::new(ms(100), ms(1_000)).unwrap();
        let policy = RetryPolicy::new(4, backoff).unwrap();
        // u64::MAX draws the top of each range: the delay equals the ceiling.
        let mut rng = ScriptRng::new(&[], u64::MAX);
        assert_eq!(policy.next_delay(1, &mut rng), Some(ms(100)));
        assert_eq!(policy.next_delay(2, &mut rng), Some(ms(200)));
        assert_eq!(policy.next_delay(3, &mut rng), Some(ms(400)));
        assert_eq!(policy.next_delay(4, &mut rng), None);
        assert_eq!(policy.next_delay(5, &mut rng), None);
        assert_eq!(policy.next_delay(u32::MAX, &mut rng), None);
        assert_eq!(rng.draws, 3);
        // Attempt 0 (nothing failed yet) waits zero.
        assert_eq!(policy.next_delay(0, &mut rng), Some(Duration::ZERO));
        assert_eq!(rng.draws, 3);
    }

    #[test]
    fn policy_none_never_retries() {
        let policy = RetryPolicy::none();
        assert_eq!(policy.attempts_max(), 1);
        let mut rng = ScriptRng::new(&[], 0);
        assert_eq!(policy.next_delay(1, &mut rng), None);
        assert_eq!(rng.draws, 0);
    }
}
