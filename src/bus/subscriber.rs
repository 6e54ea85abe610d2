//! The decision core of one subscriber (sans-IO): what a subscriber does between the
//! bus and its handler. Both the simulated world's subscribers
//! ([`BusWorld`](crate::bus::world::BusWorld)), which the simulator verifies, and the
//! tokio adapter's subscriber task ([`SharedBus::subscribe`](crate::bus::tokio::SharedBus::subscribe))
//! drive it, so what a service runs is what the simulator checks (quinn over
//! quinn-proto).
//!
//! A subscriber holds at most one delivery at a time. Its driver reports the handler's
//! [`Outcome`] ([`Loop::done`]), then asks the core to settle it ([`Loop::settle`]: a
//! handled event is acknowledged, a failed one (an error or a panic) nacked, which the
//! bus retries after its backoff or dead-letters) and for the next step
//! ([`Loop::next`]):
//!
//! - [`Step::Exit`]: the subscriber is gone (unsubscribed, stopped, or, in the world,
//!   crashed): deliver nothing;
//! - [`Step::Deliver`]: run the handler on this delivery;
//! - [`Step::Wait`]: nothing to do now; wait for a wake-up (a publish, a redrive), and,
//!   when one of this subscriber's retries is scheduled and not yet due, at most until
//!   the bus's next retry after now (its own, or an earlier one of another subscriber);
//! - once the bus is closing: [`Step::Exit`] when drained (no retry of its own is
//!   pending), or when it cannot drain (full of dead letters, so the bus delivers nothing
//!   more until a redrive); otherwise as above, so pending retries are waited out.
//!
//! The core counts the retries the bus scheduled for this subscriber and has not yet
//! handed out; a count that drifts high (a retry the bus dropped, as a crash does) is
//! corrected when the bus has no retry left. [`Loop::needs_clock`] says when the time
//! matters (a failure to settle, a retry pending), so a driver whose clock costs a read
//! can otherwise hand over the latest time it has.
//!
//! The bus is reached through [`Parts`]: the reference [`Bus`] for the adapter
//! ([`BusParts`]), the bus under test (a plug-in's too) for the world.

use crate::bus::core::{Bus, Delivery, DeliveryToken, SubscriberId};
use crate::clock::Instant;

/// What the handler did with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned success: acknowledge.
    Handled,
    /// It returned an error or panicked: nack (retry, or dead-letter).
    Failed,
}

/// Where the subscriber's bus stands, as its driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Subscribed and open.
    Open,
    /// Subscribed; the bus is shutting down: drain what is owed, then exit.
    Closing,
    /// Unsubscribed, stopped or (in the world) crashed: deliver nothing.
    Gone,
}

/// What the driver does next.
#[derive(Debug)]
pub(crate) enum Step<D> {
    /// Run the handler on this delivery, then report with [`Loop::done`].
    Deliver(D),
    /// Nothing to do now: wait for a wake-up, or at most until this time.
    Wait(Option<Instant>),
    /// Deliver nothing more (the adapter's task ends).
    Exit,
}

/// What [`Loop::settle`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    /// The outcome settled.
    pub(crate) outcome: Outcome,
    /// A failure the bus will retry (false when it dead-lettered it).
    pub(crate) retry: bool,
}

/// The bus, as one subscriber's driver reaches it. Every method is one short step.
pub(crate) trait Parts {
    /// The handle of one delivery.
    type Token;
    /// One delivery.
    type Delivery;

    /// The token and attempt number of `delivery`.
    fn token(delivery: &Self::Delivery) -> (Self::Token, u32);
    /// The subscriber's next delivery now, if any.
    fn next_delivery(&mut self, now: Instant) -> Option<Self::Delivery>;
    /// Acknowledges a delivery.
    fn ack(&mut self, token: &Self::Token, now: Instant);
    /// Fails a delivery; true when the bus scheduled a retry of it.
    fn nack(&mut self, token: &Self::Token, now: Instant) -> bool;
    /// The subscriber holds its maximum of dead letters: nothing more is delivered to
    /// it until a redrive.
    fn stuck(&self) -> bool;
    /// The bus's next retry strictly after `now`, any subscriber's.
    fn next_retry_after(&self, now: Instant) -> Option<Instant>;
}

/// The delivery the subscriber holds.
#[derive(Debug)]
enum Hand<T> {
    Idle,
    /// The handler runs on it.
    Busy(T),
    /// The handler finished; not settled yet.
    Done(T, Outcome),
}

/// One subscriber's decisions. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Loop<T> {
    hand: Hand<T>,
    /// Retries the bus scheduled for this subscriber and has not handed out yet.
    retries_pending: u32,
}

impl<T> Default for Loop<T> {
    fn default() -> Self {
        Loop {
            hand: Hand::Idle,
            retries_pending: 0,
        }
    }
}

