//! Circuit breaker overhead: the cost of one guarded call, next to other breakers.
//!
//! One criterion group, `breaker/guarded_call`, each function doing the same work per
//! iteration in one of two situations:
//!
//! - `*_closed`: the breaker is Closed; one call of a trivial `Ok(())` closure goes
//!   through it (ask permission, run the closure, record a success).
//! - `*_rejected_open`: the breaker was tripped Open by failures, with a wait in open of
//!   a day; one call is rejected without running the closure.
//!
//! Implementations:
//!
//! - `core`: the sans-IO [`CircuitBreaker`] (`&mut self`, time passed in as an
//!   [`Instant`] that advances by 1 µs per iteration, no clock read, no lock);
//! - `shared`: [`SharedBreaker`], the tokio adapter's thread-safe breaker (reads tokio's
//!   clock, takes a `std::sync::Mutex` in Closed; rejects lock-free while Open);
//! - `recloser`: `recloser::Recloser` 1.4 (lock-free, crossbeam-epoch, ring buffers);
//! - `failsafe`: `failsafe::StateMachine` 1.3 (a `parking_lot::Mutex`).
//!
//! Configured alike: windows of 100 calls (failsafe: 100 consecutive failures), 50 %
//! failure threshold, a day in open. Everything is uncontended (single thread).
//!
//! Run with `cargo bench --bench breaker`; `cargo bench --bench breaker -- --test` runs
//! each function once as a smoke test.

// Bench code, not user input: a failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/mod.rs"]
mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use faultline::breaker::pattern::BreakerPattern;
use faultline::breaker::tokio::SharedBreaker;
use faultline::breaker::{BreakerConfig, CallOutcome, CircuitBreaker, State};
use faultline::clock::Instant;
use std::hint::black_box;
use std::time::Duration;

/// Calls in every breaker's window (and failures that trip failsafe).
const WINDOW: u32 = 100;
/// The wait in open: far longer than any benchmark run.
const OPEN_WAIT: Duration = Duration::from_secs(86_400);
/// The core's clock step per iteration.
const STEP: Duration = Duration::from_micros(1);

/// The same breaker as recloser's: a count window and a failure rate, no slow calls.
fn config() -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(WINDOW)
        .minimum_calls(WINDOW)
        .failure_rate_threshold_percent(50)
        .without_slow_calls()
        .wait_in_open(OPEN_WAIT)
        .build()
        .expect("valid breaker config")
}

/// The same, timing every call for the slow-call rate (Resilience4j's default), which
/// recloser and failsafe do not do: it costs the thread-safe breaker two clock reads.
fn timed_config() -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(WINDOW)
        .minimum_calls(WINDOW)
        .failure_rate_threshold_percent(50)
        .wait_in_open(OPEN_WAIT)
        .build()
        .expect("valid breaker config")
}

/// The trivial guarded call.
#[inline(always)]
fn work() -> Result<(), ()> {
    black_box(Ok(()))
}

fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(WINDOW as usize)
        .half_open_len(10)
        .open_wait(OPEN_WAIT)
        .build()
}

fn failsafe() -> impl failsafe::CircuitBreaker + failsafe::futures::CircuitBreaker {
    let policy = failsafe::failure_policy::consecutive_failures(
        WINDOW,
        failsafe::backoff::constant(OPEN_WAIT),
    );
    failsafe::Config::new().failure_policy(policy).build()
}

