//! The subscriber task: one per subscription, it takes the next delivery from the core
//! under the lock, runs the handler outside it (a panic is a failed delivery), and acks
//! or nacks what the handler did.
//!
//! # Runs
//!
//! A handler that finishes at once (its future is ready at the first poll, as most
//! in-memory handlers are) would otherwise cost a lock round trip per event. So when the
//! last handler call finished at once, the task takes, with the next delivery and under
//! the same lock, copies of the events that would follow it (the events after it on its
//! topic: only for a subscriber of one topic, with no redrive queued; at most
//! [`RUN_MAX`]), and calls the handler on each in turn without the lock. It puts the core
//! where it would have been had it locked before each call ([`sync`]) as soon as
//! anything but a finished-at-once success happens, before anything else can look:
//!
//! - a handler call that returns pending (before the task yields) or fails: its event is
//!   handed out (the ones before it settled as handled), then it goes on as any
//!   delivery;
//! - the coop budget running out (the task is about to yield), an unsubscribe or a
//!   redrive (checked before each call), or the end of the run: the last handled event
//!   is put in hand, done, and the loop settles it and asks for the next step.
//!
//! The decisions are still the subscriber core's ([`Loop`]): [`sync`] settles the
//! delivery the run follows and hands out the run's last event through it, and
//! acknowledges the events in between as it decides for a handled first attempt (hand
//! out, then acknowledge; its own state unchanged). On a current-thread runtime nothing but the handler
//! itself can see the difference (no other task runs between two calls of a run); a
//! handler that reads its own subscription's lag, or publishes on its own topic, may see
//! the run's earlier events still unacknowledged (they are, until the run syncs).

use super::*;
use crate::bus::subscriber::{BusParts, Loop, Outcome, Parts, Settled, Status, Step};
use crate::observe;

/// Most events a run takes after the delivery it follows.
const RUN_MAX: usize = 63;

/// Adds one to a counter only its subscriber task writes (no atomic read-modify-write).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Where the subscriber stands, under the lock.
fn status_of<P>(state: &State<P>, me: &SubShared) -> Status
where
    P: Clone,
{
    if me.stopped.load(Ordering::Acquire) || !state.bus.is_subscribed(me.id) {
        Status::Gone
    } else if state.closed {
        Status::Closing
    } else {
        Status::Open
    }
}

/// Settles what the core holds finished, if anything, and tells the observer about the
/// delivery `in_hand` (topic, seq, attempt). True when something was settled.
fn settle_observed<P: Clone>(
    core: &mut Loop<DeliveryToken>,
    bus: &mut Bus<P>,
    me: &SubShared,
    now: Instant,
    in_hand: Option<(&str, u64, u32)>,
) -> bool {
    let mut parts = BusParts { bus, id: me.id };
    let settled = core.settle(&mut parts, now);
    if let (Some(settled), Some((topic, seq, attempt))) = (settled, in_hand) {
        let settled = match settled {
            Settled {
                outcome: Outcome::Handled,
                ..
            } => observe::Settled::Handled,
            Settled { retry: true, .. } => observe::Settled::Retried,
            Settled { retry: false, .. } => observe::Settled::DeadLettered,
        };
        me.observer.settled(topic, seq, attempt, settled, || {
            (
                parts.bus.lag_total(me.id),
                parts.bus.dead_letters(me.id).len(),
            )
        });
    }
    settled.is_some()
}

/// One event of a run, as the subscriber core reaches the bus: its "next delivery" is
/// event `seq` of `topic` (handed out without cloning: the run has its payload).
struct RunParts<'a, P> {
    bus: &'a mut Bus<P>,
    id: SubscriberId,
    topic: TopicId,
    seq: u64,
}

impl<P: Clone> Parts for RunParts<'_, P> {
    type Token = DeliveryToken;
    type Delivery = DeliveryToken;

    fn token(delivery: &DeliveryToken) -> (DeliveryToken, u32) {
        (*delivery, 1)
    }
    fn next_delivery(&mut self, _now: Instant) -> Option<DeliveryToken> {
        self.bus.hand_out(self.id, self.topic, self.seq)
    }
    fn ack(&mut self, token: &DeliveryToken, now: Instant) {
        self.bus.ack(token, now);
    }
    fn nack(&mut self, token: &DeliveryToken, now: Instant) -> bool {
        BusParts {
            bus: &mut *self.bus,
            id: self.id,
        }
        .nack(token, now)
    }
    fn stuck(&self) -> bool {
        self.bus.dead_letters(self.id).len() >= self.bus.config().dead_letters_max()
    }
    fn next_retry_after(&self, now: Instant) -> Option<Instant> {
        self.bus.poll_timeout_after(now)
    }
}

