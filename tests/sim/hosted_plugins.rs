//! Async code of one's own through the check API, for every hosted pattern: a
//! [`Plugin`] holding a factory (here each pattern's reference code, built the way a
//! user builds theirs) is swept, reported and replayable like the built-in pattern.

use faultline::bus::hosted::{BusTokioPattern, BusTokioWorld, TokioBus};
use faultline::bus::world::BusKnobs;
use faultline::check::Check;
use faultline::cqrs::hosted::pattern::CqrsTokioPattern;
use faultline::cqrs::hosted::{CqrsTokioWorld, reference_factory};
use faultline::cqrs::world::CqrsKnobs;
use faultline::harness::{Pattern, Plugin};
use faultline::queue::hosted::{HostedQueueWorld, QueueTokioPattern, reference_code};
use faultline::queue::world::QueueKnobs;
use faultline::saga::checkout::SagaKnobs;
use faultline::saga::orchestrated::hosted::{RunnerFactory, SagaTokioPattern, SagaTokioWorld};
use faultline_sim::SeedRange;
use std::rc::Rc;
use std::sync::Arc;

fn passes(plugin: &dyn Pattern) {
    let out = std::env::temp_dir().join(format!("faultline-plugin-{}", plugin.name()));
    let verdict = Check::new(plugin)
        .out(&out)
        .sweep(SeedRange { start: 0, end: 12 }, 2)
        .expect("the check runs");
    assert!(
        verdict.is_pass(),
        "{}: {:?}",
        plugin.name(),
        verdict.failure()
    );
}

#[test]
fn a_users_async_queue_worker_runs_through_the_check_api() {
    passes(&Plugin::new(
        QueueTokioPattern,
        "my-workers",
        |k: &QueueKnobs| HostedQueueWorld::new(k.clone(), reference_code()),
    ));
}

#[test]
fn a_users_async_bus_runs_through_the_check_api() {
    passes(&Plugin::infallible(
        BusTokioPattern,
        "my-bus",
        |k: &BusKnobs| {
            BusTokioWorld::new(k.clone(), Rc::new(|k: &BusKnobs| TokioBus::reference(k)))
        },
    ));
}

#[test]
fn a_users_async_orchestrator_runs_through_the_check_api() {
    passes(&Plugin::new(
        SagaTokioPattern,
        "my-orchestrator",
        |k: &SagaKnobs| SagaTokioWorld::new(k.clone(), Arc::new(RunnerFactory::new(k.config()?))),
    ));
}

#[test]
fn a_users_async_event_sourced_service_runs_through_the_check_api() {
    passes(&Plugin::infallible(
        CqrsTokioPattern,
        "my-inventory",
        |k: &CqrsKnobs| CqrsTokioWorld::new(k.clone(), reference_factory()),
    ));
}
