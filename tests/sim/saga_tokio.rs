//! The orchestrated saga in the tokio harness (`saga-tokio`): the real `SagaRunner`
//! against async checkout services, judged from the services' books.

use crate::support::{assert_every_mark_hit, assert_mutants_caught};
use faultline::harness::{Pattern, Scenario};
use faultline::saga::SagaPolicy;
use faultline::saga::checkout::SagaKnobs;
use faultline::saga::orchestrated::hosted::{
    HostedSaga, HostedSagaFactory, MARKS, Request, RunnerFlaw, SagaEnv, SagaTokioPattern,
    SagaTokioWorld,
};
use faultline::saga::orchestrated::tokio::SagaRunner;
use faultline::saga::{Command, SagaConfig, StepId};
use faultline_sim::{FaultPlan, TraceMode};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

/// The reference passes every seed of a sweep, white-box and black-box checks on.
#[test]
fn reference_sweep_has_no_violation() {
    for seed in 0..24 {
        let (report, world) = SagaTokioPattern.run_seed(seed, TraceMode::Off).unwrap();
        report.assert_pass();
        assert!(
            world.stats.requests > 0,
            "seed {seed}: the services saw nothing"
        );
    }
}

#[test]
fn every_mark_is_hit_over_60_seeds() {
    assert_every_mark_hit(&SagaTokioPattern, MARKS, 60);
}

/// Every async mutant is caught by its expected invariant (cases, from `faultline
/// mutants saga-tokio`: retry_without_key 13 seeds, compensation_timeout_is_done 3,
/// failed_is_ok 2, log_not_durable 21).
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(
        &SagaTokioPattern,
        &[
            faultline::saga::invariants::IDEMPOTENT,
            faultline::saga::invariants::AT_REST,
        ],
        40,
    );
}

/// The black-box oracles alone (no white-box check of what the runner says) catch the
/// mutants, at the seeds the catalog names.
#[test]
fn black_box_alone_catches_the_mutants() {
    for (flaw, seed, expected) in [
        (RunnerFlaw::RetryWithoutKey, 12, "saga.idempotent"),
        (RunnerFlaw::CompensationTimeoutIsDone, 2, "saga.at_rest"),
        (RunnerFlaw::LogNotDurable, 20, "saga.at_rest"),
        (RunnerFlaw::FailedIsOk, 1, "saga.at_rest"),
    ] {
        let knobs = SagaKnobs::from_seed(seed);
        let world = SagaTokioWorld::flawed(knobs.clone(), flaw)
            .unwrap()
            .black_box_only();
        let (report, _) = SagaTokioPattern.simulate(world, knobs.fault_plan(), TraceMode::Off);
        assert_eq!(
            report.outcome.invariant(),
            Some(expected),
            "{flaw:?} seed {seed}: {:?}",
            report.outcome
        );
    }
    // ... and pass the reference.
    for seed in 0..8 {
        let knobs = SagaKnobs::from_seed(seed);
        let world = SagaTokioWorld::reference(knobs.clone())
            .unwrap()
            .black_box_only();
        let (report, _) = SagaTokioPattern.simulate(world, knobs.fault_plan(), TraceMode::Off);
        report.assert_pass();
    }
}

/// A user's own async orchestrator through the factory: a runner with settings of its
/// own (more attempts, a longer timeout), declared honestly, passes.
#[test]
fn a_correct_plugin_with_its_own_policy_passes() {
    struct Mine(SagaConfig);
    impl HostedSagaFactory for Mine {
        fn policy(&self) -> SagaPolicy {
            SagaPolicy::from(&self.0)
        }
        fn build(&self, env: SagaEnv) -> Result<Box<dyn HostedSaga>, String> {
            let services = env.services;
            let call = move |cmd: Command| {
                let services = services.clone();
                async move {
                    match services.call(Request::keyed(cmd)).await {
                        Some(reply) => reply,
                        // No reply: the attempt times out.
                        None => std::future::pending().await,
                    }
                }
            };
            let runner = SagaRunner::builder(self.0.clone(), env.log)
                .step(StepId::ORDER, call.clone(), call.clone())
                .step(StepId::INVENTORY, call.clone(), call.clone())
                .step(StepId::PAYMENT, call.clone(), call)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Box::new(runner))
        }
    }
    for seed in 0..10 {
        let knobs = SagaKnobs::from_seed(seed);
        let config = SagaConfig::builder()
            .step_timeout(Duration::from_millis(300))
            .attempts_max(5)
            .compensation_attempts_max(20)
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .deadline_from_sent(true)
            .build()
            .unwrap();
        let world = SagaTokioWorld::new(knobs.clone(), Arc::new(Mine(config))).unwrap();
        let (report, _) = SagaTokioPattern.simulate(world, knobs.fault_plan(), TraceMode::Off);
        report.assert_pass();
    }
}

