//! The tokio adapter: [`SharedBus`], the sans-IO [`Bus`] behind a mutex, with subscriber
//! tasks that run async handlers, backpressure for publishers, and a graceful shutdown
//! that drains.
//!
//! - **Publishing.** [`publish`](SharedBus::publish) is the *error* policy: when the
//!   topic is full it returns [`PublishError::Full`] at once.
//!   [`publish_wait`](SharedBus::publish_wait) is the *wait* policy: it waits for space
//!   (backpressure from the slowest subscriber of the topic). An event published on a
//!   topic nobody subscribes to is not retained: it is counted as a dead event
//!   ([`Published::DeadEvent`], [`BusTotals::dead_events`]).
//! - **Subscribing.** [`subscribe`](SharedBus::subscribe) spawns one task per
//!   subscriber on the current tokio runtime. The task takes the subscriber's next
//!   delivery from the core, runs the handler, and acknowledges the event when the
//!   handler returns `Ok`; on `Err` (or a panic) the core retries it after a backoff and
//!   dead-letters it after `attempts_max` attempts. A subscriber's handler runs one event
//!   at a time, so each topic's events reach it in order; subscribers are independent,
//!   so a slow one delays a fast one only once the topic is full.
//! - **Unsubscribing** ([`SubscriptionHandle::unsubscribe`]) stops delivery at once: the
//!   core forgets the subscriber (releasing what it retained for it) and the task stops
//!   before its next delivery. A handler already running finishes; its acknowledgement
//!   is ignored. Dropping a [`SubscriptionHandle`] does *not* unsubscribe.
//! - **Shutdown** ([`SharedBus::shutdown`]) closes the bus to publishers, lets every
//!   subscriber finish what it is owed (every retained event handled or dead-lettered,
//!   retries waited for), then awaits the tasks. [`SharedBus::shutdown_timeout`] bounds
//!   the drain and reports what was left.
//!
//! Time comes from `tokio::time::Instant`, converted to the core's [`Instant`]
//! (nanoseconds since the bus was built), so a paused tokio clock
//! (`#[tokio::test(start_paused = true)]`) drives the retry backoff in tests. The clock
//! is read only when time matters (publishing, a failed delivery, a retry pending);
//! otherwise the core is handed the latest time the adapter has seen.
//!
//! A poisoned lock is recovered, never turned into a panic: every critical section only
//! calls the core, which never panics on its inputs.
//!
//! Payloads are any `P: Clone + Send + 'static`; every subscriber gets its own clone, so
//! prefer cheap clones (`u64`, `Arc<T>`, `Arc<[u8]>`). For JSON events, a bus of bytes
//! (`SharedBus<Arc<[u8]>>` or `SharedBus<Vec<u8>>`) has typed helpers:
//! [`publish_json`](SharedBus::publish_json), [`publish_json_wait`](SharedBus::publish_json_wait)
//! and [`subscribe_json`](SharedBus::subscribe_json).
//!
//! # Example: order events to an email and an analytics subscriber
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use faultline::bus::BusConfig;
//! use faultline::bus::tokio::SharedBus;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let bus: SharedBus<String> = SharedBus::new(BusConfig::builder().capacity(64).build()?);
//!
//!     let emails = Arc::new(Mutex::new(Vec::new()));
//!     let sent = Arc::clone(&emails);
//!     let email = bus.subscribe(&["order.created"], move |event| {
//!         let sent = Arc::clone(&sent);
//!         async move {
//!             // An SMTP call in real life; an `Err` would be retried with backoff.
//!             sent.lock().map_err(|e| e.to_string())?.push((event.seq, event.payload));
//!             Ok::<(), String>(())
//!         }
//!     })?;
//!     let analytics = bus.subscribe(&["order.created", "order.paid"], |_event| async {
//!         Ok::<(), String>(())
//!     })?;
//!
//!     for order in 1..=3 {
//!         bus.publish_wait("order.created", format!("order {order}")).await?;
//!     }
//!     bus.publish("order.paid", "order 1".to_string())?;
//!
//!     // No more publishes; every subscriber finishes what it is owed.
//!     let report = bus.shutdown().await;
//!     assert_eq!(report.owed, 0);
//!     assert!(bus.publish("order.created", "too late".to_string()).is_err());
//!
//!     let sent = emails.lock().map_err(|e| e.to_string())?.clone();
//!     assert_eq!(
//!         sent,
//!         [(0, "order 1".to_string()), (1, "order 2".to_string()), (2, "order 3".to_string())]
//!     );
//!     assert_eq!(email.stats().handled, 3);
//!     assert_eq!(analytics.stats().handled, 4);
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::Duration;

