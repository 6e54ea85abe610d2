//! The queue's tokio `WorkerPool` in the tokio harness (`queue-tokio`): a sweep with no
//! violation, the async mutants caught (the black-box oracles alone suffice), the
//! determinism check on every run (and what it reports for code that is not
//! deterministic), a golden digest, and a plan file replayed through the command.

use faultline::harness::hosted::DETERMINISM;
use faultline::harness::{Pattern, Scenario};
use faultline::queue::hosted::{
    CATALOG, HostedQueueWorld, QueueTokioPattern, Setup, WorkerCode, reference_code, run,
};
use faultline::queue::invariants::{NO_LOST_UPDATE, SINGLE_LEASE};
use faultline::queue::world::QueueKnobs;
use faultline_sim::prelude::*;
use std::any::Any;
use std::cell::Cell;
use std::process::Command;
use std::rc::Rc;

#[test]
fn the_worker_pool_passes_200_seeds() {
    let mut failing = Vec::new();
    for seed in 0..200 {
        let run = QueueTokioPattern
            .run(seed, &QueueTokioPattern.plan(seed), TraceMode::Off, None)
            .unwrap();
        if let Some(inv) = run.report.outcome.invariant() {
            failing.push((seed, inv.to_string()));
        }
    }
    assert!(failing.is_empty(), "{failing:?}");
}

/// The first seed (of `0..seeds`) at which mutant `name` breaks `invariant`, with the
/// white-box check on or off.
fn caught_at(name: &str, invariant: &str, white_box: bool, seeds: u64) -> Option<u64> {
    let m = CATALOG.iter().find(|m| m.name == name).unwrap();
    (0..seeds).find(|&seed| {
        let knobs = QueueKnobs::from_seed(seed);
        let mut world = m.world(&knobs).unwrap();
        world.white_box = white_box;
        let (report, _) = run(world, knobs.fault_plan(), TraceMode::Off);
        report.outcome.invariant() == Some(invariant)
    })
}

/// Each async mutant is caught by the invariant it is meant to break (seeds it took,
/// printed), with the white-box check off: the black-box oracles stand alone.
#[test]
fn every_async_mutant_is_caught_by_the_black_box_oracles() {
    for m in CATALOG {
        let at = caught_at(m.name, m.expected, false, 300)
            .unwrap_or_else(|| panic!("{} survived 300 seeds", m.name));
        println!("{:<22} {:<24} at seed {at}", m.name, m.expected);
    }
    // With the white-box check on too, the same.
    assert!(caught_at("ack_before_delivery", NO_LOST_UPDATE, true, 300).is_some());
    assert!(caught_at("no_heartbeat", SINGLE_LEASE, true, 300).is_some());
}

#[test]
fn the_harness_catches_every_mutant() {
    for m in QueueTokioPattern.mutants() {
        let caught = (0..300).any(|seed| {
            QueueTokioPattern
                .run(
                    seed,
                    &QueueTokioPattern.plan(seed),
                    TraceMode::Off,
                    Some(m.name),
                )
                .unwrap()
                .report
                .outcome
                .invariant()
                .is_some()
        });
        assert!(caught, "{} survived", m.name);
    }
}

#[test]
fn same_seed_same_digest_on_three_runs() {
    for seed in [0, 3, 11] {
        let digests: Vec<u64> = (0..3)
            .map(|_| {
                let (report, _) = QueueTokioPattern.run_seed(seed, TraceMode::Full).unwrap();
                report.assert_pass();
                report.digest
            })
            .collect();
        assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    }
}

/// The pool's per-type handlers deliver the unique notify jobs too: on seeds where the
/// producers commit some, each takes effect exactly once at its target.
#[test]
fn every_unique_job_takes_effect_once() {
    let mut jobs = 0;
    for seed in 0..40 {
        let (report, world) = QueueTokioPattern.run_seed(seed, TraceMode::Off).unwrap();
        report.assert_pass();
        assert_eq!(
            world.stats.unique_effects, world.stats.unique_jobs,
            "seed {seed}"
        );
        jobs += world.stats.unique_jobs;
    }
    assert!(jobs > 100, "{jobs} unique jobs in 40 seeds");
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = QueueTokioPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (
            report.digest,
            report.events,
            world.stats.updates,
            world.stats.unique_jobs
        ),
        (3_132_180_242_132_400_364, 1_160, 83, 30),
        "golden digest changed"
    );
}

/// Worker code that keeps state across runs (a counter outside the run) behaves
/// differently the second time: the determinism check reports it.
#[test]
fn worker_code_that_differs_between_runs_is_reported() {
    let runs = Rc::new(Cell::new(0u32));
    let pool = reference_code();
    let code: WorkerCode = Rc::new(move |setup: &Setup| {
        runs.set(runs.get() + 1);
        let mut setup = setup.clone();
        // From the second run on: one worker, polling five times slower.
        if runs.get() > 1 {
            setup.workers = 1;
            setup.poll_interval *= 5;
        }
        let r: Box<dyn Any> = pool(&setup)?;
        Ok(r)
    });
    let seed = (0..50)
        .find(|s| QueueKnobs::from_seed(*s).workers > 1)
        .unwrap();
    let knobs = QueueKnobs::from_seed(seed);
    let world = HostedQueueWorld::new(knobs.clone(), code).unwrap();
    // With the trace on: the digest is a digest of the trace (see the report's notes).
    let (report, _) = run(world, knobs.fault_plan(), TraceMode::Full);
    assert_eq!(report.outcome.invariant(), Some(DETERMINISM));
}

#[test]
fn a_plan_file_replays_through_the_command() {
    let dir = std::env::temp_dir().join(format!("faultline-queue-tokio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    std::fs::write(
        &plan,
        r#"{"seed": 1, "horizon_ms": 10000, "faults": [
            {"kind": "outage", "target": "target-0", "from_ms": 500, "until_ms": 4000},
            {"kind": "outage", "target": "target-1", "from_ms": 5000, "until_ms": 10000}]}"#,
    )
    .unwrap();
    let replay = |mutant: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_faultline"));
        c.args(["replay", "queue-tokio", "--plan"])
            .arg(&plan)
            .arg("--out")
            .arg(&dir);
        if let Some(m) = mutant {
            c.args(["--mutant", m]);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = replay(None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("replaying queue-tokio seed 1"), "{out}");
    let (code, out) = replay(Some("ack_before_delivery"));
    assert_eq!(code, Some(1), "{out}");
}
