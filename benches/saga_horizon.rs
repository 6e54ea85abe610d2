//! The orchestrated checkout world against the length of its plan: one seed's whole run
//! (its knobs and its default-profile fault plan, drawn over a safety phase of 2, 10
//! or 40 minutes, trace off) through `faultline_sim::Simulation` with the reference
//! bounds, one benchmark per horizon in the group `saga_horizon`. The time per run
//! should grow in proportion to the horizon (as many checkouts per minute, as much
//! work per checkout): a check the world does over every saga in flight, or over
//! the whole history, after each event shows as a ratio far above the horizons'.
//!
//! The seed is [`SEED`]: its checkouts (23 a second, and bursts) outrun its disk (5 ms
//! per log record, about 8 records per saga: some 25 sagas a second), so the log's
//! backlog, and the sagas in flight behind it, grow with the horizon: the case that
//! made a per-event scan of the sagas in flight quadratic (10 minutes took 22 s before
//! it went).
//!
//! Setup (the knobs, the plan, the world) is outside the timed part; each horizon's
//! run is checked to pass once before it is measured.
//!
//! Run with `cargo bench --bench saga_horizon`; `cargo bench --bench saga_horizon --
//! --test` runs each horizon once as a smoke test.

// Bench code, not user input: a failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use faultline::saga::checkout::SagaKnobs;
use faultline::saga::orchestrated::world::{SagaWorld, run};
use faultline_sim::TraceMode;
use std::hint::black_box;
use std::time::Duration;

/// The seed whose world is run.
const SEED: u64 = 0;
/// The horizons, in minutes.
const HORIZONS_MIN: [u64; 3] = [2, 10, 40];

/// The seed's knobs with a safety phase of `minutes`.
fn knobs(minutes: u64) -> SagaKnobs {
    SagaKnobs::from_seed(SEED).with_horizon_ms(minutes * 60_000)
}

fn horizons(c: &mut Criterion) {
    let mut group = c.benchmark_group("saga_horizon");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    for minutes in HORIZONS_MIN {
        let knobs = knobs(minutes);
        let plan = knobs.orchestrated_fault_plan();
        let (report, world) = run(
            SagaWorld::new(knobs.clone()).unwrap(),
            plan.clone(),
            TraceMode::Off,
        );
        report.assert_pass();
        assert!(world.stats.started > 0);
        group.bench_function(BenchmarkId::new("minutes", minutes), |b| {
            b.iter_batched(
                || (SagaWorld::new(knobs.clone()).unwrap(), plan.clone()),
                |(world, plan)| {
                    let (report, world) = run(black_box(world), plan, TraceMode::Off);
                    (report.events, world)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, horizons);
criterion_main!(benches);
