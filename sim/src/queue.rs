//! The event queue: a min-heap ordered by `(time, sequence number)`.
//!
//! Events at the same instant come out in the order they were scheduled (FIFO), because
//! every schedule takes the next sequence number. Timers can be cancelled. Popping moves
//! the clock straight to the next event's time: there are no fixed ticks.
//!
//! ```
//! use faultline_sim::queue::EventQueue;
//! use faultline_sim::time::{SimDuration, SimTime};
//!
//! let mut q = EventQueue::new();
//! let late = q.schedule_in(SimDuration::from_millis(5), "late");
//! q.schedule_in(SimDuration::from_millis(1), "first");
//! q.schedule_in(SimDuration::from_millis(1), "second");
//! assert!(q.cancel(late));
//! assert_eq!(q.pop(), Some((SimTime::from_millis(1), "first")));
//! assert_eq!(q.pop(), Some((SimTime::from_millis(1), "second")));
//! assert_eq!(q.pop(), None);
//! assert_eq!(q.now(), SimTime::from_millis(1));
//! ```

use crate::time::{SimDuration, SimTime};
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

/// A handle to a scheduled event, used to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    time: SimTime,
    seq: u64,
}

impl TimerId {
    /// When the event is (or was) due.
    pub fn time(self) -> SimTime {
        self.time
    }
}

