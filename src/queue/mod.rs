//! A task queue for jobs of any domain that keeps its promises under faults: a keyed
//! job ("sync profile 7 to billing", latest version wins) reaches its target at its
//! latest version and never goes backwards; a unique job ("send this welcome email")
//! takes effect exactly once at a target that dedupes by job id; both survive targets
//! that are down for a while, crashed workers and a restarted queue.
//!
//! - [`core`]: the sans-IO pieces: [`Job`]s (a [`JobType`], a serde [`Payload`], a key
//!   or a unique [`JobId`], a run-at), the producer's [`Outbox`] (jobs staged in the
//!   caller's own write, through [`Staging`], then relayed), the [`Queue`] (leases with
//!   a visibility timeout, heartbeats, fencing tokens, coalescing by key, capped
//!   full-jitter backoff, a dead-letter queue with the last error that can be
//!   redriven, a durable [`Store`] that keeps the wall-clock origin), and the targets'
//!   [`Inbox`] (applies each unique job once).
//! - [`store`]: the durable queue, [`JobStore`](store::JobStore): in memory, in SQLite
//!   or in Postgres, every store held to one conformance suite.
//! - [`profile`]: profile sync, one use of it: keyed jobs per (profile, target) and the
//!   targets' [`Replica`](profile::Replica) that applies with a version check.
//! - [`contract`]: [`TaskQueue`](contract::TaskQueue), the trait the simulated world
//!   drives, and the [`QueuePolicy`] a queue declares (visibility timeout, attempts,
//!   [`BackoffPolicy`]); plug your own queue in through it, and it is judged by the
//!   policy it declares.
#![cfg_attr(
    feature = "tokio",
    doc = "- [`tokio`](mod@tokio): a worker pool of N tasks around a shared [`Queue`], driving"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "- `tokio` (feature `tokio`): a worker pool of N tasks around a shared [`Queue`], driving"
)]
//!   an async delivery function, with graceful shutdown. Each worker task is a driver
//!   of the same sans-IO worker core (crate-private, `worker.rs`) that the simulated
#![cfg_attr(
    feature = "sim",
    doc = "  workers of the [`world`] drive: when to lease, sleep, heartbeat, ack, nack, drop"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "  workers of the `world` drive: when to lease, sleep, heartbeat, ack, nack, drop"
)]
//!   and exit is decided once.
#![cfg_attr(
    feature = "sim",
    doc = "- [`world`], [`invariants`], [`mutants`], [`pattern`]: the simulated profile sync"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `world`, `invariants`, `mutants`, `pattern` (feature `sim`): the simulated profile sync"
)]
//!   mixed with unique jobs, its eight promises, the broken queues they must catch, and the harness entry.
#![cfg_attr(
    feature = "hosted",
    doc = "- [`hosted`] (feature `hosted`): the worker pool, or your own async worker loop, in"
)]
#![cfg_attr(
    not(feature = "hosted"),
    doc = "- `hosted` (feature `hosted`): the worker pool, or your own async worker loop, in"
)]
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
pub mod profile;
pub mod store;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(any(feature = "tokio", feature = "sim"))]
pub(crate) mod worker;
#[cfg(feature = "sim")]
pub mod world;

pub use self::contract::{BackoffPolicy, QueuePolicy};
pub use self::core::{
    ATTEMPT_HISTORY_MAX, Applied, Attempt, AutoRedrive, DeadLetter, Enqueued, Fenced, Inbox, Job,
    JobId, JobKey, JobType, LEASE_EXPIRED, Lease, LeaseToken, Nacked, Outbox, OutboxTx, Payload,
    PayloadError, Queue, QueueConfig, QueueConfigBuilder, QueueCounts, Slot, Staging, Store,
};
