//! The tokio adapter: a thread-safe [`SharedBreaker`] with RAII permits, and
//! [`Resilient`], the whole stack (bulkhead, circuit breaker, timeouts, retries with
//! backoff and a budget, fallback) around one async API, and (feature `tower`) the same
//! stack as a tower layer around any `tower::Service`
#![cfg_attr(
    feature = "tower",
    doc = "([`tower::ResilienceLayer`](crate::breaker::tokio::tower))."
)]
#![cfg_attr(not(feature = "tower"), doc = "(`tower::ResilienceLayer`).")]
//!
//! Time comes from `tokio::time::Instant`, converted to the cores' [`Instant`](crate::clock::Instant)
//! (nanoseconds since the adapter was built), so tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) drives everything in
//! tests.
//!
//! Cancellation safety: a [`SharedPermit`] dropped without
//! [`record`](SharedPermit::record) (because the caller's future was dropped) hands its
//! permit back with [`CircuitBreaker::release`](crate::breaker::CircuitBreaker::release), and the bulkhead slot frees itself on
//! drop, so a cancelled half-open probe never leaves the breaker stuck and a cancelled
//! call never holds a slot. Dropping [`Resilient::call`]'s future at any await point is
//! safe.
//!
//! # Example: an SMS gateway behind a tokio service
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use faultline::breaker::fallback::FallbackPolicy;
//! use faultline::retry::{Backoff, RetryBudget, RetryPolicy};
//! use faultline::breaker::tokio::Resilient;
//! use faultline::breaker::{BreakerConfig, CallError, CallOutcome};
//!
//! /// What the SMS provider can answer.
//! #[derive(Debug)]
//! enum SmsError {
//!     /// Our fault: retrying or tripping the breaker would not help.
//!     InvalidNumber,
//!     /// Theirs.
//!     Unavailable,
//! }
//!
//! impl std::fmt::Display for SmsError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str(match self {
//!             SmsError::InvalidNumber => "invalid number",
//!             SmsError::Unavailable => "provider unavailable",
//!         })
//!     }
//! }
//!
//! /// The raw API call (an HTTP request in real life).
//! async fn send_sms(to: String, body: &'static str) -> Result<String, SmsError> {
//!     if !to.starts_with('+') {
//!         return Err(SmsError::InvalidNumber);
//!     }
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//!     Ok(format!("msg-{}-{}", to.len(), body.len()))
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Built once at start-up and shared by every request handler.
//!     let sms: Arc<Resilient<String, SmsError>> = Arc::new(
//!         Resilient::builder(
//!             BreakerConfig::builder()
//!                 .count_window(50)
//!                 .minimum_calls(20)
//!                 .failure_rate_threshold_percent(50)
//!                 .wait_in_open(Duration::from_secs(30))
//!                 .half_open_calls_permitted(3)
//!                 .build()?,
//!         )
//!         .timeout(Duration::from_secs(2)) // the caller's deadline, retries included
//!         .attempt_timeout(Duration::from_millis(800))
//!         .retry(RetryPolicy::new(
//!             3,
//!             Backoff::new(Duration::from_millis(100), Duration::from_secs(1))?,
//!         )?)
//!         .budget(RetryBudget::new(Duration::from_secs(10), 5, 20)?)
//!         .bulkhead(50)
//!         .classify(|e: &SmsError| match e {
//!             SmsError::InvalidNumber => CallOutcome::Ignored,
//!             SmsError::Unavailable => CallOutcome::Failure,
//!         })
//!         .fallback(FallbackPolicy::None)
//!         .build()?,
//!     );
//!
//!     // In a request handler:
//!     let handler = {
//!         let sms = Arc::clone(&sms);
//!         tokio::spawn(async move {
//!             let to = String::from("+15550100");
//!             match sms.call(|| send_sms(to.clone(), "your code is 1234")).await {
//!                 Ok(id) => format!("200 sent {id}"),
//!                 Err(CallError::Unavailable { retry_after }) => {
//!                     format!("503 Retry-After: {}", retry_after.as_secs().max(1))
//!                 }
//!                 Err(CallError::Failed(SmsError::InvalidNumber)) => "400".to_string(),
//!                 Err(other) => format!("502 {other}"),
//!             }
//!         })
//!     };
//!     let response = handler.await?;
//!     assert!(response.starts_with("200"), "{response}");
//!     assert_eq!(sms.breaker().metrics().totals.succeeded, 1);
//!     Ok(())
//! }
//! ```

#[cfg(test)]
mod lockstep;
mod resilient;
mod shared;
#[cfg(test)]
mod tests;
#[cfg(feature = "tower")]
pub mod tower;

pub use resilient::{
    Answer, FallbackCause, Resilient, ResilientBuilder, Source, Upstream, UpstreamBuilder,
};
pub use shared::{SharedBreaker, SharedPermit};
