//! The two pages: views turned into plain display rows, then into HTML by the askama
//! templates in `sim/templates/report/` (which escape every interpolated value).

use super::ReportError;
use super::charts::{self, RowBand, TimeAxis};
use super::fmt::{self, Rgb};
use super::human;
use super::model::{Comparison, Histogram, PatternSweep, RunView, SweepView};
use crate::fault::{Fault, FaultKind, FaultKindTag};
use crate::sketch::{Extreme, Sketch};
use crate::sweep::SeedFailure;
use askama::Template;
use std::collections::BTreeSet;

/// How many seeds a row of the invariant table lists before summing up the rest.
const SEEDS_LISTED: usize = 20;

/// A colour swatch of a legend.
struct Swatch {
    /// What it stands for (user text: escaped by the template).
    label: String,
    /// `#rrggbb`.
    css: String,
}

/// A link that is safe to follow, or the text of one that is not.
struct Link {
    /// The target, when it passed [`fmt::safe_href`].
    href: Option<String>,
    /// The text as given.
    text: String,
}

impl Link {
    /// A link to `href`, kept as text when it is not safe.
    fn new(href: &str) -> Link {
        Link {
            href: fmt::safe_href(href).map(str::to_string),
            text: href.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------
// The run page.
// ---------------------------------------------------------------------------------

/// A row of the fault table.
struct FaultRow {
    /// 1-based position in the plan.
    n: usize,
    /// The kind's name.
    kind: &'static str,
    /// The kind's colour.
    css: String,
    /// The target.
    target: String,
    /// `t=1s → t=4s`.
    window: String,
    /// `cut at the horizon` and the like, or empty.
    window_note: String,
    /// The parameters in words, or `—`.
    params: String,
    /// Times fired, or `—` when not known.
    fired: String,
    /// True when it is known never to have fired.
    never: bool,
    /// True when the run stopped (on a violation) before the fault's window opened.
    not_reached: bool,
}

/// A row of the timeline.
struct TimelineRow {
    /// What the row shows (a target or a lane name).
    label: String,
    /// A detail under the label (e.g. `2 faults`).
    detail: String,
    /// The row's SVG.
    svg: String,
}

/// A series chart.
struct SeriesView {
    /// The series' name.
    name: String,
    /// Its unit.
    unit: String,
    /// Its colour.
    css: String,
    /// `n points · min … · max … · last …`, or `no points`.
    stats: String,
    /// The chart.
    svg: String,
}

/// A row of the verdict table.
struct VerdictRow {
    /// The invariant.
    name: String,
    /// Whether it held.
    held: bool,
    /// The note.
    note: String,
    /// What it promises, or empty.
    promise: String,
}

/// A row of a coverage table.
struct MarkRow {
    /// The mark.
    name: String,
    /// Seeds that hit it (sweep only).
    seeds: String,
    /// Hits.
    hits: String,
    /// Declared, yet never hit.
    never: bool,
    /// Hit without being declared.
    undeclared: bool,
}

/// A row of the trace table.
struct TraceRow {
    /// Position in the run.
    index: u64,
    /// When.
    time: String,
    /// Who.
    actor: String,
    /// What.
    what: String,
    /// The violation (the last entry of a failed run).
    violation: bool,
}

/// The run page.
#[derive(Template)]
#[template(path = "report/run.html")]
struct RunPage<'a> {
    title: String,
    pattern: &'a str,
    seed: u64,
    replay: &'a str,
    passed: bool,
    outcome: String,
    invariant: String,
    events: String,
    digest: String,
    horizon: String,
    end: String,
    knobs: &'a [(String, String)],
    faults: Vec<FaultRow>,
    faults_never: usize,
    plan_horizon: String,
    faults_not_reached: usize,
    stopped_early: bool,
    stop: String,
    timeline_shown: String,
    build: String,
    fault_rows: Vec<TimelineRow>,
    lane_rows: Vec<TimelineRow>,
    axis_svg: String,
    axis_end: String,
    kind_legend: Vec<Swatch>,
    label_legend: Vec<Swatch>,
    series: Vec<SeriesView>,
    verdicts: Vec<VerdictRow>,
    marks: Vec<MarkRow>,
    marks_hit: usize,
    marks_total: usize,
    undeclared: Vec<String>,
    figures: &'a [(String, String)],
    trace: Vec<TraceRow>,
}

/// Nanoseconds of `ms` milliseconds, saturating.
fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// A fault's parameters in words.
fn fault_params(f: &Fault) -> String {
    match f.kind {
        FaultKind::Outage | FaultKind::Crash => "—".to_string(),
        FaultKind::TornCrash => "the unsynced last record is torn".to_string(),
        FaultKind::Slow {
            latency_ms_min,
            latency_ms_max,
        } => format!("+{latency_ms_min}..={latency_ms_max} ms latency"),
        FaultKind::Errors { ratio } => format!("ratio {ratio} of calls fail"),
        FaultKind::Drop { ratio } => format!("ratio {ratio} of messages dropped"),
        FaultKind::Duplicate { ratio } => format!("ratio {ratio} of messages duplicated"),
        FaultKind::Delay {
            ratio,
            latency_ms_min,
            latency_ms_max,
        } => format!("ratio {ratio} of messages delayed +{latency_ms_min}..={latency_ms_max} ms"),
    }
}

/// The time axis of a run: to the later of its end and its horizon, or, when both are
/// zero, to the last thing shown.
fn run_axis(view: &RunView) -> TimeAxis {
    let horizon = view.horizon.as_nanos();
    let mut max = if stopped_early(view) {
        // Nothing happened after the stop: the axis ends there.
        view.end.as_nanos()
    } else {
        view.end.as_nanos().max(horizon)
    };
    if max == 0 {
        let faults = view.plan.faults.iter().map(|f| ms_to_ns(f.until_ms));
        let bands = view
            .timeline
            .lanes
            .iter()
            .flat_map(|l| l.bands.iter())
            .map(|b| b.until.as_nanos().max(b.from.as_nanos()));
        let points = view
            .timeline
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .map(|p| p.0.as_nanos());
        max = faults.chain(bands).chain(points).max().unwrap_or(0);
    }
    TimeAxis::new(max, horizon)
}

/// True when the run stopped on a violation before its horizon: what it shows is the
/// run up to the stop.
fn stopped_early(view: &RunView) -> bool {
    !view.outcome.is_pass() && view.end < view.horizon && view.end.as_nanos() > 0
}

/// The build line of a page's footer.
fn build_line(b: &super::model::BuildInfo) -> String {
    if b.commit == "unknown" {
        format!("faultline {}", b.version)
    } else {
        format!("faultline {} · commit {}", b.version, b.commit)
    }
}

/// Builds the run page.
fn run_page(view: &RunView) -> Result<RunPage<'_>, ReportError> {
    let axis = run_axis(view);
    let horizon_ns = view.horizon.as_nanos();
    let stopped = stopped_early(view);
    let end_ns = view.end.as_nanos();

    // The fault table.
    let faults: Vec<FaultRow> = view
        .plan
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let hits = view.fault_hits.get(i).copied();
            let not_reached = stopped && ms_to_ns(f.from_ms) > end_ns && hits == Some(0);
            let window_note = if horizon_ns > 0 && ms_to_ns(f.from_ms) >= horizon_ns {
                "starts at or after the horizon: never active".to_string()
            } else if horizon_ns > 0 && ms_to_ns(f.until_ms) > horizon_ns {
                format!("cut at the horizon ({})", view.horizon)
            } else {
                String::new()
            };
            FaultRow {
                n: i + 1,
                kind: f.kind.tag().name(),
                css: fmt::kind_colour(f.kind.tag()).css(),
                target: f.target.clone(),
                window: format!("{} → {}", f.from(), f.until()),
                window_note,
                params: fault_params(f),
                fired: if not_reached {
                    "—".to_string()
                } else {
                    hits.map_or_else(|| "—".to_string(), fmt::int)
                },
                never: hits == Some(0) && !not_reached,
                not_reached,
            }
        })
        .collect();
    let faults_never = faults.iter().filter(|f| f.never).count();
    let faults_not_reached = faults.iter().filter(|f| f.not_reached).count();

    // Timeline: one row per fault target, in order of first appearance.
    let mut targets: Vec<(&str, Vec<&Fault>)> = Vec::new();
    for f in &view.plan.faults {
        match targets.iter_mut().find(|(t, _)| *t == f.target) {
            Some((_, fs)) => fs.push(f),
            None => targets.push((f.target.as_str(), vec![f])),
        }
    }
    let mut fault_rows = Vec::with_capacity(targets.len());
    for (target, fs) in &targets {
        let bands: Vec<RowBand> = fs
            .iter()
            .filter_map(|f| {
                let from = ms_to_ns(f.from_ms);
                let mut until = ms_to_ns(f.until_ms);
                if horizon_ns > 0 {
                    if from >= horizon_ns {
                        return None;
                    }
                    until = until.min(horizon_ns);
                }
                Some(RowBand {
                    from_ns: from,
                    until_ns: until,
                    colour: fmt::kind_colour(f.kind.tag()),
                    alpha: 0.75,
                })
            })
            .collect();
        let kinds: BTreeSet<&str> = fs.iter().map(|f| f.kind.tag().name()).collect();
        fault_rows.push(TimelineRow {
            label: (*target).to_string(),
            detail: kinds.into_iter().collect::<Vec<_>>().join(", "),
            svg: charts::timeline_row(axis, &bands)?,
        });
    }
    let kind_legend = FaultKindTag::ALL
        .iter()
        .filter(|k| view.plan.faults.iter().any(|f| f.kind.tag() == **k))
        .map(|k| Swatch {
            label: k.name().to_string(),
            css: fmt::kind_colour(*k).css(),
        })
        .collect();

    // Timeline: the lanes.
    let colours = fmt::label_colours(
        view.timeline
            .lanes
            .iter()
            .flat_map(|l| l.bands.iter())
            .map(|b| b.label.as_str()),
    );
    let colour_of = |label: &str| -> Rgb {
        colours
            .iter()
            .find(|(l, _)| l == label)
            .map_or(fmt::GREEN, |(_, c)| *c)
    };
    let mut lane_rows = Vec::with_capacity(view.timeline.lanes.len());
    for lane in &view.timeline.lanes {
        let bands: Vec<RowBand> = lane
            .bands
            .iter()
            .map(|b| RowBand {
                from_ns: b.from.as_nanos(),
                until_ns: b.until.as_nanos(),
                colour: colour_of(&b.label),
                alpha: 1.0,
            })
            .collect();
        lane_rows.push(TimelineRow {
            label: lane.name.clone(),
            detail: format!("{} bands", fmt::int(lane.bands.len() as u64)),
            svg: charts::timeline_row(axis, &bands)?,
        });
    }
    let label_legend = colours
        .iter()
        .map(|(l, c)| Swatch {
            label: l.clone(),
            css: c.css(),
        })
        .collect();

    // Series charts on the same axis.
    let mut series = Vec::with_capacity(view.timeline.series.len());
    for (i, s) in view.timeline.series.iter().enumerate() {
        let colour = fmt::palette(i);
        let points: Vec<(u64, f64)> = s.points.iter().map(|(t, v)| (t.as_nanos(), *v)).collect();
        let finite: Vec<f64> = points
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .collect();
        let stats = match charts::hist_stats(&finite) {
            None => "no points".to_string(),
            Some(st) => format!(
                "{} points · min {} · max {} · last {}",
                fmt::int(st.count as u64),
                fmt::num(st.min),
                fmt::num(st.max),
                fmt::num(finite.last().copied().unwrap_or(f64::NAN)),
            ),
        };
        series.push(SeriesView {
            name: s.name.clone(),
            unit: s.unit.clone(),
            css: colour.css(),
            stats,
            svg: charts::series_chart(axis, &points, colour)?,
        });
    }

    let verdicts = view
        .verdicts
        .iter()
        .map(|v| VerdictRow {
            name: v.name.clone(),
            held: v.held,
            note: v.note.clone(),
            promise: v.promise.clone().unwrap_or_default(),
        })
        .collect();

    let cov = &view.coverage;
    let marks: Vec<MarkRow> = cov
        .hits
        .iter()
        .map(|(m, n)| {
            let undeclared = cov.undeclared.contains(m);
            MarkRow {
                name: m.clone(),
                seeds: String::new(),
                hits: fmt::int(*n),
                never: *n == 0 && !undeclared,
                undeclared,
            }
        })
        .collect();
    let marks_total = marks.iter().filter(|m| !m.undeclared).count();
    let marks_hit = marks_total - marks.iter().filter(|m| m.never).count();

    let failed = !view.outcome.is_pass();
    let last = view.trace.len().saturating_sub(1);
    let trace = view
        .trace
        .iter()
        .enumerate()
        .map(|(i, e)| TraceRow {
            index: e.index,
            time: format!("t={}", human::ms(e.time.as_nanos())),
            actor: e.actor.to_string(),
            what: human::trace_text(&e.what),
            violation: failed && i == last,
        })
        .collect();

    Ok(RunPage {
        title: format!("faultline · {} · seed {}", view.pattern, view.seed),
        pattern: &view.pattern,
        seed: view.seed,
        replay: &view.replay,
        passed: !failed,
        outcome: view.outcome.to_string(),
        invariant: view.outcome.invariant().unwrap_or("").to_string(),
        events: fmt::int(view.events),
        digest: format!("{:016x}", view.digest),
        horizon: view.horizon.to_string(),
        end: view.end.to_string(),
        knobs: &view.knobs,
        faults,
        faults_never,
        plan_horizon: crate::time::SimTime::from_millis(view.plan.horizon_ms).to_string(),
        faults_not_reached,
        stopped_early: stopped,
        stop: view.end.to_string(),
        timeline_shown: view.timeline.shown.clone(),
        build: build_line(&view.build),
        fault_rows,
        lane_rows,
        axis_svg: charts::time_axis(axis)?,
        axis_end: crate::time::SimTime::from_nanos(axis.max_ns()).to_string(),
        kind_legend,
        label_legend,
        series,
        verdicts,
        marks,
        marks_hit,
        marks_total,
        undeclared: cov.undeclared.iter().cloned().collect(),
        figures: &view.figures,
        trace,
    })
}

