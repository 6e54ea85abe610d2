//! The sans-IO circuit breaker core: [`CircuitBreaker`].
//!
//! Time is passed in (`now: Instant`); the core never reads a clock, spawns nothing and
//! does no I/O, so the same code runs in a tokio service and in the simulator.
//!
//! Call order, per call: [`try_acquire`](CircuitBreaker::try_acquire) gives a
//! [`Permit`] or a [`Rejected`] carrying `retry_after`; make the call; then hand the
//! permit back with [`on_result`](CircuitBreaker::on_result) (success, failure or
//! ignored, timed from the permit) or [`release`](CircuitBreaker::release) (the call was
//! cancelled). Between calls, drain [`poll_event`](CircuitBreaker::poll_event) for
//! transitions, read [`metrics`](CircuitBreaker::metrics), and, if you want time-driven
//! transitions without traffic, call [`handle_timeout`](CircuitBreaker::handle_timeout)
//! at [`poll_timeout`](CircuitBreaker::poll_timeout).
//!
//! ```
//! use faultline::breaker::{BreakerConfig, CallOutcome, CircuitBreaker, State};
//! use faultline::clock::Instant;
//! use std::time::Duration;
//!
//! let config = BreakerConfig::builder()
//!     .count_window(10)
//!     .minimum_calls(4)
//!     .failure_rate_threshold_percent(50)
//!     .wait_in_open(Duration::from_secs(5))
//!     .build()?;
//! let mut breaker = CircuitBreaker::new(config);
//! let t0 = Instant::ZERO;
//! for _ in 0..4 {
//!     let permit = breaker.try_acquire(t0).expect("closed");
//!     breaker.on_result(permit, t0, CallOutcome::Failure);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let rejected = breaker.try_acquire(t0 + Duration::from_secs(1)).unwrap_err();
//! assert_eq!(rejected.retry_after, Duration::from_secs(4));
//! # Ok::<(), faultline::config::ConfigError>(())
//! ```

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::splitmix::SplitMix64;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The breaker's states (Resilience4j's set).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are recorded in the sliding window.
    Closed,
    /// Calls are rejected until the wait in open has passed.
    Open,
    /// A limited number of probe calls decide between Closed and Open.
    HalfOpen,
    /// Calls always flow and nothing is recorded (manual).
    Disabled,
    /// Calls are always rejected (manual).
    ForcedOpen,
    /// Calls always flow; outcomes are recorded but never trip the breaker (manual).
    MetricsOnly,
}

impl State {
    /// Stable lower-case name (`closed`, `open`, `half_open`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
            State::MetricsOnly => "metrics_only",
        }
    }
    /// True in the states where no call may reach the API.
    pub const fn rejects_all(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a finished call counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says the API is unhealthy.
    Failure,
    /// The call failed in a way that says nothing about the API (a bad request, say):
    /// it changes no count.
    Ignored,
}

/// The sliding window over which failure and slow-call rates are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last `size` calls.
    Count {
        /// Number of calls.
        size: u32,
    },
    /// The calls of the last `size_secs` seconds (one-second buckets).
    Time {
        /// Number of seconds.
        size_secs: u32,
    },
}

/// An exact ratio `num / den`, such as the growth factor `3/2` of an exponential wait in
/// open: a run steered by it is the same on every machine (Resilience4j takes a `double`).
/// It reads and writes as `2` or `"3/2"`; [`BreakerConfigBuilder::build`] refuses a
/// denominator of 0 or above 1,000 and a ratio below 1.
///
/// ```
/// use faultline::breaker::circuit::Ratio;
///
/// let r: Ratio = "3/2".parse()?;
/// assert_eq!((r.num(), r.den()), (3, 2));
/// assert_eq!(r.to_string(), "3/2");
/// assert_eq!(Ratio::from(2).to_string(), "2");
/// assert!("3/0".parse::<Ratio>().is_err());
/// # Ok::<(), faultline::config::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ratio {
    num: u32,
    den: u32,
}

impl Ratio {
    /// Largest denominator [`BreakerConfigBuilder::build`] accepts.
    pub const DEN_MAX: u32 = 1_000;

    /// `num / den` (checked when the configuration is built).
    pub const fn new(num: u32, den: u32) -> Ratio {
        Ratio { num, den }
    }
    /// The numerator.
    pub const fn num(self) -> u32 {
        self.num
    }
    /// The denominator.
    pub const fn den(self) -> u32 {
        self.den
    }
    /// Why this ratio cannot be a growth factor, if it cannot.
    fn invalid(self) -> Option<String> {
        if self.den == 0 || self.den > Self::DEN_MAX {
            Some(format!(
                "must have a denominator of 1 to {}, got {self}",
                Self::DEN_MAX
            ))
        } else if self.num < self.den {
            Some(format!("must be at least 1, got {self}"))
        } else {
            None
        }
    }
}

impl From<u32> for Ratio {
    fn from(n: u32) -> Ratio {
        Ratio { num: n, den: 1 }
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

impl std::str::FromStr for Ratio {
    type Err = ConfigError;

    /// `"2"` or `"3/2"`; a ratio that cannot be a growth factor is refused too.
    fn from_str(text: &str) -> Result<Ratio, ConfigError> {
        let ratio = Ratio::parse(text)?;
        match ratio.invalid() {
            Some(why) => Err(ConfigError::new("multiplier", why)),
            None => Ok(ratio),
        }
    }
}

impl Ratio {
    /// `"2"` or `"3/2"`, any numbers (the builder checks them, naming its field).
    fn parse(text: &str) -> Result<Ratio, ConfigError> {
        let bad = || {
            ConfigError::new(
                "multiplier",
                format!(
                    "must be a whole number or a ratio such as \"3/2\", got {:?}",
                    text.chars().take(40).collect::<String>()
                ),
            )
        };
        let (num, den) = match text.trim().split_once('/') {
            Some((n, d)) => (
                n.trim().parse().map_err(|_| bad())?,
                d.trim().parse().map_err(|_| bad())?,
            ),
            None => (text.trim().parse().map_err(|_| bad())?, 1),
        };
        Ok(Ratio { num, den })
    }
}

impl serde::Serialize for Ratio {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.den == 1 {
            s.serialize_u32(self.num)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ratio, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            Whole(u32),
            Text(String),
        }
        match Form::deserialize(d)? {
            Form::Whole(n) => Ok(Ratio::from(n)),
            Form::Text(t) => Ratio::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// How long the breaker stays open before probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitInOpen {
    /// Always the same wait.
    Fixed(Duration),
    /// `initial * multiplier^(k-1)` for the k-th opening in a row (reset when the breaker
    /// closes), capped at `max`, then shortened by a random share of up to
    /// `jitter_percent` percent drawn from the breaker's RNG: the wait never exceeds
    /// the exponential (faultline's rule).
    Exponential {
        /// Wait after the first opening.
        initial: Duration,
        /// Growth factor per consecutive opening (at least 1), applied step by step and
        /// rounded down to the nanosecond, as Resilience4j does in milliseconds.
        multiplier: Ratio,
        /// Longest wait.
        max: Duration,
        /// Largest share of the wait removed at random (0 to 99).
        jitter_percent: u32,
    },
    /// Resilience4j's `ofExponentialRandomBackoff(initial, multiplier, factor, max)`:
    /// the exponential `initial * multiplier^(k-1)` moved at random by up to
    /// `randomization_percent` percent either way, then capped at `max` (and never
    /// below 1 ms).
    Randomized {
        /// Wait after the first opening, before randomization.
        initial: Duration,
        /// Growth factor per consecutive opening (at least 1).
        multiplier: Ratio,
        /// Longest wait.
        max: Duration,
        /// Largest share of the wait added or removed at random (0 to 99).
        randomization_percent: u32,
    },
}

/// Nanoseconds in u128 back to a Duration (saturating; every value here fits).
fn duration_of_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // Below 10^9, so it fits.
    let sub = (nanos % 1_000_000_000) as u32;
    Duration::new(secs, sub)
}

/// `initial` grown by `multiplier` for the `k`-th opening (1-based), step by step,
/// rounded down at each step; growing stops at `stop` nanoseconds.
fn grown(initial: Duration, multiplier: Ratio, k: u32, stop: u128) -> u128 {
    let mut nanos = initial.as_nanos();
    if multiplier.num <= multiplier.den {
        return nanos.min(stop);
    }
    // A validated wait is at least 1 ms and the denominator at most 1,000, so each
    // step grows the wait by at least 1 us: the loop ends, in about 51,000 steps at
    // worst (1 ms to Duration::MAX at a factor of 1.001).
    for _ in 1..k {
        if nanos >= stop {
            break;
        }
        nanos = nanos * u128::from(multiplier.num) / u128::from(multiplier.den);
    }
    nanos.min(stop)
}

impl WaitInOpen {
    /// The shortest wait this policy can produce (used by load bounds).
    pub fn min_wait(&self) -> Duration {
        match *self {
            WaitInOpen::Fixed(d) => d,
            WaitInOpen::Exponential {
                initial,
                jitter_percent: share,
                ..
            }
            | WaitInOpen::Randomized {
                initial,
                randomization_percent: share,
                ..
            } => {
                // In u128 nanoseconds: `initial * jitter` overflows a Duration for long
                // waits (Duration::MAX times anything above 1).
                let nanos = initial.as_nanos();
                let kept = nanos - nanos * u128::from(share.min(100)) / 100;
                let floor = if matches!(self, WaitInOpen::Randomized { .. }) {
                    1_000_000
                } else {
                    0
                };
                duration_of_nanos(kept.max(floor).min(nanos))
            }
        }
    }
    /// The longest wait for the `k`-th opening in a row (1-based): before jitter for
    /// [`Exponential`](WaitInOpen::Exponential), after the largest randomization for
    /// [`Randomized`](WaitInOpen::Randomized); never above `max`.
    pub fn ceiling(&self, k: u32) -> Duration {
        match *self {
            WaitInOpen::Fixed(d) => d,
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                ..
            } => duration_of_nanos(grown(initial, multiplier, k, max.as_nanos())),
            WaitInOpen::Randomized {
                initial,
                multiplier,
                max,
                randomization_percent,
            } => {
                let base = self.randomized_base(initial, multiplier, max, k);
                let spread = base + base * u128::from(randomization_percent) / 100;
                duration_of_nanos(spread.min(max.as_nanos()))
            }
        }
    }

    /// The exponential of a randomized wait before randomization: grown until any
    /// randomization of it would be capped at `max` anyway.
    fn randomized_base(&self, initial: Duration, multiplier: Ratio, max: Duration, k: u32) -> u128 {
        // With at most 99 % taken off, a base of 100 × max stays at or above max.
        grown(initial, multiplier, k, max.as_nanos().saturating_mul(100))
    }

    /// The wait for the `k`-th opening in a row, drawing jitter from `rng`.
    fn draw(&self, k: u32, rng: &mut dyn rand::Rng) -> Duration {
        match *self {
            WaitInOpen::Fixed(d) => d,
            WaitInOpen::Exponential { jitter_percent, .. } => {
                let ceiling = self.ceiling(k);
                let span = crate::clock::saturating_nanos(ceiling)
                    .saturating_mul(jitter_percent as u64)
                    / 100;
                let cut = if span == 0 {
                    0
                } else {
                    rng.next_u64() % (span + 1)
                };
                ceiling - Duration::from_nanos(cut)
            }
            WaitInOpen::Randomized {
                initial,
                multiplier,
                max,
                randomization_percent,
            } => {
                let base = self.randomized_base(initial, multiplier, max, k);
                let delta = base * u128::from(randomization_percent) / 100;
                let offset = if delta == 0 {
                    0
                } else {
                    // 2·delta + 1 < 2^127: the modulo is exact enough (u64 draws).
                    let draw = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
                    draw % (2 * delta + 1)
                };
                let wait = (base - delta + offset).max(1_000_000);
                duration_of_nanos(wait.min(max.as_nanos()))
            }
        }
    }
}

/// A validated breaker configuration. Build it with [`BreakerConfig::builder`]; the
/// defaults are Resilience4j's.
///
/// It reads from and writes to a file with serde, as an object keyed by the builder's
/// method names; reading goes through the builder, so a bad value is refused with its
/// [`ConfigError`], an unknown key is refused, and a key left out keeps the default
/// (the rules: [`config`](crate::config#reading-a-configuration-from-a-file)). A window
/// is `count_window` or `time_window`; a wait in open is `wait_in_open` or
/// `wait_in_open_exponential` (`{"initial", "multiplier", "max", "jitter_percent"}`);
/// durations are `{"secs", "nanos"}`.
///
/// ```
/// use faultline::breaker::BreakerConfig;
/// use std::time::Duration;
///
/// let config: BreakerConfig = serde_json::from_str(
///     r#"{
///         "count_window": 20,
///         "minimum_calls": 10,
///         "failure_rate_threshold_percent": 40,
///         "wait_in_open_exponential": {
///             "initial": {"secs": 1, "nanos": 0},
///             "multiplier": 2,
///             "max": {"secs": 30, "nanos": 0},
///             "jitter_percent": 10
///         }
///     }"#,
/// )?;
/// let built = BreakerConfig::builder()
///     .count_window(20)
///     .minimum_calls(10)
///     .failure_rate_threshold_percent(40)
///     .wait_in_open_exponential(Duration::from_secs(1), 2, Duration::from_secs(30), 10)
///     .build()?;
/// assert_eq!(config, built);
/// // Written back in full, every knob from its getter; it reads back equal.
/// let json = serde_json::to_string(&config)?;
/// assert_eq!(serde_json::from_str::<BreakerConfig>(&json)?, config);
///
/// let err = serde_json::from_str::<BreakerConfig>(r#"{"failure_rate_threshold_percent": 0}"#)
///     .unwrap_err();
/// assert!(err.to_string().starts_with(
///     "invalid configuration: `failure_rate_threshold_percent` must be 1 to 100 percent, got 0"
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    window: SlidingWindow,
    minimum_calls: u32,
    failure_rate_threshold_permille: u32,
    slow_call_rate_threshold_permille: u32,
    slow_call_duration: Duration,
    wait_in_open: WaitInOpen,
    half_open_calls_permitted: u32,
    half_open_wait_max: Duration,
    after_half_open_wait_max: State,
    automatic_transition: bool,
    initial_state: State,
    events_max: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: SlidingWindow::Count { size: 100 },
            minimum_calls: 100,
            failure_rate_threshold_permille: 500,
            slow_call_rate_threshold_permille: 1000,
            slow_call_duration: Duration::from_secs(60),
            wait_in_open: WaitInOpen::Fixed(Duration::from_secs(60)),
            half_open_calls_permitted: 10,
            half_open_wait_max: Duration::ZERO,
            after_half_open_wait_max: State::Open,
            automatic_transition: false,
            initial_state: State::Closed,
            events_max: 1024,
        }
    }
}

