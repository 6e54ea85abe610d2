//! What `merge` checks before it adds shards up, and how it brings each shard's failure
//! artefacts along.
//!
//! A shard set is *inconsistent* when its parts cannot be added up into a true figure:
//! the same shard twice, shards of different splits or seed ranges, a part labelled
//! with two shard counts, or counts that no sweep writes (more passes than runs, more
//! runs than the shard has seeds). It is *incomplete* when shards are missing or a
//! shard ran fewer seeds than it has. `merge` refuses both; `--allow-incomplete` lets
//! an incomplete set through (the report says which shards it holds), never an
//! inconsistent one.

use faultline_sim::report::is_relative_link;
use faultline_sim::report::model::FailureView;
use faultline_sim::sweep::{SeedRange, Shard, SweepSummary};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Shards listed by name in a message at most; the rest are counted.
const LISTED_MAX: usize = 20;

/// What is wrong with a pattern's shard set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A part names no shard.
    NoShards {
        /// The pattern.
        pattern: String,
        /// The summary file.
        file: PathBuf,
    },
    /// A part holds shards of two different counts.
    MixedCounts {
        /// The pattern.
        pattern: String,
        /// The summary file.
        file: PathBuf,
        /// Its shards.
        shards: Vec<Shard>,
    },
    /// Two parts split different seed ranges, or split them differently.
    DifferentSplit {
        /// The pattern.
        pattern: String,
        /// One part, its range and shard count.
        a: (PathBuf, SeedRange, u32),
        /// The other.
        b: (PathBuf, SeedRange, u32),
    },
    /// The same shard is in two parts.
    Duplicate {
        /// The pattern.
        pattern: String,
        /// The shard.
        shard: Shard,
        /// The first file holding it.
        a: PathBuf,
        /// The second.
        b: PathBuf,
    },
    /// A part's counters cannot come from a sweep.
    Counts {
        /// The pattern.
        pattern: String,
        /// The summary file.
        file: PathBuf,
        /// What is wrong, in words.
        detail: String,
    },
    /// Shards are missing.
    Missing {
        /// The pattern.
        pattern: String,
        /// The range swept.
        range: SeedRange,
        /// The shard count.
        count: u32,
        /// The first missing shards' indices.
        missing: Vec<u32>,
        /// How many are missing in all.
        missing_total: u64,
        /// The indices present.
        present: Vec<u32>,
    },
    /// A part ran fewer seeds than its shards have (an interrupted shard).
    Short {
        /// The pattern.
        pattern: String,
        /// The summary file.
        file: PathBuf,
        /// Seeds it ran.
        runs: u64,
        /// Seeds its shards have.
        expected: u64,
    },
}

impl Problem {
    /// True when `--allow-incomplete` lets the merge go on despite it.
    pub(crate) fn is_incompleteness(&self) -> bool {
        matches!(self, Problem::Missing { .. } | Problem::Short { .. })
    }
}

fn list(count: u32, indices: &[u32], more: u64) -> String {
    let mut s: Vec<String> = indices.iter().map(|i| format!("{i}/{count}")).collect();
    if more > 0 {
        s.push(format!("and {more} more"));
    }
    s.join(", ")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoShards { pattern, file } => {
                write!(f, "{pattern}: {} names no shard", file.display())
            }
            Problem::MixedCounts {
                pattern,
                file,
                shards,
            } => {
                let s: Vec<String> = shards.iter().map(Shard::to_string).collect();
                write!(
                    f,
                    "{pattern}: {} holds shards of different splits ({})",
                    file.display(),
                    s.join(", ")
                )
            }
            Problem::DifferentSplit { pattern, a, b } => write!(
                f,
                "{pattern}: {} covers seeds {} in {} shards, {} covers seeds {} in {} shards",
                a.0.display(),
                a.1,
                a.2,
                b.0.display(),
                b.1,
                b.2
            ),
            Problem::Duplicate {
                pattern,
                shard,
                a,
                b,
            } => write!(
                f,
                "{pattern}: shard {shard} appears twice, in {} and in {}",
                a.display(),
                b.display()
            ),
            Problem::Counts {
                pattern,
                file,
                detail,
            } => write!(f, "{pattern}: {}: {detail}", file.display()),
            Problem::Missing {
                pattern,
                range,
                count,
                missing,
                missing_total,
                present,
            } => {
                let more_missing = missing_total.saturating_sub(missing.len() as u64);
                let shown = present.len().min(LISTED_MAX);
                write!(
                    f,
                    "{pattern}: {missing_total} of {count} shards of seeds {range} missing: {} (present: {})",
                    list(*count, missing, more_missing),
                    list(*count, &present[..shown], (present.len() - shown) as u64)
                )
            }
            Problem::Short {
                pattern,
                file,
                runs,
                expected,
            } => write!(
                f,
                "{pattern}: {} ran {runs} of its shards' {expected} seeds (interrupted?)",
                file.display()
            ),
        }
    }
}

