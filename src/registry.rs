//! The registry: every pattern the command knows and the comparisons across them. The
//! only file that names every pattern (the harness names none).

use crate::harness::{HarnessError, Pattern};
use faultline_sim::report::model::Comparison;

/// Every pattern, in the order the command and the reports list them.
pub fn patterns() -> Vec<&'static dyn Pattern> {
    vec![
        &crate::breaker::pattern::BreakerPattern,
        &crate::bus::pattern::BusPattern,
        &crate::saga::orchestrated::pattern::SagaPattern,
        &crate::saga::choreographed::pattern::ChoreoPattern,
        &crate::saga::twopc::pattern::TwoPcPattern,
        &crate::queue::pattern::QueuePattern,
        &crate::cqrs::pattern::CqrsPattern,
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
        patterns: strings(&["saga", "saga-choreo", "twopc"]),
        metrics: [
            ("throughput", "per s"),
            ("latency p50", "ms"),
            ("latency p99", "ms"),
            ("longest lock hold", "ms"),
            ("locked during crash", "ms"),
            ("inconsistent", "sagas"),
        ]
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
