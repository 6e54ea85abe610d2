//! The tokio adapter: a thread-safe [`SharedBreaker`] with RAII permits, and
//! [`Resilient`], the whole stack (bulkhead, circuit breaker, timeouts, retries with
//! backoff and a budget, fallback) around one async API.
//!
//! Time comes from `tokio::time::Instant`, converted to the cores' [`Instant`]
//! (nanoseconds since the adapter was built), so tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) drives everything in
//! tests.
//!
//! Cancellation safety: a [`SharedPermit`] dropped without
//! [`record`](SharedPermit::record) (because the caller's future was dropped) hands its
//! permit back with [`CircuitBreaker::release`], and the bulkhead slot frees itself on
//! drop, so a cancelled half-open probe never leaves the breaker stuck and a cancelled
//! call never holds a slot. Dropping [`Resilient::call`]'s future at any await point is
//! safe.
//!
//! # Example: an SMS gateway behind a tokio service
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use faultline::breaker::fallback::FallbackPolicy;
//! use faultline::retry::{Backoff, RetryBudget, RetryPolicy};
//! use faultline::breaker::tokio::Resilient;
//! use faultline::breaker::{BreakerConfig, CallError, CallOutcome};
//!
//! /// What the SMS provider can answer.
//! #[derive(Debug)]
//! enum SmsError {
//!     /// Our fault: retrying or tripping the breaker would not help.
//!     InvalidNumber,
//!     /// Theirs.
//!     Unavailable,
//! }
//!
//! impl std::fmt::Display for SmsError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str(match self {
//!             SmsError::InvalidNumber => "invalid number",
//!             SmsError::Unavailable => "provider unavailable",
//!         })
//!     }
//! }
//!
//! /// The raw API call (an HTTP request in real life).
//! async fn send_sms(to: String, body: &'static str) -> Result<String, SmsError> {
//!     if !to.starts_with('+') {
//!         return Err(SmsError::InvalidNumber);
//!     }
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//!     Ok(format!("msg-{}-{}", to.len(), body.len()))
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Built once at start-up and shared by every request handler.
//!     let sms: Arc<Resilient<String, SmsError>> = Arc::new(
//!         Resilient::builder(
//!             BreakerConfig::builder()
//!                 .count_window(50)
//!                 .minimum_calls(20)
//!                 .failure_rate_threshold_percent(50)
//!                 .wait_in_open(Duration::from_secs(30))
//!                 .half_open_calls_permitted(3)
//!                 .build()?,
//!         )
//!         .timeout(Duration::from_secs(2)) // the caller's deadline, retries included
//!         .attempt_timeout(Duration::from_millis(800))
//!         .retry(RetryPolicy::new(
//!             3,
//!             Backoff::new(Duration::from_millis(100), Duration::from_secs(1))?,
//!         )?)
//!         .budget(RetryBudget::new(Duration::from_secs(10), 5, 20)?)
//!         .bulkhead(50)
//!         .classify(|e: &SmsError| match e {
//!             SmsError::InvalidNumber => CallOutcome::Ignored,
//!             SmsError::Unavailable => CallOutcome::Failure,
//!         })
//!         .fallback(FallbackPolicy::None)
//!         .build()?,
//!     );
//!
//!     // In a request handler:
//!     let handler = {
//!         let sms = Arc::clone(&sms);
//!         tokio::spawn(async move {
//!             let to = String::from("+15550100");
//!             match sms.call(|| send_sms(to.clone(), "your code is 1234")).await {
//!                 Ok(id) => format!("200 sent {id}"),
//!                 Err(CallError::Unavailable { retry_after }) => {
//!                     format!("503 Retry-After: {}", retry_after.as_secs().max(1))
//!                 }
//!                 Err(CallError::Failed(SmsError::InvalidNumber)) => "400".to_string(),
//!                 Err(other) => format!("502 {other}"),
//!             }
//!         })
//!     };
//!     let response = handler.await?;
//!     assert!(response.starts_with("200"), "{response}");
//!     assert_eq!(sms.breaker().metrics().totals.succeeded, 1);
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::breaker::bulkhead::SharedBulkhead;
use crate::breaker::circuit::{
    BreakerConfig, BreakerEvent, CallOutcome, CircuitBreaker, Metrics, Permit, Rejected, State,
};
use crate::breaker::error::{CallError, ConfigError};
use crate::breaker::fallback::{Fallback, FallbackPolicy};
use crate::breaker::timeout::TimeoutPolicy;
use crate::clock::Instant;
use crate::retry::{RetryBudget, RetryPolicy};

