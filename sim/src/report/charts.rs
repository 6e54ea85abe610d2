//! The SVG charts, drawn with plotters into strings.
//!
//! No user-controlled text is ever handed to plotters: charts carry only numbers, tick
//! labels we format ourselves, and fixed words. Names (targets, lanes, labels, series,
//! units) are written next to the charts in HTML by the escaping templates. (plotters'
//! SVG backend escapes text and attribute values as well, see the tests, so even a
//! slip here would not inject markup.) The SVGs' `xmlns` attribute is dropped, as inline
//! SVG in HTML needs none, so the page holds no URL at all.

use super::ReportError;
use super::fmt::{self, Rgb};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Left padding inside every time-axis SVG, so that the `0s` tick label is not cut.
pub(crate) const PAD_L: i32 = 14;
/// Width of the plot area of every time-axis SVG.
pub(crate) const PLOT_W: i32 = 690;
/// Right part of every time-axis SVG, holding a series chart's value labels.
pub(crate) const RIGHT_W: i32 = 66;
/// Width of every time-axis SVG.
pub(crate) const TIME_SVG_W: u32 = (PAD_L + PLOT_W + RIGHT_W) as u32;
/// Height of one timeline row.
const ROW_H: u32 = 22;
/// Height of the timeline's axis row.
const AXIS_H: u32 = 26;
/// Height of a series chart.
const SERIES_H: u32 = 170;
/// Width of a histogram.
const HIST_W: u32 = 900;
/// Height of a histogram.
const HIST_H: u32 = 190;
/// Bins of a histogram.
pub(crate) const HIST_BINS: usize = 20;
/// Values beyond this magnitude are drawn at it (they are still printed exactly).
const VALUE_CAP: f64 = 1e100;

/// Font for tick labels: the system's sans-serif (plotters divides the size by 1.24).
const FONT: (&str, f64) = ("system-ui, sans-serif", 14.0);
/// Tick label colour.
const TEXT: RGBColor = RGBColor(0x37, 0x41, 0x51);
/// Axis colour.
const AXIS: RGBColor = RGBColor(0x9c, 0xa3, 0xaf);
/// Grid colour.
const GRID: RGBColor = RGBColor(0xe5, 0xe7, 0xeb);
/// Background of a timeline row during the safety phase.
const ROW_BG: RGBColor = RGBColor(0xf3, 0xf4, 0xf6);
/// Background during the liveness phase (after the horizon).
const LIVENESS_BG: RGBColor = RGBColor(0xe2, 0xe5, 0xea);
/// The horizon line.
const HORIZON: RGBColor = RGBColor(0x11, 0x18, 0x27);

/// Turns a plotters error into ours.
fn chart_err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Chart(e.to_string())
}

/// Draws with `draw` on a `w`×`h` SVG and returns the SVG, ready to inline in HTML.
fn svg(
    w: u32,
    h: u32,
    label: &'static str,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(chart_err)?;
    }
    // Inline SVG needs no namespace; without it the page refers to no URL at all.
    let out = out.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    Ok(out.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{label}\" "),
        1,
    ))
}

/// The shared time axis: `[0, max]` mapped onto the plot area of every time-axis SVG.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeAxis {
    /// End of the axis, nanoseconds; never zero.
    max_ns: u64,
    /// The horizon, nanoseconds, clamped to the axis.
    horizon_ns: u64,
}

impl TimeAxis {
    /// An axis ending at `max_ns` (1 s when zero), with the horizon marked.
    pub(crate) fn new(max_ns: u64, horizon_ns: u64) -> Self {
        let max_ns = if max_ns == 0 { 1_000_000_000 } else { max_ns };
        TimeAxis {
            max_ns,
            horizon_ns: horizon_ns.min(max_ns),
        }
    }
    /// End of the axis, nanoseconds.
    pub(crate) fn max_ns(self) -> u64 {
        self.max_ns
    }
    /// End of the axis, seconds (positive).
    fn secs(self) -> f64 {
        self.max_ns as f64 / 1e9
    }
    /// The horizon, seconds.
    fn horizon_secs(self) -> f64 {
        self.horizon_ns as f64 / 1e9
    }
    /// The pixel column of time `ns` (clamped to the axis).
    fn px(self, ns: u64) -> i32 {
        let frac = ns.min(self.max_ns) as f64 / self.max_ns as f64;
        PAD_L + (frac * f64::from(PLOT_W)).round() as i32
    }
}

