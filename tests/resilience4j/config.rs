//! `CircuitBreakerConfigTest`: validation, defaults and setters of the configuration.
//! Resilience4j throws `IllegalArgumentException` from `build()`; faultline's `build`
//! returns a `ConfigError` naming the field.

use crate::*;
use faultline::breaker::circuit::{Ratio, SlidingWindow, WaitInOpen};

#[track_caller]
fn refused(builder: BreakerConfigBuilder, field: &str) {
    match builder.build() {
        Ok(c) => panic!("accepted {c:?}, expected an error on `{field}`"),
        Err(e) => assert_eq!(e.field, field, "{e}"),
    }
}

/// Resilience4j: CircuitBreakerConfigTest::zeroMaxFailuresShouldFail
/// Resilience4j: CircuitBreakerConfigTest::zeroFailureRateThresholdShouldFail
#[test]
fn zero_failure_rate_threshold_is_refused() {
    refused(
        BreakerConfig::builder().failure_rate_threshold_percent(0),
        "failure_rate_threshold_percent",
    );
    refused(
        BreakerConfig::builder().failure_rate_threshold_permille(0),
        "failure_rate_threshold_permille",
    );
}

/// Resilience4j: CircuitBreakerConfigTest::zeroWaitIntervalShouldFail
/// (and, from its check `waitDurationInOpenState must be at least 1[ms]`, below 1 ms)
#[test]
fn zero_wait_in_open_is_refused() {
    refused(
        BreakerConfig::builder().wait_in_open(Duration::ZERO),
        "wait_in_open",
    );
    refused(
        BreakerConfig::builder().wait_in_open(Duration::from_micros(999)),
        "wait_in_open",
    );
    assert!(
        BreakerConfig::builder()
            .wait_in_open(millis(1))
            .build()
            .is_ok()
    );
}

/// Resilience4j: CircuitBreakerConfigTest::zeroSlowCallDurationThresholdShouldFail
#[test]
fn zero_slow_call_duration_is_refused() {
    refused(
        BreakerConfig::builder().slow_call_duration(Duration::ZERO),
        "slow_call_duration",
    );
}

/// Resilience4j: CircuitBreakerConfigTest::zeroPermittedNumberOfCallsInHalfOpenStateShouldFail
#[test]
fn zero_half_open_calls_is_refused() {
    refused(
        BreakerConfig::builder().half_open_calls_permitted(0),
        "half_open_calls_permitted",
    );
}

/// Resilience4j: CircuitBreakerConfigTest::zeroSlidingWindowSizeShouldFail
/// Resilience4j: CircuitBreakerConfigTest::zeroSlidingWindowSizeShouldFail2
#[test]
fn zero_window_is_refused() {
    refused(
        BreakerConfig::builder().count_window(0).minimum_calls(1),
        "count_window",
    );
    refused(BreakerConfig::builder().count_window(0), "count_window");
    refused(BreakerConfig::builder().time_window(0), "time_window");
}

/// Resilience4j: CircuitBreakerConfigTest::zeroMinimumNumberOfCallsShouldFail
/// Resilience4j: CircuitBreakerConfigTest::zeroMinimumNumberOfCallsShouldFai2l
#[test]
fn zero_minimum_calls_is_refused() {
    refused(
        BreakerConfig::builder().count_window(2).minimum_calls(0),
        "minimum_calls",
    );
    refused(BreakerConfig::builder().minimum_calls(0), "minimum_calls");
}

/// Resilience4j: CircuitBreakerConfigTest::zeroSlowCallRateThresholdShouldFail
#[test]
fn zero_slow_call_rate_threshold_is_refused() {
    refused(
        BreakerConfig::builder().slow_call_rate_threshold_percent(0),
        "slow_call_rate_threshold_percent",
    );
    refused(
        BreakerConfig::builder().slow_call_rate_threshold_permille(0),
        "slow_call_rate_threshold_permille",
    );
}

/// Resilience4j: CircuitBreakerConfigTest::failureRateThresholdAboveHundredShouldFail
#[test]
fn failure_rate_threshold_above_hundred_is_refused() {
    refused(
        BreakerConfig::builder().failure_rate_threshold_percent(101),
        "failure_rate_threshold_percent",
    );
    refused(
        BreakerConfig::builder().failure_rate_threshold_permille(1001),
        "failure_rate_threshold_permille",
    );
}

