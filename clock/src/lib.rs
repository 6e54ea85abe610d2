//! A virtual `CLOCK_MONOTONIC` for one thread of a **test binary**, so crates that read
//! [`std::time::Instant::now`] (failsafe, recloser, a hand-written breaker) run in the
//! simulator's virtual time instead of the wall clock.
//!
//! # What it does
//!
//! Linking this crate into an executable defines the C symbol `clock_gettime` in the
//! executable itself. On Linux, `std::time::Instant::now()` is
//! `clock_gettime(CLOCK_MONOTONIC, ..)`; the static linker resolves std's call to the
//! executable's own definition before it ever looks at glibc, so every such call lands
//! here. The interposer answers:
//!
//! - on a thread that called [`Virtual::install`], for `CLOCK_MONOTONIC`,
//!   `CLOCK_MONOTONIC_RAW`, `CLOCK_MONOTONIC_COARSE` and `CLOCK_BOOTTIME`: the virtual
//!   reading, `origin + offset`, where the test moves `offset` with [`Virtual::set`];
//! - everywhere else (other threads, other clocks such as `CLOCK_REALTIME`, or after
//!   the guard is dropped): the kernel's answer, by the raw `clock_gettime` system call
//!   (never glibc's function, so it cannot call itself).
//!
//! A crate that keeps its own clock abstraction needs nothing from it; this is for the
//! ones that do not (recloser reads `Instant::now()` directly; failsafe reads it through
//! `failsafe::clock::now()`, whose mock is a scoped closure that cannot follow a
//! running simulation).
//!
//! # Test binaries only
//!
//! Never make this a dependency of a library or a service: linking it replaces
//! `clock_gettime` for the whole executable. Threads that did not opt in still get the
//! real time, but through a system call instead of the vDSO (122 ns a read instead of
//! 16 ns on the x86_64 machine this was measured on: the crate test
//! `the_c_symbol_is_ours_and_the_vdso_is_bypassed` prints both), and a process that loads its clock from anywhere else
//! is not covered. In faultline it is a dev-dependency, wired into the tokio harness
//! through `TokioHost::follow_time` from the test side.
//!
//! # Interplay with tokio
//!
//! Install the virtual clock *before* building the paused runtime on the same thread:
//! tokio's paused clock reads `Instant::now()` once, at build time, as its base, and
//! then only adds what it advances. Then `tokio::time::Instant::now().into_std()` and
//! `std::time::Instant::now()` agree on that thread whenever the harness has set the
//! offset to the runtime's elapsed time.
//!
//! Blocking waits with a timeout on an opted-in thread (`Condvar::wait_timeout`,
//! `park_timeout`, a tokio runtime that parks with a timeout because auto-advance is
//! inhibited) compute their absolute deadline from the virtual clock while the kernel
//! measures it on the real one: with the virtual reading behind the real one they
//! return early, ahead of it they wait too long. Keep `origin` small (the examples use
//! one hour, well under any host's uptime, and more than code that subtracts a minute
//! from `Instant::now()` needs) and do no blocking timed waits on that thread. A paused
//! current-thread runtime without `spawn_blocking` never waits with a timeout.
//!
//! # Platforms
//!
//! Supported on Linux with a 64-bit target (glibc and musl define `clock_gettime`; std
//! calls it directly). On 32-bit Linux std prefers `__clock_gettime64`, on macOS the
//! two-level namespace binds std to libSystem's symbol whatever the executable
//! defines, and on Windows `Instant` is `QueryPerformanceCounter`: there
//! [`Virtual::install`] returns [`InstallError::Unsupported`] and nothing is interposed.
//!
//! ```
//! use std::time::{Duration, Instant};
//! # fn main() -> Result<(), faultline_clock::InstallError> {
//! # if !faultline_clock::SUPPORTED { return Ok(()); }
//! let clock = faultline_clock::Virtual::install(Duration::from_secs(3600))?;
//! let before = Instant::now();
//! clock.set(Duration::from_secs(90));
//! assert_eq!(Instant::now() - before, Duration::from_secs(90));
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

/// Whether this platform supports the virtual clock (see the [platform
/// notes](crate#platforms)).
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_pointer_width = "64"));

/// [`Virtual::install`] on a platform where the interposer cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "faultline-clock: a virtual CLOCK_MONOTONIC needs Linux on a 64-bit target \
             (std::time::Instant is not read through an interposable clock_gettime here)",
        )
    }
}

impl std::error::Error for Unsupported {}

/// Why [`Virtual::install`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// The platform cannot interpose the clock.
    Unsupported(Unsupported),
    /// This thread already has a virtual clock (one at a time per thread).
    AlreadyInstalled,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::Unsupported(u) => u.fmt(f),
            InstallError::AlreadyInstalled => {
                f.write_str("faultline-clock: this thread already has a virtual clock")
            }
        }
    }
}

impl std::error::Error for InstallError {}

impl From<Unsupported> for InstallError {
    fn from(u: Unsupported) -> Self {
        InstallError::Unsupported(u)
    }
}

/// The current thread's virtual monotonic clock, installed until this guard drops.
/// Not `Send`: the override is per thread, and so is the guard.
#[derive(Debug)]
pub struct Virtual {
    origin: Duration,
    _not_send: PhantomData<*const ()>,
}

