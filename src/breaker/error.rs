//! Errors of the breaker and its companions.

pub use crate::config::ConfigError;

use std::time::Duration;

/// Why a guarded call produced no value from the API (and no fallback answered).
///
/// Which refusal becomes which variant: the bulkhead's is
/// [`BulkheadFull`](CallError::BulkheadFull); the breaker's is
/// [`Unavailable`](CallError::Unavailable); a retry the budget refuses ends the call with
/// the error of the attempt before it ([`Failed`](CallError::Failed) or
/// [`Timeout`](CallError::Timeout)), the most useful thing the caller can be told.
///
/// `Failed` carries the API's error as its [`source`](std::error::Error::source), so
/// `CallError<E>` is an [`Error`](std::error::Error) when `E` is one; its own message
/// does not repeat the source's (error reporters such as `anyhow` print the chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The circuit breaker rejected the call (it is open, or half-open with every probe
    /// permit taken) and no fallback was configured: try again after `retry_after`.
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
    /// The API answered with an error (after any retries): the last attempt's.
    #[error("the call failed")]
    Failed(#[source] E),
}

impl<E> CallError<E> {
    /// A stable lower-case name of the kind of error (`unavailable`, `bulkhead_full`,
    /// `timeout`, `failed`): the `error` field of the `tracing` event of a failed call.
    pub const fn kind(&self) -> &'static str {
        match self {
            CallError::Unavailable { .. } => "unavailable",
            CallError::BulkheadFull { .. } => "bulkhead_full",
            CallError::Timeout { .. } => "timeout",
            CallError::Failed(_) => "failed",
        }
    }
}
