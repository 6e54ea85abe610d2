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
use std::sync::{Arc, Mutex};
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
use crate::name::Name;
use crate::observe::{Answered, Attempted, CallObserver, Refusal};
use crate::retry::{RetryBudget, RetryPolicy};
use crate::rt::lock;

/// Decides how an API error counts for the breaker.
type Classifier<E> = Box<dyn Fn(&E) -> CallOutcome + Send + Sync>;

/// The full resilience stack for one async API: bulkhead, then per attempt the circuit
/// breaker and a timeout, retries with backoff (full jitter) under a retry budget, and a
/// fallback. Build it with [`Resilient::builder`] (a breaker of its own) or
/// [`Resilient::builder_for`] (an [`Upstream`]'s breaker, bulkhead and budget, shared with
/// every other stack built for it); see the [module docs](super) for an example.
///
/// A cheap handle: cloning it shares the same stack (one `Arc`), so it can be handed to
/// every request handler as it is.
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
///
/// `T` needs no bound of its own: only a [fallback](ResilientBuilder::fallback) (which
/// hands out copies of a value) asks for `T: Clone`, so a stack around an HTTP client can
/// answer with its non-`Clone` response type.
pub struct Resilient<T, E> {
    inner: Arc<Inner<T, E>>,
}

impl<T, E> Clone for Resilient<T, E> {
    fn clone(&self) -> Self {
        Resilient {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// What a [`Resilient`] handle shares.
struct Inner<T, E> {
    upstream: Upstream,
    /// The decision core's request-level policy.
    stack: Stack,
    /// `None` under [`FallbackPolicy::None`] (no lock taken on success).
    fallback: Option<Box<dyn FallbackStore<T>>>,
    rng: Mutex<ChaCha8Rng>,
    classify: Classifier<E>,
    /// Its `tracing` span and events and its metrics.
    observer: CallObserver,
}

impl<T, E> fmt::Debug for Resilient<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilient")
            .field("name", &self.inner.observer.stack())
            .field("upstream", &self.inner.upstream)
            .field("stack", &self.inner.stack)
            .finish_non_exhaustive()
    }
}

/// A fallback's store behind its lock, with `T: Clone` hidden inside, so that
/// [`Resilient`] itself asks nothing of `T`.
trait FallbackStore<T>: Send + Sync {
    fn on_success(&self, value: &T, now: Instant);
    fn take(&self, now: Instant) -> Option<T>;
    fn used_total(&self) -> u64;
}

impl<T: Clone + Send> FallbackStore<T> for Mutex<Fallback<T>> {
    fn on_success(&self, value: &T, now: Instant) {
        lock(self).on_success(value, now);
    }

    fn take(&self, now: Instant) -> Option<T> {
        lock(self).take(now)
    }

    fn used_total(&self) -> u64 {
        lock(self).used_total()
    }
}

/// One upstream service as every stack calling it sees it: one circuit breaker, one
/// bulkhead and one retry budget, shared by every [`Resilient`] built with
/// [`Resilient::builder_for`] (and every tower layer over it), so two endpoints calling
/// the same provider, one with a fallback and one without, hold one opinion of its
/// health and one limit on the calls in flight.
///
/// Cloning shares the same parts.
///
/// ```
/// use std::time::Duration;
/// use faultline::breaker::BreakerConfig;
/// use faultline::breaker::fallback::FallbackPolicy;
/// use faultline::breaker::tokio::{Resilient, Upstream};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), faultline::config::ConfigError> {
/// let provider = Upstream::builder(BreakerConfig::default()).bulkhead(50).build()?;
/// let status: Resilient<String, std::io::Error> = Resilient::builder_for(&provider)
///     .timeout(Duration::from_secs(1))
///     .fallback(FallbackPolicy::Default("unknown".to_string()))
///     .build()?;
/// let send: Resilient<u64, std::io::Error> = Resilient::builder_for(&provider)
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// assert!(std::ptr::eq(status.breaker(), send.breaker()));
/// assert!(std::ptr::eq(status.bulkhead(), provider.bulkhead()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Upstream {
    breaker: Arc<SharedBreaker>,
    bulkhead: Arc<SharedBulkhead>,
    budget: Option<Arc<Mutex<RetryBudget>>>,
}

impl Upstream {
    /// A builder around a breaker configured by `breaker`. Defaults: a bulkhead of 25,
    /// no retry budget.
    pub fn builder(breaker: BreakerConfig) -> UpstreamBuilder {
        UpstreamBuilder {
            breaker,
            bulkhead: 25,
            budget: None,
            name: None,
        }
    }

