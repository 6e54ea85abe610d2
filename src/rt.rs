//! What every tokio adapter needs from the runtime, written once: a lock that survives a
//! panicking holder, and the conversion between tokio's clock and the cores' [`Instant`].

use crate::clock::Instant;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `mutex`, recovering the data if another thread panicked while holding it.
///
/// Every adapter's critical section only calls a core (which never panics on its inputs)
/// and updates plain bookkeeping, leaving its data consistent at each step that can
/// panic, so the data behind a poisoned lock is still good to use.
#[inline]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The cores' time now: the time elapsed since `origin` on tokio's clock (so a paused
/// tokio clock drives the cores in tests), saturating.
#[inline]
pub(crate) fn now_since(origin: ::tokio::time::Instant) -> Instant {
    Instant::ZERO.saturating_add(::tokio::time::Instant::now().saturating_duration_since(origin))
}

/// The tokio instant of the cores' `at`, counted from `origin`; `None` if it does not fit.
#[inline]
pub(crate) fn tokio_instant(
    origin: ::tokio::time::Instant,
    at: Instant,
) -> Option<::tokio::time::Instant> {
    origin.checked_add(Duration::from_nanos(at.as_nanos()))
}

/// The origin of a new adapter: tokio's clock, and the wall clock read with it (the only
/// place the crate reads the wall clock; see [`Origin`](crate::clock::Origin)). The
/// adapter's instant there is [`Instant::ZERO`].
pub(crate) fn start() -> (::tokio::time::Instant, crate::clock::Origin) {
    let tokio = ::tokio::time::Instant::now();
    let origin = crate::clock::Origin::new(std::time::SystemTime::now(), Instant::ZERO);
    (tokio, origin)
}