impl BreakerConfig {
    /// A builder holding Resilience4j's defaults: count window of 100 calls, minimum 100
    /// calls, failure rate 50 %, slow-call rate 100 % with slow meaning longer than 60 s,
    /// 60 s in open, 10 calls in half-open, no limit on the wait in half-open, starting
    /// Closed.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: BreakerConfig::default(),
            failure_rate: Threshold::Permille(500),
            slow_call_rate: Threshold::Permille(1000),
        }
    }
    /// A builder holding this configuration, to derive another from it.
    ///
    /// ```
    /// use faultline::breaker::BreakerConfig;
    ///
    /// let base = BreakerConfig::builder().minimum_calls(20).build()?;
    /// let eager = base.to_builder().failure_rate_threshold_permille(250).build()?;
    /// assert_eq!(eager.minimum_calls(), 20);
    /// assert_eq!(eager.failure_rate_threshold_permille(), 250);
    /// # Ok::<(), faultline::config::ConfigError>(())
    /// ```
    pub fn to_builder(&self) -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: *self,
            failure_rate: Threshold::Permille(self.failure_rate_threshold_permille),
            slow_call_rate: Threshold::Permille(self.slow_call_rate_threshold_permille),
        }
    }
    /// The sliding window.
    pub fn window(&self) -> SlidingWindow {
        self.window
    }
    /// Calls needed in the window before rates are computed (for a count window, at
    /// most its size).
    pub fn minimum_calls(&self) -> u32 {
        match self.window {
            SlidingWindow::Count { size } => self.minimum_calls.min(size),
            SlidingWindow::Time { .. } => self.minimum_calls,
        }
    }
    /// Failure rate (permille: 500 is 50 %) at or above which the breaker opens.
    pub fn failure_rate_threshold_permille(&self) -> u32 {
        self.failure_rate_threshold_permille
    }
    /// Slow-call rate (permille) at or above which the breaker opens.
    pub fn slow_call_rate_threshold_permille(&self) -> u32 {
        self.slow_call_rate_threshold_permille
    }
    /// Calls lasting longer than this are slow.
    pub fn slow_call_duration(&self) -> Duration {
        self.slow_call_duration
    }
    /// The wait-in-open policy.
    pub fn wait_in_open(&self) -> WaitInOpen {
        self.wait_in_open
    }
    /// Probe permits per half-open episode: each probe takes one; a probe released or
    /// ignored gives its permit back (Resilience4j's counter), a counted one does not.
    pub fn half_open_calls_permitted(&self) -> u32 {
        self.half_open_calls_permitted
    }
    /// Counted probe outcomes after which half-open decides:
    /// `min(minimum_calls, half_open_calls_permitted)`.
    pub fn half_open_calls_needed(&self) -> u32 {
        self.minimum_calls().min(self.half_open_calls_permitted)
    }
    /// Longest half-open episode before it ends without a verdict; zero means no limit.
    pub fn half_open_wait_max(&self) -> Duration {
        self.half_open_wait_max
    }
    /// The state a half-open episode goes to when it reaches
    /// [`half_open_wait_max`](Self::half_open_wait_max): Open or Closed.
    pub fn after_half_open_wait_max(&self) -> State {
        self.after_half_open_wait_max
    }
    /// Whether Open moves to HalfOpen by itself (through `handle_timeout`) rather than
    /// on the next call.
    pub fn automatic_transition(&self) -> bool {
        self.automatic_transition
    }
    /// The state a new breaker starts in.
    pub fn initial_state(&self) -> State {
        self.initial_state
    }
    /// Most undrained events kept (older ones are dropped and counted).
    pub fn events_max(&self) -> usize {
        self.events_max
    }
}

/// A rate threshold as the builder was given it (so an error names that method).
#[derive(Clone, Copy, Debug)]
enum Threshold {
    Percent(u32),
    Permille(u32),
}

impl Threshold {
    /// The threshold in permille, or the error naming the method it came from.
    fn permille(self, fields: [&'static str; 2]) -> Result<u32, ConfigError> {
        match self {
            Threshold::Percent(p) if p == 0 || p > 100 => Err(ConfigError::new(
                fields[0],
                format!("must be 1 to 100 percent, got {p}"),
            )),
            Threshold::Percent(p) => Ok(p * 10),
            Threshold::Permille(p) if p == 0 || p > 1000 => Err(ConfigError::new(
                fields[1],
                format!("must be 1 to 1000 permille, got {p}"),
            )),
            Threshold::Permille(p) => Ok(p),
        }
    }
}

/// Builder for [`BreakerConfig`]; [`build`](BreakerConfigBuilder::build) validates and
/// names the first bad field.
#[derive(Clone, Debug)]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
    failure_rate: Threshold,
    slow_call_rate: Threshold,
}

