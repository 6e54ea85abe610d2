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

use std::collections::HashMap;
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
    Bus, BusConfig, BusFull, BusTotals, DeadLetter, Delivery, DeliveryToken, Published,
    SubscriberId,
};
use crate::clock::Instant;

use crate::rt::lock;

// ----- errors -----

/// Why a publish was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Handler calls that returned `Ok` (the event was acknowledged).
    pub handled: u64,
    /// Handler calls that failed (returned `Err` or panicked): retried or dead-lettered.
    pub failed: u64,
    /// Of `failed`, the handler calls that panicked.
    pub panicked: u64,
}

/// What [`SharedBus::shutdown`] left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Wakes the task: events arrived, a redrive, unsubscribe, shutdown.
    wake: Notify,
    /// The task waits for `wake` with nothing to do (read and written under the bus
    /// lock): publishers wake only idle subscribers.
    idle: AtomicBool,
    /// Stop before the next delivery (unsubscribed, or shutdown's grace is over).
    stopped: AtomicBool,
    /// The task is gone (or decided to go, under the bus lock).
    finished: AtomicBool,
    finished_notify: Notify,
    abort: OnceLock<AbortHandle>,
    handled: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    last_error: Mutex<Option<String>>,
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
    /// Running subscribers by topic, to wake on publish.
    by_topic: HashMap<String, Vec<Arc<SubShared>>>,
    /// Every running subscriber.
    subscribers: Vec<Arc<SubShared>>,
    /// A publisher waits for space: the next settled delivery wakes the publishers.
    space_wanted: bool,
}

impl<P: Clone> State<P> {
    fn forget(&mut self, me: &Arc<SubShared>) {
        self.subscribers.retain(|s| !Arc::ptr_eq(s, me));
        for topic in &me.topics {
            if let Some(subs) = self.by_topic.get_mut(topic) {
                subs.retain(|s| !Arc::ptr_eq(s, me));
            }
        }
    }

    fn owed(&self, me: &SubShared) -> u64 {
        me.topics.iter().map(|t| self.bus.lag(me.id, t)).sum()
    }
}