use ::tokio::sync::Notify;
use ::tokio::task::AbortHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bus::core::{
    Bus, BusConfig, BusFull, BusTotals, DeadLetter, DeliveryToken, Published, SubscriberId, TopicId,
};
use crate::clock::Instant;
use crate::name::Name;

use crate::rt::lock;

#[cfg(test)]
mod lockstep;
mod subscriber;
#[cfg(test)]
mod tests;

// ----- errors -----

/// Why a publish was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic is full (the error policy: [`SharedBus::publish`] only).
    #[error(transparent)]
    Full(#[from] BusFull),
    /// The bus is shut down: it accepts no more events.
    #[error("the bus is shut down")]
    Closed,
}

/// Why a JSON publish was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonPublishError {
    /// The event could not be encoded.
    #[error("cannot encode the event as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// The bus refused it.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Why a subscription could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The bus is shut down.
    #[error("the bus is shut down")]
    Closed,
    /// Not called from within a tokio runtime, so there is nowhere to run the
    /// subscriber's task.
    #[error("subscribe must be called within a tokio runtime")]
    NoRuntime,
}

/// A JSON subscriber's failure: an undecodable payload (retried, then dead-lettered like
/// any failure: nothing is dropped silently) or the handler's error.
#[derive(Debug)]
enum JsonHandlerError<E> {
    Decode(serde_json::Error),
    Handler(E),
}

impl<E: fmt::Display> fmt::Display for JsonHandlerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonHandlerError::Decode(e) => write!(f, "cannot decode the event: {e}"),
            JsonHandlerError::Handler(e) => e.fmt(f),
        }
    }
}

// ----- public data -----

/// One event as a handler sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event<P> {
    /// The topic's name.
    pub topic: Arc<str>,
    /// The event's position in its topic (0, 1, 2, ...).
    pub seq: u64,
    /// The event.
    pub payload: P,
    /// 1 for the first attempt, then 2, 3, ... for retries.
    pub attempt: u32,
    /// True when the subscriber had this event in hand before a crash (the adapter
    /// itself never crashes a subscriber; kept for parity with the core).
    pub redelivery: bool,
    /// True for a dead letter handed back by [`SubscriptionHandle::redrive`].
    pub redriven: bool,
}

/// A subscriber's counters since it subscribed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionStats {
    /// Handler calls that returned `Ok` (the event was acknowledged).
    pub handled: u64,
    /// Handler calls that failed (returned `Err` or panicked): retried or dead-lettered.
    pub failed: u64,
    /// Of `failed`, the handler calls that panicked.
    pub panicked: u64,
}

/// What [`SharedBus::shutdown`] left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShutdownReport {
    /// Subscriber tasks that were running and are now stopped.
    pub subscribers: usize,
    /// Events still owed to those subscribers, neither acknowledged nor dead-lettered: 0
    /// after a full drain. Not zero when [`shutdown_timeout`](SharedBus::shutdown_timeout)
    /// ran out of time, or when a subscriber had its maximum of dead letters (its
    /// delivery stops rather than drop anything; see
    /// [`BusConfig::dead_letters_max`]).
    pub owed: u64,
    /// Dead letters those subscribers hold (still readable through their handles).
    pub dead_letters: usize,
    /// The core's counters at the end.
    pub totals: BusTotals,
}