fn guarded_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker/guarded_call");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // --- the sans-IO core ---
    group.bench_function("core_closed", |b| {
        let mut breaker = CircuitBreaker::new(config());
        let mut now = Instant::ZERO;
        b.iter(|| {
            now = now + STEP;
            let permit = breaker.try_acquire(black_box(now)).unwrap();
            let outcome = match work() {
                Ok(()) => CallOutcome::Success,
                Err(()) => CallOutcome::Failure,
            };
            breaker.on_result(permit, now, outcome);
        });
        assert_eq!(breaker.state(), State::Closed);
    });
    group.bench_function("core_rejected_open", |b| {
        let mut breaker = CircuitBreaker::new(config());
        let mut now = Instant::ZERO;
        for _ in 0..WINDOW {
            let permit = breaker.try_acquire(now).unwrap();
            breaker.on_result(permit, now, CallOutcome::Failure);
        }
        assert_eq!(breaker.state(), State::Open);
        b.iter(|| {
            now = now + STEP;
            black_box(breaker.try_acquire(black_box(now))).unwrap_err();
        });
    });

    // --- the tokio adapter's SharedBreaker (no runtime needed: tokio's clock is then
    // the system's monotonic clock) ---
    group.bench_function("shared_closed", |b| {
        let breaker = SharedBreaker::new(config());
        b.iter(|| {
            let permit = breaker.try_acquire().unwrap();
            let outcome = match work() {
                Ok(()) => CallOutcome::Success,
                Err(()) => CallOutcome::Failure,
            };
            permit.record(outcome);
        });
        assert_eq!(breaker.state(), State::Closed);
    });
    group.bench_function("shared_closed_timed", |b| {
        let breaker = SharedBreaker::new(timed_config());
        b.iter(|| {
            let permit = breaker.try_acquire().unwrap();
            let outcome = match work() {
                Ok(()) => CallOutcome::Success,
                Err(()) => CallOutcome::Failure,
            };
            permit.record(outcome);
        });
        assert_eq!(breaker.state(), State::Closed);
    });
    group.bench_function("shared_rejected_open", |b| {
        let breaker = SharedBreaker::new(config());
        for _ in 0..WINDOW {
            breaker.try_acquire().unwrap().record(CallOutcome::Failure);
        }
        assert_eq!(breaker.state(), State::Open);
        b.iter(|| {
            black_box(breaker.try_acquire()).unwrap_err();
        });
        assert!(breaker.fast_rejected() > 0, "the lock-free path was taken");
    });

    // --- recloser ---
    group.bench_function("recloser_closed", |b| {
        let breaker = recloser();
        b.iter(|| black_box(breaker.call(work)).unwrap());
    });
    group.bench_function("recloser_rejected_open", |b| {
        let breaker = recloser();
        for _ in 0..=WINDOW {
            let _ = breaker.call(|| Err::<(), ()>(()));
        }
        assert!(matches!(breaker.call(work), Err(recloser::Error::Rejected)));
        b.iter(|| {
            let rejected = black_box(breaker.call(work));
            debug_assert!(matches!(rejected, Err(recloser::Error::Rejected)));
            rejected
        });
    });

    // --- failsafe ---
    group.bench_function("failsafe_closed", |b| {
        let breaker = failsafe();
        b.iter(|| black_box(breaker.call(work)).unwrap());
    });
    group.bench_function("failsafe_rejected_open", |b| {
        let breaker = failsafe();
        for _ in 0..WINDOW {
            let _ = breaker.call(|| Err::<(), ()>(()));
        }
        assert!(matches!(breaker.call(work), Err(failsafe::Error::Rejected)));
        b.iter(|| {
            let rejected = black_box(breaker.call(work));
            debug_assert!(matches!(rejected, Err(failsafe::Error::Rejected)));
            rejected
        });
    });

    group.finish();
}