impl<T> Loop<T> {
    /// A subscriber holding nothing.
    pub(crate) fn new() -> Self {
        Loop::default()
    }

    /// True while it holds a delivery (the handler runs, or its outcome is unsettled).
    pub(crate) fn is_busy(&self) -> bool {
        !matches!(self.hand, Hand::Idle)
    }

    /// True when the next step needs the current time: a failure to settle, or a retry
    /// of its own pending.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self.hand, Hand::Done(_, Outcome::Failed)) || self.retries_pending > 0
    }

    /// The handler finished the delivery in hand with `outcome` (ignored when nothing
    /// is in hand: an outcome from before a crash).
    pub(crate) fn done(&mut self, outcome: Outcome) {
        if let Hand::Busy(token) = std::mem::replace(&mut self.hand, Hand::Idle) {
            self.hand = Hand::Done(token, outcome);
        }
    }

    /// The subscriber crashed or left (the world only): what it had in hand is lost,
    /// unsettled, and the bus drops its retries.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn crash(&mut self) {
        self.hand = Hand::Idle;
        self.retries_pending = 0;
    }

    /// Settles a finished delivery with the bus: acknowledges a handled one, nacks a
    /// failed one, even once the subscriber is [`Gone`](Status::Gone) (a bus that forgot
    /// the subscriber ignores the token; one merely stopped still takes the outcome). A
    /// delivery lost in a crash or by leaving is dropped by [`crash`](Loop::crash)
    /// instead, never settled.
    pub(crate) fn settle<B>(&mut self, bus: &mut B, now: Instant) -> Option<Settled>
    where
        B: Parts<Token = T>,
    {
        let Hand::Done(token, outcome) = std::mem::replace(&mut self.hand, Hand::Idle) else {
            return None;
        };
        let retry = match outcome {
            Outcome::Handled => {
                bus.ack(&token, now);
                false
            }
            Outcome::Failed => bus.nack(&token, now),
        };
        if retry {
            self.retries_pending += 1;
        }
        Some(Settled { outcome, retry })
    }

    /// The next step, once anything finished is settled. A delivery it returns is in
    /// hand until [`done`](Loop::done).
    pub(crate) fn next<B>(&mut self, bus: &mut B, status: Status, now: Instant) -> Step<B::Delivery>
    where
        B: Parts<Token = T>,
    {
        if status == Status::Gone {
            return Step::Exit;
        }
        if self.is_busy() {
            // One delivery at a time: wait for the handler.
            return Step::Wait(None);
        }
        if let Some(delivery) = bus.next_delivery(now) {
            let (token, attempt) = B::token(&delivery);
            if attempt > 1 {
                self.retries_pending = self.retries_pending.saturating_sub(1);
            }
            self.hand = Hand::Busy(token);
            return Step::Deliver(delivery);
        }
        let stuck = bus.stuck();
        if status == Status::Closing && (self.retries_pending == 0 || stuck) {
            // Drained (or cannot drain): what is left is counted by the shutdown report.
            return Step::Exit;
        }
        if self.retries_pending == 0 || stuck {
            return Step::Wait(None);
        }
        // Ours is not due (it would have been handed out): wait until the bus's next
        // retry after now, ours or an earlier one of another subscriber.
        match bus.next_retry_after(now) {
            Some(at) => Step::Wait(Some(at)),
            None => {
                // No retry anywhere: the count was off; nothing to wait for but events.
                self.retries_pending = 0;
                Step::Wait(None)
            }
        }
    }
}

/// The reference [`Bus`] as one subscriber's [`Parts`].
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct BusParts<'a, P> {
    /// The bus.
    pub(crate) bus: &'a mut Bus<P>,
    /// The subscriber.
    pub(crate) id: SubscriberId,
}

impl<P: Clone> Parts for BusParts<'_, P> {
    type Token = DeliveryToken;
    type Delivery = Delivery<P>;

    fn token(delivery: &Delivery<P>) -> (DeliveryToken, u32) {
        (delivery.token, delivery.attempt)
    }
    fn next_delivery(&mut self, now: Instant) -> Option<Delivery<P>> {
        self.bus.next_delivery(self.id, now)
    }
    fn ack(&mut self, token: &DeliveryToken, now: Instant) {
        self.bus.ack(token, now);
    }
    fn nack(&mut self, token: &DeliveryToken, now: Instant) -> bool {
        let before = self.bus.totals().retries;
        self.bus.nack(token, now);
        self.bus.totals().retries > before
    }
    fn stuck(&self) -> bool {
        self.bus.dead_letters(self.id).len() >= self.bus.config().dead_letters_max()
    }
    fn next_retry_after(&self, now: Instant) -> Option<Instant> {
        self.bus.poll_timeout_after(now)
    }
}
