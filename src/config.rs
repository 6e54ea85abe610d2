//! Configuration errors, shared by every pattern's builders: a rejected value names
//! its field and says what is wrong with it.
//!
//! # Reading a configuration from a file
//!
//! Every configuration made by a builder — [`BreakerConfig`](crate::breaker::BreakerConfig),
//! [`BusConfig`](crate::bus::BusConfig), [`QueueConfig`](crate::queue::QueueConfig),
#![cfg_attr(
    feature = "tokio",
    doc = "[`PoolConfig`](crate::queue::tokio::PoolConfig),"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "`PoolConfig` (`queue::tokio`, feature `tokio`),"
)]
//! [`SagaConfig`](crate::saga::SagaConfig) and
//! [`TwoPcConfig`](crate::saga::twopc::core::TwoPcConfig) — is `Serialize` and
//! `Deserialize`, as an object whose keys are its builder's method names:
//!
//! - Reading goes through the builder: each key present is the builder call of that
//!   name, then `build` validates, so a bad value is refused with the same
//!   [`ConfigError`] (naming the field) as in code, as the serde error's message.
//! - A key left out keeps the builder's default: write only what you change. `null` is
//!   refused (leave the key out instead), and so is an unknown key, so a misspelt knob
//!   is an error rather than silently the default.
//! - A builder call of several arguments is an object of them: `backoff` is
//!   `{"base": .., "cap": ..}` (both required, [`Backoff`](crate::retry::Backoff)'s own
//!   form), the breaker's `wait_in_open_exponential` is `{"initial": .., "multiplier":
//!   .., "max": .., "jitter_percent": ..}`. Of two calls that set the same thing
//!   (`count_window`/`time_window`, `wait_in_open`/`wait_in_open_exponential`), give
//!   at most one.
//! - A duration is serde's form of [`Duration`](std::time::Duration), as everywhere in
//!   the crate: `{"secs": 2, "nanos": 500000000}` is 2.5 s.
//! - Writing gives every key, from the public getters; reading that back gives an equal
//!   configuration.
//!
//! ```
//! use faultline::bus::BusConfig;
//!
//! let config: BusConfig = serde_json::from_str(r#"{"capacity": 64}"#)?;
//! assert_eq!(config, BusConfig::builder().capacity(64).build()?);
//!
//! let err = serde_json::from_str::<BusConfig>(r#"{"capacity": 0}"#).unwrap_err();
//! assert!(err.to_string().contains("`capacity` must be 1 to 1000000 events, got 0"));
//! let err = serde_json::from_str::<BusConfig>(r#"{"capacty": 64}"#).unwrap_err();
//! assert!(err.to_string().contains("unknown field `capacty`"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod serde;

/// A configuration value was rejected. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}` {reason}")]
pub struct ConfigError {
    /// The builder field at fault, e.g. `failure_rate_threshold_percent`.
    pub field: &'static str,
    /// What is wrong with it, with the value given.
    pub reason: String,
}

impl ConfigError {
    /// A rejection of `field` because of `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}