// ----- shared state -----

/// One subscriber's shared part: the task, its handle and the publishers see it.
#[derive(Debug)]
struct SubShared {
    id: SubscriberId,
    /// Its topics, deduplicated.
    topics: Vec<String>,
    /// Their ids in the core, in the same order.
    topic_ids: Vec<TopicId>,
    /// Wakes the task: events arrived, a redrive, unsubscribe, shutdown.
    wake: Notify,
    /// The task waits for `wake` with nothing to do (read and written under the bus
    /// lock): publishers wake only idle subscribers.
    idle: AtomicBool,
    /// Stop before the next delivery (unsubscribed, or shutdown's grace is over).
    stopped: AtomicBool,
    /// A redrive was queued (set under the bus lock): a run of deliveries stops, so the
    /// redriven letters come first.
    redriven: AtomicBool,
    /// The task is gone (or decided to go, under the bus lock).
    finished: AtomicBool,
    finished_notify: Notify,
    abort: OnceLock<AbortHandle>,
    handled: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Its `tracing` events and metrics.
    observer: crate::observe::SubscriberObserver,
}

impl SubShared {
    async fn finished(&self) {
        loop {
            let mut notified = pin!(self.finished_notify.notified());
            notified.as_mut().enable();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
        self.finished_notify.notify_waiters();
    }
}

/// Marks the subscriber finished however its task ends (done, aborted, runtime gone).
struct FinishedGuard(Arc<SubShared>);

impl Drop for FinishedGuard {
    fn drop(&mut self) {
        self.0.mark_finished();
    }
}

/// What the mutex guards.
struct State<P> {
    bus: Bus<P>,
    /// The latest time handed to the core (never goes back).
    latest: Instant,
    closed: bool,
    /// Running subscribers by topic (indexed by [`TopicId`]), to wake on publish.
    by_topic: Vec<Vec<Arc<SubShared>>>,
    /// Every running subscriber.
    subscribers: Vec<Arc<SubShared>>,
    /// A publisher waits for space: the next settled delivery wakes the publishers.
    space_wanted: bool,
    /// What its subscribers' `tracing` events and metrics call the bus.
    name: Name,
}

impl<P: Clone> State<P> {
    fn forget(&mut self, me: &Arc<SubShared>) {
        self.subscribers.retain(|s| !Arc::ptr_eq(s, me));
        for topic in &me.topic_ids {
            if let Some(subs) = self.by_topic.get_mut(topic.0 as usize) {
                subs.retain(|s| !Arc::ptr_eq(s, me));
            }
        }
    }

    fn owed(&self, me: &SubShared) -> u64 {
        self.bus.lag_total(me.id)
    }
}

/// A deliberate defect of the adapter, for the mutants of the tokio harness
/// (`bus-tokio`, [`crate::bus::hosted`]): set only by them, never by a public
/// constructor.
#[cfg(feature = "hosted")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// None: the adapter as shipped.
    #[default]
    None,
    /// A subscriber task that, woken by shutdown while its handler runs, drops the
    /// event in hand (the handler's future with it) and ends, unsettled.
    DropInHandOnShutdown,
    /// A publish that acknowledges the event (with the topic's next seq) before it is
    /// enqueued for the subscribers, so an enqueue that finds the topic full drops it.
    AckBeforeEnqueue,
    /// A subscriber task that acknowledges an event whose handler failed, instead of
    /// handing it back for a retry.
    SkipRetryAfterError,
}

struct Inner<P> {
    #[cfg(feature = "hosted")]
    flaw: Flaw,
    state: Mutex<State<P>>,
    origin: ::tokio::time::Instant,
    /// The wall-clock time at `origin`.
    wall: crate::clock::Origin,
    /// Wakes publishers waiting for space (and, on shutdown, for the refusal).
    space: Notify,
}

impl<P> Inner<P> {
    fn clock(&self) -> Instant {
        crate::rt::now_since(self.origin)
    }

