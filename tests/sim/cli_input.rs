//! The `faultline` command against hostile and extreme input: the cases of issue 17
//! ("Input and safety") that panicked, read without limit, printed raw, or were taken
//! silently. Each drives the real binary, except the panicking mutant, which needs a
//! pattern of its own and runs `faultline::cli::run` in the process.

use faultline::breaker::pattern::BreakerPattern;
use faultline::harness::{HarnessError, MutantInfo, Pattern, Run};
use faultline_sim::report::model::RunView;
use faultline_sim::{FaultPlan, SeedRange, TraceMode};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{faultline, s, text};

/// A scratch directory of this suite's own (cli.rs's, under a prefix of its own).
fn scratch(name: &str) -> PathBuf {
    crate::cli::scratch(&format!("input-{name}"))
}

/// Exit 2 with `needle` on stderr, and never the exit code of a panic (101).
fn refused(args: &[&str], needle: &str) -> String {
    let o = faultline(args);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    stderr
}

#[test]
fn seed_ranges_at_the_end_of_u64_do_not_panic() {
    let out = scratch("top");
    let top = "18446744073709551614..18446744073709551615";
    for (shard, seeds) in [("3/3", 0), ("2/3", 0), ("1/3", 1)] {
        let o = faultline(&[
            "sweep",
            "breaker",
            "--seeds",
            top,
            "--shard",
            shard,
            "--jobs",
            "1",
            "--out",
            s(&out),
        ]);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{shard}: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!("shard {shard} ({seeds} seeds)")),
            "{shard}: {stdout}"
        );
    }
    // A full 64-bit range is refused at once, with what to do, not counted or allocated.
    let started = std::time::Instant::now();
    refused(
        &[
            "sweep",
            "breaker",
            "--seeds",
            "0..18446744073709551615",
            "--out",
            s(&out),
        ],
        "18446744073709551615 seeds, more than the 4294967296 one sweep runs",
    );
    refused(
        &[
            "sweep",
            "--seeds",
            "0..=18446744073709551614",
            "--shard",
            "4294967295/4294967295",
            "--out",
            s(&out),
        ],
        "split it with --shard",
    );
    refused(
        &[
            "mutants",
            "breaker",
            "--seeds",
            "0..18446744073709551615",
            "--out",
            s(&out),
        ],
        "more than the 4294967296",
    );
    assert!(started.elapsed().as_secs() < 20, "refusing took too long");
}

#[test]
fn jobs_are_bounded_with_a_usage_error() {
    let out = scratch("jobs");
    for jobs in ["10000", "18446744073709551615"] {
        refused(
            &[
                "sweep",
                "breaker",
                "--seeds",
                "0..2",
                "--jobs",
                jobs,
                "--out",
                s(&out),
            ],
            "more threads than this machine can use: at most",
        );
    }
    refused(
        &[
            "sweep",
            "breaker",
            "--seeds",
            "0..2",
            "--jobs",
            "0",
            "--out",
            s(&out),
        ],
        "--jobs must be at least 1",
    );
}

#[test]
fn input_files_are_read_through_a_cap() {
    let out = scratch("cap");
    let started = std::time::Instant::now();
    refused(
        &[
            "run",
            "breaker",
            "--seed",
            "1",
            "--plan",
            "/dev/zero",
            "--out",
            s(&out),
        ],
        "plan /dev/zero is larger than 64 MiB",
    );
    refused(
        &["merge", "/dev/zero", "--out", s(&out)],
        "summary /dev/zero is larger than 64 MiB",
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "the caps did not stop the reads"
    );
}

#[test]
fn unknown_targets_are_refused_and_idle_faults_warned_or_refused() {
    let out = scratch("targets");
    let plan = out.join("plan.json");
    let run = |strict: bool| {
        let mut args = vec![
            "run",
            "breaker",
            "--seed",
            "1",
            "--plan",
            s(&plan),
            "--out",
            s(&out),
        ];
        if strict {
            args.push("--strict");
        }
        faultline(&args)
    };
    // "sms" for "sms_api": refused, with the names the world knows.
    std::fs::write(
        &plan,
        r#"{"horizon_ms": 5000, "faults": [
            {"kind": "outage", "target": "sms", "from_ms": 100, "until_ms": 900}]}"#,
    )
    .unwrap();
    let o = run(false);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("fault 0 targets `sms`") && stderr.contains("it knows: sms_api"),
        "{stderr}"
    );
    // Faults that can never fire: a crash on an API, a window after the horizon.
    for (fault, needle) in [
        (
            r#"{"kind": "crash", "target": "sms_api", "from_ms": 100, "until_ms": 900}"#,
            "`crash` fault",
        ),
        (
            r#"{"kind": "outage", "target": "sms_api", "from_ms": 6000, "until_ms": 9000}"#,
            "at or after the plan's horizon (5000 ms)",
        ),
    ] {
        std::fs::write(
            &plan,
            format!(r#"{{"horizon_ms": 5000, "faults": [{fault}]}}"#),
        )
        .unwrap();
        let o = run(false);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{fault}: {stdout}{stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("it will never fire"),
            "{fault}: {stderr}"
        );
        let o = run(true);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "--strict {fault}: {stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("--strict"),
            "{stderr}"
        );
    }
    // A plan whose faults all can fire passes --strict.
    std::fs::write(
        &plan,
        r#"{"horizon_ms": 5000, "faults": [
            {"kind": "outage", "target": "sms_api", "from_ms": 100, "until_ms": 900}]}"#,
    )
    .unwrap();
    let o = run(true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(!text(&o).1.contains("warning"), "{}", text(&o).1);
}