/// One band on a timeline row: `[from, until)` in nanoseconds, its colour and opacity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowBand {
    /// Start, nanoseconds.
    pub from_ns: u64,
    /// End, nanoseconds.
    pub until_ns: u64,
    /// Colour.
    pub colour: Rgb,
    /// Opacity, 0 to 1 (overlapping bands show through each other below 1).
    pub alpha: f64,
}

/// One timeline row: the phases as background, the bands, and the horizon line.
pub(crate) fn timeline_row(axis: TimeAxis, bands: &[RowBand]) -> Result<String, ReportError> {
    svg(TIME_SVG_W, ROW_H, "timeline row", |root| {
        let h = ROW_H as i32;
        let x0 = axis.px(0);
        let xh = axis.px(axis.horizon_ns);
        let x1 = axis.px(axis.max_ns);
        let rect = |a: i32, b: i32, top: i32, bottom: i32, style: ShapeStyle| {
            root.draw(&Rectangle::new([(a, top), (b, bottom)], style))
                .map_err(chart_err)
        };
        rect(x0, xh, 1, h - 1, ROW_BG.filled())?;
        if x1 > xh {
            rect(xh, x1, 1, h - 1, LIVENESS_BG.filled())?;
        }
        for b in bands {
            let (lo, hi) = (b.from_ns.min(b.until_ns), b.from_ns.max(b.until_ns));
            let a = axis.px(lo);
            // At least one pixel wide, so that short bands still show.
            let z = axis.px(hi).max(a + 1);
            let alpha = if b.alpha.is_finite() {
                b.alpha.clamp(0.0, 1.0)
            } else {
                1.0
            };
            rect(a, z, 4, h - 4, b.colour.plot().mix(alpha).filled())?;
        }
        root.draw(&PathElement::new(
            vec![(xh, 0), (xh, h)],
            HORIZON.stroke_width(2),
        ))
        .map_err(chart_err)
    })
}

/// The time axis under the timeline rows, with the horizon line.
pub(crate) fn time_axis(axis: TimeAxis) -> Result<String, ReportError> {
    svg(TIME_SVG_W, AXIS_H, "time axis", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin_left(PAD_L)
            .margin_right(RIGHT_W)
            .x_label_area_size(AXIS_H - 2)
            .build_cartesian_2d(0f64..axis.secs(), 0f64..1f64)
            .map_err(chart_err)?;
        let fx = |x: &f64| fmt::secs(*x);
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_y_axis()
            .x_labels(10)
            .x_label_formatter(&fx)
            .label_style((FONT.0, FONT.1, &TEXT))
            .axis_style(AXIS)
            .draw()
            .map_err(chart_err)
    })
}