/// What is wrong with `parts`, the summaries of one `pattern` (each with the file it
/// came from); empty when they add up to the whole sweep.
pub(crate) fn check_shard_set(pattern: &str, parts: &[(&Path, &SweepSummary)]) -> Vec<Problem> {
    let p = || pattern.to_string();
    let mut problems = Vec::new();
    let mut first: Option<(&Path, SeedRange, u32)> = None;
    let mut seen: BTreeMap<Shard, &Path> = BTreeMap::new();
    for &(file, s) in parts {
        let Some(count) = s.shards.iter().next().map(|x| x.count) else {
            problems.push(Problem::NoShards {
                pattern: p(),
                file: file.to_path_buf(),
            });
            continue;
        };
        if s.shards.iter().any(|x| x.count != count) {
            problems.push(Problem::MixedCounts {
                pattern: p(),
                file: file.to_path_buf(),
                shards: s.shards.iter().copied().collect(),
            });
            continue;
        }
        match first {
            None => first = Some((file, s.range, count)),
            Some((f0, r0, n0)) if (r0, n0) != (s.range, count) => {
                problems.push(Problem::DifferentSplit {
                    pattern: p(),
                    a: (f0.to_path_buf(), r0, n0),
                    b: (file.to_path_buf(), s.range, count),
                });
                continue;
            }
            Some(_) => {}
        }
        for shard in &s.shards {
            match seen.get(shard) {
                Some(a) => problems.push(Problem::Duplicate {
                    pattern: p(),
                    shard: *shard,
                    a: a.to_path_buf(),
                    b: file.to_path_buf(),
                }),
                None => {
                    seen.insert(*shard, file);
                }
            }
        }
        // Each shard's seeds: a sum of at most u64::MAX seeds (the shards partition
        // the range), so it fits.
        let expected: u64 = s.shards.iter().map(|x| x.seed_count(s.range)).sum();
        let counts = |detail: String| Problem::Counts {
            pattern: p(),
            file: file.to_path_buf(),
            detail,
        };
        if s.passed > s.runs {
            problems.push(counts(format!(
                "{} seeds passed of {} run",
                s.passed, s.runs
            )));
        }
        if s.runs > expected {
            problems.push(counts(format!(
                "{} seeds run, but its shards have {expected}",
                s.runs
            )));
        } else if s.runs < expected {
            problems.push(Problem::Short {
                pattern: p(),
                file: file.to_path_buf(),
                runs: s.runs,
                expected,
            });
        }
    }
    if let Some((_, range, count)) = first {
        let present: BTreeSet<u32> = seen
            .keys()
            .filter(|s| s.count == count)
            .map(|s| s.index)
            .collect();
        let missing_total = u64::from(count) - present.len() as u64;
        if missing_total > 0 {
            // At most present.len() + LISTED_MAX steps, whatever the count.
            let missing = (1..=count)
                .filter(|i| !present.contains(i))
                .take(LISTED_MAX)
                .collect();
            problems.push(Problem::Missing {
                pattern: p(),
                range,
                count,
                missing,
                missing_total,
                present: present.into_iter().collect(),
            });
        }
    }
    problems
}