    /// The lock and the latest time, without reading the clock.
    fn lock(&self) -> (MutexGuard<'_, State<P>>, Instant) {
        let state = lock(&self.state);
        let now = state.latest;
        (state, now)
    }

    /// The lock and the clock's time (read before locking; never earlier than a time
    /// already handed to the core).
    fn lock_now(&self) -> (MutexGuard<'_, State<P>>, Instant) {
        let now = self.clock();
        let mut state = lock(&self.state);
        state.latest = state.latest.max(now);
        let now = state.latest;
        (state, now)
    }

    fn tokio_instant(&self, at: Instant) -> Option<::tokio::time::Instant> {
        crate::rt::tokio_instant(self.origin, at)
    }
}

// ----- the bus -----

/// A thread-safe event bus driven by tokio: a cheap-to-clone handle (clones share one
/// bus) around the sans-IO [`Bus`]. See the [module docs](self).
pub struct SharedBus<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for SharedBus<P> {
    fn clone(&self) -> Self {
        SharedBus {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P: Clone> fmt::Debug for SharedBus<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("SharedBus")
            .field("closed", &state.closed)
            .field("subscribers", &state.subscribers.len())
            .field("totals", &state.bus.totals())
            .finish_non_exhaustive()
    }
}

impl<P: Clone + Send + 'static> SharedBus<P> {
    /// An empty, open bus whose time origin is now (`tokio::time::Instant::now()`).
    ///
    /// Works outside a runtime too; to be driven by a paused test clock, build it inside
    /// the test's runtime.
    pub fn new(config: BusConfig) -> Self {
        let (origin, wall) = crate::rt::start();
        SharedBus {
            inner: Arc::new(Inner {
                #[cfg(feature = "hosted")]
                flaw: Flaw::None,
                state: Mutex::new(State {
                    bus: Bus::new(config),
                    latest: Instant::ZERO,
                    closed: false,
                    by_topic: Vec::new(),
                    subscribers: Vec::new(),
                    space_wanted: false,
                    name: crate::observe::UNNAMED,
                }),
                origin,
                wall,
                space: Notify::new(),
            }),
        }
    }

    /// A bus with a deliberate defect, for the tokio harness's mutants.
    #[cfg(feature = "hosted")]
    pub(crate) fn with_flaw(config: BusConfig, flaw: Flaw) -> Self {
        let bus = SharedBus::new(config);
        let inner = match Arc::try_unwrap(bus.inner) {
            Ok(inner) => inner,
            // Just built: nobody else holds it.
            Err(shared) => return SharedBus { inner: shared },
        };
        SharedBus {
            inner: Arc::new(Inner { flaw, ..inner }),
        }
    }

    /// The same bus under `name`: the `bus` field of its subscribers' `tracing` events
    /// and the `bus` label of their metrics (name it before subscribing: a subscriber
    /// takes the name it finds). Default: `unnamed`.
    #[must_use]
    pub fn named(self, name: Name) -> Self {
        lock(&self.inner.state).name = name;
        self
    }

    // ----- getters -----

    /// The time as the core sees it: nanoseconds since the bus was built.
    pub fn now(&self) -> Instant {
        self.inner.clock()
    }

    /// Where this bus's instants sit on the wall clock (read once, when it was built;
    /// later offsets come from tokio's clock): `origin().to_system_time(at)` is the
    /// [`SystemTime`](std::time::SystemTime) of any instant it reports (a [`DeadLetter`]'s `at`).
    pub fn origin(&self) -> crate::clock::Origin {
        self.inner.wall
    }

    /// The configuration.
    pub fn config(&self) -> BusConfig {
        *lock(&self.inner.state).bus.config()
    }

    /// The core's counters since the start.
    pub fn totals(&self) -> BusTotals {
        lock(&self.inner.state).bus.totals()
    }

    /// Events `topic` retains now.
    pub fn retained(&self, topic: &str) -> usize {
        lock(&self.inner.state).bus.retained(topic)
    }

