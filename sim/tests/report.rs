//! HTML report tests: sections present, hostile text escaped (also in attributes and
//! next to the SVG charts), no script and no URL, byte-identical re-rendering, and
//! degenerate views (empty, zero-length, huge values) rendered without panicking.
//!
//! Set `FAULTLINE_REPORT_SAMPLES=<dir>` to also write the sample pages to
//! `<dir>/report-sample.html` and `<dir>/index-sample.html`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use faultline_sim::report::{
    Band, BuildInfo, Comparison, FailureView, Histogram, Lane, MutantRow, MutationScore,
    PatternSweep, RunView, Series, SweepView, SweptMutant, Timeline, Verdict, render_index,
    render_run,
};
use faultline_sim::sweep::{MarkSummary, SeedFailure};
use faultline_sim::{
    Coverage, Fault, FaultKind, FaultPlan, Outcome, Ratio, SeedRange, Shard, SimTime, SweepSummary,
    TraceEntry, Violation,
};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

const XSS: &str = "<script>alert(1)</script>";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

fn ms(n: u64) -> SimTime {
    SimTime::from_millis(n)
}

fn band(from: u64, until: u64, label: &str) -> Band {
    Band {
        from: ms(from),
        until: ms(until),
        label: label.to_string(),
    }
}

fn sample_run() -> RunView {
    let plan = FaultPlan {
        horizon_ms: 8_000,
        faults: vec![
            Fault::new(FaultKind::Outage, "sms_api", 1_000, 4_000).unwrap(),
            Fault::new(
                FaultKind::Slow {
                    latency_ms_min: 200,
                    latency_ms_max: 900,
                },
                "sms_api",
                5_000,
                8_000,
            )
            .unwrap(),
            Fault::new(
                FaultKind::Errors {
                    ratio: Ratio::new(1, 3).unwrap(),
                },
                XSS,
                2_000,
                12_000,
            )
            .unwrap(),
            Fault::new(FaultKind::Crash, "node-b", 6_000, 7_000).unwrap(),
        ],
        ..FaultPlan::default()
    };
    let mut coverage = Coverage::declare([
        "breaker.open",
        "breaker.half_open",
        "breaker.probe_failed",
        "breaker.reset_race",
    ]);
    for _ in 0..3 {
        coverage.hit("breaker.open");
    }
    coverage.hit("breaker.half_open");
    coverage.hit("breaker.probe_failed");
    coverage.hit("breaker.opne");
    let calls: Vec<(SimTime, f64)> = (0..94)
        .map(|i| {
            let t = i * 100;
            let open = (1_200..3_200).contains(&t) || (5_100..7_100).contains(&t);
            (ms(t), if open { 0.0 } else { 40.0 + (i % 7) as f64 })
        })
        .collect();
    let latency: Vec<(SimTime, f64)> = (0..47)
        .map(|i| {
            let t = i * 200;
            let slow = (5_000..8_000).contains(&t);
            (
                ms(t),
                if slow {
                    650.0 + (i % 5) as f64 * 40.0
                } else {
                    35.0
                },
            )
        })
        .collect();
    let violation = Violation {
        invariant: Cow::Borrowed("breaker.no_call_while_open"),
        message: format!("call #412 reached {XSS} at t=9.4s while the breaker was open"),
        at: ms(9_400),
    };
    let trace: Vec<TraceEntry> = (0..12u64)
        .map(|i| TraceEntry {
            index: 1_000 + i,
            time: ms(9_000 + i * 35),
            actor: Cow::Borrowed(if i % 2 == 0 { "client" } else { "breaker" }),
            what: if i == 11 {
                format!("call reached {XSS} while open")
            } else {
                format!(
                    "event {i}: state <{}>",
                    if i % 3 == 0 { "open" } else { "closed" }
                )
            },
        })
        .collect();
    RunView {
        pattern: "breaker".into(),
        seed: 42,
        replay: "faultline replay breaker --seed 42 --plan 'plans/breaker-42.json'".into(),
        knobs: vec![
            ("failure_threshold".into(), "5".into()),
            ("open_for".into(), "2s".into()),
            ("half_open_probes".into(), "1".into()),
            ("timeout".into(), "250ms".into()),
            ("label".into(), "<b>\"quoted\" & 'single'</b>".into()),
        ],
        plan,
        fault_hits: vec![120, 31, 7, 0],
        horizon: ms(8_000),
        end: ms(9_400),
        outcome: Outcome::Violated(violation),
        verdicts: vec![
            Verdict {
                name: "breaker.no_call_while_open".into(),
                held: false,
                note: format!("call #412 reached {XSS} while open"),
                promise: Some(format!(
                    "no call reaches the API while the breaker is open {XSS}"
                )),
            },
            Verdict {
                name: "breaker.recovers".into(),
                held: true,
                note: "closed again 0.2s after the faults healed".into(),
                promise: None,
            },
        ],
        coverage,
        events: 123_456,
        digest: 0x00ab_cdef_0123_4567,
        figures: vec![
            ("calls".into(), "3,412".into()),
            ("rejected while open".into(), "311".into()),
            ("worst load / bound".into(), "0.82".into()),
        ],
        timeline: Timeline {
            lanes: vec![
                Lane {
                    name: "breaker state".into(),
                    bands: vec![
                        band(0, 1_200, "closed"),
                        band(1_200, 3_200, "open"),
                        band(3_200, 3_400, "half_open"),
                        band(3_400, 5_100, "closed"),
                        band(5_100, 7_100, "open"),
                        band(7_100, 7_300, "half_open"),
                        band(7_300, 9_300, "open"),
                        band(9_300, 9_400, "half_open"),
                    ],
                },
                Lane {
                    name: format!("lane {XSS}"),
                    bands: vec![
                        band(0, 2_000, "idle"),
                        band(2_000, 6_000, XSS),
                        band(6_000, 9_400, "busy"),
                    ],
                },
            ],
            series: vec![
                Series {
                    name: "calls reaching sms_api".into(),
                    unit: "calls/s".into(),
                    points: calls,
                },
                Series {
                    name: format!("p99 {XSS}"),
                    unit: "ms".into(),
                    points: latency,
                },
            ],
            shown: format!("2 of 2 lanes {XSS}"),
        },
        trace,
        build: BuildInfo {
            version: "0.1.0".into(),
            commit: format!("abc123 {XSS}"),
        },
    }
}

