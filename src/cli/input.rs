//! What the command takes from its user, checked before any work starts: the size of
//! the files it reads, the seed ranges and shards, `--jobs`, the faults of a plan file,
//! the links of a summary it merges; and what it prints of that input, escaped.

use super::UsageError;
use crate::harness::Pattern;
use faultline_sim::FaultPlan;
use faultline_sim::fault::TargetClass;
use faultline_sim::report::model::SweepView;
use faultline_sim::sweep::{SeedRange, Shard};
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

/// Most bytes read from a plan file (`run`/`replay --plan`). Plans are a few KB.
pub(super) const PLAN_BYTES_MAX: u64 = 64 << 20;
/// Most bytes read from a `summary.json` (`merge`, and the one `mutants` adds to).
/// Summaries are bounded (sketches, failures kept up to a cap): a sweep's is tens of KB,
/// a merge of thousands of shards a few MB.
pub(super) const SUMMARY_BYTES_MAX: u64 = 64 << 20;
/// Most seeds one shard of a `sweep` (or one mutant of `mutants`) may hold: 2^32.
/// A 64-bit range is refused before any work, not counted or allocated.
pub(super) const SEEDS_PER_SHARD_MAX: u64 = 1 << 32;
/// Most worker threads `--jobs` may ask for, whatever the cores.
pub(super) const JOBS_MAX: usize = 256;

