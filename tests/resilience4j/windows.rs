//! resilience4j-core's `FixedSizeSlidingWindowMetricsTest` and
//! `SlidingTimeWindowMetricsTest`: the two sliding windows, read through a breaker in
//! MetricsOnly (it records without tripping) with a minimum of 1 call, so that a rate is
//! reported as soon as the window holds a call.
//!
//! Resilience4j records an outcome with its duration and its slowness given
//! (`SLOW_SUCCESS`); here a call is timed from its permit and is slow when it lasts
//! longer than 500 ms: fast calls take 100 ms, slow ones 1000 ms. Not expressible: the
//! total and average durations of a snapshot (faultline's metrics keep counts only).

use crate::*;
use faultline::breaker::circuit::CallOutcome::*;
use faultline::breaker::circuit::SlidingWindow;

const FAST: Duration = Duration::from_millis(100);
const SLOW: Duration = Duration::from_millis(1000);

fn window(kind: SlidingWindow) -> CircuitBreaker {
    let b = BreakerConfig::builder()
        .minimum_calls(1)
        .slow_call_duration(millis(500))
        .initial_state(State::MetricsOnly);
    breaker(match kind {
        SlidingWindow::Count { size } => b.count_window(size),
        SlidingWindow::Time { size_secs } => b.time_window(size_secs),
    })
}

/// Both of Resilience4j's default windows: 5 calls and 5 seconds.
const DEFAULT: [SlidingWindow; 2] = [
    SlidingWindow::Count { size: 5 },
    SlidingWindow::Time { size_secs: 5 },
];

