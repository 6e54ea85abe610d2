//! Unit tests of the tokio adapters, on tokio's paused clock.

use super::*;
use crate::breaker::circuit::{BreakerConfig, BreakerEvent, CallOutcome, CircuitBreaker, State};
use crate::breaker::error::CallError;
use crate::breaker::fallback::FallbackPolicy;
use crate::breaker::{TransitionReason, circuit::Totals};
use crate::clock::Instant;
use crate::retry::Backoff;
use crate::retry::{RetryBudget, RetryPolicy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_test::{assert_pending, assert_ready, task};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boom {
    Down,
    BadRequest,
}

const WAIT: Duration = Duration::from_secs(10);

/// Opens after 4 calls at 50 % failures; 10 s in open; 2 probes.
fn config() -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(4)
        .minimum_calls(4)
        .failure_rate_threshold_percent(50)
        .wait_in_open(WAIT)
        .half_open_calls_permitted(2)
        .build()
        .unwrap()
}

fn one_probe() -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(2)
        .minimum_calls(2)
        .wait_in_open(WAIT)
        .half_open_calls_permitted(1)
        .build()
        .unwrap()
}

fn basic(config: BreakerConfig) -> Resilient<u32, Boom> {
    Resilient::builder(config)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn retry(attempts: u32, base: Duration, cap: Duration) -> RetryPolicy {
    RetryPolicy::new(attempts, Backoff::new(base, cap).unwrap()).unwrap()
}

/// `f` for `call`: counts its invocations and answers `reply`.
fn counting(
    calls: &AtomicU32,
    reply: Result<u32, Boom>,
) -> impl FnMut() -> std::future::Ready<Result<u32, Boom>> + '_ {
    move || {
        calls.fetch_add(1, Ordering::Relaxed);
        std::future::ready(reply)
    }
}

async fn fail_n(r: &Resilient<u32, Boom>, n: usize) {
    for _ in 0..n {
        assert_eq!(
            r.call(|| async { Err(Boom::Down) }).await,
            Err(CallError::Failed(Boom::Down))
        );
    }
}

fn transitions(b: &SharedBreaker) -> Vec<(State, State)> {
    std::iter::from_fn(|| b.poll_event())
        .filter_map(|e| e.transition())
        .collect()
}

fn adds_up(t: Totals) -> bool {
    t.admitted == t.succeeded + t.failed + t.ignored + t.released
}

