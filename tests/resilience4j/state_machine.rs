//! `CircuitBreakerStateMachineTest`: states, permits, trips, waits, half-open probes,
//! manual commands and their events, with the test's `setUp` configuration
//! ([`state_machine_config`]) unless a test builds its own.

use crate::*;
use faultline::breaker::circuit::{CallOutcome::*, Ratio};

/// Resilience4j: CircuitBreakerStateMachineTest::shouldThrowCallNotPermittedExceptionWhenStateIsOpen
#[test]
fn open_rejects_and_counts_the_rejection() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    let r = rejected(&mut b, at(0));
    assert_eq!(r.state, State::Open);
    assert_eq!(b.metrics(at(0)).totals.rejected, 1);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldThrowCallNotPermittedExceptionWhenStateIsForcedOpen
#[test]
fn forced_open_rejects_and_counts_the_rejection() {
    let mut b = breaker(state_machine_config());
    b.force_open(at(0));
    let r = rejected(&mut b, at(0));
    assert_eq!(r.state, State::ForcedOpen);
    assert_eq!(b.metrics(at(0)).totals.rejected, 1);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldIncreaseCounterOnReleasePermission
#[test]
fn releasing_a_half_open_permit_gives_the_slot_back() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        assert!(try_acquire(&mut b, at(0), &mut held));
    }
    assert!(!try_acquire(&mut b, at(0), &mut held));
    assert!(!try_acquire(&mut b, at(0), &mut held));
    b.release(held.pop().unwrap(), at(0));
    assert!(try_acquire(&mut b, at(0), &mut held));
    assert_eq!(b.state(), State::HalfOpen);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldThrowCallNotPermittedExceptionWhenNotFurtherTestCallsArePermitted
#[test]
fn half_open_rejects_beyond_its_permitted_calls() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    let rejected_before = b.metrics(at(0)).totals.rejected;
    let mut held = Vec::new();
    for _ in 0..4 {
        assert!(try_acquire(&mut b, at(0), &mut held));
    }
    let r = rejected(&mut b, at(0));
    assert_eq!(r.state, State::HalfOpen);
    assert_eq!(b.metrics(at(0)).totals.rejected - rejected_before, 1);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldOnlyPermitFourCallsInHalfOpenState
#[test]
fn each_half_open_episode_permits_four_calls() {
    let mut b = breaker(state_machine_config());
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    assert_eq!(b.metrics(at(0)).totals.rejected, 0);
    let mut held = Vec::new();
    for _ in 0..2 {
        b.transition_to_open(at(0)).unwrap();
        b.transition_to_half_open(at(0)).unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        for _ in 0..4 {
            assert!(try_acquire(&mut b, at(0), &mut held));
        }
        assert!(!try_acquire(&mut b, at(0), &mut held));
        assert!(!try_acquire(&mut b, at(0), &mut held));
    }
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldOpenAfterFailureRateThresholdExceeded2
#[test]
fn time_window_opens_at_half_failed_once_minimum_reached() {
    let mut b = breaker(state_machine_config());
    let outcomes = [Success, Success, Success, Failure, Failure];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        call(&mut b, at(1000 * i as u64), Duration::ZERO, outcome);
    }
    assert_eq!(b.state(), State::Closed, "2 of 5 failed");
    assert_eq!(b.metrics(at(5000)).state, State::Closed);
    call(&mut b, at(5000), Duration::ZERO, Failure);
    assert_eq!(b.state(), State::Open, "3 of 6 failed");
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldOpenAfterFailureRateThresholdExceeded
#[test]
fn opens_after_failure_rate_threshold_exceeded() {
    let mut b = breaker(state_machine_config());
    let t = at(0);
    // R4j's first tryAcquirePermission is never completed; the permit goes back unused.
    let unused = permit(&mut b, t);
    b.release(unused, t);
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(t), None, 0, 0, 0);
    let _ = events(&mut b);

    call(&mut b, t, Duration::ZERO, Failure);
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(t), None, 0, 1, 1);
    call(&mut b, t, Duration::ZERO, Failure);
    assert_window(&b.metrics(t), None, 0, 2, 2);
    call(&mut b, t, Duration::ZERO, Failure);
    assert_window(&b.metrics(t), None, 0, 3, 3);
    call(&mut b, t, Duration::ZERO, Success);
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(t), None, 1, 4, 3);
    call(&mut b, t, Duration::ZERO, Success);

    // 3 of 5 failed: 60 %.
    assert_eq!(b.state(), State::Open);
    let m = b.metrics(t);
    assert_window(&m, Some(600), 2, 5, 3);
    assert_eq!(m.totals.rejected, 0);
    assert_eq!(
        events(&mut b),
        vec![
            Ev::FailureRateExceeded(600),
            Ev::Transition(State::Closed, State::Open)
        ],
        "the rate-exceeded event comes before the trip, once"
    );

    rejected(&mut b, t);
    let m = b.metrics(t);
    assert_window(&m, Some(600), 2, 5, 3);
    assert_eq!(m.totals.rejected, 1);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldOpenAfterSlowCallRateThresholdExceeded
