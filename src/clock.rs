//! The patterns' notion of time: a plain monotonic [`Instant`] in nanoseconds since an
//! arbitrary origin, passed *into* every core (quinn-proto style). No core reads a
//! clock: the simulator converts its `SimTime` into an `Instant`, and the tokio adapters
//! convert `tokio::time::Instant` (so tokio's paused clock drives them in tests).

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// `d` in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn saturating_nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// A monotonic timestamp: nanoseconds since an arbitrary origin.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }
    /// An instant `millis` milliseconds after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }
    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
    /// `self + d`, saturating at the largest instant.
    #[inline]
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(saturating_nanos(d)))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    #[inline]
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// The simulator's virtual time, on the cores' clock: the simulation's start is the origin.
#[cfg(feature = "sim")]
impl From<faultline_sim::SimTime> for Instant {
    #[inline]
    fn from(t: faultline_sim::SimTime) -> Instant {
        Instant(t.as_nanos())
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = (self.0 / 1_000_000_000, self.0 % 1_000_000_000);
        write!(f, "{secs}.{:03}s", nanos / 1_000_000)
    }
}
