//! # faultline-sim
//!
//! A deterministic, seeded discrete-event simulator whose fault plans are data. It knows
//! nothing of any resilience pattern: a pattern's model implements [`World`], and the
//! engine runs it on a virtual clock under a [`FaultPlan`] from one `u64` seed.
//!
//! - [`time`]: `SimTime`/`SimDuration` in integer nanoseconds; no wall clock in a run.
//! - [`queue`]: the event queue, `(time, seq)` order, FIFO at equal times, cancellable.
//! - [`rng`]: ChaCha8 streams with `fork(label)`; exact `Ratio` probabilities.
//! - [`fault`]: `FaultPlan` (JSON round-trippable), swarm generation, proptest strategy.
//! - [`world`]: the `World` trait and the `Ctx` a world works through.
//! - [`run`]: `Simulation` (safety phase, then liveness phase, both bounded).
//! - [`trace`]: trace (off / ring / full), stable digest, coverage marks.
//! - [`sweep`](mod@sweep): many seeds on all cores, shards `i/n`, mergeable summaries.
//! - [`check`]: the determinism self-check.
//! - [`report`]: self-contained HTML reports of a run and of a sweep (askama, plotters SVG).
//! - [`shrink`]: shrinking a failing plan found by a seed.
//!
//! Determinism rules: one thread per run; all randomness from the seed through labelled
//! forks; no iteration over randomly-seeded hash maps; time only from the queue.
//!
//! # Features
//!
//! - `report` (default): rendering the HTML reports, `report::render_run` and
//!   `report::render_index` (askama, plotters). The report model is always there.
//! - `proptest` (default): `FaultPlan::strategy`, fault plans as a proptest strategy.

// Without a feature, the docs name the items it gates; the default build checks every link.
#![cfg_attr(
    not(all(feature = "report", feature = "proptest")),
    allow(rustdoc::broken_intra_doc_links)
)]

pub mod check;
pub mod fault;
pub mod queue;
pub mod report;
pub mod rng;
pub mod run;
pub mod shrink;
pub mod sketch;
pub mod sweep;
pub mod time;
pub mod trace;
pub mod world;

pub use check::{DeterminismError, check_determinism, compare_runs};
pub use fault::{
    Fault, FaultKind, FaultKindTag, FaultPlan, FaultProfile, FaultState, FaultView, LinkFate,
    PlanError,
};
pub use queue::{EventQueue, TimerId};
pub use rng::{Ratio, RatioError, SimRng};
pub use run::{Failure, Outcome, RunReport, Simulation};
pub use sweep::{SeedRange, Shard, SweepError, SweepSummary, sweep};
pub use time::{SimDuration, SimTime};
pub use trace::{Coverage, Digest, TraceEntry, TraceMode};
pub use world::{Ctx, FaultEdge, Phase, Violation, World};

/// Everything a world author needs, in one import.
pub mod prelude {
    pub use crate::fault::{Fault, FaultKind, FaultKindTag, FaultPlan, FaultProfile};
    pub use crate::rng::{Ratio, SimRng};
    pub use crate::run::{Outcome, RunReport, Simulation};
    pub use crate::time::{SimDuration, SimTime};
    pub use crate::trace::TraceMode;
    pub use crate::world::{Ctx, FaultEdge, Phase, Violation, World};
}
