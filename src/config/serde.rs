//! Serde for the builder-made configurations (see the [parent module's
//! docs](super#reading-a-configuration-from-a-file)).
//!
//! Each configuration has a private mirror struct whose keys are its builder's method
//! names. Writing fills the mirror from the public getters; reading fills it from the
//! file and replays every key it holds on a fresh builder, so a configuration read from
//! a file is validated by [`build`](crate::breaker::BreakerConfigBuilder::build) exactly
//! as one built in code, and a key left out keeps the builder's default. Unknown keys
//! are refused; so is `null` (leave the key out to take the default).
//!
//! Only public getters and builder methods are used here, so a configuration's own file
//! owns its fields and its validation, and this one only spells them.

use std::time::Duration;

use ::serde::de::Error as _;
use ::serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::breaker::circuit::Ratio;
use crate::breaker::{BreakerConfig, SlidingWindow, State, WaitInOpen};
use crate::bus::BusConfig;
use crate::config::ConfigError;
use crate::queue::QueueConfig;
use crate::retry::Backoff;
use crate::saga::SagaConfig;
use crate::saga::services::StepId;
use crate::saga::twopc::core::TwoPcConfig;

/// Reads a key that is present as `Some(value)`; with `#[serde(default)]`, an absent key
/// is `None`. Unlike `Option`'s own impl, a `null` is refused rather than taken as the
/// default.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A builder's `backoff(base, cap)` call: both halves, in [`Backoff`]'s own serde form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffArgs {
    base: Duration,
    cap: Duration,
}

impl From<Backoff> for BackoffArgs {
    fn from(backoff: Backoff) -> Self {
        BackoffArgs {
            base: backoff.base(),
            cap: backoff.cap(),
        }
    }
}

/// Implements `Serialize` and `Deserialize` for `$config` through its mirror `$data`:
/// `From<&$config> for $data` writes, `$data::build` reads (through the builder).
macro_rules! through_builder {
    ($config:ty, $data:ty) => {
        impl Serialize for $config {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$data>::from(self).serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $config {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$data>::deserialize(d)?.build().map_err(D::Error::custom)
            }
        }
    };
}

// ----- breaker -----

/// The builder's `wait_in_open_exponential(initial, multiplier, max, jitter_percent)`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExponentialArgs {
    initial: Duration,
    multiplier: Ratio,
    max: Duration,
    jitter_percent: u32,
}

/// The builder's `wait_in_open_randomized(initial, multiplier, max,
/// randomization_percent)`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomizedArgs {
    initial: Duration,
    multiplier: Ratio,
    max: Duration,
    randomization_percent: u32,
}

/// [`BreakerConfig`]'s serde form. Of `count_window`/`time_window`, of
/// `wait_in_open`/`wait_in_open_exponential`/`wait_in_open_randomized`, and of each
/// threshold's `_percent`/`_permille`, at most one each. Thresholds are written in
/// permille.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerConfigData {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    count_window: Option<u32>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    time_window: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    minimum_calls: Option<u32>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    failure_rate_threshold_percent: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    failure_rate_threshold_permille: Option<u32>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    slow_call_rate_threshold_percent: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    slow_call_rate_threshold_permille: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    slow_call_duration: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    wait_in_open: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    wait_in_open_exponential: Option<ExponentialArgs>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    wait_in_open_randomized: Option<RandomizedArgs>,
    #[serde(default, deserialize_with = "present")]
    half_open_calls_permitted: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    half_open_wait_max: Option<Duration>,
    #[serde(default, deserialize_with = "present")]
    after_half_open_wait_max: Option<State>,
    #[serde(default, deserialize_with = "present")]
    automatic_transition: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    initial_state: Option<State>,
    #[serde(default, deserialize_with = "present")]
    events_max: Option<usize>,
}

