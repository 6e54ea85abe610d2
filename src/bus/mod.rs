//! An in-memory event bus that keeps its promise: every subscriber gets every event
//! published on its topics after it subscribed, once, in order, with bounded memory and
//! nothing lost silently.
//!
//! - [`core`]: the sans-IO [`Bus`] (topics as ordered logs, a cursor per subscriber,
//!   retries with backoff, dead letters, crash and resume).
//! - `subscriber` (crate-private): the decision core of one subscriber (settle, next
//!   delivery, wait, drain), driven by both the simulated world and the tokio adapter.

pub mod contract;
pub mod core;
#[cfg(feature = "hosted")]
pub mod hosted;
#[cfg(feature = "sim")]
pub mod invariants;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
#[cfg(any(feature = "sim", feature = "tokio"))]
pub(crate) mod subscriber;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "sim")]
pub mod world;

pub use self::core::{
    Bus, BusConfig, BusConfigBuilder, BusFull, BusTotals, DeadLetter, Delivery, DeliveryToken,
    Published, SubscriberId, TopicId,
};