fn empty_run() -> RunView {
    RunView {
        pattern: String::new(),
        seed: 0,
        replay: String::new(),
        knobs: vec![],
        plan: FaultPlan::default(),
        fault_hits: vec![],
        horizon: SimTime::ZERO,
        end: SimTime::ZERO,
        outcome: Outcome::Passed,
        verdicts: vec![],
        coverage: Coverage::default(),
        events: 0,
        digest: 0,
        figures: vec![],
        timeline: Timeline::default(),
        trace: vec![],
        build: BuildInfo::default(),
    }
}

fn summary(range: (u64, u64), shards: &[Shard], failures: Vec<SeedFailure>) -> SweepSummary {
    let range = SeedRange::new(range.0, range.1).unwrap();
    let mut s = SweepSummary::new(range, shards[0]);
    s.shards = shards.iter().copied().collect();
    s.runs = range.len();
    s.passed = range.len() - failures.len() as u64;
    s.events = 98_765_432;
    s.failures = failures;
    s.coverage = BTreeMap::from([
        (
            "breaker.open".to_string(),
            MarkSummary {
                seeds_hit: 990,
                hits: 5_123,
            },
        ),
        (
            "breaker.reset_race".to_string(),
            MarkSummary {
                seeds_hit: 0,
                hits: 0,
            },
        ),
        (
            XSS.to_string(),
            MarkSummary {
                seeds_hit: 3,
                hits: 4,
            },
        ),
    ]);
    s.undeclared_marks = BTreeSet::from([XSS.to_string()]);
    s.digest = 0x1234_5678_9abc_def0;
    s.wall_ms = 12_345;
    s
}