struct Inner<P> {
    state: Mutex<State<P>>,
    origin: ::tokio::time::Instant,
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
        SharedBus {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    bus: Bus::new(config),
                    latest: Instant::ZERO,
                    closed: false,
                    by_topic: HashMap::new(),
                    subscribers: Vec::new(),
                    space_wanted: false,
                }),
                origin: ::tokio::time::Instant::now(),
                space: Notify::new(),
            }),
        }
    }

    // ----- getters -----

    /// The time as the core sees it: nanoseconds since the bus was built.
    pub fn now(&self) -> Instant {
        self.inner.clock()
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
        let published = state.bus.publish(topic, payload, now)?;
        wake_topic(&state, topic, published);
        Ok(published)
    }

    /// Publishes `payload` on `topic`, waiting for space while the topic is full (the
    /// wait policy: backpressure from the topic's slowest subscriber).
    ///
    /// Cancellation-safe: dropping the future before it completes publishes nothing and
    /// leaves nothing behind (the payload is dropped with it).
    ///
    /// Every refused attempt while waiting counts in [`BusTotals::full`]. While the
    /// topic is full each attempt clones the payload (the core consumes it even when it
    /// refuses), so prefer payloads that clone cheaply.
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
        if state.bus.retained(topic) < state.bus.config().capacity() {
            // Room for it: this publish cannot be refused, so the payload moves.
            let result = state.bus.publish(topic, payload, now);
            if let Ok(published) = result {
                wake_topic(&state, topic, published);
            }
            return Attempt::Done(result.map_err(PublishError::from));
        }
        // Full, unless settled events get trimmed first: try with a copy.
        match state.bus.publish(topic, payload.clone(), now) {
            Ok(published) => {
                wake_topic(&state, topic, published);
                Attempt::Done(Ok(published))
            }
            Err(_full) => {
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
            for topic in topics {
                if !names.iter().any(|n| n == topic) {
                    names.push((*topic).to_string());
                }
            }
            let me = Arc::new(SubShared {
                id,
                topics: names,
                wake: Notify::new(),
                idle: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                finished_notify: Notify::new(),
                abort: OnceLock::new(),
                handled: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
                last_error: Mutex::new(None),
            });
            for topic in &me.topics {
                state
                    .by_topic
                    .entry(topic.clone())
                    .or_default()
                    .push(Arc::clone(&me));
            }
            state.subscribers.push(Arc::clone(&me));
            me
        };
        // The guard travels inside the task's future: however the task ends (even
        // dropped unpolled by a runtime shutting down), the subscriber is marked finished.
        let finished = FinishedGuard(Arc::clone(&me));
        let task = runtime.spawn(run(
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

/// Adds one to a counter only its subscriber task writes (no atomic read-modify-write).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Wakes the idle subscribers of `topic` after a publish (under the lock).
fn wake_topic<P>(state: &State<P>, topic: &str, published: Published) {
    if let Published::Retained { .. } = published
        && let Some(subs) = state.by_topic.get(topic)
    {
        for sub in subs {
            if sub.idle.load(Ordering::Relaxed) {
                sub.idle.store(false, Ordering::Relaxed);
                sub.wake.notify_one();
            }
        }
    }
}

// ----- the subscriber task -----

/// What the task does next, decided under the lock.
enum Step<P> {
    Deliver(Delivery<P>, Arc<str>),
    /// Nothing to do: wait for a wake-up, or until this retry time.
    Wait(Option<Instant>),
    Exit,
}

/// The subscriber task's loop.
async fn run<P, F, Fut, E>(
    inner: Arc<Inner<P>>,
    me: Arc<SubShared>,
    mut handler: F,
    _finished: FinishedGuard,
) where
    P: Clone + Send + 'static,
    F: FnMut(Event<P>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display + 'static,
{
    // The last delivery's outcome, settled under the next lock.
    let mut settle: Option<(DeliveryToken, bool)> = None;
    // This subscriber's retries scheduled and not yet handed out.
    let mut retries_pending: u32 = 0;
    loop {
        let failed = matches!(settle, Some((_, false)));
        let (step, wake_publishers) = {
            let (mut state, now) = if failed || retries_pending > 0 {
                inner.lock_now()
            } else {
                inner.lock()
            };
            let mut wake_publishers = false;
            if let Some((token, ok)) = settle.take() {
                if ok {
                    state.bus.ack(&token, now);
                } else {
                    let before = state.bus.totals().retries;
                    state.bus.nack(&token, now);
                    if state.bus.totals().retries > before {
                        retries_pending += 1;
                    }
                }
                wake_publishers = std::mem::take(&mut state.space_wanted);
            }
            let step = next_step(&mut state, &me, now, &mut retries_pending);
            (step, wake_publishers)
        };
        if wake_publishers {
            inner.space.notify_waiters();
        }
        match step {
            Step::Exit => break,
            Step::Wait(None) => me.wake.notified().await,
            Step::Wait(Some(at)) => match inner.tokio_instant(at) {
                Some(deadline) => {
                    let _ = ::tokio::time::timeout_at(deadline, me.wake.notified()).await;
                }
                None => me.wake.notified().await,
            },
            Step::Deliver(delivery, topic) => {
                let token = delivery.token;
                let event = Event {
                    topic,
                    seq: delivery.seq,
                    payload: delivery.payload,
                    attempt: delivery.attempt,
                    redelivery: delivery.redelivery,
                    redriven: delivery.redriven,
                };
                let ok = match call_caught(&mut handler, event).await {
                    Some(Ok(())) => {
                        bump(&me.handled);
                        true
                    }
                    Some(Err(e)) => {
                        bump(&me.failed);
                        *lock(&me.last_error) = Some(e.to_string());
                        false
                    }
                    None => {
                        bump(&me.failed);
                        bump(&me.panicked);
                        *lock(&me.last_error) = Some("the handler panicked".to_string());
                        false
                    }
                };
                settle = Some((token, ok));
                // Yield now and then when handlers never wait, so a busy subscriber
                // cannot starve the tasks sharing its thread.
                ::tokio::task::coop::consume_budget().await;
            }
        }
    }
}

/// The subscriber's next step (under the lock).
fn next_step<P: Clone>(
    state: &mut State<P>,
    me: &SubShared,
    now: Instant,
    retries_pending: &mut u32,
) -> Step<P> {
    me.idle.store(false, Ordering::Relaxed);
    if me.stopped.load(Ordering::Acquire) || !state.bus.is_subscribed(me.id) {
        me.finished.store(true, Ordering::Release);
        return Step::Exit;
    }
    if let Some(delivery) = state.bus.next_delivery(me.id, now) {
        if delivery.attempt > 1 {
            *retries_pending = retries_pending.saturating_sub(1);
        }
        let name = state.bus.topic_arc(delivery.topic);
        return Step::Deliver(delivery, name);
    }
    // Full of dead letters: the core delivers nothing more until a redrive.
    let stuck = state.bus.dead_letters(me.id).len() >= state.bus.config().dead_letters_max();
    if state.closed && (*retries_pending == 0 || stuck) {
        // Drained (or cannot drain): the shutdown report counts what is left.
        me.finished.store(true, Ordering::Release);
        return Step::Exit;
    }
    me.idle.store(true, Ordering::Relaxed);
    if *retries_pending == 0 || stuck {
        return Step::Wait(None);
    }
    // Ours is not due (it would have been handed out): wait until the next retry of
    // the bus after now, ours or an earlier one of another subscriber.
    match state.bus.poll_timeout_after(now) {
        Some(at) => Step::Wait(Some(at)),
        None => {
            // No retry anywhere: the count was off; nothing to wait for but events.
            *retries_pending = 0;
            Step::Wait(None)
        }
    }
}

/// Calls `handler` and awaits its future, turning a panic (in the call or in a poll)
/// into `None`.
async fn call_caught<P, F, Fut, E>(handler: &mut F, event: Event<P>) -> Option<Result<(), E>>
where
    F: FnMut(Event<P>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let fut = catch_unwind(AssertUnwindSafe(|| handler(event))).ok()?;
    let mut fut = pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(result)) => Poll::Ready(Some(result)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_panic) => Poll::Ready(None),
        },
    )
    .await
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
            state.bus.redrive(self.me.id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ::tokio::sync::Semaphore;
    use ::tokio::time::{advance, sleep};
    use std::sync::atomic::AtomicU32;
    use tokio_test::{assert_pending, assert_ready, task};

    fn config(capacity: usize) -> BusConfig {
        BusConfig::builder()
            .capacity(capacity)
            .attempts_max(3)
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .build()
            .unwrap()
    }

    type Log = Arc<Mutex<Vec<(Arc<str>, u64, u64)>>>;

    /// A handler that records (topic, seq, payload).
    fn recorder(
        log: &Log,
    ) -> impl FnMut(Event<u64>) -> std::future::Ready<Result<(), String>> + Send + 'static {
        let log = Arc::clone(log);
        move |e| {
            log.lock().unwrap().push((e.topic, e.seq, e.payload));
            std::future::ready(Ok(()))
        }
    }

    fn payloads(log: &Log, topic: &str) -> Vec<u64> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| &**t == topic)
            .map(|(_, _, p)| *p)
            .collect()
    }

    type BoxedResult = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

    /// A handler that waits for a permit of `gate` per event, and records.
    fn gated(
        gate: &Arc<Semaphore>,
        log: &Log,
    ) -> impl FnMut(Event<u64>) -> BoxedResult + Send + 'static {
        let (gate, log) = (Arc::clone(gate), Arc::clone(log));
        move |e| {
            let (gate, log) = (Arc::clone(&gate), Arc::clone(&log));
            Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                log.lock().unwrap().push((e.topic, e.seq, e.payload));
                Ok(())
            })
        }
    }

    /// Lets every ready task run (the paused clock does not move).
    async fn settle() {
        for _ in 0..50 {
            ::tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_subscriber_gets_every_event_in_order() {
        let bus = SharedBus::new(config(16));
        let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
        let mut subs = Vec::new();
        for log in &logs[..2] {
            subs.push(bus.subscribe(&["a"], recorder(log)).unwrap());
        }
        subs.push(bus.subscribe(&["a", "b", "a"], recorder(&logs[2])).unwrap());
        assert_eq!(subs[2].topics(), ["a", "b"]);
        for i in 0..200 {
            bus.publish_wait("a", i).await.unwrap();
            if i % 3 == 0 {
                bus.publish_wait("b", 1_000 + i).await.unwrap();
            }
        }
        let report = bus.shutdown().await;
        assert_eq!(
            (report.subscribers, report.owed, report.dead_letters),
            (3, 0, 0)
        );
        let a: Vec<u64> = (0..200).collect();
        let b: Vec<u64> = (0..200).filter(|i| i % 3 == 0).map(|i| 1_000 + i).collect();
        for log in &logs {
            assert_eq!(payloads(log, "a"), a);
            // Seqs match positions too.
            let seqs: Vec<u64> = log
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _, _)| &**t == "a")
                .map(|(_, s, _)| *s)
                .collect();
            assert_eq!(seqs, a);
        }
        assert!(payloads(&logs[0], "b").is_empty());
        assert_eq!(payloads(&logs[2], "b"), b);
        for sub in &subs {
            assert!(sub.is_finished());
            assert_eq!(sub.stats().failed, 0);
        }
        let t = bus.totals();
        assert_eq!(t.published, 200 + b.len() as u64);
        assert_eq!(t.acked, 3 * 200 + b.len() as u64);
        // (The core trims settled events lazily: at most `capacity` linger.)
        assert!(bus.retained("a") <= 16);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_subscriber_does_not_block_a_fast_one_until_capacity() {
        let bus = SharedBus::new(config(8));
        let (fast_log, slow_log) = (Log::default(), Log::default());
        let fast = bus.subscribe(&["t"], recorder(&fast_log)).unwrap();
        let slow_inner = Arc::clone(&slow_log);
        let slow = bus
            .subscribe(&["t"], move |e: Event<u64>| {
                let log = Arc::clone(&slow_inner);
                async move {
                    sleep(Duration::from_secs(1)).await;
                    log.lock().unwrap().push((e.topic, e.seq, e.payload));
                    Ok::<(), String>(())
                }
            })
            .unwrap();
        for i in 0..8 {
            bus.publish("t", i).unwrap();
        }
        settle().await;
        assert_eq!(payloads(&fast_log, "t"), (0..8).collect::<Vec<_>>());
        assert!(slow_log.lock().unwrap().is_empty());
        assert_eq!((fast.owed(), slow.owed()), (0, 8));
        // At capacity, the slow one holds the publisher back.
        assert!(matches!(bus.publish("t", 8), Err(PublishError::Full(_))));
        let start = ::tokio::time::Instant::now();
        bus.publish_wait("t", 8).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "waited for one ack"
        );
        bus.shutdown().await;
        assert_eq!(payloads(&slow_log, "t"), (0..9).collect::<Vec<_>>());
        assert_eq!(payloads(&fast_log, "t"), (0..9).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn publish_wait_blocks_while_full_and_resumes_when_the_slow_subscriber_acks() {
        let bus = SharedBus::new(config(4));
        let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
        let _slow = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
        for i in 0..4 {
            assert!(matches!(
                bus.publish_wait("t", i).await,
                Ok(Published::Retained { seq, subscribers: 1 }) if seq == i
            ));
        }
        settle().await;
        let mut blocked = task::spawn(bus.publish_wait("t", 4));
        assert_pending!(blocked.poll());
        settle().await;
        assert!(!blocked.is_woken());
        assert_pending!(blocked.poll());
        assert_eq!(bus.retained("t"), 4);
        // The slow subscriber handles event 0: its ack frees a slot and wakes the publisher.
        gate.add_permits(1);
        settle().await;
        assert!(blocked.is_woken());
        let published = assert_ready!(blocked.poll()).unwrap();
        assert_eq!(
            published,
            Published::Retained {
                seq: 4,
                subscribers: 1
            }
        );
        gate.add_permits(100);
        bus.shutdown().await;
        assert_eq!(payloads(&log, "t"), (0..5).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_policy_returns_bus_full() {
        let bus = SharedBus::new(config(2));
        let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
        let _blocked = bus.subscribe(&["orders"], gated(&gate, &log)).unwrap();
        bus.publish("orders", 1).unwrap();
        bus.publish("orders", 2).unwrap();
        let err = bus.publish("orders", 3).unwrap_err();
        assert_eq!(
            err,
            PublishError::Full(BusFull {
                topic: "orders".to_string(),
                capacity: 2
            })
        );
        assert_eq!(
            err.to_string(),
            "bus full: topic `orders` retains 2 events that a subscriber still needs"
        );
        assert_eq!(bus.totals().full, 1);
        assert_eq!(bus.totals().published, 2);
        gate.add_permits(2);
        bus.shutdown().await;
        assert_eq!(payloads(&log, "orders"), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_then_dead_lettered_and_redrive_redelivers() {
        let bus = SharedBus::new(config(8));
        let fail = Arc::new(AtomicBool::new(true));
        // (seq, attempt, redriven, when)
        type Attempts = Arc<Mutex<Vec<(u64, u32, bool, Duration)>>>;
        let attempts: Attempts = Arc::default();
        let start = ::tokio::time::Instant::now();
        let sub = {
            let (fail, attempts) = (Arc::clone(&fail), Arc::clone(&attempts));
            bus.subscribe(&["t"], move |e: Event<u64>| {
                attempts
                    .lock()
                    .unwrap()
                    .push((e.seq, e.attempt, e.redriven, start.elapsed()));
                let failing = fail.load(Ordering::Relaxed);
                async move {
                    if failing {
                        Err(format!("smtp down for {}", e.payload))
                    } else {
                        Ok(())
                    }
                }
            })
            .unwrap()
        };
        bus.publish("t", 7).unwrap();
        // Three attempts (backoff at most 100 ms, then 200 ms), then a dead letter.
        sleep(Duration::from_secs(2)).await;
        let seen = attempts.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|a| (a.0, a.1)).collect::<Vec<_>>(),
            [(0, 1), (0, 2), (0, 3)]
        );
        assert_eq!(seen[0].3, Duration::ZERO);
        assert!(seen[1].3 <= Duration::from_millis(100), "{seen:?}");
        assert!(
            seen[2].3 - seen[1].3 <= Duration::from_millis(200),
            "{seen:?}"
        );
        let letters = sub.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            (letters[0].seq, letters[0].payload, letters[0].attempts),
            (0, 7, 3)
        );
        assert_eq!(sub.last_error().as_deref(), Some("smtp down for 7"));
        assert_eq!(
            sub.stats(),
            SubscriptionStats {
                handled: 0,
                failed: 3,
                panicked: 0
            }
        );
        assert_eq!(bus.retained("t"), 0, "settled by dead-lettering");
        let t = bus.totals();
        assert_eq!((t.retries, t.dead_lettered), (2, 1));

        // Fixed: the redrive delivers it once more, first.
        fail.store(false, Ordering::Relaxed);
        assert_eq!(sub.redrive(), 1);
        settle().await;
        assert!(sub.dead_letters().is_empty());
        let last = *attempts.lock().unwrap().last().unwrap();
        assert_eq!((last.0, last.1, last.2), (0, 1, true));
        assert_eq!(sub.stats().handled, 1);
        let report = bus.shutdown().await;
        assert_eq!((report.owed, report.dead_letters), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_of_one_subscriber_wait_for_their_own_time() {
        // Subscriber A fails once, then sits in a long handler; B's retry must not wait
        // for A to collect its due retry.
        let bus = SharedBus::new(
            BusConfig::builder()
                .capacity(8)
                .attempts_max(5)
                .backoff(Duration::from_millis(50), Duration::from_millis(50))
                .build()
                .unwrap(),
        );
        let a_calls = Arc::new(AtomicU32::new(0));
        let b_done: Arc<Mutex<Option<Duration>>> = Arc::default();
        let start = ::tokio::time::Instant::now();
        let _a = {
            let calls = Arc::clone(&a_calls);
            bus.subscribe(&["x", "y"], move |e: Event<u64>| {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    match (&*e.topic, n) {
                        ("x", 0) => Err("first try"),
                        ("y", _) => {
                            sleep(Duration::from_secs(60)).await;
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                }
            })
            .unwrap()
        };
        let _b = {
            let (done, tried) = (Arc::clone(&b_done), Arc::new(AtomicBool::new(false)));
            bus.subscribe(&["z"], move |_e: Event<u64>| {
                let first = !tried.swap(true, Ordering::Relaxed);
                let done = Arc::clone(&done);
                async move {
                    if first {
                        return Err("first try");
                    }
                    *done.lock().unwrap() = Some(start.elapsed());
                    Ok(())
                }
            })
            .unwrap()
        };
        bus.publish("x", 0).unwrap();
        bus.publish("y", 0).unwrap();
        settle().await;
        bus.publish("z", 0).unwrap();
        sleep(Duration::from_secs(1)).await;
        let b_at = b_done.lock().unwrap().expect("B's retry delivered");
        assert!(b_at <= Duration::from_millis(50), "{b_at:?}");
        bus.shutdown().await;
        assert_eq!(a_calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_counts_as_a_failure() {
        let bus = SharedBus::new(config(8));
        let sub = bus
            .subscribe(&["t"], |e: Event<u64>| {
                assert!(e.payload != 13, "unlucky");
                async move {
                    if e.payload == 14 {
                        panic!("also unlucky");
                    }
                    Ok::<(), String>(())
                }
            })
            .unwrap();
        for i in 12..16 {
            bus.publish("t", i).unwrap();
        }
        let report = bus.shutdown().await;
        assert_eq!((report.owed, report.dead_letters), (0, 2));
        assert_eq!(
            sub.stats(),
            SubscriptionStats {
                handled: 2,
                failed: 6,
                panicked: 6
            }
        );
        let dead: Vec<u64> = sub.dead_letters().iter().map(|l| l.payload).collect();
        assert_eq!(dead, [13, 14]);
    }

    #[tokio::test(start_paused = true)]
    async fn unsubscribe_stops_delivery_at_once() {
        let bus = SharedBus::new(config(8));
        let (gate, log) = (Arc::new(Semaphore::new(1)), Log::default());
        let sub = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
        for i in 0..5 {
            bus.publish("t", i).unwrap();
        }
        settle().await;
        // Event 0 handled; event 1 is in the handler, waiting at the gate.
        assert_eq!(payloads(&log, "t"), [0]);
        assert_eq!(bus.retained("t"), 4);
        assert!(sub.unsubscribe());
        assert!(!sub.unsubscribe());
        assert_eq!(bus.retained("t"), 0, "released at once");
        assert_eq!(bus.subscribers(), 0);
        // The handler in progress finishes; nothing after it is delivered.
        gate.add_permits(10);
        sub.finished().await;
        assert_eq!(payloads(&log, "t"), [0, 1]);
        assert_eq!(bus.totals().acked, 1, "the late ack is ignored");
        assert_eq!(bus.publish("t", 5).unwrap(), Published::DeadEvent);
        settle().await;
        assert_eq!(payloads(&log, "t"), [0, 1]);
        assert_eq!(sub.owed(), 0);
        assert_eq!(sub.redrive(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unsubscribing_the_slow_subscriber_frees_a_waiting_publisher() {
        let bus = SharedBus::new(config(2));
        let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
        let slow = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
        bus.publish("t", 0).unwrap();
        bus.publish("t", 1).unwrap();
        let mut blocked = task::spawn(bus.publish_wait("t", 2));
        assert_pending!(blocked.poll());
        slow.unsubscribe();
        assert!(blocked.is_woken());
        assert_eq!(assert_ready!(blocked.poll()), Ok(Published::DeadEvent));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_everything_owed() {
        let bus = SharedBus::new(config(1_024));
        let log = Log::default();
        let flaky_log = Log::default();
        let slow = {
            let log = Arc::clone(&log);
            bus.subscribe(&["t"], move |e: Event<u64>| {
                let log = Arc::clone(&log);
                async move {
                    sleep(Duration::from_millis(10)).await;
                    log.lock().unwrap().push((e.topic, e.seq, e.payload));
                    Ok::<(), String>(())
                }
            })
            .unwrap()
        };
        let flaky = {
            let log = Arc::clone(&flaky_log);
            bus.subscribe(&["t"], move |e: Event<u64>| {
                let log = Arc::clone(&log);
                async move {
                    if e.attempt == 1 {
                        return Err("transient".to_string());
                    }
                    log.lock().unwrap().push((e.topic, e.seq, e.payload));
                    Ok(())
                }
            })
            .unwrap()
        };
        for i in 0..50 {
            bus.publish("t", i).unwrap();
        }
        let report = bus.shutdown().await;
        assert_eq!(report.subscribers, 2);
        assert_eq!((report.owed, report.dead_letters), (0, 0));
        let all: Vec<u64> = (0..50).collect();
        assert_eq!(payloads(&log, "t"), all);
        assert_eq!(payloads(&flaky_log, "t"), all);
        assert_eq!(
            flaky.stats(),
            SubscriptionStats {
                handled: 50,
                failed: 50,
                panicked: 0
            }
        );
        assert!(slow.is_finished() && flaky.is_finished());
        assert_eq!(bus.publish("t", 99), Err(PublishError::Closed));
        assert_eq!(bus.publish_wait("t", 99).await, Err(PublishError::Closed));
        assert!(bus.is_closed());
        assert_eq!(
            bus.subscribe(&["t"], recorder(&log)).unwrap_err(),
            SubscribeError::Closed
        );
        assert_eq!(bus.subscribers(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_tells_waiting_publishers_the_bus_closed_and_still_drains() {
        let bus = SharedBus::new(config(2));
        let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
        let _sub = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
        bus.publish("t", 0).unwrap();
        bus.publish("t", 1).unwrap();
        let mut waiting = task::spawn(bus.publish_wait("t", 2));
        assert_pending!(waiting.poll());
        let shutdown = ::tokio::spawn({
            let bus = bus.clone();
            async move { bus.shutdown().await }
        });
        settle().await;
        assert!(waiting.is_woken());
        assert_eq!(assert_ready!(waiting.poll()), Err(PublishError::Closed));
        assert!(!shutdown.is_finished(), "still draining");
        gate.add_permits(2);
        let report = shutdown.await.unwrap();
        assert_eq!((report.subscribers, report.owed), (1, 0));
        assert_eq!(payloads(&log, "t"), [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_timeout_aborts_a_stuck_subscriber_and_reports_what_is_owed() {
        let bus = SharedBus::new(config(8));
        let (gate, log) = (Arc::new(Semaphore::new(1)), Log::default());
        let stuck = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
        let fine_log = Log::default();
        let _fine = bus.subscribe(&["t"], recorder(&fine_log)).unwrap();
        for i in 0..4 {
            bus.publish("t", i).unwrap();
        }
        let start = ::tokio::time::Instant::now();
        let report = bus.shutdown_timeout(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(report.subscribers, 2);
        assert_eq!(report.owed, 3, "events 1 to 3 never acknowledged");
        assert!(stuck.is_finished());
        assert_eq!(payloads(&log, "t"), [0]);
        assert_eq!(payloads(&fine_log, "t"), [0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_publish_wait_leaves_nothing_behind() {
        let bus = SharedBus::new(config(1));
        let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
        let _sub = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
        bus.publish("t", 0).unwrap();
        settle().await;
        let mut cancelled = task::spawn(bus.publish_wait("t", 666));
        assert_pending!(cancelled.poll());
        drop(cancelled);
        let t = bus.totals();
        assert_eq!(t.published, 1);
        assert!(t.full >= 1, "refused attempts are counted");
        assert_eq!(bus.retained("t"), 1);
        // Space frees; nothing of the cancelled call shows up.
        gate.add_permits(10);
        settle().await;
        assert_eq!(bus.retained("t"), 0);
        bus.publish_wait("t", 1).await.unwrap();
        bus.shutdown().await;
        assert_eq!(payloads(&log, "t"), [0, 1]);
        assert_eq!(bus.totals().published, 2);
        // Also when dropped mid-flight by a timeout.
        let bus = SharedBus::new(config(1));
        let _blocked = bus.subscribe(&["t"], gated(&gate, &Log::default()));
        let gate_off = Arc::new(Semaphore::new(0));
        let _never = bus
            .subscribe(&["t"], gated(&gate_off, &Log::default()))
            .unwrap();
        bus.publish("t", 0).unwrap();
        let timed_out =
            ::tokio::time::timeout(Duration::from_secs(1), bus.publish_wait("t", 1)).await;
        assert!(timed_out.is_err());
        assert_eq!((bus.totals().published, bus.retained("t")), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn events_nobody_subscribes_to_are_counted_as_dead_events() {
        let bus: SharedBus<u64> = SharedBus::new(config(4));
        assert_eq!(bus.publish("nobody", 1), Ok(Published::DeadEvent));
        assert_eq!(
            bus.publish_wait("nobody", 2).await,
            Ok(Published::DeadEvent)
        );
        let log = Log::default();
        let _sub = bus.subscribe(&["somebody"], recorder(&log)).unwrap();
        assert_eq!(bus.publish("nobody", 3), Ok(Published::DeadEvent));
        let t = bus.totals();
        assert_eq!((t.dead_events, t.published), (3, 0));
        assert_eq!(bus.retained("nobody"), 0);
        bus.shutdown().await;
        assert!(log.lock().unwrap().is_empty());
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OrderCreated {
        id: u32,
        total_cents: u64,
    }

    #[tokio::test(start_paused = true)]
    async fn json_events_round_trip_and_undecodable_ones_are_dead_lettered() {
        let bus: SharedBus<Arc<[u8]>> = SharedBus::new(config(8));
        let got: Arc<Mutex<Vec<(u64, OrderCreated)>>> = Arc::default();
        let sub = {
            let got = Arc::clone(&got);
            bus.subscribe_json(&["orders"], move |e: Event<OrderCreated>| {
                got.lock().unwrap().push((e.seq, e.payload));
                async { Ok::<(), String>(()) }
            })
            .unwrap()
        };
        let order = OrderCreated {
            id: 1,
            total_cents: 4_200,
        };
        bus.publish_json("orders", &order).unwrap();
        bus.publish("orders", Arc::from(&b"not json"[..])).unwrap();
        bus.publish_json_wait(
            "orders",
            &OrderCreated {
                id: 2,
                ..order.clone()
            },
        )
        .await
        .unwrap();
        bus.shutdown().await;
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (0, order));
        assert_eq!(got[1].0, 2);
        let letters = sub.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            (letters[0].seq, &*letters[0].payload),
            (1, &b"not json"[..])
        );
        assert!(
            sub.last_error()
                .unwrap()
                .starts_with("cannot decode the event")
        );
        // Vec<u8> works too.
        let bytes: SharedBus<Vec<u8>> = SharedBus::new(config(8));
        assert_eq!(bytes.publish_json("x", &1u8).unwrap(), Published::DeadEvent);
    }

    #[tokio::test(start_paused = true)]
    async fn time_is_driven_by_the_paused_clock() {
        let bus: SharedBus<u64> = SharedBus::new(config(4));
        assert_eq!(bus.now(), Instant::ZERO);
        advance(Duration::from_millis(1_500)).await;
        assert_eq!(bus.now(), Instant::from_millis(1_500));
    }

    #[test]
    fn subscribing_outside_a_runtime_is_an_error_not_a_panic() {
        let bus: SharedBus<u64> = SharedBus::new(config(4));
        let err = bus
            .subscribe(&["t"], |_e| async { Ok::<(), String>(()) })
            .unwrap_err();
        assert_eq!(err, SubscribeError::NoRuntime);
        assert_eq!(bus.publish("t", 1), Ok(Published::DeadEvent));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poisoned_lock_does_not_panic() {
        let bus = SharedBus::new(config(4));
        let log = Log::default();
        let _sub = bus.subscribe(&["t"], recorder(&log)).unwrap();
        let poisoner = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _guard = bus.inner.state.lock().unwrap();
            panic!("poisoning the bus's lock");
        }));
        assert!(poisoner.is_err());
        assert!(bus.inner.state.is_poisoned());
        bus.publish("t", 1).unwrap();
        bus.publish_wait("t", 2).await.unwrap();
        let report = bus.shutdown().await;
        assert_eq!(report.owed, 0);
        assert_eq!(payloads(&log, "t"), [1, 2]);
        assert!(format!("{bus:?}").starts_with("SharedBus"));
    }

    #[test]
    fn a_subscriber_whose_runtime_is_gone_counts_as_finished() {
        let bus: SharedBus<u64> = SharedBus::new(config(4));
        let runtime = ::tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sub = runtime
            .block_on(async { bus.subscribe(&["t"], |_e| async { Ok::<(), String>(()) }) })
            .unwrap();
        drop(runtime);
        assert!(sub.is_finished());
    }

    #[test]
    fn send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedBus<u64>>();
        assert_send_sync::<SubscriptionHandle<Arc<[u8]>>>();
        fn assert_send<T: Send>(_: &T) {}
        let bus: SharedBus<String> = SharedBus::new(config(4));
        assert_send(&bus.publish_wait("t", String::new()));
        assert_send(&bus.shutdown());
    }

    #[test]
    fn many_publishers_and_subscribers_across_threads_lose_nothing() {
        const PUBLISHERS: u64 = 3;
        const EVENTS: u64 = 2_000;
        let runtime = ::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Real time here: short retry backoffs.
            let bus = SharedBus::new(
                BusConfig::builder()
                    .capacity(8)
                    .backoff(Duration::from_micros(100), Duration::from_millis(1))
                    .build()
                    .unwrap(),
            );
            let logs: Vec<Log> = (0..4).map(|_| Log::default()).collect();
            let subs: Vec<_> = logs
                .iter()
                .enumerate()
                .map(|(k, log)| {
                    let log = Arc::clone(log);
                    bus.subscribe(&["t"], move |e: Event<u64>| {
                        log.lock().unwrap().push((e.topic, e.seq, e.payload));
                        async move {
                            if k == 0 {
                                ::tokio::task::yield_now().await;
                            }
                            if k == 1 && e.payload.is_multiple_of(97) && e.attempt == 1 {
                                return Err("retry me");
                            }
                            Ok(())
                        }
                    })
                    .unwrap()
                })
                .collect();
            let publishers: Vec<_> = (0..PUBLISHERS)
                .map(|p| {
                    let bus = bus.clone();
                    ::tokio::spawn(async move {
                        for i in 0..EVENTS {
                            bus.publish_wait("t", p * 1_000_000 + i).await.unwrap();
                        }
                    })
                })
                .collect();
            for p in publishers {
                p.await.unwrap();
            }
            let report = bus.shutdown().await;
            assert_eq!((report.owed, report.dead_letters), (0, 0));
            for (k, log) in logs.iter().enumerate() {
                let log = log.lock().unwrap();
                // Every event; seqs in order (retries repeat a seq); each publisher's
                // events in its order.
                let mut seqs: Vec<u64> = log.iter().map(|(_, s, _)| *s).collect();
                assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "subscriber {k}");
                seqs.dedup();
                assert_eq!(seqs, (0..PUBLISHERS * EVENTS).collect::<Vec<_>>());
                for p in 0..PUBLISHERS {
                    let mut mine: Vec<u64> = log
                        .iter()
                        .map(|(_, _, v)| *v)
                        .filter(|v| v / 1_000_000 == p)
                        .collect();
                    mine.dedup();
                    assert_eq!(mine.len() as u64, EVENTS);
                    assert!(mine.windows(2).all(|w| w[0] < w[1]));
                }
            }
            let multiples = (0..PUBLISHERS)
                .flat_map(|p| (0..EVENTS).map(move |i| p * 1_000_000 + i))
                .filter(|v| v.is_multiple_of(97))
                .count() as u64;
            assert_eq!(subs[1].stats().failed, multiples);
            assert_eq!(bus.totals().acked, 4 * PUBLISHERS * EVENTS);
        });
    }
}