/// Renders the run page.
pub(crate) fn render_run(view: &RunView) -> Result<String, ReportError> {
    Ok(run_page(view)?.render()?)
}

// ---------------------------------------------------------------------------------
// The index page.
// ---------------------------------------------------------------------------------

/// A row of a pattern's invariant table.
struct InvariantRow {
    /// The invariant.
    name: String,
    /// What it promises, or empty.
    promise: String,
    /// Seeds that violated it.
    count: String,
    /// True when none did.
    clean: bool,
    /// The first of those seeds, and how many more.
    seeds: String,
}

/// A histogram with its figures.
struct HistView {
    /// The metric.
    name: String,
    /// Its unit.
    unit: String,
    /// `n … · min … · median … · max …`, or `no values`.
    stats: String,
    /// How the x axis is drawn, when not plainly linear.
    axis: String,
    /// The chart; empty when there is nothing to draw.
    svg: String,
}

/// A row of a pattern's failure table.
struct FailureRow {
    /// The seed.
    seed: u64,
    /// The invariant it broke.
    invariant: String,
    /// What happened.
    message: String,
    /// The replay command.
    replay: String,
    /// Its run report.
    report: Option<Link>,
    /// Its shrunk plan.
    plan: Option<Link>,
    /// `faults shrunk 7→2`, or empty.
    shrunk: String,
}

