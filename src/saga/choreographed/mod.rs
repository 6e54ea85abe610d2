//! The choreographed saga: no coordinator; the participants react to one another's
//! events over the event bus.
//!
//! - [`core`]: the sans-IO reactions of each participant.
#![cfg_attr(
    feature = "sim",
    doc = "- [`world`], [`pattern`]: the simulated checkout over the bus, and the harness's"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `world`, `pattern` (feature `sim`): the simulated checkout over the bus, and the harness's"
)]
//!   view of it (with its mutants).
//!
//! # The contract, and what the world observes and what it trusts
//!
//! There is no coordinator to plug in: the contract is the bus,
//! [`EventBus`](crate::bus::contract::EventBus), and yours goes in with
//! `ChoreoWorld::with_bus` (a bus written from scratch passes there as it does in the
//! bus world: `tests/sim/choreo.rs`). The services and their reactions are the
//! world's own (the reference [`Reactor`](core::Reactor)), so every saga promise is
//! read from them, never from the bus. Per method:
//!
//! | method | observed or trusted | why |
//! |---|---|---|
//! | [`publish`](crate::bus::contract::EventBus::publish) | observed: the world keeps every event it published (its payload is the event's number in the world's own list) and when; a refused publish waits in the service's outbox and is published again | the world knows what was published whatever the bus retains |
//! | [`next_delivery`](crate::bus::contract::EventBus::next_delivery) | observed: the event a service reacts to is the world's own record of that payload (one the world never published is skipped, not acted on); the world carries it over the faulty link and arms the ack deadline itself. The `redelivery` flag feeds a coverage mark only | what the bus does wrong counts by what it does to the sagas, read from the services: a lost event leaves its saga not at rest (`saga.at_rest`), a duplicate must have no extra effect (`saga.idempotent`), and stock, money and the order of compensations are checked (`saga.conservation`, `saga.compensation_order`) |
//! | [`ack`](crate::bus::contract::EventBus::ack), [`nack`](crate::bus::contract::EventBus::nack), [`crash`](crate::bus::contract::EventBus::crash), [`resume`](crate::bus::contract::EventBus::resume), [`subscribe`](crate::bus::contract::EventBus::subscribe) | inputs the world gives (the outbox relay acks; the deadline nacks) | |
//! | [`dead_letters`](crate::bus::contract::EventBus::dead_letters), [`redrive`](crate::bus::contract::EventBus::redrive) | trusted to say whether a subscriber has dead letters to redrive once the faults heal | a bus that hides a dead letter leaves its saga not at rest (`saga.at_rest`) |
//! | [`poll_timeout`](crate::bus::contract::EventBus::poll_timeout), [`retained_max`](crate::bus::contract::EventBus::retained_max) | trusted only to schedule the next pump and tell when the run may stop | stopping early cannot hide a saga: every checkout that arrived is checked at rest in the services |
//! | [`policy`](crate::bus::contract::EventBus::policy) | trusted, read once when the world is made: only its `retry_wait_max`, which `saga.settling`'s bound allows for (`ChoreoWorld::settle_bound`) in place of the knobs' backoff cap | it is the yardstick, not a fact: a bus that backs off longer than it declares is caught by `saga.settling` (18 of seeds 0..300 for eight times the knobs' backoff declared as the knobs'), and one that declares its longer backoff passes (before, judged by the knobs, it failed those 18). Its `capacity` and `attempts_max` bound nothing here: a full topic makes publishers wait in their outbox, dead letters are redriven once the faults heal, and the ack deadline is the world's own (the knobs' step timeout) |
//! | [`dead_events`](crate::bus::contract::EventBus::dead_events), [`unsubscribe`](crate::bus::contract::EventBus::unsubscribe) | not used by this world | |
//!
//! The bus's own promises (each subscriber gets every event once, in order) are the
//! bus world's to check, from its handlers' ledger
//! ([`bus::contract`](crate::bus::contract)); here the bus is judged by what the saga
//! needs of it.

pub mod core;
#[cfg(feature = "sim")]
pub mod pattern;
#[cfg(feature = "sim")]
pub mod world;
