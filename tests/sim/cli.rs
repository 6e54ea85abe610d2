//! The `faultline` command: every subcommand's happy path and each class of bad input,
//! asserting exit codes and messages; byte-identical reports; escaping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn faultline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .output()
        .expect("the faultline binary runs")
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn run_prints_knobs_and_verdicts_and_writes_a_report() {
    let out = scratch("run");
    let o = faultline(&["run", "breaker", "--seed", "7", "--out", s(&out)]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    for needle in [
        "running breaker seed 7",
        "knobs:",
        "steady_per_sec = ",
        "fault plan:",
        "invariants:",
        "held",
        "breaker.load_bound",
        "passed",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    assert!(out.join("runs/breaker-seed-7.html").exists());
    let o = faultline(&["run", "bus", "--seed", "2", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o).0, text(&o).1);
    assert!(text(&o).0.contains("bus.exactly_once"));
    assert!(out.join("runs/bus-seed-2.html").exists());
}

#[test]
fn run_twice_writes_byte_identical_html() {
    let a = scratch("det-a");
    let b = scratch("det-b");
    assert_eq!(
        faultline(&["run", "breaker", "--seed", "11", "--out", s(&a)])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        faultline(&["run", "breaker", "--seed", "11", "--out", s(&b)])
            .status
            .code(),
        Some(0)
    );
    let x = std::fs::read(a.join("runs/breaker-seed-11.html")).unwrap();
    let y = std::fs::read(b.join("runs/breaker-seed-11.html")).unwrap();
    assert!(x == y, "reports differ");
}

#[test]
fn a_violation_exits_1_with_the_replay_command() {
    let out = scratch("violation");
    let o = faultline(&[
        "run",
        "breaker",
        "--seed",
        "0",
        "--mutant",
        "half_open_admits_all",
        "--out",
        s(&out),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("VIOLATED breaker.half_open_limit"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "replay: cargo run --release -- replay breaker --seed 0 --mutant half_open_admits_all"
        ),
        "{stdout}"
    );
    // The replay reproduces it, and writes the same report.
    let again = faultline(&[
        "replay",
        "breaker",
        "--seed",
        "0",
        "--mutant",
        "half_open_admits_all",
        "--out",
        s(&out),
    ]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn replay_from_a_plan_file_that_records_its_seed() {
    let out = scratch("replay-plan");
    let plan = out.join("plan.json");
    std::fs::write(
        &plan,
        r#"{"seed": 5, "horizon_ms": 30000, "faults": [
            {"kind": "outage", "target": "sms_api", "from_ms": 2000, "until_ms": 9000}]}"#,
    )
    .unwrap();
    let o = faultline(&["replay", "breaker", "--plan", s(&plan), "--out", s(&out)]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("replaying breaker seed 5"), "{stdout}");
    let first = std::fs::read(out.join("runs/breaker-seed-5-plan.html")).unwrap();
    assert_eq!(
        faultline(&["replay", "breaker", "--plan", s(&plan), "--out", s(&out)])
            .status
            .code(),
        Some(0)
    );
    assert!(first == std::fs::read(out.join("runs/breaker-seed-5-plan.html")).unwrap());
    // Without a recorded seed, --seed is required.
    std::fs::write(&plan, r#"{"horizon_ms": 1000, "faults": []}"#).unwrap();
    let o = faultline(&["replay", "breaker", "--plan", s(&plan), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("give --seed"));
}

#[test]
fn bad_input_exits_2_with_a_message_that_names_the_problem() {
    let out = scratch("bad");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "nope".into(), "--seed".into(), "1".into()],
            "known patterns: breaker",
        ),
        (
            vec!["sweep".into(), "nope".into()],
            "known patterns: breaker",
        ),
        (
            vec!["sweep".into(), "--seeds".into(), "10..3".into()],
            "empty or inverted",
        ),
        (
            vec!["sweep".into(), "--seeds".into(), "ten".into()],
            "not of the form A..B",
        ),
        (
            vec!["sweep".into(), "--shard".into(), "0/0".into()],
            "out of range",
        ),
        (
            vec!["sweep".into(), "--shard".into(), "3/2".into()],
            "out of range",
        ),
        (
            vec![
                "run".into(),
                "breaker".into(),
                "--seed".into(),
                "1".into(),
                "--mutant".into(),
                "nope".into(),
            ],
            "its mutants: half_open_admits_all",
        ),
        (vec!["run".into(), "breaker".into()], "--seed"),
        (vec!["frobnicate".into()], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let mut args = args;
        args.extend(["--out".into(), s(&out).into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = faultline(&refs);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
    }
    let plan = out.join("bad.json");
    for (json, needles) in [
        (
            "{\"horizon_ms\": 100,\n \"faults\": [{\"kind\": \"outage\", \"target\": \"sms_api\" \"from_ms\": 1}]}",
            vec!["line 2", "column"],
        ),
        (
            r#"{"horizon_ms": 100, "faults": [{"kind": "outage", "target": "sms_api", "from_ms": 1, "until_ms": 2, "severity": 9}]}"#,
            vec!["faults[0]", "severity"],
        ),
        (
            r#"{"horizon_ms": 100, "faults": [{"kind": "meteor", "target": "sms_api", "from_ms": 1, "until_ms": 2}]}"#,
            vec!["faults[0].kind", "meteor"],
        ),
        (
            r#"{"horizon_ms": 100, "faults": [{"kind": "errors", "target": "sms_api", "from_ms": 1, "until_ms": 2, "ratio": "3/2"}]}"#,
            vec!["faults[0].ratio", "above 1"],
        ),
        (
            r#"{"horizon_ms": 100, "faults": [{"kind": "outage", "target": "sms_api", "from_ms": 9, "until_ms": 2}]}"#,
            vec!["until_ms", "inverted"],
        ),
    ] {
        std::fs::write(&plan, json).unwrap();
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
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{json}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "expected {n:?} in {stderr}");
        }
    }
    let o = faultline(&[
        "run",
        "breaker",
        "--seed",
        "1",
        "--plan",
        "/no/such/plan.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("cannot read plan"));
}

#[test]
fn labels_from_a_plan_are_escaped_in_the_report() {
    // A fault on a name the world does not know is refused (see cli_input), so the
    // hostile label rides in the plan file's name, which the report's replay command
    // and file name carry.
    let out = scratch("escape");
    let plan = out.join("<script>alert(1)<!-->.json");
    std::fs::write(
        &plan,
        r#"{"horizon_ms": 5000, "faults": [
            {"kind": "outage", "target": "sms_api", "from_ms": 100, "until_ms": 900}]}"#,
    )
    .unwrap();
    let o = faultline(&[
        "run",
        "breaker",
        "--seed",
        "3",
        "--plan",
        s(&plan),
        "--out",
        s(&out),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    let html = std::fs::read_to_string(out.join("runs/breaker-seed-3-<script>alert(1)<!-->.html"))
        .unwrap();
    assert!(
        !html.contains("<script>alert"),
        "raw script tag in the report"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;!--&gt;.json"),
        "escaped label missing"
    );
}

#[test]
fn sweep_shards_merge_into_the_same_summary() {
    let whole = scratch("sweep-whole");
    let o = faultline(&[
        "sweep",
        "breaker",
        "--seeds",
        "0..40",
        "--jobs",
        "2",
        "--out",
        s(&whole),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("breaker: 40 seeds, 40 passed, 0 failed"),
        "{stdout}"
    );
    assert!(whole.join("index.html").exists());
    let summary = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let w = summary(&whole);
    let part = |i: &str| {
        let dir = scratch(&format!("sweep-shard-{}", i.replace('/', "of")));
        let o = faultline(&[
            "sweep",
            "breaker",
            "--seeds",
            "0..40",
            "--shard",
            i,
            "--jobs",
            "1",
            "--out",
            s(&dir),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        dir.join("summary.json")
    };
    let (a, b) = (part("1/2"), part("2/2"));
    let merged = scratch("sweep-merged");
    let o = faultline(&["merge", s(&a), s(&b), "--out", s(&merged)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let m = summary(&merged);
    let field = |v: &serde_json::Value, f: &str| v["patterns"][0]["summary"][f].clone();
    for f in ["runs", "passed", "events", "digest", "coverage"] {
        assert_eq!(field(&m, f), field(&w, f), "{f}");
    }
    // The same shard twice is refused.
    let o = faultline(&["merge", s(&a), s(&a), "--out", s(&merged)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("appears twice"));
    // A file that is not a summary is refused.
    let o = faultline(&["merge", "Cargo.toml", "--out", s(&merged)]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn mutants_prints_the_table_and_every_mutant_is_caught() {
    let out = scratch("mutants");
    let o = faultline(&["mutants", "breaker", "--seeds", "0..100", "--out", s(&out)]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    for m in [
        "half_open_admits_all",
        "no_timeout",
        "permit_leak_on_cancel",
        "retries_outside_breaker",
        "bypass_breaker",
        "ignored_counted_as_failure",
    ] {
        assert!(stdout.contains(m), "{m} missing from\n{stdout}");
    }
    assert!(!stdout.contains("SURVIVED"));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("id=\"mutants\""));
    // With too few seeds a mutant survives, and the command says so.
    let o = faultline(&["mutants", "breaker", "--seeds", "0..1", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).0);
    assert!(text(&o).0.contains("SURVIVED"));
}

#[test]
fn sweep_and_merge_show_the_saga_vs_2pc_comparison() {
    let id = "id=\"comparison-saga-vs-two-phase-commit\"";
    let sweep = |names: &[&str], dir: &Path| {
        let mut args = vec!["sweep"];
        args.extend(names);
        args.extend(["--seeds", "0..3", "--jobs", "1", "--out", s(dir)]);
        let o = faultline(&args);
        assert_eq!(o.status.code(), Some(0), "{}{}", text(&o).0, text(&o).1);
        std::fs::read_to_string(dir.join("index.html")).unwrap()
    };
    let both = scratch("compare-both");
    let html = sweep(&["saga", "twopc"], &both);
    assert!(html.contains(id), "no comparison section");
    assert!(html.contains("href=\"#comparison-saga-vs-two-phase-commit\""));
    // twopc reports every metric of the comparison: its column has no empty cell.
    let section = &html[html.find(id).unwrap()..html.find("id=\"mutants\"").unwrap()];
    assert!(section.contains("longest lock hold"), "{section}");
    assert!(section.contains("3 seeds"), "{section}");

    // One of its patterns alone makes no comparison; two parts merged do.
    let saga = scratch("compare-saga");
    let twopc = scratch("compare-twopc");
    assert!(!sweep(&["saga"], &saga).contains(id));
    assert!(!sweep(&["twopc"], &twopc).contains(id));
    let merged = scratch("compare-merged");
    let o = faultline(&[
        "merge",
        s(&saga.join("summary.json")),
        s(&twopc.join("summary.json")),
        "--out",
        s(&merged),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let html = std::fs::read_to_string(merged.join("index.html")).unwrap();
    assert_eq!(html.matches("id=\"comparison-").count(), 1);
    assert!(html.contains(id));

    // Shards that each hold the comparison: merged, it is there once.
    let shard = |i: &str| {
        let dir = scratch(&format!("compare-shard-{}", i.replace('/', "of")));
        let o = faultline(&[
            "sweep",
            "saga",
            "twopc",
            "--seeds",
            "0..4",
            "--shard",
            i,
            "--jobs",
            "1",
            "--out",
            s(&dir),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        dir.join("summary.json")
    };
    let (a, b) = (shard("1/2"), shard("2/2"));
    let kept = scratch("compare-kept");
    let o = faultline(&["merge", s(&a), s(&b), "--out", s(&kept)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let html = std::fs::read_to_string(kept.join("index.html")).unwrap();
    assert_eq!(html.matches("id=\"comparison-").count(), 1);
    assert!(html.contains(id) && html.contains("4 seeds"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["comparisons"].as_array().map(Vec::len), Some(1));
}

/// `sweep PATTERN --mutant NAME` measures on how many seeds the invariants catch a
/// mutant: the line, the replay with `--mutant`, the report and summary.json name it; it
/// exits 0 when caught, 1 when it survived; its shards merge only with their own kind.
#[test]
fn sweep_of_a_mutant_counts_the_seeds_that_catch_it() {
    let out = scratch("sweep-mutant");
    let sweep = |seeds: &str, extra: &[&str], dir: &Path| {
        let mut args = vec![
            "sweep",
            "breaker",
            "--mutant",
            "no_timeout",
            "--seeds",
            seeds,
            "--jobs",
            "2",
            "--shrink-max",
            "1",
            "--out",
            s(dir),
        ];
        args.extend(extra);
        faultline(&args)
    };
    let summary = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let o = sweep("0..40", &[], &out);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("sweeping breaker (mutant no_timeout) seeds 0..40"),
        "{stdout}"
    );
    let sum = summary(&out);
    let p = &sum["patterns"][0];
    assert_eq!(p["mutant"]["name"], "no_timeout");
    assert_eq!(p["mutant"]["defect"], "no timeout on slow calls");
    let caught = 40 - p["summary"]["passed"].as_u64().unwrap();
    assert!(
        caught > 0 && caught < 40,
        "{caught}: a range it is caught on only in part"
    );
    assert_eq!(p["failures"].as_array().unwrap().len() as u64, caught);
    // Seeds 0 and 1 do not catch it, seed 2 does: the command runs the mutant, checked
    // seed by seed with `run --mutant`.
    let line = format!(
        "mutant no_timeout: caught on {caught} of 40 seeds ({}.{} %), first by breaker.responsiveness at seed 2",
        caught * 1000 / 40 / 10,
        caught * 1000 / 40 % 10
    );
    assert!(stdout.contains(&line), "{line:?} missing from\n{stdout}");
    for (seed, code) in [("0", 0), ("1", 0), ("2", 1)] {
        let o = faultline(&[
            "run",
            "breaker",
            "--seed",
            seed,
            "--mutant",
            "no_timeout",
            "--out",
            s(&out),
        ]);
        assert_eq!(o.status.code(), Some(code), "seed {seed}: {}", text(&o).0);
    }
    // The replay line names the mutant and the shrunk plan, and reproduces the catch.
    let plan = out.join("failures/breaker-seed-2-mutant-no_timeout.json");
    assert!(
        plan.exists()
            && out
                .join("failures/breaker-seed-2-mutant-no_timeout.html")
                .exists()
    );
    let replay = format!(
        "  replay: cargo run --release -- replay breaker --seed 2 --plan {} --mutant no_timeout --out {}",
        plan.display(),
        out.display()
    );
    assert!(
        stdout.contains(&replay),
        "{replay:?} missing from\n{stdout}"
    );
    let again = faultline(&[
        "replay",
        "breaker",
        "--seed",
        "2",
        "--plan",
        s(&plan),
        "--mutant",
        "no_timeout",
        "--out",
        s(&out),
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again).0);
    assert!(text(&again).0.contains("FAILED: breaker.responsiveness"));
    for f in p["failures"].as_array().unwrap() {
        assert!(
            f["replay"]
                .as_str()
                .unwrap()
                .contains("--mutant no_timeout"),
            "{f}"
        );
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("breaker, mutant <code>no_timeout</code>"));
    assert!(html.contains(&line[..line.find(" (").unwrap()]));

    // Seeds that never catch it: it survived, exit 1.
    let survived = scratch("sweep-mutant-survived");
    let o = sweep("0..2", &[], &survived);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).0);
    assert!(
        text(&o)
            .0
            .contains("mutant no_timeout: survived all 2 seeds, no invariant caught it"),
        "{}",
        text(&o).0
    );

    // Shards of a mutant sweep merge into the whole's figures, and only with their kind.
    let shard = |i: &str, mutant: Option<&str>| {
        let dir = scratch(&format!(
            "sweep-mutant-shard-{}-{}",
            i.replace('/', "of"),
            mutant.unwrap_or("reference")
        ));
        let mut args = vec!["sweep", "breaker", "--seeds", "0..40", "--shard", i];
        if let Some(m) = mutant {
            args.extend(["--mutant", m]);
        }
        args.extend(["--jobs", "1", "--shrink-max", "0", "--out", s(&dir)]);
        let o = faultline(&args);
        assert!(o.status.code().is_some_and(|c| c < 2), "{}", text(&o).1);
        dir.join("summary.json")
    };
    let (a, b) = (
        shard("1/2", Some("no_timeout")),
        shard("2/2", Some("no_timeout")),
    );
    let merged = scratch("sweep-mutant-merged");
    let o = faultline(&["merge", s(&a), s(&b), "--out", s(&merged)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(text(&o).0.contains(&line), "{}", text(&o).0);
    let m = summary(&merged);
    assert_eq!(m["patterns"][0]["mutant"]["name"], "no_timeout");
    assert_eq!(
        m["patterns"][0]["summary"]["passed"],
        p["summary"]["passed"]
    );
    assert_eq!(
        m["patterns"][0]["summary"]["digest"],
        p["summary"]["digest"]
    );
    let reference = shard("2/2", None);
    let other = shard("2/2", Some("bypass_breaker"));
    for (x, y, needle) in [
        (&a, &reference, "the patterns' own implementations"),
        (&reference, &a, "mutant `no_timeout` of breaker"),
        (&a, &other, "mutant `bypass_breaker` of breaker"),
    ] {
        let o = faultline(&["merge", s(x), s(y), "--out", s(&merged)]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("merge only with shards of the same mutant"),
            "{needle:?} missing from {stderr}"
        );
    }

    // Bad usage: an unknown mutant lists the catalog; --mutant needs one pattern.
    for (args, needle) in [
        (
            vec!["sweep", "breaker", "--mutant", "nope"],
            "pattern `breaker` has no mutant `nope`; its mutants: half_open_admits_all, ",
        ),
        (
            vec!["sweep", "--mutant", "permit_leak_on_cancel"],
            "name exactly one pattern: `sweep breaker --mutant permit_leak_on_cancel`",
        ),
        (
            // The sans-IO breaker and the tokio adapter both have one.
            vec!["sweep", "--mutant", "no_timeout"],
            "the catalogs of breaker, breaker-tokio have one of that name",
        ),
        (
            vec!["sweep", "breaker", "bus", "--mutant", "no_timeout"],
            "name exactly one pattern",
        ),
    ] {
        let mut args = args;
        args.extend(["--seeds", "0..2", "--out", s(&out)]);
        let o = faultline(&args);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} missing from {stderr}"
        );
    }
}

/// The variables `sweep --shard auto` reads, removed from a child's environment so the
/// machine running the tests (a CI runner, a cluster node) does not leak into it.
const SHARD_VARS: &[&str] = &[
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "AWS_BATCH_JOB_ARRAY_SIZE",
    "FAULTLINE_SHARD_INDEX",
    "FAULTLINE_SHARD_COUNT",
];

fn faultline_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_faultline"));
    c.args(args);
    for v in SHARD_VARS {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output().expect("the faultline binary runs")
}

fn summary_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// `--shard auto` under each batch engine's environment gives the shard `--shard I/N`
/// names; no engine, two engines or a wrong count is exit 2 with the reason.
#[test]
fn sweep_shard_auto_reads_each_batch_engine() {
    let sweep = |dir: &Path, shard: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "sweep", "breaker", "--seeds", "0..12", "--jobs", "1", "--shard", shard,
        ];
        args.extend(extra);
        args.extend(["--out", s(dir)]);
        faultline_env(&args, env)
    };
    let fixed = scratch("auto-fixed");
    let o = sweep(&fixed, "2/3", &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let want = summary_of(&fixed)["patterns"][0]["summary"].clone();
    assert_eq!(
        want["shards"],
        serde_json::json!([{"index": 2, "count": 3}])
    );
    type Engine<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let engines: [Engine; 5] = [
        (
            "k8s",
            &["--shard-count", "3"],
            &[("JOB_COMPLETION_INDEX", "1")],
        ),
        (
            "k8s-env-count",
            &[],
            &[
                ("JOB_COMPLETION_INDEX", "1"),
                ("FAULTLINE_SHARD_COUNT", "3"),
            ],
        ),
        (
            "slurm",
            &[],
            &[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "5"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        ),
        (
            "aws",
            &[],
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ],
        ),
        (
            "github",
            &[],
            &[
                ("FAULTLINE_SHARD_INDEX", "2"),
                ("FAULTLINE_SHARD_COUNT", "3"),
            ],
        ),
    ];
    for (name, extra, env) in engines {
        let dir = scratch(&format!("auto-{name}"));
        let o = sweep(&dir, "auto", extra, env);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{name}: {stdout}{stderr}");
        assert!(
            stdout.contains("shard 2/3 (--shard auto: "),
            "{name}: {stdout}"
        );
        let got = &summary_of(&dir)["patterns"][0]["summary"];
        for f in ["shards", "runs", "passed", "events", "digest"] {
            assert_eq!(got[f], want[f], "{name}: {f}");
        }
    }
    let dir = scratch("auto-bad");
    for (extra, env, needle) in [
        (&[][..], &[][..], "found no shard index in the environment"),
        (
            &[][..],
            &[("JOB_COMPLETION_INDEX", "1")][..],
            "pass --shard-count N or set FAULTLINE_SHARD_COUNT",
        ),
        (
            &["--shard-count", "2"][..],
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ][..],
            "given twice and differs: --shard-count=2 but AWS_BATCH_JOB_ARRAY_SIZE=3",
        ),
        (
            &["--shard-count", "3"][..],
            &[("JOB_COMPLETION_INDEX", "3")][..],
            "JOB_COMPLETION_INDEX=3, but there are 3 shards",
        ),
        (
            &[][..],
            &[("JOB_COMPLETION_INDEX", "0"), ("SLURM_ARRAY_TASK_ID", "0")][..],
            "ambiguous",
        ),
    ] {
        let o = sweep(&dir, "auto", extra, env);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{env:?}: {stdout}{stderr}");
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
        assert!(
            !stdout.contains("sweeping"),
            "{env:?}: swept anyway: {stdout}"
        );
    }
    let o = sweep(&dir, "1/3", &["--shard-count", "3"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--shard-count goes with --shard auto"));
}

/// `merge` goes green only for a whole, consistent shard set: a missing or interrupted
/// shard, a duplicate, a different split, a label such as 5/3 or counters that overflow
/// are exit 2 with the shards named; `--allow-incomplete` lets a missing shard through.
#[test]
fn merge_refuses_an_incomplete_or_inconsistent_shard_set() {
    let shard = |i: &str| {
        let dir = scratch(&format!("mg-shard-{}", i.replace('/', "of")));
        let o = faultline(&[
            "sweep",
            "breaker",
            "--seeds",
            "0..12",
            "--shard",
            i,
            "--jobs",
            "1",
            "--out",
            s(&dir),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        dir.join("summary.json")
    };
    let (a, b, c) = (shard("1/3"), shard("2/3"), shard("3/3"));
    let merged = scratch("mg-merged");
    let merge = |files: &[&Path], extra: &[&str]| {
        let mut args = vec!["merge"];
        args.extend(files.iter().map(|f| s(f)));
        args.extend(extra);
        args.extend(["--out", s(&merged)]);
        faultline(&args)
    };
    let o = merge(&[&a, &b, &c], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(
        text(&o)
            .0
            .contains("breaker: 12 seeds in 3 of 3 shards, 0 failed")
    );

    // A dead shard: exit 2, naming it.
    let o = merge(&[&a, &c], &[]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("incomplete")
            && stderr
                .contains("breaker: 1 of 3 shards of seeds 0..12 missing: 2/3 (present: 1/3, 3/3)")
            && stderr.contains("--allow-incomplete"),
        "{stderr}"
    );
    // Told to, it merges and says what it holds.
    let o = merge(&[&a, &c], &["--allow-incomplete"]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("8 seeds in 2 of 3 shards (incomplete)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: breaker: 1 of 3 shards"),
        "{stderr}"
    );

    // The same shard twice, even with --allow-incomplete: both files named.
    let o = merge(&[&a, &b, &a, &c], &["--allow-incomplete"]);
    let stderr = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "shard 1/3 appears twice, in {} and in {}",
            a.display(),
            a.display()
        )),
        "{stderr}"
    );

    // Edited copies of shard 2/3: a different split, range, label, interrupted, overflow.
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&b).unwrap()).unwrap();
        f(&mut v["patterns"][0]["summary"]);
        let dir = scratch(&format!("mg-edit-{name}"));
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        path
    };
    let other_split = edit("split", &|s| {
        s["shards"] = serde_json::json!([{"index": 2, "count": 4}])
    });
    let other_range = edit("range", &|s| s["range"]["end"] = 13.into());
    let five_of_three = edit("label", &|s| {
        s["shards"] = serde_json::json!([{"index": 5, "count": 3}])
    });
    let short = edit("short", &|s| {
        s["runs"] = 3.into();
        s["passed"] = 3.into();
    });
    let huge = edit("huge", &|s| s["events"] = u64::MAX.into());
    for (file, code, needle) in [
        (&other_split, 2, "covers seeds 0..12 in 3 shards"),
        (&other_range, 2, "covers seeds 0..13 in 3 shards"),
        (&five_of_three, 2, "out of range"),
        (&short, 2, "ran 3 of its shards' 4 seeds"),
        (&huge, 2, "the sum of `events` overflows"),
    ] {
        let o = merge(&[&a, file, &c], &[]);
        let stderr = text(&o).1;
        assert_eq!(o.status.code(), Some(code), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    }
    // An interrupted shard is incompleteness: let through when allowed.
    let o = merge(&[&a, &short, &c], &["--allow-incomplete"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    // A different split never is.
    let o = merge(&[&a, &other_split, &c], &["--allow-incomplete"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

/// Merged failure links resolve: every file the merged index links to is in the merged
/// `--out`, copied from the shard that wrote it, even when the shards' own directories
/// are gone.
#[test]
fn merged_failure_links_resolve() {
    let root = scratch("mg-links");
    let shard = |i: &str| {
        let dir = root.join(format!("shard-{}", i.replace('/', "of")));
        let o = faultline(&[
            "sweep",
            "breaker",
            "--seeds",
            "0..40",
            "--shard",
            i,
            "--mutant",
            "no_timeout",
            "--shrink-max",
            "2",
            "--jobs",
            "1",
            "--out",
            s(&dir),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        // Each shard's failures are somewhere only it has them.
        dir
    };
    let (a, b) = (shard("1/2"), shard("2/2"));
    // The shard directories as a CI merge job has them: downloaded elsewhere.
    let downloaded = root.join("downloaded");
    std::fs::create_dir_all(&downloaded).unwrap();
    let (da, db) = (downloaded.join("a"), downloaded.join("b"));
    std::fs::rename(&a, &da).unwrap();
    std::fs::rename(&b, &db).unwrap();
    let merged = root.join("merged");
    let o = faultline(&[
        "merge",
        s(&da.join("summary.json")),
        s(&db.join("summary.json")),
        "--out",
        s(&merged),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o).0, text(&o).1);
    // Without the shards' directories, the merged report stands alone.
    std::fs::remove_dir_all(&downloaded).unwrap();
    let html = std::fs::read_to_string(merged.join("index.html")).unwrap();
    let hrefs: Vec<&str> = html
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|h| !h.starts_with('#'))
        .collect();
    let failures: Vec<&&str> = hrefs
        .iter()
        .filter(|h| h.starts_with("failures/"))
        .collect();
    // Two shrunk failures per shard, each with a report and a plan.
    assert_eq!(failures.len(), 8, "{hrefs:?}");
    for h in &hrefs {
        assert!(
            !h.contains("://") && !h.starts_with('/'),
            "non-relative link {h}"
        );
        let path = merged.join(h.replace("&amp;", "&"));
        assert!(
            path.is_file(),
            "{h} does not resolve in {}",
            merged.display()
        );
    }
    // The copies are the shards' files, not empty stand-ins.
    let plan = failures.iter().find(|h| h.ends_with(".json")).unwrap();
    let text_of = std::fs::read_to_string(merged.join(plan)).unwrap();
    assert!(text_of.contains("\"faults\""), "{text_of}");
    // The replay commands, on the index and on each failure's page, name the merged
    // directory, never a shard's (which is gone).
    let summary = std::fs::read_to_string(merged.join("summary.json")).unwrap();
    let replays: Vec<&str> = summary
        .lines()
        .filter(|l| l.contains("\"replay\""))
        .collect();
    assert!(!replays.is_empty());
    for r in &replays {
        assert!(!r.contains("downloaded"), "a shard path in {r}");
    }
    assert!(summary.contains(&format!("--plan {}/failures/", merged.display())));
    for page in failures.iter().filter(|h| h.ends_with(".html")) {
        let page_html = std::fs::read_to_string(merged.join(page)).unwrap();
        assert!(!page_html.contains("downloaded"), "a shard path in {page}");
        assert!(page_html.contains(&format!("--plan {}/failures/", merged.display())));
    }

    // A summary whose failure files were not shipped with it: refused, naming the file;
    // with --allow-incomplete, merged without those links.
    let lone = root.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(shard("1/2").join("summary.json"), lone.join("summary.json")).unwrap();
    let other = shard("2/2").join("summary.json");
    let lone_summary = lone.join("summary.json");
    let merge = |extra: &[&str], out: &str| {
        let mut args = vec!["merge", s(&lone_summary), s(&other)];
        args.extend(extra);
        let out = root.join(out);
        args.extend(["--out", s(&out)]);
        (faultline(&args), out)
    };
    let (o, _) = merge(&[], "merged2");
    let stderr = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not a file") && stderr.contains("lone"),
        "{stderr}"
    );
    let (o, out) = merge(&["--allow-incomplete"], "merged3");
    let stderr = text(&o).1;
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("its link is dropped"), "{stderr}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(
        html.matches("href=\"failures/").count(),
        4,
        "only shard 2/2's links"
    );
}