/// A line chart of `points` (seconds, value) on the shared time axis, with the liveness
/// phase shaded and the horizon marked. Points that are not finite, or lie beyond the
/// axis, are left out.
pub(crate) fn series_chart(
    axis: TimeAxis,
    points: &[(u64, f64)],
    colour: Rgb,
) -> Result<String, ReportError> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(t, v)| *t <= axis.max_ns && v.is_finite())
        .map(|&(t, v)| (t as f64 / 1e9, v.clamp(-VALUE_CAP, VALUE_CAP)))
        .collect();
    let (lo, hi) = value_range(pts.iter().map(|p| p.1));
    svg(TIME_SVG_W, SERIES_H, "series chart", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin_left(PAD_L)
            .margin_top(8)
            .right_y_label_area_size(RIGHT_W)
            .x_label_area_size(24)
            .build_cartesian_2d(0f64..axis.secs(), lo..hi)
            .map_err(chart_err)?;
        let fx = |x: &f64| fmt::secs(*x);
        let fy = |y: &f64| tick(*y, hi - lo);
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(5)
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style((FONT.0, FONT.1, &TEXT))
            .axis_style(AXIS)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(chart_err)?;
        let h = axis.horizon_secs();
        if h < axis.secs() {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(h, lo), (axis.secs(), hi)],
                    LIVENESS_BG.mix(0.6).filled(),
                )))
                .map_err(chart_err)?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(h, lo), (h, hi)],
                HORIZON.stroke_width(2),
            )))
            .map_err(chart_err)?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                colour.plot().stroke_width(2),
            ))
            .map_err(chart_err)?;
        if pts.len() <= 1 {
            // A single point draws no line: show it as a dot.
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 3, colour.plot().filled())),
                )
                .map_err(chart_err)?;
        }
        Ok(())
    })
}

/// A value range holding `values` that is never empty and never NaN: from 0 when every
/// value is non-negative, with a little headroom.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if lo >= 0.0 {
        lo = 0.0;
    }
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        let pad = (hi.abs() * 0.1).max(1.0);
        return (lo - if lo < 0.0 { pad } else { 0.0 }, hi + pad);
    }
    (lo, hi + span * 0.05)
}

/// Summary figures of a histogram's values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HistStats {
    /// Finite values.
    pub count: usize,
    /// Values left out because they were NaN or infinite.
    pub skipped: usize,
    /// Least value.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile (nearest rank: the least value at or above 90 % of the values).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Greatest value.
    pub max: f64,
}

/// The nearest-rank `q`-th percentile (`q` in per mille) of the sorted, non-empty `v`.
fn rank(v: &[f64], q_permille: usize) -> f64 {
    let n = v.len();
    v[(n * q_permille).div_ceil(1000).clamp(1, n) - 1]
}

/// Count, min, median, p90, p99 and max of the finite `values`; `None` when there are
/// none.
pub(crate) fn hist_stats(values: &[f64]) -> Option<HistStats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        // Halves first, so that two huge values do not overflow.
        v[n / 2 - 1] / 2.0 + v[n / 2] / 2.0
    };
    Some(HistStats {
        count: n,
        skipped: values.len() - n,
        min: v[0],
        median,
        p90: rank(&v, 900),
        p99: rank(&v, 990),
        max: v[n - 1],
    })
}

/// How a histogram's value axis is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HistScale {
    /// Equal bins on a linear axis.
    Linear,
    /// Whole values (counts): bins of a whole width, each centred on whole values, and
    /// only whole ticks.
    Whole,
    /// A long tail: equal bins on a logarithmic axis (the values above zero; zeros are
    /// counted beside the chart).
    Log,
}

/// A histogram's bins, decided before drawing (so the choice can be tested).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HistLayout {
    /// The axis.
    pub scale: HistScale,
    /// The axis' range (for [`HistScale::Log`], of the values, not their logarithms).
    pub lo: f64,
    /// End of the range.
    pub hi: f64,
    /// Each bin as (from, until, seeds).
    pub bins: Vec<(f64, f64, u64)>,
    /// Values not drawn: zeros (or less) on a log axis.
    pub off_axis: usize,
}

/// A metric is long-tailed when, among its values above zero, the greatest is at
/// least this many times the median (and spans two decades): a linear axis would put
/// most seeds in its first bin.
const LONG_TAIL_RATIO: f64 = 10.0;

/// Least, median and greatest of weighted `points` (value, weight) sorted by value,
/// and their total weight; `None` when they weigh nothing.
fn weighted_spread(points: &[(f64, u64)]) -> Option<(f64, f64, f64, u64)> {
    let total = points.iter().fold(0u64, |n, p| n.saturating_add(p.1));
    let min = points.iter().find(|p| p.1 > 0)?.0;
    let max = points.iter().rev().find(|p| p.1 > 0)?.0;
    let half = total.div_ceil(2);
    let mut seen = 0u64;
    let median = points
        .iter()
        .find(|p| {
            seen = seen.saturating_add(p.1);
            seen >= half
        })
        .map_or(max, |p| p.0);
    Some((min, median, max, total))
}