/// Resilience4j: CircuitBreakerConfigTest::slowCallRateThresholdAboveHundredShouldFail
#[test]
fn slow_call_rate_threshold_above_hundred_is_refused() {
    refused(
        BreakerConfig::builder().slow_call_rate_threshold_percent(101),
        "slow_call_rate_threshold_percent",
    );
    refused(
        BreakerConfig::builder().slow_call_rate_threshold_permille(1001),
        "slow_call_rate_threshold_permille",
    );
}

/// Resilience4j: CircuitBreakerConfigTest::transitionToStateAfterWaitDurationHalfOpenShouldFail
#[test]
fn half_open_after_the_half_open_wait_is_refused() {
    refused(
        BreakerConfig::builder().after_half_open_wait_max(State::HalfOpen),
        "after_half_open_wait_max",
    );
    for state in [State::Disabled, State::ForcedOpen, State::MetricsOnly] {
        refused(
            BreakerConfig::builder().after_half_open_wait_max(state),
            "after_half_open_wait_max",
        );
    }
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetDefaultSettings
#[test]
fn defaults_are_resilience4j() {
    let c = BreakerConfig::builder().build().unwrap();
    assert_eq!(c.failure_rate_threshold_permille(), 500);
    assert_eq!(c.half_open_calls_permitted(), 10);
    assert_eq!(c.window(), SlidingWindow::Count { size: 100 });
    assert_eq!(c.minimum_calls(), 100);
    assert_eq!(c.wait_in_open(), WaitInOpen::Fixed(secs(60)));
    assert_eq!(c.slow_call_rate_threshold_permille(), 1000);
    assert_eq!(c.slow_call_duration(), secs(60));
    assert_eq!(c.after_half_open_wait_max(), State::Open);
    assert_eq!(c.half_open_wait_max(), Duration::ZERO);
    assert!(!c.automatic_transition());
    assert_eq!(c.initial_state(), State::Closed);
    assert_eq!(c, BreakerConfig::default());
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetFailureRateThreshold
#[test]
fn set_failure_rate_threshold() {
    let c = BreakerConfig::builder()
        .failure_rate_threshold_percent(25)
        .build()
        .unwrap();
    assert_eq!(c.failure_rate_threshold_permille(), 250);
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetFailureRateThresholdAsAFloatGreaterThanZero
/// (0.5 % is 5 permille)
#[test]
fn set_a_fractional_failure_rate_threshold() {
    let c = BreakerConfig::builder()
        .failure_rate_threshold_permille(5)
        .build()
        .unwrap();
    assert_eq!(c.failure_rate_threshold_permille(), 5);
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetWaitDurationInHalfOpenState
#[test]
fn set_half_open_wait_max() {
    let c = BreakerConfig::builder()
        .half_open_wait_max(millis(1000))
        .build()
        .unwrap();
    assert_eq!(c.half_open_wait_max(), millis(1000));
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetClosedStateTransitionToStateAfterWaitDuration
/// Resilience4j: CircuitBreakerConfigTest::shouldSetOpenStateTransitionToStateAfterWaitDuration
#[test]
fn set_the_state_after_the_half_open_wait() {
    for state in [State::Closed, State::Open] {
        let c = BreakerConfig::builder()
            .after_half_open_wait_max(state)
            .build()
            .unwrap();
        assert_eq!(c.after_half_open_wait_max(), state);
    }
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlowCallRateThreshold
/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlowCallRateThresholdAsFloatGreaterThanZero
#[test]
fn set_slow_call_rate_threshold() {
    let c = BreakerConfig::builder()
        .slow_call_rate_threshold_percent(25)
        .build()
        .unwrap();
    assert_eq!(c.slow_call_rate_threshold_permille(), 250);
    let c = BreakerConfig::builder()
        .slow_call_rate_threshold_permille(5)
        .build()
        .unwrap();
    assert_eq!(c.slow_call_rate_threshold_permille(), 5);
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlowCallDurationThreshold
#[test]
fn set_slow_call_duration() {
    let c = BreakerConfig::builder()
        .slow_call_duration(secs(1))
        .build()
        .unwrap();
    assert_eq!(c.slow_call_duration(), secs(1));
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetCountBasedSlidingWindowSize
#[test]
fn set_a_count_window_and_its_minimum() {
    let c = BreakerConfig::builder()
        .count_window(1000)
        .minimum_calls(1000)
        .build()
        .unwrap();
    assert_eq!(c.window(), SlidingWindow::Count { size: 1000 });
    assert_eq!(c.minimum_calls(), 1000);
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetPermittedNumberOfCallsInHalfOpenState
#[test]
fn set_half_open_calls_permitted() {
    let c = BreakerConfig::builder()
        .half_open_calls_permitted(100)
        .build()
        .unwrap();
    assert_eq!(c.half_open_calls_permitted(), 100);
}

/// Resilience4j: CircuitBreakerConfigTest::shouldReduceMinimumNumberOfCallsToSlidingWindowSize
#[test]
fn the_minimum_of_a_count_window_is_at_most_its_size() {
    let c = BreakerConfig::builder()
        .count_window(5)
        .minimum_calls(6)
        .build()
        .unwrap();
    assert_eq!(c.minimum_calls(), 5);
    assert_eq!(c.window(), SlidingWindow::Count { size: 5 });
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlidingWindowToCountBased
#[test]
fn set_a_count_window_with_a_smaller_minimum() {
    let c = BreakerConfig::builder()
        .count_window(5)
        .minimum_calls(3)
        .build()
        .unwrap();
    assert_eq!(c.minimum_calls(), 3);
    assert_eq!(c.window(), SlidingWindow::Count { size: 5 });
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlidingWindowToTimeBased
/// (the type alone keeps the size of 100: a window of 100 s)
#[test]
fn set_a_time_window() {
    let c = BreakerConfig::builder().time_window(100).build().unwrap();
    assert_eq!(c.window(), SlidingWindow::Time { size_secs: 100 });
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlidingWindowSize
#[test]
fn set_the_window_size() {
    let c = BreakerConfig::builder().count_window(1000).build().unwrap();
    assert_eq!(c.window(), SlidingWindow::Count { size: 1000 });
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetMinimumNumberOfCalls
///
/// Difference: Resilience4j's getter returns the 1000 set (its metrics use at most the
/// window's 100 when they are built); faultline's getter returns the minimum in effect.
#[test]
fn set_the_minimum_calls() {
    let c = BreakerConfig::builder()
        .minimum_calls(1000)
        .build()
        .unwrap();
    assert_eq!(c.minimum_calls(), 100);
    let c = BreakerConfig::builder()
        .count_window(1000)
        .minimum_calls(1000)
        .build()
        .unwrap();
    assert_eq!(c.minimum_calls(), 1000);
}

/// Resilience4j: CircuitBreakerConfigTest::maxWaitDurationInHalfOpenStateEqualZeroShouldPass
#[test]
fn zero_half_open_wait_max_is_accepted() {
    let c = BreakerConfig::builder()
        .half_open_wait_max(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(c.half_open_wait_max(), Duration::ZERO);
}

/// Resilience4j: CircuitBreakerConfigTest::shouldAllowHighMinimumNumberOfCallsWhenSlidingWindowIsTimeBased
#[test]
fn a_time_window_takes_any_minimum() {
    let c = BreakerConfig::builder()
        .time_window(10)
        .minimum_calls(100)
        .build()
        .unwrap();
    assert_eq!(c.minimum_calls(), 100);
    assert_eq!(c.window(), SlidingWindow::Time { size_secs: 10 });
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetWaitInterval
#[test]
fn set_the_wait_in_open() {
    let c = BreakerConfig::builder()
        .wait_in_open(secs(1))
        .build()
        .unwrap();
    assert_eq!(c.wait_in_open(), WaitInOpen::Fixed(secs(1)));
}

/// Resilience4j: CircuitBreakerConfigTest::shouldBuilderCreateConfigEveryTime
#[test]
fn each_build_makes_its_own_configuration() {
    let builder = BreakerConfig::builder().count_window(5);
    let first = builder.clone().build().unwrap();
    let second = builder.count_window(3).build().unwrap();
    assert_eq!(second.window(), SlidingWindow::Count { size: 3 });
    assert_eq!(first.window(), SlidingWindow::Count { size: 5 });
}

/// Resilience4j: CircuitBreakerConfigTest::shouldUseBaseConfigAndOverwriteProperties
/// (its writable stack traces and lock-free strategy have no counterpart)
#[test]
fn derive_a_configuration_from_another() {
    let base = BreakerConfig::builder()
        .wait_in_open(secs(100))
        .time_window(1000)
        .half_open_calls_permitted(100)
        .automatic_transition(true)
        .failure_rate_threshold_percent(20)
        .build()
        .unwrap();
    let extended = base.to_builder().wait_in_open(secs(20)).build().unwrap();
    assert_eq!(extended.failure_rate_threshold_permille(), 200);
    assert_eq!(extended.wait_in_open(), WaitInOpen::Fixed(secs(20)));
    assert_eq!(extended.window(), SlidingWindow::Time { size_secs: 1000 });
    assert_eq!(extended.half_open_calls_permitted(), 100);
    assert!(extended.automatic_transition());
    assert_eq!(base.wait_in_open(), WaitInOpen::Fixed(secs(100)));
}

/// Resilience4j: CircuitBreakerConfigTest::testOverrideIntervalFunction
/// Resilience4j: CircuitBreakerConfigTest::shouldNotUseWitIntervalFunctionInOpenStateAndWaitDurationInOpenStateTogether
///
/// Difference: the wait in open is one setting and the last setter wins, on a fresh
/// builder as on one derived with `to_builder` (Resilience4j's `build()` throws
/// `IllegalStateException` when one builder was given both a wait duration and an
/// interval function).
#[test]
fn the_last_wait_in_open_setter_wins() {
    let c = BreakerConfig::builder()
        .wait_in_open_exponential(millis(1234), Ratio::from(2), secs(60), 0)
        .wait_in_open(millis(3333))
        .build()
        .unwrap();
    assert_eq!(c.wait_in_open(), WaitInOpen::Fixed(millis(3333)));
    let custom = BreakerConfig::builder()
        .wait_in_open(millis(23_434))
        .build()
        .unwrap();
    let c = custom
        .to_builder()
        .wait_in_open_exponential(millis(1234), 1, millis(1234), 0)
        .build()
        .unwrap();
    assert_eq!(c.wait_in_open().ceiling(1), millis(1234));
    let c = custom
        .to_builder()
        .wait_in_open(millis(1234))
        .build()
        .unwrap();
    assert_eq!(c.wait_in_open(), WaitInOpen::Fixed(millis(1234)));
    let c = custom.to_builder().build().unwrap();
    assert_eq!(c.wait_in_open().ceiling(1), millis(23_434));
}

/// Resilience4j: CircuitBreakerConfigTest::shouldSetPermittedNumberOfCallsInHalfOpenState
/// Resilience4j: CircuitBreakerConfigTest::shouldSetCountBasedSlidingWindowSize
/// Resilience4j: CircuitBreakerConfigTest::shouldSetSlidingWindowSize
///
/// Difference: faultline caps what it allocates up front: at most 10,000 calls in
/// half-open, a count window of at most 1,000,000 calls and a time window of at most
/// 86,400 s (Resilience4j takes any positive `int`).
#[test]
fn sizes_allocated_up_front_are_capped() {
    assert!(
        BreakerConfig::builder()
            .half_open_calls_permitted(10_000)
            .build()
            .is_ok()
    );
    refused(
        BreakerConfig::builder().half_open_calls_permitted(10_001),
        "half_open_calls_permitted",
    );
    assert!(
        BreakerConfig::builder()
            .count_window(1_000_000)
            .build()
            .is_ok()
    );
    refused(
        BreakerConfig::builder().count_window(1_000_001),
        "count_window",
    );
    assert!(BreakerConfig::builder().time_window(86_400).build().is_ok());
    refused(BreakerConfig::builder().time_window(86_401), "time_window");
}