/// Puts the core where the task would have left it had it locked before each handler
/// call of a run: settles what is finished in hand (the delivery the run follows), then
/// the run's first `n` events (seqs `first`, `first + 1`, ... of `topic`) in turn: each
/// but the last handed out and acknowledged (what the subscriber core decides for a
/// handled first attempt while the subscriber is not gone: deliver it, then settle it as
/// handled, leaving its own state as it was), the last handed out by the core, to stay
/// in hand for its caller to report done. False when the core handed out none (the
/// subscriber is gone: the run's outcomes are ignored, as a gone subscriber's are).
#[allow(clippy::too_many_arguments)]
fn sync<P: Clone>(
    inner: &Inner<P>,
    me: &SubShared,
    core: &mut Loop<DeliveryToken>,
    in_hand: &mut Option<(Arc<str>, u64, u32)>,
    topic: &Arc<str>,
    topic_id: TopicId,
    first: u64,
    n: u64,
) -> bool {
    let (handed, wake_publishers) = {
        let (mut state, now) = if core.needs_clock() {
            inner.lock_now()
        } else {
            inner.lock()
        };
        let status = status_of(&state, me);
        let state = &mut *state;
        let hand = in_hand.take();
        let settled = settle_observed(
            core,
            &mut state.bus,
            me,
            now,
            hand.as_ref().map(|(t, s, a)| (&**t, *s, *a)),
        );
        let last = first + n - 1;
        let handed = status != Status::Gone && {
            let acked = state.bus.ack_run(me.id, topic_id, first, n - 1, now);
            let bus = &state.bus;
            me.observer.handled_run(topic, first, acked, || {
                (bus.lag_total(me.id), bus.dead_letters(me.id).len())
            });
            let mut parts = RunParts {
                bus: &mut state.bus,
                id: me.id,
                topic: topic_id,
                seq: last,
            };
            // Not handed out: only if the cursor were elsewhere, which the run's
            // conditions rule out (the event would then be delivered again later).
            acked == n - 1 && matches!(core.next(&mut parts, status, now), Step::Deliver(_))
        };
        debug_assert!(
            handed || status == Status::Gone,
            "a run's event not handed out"
        );
        if handed {
            *in_hand = Some((Arc::clone(topic), last, 1));
        }
        let settled = settled || (handed && n > 1);
        (handed, settled && std::mem::take(&mut state.space_wanted))
    };
    if wake_publishers {
        inner.space.notify_waiters();
    }
    handed
}

/// The outcome of a handler call, counted in the subscriber's stats.
fn outcome_of<P, E: fmt::Display>(
    inner: &Inner<P>,
    me: &SubShared,
    result: Option<Result<(), E>>,
) -> Outcome {
    #[cfg(not(feature = "hosted"))]
    let _ = inner;
    match result {
        Some(Ok(())) => {
            bump(&me.handled);
            Outcome::Handled
        }
        Some(Err(e)) => {
            bump(&me.failed);
            *lock(&me.last_error) = Some(e.to_string());
            #[cfg(feature = "hosted")]
            if inner.flaw == Flaw::SkipRetryAfterError {
                // The defect: a failed event acknowledged, never retried.
                return Outcome::Handled;
            }
            Outcome::Failed
        }
        None => {
            bump(&me.failed);
            bump(&me.panicked);
            *lock(&me.last_error) = Some("the handler panicked".to_string());
            Outcome::Failed
        }
    }
}

// ----- the subscriber task -----

