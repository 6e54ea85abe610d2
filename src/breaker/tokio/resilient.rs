//! [`Resilient`]: the whole stack for one async API (bulkhead, breaker, timeout, retries
//! under a budget, fallback) over a [`SharedBreaker`].

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::SharedBreaker;
use crate::breaker::bulkhead::SharedBulkhead;
use crate::breaker::circuit::{BreakerConfig, CallOutcome};
use crate::breaker::error::{CallError, ConfigError};
use crate::breaker::fallback::{Fallback, FallbackPolicy};
use crate::breaker::timeout::TimeoutPolicy;
use crate::retry::{RetryBudget, RetryPolicy};
use crate::rt::lock;

/// Decides how an API error counts for the breaker.
type Classifier<E> = Box<dyn Fn(&E) -> CallOutcome + Send + Sync>;

/// The full resilience stack for one async API: bulkhead, then per attempt the circuit
/// breaker and a timeout, retries with backoff (full jitter) under a retry budget, and a
/// fallback. Build it with [`Resilient::builder`]; see the [module docs](super) for an
/// example.
///
/// One [`call`](Resilient::call):
///
/// 1. takes a bulkhead slot for the whole call (full: fallback, else
///    [`CallError::BulkheadFull`]) and deposits into the retry budget;
/// 2. per attempt, asks the breaker for a permit (rejected: fallback, else
///    [`CallError::Unavailable`], never retried) and runs the call under a timeout of
///    `min(attempt_timeout, time left before the call's deadline)`;
/// 3. a success is recorded and returned (and remembered for a last-good fallback); an
///    error classified [`Ignored`](CallOutcome::Ignored) (or
///    [`Success`](CallOutcome::Success)) is recorded so and returned at once, not
///    retried; a [`Failure`](CallOutcome::Failure) or a timeout is recorded as a failure
///    and retried when attempts remain, the backoff delay ends before the deadline and the
///    budget allows;
/// 4. whatever ends the call without a value answers with the fallback if there is one,
///    else with the last error.
///
/// Retries sit inside the breaker: every attempt asks it for a permit, so a breaker that
/// opens during the retries stops them.
pub struct Resilient<T: Clone, E> {
    breaker: SharedBreaker,
    bulkhead: SharedBulkhead,
    timeout: TimeoutPolicy,
    attempt_timeout: Option<Duration>,
    retry: RetryPolicy,
    budget: Option<Mutex<RetryBudget>>,
    /// `None` under [`FallbackPolicy::None`] (no lock taken on success).
    fallback: Option<Mutex<Fallback<T>>>,
    rng: Mutex<ChaCha8Rng>,
    classify: Classifier<E>,
}