/// A pattern's section.
struct PatternSection {
    name: String,
    slug: String,
    range: String,
    runs: String,
    passed: String,
    failed: String,
    failed_any: bool,
    events: String,
    wall: String,
    shards: String,
    shards_complete: bool,
    digest: String,
    invariants: Vec<InvariantRow>,
    clean: String,
    histograms: Vec<HistView>,
    marks: Vec<MarkRow>,
    marks_hit: usize,
    marks_total: usize,
    undeclared: Vec<String>,
    failures: Vec<FailureRow>,
    failures_total: usize,
    /// Which seeds the summary covers, in words.
    covered: String,
    /// False when the sweep was stopped early (interrupted): `covered` says how far.
    finished: bool,
    /// What the fault plans are drawn from.
    plan_profile: String,
    /// For a mutant sweep: the mutant's name, what is broken, the verdict line, and
    /// whether any seed caught it; `mutant` is empty for a sweep of the implementation.
    mutant: String,
    /// The defect as HTML (escaped, `code` spans as `<code>`).
    mutant_defect: String,
    mutant_verdict: String,
    mutant_caught: bool,
}

/// A row of the mutant table.
struct MutantView {
    pattern: String,
    mutant: String,
    /// The defect as HTML (escaped, `code` spans as `<code>`).
    defect: String,
    caught_by: String,
    survived: bool,
    cases: String,
    seed: String,
}

