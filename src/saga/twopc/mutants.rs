//! Deliberately broken coordinators and participants ("mutants") that the 2PC
//! invariants must catch.

use crate::config::ConfigError;
use crate::saga::checkout::SagaKnobs;
use crate::saga::twopc::core::Flaw;
use crate::saga::twopc::world::{TwoPcWorld, run_world};
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
    /// The world for `knobs` with this mutant in it.
    pub fn world(&self, knobs: SagaKnobs) -> Result<TwoPcWorld, ConfigError> {
        TwoPcWorld::with(knobs, self.flaw)
    }

    /// Runs this mutant for `seed` under `plan`.
    pub fn run_plan(
        &self,
        seed: u64,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> Result<(RunReport, TwoPcWorld), ConfigError> {
        let knobs = SagaKnobs::from_seed(seed);
        Ok(run_world(self.world(knobs)?, plan, trace))
    }

    /// Runs this mutant for `seed` under the seed's plan.
    pub fn run(&self, seed: u64, trace: TraceMode) -> Result<(RunReport, TwoPcWorld), ConfigError> {
        let plan = SagaKnobs::from_seed(seed).fault_plan();
        self.run_plan(seed, plan, trace)
    }
}

/// The catalog.
pub const CATALOG: &[Mutant] = &[
    Mutant {
        name: "decision_before_log",
        defect: "the coordinator sends Commit or Abort before the decision is durable (a crash then presumes abort after a commit went out)",
        expected: "twopc.write_ahead",
        flaw: Flaw::SendBeforeLog,
    },
    Mutant {
        name: "unilateral_abort",
        defect: "a participant in doubt gives up after the vote timeout and aborts on its own, though it voted Yes",
        expected: "twopc.at_rest",
        flaw: Flaw::UnilateralAbort,
    },
    Mutant {
        name: "prepare_not_idempotent",
        defect: "a duplicated Prepare makes its tentative change again (stock held, card authorised twice)",
        expected: "twopc.idempotent",
        flaw: Flaw::PrepareNotIdempotent,
    },
    Mutant {
        name: "lock_leak_on_abort",
        defect: "the inventory does not release the stock row's lock when a transaction aborts",
        expected: "twopc.locks_released",
        flaw: Flaw::LockLeak,
    },
    Mutant {
        name: "abort_loses_stock",
        defect: "the inventory releases an aborted reservation without returning its stock",
        expected: "twopc.conservation",
        flaw: Flaw::AbortLosesStock,
    },
];
