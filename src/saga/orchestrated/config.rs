//! The orchestrator's configuration: [`SagaConfig`], validated by
//! [`SagaConfigBuilder::build`] (a typed [`ConfigError`] naming the field, never a
//! panic). Attempts are bounded as every retry in the crate is, by
//! [`RetryPolicy`].
//!
//! ```
//! use faultline::saga::{SagaConfig, StepId};
//! use std::time::Duration;
//!
//! let config = SagaConfig::builder()
//!     .step_timeout(Duration::from_millis(300))
//!     .attempts_max(3)
//!     .steps(&[StepId::INVENTORY, StepId::PAYMENT])
//!     .build()?;
//! assert_eq!(config.steps(), [StepId::INVENTORY, StepId::PAYMENT]);
//! assert!(SagaConfig::builder().attempts_max(0).build().is_err());
//! # Ok::<(), faultline::config::ConfigError>(())
//! ```

use crate::config::ConfigError;
use crate::retry::{Backoff, RetryPolicy};
use crate::saga::services::StepId;
use std::collections::BTreeSet;
use std::time::Duration;

/// A validated orchestrator configuration; build it with [`SagaConfig::builder`].
///
/// Serde: an object keyed by the builder's methods, read through the builder (a bad
/// value is refused with its [`ConfigError`], an unknown key too, a key left out keeps
/// the default), e.g. `{"attempts_max": 5, "steps": ["inventory", "payment"]}`; see
/// [`config`](crate::config#reading-a-configuration-from-a-file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaConfig {
    pub(super) step_timeout: Duration,
    pub(super) attempts_max: u32,
    pub(super) compensation_attempts_max: u32,
    pub(super) backoff: Backoff,
    pub(super) steps: Vec<StepId>,
    pub(super) seed: u64,
    pub(super) deadline_from_sent: bool,
}

impl Default for SagaConfig {
    /// The [builder](SagaConfig::builder)'s defaults.
    fn default() -> Self {
        SagaConfig {
            step_timeout: Duration::from_secs(1),
            attempts_max: 3,
            compensation_attempts_max: 10,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
                .unwrap_or_default(),
            steps: StepId::ALL.to_vec(),
            seed: DEFAULT_SEED,
            deadline_from_sent: false,
        }
    }
}

const DEFAULT_SEED: u64 = 0x5a6a_5f73_6167_6121;

impl SagaConfig {
    /// Defaults: 1 s per attempt, 3 attempts per action, 10 per compensation, backoff
    /// from 50 ms up to 2 s, steps order, inventory, payment, a fixed seed.
    pub fn builder() -> SagaConfigBuilder {
        SagaConfigBuilder {
            step_timeout: Duration::from_secs(1),
            attempts_max: 3,
            compensation_attempts_max: 10,
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            steps: StepId::ALL.to_vec(),
            seed: DEFAULT_SEED,
            deadline_from_sent: false,
        }
    }
    /// True when each attempt's deadline starts at [`Orchestrator::on_sent`](crate::saga::Orchestrator::on_sent).
    pub fn deadline_from_sent(&self) -> bool {
        self.deadline_from_sent
    }
    /// How long an attempt waits for its reply.
    pub fn step_timeout(&self) -> Duration {
        self.step_timeout
    }
    /// Attempts per step action.
    pub fn attempts_max(&self) -> u32 {
        self.attempts_max
    }
    /// Attempts per compensation before the saga fails.
    pub fn compensation_attempts_max(&self) -> u32 {
        self.compensation_attempts_max
    }
    /// The retry backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
    /// The definition's steps, in execution order.
    pub fn steps(&self) -> &[StepId] {
        &self.steps
    }
    /// The jitter generator's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Builder for [`SagaConfig`].
#[derive(Clone, Debug)]
pub struct SagaConfigBuilder {
    step_timeout: Duration,
    attempts_max: u32,
    compensation_attempts_max: u32,
    backoff: (Duration, Duration),
    steps: Vec<StepId>,
    seed: u64,
    deadline_from_sent: bool,
}

impl SagaConfigBuilder {
    /// When true, an attempt's deadline starts only when the driver reports that its
    /// command left ([`Orchestrator::on_sent`](crate::saga::Orchestrator::on_sent)); until then no timer runs for it. Use it
    /// when commands may wait behind log writes (a busy disk), so that the wait is not
    /// taken for a silent service; the driver must then report every send. Default
    /// false: the deadline counts from when the command was emitted, and `on_sent` may
    /// only move it later.
    pub fn deadline_from_sent(mut self, on: bool) -> Self {
        self.deadline_from_sent = on;
        self
    }
    /// How long an attempt waits for its reply (more than zero). Default: 1 s.
    pub fn step_timeout(mut self, d: Duration) -> Self {
        self.step_timeout = d;
        self
    }
    /// Attempts per step action (1 to [`RetryPolicy::ATTEMPTS_MAX_LIMIT`]). Default: 3.
    pub fn attempts_max(mut self, n: u32) -> Self {
        self.attempts_max = n;
        self
    }
    /// Attempts per compensation before the saga fails (1 to
    /// [`RetryPolicy::ATTEMPTS_MAX_LIMIT`]). Default: 10.
    pub fn compensation_attempts_max(mut self, n: u32) -> Self {
        self.compensation_attempts_max = n;
        self
    }
    /// Retry backoff: full jitter up to `min(cap, base * 2^(n-1))` after attempt `n`.
    /// Default: 50 ms up to 2 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
        self
    }
    /// The saga's definition: its steps in execution order (at least one, none
    /// repeated). The order given is the order they run in (and compensate in reverse),
    /// whatever their names. Default: the checkout's order, inventory, payment.
    pub fn steps(mut self, steps: &[StepId]) -> Self {
        self.steps = steps.to_vec();
        self
    }
    /// The seed of the backoff jitter. Default: a fixed seed, the same for every saga.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field: `step_timeout` (zero), `attempts_max`,
    /// `compensation_attempts_max` (out of range), `steps` (empty or repeated), `base`
    /// or `cap` (see [`Backoff::new`]).
    pub fn build(self) -> Result<SagaConfig, ConfigError> {
        if self.step_timeout.is_zero() {
            return Err(ConfigError::new(
                "step_timeout",
                "must be greater than zero, got 0ns",
            ));
        }
        let backoff = Backoff::new(self.backoff.0, self.backoff.1)?;
        let retry = RetryPolicy::new(self.attempts_max, backoff)?;
        let compensation = RetryPolicy::new(self.compensation_attempts_max, backoff)
            .map_err(|e| ConfigError::new("compensation_attempts_max", e.reason))?;
        if self.steps.is_empty() {
            return Err(ConfigError::new(
                "steps",
                "must name at least one step, got []",
            ));
        }
        let mut seen = BTreeSet::new();
        if let Some(repeated) = self.steps.iter().find(|s| !seen.insert(**s)) {
            let names: Vec<&str> = self.steps.iter().map(|s| s.name()).collect();
            return Err(ConfigError::new(
                "steps",
                format!(
                    "must not repeat a step, got {repeated:?} twice in {names:?}",
                    repeated = repeated.name()
                ),
            ));
        }
        Ok(SagaConfig {
            step_timeout: self.step_timeout,
            attempts_max: retry.attempts_max(),
            compensation_attempts_max: compensation.attempts_max(),
            backoff,
            steps: self.steps,
            seed: self.seed,
            deadline_from_sent: self.deadline_from_sent,
        })
    }
}
