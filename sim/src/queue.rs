//! The event queue: a radix heap ordered by `(time, sequence number)`.
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
//!
//! # Why a radix heap
//!
//! A simulation's clock never goes backwards: nothing is scheduled before the last
//! event popped. A radix heap (Ahuja, Mehlhorn, Orlin and Tarjan, 1990) is built on that
//! promise. It keeps a pivot, `last`, no later than any event in its buckets, and files
//! every later event by the highest bit in which its time differs from the pivot: the
//! bits are grouped in levels of six (a digit), and an event goes to the bucket of its
//! own digit at the level of that bit. So a lower level, or a lower digit on the same
//! level, always means an earlier time, and the earliest bucket is found with two
//! trailing-zeros counts. Scheduling is an `xor`, a leading-zeros count and a `Vec` push.
//!
//! When the events due run out, the earliest bucket is emptied: a short one (at most
//! 32 events) is sorted into `due` and the pivot moves to the last time it
//! covers; a long one moves its events to lower levels around its earliest time, the
//! new pivot. An event moves down at most eleven levels over its life, and in practice
//! once or twice. A lone event (sequential work: one timer, one message in flight) never
//! touches the buckets. Measured with `cargo bench --bench engine`: about twice the
//! bare binary heap's speed on ping-pong, and about 1.6 times on the many-actors
//! workload (a thousand timers pending).
//!
//! The `(time, seq)` order: events of equal time always sit in the same bucket (the
//! bucket depends on the time alone), a bucket is only appended to or moved whole in
//! order, a sorted bucket is sorted by `(time, seq)`, and sequence numbers are taken in
//! scheduling order. The property test `matches_a_sorted_map` in this module checks the
//! order, cancellation and every query against a `BTreeMap` keyed by `(time, seq)`.
//!
//! Events may be scheduled between `now` and the pivot (after a
//! [`peek_time`](EventQueue::peek_time), or after a sorted bucket moved the pivot ahead):
//! they are inserted into `due` in order, or, when `due` is long, kept in a small binary
//! heap, `early`, merged with `due` as they come out.

use crate::time::{SimDuration, SimTime};
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

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

impl<E> Entry<E> {
    #[inline]
    fn key(&self) -> (SimTime, u64) {
        (self.time, self.seq)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
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
        other.key().cmp(&self.key())
    }
}

/// Bits of time per level of buckets: a level has `2^DIGIT` buckets.
const DIGIT: u32 = 6;
/// Buckets per level.
const FAN: usize = 1 << DIGIT;
/// Levels of buckets, enough for every bit of a `u64` time.
const LEVELS: usize = 64usize.div_ceil(DIGIT as usize);
/// The longest bucket sorted into `due` rather than spread over lower buckets, and the
/// longest `due` an entry is inserted into in order (beyond it, `early` takes it).
const RUN_MAX: usize = 32;

