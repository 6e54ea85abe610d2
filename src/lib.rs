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

pub use faultline_sim as sim;

pub mod breaker;
pub mod bus;
pub mod clock;
pub mod config;
pub mod cqrs;
pub mod harness;
pub mod queue;
pub mod registry;
pub mod retry;
mod rt;
pub mod saga;
mod splitmix;