/// The text of `path` (a `what`, e.g. "plan"), read through a reader that stops after
/// `cap` bytes: `/dev/zero` or a huge file is an error naming the file and the cap, not
/// gigabytes of memory.
pub(super) fn read_capped(path: &Path, what: &str, cap: u64) -> Result<String, UsageError> {
    let cannot = |e: std::io::Error| {
        UsageError(format!(
            "cannot read {what} {}: {e}",
            tty(&path.display().to_string())
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > cap {
        return Err(UsageError(format!(
            "{what} {} is larger than {} MiB, the most faultline reads from a {what} file",
            tty(&path.display().to_string()),
            cap >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        UsageError(format!(
            "{what} {} is not UTF-8 text (invalid byte at offset {})",
            tty(&path.display().to_string()),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Makes sure reports can be written to `out` before any work starts (a sweep of an
/// hour must not end on "cannot write"): creates it, and writes and removes a probe
/// file in it.
pub(super) fn writable_out(out: &Path) -> Result<(), UsageError> {
    let refuse = |e: std::io::Error| {
        UsageError(format!(
            "--out {}: reports cannot be written there: {e}",
            tty(&out.display().to_string())
        ))
    };
    std::fs::create_dir_all(out).map_err(refuse)?;
    let probe = out.join(format!(".faultline-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(refuse)?;
    std::fs::remove_file(&probe).map_err(refuse)
}

/// The worker threads for `--jobs` (`None`: every core), refused above 4 × the cores
/// (at most [`JOBS_MAX`]): more threads than that only add memory and switching.
pub(super) fn jobs(asked: Option<usize>) -> Result<usize, UsageError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = cores.saturating_mul(4).min(JOBS_MAX);
    match asked {
        None => Ok(cores.min(max)),
        Some(0) => Err(UsageError("--jobs must be at least 1".into())),
        Some(j) if j > max => Err(UsageError(format!(
            "--jobs {j} is more threads than this machine can use: at most {max} (4 per core on {cores} cores, never above {JOBS_MAX})"
        ))),
        Some(j) => Ok(j),
    }
}

/// The number of seeds of `range` in `shard`, refused above [`SEEDS_PER_SHARD_MAX`].
pub(super) fn shard_seeds(range: SeedRange, shard: Shard) -> Result<u64, UsageError> {
    let n = shard.seed_count(range);
    if n > SEEDS_PER_SHARD_MAX {
        return Err(UsageError(format!(
            "seeds {range} give shard {shard} {n} seeds, more than the {SEEDS_PER_SHARD_MAX} one sweep runs: take a smaller range, or split it with --shard I/N"
        )));
    }
    Ok(n)
}

/// `text` with every control character (ESC, BEL, CR, newline, DEL, C1) and every
/// bidirectional-text control escaped as `\u{..}` (`\n`, `\r`, `\t` for those), so
/// nothing a user supplied (a fault target, a file name, a name from a summary) can
/// move the cursor, retitle or clear a terminal, or reorder what it shows.
pub(super) fn tty(text: &str) -> Cow<'_, str> {
    let special = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(special) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if special(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Checks a plan file's faults against the world of `seed`: a fault on a name the world
/// does not know is refused (with the names it knows); a fault that can never fire (a
/// kind the world or its target cannot take, a window from the horizon on, when faults
/// are already healed) is a warning, refused too when `strict`.
pub(super) fn check_plan(
    pattern: &dyn Pattern,
    seed: u64,
    plan: &FaultPlan,
    strict: bool,
) -> Result<(), UsageError> {
    let known = pattern.known_targets(seed);
    let profile = pattern.fault_profile_of(seed);
    let mut unknown = Vec::new();
    let mut idle = Vec::new();
    for (i, f) in plan.faults.iter().enumerate() {
        let tag = f.kind.tag();
        if !known.contains(&f.target) {
            unknown.push(format!("fault {i} targets `{}`", f.target));
            continue;
        }
        if let Some(profile) = &profile {
            let usable = profile.usable_kinds();
            if !usable.contains(&tag) {
                let names: Vec<&str> = usable.iter().map(|k| k.name()).collect();
                idle.push(format!(
                    "fault {i} is a `{tag}` fault, a kind the {} world does not take (it takes: {})",
                    pattern.name(),
                    names.join(", ")
                ));
            } else if !profile.targets_for(tag).contains(&f.target) {
                let class = match tag.target_class() {
                    TargetClass::Target => "targets",
                    TargetClass::Node => "nodes",
                    TargetClass::Link => "links",
                };
                idle.push(format!(
                    "fault {i}: `{}` cannot take a `{tag}` fault, which goes to {class} ({})",
                    f.target,
                    profile.targets_for(tag).join(", ")
                ));
            }
        }
        if f.from_ms >= plan.horizon_ms {
            idle.push(format!(
                "fault {i} starts at {} ms, at or after the plan's horizon ({} ms), when every fault is healed",
                f.from_ms, plan.horizon_ms
            ));
        }
    }
    if !unknown.is_empty() {
        return Err(UsageError(format!(
            "{}: the {} world does not know {}; it knows: {}",
            unknown.join(", "),
            pattern.name(),
            if unknown.len() == 1 {
                "that name"
            } else {
                "those names"
            },
            known.join(", ")
        )));
    }
    if strict && !idle.is_empty() {
        return Err(UsageError(format!(
            "{} (--strict refuses a fault that can never fire)",
            idle.join("; ")
        )));
    }
    for line in idle {
        eprintln!("warning: {}; it will never fire", tty(&line));
    }
    Ok(())
}

/// Refuses a summary whose links are not relative references to files beside it (a
/// scheme such as `https:` or `javascript:`, `//host`, an absolute path, a backslash,
/// a control character): a merged report links only to files the sweep wrote.
pub(super) fn check_links(file: &Path, view: &SweepView) -> Result<(), UsageError> {
    let mut links: Vec<(String, &str)> = Vec::new();
    if let Some(h) = &view.criterion_href {
        links.push(("criterion_href".into(), h));
    }
    for p in &view.patterns {
        for f in &p.failures {
            for (field, href) in [("report_href", &f.report_href), ("plan_href", &f.plan_href)] {
                if let Some(h) = href {
                    links.push((format!("{} seed {} {field}", p.pattern, f.seed), h));
                }
            }
        }
    }
    for (field, href) in links {
        if !is_relative_link(href) {
            return Err(UsageError(format!(
                "{}: {field} `{href}` is not a relative link to a file beside the summary; a report links only to the files its sweep wrote",
                file.display()
            )));
        }
    }
    Ok(())
}

/// The report renderer's own rule ([`faultline_sim::report::is_relative_link`]).
pub(super) use faultline_sim::report::is_relative_link;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(tty("sms_api"), "sms_api");
        assert!(matches!(tty("sms_api"), Cow::Borrowed(_)));
        assert_eq!(tty("\u{1b}]0;pwned\u{7}"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(tty("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(tty("x\ny\rz\t"), "x\\ny\\rz\\t");
        assert_eq!(tty("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(tty("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(tty("é 日本"), "é 日本");
        for s in ["\u{1b}", "\u{0}", "\u{85}", "\u{2066}"] {
            assert!(!tty(s).chars().any(char::is_control), "{s:?}");
        }
    }

    #[test]
    fn only_relative_links_are_accepted() {
        for good in [
            "failures/breaker-seed-3.html",
            "../target/criterion/report/index.html",
            "a/b:c.html",
            "my runs/x.html",
        ] {
            assert!(is_relative_link(good), "{good}");
        }
        for bad in [
            "https://evil.invalid/",
            "HTTPS://evil.invalid/",
            "//evil.invalid/x",
            "/etc/passwd",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "java\tscript:alert(1)",
            "data:text/html,x",
            "\\\\host\\share",
            "failures\\x.html",
            "C:/x.html",
            "",
        ] {
            assert!(!is_relative_link(bad), "{bad:?}");
        }
    }

    #[test]
    fn jobs_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(jobs(Some(0)).is_err());
        assert_eq!(jobs(Some(1)).ok(), Some(1));
        assert_eq!(jobs(None).ok(), Some(cores.min(JOBS_MAX)));
        let max = (4 * cores).min(JOBS_MAX);
        assert_eq!(jobs(Some(max)).ok(), Some(max));
        let err = jobs(Some(10_000)).unwrap_err().0;
        assert!(err.contains(&format!("at most {max}")), "{err}");
        assert!(jobs(Some(usize::MAX)).is_err());
    }

    #[test]
    fn seed_counts_are_bounded_without_iterating() {
        let all = SeedRange::new(0, u64::MAX).unwrap();
        let err = shard_seeds(all, Shard::ALL).unwrap_err().0;
        assert!(err.contains("18446744073709551615 seeds"), "{err}");
        let top = SeedRange::new(u64::MAX - 1, u64::MAX).unwrap();
        assert_eq!(shard_seeds(top, Shard::new(3, 3).unwrap()).ok(), Some(0));
        assert_eq!(shard_seeds(top, Shard::new(1, 3).unwrap()).ok(), Some(1));
        // Even the most shards leave 2^32 + 1 seeds of a full range in a shard.
        assert!(shard_seeds(all, Shard::new(1, u32::MAX).unwrap()).is_err());
        let big = SeedRange::new(0, 1 << 40).unwrap();
        assert!(shard_seeds(big, Shard::ALL).is_err());
        assert_eq!(
            shard_seeds(big, Shard::new(256, 256).unwrap()).ok(),
            Some(SEEDS_PER_SHARD_MAX)
        );
    }

    #[test]
    fn capped_reads_stop_at_the_cap() {
        let dir = std::env::temp_dir().join(format!("faultline-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.json");
        std::fs::write(&file, vec![b' '; 2049]).unwrap();
        let err = read_capped(&file, "plan", 2048).unwrap_err().0;
        assert!(
            err.contains("big.json") && err.contains("larger than"),
            "{err}"
        );
        assert_eq!(
            read_capped(&file, "plan", 4096).map(|t| t.len()).ok(),
            Some(2049)
        );
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(
            read_capped(&file, "plan", 4096)
                .unwrap_err()
                .0
                .contains("not UTF-8")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