    /// Subscriber tasks running (not unsubscribed, not finished).
    pub fn subscribers(&self) -> usize {
        lock(&self.inner.state).subscribers.len()
    }

    /// True once [`shutdown`](SharedBus::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.state).closed
    }

    // ----- publishing -----

    /// Publishes `payload` on `topic` now, or refuses at once (the error policy).
    ///
    /// # Errors
    ///
    /// [`PublishError::Full`] when the topic retains `capacity` events a subscriber
    /// still needs; [`PublishError::Closed`] after shutdown began.
    pub fn publish(&self, topic: &str, payload: P) -> Result<Published, PublishError> {
        let (mut state, now) = self.inner.lock_now();
        if state.closed {
            return Err(PublishError::Closed);
        }
        let (id, published) = match state.bus.publish_or_return(topic, payload, now) {
            Ok(accepted) => accepted,
            #[cfg(feature = "hosted")]
            Err(_full) if self.inner.flaw == Flaw::AckBeforeEnqueue => {
                return Ok(Published::Retained {
                    seq: state.bus.next_seq(topic),
                    subscribers: 0,
                });
            }
            Err((full, _payload)) => return Err(full.into()),
        };
        wake_topic(&state, id, published);
        Ok(published)
    }

    /// Publishes `payload` on `topic`, waiting for space while the topic is full (the
    /// wait policy: backpressure from the topic's slowest subscriber).
    ///
    /// Cancellation-safe: dropping the future before it completes publishes nothing and
    /// leaves nothing behind (the payload is dropped with it).
    ///
    /// Every refused attempt while waiting counts in [`BusTotals::full`]. A refused
    /// attempt hands the payload back, so waiting clones nothing.
    ///
    /// # Errors
    ///
    /// [`PublishError::Closed`] if the bus is, or gets, shut down before the event is
    /// published.
    pub async fn publish_wait(&self, topic: &str, payload: P) -> Result<Published, PublishError> {
        // Like tokio's own channels: a publisher that never has to wait still yields now
        // and then, so it cannot starve the subscribers sharing its thread.
        ::tokio::task::coop::consume_budget().await;
        let mut payload = payload;
        loop {
            match self.try_publish(topic, payload) {
                Attempt::Done(result) => return result,
                Attempt::Full(back) => payload = back,
            }
            // Full: register for a wake-up, then try once more (space may have freed in
            // between; a freeing after this try wakes the registration), then wait.
            let mut space = pin!(self.inner.space.notified());
            space.as_mut().enable();
            match self.try_publish(topic, payload) {
                Attempt::Done(result) => return result,
                Attempt::Full(back) => payload = back,
            }
            space.await;
        }
    }

    /// One publish attempt for [`publish_wait`](SharedBus::publish_wait): the payload
    /// comes back when the topic is full (and a publisher is then marked as waiting).
    fn try_publish(&self, topic: &str, payload: P) -> Attempt<P> {
        let (mut state, now) = self.inner.lock_now();
        if state.closed {
            return Attempt::Done(Err(PublishError::Closed));
        }
        match state.bus.publish_or_return(topic, payload, now) {
            Ok((id, published)) => {
                wake_topic(&state, id, published);
                Attempt::Done(Ok(published))
            }
            #[cfg(feature = "hosted")]
            Err(_full) if self.inner.flaw == Flaw::AckBeforeEnqueue => {
                Attempt::Done(Ok(Published::Retained {
                    seq: state.bus.next_seq(topic),
                    subscribers: 0,
                }))
            }
            Err((_full, payload)) => {
                state.space_wanted = true;
                Attempt::Full(payload)
            }
        }
    }

    // ----- subscribing -----

    /// Subscribes to `topics` from now on and spawns a task on the current tokio runtime
    /// that hands each event to `handler`, one at a time: `Ok` acknowledges it, `Err`
    /// (or a panic) fails it, to be retried after a backoff and dead-lettered after
    /// `attempts_max` attempts.
    ///
    /// The subscriber gets every event published on `topics` after this call, each
    /// topic's in order. Keep the returned handle to unsubscribe, read the dead letters
    /// or redrive them; dropping it leaves the subscription running.
    ///
    /// A panicking handler counts as a failure (its panic message still goes to the
    /// panic hook); the handler is called again for the next delivery, so it should not
    /// leave its own state broken when it panics.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] after shutdown began; [`SubscribeError::NoRuntime`]
    /// when not called within a tokio runtime.
    pub fn subscribe<F, Fut, E>(
        &self,
        topics: &[&str],
        handler: F,
    ) -> Result<SubscriptionHandle<P>, SubscribeError>
    where
        F: FnMut(Event<P>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let runtime =
            ::tokio::runtime::Handle::try_current().map_err(|_| SubscribeError::NoRuntime)?;
        let me = {
            let (mut state, now) = self.inner.lock_now();
            if state.closed {
                return Err(SubscribeError::Closed);
            }
            let id = state.bus.subscribe(topics, now);
            let mut names: Vec<String> = Vec::with_capacity(topics.len());
            let mut topic_ids: Vec<TopicId> = Vec::with_capacity(topics.len());
            for topic in topics {
                if !names.iter().any(|n| n == topic) {
                    names.push((*topic).to_string());
                    // Known: the subscribe just named it.
                    topic_ids.extend(state.bus.topic_id(topic));
                }
            }
            let me = Arc::new(SubShared {
                id,
                topics: names,
                topic_ids,
                wake: Notify::new(),
                idle: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                redriven: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                finished_notify: Notify::new(),
                abort: OnceLock::new(),
                handled: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
                last_error: Mutex::new(None),
                observer: crate::observe::SubscriberObserver::new(state.name, id.0),
            });
            for topic in &me.topic_ids {
                let i = topic.0 as usize;
                if state.by_topic.len() <= i {
                    state.by_topic.resize_with(i + 1, Vec::new);
                }
                state.by_topic[i].push(Arc::clone(&me));
            }
            state.subscribers.push(Arc::clone(&me));
            me
        };
        // The guard travels inside the task's future: however the task ends (even
        // dropped unpolled by a runtime shutting down), the subscriber is marked finished.
        let finished = FinishedGuard(Arc::clone(&me));
        let task = runtime.spawn(subscriber::run(
            Arc::clone(&self.inner),
            Arc::clone(&me),
            handler,
            finished,
        ));
        let _ = me.abort.set(task.abort_handle());
        Ok(SubscriptionHandle {
            inner: Arc::clone(&self.inner),
            me,
        })
    }

    // ----- shutdown -----

    /// Shuts the bus down gracefully: from now on every publish (and every waiting
    /// [`publish_wait`](SharedBus::publish_wait)) returns [`PublishError::Closed`] and
    /// new subscriptions are refused; each subscriber keeps going until it has handled
    /// or dead-lettered every event it is owed (waiting out pending retries; a redrive
    /// made meanwhile is delivered too); then its task ends. Resolves once every task
    /// has ended.
    ///
    /// Unbounded: a handler that never finishes keeps it waiting (see
    /// [`shutdown_timeout`](SharedBus::shutdown_timeout)). Do not await it from inside
    /// a handler (it would wait for itself). Calling it again, or concurrently, is
    /// harmless (a later call reports only the subscribers it waited for).
    pub async fn shutdown(&self) -> ShutdownReport {
        self.shutdown_until(None).await
    }

    /// Like [`shutdown`](SharedBus::shutdown), draining for at most `grace`: then every
    /// subscriber task still running is aborted (a handler in progress is dropped at its
    /// current await point, its event not acknowledged) and the report counts the
    /// events left owed.
    pub async fn shutdown_timeout(&self, grace: Duration) -> ShutdownReport {
        let deadline = ::tokio::time::Instant::now().checked_add(grace);
        self.shutdown_until(deadline).await
    }

    async fn shutdown_until(&self, deadline: Option<::tokio::time::Instant>) -> ShutdownReport {
        let subscribers = {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            state.subscribers.clone()
        };
        self.inner.space.notify_waiters();
        for sub in &subscribers {
            sub.wake.notify_one();
        }
        let all_finished = async {
            for sub in &subscribers {
                sub.finished().await;
            }
        };
        match deadline {
            None => all_finished.await,
            Some(deadline) => {
                if ::tokio::time::timeout_at(deadline, all_finished)
                    .await
                    .is_err()
                {
                    for sub in &subscribers {
                        sub.stopped.store(true, Ordering::Release);
                        if let Some(abort) = sub.abort.get() {
                            abort.abort();
                        }
                    }
                    for sub in &subscribers {
                        sub.finished().await;
                    }
                }
            }
        }
        let mut state = lock(&self.inner.state);
        for sub in &subscribers {
            state.forget(sub);
        }
        ShutdownReport {
            subscribers: subscribers.len(),
            owed: subscribers.iter().map(|s| state.owed(s)).sum(),
            dead_letters: subscribers
                .iter()
                .map(|s| state.bus.dead_letters(s.id).len())
                .sum(),
            totals: state.bus.totals(),
        }
    }
}

