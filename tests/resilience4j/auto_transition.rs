//! `CircuitBreakerAutoTransitionStateMachineTest`: Open moves to HalfOpen by itself.
//! Resilience4j schedules a task on an executor; the sans-IO core says when through
//! `poll_timeout` and moves at `handle_timeout`.

use crate::*;

/// The test's `setUp`: failure rate 50 %, a count window of 5 with a minimum of 5, 3
/// calls in half-open, automatic transition, 2 s in open.
fn auto_config() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .failure_rate_threshold_percent(50)
        .count_window(5)
        .minimum_calls(5)
        .half_open_calls_permitted(3)
        .automatic_transition(true)
        .wait_in_open(secs(2))
}

/// Resilience4j: CircuitBreakerAutoTransitionStateMachineTest::testAutoTransition
#[test]
fn open_moves_to_half_open_by_itself_after_the_wait() {
    let mut b = breaker(auto_config());
    b.transition_to_open(at(0)).unwrap();
    // The transition is scheduled 2000 ms ahead.
    let due = b.poll_timeout().expect("a transition is due");
    assert_eq!((due - at(0)).as_millis(), 2000);
    b.handle_timeout(Instant::from_nanos(due.as_nanos() - 1));
    assert_eq!(b.state(), State::Open, "not before it is due");
    b.handle_timeout(due);
    assert_eq!(b.state(), State::HalfOpen);
}

/// Resilience4j: CircuitBreakerAutoTransitionStateMachineTest::shouldCancelAutoTransition
#[test]
fn forcing_open_cancels_the_automatic_transition() {
    let mut b = breaker(auto_config());
    b.transition_to_open(at(0)).unwrap();
    assert!(b.poll_timeout().is_some());
    b.force_open(at(0));
    assert_eq!(b.poll_timeout(), None);
    b.handle_timeout(at(10_000));
    assert_eq!(b.state(), State::ForcedOpen);
}

/// Resilience4j: CircuitBreakerAutoTransitionStateMachineTest::notCancelAutoTransitionFutureIfAlreadyDone
/// (the scheduled future is gone; what remains: after the transition has happened,
/// forcing open leaves nothing pending)
#[test]
fn forcing_open_after_the_automatic_transition() {
    let mut b = breaker(auto_config());
    b.transition_to_open(at(0)).unwrap();
    let due = b.poll_timeout().unwrap();
    b.handle_timeout(due);
    assert_eq!(b.state(), State::HalfOpen);
    b.force_open(due);
    assert_eq!(b.state(), State::ForcedOpen);
    assert_eq!(b.poll_timeout(), None);
}
