//! Circuit breaker for a flaky external API (an SMS gateway, say), with its companions.
//!
//! - [`circuit`]: the sans-IO [`CircuitBreaker`] core (Resilience4j's states and knobs).
//! - [`timeout`], [`retry`] (backoff with full jitter, retry budget), [`bulkhead`],
//!   [`fallback`]: sans-IO companions that compose with it. Retries sit *inside* the
//!   breaker: every attempt asks it for a permit.

pub mod bulkhead;
pub mod circuit;
pub mod contract;
pub mod error;
pub mod fallback;
pub mod guard;
#[cfg(feature = "hosted")]
pub mod hosted;
#[cfg(feature = "sim")]
pub mod invariants;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
pub(crate) mod stack;
pub use crate::retry;
pub mod timeout;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "sim")]
pub mod world;

pub use circuit::{
    BreakerConfig, BreakerConfigBuilder, BreakerEvent, CallOutcome, CircuitBreaker,
    IllegalTransition, Metrics, Permit, Ratio, Rejected, SlidingWindow, State, Totals,
    TransitionReason, WaitInOpen,
};
pub use error::{CallError, ConfigError};
