//! The check API and the command over plug-ins, used only through the public API, as a
//! user's crate would: a correct plug-in passes; a broken one fails with the plan file
//! and the replay line, and the replay of that file reproduces the failure; a binary of
//! one's own sweeps a plug-in into the same report files as the built-in patterns.

use faultline::breaker::circuit::State;
use faultline::breaker::contract::{
    Answer, ApiReply, CallGuard, GuardMetrics, Policy, Step, Transition, Why,
};
use faultline::breaker::guard::Guard;
use faultline::breaker::pattern::BreakerPattern;
use faultline::breaker::world::{SmsKnobs, SmsWorld};
use faultline::check::{Check, Verdict};
use faultline::clock::Instant;
use faultline::harness::{Pattern, Plugin};
use faultline_sim::{FaultPlan, SeedRange};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A user's guard: the reference inside; with `broken`, every 40th caller is told the
/// API is unavailable with `retry_after` = 0, without asking the breaker.
struct Wrapped {
    inner: Guard,
    broken: bool,
    requests: u64,
}

impl CallGuard for Wrapped {
    type Ticket = <Guard as CallGuard>::Ticket;

    fn on_request(&mut self, now: Instant) -> Step<Self::Ticket> {
        self.requests += 1;
        if self.broken && self.requests.is_multiple_of(40) {
            return Step::Answer(Answer::Failed(Why::Rejected {
                retry_after: Duration::ZERO,
            }));
        }
        self.inner.on_request(now)
    }
    fn on_reply(&mut self, t: Self::Ticket, now: Instant, reply: ApiReply) -> Step<Self::Ticket> {
        self.inner.on_reply(t, now, reply)
    }
    fn on_timeout(&mut self, t: Self::Ticket, now: Instant) -> Step<Self::Ticket> {
        self.inner.on_timeout(t, now)
    }
    fn on_retry_due(&mut self, t: Self::Ticket, now: Instant) -> Step<Self::Ticket> {
        self.inner.on_retry_due(t, now)
    }
    fn on_cancel(&mut self, t: Self::Ticket, now: Instant) {
        self.inner.on_cancel(t, now);
    }
    fn policy(&self) -> Policy {
        self.inner.policy()
    }
    fn state(&self) -> State {
        self.inner.state()
    }
    fn poll_transition(&mut self) -> Option<Transition> {
        self.inner.poll_transition()
    }
    fn metrics(&self) -> GuardMetrics {
        self.inner.metrics()
    }
}

