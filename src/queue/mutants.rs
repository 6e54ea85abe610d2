//! Deliberately broken queues, workers, targets and producers ("mutants") that the
//! queue invariants must catch. The first five are the issue's: (a) to (e).

use crate::config::ConfigError;
use crate::queue::core::{Flaw, Queue};
use crate::queue::world::{QueueKnobs, QueueWorld, run_world};
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
    pub fn world(&self, knobs: QueueKnobs) -> Result<QueueWorld<Queue>, ConfigError> {
        let mut queue = knobs.reference_queue()?;
        queue.flaw = self.flaw;
        QueueWorld::with_flaw(knobs, queue, self.flaw)
    }

    /// Runs this mutant for `seed` under `plan`.
    pub fn run_plan(
        &self,
        seed: u64,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> Result<(RunReport, QueueWorld<Queue>), ConfigError> {
        let knobs = QueueKnobs::from_seed(seed);
        Ok(run_world(self.world(knobs)?, plan, trace))
    }
}

/// The catalog.
pub const CATALOG: &[Mutant] = &[
    Mutant {
        name: "due_without_leases",
        defect: "(a) `due()` without leases: a task handed out stays due, so two workers deliver it (the brief's Go outbox)",
        expected: "queue.single_lease",
        flaw: Flaw::DueWithoutLeases,
    },
    Mutant {
        name: "dropped_after_max_attempts",
        defect: "(b) a task is dropped after its last attempt instead of dead-lettered (the Go outbox's `MarkFailed`)",
        expected: "queue.retry_or_dead_letter",
        flaw: Flaw::DropAfterMaxAttempts,
    },
    Mutant {
        name: "ack_before_delivery",
        defect: "(c) the worker acks the task before it delivers it: a failed delivery is never retried",
        expected: "queue.no_lost_update",
        flaw: Flaw::AckBeforeDelivery,
    },
    Mutant {
        name: "apply_without_version_check",
        defect: "(d) a target writes whatever version arrives (no version check, nor its disguise, the fence check): a delayed older update overwrites a newer one",
        expected: "queue.never_backwards",
        flaw: Flaw::NoVersionCheck,
    },
    Mutant {
        name: "outbox_not_atomic",
        defect: "(e) the profile write commits, then its tasks are enqueued directly: lost while the queue is down",
        expected: "queue.no_lost_update",
        flaw: Flaw::NonAtomicOutbox,
    },
    Mutant {
        name: "reapply_same_version",
        defect: "a target re-applies the version it holds (`>=` for `>`): a duplicated delivery takes effect twice",
        expected: "queue.at_most_once",
        flaw: Flaw::ReapplySameVersion,
    },
    Mutant {
        name: "lease_never_expires",
        defect: "no visibility timeout: the task of a crashed worker stays hidden forever",
        expected: "queue.single_lease",
        flaw: Flaw::LeaseNeverExpires,
    },
    Mutant {
        name: "no_fencing",
        defect: "an ack is taken without checking the fencing token: a late worker ends the lease of the worker that took over, so the task is handed out a third time",
        expected: "queue.single_lease",
        flaw: Flaw::NoFencing,
    },
    Mutant {
        name: "volatile_store",
        defect: "the queue acknowledges before its store is synced (every 8 changes): a restart loses tasks",
        expected: "queue.conservation",
        flaw: Flaw::VolatileStore,
    },
    Mutant {
        name: "redrive_out_of_order",
        defect: "redrive puts a dead version back even when a newer one was enqueued since",
        expected: "queue.redrive_order",
        flaw: Flaw::RedriveOutOfOrder,
    },
];