/// `Resilient::call`, the tokio adapter's whole stack (bulkhead, breaker, timeout,
/// retries, fallback), on a current-thread runtime with tokio's paused clock (a backoff
/// sleep advances it at once), one call per iteration:
///
/// - `closed_ok`: the breaker is Closed, the call's future is a ready `Ok`;
/// - `closed_failure_retried`: every attempt fails (a count window of a million calls,
///   so it never trips), two attempts with a backoff of at most 1 ns: two attempts, one retry
///   decision, one answer per iteration;
/// - `rejected_open`: the breaker is Open for a day; the call is rejected.
///
/// Its peers in the same group are the async call paths of the same two crates as in
/// `breaker/guarded_call`, on the same runtime, configured alike: `failsafe_closed_ok`,
/// `failsafe_rejected_open` (`failsafe::futures::CircuitBreaker::call`) and
/// `recloser_closed_ok`, `recloser_rejected_open` (`recloser::AsyncRecloser::call`).
/// They do less work than `Resilient`: no bulkhead, no deadline timer around the attempt,
/// no retry decision, no fallback; neither crate retries, so `closed_failure_retried`
/// has no peer.
fn resilient(c: &mut Criterion) {
    use faultline::breaker::tokio::Resilient;
    use faultline::retry::{Backoff, RetryPolicy};
    let mut group = c.benchmark_group("breaker/resilient");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let build = |breaker: BreakerConfig, attempts: u32| {
        let _guard = rt.enter();
        Resilient::<u32, ()>::builder(breaker)
            .timeout(Duration::from_secs(10))
            .retry(
                RetryPolicy::new(
                    attempts,
                    Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1)).unwrap(),
                )
                .unwrap(),
            )
            .build()
            .unwrap()
    };
    group.bench_function("closed_ok", |b| {
        let r = build(config(), 1);
        b.iter(|| {
            rt.block_on(r.call(|| async { black_box(Ok::<u32, ()>(1)) }))
                .unwrap()
        });
    });
    group.bench_function("closed_failure_retried", |b| {
        let never_trips = BreakerConfig::builder()
            .count_window(1_000_000)
            .minimum_calls(1_000_000)
            .without_slow_calls()
            .build()
            .unwrap();
        let r = build(never_trips, 2);
        b.iter(|| {
            rt.block_on(r.call(|| async { black_box(Err::<u32, ()>(())) }))
                .unwrap_err()
        });
    });
    group.bench_function("rejected_open", |b| {
        let r = build(config(), 1);
        for _ in 0..WINDOW {
            let _ = rt.block_on(r.call(|| async { Err::<u32, ()>(()) }));
        }
        assert_eq!(r.breaker().state(), State::Open);
        b.iter(|| {
            rt.block_on(r.call(|| async { black_box(Ok::<u32, ()>(1)) }))
                .unwrap_err()
        });
    });
    // --- failsafe's futures API ---
    let failsafe_call = |breaker: &_, ok: bool| {
        let attempt = async move { if ok { Ok::<u32, ()>(1) } else { Err(()) } };
        rt.block_on(failsafe::futures::CircuitBreaker::call(breaker, attempt))
    };
    group.bench_function("failsafe_closed_ok", |b| {
        let breaker = failsafe();
        b.iter(|| black_box(failsafe_call(&breaker, true)).unwrap());
    });
    group.bench_function("failsafe_rejected_open", |b| {
        let breaker = failsafe();
        for _ in 0..WINDOW {
            let _ = failsafe_call(&breaker, false);
        }
        assert!(matches!(
            failsafe_call(&breaker, true),
            Err(failsafe::Error::Rejected)
        ));
        b.iter(|| black_box(failsafe_call(&breaker, true)).unwrap_err());
    });
    // --- recloser's async API ---
    let recloser_call = |breaker: &recloser::AsyncRecloser, ok: bool| {
        let attempt = async move { if ok { Ok::<u32, ()>(1) } else { Err(()) } };
        rt.block_on(breaker.call(attempt))
    };
    group.bench_function("recloser_closed_ok", |b| {
        let breaker = recloser::AsyncRecloser::from(recloser());
        b.iter(|| black_box(recloser_call(&breaker, true)).unwrap());
    });
    group.bench_function("recloser_rejected_open", |b| {
        let breaker = recloser::AsyncRecloser::from(recloser());
        // recloser trips on the call after a full window.
        for _ in 0..=WINDOW {
            let _ = recloser_call(&breaker, false);
        }
        assert!(matches!(
            recloser_call(&breaker, true),
            Err(recloser::Error::Rejected)
        ));
        b.iter(|| black_box(recloser_call(&breaker, true)).unwrap_err());
    });
    group.finish();
}

/// The SMS world: simulated events per second of whole runs (reference guard, the
/// knobs and fault plan of seed 7, trace off).
fn sms_world(c: &mut Criterion) {
    support::world_events(c, "breaker/sms_world", &BreakerPattern, 7);
}

criterion_group!(benches, guarded_call, resilient, sms_world);
criterion_main!(benches);
