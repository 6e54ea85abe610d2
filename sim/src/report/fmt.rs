//! Fixed, deterministic formatting of numbers, colours, identifiers and links.

use std::collections::BTreeSet;

/// `n` with `,` between groups of three digits: `1,234,567`.
pub(crate) fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Removes trailing zeros after a decimal point, and the point itself if nothing is
/// left after it.
fn trim_zeros(mut s: String) -> String {
    if s.contains('.') && !s.contains('e') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// A value in at most a few significant places: `0`, `12.5`, `1234.6`, `1.235e9`;
/// `—` when not finite.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-3..1e9).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        trim_zeros(format!("{v:.1}"))
    } else {
        trim_zeros(format!("{v:.3}"))
    }
}

/// A time-axis tick label in seconds: `0s`, `2.5s`.
pub(crate) fn secs(v: f64) -> String {
    format!("{}s", num(v))
}

/// Wall-clock milliseconds in words: `850 ms`, `12.3 s`, `3 min 12 s`.
pub(crate) fn wall(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{}.{} s", ms / 1_000, (ms % 1_000) / 100)
    } else {
        let s = ms / 1_000;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// `name` as an HTML id fragment: ASCII letters, digits, `-` and `_` kept, anything else
/// turned into `-`; never empty. `used` makes it unique (`-2`, `-3`, … appended).
pub(crate) fn slug(name: &str, used: &mut BTreeSet<String>) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        s.push('-');
    }
    let mut candidate = s.clone();
    let mut k = 2u64;
    while used.contains(&candidate) {
        candidate = format!("{s}-{k}");
        k += 1;
    }
    used.insert(candidate.clone());
    candidate
}

/// An id for a title, unique among `used`: lowercase, every run of characters other
/// than ASCII letters and digits made one `-`, none at either end
/// (`Saga vs two-phase commit` → `saga-vs-two-phase-commit`).
pub(crate) fn title_slug(title: &str, used: &mut BTreeSet<String>) -> String {
    let mut s = String::with_capacity(title.len());
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    while s.ends_with('-') {
        s.pop();
    }
    slug(&s, used)
}

