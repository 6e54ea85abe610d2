//! Deliberately broken orchestrators and services ("mutants") that the saga invariants
//! must catch.

use crate::config::ConfigError;
use crate::saga::checkout::SagaKnobs;
use crate::saga::orchestrated::core::Flaw;
use crate::saga::orchestrated::world::{SagaWorld, run_world};
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
    idempotent_payment: bool,
}

/// Recovery that presumes an action in flight at the crash failed and compensates the
/// saga. No single run can tell (compensating is a legal ending), so it is not in the
/// [`CATALOG`] that `faultline mutants` sweeps; the crash-equivalence property (a run
/// with orchestrator crashes ends every saga as the same run without them) catches it,
/// in `tests/sim/saga.rs`.
pub const RECOVERY_PRESUMES_FAILURE: Mutant = Mutant {
    name: "recovery_presumes_failure",
    defect: "recovery presumes an action in flight at the crash failed, and compensates the saga",
    expected: "saga.crash_equivalence",
    flaw: Flaw::RecoveryPresumesFailure,
    idempotent_payment: true,
};

impl Mutant {
    /// The world for `knobs` with this mutant in it.
    pub fn world(&self, knobs: SagaKnobs) -> Result<SagaWorld, ConfigError> {
        SagaWorld::with(knobs, self.flaw, self.idempotent_payment)
    }

    /// Runs this mutant for `seed` under `plan`.
    pub fn run_plan(
        &self,
        seed: u64,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> Result<(RunReport, SagaWorld), ConfigError> {
        let knobs = SagaKnobs::from_seed(seed);
        Ok(run_world(self.world(knobs)?, plan, trace))
    }

    /// Runs this mutant for `seed` under the seed's plan.
    pub fn run(&self, seed: u64, trace: TraceMode) -> Result<(RunReport, SagaWorld), ConfigError> {
        let plan = SagaKnobs::from_seed(seed).fault_plan();
        self.run_plan(seed, plan, trace)
    }
}

/// The catalog.
pub const CATALOG: &[Mutant] = &[
    Mutant {
        name: "compensations_not_retried",
        defect: "a failed compensation is not retried and its error ignored (the brief's original Go orchestrator)",
        expected: "saga.conservation",
        flaw: Flaw::CompensationsNotRetried,
        idempotent_payment: true,
    },
    Mutant {
        name: "skip_last_compensation",
        defect: "the last completed step is not compensated",
        expected: "saga.conservation",
        flaw: Flaw::SkipLastCompensation,
        idempotent_payment: true,
    },
    Mutant {
        name: "payment_not_idempotent",
        defect: "payment without idempotency: a duplicated charge is applied twice",
        expected: "saga.idempotent",
        flaw: Flaw::None,
        idempotent_payment: false,
    },
    Mutant {
        name: "send_before_log",
        defect: "a command is sent before the log records its intent",
        expected: "saga.write_ahead",
        flaw: Flaw::SendBeforeLog,
        idempotent_payment: true,
    },
    Mutant {
        name: "compensate_never_sent",
        defect: "compensations run for steps that never happened (release of stock never reserved)",
        expected: "saga.compensation_order",
        flaw: Flaw::CompensateNeverSent,
        idempotent_payment: true,
    },
    Mutant {
        name: "uncapped_backoff",
        defect: "the retry backoff ignores its cap: delays double without bound, so sagas settle long after the faults healed",
        expected: "saga.settling",
        flaw: Flaw::UncappedBackoff,
        idempotent_payment: true,
    },
    Mutant {
        name: "silent_failure",
        defect: "a saga whose compensation keeps failing is given up on without an alert (left half-done, silently)",
        expected: "saga.at_rest",
        flaw: Flaw::SilentFailure,
        idempotent_payment: true,
    },
];
