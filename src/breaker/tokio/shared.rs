//! [`SharedBreaker`]: the sans-IO circuit breaker behind a lock, with a lock-free fast
//! path for calls in Closed and rejections in Open, on tokio's clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ::tokio::sync::broadcast;

use crate::breaker::circuit::{
    BreakerConfig, BreakerEvent, CallOutcome, CircuitBreaker, IllegalTransition, Metrics, Permit,
    Rejected, State,
};
use crate::clock::Instant;
use crate::name::Name;
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
pub(super) struct Core {
    breaker: CircuitBreaker,
    /// The latest `now` handed to the core: threads read the clock before taking the
    /// lock, so they may reach it out of order; the core is never shown time going back.
    latest: Instant,
    /// The core's [`events_emitted`](CircuitBreaker::events_emitted) when its events
    /// were last announced to the subscribers, `tracing` and `metrics`.
    announced: u64,
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
/// Every state change is pushed as it happens, whatever the pull queue of
/// [`poll_event`](SharedBreaker::poll_event) holds: to every
/// [`subscribe`](SharedBreaker::subscribe)r, to `tracing` (feature `tracing`) and to the
/// `metrics` facade (feature `metrics`), labelled with the breaker's
/// [`name`](SharedBreaker::named).
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
    pub(super) core: Mutex<Core>,
    origin: ::tokio::time::Instant,
    /// The wall-clock time at `origin`.
    wall: crate::clock::Origin,
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
    /// What the events, traces and metrics call it.
    name: Name,
    /// The push side of the events, made by the first [`subscribe`](SharedBreaker::subscribe).
    subscribers: OnceLock<broadcast::Sender<BreakerEvent>>,
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
        self.shared.announce(&mut self.core);
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

    /// Like [`new`](SharedBreaker::new), drawing wait-in-open jitter from `rng` (any
    /// [`rand::Rng`](crate::rand::Rng); faultline re-exports the `rand` it uses as
    /// [`faultline::rand`](crate::rand)).
    pub fn with_rng(config: BreakerConfig, rng: impl rand::Rng + Send + 'static) -> Self {
        Self::from_core(CircuitBreaker::with_rng(config, rng))
    }

    /// The same breaker under `name`: the `breaker` field of its `tracing` events and
    /// the `breaker` label of its metrics. Default: `unnamed` (name every breaker of a
    /// service that has more than one).
    #[must_use]
    pub fn named(mut self, name: Name) -> Self {
        self.name = name;
        crate::observe::breaker_created(name, self.state());
        self
    }

    /// The breaker's name (see [`named`](SharedBreaker::named)).
    pub fn name(&self) -> Name {
        self.name
    }