/// A histogram of `values`, seeds counted from 0.
fn hist(name: impl Into<String>, unit: impl Into<String>, values: Vec<f64>) -> Histogram {
    let mut h = Histogram::new(name, unit);
    for (seed, v) in values.into_iter().enumerate() {
        h.sketch.add(v, seed as u64);
    }
    h
}

fn sample_sweep() -> SweepView {
    let failures = vec![
        SeedFailure {
            seed: 42,
            invariant: "breaker.no_call_while_open".into(),
            message: format!("call reached {XSS} while open"),
            replay: "faultline replay breaker --seed 42".into(),
        },
        SeedFailure {
            seed: 77,
            invariant: "sim.liveness".into(),
            message: "the world did not settle".into(),
            replay: "faultline replay breaker --seed 77".into(),
        },
    ];
    let loads: Vec<f64> = (0..1000)
        .map(|i| 0.3 + ((i * 37) % 100) as f64 / 150.0)
        .collect();
    SweepView {
        command: format!("faultline sweep --seeds 0..1000 --pattern breaker {XSS}"),
        patterns: vec![
            PatternSweep {
                plan_profile: String::new(),
                pattern: "breaker".into(),
                promises: vec![],
                invariants: vec![
                    "breaker.no_call_while_open".into(),
                    "breaker.recovers".into(),
                ],
                summary: summary((0, 1000), &[Shard::ALL], failures),
                histograms: vec![
                    hist("worst load / bound", String::new(), loads),
                    hist(format!("one value {XSS}"), "ms", vec![250.0]),
                    hist("identical values", "calls", vec![7.0; 50]),
                    hist("nothing", "s", vec![]),
                ],
                failures: vec![
                    FailureView {
                        seed: 42,
                        invariant: "breaker.no_call_while_open".into(),
                        message: format!("call reached {XSS} while open"),
                        replay: "faultline replay breaker --seed 42 --plan plans/breaker-42.json"
                            .into(),
                        report_href: Some("runs/breaker-42.html".into()),
                        plan_href: Some("plans/breaker-42.json".into()),
                        faults_shrunk: Some((2, 7)),
                    },
                    FailureView {
                        seed: 77,
                        invariant: "sim.liveness".into(),
                        message: "the world did not settle".into(),
                        replay: "faultline replay breaker --seed 77".into(),
                        report_href: Some("javascript:alert(1)".into()),
                        plan_href: None,
                        faults_shrunk: None,
                    },
                ],
                mutant: None,
            },
            PatternSweep {
                plan_profile: String::new(),
                pattern: "retry".into(),
                promises: vec![],
                invariants: vec!["retry.bounded_attempts".into()],
                summary: summary((0, 1000), &[Shard::new(1, 4).unwrap()], vec![]),
                histograms: vec![],
                failures: vec![],
                mutant: None,
            },
        ],
        mutants: vec![
            MutantRow {
                pattern: "breaker".into(),
                mutant: "never_opens".into(),
                defect: "the breaker ignores failures".into(),
                caught_by: Some("breaker.no_call_while_open".into()),
                cases: 3,
                seed: Some(2),
            },
            MutantRow {
                pattern: "breaker".into(),
                mutant: format!("sneaky {XSS}"),
                defect: "half-open admits two probes (`>=` for `>`)".into(),
                caught_by: None,
                cases: 1_000,
                seed: None,
            },
        ],
        criterion_href: Some("../criterion/report/index.html".into()),
        comparisons: vec![],
        build: BuildInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: "unknown".into(),
        },
        mutation_scores: vec![
            MutationScore {
                unit: "bus/core".into(),
                files: vec!["src/bus/core.rs".into()],
                measured: "sample of 40 of 312 (seed 1)".into(),
                mutants: 40,
                caught: 15,
                missed: 2,
                equivalent: 7,
                unviable: 15,
                timeout: 1,
                score: Some(88.9),
                missed_mutants: vec![format!("replace lag -> u64 with 0 {XSS}")],
                date: "2026-12-04".into(),
                commit: "d7aa990".into(),
            },
            MutationScore {
                unit: format!("nothing live {XSS}"),
                files: vec![],
                measured: "all 3".into(),
                mutants: 3,
                caught: 0,
                missed: 0,
                equivalent: 0,
                unviable: 3,
                timeout: 0,
                score: None,
                missed_mutants: vec![],
                date: "2026-12-04".into(),
                commit: "d7aa990+changes".into(),
            },
        ],
    }
}

