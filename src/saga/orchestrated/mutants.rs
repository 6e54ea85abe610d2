//! Deliberately broken orchestrators and services ("mutants") that the saga invariants
//! must catch.

use crate::config::ConfigError;
use crate::harness::Mutant;
use crate::saga::checkout::SagaKnobs;
use crate::saga::invariants as inv;
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::core::Flaw;
use crate::saga::orchestrated::pattern::SagaPattern;
use crate::saga::orchestrated::world::SagaWorld;
use std::time::Duration;

/// The world for `knobs` with the orchestrator carrying `flaw`, and payment idempotent
/// or not.
fn flawed(
    knobs: &SagaKnobs,
    flaw: Flaw,
    idempotent_payment: bool,
) -> Result<SagaWorld, ConfigError> {
    SagaWorld::with(knobs.clone(), flaw, idempotent_payment)
}

/// The world for `knobs` with the orchestrator configured by `knobs`' configuration
/// changed by `change`, and carrying `flaw`.
fn reconfigured(
    knobs: &SagaKnobs,
    flaw: Flaw,
    change: impl FnOnce(&SagaKnobs) -> Result<SagaConfig, ConfigError>,
) -> Result<SagaWorld, ConfigError> {
    SagaWorld::with_config(knobs.clone(), change(knobs)?, flaw, true)
}

/// `knobs`' configuration with its builder changed by `f`.
fn config_with(
    knobs: &SagaKnobs,
    f: impl FnOnce(crate::saga::SagaConfigBuilder) -> crate::saga::SagaConfigBuilder,
) -> Result<SagaConfig, ConfigError> {
    f(knobs.config_builder()).build()
}

/// Recovery that presumes an action in flight at the crash failed and compensates the
/// saga. No single run can tell (compensating is a legal ending), so it is not in the
/// [`CATALOG`] that `faultline mutants` sweeps; the crash-equivalence property (a run
/// with orchestrator crashes ends every saga as the same run without them) catches it,
/// in `tests/sim/saga.rs`.
pub const RECOVERY_PRESUMES_FAILURE: Mutant<SagaPattern> = Mutant::new(
    "recovery_presumes_failure",
    "recovery presumes an action in flight at the crash failed, and compensates the saga",
    "saga.crash_equivalence",
    |k| flawed(k, Flaw::RecoveryPresumesFailure, true),
);

/// Takes an action answered `Reply::Failed` for a refusal, so a step whose service did
/// the work before failing is never compensated. Caught by `saga.conservation` in the
/// world whose injected errors answer `Failed`
/// ([`answering_errors_as_failed`](SagaWorld::answering_errors_as_failed)); the default
/// world loses those replies instead, so it is not in [`CATALOG`].
pub const FAILED_IS_REFUSAL: Mutant<SagaPattern> = Mutant::new(
    "failed_is_refusal",
    "an action answered Failed (outcome unknown) is taken for a refusal and never compensated",
    inv::CONSERVATION,
    |k| Ok(flawed(k, Flaw::FailedIsRefusal, true)?.answering_errors_as_failed()),
);

/// The catalog.
pub const CATALOG: &[Mutant<SagaPattern>] = &[
    Mutant::new(
        "compensations_not_retried",
        "a failed compensation is not retried and its error ignored (a common first-draft orchestrator)",
        inv::CONSERVATION,
        |k| flawed(k, Flaw::CompensationsNotRetried, true),
    ),
    Mutant::new(
        "skip_last_compensation",
        "the last completed step is not compensated",
        inv::CONSERVATION,
        |k| flawed(k, Flaw::SkipLastCompensation, true),
    ),
    Mutant::new(
        "payment_not_idempotent",
        "payment without idempotency: a duplicated charge is applied twice",
        inv::IDEMPOTENT,
        |k| flawed(k, Flaw::None, false),
    ),
    Mutant::new(
        "send_before_log",
        "a command is sent before the log records its intent",
        inv::WRITE_AHEAD,
        |k| flawed(k, Flaw::SendBeforeLog, true),
    ),
    Mutant::new(
        "compensate_never_sent",
        "compensations run for steps that never happened (release of stock never reserved)",
        inv::COMPENSATION_ORDER,
        |k| flawed(k, Flaw::CompensateNeverSent, true),
    ),
    Mutant::new(
        "uncapped_backoff",
        "the retry backoff ignores its cap: delays double without bound, so sagas settle long after the faults healed",
        inv::SETTLING,
        |k| flawed(k, Flaw::UncappedBackoff, true),
    ),
    Mutant::new(
        "silent_failure",
        "a saga whose compensation keeps failing is given up on without an alert (left half-done, silently)",
        inv::AT_REST,
        |k| flawed(k, Flaw::SilentFailure, true),
    ),
    Mutant::new(
        "no_start_record",
        "a saga is started without writing its start record: it runs, but a recovery does not know it",
        inv::WRITE_AHEAD,
        |k| flawed(k, Flaw::NoStartRecord, true),
    ),
    Mutant::new(
        "started_wrong_order",
        "the start record logs one unit more than the order given (the live run is right; a recovery would not be)",
        inv::STARTED_AS_SUBMITTED,
        |k| flawed(k, Flaw::StartedWrongOrder, true),
    ),
    Mutant::new(
        "retries_beyond_declared",
        "declares the reference's attempts, but tries each action and compensation once more",
        inv::RETRIES,
        |k| {
            reconfigured(k, Flaw::DeclaresFewerAttempts, |k| {
                config_with(k, |b| {
                    b.attempts_max(k.attempts_max + 1)
                        .compensation_attempts_max(k.compensation_attempts_max + 1)
                })
            })
        },
    ),
    Mutant::new(
        "timeout_shorter_than_declared",
        "declares the reference's step timeout, but gives up on a silent attempt after half of it",
        inv::RETRIES,
        |k| {
            reconfigured(k, Flaw::DeclaresLongerTimeout, |k| {
                config_with(k, |b| {
                    b.step_timeout(Duration::from_millis(k.step_timeout_ms) / 2)
                })
            })
        },
    ),
    // Caught only by a crash of the orchestrator (an acknowledgement that is not yet
    // true is invisible until a crash makes it false): on 28 of 200 seeds, which are
    // exactly the 28 whose plan crashes it (`sweep saga --mutant ack_before_sync
    // --seeds 0..200`).
    Mutant::new(
        "ack_before_sync",
        "the log store acknowledges an append as soon as it is written and leaves the sync to the OS write-back 5 s later (a file log without fsync): commands and acceptances go out on records a crash then loses",
        inv::AT_REST,
        |k| Ok(flawed(k, Flaw::None, true)?.acking_before_sync()),
    ),
    Mutant::new(
        "misconfigured",
        "the reference built with one attempt per action more than the knobs', declared honestly",
        inv::CONFORMANCE,
        |k| {
            reconfigured(k, Flaw::None, |k| {
                config_with(k, |b| b.attempts_max(k.attempts_max + 1))
            })
        },
    ),
];
