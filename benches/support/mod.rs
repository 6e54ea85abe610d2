//! Helpers shared by the benches (each bench includes this file with
//! `#[path = "support/mod.rs"] mod support;`): simulated events per second of whole
//! world runs, measured one way for every pattern.

use criterion::{BatchSize, Criterion, Throughput};
use faultline::harness::Scenario;
use faultline_sim::TraceMode;
use std::hint::black_box;
use std::time::Duration;

/// Runs the reference world of `scenario` for `seed` once (knobs and plan from the
/// seed, trace off) and requires it to pass, then measures the same run in the group
/// `group` as `events`: throughput in simulated events, the world built and its plan
/// cloned outside the timed part. Returns the finished world of the checked run, for a
/// bench that counts the same run in other units (see [`bench_world`]).
pub fn world_events<S: Scenario>(
    c: &mut Criterion,
    group: &str,
    scenario: &S,
    seed: u64,
) -> S::World {
    let (report, world) = scenario
        .run_seed(seed, TraceMode::Off)
        .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", S::NAME));
    report.assert_pass();
    bench_world(c, group, "events", scenario, seed, report.events);
    world
}

/// Measures whole runs of the reference world of `scenario` for `seed` in the group
/// `group` as `function`, `elements` of throughput per run (events, sagas, ...).
pub fn bench_world<S: Scenario>(
    c: &mut Criterion,
    group: &str,
    function: &str,
    scenario: &S,
    seed: u64,
    elements: u64,
) {
    let knobs = scenario.seed_knobs(seed);
    let plan = scenario.fault_plan(&knobs);
    let mut group = c.benchmark_group(group);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(elements));
    group.bench_function(function, |b| {
        b.iter_batched(
            || {
                let world = scenario
                    .reference(&knobs)
                    .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", S::NAME));
                (world, plan.clone())
            },
            |(world, plan)| {
                let (report, world) = scenario.simulate(black_box(world), plan, TraceMode::Off);
                debug_assert!(report.outcome.is_pass());
                (report.events, world)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}