    /// A stream of every event from now on, pushed as it happens (besides the pull
    /// queue of [`poll_event`](SharedBreaker::poll_event), which it does not drain).
    ///
    /// A receiver that falls more than
    /// [`events_max`](crate::breaker::BreakerConfigBuilder::events_max) events behind
    /// loses the oldest and is told how many with
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) on its next `recv`:
    /// nothing is lost silently.
    ///
    /// ```
    /// use faultline::breaker::tokio::SharedBreaker;
    /// use faultline::breaker::{BreakerConfig, BreakerEvent, State};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let breaker = SharedBreaker::new(BreakerConfig::default());
    /// let mut events = breaker.subscribe();
    /// breaker.force_open();
    /// let event = events.recv().await?;
    /// assert!(matches!(
    ///     event,
    ///     BreakerEvent::Transition { from: State::Closed, to: State::ForcedOpen, .. }
    /// ));
    /// // The pull queue still holds it.
    /// assert!(breaker.poll_event().is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        let capacity = lock(&self.core).breaker.config().events_max();
        self.subscribers
            .get_or_init(|| broadcast::channel(capacity).0)
            .subscribe()
    }

    fn from_core(breaker: CircuitBreaker) -> Self {
        let (origin, wall) = crate::rt::start();
        let shared = SharedBreaker {
            core: Mutex::new(Core {
                breaker,
                latest: Instant::ZERO,
                announced: 0,
            }),
            origin,
            wall,
            open_until: AtomicU64::new(NOT_OPEN),
            fast_rejected: AtomicU64::new(0),
            closed_generation: AtomicU64::new(NO_FAST_PATH),
            pending: AtomicU64::new(pack(FROZEN, 0)),
            name: crate::observe::UNNAMED,
            subscribers: OnceLock::new(),
        };
        drop(shared.locked());
        crate::observe::breaker_created(shared.name, State::Closed);
        shared
    }

    /// The current time as the core sees it: nanoseconds since this breaker was built,
    /// read from `tokio::time::Instant::now()` (so a paused tokio clock drives it).
    #[inline]
    pub fn now(&self) -> Instant {
        crate::rt::now_since(self.origin)
    }

    /// Where this breaker's instants sit on the wall clock (read once, when it was built;
    /// later offsets come from tokio's clock): `origin().to_system_time(at)` is the
    /// [`SystemTime`](std::time::SystemTime) of any instant it reports (a [`BreakerEvent`]'s `at`, [`now`](SharedBreaker::now)).
    pub fn origin(&self) -> crate::clock::Origin {
        self.wall
    }

    // ----- getters -----

    /// The current state.
    pub fn state(&self) -> State {
        self.locked().breaker.state()
    }

    /// The core's metrics, with the fast path's rejections added to `totals.rejected`,
    /// so that the totals count every call this breaker saw.
    pub fn metrics(&self) -> Metrics {
        let now = self.now();
        let core = self.locked();
        let mut metrics = core.breaker.metrics(now);
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

    /// To Closed with an empty window (see
    /// [`CircuitBreaker::transition_to_closed`]).
    pub fn transition_to_closed(&self) {
        self.with_core(self.now(), |breaker, now| breaker.transition_to_closed(now));
    }

    /// To Open as on a trip (see [`CircuitBreaker::transition_to_open`]).
    pub fn transition_to_open(&self) -> Result<(), IllegalTransition> {
        self.with_core(self.now(), |breaker, now| breaker.transition_to_open(now))
    }

    /// To Open for exactly `wait` (see [`CircuitBreaker::transition_to_open_for`]).
    pub fn transition_to_open_for(&self, wait: Duration) -> Result<(), IllegalTransition> {
        self.with_core(self.now(), |breaker, now| {
            breaker.transition_to_open_for(now, wait)
        })
    }

    /// To HalfOpen with a fresh episode (see
    /// [`CircuitBreaker::transition_to_half_open`]).
    pub fn transition_to_half_open(&self) -> Result<(), IllegalTransition> {
        self.with_core(self.now(), |breaker, now| {
            breaker.transition_to_half_open(now)
        })
    }

    // ----- outputs -----

    /// The next event (a transition, a reset, a rate reported exceeded), oldest first.
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

    /// Pushes the events published since the last announcement (under the lock, so in
    /// order) to the subscribers, `tracing` and `metrics`. They are the newest ones in
    /// the queue (fewer if the queue dropped some: those are counted in
    /// `totals.events_dropped`).
    fn announce(&self, core: &mut Core) {
        let emitted = core.breaker.events_emitted();
        if emitted == core.announced {
            return;
        }
        let fresh = emitted - core.announced;
        core.announced = emitted;
        let queued = core.breaker.events().len();
        let skip = queued.saturating_sub(usize::try_from(fresh).unwrap_or(usize::MAX));
        for event in core.breaker.events().skip(skip) {
            crate::observe::breaker_transition(self.name, event);
            if let Some(subscribers) = self.subscribers.get() {
                // No receiver left is not an error: nobody is listening.
                let _ = subscribers.send(*event);
            }
        }
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
