//! The adapter and the verified guard agree: [`Resilient`] and the reference [`Guard`]
//! (the one the simulator checks), run side by side on one paused tokio clock through
//! the same scripted requests, attempt outcomes and delays, must make the same decisions:
//! the same attempts at the same instants (so the same timeouts and backoff sleeps), the
//! same answers, the same breaker counts.
//!
//! The guard is carried out exactly as its contract says (a `Send` is an attempt under
//! its timeout, a `Retry` a sleep, an `Answer` the end), by the same tokio timers as the
//! adapter's, so tokio's rounding of timers to the millisecond is the same on both sides.

use super::Resilient;
use crate::breaker::circuit::BreakerConfig;
use crate::breaker::contract::{Answer, ApiError, ApiReply, CallGuard, Step, Why};
use crate::breaker::error::CallError;
use crate::breaker::fallback::FallbackPolicy;
use crate::breaker::guard::{Guard, GuardConfig, classify};
use crate::breaker::timeout::TimeoutPolicy;
use crate::retry::{Backoff, RetryBudget, RetryPolicy};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const TIMEOUT: Duration = Duration::from_millis(1_000);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
const SEED: u64 = 11;

/// One scripted attempt: it answers `reply` after `delay`, or never (`None`).
#[derive(Clone, Copy, Debug)]
struct Attempt {
    delay: Duration,
    reply: Option<ApiReply>,
}

/// One scripted request: the gap before it, then its attempts' behaviours in order (an
/// attempt beyond the script answers Ok at once).
#[derive(Clone, Debug)]
struct Request {
    gap: Duration,
    attempts: Vec<Attempt>,
}

/// What one side did with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    /// When each attempt started, since the shared origin.
    attempts: Vec<Duration>,
    /// When the answer came.
    answered: Duration,
    answer: Said,
}

/// An answer, as both sides can state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    Value,
    Fallback,
    Unavailable(Duration),
    BulkheadFull,
    Failed(ApiError),
    Timeout,
}

fn breaker() -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(20)
        .minimum_calls(10)
        .failure_rate_threshold_percent(50)
        .slow_call_duration(ms(200))
        .slow_call_rate_threshold_percent(80)
        .wait_in_open(ms(1_500))
        .half_open_calls_permitted(2)
        .build()
        .unwrap()
}

fn retry() -> RetryPolicy {
    RetryPolicy::new(3, Backoff::new(ms(40), ms(400)).unwrap()).unwrap()
}

/// A number below `n` (a slight bias is harmless here).
fn pick(rng: &mut ChaCha8Rng, n: u64) -> usize {
    usize::try_from(rng.next_u64() % n).unwrap_or(0)
}

/// Requests with healthy stretches, an outage (every attempt 503 or hanging) and slow
/// stretches, from a seeded generator.
fn script(n: usize) -> Vec<Request> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    (0..n)
        .map(|i| {
            let outage = (60..110).contains(&i) || (200..230).contains(&i);
            let gap = ms([0, 3, 10, 50, 200, 900][pick(&mut rng, 6)]);
            let attempts = (0..3)
                .map(|_| {
                    let delay = ms([1, 2, 5, 10, 30, 60, 120, 250, 450][pick(&mut rng, 9)]);
                    let roll = pick(&mut rng, 100);
                    let reply = if outage {
                        (roll >= 15).then_some(ApiReply::Err(ApiError::Unavailable))
                    } else {
                        match roll {
                            0..75 => Some(ApiReply::Ok),
                            75..84 => Some(ApiReply::Err(ApiError::Unavailable)),
                            84..89 => Some(ApiReply::Err(ApiError::Internal)),
                            89..97 => Some(ApiReply::Err(ApiError::InvalidNumber)),
                            _ => None,
                        }
                    };
                    Attempt { delay, reply }
                })
                .collect();
            Request { gap, attempts }
        })
        .collect()
}

/// The scripted attempt: `reply` after `delay`, or never.
async fn perform(attempt: Attempt) -> Result<u32, ApiError> {
    ::tokio::time::sleep(attempt.delay).await;
    match attempt.reply {
        Some(ApiReply::Ok) => Ok(7),
        Some(ApiReply::Err(e)) => Err(e),
        None => std::future::pending().await,
    }
}

fn scripted(attempts: &[Attempt], n: usize) -> Attempt {
    attempts.get(n).copied().unwrap_or(Attempt {
        delay: Duration::ZERO,
        reply: Some(ApiReply::Ok),
    })
}

/// The adapter, through the script.
async fn run_resilient(
    r: &Resilient<u32, ApiError>,
    script: &[Request],
    since: impl Fn() -> Duration,
) -> Vec<Record> {
    let mut records = Vec::new();
    for request in script {
        ::tokio::time::sleep(request.gap).await;
        let started = RefCell::new(Vec::new());
        let result = r
            .call(|| {
                let n = started.borrow().len();
                started.borrow_mut().push(since());
                perform(scripted(&request.attempts, n))
            })
            .await;
        let answer = match result {
            Ok(7) => Said::Value,
            Ok(_) => Said::Fallback,
            Err(CallError::Unavailable { retry_after }) => Said::Unavailable(retry_after),
            Err(CallError::BulkheadFull { .. }) => Said::BulkheadFull,
            Err(CallError::Failed(e)) => Said::Failed(e),
            Err(CallError::Timeout { .. }) => Said::Timeout,
        };
        records.push(Record {
            attempts: started.into_inner(),
            answered: since(),
            answer,
        });
    }
    records
}

