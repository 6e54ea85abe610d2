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
//! # Declared policies
//!
//! A guard is judged by the [`Policy`] it declares through [`CallGuard::policy`], built
//! from its own configuration: its [`TripRule`] (a failure or slow-call rate over a
//! window, as the reference, or N consecutive failures), the probes it permits per
//! half-open episode, the bounds of its wait in open, how soon it answers a caller and
//! how many requests it lets in at once. The universal promises (no flood beyond what
//! the declared policy allows, no call while open within the declared wait, half-open
//! probes within the declared limit, a timely answer, Closed again after recovery) are
//! checked against that declaration. Whether the declaration equals the reference's
//! exact settings for a seed's knobs is a separate check,
//! `breaker.conformance`, which the reference
//! scenario turns on and a plug-in does not need.
//!
//! # What the world observes and what it trusts
//!
//! The world's facts are its own: which calls reach the API and when (every
//! [`Step::Send`]), what the API answered and how long it took (the world made both up
//! from the fault plan), which caller got which answer and when (every
//! [`Step::Answer`]), which callers went away. Every verdict is computed from those
//! facts and the declared policy. The guard's self-reports are only compared with them:
//!
//! | method | observed or trusted | why |
//! |---|---|---|
//! | [`on_request`](CallGuard::on_request), [`on_reply`](CallGuard::on_reply), [`on_timeout`](CallGuard::on_timeout), [`on_retry_due`](CallGuard::on_retry_due) | observed: the [`Step`] each returns is an action the world carries out and times itself | a send is a call arriving at the API, an answer is what the caller gets |
//! | [`on_cancel`](CallGuard::on_cancel) | observed: the world decided the caller left | |
//! | [`policy`](CallGuard::policy) | trusted, read once when the world is made | it is the yardstick, not a fact; a guard that breaks its own declaration is caught by the checks that use it, and `breaker.conformance` compares it with the reference's settings where asked |
//! | [`poll_transition`](CallGuard::poll_transition) | compared: the path must be valid, a trip must be justified by the world's own model of the declared trip rule over the outcomes it saw, Open must last the declared wait, a fresh half-open episode must follow a probe the world saw cancelled or ignored | the breaker's state is internal; the world cannot see it except through what the guard does. The load bound counts calls at the API over each outage whatever the guard says, and the re-closings and fresh half-open episodes it allows for are capped by the successes, cancellations and ignored outcomes the world itself saw |
//! | [`state`](CallGuard::state) | compared: at every send it must equal the state the transitions lead to | the world steers by the transitions, never by `state` alone |
//! | [`metrics`](CallGuard::metrics) | compared: at rest it must equal the world's own counts call for call | |
//! | [`retry_budget`](CallGuard::retry_budget) (optional) | trusted as the yardstick, read once | the retries the guard schedules (every [`Step::Retry`]) must stay within it, counted from the requests it admitted, and a retry refused for the budget ([`Why::BudgetExhausted`]) must be one the budget really had no room for (`breaker.retry_budget`) |
//! | [`retry_policy`](CallGuard::retry_policy) (optional) | trusted as the yardstick, read once | every request gets at most its `attempts_max` attempts, and each [`Step::Retry`] waits at most the backoff's ceiling for the attempt that failed (`breaker.retry_policy`) |
//! | [`window`](CallGuard::window) (optional) | compared: while Closed, after every step, with the world's own model of the declared rate rule over the outcomes it saw | the counts and rates an operator reads must be the ones the breaker decides by |

use crate::breaker::circuit::{BreakerConfig, SlidingWindow, State};
use crate::clock::Instant;
use crate::retry::{RetryBudget, RetryPolicy};
use std::fmt;
use std::time::Duration;

/// What the API said to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiReply {
    /// The message was accepted.
    Ok,
    /// The API answered with an error.
    Err(ApiError),
}

/// The API's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// When.
    pub at: Instant,
}

/// Counts a guard keeps, compared with the world's own at rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// What a guard's breaker counts in its sliding window now, as it reports it
/// ([`CallGuard::window`]): compared with the world's own model of the declared rule
/// while the breaker is Closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowReport {
    /// Outcomes in the window (ignored ones excluded).
    pub calls: u32,
    /// Failures among them.
    pub failed: u32,
    /// Slow calls among them.
    pub slow: u32,
    /// `failed × 1000 / calls`, rounded down, once the window holds the declared
    /// minimum of calls (`None` before).
    pub failure_rate_permille: Option<u32>,
    /// `slow × 1000 / calls`, rounded down, likewise.
    pub slow_call_rate_permille: Option<u32>,
}

