//! The registry: every pattern the command knows and the comparisons across them. The
//! only file that names every pattern (the harness names none).

use crate::harness::{HarnessError, Pattern, Scenario};
use crate::saga::choreographed::pattern::ChoreoPattern;
use crate::saga::orchestrated::pattern::SagaPattern;
use crate::saga::report::COMPARED;
use crate::saga::twopc::pattern::TwoPcPattern;
use faultline_sim::report::model::Comparison;

/// Every pattern, in the order the command and the reports list them: the sans-IO
/// worlds, then the same patterns' tokio adapters in the tokio harness.
pub fn patterns() -> Vec<&'static dyn Pattern> {
    vec![
        &crate::breaker::pattern::BreakerPattern,
        &crate::bus::pattern::BusPattern,
        &crate::saga::orchestrated::pattern::SagaPattern,
        &crate::saga::generated::pattern::AnyPattern,
        &crate::saga::choreographed::pattern::ChoreoPattern,
        &crate::saga::twopc::pattern::TwoPcPattern,
        &crate::queue::pattern::QueuePattern,
        &crate::cqrs::pattern::CqrsPattern,
        #[cfg(feature = "hosted")]
        &crate::breaker::hosted::BreakerTokioPattern,
        #[cfg(feature = "hosted")]
        &crate::bus::hosted::BusTokioPattern,
        #[cfg(feature = "hosted")]
        &crate::saga::orchestrated::hosted::SagaTokioPattern,
        #[cfg(feature = "hosted")]
        &crate::queue::hosted::QueueTokioPattern,
        #[cfg(feature = "hosted")]
        &crate::cqrs::hosted::pattern::CqrsTokioPattern,
    ]
}

/// The comparisons the sweep report shows when it holds at least two of their patterns:
/// patterns set side by side on metrics they all report under the same names.
pub fn comparisons() -> Vec<Comparison> {
    let strings = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![Comparison {
        title: "Saga vs two-phase commit".to_string(),
        note: "The same checkout three ways: the orchestrated saga (saga), the \
               choreographed saga (saga-choreo) and two-phase commit (twopc). A seed gives \
               all three the same customers, stock, declines, latencies and fault plan, so \
               the columns differ only in the protocol. Throughput: checkouts completed per \
               simulated second of arrivals. Latency: from checkout to the saga or \
               transaction at rest. A saga takes no locks (its stock reservations do not \
               block other checkouts), so its lock figures are 0 by construction; 2PC \
               participants hold row locks from prepare to the decision, and a participant \
               left in doubt holds them through a coordinator crash. Inconsistent: at rest \
               with participants disagreeing on the outcome (2PC), or a saga that ended \
               Failed with an alert, half done."
            .to_string(),
        patterns: strings(&[SagaPattern::NAME, ChoreoPattern::NAME, TwoPcPattern::NAME]),
        metrics: COMPARED
            .iter()
            .map(|(m, u)| (m.to_string(), u.to_string()))
            .collect(),
    }]
}

/// The pattern called `name`.
pub fn find(name: &str) -> Result<&'static dyn Pattern, HarnessError> {
    patterns()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| HarnessError::UnknownPattern {
            name: name.to_string(),
            known: patterns()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The names a pattern says its world knows are the names its plans target: every
    /// fault of every generated plan targets a known name, and every known name is
    /// targeted by some plan.
    #[test]
    fn known_targets_are_what_the_plans_target() {
        for pattern in patterns() {
            let mut known = BTreeSet::new();
            let mut targeted = BTreeSet::new();
            for seed in 0..300 {
                let names = pattern.known_targets(seed);
                for fault in pattern.plan(seed).faults {
                    assert!(
                        names.contains(&fault.target),
                        "{} seed {seed}: a plan targets `{}`, not among {names:?}",
                        pattern.name(),
                        fault.target
                    );
                    targeted.insert(fault.target);
                }
                known.extend(names);
            }
            assert_eq!(
                known,
                targeted,
                "{}: known but never targeted",
                pattern.name()
            );
        }
    }

    /// `faultline list` prints a promise beside every invariant of every built-in
    /// pattern, in the order of its invariants.
    #[test]
    fn every_invariant_has_its_promise() {
        for pattern in patterns() {
            let promises = pattern.promises();
            let names: Vec<&str> = promises.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, pattern.invariants(), "{}", pattern.name());
            for (name, promise) in promises {
                assert!(
                    promise.len() > 20 && !promise.contains('`'),
                    "{}: invariant {name} has no promise in words: {promise:?}",
                    pattern.name()
                );
            }
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        let names: BTreeSet<_> = patterns().iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), patterns().len());
        for p in patterns() {
            assert_eq!(find(p.name()).map(|f| f.name()), Ok(p.name()));
            let metrics: BTreeSet<_> = p.metrics().iter().map(|m| m.0).collect();
            assert_eq!(metrics.len(), p.metrics().len(), "{}", p.name());
            let mutants: BTreeSet<_> = p.mutants().iter().map(|m| m.name).collect();
            assert_eq!(mutants.len(), p.mutants().len(), "{}", p.name());
        }
        assert!(matches!(
            find("nope"),
            Err(HarnessError::UnknownPattern { .. })
        ));
    }
}
