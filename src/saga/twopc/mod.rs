//! Two-phase commit: the baseline the sagas replace, for the same checkout.
//!
//! - [`core`]: the sans-IO coordinator and participants (prepare, vote, decide).
//! - [`contract`]: [`TwoPcCoordinator`](contract::TwoPcCoordinator), the trait the world
//!   drives.
#![cfg_attr(
    feature = "sim",
    doc = "- [`invariants`]: 2PC's promises, as named constants, and the checks at rest."
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `invariants` (feature `sim`): 2PC's promises, as named constants, and the checks at rest."
)]
#![cfg_attr(
    feature = "sim",
    doc = "- [`world`], [`mutants`], [`pattern`]: the simulated checkout, the broken coordinators"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `world`, `mutants`, `pattern` (feature `sim`): the simulated checkout, the broken coordinators"
)]
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
