//! What the tokio adapters tell the outside about what they do: `tracing` events and
//! spans (feature `tracing`) and counters and gauges through the `metrics` facade
//! (feature `metrics`), each labelled with the instance's [`Name`]. Without either
//! feature every function here is empty and compiles away.
//!
//! The names, labels and levels are the public contract listed in the README
//! ("Observability"); the simulated worlds never call into this module, so it cannot
//! change a trace digest.

// Without both features some parameters go unread.
#![cfg_attr(
    not(all(feature = "tracing", feature = "metrics")),
    allow(unused_variables, dead_code)
)]

use std::future::Future;
use std::time::Duration;

use crate::breaker::circuit::{BreakerEvent, State};
use crate::name::Name;

/// `faultline_breaker_state`'s value for a state.
pub(crate) const fn state_code(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
        State::ForcedOpen => 3.0,
        State::Disabled => 4.0,
        State::MetricsOnly => 5.0,
    }
}

/// A breaker's state change: a `tracing` event (`warn` when it opens, `info` otherwise),
/// `faultline_breaker_transitions_total` and the `faultline_breaker_state` gauge.
pub(crate) fn breaker_transition(breaker: Name, event: &BreakerEvent) {
    let BreakerEvent::Transition {
        from,
        to,
        reason,
        generation,
        ..
    } = *event;
    #[cfg(feature = "tracing")]
    {
        if matches!(to, State::Open | State::ForcedOpen) {
            tracing::warn!(
                target: "faultline::breaker",
                breaker = breaker.as_str(),
                from = from.name(),
                to = to.name(),
                reason = ?reason,
                generation,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                target: "faultline::breaker",
                breaker = breaker.as_str(),
                from = from.name(),
                to = to.name(),
                reason = ?reason,
                generation,
                "circuit breaker changed state"
            );
        }
    }
    #[cfg(feature = "metrics")]
    {
        let name = breaker.as_str().to_owned();
        metrics::counter!(
            "faultline_breaker_transitions_total",
            "breaker" => name.clone(),
            "from" => from.name(),
            "to" => to.name()
        )
        .increment(1);
        metrics::gauge!("faultline_breaker_state", "breaker" => name).set(state_code(to));
    }
}

/// A breaker's starting state on the `faultline_breaker_state` gauge.
pub(crate) fn breaker_created(breaker: Name, state: State) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("faultline_breaker_state", "breaker" => breaker.as_str().to_owned())
        .set(state_code(state));
}

/// How one attempt of a [`Resilient`](crate::breaker::tokio::Resilient) call ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Attempted {
    /// The API answered a value.
    Success,
    /// The API answered an error that counts as a failure.
    Failure,
    /// The API answered an error classified ignored (or success).
    Other,
    /// The attempt ran out of time.
    Timeout,
}

impl Attempted {
    const fn name(self) -> &'static str {
        match self {
            Attempted::Success => "success",
            Attempted::Failure => "failure",
            Attempted::Other => "ignored",
            Attempted::Timeout => "timeout",
        }
    }
}

/// How a whole call ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answered {
    /// With the API's value.
    Api,
    /// With the fallback's, for this reason (a stable lower-case name).
    Fallback(&'static str),
    /// With an error of this kind (a stable lower-case name).
    Error(&'static str),
}

/// The counters of one stack, registered once when it is built (so a call costs an
/// atomic add per counter, not a registry lookup): the `metrics` recorder must be
/// installed before the stack is built.
#[derive(Debug)]
pub(crate) struct CallObserver {
    stack: Name,
    upstream: Name,
    #[cfg(feature = "metrics")]
    counters: CallCounters,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct CallCounters {
    /// By [`Attempted`], in its order.
    attempts: [metrics::Counter; 4],
    retries: metrics::Counter,
    api: metrics::Counter,
    fallback: metrics::Counter,
    error: metrics::Counter,
}

impl CallObserver {
    /// The observer of stack `stack` calling upstream `upstream`.
    pub(crate) fn new(stack: Name, upstream: Name) -> Self {
        #[cfg(feature = "metrics")]
        let counters = {
            let labels = |extra: (&'static str, &'static str)| {
                vec![
                    metrics::Label::new("stack", stack.as_str().to_owned()),
                    metrics::Label::new("upstream", upstream.as_str().to_owned()),
                    metrics::Label::new(extra.0, extra.1),
                ]
            };
            let attempt = |a: Attempted| {
                metrics::counter!("faultline_attempts_total", labels(("outcome", a.name())))
            };
            let call =
                |a: &'static str| metrics::counter!("faultline_calls_total", labels(("answer", a)));
            CallCounters {
                attempts: [
                    attempt(Attempted::Success),
                    attempt(Attempted::Failure),
                    attempt(Attempted::Other),
                    attempt(Attempted::Timeout),
                ],
                retries: metrics::counter!(
                    "faultline_retries_total",
                    "stack" => stack.as_str().to_owned(),
                    "upstream" => upstream.as_str().to_owned()
                ),
                api: call("api"),
                fallback: call("fallback"),
                error: call("error"),
            }
        };
        CallObserver {
            stack,
            upstream,
            #[cfg(feature = "metrics")]
            counters,
        }
    }

    /// The stack's name.
    pub(crate) fn stack(&self) -> Name {
        self.stack
    }

    /// Runs `call` inside a `faultline.call` span naming the stack and its upstream.
    pub(crate) fn in_span<F: Future>(&self, call: F) -> impl Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            call.instrument(tracing::debug_span!(
                target: "faultline::breaker",
                "faultline.call",
                stack = self.stack.as_str(),
                upstream = self.upstream.as_str()
            ))
        }
        #[cfg(not(feature = "tracing"))]
        call
    }

    /// Attempt number `attempt` (1 for the first) ended so, after `elapsed`.
    pub(crate) fn attempt(&self, attempt: u32, outcome: Attempted, elapsed: Duration) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "faultline::breaker",
            attempt,
            outcome = outcome.name(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "attempt ended"
        );
        #[cfg(feature = "metrics")]
        self.counters.attempts[outcome as usize].increment(1);
    }

    /// A retry waits `delay` before its attempt.
    pub(crate) fn retry(&self, delay: Duration) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "faultline::breaker",
            delay_ms = delay.as_secs_f64() * 1e3,
            "retrying after a backoff"
        );
        #[cfg(feature = "metrics")]
        self.counters.retries.increment(1);
    }

    /// The call ended so.
    pub(crate) fn answered(&self, answered: Answered) {
        #[cfg(feature = "tracing")]
        match answered {
            Answered::Api => {}
            Answered::Fallback(cause) => {
                tracing::info!(target: "faultline::breaker", cause, "answered by the fallback");
            }
            Answered::Error(kind) => {
                tracing::info!(target: "faultline::breaker", error = kind, "call failed");
            }
        }
        #[cfg(feature = "metrics")]
        match answered {
            Answered::Api => self.counters.api.increment(1),
            Answered::Fallback(_) => self.counters.fallback.increment(1),
            Answered::Error(_) => self.counters.error.increment(1),
        }
    }
}
