//! Deliberately broken inventories ("mutants") the CQRS invariants must catch: the
//! reference with one defect each, (a) to (d) from the issue and two more so every
//! invariant has a mutant to catch.

use crate::config::ConfigError;
use crate::cqrs::contract::Inventory;
use crate::cqrs::core::Flaw;
use crate::cqrs::world::{CqrsKnobs, CqrsWorld, run};
use faultline_sim::{FaultPlan, RunReport, TraceMode};

/// One mutant of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Mutant {
    /// Short name.
    pub name: &'static str,
    /// What is broken.
    pub defect: &'static str,
    /// The invariant expected to catch it.
    pub expected: &'static str,
    flaw: Flaw,
}

impl Mutant {
    /// The broken inventory for these knobs.
    pub fn inventory(&self, knobs: &CqrsKnobs) -> Result<Inventory, ConfigError> {
        let mut inv = knobs.reference()?;
        inv.repository.set_flaw(self.flaw);
        for r in &mut inv.runners {
            r.flaw = self.flaw;
        }
        Ok(inv)
    }

    /// Runs this mutant for `seed` under `plan`.
    pub fn run_plan(
        &self,
        seed: u64,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> Result<(RunReport, CqrsWorld<Inventory>), ConfigError> {
        let knobs = CqrsKnobs::from_seed(seed);
        let inv = self.inventory(&knobs)?;
        Ok(run(&knobs, plan, inv, trace))
    }
}

/// The catalog.
pub const CATALOG: &[Mutant] = &[
    Mutant {
        name: "push_without_checkpoint",
        defect: "(a) events are pushed to the projections after commit, with no checkpoint and no catch-up: \
                 a crash between append and dispatch, or a lost delivery, loses read-model updates",
        expected: "cqrs.caught_up",
        flaw: Flaw::PushNoCheckpoint,
    },
    Mutant {
        name: "checkpoint_before_apply",
        defect: "(b) the checkpoint is written before the event is applied: a crash in between skips it",
        expected: "cqrs.caught_up",
        flaw: Flaw::CheckpointBeforeApply,
    },
    Mutant {
        name: "last_writer_wins",
        defect: "(c) appends skip the expected-version check: of two commands that loaded the same version, both append",
        expected: "cqrs.no_lost_write",
        flaw: Flaw::NoVersionCheck,
    },
    Mutant {
        name: "non_idempotent_apply",
        defect: "(d) the read model applies an event it already applied (a replay or a duplicate) again",
        expected: "cqrs.idempotent_replay",
        flaw: Flaw::NonIdempotentApply,
    },
    Mutant {
        name: "stale_snapshot",
        defect: "a snapshot holds the state one event before the version it claims",
        expected: "cqrs.snapshot_fold",
        flaw: Flaw::StaleSnapshot,
    },
    Mutant {
        name: "rebuild_in_place",
        defect: "a rebuild resets the live read model to empty instead of building a new one beside it",
        expected: "cqrs.monotonic_reads",
        flaw: Flaw::RebuildInPlace,
    },
];
