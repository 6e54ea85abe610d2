//! The orchestrated saga: one coordinator drives each checkout step by step from a
//! durable log.
//!
//! - [`core`]: the sans-IO [`Orchestrator`](core::Orchestrator).
//! - [`contract`]: [`SagaCoordinator`](contract::SagaCoordinator), the trait the world
//!   drives (implement it to plug in your own coordinator).
//! - [`tokio`]: the adapter that runs it in a service.
//! - [`world`], [`mutants`], [`pattern`]: the simulated checkout, the broken
//!   coordinators it must catch, and the harness's view of it.

pub mod contract;
pub mod core;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "sim")]
pub mod world;
