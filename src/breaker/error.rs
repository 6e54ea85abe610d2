//! Errors of the breaker and its companions.

pub use crate::config::ConfigError;

use std::time::Duration;

/// Why a guarded call produced no value from the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker is open (or the budget, or the bulkhead, said no) and no fallback was
    /// configured: try again after `retry_after`.
    #[error("unavailable, retry after {retry_after:?}")]
    Unavailable {
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// The bulkhead is full: too many calls in flight.
    #[error("bulkhead full: {max_concurrent} calls already in flight")]
    BulkheadFull {
        /// The bulkhead's limit.
        max_concurrent: u32,
    },
    /// The call took longer than the timeout.
    #[error("timed out after {timeout:?}")]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The API answered with an error (after any retries).
    #[error("the call failed: {0}")]
    Failed(E),
}
