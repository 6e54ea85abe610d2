//! Deliberately broken guards ("mutants") that the invariants must catch. Each is the
//! reference [`Guard`] with one defect; `faultline mutants` and the tests run them
//! through the harness and require a violation.

use crate::breaker::circuit::CallOutcome;
use crate::breaker::contract::{ApiError, ApiReply};
use crate::breaker::guard::{Flaw, Guard, classify};
use crate::breaker::invariants;
use crate::breaker::pattern::BreakerPattern;
use crate::breaker::world::{SmsKnobs, SmsWorld};
use crate::config::ConfigError;
use crate::harness::Mutant;
use faultline_sim::SimRng;

/// The SMS world with `guard` in it.
fn world(knobs: &SmsKnobs, guard: Guard) -> Result<SmsWorld<Guard>, ConfigError> {
    SmsWorld::new(knobs.clone(), guard)
}

fn flawed(knobs: &SmsKnobs, flaw: Flaw) -> Result<SmsWorld<Guard>, ConfigError> {
    world(knobs, knobs.reference_guard()?.with_flaw(flaw))
}

/// Counts a bad request as a failure of the API.
fn classify_ignored_as_failure(reply: &ApiReply) -> CallOutcome {
    match reply {
        ApiReply::Err(ApiError::InvalidNumber) => CallOutcome::Failure,
        other => classify(other),
    }
}

/// The catalog.
pub const CATALOG: &[Mutant<BreakerPattern>] = &[
    Mutant::new(
        "half_open_admits_all",
        "half-open admits every call (as failsafe-rs and recloser do)",
        invariants::HALF_OPEN_LIMIT,
        |k| flawed(k, Flaw::HalfOpenAdmitsAll),
    ),
    Mutant::new(
        "no_timeout",
        "no timeout on slow calls",
        invariants::RESPONSIVENESS,
        |k| flawed(k, Flaw::NoTimeout),
    ),
    Mutant::new(
        "permit_leak_on_cancel",
        "a half-open permit is never released when its call is cancelled (stuck half-open)",
        invariants::CLOSES_AFTER_RECOVERY,
        |k| flawed(k, Flaw::PermitLeakOnCancel),
    ),
    Mutant::new(
        "retries_outside_breaker",
        "retries outside the breaker, without a budget",
        invariants::NO_CALL_WHILE_OPEN,
        |k| flawed(k, Flaw::RetriesOutsideBreaker),
    ),
    Mutant::new(
        "bypass_breaker",
        "calls skip the breaker altogether (a code path that forgot to wrap the call)",
        invariants::LOAD_BOUND,
        |k| flawed(k, Flaw::BypassBreaker),
    ),
    Mutant::new(
        "ignored_counted_as_failure",
        "ignored errors (bad requests) counted as failures",
        invariants::TRIP_SOUNDNESS,
        |k: &SmsKnobs| {
            let mut config = k.guard_config()?;
            config.classifier = classify_ignored_as_failure;
            world(
                k,
                Guard::new(config, SimRng::new(k.seed).fork("sms.guard"))?,
            )
        },
    ),
];
