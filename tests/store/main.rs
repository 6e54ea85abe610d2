//! The stores: one conformance suite per storage trait, run against memory, SQLite and
//! Postgres; crash tests that SIGKILL real child processes working against each store.
//!
//! The Postgres tests use the server `FAULTLINE_PG_URL` names, or start a throwaway one
//! from the local binaries; without either they skip, saying so in one line (with
//! `FAULTLINE_REQUIRE_PG=1`, as in CI, they fail instead).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[allow(dead_code)] // each suite uses its part
#[macro_use]
mod support;

mod crash;
mod event_store;
mod event_store_crash;
mod queue;
mod queue_crash;
mod queue_pool;
mod queue_rig;
mod queue_workers;
mod queue_world;
mod saga_crash;
mod saga_log;