    /// Its name (its breaker's; see [`UpstreamBuilder::name`]).
    pub fn name(&self) -> Name {
        self.breaker.name()
    }

    /// The circuit breaker (for metrics, events and manual commands).
    pub fn breaker(&self) -> &SharedBreaker {
        &self.breaker
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &SharedBulkhead {
        &self.bulkhead
    }

    /// How many retries the budget refused (`None` without a budget).
    pub fn budget_exhausted_total(&self) -> Option<u64> {
        self.budget.as_ref().map(|b| lock(b).exhausted_total())
    }
}

/// Builder for [`Upstream`].
#[derive(Debug)]
pub struct UpstreamBuilder {
    breaker: BreakerConfig,
    bulkhead: u32,
    budget: Option<RetryBudget>,
    /// Validated at build.
    name: Option<String>,
}

impl UpstreamBuilder {
    /// Most calls in progress at once, over every stack sharing the upstream (a
    /// [`SharedBulkhead`]). Default: 25.
    pub fn bulkhead(mut self, max_concurrent: u32) -> Self {
        self.bulkhead = max_concurrent;
        self
    }

    /// A retry budget shared by every call of every stack sharing the upstream. Default:
    /// none (retries limited only by each stack's policy and deadline).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// What its `tracing` events and metrics call it (the `breaker` and `upstream`
    /// labels): 1 to 64 bytes, no control characters. Default: `unnamed`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Validates and builds. The breaker's clock starts now.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `bulkhead` if it is zero, on `name` if it is not a
    /// [`Name`].
    pub fn build(self) -> Result<Upstream, ConfigError> {
        let bulkhead = SharedBulkhead::new(self.bulkhead)
            .map_err(|e| ConfigError::new("bulkhead", e.reason))?;
        let name = parse_name(self.name.as_deref())?.unwrap_or(crate::observe::UNNAMED);
        Ok(Upstream {
            breaker: Arc::new(SharedBreaker::new(self.breaker).named(name)),
            bulkhead: Arc::new(bulkhead),
            budget: self.budget.map(|b| Arc::new(Mutex::new(b))),
        })
    }
}

/// `name` as a [`Name`], or the error on field `name`.
fn parse_name(name: Option<&str>) -> Result<Option<Name>, ConfigError> {
    name.map(Name::new)
        .transpose()
        .map_err(|e| ConfigError::new("name", e.to_string()))
}

/// Where an answer of [`Resilient::call_answer`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The API answered this value.
    Api,
    /// The API did not, and the fallback answered instead, for this reason.
    Fallback(FallbackCause),
}

/// Why a call was answered by its fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackCause {
    /// The bulkhead was full.
    BulkheadFull,
    /// The circuit breaker rejected an attempt.
    Rejected,
    /// The last attempt failed and no retry was allowed.
    Failed,
    /// The last attempt timed out and no retry was allowed.
    Timeout,
    /// The retry budget refused a retry.
    BudgetExhausted,
    /// The call's deadline passed during a backoff.
    DeadlineReached,
}

impl FallbackCause {
    /// A stable lower-case name (`bulkhead_full`, `rejected`, ...): the `cause` of the
    /// fallback's `tracing` event.
    pub const fn name(self) -> &'static str {
        match self {
            FallbackCause::BulkheadFull => "bulkhead_full",
            FallbackCause::Rejected => "rejected",
            FallbackCause::Failed => "failed",
            FallbackCause::Timeout => "timeout",
            FallbackCause::BudgetExhausted => "budget_exhausted",
            FallbackCause::DeadlineReached => "deadline_reached",
        }
    }

    fn of(end: End) -> Self {
        match end {
            End::BulkheadFull { .. } => FallbackCause::BulkheadFull,
            End::Rejected { .. } => FallbackCause::Rejected,
            End::Failed => FallbackCause::Failed,
            End::Timeout => FallbackCause::Timeout,
            End::BudgetExhausted => FallbackCause::BudgetExhausted,
            End::DeadlineReached => FallbackCause::DeadlineReached,
        }
    }
}

/// A value and where it came from: see [`Resilient::call_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer<T> {
    /// The value.
    pub value: T,
    /// The API's own, or the fallback's.
    pub source: Source,
}

