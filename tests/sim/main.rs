//! Property tests of faultline's patterns, one module per pattern, in one test binary
//! (one link step keeps build time low on small machines).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod breaker;
mod breaker_r4j;
mod breaker_tokio;
mod bus;
mod bus_tokio;
mod choreo;
mod cli;
mod cli_input;
mod config_serde;
mod cqrs;
mod cqrs_tokio;
mod hosted_plugins;
mod plugin_api;
mod plugin_reports;
mod queue;
mod queue_jobs;
// faultline-clock interposes clock_gettime on Linux/64-bit only.
mod queue_tokio;
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod real_clock;
mod saga;
mod saga_any;
mod saga_tokio;
mod serde_roundtrip;
mod sweep_stop;
mod trip_booking;
mod twopc;
