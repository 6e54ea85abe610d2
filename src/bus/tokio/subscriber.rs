//! The subscriber task: one per subscription, it takes the next delivery from the core
//! under the lock, runs the handler outside it (a panic is a failed delivery), and acks
//! or nacks what the handler did.

use super::*;

/// Adds one to a counter only its subscriber task writes (no atomic read-modify-write).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
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
