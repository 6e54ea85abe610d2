//! Self-contained HTML reports: one page per run, and an index page for a sweep.
//!
//! A pattern fills in a [`RunView`] or a [`SweepView`] (see [`model`]); [`render_run`]
//! and [`render_index`] turn them into one HTML page each, with inline CSS and inline
//! SVG charts drawn by plotters. Pages load nothing: no script, no stylesheet, no font,
//! no image, no URL (the only links are the relative ones given in the view).
//!
//! # Run page
//!
//! Sections, each with an `id`: `summary` (outcome, seed, events, digest, horizon, end,
//! replay command), `knobs`, `faults` (the plan; faults that never fired flagged),
//! `timeline` (a row of fault windows per target, a row of labelled bands per lane, the
//! horizon as a vertical line, then one line chart per series on the same time axis),
//! `verdicts`, `coverage`, `figures` and `trace` (the violation highlighted).
//!
//! # Index page
//!
//! `overview` (one row per pattern), one `pattern-{name}` section per pattern (totals,
//! seeds per violated invariant, histograms, coverage, failures with links and replay
//! commands), one `comparison-{slug of the title}` section per [`Comparison`] (a table of
//! each metric's median, p90 and max per pattern, and small multiples: a chart per
//! metric with a bar per pattern to its median and a whisker to its p90), `mutants` and
//! `benchmarks` (a link to criterion's report).
//!
//! # Escaping
//!
//! Every value a template interpolates is HTML-escaped (`& < > " '` become
//! `&amp; &lt; &gt; &quot; &#39;`; see `sim/askama.toml`); the only unescaped values
//! are the SVG charts. No user-controlled text is passed to plotters: charts hold only
//! numbers, tick labels formatted here and fixed words, while names (targets, lanes,
//! labels, series, units) are written beside them in HTML. Links from the view are
//! kept only when relative or `http(s)`; others (`javascript:` …) are shown as text.
//!
//! # Determinism
//!
//! The same view renders the same bytes: no clock, no hash-map iteration, and fixed
//! number formatting.

#[cfg(feature = "report")]
mod charts;
#[cfg(feature = "report")]
mod escape;
#[cfg(feature = "report")]
mod fmt;
#[cfg(feature = "report")]
mod human;
pub mod model;
#[cfg(feature = "report")]
mod pages;

pub use model::*;

/// Why a report could not be rendered.
#[cfg(feature = "report")]
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A template failed to render.
    #[error("rendering the report template failed: {0}")]
    Template(#[from] askama::Error),
    /// Formatting text failed.
    #[error("formatting the report failed: {0}")]
    Fmt(#[from] std::fmt::Error),
    /// plotters could not draw a chart.
    #[error("drawing a chart of the report failed: {0}")]
    Chart(String),
}

/// The report of one run, as one self-contained HTML page titled
/// `faultline · {pattern} · seed {seed}`.
#[cfg(feature = "report")]
pub fn render_run(view: &RunView) -> Result<String, ReportError> {
    pages::render_run(view)
}

/// The sweep report (the reports' entry page): an overview, a section per pattern, a
/// section per comparison, the mutant table and a link to criterion's benchmark report, as one self-contained HTML
/// page.
#[cfg(feature = "report")]
pub fn render_index(view: &SweepView) -> Result<String, ReportError> {
    pages::render_index(view)
}