#[test]
fn opens_after_slow_call_rate_threshold_exceeded() {
    let mut b = breaker(state_machine_config());
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    let mut t = at(0);
    for (took, outcome) in [
        (secs(5), Failure),
        (secs(5), Success),
        (millis(100), Failure),
        (millis(100), Success),
    ] {
        t = call(&mut b, t, took, outcome);
        assert_eq!(b.state(), State::Closed);
    }
    call(&mut b, t, secs(5), Success);
    // 3 of 5 slow (60 %); 2 of 5 failed (40 %).
    assert_eq!(b.state(), State::Open);
    let m = b.metrics(t + secs(5));
    assert_eq!(m.window_calls, 5);
    assert_eq!(m.window_slow, 3);
    assert_eq!(m.slow_call_rate_permille, Some(600));
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldOpenAfterSlowCallRateThresholdExceededUsingMockClock
/// (the decorated consumer advances the clock during the call: here the call is timed
/// from its permit to its outcome)
#[test]
fn opens_after_slow_calls_timed_on_the_clock() {
    let mut b = breaker(state_machine_config());
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    let mut t = at(0);
    for (i, (took, slow)) in [(5, 1), (5, 2), (1, 2), (1, 2)].into_iter().enumerate() {
        t = call(&mut b, t, secs(took), Success);
        let m = b.metrics(t);
        assert_eq!((m.window_calls, m.window_slow), (i as u32 + 1, slow));
        assert_eq!(b.state(), State::Closed);
    }
    t = call(&mut b, t, secs(5), Success);
    assert_eq!(b.state(), State::Open);
    let m = b.metrics(t);
    assert_eq!((m.window_calls, m.window_slow), (5, 3));
    assert_eq!(m.slow_call_rate_permille, Some(600));
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldOpenAfterSlowCallRateThresholdExceeded
/// (the boundary, from `CircuitBreakerMetrics.onSuccess`: slow is strictly longer than
/// `slowCallDurationThreshold`)
#[test]
fn a_call_of_exactly_the_slow_duration_is_not_slow() {
    let mut b = breaker(state_machine_config());
    let mut t = at(0);
    for _ in 0..5 {
        t = call(&mut b, t, secs(4), Success);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics(t).window_slow, 0);
    call(&mut b, t, secs(4) + Duration::from_nanos(1), Success);
    assert_eq!(b.metrics(t + secs(5)).window_slow, 1);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionToHalfOpenAfterWaitDuration
///
/// Difference: Resilience4j's not-permitted count restarts with each state's metrics (0
/// again in half-open); faultline's `totals.rejected` counts over the breaker's life.
#[test]
fn half_open_after_the_wait_in_open() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.poll_timeout(), None, "no automatic transition configured");
    rejected(&mut b, at(0));
    // 3 s later: the 5 s wait has not passed.
    rejected(&mut b, at(3000));
    assert_eq!(b.state(), State::Open);
    let m = b.metrics(at(3000));
    assert_window(&m, None, 0, 0, 0);
    assert_eq!(m.totals.rejected, 2);
    // 6 s after opening: half-open, fresh metrics.
    let _probe = permit(&mut b, at(6000));
    assert_eq!(b.state(), State::HalfOpen);
    let m = b.metrics(at(6000));
    assert_window(&m, None, 0, 0, 0);
    assert_eq!(
        m.totals.rejected, 2,
        "no rejection since (R4j's count shows 0)"
    );
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionToHalfOpenAfterPassedWaitDuration
/// (its not-permitted count of 0 in half-open: see `half_open_after_the_wait_in_open`)
#[test]
fn half_open_after_an_explicit_wait() {
    let mut b = breaker(state_machine_config());
    let hour = 3_600_000;
    b.transition_to_open_for(at(0), secs(2 * 3600)).unwrap();
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    assert_eq!(b.state(), State::Open);
    rejected(&mut b, at(0));
    rejected(&mut b, at(hour));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.metrics(at(hour)).totals.rejected, 2);
    let _probe = permit(&mut b, at(2 * hour + 1000));
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(at(2 * hour + 1000)), None, 0, 0, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionToHalfOpenAfterPassedWaitUntil
/// (with, from `OpenState.tryAcquirePermission`'s `isAfter`, the instant itself still
/// rejected; its not-permitted count of 0 in half-open: see
/// `half_open_after_the_wait_in_open`)
#[test]
fn half_open_after_an_explicit_instant() {
    let mut b = breaker(state_machine_config());
    let minute = 60_000;
    let until = at(30 * minute);
    b.transition_to_open_until(at(0), until).unwrap();
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    assert_eq!(b.state(), State::Open);
    rejected(&mut b, at(0));
    let r = rejected(&mut b, at(15 * minute));
    assert_eq!(r.retry_after, until - at(15 * minute));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.metrics(at(15 * minute)).totals.rejected, 2);
    let r = rejected(&mut b, until);
    assert!(
        r.retry_after > Duration::ZERO,
        "open until strictly after the instant"
    );
    let _probe = permit(&mut b, until + secs(1));
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(until + secs(1)), None, 0, 0, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionToHalfOpenAfterWaitInterval
/// (its not-permitted count of 0 in half-open: see `half_open_after_the_wait_in_open`)
/// (`IntervalFunction.ofExponentialBackoff(5000L)`: multiplier 1.5, no cap)
#[test]
fn exponential_wait_in_open_grows_per_opening() {
    let mut b = breaker(
        BreakerConfig::builder()
            .failure_rate_threshold_percent(50)
            .count_window(5)
            .half_open_calls_permitted(4)
            .wait_in_open_exponential(secs(5), Ratio::new(3, 2), secs(86_400), 0),
    );
    b.transition_to_open(at(0)).unwrap();
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.open_until(), Some(at(5000)));
    rejected(&mut b, at(0));
    rejected(&mut b, at(3000));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.metrics(at(3000)).totals.rejected, 2);
    let _probe = permit(&mut b, at(6000));
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(at(6000)), None, 0, 0, 0);

    // Opened again from half-open: 7.5 s now.
    b.transition_to_open(at(6000)).unwrap();
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.open_until(), Some(at(13_500)));
    rejected(&mut b, at(12_000));
    assert_eq!(b.state(), State::Open);
    let _probe = permit(&mut b, at(17_000));
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(at(17_000)), None, 0, 0, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionBackToOpenStateWhenFailureRateIsAboveThreshold
#[test]
fn half_open_reopens_above_the_failure_rate() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    assert_eq!(b.metrics(at(0)).totals.rejected, 0);
    for outcome in [Failure, Failure, Success, Failure] {
        call(&mut b, at(0), Duration::ZERO, outcome);
    }
    assert_eq!(b.state(), State::Open);
    // The metrics are those of the half-open episode that opened it.
    let m = b.metrics(at(0));
    assert_window(&m, Some(750), 1, 4, 3);
    assert_eq!(m.totals.rejected, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionBackToOpenStateWhenSlowCallRateIsAboveThreshold
///
/// Resilience4j reports each duration instead of timing the call, and its 1 s limit in
/// half-open runs on a real scheduler that never fires during the test; here the probes
/// are timed on the virtual clock (5 s each), so the port leaves the limit off.
#[test]
fn half_open_reopens_above_the_slow_call_rate() {
    let mut b = breaker(state_machine_config().half_open_wait_max(Duration::ZERO));
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    let mut t = at(0);
    for took in [5, 5, 5, 1] {
        t = call(&mut b, t, secs(took), Success);
    }
    assert_eq!(b.state(), State::Open);
    let m = b.metrics(t);
    assert_eq!(m.window_slow, 3);
    assert_eq!(m.slow_call_rate_permille, Some(750));
    assert_eq!(m.failure_rate_permille, Some(0));
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldTransitionBackToClosedStateWhenFailureIsBelowThreshold
#[test]
fn half_open_closes_below_the_failure_rate() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    for outcome in [Failure, Success, Success, Success] {
        call(&mut b, at(0), Duration::ZERO, outcome);
    }
    // 1 of 4 failed: closed, with an empty window.
    let p = permit(&mut b, at(0));
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    b.release(p, at(0));
    call(&mut b, at(0), Duration::ZERO, Success);
    assert_window(&b.metrics(at(0)), None, 1, 1, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldResetMetrics
#[test]
fn reset_empties_the_window() {
    let mut b = breaker(state_machine_config());
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    call(&mut b, at(0), Duration::ZERO, Success);
    call(&mut b, at(0), Duration::ZERO, Failure);
    assert_window(&b.metrics(at(0)), None, 1, 2, 1);
    b.reset(at(0));
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    assert_eq!(
        events(&mut b),
        vec![Ev::Reset],
        "Closed to Closed: a reset, no transition"
    );
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldDisableCircuitBreaker
#[test]
fn disabled_permits_everything_and_records_nothing() {
    let mut b = breaker(state_machine_config());
    b.disable(at(0));
    assert_eq!(b.state(), State::Disabled);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    call(&mut b, at(0), Duration::ZERO, Success);
    for _ in 0..4 {
        call(&mut b, at(0), Duration::ZERO, Failure);
    }
    assert_eq!(b.state(), State::Disabled);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldForceOpenCircuitBreaker
#[test]
fn forced_open_never_moves_to_half_open() {
    let mut b = breaker(state_machine_config());
    b.force_open(at(0));
    assert_eq!(b.state(), State::ForcedOpen);
    rejected(&mut b, at(0));
    rejected(&mut b, at(6000));
    b.handle_timeout(at(6000));
    assert_eq!(b.state(), State::ForcedOpen);
    let m = b.metrics(at(6000));
    assert_window(&m, None, 0, 0, 0);
    assert_eq!(m.totals.rejected, 2);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldReleasePermissionWhenExceptionIgnored
#[test]
fn an_ignored_half_open_outcome_gives_the_slot_back() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    for n in 1..=3 {
        call(&mut b, at(0), Duration::ZERO, Success);
        assert_eq!(b.state(), State::HalfOpen);
        assert_window(&b.metrics(at(0)), None, n, n, 0);
    }
    call(&mut b, at(0), Duration::ZERO, Ignored);
    assert_eq!(b.state(), State::HalfOpen);
    assert_window(&b.metrics(at(0)), None, 3, 3, 0);
    // The ignored call's slot is free again: a fifth permit, whose failure is the
    // fourth counted result (1 of 4 failed).
    call(&mut b, at(0), Duration::ZERO, Failure);
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldIgnoreExceptionsAndThenTransitionToClosed
#[test]
fn ignored_half_open_outcomes_then_successes_close() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    for _ in 0..4 {
        call(&mut b, at(0), Duration::ZERO, Ignored);
        assert_eq!(b.state(), State::HalfOpen);
    }
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    for _ in 0..3 {
        call(&mut b, at(0), Duration::ZERO, Success);
        assert_eq!(b.state(), State::HalfOpen);
    }
    assert_window(&b.metrics(at(0)), None, 3, 3, 0);
    call(&mut b, at(0), Duration::ZERO, Success);
    assert_eq!(b.state(), State::Closed);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldNotAllowTransitionFromClosedToHalfOpen
/// (Resilience4j throws `IllegalStateTransitionException` and stays Closed; faultline
/// answers `IllegalTransition`). The other two transitions Resilience4j's map lacks,
/// MetricsOnly → Open and MetricsOnly → HalfOpen, have no test there; they are refused
/// here too.
#[test]
fn closed_does_not_move_to_half_open() {
    let mut b = breaker(state_machine_config());
    let err = b.transition_to_half_open(at(0)).unwrap_err();
    assert_eq!((err.from, err.to), (State::Closed, State::HalfOpen));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(transitions(&mut b), vec![]);
    b.metrics_only(at(0));
    let _ = transitions(&mut b);
    assert!(b.transition_to_open(at(0)).is_err());
    assert!(b.transition_to_open_for(at(0), secs(1)).is_err());
    assert!(b.transition_to_half_open(at(0)).is_err());
    assert_eq!(b.state(), State::MetricsOnly);
    assert_eq!(transitions(&mut b), vec![]);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldResetToClosedState
#[test]
fn reset_from_open_closes() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    let _ = events(&mut b);
    b.reset(at(0));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        events(&mut b),
        vec![Ev::Transition(State::Open, State::Closed), Ev::Reset]
    );
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldResetClosedState
#[test]
fn reset_of_a_closed_breaker_empties_its_window() {
    let mut b = breaker(state_machine_config());
    call(&mut b, at(0), Duration::ZERO, Success);
    call(&mut b, at(0), Duration::ZERO, Success);
    let m = b.metrics(at(0));
    assert_eq!(m.window_calls - m.window_failed, 2);
    b.reset(at(0));
    assert_eq!(b.state(), State::Closed);
    let m = b.metrics(at(0));
    assert_eq!(m.window_calls - m.window_failed, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldResetMetricsAfterMetricsOnlyStateTransition
#[test]
fn metrics_only_starts_with_an_empty_window() {
    let mut b = breaker(state_machine_config());
    call(&mut b, at(0), Duration::ZERO, Success);
    call(&mut b, at(0), Duration::ZERO, Success);
    let m = b.metrics(at(0));
    assert_eq!(m.window_calls - m.window_failed, 2);
    b.metrics_only(at(0));
    assert_eq!(b.state(), State::MetricsOnly);
    let m = b.metrics(at(0));
    assert_eq!(m.window_calls - m.window_failed, 0);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldRecordMetricsInMetricsOnlyState
#[test]
fn metrics_only_records_and_reports_but_never_trips() {
    let mut b = breaker(state_machine_config());
    b.metrics_only(at(0));
    let p = permit(&mut b, at(0));
    b.release(p, at(0));
    assert_eq!(b.state(), State::MetricsOnly);
    assert_window(&b.metrics(at(0)), None, 0, 0, 0);
    let _ = events(&mut b);

    for n in 1..=3 {
        call(&mut b, at(0), Duration::ZERO, Failure);
        assert_eq!(b.state(), State::MetricsOnly);
        assert_window(&b.metrics(at(0)), None, 0, n, n);
    }
    call(&mut b, at(0), Duration::ZERO, Success);
    assert_eq!(b.state(), State::MetricsOnly);
    assert_window(&b.metrics(at(0)), None, 1, 4, 3);
    call(&mut b, at(0), Duration::ZERO, Success);

    assert_eq!(b.state(), State::MetricsOnly);
    assert_eq!(
        events(&mut b),
        vec![Ev::FailureRateExceeded(600)],
        "no transition"
    );
    let m = b.metrics(at(0));
    assert_window(&m, Some(600), 2, 5, 3);
    assert_eq!(m.totals.rejected, 0);

    call(&mut b, at(0), Duration::ZERO, Failure);
    assert_eq!(
        events(&mut b),
        vec![],
        "the rate-exceeded event once per episode"
    );
    assert_eq!(b.state(), State::MetricsOnly);
}

/// Resilience4j: CircuitBreakerStateMachineTest::shouldPublishEachEventOnceInMetricOnlyState
#[test]
fn metrics_only_publishes_each_rate_event_once() {
    let mut b = breaker(state_machine_config());
    b.metrics_only(at(0));
    let _ = events(&mut b);
    // Five calls of 5 s, all running at once, all slow failures.
    let permits: Vec<Permit> = (0..5).map(|_| permit(&mut b, at(0))).collect();
    for p in permits {
        b.on_result(p, at(5000), Failure);
    }
    let evs = events(&mut b);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Ev::FailureRateExceeded(_)))
            .count(),
        1,
        "{evs:?}"
    );
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Ev::SlowCallRateExceeded(_)))
            .count(),
        1,
        "{evs:?}"
    );
    assert_eq!(evs.len(), 2, "{evs:?}");
}

/// A breaker brought to `state` by its commands, its events drained.
fn in_state(state: State) -> CircuitBreaker {
    let mut b = breaker(state_machine_config());
    match state {
        State::Closed => {}
        State::Open => b.transition_to_open(at(0)).unwrap(),
        State::HalfOpen => {
            b.transition_to_open(at(0)).unwrap();
            b.transition_to_half_open(at(0)).unwrap();
        }
        State::Disabled => b.disable(at(0)),
        State::ForcedOpen => b.force_open(at(0)),
        State::MetricsOnly => b.metrics_only(at(0)),
    }
    assert_eq!(b.state(), state);
    let _ = events(&mut b);
    b
}

const ALL_STATES: [State; 6] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::Disabled,
    State::ForcedOpen,
    State::MetricsOnly,
];

/// Resilience4j: CircuitBreakerStateMachineTest::allCircuitBreakerStatesAllowTransitionToMetricsOnlyMode
#[test]
fn every_state_may_move_to_metrics_only() {
    for state in ALL_STATES {
        let mut b = in_state(state);
        b.metrics_only(at(0));
        assert_eq!(b.state(), State::MetricsOnly, "from {state}");
        let expected = if state == State::MetricsOnly {
            vec![]
        } else {
            vec![(state, State::MetricsOnly)]
        };
        assert_eq!(transitions(&mut b), expected, "from {state}");
    }
}

/// Resilience4j: CircuitBreakerStateMachineTest::allCircuitBreakerStatesAllowTransitionToItsOwnState
#[test]
fn every_state_may_move_to_itself_silently() {
    for state in ALL_STATES {
        let mut b = in_state(state);
        match state {
            State::Closed => b.transition_to_closed(at(0)),
            State::Open => b.transition_to_open(at(0)).unwrap(),
            State::HalfOpen => b.transition_to_half_open(at(0)).unwrap(),
            State::Disabled => b.disable(at(0)),
            State::ForcedOpen => b.force_open(at(0)),
            State::MetricsOnly => b.metrics_only(at(0)),
        }
        assert_eq!(b.state(), state);
        assert_eq!(transitions(&mut b), vec![], "{state} to itself");
    }
}

/// Resilience4j: CircuitBreakerStateMachineTest::circuitBreakerDoesNotPublishStateTransitionEventsForInternalTransitions
#[test]
fn no_transition_event_for_a_state_to_itself() {
    let mut b = breaker(state_machine_config());
    type Command = fn(&mut CircuitBreaker, Instant);
    let steps: [(Command, State); 5] = [
        (|b, t| b.transition_to_open(t).unwrap(), State::Open),
        (
            |b, t| b.transition_to_half_open(t).unwrap(),
            State::HalfOpen,
        ),
        (CircuitBreaker::disable, State::Disabled),
        (CircuitBreaker::metrics_only, State::MetricsOnly),
        (CircuitBreaker::transition_to_closed, State::Closed),
    ];
    let mut from = State::Closed;
    for (command, to) in steps {
        command(&mut b, at(0));
        assert_eq!(transitions(&mut b), vec![(from, to)]);
        command(&mut b, at(0));
        assert_eq!(transitions(&mut b), vec![], "{to} to itself");
        assert_eq!(b.state(), to);
        from = to;
    }
}

/// Resilience4j: CircuitBreakerStateMachineTest::circuitBreakerTransitionsToOpenAfterWaitDurationInHalfOpenState
#[test]
fn half_open_opens_after_its_wait_max() {
    let mut b = breaker(state_machine_config());
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.poll_timeout(), Some(at(1000)));
    b.handle_timeout(at(2000));
    assert_eq!(b.state(), State::Open);
}

/// Resilience4j: CircuitBreakerStateMachineTest::circuitBreakerTransitionsToClosedAfterWaitDurationInHalfOpenState
#[test]
fn half_open_closes_after_its_wait_max_when_configured() {
    let mut b = breaker(
        BreakerConfig::builder()
            .half_open_wait_max(secs(1))
            .after_half_open_wait_max(State::Closed),
    );
    b.transition_to_open(at(0)).unwrap();
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.poll_timeout(), Some(at(1000)));
    b.handle_timeout(at(2000));
    assert_eq!(b.state(), State::Closed);
}