/// The subscriber task's loop: a driver of the verified subscriber core
/// ([`Loop`](crate::bus::subscriber::Loop)). Under the lock it settles the last outcome
/// and asks the core for the next step; outside it, it carries the step out (run the
/// handler, wait for a wake-up or until the time asked, or end). See the
/// [module docs](self) for the runs of handlers that finish at once.
pub(super) async fn run<P, F, Fut, E>(
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
    let mut core: Loop<DeliveryToken> = Loop::new();
    // The topic, seq and attempt of the delivery in hand, for its settlement's event.
    let mut in_hand: Option<(Arc<str>, u64, u32)> = None;
    // The payloads of the events after the delivery in hand, for a run.
    let mut ahead: Vec<P> = Vec::new();
    // The last handler call finished at its first poll: worth taking a run.
    let mut quick = false;
    #[cfg(feature = "hosted")]
    let runs = inner.flaw == Flaw::None;
    #[cfg(not(feature = "hosted"))]
    let runs = true;
    loop {
        let (step, wake_publishers) = {
            let (mut state, now) = if core.needs_clock() {
                inner.lock_now()
            } else {
                inner.lock()
            };
            let status = status_of(&state, &me);
            let state = &mut *state;
            let had_outcome = core.is_busy();
            let hand = in_hand.take();
            settle_observed(
                &mut core,
                &mut state.bus,
                &me,
                now,
                hand.as_ref().map(|(t, s, a)| (&**t, *s, *a)),
            );
            let mut parts = BusParts {
                bus: &mut state.bus,
                id: me.id,
            };
            let step = core.next(&mut parts, status, now);
            me.idle
                .store(matches!(step, Step::Wait(_)), Ordering::Relaxed);
            let step = match step {
                Step::Deliver(delivery) => {
                    let topic = state.bus.topic_arc(delivery.topic);
                    if runs
                        && quick
                        && delivery.attempt == 1
                        && !delivery.redriven
                        && !delivery.redelivery
                        && !core.needs_clock()
                    {
                        me.redriven.store(false, Ordering::Release);
                        state.bus.peek_after(&delivery.token, RUN_MAX, &mut ahead);
                    }
                    Step::Deliver((delivery, topic))
                }
                Step::Wait(at) => Step::Wait(at),
                Step::Exit => {
                    me.finished.store(true, Ordering::Release);
                    Step::Exit
                }
            };
            let wake_publishers = had_outcome && std::mem::take(&mut state.space_wanted);
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
            Step::Deliver((delivery, topic)) => {
                let first = delivery.seq + 1;
                let topic_id = delivery.topic;
                in_hand = Some((Arc::clone(&topic), delivery.seq, delivery.attempt));
                let event = Event {
                    topic: Arc::clone(&topic),
                    seq: delivery.seq,
                    payload: delivery.payload,
                    attempt: delivery.attempt,
                    redelivery: delivery.redelivery,
                    redriven: delivery.redriven,
                };
                let call = call_caught(&mut handler, event);
                #[cfg(feature = "hosted")]
                let result = if inner.flaw == Flaw::DropInHandOnShutdown {
                    quick = false;
                    match unless_shut_down(&inner, &me, call).await {
                        Some(result) => result,
                        // The defect: the event in hand is dropped, unsettled.
                        None => break,
                    }
                } else {
                    first_poll(call, &mut quick).await
                };
                #[cfg(not(feature = "hosted"))]
                let result = first_poll(call, &mut quick).await;
                let outcome = outcome_of(&inner, &me, result);
                core.done(outcome);
                if outcome == Outcome::Handled && !ahead.is_empty() {
                    // A run: the events after it, while their handler calls finish at once.
                    let mut called: u64 = 0;
                    for payload in ahead.drain(..) {
                        if me.stopped.load(Ordering::Acquire)
                            || me.redriven.load(Ordering::Acquire)
                            || !::tokio::task::coop::has_budget_remaining()
                        {
                            break;
                        }
                        // The yield point after the previous call (never yields here).
                        ::tokio::task::coop::consume_budget().await;
                        let seq = first + called;
                        let event = Event {
                            topic: Arc::clone(&topic),
                            seq,
                            payload,
                            attempt: 1,
                            redelivery: false,
                            redriven: false,
                        };
                        let mut call = pin!(call_caught(&mut handler, event));
                        // Some(handed out) once synced: at the first poll, unless that
                        // poll finished it successfully.
                        let mut synced: Option<bool> = None;
                        let result = poll_fn(|cx| {
                            let polled = call.as_mut().poll(cx);
                            if synced.is_none() && !matches!(polled, Poll::Ready(Some(Ok(())))) {
                                quick = polled.is_ready();
                                synced = Some(sync(
                                    &inner,
                                    &me,
                                    &mut core,
                                    &mut in_hand,
                                    &topic,
                                    topic_id,
                                    first,
                                    called + 1,
                                ));
                            }
                            polled
                        })
                        .await;
                        match synced {
                            None => {
                                bump(&me.handled);
                                called += 1;
                            }
                            Some(handed) => {
                                if !handed {
                                    in_hand = None;
                                }
                                let outcome = outcome_of(&inner, &me, result);
                                core.done(outcome);
                                called = 0;
                                break;
                            }
                        }
                    }
                    if called > 0 {
                        // The last handled event goes in hand, done; the loop settles it.
                        if sync(
                            &inner,
                            &me,
                            &mut core,
                            &mut in_hand,
                            &topic,
                            topic_id,
                            first,
                            called,
                        ) {
                            core.done(Outcome::Handled);
                        } else {
                            in_hand = None;
                        }
                    }
                }
                ahead.clear();
                // Yield now and then when handlers never wait, so a busy subscriber
                // cannot starve the tasks sharing its thread.
                ::tokio::task::coop::consume_budget().await;
            }
        }
    }
}

/// Awaits `call` (polled exactly as `.await` would), setting `quick` to whether it
/// finished at its first poll.
async fn first_poll<T>(call: impl Future<Output = T>, quick: &mut bool) -> T {
    let mut call = pin!(call);
    let mut first = true;
    poll_fn(|cx| {
        let polled = call.as_mut().poll(cx);
        if first {
            first = false;
            *quick = polled.is_ready();
        }
        polled
    })
    .await
}

/// The mutant [`Flaw::DropInHandOnShutdown`]: awaits `call` unless a wake-up finds the
/// bus shut down first (then `None`, the call dropped at its await point).
#[cfg(feature = "hosted")]
async fn unless_shut_down<P, T>(
    inner: &Inner<P>,
    me: &SubShared,
    call: impl Future<Output = T>,
) -> Option<T> {
    let mut call = pin!(call);
    loop {
        let mut wake = pin!(me.wake.notified());
        let done = poll_fn(|cx| {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            match wake.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match done {
            Some(result) => return Some(result),
            None if lock(&inner.state).closed => return None,
            None => {}
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
