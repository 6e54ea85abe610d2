//! [`Resilient`]: the whole stack for one async API (bulkhead, breaker, timeout, retries
//! under a budget, fallback) over a [`SharedBreaker`].
//!
//! A driver, not a second implementation: every decision is made by the stack's
//! sans-IO decision core (`src/breaker/stack.rs`), the one the simulator
//! verifies through the reference [`Guard`](crate::breaker::guard::Guard). This adapter
//! feeds it tokio's clock and the classified outcome of each attempt, and carries out
//! what it asks: start an attempt under this timeout, sleep this long, answer with the
//! value, the fallback or the error. It holds only what the core never does: the value
//! and error types, the fallback's store, and the shared parts (breaker, bulkhead,
//! budget, jitter generator), each behind its own short lock, never held across an
//! await.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{SharedBreaker, SharedPermit};
use crate::breaker::bulkhead::{SharedBulkhead, SharedBulkheadSlot};
use crate::breaker::circuit::{BreakerConfig, CallOutcome};
use crate::breaker::error::{CallError, ConfigError};
use crate::breaker::fallback::{Fallback, FallbackPolicy};
use crate::breaker::stack::{Admission, End, Limit, Next, Parts, Stack};
use crate::breaker::timeout::TimeoutPolicy;
use crate::clock::Instant;
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
    /// The decision core's request-level policy.
    stack: Stack,
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
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

/// The parts the decision core works over, as `Resilient` shares them between tasks:
/// each behind its own lock (or lock-free), taken for one step. Its permits and slots
/// hand themselves back when dropped, so a request dropped at an await releases its
/// permit without an outcome and frees its slot.
struct Shared<'a> {
    breaker: &'a SharedBreaker,
    bulkhead: &'a SharedBulkhead,
    budget: Option<&'a Mutex<RetryBudget>>,
    rng: &'a Mutex<ChaCha8Rng>,
}

impl<'a> Parts for Shared<'a> {
    type Permit = SharedPermit<'a>;
    type Slot = SharedBulkheadSlot<'a>;

    fn enter(&mut self) -> Result<SharedBulkheadSlot<'a>, u32> {
        self.bulkhead
            .try_enter()
            .map_err(|full| full.max_concurrent)
    }

    fn exit(&mut self, slot: SharedBulkheadSlot<'a>) {
        drop(slot);
    }

    fn deposit(&mut self, now: Instant) {
        if let Some(budget) = self.budget {
            lock(budget).deposit(now);
        }
    }

    /// The shared breaker reads tokio's clock itself (or, on its lock-free paths, no
    /// clock at all): the same clock `now` came from.
    fn acquire(&mut self, _now: Instant, _attempts: u32) -> Admission<SharedPermit<'a>> {
        match self.breaker.try_acquire() {
            Ok(permit) => Admission::Permit(permit),
            Err(rejected) => Admission::Rejected(rejected.retry_after),
        }
    }

    fn record(&mut self, permit: SharedPermit<'a>, _now: Instant, outcome: CallOutcome) {
        permit.record(outcome);
    }

    fn release(&mut self, permit: SharedPermit<'a>, _now: Instant) {
        permit.release();
    }

    fn backoff(&mut self, retry: &RetryPolicy, attempts: u32) -> Option<Duration> {
        retry.next_delay(attempts, &mut *lock(self.rng))
    }

    fn withdraw(&mut self, now: Instant) -> bool {
        self.budget
            .is_none_or(|budget| lock(budget).try_withdraw(now))
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

    /// Where the stack's instants sit on the wall clock: its breaker's
    /// [`origin`](SharedBreaker::origin).
    pub fn origin(&self) -> crate::clock::Origin {
        self.breaker.origin()
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
        let stack = self.stack;
        let mut parts = self.parts();
        let mut request = match stack.begin(&mut parts, self.breaker.now()) {
            Ok(request) => request,
            Err(end) => return self.give_up(end, None),
        };
        let mut next = stack.attempt(&mut parts, &mut request, self.breaker.now());
        // The error of the attempt that just ended, for an answer without a fallback.
        let mut last: Option<CallError<E>> = None;
        loop {
            match next {
                Next::Send { timeout, limit } => {
                    let attempt = ::tokio::time::timeout(timeout, f()).await;
                    let now = self.breaker.now();
                    match attempt {
                        Ok(Ok(value)) => {
                            stack.on_value(&mut parts, &mut request, now, CallOutcome::Success);
                            if let Some(fallback) = &self.fallback {
                                lock(fallback).on_success(&value, now);
                            }
                            return Ok(value);
                        }
                        Ok(Err(error)) => {
                            let outcome = (self.classify)(&error);
                            next = stack.on_error(&mut parts, &mut request, now, outcome);
                            last = Some(CallError::Failed(error));
                        }
                        Err(_elapsed) => {
                            next = stack.on_timeout(&mut parts, &mut request, now);
                            last = Some(CallError::Timeout {
                                timeout: match limit {
                                    Limit::Attempt => timeout,
                                    Limit::Deadline => stack.timeout().duration(),
                                },
                            });
                        }
                    }
                }
                Next::Sleep(delay) => {
                    ::tokio::time::sleep(delay).await;
                    last = None;
                    next = stack.on_retry_due(&mut parts, &mut request, self.breaker.now());
                }
                Next::GiveUp(end) => return self.give_up(end, last),
            }
        }
    }

    /// The shared parts, for one call.
    fn parts(&self) -> Shared<'_> {
        Shared {
            breaker: &self.breaker,
            bulkhead: &self.bulkhead,
            budget: self.budget.as_ref(),
            rng: &self.rng,
        }
    }

    /// The fallback's answer if there is one, else the error for `end` (`last`: the
    /// error of the attempt that just ended, if one did).
    fn give_up(&self, end: End, last: Option<CallError<E>>) -> Result<T, CallError<E>> {
        if let Some(fallback) = &self.fallback {
            let answer = lock(fallback).take(self.breaker.now());
            if let Some(value) = answer {
                return Ok(value);
            }
        }
        let call_timeout = CallError::Timeout {
            timeout: self.stack.timeout().duration(),
        };
        Err(match end {
            End::BulkheadFull { max_concurrent } => CallError::BulkheadFull { max_concurrent },
            End::Rejected { retry_after } => CallError::Unavailable { retry_after },
            // The last attempt's error: what the caller sees when no retry was possible
            // or the budget refused one.
            End::Failed | End::Timeout | End::BudgetExhausted => last.unwrap_or(call_timeout),
            // Only reachable when a backoff sleep overshot the deadline.
            End::DeadlineReached => call_timeout,
        })
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
            stack: Stack::new(timeout, self.attempt_timeout, self.retry),
            budget: self.budget.map(Mutex::new),
            fallback,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(self.seed)),
            classify: self.classify,
        })
    }
}