/// (calls, successful, failed, slow) in the window.
fn counts(m: &Metrics) -> (u32, u32, u32, u32) {
    (
        m.window_calls,
        m.window_calls - m.window_failed,
        m.window_failed,
        m.window_slow,
    )
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::checkInitialBucketCreation
/// Resilience4j: SlidingTimeWindowMetricsTest::checkInitialBucketCreation
/// (the buckets' epoch seconds are internal; an empty window's failure rate is `None`
/// where Resilience4j's raw snapshot says 0 and its breaker metrics -1)
#[test]
fn an_empty_window() {
    for kind in DEFAULT {
        let b = window(kind);
        let m = b.metrics(at(0));
        assert_eq!(counts(&m), (0, 0, 0, 0), "{kind:?}");
        assert_eq!(m.failure_rate_permille, None, "{kind:?}");
        assert_eq!(m.slow_call_rate_permille, None, "{kind:?}");
    }
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::testRecordSuccess
/// Resilience4j: SlidingTimeWindowMetricsTest::testRecordSuccess
#[test]
fn record_a_success() {
    for kind in DEFAULT {
        let mut b = window(kind);
        let t = call(&mut b, at(0), FAST, Success);
        let m = b.metrics(t);
        assert_eq!(counts(&m), (1, 1, 0, 0), "{kind:?}");
        assert_eq!(m.failure_rate_permille, Some(0), "{kind:?}");
    }
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::testRecordError
/// Resilience4j: SlidingTimeWindowMetricsTest::testRecordError
#[test]
fn record_an_error() {
    for kind in DEFAULT {
        let mut b = window(kind);
        let t = call(&mut b, at(0), FAST, Failure);
        let m = b.metrics(t);
        assert_eq!(counts(&m), (1, 0, 1, 0), "{kind:?}");
        assert_eq!(m.failure_rate_permille, Some(1000), "{kind:?}");
    }
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::testRecordSlowSuccess
/// Resilience4j: SlidingTimeWindowMetricsTest::testRecordSlowSuccess
#[test]
fn record_a_slow_success() {
    for kind in DEFAULT {
        let mut b = window(kind);
        let t = call(&mut b, at(0), SLOW, Success);
        let m = b.metrics(t);
        assert_eq!(counts(&m), (1, 1, 0, 1), "{kind:?}");
        assert_eq!(m.failure_rate_permille, Some(0), "{kind:?}");
        assert_eq!(m.slow_call_rate_permille, Some(1000), "{kind:?}");
    }
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::testSlowCallsPercentage
/// Resilience4j: SlidingTimeWindowMetricsTest::testSlowCallsPercentage
///
/// Difference: faultline counts slow calls without splitting them into slow successes
/// and slow failures (Resilience4j: 1 and 1).
#[test]
fn slow_call_percentage() {
    for kind in DEFAULT {
        let mut b = window(kind);
        let mut t = at(0);
        for (took, outcome) in [
            (SLOW, Success),
            (SLOW, Failure),
            (FAST, Success),
            (FAST, Success),
            (FAST, Success),
        ] {
            t = call(&mut b, t, took, outcome);
        }
        let m = b.metrics(t);
        assert_eq!(
            (m.window_calls, m.window_calls - m.window_failed),
            (5, 4),
            "{kind:?}"
        );
        assert_eq!(m.window_slow, 2, "{kind:?}");
        assert_eq!(m.slow_call_rate_permille, Some(400), "{kind:?}");
    }
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::testSlidingWindowMetrics
#[test]
fn a_count_window_slides() {
    let mut b = window(SlidingWindow::Count { size: 4 });
    let mut t = at(0);
    for (outcome, expected, rate) in [
        (Failure, (1, 0, 1, 0), 1000),
        (Success, (2, 1, 1, 0), 500),
        (Success, (3, 2, 1, 0), 333),
        (Success, (4, 3, 1, 0), 250),
        // The failure leaves the window of 4.
        (Success, (4, 4, 0, 0), 0),
    ] {
        t = call(&mut b, t, FAST, outcome);
        let m = b.metrics(t);
        assert_eq!(counts(&m), expected);
        assert_eq!(m.failure_rate_permille, Some(rate));
    }
}

/// Resilience4j: FixedSizeSlidingWindowMetricsTest::testSlidingWindowMetricsWithSlowCalls
///
/// Difference: no split into slow successes and slow failures (the total slow count is
/// asserted).
#[test]
fn a_count_window_slides_slow_calls_out() {
    let mut b = window(SlidingWindow::Count { size: 2 });
    let mut t = at(0);
    for (took, outcome, expected, rate) in [
        (SLOW, Failure, (1, 0, 1, 1), 1000),
        (SLOW, Success, (2, 1, 1, 2), 500),
        (FAST, Success, (2, 2, 0, 1), 0),
        (FAST, Success, (2, 2, 0, 0), 0),
        (FAST, Success, (2, 2, 0, 0), 0),
    ] {
        t = call(&mut b, t, took, outcome);
        let m = b.metrics(t);
        assert_eq!(counts(&m), expected);
        assert_eq!(m.failure_rate_permille, Some(rate));
    }
}

/// Resilience4j: SlidingTimeWindowMetricsTest::shouldClearSlidingTimeWindowMetrics
/// (the window ages when read, as Resilience4j's `getSnapshot` does)
#[test]
fn a_time_window_empties_as_time_passes() {
    let mut b = window(SlidingWindow::Time { size_secs: 5 });
    // The slow call of the third step runs from 200 ms before the start.
    let slow = permit(&mut b, before(200));
    let p = permit(&mut b, before(100));
    b.on_result(p, at(0), Failure);
    let m = b.metrics(at(0));
    assert_eq!(counts(&m), (1, 0, 1, 0));
    assert_eq!(m.failure_rate_permille, Some(1000));

    call(&mut b, at(0), FAST, Success);
    let m = b.metrics(at(100));
    assert_eq!(counts(&m), (2, 1, 1, 0));
    assert_eq!(m.failure_rate_permille, Some(500));

    b.on_result(slow, at(800), Failure);
    assert_eq!(counts(&b.metrics(at(800))), (3, 1, 2, 1));

    // 4 s later the first second is still in the window; a second more and it is not.
    assert_eq!(counts(&b.metrics(at(4800))), (3, 1, 2, 1));
    let m = b.metrics(at(5800));
    assert_eq!(counts(&m), (0, 0, 0, 0));
    assert_eq!(m.failure_rate_permille, None);

    call(&mut b, at(5800), FAST, Success);
    let m = b.metrics(at(5900));
    assert_eq!(counts(&m), (1, 1, 0, 0));
    assert_eq!(m.failure_rate_permille, Some(0));

    call(&mut b, at(10_800), FAST, Success);
    let m = b.metrics(at(10_900));
    assert_eq!(counts(&m), (1, 1, 0, 0));
    assert_eq!(m.failure_rate_permille, Some(0));
}

/// Resilience4j: SlidingTimeWindowMetricsTest::testSlidingTimeWindowMetrics
#[test]
fn a_time_window_slides_by_the_second() {
    let mut b = window(SlidingWindow::Time { size_secs: 5 });
    // (when the call ends, in ms from the start; outcome; calls, successes, failures)
    for (end, outcome, expected) in [
        (0, Failure, (1, 0, 1)),
        (100, Success, (2, 1, 1)),
        (200, Success, (3, 2, 1)),
        (1200, Success, (4, 3, 1)),
        (2200, Success, (5, 4, 1)),
        (3200, Failure, (6, 4, 2)),
        (4200, Success, (7, 5, 2)),
        // The first second (three calls) has left the window.
        (5200, Success, (5, 4, 1)),
        (6200, Success, (5, 4, 1)),
        (11_200, Success, (1, 1, 0)),
    ] {
        let p = permit(&mut b, Instant::from_millis(T0_MS + end - 100));
        b.on_result(p, at(end), outcome);
        let m = b.metrics(at(end));
        assert_eq!(
            (
                m.window_calls,
                m.window_calls - m.window_failed,
                m.window_failed
            ),
            expected,
            "after the call ending at {end} ms"
        );
    }
}
