//! Bulkhead: a limit on concurrent calls, so that a slow API cannot tie up every worker.
//!
//! A call past the limit is rejected at once; there is no waiting queue. Two flavours:
//!
//! - [`Bulkhead`], the sans-IO core: `&mut self`, for a single owner (the simulator, or
//!   a state machine behind a lock). A [`BulkheadSlot`] is a plain token handed back
//!   with [`Bulkhead::exit`].
//! - [`SharedBulkhead`], thread-safe with atomics only: its [`SharedBulkheadSlot`]
//!   releases itself on drop (RAII), which is what the tokio adapter wants since a
//!   cancelled future must still free its slot.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::ConfigError;

/// Resilience4j's default limit on concurrent calls.
const MAX_CONCURRENT_DEFAULT: u32 = 25;

/// The bulkhead is full: `max_concurrent` calls are already in flight.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[error("bulkhead full: {max_concurrent} calls already in flight")]
pub struct BulkheadFull {
    /// The bulkhead's limit.
    pub max_concurrent: u32,
}

fn validate(max_concurrent: u32) -> Result<(), ConfigError> {
    if max_concurrent == 0 {
        return Err(ConfigError::new(
            "max_concurrent",
            "must be at least 1, got 0",
        ));
    }
    Ok(())
}

/// Permission to make one call through a [`Bulkhead`]; give it back with
/// [`Bulkhead::exit`] when the call ends.
///
/// Neither `Clone` nor `Copy`, so each entry is exited at most once. Dropping it without
/// exiting leaks the slot for good (the core holds no reference to notice).
#[must_use = "a slot must be handed back with `Bulkhead::exit`, or it stays taken"]
#[derive(Debug, PartialEq, Eq)]
pub struct BulkheadSlot {
    _private: (),
}

/// At most `max_concurrent` calls in flight; more are rejected, not queued.
///
/// ```
/// use faultline::breaker::bulkhead::{Bulkhead, BulkheadFull};
///
/// let mut bulkhead = Bulkhead::new(2)?;
/// let a = bulkhead.try_enter()?;
/// let b = bulkhead.try_enter()?;
/// assert_eq!(bulkhead.try_enter(), Err(BulkheadFull { max_concurrent: 2 }));
/// bulkhead.exit(a);
/// assert_eq!(bulkhead.available(), 1);
/// bulkhead.exit(b);
/// assert_eq!(bulkhead.in_use(), 0);
/// assert_eq!((bulkhead.entered_total(), bulkhead.rejected_total()), (2, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulkhead {
    max_concurrent: u32,
    in_use: u32,
    entered_total: u64,
    rejected_total: u64,
}

impl Default for Bulkhead {
    /// 25 concurrent calls, Resilience4j's default.
    fn default() -> Self {
        Bulkhead {
            max_concurrent: MAX_CONCURRENT_DEFAULT,
            in_use: 0,
            entered_total: 0,
            rejected_total: 0,
        }
    }
}

impl Bulkhead {
    /// A bulkhead admitting `max_concurrent` calls at once.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `max_concurrent` if it is 0.
    pub fn new(max_concurrent: u32) -> Result<Self, ConfigError> {
        validate(max_concurrent)?;
        Ok(Bulkhead {
            max_concurrent,
            ..Bulkhead::default()
        })
    }

    // Getters.

    /// Calls in flight.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// The limit on calls in flight.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// Calls that may still enter: `max_concurrent - in_use`.
    pub fn available(&self) -> u32 {
        self.max_concurrent.saturating_sub(self.in_use)
    }

    /// Calls rejected since creation.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total
    }

    /// Calls admitted since creation.
    pub fn entered_total(&self) -> u64 {
        self.entered_total
    }

    // Commands.

    /// Takes a slot for one call, or rejects it if `max_concurrent` are in flight.
    ///
    /// # Errors
    ///
    /// [`BulkheadFull`] when no slot is free; the rejection is counted.
    pub fn try_enter(&mut self) -> Result<BulkheadSlot, BulkheadFull> {
        if self.in_use >= self.max_concurrent {
            self.rejected_total = self.rejected_total.saturating_add(1);
            return Err(BulkheadFull {
                max_concurrent: self.max_concurrent,
            });
        }
        self.in_use += 1;
        self.entered_total = self.entered_total.saturating_add(1);
        Ok(BulkheadSlot { _private: () })
    }

    /// Hands back the slot of a call that ended (however it ended).
    ///
    /// A slot from another bulkhead is accepted but can never push `in_use` below zero.
    pub fn exit(&mut self, slot: BulkheadSlot) {
        let BulkheadSlot { _private: () } = slot;
        self.in_use = self.in_use.saturating_sub(1);
    }
}