/// A row of the mutation-score table.
struct ScoreView {
    unit: String,
    files: String,
    measured: String,
    mutants: u64,
    caught: u64,
    missed: u64,
    equivalent: u64,
    unviable: u64,
    timeout: u64,
    /// `87.5 %`, or `–` when nothing was live.
    score: String,
    /// Below the 90 % target.
    low: bool,
    missed_mutants: Vec<String>,
    date: String,
    commit: String,
}

/// A pattern's column of a comparison.
struct CompareColumn {
    /// The pattern.
    name: String,
    /// Its colour in the charts.
    css: String,
    /// `n seeds`, or `not in this sweep`.
    seeds: String,
    /// True when the sweep holds the pattern.
    present: bool,
}

/// A cell of a comparison table.
struct CompareCell {
    /// `median (p90 · max) unit`, or `—`.
    text: String,
    /// `n = 12` when fewer seeds than the column's have a value, else empty.
    count: String,
}

/// A metric's row of a comparison table.
struct CompareRow {
    /// The metric.
    name: String,
    /// Its unit.
    unit: String,
    /// One cell per column.
    cells: Vec<CompareCell>,
    /// The metric's chart.
    svg: String,
}

/// A comparison's section.
struct CompareSection {
    title: String,
    slug: String,
    note: String,
    columns: Vec<CompareColumn>,
    rows: Vec<CompareRow>,
}

