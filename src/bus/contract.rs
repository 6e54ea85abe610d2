//! The contract the simulated world drives: [`EventBus`]. The reference [`Bus`]
//! implements it; so can your own bus, which then gets the invariants, the fault plans,
//! shrinking and the reports.
//!
//! # What the world observes and what it trusts
//!
//! # Declared policy
//!
//! A bus is judged by the [`BusPolicy`] it declares through [`EventBus::policy`], built
//! from its own configuration: how many events a topic retains, how many attempts an
//! event gets before it is dead-lettered, and the longest a failed delivery waits for
//! its retry. The universal promises (nothing lost, nothing twice, in order, never more
//! retained than the declared capacity, dead-lettered after exactly the declared
//! attempts and not before) are checked against that declaration, whatever the seed's
//! knobs say. Whether the declaration equals the reference's exact settings for the
//! knobs is a separate check, `bus.conformance`
#![cfg_attr(
    feature = "sim",
    doc = "([`BusWorld::conforming_to_reference`](crate::bus::world::BusWorld::conforming_to_reference)),"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "(`BusWorld::conforming_to_reference`, feature `sim`),"
)]
//! which the reference scenario and its mutants turn on and a plug-in does not need.
//! A world that hosts a bus (the choreographed saga) reads the same declaration where
//! its bounds depend on the bus: its settling bound allows for the declared
//! `retry_wait_max`, not the knobs' backoff.
//!
//! # What the world observes and what it trusts
//!
//! The world owns the publishers and the handlers, so it checks the bus from what it sees
#![cfg_attr(
    feature = "sim",
    doc = "at that boundary and keeps its own ledger (see [`crate::bus::invariants`]). Per method:"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "at that boundary and keeps its own ledger (see `crate::bus::invariants`, feature `sim`). Per method:"
)]
//!
//! | method | | why |
//! |---|---|---|
//! | `subscribe`, `unsubscribe` | observed | the world makes every subscription and ends it, so it knows who is owed what from when to when; the returned id is only a handle |
//! | `publish` | compared | the world knows whether the topic had a subscriber, so whether the event must be a dead event; the seq returned must be the topic's next by the world's count; a `BusFull` is trusted as refusal, but a topic that must hold more than the capacity is a violation whatever the bus says |
//! | `next_delivery` | observed | each delivery is checked against the ledger: the topic, the seq, the payload that was published as it, the order, and whether the subscriber is owed it; `redriven` is checked against the letters the world redrove; `attempt` and `redelivery` only feed the coverage marks and the trace |
//! | `ack`, `nack` | observed | the world's handler decides the outcome, so the ledger records it, not the bus |
//! | `crash`, `resume`, `redrive` | observed | the world decides when; what comes next is checked at delivery |
//! | `policy` | trusted, read once when the world is made | it is the yardstick, not a fact: `capacity` bounds retention, `attempts_max` says when a failed event must be dead-lettered, `retry_wait_max` only feeds `bus.conformance` here (no bus invariant times retries; the liveness bound is a fixed hour) and a host's bounds (the choreographed saga's settling bound). A bus that breaks its own declaration is caught by the checks that use it, and `bus.conformance` compares it with the reference's settings where asked |
//! | `dead_letters` | compared | after a failure, it says whether the bus dead-lettered the event: a dead letter before the declared `attempts_max` failures, or none after them, is a violation (`bus.exactly_once`); at rest, the listed letters must be exactly the events the world saw dead-lettered and not handled since |
//! | `poll_timeout` | trusted | only to schedule wake-ups; a bus that never wakes is caught by `bus.drained` and the liveness bound, not believed |
//! | `retained_max` | compared | it must lie between what the ledger says must be held (less is a loss: `bus.fifo`) and the declared capacity (`bus.bounded_retention`); what the ledger says must be held may not exceed the declared capacity either, whatever the bus reports |
//! | `dead_events` | compared | at rest it must equal the dead events by the world's facts |
//! | `redrive`'s count | compared | it must be the number of dead letters the world read just before (`bus.reports`) |
//! | `next_seq`, `lag`, `totals` (optional) | compared | where the bus reports them, after every step: each topic's next seq with the world's count of events published on it, each subscriber's lag with the events it is owed and has not settled by the ledger, the totals with the world's counts of what it published, was refused, was handed, settled and redrove (`bus.reports`) |
//!
//! Nothing a bus reports about itself replaces a fact the world has.