/// The bins for weighted `points` (value, how many seeds had it: a sketch's buckets, or
/// raw values with weight 1): whole bins when every value is `whole`, log bins for a
/// long tail, else [`HIST_BINS`] equal bins.
pub(crate) fn hist_layout(points: &[(f64, u64)], whole: bool) -> HistLayout {
    let mut vals: Vec<(f64, u64)> = points
        .iter()
        .filter(|(x, w)| x.is_finite() && *w > 0)
        .map(|&(x, w)| {
            let x = x.clamp(-VALUE_CAP, VALUE_CAP);
            // A sketch's bucket midpoint of a whole value lies within 1 % of it.
            (if whole { x.round() } else { x }, w)
        })
        .collect();
    vals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some((min, _, max, _)) = weighted_spread(&vals) else {
        return HistLayout {
            scale: HistScale::Linear,
            lo: 0.0,
            hi: 1.0,
            bins: Vec::new(),
            off_axis: 0,
        };
    };
    let count = |lo: f64, width: f64, bins: usize, xs: &mut dyn Iterator<Item = (f64, u64)>| {
        let mut counts = vec![0u64; bins];
        for (x, w) in xs {
            let k = ((x - lo) / width).floor();
            let k = if k.is_finite() && k > 0.0 {
                (k as usize).min(bins - 1)
            } else {
                0
            };
            counts[k] = counts[k].saturating_add(w);
        }
        counts
    };
    let bins_of = |lo: f64, width: f64, counts: Vec<u64>| -> Vec<(f64, f64, u64)> {
        counts
            .into_iter()
            .enumerate()
            .map(|(k, c)| (lo + width * k as f64, lo + width * (k + 1) as f64, c))
            .collect()
    };
    if whole && max - min < 1e15 {
        // Bins [a - ½, a + w - ½): whole values sit inside, never on an edge.
        let span = max - min + 1.0;
        let width = (span / HIST_BINS as f64).ceil().max(1.0);
        let bins = (span / width).ceil() as usize;
        let lo = min - 0.5;
        let counts = count(lo, width, bins, &mut vals.iter().copied());
        return HistLayout {
            scale: HistScale::Whole,
            lo,
            hi: lo + width * bins as f64,
            bins: bins_of(lo, width, counts),
            off_axis: 0,
        };
    }
    let positive: Vec<(f64, u64)> = vals.iter().copied().filter(|x| x.0 > 0.0).collect();
    if let Some((p_min, p_median, p_max, _)) = weighted_spread(&positive)
        && p_max >= LONG_TAIL_RATIO * p_median
        && p_max >= 100.0 * p_min
    {
        let (a, b) = (p_min.log10(), p_max.log10());
        let width = (b - a) / HIST_BINS as f64;
        let counts = count(
            a,
            width,
            HIST_BINS,
            &mut positive.iter().map(|&(x, w)| (x.log10(), w)),
        );
        let off_axis = vals
            .iter()
            .filter(|x| x.0 <= 0.0)
            .fold(0u64, |n, x| n.saturating_add(x.1));
        return HistLayout {
            scale: HistScale::Log,
            lo: p_min,
            hi: p_max,
            bins: bins_of(a, width, counts)
                .into_iter()
                .map(|(from, until, c)| (10f64.powf(from), 10f64.powf(until), c))
                .collect(),
            off_axis: usize::try_from(off_axis).unwrap_or(usize::MAX),
        };
    }
    let (lo, hi) = if max > min {
        (min, max)
    } else {
        // All values equal: one bar around it, the value in the middle of its bin.
        let pad = (min.abs() * 0.05).max(0.5);
        (min - pad, max + pad)
    };
    let width = (hi - lo) / HIST_BINS as f64;
    let counts = count(lo, width, HIST_BINS, &mut vals.iter().copied());
    HistLayout {
        scale: HistScale::Linear,
        lo,
        hi,
        bins: bins_of(lo, width, counts),
        off_axis: 0,
    }
}

