//! Deliberately broken guards ("mutants") that the invariants must catch. Each is the
//! reference [`Guard`] with one defect; `faultline mutants` and the tests run them
//! through the harness and require a violation.

use crate::breaker::circuit::CallOutcome;
use crate::breaker::contract::{ApiError, ApiReply};
use crate::breaker::guard::{Flaw, Guard, classify};
use crate::breaker::world::SmsKnobs;
use crate::config::ConfigError;
use faultline_sim::SimRng;

/// One mutant of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Mutant {
    /// Short name.
    pub name: &'static str,
    /// What is broken, in words.
    pub defect: &'static str,
    /// The invariant expected to catch it.
    pub expected: &'static str,
    make: fn(&SmsKnobs) -> Result<Guard, ConfigError>,
}

impl Mutant {
    /// The broken guard for these knobs.
    pub fn guard(&self, knobs: &SmsKnobs) -> Result<Guard, ConfigError> {
        (self.make)(knobs)
    }
}

fn flawed(knobs: &SmsKnobs, flaw: Flaw) -> Result<Guard, ConfigError> {
    Ok(knobs.reference_guard()?.with_flaw(flaw))
}

/// Counts a bad request as a failure of the API.
fn classify_ignored_as_failure(reply: &ApiReply) -> CallOutcome {
    match reply {
        ApiReply::Err(ApiError::InvalidNumber) => CallOutcome::Failure,
        other => classify(other),
    }
}

/// The catalog.
pub const CATALOG: &[Mutant] = &[
    Mutant {
        name: "half_open_admits_all",
        defect: "half-open admits every call (failsafe-rs, recloser, the brief's Go breaker)",
        expected: "breaker.half_open_limit",
        make: |k| flawed(k, Flaw::HalfOpenAdmitsAll),
    },
    Mutant {
        name: "no_timeout",
        defect: "no timeout on slow calls",
        expected: "breaker.responsiveness",
        make: |k| flawed(k, Flaw::NoTimeout),
    },
    Mutant {
        name: "permit_leak_on_cancel",
        defect: "a half-open permit is never released when its call is cancelled (stuck half-open)",
        expected: "breaker.closes_after_recovery",
        make: |k| flawed(k, Flaw::PermitLeakOnCancel),
    },
    Mutant {
        name: "retries_outside_breaker",
        defect: "retries outside the breaker, without a budget",
        expected: "breaker.no_call_while_open",
        make: |k| flawed(k, Flaw::RetriesOutsideBreaker),
    },
    Mutant {
        name: "bypass_breaker",
        defect: "calls skip the breaker altogether (a code path that forgot to wrap the call)",
        expected: "breaker.load_bound",
        make: |k| flawed(k, Flaw::BypassBreaker),
    },
    Mutant {
        name: "ignored_counted_as_failure",
        defect: "ignored errors (bad requests) counted as failures",
        expected: "breaker.trip_soundness",
        make: |k| {
            let mut config = k.guard_config()?;
            config.classifier = classify_ignored_as_failure;
            Guard::new(config, SimRng::new(k.seed).fork("sms.guard"))
        },
    },
];
