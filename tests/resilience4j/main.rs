//! Resilience4j's circuit-breaker tests, ported scenario by scenario to faultline's
//! sans-IO [`CircuitBreaker`] (issue 19).
//!
//! Each test names the Resilience4j test it ports (`Resilience4j: Class::method`) in its
//! doc comment. Where faultline deliberately behaves otherwise, the doc comment says
//! `Difference:` and the test asserts faultline's behaviour. Resilience4j's mocked clock
//! becomes virtual time: every input takes its `now` ([`Instant`]), and a call's duration
//! is the time between its permit and its outcome.
//!
//! Sources: resilience4j-circuitbreaker's `CircuitBreakerStateMachineTest`,
//! `CircuitBreakerAutoTransitionStateMachineTest`, `CircuitBreakerMetricsTest`,
//! `CircuitBreakerConfigTest`, `CircuitBreakerExceptionHandlingTest`,
//! `CircuitBreakerResultHandlingTest`, and resilience4j-core's
//! `FixedSizeSlidingWindowMetricsTest` and `SlidingTimeWindowMetricsTest`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod auto_transition;
mod config;
mod metrics;
mod outcomes;
mod state_machine;
mod windows;

use faultline::breaker::circuit::{
    BreakerConfig, BreakerConfigBuilder, BreakerEvent, CallOutcome, CircuitBreaker, Metrics,
    Permit, Rejected, State,
};
use faultline::clock::Instant;
use std::time::Duration;

/// Where virtual time starts, in milliseconds: a whole second (time windows bucket by
/// second, as Resilience4j's mocked clock at 12:00:00 does), far enough from zero that a
/// call may start before it.
pub const T0_MS: u64 = 1_000_000;

/// `ms` milliseconds after the start of virtual time.
pub fn at(ms: u64) -> Instant {
    Instant::from_millis(T0_MS + ms)
}

/// `ms` milliseconds before the start of virtual time.
pub fn before(ms: u64) -> Instant {
    Instant::from_millis(T0_MS - ms)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The breaker of `CircuitBreakerStateMachineTest::setUp`: failure rate 50 %, 4 calls in
/// half-open, slow above 4 s, slow-call rate 50 %, at most 1 s in half-open, a time window
/// of 20 s with a minimum of 5 calls, 5 s in open. (Its `ignoreExceptions` is the caller's
/// `CallOutcome::Ignored`.)
pub fn state_machine_config() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .failure_rate_threshold_percent(50)
        .half_open_calls_permitted(4)
        .slow_call_duration(secs(4))
        .slow_call_rate_threshold_percent(50)
        .half_open_wait_max(secs(1))
        .time_window(20)
        .minimum_calls(5)
        .wait_in_open(secs(5))
}

pub fn breaker(config: BreakerConfigBuilder) -> CircuitBreaker {
    CircuitBreaker::new(config.build().expect("a valid configuration"))
}

/// A permit at `now`; panics if the call is rejected.
#[track_caller]
pub fn permit(b: &mut CircuitBreaker, now: Instant) -> Permit {
    match b.try_acquire(now) {
        Ok(p) => p,
        Err(r) => panic!("call at {now} rejected: {r:?}"),
    }
}

/// The rejection at `now`; panics if the call is permitted.
#[track_caller]
pub fn rejected(b: &mut CircuitBreaker, now: Instant) -> Rejected {
    match b.try_acquire(now) {
        Ok(p) => panic!("call at {now} permitted: {p:?}"),
        Err(r) => r,
    }
}

/// Resilience4j's `tryAcquirePermission()`: true when permitted; the permit is kept in
/// `held` (it is neither completed nor released, like a call still running).
pub fn try_acquire(b: &mut CircuitBreaker, now: Instant, held: &mut Vec<Permit>) -> bool {
    match b.try_acquire(now) {
        Ok(p) => {
            held.push(p);
            true
        }
        Err(_) => false,
    }
}

/// One whole call: permitted at `start`, its outcome after `took`. Returns when it ended.
#[track_caller]
pub fn call(
    b: &mut CircuitBreaker,
    start: Instant,
    took: Duration,
    outcome: CallOutcome,
) -> Instant {
    let p = permit(b, start);
    let end = start + took;
    b.on_result(p, end, outcome);
    end
}

/// Resilience4j's `assertCircuitBreakerMetricsEqualTo(failureRate, successfulCalls,
/// bufferedCalls, failedCalls, ...)`: its failure rate of -1 is `None`, a rate is in
/// permille (60 % is 600).
#[track_caller]
pub fn assert_window(
    m: &Metrics,
    failure_rate_permille: Option<u32>,
    succeeded: u32,
    calls: u32,
    failed: u32,
) {
    assert_eq!(
        (
            m.failure_rate_permille,
            m.window_calls - m.window_failed,
            m.window_calls,
            m.window_failed
        ),
        (failure_rate_permille, succeeded, calls, failed),
        "(failure rate, successful, buffered, failed) in {m:?}"
    );
}

/// The events, simplified for comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    Transition(State, State),
    Reset,
    FailureRateExceeded(u32),
    SlowCallRateExceeded(u32),
    Other,
}

/// Drains the breaker's events.
pub fn events(b: &mut CircuitBreaker) -> Vec<Ev> {
    std::iter::from_fn(|| b.poll_event())
        .map(|e| match e {
            BreakerEvent::Transition { from, to, .. } => Ev::Transition(from, to),
            BreakerEvent::Reset { .. } => Ev::Reset,
            BreakerEvent::FailureRateExceeded { permille, .. } => Ev::FailureRateExceeded(permille),
            BreakerEvent::SlowCallRateExceeded { permille, .. } => {
                Ev::SlowCallRateExceeded(permille)
            }
            _ => Ev::Other,
        })
        .collect()
}

/// The transitions among the drained events.
pub fn transitions(b: &mut CircuitBreaker) -> Vec<(State, State)> {
    events(b)
        .into_iter()
        .filter_map(|e| match e {
            Ev::Transition(from, to) => Some((from, to)),
            _ => None,
        })
        .collect()
}