/// `href` when it is safe to put in a link ([`is_relative_link`](super::is_relative_link)):
/// anything else gives `None`, and the report shows it as text instead.
pub(crate) fn safe_href(href: &str) -> Option<&str> {
    super::model::is_relative_link(href).then_some(href)
}

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb`.
    pub(crate) fn css(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
    /// The colour for plotters.
    pub(crate) fn plot(self) -> plotters::style::RGBColor {
        plotters::style::RGBColor(self.0, self.1, self.2)
    }
}

/// Green, for `closed` (and anything healthy).
pub(crate) const GREEN: Rgb = Rgb(0x2e, 0x9d, 0x4f);
/// Red, for `open`.
pub(crate) const RED: Rgb = Rgb(0xd6, 0x45, 0x45);
/// Amber, for `half_open`.
pub(crate) const AMBER: Rgb = Rgb(0xe3, 0xa2, 0x1a);

/// Colours for the other labels, in order of first appearance (then cycling).
const PALETTE: [Rgb; 8] = [
    Rgb(0x3b, 0x7d, 0xd8), // blue
    Rgb(0x8e, 0x5c, 0xc4), // purple
    Rgb(0x1f, 0x9e, 0x9e), // teal
    Rgb(0x9c, 0x6b, 0x3f), // brown
    Rgb(0xd1, 0x5c, 0x9e), // pink
    Rgb(0x64, 0x74, 0x8b), // slate
    Rgb(0x7c, 0x8f, 0x2b), // olive
    Rgb(0x4f, 0x46, 0xe5), // indigo
];

/// The `i`-th colour of the palette (cycling), e.g. for the `i`-th series.
pub(crate) fn palette(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

/// The fixed colour of a well-known label (`closed`, `open`, `half_open`, in any case
/// and with any separators).
fn well_known(label: &str) -> Option<Rgb> {
    let norm: String = label
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match norm.as_str() {
        "closed" => Some(GREEN),
        "open" => Some(RED),
        "halfopen" => Some(AMBER),
        _ => None,
    }
}

/// Colours for labels: well-known labels get theirs, the others take the palette in the
/// order they first appear in `labels`. Returns (label, colour) in first-appearance order.
pub(crate) fn label_colours<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<(String, Rgb)> {
    let mut out: Vec<(String, Rgb)> = Vec::new();
    let mut next = 0usize;
    for label in labels {
        if out.iter().any(|(l, _)| l == label) {
            continue;
        }
        let colour = well_known(label).unwrap_or_else(|| {
            let c = PALETTE[next % PALETTE.len()];
            next += 1;
            c
        });
        out.push((label.to_string(), colour));
    }
    out
}

/// The colour of a fault kind.
pub(crate) fn kind_colour(kind: crate::fault::FaultKindTag) -> Rgb {
    use crate::fault::FaultKindTag as K;
    match kind {
        K::Outage => Rgb(0xd6, 0x45, 0x45),
        K::Slow => Rgb(0xe3, 0xa2, 0x1a),
        K::Errors => Rgb(0xe0, 0x6c, 0x2b),
        K::Crash => Rgb(0x7a, 0x3b, 0x8f),
        K::Drop => Rgb(0x3b, 0x7d, 0xd8),
        K::Duplicate => Rgb(0x1f, 0x9e, 0x9e),
        K::Delay => Rgb(0x5a, 0x5f, 0xc7),
        K::TornCrash => Rgb(0xb0, 0x3a, 0x7a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_fixed() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(int(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(12.5), "12.5");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(1234.56), "1234.6");
        assert_eq!(num(1.5e12), "1.500e12");
        assert_eq!(num(f64::NAN), "—");
        assert_eq!(num(f64::INFINITY), "—");
        assert_eq!(wall(850), "850 ms");
        assert_eq!(wall(12_345), "12.3 s");
        assert_eq!(wall(192_000), "3 min 12 s");
    }

    #[test]
    fn slugs_are_ids() {
        let mut used = BTreeSet::new();
        assert_eq!(slug("breaker", &mut used), "breaker");
        assert_eq!(slug("breaker", &mut used), "breaker-2");
        assert_eq!(slug("a b<c>", &mut used), "a-b-c-");
        assert_eq!(slug("", &mut used), "-");
        let mut used = BTreeSet::new();
        let t = "Saga vs two-phase commit";
        assert_eq!(title_slug(t, &mut used), "saga-vs-two-phase-commit");
        assert_eq!(title_slug(t, &mut used), "saga-vs-two-phase-commit-2");
        assert_eq!(title_slug(" A <b>&amp; B!</b> ", &mut used), "a-b-amp-b-b");
    }

    #[test]
    fn only_relative_links_pass() {
        assert_eq!(safe_href("runs/seed-1.html"), Some("runs/seed-1.html"));
        assert_eq!(
            safe_href("../criterion/report/index.html"),
            Some("../criterion/report/index.html")
        );
        assert_eq!(safe_href("a/b:c"), Some("a/b:c"));
        assert_eq!(safe_href("my runs/a.html"), Some("my runs/a.html"));
        for bad in [
            "https://x.invalid/",
            "HTTP://x.invalid/",
            "//x.invalid/a.html",
            "/etc/passwd",
            "\\\\host\\share",
            "a\\b",
            "C:\\x.html",
            "c:/x.html",
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:alert(1)",
            "\u{1b}]0;x",
            "data:text/html,x",
            "",
        ] {
            assert_eq!(safe_href(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn label_colours_are_stable() {
        let c = label_colours(["busy", "closed", "idle", "Half-Open", "busy", "open"]);
        let names: Vec<&str> = c.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(names, ["busy", "closed", "idle", "Half-Open", "open"]);
        assert_eq!(c[0].1, PALETTE[0]);
        assert_eq!(c[1].1, GREEN);
        assert_eq!(c[2].1, PALETTE[1]);
        assert_eq!(c[3].1, AMBER);
        assert_eq!(c[4].1, RED);
    }
}
