//! The tokio harness's cost: callers served per second of whole runs of the hosted SMS
//! world, next to a bare tokio paused-clock loop of the same workload and next to the
//! sans-IO SMS world, in one criterion group, `hosted/breaker`.
//!
//! The workload: the knobs of seed 7 with only the steady stream of callers (no bursts,
//! spike, clusters, cancellations or invalid numbers, so the bare loop can reproduce it
//! exactly as a user would write it), under seed 7's fault plan. Each function serves
//! every caller of a run through faultline's `Resilient` (the sans-IO world: the
//! reference `Guard`, the same decision core):
//!
//! - `harness_one_run`: the hosted world, one run (`Simulation::run`): the engine steps
//!   a paused current-thread runtime, the API logs every call, the world drains and
//!   checks every observation and records it into the digest;
//! - `harness_checked`: what `faultline sweep breaker-tokio` pays per seed: two runs
//!   and the comparison of their digests (the determinism check);
//! - `bare_tokio_paused`: the same callers, `Resilient` and API on a bare paused
//!   current-thread runtime: a spawner task sleeps between arrivals, each caller is a
//!   task, the API sleeps its latency and asks the same fault plan; nothing is logged
//!   or checked (the floor any tokio-hosted harness stands on);
//! - `sans_io_world`: the sans-IO SMS world of the same knobs and plan.
//!
//! Throughput is callers answered per run (each function's own count, taken from one
//! run before measuring). Run with `cargo bench --bench hosted`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use faultline::breaker::contract::ApiError;
use faultline::breaker::hosted::{self, HostedSms, SmsReceipt};
use faultline::breaker::world::{API, SmsKnobs, SmsWorld};
use faultline_sim::{FaultPlan, FaultState, SimDuration, SimRng, SimTime, Simulation, TraceMode};
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

fn knobs() -> SmsKnobs {
    let mut k = SmsKnobs::from_seed(7);
    k.burst = None;
    k.spike = None;
    k.burst_percent = 0;
    k.cancel_percent = 0;
    k.invalid_number_percent = 0;
    k
}

/// One hosted run; returns the callers it served.
fn harness_run(k: &SmsKnobs, plan: &FaultPlan) -> u64 {
    let mut world = HostedSms::new(k.clone(), hosted::reference_stack(k).unwrap());
    let report = Simulation::new(k.seed)
        .plan(plan.clone())
        .trace(TraceMode::Off)
        .run(&mut world);
    report.assert_pass();
    world.stats.callers
}

/// The checked path: two runs and the digest comparison.
fn harness_checked(k: &SmsKnobs, plan: &FaultPlan) -> u64 {
    let world = HostedSms::new(k.clone(), hosted::reference_stack(k).unwrap());
    let (report, world) = hosted::simulate(world, plan.clone(), TraceMode::Off);
    report.assert_pass();
    world.stats.callers
}

/// The same workload on a bare paused runtime: no engine, no log, no checks.
fn bare_run(k: &SmsKnobs, plan: &FaultPlan) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let served = Rc::new(Cell::new(0u64));
    let k = k.clone();
    let plan = plan.clone();
    let s = Rc::clone(&served);
    local.block_on(&rt, async move {
        let origin = tokio::time::Instant::now();
        let resilient = Rc::new(hosted::reference_resilient(&k).unwrap());
        let faults = Rc::new(RefCell::new(FaultState::new(
            plan,
            SimRng::new(k.seed).fork("bare.faults"),
        )));
        let api_rng = Rc::new(RefCell::new(SimRng::new(k.seed).fork("bare.api")));
        let mut arrivals = SimRng::new(k.seed).fork("bare.arrivals");
        let horizon = origin + Duration::from_millis(k.horizon_ms);
        let mean = 1_000_000_000 / u64::from(k.steady_per_sec.max(1));
        let mut callers = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_nanos(
                arrivals.between(mean / 2, mean + mean / 2),
            ))
            .await;
            if tokio::time::Instant::now() >= horizon {
                break;
            }
            let (resilient, faults, api_rng, s) = (
                Rc::clone(&resilient),
                Rc::clone(&faults),
                Rc::clone(&api_rng),
                Rc::clone(&s),
            );
            let (lo, hi) = k.latency_ms;
            callers.push(tokio::task::spawn_local(async move {
                let send = || {
                    let (faults, api_rng) = (Rc::clone(&faults), Rc::clone(&api_rng));
                    async move {
                        let now = SimTime::from_nanos(
                            (tokio::time::Instant::now() - origin).as_nanos() as u64,
                        );
                        let base = api_rng.borrow_mut().between(lo * 1_000, hi * 1_000);
                        let (reply, latency) = {
                            let mut f = faults.borrow_mut();
                            let mut v = f.view(now);
                            if v.is_down(API) {
                                (Err(ApiError::Unavailable), SimDuration::from_millis(lo))
                            } else {
                                let extra = v.extra_latency(API);
                                let r = if v.injects_error(API) {
                                    Err(ApiError::Internal)
                                } else {
                                    Ok(SmsReceipt { id: 0 })
                                };
                                (r, SimDuration::from_micros(base) + extra)
                            }
                        };
                        tokio::time::sleep(Duration::from_nanos(latency.as_nanos())).await;
                        reply
                    }
                };
                let _ = black_box(resilient.call(send).await);
                s.set(s.get() + 1);
            }));
        }
        for c in callers {
            c.await.unwrap();
        }
    });
    served.get()
}

fn sans_io_run(k: &SmsKnobs, plan: &FaultPlan) -> u64 {
    let world = SmsWorld::new(k.clone(), k.reference_guard().unwrap()).unwrap();
    let (report, world) = faultline::breaker::world::run(world, plan.clone(), TraceMode::Off);
    report.assert_pass();
    world.stats.requests
}

fn hosted_breaker(c: &mut Criterion) {
    let k = knobs();
    let plan = k.fault_plan();
    let mut group = c.benchmark_group("hosted/breaker");
    group.sample_size(10);
    type Run = fn(&SmsKnobs, &FaultPlan) -> u64;
    let runs: [(&str, Run); 4] = [
        ("harness_one_run", harness_run),
        ("harness_checked", harness_checked),
        ("bare_tokio_paused", bare_run),
        ("sans_io_world", sans_io_run),
    ];
    for (name, run) in runs {
        let served = run(&k, &plan);
        assert!(served > 100, "{name}: only {served} callers");
        group.throughput(Throughput::Elements(served));
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| black_box(run(&k, &plan)),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, hosted_breaker);
criterion_main!(benches);
