//! The subscriber task: one per subscription, it takes the next delivery from the core
//! under the lock, runs the handler outside it (a panic is a failed delivery), and acks
//! or nacks what the handler did.

use super::*;
use crate::bus::subscriber::{BusParts, Loop, Outcome, Settled, Status, Step};
use crate::observe;

/// Adds one to a counter only its subscriber task writes (no atomic read-modify-write).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

// ----- the subscriber task -----

/// The subscriber task's loop: a driver of the verified subscriber core
/// ([`Loop`](crate::bus::subscriber::Loop)). Under the lock it settles the last outcome
/// and asks the core for the next step; outside it, it carries the step out (run the
/// handler, wait for a wake-up or until the time asked, or end).
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
    loop {
        let (step, wake_publishers) = {
            let (mut state, now) = if core.needs_clock() {
                inner.lock_now()
            } else {
                inner.lock()
            };
            let status = if me.stopped.load(Ordering::Acquire) || !state.bus.is_subscribed(me.id) {
                Status::Gone
            } else if state.closed {
                Status::Closing
            } else {
                Status::Open
            };
            let state = &mut *state;
            let had_outcome = core.is_busy();
            let mut parts = BusParts {
                bus: &mut state.bus,
                id: me.id,
            };
            if let (Some(settled), Some((topic, seq, attempt))) =
                (core.settle(&mut parts, now), in_hand.take())
            {
                let settled = match settled {
                    Settled {
                        outcome: Outcome::Handled,
                        ..
                    } => observe::Settled::Handled,
                    Settled { retry: true, .. } => observe::Settled::Retried,
                    Settled { retry: false, .. } => observe::Settled::DeadLettered,
                };
                me.observer.settled(&topic, seq, attempt, settled, || {
                    let owed = me.topics.iter().map(|t| parts.bus.lag(me.id, t)).sum();
                    (owed, parts.bus.dead_letters(me.id).len())
                });
            }
            let step = core.next(&mut parts, status, now);
            me.idle
                .store(matches!(step, Step::Wait(_)), Ordering::Relaxed);
            let step = match step {
                Step::Deliver(delivery) => {
                    let topic = state.bus.topic_arc(delivery.topic);
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
                in_hand = Some((Arc::clone(&topic), delivery.seq, delivery.attempt));
                let event = Event {
                    topic,
                    seq: delivery.seq,
                    payload: delivery.payload,
                    attempt: delivery.attempt,
                    redelivery: delivery.redelivery,
                    redriven: delivery.redriven,
                };
                let outcome = {
                    let call = call_caught(&mut handler, event);
                    #[cfg(feature = "hosted")]
                    let result = if inner.flaw == Flaw::DropInHandOnShutdown {
                        match unless_shut_down(&inner, &me, call).await {
                            Some(result) => result,
                            // The defect: the event in hand is dropped, unsettled.
                            None => break,
                        }
                    } else {
                        call.await
                    };
                    #[cfg(not(feature = "hosted"))]
                    let result = call.await;
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
                                Outcome::Handled
                            } else {
                                Outcome::Failed
                            }
                            #[cfg(not(feature = "hosted"))]
                            Outcome::Failed
                        }
                        None => {
                            bump(&me.failed);
                            bump(&me.panicked);
                            *lock(&me.last_error) = Some("the handler panicked".to_string());
                            Outcome::Failed
                        }
                    }
                };
                core.done(outcome);
                // Yield now and then when handlers never wait, so a busy subscriber
                // cannot starve the tasks sharing its thread.
                ::tokio::task::coop::consume_budget().await;
            }
        }
    }
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