/// The verified guard, through the script, carried out as its contract says.
async fn run_guard(
    guard: &RefCell<Guard>,
    script: &[Request],
    since: impl Fn() -> Duration,
) -> (Vec<Record>, Vec<Duration>) {
    let now = || crate::clock::Instant::ZERO.saturating_add(since());
    let mut records = Vec::new();
    let mut sleeps = Vec::new();
    for request in script {
        ::tokio::time::sleep(request.gap).await;
        let mut attempts = Vec::new();
        // What the caller sees when the guard gives up after a failed attempt.
        let mut last = Said::Timeout;
        let mut step = guard.borrow_mut().on_request(now());
        let answer = loop {
            match step {
                Step::Send { ticket, timeout } => {
                    let attempt = scripted(&request.attempts, attempts.len());
                    attempts.push(since());
                    let timeout = timeout.unwrap_or(Duration::MAX);
                    let result = ::tokio::time::timeout(timeout, perform(attempt)).await;
                    let mut g = guard.borrow_mut();
                    step = match result {
                        Ok(Ok(_)) => g.on_reply(ticket, now(), ApiReply::Ok),
                        Ok(Err(e)) => {
                            last = Said::Failed(e);
                            g.on_reply(ticket, now(), ApiReply::Err(e))
                        }
                        Err(_) => {
                            last = Said::Timeout;
                            g.on_timeout(ticket, now())
                        }
                    };
                }
                Step::Retry { ticket, delay } => {
                    sleeps.push(delay);
                    ::tokio::time::sleep(delay).await;
                    step = guard.borrow_mut().on_retry_due(ticket, now());
                }
                Step::Answer(answer) => break answer,
            }
        };
        let answer = match answer {
            Answer::Delivered => Said::Value,
            Answer::Fallback(_) => Said::Fallback,
            Answer::Failed(why) => match why {
                Why::Rejected { retry_after } => Said::Unavailable(retry_after),
                Why::BulkheadFull => Said::BulkheadFull,
                Why::Api(e) => Said::Failed(e),
                Why::Timeout | Why::DeadlineReached => Said::Timeout,
                // The adapter answers with the last attempt's error.
                Why::BudgetExhausted => last,
            },
        };
        records.push(Record {
            attempts,
            answered: since(),
            answer,
        });
    }
    (records, sleeps)
}

/// Runs both sides at once on one paused clock; `fallback`: both answer with a fallback
/// when they give up.
async fn lockstep(fallback: bool) {
    let mut config = GuardConfig::new(breaker(), TimeoutPolicy::new(TIMEOUT).unwrap());
    config.attempt_timeout = Some(ATTEMPT_TIMEOUT);
    config.retry = retry();
    config.budget = Some((Duration::from_secs(5), 1, 25));
    config.fallback = fallback;
    let guard = RefCell::new(Guard::new(config, ChaCha8Rng::seed_from_u64(SEED)).unwrap());
    let r: Resilient<u32, ApiError> = Resilient::builder(breaker())
        .timeout(TIMEOUT)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .retry(retry())
        .budget(RetryBudget::new(Duration::from_secs(5), 1, 25).unwrap())
        .fallback(if fallback {
            FallbackPolicy::Default(0)
        } else {
            FallbackPolicy::None
        })
        .classify(|e: &ApiError| classify(&ApiReply::Err(*e)))
        .seed(SEED)
        .build()
        .unwrap();
    let origin = ::tokio::time::Instant::now();
    let since = || ::tokio::time::Instant::now() - origin;
    let script = script(300);

    let (adapter, (verified, sleeps)) = ::tokio::join!(
        run_resilient(&r, &script, since),
        run_guard(&guard, &script, since)
    );

    for (i, (a, v)) in adapter.iter().zip(&verified).enumerate() {
        assert_eq!(
            a, v,
            "request {i}: the adapter (left) and the guard (right) differ"
        );
    }
    assert_eq!(adapter.len(), verified.len());
    let guard = guard.into_inner();
    let (g, a) = (guard.metrics(), r.breaker().metrics().totals);
    assert_eq!(
        (g.admitted, g.succeeded, g.failed, g.ignored, g.released),
        (a.admitted, a.succeeded, a.failed, a.ignored, a.released),
        "breaker counts: guard (left), adapter (right)"
    );
    assert_eq!(guard.state(), r.breaker().state());

    // The script reaches every decision, so the agreement above means something.
    let saw = |f: fn(&Said) -> bool| verified.iter().filter(|r| f(&r.answer)).count();
    assert!(saw(|s| *s == Said::Value) > 50);
    assert!(verified.iter().any(|r| r.attempts.len() == 3), "retries");
    assert!(!sleeps.is_empty(), "backoff sleeps");
    if fallback {
        assert!(saw(|s| *s == Said::Fallback) > 10);
    } else {
        assert!(saw(|s| matches!(s, Said::Unavailable(_))) > 5, "rejections");
        assert!(saw(|s| *s == Said::Timeout) > 0, "timeouts");
        assert!(saw(|s| *s == Said::Failed(ApiError::InvalidNumber)) > 0);
        assert!(saw(|s| *s == Said::Failed(ApiError::Unavailable)) > 0);
    }
    assert!(guard.breaker().totals().rejected > 0);
    assert!(a.released == 0 && a.ignored > 0 && a.failed > 0);
    assert!(
        r.budget_exhausted_total().unwrap_or(0) > 0,
        "budget refusals"
    );
}

#[tokio::test(start_paused = true)]
async fn the_adapter_decides_as_the_verified_guard() {
    lockstep(false).await;
}

#[tokio::test(start_paused = true)]
async fn the_adapter_decides_as_the_verified_guard_with_a_fallback() {
    lockstep(true).await;
}
