//! `CircuitBreakerMetricsTest`: the closed window's counts and rates. Resilience4j drives
//! its `CircuitBreakerMetrics` directly, which records but never trips; the port drives a
//! breaker in MetricsOnly, which does the same.

use crate::*;
use faultline::breaker::circuit::CallOutcome::*;

/// Resilience4j: CircuitBreakerMetricsTest::testCircuitBreakerMetrics
///
/// Not expressible: its two `onCallNotPermitted()` (a breaker that records without
/// tripping never rejects); `Result` is read through the rate and the rate-exceeded event.
#[test]
fn counts_rates_and_the_minimum_of_a_count_window() {
    let mut b = breaker(
        BreakerConfig::builder()
            .count_window(10)
            .minimum_calls(10)
            .initial_state(State::MetricsOnly),
    );
    let t = at(0);
    for outcome in [Success, Success, Failure, Failure] {
        call(&mut b, t, Duration::ZERO, outcome);
    }
    let m = b.metrics(t);
    assert_window(&m, None, 2, 4, 2);
    // Below the minimum of 10 calls: no rate (BELOW_MINIMUM_CALLS_THRESHOLD).
    assert_eq!(m.failure_rate_permille, None);
    assert_eq!(events(&mut b), vec![]);

    for outcome in [
        Failure, Failure, Failure, Failure, Success, Success, Success, Success,
    ] {
        call(&mut b, t, Duration::ZERO, outcome);
    }
    // 12 calls, the last 10 in the window: 4 successes, 6 failures.
    assert_window(&b.metrics(t), Some(600), 4, 10, 6);
    assert_eq!(
        events(&mut b),
        vec![Ev::FailureRateExceeded(600)],
        "thresholds exceeded"
    );

    for _ in 0..3 {
        call(&mut b, t, Duration::ZERO, Success);
    }
    // BELOW_THRESHOLDS: 30 %.
    let m = b.metrics(t);
    assert_eq!(m.failure_rate_permille, Some(300));
    assert_eq!(events(&mut b), vec![]);
}