/// How many times [`SharedBulkhead::try_enter`] retries its compare-exchange when other
/// threads keep changing the count under it. Each failure means another thread entered
/// or exited, so reaching this takes extreme contention; the call is then rejected
/// (shedding load) rather than spinning without end.
const CAS_ATTEMPTS_MAX: u32 = 1024;

/// A thread-safe [`Bulkhead`], using atomics only (no lock, no `Arc`: share it by
/// reference or wrap it yourself).
///
/// Slots release themselves when dropped.
///
/// ```
/// use faultline::breaker::bulkhead::SharedBulkhead;
///
/// let bulkhead = SharedBulkhead::new(1)?;
/// {
///     let _slot = bulkhead.try_enter()?;
///     assert!(bulkhead.try_enter().is_err());
/// } // the slot is released here
/// assert_eq!(bulkhead.in_use(), 0);
/// assert!(bulkhead.try_enter().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SharedBulkhead {
    max_concurrent: u32,
    in_use: AtomicU32,
    entered_total: AtomicU64,
    rejected_total: AtomicU64,
}

impl Default for SharedBulkhead {
    /// 25 concurrent calls, Resilience4j's default.
    fn default() -> Self {
        SharedBulkhead {
            max_concurrent: MAX_CONCURRENT_DEFAULT,
            in_use: AtomicU32::new(0),
            entered_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
        }
    }
}

impl SharedBulkhead {
    /// A bulkhead admitting `max_concurrent` calls at once.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on field `max_concurrent` if it is 0.
    pub fn new(max_concurrent: u32) -> Result<Self, ConfigError> {
        validate(max_concurrent)?;
        Ok(SharedBulkhead {
            max_concurrent,
            ..SharedBulkhead::default()
        })
    }

    // Getters. Under concurrency these are snapshots that may be stale at once.

    /// Calls in flight.
    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Acquire)
    }

    /// The limit on calls in flight.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// Calls that may still enter: `max_concurrent - in_use`.
    pub fn available(&self) -> u32 {
        self.max_concurrent.saturating_sub(self.in_use())
    }

    /// Calls rejected since creation.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total.load(Ordering::Relaxed)
    }

    /// Calls admitted since creation.
    pub fn entered_total(&self) -> u64 {
        self.entered_total.load(Ordering::Relaxed)
    }

    // Commands.

    /// Takes a slot for one call, or rejects it if `max_concurrent` are in flight. The
    /// slot is released when dropped.
    ///
    /// # Errors
    ///
    /// [`BulkheadFull`] when no slot is free (or, in the pathological case, when the
    /// count kept changing under 1024 compare-exchange attempts); the rejection is
    /// counted.
    pub fn try_enter(&self) -> Result<SharedBulkheadSlot<'_>, BulkheadFull> {
        let mut current = self.in_use.load(Ordering::Acquire);
        for _ in 0..CAS_ATTEMPTS_MAX {
            if current >= self.max_concurrent {
                break;
            }
            match self.in_use.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.entered_total.fetch_add(1, Ordering::Relaxed);
                    return Ok(SharedBulkheadSlot { bulkhead: self });
                }
                Err(actual) => current = actual,
            }
        }
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        Err(BulkheadFull {
            max_concurrent: self.max_concurrent,
        })
    }
}

/// Permission to make one call through a [`SharedBulkhead`]; frees its slot on drop.
///
/// Neither `Clone` nor `Copy`. `std::mem::forget` on it leaks the slot for good.
#[must_use = "dropping the slot at once frees it: hold it for the whole call"]
#[derive(Debug)]
pub struct SharedBulkheadSlot<'a> {
    bulkhead: &'a SharedBulkhead,
}

impl SharedBulkheadSlot<'_> {
    /// The bulkhead this slot belongs to.
    pub fn bulkhead(&self) -> &SharedBulkhead {
        self.bulkhead
    }
}

