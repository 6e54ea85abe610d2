//! Deliberately broken queues, workers, targets and producers ("mutants") that the
//! queue invariants must catch. The first five, (a) to (e), are the classic outbox bugs.

use crate::config::ConfigError;
use crate::harness::Mutant;
use crate::queue::core::{Flaw, Queue};
use crate::queue::invariants;
use crate::queue::pattern::QueuePattern;
use crate::queue::world::{QueueKnobs, QueueWorld};

/// The world for `knobs` with the reference queue, targets and producers carrying
/// `flaw`.
fn flawed(knobs: &QueueKnobs, flaw: Flaw) -> Result<QueueWorld<Queue>, ConfigError> {
    let mut queue = knobs.reference_queue()?;
    queue.flaw = flaw;
    QueueWorld::with_flaw(knobs.clone(), queue, flaw)
}

/// The world for `knobs` with a per-target lease limit of one, and the reference
/// queue carrying `flaw`.
fn limited(knobs: &QueueKnobs, flaw: Flaw) -> Result<QueueWorld<Queue>, ConfigError> {
    let knobs = QueueKnobs {
        leases_per_target_max: Some(1),
        ..knobs.clone()
    };
    flawed(&knobs, flaw)
}

/// The catalog.
pub const CATALOG: &[Mutant<QueuePattern>] = &[
    Mutant::new(
        "due_without_leases",
        "(a) `due()` without leases: a task handed out stays due, so two workers deliver it (a naive outbox poller)",
        invariants::SINGLE_LEASE,
        |k| flawed(k, Flaw::DueWithoutLeases),
    ),
    Mutant::new(
        "dropped_after_max_attempts",
        "(b) a task is dropped after its last attempt instead of dead-lettered (the Go outbox's `MarkFailed`)",
        invariants::RETRY_OR_DEAD_LETTER,
        |k| flawed(k, Flaw::DropAfterMaxAttempts),
    ),
    Mutant::new(
        "ack_before_delivery",
        "(c) the worker acks the task before it delivers it: a failed delivery is never retried",
        invariants::NO_LOST_UPDATE,
        |k| flawed(k, Flaw::AckBeforeDelivery),
    ),
    Mutant::new(
        "apply_without_version_check",
        "(d) a target writes whatever version arrives (no version check, nor its disguise, the fence check): a delayed older update overwrites a newer one",
        invariants::NEVER_BACKWARDS,
        |k| flawed(k, Flaw::NoVersionCheck),
    ),
    Mutant::new(
        "outbox_not_atomic",
        "(e) the profile write commits, then its tasks are enqueued directly: lost while the queue is down",
        invariants::NO_LOST_UPDATE,
        |k| flawed(k, Flaw::NonAtomicOutbox),
    ),
    Mutant::new(
        "reapply_same_version",
        "a target re-applies the version it holds (`>=` for `>`): a duplicated delivery takes effect twice",
        invariants::AT_MOST_ONCE,
        |k| flawed(k, Flaw::ReapplySameVersion),
    ),
    Mutant::new(
        "lease_never_expires",
        "no visibility timeout: the task of a crashed worker stays hidden forever",
        invariants::SINGLE_LEASE,
        |k| flawed(k, Flaw::LeaseNeverExpires),
    ),
    Mutant::new(
        "no_fencing",
        "an ack is taken without checking the fencing token: a late worker ends the lease of the worker that took over, so the task is handed out a third time",
        invariants::SINGLE_LEASE,
        |k| flawed(k, Flaw::NoFencing),
    ),
    // Caught only by a crash of the queue: on 21 of 200 seeds (`sweep queue --mutant
    // ack_before_commit --seeds 0..200`), of the 34 whose plan crashes it (on the
    // others the writes the crash lost left no trace the world sees).
    Mutant::new(
        "ack_before_commit",
        "the queue answers enqueue, lease, ack and nack before their writes are committed, and commits every 8 commands (a lagging group commit): a crash of the queue loses what it answered since",
        // Also caught by queue.fences_grow (a lost lease's token handed out again),
        // often first.
        invariants::CONSERVATION,
        |k| flawed(k, Flaw::AckBeforeCommit),
    ),
    Mutant::new(
        "enqueue_in_own_task",
        "each enqueue writes its version in a task of its own that lands up to 1 ms later, last write wins: of two versions enqueued closer together, the older may overwrite the newer, which is never delivered",
        invariants::NO_LOST_UPDATE,
        |k| flawed(k, Flaw::EnqueueInOwnTask),
    ),
    Mutant::new(
        "redrive_out_of_order",
        "redrive puts a dead version back even when a newer one was enqueued since",
        invariants::REDRIVE_ORDER,
        |k| flawed(k, Flaw::RedriveOutOfOrder),
    ),
    Mutant::new(
        "no_lease_reports_none",
        "the queue takes no lease and honestly says so: a lease hands the task out without hiding it and reports its deadline as `now`, so two workers deliver the same task at once",
        invariants::SINGLE_LEASE,
        |k| flawed(k, Flaw::NoLease),
    ),
    Mutant::new(
        "heartbeat_not_extended",
        "a heartbeat is accepted and reports the extended deadline but extends nothing: the task of a worker still delivering is handed to another at the original deadline",
        invariants::SINGLE_LEASE,
        |k| flawed(k, Flaw::HeartbeatNotExtended),
    ),
    Mutant::new(
        "heartbeat_ignored",
        "a heartbeat is accepted but extends nothing, and honestly reports the unchanged deadline: the worker's lease runs out under it",
        invariants::SINGLE_LEASE,
        |k| flawed(k, Flaw::HeartbeatIgnored),
    ),
    Mutant::new(
        "unique_jobs_coalesce_by_type",
        "the queue treats a job without a key as keyed by its type: a unique job replaces one of the same type still waiting, which never runs",
        invariants::EXACTLY_ONCE,
        |k| flawed(k, Flaw::UniqueCoalesceByType),
    ),
    Mutant::new(
        "inbox_without_dedupe",
        "a target applies every delivery of a unique job (no dedupe by job id): a duplicated or retried delivery takes effect twice",
        invariants::EXACTLY_ONCE,
        |k| flawed(k, Flaw::NoDedupe),
    ),
    Mutant::new(
        "run_at_ignored",
        "the queue ignores a job's run-at: a job meant for later is handed out as soon as it is enqueued",
        invariants::NOT_BEFORE_RUN_AT,
        |k| flawed(k, Flaw::RunAtIgnored),
    ),
    Mutant::new(
        "dead_letter_without_error",
        "a dead letter keeps no error text: an operator cannot tell why the job died",
        invariants::RETRY_OR_DEAD_LETTER,
        |k| flawed(k, Flaw::DeadLetterWithoutError),
    ),
    Mutant::new(
        "target_limit_ignored",
        "the queue declares one lease per target but ignores it: a target's jobs go to every worker that asks, so a slow target can hold them all",
        invariants::SINGLE_LEASE,
        |k| limited(k, Flaw::TargetLimitIgnored),
    ),
];