impl BreakerConfigBuilder {
    /// Count-based window over the last `size` calls (1 to 1,000,000: the ring is
    /// allocated up front; Resilience4j has no cap). Default: a count window of 100
    /// calls.
    pub fn count_window(mut self, size: u32) -> Self {
        self.config.window = SlidingWindow::Count { size };
        self
    }
    /// Time-based window over the last `size_secs` seconds (1 to 86,400: one bucket per
    /// second is allocated up front; Resilience4j has no cap). Default: a count window
    /// of 100 calls.
    pub fn time_window(mut self, size_secs: u32) -> Self {
        self.config.window = SlidingWindow::Time { size_secs };
        self
    }
    /// Calls needed before rates are computed (at least 1). Default: 100.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }
    /// Failure rate (1 to 100 percent) at or above which the breaker opens. Default: 50.
    /// For a threshold between whole percents, use
    /// [`failure_rate_threshold_permille`](Self::failure_rate_threshold_permille).
    pub fn failure_rate_threshold_percent(mut self, p: u32) -> Self {
        self.failure_rate = Threshold::Percent(p);
        self
    }
    /// Failure rate (1 to 1,000 permille: 333 is 33.3 %) at or above which the breaker
    /// opens; exact, where Resilience4j compares floats. Default: 500.
    pub fn failure_rate_threshold_permille(mut self, p: u32) -> Self {
        self.failure_rate = Threshold::Permille(p);
        self
    }
    /// Slow-call rate (1 to 100 percent) at or above which the breaker opens. Default:
    /// 100.
    pub fn slow_call_rate_threshold_percent(mut self, p: u32) -> Self {
        self.slow_call_rate = Threshold::Percent(p);
        self
    }
    /// Slow-call rate (1 to 1,000 permille) at or above which the breaker opens.
    /// Default: 1,000.
    pub fn slow_call_rate_threshold_permille(mut self, p: u32) -> Self {
        self.slow_call_rate = Threshold::Permille(p);
        self
    }
    /// Calls lasting longer than this (strictly, as in Resilience4j) count as slow.
    /// Default: 60 s.
    pub fn slow_call_duration(mut self, d: Duration) -> Self {
        self.config.slow_call_duration = d;
        self
    }
    /// Never count a call as slow (only the failure rate trips the breaker), like
    /// recloser and failsafe. With a count window, the breaker then never needs the time
    /// of a call while Closed, and the thread-safe adapter skips the clock. Default: slow
    /// calls counted (longer than 60 s).
    pub fn without_slow_calls(mut self) -> Self {
        self.config.slow_call_duration = Duration::MAX;
        self
    }
    /// A fixed wait in open (at least 1 ms, as in Resilience4j). Default: a fixed 60 s.
    pub fn wait_in_open(mut self, d: Duration) -> Self {
        self.config.wait_in_open = WaitInOpen::Fixed(d);
        self
    }
    /// An exponential wait in open with a cap and jitter that only shortens it: the
    /// `n`th opening in a row waits `min(max, initial·multiplier^(n−1))` (initial at
    /// least 1 ms; multiplier a whole number or an exact [`Ratio`] such as `3/2`),
    /// shortened by up to `jitter_percent` (0 to 99). For Resilience4j's randomization,
    /// which goes both ways, see [`wait_in_open_randomized`](Self::wait_in_open_randomized).
    /// Default: a fixed 60 s.
    pub fn wait_in_open_exponential(
        mut self,
        initial: Duration,
        multiplier: impl Into<Ratio>,
        max: Duration,
        jitter_percent: u32,
    ) -> Self {
        self.config.wait_in_open = WaitInOpen::Exponential {
            initial,
            multiplier: multiplier.into(),
            max,
            jitter_percent,
        };
        self
    }
    /// Resilience4j's exponential random backoff in open: the `n`th opening in a row
    /// waits `initial·multiplier^(n−1)` moved at random by up to `randomization_percent`
    /// (0 to 99) either way, then capped at `max` and never below 1 ms. Default: a fixed
    /// 60 s.
    pub fn wait_in_open_randomized(
        mut self,
        initial: Duration,
        multiplier: impl Into<Ratio>,
        max: Duration,
        randomization_percent: u32,
    ) -> Self {
        self.config.wait_in_open = WaitInOpen::Randomized {
            initial,
            multiplier: multiplier.into(),
            max,
            randomization_percent,
        };
        self
    }
    /// Probe permits per half-open episode (1 to 10,000; Resilience4j has no cap):
    /// each probe takes one, a released or ignored probe gives its permit back; the
    /// episode decides after `min(minimum_calls, n)` counted outcomes. Default: 10.
    pub fn half_open_calls_permitted(mut self, n: u32) -> Self {
        self.config.half_open_calls_permitted = n;
        self
    }
    /// Longest half-open episode before it ends without a verdict, going to
    /// [`after_half_open_wait_max`](Self::after_half_open_wait_max) (zero: no limit).
    /// Default: zero.
    pub fn half_open_wait_max(mut self, d: Duration) -> Self {
        self.config.half_open_wait_max = d;
        self
    }
    /// Where a half-open episode goes when it reaches `half_open_wait_max`: Open or
    /// Closed (Resilience4j's `transitionToStateAfterWaitDuration`). Default: Open.
    pub fn after_half_open_wait_max(mut self, state: State) -> Self {
        self.config.after_half_open_wait_max = state;
        self
    }
    /// Move from Open to HalfOpen by itself through `handle_timeout`. Default: false
    /// (the first call after the wait moves it).
    pub fn automatic_transition(mut self, on: bool) -> Self {
        self.config.automatic_transition = on;
        self
    }
    /// The state a new breaker starts in, with no event (Resilience4j's
    /// `initialState`); Open waits from [`Instant::ZERO`] as for a first opening.
    /// Default: Closed.
    pub fn initial_state(mut self, state: State) -> Self {
        self.config.initial_state = state;
        self
    }
    /// Most events kept for [`poll_event`](CircuitBreaker::poll_event) that were not
    /// taken yet; when a new one comes and the queue is full, the oldest is dropped and
    /// counted in [`Totals::events_dropped`]. Default: 1,024; at least 1. (The tokio
    /// adapter also pushes every event to its subscribers and to `tracing`, whatever
    /// this queue holds.)
    pub fn events_max(mut self, n: usize) -> Self {
        self.config.events_max = n;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let mut c = self.config;
        const WINDOW_MAX: u32 = 1_000_000;
        match c.window {
            SlidingWindow::Count { size } if size == 0 || size > WINDOW_MAX => {
                return Err(ConfigError::new(
                    "count_window",
                    format!("must be 1 to {WINDOW_MAX} calls, got {size}"),
                ));
            }
            SlidingWindow::Time { size_secs } if size_secs == 0 || size_secs > 86_400 => {
                return Err(ConfigError::new(
                    "time_window",
                    format!("must be 1 to 86400 seconds, got {size_secs}"),
                ));
            }
            _ => {}
        }
        if c.minimum_calls == 0 {
            return Err(ConfigError::new(
                "minimum_calls",
                "must be at least 1, got 0",
            ));
        }
        c.failure_rate_threshold_permille = self.failure_rate.permille([
            "failure_rate_threshold_percent",
            "failure_rate_threshold_permille",
        ])?;
        c.slow_call_rate_threshold_permille = self.slow_call_rate.permille([
            "slow_call_rate_threshold_percent",
            "slow_call_rate_threshold_permille",
        ])?;
        if c.slow_call_duration.is_zero() {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be longer than zero",
            ));
        }
        const WAIT_MIN: Duration = Duration::from_millis(1);
        // (initial, multiplier, max, share, field names: initial, multiplier, max, share)
        let (initial, multiplier, max, share, names) = match c.wait_in_open {
            WaitInOpen::Fixed(d) => {
                if d < WAIT_MIN {
                    return Err(ConfigError::new(
                        "wait_in_open",
                        format!("must be at least 1 ms, got {d:?}"),
                    ));
                }
                (d, Ratio::from(1), d, 0, None)
            }
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                jitter_percent,
            } => (
                initial,
                multiplier,
                max,
                jitter_percent,
                Some([
                    "wait_in_open_exponential.initial",
                    "wait_in_open_exponential.multiplier",
                    "wait_in_open_exponential.max",
                    "wait_in_open_exponential.jitter_percent",
                ]),
            ),
            WaitInOpen::Randomized {
                initial,
                multiplier,
                max,
                randomization_percent,
            } => (
                initial,
                multiplier,
                max,
                randomization_percent,
                Some([
                    "wait_in_open_randomized.initial",
                    "wait_in_open_randomized.multiplier",
                    "wait_in_open_randomized.max",
                    "wait_in_open_randomized.randomization_percent",
                ]),
            ),
        };
        if let Some([f_initial, f_multiplier, f_max, f_share]) = names {
            if initial < WAIT_MIN {
                return Err(ConfigError::new(
                    f_initial,
                    format!("must be at least 1 ms, got {initial:?}"),
                ));
            }
            if let Some(why) = multiplier.invalid() {
                return Err(ConfigError::new(f_multiplier, why));
            }
            if max < initial {
                return Err(ConfigError::new(
                    f_max,
                    format!("must be at least the initial wait ({initial:?}), got {max:?}"),
                ));
            }
            if share >= 100 {
                return Err(ConfigError::new(
                    f_share,
                    format!("must be 0 to 99 percent, got {share}"),
                ));
            }
        }
        if c.half_open_calls_permitted == 0 || c.half_open_calls_permitted > 10_000 {
            return Err(ConfigError::new(
                "half_open_calls_permitted",
                format!(
                    "must be 1 to 10000 calls, got {}",
                    c.half_open_calls_permitted
                ),
            ));
        }
        if !matches!(c.after_half_open_wait_max, State::Open | State::Closed) {
            return Err(ConfigError::new(
                "after_half_open_wait_max",
                format!("must be open or closed, got {}", c.after_half_open_wait_max),
            ));
        }
        if c.events_max == 0 {
            return Err(ConfigError::new("events_max", "must be at least 1, got 0"));
        }
        // Store what the breaker uses (a count window caps it at its size), so that two
        // configurations that behave alike compare equal, and one read back from its
        // serde form equals the one written.
        c.minimum_calls = c.minimum_calls();
        Ok(c)
    }
}

/// A command asked for a transition Resilience4j's state machine does not have:
/// Closed → HalfOpen, MetricsOnly → Open and MetricsOnly → HalfOpen. The breaker is left
/// as it was and publishes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a circuit breaker cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The state it is in.
    pub from: State,
    /// The state asked for.
    pub to: State,
}

/// Permission to make one call. Hand it back with [`CircuitBreaker::on_result`] or
/// [`CircuitBreaker::release`]; a permit that is never handed back holds a half-open
/// probe slot forever (unless `half_open_wait_max` is set), which is why the tokio
/// adapter releases it on drop.
#[must_use = "hand the permit back with on_result or release"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    acquired_at: Instant,
    state: State,
}

impl Permit {
    /// The state the breaker was in when it gave this permit.
    pub fn state(&self) -> State {
        self.state
    }
    /// When the permit was given (the call's duration is measured from here).
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }
    /// The breaker episode (one per state entered) this permit belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A call not permitted: the answer to give the caller is "unavailable, retry after".
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejected {
    /// When trying again makes sense.
    pub retry_after: Duration,
    /// The state that rejected the call.
    pub state: State,
}