impl From<&BreakerConfig> for BreakerConfigData {
    fn from(c: &BreakerConfig) -> Self {
        let (count_window, time_window) = match c.window() {
            SlidingWindow::Count { size } => (Some(size), None),
            SlidingWindow::Time { size_secs } => (None, Some(size_secs)),
        };
        let (mut wait_in_open, mut wait_in_open_exponential, mut wait_in_open_randomized) =
            (None, None, None);
        match c.wait_in_open() {
            WaitInOpen::Fixed(d) => wait_in_open = Some(d),
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                jitter_percent,
            } => {
                wait_in_open_exponential = Some(ExponentialArgs {
                    initial,
                    multiplier,
                    max,
                    jitter_percent,
                })
            }
            WaitInOpen::Randomized {
                initial,
                multiplier,
                max,
                randomization_percent,
            } => {
                wait_in_open_randomized = Some(RandomizedArgs {
                    initial,
                    multiplier,
                    max,
                    randomization_percent,
                })
            }
        }
        BreakerConfigData {
            count_window,
            time_window,
            minimum_calls: Some(c.minimum_calls()),
            failure_rate_threshold_percent: None,
            failure_rate_threshold_permille: Some(c.failure_rate_threshold_permille()),
            slow_call_rate_threshold_percent: None,
            slow_call_rate_threshold_permille: Some(c.slow_call_rate_threshold_permille()),
            slow_call_duration: Some(c.slow_call_duration()),
            wait_in_open,
            wait_in_open_exponential,
            wait_in_open_randomized,
            half_open_calls_permitted: Some(c.half_open_calls_permitted()),
            half_open_wait_max: Some(c.half_open_wait_max()),
            after_half_open_wait_max: Some(c.after_half_open_wait_max()),
            automatic_transition: Some(c.automatic_transition()),
            initial_state: Some(c.initial_state()),
            events_max: Some(c.events_max()),
        }
    }
}

impl BreakerConfigData {
    fn build(self) -> Result<BreakerConfig, ConfigError> {
        let mut b = BreakerConfig::builder();
        match (self.count_window, self.time_window) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "time_window",
                    "must not be given with `count_window` (a breaker has one window)",
                ));
            }
            (Some(size), None) => b = b.count_window(size),
            (None, Some(size_secs)) => b = b.time_window(size_secs),
            (None, None) => {}
        }
        match (
            self.wait_in_open,
            self.wait_in_open_exponential,
            self.wait_in_open_randomized,
        ) {
            (Some(d), None, None) => b = b.wait_in_open(d),
            (None, Some(e), None) => {
                b = b.wait_in_open_exponential(e.initial, e.multiplier, e.max, e.jitter_percent)
            }
            (None, None, Some(r)) => {
                b = b.wait_in_open_randomized(
                    r.initial,
                    r.multiplier,
                    r.max,
                    r.randomization_percent,
                )
            }
            (None, None, None) => {}
            (_, _, Some(_)) => {
                return Err(ConfigError::new(
                    "wait_in_open_randomized",
                    "must not be given with `wait_in_open` or `wait_in_open_exponential` \
                     (a breaker has one wait policy)",
                ));
            }
            (Some(_), Some(_), None) => {
                return Err(ConfigError::new(
                    "wait_in_open_exponential",
                    "must not be given with `wait_in_open` (a breaker has one wait policy)",
                ));
            }
        }
        if let Some(n) = self.minimum_calls {
            b = b.minimum_calls(n);
        }
        match (
            self.failure_rate_threshold_percent,
            self.failure_rate_threshold_permille,
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "failure_rate_threshold_permille",
                    "must not be given with `failure_rate_threshold_percent` (one threshold)",
                ));
            }
            (Some(p), None) => b = b.failure_rate_threshold_percent(p),
            (None, Some(p)) => b = b.failure_rate_threshold_permille(p),
            (None, None) => {}
        }
        match (
            self.slow_call_rate_threshold_percent,
            self.slow_call_rate_threshold_permille,
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "slow_call_rate_threshold_permille",
                    "must not be given with `slow_call_rate_threshold_percent` (one threshold)",
                ));
            }
            (Some(p), None) => b = b.slow_call_rate_threshold_percent(p),
            (None, Some(p)) => b = b.slow_call_rate_threshold_permille(p),
            (None, None) => {}
        }
        if let Some(d) = self.slow_call_duration {
            b = b.slow_call_duration(d);
        }
        if let Some(n) = self.half_open_calls_permitted {
            b = b.half_open_calls_permitted(n);
        }
        if let Some(d) = self.half_open_wait_max {
            b = b.half_open_wait_max(d);
        }
        if let Some(state) = self.after_half_open_wait_max {
            b = b.after_half_open_wait_max(state);
        }
        if let Some(on) = self.automatic_transition {
            b = b.automatic_transition(on);
        }
        if let Some(state) = self.initial_state {
            b = b.initial_state(state);
        }
        if let Some(n) = self.events_max {
            b = b.events_max(n);
        }
        b.build()
    }
}