/// The rule by which a breaker goes from Closed to Open, as a guard declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripRule {
    /// The reference's (Resilience4j's): over the sliding `window`, once at least
    /// `minimum_calls` outcomes are recorded, the failure rate reaches
    /// `failure_rate_threshold_permille` or the share of calls that took strictly longer
    /// than `slow_call_duration` reaches `slow_call_rate_threshold_permille`. An outcome
    /// of an attempt sent before the current Closed episode may be counted or not.
    /// Ignored outcomes change no count; the window starts empty on every Closed.
    Rate {
        /// The window the rates are computed over.
        window: SlidingWindow,
        /// Outcomes needed in the window before it may trip.
        minimum_calls: u32,
        /// Failure rate at which it trips, permille (500 is 50 %).
        failure_rate_threshold_permille: u32,
        /// Slow-call rate at which it trips, permille.
        slow_call_rate_threshold_permille: u32,
        /// A call strictly longer than this is slow.
        slow_call_duration: Duration,
    },
    /// `failures` failures in a row (API errors and timeouts): a success starts the
    /// count again, an ignored outcome changes nothing, the count starts at zero on
    /// every Closed.
    ConsecutiveFailures {
        /// Failures in a row that trip it (at least 1).
        failures: u32,
    },
}

/// The policy a guard declares it implements, from its own configuration: what the
/// invariants judge it by (see the [module docs](self)).
///
/// A breaker that trips after five failures in a row, waits 2 to 4 s in open, lets one
/// probe through per half-open episode, answers within 800 ms and admits 20 requests
/// at once declares:
///
/// ```
/// use faultline::breaker::contract::{Policy, TripRule};
/// use std::time::Duration;
///
/// let policy = Policy {
///     trip: TripRule::ConsecutiveFailures { failures: 5 },
///     half_open_calls_permitted: 1,
///     wait_in_open_min: Duration::from_secs(2),
///     wait_in_open_max: Duration::from_secs(4),
///     answer_within: Duration::from_millis(800),
///     in_progress_max: 20,
/// };
/// # let _ = policy;
/// ```
///
/// Retries, their backoff and the retry budget are not part of it: every attempt asks
/// the breaker for a permit, so the bounds above hold whatever the retry policy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// How it trips.
    pub trip: TripRule,
    /// Probe permits per half-open episode: most calls sent in one episode, plus one
    /// for each call cancelled and each outcome ignored during it (a permit counter's
    /// give-back, as in Resilience4j).
    pub half_open_calls_permitted: u32,
    /// Shortest wait in open before a probe may be sent.
    pub wait_in_open_min: Duration,
    /// Longest wait in open (bounds how soon it closes after the API recovers).
    pub wait_in_open_max: Duration,
    /// Longest a caller waits for an answer, retries included.
    pub answer_within: Duration,
    /// Most requests in progress at once (the bulkhead; `u32::MAX` for none).
    pub in_progress_max: u32,
}

impl Policy {
    /// The policy of a reference [`CircuitBreaker`](crate::breaker::CircuitBreaker)
    /// configured by `breaker`, answering within `answer_within` and admitting
    /// `in_progress_max` requests at once.
    pub fn of_breaker(
        breaker: &BreakerConfig,
        answer_within: Duration,
        in_progress_max: u32,
    ) -> Policy {
        let wait = breaker.wait_in_open();
        Policy {
            trip: TripRule::Rate {
                window: breaker.window(),
                minimum_calls: breaker.minimum_calls(),
                failure_rate_threshold_permille: breaker.failure_rate_threshold_permille(),
                slow_call_rate_threshold_permille: breaker.slow_call_rate_threshold_permille(),
                slow_call_duration: breaker.slow_call_duration(),
            },
            half_open_calls_permitted: breaker.half_open_calls_permitted(),
            wait_in_open_min: wait.min_wait(),
            wait_in_open_max: wait.ceiling(u32::MAX),
            answer_within,
            in_progress_max,
        }
    }
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

    /// The policy this guard implements, from its own configuration: what the world
    /// judges it by. Read once, when the world is made.
    fn policy(&self) -> Policy;

    /// The retry budget this guard keeps, if it keeps one and declares it (default:
    /// none): its configuration (`ttl`, `min_per_sec`, `retry_percent`), not its
    /// counts. Read once, when the world is made. The world then holds the guard to it
    /// (`breaker.retry_budget`): each admitted request deposits, each
    /// [`Step::Retry`] withdraws, and a request answered
    /// [`Why::BudgetExhausted`] was refused a retry, all counted over a window of ten
    /// slots of `ttl / 10`, as [`RetryBudget`] counts.
    fn retry_budget(&self) -> Option<RetryBudget> {
        None
    }

    /// The retry policy this guard keeps, if it declares one (default: none): its
    /// attempts per request, the first included, and the backoff between them. Read
    /// once, when the world is made. The world then holds the guard to it
    /// (`breaker.retry_policy`): no request is sent more than `attempts_max` times, and
    /// the [`Step::Retry`] after attempt `n` failed waits at most the backoff's
    /// [`ceiling`](crate::retry::Backoff::ceiling)`(n)` (any jitter below it is the
    /// guard's own; full jitter, as the reference draws, may wait zero).
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    /// What the breaker counts in its sliding window as of `now`, if the guard reports
    /// it (default: it does not), as its metrics show an operator. The world compares
    /// it with its own model of the declared rate rule whenever the breaker is Closed
    /// (`breaker.accounting`): the calls, failures and slow calls of the outcomes it
    /// saw in the window (late outcomes of earlier episodes counted, as Resilience4j
    /// does, or not, as faultline does), and the two rates from them. A dashboard that reads a
    /// wrong failure rate is caught here.
    fn window(&self, now: Instant) -> Option<WindowReport> {
        let _ = now;
        None
    }
}