/// Why the breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransitionReason {
    /// The failure rate reached the threshold.
    FailureRate {
        /// Failed calls in the window.
        failed: u32,
        /// Calls in the window.
        calls: u32,
    },
    /// The slow-call rate reached the threshold.
    SlowCallRate {
        /// Slow calls in the window.
        slow: u32,
        /// Calls in the window.
        calls: u32,
    },
    /// The wait in open passed.
    WaitElapsed,
    /// The half-open probes did well enough.
    ProbesSucceeded,
    /// The half-open episode reached `half_open_wait_max` without a verdict.
    HalfOpenExpired,
    /// A command (`force_open`, `disable`, `metrics_only`, `reset`, `transition_to_*`)
    /// or the configured initial state.
    Manual,
}

/// Something observable that happened. Re-entering the current state (a second
/// `force_open`, say) publishes nothing, as in Resilience4j.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerEvent {
    /// A state change.
    Transition {
        /// State before.
        from: State,
        /// State after.
        to: State,
        /// When.
        at: Instant,
        /// Why.
        reason: TransitionReason,
        /// The episode number entered.
        generation: u64,
    },
    /// [`reset`](CircuitBreaker::reset) was called (after the transition to Closed, if
    /// the breaker was not Closed): the window is empty.
    Reset {
        /// When.
        at: Instant,
        /// The episode number entered.
        generation: u64,
    },
    /// The failure rate reached its threshold: in Closed just before the breaker opens,
    /// in MetricsOnly once per episode.
    FailureRateExceeded {
        /// When.
        at: Instant,
        /// The failure rate, permille.
        permille: u32,
        /// The episode it happened in.
        generation: u64,
    },
    /// The slow-call rate reached its threshold: in Closed just before the breaker
    /// opens, in MetricsOnly once per episode.
    SlowCallRateExceeded {
        /// When.
        at: Instant,
        /// The slow-call rate, permille.
        permille: u32,
        /// The episode it happened in.
        generation: u64,
    },
}

impl BreakerEvent {
    /// When it happened.
    pub fn at(&self) -> Instant {
        match *self {
            BreakerEvent::Transition { at, .. }
            | BreakerEvent::Reset { at, .. }
            | BreakerEvent::FailureRateExceeded { at, .. }
            | BreakerEvent::SlowCallRateExceeded { at, .. } => at,
        }
    }
    /// `(from, to)` for a state change, `None` for the other events.
    pub fn transition(&self) -> Option<(State, State)> {
        match *self {
            BreakerEvent::Transition { from, to, .. } => Some((from, to)),
            _ => None,
        }
    }
}

/// Counters since the breaker was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Permits given.
    pub admitted: u64,
    /// Calls rejected.
    pub rejected: u64,
    /// Outcomes recorded as success.
    pub succeeded: u64,
    /// Outcomes recorded as failure.
    pub failed: u64,
    /// Outcomes recorded as ignored.
    pub ignored: u64,
    /// Permits released without an outcome (cancelled calls).
    pub released: u64,
    /// Recorded outcomes (success or failure) that were slow.
    pub slow: u64,
    /// Outcomes of permits from an earlier episode (counted above, not in the window).
    pub stale: u64,
    /// Events dropped because nobody drained them.
    pub events_dropped: u64,
}

/// A snapshot of the breaker's state and counts, as of the `now` it was asked at. The
/// window is the one of the current state, as in Resilience4j: Closed's and
/// MetricsOnly's sliding window (a time window forgets the seconds that left it), the
/// half-open probes' in HalfOpen and in the Open it led to, Closed's in the Open it led
/// to, and an empty one in Disabled and ForcedOpen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Current state.
    pub state: State,
    /// Current episode number.
    pub generation: u64,
    /// Calls in the sliding window.
    pub window_calls: u32,
    /// Failed calls in the window.
    pub window_failed: u32,
    /// Slow calls in the window.
    pub window_slow: u32,
    /// Failure rate in permille (rounded down), once the window holds the minimum
    /// number of calls.
    pub failure_rate_permille: Option<u32>,
    /// Slow-call rate in permille (rounded down), once the window holds the minimum
    /// number of calls.
    pub slow_call_rate_permille: Option<u32>,
    /// Probe permits given in the current half-open episode (a permit given back and
    /// given again counts twice).
    pub half_open_admitted: u32,
    /// Probe permits left in the current half-open episode (Resilience4j's counter:
    /// permitted, less those given, plus those given back by a release or an ignored
    /// outcome).
    pub half_open_permits_left: u32,
    /// Permits currently out (given, not yet handed back).
    pub in_flight: u64,
    /// Counters since the start.
    pub totals: Totals,
}

/// Bits of one recorded call in a count window.
const FAILED: u8 = 1;
const SLOW: u8 = 2;

#[derive(Clone, Debug)]
enum Window {
    Count {
        ring: Vec<u8>,
        head: usize,
        len: u32,
        failed: u32,
        slow: u32,
    },
    Time {
        /// (epoch second, calls, failed, slow) per bucket.
        buckets: Vec<(u64, u32, u32, u32)>,
        latest_sec: u64,
        calls: u32,
        failed: u32,
        slow: u32,
    },
}

