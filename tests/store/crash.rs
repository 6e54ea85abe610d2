//! Crash tests with real processes: this test binary runs one of its own tests as a
//! child process, which works against a store until the parent kills it with SIGKILL
//! at a random point; the parent then checks the store and starts the next child.
//!
//! A child test is an ordinary `#[test]` that returns at once unless [`role`] says it
//! is the child (the environment variable [`ROLE_VAR`] is set).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Set in a child's environment: what the child is to do.
pub const ROLE_VAR: &str = "FAULTLINE_CRASH_ROLE";

/// The role this process was started with, if it is a crash-test child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Starts this test binary as a child running only `test` (its path, e.g.
/// `queue::crash_child`), with `role` and `envs` in its environment. The child's
/// stdout is piped: it prints [`READY`] once it works against the store.
pub fn spawn(test: &str, role: &str, envs: &[(&str, &str)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut c = Command::new(exe);
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("spawn a crash-test child")
}

/// What a child prints once it works against the store (libtest may print the test's
/// name on the same line before it).
pub const READY: &str = "FAULTLINE-CRASH-CHILD-READY";

/// In a child: tells the parent the child now works against the store.
pub fn ready() {
    println!("{READY}");
}

/// Runs `rounds` children one after another: each is killed with SIGKILL a random
/// time (drawn from `seed`, up to `max_delay`) after it said [`READY`], then `check` runs
/// with the round's number before the next child starts. Returns how many children
/// were killed while still working (a child that finished its work first exits on its
/// own; the caller decides whether that is acceptable).
pub fn kill_loop(
    test: &str,
    role: &str,
    envs: &[(&str, &str)],
    rounds: u32,
    seed: u64,
    max_delay: Duration,
    mut check: impl FnMut(u32),
) -> u32 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut killed = 0;
    for round in 0..rounds {
        let mut child = spawn(test, role, envs);
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let said_ready = lines
            .by_ref()
            .any(|l| l.map(|l| l.contains(READY)).unwrap_or(false));
        assert!(
            said_ready,
            "round {round}: the child ended before it was ready"
        );
        let delay = rng.random_range(0..=u64::try_from(max_delay.as_micros()).unwrap_or(u64::MAX));
        std::thread::sleep(Duration::from_micros(delay));
        if child.try_wait().expect("child status").is_none() {
            child.kill().expect("SIGKILL the child");
            killed += 1;
        }
        let status = child.wait().expect("reap the child");
        // Drain what the child printed after it was ready, so a pipe never blocks it.
        for _ in lines {}
        let _ = status;
        check(round);
    }
    killed
}

/// Appends `line` to the side file at `path` and fsyncs it: a child's own record of
/// what the store acknowledged, written only after the store returned. The parent
/// checks that the store holds at least what this file lists.
pub fn note_acknowledged(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the acknowledgement file");
    // One write(2) of the whole line: `writeln!` on a `File` writes the text and the
    // newline in separate calls, and a kill between them left a line without its
    // newline, which the next child's first line was then glued to.
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write the acknowledgement");
    f.sync_data().expect("fsync the acknowledgement");
}

/// The complete lines of an acknowledgement file (a torn last line, cut by the kill,
/// is dropped: it was not yet acknowledged to anyone).
pub fn acknowledged(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete.lines().map(str::to_owned).collect()
}

/// The harness itself: a child counts up in its acknowledgement file until killed;
/// every round's file holds only complete, consecutive numbers, and more than before.
#[test]
fn crash_harness_kills_children_and_keeps_only_what_they_acknowledged() {
    let dir = crate::support::temp_dir("crash-harness");
    let file = dir.join("acks");
    let file_s = file.display().to_string();
    let mut seen = 0;
    let killed = kill_loop(
        "crash::crash_harness_child",
        "count",
        &[("FAULTLINE_CRASH_FILE", &file_s)],
        5,
        7,
        Duration::from_millis(50),
        |round| {
            let acks = acknowledged(&file);
            for (i, a) in acks.iter().enumerate() {
                assert_eq!(a, &i.to_string(), "round {round}: line {i}");
            }
            assert!(
                acks.len() >= seen,
                "round {round}: acknowledged lines went missing"
            );
            seen = acks.len();
        },
    );
    assert_eq!(killed, 5, "every child was still counting when killed");
}

/// The child of the test above.
#[test]
fn crash_harness_child() {
    let Some(_) = role() else { return };
    let file = std::path::PathBuf::from(std::env::var("FAULTLINE_CRASH_FILE").expect("file"));
    let mut next = acknowledged(&file).len();
    ready();
    loop {
        note_acknowledged(&file, &next.to_string());
        next += 1;
    }
}
