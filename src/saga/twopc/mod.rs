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
pub mod invariants;
pub mod mutants;
pub mod pattern;
pub mod world;
