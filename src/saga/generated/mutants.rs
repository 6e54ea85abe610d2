//! Deliberately broken orchestrators (every `Flaw` of the core that applies to any
//! definition) and one broken participant, that the invariants must catch in the
//! generated saga world.

use crate::config::ConfigError;
use crate::harness::Mutant;
use crate::saga::SagaConfigBuilder;
use crate::saga::generated::AnyKnobs;
use crate::saga::generated::pattern::{AnyPattern, AnyWorld};
use crate::saga::invariants as inv;
use crate::saga::orchestrated::core::Flaw;
use std::time::Duration;

/// The reference world for `knobs` with the orchestrator carrying `flaw`.
fn flawed(knobs: &AnyKnobs, flaw: Flaw) -> Result<AnyWorld, ConfigError> {
    AnyPattern::world(
        knobs,
        knobs.config_builder().build()?,
        flaw,
        knobs.ledgers(),
    )
}

/// The world with the orchestrator configured by the knobs' builder changed by `f`,
/// carrying `flaw`.
fn reconfigured(
    knobs: &AnyKnobs,
    flaw: Flaw,
    f: impl FnOnce(SagaConfigBuilder) -> SagaConfigBuilder,
) -> Result<AnyWorld, ConfigError> {
    AnyPattern::world(
        knobs,
        f(knobs.config_builder()).build()?,
        flaw,
        knobs.ledgers(),
    )
}

/// The catalog.
pub const CATALOG: &[Mutant<AnyPattern>] = &[
    Mutant::new(
        "compensations_not_retried",
        "a failed compensation is not retried and its error ignored",
        inv::CONSERVATION,
        |k| flawed(k, Flaw::CompensationsNotRetried),
    ),
    Mutant::new(
        "skip_last_compensation",
        "the last completed step is not compensated",
        inv::CONSERVATION,
        |k| flawed(k, Flaw::SkipLastCompensation),
    ),
    Mutant::new(
        "ledger_not_idempotent",
        "the last step's ledger applies a duplicated or retried action again",
        inv::IDEMPOTENT,
        |k| {
            AnyPattern::world(
                k,
                k.config_builder().build()?,
                Flaw::None,
                k.ledgers().last_not_idempotent(),
            )
        },
    ),
    Mutant::new(
        "send_before_log",
        "a command is sent before the log records its intent",
        inv::WRITE_AHEAD,
        |k| flawed(k, Flaw::SendBeforeLog),
    ),
    Mutant::new(
        "compensate_never_sent",
        "compensations run for steps that never happened",
        inv::COMPENSATION_ORDER,
        |k| flawed(k, Flaw::CompensateNeverSent),
    ),
    Mutant::new(
        "uncapped_backoff",
        "the retry backoff ignores its cap: sagas settle long after the faults healed",
        inv::SETTLING,
        |k| flawed(k, Flaw::UncappedBackoff),
    ),
    Mutant::new(
        "silent_failure",
        "a saga whose compensation keeps failing is given up on without an alert",
        inv::AT_REST,
        |k| flawed(k, Flaw::SilentFailure),
    ),
    Mutant::new(
        "no_start_record",
        "a saga is started without writing its start record",
        inv::WRITE_AHEAD,
        |k| flawed(k, Flaw::NoStartRecord),
    ),
    Mutant::new(
        "started_wrong_payload",
        "the start record logs a job of one more than the amount given",
        inv::STARTED_AS_SUBMITTED,
        |k| flawed(k, Flaw::StartedWrongOrder),
    ),
    Mutant::new(
        "retries_beyond_declared",
        "declares the reference's attempts, but tries each action and compensation once more",
        inv::RETRIES,
        |k| {
            reconfigured(k, Flaw::DeclaresFewerAttempts, |b| {
                b.attempts_max(k.base.attempts_max + 1)
                    .compensation_attempts_max(k.base.compensation_attempts_max + 1)
            })
        },
    ),
    Mutant::new(
        "timeout_shorter_than_declared",
        "declares the reference's step timeout, but gives up on a silent attempt after half of it",
        inv::RETRIES,
        |k| {
            reconfigured(k, Flaw::DeclaresLongerTimeout, |b| {
                b.step_timeout(Duration::from_millis(k.base.step_timeout_ms) / 2)
            })
        },
    ),
    Mutant::new(
        "misconfigured",
        "the reference built with one attempt per action more than the knobs', declared honestly",
        inv::CONFORMANCE,
        |k| reconfigured(k, Flaw::None, |b| b.attempts_max(k.base.attempts_max + 1)),
    ),
];