impl Virtual {
    /// Makes the monotonic clocks of the current thread read `origin` (as time since
    /// the clock's epoch) from now on, until [`set`](Virtual::set) moves it or the
    /// guard drops.
    ///
    /// # Errors
    ///
    /// [`InstallError::Unsupported`] off Linux/64-bit, [`InstallError::AlreadyInstalled`]
    /// when this thread already has one.
    pub fn install(origin: Duration) -> Result<Virtual, InstallError> {
        imp::install(origin)?;
        Ok(Virtual {
            origin,
            _not_send: PhantomData,
        })
    }

    /// Sets the virtual clock to `origin + since_origin`. Moving it backwards is
    /// allowed here (the caller owns the timeline) but breaks `Instant`'s promise to
    /// the code under test; the harness only moves it forwards.
    pub fn set(&self, since_origin: Duration) {
        imp::set(self.origin.saturating_add(since_origin));
    }

    /// The virtual time since `origin`.
    pub fn elapsed(&self) -> Duration {
        imp::get().map_or(Duration::ZERO, |r| r.saturating_sub(self.origin))
    }

    /// The reading at virtual time zero.
    pub fn origin(&self) -> Duration {
        self.origin
    }
}

impl Drop for Virtual {
    fn drop(&mut self) {
        imp::uninstall();
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod imp {
    use super::InstallError;
    use std::cell::Cell;
    use std::time::Duration;

    thread_local! {
        // `const`-initialised and without a destructor: a plain `#[thread_local]`
        // slot, read without allocation or lazy registration, so it is safe to touch
        // from inside `clock_gettime` (even during thread teardown). Nanoseconds.
        static READING: Cell<Option<u64>> = const { Cell::new(None) };
    }

    pub(super) fn install(origin: Duration) -> Result<(), InstallError> {
        // Reference the interposer so the linker keeps the object that defines it
        // whatever the codegen-unit split; the test `std_instant_reads_virtual`
        // fails if it is not linked.
        std::hint::black_box(clock_gettime as unsafe extern "C" fn(_, _) -> _);
        READING.with(|r| {
            if r.get().is_some() {
                return Err(InstallError::AlreadyInstalled);
            }
            r.set(Some(nanos(origin)));
            Ok(())
        })
    }

    pub(super) fn set(reading: Duration) {
        READING.with(|r| {
            if r.get().is_some() {
                r.set(Some(nanos(reading)));
            }
        });
    }

    pub(super) fn get() -> Option<Duration> {
        READING.with(|r| r.get().map(Duration::from_nanos))
    }

    pub(super) fn uninstall() {
        READING.with(|r| r.set(None));
    }

    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    fn virtual_reading(clock: libc::clockid_t) -> Option<u64> {
        match clock {
            libc::CLOCK_MONOTONIC
            | libc::CLOCK_MONOTONIC_RAW
            | libc::CLOCK_MONOTONIC_COARSE
            | libc::CLOCK_BOOTTIME => READING.try_with(Cell::get).ok().flatten(),
            _ => None,
        }
    }

    /// The interposer: the executable's own `clock_gettime`, which std's
    /// `Instant::now()` (and anything else in the executable calling the C symbol)
    /// resolves to instead of glibc's.
    ///
    /// # Safety
    ///
    /// The C contract of `clock_gettime`: `tp` is null or valid for writing one
    /// `timespec`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn clock_gettime(
        clock: libc::clockid_t,
        tp: *mut libc::timespec,
    ) -> libc::c_int {
        match virtual_reading(clock) {
            Some(n) if !tp.is_null() => {
                let ts = libc::timespec {
                    tv_sec: (n / 1_000_000_000) as libc::time_t,
                    tv_nsec: (n % 1_000_000_000) as libc::c_long,
                };
                // SAFETY: `tp` is non-null and, by the caller's contract, valid for
                // writing one `timespec`.
                unsafe { tp.write(ts) };
                0
            }
            _ => {
                // SAFETY: the raw system call takes the same arguments as the libc
                // function and validates `tp` itself (EFAULT); it is not the
                // `clock_gettime` symbol, so this does not recurse.
                let r = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, tp) };
                r as libc::c_int
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod imp {
    use super::{InstallError, Unsupported};
    use std::time::Duration;

    pub(super) fn install(_origin: Duration) -> Result<(), InstallError> {
        Err(InstallError::Unsupported(Unsupported))
    }

    pub(super) fn set(_reading: Duration) {}

    pub(super) fn get() -> Option<Duration> {
        None
    }

    pub(super) fn uninstall() {}
}

#[cfg(all(test, target_os = "linux", target_pointer_width = "64"))]
mod tests;

#[cfg(all(test, not(all(target_os = "linux", target_pointer_width = "64"))))]
mod unsupported {
    #[test]
    fn install_says_unsupported() {
        let err = super::Virtual::install(std::time::Duration::ZERO).unwrap_err();
        assert_eq!(err, super::InstallError::Unsupported(super::Unsupported));
        assert!(err.to_string().contains("needs Linux"), "{err}");
    }
}