impl<T> Answer<T> {
    /// Whether the fallback gave this value.
    pub fn is_fallback(&self) -> bool {
        matches!(self.source, Source::Fallback(_))
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

impl<T, E> Resilient<T, E> {
    /// A builder around a breaker of its own, configured by `breaker`. The call timeout
    /// is required; everything else has a default: no attempt timeout (each attempt may
    /// use the rest of the deadline), a single attempt, no budget, a bulkhead of 25, no
    /// fallback, every error a failure, jitter seed 0.
    pub fn builder(breaker: BreakerConfig) -> ResilientBuilder<T, E> {
        ResilientBuilder::with(UpstreamFrom::Own {
            breaker,
            bulkhead: 25,
            budget: None,
        })
    }

    /// A builder over `upstream`'s breaker, bulkhead and budget, shared with every other
    /// stack built for it. Defaults as for [`builder`](Resilient::builder); the bulkhead
    /// and the budget are the upstream's (set them on [`Upstream::builder`]).
    pub fn builder_for(upstream: &Upstream) -> ResilientBuilder<T, E> {
        ResilientBuilder::with(UpstreamFrom::Shared(upstream.clone()))
    }

    // ----- getters -----

    /// The circuit breaker (for metrics, events and manual commands).
    pub fn breaker(&self) -> &SharedBreaker {
        &self.inner.upstream.breaker
    }

    /// The breaker, bulkhead and budget this stack calls through (its own, or the ones
    /// it shares with the other stacks of [`builder_for`](Resilient::builder_for)).
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// Where the stack's instants sit on the wall clock: its breaker's
    /// [`origin`](SharedBreaker::origin).
    pub fn origin(&self) -> crate::clock::Origin {
        self.breaker().origin()
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &SharedBulkhead {
        &self.inner.upstream.bulkhead
    }

    /// How many calls were answered by this stack's fallback.
    pub fn fallback_used_total(&self) -> u64 {
        self.inner.fallback.as_ref().map_or(0, |f| f.used_total())
    }

    /// How many retries the budget refused (`None` without a budget).
    pub fn budget_exhausted_total(&self) -> Option<u64> {
        self.inner.upstream.budget_exhausted_total()
    }

    // ----- the call -----

    /// Calls the API through the whole stack; `f` makes one attempt (it is called once
    /// per attempt). See the [type docs](Resilient) for the steps.
    ///
    /// A fallback's answer looks like the API's here; [`call_answer`](Self::call_answer)
    /// tells them apart. A last-good fallback suits queries (a price, a status), not
    /// commands: on "send this SMS" it would hand back the receipt of an earlier message
    /// as if this one had been sent.
    ///
    /// Cancellation-safe: dropping the returned future at any await point releases the
    /// breaker permit (without recording an outcome) and the bulkhead slot.
    ///
    /// # Errors
    ///
    /// When there is no fallback answer: [`CallError::BulkheadFull`],
    /// [`CallError::Unavailable`] (the breaker rejected an attempt), or the last
    /// attempt's [`CallError::Timeout`] or [`CallError::Failed`] (also when the budget
    /// refused a retry). A timeout reports the attempt timeout when that was the limit,
    /// else the call's timeout.
    pub async fn call<F, Fut>(&self, f: F) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_answer(f).await.map(|answer| answer.value)
    }

    /// As [`call`](Self::call), saying whether the value is the API's or the fallback's
    /// (and why the fallback answered).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn call_answer<F, Fut>(&self, f: F) -> Result<Answer<T>, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.inner.observer.in_span(self.run(f)).await
    }

    /// The stack's name (see [`ResilientBuilder::name`]).
    pub fn name(&self) -> Name {
        self.inner.observer.stack()
    }

    /// [`call_answer`](Self::call_answer) inside its span.
    async fn run<F, Fut>(&self, mut f: F) -> Result<Answer<T>, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let observer = &inner.observer;
        let mut attempts = 0u32;
        let stack = inner.stack;
        let breaker = self.breaker();
        let mut parts = self.parts();
        let mut request = match stack.begin(&mut parts, breaker.now()) {
            Ok(request) => request,
            Err(end) => return self.give_up(end, None),
        };
        let mut next = stack.attempt(&mut parts, &mut request, breaker.now());
        // The error of the attempt that just ended, for an answer without a fallback.
        let mut last: Option<CallError<E>> = None;
        loop {
            match next {
                Next::Send { timeout, limit } => {
                    attempts += 1;
                    let started = breaker.now();
                    let attempt = ::tokio::time::timeout(timeout, f()).await;
                    let now = breaker.now();
                    let elapsed = now.saturating_since(started);
                    match attempt {
                        Ok(Ok(value)) => {
                            observer.attempt(attempts, Attempted::Success, elapsed);
                            stack.on_value(&mut parts, &mut request, now, CallOutcome::Success);
                            if let Some(fallback) = &inner.fallback {
                                fallback.on_success(&value, now);
                            }
                            observer.answered(Answered::Api);
                            return Ok(Answer {
                                value,
                                source: Source::Api,
                            });
                        }
                        Ok(Err(error)) => {
                            let outcome = (inner.classify)(&error);
                            let attempted = match outcome {
                                CallOutcome::Failure => Attempted::Failure,
                                _ => Attempted::Other,
                            };
                            observer.attempt(attempts, attempted, elapsed);
                            next = stack.on_error(&mut parts, &mut request, now, outcome);
                            last = Some(CallError::Failed(error));
                        }
                        Err(_elapsed) => {
                            observer.attempt(attempts, Attempted::Timeout, elapsed);
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
                    observer.retry(delay);
                    ::tokio::time::sleep(delay).await;
                    last = None;
                    next = stack.on_retry_due(&mut parts, &mut request, breaker.now());
                }
                Next::GiveUp(end) => return self.give_up(end, last),
            }
        }
    }

    /// The shared parts, for one call.
    fn parts(&self) -> Shared<'_> {
        let upstream = &self.inner.upstream;
        Shared {
            breaker: &upstream.breaker,
            bulkhead: &upstream.bulkhead,
            budget: upstream.budget.as_deref(),
            rng: &self.inner.rng,
        }
    }

    /// The fallback's answer if there is one, else the error for `end` (`last`: the
    /// error of the attempt that just ended, if one did).
    fn give_up(&self, end: End, last: Option<CallError<E>>) -> Result<Answer<T>, CallError<E>> {
        match end {
            End::BulkheadFull { .. } => self.inner.observer.refused(Refusal::Bulkhead),
            End::Rejected { .. } => self.inner.observer.refused(Refusal::Breaker),
            End::BudgetExhausted => self.inner.observer.refused(Refusal::Budget),
            End::Failed | End::Timeout | End::DeadlineReached => {}
        }
        if let Some(fallback) = &self.inner.fallback
            && let Some(value) = fallback.take(self.breaker().now())
        {
            let cause = FallbackCause::of(end);
            self.inner
                .observer
                .answered(Answered::Fallback(cause.name()));
            return Ok(Answer {
                value,
                source: Source::Fallback(cause),
            });
        }
        let call_timeout = CallError::Timeout {
            timeout: self.inner.stack.timeout().duration(),
        };
        let error = match end {
            End::BulkheadFull { max_concurrent } => CallError::BulkheadFull { max_concurrent },
            End::Rejected { retry_after } => CallError::Unavailable { retry_after },
            // The last attempt's error: what the caller sees when no retry was possible
            // or the budget refused one.
            End::Failed | End::Timeout | End::BudgetExhausted => last.unwrap_or(call_timeout),
            // Only reachable when a backoff sleep overshot the deadline.
            End::DeadlineReached => call_timeout,
        };
        self.inner.observer.answered(Answered::Error(error.kind()));
        Err(error)
    }
}

/// Where a [`ResilientBuilder`]'s breaker, bulkhead and budget come from.
// A builder lives for one `build`: the size of a variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum UpstreamFrom {
    /// Its own, built with the stack.
    Own {
        breaker: BreakerConfig,
        bulkhead: u32,
        budget: Option<RetryBudget>,
    },
    /// An [`Upstream`]'s, shared with the other stacks built for it.
    Shared(Upstream),
}