through_builder!(BreakerConfig, BreakerConfigData);

// ----- bus -----

/// [`BusConfig`]'s serde form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusConfigData {
    #[serde(default, deserialize_with = "present")]
    capacity: Option<usize>,
    #[serde(default, deserialize_with = "present")]
    attempts_max: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    backoff: Option<BackoffArgs>,
    #[serde(default, deserialize_with = "present")]
    dead_letters_max: Option<usize>,
}

impl From<&BusConfig> for BusConfigData {
    fn from(c: &BusConfig) -> Self {
        BusConfigData {
            capacity: Some(c.capacity()),
            attempts_max: Some(c.attempts_max()),
            backoff: Some(c.backoff().into()),
            dead_letters_max: Some(c.dead_letters_max()),
        }
    }
}

impl BusConfigData {
    fn build(self) -> Result<BusConfig, ConfigError> {
        let mut b = BusConfig::builder();
        if let Some(n) = self.capacity {
            b = b.capacity(n);
        }
        if let Some(n) = self.attempts_max {
            b = b.attempts_max(n);
        }
        if let Some(backoff) = self.backoff {
            b = b.backoff(backoff.base, backoff.cap);
        }
        if let Some(n) = self.dead_letters_max {
            b = b.dead_letters_max(n);
        }
        b.build()
    }
}

through_builder!(BusConfig, BusConfigData);

// ----- queue -----

/// [`QueueConfig`]'s serde form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueConfigData {
    #[serde(default, deserialize_with = "present")]
    visibility_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "present")]
    attempts_max: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    backoff: Option<BackoffArgs>,
    // The knobs whose default is "off" are written only when set, so a default
    // configuration reads and writes as it did before they existed.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    leases_per_target_max: Option<u32>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    dead_letters_max: Option<usize>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    redrive_after: Option<RedriveArgs>,
}

/// A builder's `redrive_after(after, redrives_max)` call.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveArgs {
    after: Duration,
    redrives_max: u32,
}

impl From<&QueueConfig> for QueueConfigData {
    fn from(c: &QueueConfig) -> Self {
        QueueConfigData {
            visibility_timeout: Some(c.visibility_timeout()),
            attempts_max: Some(c.attempts_max()),
            backoff: Some(c.backoff().into()),
            leases_per_target_max: c.leases_per_target_max(),
            dead_letters_max: c.dead_letters_max(),
            redrive_after: c.redrive().map(|r| RedriveArgs {
                after: r.after(),
                redrives_max: r.redrives_max(),
            }),
        }
    }
}

impl QueueConfigData {
    fn build(self) -> Result<QueueConfig, ConfigError> {
        let mut b = QueueConfig::builder();
        if let Some(d) = self.visibility_timeout {
            b = b.visibility_timeout(d);
        }
        if let Some(n) = self.attempts_max {
            b = b.attempts_max(n);
        }
        if let Some(backoff) = self.backoff {
            b = b.backoff(backoff.base, backoff.cap);
        }
        if let Some(n) = self.leases_per_target_max {
            b = b.leases_per_target_max(n);
        }
        if let Some(n) = self.dead_letters_max {
            b = b.dead_letters_max(n);
        }
        if let Some(r) = self.redrive_after {
            b = b.redrive_after(r.after, r.redrives_max);
        }
        b.build()
    }
}