#[tokio::test(start_paused = true)]
async fn closed_call_succeeds() {
    let r = basic(config());
    let calls = AtomicU32::new(0);
    assert_eq!(r.call(counting(&calls, Ok(7))).await, Ok(7));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let m = r.breaker().metrics();
    assert_eq!(m.state, State::Closed);
    assert_eq!((m.totals.admitted, m.totals.succeeded), (1, 1));
    assert_eq!(m.in_flight, 0);
    assert_eq!(r.bulkhead().in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn failures_trip_it_and_open_rejects_without_calling() {
    let r = basic(config());
    fail_n(&r, 4).await;
    assert_eq!(r.breaker().state(), State::Open);
    tokio::time::advance(Duration::from_secs(3)).await;
    let calls = AtomicU32::new(0);
    for expected in [7_000, 6_500] {
        assert_eq!(
            r.call(counting(&calls, Ok(1))).await,
            Err(CallError::Unavailable {
                retry_after: ms(expected)
            })
        );
        tokio::time::advance(ms(500)).await;
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "f is never called while open"
    );
    // Both rejections took the lock-free path, and the metrics still count them.
    assert_eq!(r.breaker().fast_rejected(), 2);
    let m = r.breaker().metrics();
    assert_eq!(m.totals.rejected, 2);
    assert_eq!(m.totals.failed, 4);
}

#[tokio::test(start_paused = true)]
async fn fast_path_says_what_the_core_says() {
    let shared = SharedBreaker::new(config());
    let mut core = CircuitBreaker::new(config());
    for _ in 0..4 {
        shared.try_acquire().unwrap().record(CallOutcome::Failure);
        let p = core.try_acquire(Instant::ZERO).unwrap();
        core.on_result(p, Instant::ZERO, CallOutcome::Failure);
    }
    for step in [1, 1_234, 3_000, 5_764] {
        tokio::time::advance(ms(step)).await;
        let fast = shared.try_acquire().unwrap_err();
        let slow = core.try_acquire(shared.now()).unwrap_err();
        assert_eq!(fast, slow);
    }
    assert_eq!(shared.fast_rejected(), 4);
    assert_eq!(shared.metrics().totals, core.totals());
    // ForcedOpen goes through the core (the fast path is for Open only).
    shared.force_open();
    assert_eq!(shared.try_acquire().unwrap_err().state, State::ForcedOpen);
    assert_eq!(shared.fast_rejected(), 4);
    assert_eq!(shared.metrics().totals.rejected, 5);
    shared.reset();
    assert!(shared.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn after_the_wait_probes_close_it() {
    let r = basic(config());
    fail_n(&r, 4).await;
    tokio::time::advance(WAIT + Duration::from_millis(1)).await;
    assert_eq!(r.call(|| async { Ok(1) }).await, Ok(1));
    assert_eq!(r.breaker().state(), State::HalfOpen);
    assert_eq!(r.call(|| async { Ok(2) }).await, Ok(2));
    assert_eq!(r.breaker().state(), State::Closed);
    assert_eq!(
        transitions(r.breaker()),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    assert_eq!(r.breaker().fast_rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_fires_on_a_slow_call_and_counts_as_failure() {
    let r = basic(config());
    let start = tokio::time::Instant::now();
    let result = r
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(1)
        })
        .await;
    assert_eq!(
        result,
        Err(CallError::Timeout {
            timeout: Duration::from_secs(1)
        })
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let m = r.breaker().metrics();
    assert_eq!((m.totals.failed, m.window_failed, m.in_flight), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_and_the_deadline_covers_all_attempts() {
    // Three attempts of at most 300 ms fit in the 1 s deadline.
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .attempt_timeout(ms(300))
        .retry(retry(3, ms(10), ms(10)))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let slow = || {
        calls.fetch_add(1, Ordering::Relaxed);
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(0)
        }
    };
    let result = r.call(slow).await;
    assert_eq!(result, Err(CallError::Timeout { timeout: ms(300) }));
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(r.breaker().metrics().totals.failed, 3);

    // With 600 ms attempts the second one is cut at the deadline, and no third starts.
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .attempt_timeout(ms(600))
        .retry(retry(5, ms(10), ms(10)))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    calls.store(0, Ordering::Relaxed);
    let result = r.call(slow).await;
    assert_eq!(
        result,
        Err(CallError::Timeout {
            timeout: Duration::from_secs(1)
        })
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_and_each_attempt_asks_for_a_permit() {
    let big = BreakerConfig::builder()
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap();
    let policy = retry(3, ms(100), Duration::from_secs(1));
    let r: Resilient<u32, Boom> = Resilient::builder(big)
        .timeout(Duration::from_secs(5))
        .retry(policy)
        .seed(42)
        .build()
        .unwrap();
    // The delays the same seed gives.
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let d1 = policy.next_delay(1, &mut rng).unwrap();
    let d2 = policy.next_delay(2, &mut rng).unwrap();
    let calls = AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let result = r
        .call(|| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move { if n < 2 { Err(Boom::Down) } else { Ok(n) } }
        })
        .await;
    assert_eq!(result, Ok(2));
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let elapsed = start.elapsed();
    // tokio's timer has millisecond resolution.
    assert!(
        elapsed >= d1 + d2 && elapsed <= d1 + d2 + ms(2),
        "{elapsed:?} vs {d1:?} + {d2:?}"
    );
    let t = r.breaker().metrics().totals;
    assert_eq!((t.admitted, t.failed, t.succeeded), (3, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opening_during_retries_stops_them() {
    let r: Resilient<u32, Boom> = Resilient::builder(one_probe())
        .timeout(Duration::from_secs(60))
        .retry(retry(5, ms(1), ms(1)))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let result = r.call(counting(&calls, Err(Boom::Down))).await;
    // Two failures open the breaker; the third attempt is rejected, not sent.
    assert!(
        matches!(result, Err(CallError::Unavailable { retry_after }) if retry_after <= WAIT && retry_after >= WAIT - ms(2)),
        "{result:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    let t = r.breaker().metrics().totals;
    assert_eq!((t.admitted, t.failed, t.rejected), (2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(5))
        .retry(retry(5, ms(10), ms(10)))
        .budget(RetryBudget::new(Duration::from_secs(1), 0, 0).unwrap())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let result = r.call(counting(&calls, Err(Boom::Down))).await;
    assert_eq!(result, Err(CallError::Failed(Boom::Down)));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(r.budget_exhausted_total(), Some(1));

    // 50 % of first attempts: two calls earn one retry between them.
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(5))
        .retry(retry(5, ms(10), ms(10)))
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 50).unwrap())
        .build()
        .unwrap();
    calls.store(0, Ordering::Relaxed);
    let third_time_lucky = || {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move { if n < 2 { Err(Boom::Down) } else { Ok(n) } }
    };
    // First call: 1 deposit, 0 retries allowed (floor(1 * 50 %) = 0).
    assert_eq!(
        r.call(third_time_lucky).await,
        Err(CallError::Failed(Boom::Down))
    );
    // Second call: 2 deposits, one retry allowed, which succeeds.
    assert_eq!(r.call(third_time_lucky).await, Ok(2));
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(r.budget_exhausted_total(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_rejects() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(5))
        .bulkhead(1)
        .build()
        .unwrap();
    let mut first = task::spawn(r.call(std::future::pending));
    assert_pending!(first.poll());
    assert_eq!(r.bulkhead().in_use(), 1);
    let calls = AtomicU32::new(0);
    assert_eq!(
        r.call(counting(&calls, Ok(1))).await,
        Err(CallError::BulkheadFull { max_concurrent: 1 })
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    drop(first);
    assert_eq!(r.bulkhead().in_use(), 0);
    assert_eq!(r.call(counting(&calls, Ok(1))).await, Ok(1));
    let t = r.breaker().metrics().totals;
    assert_eq!((t.admitted, t.released, t.succeeded), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn fallback_default_answers() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .bulkhead(1)
        .fallback(FallbackPolicy::Default(99))
        .build()
        .unwrap();
    // A failure, then an open breaker.
    assert_eq!(r.call(|| async { Err(Boom::Down) }).await, Ok(99));
    fail_n_fallback(&r, 3).await;
    assert_eq!(r.breaker().state(), State::Open);
    let calls = AtomicU32::new(0);
    assert_eq!(r.call(counting(&calls, Ok(1))).await, Ok(99));
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    // A full bulkhead.
    let mut busy = task::spawn(r.call(std::future::pending));
    assert_ready!(busy.poll()).unwrap(); // rejected by the breaker, answered by fallback
    r.breaker().reset();
    let mut busy = task::spawn(r.call(std::future::pending));
    assert_pending!(busy.poll());
    assert_eq!(r.call(counting(&calls, Ok(1))).await, Ok(99));
    drop(busy);
    assert_eq!(r.fallback_used_total(), 7);
}

async fn fail_n_fallback(r: &Resilient<u32, Boom>, n: usize) {
    for _ in 0..n {
        assert!(r.call(|| async { Err(Boom::Down) }).await.is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_last_good_answers_with_the_last_value() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .fallback(FallbackPolicy::LastGood {
            max_age: Some(Duration::from_secs(60)),
        })
        .build()
        .unwrap();
    // No good value yet: the error comes through.
    assert_eq!(
        r.call(|| async { Err(Boom::Down) }).await,
        Err(CallError::Failed(Boom::Down))
    );
    assert_eq!(r.call(|| async { Ok(41) }).await, Ok(41));
    assert_eq!(r.call(|| async { Ok(42) }).await, Ok(42));
    assert_eq!(r.call(|| async { Err(Boom::Down) }).await, Ok(42));
    // Too old.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        r.call(|| async { Err(Boom::Down) }).await,
        Err(CallError::Failed(Boom::Down))
    );
    assert_eq!(r.fallback_used_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn ignored_errors_change_no_count_and_are_not_retried() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(5))
        .retry(retry(5, ms(10), ms(10)))
        .classify(|e| match e {
            Boom::BadRequest => CallOutcome::Ignored,
            Boom::Down => CallOutcome::Failure,
        })
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    for _ in 0..10 {
        assert_eq!(
            r.call(counting(&calls, Err(Boom::BadRequest))).await,
            Err(CallError::Failed(Boom::BadRequest))
        );
    }
    assert_eq!(calls.load(Ordering::Relaxed), 10, "one attempt each");
    let m = r.breaker().metrics();
    assert_eq!(m.state, State::Closed);
    assert_eq!((m.window_calls, m.window_failed), (0, 0));
    assert_eq!(
        (m.totals.ignored, m.totals.failed, m.totals.succeeded),
        (10, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_half_open_probe_does_not_leave_it_stuck() {
    let r = basic(one_probe());
    fail_n(&r, 2).await;
    tokio::time::advance(WAIT + Duration::from_millis(1)).await;

    // A probe call is polled once (it holds the only probe permit), then cancelled.
    let mut probe = task::spawn(r.call(std::future::pending));
    assert_pending!(probe.poll());
    let m = r.breaker().metrics();
    assert_eq!(
        (m.state, m.in_flight, m.half_open_admitted),
        (State::HalfOpen, 1, 1)
    );
    // Meanwhile other calls are turned away.
    let calls = AtomicU32::new(0);
    assert_eq!(
        r.call(counting(&calls, Ok(1))).await,
        Err(CallError::Unavailable { retry_after: WAIT })
    );
    drop(probe);

    // The drop gave the permit back (same episode), and the next call probes.
    let m = r.breaker().metrics();
    assert_eq!((m.in_flight, m.totals.released), (0, 1));
    assert_eq!((m.half_open_permits_left, m.half_open_admitted), (1, 1));
    assert_eq!(r.call(counting(&calls, Ok(1))).await, Ok(1));
    assert_eq!(r.breaker().state(), State::Closed);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let reasons: Vec<_> = std::iter::from_fn(|| r.breaker().poll_event())
        .filter_map(|e| match e {
            BreakerEvent::Transition { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.last(), Some(&TransitionReason::ProbesSucceeded));
    assert!(adds_up(r.breaker().metrics().totals));
}

#[test]
fn without_release_a_leaked_probe_keeps_half_open_rejecting() {
    // The contrast, on the core alone: a permit that is neither recorded nor
    // released (what a cancelled future without the RAII permit would do).
    let mut core = CircuitBreaker::new(one_probe());
    for _ in 0..2 {
        let p = core.try_acquire(Instant::ZERO).unwrap();
        core.on_result(p, Instant::ZERO, CallOutcome::Failure);
    }
    let t = Instant::ZERO + WAIT + Duration::from_nanos(1);
    let _never_handed_back = core.try_acquire(t).unwrap();
    for hours in [0, 1, 24, 24 * 365] {
        let later = t + Duration::from_secs(3_600 * hours);
        let rejected = core.try_acquire(later).unwrap_err();
        assert_eq!(rejected.state, State::HalfOpen, "stuck after {hours} h");
    }
    assert_eq!(core.metrics(t).in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_backoff_frees_the_slot() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(60))
        .retry(retry(3, Duration::from_secs(10), Duration::from_secs(10)))
        .seed(1)
        .bulkhead(1)
        .build()
        .unwrap();
    let mut call = task::spawn(r.call(|| async { Err(Boom::Down) }));
    assert_pending!(call.poll()); // failed once, now sleeping before the retry
    // (A zero delay would have retried at once; seed 1 draws a non-zero one.)
    let m = r.breaker().metrics();
    assert_eq!((m.totals.failed, m.in_flight), (1, 0));
    assert_eq!(r.bulkhead().in_use(), 1);
    drop(call);
    assert_eq!(r.bulkhead().in_use(), 0);
}

#[test]
fn a_poisoned_lock_does_not_panic() {
    let breaker = SharedBreaker::new(config());
    let poisoner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = breaker.core.lock().unwrap();
        panic!("poisoning the breaker's lock");
    }));
    assert!(poisoner.is_err());
    assert!(breaker.core.is_poisoned());
    breaker.try_acquire().unwrap().record(CallOutcome::Success);
    drop(breaker.try_acquire().unwrap());
    breaker.force_open();
    assert!(breaker.try_acquire().is_err());
    assert_eq!(breaker.state(), State::ForcedOpen);
    let t = breaker.metrics().totals;
    assert_eq!((t.succeeded, t.released, t.rejected), (1, 1, 1));
}

#[test]
fn builder_names_the_bad_field() {
    let build = |b: ResilientBuilder<u32, Boom>| b.build().unwrap_err().field;
    assert_eq!(build(Resilient::builder(config())), "timeout");
    assert_eq!(
        build(Resilient::builder(config()).timeout(Duration::ZERO)),
        "timeout"
    );
    assert_eq!(
        build(
            Resilient::builder(config())
                .timeout(Duration::from_secs(1))
                .attempt_timeout(Duration::ZERO)
        ),
        "attempt_timeout"
    );
    assert_eq!(
        build(
            Resilient::builder(config())
                .timeout(Duration::from_secs(1))
                .bulkhead(0)
        ),
        "bulkhead"
    );
    let r = Resilient::<u32, Boom>::builder(config())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(r.bulkhead().max_concurrent(), 25);
    assert_eq!(r.budget_exhausted_total(), None);
    assert!(format!("{r:?}").starts_with("Resilient"));
}

#[test]
fn send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedBreaker>();
    assert_send_sync::<SharedPermit<'static>>();
    assert_send_sync::<Resilient<String, Boom>>();
    fn assert_send<T: Send>(_: &T) {}
    let r = Resilient::<u32, Boom>::builder(config())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_send(&r.call(|| async { Ok(1) }));
}

fn timeless(window: u32) -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(window)
        .minimum_calls(window)
        .failure_rate_threshold_percent(50)
        .without_slow_calls()
        .wait_in_open(ms(1_000))
        .half_open_calls_permitted(2)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_lock_free_closed_path_keeps_exact_counts_and_still_trips() {
    let b = SharedBreaker::new(timeless(10));
    for _ in 0..1_000 {
        b.try_acquire().unwrap().record(CallOutcome::Success);
    }
    let m = b.metrics();
    assert_eq!((m.totals.admitted, m.totals.succeeded), (1_000, 1_000));
    assert_eq!(m.window_calls, 10);
    // Four failures: 4 of 10. The fifth makes it 5 of 10 = 50 %: Open.
    for _ in 0..4 {
        b.try_acquire().unwrap().record(CallOutcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    b.try_acquire().unwrap().record(CallOutcome::Failure);
    assert_eq!(b.state(), State::Open);
    // A call admitted lock-free before the trip and finishing after it is stale.
    let b = SharedBreaker::new(timeless(2));
    let early = b.try_acquire().unwrap();
    b.try_acquire().unwrap().record(CallOutcome::Failure);
    b.try_acquire().unwrap().record(CallOutcome::Failure);
    assert_eq!(b.state(), State::Open);
    early.record(CallOutcome::Success);
    let t = b.metrics().totals;
    assert_eq!(t.stale, 1);
    assert_eq!(t.admitted, t.succeeded + t.failed + t.ignored + t.released);
    // Dropped lock-free permits are released, and counted.
    let b = SharedBreaker::new(timeless(4));
    drop(b.try_acquire().unwrap());
    assert_eq!(b.metrics().totals.released, 1);
}

#[test]
fn the_lock_free_path_adds_up_across_threads() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 20_000;
    let b = SharedBreaker::new(timeless(50));
    let given = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (b, given) = (&b, &given);
            s.spawn(move || {
                for i in 0..CALLS {
                    let Ok(permit) = b.try_acquire() else {
                        continue;
                    };
                    given.fetch_add(1, Ordering::Relaxed);
                    match (t * CALLS + i) % 97 {
                        0 => permit.record(CallOutcome::Failure),
                        1 => permit.record(CallOutcome::Ignored),
                        2 => drop(permit),
                        _ => permit.record(CallOutcome::Success),
                    }
                }
            });
        }
    });
    let m = b.metrics();
    let t = m.totals;
    assert_eq!(t.admitted, given.load(Ordering::Relaxed));
    assert_eq!(t.admitted, t.succeeded + t.failed + t.ignored + t.released);
    assert_eq!(m.in_flight, 0);
    assert!(t.succeeded > t.admitted * 9 / 10);
    assert_eq!(
        b.state(),
        State::Closed,
        "about 1 % failures never trips 50 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_add_up() {
    const TASKS: u32 = 16;
    const CALLS: u32 = 300;
    let r: Arc<Resilient<u32, Boom>> = Arc::new(
        Resilient::builder(
            BreakerConfig::builder()
                .count_window(20)
                .minimum_calls(10)
                .failure_rate_threshold_percent(40)
                .wait_in_open(ms(2))
                .half_open_calls_permitted(3)
                .build()
                .unwrap(),
        )
        .timeout(ms(50))
        .attempt_timeout(ms(5))
        .retry(retry(2, Duration::from_micros(100), ms(1)))
        .bulkhead(12)
        .classify(|e| match e {
            Boom::BadRequest => CallOutcome::Ignored,
            Boom::Down => CallOutcome::Failure,
        })
        .build()
        .unwrap(),
    );
    let invoked = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..TASKS)
        .map(|task| {
            let (r, invoked, unavailable) = (
                Arc::clone(&r),
                Arc::clone(&invoked),
                Arc::clone(&unavailable),
            );
            tokio::spawn(async move {
                for i in 0..CALLS {
                    let k = task * CALLS + i;
                    let call = r.call(|| {
                        invoked.fetch_add(1, Ordering::Relaxed);
                        async move {
                            match k % 10 {
                                0 | 1 => Err(Boom::Down),
                                2 => Err(Boom::BadRequest),
                                3 => {
                                    tokio::time::sleep(ms(10)).await; // times out
                                    Ok(k)
                                }
                                _ => {
                                    tokio::task::yield_now().await;
                                    Ok(k)
                                }
                            }
                        }
                    });
                    // Every 7th call is abandoned by its caller after 1 ms.
                    let result = if k.is_multiple_of(7) {
                        match tokio::time::timeout(ms(1), call).await {
                            Ok(result) => result,
                            Err(_cancelled) => continue,
                        }
                    } else {
                        call.await
                    };
                    if let Err(CallError::Unavailable { retry_after }) = result {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(retry_after.min(ms(1))).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let m = r.breaker().metrics();
    let t = m.totals;
    assert!(adds_up(t), "{t:?}");
    assert_eq!(m.in_flight, 0);
    assert_eq!(r.bulkhead().in_use(), 0);
    // One call of `f` per permit, and one `Unavailable` per rejection (fast or not).
    assert_eq!(invoked.load(Ordering::Relaxed), t.admitted);
    assert_eq!(unavailable.load(Ordering::Relaxed), t.rejected);
    assert!(t.admitted > 0 && t.failed > 0 && t.ignored > 0 && t.succeeded > 0);
    assert!(t.rejected > 0, "the breaker opened at some point: {t:?}");
    assert!(t.released > 0, "some callers gave up mid-call: {t:?}");
    assert!(r.breaker().fast_rejected() > 0, "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn a_transition_converts_to_the_wall_clock_time_it_happened() {
    let before = std::time::SystemTime::now();
    let built = tokio::time::Instant::now();
    let b = SharedBreaker::new(config());
    let origin = b.origin();
    assert!(before <= origin.system_time() && origin.system_time() <= std::time::SystemTime::now());
    assert_eq!(origin.instant(), Instant::ZERO);
    tokio::time::advance(Duration::from_secs(42)).await;
    for _ in 0..4 {
        b.try_acquire().unwrap().record(CallOutcome::Failure);
    }
    let opened = origin.system_time() + built.elapsed();
    // The failure rate is reported exceeded first, then the breaker opens.
    assert!(matches!(
        b.poll_event(),
        Some(BreakerEvent::FailureRateExceeded { permille: 1000, .. })
    ));
    let Some(BreakerEvent::Transition { to, at, .. }) = b.poll_event() else {
        panic!("the breaker opened: a transition");
    };
    assert_eq!(to, State::Open);
    assert_eq!(origin.to_system_time(at), opened);
    assert_eq!(origin.to_system_time(b.now()), opened);
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(r.origin(), r.breaker().origin());
}

/// An answer type that cannot be cloned, as an HTTP client's response cannot.
#[derive(Debug, PartialEq, Eq)]
struct Response(u32);

#[tokio::test(start_paused = true)]
async fn a_stack_without_fallback_answers_a_type_that_is_not_clone() {
    let r: Resilient<Response, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(r.call(|| async { Ok(Response(7)) }).await, Ok(Response(7)));
    // A clone is the same stack: one breaker, one set of totals.
    let again = r.clone();
    assert_eq!(
        again.call(|| async { Ok(Response(8)) }).await,
        Ok(Response(8))
    );
    assert!(std::ptr::eq(r.breaker(), again.breaker()));
    assert_eq!(r.breaker().metrics().totals.succeeded, 2);
}

#[tokio::test(start_paused = true)]
async fn stacks_built_for_one_upstream_share_its_breaker_and_bulkhead() {
    let upstream = Upstream::builder(config()).bulkhead(3).build().unwrap();
    let with_fallback: Resilient<u32, Boom> = Resilient::builder_for(&upstream)
        .timeout(Duration::from_secs(1))
        .fallback(FallbackPolicy::Default(0))
        .build()
        .unwrap();
    let without: Resilient<u32, Boom> = Resilient::builder_for(&upstream)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    // The failures of one stack open the breaker of the other.
    fail_n(&without, 2).await;
    for _ in 0..2 {
        assert_eq!(
            with_fallback.call(|| async { Err(Boom::Down) }).await,
            Ok(0)
        );
    }
    assert_eq!(upstream.breaker().state(), State::Open);
    let calls = AtomicU32::new(0);
    assert!(matches!(
        without.call(counting(&calls, Ok(1))).await,
        Err(CallError::Unavailable { .. })
    ));
    let answer = with_fallback
        .call_answer(counting(&calls, Ok(1)))
        .await
        .unwrap();
    assert_eq!(answer.value, 0);
    assert_eq!(answer.source, Source::Fallback(FallbackCause::Rejected));
    assert!(answer.is_fallback());
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "an open breaker let a call through"
    );
    assert_eq!(with_fallback.fallback_used_total(), 3);
    assert_eq!(without.fallback_used_total(), 0);
    assert!(std::ptr::eq(without.bulkhead(), upstream.bulkhead()));
    assert_eq!(upstream.bulkhead().max_concurrent(), 3);
}

#[tokio::test(start_paused = true)]
async fn call_answer_tells_the_api_from_the_fallback() {
    let r: Resilient<u32, Boom> = Resilient::builder(config())
        .timeout(Duration::from_secs(1))
        .fallback(FallbackPolicy::LastGood { max_age: None })
        .build()
        .unwrap();
    let real = r.call_answer(|| async { Ok(5) }).await.unwrap();
    assert_eq!((real.value, real.source), (5, Source::Api));
    let old = r.call_answer(|| async { Err(Boom::Down) }).await.unwrap();
    assert_eq!(
        (old.value, old.source),
        (5, Source::Fallback(FallbackCause::Failed))
    );
}

#[test]
fn a_stack_on_an_upstream_refuses_a_bulkhead_or_budget_of_its_own() {
    let upstream = Upstream::builder(config()).build().unwrap();
    let e = Resilient::<u32, Boom>::builder_for(&upstream)
        .timeout(Duration::from_secs(1))
        .bulkhead(5)
        .build()
        .unwrap_err();
    assert_eq!(e.field, "bulkhead");
    let e = Resilient::<u32, Boom>::builder_for(&upstream)
        .timeout(Duration::from_secs(1))
        .budget(RetryBudget::new(Duration::from_secs(10), 5, 20).unwrap())
        .build()
        .unwrap_err();
    assert_eq!(e.field, "budget");
    let e = Upstream::builder(config()).bulkhead(0).build().unwrap_err();
    assert_eq!(e.field, "bulkhead");
}

#[test]
fn a_failed_call_names_the_api_error_as_its_source() {
    use std::error::Error as _;
    let e: CallError<std::io::Error> = CallError::Failed(std::io::Error::other("down"));
    assert_eq!(e.to_string(), "the call failed");
    assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("down"));
}

/// The breaker's commands that make four real transitions: Closed → ForcedOpen →
/// Closed → Disabled → Closed (each reset also publishes a Reset event: six events).
const FOUR_TRANSITIONS: [fn(&SharedBreaker); 4] = [
    SharedBreaker::force_open,
    SharedBreaker::reset,
    SharedBreaker::disable,
    SharedBreaker::reset,
];

#[tokio::test]
async fn a_subscriber_gets_every_transition_the_pull_queue_drops() {
    let breaker = SharedBreaker::new(BreakerConfig::builder().events_max(2).build().unwrap());
    let mut events = breaker.subscribe();
    let mut pushed = Vec::new();
    let mut resets = 0;
    for command in FOUR_TRANSITIONS {
        command(&breaker);
        while let Ok(event) = events.try_recv() {
            match event.transition() {
                Some(from_to) => pushed.push(from_to),
                None => {
                    assert!(matches!(event, BreakerEvent::Reset { .. }), "{event:?}");
                    resets += 1;
                }
            }
        }
    }
    assert_eq!(resets, 2);
    use State::*;
    assert_eq!(
        pushed,
        [
            (Closed, ForcedOpen),
            (ForcedOpen, Closed),
            (Closed, Disabled),
            (Disabled, Closed)
        ]
    );
    // The pull queue kept the newest two (the last transition and its Reset) and
    // counted the four it dropped.
    assert_eq!(breaker.metrics().totals.events_dropped, 4);
    let pulled: Vec<_> = std::iter::from_fn(|| breaker.poll_event()).collect();
    assert_eq!(pulled.len(), 2);
    assert_eq!(pulled[0].transition(), Some(pushed[3]));
    assert!(matches!(pulled[1], BreakerEvent::Reset { .. }));
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_many_events_it_lost() {
    use ::tokio::sync::broadcast::error::RecvError;
    let breaker = SharedBreaker::new(BreakerConfig::builder().events_max(2).build().unwrap());
    let mut events = breaker.subscribe();
    for command in FOUR_TRANSITIONS {
        command(&breaker);
    }
    // Six events (four transitions, two resets) into a channel of two.
    assert_eq!(events.recv().await, Err(RecvError::Lagged(4)));
    assert_eq!(
        events.recv().await.unwrap().transition(),
        Some((State::Disabled, State::Closed))
    );
    assert!(matches!(
        events.recv().await.unwrap(),
        BreakerEvent::Reset { .. }
    ));
}

#[test]
fn a_name_that_is_not_a_name_is_refused_at_build() {
    let empty = Upstream::builder(config()).name("").build().unwrap_err();
    assert_eq!(empty.field, "name");
    let control = Resilient::<u32, Boom>::builder(config())
        .name("a\nb")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(control.field, "name");
    let named = Resilient::<u32, Boom>::builder(config())
        .name("sms")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(
        (named.name().as_str(), named.breaker().name().as_str()),
        ("sms", "sms")
    );
    let upstream = Upstream::builder(config())
        .name("provider")
        .build()
        .unwrap();
    let unnamed = Resilient::<u32, Boom>::builder_for(&upstream)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(unnamed.name().as_str(), "provider");
}

/// A paused current-thread runtime, for the test that scopes a subscriber to this
/// thread.
#[cfg(feature = "tracing")]
fn paused_runtime() -> ::tokio::runtime::Runtime {
    ::tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Trips `config()`'s breaker through two stacks on one upstream named `provider`:
/// `a` (2 attempts, no fallback) answers once, fails once after 2 attempts; `b` (a
/// default fallback) fails once, which opens the breaker, then is refused; `a` is
/// refused.
#[cfg(any(feature = "tracing", feature = "metrics"))]
async fn two_stacks_trip_one_breaker() {
    let upstream = Upstream::builder(config())
        .name("provider")
        .build()
        .unwrap();
    let a = Resilient::<u32, Boom>::builder_for(&upstream)
        .name("a")
        .timeout(Duration::from_secs(5))
        .retry(
            RetryPolicy::new(
                2,
                Backoff::new(Duration::from_millis(10), Duration::from_millis(10)).unwrap(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let b = Resilient::<u32, Boom>::builder_for(&upstream)
        .name("b")
        .timeout(Duration::from_secs(5))
        .fallback(FallbackPolicy::Default(7))
        .build()
        .unwrap();
    assert_eq!(a.call(|| async { Ok(1) }).await, Ok(1));
    let down = || async { Err::<u32, _>(Boom::Down) };
    assert!(matches!(
        a.call(down).await,
        Err(CallError::Failed(Boom::Down))
    ));
    assert_eq!(b.call(down).await, Ok(7));
    assert_eq!(upstream.breaker().state(), State::Open);
    assert_eq!(b.call(down).await, Ok(7));
    assert!(matches!(
        a.call(down).await,
        Err(CallError::Unavailable { .. })
    ));
}

#[cfg(feature = "tracing")]
#[test]
fn transitions_attempts_and_answers_are_traced_under_their_names() {
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            crate::rt::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    // `tracing` caches each callsite's interest for the whole process, and with only one
    // dispatcher registered it computes it against the registering thread's default: a
    // test running in parallel without a subscriber could cache "never" for a callsite
    // read here. A second dispatcher, interested in everything and alive throughout,
    // makes every registration ask all of them; the rebuild refreshes those cached
    // before.
    let _anchor = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        paused_runtime().block_on(two_stacks_trip_one_breaker());
    });
    let text = String::from_utf8(crate::rt::lock(&captured.0).clone()).unwrap();
    let lines = |all: &[&str]| {
        text.lines()
            .filter(|l| all.iter().all(|part| l.contains(part)))
            .count()
    };
    let a = r#"faultline.call{stack="a" upstream="provider"}"#;
    let b = r#"faultline.call{stack="b" upstream="provider"}"#;
    assert_eq!(
        lines(&[a, "attempt ended", r#"outcome="success""#]),
        1,
        "{text}"
    );
    assert_eq!(
        lines(&[a, "attempt ended", r#"outcome="failure""#]),
        2,
        "{text}"
    );
    assert_eq!(lines(&[a, "retrying after a backoff"]), 1, "{text}");
    assert_eq!(lines(&[a, "call failed", r#"error="failed""#]), 1, "{text}");
    assert_eq!(
        lines(&[a, "call failed", r#"error="unavailable""#]),
        1,
        "{text}"
    );
    assert_eq!(
        lines(&[b, "attempt ended", r#"outcome="failure""#]),
        1,
        "{text}"
    );
    assert_eq!(
        lines(&[b, "answered by the fallback", r#"cause="failed""#]),
        1,
        "{text}"
    );
    assert_eq!(
        lines(&[b, "answered by the fallback", r#"cause="rejected""#]),
        1,
        "{text}"
    );
    assert_eq!(
        lines(&[
            b,
            "WARN",
            "circuit breaker opened",
            r#"breaker="provider""#,
            r#"from="closed""#,
            r#"to="open""#
        ]),
        1,
        "{text}"
    );
    assert_eq!(lines(&["attempt ended"]), 4, "{text}");
}

#[cfg(feature = "metrics")]
#[test]
fn calls_attempts_and_transitions_are_counted_under_their_names() {
    let recorded = crate::observe::testing::recorded(two_stacks_trip_one_breaker);
    let attempts = |stack, outcome| {
        recorded.counter(
            "faultline_attempts_total",
            &[
                ("stack", stack),
                ("upstream", "provider"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(attempts("a", "success"), 1);
    assert_eq!(attempts("a", "failure"), 2);
    assert_eq!(attempts("b", "failure"), 1);
    assert_eq!(attempts("b", "timeout"), 0);
    let calls = |stack, answer| {
        recorded.counter(
            "faultline_calls_total",
            &[
                ("stack", stack),
                ("upstream", "provider"),
                ("answer", answer),
            ],
        )
    };
    assert_eq!(
        [
            calls("a", "api"),
            calls("a", "error"),
            calls("a", "fallback")
        ],
        [1, 2, 0]
    );
    assert_eq!(
        [
            calls("b", "api"),
            calls("b", "error"),
            calls("b", "fallback")
        ],
        [0, 0, 2]
    );
    let refusals = |stack, by| {
        recorded.counter(
            "faultline_refusals_total",
            &[("stack", stack), ("upstream", "provider"), ("by", by)],
        )
    };
    assert_eq!([refusals("a", "breaker"), refusals("b", "breaker")], [1, 1]);
    assert_eq!([refusals("a", "bulkhead"), refusals("a", "budget")], [0, 0]);
    assert_eq!(
        recorded.counter(
            "faultline_retries_total",
            &[("stack", "a"), ("upstream", "provider")]
        ),
        1
    );
    assert_eq!(
        recorded.counter(
            "faultline_breaker_transitions_total",
            &[("breaker", "provider"), ("from", "closed"), ("to", "open")]
        ),
        1
    );
    assert_eq!(
        recorded.gauge("faultline_breaker_state", &[("breaker", "provider")]),
        crate::observe::state_code(State::Open)
    );
}
