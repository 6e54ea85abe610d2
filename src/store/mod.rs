//! Durable storage: what survives a crash, and where it lives.
//!
//! Every pattern that keeps state across a crash keeps it behind a storage trait of its
//! own module, with three implementations behind the same trait:
//!
//! - **memory**: the reference, and what the simulated worlds run (a crash there is a
//!   fault of the world's store model, not a lost process);
//! - **SQLite** (feature `sqlite`): the embedded default, a file path is all it needs
#![cfg_attr(feature = "sqlite", doc = "  ([`sqlite::open`]);")]
#![cfg_attr(not(feature = "sqlite"), doc = "  (`sqlite::open`);")]
//! - **Postgres** (feature `postgres`): for workers on many machines sharing one
#![cfg_attr(feature = "postgres", doc = "  database ([`postgres::connect`]).")]
#![cfg_attr(not(feature = "postgres"), doc = "  database (`postgres::connect`).")]
//!
//! This module holds what the stores share: the error type, how each database is opened
//! (with the durability settings stated below) and how each component's schema is
#![cfg_attr(feature = "sqlite", doc = "created and migrated ([`sqlite::migrate`],")]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "created and migrated (`sqlite::migrate`,"
)]
#![cfg_attr(
    feature = "postgres",
    doc = "[`postgres::migrate`]: one versioned list"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "`postgres::migrate`: one versioned list"
)]
//! of migrations per component, recorded in the table `faultline_schema`).
//!
//! # Durability, stated
//!
//! - **SQLite** runs in WAL mode with `synchronous = FULL`: a transaction's commit
//!   returns only after the WAL is fsynced, so a committed write survives a process
//!   kill and a power cut. One process writes at a time (SQLite takes a file lock for
//!   each write transaction; others wait up to the busy timeout); many may read.
//! - **Postgres** is as durable as the server is configured (`fsync = on` and
//!   `synchronous_commit = on`, its defaults): a commit returns after the WAL reached
//!   disk.
//! - **memory** survives nothing but a dropped handle (clones share the state).
//!
//! The stores are synchronous. The tokio adapters call them on blocking threads
//! (`spawn_blocking`), never on the runtime's own, so an fsync never stalls other tasks.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Why a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The SQLite database failed.
    #[cfg(feature = "sqlite")]
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The Postgres server failed, or the connection to it.
    #[cfg(feature = "postgres")]
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// Reading or writing a file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value could not be read back: the store was damaged or written by
    /// something else.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being read (a table, a file).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The database holds a schema newer than this build of faultline knows.
    #[error(
        "the database's {component} schema is at version {found}, newer than this faultline knows ({known}): upgrade faultline"
    )]
    SchemaTooNew {
        /// The component (`queue`, `event_store`, `saga_log`, ...).
        component: String,
        /// The version the database holds.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A value does not fit the database's 64-bit signed integers (an instant, a
    /// version, a job id or a fencing token above `i64::MAX`): nothing was written.
    #[error("{what} {value} is too large for the database (at most {max})", max = i64::MAX)]
    OutOfRange {
        /// What the value is (`version`, `job id`, `instant`, ...).
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A throwaway test server could not be started or reached.
    #[error("test server: {0}")]
    TestServer(String),
    /// The configuration asks for something this store does not do (yet): refused
    /// when the store is opened rather than ignored.
    #[error("this store does not support `{what}` yet: leave it unset, or use the in-memory queue")]
    Unsupported {
        /// The configuration knob (`leases_per_target_max`, ...).
        what: &'static str,
    },
}

/// One migration of a component's schema: applied once, in order, inside a
/// transaction; its index in the list (counting from 1) is the schema version it
/// brings the database to.
pub type Migration = &'static str;
