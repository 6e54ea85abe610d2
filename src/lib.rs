//! # faultline
//!
//! Backend resilience patterns that a real tokio service can use, and the deterministic
#![cfg_attr(
    feature = "sim",
    doc = "simulator ([`faultline_sim`], re-exported as [`sim`]) that chaos-tests them under"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "simulator (`faultline_sim`, re-exported as `sim`; feature `sim`) that chaos-tests them under"
)]
//! randomized fault plans.
//!
//! Each pattern lives in its own module with the same shape: a sans-IO core (time passed
//! in, no clock, no tokio), a contract trait that the simulated world drives (so a
//! user's own implementation can be plugged into the harness), a tokio adapter, the
//! simulated world, and its invariants.
//!
//! # Features
//!
//! - `tokio`: the tokio adapters (each pattern's `tokio` module).
//! - `tower` (implies `tokio`): the resilience stack as a `tower::Layer` around any
//!   `tower::Service` (`breaker::tokio::tower`).
//! - `tracing`: `tracing` events and spans for every breaker transition, every attempt
//!   of a call, every queue lease and dead letter.
//! - `metrics`: counters and gauges through the `metrics` facade, labelled with each
//!   instance's name.
//! - `sqlite`, `postgres`: the SQLite and Postgres stores (`store::sqlite`,
//!   `store::postgres` and each pattern's `sqlite` and `postgres` modules).
//! - `sim`: the simulated worlds, invariants, mutants and scenarios, the harness, and the
//!   engine they run on (`faultline-sim`).
//! - `hosted` (implies `sim` and `tokio`): the tokio harness, real async code run in the
//!   simulated worlds on a paused runtime (`harness::hosted` and each pattern's `hosted`
//!   module).
#![cfg_attr(
    feature = "check",
    doc = "- `check` (implies `sim` and `hosted`): the check API, [`check`]: your own implementation under
  the whole harness from a `#[test]` (the engine's HTML reports)."
)]
#![cfg_attr(
    not(feature = "check"),
    doc = "- `check` (implies `sim` and `hosted`): the check API, `check`: your own implementation under
  the whole harness from a `#[test]` (the engine's HTML reports)."
)]
#![cfg_attr(
    feature = "cli",
    doc = "- `cli` (implies `check`): the `faultline` command, [`cli`], for the built-in patterns
  and your own (clap, indicatif)."
)]
#![cfg_attr(
    not(feature = "cli"),
    doc = "- `cli` (implies `check`): the `faultline` command, `cli`, for the built-in patterns
  and your own (clap, indicatif)."
)]
//!
//! All of them are on by default. A service that only uses the patterns depends on
//! `faultline = { default-features = false, features = ["tokio"] }`: the sans-IO cores
//! and the tokio adapters, without the simulator.

// On docs.rs (`--cfg docsrs`, a nightly rustdoc), each feature-gated item shows the feature
// it needs; a stable build never sets the cfg.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The simulation engine ([`faultline-sim`](faultline_sim)) the worlds run on: its
/// virtual time, seeded generators, fault plans, traces and shrinking, re-exported so a
/// user's test needs no dependency of its own to name them (`faultline::sim::SimTime`,
/// `faultline::sim::FaultPlan`, ...).
#[cfg(feature = "sim")]
pub use faultline_sim as sim;

/// The `rand` faultline builds on, re-exported because its traits appear in faultline's
/// signatures ([`CircuitBreaker::with_rng`](crate::breaker::CircuitBreaker::with_rng)
/// takes any `rand::Rng`): name it as `faultline::rand` and the versions always agree.
pub use rand;

pub mod breaker;
pub mod bus;
#[cfg(feature = "check")]
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod cqrs;
#[cfg(feature = "sim")]
pub mod harness;
pub mod name;
#[cfg(feature = "tokio")]
mod observe;
pub mod queue;
#[cfg(feature = "sim")]
pub mod registry;
pub mod retry;
#[cfg(feature = "tokio")]
mod rt;
pub mod saga;
mod splitmix;
pub mod store;