fn empty_sweep() -> SweepView {
    SweepView {
        command: String::new(),
        patterns: vec![],
        mutants: vec![],
        criterion_href: None,
        comparisons: vec![],
        build: Default::default(),
        mutation_scores: vec![],
    }
}

/// What every page must satisfy: nothing hostile raw, no script, no URL, no NaN.
fn assert_clean(html: &str) {
    assert!(!html.contains(XSS), "raw hostile text in the page");
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "a script tag in the page"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("NaN") && !html.contains("inf\""));
    assert!(!html.contains("javascript:alert(1)\""), "an unsafe link");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
}

fn assert_ids(html: &str, ids: &[&str]) {
    for id in ids {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "section {id} missing"
        );
    }
}

fn write_sample(name: &str, html: &str) {
    if let Some(dir) = std::env::var_os("FAULTLINE_REPORT_SAMPLES") {
        std::fs::write(std::path::Path::new(&dir).join(name), html).unwrap();
    }
}

#[test]
fn run_page_has_every_section_and_escapes_everything() {
    let html = render_run(&sample_run()).unwrap();
    write_sample("report-sample.html", &html);
    assert_clean(&html);
    assert_ids(
        &html,
        &[
            "summary", "knobs", "faults", "timeline", "verdicts", "coverage", "figures", "trace",
        ],
    );
    assert!(html.contains("<title>faultline · breaker · seed 42</title>"));
    // The invariant with its promise, the build, what the lanes show.
    assert!(html.contains(&format!(
        "no call reaches the API while the breaker is open {XSS_ESCAPED}"
    )));
    assert!(html.contains(&format!("faultline 0.1.0 · commit abc123 {XSS_ESCAPED}")));
    assert!(html.contains(&format!("Shown: 2 of 2 lanes {XSS_ESCAPED}.")));
    // A failed run's trace is unfolded.
    assert!(html.contains("<details open>"));
    assert!(html.contains(XSS_ESCAPED));
    // In an attribute (the timeline label's tooltip) too.
    assert!(html.contains(&format!("title=\"lane {XSS_ESCAPED}\"")));
    assert!(html.contains("&lt;b&gt;&quot;quoted&quot; &amp; &#39;single&#39;&lt;/b&gt;"));
    assert!(html.contains("✘ failed"));
    assert!(html.contains("00abcdef01234567"));
    assert!(html.contains("never fired"));
    assert!(html.contains("cut at the horizon"));
    assert!(html.contains("✔ held") && html.contains("✘ violated"));
    assert!(html.contains("never hit") && html.contains("breaker.opne"));
    assert!(html.contains("<b>3/4</b> declared marks hit"));
    // The violation, and only it, is highlighted.
    assert_eq!(html.matches("class=\"violation\"").count(), 1);
    let last = html.split("class=\"violation\"").nth(1).unwrap();
    assert!(last.contains("1011") && last.contains("call reached"));
    // Rows: 3 fault targets + 2 lanes + the axis + 2 series charts.
    assert_eq!(html.matches("<svg ").count(), 8);
    // Fixed colours for the breaker states.
    assert!(html.contains("background: #2e9d4f\"></span>closed"));
    assert!(html.contains("background: #d64545\"></span>open"));
    assert!(html.contains("background: #e3a21a\"></span>half_open"));
    assert!(html.contains(
        "<code>faultline replay breaker --seed 42 --plan &#39;plans/breaker-42.json&#39;</code>"
    ));
}