use crate::bus::core::{Bus, BusConfig, BusFull, BusTotals, Published, SubscriberId};
use crate::clock::Instant;
use std::fmt;
use std::time::Duration;

/// The policy a bus declares it implements, from its own configuration: what the
/// invariants judge it by (see the [module docs](self)).
///
/// A bus that retains 64 events per topic, dead-letters an event after its third failed
/// attempt and waits at most 5 s before a retry declares:
///
/// ```
/// use faultline::bus::contract::BusPolicy;
/// use std::time::Duration;
///
/// let policy = BusPolicy {
///     capacity: 64,
///     attempts_max: 3,
///     retry_wait_max: Duration::from_secs(5),
/// };
/// # let _ = policy;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusPolicy {
    /// Most events a topic retains (for its laggiest subscriber) before a publish is
    /// refused with [`BusFull`].
    pub capacity: usize,
    /// Attempts an event gets for one subscriber before it is dead-lettered (at least
    /// 1): it is dead-lettered at its `attempts_max`-th failure, not before; a crash of
    /// the subscriber may restart the count (the reference's does), so "not after"
    /// counts the failures since the subscriber last crashed.
    pub attempts_max: u32,
    /// Longest a failed delivery waits before it is offered again.
    pub retry_wait_max: Duration,
}

impl BusPolicy {
    /// The policy of a reference [`Bus`] configured by `config`: its capacity, its
    /// attempts and its backoff's cap (full jitter waits at most the cap).
    pub fn of_config(config: &BusConfig) -> BusPolicy {
        BusPolicy {
            capacity: config.capacity(),
            attempts_max: config.attempts_max(),
            retry_wait_max: config.backoff().cap(),
        }
    }
}

/// What a delivery tells the world.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handed<T> {
    /// Hand back with `ack` or `nack`.
    pub token: T,
    /// The topic.
    pub topic: std::sync::Arc<str>,
    /// The event's position in its topic.
    pub seq: u64,
    /// The event (the world's event number).
    pub payload: u64,
    /// 1 for a first attempt, more for retries.
    pub attempt: u32,
    /// The subscriber had it in hand before a crash.
    pub redelivery: bool,
    /// A dead letter handed back by `redrive`.
    pub redriven: bool,
}

/// An event bus the world can drive (payloads are the world's event numbers).
pub trait EventBus {
    /// The handle of one delivery.
    type Token: fmt::Debug + Clone;

