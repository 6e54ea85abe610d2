//! Deliberately broken guards ("mutants") that the invariants must catch. Each is the
//! reference [`Guard`] with one defect, in a world that also checks conformance to the
//! reference's settings, as the reference's is; `faultline mutants` and the tests run
//! them through the harness and require a violation.

use crate::breaker::circuit::{BreakerConfig, CallOutcome};
use crate::breaker::contract::{ApiError, ApiReply};
use crate::breaker::guard::{Flaw, Guard, classify};
use crate::breaker::invariants;
use crate::breaker::pattern::BreakerPattern;
use crate::breaker::world::{SmsKnobs, SmsWorld};
use crate::config::ConfigError;
use crate::harness::Mutant;
use faultline_sim::SimRng;

/// The SMS world with `guard` in it, held to the reference's settings.
fn world(knobs: &SmsKnobs, guard: Guard) -> Result<SmsWorld<Guard>, ConfigError> {
    SmsWorld::new(knobs.clone(), guard)?.conforming_to_reference()
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
        "half_open_fake_restarts",
        "half-open admits every call, reporting a fresh half-open episode before each extra one",
        invariants::HALF_OPEN_LIMIT,
        |k| flawed(k, Flaw::HalfOpenAdmitsAllDisguised),
    ),
    Mutant::new(
        "half_open_count_lags",
        "half-open reads its probe count from a replica 500 us behind (a breaker shared through a store): a caller within that of the last probe is admitted past the limit",
        invariants::HALF_OPEN_LIMIT,
        |k| flawed(k, Flaw::HalfOpenCountLags),
    ),
    Mutant::new(
        "half_open_refunds_on_success",
        "half-open gives a probe's permit back when it succeeds, not only when it is cancelled or ignored (a counter that floods)",
        invariants::HALF_OPEN_LIMIT,
        |k| flawed(k, Flaw::HalfOpenRefundsOnSuccess),
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
        "calls skip the breaker altogether (a code path that forgot to wrap the call): its window \
         never sees the calls the world saw, nor the failures its rule should trip on",
        invariants::ACCOUNTING,
        |k| flawed(k, Flaw::BypassBreaker),
    ),
    Mutant::new(
        "failed_probe_closes",
        "a probe that fails in half-open closes the breaker (the branch of the verdict turned \
         round): each time it opens, the next failed probe lets the whole traffic back onto the \
         broken API",
        invariants::LOAD_BOUND,
        |k| flawed(k, Flaw::FailedProbeCloses),
    ),
    Mutant::new(
        "ignored_counted_as_failure",
        "ignored errors (bad requests) counted as failures, in a guard that reports no window \
         (its window would show them at once)",
        invariants::TRIP_SOUNDNESS,
        |k: &SmsKnobs| {
            let mut config = k.guard_config()?;
            config.classifier = classify_ignored_as_failure;
            world(
                k,
                Guard::new(config, SimRng::new(k.seed).fork("sms.guard"))?.without_window_report(),
            )
        },
    ),
    Mutant::new(
        "declares_longer_wait",
        "declares a wait in open twice as long as the one it keeps (a declaration that overpromises)",
        invariants::NO_CALL_WHILE_OPEN,
        // Judged by its declaration alone: conformance would catch the declaration first.
        |k: &SmsKnobs| {
            SmsWorld::new(
                k.clone(),
                k.reference_guard()?.with_flaw(Flaw::DeclaresLongerWait),
            )
        },
    ),
    Mutant::new(
        "state_always_closed",
        "state() always says Closed, whatever the breaker did (a self-report that lies)",
        invariants::ACCOUNTING,
        |k| flawed(k, Flaw::StateAlwaysClosed),
    ),
    Mutant::new(
        "rate_in_whole_percent",
        "the window's failure rate is reported in whole percent: what an operator reads is not \
         the rate the breaker decides by",
        invariants::ACCOUNTING,
        |k| flawed(k, Flaw::RateInWholePercent),
    ),
    Mutant::new(
        "misconfigured",
        "the reference built with other settings than the knobs' (minimum calls 1, one more probe), declared honestly",
        invariants::CONFORMANCE,
        |k: &SmsKnobs| {
            let mut config = k.guard_config()?;
            config.breaker = misconfigured(&config.breaker)?;
            world(
                k,
                Guard::new(config, SimRng::new(k.seed).fork("sms.guard"))?,
            )
        },
    ),
    Mutant::new(
        "budget_never_refuses",
        "the retry budget is asked and never says no: a retry storm under an outage",
        invariants::RETRY_BUDGET,
        |k| flawed(k, Flaw::BudgetNeverRefuses),
    ),
    Mutant::new(
        "budget_never_deposits",
        "the retry budget is never credited with the requests: only its reserve is spent, \
         so callers fail for want of retries the budget owed them",
        invariants::RETRY_BUDGET,
        |k| flawed(k, Flaw::BudgetNeverDeposits),
    ),
    Mutant::new(
        "slow_calls_ignored",
        "the breaker never counts a call as slow (its slow-call setting dropped) while the guard \
         declares the slow-call rule, in a guard that reports no window: a slow API is never \
         cut off",
        invariants::TRIPS_WHEN_DUE,
        |k| {
            world(
                k,
                k.reference_guard()?
                    .with_flaw(Flaw::SlowCallsIgnored)
                    .without_window_report(),
            )
        },
    ),
    Mutant::new(
        "retries_one_too_many",
        "the retry loop counts attempts from zero: every request is sent once more than the \
         declared attempts_max allows",
        invariants::RETRY_POLICY,
        |k| flawed(k, Flaw::RetriesOneTooMany),
    ),
    Mutant::new(
        "retries_one_too_few",
        "the retry loop stops one attempt short: callers are given up with a retry the declared \
         policy promised them",
        invariants::RETRY_POLICY,
        |k| flawed(k, Flaw::RetriesOneTooFew),
    ),
    Mutant::new(
        "backoff_uncapped",
        "the backoff doubles without its cap: callers wait longer than the declared backoff allows",
        invariants::RETRY_POLICY,
        |k| flawed(k, Flaw::BackoffUncapped),
    ),
];

/// `breaker` with a minimum of one call and one more half-open probe.
fn misconfigured(breaker: &BreakerConfig) -> Result<BreakerConfig, ConfigError> {
    breaker
        .to_builder()
        .minimum_calls(1)
        .half_open_calls_permitted(breaker.half_open_calls_permitted() + 1)
        .build()
}
