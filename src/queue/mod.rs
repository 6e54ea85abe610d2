//! A task queue for profile sync that keeps "no lost updates" under faults: a profile
//! change reaches every target service eventually, even ones that are down for a
//! while, never goes backwards, and takes effect once however often it is delivered.
//!
//! - [`core`]: the sans-IO pieces: the profile service's [`Outbox`] (the write and its
//!   tasks in one step), the [`Queue`] (one task per (profile, target), leases with a
//!   visibility timeout, heartbeats, fencing tokens, coalescing, capped full-jitter
//!   backoff, a dead-letter queue that can be redriven, a durable [`Store`]), and the
//!   targets' [`Replica`] (applies with a version check).
//! - [`contract`]: [`TaskQueue`](contract::TaskQueue), the trait the simulated world
//!   drives, and the [`QueuePolicy`] a queue declares (visibility timeout, attempts,
//!   [`BackoffPolicy`]); plug your own queue in through it, and it is judged by the
//!   policy it declares.
//! - [`tokio`](mod@tokio): a worker pool of N tasks around a shared [`Queue`], driving
//!   an async delivery function, with graceful shutdown. Each worker task is a driver
//!   of the same sans-IO worker core (crate-private, `worker.rs`) that the simulated
//!   workers of the [`world`] drive: when to lease, sleep, heartbeat, ack, nack, drop
//!   and exit is decided once.
//! - [`world`], [`invariants`], [`mutants`], [`pattern`]: the simulated profile sync,
//!   its seven promises, the broken queues they must catch, and the harness entry.
//! - [`hosted`] (feature `hosted`): the worker pool, or your own async worker loop, in
//!   the tokio harness (`queue-tokio`), against async targets and black-box oracles.

pub mod contract;
pub mod core;
#[cfg(feature = "hosted")]
pub mod hosted;
#[cfg(feature = "sim")]
pub mod invariants;
#[cfg(all(test, feature = "tokio"))]
mod lockstep;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(any(feature = "tokio", feature = "sim"))]
pub(crate) mod worker;
#[cfg(feature = "sim")]
pub mod world;

pub use self::contract::{BackoffPolicy, QueuePolicy};
pub use self::core::{
    Applied, DeadLetter, Enqueued, Fenced, Lease, LeaseToken, Nacked, Outbox, ProfileId, Queue,
    QueueConfig, QueueConfigBuilder, QueueCounts, Replica, Store, TargetId, Task, TaskKey,
};
