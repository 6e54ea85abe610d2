//! What happened in a run: the [`Trace`] (entries with times and actors, kept off, as a
//! ring of the last N, or in full), its stable [`Digest`], and [`Coverage`] marks.

use crate::time::SimTime;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::{self, Write as _};

/// A stable 64-bit digest of a run.
///
/// The algorithm is fixed here forever (never `RandomState`, never `std`'s unspecified
/// `DefaultHasher`): each 64-bit word is folded in as `h = (rotl(h, 5) ^ w) * K` with
/// `K = 0x517cc1b727220a95` (FxHash's constant), strings as their length followed by
/// their bytes in little-endian 8-byte words, and [`value`](Digest::value) applies
/// SplitMix64's finaliser. The same run gives the same digest on every machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64);

const DIGEST_K: u64 = 0x517c_c1b7_2722_0a95;

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

impl Digest {
    /// The digest of nothing.
    pub const fn new() -> Self {
        Digest(0x6661_756c_746c_696e) // "faultlin"
    }
    /// Folds in one word.
    #[inline(always)]
    pub fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(DIGEST_K);
    }
    /// Folds in a string (its length, then its bytes).
    pub fn write_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.write_u64(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    /// The finished 64-bit value.
    pub fn value(&self) -> u64 {
        crate::rng::mix64(self.0)
    }
}

/// How much of the trace a run keeps.
///
/// The digest covers the same things in `Ring` and `Full` mode (every entry recorded,
/// kept or not), so those two give equal digests. In `Off` mode no entry is formatted
/// and the digest covers only the times of processed events: compare digests only
/// between runs made with the trace on, or only between runs made with it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceMode {
    /// Record nothing (fastest; for sweeps and benchmarks).
    #[default]
    Off,
    /// Keep the last N entries (for failure reports: the run around the violation).
    Ring(usize),
    /// Keep every entry (for determinism checks and small runs).
    Full,
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Position of this entry among all entries recorded in the run (0-based).
    pub index: u64,
    /// When it happened.
    pub time: SimTime,
    /// Who did it (`"sim"` for the engine itself).
    pub actor: Cow<'static, str>,
    /// What happened, in words.
    pub what: String,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} [{}] {}",
            self.index, self.time, self.actor, self.what
        )
    }
}

/// The record of a run: retained entries plus a running digest.
#[derive(Clone, Debug)]
pub struct Trace {
    mode: TraceMode,
    entries: VecDeque<TraceEntry>,
    recorded: u64,
    digest: Digest,
    scratch: String,
}

impl Trace {
    /// An empty trace in `mode`.
    pub fn new(mode: TraceMode) -> Self {
        Trace {
            mode,
            entries: VecDeque::new(),
            recorded: 0,
            digest: Digest::new(),
            scratch: String::new(),
        }
    }

    /// The retention mode.
    pub fn mode(&self) -> TraceMode {
        self.mode
    }

    /// True unless the mode is [`TraceMode::Off`]: callers may skip building
    /// expensive descriptions when this is false.
    #[inline(always)]
    pub fn is_on(&self) -> bool {
        !matches!(self.mode, TraceMode::Off)
    }

    /// Folds the time of a processed event into the digest (done by the engine).
    #[inline(always)]
    pub(crate) fn digest_time(&mut self, t: SimTime) {
        self.digest.write_u64(t.as_nanos());
    }

    /// Records that `actor` did `what` at `time`. With the trace off this does nothing
    /// and `what` is never formatted.
    pub fn record(
        &mut self,
        time: SimTime,
        actor: impl Into<Cow<'static, str>>,
        what: impl fmt::Display,
    ) {
        if !self.is_on() {
            return;
        }
        let actor = actor.into();
        self.scratch.clear();
        let _ = write!(self.scratch, "{what}");
        self.digest.write_u64(time.as_nanos());
        self.digest.write_str(&actor);
        self.digest.write_str(&self.scratch);
        let entry = TraceEntry {
            index: self.recorded,
            time,
            actor,
            what: self.scratch.clone(),
        };
        self.recorded += 1;
        match self.mode {
            TraceMode::Off => {}
            TraceMode::Ring(n) => {
                if n == 0 {
                    return;
                }
                if self.entries.len() == n {
                    self.entries.pop_front();
                }
                self.entries.push_back(entry);
            }
            TraceMode::Full => self.entries.push_back(entry),
        }
    }

