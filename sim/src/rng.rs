//! Seeded randomness: [`SimRng`] (a ChaCha8 stream with labelled forks) and [`Ratio`]
//! (an exact integer probability).
//!
//! One `u64` seed drives a whole run. Components never share a stream: each takes its
//! own through [`SimRng::fork`], which derives the child from the parent's *seed* and a
//! label, never from its position. So a component that draws more numbers never changes
//! what another component sees.
//!
//! ```
//! use faultline_sim::rng::{Ratio, SimRng};
//!
//! let root = SimRng::new(42);
//! let mut clients = root.fork("clients");
//! let mut api = root.fork("api");
//! let first = api.next_u64();
//! for _ in 0..1000 { clients.next_u64(); }          // clients draw a lot more...
//! assert_eq!(SimRng::new(42).fork("api").next_u64(), first); // ...api is unaffected
//! let coin = Ratio::new(1, 2).unwrap();
//! let _heads = api.chance(coin);
//! ```

use rand::{SeedableRng, TryRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// A deterministic random stream: ChaCha8 seeded from a `u64`.
///
/// Its helpers ([`below`](SimRng::below), [`chance`](SimRng::chance), ...) are written
/// here rather than taken from `rand`'s distributions, so that what a seed means never
/// changes with a dependency upgrade. It also implements `rand`'s `Rng` for code that
/// wants `rand`'s distributions anyway.
#[derive(Clone, Debug)]
pub struct SimRng {
    seed: u64,
    inner: ChaCha8Rng,
}

/// SplitMix64's finaliser: a bijective 64-bit mixer.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the label's bytes: fixed forever, independent of platform.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
        i += 1;
    }
    h
}

impl SimRng {
    /// The root stream of a run.
    pub fn new(seed: u64) -> Self {
        SimRng {
            seed,
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The seed this stream was made from (for a fork, the derived seed).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent child stream named `label`. The child depends only on this
    /// stream's seed and the label, never on how many numbers were drawn here.
    /// Forks nest: `fork("a").fork("b")` differs from `fork("b").fork("a")`.
    pub fn fork(&self, label: &str) -> SimRng {
        SimRng::new(mix64(self.seed ^ fnv1a(label.as_bytes())))
    }

    /// [`fork`](SimRng::fork) with a numeric label, e.g. one stream per client.
    pub fn fork_indexed(&self, label: &str, index: u64) -> SimRng {
        SimRng::new(mix64(mix64(self.seed ^ fnv1a(label.as_bytes())) ^ index))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        rand::Rng::next_u64(&mut self.inner)
    }

    /// A uniform number in `0..n` (Lemire's unbiased multiply-and-reject).
    /// Returns 0 when `n` is 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform number in `lo..=hi` (the bounds are swapped if inverted).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }

    /// True with probability exactly `ratio`.
    #[inline]
    pub fn chance(&mut self, ratio: Ratio) -> bool {
        if ratio.num == 0 {
            return false;
        }
        if ratio.num >= ratio.den {
            return true;
        }
        self.below(ratio.den as u64) < ratio.num as u64
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }

    /// An index chosen with probability proportional to its weight; `None` when every
    /// weight is zero.
    pub fn weighted(&mut self, weights: &[u64]) -> Option<usize> {
        let total: u64 = weights.iter().fold(0u64, |a, w| a.saturating_add(*w));
        if total == 0 {
            return None;
        }
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return Some(i);
            }
            x -= w;
        }
        None
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

impl TryRng for SimRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(rand::Rng::next_u32(&mut self.inner))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(rand::Rng::next_u64(&mut self.inner))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::Rng::fill_bytes(&mut self.inner, dst);
        Ok(())
    }
}

/// An exact probability `num/den` with `0 <= num <= den` and `den > 0`.
///
/// Decisions that steer a run use ratios rather than floats, so a seed means the same
/// thing on every machine. In JSON a ratio is the string `"num/den"`, e.g. `"3/10"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ratio {
    num: u32,
    den: u32,
}

