//! The patterns' notion of time: a plain monotonic [`Instant`] in nanoseconds since an
//! arbitrary origin, passed *into* every core (quinn-proto style). No core reads a
//! clock: the simulator converts its `SimTime` into an `Instant`, and the tokio adapters
//! convert `tokio::time::Instant` (so tokio's paused clock drives them in tests).
//!
//! An [`Instant`] means nothing outside the adapter (or simulation) that produced it. To
//! tell an operator *when* something happened, each tokio adapter exposes its [`Origin`]:
//! the wall-clock time read once, when the adapter was built, together with the
//! adapter's own instant at that moment. [`Origin::to_system_time`] turns any of the
//! adapter's instants (a dead letter's `at`, a lease's `deadline`, a breaker event's
//! `at`) into a [`SystemTime`]. The wall clock is read nowhere else: a core never reads
//! it, and later offsets come from the monotonic clock, so a wall-clock step (NTP, a
//! manual change) after the adapter started does not move its timestamps.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime};

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

/// Where an adapter's monotonic [`Instant`]s sit on the wall clock: the [`SystemTime`]
/// and the [`Instant`] read together (in the tokio adapters, once, when the adapter is
/// built; its instant there is [`Instant::ZERO`]).
///
/// An instant `at` maps to `system_time() + (at - instant())` (or before it, for an
/// earlier `at`). Building one reads no clock, so the simulator or a test may make its
/// own.
///
/// ```
/// use faultline::clock::{Instant, Origin};
/// use std::time::{Duration, SystemTime};
///
/// let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let origin = Origin::new(started, Instant::ZERO);
/// let died = Instant::from_millis(90_500);
/// assert_eq!(origin.to_system_time(died), started + Duration::from_millis(90_500));
/// assert_eq!(origin.to_instant(started + Duration::from_millis(90_500)), Some(died));
/// assert_eq!(origin.to_instant(started - Duration::from_secs(1)), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    system: SystemTime,
    instant: Instant,
}

impl Origin {
    /// The origin at which the wall clock read `system` while the monotonic clock read
    /// `instant`.
    pub const fn new(system: SystemTime, instant: Instant) -> Self {
        Origin { system, instant }
    }

    /// The wall-clock time read at the origin.
    pub const fn system_time(&self) -> SystemTime {
        self.system
    }

    /// The monotonic instant read at the origin.
    pub const fn instant(&self) -> Instant {
        self.instant
    }

    /// The wall-clock time of `at`: [`system_time`](Origin::system_time) plus (or minus)
    /// the time from [`instant`](Origin::instant) to `at`. Saturates at the earliest or
    /// latest time the platform's `SystemTime` holds (never reached on Linux, macOS or
    /// Windows from a present-day origin: an `Instant` spans at most 584 years).
    pub fn to_system_time(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            saturating_shift(self.system, at.saturating_since(self.instant), true)
        } else {
            saturating_shift(self.system, self.instant.saturating_since(at), false)
        }
    }

    /// The instant of the wall-clock time `t`, the inverse of
    /// [`to_system_time`](Origin::to_system_time); `None` if `t` lies before
    /// `Instant::ZERO` or after the largest `Instant` on this origin's scale.
    pub fn to_instant(&self, t: SystemTime) -> Option<Instant> {
        let base = self.instant.as_nanos();
        let nanos = match t.duration_since(self.system) {
            Ok(after) => base.checked_add(u64::try_from(after.as_nanos()).ok()?)?,
            Err(e) => base.checked_sub(u64::try_from(e.duration().as_nanos()).ok()?)?,
        };
        Some(Instant(nanos))
    }

    /// Like [`to_instant`](Origin::to_instant), clamped: a time before the scale's start
    /// is [`Instant::ZERO`] (e.g. a run-at time already past is due now), one after its
    /// end the largest instant.
    pub fn saturating_instant(&self, t: SystemTime) -> Instant {
        self.to_instant(t).unwrap_or(if t < self.system {
            Instant::ZERO
        } else {
            Instant(u64::MAX)
        })
    }
}

/// `t` moved by `d` (later if `later`), saturating at the platform's earliest or latest
/// `SystemTime` (a binary search over the shift: at most 64 checked steps).
fn saturating_shift(t: SystemTime, d: Duration, later: bool) -> SystemTime {
    let shift = |d: Duration| {
        if later {
            t.checked_add(d)
        } else {
            t.checked_sub(d)
        }
    };
    if let Some(r) = shift(d) {
        return r;
    }
    // The largest shift that fits, in whole nanoseconds: `lo` fits, `hi` does not.
    let (mut lo, mut hi) = (0u64, saturating_nanos(d));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shift(Duration::from_nanos(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    shift(Duration::from_nanos(lo)).unwrap_or(t)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn maps_both_ways_around_a_nonzero_instant() {
        let o = Origin::new(base(), Instant::from_millis(5_000));
        assert_eq!(o.to_system_time(Instant::from_millis(5_000)), base());
        assert_eq!(
            o.to_system_time(Instant::from_millis(7_250)),
            base() + Duration::from_millis(2_250)
        );
        assert_eq!(
            o.to_system_time(Instant::from_millis(1_000)),
            base() - Duration::from_secs(4)
        );
        for ms in [0, 1_000, 5_000, 7_250, 86_400_000] {
            let at = Instant::from_millis(ms);
            assert_eq!(o.to_instant(o.to_system_time(at)), Some(at));
        }
        assert_eq!(o.to_instant(base() - Duration::from_millis(5_001)), None);
        assert_eq!(
            o.saturating_instant(base() - Duration::from_secs(60)),
            Instant::ZERO
        );
        assert_eq!(
            o.saturating_instant(base() + Duration::from_secs(1)),
            Instant::from_millis(6_000)
        );
    }

    #[test]
    fn the_largest_instant_converts_and_saturates_back() {
        let o = Origin::new(base(), Instant::ZERO);
        let max = Instant::from_nanos(u64::MAX);
        let t = o.to_system_time(max);
        assert_eq!(
            t.duration_since(base()).ok(),
            Some(Duration::from_nanos(u64::MAX))
        );
        assert_eq!(o.to_instant(t), Some(max));
        assert_eq!(o.to_instant(t + Duration::from_nanos(1)), None);
        assert_eq!(o.saturating_instant(t + Duration::from_secs(1)), max);
    }

    #[test]
    fn shifts_saturate_instead_of_panicking() {
        // UNIX_EPOCH minus 584 years fits on Linux; the function must not panic whatever
        // the platform holds, and must land no later than the epoch.
        let o = Origin::new(SystemTime::UNIX_EPOCH, Instant::from_nanos(u64::MAX));
        assert!(o.to_system_time(Instant::ZERO) <= SystemTime::UNIX_EPOCH);
    }
}