through_builder!(QueueConfig, QueueConfigData);

#[cfg(feature = "tokio")]
mod pool {
    use super::*;
    use crate::queue::tokio::PoolConfig;

    /// [`PoolConfig`]'s serde form.
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct PoolConfigData {
        #[serde(default, deserialize_with = "present")]
        workers: Option<usize>,
        #[serde(default, deserialize_with = "present")]
        poll_interval: Option<Duration>,
    }

    impl From<&PoolConfig> for PoolConfigData {
        fn from(c: &PoolConfig) -> Self {
            PoolConfigData {
                workers: Some(c.workers()),
                poll_interval: Some(c.poll_interval()),
            }
        }
    }

    impl PoolConfigData {
        fn build(self) -> Result<PoolConfig, ConfigError> {
            let mut b = PoolConfig::builder();
            if let Some(n) = self.workers {
                b = b.workers(n);
            }
            if let Some(d) = self.poll_interval {
                b = b.poll_interval(d);
            }
            b.build()
        }
    }

    through_builder!(PoolConfig, PoolConfigData);
}

// ----- sagas -----

/// [`SagaConfig`]'s serde form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SagaConfigData {
    #[serde(default, deserialize_with = "present")]
    step_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "present")]
    attempts_max: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    compensation_attempts_max: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    backoff: Option<BackoffArgs>,
    #[serde(default, deserialize_with = "present")]
    steps: Option<Vec<StepId>>,
    #[serde(default, deserialize_with = "present")]
    seed: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    deadline_from_sent: Option<bool>,
}

impl From<&SagaConfig> for SagaConfigData {
    fn from(c: &SagaConfig) -> Self {
        SagaConfigData {
            step_timeout: Some(c.step_timeout()),
            attempts_max: Some(c.attempts_max()),
            compensation_attempts_max: Some(c.compensation_attempts_max()),
            backoff: Some(c.backoff().into()),
            steps: Some(c.steps().to_vec()),
            seed: Some(c.seed()),
            deadline_from_sent: Some(c.deadline_from_sent()),
        }
    }
}

impl SagaConfigData {
    fn build(self) -> Result<SagaConfig, ConfigError> {
        let mut b = SagaConfig::builder();
        if let Some(d) = self.step_timeout {
            b = b.step_timeout(d);
        }
        if let Some(n) = self.attempts_max {
            b = b.attempts_max(n);
        }
        if let Some(n) = self.compensation_attempts_max {
            b = b.compensation_attempts_max(n);
        }
        if let Some(backoff) = self.backoff {
            b = b.backoff(backoff.base, backoff.cap);
        }
        if let Some(steps) = &self.steps {
            b = b.steps(steps);
        }
        if let Some(seed) = self.seed {
            b = b.seed(seed);
        }
        if let Some(on) = self.deadline_from_sent {
            b = b.deadline_from_sent(on);
        }
        b.build()
    }
}

through_builder!(SagaConfig, SagaConfigData);

/// [`TwoPcConfig`]'s serde form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TwoPcConfigData {
    #[serde(default, deserialize_with = "present")]
    vote_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "present")]
    resend_interval: Option<Duration>,
}

impl From<&TwoPcConfig> for TwoPcConfigData {
    fn from(c: &TwoPcConfig) -> Self {
        TwoPcConfigData {
            vote_timeout: Some(c.vote_timeout()),
            resend_interval: Some(c.resend_interval()),
        }
    }
}

impl TwoPcConfigData {
    fn build(self) -> Result<TwoPcConfig, ConfigError> {
        let mut b = TwoPcConfig::builder();
        if let Some(d) = self.vote_timeout {
            b = b.vote_timeout(d);
        }
        if let Some(d) = self.resend_interval {
            b = b.resend_interval(d);
        }
        b.build()
    }
}

through_builder!(TwoPcConfig, TwoPcConfigData);