/// Why a ratio was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatioError {
    /// The denominator was zero.
    #[error("ratio `{num}/0` has a zero denominator")]
    ZeroDenominator {
        /// The numerator given.
        num: u32,
    },
    /// The ratio was greater than one.
    #[error("ratio `{num}/{den}` is above 1")]
    AboveOne {
        /// The numerator given.
        num: u32,
        /// The denominator given.
        den: u32,
    },
    /// The text was not of the form `num/den`.
    #[error("`{text}` is not a ratio; write it as \"num/den\" with whole numbers, e.g. \"1/10\"")]
    Malformed {
        /// The text given.
        text: String,
    },
}

impl Ratio {
    /// Never.
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };
    /// Always.
    pub const ONE: Ratio = Ratio { num: 1, den: 1 };

    /// `num/den`, rejected when `den == 0` or `num > den`.
    pub const fn new(num: u32, den: u32) -> Result<Ratio, RatioError> {
        if den == 0 {
            return Err(RatioError::ZeroDenominator { num });
        }
        if num > den {
            return Err(RatioError::AboveOne { num, den });
        }
        Ok(Ratio { num, den })
    }

    /// `percent/100`, clamped to 100.
    pub const fn percent(percent: u32) -> Ratio {
        let num = if percent > 100 { 100 } else { percent };
        Ratio { num, den: 100 }
    }

    /// The numerator.
    pub const fn num(self) -> u32 {
        self.num
    }
    /// The denominator.
    pub const fn den(self) -> u32 {
        self.den
    }
    /// True for a ratio equal to zero.
    pub const fn is_zero(self) -> bool {
        self.num == 0
    }
    /// `ceil(value * self)` in exact integer arithmetic.
    pub const fn of_ceil(self, value: u64) -> u64 {
        let n = value as u128 * self.num as u128;
        n.div_ceil(self.den as u128) as u64
    }
    /// Compares `a/b` with this ratio exactly: true when `a/b >= self`. `b == 0` is false.
    pub const fn is_met_by(self, a: u64, b: u64) -> bool {
        b != 0 && (a as u128) * (self.den as u128) >= (self.num as u128) * (b as u128)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl FromStr for Ratio {
    type Err = RatioError;
    fn from_str(text: &str) -> Result<Ratio, RatioError> {
        let malformed = || RatioError::Malformed {
            text: text.to_string(),
        };
        let (n, d) = text.split_once('/').ok_or_else(malformed)?;
        let num = n.trim().parse::<u32>().map_err(|_| malformed())?;
        let den = d.trim().parse::<u32>().map_err(|_| malformed())?;
        Ratio::new(num, den)
    }
}

impl TryFrom<String> for Ratio {
    type Error = RatioError;
    fn try_from(text: String) -> Result<Ratio, RatioError> {
        text.parse()
    }
}

impl From<Ratio> for String {
    fn from(r: Ratio) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_hits_every_value() {
        let mut rng = SimRng::new(7);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let x = rng.below(7);
            assert!(x < 7);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn ratio_parsing_names_the_problem() {
        assert_eq!("3/10".parse::<Ratio>(), Ratio::new(3, 10));
        assert_eq!(
            "11/10".parse::<Ratio>(),
            Err(RatioError::AboveOne { num: 11, den: 10 })
        );
        assert!(matches!(
            "0.5".parse::<Ratio>(),
            Err(RatioError::Malformed { .. })
        ));
        assert_eq!(
            "1/0".parse::<Ratio>(),
            Err(RatioError::ZeroDenominator { num: 1 })
        );
    }

    #[test]
    fn chance_is_exact_at_the_edges() {
        let mut rng = SimRng::new(1);
        assert!((0..100).all(|_| rng.chance(Ratio::ONE)));
        assert!((0..100).all(|_| !rng.chance(Ratio::ZERO)));
        let hits = (0..10_000)
            .filter(|_| rng.chance(Ratio::percent(30)))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }

    #[test]
    fn ratio_threshold_is_exact() {
        let half = Ratio::percent(50);
        assert!(half.is_met_by(5, 10));
        assert!(!half.is_met_by(4, 10));
        assert!(!half.is_met_by(0, 0));
        assert_eq!(Ratio::percent(50).of_ceil(3), 2);
    }
}