struct Entry<E> {
    time: SimTime,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.time == other.time && self.seq == other.seq
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest `(time, seq)`.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .time
            .cmp(&self.time)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Timer/event queue with a virtual clock.
///
/// Invariant: entries pop in strictly increasing `(time, seq)` order, and no entry is
/// ever scheduled before `now`. So an id is still pending exactly when its key is greater
/// than the last delivered key and it has not been cancelled. Cancelled keys are kept
/// only until a later event is delivered, so [`cancel`] is exact and leaves no tombstone
/// behind for long.
///
/// [`cancel`]: EventQueue::cancel
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
    now: SimTime,
    last_delivered: Option<(SimTime, u64)>,
    /// Cancelled keys later than `last_delivered` (some still in the heap).
    cancelled: BTreeSet<(SimTime, u64)>,
    /// How many heap entries are cancelled and not yet discarded.
    cancelled_in_heap: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at [`SimTime::ZERO`].
    pub fn new() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            now: SimTime::ZERO,
            last_delivered: None,
            cancelled: BTreeSet::new(),
            cancelled_in_heap: 0,
        }
    }

    /// An empty queue with room for `capacity` pending events.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut q = Self::new();
        q.heap.reserve(capacity);
        q
    }

    /// The current virtual time: the time of the last popped event.
    #[inline]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Number of pending (not cancelled) events.
    pub fn len(&self) -> usize {
        self.heap.len() - self.cancelled_in_heap
    }

    /// True when no event is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of events ever scheduled.
    pub fn scheduled_total(&self) -> u64 {
        self.next_seq
    }

    /// Schedules `event` at `time`. A time in the past is moved to `now` (it runs after
    /// everything already due now), so the clock never goes backwards.
    #[inline]
    pub fn schedule_at(&mut self, time: SimTime, event: E) -> TimerId {
        let time = if time < self.now { self.now } else { time };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { time, seq, event });
        TimerId { time, seq }
    }

    /// Schedules `event` after `delay` from now.
    #[inline]
    pub fn schedule_in(&mut self, delay: SimDuration, event: E) -> TimerId {
        self.schedule_at(self.now + delay, event)
    }

    /// True when the event behind `id` has neither run nor been cancelled.
    pub fn is_pending(&self, id: TimerId) -> bool {
        let key = (id.time, id.seq);
        let after_last = self.last_delivered.is_none_or(|last| key > last);
        after_last && id.seq < self.next_seq && !self.cancelled.contains(&key)
    }

    /// Cancels a pending event. Returns false (and does nothing) when it already ran or
    /// was already cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        if !self.is_pending(id) {
            return false;
        }
        self.cancelled.insert((id.time, id.seq));
        self.cancelled_in_heap += 1;
        true
    }

    /// Removes and returns the earliest pending event, moving the clock to its time.
    #[inline]
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        loop {
            let entry = self.heap.pop()?;
            if !self.cancelled.is_empty() {
                let key = (entry.time, entry.seq);
                if self.cancelled.contains(&key) {
                    self.cancelled_in_heap -= 1;
                    continue;
                }
                // Every cancelled key before this one has left the heap: forget it.
                while self.cancelled.first().is_some_and(|first| *first < key) {
                    self.cancelled.pop_first();
                }
            }
            self.last_delivered = Some((entry.time, entry.seq));
            self.now = entry.time;
            return Some((entry.time, entry.event));
        }
    }

    /// Takes a sequence number without scheduling anything, for events kept outside
    /// the heap that must still order FIFO with the ones inside.
    pub(crate) fn reserve_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The `(time, seq)` key of the earliest pending event, without popping it.
    #[inline]
    pub(crate) fn peek_key(&mut self) -> Option<(SimTime, u64)> {
        loop {
            let top = self.heap.peek()?;
            if !self.cancelled.is_empty() && self.cancelled.contains(&(top.time, top.seq)) {
                self.heap.pop();
                self.cancelled_in_heap -= 1;
                continue;
            }
            return Some((top.time, top.seq));
        }
    }

    /// The time of the earliest pending event, without popping it.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        loop {
            let top = self.heap.peek()?;
            if !self.cancelled.is_empty() && self.cancelled.contains(&(top.time, top.seq)) {
                self.heap.pop();
                self.cancelled_in_heap -= 1;
                continue;
            }
            return Some(top.time);
        }
    }

    /// Moves the clock forward to `time` without running anything (no-op if `time` is
    /// not later than now). Used to jump to a phase boundary when the queue runs dry.
    pub fn advance_to(&mut self, time: SimTime) {
        if time > self.now {
            self.now = time;
        }
    }

    /// Drops every pending event.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.cancelled.clear();
        self.cancelled_in_heap = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_instant_is_fifo() {
        let mut q = EventQueue::new();
        for i in 0..100 {
            q.schedule_at(SimTime::from_millis(7), i);
        }
        let order: Vec<i32> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn cancel_is_exact() {
        let mut q = EventQueue::new();
        let a = q.schedule_in(SimDuration::from_millis(1), 'a');
        let b = q.schedule_in(SimDuration::from_millis(2), 'b');
        assert_eq!(q.pop(), Some((SimTime::from_millis(1), 'a')));
        assert!(!q.cancel(a), "a already ran");
        assert!(q.cancel(b));
        assert!(!q.cancel(b), "already cancelled");
        assert_eq!(q.len(), 0);
        assert_eq!(q.pop(), None);
        let c = q.schedule_in(SimDuration::from_millis(1), 'c');
        assert!(q.is_pending(c), "scheduled after a discarded cancellation");
        assert_eq!(q.pop(), Some((SimTime::from_millis(2), 'c')));
        assert!(q.cancelled.is_empty(), "no tombstone left behind");
    }

    #[test]
    fn past_is_clamped_to_now() {
        let mut q = EventQueue::new();
        q.schedule_at(SimTime::from_secs(2), 1);
        q.pop();
        let id = q.schedule_at(SimTime::from_secs(1), 2);
        assert_eq!(id.time(), SimTime::from_secs(2));
        assert_eq!(q.pop(), Some((SimTime::from_secs(2), 2)));
    }

    #[test]
    fn peek_skips_cancelled() {
        let mut q = EventQueue::new();
        let a = q.schedule_in(SimDuration::from_millis(1), 1);
        q.schedule_in(SimDuration::from_millis(3), 2);
        q.cancel(a);
        assert_eq!(q.peek_time(), Some(SimTime::from_millis(3)));
        assert_eq!(q.len(), 1);
    }
}