use crate::rt::lock;

/// The `open_until` value published while the breaker is not Open: no `now` is below it,
/// so the fast path never fires. (A real `open_until` is never 0: the wait in open is
/// longer than zero.)
const NOT_OPEN: u64 = 0;

/// The `closed_generation` value published when calls may not be admitted lock-free.
const NO_FAST_PATH: u64 = u64::MAX;

/// Lock-free successes are gathered in one atomic word: the Closed episode (generation)
/// they belong to in the high bits, their count in the low [`COUNT_BITS`].
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The generation field meaning "record successes under the lock".
const FROZEN: u64 = (1 << (64 - COUNT_BITS)) - 1;
/// Most compare-and-swap attempts before a success takes the lock instead.
const CAS_ATTEMPTS_MAX: u32 = 64;

const fn pack(generation: u64, count: u64) -> u64 {
    (generation << COUNT_BITS) | count
}

const fn unpack(word: u64) -> (u64, u64) {
    (word >> COUNT_BITS, word & COUNT_MASK)
}

/// What the mutex guards.
#[derive(Debug)]
struct Core {
    breaker: CircuitBreaker,
    /// The latest `now` handed to the core: threads read the clock before taking the
    /// lock, so they may reach it out of order; the core is never shown time going back.
    latest: Instant,
}

/// A thread-safe [`CircuitBreaker`] driven by tokio's clock: share it by reference or in
/// an `Arc`.
///
/// The core sits behind a `std::sync::Mutex` (critical sections are a few dozen
/// nanoseconds and never span an await). While the breaker is Open, rejections take a
/// lock-free fast path: the Open deadline is published in an atomic whenever the state
/// changes, and [`try_acquire`](SharedBreaker::try_acquire) rejects without the lock
/// when `now` is before it, with the same `retry_after` the core would give.
///
/// The core's own `totals.rejected` therefore excludes fast-path rejections; they are
/// counted in [`fast_rejected`](SharedBreaker::fast_rejected), and
/// [`metrics`](SharedBreaker::metrics) adds them back, so its totals are exact.
///
/// While Closed, when the breaker never needs a call's time there (a count window and
/// [`without_slow_calls`](crate::breaker::BreakerConfigBuilder::without_slow_calls)),
/// calls are admitted without the lock and without reading the clock, and a success is
/// recorded under one lock without reading the clock either: one lock per call, like the
/// atomics of recloser. Such calls are counted as admitted when they are handed back, so
/// `metrics().in_flight` does not include them.
///
/// A poisoned lock is recovered, never turned into a panic.
///
/// ```
/// use faultline::breaker::tokio::SharedBreaker;
/// use faultline::breaker::{BreakerConfig, CallOutcome, State};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), faultline::config::ConfigError> {
/// let breaker = SharedBreaker::new(
///     BreakerConfig::builder()
///         .count_window(2)
///         .minimum_calls(2)
///         .wait_in_open(Duration::from_secs(10))
///         .build()?,
/// );
/// for _ in 0..2 {
///     let permit = breaker.try_acquire().expect("closed");
///     permit.record(CallOutcome::Failure);
/// }
/// assert_eq!(breaker.state(), State::Open);
/// tokio::time::advance(Duration::from_secs(4)).await;
/// let rejected = breaker.try_acquire().unwrap_err(); // lock-free
/// assert_eq!(rejected.retry_after, Duration::from_secs(6));
/// assert_eq!(breaker.fast_rejected(), 1);
/// assert_eq!(breaker.metrics().totals.rejected, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SharedBreaker {
    core: Mutex<Core>,
    origin: ::tokio::time::Instant,
    /// Nanoseconds (since `origin`) until which an Open breaker rejects; [`NOT_OPEN`]
    /// in every other state. Written under the lock whenever the state changes.
    open_until: AtomicU64,
    /// Rejections made by the fast path (not in the core's totals).
    fast_rejected: AtomicU64,
    /// The Closed episode in which calls are admitted lock-free and clock-free (the
    /// breaker is Closed and never needs a call's time there: see
    /// [`CircuitBreaker::closed_is_timeless`]); [`NO_FAST_PATH`] otherwise.
    closed_generation: AtomicU64,
    /// Successes recorded lock-free and not yet applied to the core (see [`pack`]). Every
    /// locked section first freezes it and applies what it holds, and re-opens it last,
    /// so the core sees each success before anything that happens after it.
    pending: AtomicU64,
}