#[test]
fn terminal_output_has_control_characters_escaped() {
    let out = scratch("tty");
    let plan = out.join("plan.json");
    std::fs::write(
        &plan,
        r#"{"horizon_ms": 5000, "faults": [
            {"kind": "outage", "target": "\u001b]0;pwned\u0007\u001b[2J", "from_ms": 1, "until_ms": 9}]}"#,
    )
    .unwrap();
    let o = faultline(&[
        "run",
        "breaker",
        "--seed",
        "1",
        "--plan",
        s(&plan),
        "--out",
        s(&out),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
        "{stderr}"
    );
    // A plan file whose name holds an escape sequence, run to the end.
    let hostile = out.join("p\u{1b}[31mred.json");
    std::fs::write(
        &hostile,
        r#"{"horizon_ms": 5000, "faults": [
            {"kind": "outage", "target": "sms_api", "from_ms": 1, "until_ms": 9}]}"#,
    )
    .unwrap();
    let o = faultline(&[
        "run",
        "breaker",
        "--seed",
        "1",
        "--plan",
        s(&hostile),
        "--out",
        s(&out),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "{stdout:?}"
    );
    assert!(stdout.contains("p\\u{1b}[31mred.json"), "{stdout}");
    // Names from a crafted summary.
    let summary = passing_summary("tty-sweep");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    v["patterns"][0]["pattern"] = "\u{1b}]0;owned\u{7}".into();
    std::fs::write(&summary, v.to_string()).unwrap();
    let merged = scratch("tty-merged");
    let o = faultline(&["merge", s(&summary), "--out", s(&merged)]);
    let (stdout, stderr) = text(&o);
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "{stdout:?}{stderr:?}"
    );
}

#[test]
fn replay_commands_are_shell_quoted() {
    let out = scratch("quote");
    let dir = out.join("my plans");
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("it's $(id).json");
    std::fs::write(
        &plan,
        r#"{"horizon_ms": 5000, "faults": [
            {"kind": "outage", "target": "sms_api", "from_ms": 1, "until_ms": 9}]}"#,
    )
    .unwrap();
    let o = faultline(&[
        "run",
        "breaker",
        "--seed",
        "1",
        "--plan",
        s(&plan),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let html = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    // In HTML, `'` is `&#39;`: the path is one single-quoted word, its `'` as `'\''`.
    let quoted = format!(
        "--plan &#39;{}/my plans/it&#39;\\&#39;&#39;s $(id).json&#39;",
        s(&out)
    );
    assert!(html.contains(&quoted), "{quoted} missing from the report");
}

/// A passing one-pattern sweep's summary.json.
fn passing_summary(name: &str) -> PathBuf {
    let dir = scratch(name);
    let o = faultline(&[
        "sweep",
        "breaker",
        "--seeds",
        "0..2",
        "--jobs",
        "1",
        "--out",
        s(&dir),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    dir.join("summary.json")
}

#[test]
fn merged_reports_link_only_to_relative_paths() {
    let summary = passing_summary("links");
    let original = std::fs::read_to_string(&summary).unwrap();
    let merged = scratch("links-merged");
    for href in [
        "https://evil.invalid/x.html",
        "//evil.invalid/x.html",
        "javascript:alert(1)",
        "/etc/passwd",
        "java\tscript:alert(1)",
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
        v["patterns"][0]["failures"] = serde_json::json!([{
            "seed": 1, "invariant": "breaker.load_bound", "message": "m", "replay": "r",
            "report_href": href, "plan_href": null, "faults_shrunk": null
        }]);
        std::fs::write(&summary, v.to_string()).unwrap();
        let stderr = refused(
            &["merge", s(&summary), "--out", s(&merged)],
            "is not a relative link",
        );
        assert!(stderr.contains("report_href"), "{stderr}");
        assert!(
            !merged.join("index.html").exists(),
            "{href}: a report was written"
        );
    }
    // A relative link passes (merge copies the file it names from beside the summary).
    let failures = summary.parent().unwrap().join("failures");
    std::fs::create_dir_all(&failures).unwrap();
    std::fs::write(failures.join("breaker-seed-1.html"), "<p>seed 1</p>").unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["patterns"][0]["failures"] = serde_json::json!([{
        "seed": 1, "invariant": "breaker.load_bound", "message": "m", "replay": "r",
        "report_href": "failures/breaker-seed-1.html", "plan_href": null, "faults_shrunk": null
    }]);
    std::fs::write(&summary, v.to_string()).unwrap();
    let o = faultline(&["merge", s(&summary), "--out", s(&merged)]);
    assert!(o.status.code().is_some_and(|c| c < 2), "{}", text(&o).1);
    let html = std::fs::read_to_string(merged.join("index.html")).unwrap();
    assert!(html.contains("href=\"failures/breaker-seed-1.html\""));
}

#[test]
fn list_prints_invariants_with_their_promises() {
    let o = faultline(&["list"]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    for needle in [
        "breaker: ",
        "default seeds: ",
        "breaker.no_call_while_open",
        "No call reaches the API while the breaker is Open",
        "half_open_admits_all (caught by breaker.half_open_limit)",
        "sms_api: outage, slow, errors",
        "queue.fences_grow",
        "saga.write_ahead",
        "twopc.locks_released",
        "cqrs.monotonic_reads",
        "bus.fifo",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
    }
    let o = faultline(&["list", "bus"]);
    let (stdout, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout.starts_with("bus: ") && !stdout.contains("breaker."),
        "{stdout}"
    );
    refused(&["list", "nope"], "known patterns: breaker");
}

/// The breaker, whose first mutant's run panics.
struct Panicky;

impl Panicky {
    fn inner(&self) -> &'static dyn Pattern {
        &BreakerPattern
    }
}

impl Pattern for Panicky {
    fn name(&self) -> &'static str {
        "panicky"
    }
    fn about(&self) -> &'static str {
        "the breaker, with a mutant whose run panics"
    }
    fn invariants(&self) -> &'static [&'static str] {
        self.inner().invariants()
    }
    fn metrics(&self) -> Vec<(&'static str, &'static str)> {
        self.inner().metrics()
    }
    fn default_seeds(&self) -> SeedRange {
        self.inner().default_seeds()
    }
    fn known_targets(&self, seed: u64) -> Vec<String> {
        self.inner().known_targets(seed)
    }
    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        self.inner().knobs(seed)
    }
    fn plan(&self, seed: u64) -> FaultPlan {
        self.inner().plan(seed)
    }
    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<&str>,
    ) -> Result<Run, HarnessError> {
        if mutant == Some(self.mutants()[0].name) {
            panic!("the mutant's world fell over");
        }
        self.inner().run(seed, plan, trace, mutant)
    }
    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<&str>,
    ) -> Result<RunView, HarnessError> {
        self.inner().view(seed, plan, mutant)
    }
    fn mutants(&self) -> Vec<MutantInfo> {
        self.inner()
            .mutants()
            .into_iter()
            .filter(|m| m.name == "bypass_breaker" || m.name == "no_timeout")
            .collect()
    }
}

