//! # faultline
//!
//! Backend resilience patterns that a real tokio service can use, and the deterministic
//! simulator ([`faultline_sim`], re-exported as [`sim`]) that chaos-tests them under
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
//! - `sim`: the simulated worlds, invariants, mutants and scenarios, the harness, and the
//!   engine they run on ([`faultline_sim`]).
//! - `check` (implies `sim`): the check API, [`check`]: your own implementation under
//!   the whole harness from a `#[test]` (the engine's HTML reports).
//! - `cli` (implies `check`): the `faultline` command, [`cli`], for the built-in patterns
//!   and your own (clap, indicatif).
//!
//! All four are on by default. A service that only uses the patterns depends on
//! `faultline = { default-features = false, features = ["tokio"] }`: the sans-IO cores
//! and the tokio adapters, without the simulator.

// Without `sim` or `tokio`, the module docs name modules that are not compiled; the
// default build checks every link.
#![cfg_attr(
    not(all(feature = "sim", feature = "tokio", feature = "check", feature = "cli")),
    allow(rustdoc::broken_intra_doc_links)
)]

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