/// Why a failure artefact could not be brought into the merged report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArtefactError {
    /// The link is not a plain relative path below the summary's directory.
    #[error(
        "{file}: failure seed {seed} links to `{href}`, which is not a file below the summary's directory (only relative paths without `..` are followed)"
    )]
    Unsafe {
        /// The summary file.
        file: PathBuf,
        /// The failing seed.
        seed: u64,
        /// The link.
        href: String,
    },
    /// The linked file is not there.
    #[error(
        "{file}: failure seed {seed} links to `{href}`, but {path} is not a file (copy each shard's failures/ directory next to its summary.json, or pass --allow-incomplete to drop the link)"
    )]
    Missing {
        /// The summary file.
        file: PathBuf,
        /// The failing seed.
        seed: u64,
        /// The link.
        href: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Two shards hold different files under the same name.
    #[error("{a} and {b} both become {dest} in the merged report, with different contents")]
    Clash {
        /// The first source.
        a: PathBuf,
        /// The second.
        b: PathBuf,
        /// The merged file.
        dest: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot copy {from} to {to}: {error}")]
    Io {
        /// The source.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// `href` as a path below the directory it is relative to: a link a report may hold
/// ([`is_relative_link`]) naming a file, with only plain names (no `..`, no query or
/// fragment). `./` parts are dropped.
pub(crate) fn artefact_path(href: &str) -> Option<PathBuf> {
    if !is_relative_link(href) || href.contains(['?', '#']) {
        return None;
    }
    let mut rel = PathBuf::new();
    for c in Path::new(href).components() {
        match c {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// Copies the files a shard's failure links point to into the merged report's
/// directory, keeping their place relative to it, and rewrites the links to match.
pub(crate) struct Artefacts {
    out: PathBuf,
    allow_missing: bool,
    /// Each file written, relative to `out`, and where it came from.
    written: BTreeMap<PathBuf, PathBuf>,
    /// Links dropped (only with `allow_missing`), in words.
    pub(crate) dropped: Vec<String>,
}

impl Artefacts {
    /// Artefacts for a merged report in `out`; with `allow_missing`, a link to a file
    /// that is not there is dropped (and said so) instead of refused.
    pub(crate) fn new(out: &Path, allow_missing: bool) -> Self {
        Artefacts {
            out: out.to_path_buf(),
            allow_missing,
            written: BTreeMap::new(),
            dropped: Vec::new(),
        }
    }

    /// Brings the report and plan of every failure of `failures`, listed by the
    /// summary `file`, into the merged report.
    pub(crate) fn bring_all(
        &mut self,
        file: &Path,
        failures: &mut [FailureView],
    ) -> Result<(), ArtefactError> {
        for f in failures {
            let seed = f.seed;
            self.bring(file, seed, &mut f.report_href)?;
            self.bring(file, seed, &mut f.plan_href)?;
        }
        Ok(())
    }

    fn bring(
        &mut self,
        file: &Path,
        seed: u64,
        href: &mut Option<String>,
    ) -> Result<(), ArtefactError> {
        let Some(link) = href.as_deref() else {
            return Ok(());
        };
        let Some(rel) = artefact_path(link) else {
            return Err(ArtefactError::Unsafe {
                file: file.to_path_buf(),
                seed,
                href: link.to_string(),
            });
        };
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let from = dir.join(&rel);
        if !from.is_file() {
            if self.allow_missing {
                self.dropped.push(format!(
                    "{}: seed {seed}: {} is not there; its link is dropped",
                    file.display(),
                    from.display()
                ));
                *href = None;
                return Ok(());
            }
            return Err(ArtefactError::Missing {
                file: file.to_path_buf(),
                seed,
                href: link.to_string(),
                path: from,
            });
        }
        let to = self.out.join(&rel);
        let io = |error| ArtefactError::Io {
            from: from.clone(),
            to: to.clone(),
            error,
        };
        match self.written.get(&rel) {
            Some(earlier) if same_file(earlier, &from) => {}
            Some(earlier) => {
                let a = std::fs::read(earlier).map_err(io)?;
                let b = std::fs::read(&from).map_err(io)?;
                if a != b {
                    return Err(ArtefactError::Clash {
                        a: earlier.clone(),
                        b: from,
                        dest: to,
                    });
                }
            }
            None => {
                // Merging into a shard's own directory: the file is already in place
                // (and copying it onto itself would truncate it).
                if !same_file(&from, &to) {
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::copy(&from, &to).map_err(io)?;
                }
                self.written.insert(rel.clone(), from);
            }
        }
        *href = Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/"),
        );
        Ok(())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> SeedRange {
        SeedRange::new(0, 40).unwrap()
    }

    fn part(shards: &[(u32, u32)], runs: u64) -> SweepSummary {
        let mut s = SweepSummary::new(range(), Shard::new(shards[0].0, shards[0].1).unwrap());
        for &(i, n) in &shards[1..] {
            s.shards.insert(Shard::new(i, n).unwrap());
        }
        s.runs = runs;
        s.passed = runs;
        s
    }

    fn check(parts: &[(&str, &SweepSummary)]) -> Vec<Problem> {
        let parts: Vec<(&Path, &SweepSummary)> =
            parts.iter().map(|(f, s)| (Path::new(*f), *s)).collect();
        check_shard_set("breaker", &parts)
    }

    #[test]
    fn a_whole_set_has_no_problem() {
        let (a, b, c, d) = (
            part(&[(1, 4)], 10),
            part(&[(2, 4)], 10),
            part(&[(3, 4)], 10),
            part(&[(4, 4)], 10),
        );
        assert_eq!(check(&[("a", &a), ("b", &b), ("c", &c), ("d", &d)]), vec![]);
        // A part that is itself a merge of two shards.
        let ab = part(&[(1, 4), (2, 4)], 20);
        assert_eq!(check(&[("ab", &ab), ("c", &c), ("d", &d)]), vec![]);
        assert_eq!(check(&[("whole", &part(&[(1, 1)], 40))]), vec![]);
    }

    #[test]
    fn missing_shards_are_named() {
        let (a, c) = (part(&[(1, 4)], 10), part(&[(3, 4)], 10));
        let problems = check(&[("a", &a), ("c", &c)]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].is_incompleteness());
        assert_eq!(
            problems[0].to_string(),
            "breaker: 2 of 4 shards of seeds 0..40 missing: 2/4, 4/4 (present: 1/4, 3/4)"
        );
        // A huge split with one shard lists a few, counts the rest, and takes no time.
        let one = SweepSummary::new(
            SeedRange::new(0, u64::MAX).unwrap(),
            Shard::new(7, u32::MAX).unwrap(),
        );
        let problems = check(&[("one", &one)]);
        let text = problems
            .iter()
            .find(|p| matches!(p, Problem::Missing { .. }))
            .unwrap()
            .to_string();
        assert!(text.contains("4294967294 of 4294967295 shards"), "{text}");
        assert!(text.contains("and 4294967274 more"), "{text}");
    }

    #[test]
    fn duplicates_splits_and_impossible_counts_are_inconsistent() {
        let (a, b) = (part(&[(1, 2)], 20), part(&[(2, 2)], 20));
        let problems = check(&[("a", &a), ("b", &b), ("a2", &a)]);
        assert_eq!(
            problems,
            vec![Problem::Duplicate {
                pattern: "breaker".into(),
                shard: Shard::new(1, 2).unwrap(),
                a: "a".into(),
                b: "a2".into()
            }]
        );
        assert!(!problems[0].is_incompleteness());
        assert!(
            problems[0]
                .to_string()
                .contains("shard 1/2 appears twice, in a and in a2")
        );

        let three = part(&[(2, 3)], 13);
        let problems = check(&[("a", &a), ("three", &three)]);
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::DifferentSplit { .. })),
            "{problems:?}"
        );
        let mut other_range = b.clone();
        other_range.range = SeedRange::new(0, 41).unwrap();
        let problems = check(&[("a", &a), ("b", &other_range)]);
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::DifferentSplit { .. })),
            "{problems:?}"
        );
        let mixed = part(&[(1, 2), (2, 3)], 20);
        assert!(matches!(
            check(&[("mixed", &mixed)])[0],
            Problem::MixedCounts { .. }
        ));
        let mut lying = b.clone();
        lying.passed = 21;
        assert!(
            check(&[("a", &a), ("b", &lying)])
                .iter()
                .any(|p| matches!(p, Problem::Counts { .. }))
        );
        let too_many = part(&[(2, 2)], 21);
        assert!(
            check(&[("a", &a), ("b", &too_many)])
                .iter()
                .any(|p| matches!(p, Problem::Counts { .. }))
        );
        let mut none = a.clone();
        none.shards.clear();
        assert!(matches!(
            check(&[("none", &none)])[0],
            Problem::NoShards { .. }
        ));
    }

    #[test]
    fn a_short_shard_is_incomplete() {
        let (a, b) = (part(&[(1, 2)], 20), part(&[(2, 2)], 7));
        let problems = check(&[("a", &a), ("b", &b)]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].is_incompleteness());
        assert!(
            problems[0]
                .to_string()
                .contains("ran 7 of its shards' 20 seeds")
        );
    }

    #[test]
    fn only_plain_relative_links_are_followed() {
        for ok in ["failures/a.html", "./failures/a.json", "a.html"] {
            assert!(artefact_path(ok).is_some(), "{ok}");
        }
        assert_eq!(
            artefact_path("./failures/./a.json"),
            Some(PathBuf::from("failures/a.json"))
        );
        for bad in [
            "",
            "/etc/passwd",
            "../secret",
            "failures/../../x",
            "https://x.invalid/a",
            "//host/a",
            "javascript:alert(1)",
            "c:\\x",
            "a.html#x",
            "a\nb",
            ".",
        ] {
            assert_eq!(artefact_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn artefacts_are_copied_and_clashes_refused() {
        let root =
            std::env::temp_dir().join(format!("faultline-merge-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (a, b, out) = (root.join("a"), root.join("b"), root.join("out"));
        for (dir, body) in [(&a, "one"), (&b, "two")] {
            std::fs::create_dir_all(dir.join("failures")).unwrap();
            std::fs::write(dir.join("failures/x.html"), body).unwrap();
        }
        let view = |href: &str| FailureView {
            seed: 3,
            invariant: "i".into(),
            message: "m".into(),
            replay: "r".into(),
            report_href: Some(href.into()),
            plan_href: None,
            faults_shrunk: None,
        };
        let mut artefacts = Artefacts::new(&out, false);
        let mut fa = vec![view("./failures/x.html")];
        artefacts
            .bring_all(&a.join("summary.json"), &mut fa)
            .unwrap();
        assert_eq!(fa[0].report_href.as_deref(), Some("failures/x.html"));
        assert_eq!(
            std::fs::read_to_string(out.join("failures/x.html")).unwrap(),
            "one"
        );
        // Another shard's different file under the same name.
        let mut fb = vec![view("failures/x.html")];
        let e = artefacts.bring_all(&b.join("summary.json"), &mut fb);
        assert!(matches!(e, Err(ArtefactError::Clash { .. })), "{e:?}");
        // A missing file: refused, or dropped when allowed.
        let mut fm = vec![view("failures/gone.html")];
        assert!(matches!(
            artefacts.bring_all(&a.join("summary.json"), &mut fm),
            Err(ArtefactError::Missing { .. })
        ));
        let mut lenient = Artefacts::new(&out, true);
        lenient.bring_all(&a.join("summary.json"), &mut fm).unwrap();
        assert_eq!(fm[0].report_href, None);
        assert_eq!(lenient.dropped.len(), 1);
        // Merging into a shard's own directory leaves its file whole.
        let mut own = Artefacts::new(&a, false);
        let mut fo = vec![view("failures/x.html")];
        own.bring_all(&a.join("summary.json"), &mut fo).unwrap();
        assert_eq!(
            std::fs::read_to_string(a.join("failures/x.html")).unwrap(),
            "one"
        );
        let mut fu = vec![view("../b/failures/x.html")];
        assert!(matches!(
            own.bring_all(&a.join("summary.json"), &mut fu),
            Err(ArtefactError::Unsafe { .. })
        ));
        let _ = std::fs::remove_dir_all(&root);
    }
}