fn plugin(name: &'static str, broken: bool) -> Plugin<BreakerPattern, SmsWorld<Wrapped>> {
    Plugin::new(BreakerPattern, name, move |knobs: &SmsKnobs| {
        let inner = knobs.reference_guard()?;
        SmsWorld::new(
            knobs.clone(),
            Wrapped {
                inner,
                broken,
                requests: 0,
            },
        )
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-plugin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seeds(start: u64, end: u64) -> SeedRange {
    SeedRange::new(start, end).unwrap()
}

#[test]
fn a_correct_plugin_passes() {
    let out = scratch("correct");
    let mine = plugin("my-breaker", false);
    // The #[test] route: panics on a failure (FAULTLINE_SEEDS may widen it).
    Check::new(&mine).seeds(seeds(0, 200)).out(&out).run();
    let verdict = Check::new(&mine).out(&out).sweep(seeds(0, 200), 2).unwrap();
    assert!(
        matches!(verdict, Verdict::Passed { runs: 200 }),
        "{verdict:?}"
    );
    assert!(
        !out.join("failures").exists(),
        "a passing check writes no plan"
    );
}

#[test]
fn a_broken_plugin_fails_with_the_plan_file_and_a_replay_that_reproduces_it() {
    let out = scratch("broken");
    let test =
        "plugin_api::a_broken_plugin_fails_with_the_plan_file_and_a_replay_that_reproduces_it";
    let broken = plugin("broken-breaker", true);
    let check = Check::new(&broken).seeds(seeds(0, 100)).out(&out);

    // What a user sees: the panic of `run`.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check.run())).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    let verdict = check.sweep(seeds(0, 100), 2).unwrap();
    let failure = verdict
        .failure()
        .expect("the broken plug-in is caught")
        .clone();
    assert_eq!(failure.invariant, "breaker.responsiveness", "{failure}");
    assert_eq!(message, failure.to_string());
    let plan_file = out.join(format!(
        "failures/broken-breaker-seed-{}.json",
        failure.seed
    ));
    let report_file = out.join(format!("runs/broken-breaker-seed-{}.html", failure.seed));
    assert_eq!(failure.plan_file, plan_file);
    assert_eq!(failure.report_file.as_deref(), Some(report_file.as_path()));
    for needle in [
        "broken-breaker: breaker.responsiveness broken:",
        "retry_after = 0",
        &format!("seed:   {}", failure.seed),
        &format!("plan:   {}", plan_file.display()),
        &format!("report: {}", report_file.display()),
        &format!(
            "replay: FAULTLINE_REPLAY={} cargo test {test}",
            plan_file.display()
        ),
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from\n{message}"
        );
    }
    // The plan file is the shrunk plan with its seed.
    let plan = FaultPlan::from_json(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert_eq!(plan.seed, Some(failure.seed));
    let (after, before) = failure.faults;
    assert_eq!(plan.faults.len(), after);
    assert!(after <= before);
    let html = std::fs::read_to_string(&report_file).unwrap();
    assert!(html.contains("broken-breaker") && html.contains("FAULTLINE_REPLAY="));

    // The replay (what FAULTLINE_REPLAY=<file> makes `run` do) reproduces it from the file.
    std::fs::remove_file(&report_file).unwrap();
    let again = check.replay(&plan_file).unwrap();
    let replayed = again.failure().expect("the replay fails the same way");
    assert_eq!(
        (replayed.seed, &replayed.invariant, &replayed.message),
        (failure.seed, &failure.invariant, &failure.message)
    );
    assert!(replayed.to_string().contains("replayed from"), "{replayed}");
    assert!(report_file.exists(), "the replay writes the run's report");
    // The correct implementation passes the same plan.
    let mine = plugin("my-breaker", false);
    assert!(
        Check::new(&mine)
            .out(&out)
            .replay(&plan_file)
            .unwrap()
            .is_pass()
    );
    // A missing file is an error, not a verdict.
    let err = check.replay(Path::new("/no/such/plan.json")).unwrap_err();
    assert!(err.to_string().contains("cannot read plan"), "{err}");
    // A test that `cargo test NAME` does not run (one inside an example) names its own
    // command.
    let command = "cargo test --example mine broken";
    let named = Check::new(&broken).out(&out).test_command(command);
    let replayed = named.replay(&plan_file).unwrap();
    let replayed = replayed.failure().expect("the replay fails the same way");
    assert_eq!(
        replayed.replay,
        format!("FAULTLINE_REPLAY={} {command}", plan_file.display())
    );
}

#[test]
fn a_binary_of_ones_own_sweeps_plugins_into_the_same_reports() {
    let out = scratch("own-binary");
    let mine = plugin("my-breaker", false);
    let broken = plugin("broken-breaker", true);
    let mut patterns: Vec<&dyn Pattern> = faultline::registry::patterns();
    patterns.push(&mine);
    patterns.push(&broken);
    let code = |args: &[&str]| format!("{:?}", faultline::cli::run(&patterns, args));
    let ok = format!("{:?}", std::process::ExitCode::SUCCESS);
    let failed = format!("{:?}", std::process::ExitCode::from(1));
    let o = out.to_str().unwrap();
    let sweep = ["/bin/my-faultline", "sweep", "my-breaker", "broken-breaker"];
    let args: Vec<&str> = sweep
        .iter()
        .copied()
        .chain([
            "--seeds",
            "0..30",
            "--jobs",
            "2",
            "--shrink-max",
            "1",
            "--out",
            o,
        ])
        .collect();
    assert_eq!(code(&args), failed);
    assert!(out.join("index.html").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let names: Vec<&str> = summary["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["my-breaker", "broken-breaker"]);
    assert_eq!(summary["patterns"][0]["summary"]["passed"], 30);
    let failure = &summary["patterns"][1]["failures"][0];
    let seed = failure["seed"].as_u64().unwrap();
    let replay = failure["replay"].as_str().unwrap();
    assert!(
        replay.starts_with(&format!(
            "/bin/my-faultline replay broken-breaker --seed {seed} --plan "
        )),
        "{replay}"
    );
    assert!(replay.ends_with(&format!("--out {o}")), "{replay}");
    assert!(
        out.join(format!("failures/broken-breaker-seed-{seed}.json"))
            .exists()
    );
    assert!(
        out.join(format!("failures/broken-breaker-seed-{seed}.html"))
            .exists()
    );
    // run and replay by name, like a built-in pattern.
    let run = ["x", "run", "my-breaker", "--seed", "7", "--out", o];
    assert_eq!(code(&run), ok);
    assert!(out.join("runs/my-breaker-seed-7.html").exists());
    let plan = out.join(format!("failures/broken-breaker-seed-{seed}.json"));
    let replay = [
        "x",
        "replay",
        "broken-breaker",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        o,
    ];
    assert_eq!(code(&replay), failed);
    // A plug-in has no mutant catalog: asking for one is bad usage (2).
    let mutant = [
        "x",
        "run",
        "my-breaker",
        "--seed",
        "1",
        "--mutant",
        "x",
        "--out",
        o,
    ];
    assert_eq!(
        code(&mutant),
        format!("{:?}", std::process::ExitCode::from(2))
    );
    // Nor can it sweep one; the built-in pattern's mutants sweep under its own name,
    // and a mutant caught on some seed is the outcome hoped for (0).
    let sweep_mutant = [
        "x",
        "sweep",
        "my-breaker",
        "--mutant",
        "no_timeout",
        "--seeds",
        "0..3",
        "--out",
        o,
    ];
    assert_eq!(
        code(&sweep_mutant),
        format!("{:?}", std::process::ExitCode::from(2))
    );
    let sweep_builtin = [
        "x",
        "sweep",
        "breaker",
        "--mutant",
        "no_timeout",
        "--seeds",
        "0..3",
        "--out",
        o,
    ];
    assert_eq!(code(&sweep_builtin), ok);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["patterns"][0]["mutant"]["name"], "no_timeout");
    assert!(
        out.join("failures/breaker-seed-2-mutant-no_timeout.json")
            .exists()
    );
}
