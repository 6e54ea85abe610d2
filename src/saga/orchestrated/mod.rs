//! The orchestrated saga: one coordinator drives each checkout step by step from a
//! durable log.
//!
//! - [`core`]: the sans-IO [`Orchestrator`](core::Orchestrator), its state machine.
//! - [`config`]: [`SagaConfig`](config::SagaConfig) and its validating builder.
//! - [`log`]: [`LogRecord`](log::LogRecord), the durable log it writes ahead of every
//!   command and recovers from.
//! - [`history`]: [`SagaHistory`](history::SagaHistory), a saga's history for an
//!   operator, read from those records.
//! - [`contract`]: [`SagaCoordinator`](contract::SagaCoordinator), the trait the world
//!   drives (implement it to plug in your own coordinator).
//! - [`store`]: [`LogStore`](store::LogStore), where the log is kept (memory, a file,
//!   SQLite, Postgres), its compaction, and its conformance suite.
#![cfg_attr(
    feature = "tokio",
    doc = "- [`tokio`]: the adapter that runs it in a service."
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "- `tokio` (feature `tokio`): the adapter that runs it in a service."
)]
//! - `driver` (crate-private): the driver core both the world and the tokio adapter
//!   drive (the output pipeline: what may go out now given what is durable, sends
//!   reported, replies, timers, halting), so the simulator verifies what the adapter
//!   runs.
#![cfg_attr(
    feature = "sim",
    doc = "- [`world`], [`mutants`], [`pattern`]: the simulated checkout, the broken"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `world`, `mutants`, `pattern` (feature `sim`): the simulated checkout, the broken"
)]
//!   coordinators it must catch, and the harness's view of it.
//! - `hosted` (feature `hosted`): the tokio runner (or your async orchestrator) in
//!   the tokio harness, against async checkout services (`saga-tokio`).
//!
//! The unit tests of config, log and core are in `tests.rs` beside them.

pub mod config;
pub mod contract;
pub mod core;
#[cfg(any(feature = "sim", feature = "tokio"))]
pub(crate) mod driver;
pub mod history;
#[cfg(feature = "hosted")]
pub mod hosted;
#[cfg(test)]
#[cfg(feature = "tokio")]
mod lockstep;
pub mod log;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
pub mod store;
#[cfg(test)]
mod tests;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "sim")]
pub mod world;
