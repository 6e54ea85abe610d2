//! CQRS with event sourcing: the state of an aggregate is the fold of its events, writes
//! race with optimistic concurrency (a conflicting write is refused, never lost), and
//! read models follow the global log through a checkpoint until they equal its fold.
//!
//! - [`core`]: the generic, sans-IO parts: the [`EventStore`] (append-only streams,
//!   expected version any / no stream / exact, versions 1..n without gaps, a global
//!   position), the command side ([`Aggregate`], [`Repository`] with snapshots every k
//!   events), upcasting ([`Upcast`]) and the query side ([`Projection`],
//!   [`ProjectionRunner`]: a catch-up subscription with a checkpoint, idempotent apply
//!   by position, rebuild from scratch beside the live model).
//! - [`item`]: the domain, an inventory [`Item`] whose withdrawals compete for stock,
//!   its schema-1 events and the [`StockView`] read model.
//! - [`contract`]: [`EventSourced`](contract::EventSourced), what the simulated world
//!   drives; [`Inventory`](contract::Inventory) is the reference.
#![cfg_attr(
    feature = "tokio",
    doc = "- [`tokio`]: async command handling with conflict retry, and projection runner tasks,"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "- `tokio` (feature `tokio`): async command handling with conflict retry, and projection runner tasks,"
)]
//!   a driver of the same sans-IO decision cores (the command retry policy and the
//!   projection follower, in the crate-private `driver`) that the simulated world's
//!   clients and projections drive.
//! - [`store`]: where the events live when they must survive a crash: the
//!   [`EventStorage`](store::EventStorage) trait (memory, SQLite, Postgres), projection
//!   checkpoints, exactly-once projectors, and the durable command path
//!   ([`StoredRepository`](store::StoredRepository)).
#![cfg_attr(
    feature = "sim",
    doc = "- [`world`], [`invariants`], [`mutants`], [`pattern`]: the simulated world, its"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `world`, `invariants`, `mutants`, `pattern` (feature `sim`): the simulated world, its"
)]
//!   promises, the broken implementations they catch, and the harness entry.
//!
//! ```
//! use faultline::cqrs::{
//!     Item, ItemCommand, ProjectionRunner, Repository, Step, StockView, StoredEvent, StreamId,
//! };
//!
//! let mut repo = Repository::<Item, StoredEvent>::new(10).unwrap();
//! repo.execute(StreamId(1), &ItemCommand::Restock { units: 8 }).unwrap();
//! repo.execute(StreamId(1), &ItemCommand::Withdraw { units: 5 }).unwrap(); // + LowStock
//!
//! let mut view = ProjectionRunner::<StockView>::new(100).unwrap();
//! while view.step(repo.store()) != Step::Idle {}
//! assert_eq!(view.read_model().stock[&StreamId(1)], 3);
//! assert!(view.read_model().low.contains(&StreamId(1)));
//! assert_eq!(view.checkpoint(), repo.store().head());
//! ```

pub mod contract;
pub mod core;
#[cfg(any(feature = "tokio", feature = "sim"))]
pub(crate) mod driver;
#[cfg(feature = "hosted")]
pub mod hosted;
#[cfg(feature = "sim")]
pub mod invariants;
pub mod item;
#[cfg(feature = "sim")]
pub mod mutants;
#[cfg(feature = "sim")]
pub mod pattern;
pub mod store;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "sim")]
pub mod world;

pub use self::core::{
    Aggregate, AppendError, Appended, CURRENT_SCHEMA, EventStore, ExecuteError, Executed,
    ExpectedVersion, Projection, ProjectionRunner, Recorded, Rehydrated, Repository, Snapshot,
    Step, StreamId, Upcast,
};
pub use self::item::{
    Item, ItemCommand, ItemEvent, ItemRejection, LOW_STOCK, StockView, StoredEvent,
};
