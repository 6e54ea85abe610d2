//! A bounded, mergeable histogram of one metric across the seeds of a sweep.
//!
//! [`Sketch`] keeps, for every finite value, one count in a log-linear bucket: the
//! bucket of a positive `v` is the top 17 bits of `v.to_bits()` (its exponent and the
//! first 6 bits of its mantissa), so each power of two is cut into 64 buckets and a
//! bucket's midpoint is within 1/129 (0.78 %) of every value in it. The bucket of a
//! value is read off its bits, not computed with a logarithm, so it is the same on
//! every machine. Negative values use the bucket of their magnitude; zeros are counted
//! apart. The least and greatest values are kept exactly, each with the seed that gave
//! it. The size is bounded by the number of buckets a metric's values span (at most
//! 64 per power of two, a few hundred for a typical metric), never by the number of
//! seeds; merging adds counts, so shards merge in any order to the same sketch.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bits of the mantissa kept in a bucket index: 64 buckets per power of two.
const SUB_BITS: u32 = 6;
/// Shift from a value's bits to its bucket index.
const SHIFT: u32 = 52 - SUB_BITS;
/// Largest relative error of [`Sketch::quantile`] (half a bucket's relative width).
pub const RELATIVE_ERROR: f64 = 1.0 / 129.0;

/// A value with the seed that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extreme {
    /// The value.
    pub value: f64,
    /// The seed whose run gave it.
    pub seed: u64,
}

/// A bounded histogram of one metric's values, mergeable with another of the same
/// metric. See the [module docs](self) for its error bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    /// Finite values added.
    pub count: u64,
    /// Values left out because they were NaN or infinite.
    #[serde(default)]
    pub non_finite: u64,
    /// Values equal to zero.
    #[serde(default)]
    pub zeros: u64,
    /// Finite values that are not whole numbers (0 for a count metric: its report gets
    /// whole bins and ticks).
    #[serde(default)]
    pub fractional: u64,
    /// Counts of positive values by bucket index.
    #[serde(default)]
    pub positive: BTreeMap<u32, u64>,
    /// Counts of negative values by the bucket index of their magnitude.
    #[serde(default)]
    pub negative: BTreeMap<u32, u64>,
    /// The least value and its seed (the least seed among equal values).
    pub min: Option<Extreme>,
    /// The greatest value and its seed (the least seed among equal values).
    pub max: Option<Extreme>,
}

fn bucket(magnitude: f64) -> u32 {
    (magnitude.to_bits() >> SHIFT) as u32
}