/// The locked core: gathered successes applied on entry, fast paths re-published on
/// exit.
struct CoreGuard<'a> {
    shared: &'a SharedBreaker,
    core: MutexGuard<'a, Core>,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        self.shared.publish(&self.core.breaker);
    }
}

impl SharedBreaker {
    /// A closed breaker whose time origin is now (`tokio::time::Instant::now()`).
    ///
    /// Works outside a runtime too (tokio's clock then is the system's monotonic clock);
    /// to be driven by a paused test clock, build it inside the test's runtime.
    pub fn new(config: BreakerConfig) -> Self {
        Self::from_core(CircuitBreaker::new(config))
    }

    /// Like [`new`](SharedBreaker::new), drawing wait-in-open jitter from `rng`.
    pub fn with_rng(config: BreakerConfig, rng: impl rand::Rng + Send + 'static) -> Self {
        Self::from_core(CircuitBreaker::with_rng(config, rng))
    }

    fn from_core(breaker: CircuitBreaker) -> Self {
        let shared = SharedBreaker {
            core: Mutex::new(Core {
                breaker,
                latest: Instant::ZERO,
            }),
            origin: ::tokio::time::Instant::now(),
            open_until: AtomicU64::new(NOT_OPEN),
            fast_rejected: AtomicU64::new(0),
            closed_generation: AtomicU64::new(NO_FAST_PATH),
            pending: AtomicU64::new(pack(FROZEN, 0)),
        };
        drop(shared.locked());
        shared
    }

    /// The current time as the core sees it: nanoseconds since this breaker was built,
    /// read from `tokio::time::Instant::now()` (so a paused tokio clock drives it).
    #[inline]
    pub fn now(&self) -> Instant {
        crate::rt::now_since(self.origin)
    }

    // ----- getters -----

    /// The current state.
    pub fn state(&self) -> State {
        self.locked().breaker.state()
    }

    /// The core's metrics, with the fast path's rejections added to `totals.rejected`,
    /// so that the totals count every call this breaker saw.
    pub fn metrics(&self) -> Metrics {
        let core = self.locked();
        let mut metrics = core.breaker.metrics();
        metrics.totals.rejected = metrics
            .totals
            .rejected
            .saturating_add(self.fast_rejected.load(Ordering::Relaxed));
        metrics
    }

    /// Rejections made by the lock-free path while Open, since creation. They are not in
    /// the core's own `totals.rejected`; [`metrics`](SharedBreaker::metrics) includes
    /// them.
    pub fn fast_rejected(&self) -> u64 {
        self.fast_rejected.load(Ordering::Relaxed)
    }

    // ----- inputs -----