/// Timer/event queue with a virtual clock.
///
/// Invariant: entries pop in strictly increasing `(time, seq)` order, and no entry is
/// ever scheduled before `now`. So an id is still pending exactly when its key is greater
/// than the last delivered key and it has not been cancelled. Cancelled keys are kept
/// only until a later event is delivered, so [`cancel`] is exact and leaves no tombstone
/// behind for long.
///
/// [`cancel`]: EventQueue::cancel
///
/// `repr(C)` keeps the fields in the order written: `alone_time` and `alone_seq` are
/// apart, so the compiler does not read them back as one 16-byte value just after
/// writing them as two 8-byte ones (which defeats the CPU's store forwarding and cost
/// ping-pong a third of its time).
#[repr(C)]
pub struct EventQueue<E> {
    /// The only entry held, when there is just one (sequential work: one timer, one
    /// message in flight): it never touches the buckets. Kept field by field.
    alone: Option<E>,
    /// The time of `alone`.
    alone_time: SimTime,
    /// The radix heap's pivot: every entry in `due` and `buckets` is at `last` or later,
    /// and `last` is never later than the earliest of them.
    last: SimTime,
    /// Entries at or before `last`, in `(time, seq)` order: the next to come out.
    due: VecDeque<Entry<E>>,
    /// Entries after `last`, `buckets[level * FAN + digit]`: see [`slot`].
    buckets: Vec<Vec<Entry<E>>>,
    /// Per level, bit `digit` set when that bucket is not empty.
    occupied: [u64; LEVELS],
    /// Bit `level` set when `occupied[level]` is not zero.
    levels: u32,
    /// Entries at or before `last` that did not fit in order into a long `due` (rare:
    /// scheduled between `now` and the pivot after a peek or a sorted bucket).
    early: BinaryHeap<Entry<E>>,
    /// Entries held, cancelled ones included.
    held: usize,
    next_seq: u64,
    now: SimTime,
    last_delivered: Option<(SimTime, u64)>,
    /// Cancelled keys later than `last_delivered` (some still held).
    cancelled: BTreeSet<(SimTime, u64)>,
    /// How many held entries are cancelled and not yet discarded.
    cancelled_in_heap: usize,
    /// The sequence number of `alone`.
    alone_seq: u64,
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
            alone: None,
            alone_time: SimTime::ZERO,
            alone_seq: 0,
            last: SimTime::ZERO,
            due: VecDeque::new(),
            buckets: (0..LEVELS * FAN).map(|_| Vec::new()).collect(),
            occupied: [0; LEVELS],
            levels: 0,
            early: BinaryHeap::new(),
            held: 0,
            next_seq: 0,
            now: SimTime::ZERO,
            last_delivered: None,
            cancelled: BTreeSet::new(),
            cancelled_in_heap: 0,
        }
    }

    /// An empty queue with room for `capacity` events due at once (the buckets grow
    /// as they are used, and keep their room).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut q = Self::new();
        q.due.reserve(capacity);
        q
    }

    /// The current virtual time: the time of the last popped event.
    #[inline]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Number of pending (not cancelled) events.
    pub fn len(&self) -> usize {
        self.held - self.cancelled_in_heap
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
        if self.held == 0 {
            self.alone = Some(event);
            self.alone_time = time;
            self.alone_seq = seq;
        } else {
            if let Some(alone) = self.alone.take() {
                self.file(Entry {
                    time: self.alone_time,
                    seq: self.alone_seq,
                    event: alone,
                });
            }
            self.file(Entry { time, seq, event });
        }
        self.held += 1;
        TimerId { time, seq }
    }

    /// Schedules `event` after `delay` from now.
    #[inline]
    pub fn schedule_in(&mut self, delay: SimDuration, event: E) -> TimerId {
        self.schedule_at(self.now + delay, event)
    }

    /// Puts an entry where it belongs relative to the pivot.
    #[inline(always)]
    fn file(&mut self, entry: Entry<E>) {
        let (t, pivot) = (entry.time.as_nanos(), self.last.as_nanos());
        if t > pivot {
            self.push_above(t, pivot, entry);
        } else {
            self.push_due(entry);
        }
    }

    /// Files an entry at or before the pivot: into the sorted `due` run, or into
    /// `early` when that would mean shifting a long run.
    #[inline]
    fn push_due(&mut self, entry: Entry<E>) {
        // A later sequence number: after every entry of the same time (FIFO).
        if self.due.back().is_none_or(|last| last.time <= entry.time) {
            self.due.push_back(entry);
        } else if self.due.len() < RUN_MAX {
            let at = self.due.partition_point(|e| e.time <= entry.time);
            self.due.insert(at, entry);
        } else {
            self.early.push(entry);
        }
    }

    /// Files an entry whose time `t` is after the pivot `p`.
    #[inline(always)]
    fn push_above(&mut self, t: u64, p: u64, entry: Entry<E>) {
        let (level, digit) = slot(t, p);
        self.buckets[level * FAN + digit].push(entry);
        self.occupied[level] |= 1 << digit;
        self.levels |= 1 << level;
    }

    /// Marks bucket `(level, digit)` empty.
    #[inline(always)]
    fn vacate(&mut self, level: usize, digit: usize) {
        self.occupied[level] &= !(1 << digit);
        if self.occupied[level] == 0 {
            self.levels &= !(1 << level);
        }
    }

    /// With nothing due at the pivot, moves the pivot to the earliest time held in the
    /// buckets, re-files the lowest bucket below it and takes the first entry due.
    /// `None` when the buckets are empty.
    #[inline(always)]
    fn refill(&mut self) -> Option<Entry<E>> {
        debug_assert!(self.due.is_empty());
        if self.levels == 0 {
            return None;
        }
        // The lowest level holds the times closest to the pivot, and within a level the
        // lowest digit the earliest: that bucket holds the earliest time.
        let level = self.levels.trailing_zeros() as usize;
        let digit = self.occupied[level].trailing_zeros() as usize;
        let lowest = &mut self.buckets[level * FAN + digit];
        if lowest.len() == 1 {
            // One event alone in it: it is the earliest.
            let entry = lowest.pop()?;
            self.vacate(level, digit);
            self.last = entry.time;
            return Some(entry);
        }
        if lowest.len() <= RUN_MAX {
            self.sort_out(level, digit);
        } else {
            self.spread(level, digit);
        }
        self.due.pop_front()
    }

    /// Empties bucket `(level, digit)` (the earliest, with nothing due, and short) into
    /// `due`, sorted by `(time, seq)` (keys are unique, so an unstable sort is exact), and moves
    /// the pivot to the last time the bucket covers. Every time in a higher bucket is
    /// later than that, and agrees with it wherever it agreed with the old pivot, so
    /// they all stay where they are.
    #[inline]
    fn sort_out(&mut self, level: usize, digit: usize) {
        self.vacate(level, digit);
        let bucket = &mut self.buckets[level * FAN + digit];
        bucket.sort_unstable_by_key(Entry::key);
        let width_bits = level as u32 * DIGIT;
        let any = bucket.first().map_or(self.last, |e| e.time).as_nanos();
        // The bucket covers the times that agree with `any` above `width_bits`.
        let covers_to = any | ((1u64 << width_bits) - 1);
        self.last = SimTime::from_nanos(covers_to);
        self.due.extend(bucket.drain(..));
    }

    /// Empties bucket `(level, digit)` (the earliest, with nothing due): its earliest
    /// time becomes the pivot, and its entries move to `due` or to lower levels, in
    /// order.
    #[cold]
    #[inline(never)]
    fn spread(&mut self, level: usize, digit: usize) {
        self.vacate(level, digit);
        let mut moving = std::mem::take(&mut self.buckets[level * FAN + digit]);
        let pivot = moving.iter().map(|e| e.time).min().unwrap_or(self.last);
        self.last = pivot;
        let p = pivot.as_nanos();
        for entry in moving.drain(..) {
            let t = entry.time.as_nanos();
            if t == p {
                self.due.push_back(entry);
            } else {
                // To a lower level: `entry` and the new pivot agree on this level's
                // digit and above.
                self.push_above(t, p, entry);
            }
        }
        // Give the bucket its room back.
        self.buckets[level * FAN + digit] = moving;
    }

    /// The earliest held entry's key (cancelled or not), putting it at the front of
    /// `early` or `due`.
    #[inline]
    fn front_key(&mut self) -> Option<(SimTime, u64)> {
        if self.alone.is_some() {
            return Some((self.alone_time, self.alone_seq));
        }
        if let Some(top) = self.early.peek() {
            // Both are at or before the pivot: the earlier of the two fronts.
            let top = top.key();
            return Some(self.due.front().map_or(top, |due| due.key().min(top)));
        }
        if self.due.is_empty() {
            let entry = self.refill()?;
            self.due.push_front(entry);
        }
        self.due.front().map(Entry::key)
    }

    /// Removes the earliest held entry (cancelled or not).
    #[inline(always)]
    fn take_front(&mut self) -> Option<Entry<E>> {
        let entry = if let Some(event) = self.alone.take() {
            // Nothing else is held: any pivot up to the next schedule will do.
            self.last = self.alone_time;
            Entry {
                time: self.alone_time,
                seq: self.alone_seq,
                event,
            }
        } else if let Some(top) = self.early.peek() {
            // Both are at or before the pivot: the earlier of the two fronts.
            if self.due.front().is_some_and(|due| due.key() < top.key()) {
                self.due.pop_front()?
            } else {
                self.early.pop()?
            }
        } else if let Some(entry) = self.due.pop_front() {
            entry
        } else {
            self.refill()?
        };
        self.held -= 1;
        Some(entry)
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
            let entry = self.take_front()?;
            if !self.cancelled.is_empty() {
                let key = entry.key();
                if self.cancelled.contains(&key) {
                    self.cancelled_in_heap -= 1;
                    continue;
                }
                // Every cancelled key before this one has left the queue: forget it.
                while self.cancelled.first().is_some_and(|first| *first < key) {
                    self.cancelled.pop_first();
                }
            }
            self.last_delivered = Some(entry.key());
            self.now = entry.time;
            return Some((entry.time, entry.event));
        }
    }

    /// Takes a sequence number without scheduling anything, for events kept outside
    /// the queue that must still order FIFO with the ones inside.
    pub(crate) fn reserve_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The `(time, seq)` key of the earliest pending event, without popping it.
    #[inline]
    pub(crate) fn peek_key(&mut self) -> Option<(SimTime, u64)> {
        loop {
            let key = self.front_key()?;
            if !self.cancelled.is_empty() && self.cancelled.contains(&key) {
                self.take_front();
                self.cancelled_in_heap -= 1;
                continue;
            }
            return Some(key);
        }
    }

    /// The time of the earliest pending event, without popping it.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        self.peek_key().map(|(time, _)| time)
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
        self.alone = None;
        self.due.clear();
        for b in &mut self.buckets {
            b.clear();
        }
        self.occupied = [0; LEVELS];
        self.levels = 0;
        self.early.clear();
        self.held = 0;
        self.last = self.now;
        self.cancelled.clear();
        self.cancelled_in_heap = 0;
    }
}