/// Typed helpers for a bus of bytes (`SharedBus<Arc<[u8]>>`, whose clones are cheap, or
/// `SharedBus<Vec<u8>>`): events as JSON.
impl<P> SharedBus<P>
where
    P: Clone + Send + AsRef<[u8]> + From<Vec<u8>> + 'static,
{
    /// Publishes `event` encoded as JSON, with the error policy (see
    /// [`publish`](SharedBus::publish)).
    ///
    /// # Errors
    ///
    /// [`JsonPublishError::Encode`] when `event` cannot be encoded;
    /// [`JsonPublishError::Publish`] when the bus refuses it.
    pub fn publish_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &T,
    ) -> Result<Published, JsonPublishError> {
        let bytes = serde_json::to_vec(event).map_err(JsonPublishError::Encode)?;
        Ok(self.publish(topic, P::from(bytes))?)
    }

    /// Publishes `event` encoded as JSON, waiting for space (see
    /// [`publish_wait`](SharedBus::publish_wait)).
    ///
    /// # Errors
    ///
    /// [`JsonPublishError::Encode`] when `event` cannot be encoded;
    /// [`JsonPublishError::Publish`] when the bus is shut down.
    pub async fn publish_json_wait<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &T,
    ) -> Result<Published, JsonPublishError> {
        let bytes = serde_json::to_vec(event).map_err(JsonPublishError::Encode)?;
        Ok(self.publish_wait(topic, P::from(bytes)).await?)
    }

    /// Like [`subscribe`](SharedBus::subscribe), decoding each payload from JSON into a
    /// `T` first. A payload that does not decode counts as a failed delivery: retried,
    /// then dead-lettered (the handler is not called), so nothing is dropped silently;
    /// the decode error shows in [`SubscriptionHandle::last_error`].
    ///
    /// # Errors
    ///
    /// As [`subscribe`](SharedBus::subscribe).
    pub fn subscribe_json<T, F, Fut, E>(
        &self,
        topics: &[&str],
        mut handler: F,
    ) -> Result<SubscriptionHandle<P>, SubscribeError>
    where
        T: DeserializeOwned + Send + 'static,
        F: FnMut(Event<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.subscribe(topics, move |event: Event<P>| {
            let Event {
                topic,
                seq,
                payload,
                attempt,
                redelivery,
                redriven,
            } = event;
            let call = serde_json::from_slice::<T>(payload.as_ref()).map(|payload| {
                handler(Event {
                    topic,
                    seq,
                    payload,
                    attempt,
                    redelivery,
                    redriven,
                })
            });
            async move {
                match call {
                    Ok(fut) => fut.await.map_err(JsonHandlerError::Handler),
                    Err(e) => Err(JsonHandlerError::Decode(e)),
                }
            }
        })
    }
}

