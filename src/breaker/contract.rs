//! The contract the simulated SMS world drives: [`CallGuard`].
//!
//! A guard stands between callers and a flaky API. It is sans-IO and event-driven: the
//! world tells it what happened (a request arrived, a reply came back, a timeout fired, a
//! retry is due, a caller went away) and the guard answers with a [`Step`]: send an
//! attempt to the API, wait and retry, or answer the caller. The reference
//! implementation, [`Guard`](crate::breaker::guard::Guard), stacks a bulkhead, the
//! circuit breaker, a timeout, retries with a budget and a fallback. Your own
//! implementation gets the whole invariant suite, the fault plans, shrinking and
//! reports by implementing this trait.
//!
//! The world observes the guard only through [`state`](CallGuard::state),
//! [`poll_transition`](CallGuard::poll_transition) and [`metrics`](CallGuard::metrics),
//! and checks the promises against its own counts.

use crate::breaker::circuit::State;
use crate::clock::Instant;
use std::fmt;
use std::time::Duration;

/// What the API said to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiReply {
    /// The message was accepted.
    Ok,
    /// The API answered with an error.
    Err(ApiError),
}

/// The API's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiError {
    /// The API is down (HTTP 503, connection refused).
    Unavailable,
    /// The API failed this call (HTTP 500).
    Internal,
    /// The request itself was bad (an invalid phone number, HTTP 400): says nothing
    /// about the API's health, so a correct classifier ignores it.
    InvalidNumber,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal error",
            ApiError::InvalidNumber => "invalid number",
        })
    }
}

/// Why a caller did not get the API's success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The breaker said no: try again after `retry_after`.
    Rejected {
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// Too many calls in flight.
    BulkheadFull,
    /// The API's error, after any retries.
    Api(ApiError),
    /// The attempt took too long.
    Timeout,
    /// A retry was wanted but the retry budget was spent.
    BudgetExhausted,
    /// No time was left before the caller's deadline for another attempt.
    DeadlineReached,
}

/// The answer a caller gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The API accepted the message.
    Delivered,
    /// The fallback answered instead (queued for later, last good value, default).
    Fallback(Why),
    /// No answer from the API and no fallback: the caller is told why.
    Failed(Why),
}

/// What the guard wants done next for one request.
#[derive(Debug)]
pub enum Step<T> {
    /// Send an attempt to the API now. If `timeout` is set and no reply comes within
    /// it, the world calls [`CallGuard::on_timeout`]; without one it waits for the reply
    /// however long it takes.
    Send {
        /// The guard's handle for this attempt, handed back with its outcome.
        ticket: T,
        /// How long to wait for the reply.
        timeout: Option<Duration>,
    },
    /// Wait `delay`, then call [`CallGuard::on_retry_due`].
    Retry {
        /// The guard's handle for this request, handed back when the retry is due.
        ticket: T,
        /// How long to wait.
        delay: Duration,
    },
    /// The request is finished: give the caller this answer.
    Answer(Answer),
}

/// A state change seen by the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// When.
    pub at: Instant,
}

/// Counts a guard keeps, compared with the world's own at rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardMetrics {
    /// Attempts the breaker admitted (sent to the API).
    pub admitted: u64,
    /// Attempts recorded as success.
    pub succeeded: u64,
    /// Attempts recorded as failure (API errors and timeouts).
    pub failed: u64,
    /// Attempts recorded as ignored.
    pub ignored: u64,
    /// Attempts released without an outcome (their caller went away).
    pub released: u64,
}

/// A guard between callers and a flaky API, driven by events. See the module docs.
///
/// Every ticket the guard hands out comes back exactly once: through
/// [`on_reply`](CallGuard::on_reply), [`on_timeout`](CallGuard::on_timeout),
/// [`on_retry_due`](CallGuard::on_retry_due) or [`on_cancel`](CallGuard::on_cancel).
pub trait CallGuard {
    /// The guard's handle for a request in progress.
    type Ticket: fmt::Debug;

    /// A caller asks to send a message now.
    fn on_request(&mut self, now: Instant) -> Step<Self::Ticket>;

    /// The API replied to the attempt behind `ticket`.
    fn on_reply(
        &mut self,
        ticket: Self::Ticket,
        now: Instant,
        reply: ApiReply,
    ) -> Step<Self::Ticket>;

    /// The attempt behind `ticket` reached its timeout with no reply.
    fn on_timeout(&mut self, ticket: Self::Ticket, now: Instant) -> Step<Self::Ticket>;

    /// The retry wait behind `ticket` is over.
    fn on_retry_due(&mut self, ticket: Self::Ticket, now: Instant) -> Step<Self::Ticket>;

    /// The caller went away; `ticket` is an attempt in flight or a retry wait.
    fn on_cancel(&mut self, ticket: Self::Ticket, now: Instant);

    /// The breaker's state now.
    fn state(&self) -> State;

    /// The next state change, oldest first.
    fn poll_transition(&mut self) -> Option<Transition>;

    /// The guard's counts.
    fn metrics(&self) -> GuardMetrics;
}