    /// Subscribes to `topics` from now on.
    fn subscribe(&mut self, topics: &[&str], now: Instant) -> SubscriberId;
    /// Stops delivery to `id` at once.
    fn unsubscribe(&mut self, id: SubscriberId, now: Instant);
    /// Publishes event `payload` on `topic`.
    fn publish(&mut self, topic: &str, payload: u64, now: Instant) -> Result<Published, BusFull>;
    /// The next event for `id`, if any.
    fn next_delivery(&mut self, id: SubscriberId, now: Instant) -> Option<Handed<Self::Token>>;
    /// The handler finished the delivery.
    fn ack(&mut self, token: &Self::Token, now: Instant);
    /// The handler failed the delivery.
    fn nack(&mut self, token: &Self::Token, now: Instant);
    /// `id` crashed: what it had in hand is lost.
    fn crash(&mut self, id: SubscriberId, now: Instant);
    /// `id` is back.
    fn resume(&mut self, id: SubscriberId, now: Instant);
    /// Hands `id`'s dead letters back for delivery; returns how many.
    fn redrive(&mut self, id: SubscriberId, now: Instant) -> usize;
    /// `id`'s dead letters as (topic, seq).
    fn dead_letters(&self, id: SubscriberId) -> Vec<(String, u64)>;
    /// When the next retry strictly after `now` is due.
    fn poll_timeout(&self, now: Instant) -> Option<Instant>;
    /// The most events any topic retains now.
    fn retained_max(&self) -> usize;
    /// Events published to topics nobody subscribed to.
    fn dead_events(&self) -> u64;
    /// The policy this bus implements, from its own configuration: what the world
    /// judges it by. Read once, when the world is made.
    fn policy(&self) -> BusPolicy;
    /// The seq the next event published on `topic` will get, if the bus reports it
    /// (default: it does not). When it does, the world compares it with its own count
    /// after every step (`bus.reports`).
    fn next_seq(&self, topic: &str) -> Option<u64> {
        let _ = topic;
        None
    }
    /// Events `id` is owed on `topic` and has not settled (acknowledged or
    /// dead-lettered), in hand and waiting for a retry included: its lag, if the bus
    /// reports it (default: it does not). When it does, the world compares it with its
    /// ledger after every step (`bus.reports`).
    fn lag(&self, id: SubscriberId, topic: &str) -> Option<u64> {
        let _ = (id, topic);
        None
    }
    /// The bus's own counters, if it keeps them (default: it does not). When it does,
    /// the world compares them with its ledger after every step (`bus.reports`):
    /// `published` (events accepted with a seq), `full` (every [`BusFull`], whether the
    /// publisher then waits or gives up), `handed_out` (every delivery, redriven letters
    /// included), `acked` (deliveries the handler finished), `retries` (failed
    /// deliveries not dead-lettered, redriven letters aside), `dead_lettered` (events
    /// dead-lettered at their last attempt; a redriven letter that fails again goes back
    /// to the dead letters without being counted again) and `redriven` (letters handed
    /// back by [`redrive`](EventBus::redrive)). `dead_events` is judged through
    /// [`dead_events`](EventBus::dead_events); `redelivered` is not compared.
    fn totals(&self) -> Option<BusTotals> {
        None
    }
}

impl EventBus for Bus<u64> {
    type Token = crate::bus::core::DeliveryToken;

    fn subscribe(&mut self, topics: &[&str], now: Instant) -> SubscriberId {
        Bus::subscribe(self, topics, now)
    }
    fn unsubscribe(&mut self, id: SubscriberId, _now: Instant) {
        Bus::unsubscribe(self, id);
    }
    fn publish(&mut self, topic: &str, payload: u64, now: Instant) -> Result<Published, BusFull> {
        Bus::publish(self, topic, payload, now)
    }
    fn next_delivery(&mut self, id: SubscriberId, now: Instant) -> Option<Handed<Self::Token>> {
        let d = Bus::next_delivery(self, id, now)?;
        Some(Handed {
            token: d.token,
            topic: self.topic_arc(d.topic),
            seq: d.seq,
            payload: d.payload,
            attempt: d.attempt,
            redelivery: d.redelivery,
            redriven: d.redriven,
        })
    }
    fn ack(&mut self, token: &Self::Token, now: Instant) {
        Bus::ack(self, token, now);
    }
    fn nack(&mut self, token: &Self::Token, now: Instant) {
        Bus::nack(self, token, now);
    }
    fn crash(&mut self, id: SubscriberId, now: Instant) {
        Bus::crash(self, id, now);
    }
    fn resume(&mut self, id: SubscriberId, now: Instant) {
        Bus::resume(self, id, now);
    }
    fn redrive(&mut self, id: SubscriberId, _now: Instant) -> usize {
        Bus::redrive(self, id)
    }
    fn dead_letters(&self, id: SubscriberId) -> Vec<(String, u64)> {
        Bus::dead_letters(self, id)
            .iter()
            .map(|l| (l.topic.to_string(), l.seq))
            .collect()
    }
    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        Bus::poll_timeout_after(self, now)
    }
    fn retained_max(&self) -> usize {
        Bus::retained_max(self)
    }
    fn dead_events(&self) -> u64 {
        self.totals().dead_events
    }
    fn policy(&self) -> BusPolicy {
        BusPolicy::of_config(self.config())
    }
    fn next_seq(&self, topic: &str) -> Option<u64> {
        Some(Bus::next_seq(self, topic))
    }
    fn lag(&self, id: SubscriberId, topic: &str) -> Option<u64> {
        Some(Bus::lag(self, id, topic))
    }
    fn totals(&self) -> Option<BusTotals> {
        Some(Bus::totals(self))
    }
}