    /// Number of entries recorded (kept or not).
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// The retained entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &TraceEntry> {
        self.entries.iter()
    }

    /// The digest so far.
    pub fn digest(&self) -> u64 {
        self.digest.value()
    }

    /// Takes the retained entries out.
    pub fn into_entries(self) -> Vec<TraceEntry> {
        self.entries.into()
    }
}

/// Counts of coverage marks: named, interesting transitions that a world declares up
/// front and hits as they happen, so a sweep can show which states its fault plans
/// reached and a mark that is never hit is visible rather than silently green.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Hits per mark; declared marks appear with 0 until hit.
    pub hits: BTreeMap<String, u64>,
    /// Marks hit without having been declared (a typo, usually).
    pub undeclared: BTreeSet<String>,
}

impl Coverage {
    /// Coverage with `marks` declared and nothing hit yet.
    pub fn declare<'a>(marks: impl IntoIterator<Item = &'a str>) -> Self {
        Coverage {
            hits: marks.into_iter().map(|m| (m.to_string(), 0)).collect(),
            undeclared: BTreeSet::new(),
        }
    }

    /// Counts one hit of `mark`.
    pub fn hit(&mut self, mark: &str) {
        match self.hits.get_mut(mark) {
            Some(n) => *n += 1,
            None => {
                self.hits.insert(mark.to_string(), 1);
                self.undeclared.insert(mark.to_string());
            }
        }
    }

    /// How often `mark` was hit.
    pub fn count(&self, mark: &str) -> u64 {
        self.hits.get(mark).copied().unwrap_or(0)
    }

    /// Declared marks never hit.
    pub fn missed(&self) -> Vec<&str> {
        self.hits
            .iter()
            .filter(|(m, n)| **n == 0 && !self.undeclared.contains(*m))
            .map(|(m, _)| m.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_last_n_and_digest_matches_full() {
        let mut ring = Trace::new(TraceMode::Ring(3));
        let mut full = Trace::new(TraceMode::Full);
        for i in 0..10u64 {
            ring.record(SimTime::from_millis(i), "a", i);
            full.record(SimTime::from_millis(i), "a", i);
        }
        let kept: Vec<u64> = ring.entries().map(|e| e.index).collect();
        assert_eq!(kept, vec![7, 8, 9]);
        assert_eq!(ring.digest(), full.digest());
        assert_eq!(full.entries().count(), 10);
    }

    #[test]
    fn off_formats_nothing() {
        struct Boom;
        impl fmt::Display for Boom {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                panic!("formatted while off")
            }
        }
        let mut t = Trace::new(TraceMode::Off);
        t.record(SimTime::ZERO, "a", Boom);
        assert_eq!(t.recorded(), 0);
    }

    #[test]
    fn digest_is_order_sensitive_and_stable() {
        let mut a = Digest::new();
        a.write_str("ab");
        a.write_str("c");
        let mut b = Digest::new();
        b.write_str("a");
        b.write_str("bc");
        assert_ne!(a.value(), b.value());
        let mut c = Digest::new();
        c.write_u64(1);
        // Fixed forever: a change here is a change of algorithm.
        assert_eq!(c.value(), 161_254_520_833_222_935);
    }

    #[test]
    fn coverage_flags_undeclared_and_missed() {
        let mut c = Coverage::declare(["x", "y"]);
        c.hit("x");
        c.hit("z");
        assert_eq!(c.count("x"), 1);
        assert_eq!(c.missed(), vec!["y"]);
        assert!(c.undeclared.contains("z"));
    }
}