    /// Asks to make a call now: a [`SharedPermit`] to hand back with
    /// [`record`](SharedPermit::record) (or to drop, if the call is abandoned), or a
    /// [`Rejected`] carrying `retry_after`.
    ///
    /// While Open and before the wait is over, this does not take the lock.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is Open or ForcedOpen, or HalfOpen with every probe
    /// already given.
    pub fn try_acquire(&self) -> Result<SharedPermit<'_>, Rejected> {
        let generation = self.closed_generation.load(Ordering::Acquire);
        if generation != NO_FAST_PATH {
            return Ok(SharedPermit {
                breaker: self,
                state: State::Closed,
                permit: None,
                detached: Some(generation),
            });
        }
        let now = self.now();
        let open_until = self.open_until.load(Ordering::Acquire);
        if now.as_nanos() < open_until {
            self.fast_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Rejected {
                retry_after: Duration::from_nanos(open_until - now.as_nanos()),
                state: State::Open,
            });
        }
        let permit = self.with_core(now, |breaker, now| breaker.try_acquire(now))?;
        Ok(SharedPermit {
            breaker: self,
            state: permit.state(),
            permit: Some(permit),
            detached: None,
        })
    }

    /// Applies time-driven transitions due now (see [`CircuitBreaker::handle_timeout`]);
    /// call it from a periodic task if the breaker uses `automatic_transition` or
    /// `half_open_wait_max` and you want transitions without traffic.
    pub fn handle_timeout(&self) {
        self.with_core(self.now(), |breaker, now| breaker.handle_timeout(now));
    }

    // ----- commands -----

    /// Rejects every call until [`reset`](SharedBreaker::reset).
    pub fn force_open(&self) {
        self.with_core(self.now(), |breaker, now| breaker.force_open(now));
    }

    /// Lets every call through and records nothing until [`reset`](SharedBreaker::reset).
    pub fn disable(&self) {
        self.with_core(self.now(), |breaker, now| breaker.disable(now));
    }

    /// Lets every call through and records outcomes, never tripping, until
    /// [`reset`](SharedBreaker::reset).
    pub fn metrics_only(&self) {
        self.with_core(self.now(), |breaker, now| breaker.metrics_only(now));
    }

    /// Back to Closed with an empty window.
    pub fn reset(&self) {
        self.with_core(self.now(), |breaker, now| breaker.reset(now));
    }

    // ----- outputs -----

    /// The next event (state transition), oldest first.
    #[must_use]
    pub fn poll_event(&self) -> Option<BreakerEvent> {
        self.locked().breaker.poll_event()
    }

    // ----- internals -----

    /// Runs `f` on the core under the lock with a monotonic `now`, then publishes the
    /// Open deadline if the state changed.
    fn with_core<R>(&self, now: Instant, f: impl FnOnce(&mut CircuitBreaker, Instant) -> R) -> R {
        let mut core = self.locked();
        let now = now.max(core.latest);
        core.latest = now;
        f(&mut core.breaker, now)
    }

    /// Takes the lock, freezes the lock-free success path and applies the successes it
    /// gathered. The fast paths are re-published when the guard drops.
    fn locked(&self) -> CoreGuard<'_> {
        let mut core = lock(&self.core);
        let (generation, count) = unpack(self.pending.swap(pack(FROZEN, 0), Ordering::AcqRel));
        if count > 0 {
            let now = core.latest;
            core.breaker.on_detached_successes(generation, count, now);
        }
        CoreGuard { shared: self, core }
    }

    /// Counts a success of a call admitted lock-free in episode `generation` without
    /// the lock, when the episode is still current and its window is full. False: take
    /// the lock instead.
    fn try_fast_success(&self, generation: u64) -> bool {
        let mut word = self.pending.load(Ordering::Acquire);
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (g, count) = unpack(word);
            if g != generation || count == COUNT_MASK {
                return false;
            }
            match self.pending.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
        false
    }

    /// Publishes the Open deadline (under the lock, so writes happen in state order).
    fn publish(&self, breaker: &CircuitBreaker) {
        let open_until = breaker.open_until().map_or(NOT_OPEN, Instant::as_nanos);
        self.open_until.store(open_until, Ordering::Release);
        let closed = match breaker.closed_generation() {
            Some(g) if breaker.closed_is_timeless() && g < FROZEN => g,
            _ => NO_FAST_PATH,
        };
        self.closed_generation.store(closed, Ordering::Release);
        // Successes may skip the lock once the window is full: before that, one could
        // bring it to the minimum number of calls and trip the breaker.
        let successes = if closed != NO_FAST_PATH && !breaker.window_is_filling() {
            closed
        } else {
            FROZEN
        };
        self.pending.store(pack(successes, 0), Ordering::Release);
    }

    /// Records the outcome of a call admitted lock-free in Closed episode `generation`.
    /// The clock is read only when the time can matter: a failure (which may open the
    /// breaker) or a success while the window is still filling.
    fn on_detached_result(&self, generation: u64, outcome: CallOutcome) {
        if outcome == CallOutcome::Success && self.try_fast_success(generation) {
            return;
        }
        let mut core = self.locked();
        let now = if outcome == CallOutcome::Success && !core.breaker.window_is_filling() {
            core.latest
        } else {
            self.now().max(core.latest)
        };
        core.latest = now;
        core.breaker
            .on_detached_result(generation, now, now, outcome);
    }

    fn release_detached(&self, generation: u64) {
        let mut core = self.locked();
        let now = core.latest;
        core.breaker.release_detached(generation, now);
    }

    fn on_result(&self, permit: Permit, outcome: CallOutcome) {
        self.with_core(self.now(), |breaker, now| {
            breaker.on_result(permit, now, outcome);
        });
    }

    fn release(&self, permit: Permit) {
        self.with_core(self.now(), |breaker, now| breaker.release(permit, now));
    }
}

