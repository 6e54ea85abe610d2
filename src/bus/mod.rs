//! An in-memory event bus that keeps its promise: every subscriber gets every event
//! published on its topics after it subscribed, once, in order, with bounded memory and
//! nothing lost silently.
//!
//! - [`core`]: the sans-IO [`Bus`] (topics as ordered logs, a cursor per subscriber,
//!   retries with backoff, dead letters, crash and resume).

pub mod contract;
pub mod core;
pub mod invariants;
pub mod mutants;
pub mod pattern;
pub mod tokio;
pub mod world;

pub use self::core::{
    Bus, BusConfig, BusConfigBuilder, BusFull, BusTotals, DeadLetter, Delivery, DeliveryToken,
    Published, SubscriberId, TopicId,
};
