//! Two-phase commit: the baseline the sagas replace, for the same checkout.
//!
//! - [`core`]: the sans-IO coordinator and participants (prepare, vote, decide).
//! - [`contract`]: [`TwoPcCoordinator`](contract::TwoPcCoordinator), the trait the world
//!   drives.
//! - [`invariants`]: 2PC's promises, as named constants, and the checks at rest.
//! - [`world`], [`mutants`], [`pattern`]: the simulated checkout, the broken coordinators
//!   it must catch, and the harness's view of it.

pub mod contract;
pub mod core;
#[cfg(feature = "sim")]
pub mod invariants;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
#[cfg(feature = "sim")]
pub mod world;