#[test]
fn index_page_has_every_section_and_escapes_everything() {
    let html = render_index(&sample_sweep()).unwrap();
    write_sample("index-sample.html", &html);
    assert_clean(&html);
    assert_ids(
        &html,
        &[
            "overview",
            "pattern-breaker",
            "pattern-retry",
            "mutants",
            "benchmarks",
        ],
    );
    assert!(html.contains(XSS_ESCAPED));
    assert!(html.contains("href=\"../criterion/report/index.html\""));
    assert!(html.contains("href=\"runs/breaker-42.html\""));
    assert!(html.contains("href=\"plans/breaker-42.json\""));
    assert!(html.contains("report: <code>javascript:alert(1)</code>"));
    assert!(html.contains("faults shrunk 7→2"));
    assert!(html.contains("never hit"));
    assert!(html.contains("<b>1/2</b> declared marks hit"));
    assert!(html.contains("survived"));
    assert!(html.contains("1 of 4"));
    // Histograms with many, one, identical and no values.
    // Fewer values than seeds: labelled as the seeds the metric applies to; a single
    // value is a sentence, not a bar on a made-up axis.
    assert!(html.contains("n = 1 of 1,000 seeds (the metric applies to these; the other 999 have no value) · every one of them: 250"));
    assert!(html.contains("n = 50 of 1,000 seeds (the metric applies to these; the other 950 have no value) · every one of them: 7"));
    // A page of a sweep is a sweep report, with the build that made it; defects show
    // their `code` as code.
    assert!(html.contains("<title>faultline · sweep report</title>"));
    assert!(html.contains(&format!("faultline {}", env!("CARGO_PKG_VERSION"))));
    assert!(html.contains("(<code>&gt;=</code> for <code>&gt;</code>)"));
    assert!(!html.contains('`'));
    assert!(html.contains("no values"));
    // Both liveness and the declared invariant show their seeds.
    assert!(html.contains("<code>sim.liveness</code>"));
    assert!(html.contains("98,765,432"));
    // The mutation scores, each with its date and commit; below 90 % is marked, a
    // unit with nothing live shows no score.
    assert!(html.contains("id=\"mutation-score\""));
    assert!(html.contains("<tr class=\"hot\"><td>bus/core</td>"));
    assert!(
        html.contains(
            "<td class=\"num\">88.9 %</td><td>2026-12-04</td><td><code>d7aa990</code></td>"
        )
    );
    assert!(html.contains(
        "<td class=\"num\">–</td><td>2026-12-04</td><td><code>d7aa990+changes</code></td>"
    ));
    assert!(html.contains("missed: <code>replace lag -&gt; u64 with 0 &lt;script&gt;"));
}

#[test]
fn rendering_is_deterministic() {
    let (run, sweep) = (sample_run(), sample_sweep());
    assert_eq!(render_run(&run).unwrap(), render_run(&run.clone()).unwrap());
    assert_eq!(
        render_index(&sweep).unwrap(),
        render_index(&sweep.clone()).unwrap()
    );
}

#[test]
fn empty_views_render() {
    let run = render_run(&empty_run()).unwrap();
    write_sample("report-empty.html", &run);
    assert_clean(&run);
    assert_ids(
        &run,
        &["summary", "knobs", "faults", "timeline", "verdicts"],
    );
    assert!(run.contains("trace off"));
    assert!(run.contains("the plan is empty"));
    assert!(run.contains("✔ passed"));

    let index = render_index(&empty_sweep()).unwrap();
    write_sample("index-empty.html", &index);
    assert_clean(&index);
    assert_ids(&index, &["overview", "mutants", "benchmarks"]);
    assert!(index.contains("<code>cargo bench</code>"));
    assert!(index.contains("<code>faultline mutants</code>"));
    assert!(index.contains("<code>scripts/mutation-score --record</code>"));
}

