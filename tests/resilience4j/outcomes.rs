//! `CircuitBreakerExceptionHandlingTest` and `CircuitBreakerResultHandlingTest`.
//! Resilience4j classifies exceptions and results with predicates in its configuration;
//! in faultline the caller classifies each call as a [`CallOutcome`], so what remains to
//! port is what each class of outcome does to the window.

use crate::*;
use faultline::breaker::circuit::CallOutcome::*;

/// Resilience4j: CircuitBreakerExceptionHandlingTest::shouldRecordRuntimeExceptionAsFailureAndBusinessExceptionAsSuccess
/// Resilience4j: CircuitBreakerExceptionHandlingTest::shouldRecordIOExceptionAsFailureAndBusinessExceptionAsSuccess
/// Resilience4j: CircuitBreakerExceptionHandlingTest::shouldRecordBusinessExceptionAsFailure
/// Resilience4j: CircuitBreakerResultHandlingTest::shouldRecordSpecificStringResultAsAFailureAndAnyOtherAsSuccess
/// Resilience4j: CircuitBreakerResultHandlingTest::shouldRecordSpecificComplexResultAsAFailureAndAnyOtherAsSuccess
/// (an error or result recorded as a failure is `Failure`; one not recorded is `Success`)
#[test]
fn a_failure_and_a_success_are_both_buffered() {
    let mut b = breaker(BreakerConfig::builder().count_window(5));
    call(&mut b, at(0), Duration::ZERO, Failure);
    call(&mut b, at(0), Duration::ZERO, Success);
    let m = b.metrics(at(0));
    assert_eq!(m.window_failed, 1);
    assert_eq!(m.window_calls - m.window_failed, 1);
    assert_eq!(m.window_calls, 2);
}

/// Resilience4j: CircuitBreakerExceptionHandlingTest::shouldIgnoreNumberFormatException
#[test]
fn an_ignored_outcome_is_not_buffered() {
    let mut b = breaker(
        BreakerConfig::builder()
            .failure_rate_threshold_percent(50)
            .count_window(5)
            .wait_in_open(secs(5)),
    );
    call(&mut b, at(0), Duration::ZERO, Failure);
    call(&mut b, at(0), Duration::ZERO, Ignored);
    let m = b.metrics(at(0));
    assert_eq!(m.window_failed, 1);
    assert_eq!(m.window_calls - m.window_failed, 0);
    assert_eq!(m.window_calls, 1);
    assert_eq!(m.totals.ignored, 1);
}
