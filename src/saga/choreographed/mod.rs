//! The choreographed saga: no coordinator; the participants react to one another's
//! events over the event bus.
//!
//! - [`core`]: the sans-IO reactions of each participant.
//! - [`world`], [`pattern`]: the simulated checkout over the bus, and the harness's
//!   view of it (with its mutants).

pub mod core;
#[cfg(feature = "sim")]
pub mod pattern;
#[cfg(feature = "sim")]
pub mod world;