/// The index page.
#[derive(Template)]
#[template(path = "report/index.html")]
struct IndexPage<'a> {
    title: &'static str,
    /// `faultline VERSION · commit COMMIT`.
    build: String,
    command: &'a str,
    sections: Vec<PatternSection>,
    comparisons: Vec<CompareSection>,
    mutants: Vec<MutantView>,
    mutants_survived: usize,
    scores: Vec<ScoreView>,
    criterion: Option<Link>,
}

/// The seeds listed in an invariant row.
fn seed_list(seeds: &[u64]) -> String {
    let mut out = seeds
        .iter()
        .take(SEEDS_LISTED)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if seeds.len() > SEEDS_LISTED {
        out.push_str(&format!(
            " … and {} more",
            fmt::int((seeds.len() - SEEDS_LISTED) as u64)
        ));
    }
    out
}

/// A sketch's figures, as the pages show them: the quantiles within the sketch's
/// relative error, the least and greatest exact.
fn sketch_stats(s: &Sketch) -> Option<charts::HistStats> {
    Some(charts::HistStats {
        count: usize::try_from(s.count).unwrap_or(usize::MAX),
        skipped: usize::try_from(s.non_finite).unwrap_or(usize::MAX),
        min: s.min?.value,
        median: s.quantile(0.5)?,
        p90: s.quantile(0.9)?,
        p99: s.quantile(0.99)?,
        max: s.max?.value,
    })
}