/// What one publish attempt of [`SharedBus::publish_wait`] did.
enum Attempt<P> {
    Done(Result<Published, PublishError>),
    /// The topic is full: the payload, back.
    Full(P),
}

/// Wakes the idle subscribers of `topic` after a publish (under the lock).
fn wake_topic<P>(state: &State<P>, topic: TopicId, published: Published) {
    if let Published::Retained { .. } = published
        && let Some(subs) = state.by_topic.get(topic.0 as usize)
    {
        for sub in subs {
            if sub.idle.load(Ordering::Relaxed) {
                sub.idle.store(false, Ordering::Relaxed);
                sub.wake.notify_one();
            }
        }
    }
}

// ----- the subscription handle -----

/// A subscription made by [`SharedBus::subscribe`]. Dropping it does not unsubscribe.
pub struct SubscriptionHandle<P> {
    inner: Arc<Inner<P>>,
    me: Arc<SubShared>,
}

impl<P> fmt::Debug for SubscriptionHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionHandle")
            .field("id", &self.me.id)
            .field("topics", &self.me.topics)
            .field("finished", &self.me.finished.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl<P: Clone + Send + 'static> SubscriptionHandle<P> {
    /// The subscriber's id in the core.
    pub fn id(&self) -> SubscriberId {
        self.me.id
    }

    /// Its topics.
    pub fn topics(&self) -> &[String] {
        &self.me.topics
    }

    /// Its counters.
    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            handled: self.me.handled.load(Ordering::Relaxed),
            failed: self.me.failed.load(Ordering::Relaxed),
            panicked: self.me.panicked.load(Ordering::Relaxed),
        }
    }

    /// The last handler error (or decode error, or panic), as text.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.me.last_error).clone()
    }

    /// Events published on its topics that it has not acknowledged or dead-lettered
    /// yet (its lag); 0 once unsubscribed.
    pub fn owed(&self) -> u64 {
        let state = lock(&self.inner.state);
        state.owed(&self.me)
    }

    /// Its dead letters, oldest first (empty once unsubscribed: the core forgets them).
    pub fn dead_letters(&self) -> Vec<DeadLetter<P>> {
        lock(&self.inner.state)
            .bus
            .dead_letters(self.me.id)
            .to_vec()
    }

    /// Hands its dead letters back for delivery, before its new events; returns how
    /// many. A redriven letter that fails again is dead-lettered again (no retries).
    /// Returns 0 once the task has finished (nobody would deliver them).
    pub fn redrive(&self) -> usize {
        let n = {
            let mut state = lock(&self.inner.state);
            if self.me.finished.load(Ordering::Acquire) {
                return 0;
            }
            let n = state.bus.redrive(self.me.id);
            if n > 0 {
                self.me.redriven.store(true, Ordering::Release);
            }
            n
        };
        if n > 0 {
            self.me.wake.notify_one();
        }
        n
    }

    /// Stops delivery at once: the core forgets the subscriber (and releases what it
    /// retained for it, so waiting publishers may go on); the task stops before its next
    /// delivery. A handler already running finishes, but its outcome is ignored. Returns
    /// false if it was already unsubscribed.
    pub fn unsubscribe(&self) -> bool {
        let forgot = {
            let mut state = lock(&self.inner.state);
            self.me.stopped.store(true, Ordering::Release);
            state.forget(&self.me);
            state.space_wanted = false;
            state.bus.unsubscribe(self.me.id)
        };
        self.me.wake.notify_one();
        self.inner.space.notify_waiters();
        forgot
    }

    /// True once the subscriber's task has ended (unsubscribed, or shutdown).
    pub fn is_finished(&self) -> bool {
        self.me.finished.load(Ordering::Acquire)
    }

    /// Resolves once the subscriber's task has ended.
    pub async fn finished(&self) {
        self.me.finished().await;
    }
}
