//! A sweep stopped by SIGINT writes a valid partial summary that says which seeds it
//! covered, and `sweep --resume` continues it to the summary an uninterrupted sweep
//! writes (equal but for the wall time and the command's `--out`).

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn faultline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
}

fn summary(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json parses")
}

/// The summary without what differs between two runs of the same sweep: wall times,
/// and the command (whose `--out` differs).
fn comparable(mut v: Value) -> Value {
    v["command"] = Value::Null;
    for p in v["patterns"].as_array_mut().expect("patterns") {
        p["summary"]["wall_ms"] = Value::Null;
    }
    v
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sigint_mid_sweep_writes_a_partial_summary() {
    let out = scratch("sigint");
    let mut child = faultline()
        .args([
            "sweep",
            "queue",
            "--seeds",
            "0..10000000",
            "--jobs",
            "2",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start faultline");
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the sweep did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "interrupted sweeps exit 130");
    let v = summary(&out);
    let s = &v["patterns"][0]["summary"];
    let runs = s["runs"].as_u64().expect("runs");
    let progress = &s["progress"][0];
    assert!(runs > 0 && runs < 10_000_000, "runs {runs}");
    assert_eq!(progress["runs"].as_u64(), Some(runs));
    assert_eq!(progress["total"].as_u64(), Some(10_000_000));
    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html");
    assert!(html.contains("partial: the sweep was stopped early"));
    assert!(
        html.contains(&format!("seeds 0..{runs} of 0..10000000")),
        "the page says which seeds were covered"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_resumed_sweep_equals_an_uninterrupted_one() {
    let (whole, parts) = (scratch("whole"), scratch("parts"));
    let seeds = [
        "sweep", "queue", "breaker", "--seeds", "0..300", "--jobs", "2",
    ];
    let ok = faultline()
        .args(seeds)
        .arg("--out")
        .arg(&whole)
        .output()
        .expect("run");
    assert_eq!(ok.status.code(), Some(0));
    // Stopped after 120 seeds of the first pattern (as SIGINT would stop it).
    let stopped = faultline()
        .args(seeds)
        .arg("--out")
        .arg(&parts)
        .env("FAULTLINE_SWEEP_STOP_AFTER", "120")
        .output()
        .expect("run");
    assert_eq!(stopped.status.code(), Some(130));
    let partial = summary(&parts);
    assert_eq!(partial["patterns"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        partial["patterns"][0]["summary"]["runs"].as_u64(),
        Some(120)
    );
    let resumed = faultline()
        .args(seeds)
        .args(["--resume", "--out"])
        .arg(&parts)
        .output()
        .expect("run");
    assert_eq!(resumed.status.code(), Some(0), "{resumed:?}");
    assert_eq!(comparable(summary(&parts)), comparable(summary(&whole)));
    // A resume of other seeds is refused.
    let other = faultline()
        .args(["sweep", "queue", "--seeds", "0..301", "--resume", "--out"])
        .arg(&parts)
        .output()
        .expect("run");
    assert_eq!(other.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&parts);
}