#[test]
fn same_seed_same_digest_three_times() {
    let digests: Vec<u64> = (0..3)
        .map(|_| {
            SagaTokioPattern
                .run_seed(5, TraceMode::Full)
                .unwrap()
                .0
                .digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[1], digests[2]);
}

#[test]
fn golden_digest() {
    let (report, world) = SagaTokioPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.completed),
        (8_094_928_794_177_303_873, 2_367, 49),
        "golden digest changed"
    );
}

/// A plan file replays through the harness and the command: the same verdict and
/// digest as the seed's own run, and a mutant's failing plan fails again.
#[test]
fn a_plan_file_replays() {
    let dir = std::env::temp_dir().join(format!("faultline-saga-tokio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plan = SagaTokioPattern.plan(12);
    let path = dir.join("plan.json");
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    let read: FaultPlan = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let direct = SagaTokioPattern
        .run(12, &plan, TraceMode::Off, Some("retry_without_key"))
        .unwrap();
    let replayed = SagaTokioPattern
        .run(12, &read, TraceMode::Off, Some("retry_without_key"))
        .unwrap();
    assert_eq!(direct.report.digest, replayed.report.digest);
    assert_eq!(replayed.report.outcome.invariant(), Some("saga.idempotent"));
    let o = Process::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["replay", "saga-tokio", "--seed", "12", "--plan"])
        .arg(&path)
        .args(["--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("replaying saga-tokio seed 12"), "{stdout}");
    let o = Process::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "replay",
            "saga-tokio",
            "--seed",
            "12",
            "--mutant",
            "retry_without_key",
            "--plan",
        ])
        .arg(&path)
        .args(["--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("saga.idempotent"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run that stopped before it came to rest does not judge its sagas' endings: the
/// books are read only at rest, and such a run said "done 0, compensated 0" of sagas it
/// never judged. Its page says "not judged" and the sweep's shares have no value. (No
/// mutant of the catalog stops before its books are judged, so the run is a plug-in's
/// that accepts every checkout and never comes to rest: the liveness bound stops it.)
#[test]
fn a_run_stopped_early_does_not_judge_its_endings() {
    struct Stuck;
    impl HostedSaga for Stuck {
        fn submit(&self, _: faultline::saga::SagaId, _: faultline::saga::Order) -> bool {
            true
        }
        fn is_at_rest(&self) -> bool {
            false
        }
        fn alerted(&self) -> Vec<faultline::saga::SagaId> {
            Vec::new()
        }
    }
    struct Never;
    impl HostedSagaFactory for Never {
        fn policy(&self) -> SagaPolicy {
            SagaPolicy::from(&SagaConfig::default())
        }
        fn build(&self, _: SagaEnv) -> Result<Box<dyn HostedSaga>, String> {
            Ok(Box::new(Stuck))
        }
    }
    let knobs = SagaKnobs::from_seed(3);
    let world = SagaTokioWorld::new(knobs.clone(), Arc::new(Never)).unwrap();
    let (report, world) = SagaTokioPattern.simulate(world, knobs.fault_plan(), TraceMode::Off);
    assert!(!report.outcome.is_pass(), "a saga that never rests passed");
    assert!(world.stats.submitted > 0 && !world.stats.at_rest);
    let view = SagaTokioPattern.describe(&knobs, &report, &world);
    for label in ["done (books)", "compensated (books)", "half done, alerted"] {
        let (_, v) = view.figures.iter().find(|(l, _)| l == label).unwrap();
        assert_eq!(v, "not judged: the run did not come to rest", "{label}");
    }
    let completed = SagaTokioPattern::METRICS
        .iter()
        .find(|m| m.name == "sagas completed")
        .unwrap();
    assert_eq!((completed.value)(&world), None);
    // At rest they are judged.
    let (report, world) = SagaTokioPattern.run_seed(3, TraceMode::Off).unwrap();
    report.assert_pass();
    assert!(world.stats.at_rest);
    assert!(world.stats.completed + world.stats.compensated > 0);
}