#[test]
fn degenerate_values_render() {
    let mut run = sample_run();
    run.end = SimTime::MAX;
    run.horizon = SimTime::MAX;
    run.plan.horizon_ms = u64::MAX;
    run.plan
        .faults
        .push(Fault::new(FaultKind::Outage, "far", u64::MAX - 1, u64::MAX).unwrap());
    run.fault_hits.clear();
    run.timeline.lanes[0].bands.push(Band {
        from: SimTime::MAX,
        until: SimTime::ZERO,
        label: "inverted".into(),
    });
    run.timeline.series.push(Series {
        name: "wild".into(),
        unit: "x".into(),
        points: vec![
            (SimTime::ZERO, f64::MAX),
            (ms(1), f64::MIN),
            (ms(2), f64::NAN),
            (ms(3), f64::INFINITY),
            (SimTime::MAX, 1e300),
        ],
    });
    run.timeline.series.push(Series {
        name: "empty".into(),
        unit: "x".into(),
        points: vec![],
    });
    run.timeline.series.push(Series {
        name: "single".into(),
        unit: "x".into(),
        points: vec![(ms(5), -3.0)],
    });
    let html = render_run(&run).unwrap();
    assert_clean(&html);

    // A zero-length run with content at t=0 only.
    let mut zero = empty_run();
    zero.timeline.lanes.push(Lane {
        name: "l".into(),
        bands: vec![band(0, 0, "closed")],
    });
    zero.timeline.series.push(Series {
        name: "s".into(),
        unit: "u".into(),
        points: vec![(SimTime::ZERO, 0.0)],
    });
    assert_clean(&render_run(&zero).unwrap());

    let mut sweep = sample_sweep();
    sweep.patterns[0].histograms = vec![
        hist(
            "huge",
            String::new(),
            vec![f64::MAX, f64::MIN, f64::NAN, 0.0],
        ),
        hist("tiny", String::new(), vec![1e-300, 2e-300]),
    ];
    sweep.patterns[0].summary.runs = 0;
    sweep.patterns[0].summary.passed = 0;
    sweep.patterns[0].summary.wall_ms = u64::MAX;
    let html = render_index(&sweep).unwrap();
    assert_clean(&html);
    assert!(html.contains("1 not finite, left out"));
}

/// The sample sweep with a comparison of `breaker`, `retry` and a pattern it lacks, on
/// a metric with known values, one only `breaker` has, and one nobody has.
fn compared_sweep() -> SweepView {
    let mut sweep = sample_sweep();
    // Out of order: median 5 (nearest rank), p90 9, max 10.
    sweep.patterns[0].histograms.push(hist(
        "latency",
        "ms",
        vec![10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0],
    ));
    sweep.patterns[1]
        .histograms
        .push(hist("latency", "ms", vec![4.0, 2.0, f64::NAN]));
    sweep.comparisons = vec![
        Comparison {
            title: format!("Breaker vs retry {XSS}"),
            note: format!("Same seeds for both; {XSS} & friends."),
            patterns: vec!["breaker".into(), "retry".into(), format!("absent {XSS}")],
            metrics: vec![
                ("latency".into(), "ms".into()),
                ("identical values".into(), "calls".into()),
                ("never reported".into(), String::new()),
            ],
        },
        Comparison {
            title: "Breaker vs retry <script>alert(1)</script>".into(),
            note: String::new(),
            patterns: vec!["retry".into()],
            metrics: vec![],
        },
    ];
    sweep
}

/// The `<tr>` of the table row whose first cell starts with `metric`.
fn table_row<'a>(html: &'a str, metric: &str) -> &'a str {
    let start = html
        .find(&format!("<tr><td>{metric}"))
        .unwrap_or_else(|| panic!("no row {metric}"));
    let row = &html[start..];
    &row[..row.find("</tr>").unwrap()]
}

/// The `<td>` cells of a table row, markup and all.
fn cells(row: &str) -> Vec<&str> {
    row.split("<td")
        .skip(1)
        .map(|c| c.split_once('>').unwrap().1.trim_end_matches("</td>"))
        .collect()
}