impl Drop for SharedBulkheadSlot<'_> {
    fn drop(&mut self) {
        // Every live slot was counted by a successful compare-exchange, so `in_use` is
        // at least 1 here and this cannot wrap.
        self.bulkhead.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_rejected() {
        let err = Bulkhead::new(0).unwrap_err();
        assert_eq!(err.field, "max_concurrent");
        let err = SharedBulkhead::new(0).unwrap_err();
        assert_eq!(err.field, "max_concurrent");
    }

    #[test]
    fn defaults_are_resilience4j() {
        let bulkhead = Bulkhead::default();
        assert_eq!(bulkhead.max_concurrent(), 25);
        assert_eq!(bulkhead.available(), 25);
        assert_eq!(bulkhead, Bulkhead::new(25).unwrap());
        assert_eq!(SharedBulkhead::default().max_concurrent(), 25);
        assert_eq!(SharedBulkhead::default().available(), 25);
    }

    #[test]
    fn full_error_message() {
        let err = BulkheadFull { max_concurrent: 3 };
        assert_eq!(err.to_string(), "bulkhead full: 3 calls already in flight");
    }

    #[test]
    fn enters_up_to_the_limit_then_rejects() {
        let mut bulkhead = Bulkhead::new(3).unwrap();
        let slots: Vec<_> = (0..3).map(|_| bulkhead.try_enter().unwrap()).collect();
        assert_eq!(bulkhead.in_use(), 3);
        assert_eq!(bulkhead.available(), 0);
        for _ in 0..4 {
            assert_eq!(
                bulkhead.try_enter(),
                Err(BulkheadFull { max_concurrent: 3 })
            );
        }
        assert_eq!(bulkhead.rejected_total(), 4);
        assert_eq!(bulkhead.entered_total(), 3);
        assert_eq!(bulkhead.in_use(), 3);
        for slot in slots {
            bulkhead.exit(slot);
        }
        assert_eq!(bulkhead.in_use(), 0);
        assert_eq!(bulkhead.available(), 3);
    }

    #[test]
    fn exit_frees_exactly_one_slot() {
        let mut bulkhead = Bulkhead::new(1).unwrap();
        let slot = bulkhead.try_enter().unwrap();
        assert!(bulkhead.try_enter().is_err());
        bulkhead.exit(slot);
        let slot = bulkhead.try_enter().unwrap();
        assert_eq!(bulkhead.in_use(), 1);
        bulkhead.exit(slot);
        assert_eq!(bulkhead.entered_total(), 2);
        assert_eq!(bulkhead.rejected_total(), 1);
    }

    #[test]
    fn foreign_slot_cannot_underflow() {
        let mut a = Bulkhead::new(1).unwrap();
        let mut b = Bulkhead::new(1).unwrap();
        let slot = a.try_enter().unwrap();
        b.exit(slot);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.available(), 1);
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn largest_limit() {
        let mut bulkhead = Bulkhead::new(u32::MAX).unwrap();
        let slot = bulkhead.try_enter().unwrap();
        assert_eq!(bulkhead.available(), u32::MAX - 1);
        bulkhead.exit(slot);
    }

    #[test]
    fn shared_drop_frees_the_slot() {
        let bulkhead = SharedBulkhead::new(2).unwrap();
        let a = bulkhead.try_enter().unwrap();
        let b = bulkhead.try_enter().unwrap();
        assert_eq!(bulkhead.in_use(), 2);
        assert_eq!(
            bulkhead.try_enter().unwrap_err(),
            BulkheadFull { max_concurrent: 2 }
        );
        drop(a);
        assert_eq!(bulkhead.in_use(), 1);
        assert_eq!(bulkhead.available(), 1);
        let c = bulkhead.try_enter().unwrap();
        assert_eq!(bulkhead.in_use(), 2);
        drop(b);
        drop(c);
        assert_eq!(bulkhead.in_use(), 0);
        assert_eq!(bulkhead.entered_total(), 3);
        assert_eq!(bulkhead.rejected_total(), 1);
    }

    #[test]
    fn shared_slot_knows_its_bulkhead() {
        let bulkhead = SharedBulkhead::new(1).unwrap();
        let slot = bulkhead.try_enter().unwrap();
        assert!(std::ptr::eq(slot.bulkhead(), &bulkhead));
        assert_eq!(slot.bulkhead().in_use(), 1);
    }

    #[test]
    fn shared_slot_released_on_unwind() {
        let bulkhead = SharedBulkhead::new(1).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _slot = bulkhead.try_enter().unwrap();
            panic!("the call panicked");
        }));
        assert!(result.is_err());
        assert_eq!(bulkhead.in_use(), 0);
    }

    #[test]
    fn shared_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedBulkhead>();
        assert_send_sync::<SharedBulkheadSlot<'static>>();
    }

    #[test]
    fn shared_never_exceeds_the_limit_across_threads() {
        const THREADS: u64 = 8;
        const ROUNDS: u64 = 2_000;
        let bulkhead = SharedBulkhead::new(3).unwrap();
        let peak = AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..ROUNDS {
                        if let Ok(slot) = bulkhead.try_enter() {
                            let now = slot.bulkhead().in_use();
                            peak.fetch_max(now, Ordering::Relaxed);
                            assert!(now <= 3, "{now} in use");
                            std::hint::spin_loop();
                            drop(slot);
                        }
                    }
                });
            }
        });
        assert_eq!(bulkhead.in_use(), 0);
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(
            bulkhead.entered_total() + bulkhead.rejected_total(),
            THREADS * ROUNDS
        );
    }
}