/// Builder for [`Resilient`]; [`build`](ResilientBuilder::build) validates and names the
/// first bad field.
pub struct ResilientBuilder<T, E> {
    parts: UpstreamFrom,
    /// A field set that belongs to the shared upstream (an error at build).
    upstream_field: Option<&'static str>,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    retry: RetryPolicy,
    fallback: Option<Box<dyn FallbackStore<T>>>,
    classify: Classifier<E>,
    seed: u64,
    /// Validated at build.
    name: Option<String>,
}

impl<T, E> fmt::Debug for ResilientBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResilientBuilder");
        match &self.parts {
            UpstreamFrom::Own {
                breaker,
                bulkhead,
                budget,
            } => d
                .field("breaker", breaker)
                .field("bulkhead", bulkhead)
                .field("budget", budget),
            UpstreamFrom::Shared(upstream) => d.field("upstream", upstream),
        };
        d.field("timeout", &self.timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("retry", &self.retry)
            .field("fallback", &self.fallback.is_some())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<T, E> ResilientBuilder<T, E> {
    fn with(parts: UpstreamFrom) -> Self {
        ResilientBuilder {
            parts,
            upstream_field: None,
            timeout: None,
            attempt_timeout: None,
            retry: RetryPolicy::none(),
            fallback: None,
            classify: Box::new(|_| CallOutcome::Failure),
            seed: 0,
            name: None,
        }
    }

    /// What its `tracing` span and metrics call the stack (the `stack` label; the
    /// `upstream` label is its upstream's name): 1 to 64 bytes, no control characters.
    /// Default: the upstream's name. A stack of [`Resilient::builder`] names its own
    /// breaker (and upstream) so too.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The caller's deadline for a whole call, every attempt and backoff included.
    /// Required (no default); must be longer than zero.
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
    /// policy and the deadline). A stack of [`Resilient::builder_for`] uses its
    /// upstream's budget: setting one here is an error at build.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        match &mut self.parts {
            UpstreamFrom::Own { budget: b, .. } => *b = Some(budget),
            UpstreamFrom::Shared(_) => self.upstream_field = self.upstream_field.or(Some("budget")),
        }
        self
    }

    /// Most calls in progress at once (a [`SharedBulkhead`]). Default: 25. A stack of
    /// [`Resilient::builder_for`] uses its upstream's bulkhead: setting one here is an
    /// error at build.
    pub fn bulkhead(mut self, max_concurrent: u32) -> Self {
        match &mut self.parts {
            UpstreamFrom::Own { bulkhead, .. } => *bulkhead = max_concurrent,
            UpstreamFrom::Shared(_) => {
                self.upstream_field = self.upstream_field.or(Some("bulkhead"));
            }
        }
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

    /// Validates and builds. A breaker of its own starts its clock now.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `timeout` if it was not set or is zero, on
    /// `attempt_timeout` if it is zero, on `bulkhead` if it is zero, on `name` if it is
    /// not a [`Name`]; on `bulkhead` or `budget` if one was set on a stack that shares
    /// an [`Upstream`]'s.
    pub fn build(self) -> Result<Resilient<T, E>, ConfigError> {
        if let Some(field) = self.upstream_field {
            return Err(ConfigError::new(
                field,
                "belongs to the shared upstream: set it on Upstream::builder",
            ));
        }
        let timeout = self
            .timeout
            .ok_or_else(|| ConfigError::new("timeout", "is required, got none"))?;
        let timeout =
            TimeoutPolicy::new(timeout).map_err(|e| ConfigError::new("timeout", e.reason))?;
        if let Some(attempt) = self.attempt_timeout {
            TimeoutPolicy::new(attempt)
                .map_err(|e| ConfigError::new("attempt_timeout", e.reason))?;
        }
        let name = parse_name(self.name.as_deref())?;
        let upstream = match self.parts {
            UpstreamFrom::Own {
                breaker,
                bulkhead,
                budget,
            } => {
                let mut b = Upstream::builder(breaker).bulkhead(bulkhead);
                if let Some(budget) = budget {
                    b = b.budget(budget);
                }
                if let Some(name) = name {
                    b = b.name(name.as_str());
                }
                b.build()?
            }
            UpstreamFrom::Shared(upstream) => upstream,
        };
        Ok(Resilient {
            inner: Arc::new(Inner {
                stack: Stack::new(timeout, self.attempt_timeout, self.retry),
                fallback: self.fallback,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(self.seed)),
                classify: self.classify,
                observer: CallObserver::new(name.unwrap_or(upstream.name()), upstream.name()),
                upstream,
            }),
        })
    }
}

impl<T: Clone + Send + 'static, E> ResilientBuilder<T, E> {
    /// What to answer when the API can't. Default: [`FallbackPolicy::None`].
    ///
    /// A last-good policy answers with the latest value the API returned: right for a
    /// query, wrong for a command (see [`Resilient::call`]). Use
    /// [`Resilient::call_answer`] where the caller must know a fallback answered.
    pub fn fallback(mut self, fallback: FallbackPolicy<T>) -> Self {
        self.fallback = match fallback {
            FallbackPolicy::None => None,
            policy => Some(Box::new(Mutex::new(Fallback::new(policy)))),
        };
        self
    }
}