#[test]
fn comparisons_show_medians_side_by_side() {
    let html = render_index(&compared_sweep()).unwrap();
    write_sample("index-comparison.html", &html);
    assert_clean(&html);
    let id = "comparison-breaker-vs-retry-script-alert-1-script";
    assert_ids(&html, &[id, &format!("{id}-2")]);
    // Listed in the navigation, after the patterns and before the mutants.
    let nav = &html[html.find("<nav>").unwrap()..html.find("</nav>").unwrap()];
    let (pattern, compare, mutants) = (
        nav.find("#pattern-retry").unwrap(),
        nav.find(&format!("href=\"#{id}\"")).unwrap(),
        nav.find("#mutants").unwrap(),
    );
    assert!(pattern < compare && compare < mutants, "{nav}");
    // The section sits between the last pattern's and the mutants'.
    let at = |needle: &str| html.find(needle).unwrap();
    assert!(at("id=\"pattern-retry\"") < at(&format!("id=\"{id}\"")));
    assert!(at(&format!("id=\"{id}-2\"")) < at("id=\"mutants\""));
    let section = &html[at(&format!("id=\"{id}\""))..at(&format!("id=\"{id}-2\""))];

    // Title and note escaped.
    assert!(section.contains(&format!("<h2>Breaker vs retry {XSS_ESCAPED}</h2>")));
    assert!(section.contains(&format!(
        "Same seeds for both; {XSS_ESCAPED} &amp; friends."
    )));
    assert!(section.contains(&format!("absent {XSS_ESCAPED}")));
    assert!(section.contains("not in this sweep"));

    // Medians, p90s and maxima from the values; "—" for the missing pattern.
    let latency = cells(table_row(section, "latency"));
    assert_eq!(latency.len(), 4, "{latency:?}");
    // The median by nearest rank (5), as the sketch's bucket midpoint (within 0.78 %);
    // p90 from its bucket too; the max exact.
    assert!(
        latency[1].starts_with("5.031 (9.062")
            && latency[1].ends_with(" · 10) ms<br><small class=\"muted\">n = 10</small>"),
        "{}",
        latency[1]
    );
    assert_eq!(
        latency[2],
        "2 (4 · 4) ms<br><small class=\"muted\">n = 2</small>"
    );
    assert_eq!(latency[3], "—");
    // A histogram only the first has (50 sevens), and one nobody has.
    let identical = cells(table_row(section, "identical values"));
    assert_eq!(
        identical[1],
        "7 (7 · 7) calls<br><small class=\"muted\">n = 50</small>"
    );
    assert_eq!(&identical[2..], ["—", "—"]);
    let never = cells(table_row(section, "never reported"));
    assert_eq!(&never[1..], ["—", "—", "—"]);

    // One chart per metric, a bar per pattern with a value, the medians labelled.
    assert_eq!(
        section.matches("aria-label=\"comparison chart\"").count(),
        3
    );
    let chart = section
        .split("aria-label=\"comparison chart\"")
        .nth(1)
        .unwrap();
    let chart = &chart[..chart.find("</svg>").unwrap()];
    let labels: Vec<&str> = chart
        .split("<text")
        .skip(1)
        .map(|t| {
            t.split_once('>')
                .unwrap()
                .1
                .split('<')
                .next()
                .unwrap()
                .trim()
        })
        .collect();
    for label in ["5.031", "2", "—"] {
        assert!(labels.contains(&label), "{label} not in {labels:?}");
    }
}

#[test]
fn summaries_without_comparisons_still_load() {
    let mut json: serde_json::Value = serde_json::to_value(sample_sweep()).unwrap();
    json.as_object_mut().unwrap().remove("comparisons");
    let view: SweepView = serde_json::from_value(json).unwrap();
    assert!(view.comparisons.is_empty());
    let mut with = sample_sweep();
    with.comparisons = compared_sweep().comparisons;
    let back: SweepView = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
    assert_eq!(back.comparisons, with.comparisons);
}