/// A tick label on an axis spanning `span`: values within a billionth of the span of
/// zero are zero (no `-5.551e-17` from rounding).
fn tick(v: f64, span: f64) -> String {
    if v.abs() <= span.abs() * 1e-9 {
        "0".to_string()
    } else {
        fmt::num(v)
    }
}

/// A bar histogram of the bins `layout` ([`hist_layout`]) decided, `median` marked.
pub(crate) fn histogram(
    layout: &HistLayout,
    median: Option<f64>,
    colour: Rgb,
) -> Result<String, ReportError> {
    let median = median
        .filter(|m| m.is_finite())
        .map(|m| m.clamp(-VALUE_CAP, VALUE_CAP));
    let top = layout.bins.iter().map(|b| b.2).max().unwrap_or(0).max(1);
    // Counts are whole numbers: at most one tick per whole count.
    let y_ticks = (top as usize + 1).min(5);
    let topf = top as f64 * 1.1;
    let bars = layout.bins.iter().filter(|b| b.2 > 0).map(|&(a, b, c)| {
        let mut r = Rectangle::new([(a, 0.0), (b, c as f64)], colour.plot().filled());
        r.set_margin(0, 0, 1, 1);
        r
    });
    let fy = |y: &f64| {
        if y.fract() == 0.0 {
            fmt::num(*y)
        } else {
            String::new()
        }
    };
    let (lo, hi) = (layout.lo, layout.hi);
    let span = hi - lo;
    svg(HIST_W, HIST_H, "histogram", |root| {
        let builder = |root| {
            let mut b = ChartBuilder::on(root);
            b.margin(10).x_label_area_size(26).y_label_area_size(46);
            b
        };
        match layout.scale {
            HistScale::Log => {
                let mut chart = builder(root)
                    .build_cartesian_2d((lo..hi).log_scale(), 0f64..topf)
                    .map_err(chart_err)?;
                let fx = |x: &f64| fmt::num(*x);
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(8)
                    .y_labels(y_ticks)
                    .x_label_formatter(&fx)
                    .y_label_formatter(&fy)
                    .label_style((FONT.0, FONT.1, &TEXT))
                    .axis_style(AXIS)
                    .bold_line_style(GRID)
                    .light_line_style(TRANSPARENT)
                    .draw()
                    .map_err(chart_err)?;
                chart.draw_series(bars).map_err(chart_err)?;
                if let Some(m) = median.filter(|m| *m > 0.0) {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(m, 0.0), (m, topf)],
                            HORIZON.stroke_width(2),
                        )))
                        .map_err(chart_err)?;
                }
            }
            HistScale::Linear | HistScale::Whole => {
                let mut chart = builder(root)
                    .build_cartesian_2d(lo..hi, 0f64..topf)
                    .map_err(chart_err)?;
                let whole = layout.scale == HistScale::Whole;
                let fx = |x: &f64| {
                    if whole && x.fract() != 0.0 {
                        String::new()
                    } else {
                        tick(*x, span)
                    }
                };
                // Whole values: as many ticks as there are whole values, at most 8
                // (plotters puts its ticks on round numbers: whole when the span is).
                let x_ticks = if whole {
                    (span.round() as usize).clamp(1, 8)
                } else {
                    8
                };
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(x_ticks)
                    .y_labels(y_ticks)
                    .x_label_formatter(&fx)
                    .y_label_formatter(&fy)
                    .label_style((FONT.0, FONT.1, &TEXT))
                    .axis_style(AXIS)
                    .bold_line_style(GRID)
                    .light_line_style(TRANSPARENT)
                    .draw()
                    .map_err(chart_err)?;
                chart.draw_series(bars).map_err(chart_err)?;
                if let Some(m) = median {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(m, 0.0), (m, topf)],
                            HORIZON.stroke_width(2),
                        )))
                        .map_err(chart_err)?;
                }
            }
        }
        Ok(())
    })
}