/// A histogram's view: its figures over the seeds that have a value (labelled `n = 34
/// of 300 seeds` when that is not every seed run), a percentile line with the seeds of
/// the least and greatest values, and a chart unless every value is the same (a metric
/// that is constant, e.g. 0 by construction, gets a sentence instead of a bar on a
/// made-up axis).
fn hist_view(h: &Histogram, i: usize, runs: u64) -> Result<HistView, ReportError> {
    let sk = &h.sketch;
    let mut svg = String::new();
    let mut axis = String::new();
    let stats = match sketch_stats(sk) {
        None => "no values".to_string(),
        Some(s) => {
            let n = s.count as u64;
            let of = if n < runs {
                format!(
                    "n = {} of {} seeds (the metric applies to these; the other {} have no value)",
                    fmt::int(n),
                    fmt::int(runs),
                    fmt::int(runs - n)
                )
            } else {
                format!("n = {}", fmt::int(n))
            };
            let seed =
                |e: Option<Extreme>| e.map_or(String::new(), |e| format!(" (seed {})", e.seed));
            let mut t = if s.min == s.max {
                format!("{of} · every one of them: {}", fmt::num(s.min))
            } else {
                format!(
                    "{of} · min {}{} · median ≈ {} · p90 ≈ {} · p99 ≈ {} · max {}{}",
                    fmt::num(s.min),
                    seed(sk.min),
                    fmt::num(s.median),
                    fmt::num(s.p90),
                    fmt::num(s.p99),
                    fmt::num(s.max),
                    seed(sk.max),
                )
            };
            if s.skipped > 0 {
                t.push_str(&format!(" · {} not finite, left out", s.skipped));
            }
            if s.min != s.max {
                let points = sk.buckets();
                let layout = charts::hist_layout(&points, sk.is_whole());
                axis = match layout.scale {
                    charts::HistScale::Log => {
                        let mut a = "x: logarithmic (a long tail)".to_string();
                        if layout.off_axis > 0 {
                            a.push_str(&format!(
                                "; {} seeds at 0 are not on it",
                                fmt::int(layout.off_axis as u64)
                            ));
                        }
                        a
                    }
                    charts::HistScale::Whole => "x: whole values".to_string(),
                    charts::HistScale::Linear => String::new(),
                };
                svg = charts::histogram(&layout, Some(s.median), fmt::palette(i))?;
            }
            t
        }
    };
    Ok(HistView {
        name: h.name.clone(),
        unit: h.unit.clone(),
        stats,
        axis,
        svg,
    })
}

/// A comparison's section: for each metric and pattern, the median, p90 and max of the
/// values of the pattern's histogram of that name (`—` when the sweep holds no such
/// pattern, histogram or value).
fn comparison_section(
    c: &Comparison,
    view: &SweepView,
    used: &mut BTreeSet<String>,
) -> Result<CompareSection, ReportError> {
    let swept: Vec<Option<&PatternSweep>> = c
        .patterns
        .iter()
        .map(|name| view.patterns.iter().find(|p| p.pattern == *name))
        .collect();
    let columns = c
        .patterns
        .iter()
        .zip(&swept)
        .enumerate()
        .map(|(i, (name, p))| CompareColumn {
            name: name.clone(),
            css: fmt::palette(i).css(),
            seeds: p.map_or_else(
                || "not in this sweep".to_string(),
                |p| format!("{} seeds", fmt::int(p.summary.runs)),
            ),
            present: p.is_some(),
        })
        .collect();
    let mut rows = Vec::with_capacity(c.metrics.len());
    for (metric, unit) in &c.metrics {
        let mut cells = Vec::with_capacity(swept.len());
        let mut bars = Vec::with_capacity(swept.len());
        for (i, p) in swept.iter().enumerate() {
            let stats = p.and_then(|p| {
                let h = p.histograms.iter().find(|h| h.name == *metric)?;
                Some((sketch_stats(&h.sketch)?, p.summary.runs))
            });
            bars.push(charts::CompareBar {
                figures: stats.as_ref().map(|(s, _)| (s.median, s.p90)),
                colour: fmt::palette(i),
            });
            cells.push(match stats {
                None => CompareCell {
                    text: "—".to_string(),
                    count: String::new(),
                },
                Some((s, runs)) => {
                    let mut text = format!(
                        "{} ({} · {})",
                        fmt::num(s.median),
                        fmt::num(s.p90),
                        fmt::num(s.max)
                    );
                    if !unit.is_empty() {
                        text.push(' ');
                        text.push_str(unit);
                    }
                    CompareCell {
                        text,
                        count: if (s.count as u64) < runs {
                            format!("n = {}", fmt::int(s.count as u64))
                        } else {
                            String::new()
                        },
                    }
                }
            });
        }
        rows.push(CompareRow {
            name: metric.clone(),
            unit: unit.clone(),
            cells,
            svg: charts::comparison_chart(&bars)?,
        });
    }
    Ok(CompareSection {
        title: c.title.clone(),
        slug: fmt::title_slug(&c.title, used),
        note: c.note.clone(),
        columns,
        rows,
    })
}