/// The bucket of time `t`, after the pivot `p`: the level of the highest bit in which
/// they differ (`DIGIT` bits per level), and `t`'s digit at that level. Within a level,
/// `t` agrees with the pivot above the digit and its digit is larger than the pivot's,
/// so a lower level or a lower digit means an earlier time.
#[inline(always)]
fn slot(t: u64, p: u64) -> (usize, usize) {
    debug_assert!(t > p);
    let highest = 63 - (t ^ p).leading_zeros();
    let level = highest / DIGIT;
    let digit = (t >> (level * DIGIT)) as usize & (FAN - 1);
    (level as usize, digit)
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

    #[test]
    fn peek_then_earlier_schedule_pops_first() {
        // The peek moves the pivot to 10 ms; an event scheduled at 5 ms (after `now`,
        // before the pivot) must still come out first.
        let mut q = EventQueue::new();
        q.schedule_at(SimTime::from_millis(10), "late");
        assert_eq!(q.peek_time(), Some(SimTime::from_millis(10)));
        q.schedule_at(SimTime::from_millis(5), "early");
        q.schedule_at(SimTime::from_millis(5), "early too");
        assert_eq!(q.pop(), Some((SimTime::from_millis(5), "early")));
        assert_eq!(q.pop(), Some((SimTime::from_millis(5), "early too")));
        assert_eq!(q.pop(), Some((SimTime::from_millis(10), "late")));
    }

    mod model {
        //! The queue against a `BTreeMap` keyed by `(time, seq)`: the order the engine
        //! promises, stated as plainly as it can be.
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Clone, Debug)]
        enum Op {
            /// Schedule at `now + offset` (negative: in the past, clamped to now).
            At(i64),
            /// Cancel the `n`-th id issued (modulo how many there are).
            Cancel(usize),
            Pop,
            Peek,
            /// Move the clock forward by this many nanoseconds.
            Advance(u64),
            Reserve,
        }

        /// Offsets that collide (equal times), differ in low bits, in high bits, and
        /// lie in the past.
        fn offset() -> impl Strategy<Value = i64> {
            prop_oneof![
                Just(0i64),
                0i64..4,
                -3i64..0,
                (0u32..40).prop_map(|b| 1i64 << b),
                (0u32..40, 0i64..1000).prop_map(|(b, x)| (1i64 << b) + x),
                0i64..(1 << 42),
            ]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => offset().prop_map(Op::At),
                2 => any::<usize>().prop_map(Op::Cancel),
                5 => Just(Op::Pop),
                2 => Just(Op::Peek),
                1 => prop_oneof![0u64..4, 0u64..(1 << 30)].prop_map(Op::Advance),
                1 => Just(Op::Reserve),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn matches_a_sorted_map(ops in proptest::collection::vec(op(), 1..300)) {
                let mut q = EventQueue::new();
                let mut model: BTreeMap<(SimTime, u64), usize> = BTreeMap::new();
                let (mut now, mut next_seq) = (SimTime::ZERO, 0u64);
                let mut ids = Vec::new();
                for (n, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::At(offset) => {
                            let at = SimTime::from_nanos(now.as_nanos().saturating_add_signed(offset));
                            let id = q.schedule_at(at, n);
                            let time = at.max(now);
                            prop_assert_eq!((id.time, id.seq), (time, next_seq));
                            model.insert((time, next_seq), n);
                            next_seq += 1;
                            ids.push(id);
                        }
                        Op::Cancel(i) if !ids.is_empty() => {
                            let id = ids[i % ids.len()];
                            let was = model.remove(&(id.time, id.seq)).is_some();
                            prop_assert_eq!(q.cancel(id), was);
                        }
                        Op::Cancel(_) => {}
                        Op::Pop => {
                            let expected = model.pop_first().map(|((t, _), e)| (t, e));
                            if let Some((t, _)) = expected {
                                now = t;
                            }
                            prop_assert_eq!(q.pop(), expected);
                        }
                        Op::Peek => {
                            let expected = model.first_key_value().map(|(k, _)| *k);
                            prop_assert_eq!(q.peek_key(), expected);
                        }
                        Op::Advance(by) => {
                            now = SimTime::from_nanos(now.as_nanos() + by);
                            q.advance_to(now);
                        }
                        Op::Reserve => {
                            prop_assert_eq!(q.reserve_seq(), next_seq);
                            next_seq += 1;
                        }
                    }
                    prop_assert_eq!(q.now(), now);
                    prop_assert_eq!(q.len(), model.len());
                    for id in &ids {
                        prop_assert_eq!(q.is_pending(*id), model.contains_key(&(id.time, id.seq)));
                    }
                }
                // Drained, everything left comes out in the model's order.
                let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
                let expected: Vec<_> = model.into_iter().map(|((t, _), e)| (t, e)).collect();
                prop_assert_eq!(rest, expected);
            }
        }
    }
}