/// One bar of a comparison chart: a pattern's median and p90, or nothing to draw.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompareBar {
    /// (median, p90), when the pattern has values.
    pub figures: Option<(f64, f64)>,
    /// The pattern's colour.
    pub colour: Rgb,
}

/// Width of a comparison chart.
const COMPARE_W: u32 = 300;
/// Height of one bar's row in a comparison chart.
const COMPARE_ROW_H: u32 = 26;
/// Height of a comparison chart's value axis.
const COMPARE_AXIS_H: u32 = 22;

/// A comparison chart of one metric: one horizontal bar per pattern, top to bottom in
/// order, from zero to its median, with a whisker on to its p90, the median written at
/// the end of the whisker. A pattern without values gets an empty row marked `—`.
pub(crate) fn comparison_chart(bars: &[CompareBar]) -> Result<String, ReportError> {
    let clamp = |x: f64| x.clamp(-VALUE_CAP, VALUE_CAP);
    let figures: Vec<Option<(f64, f64)>> = bars
        .iter()
        .map(|b| {
            b.figures
                .filter(|(m, p)| m.is_finite() && p.is_finite())
                .map(|(m, p)| (clamp(m), clamp(p)))
        })
        .collect();
    let (lo, hi) = value_range(figures.iter().flatten().flat_map(|&(m, p)| [m, p]));
    // Room on the right for the last value's label.
    let hi = hi + (hi - lo) * 0.22;
    let n = bars.len().max(1);
    let h = COMPARE_ROW_H * n as u32 + COMPARE_AXIS_H + 8;
    svg(COMPARE_W, h, "comparison chart", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin_left(10)
            .margin_right(10)
            .margin_top(6)
            .x_label_area_size(COMPARE_AXIS_H)
            .build_cartesian_2d(lo..hi, 0f64..n as f64)
            .map_err(chart_err)?;
        let fx = |x: &f64| tick(*x, hi - lo);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(4)
            .x_label_formatter(&fx)
            .label_style((FONT.0, FONT.1, &TEXT))
            .axis_style(AXIS)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(chart_err)?;
        let base = 0f64.clamp(lo, hi);
        let label = (FONT.0, FONT.1 * 0.9).into_font().color(&TEXT).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        for (i, (bar, fig)) in bars.iter().zip(&figures).enumerate() {
            // The first bar on top.
            let y = (n - 1 - i) as f64;
            let mid = y + 0.5;
            match fig {
                None => {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            "—".to_string(),
                            (base, mid),
                            label.clone(),
                        )))
                        .map_err(chart_err)?;
                }
                Some((median, p90)) => {
                    let colour = bar.colour.plot();
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(base, y + 0.22), (*median, y + 0.78)],
                            colour.filled(),
                        )))
                        .map_err(chart_err)?;
                    let end = median.max(*p90);
                    chart
                        .draw_series([
                            PathElement::new(
                                vec![(*median, mid), (*p90, mid)],
                                HORIZON.stroke_width(2),
                            ),
                            PathElement::new(
                                vec![(*p90, y + 0.34), (*p90, y + 0.66)],
                                HORIZON.stroke_width(2),
                            ),
                        ])
                        .map_err(chart_err)?;
                    let dx = (hi - lo) * 0.015;
                    chart
                        .draw_series(std::iter::once(Text::new(
                            fmt::num(*median),
                            (end + dx, mid),
                            label.clone(),
                        )))
                        .map_err(chart_err)?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw values as weighted points of weight 1.
    fn pts(values: &[f64]) -> Vec<(f64, u64)> {
        values.iter().map(|&v| (v, 1)).collect()
    }

    fn whole(values: &[f64]) -> bool {
        values.iter().all(|v| v.fract() == 0.0)
    }

    #[test]
    fn plotters_svg_escapes_text() {
        // Guard: if user text ever reached plotters, it would still come out escaped.
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (100, 20)).into_drawing_area();
            root.draw(&Text::new(
                "<script>alert(1)</script>&\"'",
                (1, 1),
                ("sans-serif", 10).into_font(),
            ))
            .unwrap();
            root.present().unwrap();
        }
        assert!(!out.contains("<script"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&apos;"));
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(value_range(std::iter::empty()), (0.0, 1.0));
        assert_eq!(value_range([5.0, 5.0].into_iter()), (0.0, 5.25));
        assert_eq!(value_range([0.0].into_iter()), (0.0, 1.0));
        let (lo, hi) = value_range([-3.0].into_iter());
        assert!(lo < -3.0 && hi > -3.0);
        let (lo, hi) = value_range([-1e100, 1e100].into_iter());
        assert!(lo.is_finite() && hi.is_finite() && hi > lo);
    }

    #[test]
    fn stats_take_the_median() {
        let s = hist_stats(&[3.0, 1.0, f64::NAN, 2.0, 10.0]).unwrap();
        assert_eq!((s.count, s.skipped), (4, 1));
        assert_eq!((s.min, s.median, s.p90, s.max), (1.0, 2.5, 10.0, 10.0));
        assert_eq!(hist_stats(&[7.0]).unwrap().median, 7.0);
        assert_eq!(hist_stats(&[7.0]).unwrap().p90, 7.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(hist_stats(&ten).unwrap().p90, 9.0);
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(hist_stats(&hundred).unwrap().p90, 90.0);
        assert!(hist_stats(&[f64::NAN]).is_none());
        assert!(hist_stats(&[]).is_none());
    }

    #[test]
    fn charts_handle_degenerate_input() {
        let axis = TimeAxis::new(0, 0);
        for svg in [
            timeline_row(axis, &[]).unwrap(),
            time_axis(axis).unwrap(),
            series_chart(axis, &[], fmt::GREEN).unwrap(),
            series_chart(
                axis,
                &[(0, f64::NAN), (5, 1e300), (u64::MAX, 1.0)],
                fmt::GREEN,
            )
            .unwrap(),
            histogram(&hist_layout(&[], false), None, fmt::GREEN).unwrap(),
            histogram(&hist_layout(&[(4.0, 1)], true), Some(4.0), fmt::GREEN).unwrap(),
            histogram(&hist_layout(&[(4.0, 10)], true), Some(4.0), fmt::GREEN).unwrap(),
            histogram(
                &hist_layout(&[(-1e300, 1), (1e300, 1), (f64::INFINITY, 1)], true),
                Some(0.0),
                fmt::GREEN,
            )
            .unwrap(),
            histogram(
                &hist_layout(&[(0.0, 1), (1e-12, 1)], false),
                Some(0.0),
                fmt::GREEN,
            )
            .unwrap(),
            comparison_chart(&[]).unwrap(),
            comparison_chart(&[
                CompareBar {
                    figures: None,
                    colour: fmt::GREEN,
                },
                CompareBar {
                    figures: Some((f64::NAN, 1.0)),
                    colour: fmt::RED,
                },
            ])
            .unwrap(),
            comparison_chart(&[
                CompareBar {
                    figures: Some((0.0, 0.0)),
                    colour: fmt::GREEN,
                },
                CompareBar {
                    figures: Some((-1e300, 1e300)),
                    colour: fmt::RED,
                },
            ])
            .unwrap(),
        ] {
            assert!(svg.starts_with("<svg role=\"img\""), "{svg}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert!(!svg.contains("http"), "{svg}");
        }
        let huge = TimeAxis::new(u64::MAX, u64::MAX / 2);
        let band = RowBand {
            from_ns: 0,
            until_ns: u64::MAX,
            colour: fmt::RED,
            alpha: f64::NAN,
        };
        let svg = timeline_row(huge, &[band]).unwrap();
        assert!(!svg.contains("NaN"));
        series_chart(huge, &[(0, 1.0), (u64::MAX, 2.0)], fmt::RED).unwrap();
    }

    /// The tick labels of an SVG chart: the text of its `<text>` elements.
    fn labels(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = t.split_once('>')?.1;
                Some(body.split_once("</text>")?.0.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn equal_and_zero_values_get_a_sane_axis() {
        for values in [vec![0.0; 10], vec![0.25; 3], vec![-0.0, 0.0]] {
            let svg = histogram(
                &hist_layout(&pts(&values), whole(&values)),
                None,
                fmt::GREEN,
            )
            .unwrap();
            for l in labels(&svg) {
                assert!(!l.contains('e'), "bogus tick {l:?} for {values:?}");
            }
        }
        // A series that stays at zero: no tick like -5.551e-17 either.
        let svg = series_chart(TimeAxis::new(0, 0), &[(0, 0.0), (1, 0.0)], fmt::RED).unwrap();
        assert!(labels(&svg).iter().all(|l| !l.contains("e-")), "{svg}");
        assert_eq!(tick(-5.551e-17, 1.0), "0");
        assert_eq!(tick(0.5, 1.0), "0.5");
    }

    #[test]
    fn counts_get_whole_bins_and_whole_ticks() {
        let values: Vec<f64> = [0, 1, 1, 2, 3, 3, 3, 7]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let layout = hist_layout(&pts(&values), whole(&values));
        assert_eq!(layout.scale, HistScale::Whole);
        // Each whole value inside a bin, never on an edge.
        for (a, b, _) in &layout.bins {
            assert_eq!(a.fract().abs(), 0.5, "{layout:?}");
            assert!((b - a).fract() == 0.0);
        }
        let total: u64 = layout.bins.iter().map(|b| b.2).sum();
        assert_eq!(total, values.len() as u64);
        let svg = histogram(
            &hist_layout(&pts(&values), whole(&values)),
            None,
            fmt::GREEN,
        )
        .unwrap();
        let ticks = labels(&svg);
        assert!(!ticks.is_empty());
        for l in &ticks {
            assert!(
                l.parse::<u64>().is_ok(),
                "a fractional tick {l:?} in {ticks:?}"
            );
        }
        // A wide range of counts: bins of a whole width still.
        let wide: Vec<f64> = (0..500).map(|v| f64::from(v * 7)).collect();
        let layout = hist_layout(&pts(&wide), whole(&wide));
        assert_eq!(layout.scale, HistScale::Whole);
        assert!(layout.bins.len() <= HIST_BINS);
        assert_eq!(layout.bins.iter().map(|b| b.2).sum::<u64>(), 500);
    }

    #[test]
    fn long_tails_go_on_a_log_axis() {
        // 90 % of the seeds near 0.1, a tail to 50: on a linear axis they all fall in
        // the first bin.
        let mut values: Vec<f64> = (0..90).map(|i| 0.05 + f64::from(i) * 0.001).collect();
        values.extend((0..10).map(|i| 5.0 + f64::from(i) * 5.0));
        values.push(0.0);
        let layout = hist_layout(&pts(&values), whole(&values));
        assert_eq!(layout.scale, HistScale::Log);
        assert_eq!(layout.off_axis, 1, "the zero is counted beside the chart");
        let first = layout.bins[0].2 as f64;
        assert!(first < 0.8 * 100.0, "{layout:?}");
        histogram(
            &hist_layout(&pts(&values), whole(&values)),
            None,
            fmt::GREEN,
        )
        .unwrap();
        // Not long-tailed: linear.
        let even: Vec<f64> = (0..100).map(|i| f64::from(i) + 0.5).collect();
        assert_eq!(
            hist_layout(&pts(&even), whole(&even)).scale,
            HistScale::Linear
        );
        let s = hist_stats(&values).unwrap();
        assert!(s.p99 >= s.p90 && s.p99 <= s.max);
    }
}