/// Permission to make one call through a [`SharedBreaker`].
///
/// Hand it back with [`record`](SharedPermit::record) once the call has an outcome. If
/// it is dropped instead (the caller's future was cancelled, or the call panicked), the
/// drop [releases](CircuitBreaker::release) it at the current time: no outcome is
/// recorded, and a half-open probe slot is settled rather than held forever.
#[must_use = "hand the permit back with `record`; dropping it releases it as cancelled"]
#[derive(Debug)]
pub struct SharedPermit<'a> {
    breaker: &'a SharedBreaker,
    state: State,
    /// `Some` until handed back.
    permit: Option<Permit>,
    /// `Some(generation)` for a call admitted lock-free while Closed, until handed back.
    detached: Option<u64>,
}

impl SharedPermit<'_> {
    /// The state the breaker was in when it gave this permit.
    pub fn state(&self) -> State {
        self.state
    }

    /// Hands the permit back with the call's outcome; the call's duration (for the
    /// slow-call rate) runs from the permit to now.
    pub fn record(mut self, outcome: CallOutcome) {
        if let Some(permit) = self.permit.take() {
            self.breaker.on_result(permit, outcome);
        } else if let Some(generation) = self.detached.take() {
            self.breaker.on_detached_result(generation, outcome);
        }
    }

    /// Hands the permit back without an outcome (the call was abandoned). Same as
    /// dropping it.
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for SharedPermit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        } else if let Some(generation) = self.detached.take() {
            self.breaker.release_detached(generation);
        }
    }
}

/// Decides how an API error counts for the breaker.
type Classifier<E> = Box<dyn Fn(&E) -> CallOutcome + Send + Sync>;

/// The full resilience stack for one async API: bulkhead, then per attempt the circuit
/// breaker and a timeout, retries with backoff (full jitter) under a retry budget, and a
/// fallback. Build it with [`Resilient::builder`]; see the [module docs](self) for an
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{TransitionReason, circuit::Totals};
    use crate::retry::Backoff;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
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
            .map(|BreakerEvent::Transition { from, to, .. }| (from, to))
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
        assert_eq!(shared.metrics().totals, core.metrics().totals);
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
        tokio::time::advance(WAIT).await;
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
        tokio::time::advance(WAIT).await;

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

        // The drop released the permit: a fresh episode, and the next call probes.
        let m = r.breaker().metrics();
        assert_eq!((m.in_flight, m.totals.released), (0, 1));
        assert_eq!(r.call(counting(&calls, Ok(1))).await, Ok(1));
        assert_eq!(r.breaker().state(), State::Closed);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let reasons: Vec<_> = std::iter::from_fn(|| r.breaker().poll_event())
            .map(|BreakerEvent::Transition { reason, .. }| reason)
            .collect();
        assert!(reasons.contains(&TransitionReason::ProbesInconclusive));
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
        let t = Instant::ZERO + WAIT;
        let _never_handed_back = core.try_acquire(t).unwrap();
        for hours in [0, 1, 24, 24 * 365] {
            let later = t + Duration::from_secs(3_600 * hours);
            let rejected = core.try_acquire(later).unwrap_err();
            assert_eq!(rejected.state, State::HalfOpen, "stuck after {hours} h");
        }
        assert_eq!(core.metrics().in_flight, 1);
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
}