/// A pattern's section.
fn pattern_section(
    p: &PatternSweep,
    used: &mut BTreeSet<String>,
) -> Result<PatternSection, ReportError> {
    let s = &p.summary;
    let failed = s.runs.saturating_sub(s.passed);

    // Seeds per invariant: the declared ones in order, then any other that failed.
    let mut groups: Vec<(String, Vec<u64>)> = p
        .invariants
        .iter()
        .map(|i| (i.clone(), Vec::new()))
        .collect();
    for f in &s.failures {
        match groups.iter_mut().find(|(i, _)| *i == f.invariant) {
            Some((_, seeds)) => seeds.push(f.seed),
            None => groups.push((f.invariant.clone(), vec![f.seed])),
        }
    }
    for name in s.failed_by_invariant.keys() {
        if !groups.iter().any(|(i, _)| i == name) {
            groups.push((name.clone(), Vec::new()));
        }
    }
    let invariants = groups
        .iter()
        .map(|(name, seeds)| {
            // All failures are counted; only the first ones are kept with their seeds.
            let count = s
                .failed_by_invariant
                .get(name)
                .copied()
                .unwrap_or(seeds.len() as u64)
                .max(seeds.len() as u64);
            let mut listed = seed_list(seeds);
            if count > seeds.len() as u64 && !seeds.is_empty() {
                listed.push_str(&format!(
                    " (the first {} kept; {} in all)",
                    fmt::int(seeds.len() as u64),
                    fmt::int(count)
                ));
            }
            InvariantRow {
                name: name.clone(),
                promise: p
                    .promises
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, promise)| promise.clone())
                    .unwrap_or_default(),
                count: fmt::int(count),
                clean: count == 0,
                seeds: listed,
            }
        })
        .collect();

    let mut histograms = Vec::with_capacity(p.histograms.len());
    for (i, h) in p.histograms.iter().enumerate() {
        histograms.push(hist_view(h, i, s.runs)?);
    }

    let marks: Vec<MarkRow> = s
        .coverage
        .iter()
        .map(|(m, c)| {
            let undeclared = s.undeclared_marks.contains(m);
            MarkRow {
                name: m.clone(),
                seeds: fmt::int(c.seeds_hit),
                hits: fmt::int(c.hits),
                never: c.seeds_hit == 0 && !undeclared,
                undeclared,
            }
        })
        .collect();
    let marks_total = marks.iter().filter(|m| !m.undeclared).count();
    let marks_hit = marks_total - marks.iter().filter(|m| m.never).count();

    let failures: Vec<FailureRow> = if p.failures.is_empty() {
        // No views with links: list the summary's failures as they are.
        s.failures.iter().map(plain_failure).collect()
    } else {
        p.failures
            .iter()
            .map(|f| FailureRow {
                seed: f.seed,
                invariant: f.invariant.clone(),
                message: f.message.clone(),
                replay: f.replay.clone(),
                report: f.report_href.as_deref().map(Link::new),
                plan: f.plan_href.as_deref().map(Link::new),
                shrunk: f
                    .faults_shrunk
                    .map(|(shrunk, original)| format!("faults shrunk {original}→{shrunk}"))
                    .unwrap_or_default(),
            })
            .collect()
    };

    Ok(PatternSection {
        name: p.pattern.clone(),
        slug: fmt::slug(&p.pattern, used),
        range: s.range.to_string(),
        runs: fmt::int(s.runs),
        passed: fmt::int(s.passed),
        failed: fmt::int(failed),
        failed_any: failed > 0,
        events: fmt::int(s.events),
        wall: fmt::wall(s.wall_ms),
        shards: format!("{} of {}", s.shards.len(), s.shard_count()),
        shards_complete: s.is_complete(),
        digest: format!("{:016x}", s.digest),
        invariants,
        clean: fmt::int(s.passed),
        histograms,
        marks,
        marks_hit,
        marks_total,
        undeclared: s.undeclared_marks.iter().cloned().collect(),
        failures_total: usize::try_from(s.failed.max(s.failures.len() as u64))
            .unwrap_or(usize::MAX),
        covered: s.covered(),
        finished: s.is_finished(),
        plan_profile: p.plan_profile.clone(),
        failures,
        mutant: p
            .mutant
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        mutant_defect: p
            .mutant
            .as_ref()
            .map(|m| human::code_spans(&m.defect))
            .unwrap_or_default(),
        mutant_verdict: p.mutant_verdict().unwrap_or_default(),
        mutant_caught: failed > 0,
    })
}

