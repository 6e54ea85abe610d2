//! Configuration errors, shared by every pattern's builders: a rejected value names
//! its field and says what is wrong with it.

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