/// A mutant whose run panics stays in the table and fails the command (it was not
/// caught), where it used to drop out and let "every mutant caught" stand.
#[test]
fn a_panicking_mutant_fails_the_mutants_command() {
    let out = scratch("panicky");
    let patterns: Vec<&dyn Pattern> = vec![&Panicky];
    let code = faultline::cli::run(
        &patterns,
        [
            "faultline",
            "mutants",
            "--seeds",
            "0..200",
            "--out",
            s(&out),
        ],
    );
    assert_eq!(code, ExitCode::from(1));
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mutants.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let first = Panicky.mutants()[0].name;
    let panicked = rows.iter().find(|r| r["mutant"] == first).unwrap();
    assert!(panicked["caught_by"].is_null(), "{panicked}");
    assert_eq!(panicked["cases"], 1);
}

/// A reader that left (`faultline list | head`, `faultline sweep ... | less` quit early)
/// does not make the program panic, and a sweep still writes its files: the pipe's read
/// end is closed before the program starts, so every line it prints meets EPIPE.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = crate::cli::scratch("closed-stdout");
    for args in [
        vec!["list".to_string()],
        vec!["list".to_string(), "breaker".to_string()],
        vec![
            "sweep".to_string(),
            "breaker".to_string(),
            "--seeds".to_string(),
            "0..20".to_string(),
            "--jobs".to_string(),
            "1".to_string(),
            "--out".to_string(),
            dir.display().to_string(),
        ],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("the faultline binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    assert!(dir.join("summary.json").is_file());
    assert!(dir.join("index.html").is_file());
}

/// A `--out` that cannot be written is refused before any seed runs (a sweep of many
/// seeds does not end on "cannot write"): under a regular file, or a regular file itself.
#[test]
fn an_unwritable_out_is_refused_before_work_starts() {
    let dir = crate::cli::scratch("bad-out");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    for out in [file.join("sub"), file.clone()] {
        for args in [
            vec!["sweep", "breaker", "--seeds", "0..100000", "--jobs", "1"],
            vec!["mutants", "breaker"],
        ] {
            let mut args = args.clone();
            args.extend(["--out", s(&out)]);
            let o = faultline(&args);
            let (stdout, stderr) = text(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
            assert!(stderr.contains("--out"), "{stderr}");
            assert!(!stdout.contains("sweeping"), "work started: {stdout}");
        }
    }
}