/// The midpoint of bucket `index` (a magnitude).
fn midpoint(index: u32) -> f64 {
    let lo = f64::from_bits(u64::from(index) << SHIFT);
    let hi = f64::from_bits((u64::from(index) + 1) << SHIFT);
    if hi.is_finite() {
        lo / 2.0 + hi / 2.0
    } else {
        lo
    }
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Sketch::default()
    }

    /// Adds `value`, produced by `seed`'s run.
    pub fn add(&mut self, value: f64, seed: u64) {
        if !value.is_finite() {
            self.non_finite += 1;
            return;
        }
        self.count += 1;
        if value.fract() != 0.0 {
            self.fractional += 1;
        }
        if value == 0.0 {
            self.zeros += 1;
        } else if value > 0.0 {
            *self.positive.entry(bucket(value)).or_default() += 1;
        } else {
            *self.negative.entry(bucket(-value)).or_default() += 1;
        }
        self.note_extremes(Extreme { value, seed });
    }

    fn note_extremes(&mut self, e: Extreme) {
        let lower =
            |a: &Extreme, b: &Extreme| a.value < b.value || (a.value == b.value && a.seed < b.seed);
        let higher =
            |a: &Extreme, b: &Extreme| a.value > b.value || (a.value == b.value && a.seed < b.seed);
        if self.min.as_ref().is_none_or(|m| lower(&e, m)) {
            self.min = Some(e);
        }
        if self.max.as_ref().is_none_or(|m| higher(&e, m)) {
            self.max = Some(e);
        }
    }

    /// Adds every value of `other` (a sketch of the same metric over other seeds).
    /// Merging is commutative and associative: shards merge to the same sketch in any
    /// order.
    pub fn merge(&mut self, other: &Sketch) {
        self.count = self.count.saturating_add(other.count);
        self.non_finite = self.non_finite.saturating_add(other.non_finite);
        self.zeros = self.zeros.saturating_add(other.zeros);
        self.fractional = self.fractional.saturating_add(other.fractional);
        for (k, c) in &other.positive {
            let e = self.positive.entry(*k).or_default();
            *e = e.saturating_add(*c);
        }
        for (k, c) in &other.negative {
            let e = self.negative.entry(*k).or_default();
            *e = e.saturating_add(*c);
        }
        for e in [other.min, other.max].into_iter().flatten() {
            self.note_extremes(e);
        }
    }

    /// True when every finite value added was a whole number.
    pub fn is_whole(&self) -> bool {
        self.fractional == 0
    }

    /// The buckets in value order, each as (representative value, count): the
    /// midpoint of the bucket, kept within the least and greatest values.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let (Some(min), Some(max)) = (self.min, self.max) else {
            return Vec::new();
        };
        let clamp = |v: f64| v.clamp(min.value, max.value);
        let mut out: Vec<(f64, u64)> = self
            .negative
            .iter()
            .rev()
            .map(|(k, c)| (clamp(-midpoint(*k)), *c))
            .collect();
        if self.zeros > 0 {
            out.push((0.0, self.zeros));
        }
        out.extend(self.positive.iter().map(|(k, c)| (clamp(midpoint(*k)), *c)));
        out
    }

    /// The `q`-quantile (`0.0..=1.0`) by nearest rank (the least value at or above a
    /// share `q` of the values), within [`RELATIVE_ERROR`] of the true value; exact for
    /// the least and greatest. `None` when the sketch holds no finite value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (min, max) = (self.min?, self.max?);
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == 1 {
            return Some(min.value);
        }
        if rank == self.count {
            return Some(max.value);
        }
        let mut seen = 0u64;
        for (v, c) in self.buckets() {
            seen += c;
            if seen >= rank {
                return Some(v);
            }
        }
        Some(max.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_stated_error() {
        let mut s = Sketch::new();
        let values: Vec<f64> = (1..=10_000).map(|i| (i as f64) * 0.37).collect();
        for (seed, v) in values.iter().enumerate() {
            s.add(*v, seed as u64);
        }
        for q in [0.1, 0.5, 0.9, 0.99] {
            let exact = values[((q * values.len() as f64).ceil() as usize).max(1) - 1];
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() <= exact * RELATIVE_ERROR,
                "q {q}: {got} vs {exact}"
            );
        }
        assert_eq!(
            s.min,
            Some(Extreme {
                value: 0.37,
                seed: 0
            })
        );
        assert_eq!(s.max.unwrap().seed, 9_999);
        assert!(s.positive.len() < 1_000, "{} buckets", s.positive.len());
    }

    #[test]
    fn merging_is_order_independent_and_equals_one_pass() {
        let vals = [-3.5, 0.0, 2.0, 2.0, 1e9, f64::NAN, 7.25, -0.001, 2.0];
        let mut whole = Sketch::new();
        let (mut a, mut b) = (Sketch::new(), Sketch::new());
        for (seed, v) in vals.iter().enumerate() {
            whole.add(*v, seed as u64);
            if seed % 2 == 0 { &mut a } else { &mut b }.add(*v, seed as u64);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, whole);
        assert_eq!(ba, whole);
        assert_eq!(whole.non_finite, 1);
        assert_eq!(whole.count, 8);
        // Ties keep the least seed: 2.0 came from seeds 2, 3 and 8.
        assert_eq!(
            whole.min,
            Some(Extreme {
                value: -3.5,
                seed: 0
            })
        );
        assert_eq!(whole.quantile(1.0), Some(1e9));
        let json = serde_json::to_string(&whole).unwrap();
        assert_eq!(serde_json::from_str::<Sketch>(&json).unwrap(), whole);
    }
}