/// Resilience4j: CircuitBreakerStateMachineTest::circuitBreakerInitializeInClosedState
#[test]
fn initial_state_closed() {
    let mut b = breaker(
        BreakerConfig::builder()
            .initial_state(State::Closed)
            .failure_rate_threshold_percent(50)
            .count_window(5)
            .half_open_calls_permitted(4)
            .wait_in_open_exponential(secs(5), Ratio::new(3, 2), secs(86_400), 0),
    );
    assert_eq!(b.state(), State::Closed);
    b.transition_to_open(at(0)).unwrap();
    assert_eq!(b.state(), State::Open);
}

/// Resilience4j: CircuitBreakerStateMachineTest::circuitBreakerInitializeInOpenState
#[test]
fn initial_state_open() {
    let mut b = breaker(
        BreakerConfig::builder()
            .initial_state(State::Open)
            .failure_rate_threshold_percent(50)
            .time_window(1)
            .half_open_calls_permitted(4)
            .wait_in_open(secs(2))
            .automatic_transition(true),
    );
    assert_eq!(b.state(), State::Open);
    b.transition_to_half_open(at(0)).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
}

/// Resilience4j: CircuitBreakerStateMachineTest::circuitBreakerInitializeInMetricOnlyState
#[test]
fn initial_state_metrics_only() {
    let b = breaker(
        BreakerConfig::builder()
            .initial_state(State::MetricsOnly)
            .failure_rate_threshold_percent(50)
            .count_window(5)
            .half_open_calls_permitted(4)
            .wait_in_open_exponential(secs(5), Ratio::new(3, 2), secs(86_400), 0),
    );
    assert_eq!(b.state(), State::MetricsOnly);
}

/// Resilience4j: no test of its own; `CircuitBreakerStateMachine.OpenState.onError` /
/// `onSuccess` record a result that arrives after the state changed ("the onError event
/// should still be recorded, even if it happened after the state transition").
///
/// Difference: faultline ignores the result of a permit from an earlier episode (it is
/// counted in `totals.stale` and the outcome totals, not in the window).
#[test]
fn a_late_result_from_an_earlier_episode_is_stale() {
    let mut b = breaker(state_machine_config());
    let late = permit(&mut b, at(0));
    for _ in 0..5 {
        call(&mut b, at(0), Duration::ZERO, Failure);
    }
    assert_eq!(b.state(), State::Open);
    let before = b.metrics(at(0));
    b.on_result(late, at(100), Failure);
    let after = b.metrics(at(100));
    assert_eq!(after.window_calls, before.window_calls, "R4j: 6 calls");
    assert_eq!(after.window_failed, before.window_failed);
    assert_eq!(after.totals.stale, before.totals.stale + 1);
    assert_eq!(after.totals.failed, before.totals.failed + 1);
    assert_eq!(b.state(), State::Open);
}