/// A failure row from a summary's failure, without links.
fn plain_failure(f: &SeedFailure) -> FailureRow {
    FailureRow {
        seed: f.seed,
        invariant: f.invariant.clone(),
        message: f.message.clone(),
        replay: f.replay.clone(),
        report: None,
        plan: None,
        shrunk: String::new(),
    }
}

/// Builds the index page.
fn index_page(view: &SweepView) -> Result<IndexPage<'_>, ReportError> {
    let mut used = BTreeSet::new();
    let mut sections = Vec::with_capacity(view.patterns.len());
    for p in &view.patterns {
        sections.push(pattern_section(p, &mut used)?);
    }
    let mut used = BTreeSet::new();
    let mut comparisons = Vec::with_capacity(view.comparisons.len());
    for c in &view.comparisons {
        comparisons.push(comparison_section(c, view, &mut used)?);
    }
    let mutants: Vec<MutantView> = view
        .mutants
        .iter()
        .map(|m| MutantView {
            pattern: m.pattern.clone(),
            mutant: m.mutant.clone(),
            defect: human::code_spans(&m.defect),
            caught_by: m.caught_by.clone().unwrap_or_default(),
            survived: m.caught_by.is_none(),
            cases: fmt::int(m.cases),
            seed: m.seed.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect();
    Ok(IndexPage {
        // A page of the mutants command alone is its report, not a sweep's.
        title: if view.patterns.is_empty() && !view.mutants.is_empty() {
            "mutants report"
        } else {
            "sweep report"
        },
        build: build_line(&view.build),
        command: &view.command,
        sections,
        comparisons,
        mutants_survived: mutants.iter().filter(|m| m.survived).count(),
        mutants,
        scores: view
            .mutation_scores
            .iter()
            .map(|s| ScoreView {
                unit: s.unit.clone(),
                files: s.files.join(", "),
                measured: s.measured.clone(),
                mutants: s.mutants,
                caught: s.caught,
                missed: s.missed,
                equivalent: s.equivalent,
                unviable: s.unviable,
                timeout: s.timeout,
                score: s
                    .score
                    .map_or_else(|| "–".to_string(), |x| format!("{x:.1} %")),
                low: s.score.is_some_and(|x| x < 90.0),
                missed_mutants: s.missed_mutants.clone(),
                date: s.date.clone(),
                commit: s.commit.clone(),
            })
            .collect(),
        criterion: view.criterion_href.as_deref().map(Link::new),
    })
}

/// Renders the index page.
pub(crate) fn render_index(view: &SweepView) -> Result<String, ReportError> {
    Ok(index_page(view)?.render()?)
}
