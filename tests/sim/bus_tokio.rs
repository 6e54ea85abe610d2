//! The bus in the tokio harness (`bus-tokio`): faultline's `SharedBus` and its subscriber
//! tasks, real tokio code, under the bus world's seeds and fault plans.

use faultline::bus::hosted::{BusTokioPattern, BusTokioWorld, TokioBus};
use faultline::bus::invariants;
use faultline::harness::{Pattern, Scenario};
use faultline_sim::TraceMode;
use std::rc::Rc;

use crate::support::assert_deterministic;

/// Seeds 0..N of the reference pass, both runs of each agreeing.
#[test]
fn sweep_passes() {
    let mut failed = Vec::new();
    for seed in 0..40 {
        let (report, _) = BusTokioPattern.run_seed(seed, TraceMode::Off).unwrap();
        if let Some(inv) = report.outcome.invariant() {
            failed.push((seed, inv.to_string(), format!("{:?}", report.outcome)));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