/// A mutant sweep: the page and the verdict line say which mutant ran and how often the
/// seeds caught it; a sweep of the implementation itself carries no `mutant` key.
#[test]
fn a_mutant_sweep_says_which_mutant_ran_and_how_often_it_was_caught() {
    let plain = serde_json::to_value(sample_sweep()).unwrap();
    assert!(plain["patterns"][0].get("mutant").is_none());

    let mut view = sample_sweep();
    view.patterns.truncate(1);
    view.patterns[0].mutant = Some(SweptMutant {
        name: "never_opens".into(),
        defect: format!("ignores failures {XSS}"),
    });
    let line = view.patterns[0].mutant_verdict().unwrap();
    assert_eq!(
        line,
        "mutant never_opens: caught on 2 of 1000 seeds (0.2 %), first by breaker.no_call_while_open at seed 42"
    );
    let html = render_index(&view).unwrap();
    assert_clean(&html);
    assert!(html.contains("mutant <code>never_opens</code>"), "{html}");
    assert!(html.contains("✔ caught on 2 of 1,000 seeds"));
    assert!(html.contains(&line));
    assert!(html.contains(&format!("ignores failures {XSS_ESCAPED}")));
    let back: SweepView = serde_json::from_str(&serde_json::to_string(&view).unwrap()).unwrap();
    assert_eq!(back.patterns[0].mutant, view.patterns[0].mutant);

    // Never caught: it survived, and the page says so.
    view.patterns[0].summary = summary((0, 1000), &[Shard::ALL], vec![]);
    view.patterns[0].failures.clear();
    assert_eq!(
        view.patterns[0].mutant_verdict().unwrap(),
        "mutant never_opens: survived all 1000 seeds, no invariant caught it"
    );
    let html = render_index(&view).unwrap();
    assert!(html.contains("✘ survived"));
    // The tenth is rounded down: only every seed makes 100.0 %.
    let s = &mut view.patterns[0].summary;
    s.failures = (0..999)
        .map(|seed| SeedFailure {
            seed,
            invariant: "breaker.recovers".into(),
            message: String::new(),
            replay: String::new(),
        })
        .collect();
    s.passed = 1;
    assert!(
        view.patterns[0]
            .mutant_verdict()
            .unwrap()
            .contains("caught on 999 of 1000 seeds (99.9 %), first by breaker.recovers at seed 0")
    );
}

/// A run that stopped on a violation at 1.5 s of an 8 s horizon: its page says so, its
/// axis ends at the stop, and faults after the stop are "not reached", not "never fired".
#[test]
fn a_run_stopped_early_is_labelled_so() {
    let mut view = sample_run();
    view.end = ms(1_500);
    view.fault_hits = vec![120, 31, 0, 0];
    let html = render_run(&view).unwrap();
    assert!(html.contains("stopped early"));
    assert!(
        html.contains("The run stopped at t=1.5s on the violation, before the horizon at t=8s")
    );
    assert!(html.contains("Up to the stop at t=1.5s"));
    assert!(html.contains("From t=0s to t=1.5s, where the run stopped"));
    let not_reached = view
        .plan
        .faults
        .iter()
        .zip(&view.fault_hits)
        .filter(|(f, h)| f.from_ms > 1_500 && **h == 0)
        .count();
    assert!(not_reached > 0, "the sample has a fault after the stop");
    assert_eq!(
        html.matches("<span class=\"badge\">not reached</span>")
            .count(),
        not_reached
    );
    let never = view
        .plan
        .faults
        .iter()
        .zip(&view.fault_hits)
        .filter(|(f, h)| f.from_ms <= 1_500 && **h == 0)
        .count();
    assert_eq!(
        html.matches("<span class=\"badge warn\">never fired</span>")
            .count(),
        never
    );
}

/// A passing run folds its trace; entries show words and milliseconds, not `Debug`.
#[test]
fn traces_are_readable_and_folded_when_passing() {
    let mut view = sample_run();
    view.outcome = Outcome::Passed;
    view.trace = vec![TraceEntry {
        index: 0,
        time: SimTime::from_nanos(30_670_007),
        actor: Cow::Borrowed("event"),
        what: "Reply { req: 0, attempt: 1, reply: Err(Unavailable) } after 0.046107152s".into(),
    }];
    let html = render_run(&view).unwrap();
    assert!(html.contains("<details>") && !html.contains("<details open>"));
    assert!(html.contains("t=30.67 ms"), "{html}");
    assert!(html.contains("reply (req 0, attempt 1, reply err (unavailable)) after 46.107 ms"));
    assert!(!html.contains("Reply {"));
}

/// The page of the `mutants` command alone is titled as the mutants report.
#[test]
fn the_mutants_page_is_the_mutants_report() {
    let mut view = sample_sweep();
    view.patterns.clear();
    let html = render_index(&view).unwrap();
    assert!(html.contains("<title>faultline · mutants report</title>"));
    assert!(html.contains("<h1>faultline · mutants report</h1>"));
}