impl<T: Clone, E> fmt::Debug for Resilient<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilient")
            .field("breaker", &self.breaker)
            .field("bulkhead", &self.bulkhead)
            .field("timeout", &self.timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<T: Clone, E> Resilient<T, E> {
    /// A builder around a breaker configured by `breaker`. The call timeout is required;
    /// everything else has a default: no attempt timeout (each attempt may use the rest
    /// of the deadline), a single attempt, no budget, a bulkhead of 25, no fallback,
    /// every error a failure, jitter seed 0.
    pub fn builder(breaker: BreakerConfig) -> ResilientBuilder<T, E> {
        ResilientBuilder {
            breaker,
            timeout: None,
            attempt_timeout: None,
            retry: RetryPolicy::none(),
            budget: None,
            bulkhead: 25,
            fallback: FallbackPolicy::None,
            classify: Box::new(|_| CallOutcome::Failure),
            seed: 0,
        }
    }

    // ----- getters -----

    /// The circuit breaker (for metrics, events and manual commands).
    pub fn breaker(&self) -> &SharedBreaker {
        &self.breaker
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &SharedBulkhead {
        &self.bulkhead
    }

    /// How many calls were answered by the fallback.
    pub fn fallback_used_total(&self) -> u64 {
        self.fallback.as_ref().map_or(0, |f| lock(f).used_total())
    }

    /// How many retries the budget refused (`None` without a budget).
    pub fn budget_exhausted_total(&self) -> Option<u64> {
        self.budget.as_ref().map(|b| lock(b).exhausted_total())
    }

    // ----- the call -----

    /// Calls the API through the whole stack; `f` makes one attempt (it is called once
    /// per attempt). See the [type docs](Resilient) for the steps.
    ///
    /// Cancellation-safe: dropping the returned future at any await point releases the
    /// breaker permit (without recording an outcome) and the bulkhead slot.
    ///
    /// # Errors
    ///
    /// When there is no fallback answer: [`CallError::BulkheadFull`],
    /// [`CallError::Unavailable`] (the breaker rejected an attempt), or the last
    /// attempt's [`CallError::Timeout`] or [`CallError::Failed`]. A timeout reports the
    /// attempt timeout when that was the limit, else the call's timeout.
    pub async fn call<F, Fut>(&self, mut f: F) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _slot = match self.bulkhead.try_enter() {
            Ok(slot) => slot,
            Err(full) => {
                return self.give_up(CallError::BulkheadFull {
                    max_concurrent: full.max_concurrent,
                });
            }
        };
        let started = self.breaker.now();
        let deadline = self.timeout.deadline(started);
        if let Some(budget) = &self.budget {
            lock(budget).deposit(started);
        }
        let mut attempts: u32 = 0;
        loop {
            let left = self.timeout.remaining(started, self.breaker.now());
            if left.is_zero() {
                // Only reachable when a backoff sleep overshot the deadline.
                return self.give_up(CallError::Timeout {
                    timeout: self.timeout.duration(),
                });
            }
            let permit = match self.breaker.try_acquire() {
                Ok(permit) => permit,
                Err(rejected) => {
                    return self.give_up(CallError::Unavailable {
                        retry_after: rejected.retry_after,
                    });
                }
            };
            attempts = attempts.saturating_add(1);
            let (limit, reported) = match self.attempt_timeout {
                Some(attempt) if attempt < left => (attempt, attempt),
                _ => (left, self.timeout.duration()),
            };
            let error = match ::tokio::time::timeout(limit, f()).await {
                Ok(Ok(value)) => {
                    permit.record(CallOutcome::Success);
                    if let Some(fallback) = &self.fallback {
                        lock(fallback).on_success(&value, self.breaker.now());
                    }
                    return Ok(value);
                }
                Ok(Err(error)) => {
                    let outcome = (self.classify)(&error);
                    permit.record(outcome);
                    if outcome != CallOutcome::Failure {
                        return self.give_up(CallError::Failed(error));
                    }
                    CallError::Failed(error)
                }
                Err(_elapsed) => {
                    permit.record(CallOutcome::Failure);
                    CallError::Timeout { timeout: reported }
                }
            };
            let now = self.breaker.now();
            let delay = {
                let mut rng = lock(&self.rng);
                self.retry.next_delay(attempts, &mut *rng)
            };
            let Some(delay) = delay else {
                return self.give_up(error);
            };
            if now + delay >= deadline {
                return self.give_up(error);
            }
            let allowed = match &self.budget {
                Some(budget) => lock(budget).try_withdraw(now),
                None => true,
            };
            if !allowed {
                return self.give_up(error);
            }
            ::tokio::time::sleep(delay).await;
        }
    }

    /// The fallback's answer if there is one, else `error`.
    fn give_up(&self, error: CallError<E>) -> Result<T, CallError<E>> {
        if let Some(fallback) = &self.fallback {
            let answer = lock(fallback).take(self.breaker.now());
            if let Some(value) = answer {
                return Ok(value);
            }
        }
        Err(error)
    }
}

/// Builder for [`Resilient`]; [`build`](ResilientBuilder::build) validates and names the
/// first bad field.
pub struct ResilientBuilder<T, E> {
    breaker: BreakerConfig,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    retry: RetryPolicy,
    budget: Option<RetryBudget>,
    bulkhead: u32,
    fallback: FallbackPolicy<T>,
    classify: Classifier<E>,
    seed: u64,
}

impl<T: fmt::Debug, E> fmt::Debug for ResilientBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientBuilder")
            .field("breaker", &self.breaker)
            .field("timeout", &self.timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("bulkhead", &self.bulkhead)
            .field("fallback", &self.fallback)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<T: Clone, E> ResilientBuilder<T, E> {
    /// The caller's deadline for a whole call, every attempt and backoff included.
    /// Required; must be longer than zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The longest one attempt may take (never past the call's deadline); must be longer
    /// than zero. Default: no limit of its own.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Attempts and backoff. Default: [`RetryPolicy::none`], a single attempt.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A retry budget shared by every call. Default: none (retries limited only by the
    /// policy and the deadline).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Most calls in progress at once (a [`SharedBulkhead`]). Default: 25.
    pub fn bulkhead(mut self, max_concurrent: u32) -> Self {
        self.bulkhead = max_concurrent;
        self
    }

    /// What to answer when the API can't. Default: [`FallbackPolicy::None`].
    pub fn fallback(mut self, fallback: FallbackPolicy<T>) -> Self {
        self.fallback = fallback;
        self
    }

    /// How an API error counts for the breaker: [`Failure`](CallOutcome::Failure) is
    /// retried; [`Ignored`](CallOutcome::Ignored) (a bad request, say) changes no count
    /// and is returned at once; [`Success`](CallOutcome::Success) counts as a healthy
    /// answer and is returned at once. Default: every error is a failure.
    pub fn classify(
        mut self,
        classify: impl Fn(&E) -> CallOutcome + Send + Sync + 'static,
    ) -> Self {
        self.classify = Box::new(classify);
        self
    }

    /// The seed of the backoff jitter generator (ChaCha8). Default: 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates and builds. The breaker's clock starts now.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `timeout` if it was not set or is zero, on
    /// `attempt_timeout` if it is zero, on `bulkhead` if it is zero.
    pub fn build(self) -> Result<Resilient<T, E>, ConfigError> {
        let timeout = self
            .timeout
            .ok_or_else(|| ConfigError::new("timeout", "is required, got none"))?;
        let timeout =
            TimeoutPolicy::new(timeout).map_err(|e| ConfigError::new("timeout", e.reason))?;
        if let Some(attempt) = self.attempt_timeout {
            TimeoutPolicy::new(attempt)
                .map_err(|e| ConfigError::new("attempt_timeout", e.reason))?;
        }
        let bulkhead = SharedBulkhead::new(self.bulkhead)
            .map_err(|e| ConfigError::new("bulkhead", e.reason))?;
        let fallback = match self.fallback {
            FallbackPolicy::None => None,
            policy => Some(Mutex::new(Fallback::new(policy))),
        };
        Ok(Resilient {
            breaker: SharedBreaker::new(self.breaker),
            bulkhead,
            timeout,
            attempt_timeout: self.attempt_timeout,
            retry: self.retry,
            budget: self.budget.map(Mutex::new),
            fallback,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(self.seed)),
            classify: self.classify,
        })
    }
}
