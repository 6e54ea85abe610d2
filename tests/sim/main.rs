//! Property tests of faultline's patterns, one module per pattern, in one test binary
//! (one link step keeps build time low on small machines).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod breaker;
mod bus;
mod choreo;
mod cli;
mod cqrs;
mod plugin_api;
mod plugin_reports;
mod queue;
mod saga;
mod saga_tokio;
mod twopc;