impl Window {
    fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count { size } => Window::Count {
                ring: vec![0; size as usize],
                head: 0,
                len: 0,
                failed: 0,
                slow: 0,
            },
            SlidingWindow::Time { size_secs } => Window::Time {
                buckets: vec![(0, 0, 0, 0); size_secs as usize],
                latest_sec: 0,
                calls: 0,
                failed: 0,
                slow: 0,
            },
        }
    }

    fn reset(&mut self) {
        match self {
            Window::Count {
                ring,
                head,
                len,
                failed,
                slow,
            } => {
                ring.iter_mut().for_each(|b| *b = 0);
                *head = 0;
                *len = 0;
                *failed = 0;
                *slow = 0;
            }
            Window::Time {
                buckets,
                latest_sec,
                calls,
                failed,
                slow,
            } => {
                buckets.iter_mut().for_each(|b| *b = (0, 0, 0, 0));
                *latest_sec = 0;
                *calls = 0;
                *failed = 0;
                *slow = 0;
            }
        }
    }

    /// Drops time buckets older than the window, as of `now`.
    fn advance(&mut self, now: Instant) {
        if let Window::Time {
            buckets,
            latest_sec,
            calls,
            failed,
            slow,
        } = self
        {
            let sec = now.as_nanos() / 1_000_000_000;
            if sec <= *latest_sec {
                return;
            }
            let size = buckets.len() as u64;
            let from = (*latest_sec + 1).max(sec.saturating_sub(size - 1));
            // Reset at most `size` buckets, whatever the jump: a jump of `size` seconds
            // or more resets every bucket once (everything older fell out).
            for s in from..=sec {
                let b = &mut buckets[(s % size) as usize];
                *calls -= b.1;
                *failed -= b.2;
                *slow -= b.3;
                *b = (s, 0, 0, 0);
            }
            *latest_sec = sec;
        }
    }

    #[inline]
    /// Records one outcome. Returns false only when the record cannot have raised
    /// either rate or brought the window to its minimum: a fast success replacing
    /// another call in a full count window.
    fn record(&mut self, now: Instant, is_failed: bool, is_slow: bool) -> bool {
        match self {
            Window::Count {
                ring,
                head,
                len,
                failed,
                slow,
            } => {
                let bits = (is_failed as u8 * FAILED) | (is_slow as u8 * SLOW);
                let size = ring.len();
                let old = ring[*head];
                let full = (*len as usize) == size;
                if full {
                    *failed -= (old & FAILED != 0) as u32;
                    *slow -= (old & SLOW != 0) as u32;
                } else {
                    *len += 1;
                }
                ring[*head] = bits;
                *head += 1;
                if *head == size {
                    *head = 0;
                }
                *failed += is_failed as u32;
                *slow += is_slow as u32;
                is_failed || is_slow || !full
            }
            Window::Time { .. } => {
                self.advance(now);
                if let Window::Time {
                    buckets,
                    latest_sec,
                    calls,
                    failed,
                    slow,
                } = self
                {
                    let size = buckets.len() as u64;
                    let b = &mut buckets[(*latest_sec % size) as usize];
                    b.1 += 1;
                    b.2 += is_failed as u32;
                    b.3 += is_slow as u32;
                    *calls += 1;
                    *failed += is_failed as u32;
                    *slow += is_slow as u32;
                }
                // Old seconds leaving the window may have raised the rates.
                true
            }
        }
    }

    /// (calls, failed, slow) in the window as of `now`: a time window leaves out the
    /// seconds that have left it since the last record, changing nothing (at most one
    /// bucket visited per second that left).
    fn counts_at(&self, now: Instant) -> (u32, u32, u32) {
        let Window::Time {
            buckets,
            latest_sec,
            calls,
            failed,
            slow,
        } = self
        else {
            return self.counts();
        };
        let sec = now.as_nanos() / 1_000_000_000;
        let size = buckets.len() as u64;
        if sec <= *latest_sec {
            return (*calls, *failed, *slow);
        }
        if sec - *latest_sec >= size {
            return (0, 0, 0);
        }
        let (mut c, mut f, mut s) = (*calls, *failed, *slow);
        // Live before: (latest_sec - size, latest_sec]; as of `sec`: (sec - size, sec].
        if let Some(last_leaving) = sec.checked_sub(size) {
            for second in (*latest_sec + 1).saturating_sub(size)..=last_leaving {
                let b = buckets[(second % size) as usize];
                if b.0 == second {
                    c -= b.1;
                    f -= b.2;
                    s -= b.3;
                }
            }
        }
        (c, f, s)
    }

    /// (calls, failed, slow) in the window.
    #[inline(always)]
    fn counts(&self) -> (u32, u32, u32) {
        match self {
            Window::Count {
                len, failed, slow, ..
            } => (*len, *failed, *slow),
            Window::Time {
                calls,
                failed,
                slow,
                ..
            } => (*calls, *failed, *slow),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Episode {
    since: Instant,
    /// Permits given in the episode.
    admitted: u32,
    /// Permits used: given and not given back (a counted outcome keeps its permit used;
    /// a release or an ignored outcome gives it back).
    used: u32,
    /// Counted outcomes (success or failure).
    counted: u32,
    failed: u32,
    slow: u32,
}

/// (calls, failed, slow, minimum calls) of a window shown by `metrics`.
type Shown = (u32, u32, u32, u32);

/// The circuit breaker. See the [module docs](self) for the call order.
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    generation: u64,
    window: Window,
    open_until: Instant,
    openings_in_row: u32,
    /// `slow_call_duration` in nanoseconds (saturated), precomputed for the hot path.
    slow_nanos: u64,
    /// `config.minimum_calls()`, precomputed for the hot path.
    minimum_calls: u32,
    episode: Episode,
    /// In Open after HalfOpen: the probes' window that opened it.
    shown: Option<Shown>,
    /// In MetricsOnly: whether the failure and slow-call rates were reported exceeded.
    exceeded: (bool, bool),
    events: VecDeque<BreakerEvent>,
    events_emitted: u64,
    totals: Totals,
    rng: Box<dyn rand::Rng + Send>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state)
            .field("generation", &self.generation)
            .field("open_until", &self.open_until)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A breaker in the configured initial state (Closed by default). Jitter (if the
    /// wait in open uses any) comes from a fixed-seed generator; give your own with
    /// [`with_rng`](CircuitBreaker::with_rng).
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_rng(config, SplitMix64(0x6661_756c_746c_696e))
    }

    /// A breaker in the configured initial state drawing wait-in-open jitter from
    /// `rng`. An initial Open waits from [`Instant::ZERO`] as for a first opening; an
    /// initial HalfOpen's episode starts at `Instant::ZERO`. No event is published.
    pub fn with_rng(config: BreakerConfig, rng: impl rand::Rng + Send + 'static) -> Self {
        let mut breaker = CircuitBreaker {
            window: Window::new(config.window),
            config,
            state: State::Closed,
            generation: 0,
            open_until: Instant::ZERO,
            openings_in_row: 0,
            slow_nanos: u64::try_from(config.slow_call_duration.as_nanos()).unwrap_or(u64::MAX),
            minimum_calls: config.minimum_calls(),
            episode: Episode::default(),
            shown: None,
            exceeded: (false, false),
            events: VecDeque::new(),
            events_emitted: 0,
            totals: Totals::default(),
            rng: Box::new(rng),
        };
        match config.initial_state {
            State::Closed => {}
            State::Open => breaker.open_at_start(),
            other => breaker.enter(other, Instant::ZERO),
        }
        breaker
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state. (Open stays Open until a call or `handle_timeout` notices the
    /// wait has passed.)
    #[inline]
    pub fn state(&self) -> State {
        self.state
    }

    /// The current episode number (incremented on every state entered, re-entries
    /// included).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Events published since the breaker was made (taken or not, dropped or not): a
    /// thread-safe adapter compares it to know how many of the queued events are new.
    pub fn events_emitted(&self) -> u64 {
        self.events_emitted
    }

    /// When an Open breaker will let probes through: calls are rejected up to and
    /// including this instant, as in Resilience4j.
    pub fn open_until(&self) -> Option<Instant> {
        (self.state == State::Open).then_some(self.open_until)
    }

    /// The counters since the breaker was made (cheaper than
    /// [`metrics`](CircuitBreaker::metrics)).
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// A snapshot of counts and rates as of `now` (see [`Metrics`] for which window).
    pub fn metrics(&self, now: Instant) -> Metrics {
        let (calls, failed, slow, min) = match self.state {
            State::HalfOpen => (
                self.episode.counted,
                self.episode.failed,
                self.episode.slow,
                self.config.half_open_calls_needed(),
            ),
            State::Open if self.shown.is_some() => self.shown.unwrap_or_default(),
            State::Disabled | State::ForcedOpen => (0, 0, 0, 0),
            _ => {
                let (calls, failed, slow) = self.window.counts_at(now);
                (calls, failed, slow, self.minimum_calls)
            }
        };
        let rate = |n: u32| {
            (calls >= min && calls > 0).then(|| (u64::from(n) * 1000 / u64::from(calls)) as u32)
        };
        let t = self.totals;
        let handed_back = t.succeeded + t.failed + t.ignored + t.released;
        let half_open = self.state == State::HalfOpen;
        Metrics {
            state: self.state,
            generation: self.generation,
            window_calls: calls,
            window_failed: failed,
            window_slow: slow,
            failure_rate_permille: rate(failed),
            slow_call_rate_permille: rate(slow),
            half_open_admitted: if half_open { self.episode.admitted } else { 0 },
            half_open_permits_left: if half_open {
                self.config.half_open_calls_permitted - self.episode.used
            } else {
                0
            },
            in_flight: t.admitted.saturating_sub(handed_back),
            totals: t,
        }
    }

    // ----- inputs -----

    /// Asks to make a call now.
    #[inline]
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        match self.state {
            State::Closed | State::Disabled | State::MetricsOnly => Ok(self.admit(now)),
            State::Open => {
                if now <= self.open_until {
                    self.totals.rejected += 1;
                    return Err(Rejected {
                        // Zero at `open_until` itself: the next instant is admitted.
                        retry_after: (self.open_until - now).max(Duration::from_nanos(1)),
                        state: State::Open,
                    });
                }
                self.transition(State::HalfOpen, now, TransitionReason::WaitElapsed);
                self.try_acquire_half_open(now)
            }
            State::HalfOpen => self.try_acquire_half_open(now),
            State::ForcedOpen => {
                self.totals.rejected += 1;
                Err(Rejected {
                    retry_after: self.config.wait_in_open.ceiling(1),
                    state: State::ForcedOpen,
                })
            }
        }
    }

    #[inline]
    fn admit(&mut self, now: Instant) -> Permit {
        self.totals.admitted += 1;
        Permit {
            generation: self.generation,
            acquired_at: now,
            state: self.state,
        }
    }

    fn half_open_expired(&self, now: Instant) -> bool {
        !self.config.half_open_wait_max.is_zero()
            && now >= self.episode.since + self.config.half_open_wait_max
    }

    /// The half-open episode reached `half_open_wait_max`: on to the configured state.
    fn expire_half_open(&mut self, now: Instant) {
        match self.config.after_half_open_wait_max {
            State::Closed => self.transition(State::Closed, now, TransitionReason::HalfOpenExpired),
            _ => self.open(now, TransitionReason::HalfOpenExpired),
        }
    }

    fn try_acquire_half_open(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if self.half_open_expired(now) {
            self.expire_half_open(now);
            return self.try_acquire(now);
        }
        if self.episode.used < self.config.half_open_calls_permitted {
            self.episode.used += 1;
            self.episode.admitted += 1;
            return Ok(self.admit(now));
        }
        self.totals.rejected += 1;
        let retry_after = if self.config.half_open_wait_max.is_zero() {
            self.config.wait_in_open.ceiling(1)
        } else {
            (self.episode.since + self.config.half_open_wait_max) - now
        };
        Err(Rejected {
            retry_after,
            state: State::HalfOpen,
        })
    }

    /// Hands back a permit with the call's outcome; its duration is `now` minus the
    /// permit's time, and it is slow when that is longer than `slow_call_duration`. In
    /// half-open an ignored outcome gives the probe permit back (Resilience4j's
    /// `releasePermission` for an ignored exception). The outcome of a permit from an
    /// earlier episode is counted in the totals (as stale) and nowhere else, where
    /// Resilience4j records it in the current state's window.
    #[inline]
    pub fn on_result(&mut self, permit: Permit, now: Instant, outcome: CallOutcome) {
        let elapsed = now.as_nanos().saturating_sub(permit.acquired_at.as_nanos());
        let slow = elapsed > self.slow_nanos;
        match outcome {
            CallOutcome::Success => self.totals.succeeded += 1,
            CallOutcome::Failure => self.totals.failed += 1,
            CallOutcome::Ignored => self.totals.ignored += 1,
        }
        let counted = outcome != CallOutcome::Ignored;
        if counted && slow {
            self.totals.slow += 1;
        }
        if permit.generation != self.generation {
            self.totals.stale += 1;
            return;
        }
        let failed = outcome == CallOutcome::Failure;
        match self.state {
            State::Closed | State::MetricsOnly => {
                if counted && self.window.record(now, failed, slow) {
                    self.check_trip(now);
                }
            }
            State::HalfOpen => {
                if counted {
                    self.episode.counted += 1;
                    self.episode.failed += failed as u32;
                    self.episode.slow += slow as u32;
                    self.check_episode(now);
                } else {
                    self.episode.used = self.episode.used.saturating_sub(1);
                }
            }
            State::Open | State::ForcedOpen | State::Disabled => {}
        }
    }

    /// Hands back the permit of a call that was cancelled before it finished: no outcome
    /// is recorded. In half-open the probe permit is given back, so the breaker goes on
    /// probing (Resilience4j's `releasePermission`).
    pub fn release(&mut self, permit: Permit, _now: Instant) {
        self.totals.released += 1;
        if permit.generation == self.generation && self.state == State::HalfOpen {
            self.episode.used = self.episode.used.saturating_sub(1);
        }
    }

    /// Applies time-driven transitions due at `now`: Open to HalfOpen when automatic
    /// transition is on and the wait has passed (strictly after `open_until`), and
    /// HalfOpen to the configured state when `half_open_wait_max` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Open if self.config.automatic_transition && now > self.open_until => {
                self.transition(State::HalfOpen, now, TransitionReason::WaitElapsed);
            }
            State::HalfOpen if self.half_open_expired(now) => self.expire_half_open(now),
            _ => {}
        }
    }

    // ----- commands -----

    /// Rejects every call until another command (Resilience4j's
    /// `transitionToForcedOpenState`); the window starts empty.
    pub fn force_open(&mut self, now: Instant) {
        self.transition(State::ForcedOpen, now, TransitionReason::Manual);
    }
    /// Lets every call through and records nothing until another command
    /// (`transitionToDisabledState`); the window starts empty.
    pub fn disable(&mut self, now: Instant) {
        self.transition(State::Disabled, now, TransitionReason::Manual);
    }
    /// Lets every call through and records outcomes, never tripping, until another
    /// command (`transitionToMetricsOnlyState`): the rate-exceeded events are published
    /// once each per episode. The window starts empty.
    pub fn metrics_only(&mut self, now: Instant) {
        self.transition(State::MetricsOnly, now, TransitionReason::Manual);
    }
    /// Back to Closed with an empty window, then a [`BreakerEvent::Reset`]
    /// (Resilience4j's `reset`: a transition event only if it was not Closed).
    pub fn reset(&mut self, now: Instant) {
        self.transition(State::Closed, now, TransitionReason::Manual);
        self.publish(BreakerEvent::Reset {
            at: now,
            generation: self.generation,
        });
    }
    /// To Closed with an empty window (`transitionToClosedState`).
    pub fn transition_to_closed(&mut self, now: Instant) {
        self.transition(State::Closed, now, TransitionReason::Manual);
    }
    /// To Open as on a trip, counting as one more opening in a row for the wait
    /// (`transitionToOpenState`). Refused from MetricsOnly.
    pub fn transition_to_open(&mut self, now: Instant) -> Result<(), IllegalTransition> {
        self.allowed(State::Open)?;
        self.open(now, TransitionReason::Manual);
        Ok(())
    }
    /// To Open for exactly `wait`, not counted as an opening in a row
    /// (`transitionToOpenStateFor`). Refused from MetricsOnly.
    pub fn transition_to_open_for(
        &mut self,
        now: Instant,
        wait: Duration,
    ) -> Result<(), IllegalTransition> {
        self.transition_to_open_until(now, now + wait)
    }
    /// To Open until `until` (`transitionToOpenStateUntil`); calls are rejected up to
    /// and including it. Not counted as an opening in a row. Refused from MetricsOnly.
    pub fn transition_to_open_until(
        &mut self,
        now: Instant,
        until: Instant,
    ) -> Result<(), IllegalTransition> {
        self.allowed(State::Open)?;
        self.open_until = until;
        self.transition(State::Open, now, TransitionReason::Manual);
        Ok(())
    }
    /// To HalfOpen with a fresh episode of probes (`transitionToHalfOpenState`).
    /// Refused from Closed and MetricsOnly.
    pub fn transition_to_half_open(&mut self, now: Instant) -> Result<(), IllegalTransition> {
        self.allowed(State::HalfOpen)?;
        self.transition(State::HalfOpen, now, TransitionReason::Manual);
        Ok(())
    }

    /// Refuses the transitions Resilience4j's state machine does not have.
    fn allowed(&self, to: State) -> Result<(), IllegalTransition> {
        let illegal = matches!(
            (self.state, to),
            (State::Closed, State::HalfOpen)
                | (State::MetricsOnly, State::Open)
                | (State::MetricsOnly, State::HalfOpen)
        );
        if illegal {
            Err(IllegalTransition {
                from: self.state,
                to,
            })
        } else {
            Ok(())
        }
    }

    // ----- outputs -----

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BreakerEvent> {
        self.events.pop_front()
    }

    /// The events not yet taken by [`poll_event`](CircuitBreaker::poll_event), oldest
    /// first, left in place (at most [`events_max`](BreakerConfig::events_max); the
    /// dropped ones are counted in `totals.events_dropped`).
    pub fn events(
        &self,
    ) -> impl DoubleEndedIterator<Item = &BreakerEvent> + ExactSizeIterator + '_ {
        self.events.iter()
    }

    /// When [`handle_timeout`](CircuitBreaker::handle_timeout) next has work, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open if self.config.automatic_transition => {
                Some(self.open_until + Duration::from_nanos(1))
            }
            State::HalfOpen if !self.config.half_open_wait_max.is_zero() => {
                Some(self.episode.since + self.config.half_open_wait_max)
            }
            _ => None,
        }
    }

    // ----- for thread-safe adapters -----

    /// True when, while Closed, the breaker never uses the time of a call: a count
    /// window and no slow-call detection. A thread-safe adapter may then admit calls
    /// without a permit and without reading the clock (see
    /// [`closed_generation`](CircuitBreaker::closed_generation)).
    pub fn closed_is_timeless(&self) -> bool {
        matches!(self.config.window, SlidingWindow::Count { .. })
            && self.config.slow_call_duration == Duration::MAX
    }

    /// The episode a call may run under without a permit: `Some` while Closed.
    /// The outcome of such a call goes to
    /// [`on_detached_result`](CircuitBreaker::on_detached_result) (or
    /// [`release_detached`](CircuitBreaker::release_detached)), which also counts it as
    /// admitted; an outcome from an episode that has ended is counted as stale.
    pub fn closed_generation(&self) -> Option<u64> {
        (self.state == State::Closed).then_some(self.generation)
    }

    /// True while the window holds fewer calls than the minimum (a success recorded now
    /// could then trip the breaker, so its time matters).
    pub fn window_is_filling(&self) -> bool {
        self.window.counts().0 < self.minimum_calls
    }

    /// Records the outcome of a call admitted without a permit under `generation`.
    pub fn on_detached_result(
        &mut self,
        generation: u64,
        acquired_at: Instant,
        now: Instant,
        outcome: CallOutcome,
    ) {
        self.totals.admitted += 1;
        let permit = Permit {
            generation,
            acquired_at,
            state: State::Closed,
        };
        self.on_result(permit, now, outcome);
    }

    /// Records `count` successes of calls admitted without a permit under
    /// `generation`, at once (a thread-safe adapter gathers them lock-free).
    pub fn on_detached_successes(&mut self, generation: u64, count: u64, now: Instant) {
        self.totals.admitted += count;
        self.totals.succeeded += count;
        if generation != self.generation || self.state != State::Closed {
            self.totals.stale += count;
            return;
        }
        if let Window::Count {
            ring,
            head,
            len,
            failed,
            slow,
        } = &mut self.window
            && count >= ring.len() as u64
        {
            // The whole window is successes now.
            ring.iter_mut().for_each(|b| *b = 0);
            *head = 0;
            *len = ring.len() as u32;
            *failed = 0;
            *slow = 0;
            return;
        }
        let mut check = false;
        for _ in 0..count {
            check |= self.window.record(now, false, false);
        }
        if check {
            self.check_trip(now);
        }
    }

    /// Hands back a call admitted without a permit under `generation` that was
    /// cancelled.
    pub fn release_detached(&mut self, generation: u64, now: Instant) {
        self.totals.admitted += 1;
        let permit = Permit {
            generation,
            acquired_at: now,
            state: State::Closed,
        };
        self.release(permit, now);
    }

    // ----- internals -----

    /// Whether `(failed, slow)` of `calls` reach the failure and slow-call thresholds.
    #[inline]
    fn exceeds(&self, calls: u32, failed: u32, slow: u32) -> (bool, bool) {
        let calls = u64::from(calls);
        (
            u64::from(failed) * 1000
                >= u64::from(self.config.failure_rate_threshold_permille) * calls,
            u64::from(slow) * 1000
                >= u64::from(self.config.slow_call_rate_threshold_permille) * calls,
        )
    }

    #[inline]
    fn check_trip(&mut self, now: Instant) {
        let (calls, failed, slow) = self.window.counts();
        if calls < self.minimum_calls {
            return;
        }
        let (failing, slowing) = self.exceeds(calls, failed, slow);
        if !failing && !slowing {
            return;
        }
        let permille = |n: u32| (u64::from(n) * 1000 / u64::from(calls)) as u32;
        let generation = self.generation;
        let metrics_only = self.state == State::MetricsOnly;
        if failing && !(metrics_only && self.exceeded.0) {
            self.exceeded.0 = true;
            self.publish(BreakerEvent::FailureRateExceeded {
                at: now,
                permille: permille(failed),
                generation,
            });
        }
        if slowing && !(metrics_only && self.exceeded.1) {
            self.exceeded.1 = true;
            self.publish(BreakerEvent::SlowCallRateExceeded {
                at: now,
                permille: permille(slow),
                generation,
            });
        }
        if metrics_only {
            return;
        }
        if failing {
            self.open(now, TransitionReason::FailureRate { failed, calls });
        } else {
            self.open(now, TransitionReason::SlowCallRate { slow, calls });
        }
    }

    fn check_episode(&mut self, now: Instant) {
        let e = self.episode;
        if e.counted < self.config.half_open_calls_needed() {
            return;
        }
        let shown = (
            e.counted,
            e.failed,
            e.slow,
            self.config.half_open_calls_needed(),
        );
        match self.exceeds(e.counted, e.failed, e.slow) {
            (true, _) => {
                self.open(
                    now,
                    TransitionReason::FailureRate {
                        failed: e.failed,
                        calls: e.counted,
                    },
                );
                self.shown = Some(shown);
            }
            (false, true) => {
                self.open(
                    now,
                    TransitionReason::SlowCallRate {
                        slow: e.slow,
                        calls: e.counted,
                    },
                );
                self.shown = Some(shown);
            }
            (false, false) => {
                self.transition(State::Closed, now, TransitionReason::ProbesSucceeded)
            }
        }
    }

    /// Opens for the wait of one more opening in a row.
    fn open(&mut self, now: Instant, reason: TransitionReason) {
        self.openings_in_row = self.openings_in_row.saturating_add(1);
        let wait = self
            .config
            .wait_in_open
            .draw(self.openings_in_row, &mut *self.rng);
        self.open_until = now + wait;
        self.transition(State::Open, now, reason);
    }

    /// Enters `to` as a new episode: a fresh window where the state keeps one. Entering
    /// the state it is in starts it afresh but publishes nothing, as in Resilience4j.
    fn transition(&mut self, to: State, now: Instant, reason: TransitionReason) {
        let from = self.state;
        self.enter(to, now);
        if from != to {
            self.publish(BreakerEvent::Transition {
                from,
                to,
                at: now,
                reason,
                generation: self.generation,
            });
        }
    }

    fn enter(&mut self, to: State, now: Instant) {
        self.state = to;
        self.generation += 1;
        self.shown = None;
        match to {
            State::Closed => {
                self.window.reset();
                self.openings_in_row = 0;
            }
            State::HalfOpen => {
                self.episode = Episode {
                    since: now,
                    ..Episode::default()
                };
            }
            State::MetricsOnly => {
                self.window.reset();
                self.exceeded = (false, false);
            }
            State::Disabled | State::ForcedOpen => self.window.reset(),
            State::Open => {}
        }
    }

    /// The initial state Open: as a first opening at `Instant::ZERO`, with no event.
    fn open_at_start(&mut self) {
        self.openings_in_row = 1;
        let wait = self.config.wait_in_open.draw(1, &mut *self.rng);
        self.open_until = Instant::ZERO + wait;
        self.enter(State::Open, Instant::ZERO);
    }

    fn publish(&mut self, event: BreakerEvent) {
        if self.events.len() >= self.config.events_max {
            self.events.pop_front();
            self.totals.events_dropped += 1;
        }
        self.events.push_back(event);
        self.events_emitted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn small() -> BreakerConfig {
        BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(4)
            .failure_rate_threshold_percent(50)
            .slow_call_duration(Duration::from_millis(100))
            .wait_in_open(Duration::from_millis(1000))
            .half_open_calls_permitted(2)
            .build()
            .unwrap()
    }

    fn call(b: &mut CircuitBreaker, at: u64, took: u64, outcome: CallOutcome) -> bool {
        match b.try_acquire(ms(at)) {
            Ok(p) => {
                b.on_result(p, ms(at + took), outcome);
                true
            }
            Err(_) => false,
        }
    }

    fn transitions(b: &mut CircuitBreaker) -> Vec<(State, State)> {
        std::iter::from_fn(|| b.poll_event())
            .filter_map(|e| e.transition())
            .collect()
    }

    #[test]
    fn defaults_are_resilience4j() {
        let c = BreakerConfig::builder().build().unwrap();
        assert_eq!(c.window(), SlidingWindow::Count { size: 100 });
        assert_eq!(c.minimum_calls(), 100);
        assert_eq!(c.failure_rate_threshold_permille(), 500);
        assert_eq!(c.slow_call_rate_threshold_permille(), 1000);
        assert_eq!(c.initial_state(), State::Closed);
        assert_eq!(c.after_half_open_wait_max(), State::Open);
        assert_eq!(c.slow_call_duration(), Duration::from_secs(60));
        assert_eq!(c.wait_in_open(), WaitInOpen::Fixed(Duration::from_secs(60)));
        assert_eq!(c.half_open_calls_permitted(), 10);
        assert_eq!(c.half_open_wait_max(), Duration::ZERO);
    }

    #[test]
    fn builder_names_the_bad_field() {
        let cases: Vec<(BreakerConfigBuilder, &str)> = vec![
            (BreakerConfig::builder().count_window(0), "count_window"),
            (BreakerConfig::builder().time_window(0), "time_window"),
            (BreakerConfig::builder().minimum_calls(0), "minimum_calls"),
            (
                BreakerConfig::builder().failure_rate_threshold_percent(101),
                "failure_rate_threshold_percent",
            ),
            (
                BreakerConfig::builder().slow_call_rate_threshold_percent(0),
                "slow_call_rate_threshold_percent",
            ),
            (
                BreakerConfig::builder().slow_call_duration(Duration::ZERO),
                "slow_call_duration",
            ),
            (
                BreakerConfig::builder().wait_in_open(Duration::ZERO),
                "wait_in_open",
            ),
            (
                BreakerConfig::builder().wait_in_open_exponential(
                    Duration::from_secs(2),
                    2,
                    Duration::from_secs(1),
                    0,
                ),
                "wait_in_open_exponential.max",
            ),
            (
                BreakerConfig::builder().half_open_calls_permitted(0),
                "half_open_calls_permitted",
            ),
        ];
        for (b, field) in cases {
            let err = b.build().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn opens_only_at_minimum_calls_and_threshold() {
        let mut b = CircuitBreaker::new(small());
        assert!(call(&mut b, 0, 1, CallOutcome::Failure));
        assert!(call(&mut b, 1, 1, CallOutcome::Failure));
        assert!(call(&mut b, 2, 1, CallOutcome::Success));
        assert_eq!(b.state(), State::Closed, "3 calls < minimum 4");
        assert!(call(&mut b, 3, 1, CallOutcome::Success));
        assert_eq!(b.state(), State::Open, "2 of 4 failed = 50 %");
        assert_eq!(transitions(&mut b), vec![(State::Closed, State::Open)]);
    }

    #[test]
    fn ignored_outcomes_change_no_count() {
        let mut b = CircuitBreaker::new(small());
        for i in 0..10 {
            call(&mut b, i, 1, CallOutcome::Ignored);
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.metrics(ms(10)).window_calls, 0);
        assert_eq!(b.metrics(ms(10)).totals.ignored, 10);
    }

    #[test]
    fn slow_calls_trip_at_their_own_threshold() {
        let config = BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(4)
            .slow_call_rate_threshold_percent(75)
            .slow_call_duration(Duration::from_millis(100))
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config);
        call(&mut b, 0, 101, CallOutcome::Success);
        call(&mut b, 0, 150, CallOutcome::Success);
        call(&mut b, 0, 100, CallOutcome::Success);
        call(&mut b, 0, 1, CallOutcome::Success);
        assert_eq!(
            b.state(),
            State::Closed,
            "2 of 4 slow < 75 % (exactly 100 ms is not slow)"
        );
        call(&mut b, 0, 500, CallOutcome::Success);
        call(&mut b, 0, 600, CallOutcome::Success);
        assert_eq!(
            b.state(),
            State::Closed,
            "oldest calls leave the window: still 2 of 4"
        );
        call(&mut b, 0, 700, CallOutcome::Success);
        assert_eq!(b.state(), State::Open, "window now holds 3 slow of 4");
    }

    #[test]
    fn open_rejects_with_retry_after_then_half_open_probes_close_it() {
        let mut b = CircuitBreaker::new(small());
        for i in 0..4 {
            call(&mut b, i, 1, CallOutcome::Failure);
        }
        // The 4th failure was recorded at 4 ms: open until 1004 ms, that instant
        // included.
        let r = b.try_acquire(ms(504)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(500));
        assert_eq!(r.state, State::Open);
        let r = b.try_acquire(ms(1004)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_nanos(1));
        // After the wait: two probes, a third is rejected, both succeed -> Closed.
        let p1 = b.try_acquire(ms(1005)).unwrap();
        let p2 = b.try_acquire(ms(1005)).unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.try_acquire(ms(1005)).unwrap_err().state, State::HalfOpen);
        b.on_result(p1, ms(1010), CallOutcome::Success);
        assert_eq!(b.state(), State::HalfOpen);
        b.on_result(p2, ms(1010), CallOutcome::Success);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            transitions(&mut b),
            vec![
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ]
        );
        assert_eq!(
            b.metrics(ms(1010)).window_calls,
            0,
            "closing empties the window"
        );
    }

    #[test]
    fn failing_probes_reopen() {
        let mut b = CircuitBreaker::new(small());
        for i in 0..4 {
            call(&mut b, i, 1, CallOutcome::Failure);
        }
        call(&mut b, 1005, 1, CallOutcome::Failure);
        call(&mut b, 1006, 1, CallOutcome::Success);
        assert_eq!(b.state(), State::Open, "1 of 2 probes failed = 50 %");
        assert_eq!(b.open_until(), Some(ms(1007 + 1000)));
        let m = b.metrics(ms(1008));
        assert_eq!(
            (m.window_calls, m.window_failed, m.failure_rate_permille),
            (2, 1, Some(500)),
            "Open shows the probes' window that opened it"
        );
    }

    #[test]
    fn cancelled_probes_never_leave_it_stuck() {
        let mut b = CircuitBreaker::new(small());
        for i in 0..4 {
            call(&mut b, i, 1, CallOutcome::Failure);
        }
        let p1 = b.try_acquire(ms(1005)).unwrap();
        let p2 = b.try_acquire(ms(1005)).unwrap();
        assert!(b.try_acquire(ms(1005)).is_err(), "both permits are out");
        b.release(p1, ms(1005));
        b.release(p2, ms(1005));
        // The permits came back: new probes are allowed, in the same episode.
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.metrics(ms(1005)).half_open_admitted, 2);
        assert!(call(&mut b, 1005, 1, CallOutcome::Success));
        assert!(call(&mut b, 1005, 1, CallOutcome::Success));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn half_open_wait_max_ends_the_episode_in_the_configured_state() {
        for after in [State::Open, State::Closed] {
            let config = BreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .wait_in_open(Duration::from_millis(100))
                .half_open_calls_permitted(1)
                .half_open_wait_max(Duration::from_millis(50))
                .after_half_open_wait_max(after)
                .build()
                .unwrap();
            let mut b = CircuitBreaker::new(config);
            call(&mut b, 0, 1, CallOutcome::Failure);
            call(&mut b, 0, 1, CallOutcome::Failure);
            // Recorded at 1 ms: open until 101 ms, that instant included.
            assert!(b.try_acquire(ms(101)).is_err());
            let probe = b.try_acquire(ms(102)).unwrap();
            assert_eq!(b.poll_timeout(), Some(ms(152)));
            b.handle_timeout(ms(152));
            assert_eq!(b.state(), after);
            b.on_result(probe, ms(160), CallOutcome::Failure);
            assert_eq!(b.state(), after, "a stale probe changes nothing");
            assert_eq!(b.totals().stale, 1);
        }
        let err = BreakerConfig::builder()
            .after_half_open_wait_max(State::Disabled)
            .build()
            .unwrap_err();
        assert_eq!(err.field, "after_half_open_wait_max");
    }

    #[test]
    fn exponential_wait_grows_caps_and_jitters_down() {
        let config = BreakerConfig::builder()
            .count_window(1)
            .minimum_calls(1)
            .half_open_calls_permitted(1)
            .wait_in_open_exponential(
                Duration::from_millis(100),
                2,
                Duration::from_millis(350),
                20,
            )
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config);
        let mut t = 0;
        let mut waits = Vec::new();
        call(&mut b, t, 0, CallOutcome::Failure);
        for _ in 0..4 {
            let until = b.open_until().unwrap();
            waits.push((until - ms(t)).as_millis() as u64);
            t = until.as_nanos() / 1_000_000 + 1;
            call(&mut b, t, 0, CallOutcome::Failure); // probe fails: open again
        }
        let ceilings = [100, 200, 350, 350];
        for (w, c) in waits.iter().zip(ceilings) {
            assert!(*w <= c && *w >= c * 80 / 100, "wait {w} vs ceiling {c}");
        }
        assert_eq!(config.wait_in_open().min_wait(), Duration::from_millis(80));
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let config = BreakerConfig::builder()
            .time_window(2)
            .minimum_calls(3)
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config);
        call(&mut b, 0, 1, CallOutcome::Failure);
        call(&mut b, 10, 1, CallOutcome::Failure);
        // Two seconds later both have left the window.
        call(&mut b, 2_500, 1, CallOutcome::Failure);
        assert_eq!(b.metrics(ms(2_500)).window_calls, 1);
        assert_eq!(b.state(), State::Closed);
        call(&mut b, 2_600, 1, CallOutcome::Failure);
        call(&mut b, 3_100, 1, CallOutcome::Failure);
        assert_eq!(b.state(), State::Open);
        // A jump of many seconds empties it entirely.
        b.reset(ms(3_200));
        call(&mut b, 3_300, 1, CallOutcome::Failure);
        assert_eq!(b.metrics(ms(3_301)).window_calls, 1);
        assert_eq!(
            b.metrics(ms(5_400)).window_calls,
            0,
            "read later, it has aged"
        );
        call(&mut b, 100_000, 1, CallOutcome::Success);
        assert_eq!(b.metrics(ms(100_001)).window_calls, 1);
    }

    #[test]
    fn manual_states() {
        let mut b = CircuitBreaker::new(small());
        b.force_open(ms(0));
        assert_eq!(b.try_acquire(ms(1)).unwrap_err().state, State::ForcedOpen);
        b.disable(ms(2));
        for i in 0..10 {
            assert!(call(&mut b, i, 1, CallOutcome::Failure));
        }
        assert_eq!(b.state(), State::Disabled);
        b.metrics_only(ms(20));
        for i in 0..10 {
            assert!(call(&mut b, 20 + i, 1, CallOutcome::Failure));
        }
        assert_eq!(b.state(), State::MetricsOnly);
        assert_eq!(b.metrics(ms(30)).failure_rate_permille, Some(1000));
        b.reset(ms(40));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn accounting_adds_up() {
        let mut b = CircuitBreaker::new(small());
        let p = b.try_acquire(ms(0)).unwrap();
        b.release(p, ms(1));
        call(&mut b, 1, 1, CallOutcome::Success);
        call(&mut b, 2, 1, CallOutcome::Ignored);
        let m = b.metrics(ms(3));
        let t = m.totals;
        assert_eq!(t.admitted, t.succeeded + t.failed + t.ignored + t.released);
        assert_eq!(m.in_flight, 0);
    }

    #[test]
    fn events_are_bounded() {
        let config = BreakerConfig::builder().events_max(2).build().unwrap();
        let mut b = CircuitBreaker::new(config);
        for i in 0..5 {
            if i % 2 == 0 {
                b.force_open(ms(i));
            } else {
                b.disable(ms(i));
            }
        }
        assert_eq!(transitions(&mut b).len(), 2);
        assert_eq!(b.totals().events_dropped, 3);
    }

    /// The shortest wait of a long exponential policy saturates instead of overflowing
    /// (it panicked on `Duration::MAX * jitter`).
    #[test]
    fn min_wait_of_huge_waits_does_not_overflow() {
        let huge = WaitInOpen::Exponential {
            initial: Duration::MAX,
            multiplier: Ratio::from(u32::MAX),
            max: Duration::MAX,
            jitter_percent: 50,
        };
        let half = huge.min_wait();
        assert!(half < Duration::MAX && half >= Duration::MAX / 2 - Duration::from_nanos(1));
        let none = WaitInOpen::Exponential {
            initial: Duration::MAX,
            multiplier: Ratio::from(2),
            max: Duration::MAX,
            jitter_percent: 0,
        };
        assert_eq!(none.min_wait(), Duration::MAX);
        let all = WaitInOpen::Exponential {
            initial: Duration::MAX,
            multiplier: Ratio::from(2),
            max: Duration::MAX,
            jitter_percent: 1_000,
        };
        assert_eq!(all.min_wait(), Duration::ZERO);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
    }

    #[test]
    fn half_open_decides_after_min_of_minimum_and_permitted() {
        // minimum 4, 10 permits: the 4th counted probe decides, 6 more could be out.
        let config = BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(4)
            .wait_in_open(Duration::from_millis(10))
            .half_open_calls_permitted(10)
            .build()
            .unwrap();
        assert_eq!(config.half_open_calls_needed(), 4);
        let mut b = CircuitBreaker::new(config);
        for _ in 0..4 {
            call(&mut b, 0, 0, CallOutcome::Failure);
        }
        let late = b.try_acquire(ms(11)).unwrap();
        for _ in 0..3 {
            call(&mut b, 11, 0, CallOutcome::Success);
        }
        assert_eq!(b.state(), State::HalfOpen);
        call(&mut b, 11, 0, CallOutcome::Success);
        assert_eq!(b.state(), State::Closed, "4 of 4 probes succeeded");
        b.on_result(late, ms(12), CallOutcome::Failure);
        assert_eq!(b.metrics(ms(12)).window_calls, 0, "a late probe is stale");
        assert_eq!(b.totals().stale, 1);
    }

    #[test]
    fn ignored_probes_give_their_permit_back() {
        let mut b = CircuitBreaker::new(small());
        for i in 0..4 {
            call(&mut b, i, 1, CallOutcome::Failure);
        }
        for _ in 0..5 {
            assert!(call(&mut b, 1005, 1, CallOutcome::Ignored));
        }
        let m = b.metrics(ms(1006));
        assert_eq!((m.state, m.half_open_permits_left), (State::HalfOpen, 2));
        assert_eq!(m.half_open_admitted, 5);
        assert!(call(&mut b, 1006, 1, CallOutcome::Success));
        assert!(call(&mut b, 1006, 1, CallOutcome::Success));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            transitions(&mut b),
            vec![
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ],
            "no HalfOpen -> HalfOpen"
        );
    }

    #[test]
    fn re_entering_a_state_publishes_nothing_and_reset_publishes_reset() {
        let mut b = CircuitBreaker::new(small());
        b.reset(ms(0));
        assert!(matches!(
            b.poll_event(),
            Some(BreakerEvent::Reset { generation: 1, .. })
        ));
        assert_eq!(b.poll_event(), None, "no Closed -> Closed");
        b.force_open(ms(1));
        b.force_open(ms(2));
        b.disable(ms(3));
        b.disable(ms(4));
        b.metrics_only(ms(5));
        b.metrics_only(ms(6));
        assert_eq!(
            transitions(&mut b),
            vec![
                (State::Closed, State::ForcedOpen),
                (State::ForcedOpen, State::Disabled),
                (State::Disabled, State::MetricsOnly)
            ]
        );
        assert_eq!(b.events_emitted(), 4);
    }

    #[test]
    fn rate_exceeded_events_come_before_the_trip_and_once_in_metrics_only() {
        let mut b = CircuitBreaker::new(small());
        b.metrics_only(ms(0));
        for i in 0..8 {
            call(&mut b, i, 200, CallOutcome::Failure);
        }
        let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(
            events[1],
            BreakerEvent::FailureRateExceeded { permille: 1000, .. }
        ));
        assert!(matches!(
            events[2],
            BreakerEvent::SlowCallRateExceeded { permille: 1000, .. }
        ));
        b.reset(ms(10));
        let _ = std::iter::from_fn(|| b.poll_event()).count();
        for i in 0..4 {
            call(&mut b, 20 + i, 1, CallOutcome::Failure);
        }
        let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        assert!(matches!(
            events[0],
            BreakerEvent::FailureRateExceeded { permille: 1000, .. }
        ));
        assert_eq!(events[1].transition(), Some((State::Closed, State::Open)));
    }

    #[test]
    fn initial_state_and_open_commands() {
        let config = BreakerConfig::builder()
            .wait_in_open(Duration::from_millis(100))
            .initial_state(State::Open)
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.open_until(), Some(ms(100)));
        assert_eq!(b.poll_event(), None, "the initial state is no event");
        assert!(b.try_acquire(ms(100)).is_err());
        assert!(b.try_acquire(ms(101)).is_ok());
        b.transition_to_open_for(ms(200), Duration::from_secs(5))
            .unwrap();
        assert_eq!(b.open_until(), Some(ms(5_200)));
        b.transition_to_open_until(ms(300), ms(400)).unwrap();
        assert_eq!(b.open_until(), Some(ms(400)), "Open -> Open, afresh");
        assert_eq!(
            transitions(&mut b),
            vec![
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Open)
            ]
        );
        b.transition_to_half_open(ms(500)).unwrap();
        b.transition_to_closed(ms(600));
        assert_eq!(b.state(), State::Closed);
        let err = b.transition_to_half_open(ms(700)).unwrap_err();
        assert_eq!((err.from, err.to), (State::Closed, State::HalfOpen));
        b.metrics_only(ms(800));
        assert!(b.transition_to_open(ms(900)).is_err());
        assert_eq!(b.state(), State::MetricsOnly);
    }

    #[test]
    fn ratio_multiplier_and_randomized_wait() {
        let exp = WaitInOpen::Exponential {
            initial: Duration::from_millis(1000),
            multiplier: Ratio::new(3, 2),
            max: Duration::from_secs(60),
            jitter_percent: 0,
        };
        let waits: Vec<u128> = (1..=4).map(|k| exp.ceiling(k).as_millis()).collect();
        assert_eq!(waits, [1000, 1500, 2250, 3375]);
        let config = BreakerConfig::builder()
            .count_window(1)
            .minimum_calls(1)
            .half_open_calls_permitted(1)
            .wait_in_open_randomized(Duration::from_millis(100), 2, Duration::from_secs(1), 50)
            .build()
            .unwrap();
        assert_eq!(config.wait_in_open().min_wait(), Duration::from_millis(50));
        assert_eq!(config.wait_in_open().ceiling(1), Duration::from_millis(150));
        let mut b = CircuitBreaker::new(config);
        let (mut longer, mut shorter) = (false, false);
        let mut t = 0;
        call(&mut b, t, 0, CallOutcome::Failure);
        for _ in 0..40 {
            let until = b.open_until().unwrap();
            let wait = (until - ms(t)).as_millis() as u64;
            // The first opening in a row: 100 ms ± 50 %.
            assert!((50..=150).contains(&wait), "{wait}");
            longer |= wait > 100;
            shorter |= wait < 100;
            t = until.as_nanos() / 1_000_000 + 1;
            call(&mut b, t, 0, CallOutcome::Success); // the probe closes it
            call(&mut b, t, 0, CallOutcome::Failure); // and it trips again
        }
        assert!(longer && shorter, "randomized both ways");
        for (k, bad) in [
            (
                "wait_in_open",
                BreakerConfig::builder().wait_in_open(Duration::from_micros(999)),
            ),
            (
                "wait_in_open_randomized.multiplier",
                BreakerConfig::builder().wait_in_open_randomized(
                    Duration::from_secs(1),
                    Ratio::new(1, 2),
                    Duration::from_secs(2),
                    0,
                ),
            ),
            (
                "failure_rate_threshold_permille",
                BreakerConfig::builder().failure_rate_threshold_permille(1001),
            ),
        ] {
            assert_eq!(bad.build().unwrap_err().field, k);
        }
    }
}
