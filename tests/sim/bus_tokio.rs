//! The bus in the tokio harness (`bus-tokio`): faultline's `SharedBus` and its subscriber
//! tasks, real tokio code, under the bus world's seeds and fault plans.

use faultline::bus::hosted::{self, BusTokioPattern};
use faultline::bus::invariants;
use faultline::harness::{Pattern, Scenario};
use faultline_sim::{FaultPlan, TraceMode};
use std::process::Command;

use crate::support::{assert_deterministic, assert_mutants_caught};

/// Seeds 0..100 of the reference pass, both runs of each (the determinism check)
/// agreeing, white-box and black-box checks on.
#[test]
fn sweep_of_100_seeds_has_no_violation() {
    let mut failed = Vec::new();
    for seed in 0..100 {
        let (report, _) = BusTokioPattern.run_seed(seed, TraceMode::Off).unwrap();
        if report.outcome.invariant().is_some() {
            failed.push((seed, format!("{:?}", report.outcome)));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Every async mutant is caught by its expected invariant within 100 seeds. Prints the
/// table (cases = seeds run until caught).
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(
        &BusTokioPattern,
        &[
            invariants::DRAINED,
            invariants::FIFO,
            invariants::EXACTLY_ONCE,
        ],
        100,
    );
}

/// The black-box oracles stand alone: with every white-box check off, each mutant is
/// still caught within 100 seeds; prints the seed and the invariant.
#[test]
fn black_box_oracles_alone_catch_every_mutant() {
    for m in hosted::MUTANTS {
        let caught = (0..100).find_map(|seed| {
            let knobs = BusTokioPattern.seed_knobs(seed);
            let plan = BusTokioPattern.fault_plan(&knobs);
            let world = m.world(&knobs).unwrap().black_box_only();
            let (report, _) = BusTokioPattern.simulate(world, plan, TraceMode::Off);
            report
                .outcome
                .invariant()
                .map(|inv| (seed, inv.to_string(), format!("{:?}", report.outcome)))
        });
        let (seed, inv, outcome) =
            caught.unwrap_or_else(|| panic!("{} survived black-box only", m.name));
        println!(
            "{:<28} caught black-box only at seed {seed} by {inv}: {outcome}",
            m.name
        );
        assert_ne!(inv, "sim.determinism", "{}", m.name);
    }
}

/// The reference also passes with the white-box checks off (no false positive of the
/// black-box oracles).
#[test]
fn black_box_only_passes_the_reference() {
    for seed in 0..30 {
        let knobs = BusTokioPattern.seed_knobs(seed);
        let plan = BusTokioPattern.fault_plan(&knobs);
        let world = BusTokioPattern.reference(&knobs).unwrap().black_box_only();
        let (report, _) = BusTokioPattern.simulate(world, plan, TraceMode::Off);
        report.assert_pass();
    }
}

#[test]
fn same_seed_same_digest_on_three_runs() {
    assert_deterministic(&BusTokioPattern, 0..5);
    let digests: Vec<u64> = (0..3)
        .map(|_| {
            BusTokioPattern
                .run_seed(11, TraceMode::Off)
                .unwrap()
                .0
                .digest
        })
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}

#[test]
fn golden_digest() {
    let (report, world) = BusTokioPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.handled),
        (8_959_072_994_910_219_664, 6_955, 2_470),
        "golden digest changed"
    );
}

/// A plan file replays through the harness: the same run by the library and by
/// `faultline replay bus-tokio --plan`.
#[test]
fn a_plan_file_replays() {
    // Seed 3's own plan, through a file as a user would keep it.
    let json = serde_json::to_string(&BusTokioPattern.plan(3)).unwrap();
    let plan: FaultPlan = serde_json::from_str(&json).unwrap();
    assert!(!plan.faults.is_empty());
    let run = BusTokioPattern.run(3, &plan, TraceMode::Off, None).unwrap();
    run.report.assert_pass();
    let dir = std::env::temp_dir().join(format!("faultline-bus-tokio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plan.json");
    std::fs::write(&file, serde_json::to_string(&plan).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["replay", "bus-tokio", "--seed", "3", "--plan"])
        .arg(&file)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("bus-tokio"), "{stdout}");
}

/// A run stopped early reports its longest delivery lag up to the stop, from the
/// deliveries the checker saw (it was filled only at rest).
#[test]
fn a_run_stopped_early_reports_its_lag_up_to_the_stop() {
    use crate::support::{figure, stopped_early};
    let (mutant, seed, plan, _, world) = stopped_early(&BusTokioPattern, 0..60, |r, w| {
        r.end < r.horizon && w.checker.lag_ms_max() > 0.0
    });
    let longest = world.checker.lag_ms_max();
    assert_eq!(world.stats.lag_ms_max, longest, "{mutant} seed {seed}");
    assert_eq!(
        figure(
            &BusTokioPattern,
            seed,
            &plan,
            mutant,
            "longest delivery lag"
        ),
        format!("{longest:.1} ms")
    );
}
