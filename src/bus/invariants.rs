//! The bus's promises, checked by the world against its own records:
//!
//! 1. `bus.exactly_once`: each subscriber gets each event it is owed handled exactly
//!    once or dead-lettered: at rest, handled + dead-lettered = events published on its
//!    topics while it was subscribed, with no duplicates; a failed event is retried or
//!    dead-lettered, never skipped, and dead-lettered at its declared `attempts_max`-th
//!    failure, not before (counting every failure) and not after (counting the failures
//!    since the subscriber last crashed: a crash may restart the count).
//! 2. `bus.fifo`: per (topic, subscriber), events come in publish order with no gaps
//!    (a gap is a lost event), and each carries the payload that was published.
//! 3. `bus.nothing_after_unsubscribe`: once unsubscribed, a subscriber gets nothing.
//! 4. `bus.bounded_retention`: no topic ever retains more than the declared capacity, and none
//!    retains anything it was published to while nobody subscribed.
//! 5. `bus.isolation`: a subscriber that is up, idle and owed an available event is
//!    never refused it (a slow or failing subscriber delays no other beyond the
//!    capacity bound, which shows up as `BusFull` to publishers, not as a stall).
//! 6. `bus.dead_events_counted`: events published to a topic nobody subscribes to are
//!    counted, not vanished.
//! 7. `bus.drained`: after the faults heal, every owed event is delivered or
//!    dead-lettered.
//! 8. `bus.reports`: what the bus reports of itself agrees with the world's ledger
//!    after every step: the count `redrive` returns, and, where the bus reports them,
//!    each topic's next seq, each subscriber's lag and its totals (published, refused,
//!    handed out, acknowledged, retried, dead-lettered, redriven). A metric a service
//!    alerts on that under-counts is a bug the other promises would not see.
//! 9. `bus.conformance` (optional; on for the reference and its mutants): the declared
//!    [`BusPolicy`] is the reference's exact settings for the seed's knobs. A plug-in
//!    with settings of its own leaves it off and is judged by 1 to 8 alone.
//!
//! The capacity (4) and the attempts before a dead letter (1) are the bus's declared
//! [`BusPolicy`], not the knobs': a bus is judged by what it says it does.
//!
//! The checker keeps the world's own ledger and derives every fact from it: the
//! subscriptions the world made and ended, which topics had a subscriber when each
//! event was published (so which events must be dead events), and per (subscriber,
//! topic) which events the handler received, handled and failed. From that it derives
//! what each topic must retain ([`BusChecker::must_retain`]) and how many dead events
//! there were. The bus's self-reports (`retained_max`, `dead_events`, `dead_letters`,
//! the seq or dead event a publish returns) are only compared with those facts: a
//! mismatch is a violation of its own, naming the topic, the subscriber and the seqs.

use crate::bus::BusTotals;
use crate::bus::contract::BusPolicy;
use faultline_sim::{SimTime, Violation};
use std::collections::{BTreeMap, BTreeSet};

/// Names of the invariants, in order.
pub const INVARIANTS: [&str; 9] = [
    EXACTLY_ONCE,
    FIFO,
    NOTHING_AFTER_UNSUBSCRIBE,
    BOUNDED_RETENTION,
    ISOLATION,
    DEAD_EVENTS_COUNTED,
    DRAINED,
    REPORTS,
    CONFORMANCE,
];

/// What each invariant promises, in words (the list above), in the order of
/// [`INVARIANTS`]: what `faultline list` prints beside each name.
pub const PROMISES: [(&str, &str); 9] = [
    (
        EXACTLY_ONCE,
        "Each subscriber gets each event it is owed handled exactly once or dead-lettered: at rest, handled + dead-lettered = events published on its topics while it was subscribed, with no duplicates; a failed event is retried or dead-lettered, never skipped, and dead-lettered at its declared attempts_max-th failure, not before (counting every failure) and not after (counting the failures since the subscriber last crashed: a crash may restart the count).",
    ),
    (
        FIFO,
        "Per (topic, subscriber), events come in publish order with no gaps (a gap is a lost event), and each carries the payload that was published.",
    ),
    (
        NOTHING_AFTER_UNSUBSCRIBE,
        "Once unsubscribed, a subscriber gets nothing.",
    ),
    (
        BOUNDED_RETENTION,
        "No topic ever retains more than the declared capacity, and none retains anything it was published to while nobody subscribed.",
    ),
    (
        ISOLATION,
        "A subscriber that is up, idle and owed an available event is never refused it (a slow or failing subscriber delays no other beyond the capacity bound, which shows up as BusFull to publishers, not as a stall).",
    ),
    (
        DEAD_EVENTS_COUNTED,
        "Events published to a topic nobody subscribes to are counted, not vanished.",
    ),
    (
        DRAINED,
        "After the faults heal, every owed event is delivered or dead-lettered.",
    ),
    (
        REPORTS,
        "What the bus reports of itself agrees with the world's ledger after every step: the count redrive returns, and, where the bus reports them, each topic's next seq, each subscriber's lag and its totals (published, refused, handed out, acknowledged, retried, dead-lettered, redriven).",
    ),
    (
        CONFORMANCE,
        "Optional, on for the reference and its mutants: the declared BusPolicy is the reference's exact settings for the seed's knobs. A plug-in with settings of its own leaves it off and is judged by the other invariants alone.",
    ),
];

/// The invariant `bus.exactly_once` (see the list above).
pub const EXACTLY_ONCE: &str = "bus.exactly_once";
/// The invariant `bus.fifo` (see the list above).
pub const FIFO: &str = "bus.fifo";
/// The invariant `bus.nothing_after_unsubscribe` (see the list above).
pub const NOTHING_AFTER_UNSUBSCRIBE: &str = "bus.nothing_after_unsubscribe";
/// The invariant `bus.bounded_retention` (see the list above).
pub const BOUNDED_RETENTION: &str = "bus.bounded_retention";
/// The invariant `bus.isolation` (see the list above).
pub const ISOLATION: &str = "bus.isolation";
/// The invariant `bus.dead_events_counted` (see the list above).
pub const DEAD_EVENTS_COUNTED: &str = "bus.dead_events_counted";
/// The invariant `bus.drained` (see the list above).
pub const DRAINED: &str = "bus.drained";
/// The invariant `bus.reports` (see the list above).
pub const REPORTS: &str = "bus.reports";
/// The optional check `bus.conformance` (see the list above).
pub const CONFORMANCE: &str = "bus.conformance";

/// What the world knows of one (subscriber, topic).
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// First seq owed (the topic's next seq when the subscriber joined).
    pub from: u64,
    /// Owed up to (exclusive) this seq: the topic's next seq when it left, or open.
    pub until: Option<u64>,
    /// Next seq not yet settled (handled or dead-lettered).
    pub next: u64,
    /// Failures of the event at `next`.
    pub failures: u32,
    /// Failures of the event at `next` since the subscriber last crashed (a crash may
    /// restart a bus's count of attempts, as the reference's does).
    pub failures_since_crash: u32,
    /// Events handled (acked by the handler).
    pub handled: BTreeSet<u64>,
    /// Events dead-lettered, as the world saw them go.
    pub dead: BTreeSet<u64>,
    /// Dead letters handed back by a redrive and not yet settled again.
    pub redriving: BTreeSet<u64>,
}

/// What the world counted at the bus's boundary: the ledger side of the bus's
/// [`BusTotals`] (`bus.reports`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every `BusFull`, whether the publisher then waited or gave up.
    pub refusals: u64,
    /// Deliveries the bus handed out.
    pub handed_out: u64,
    /// Deliveries the handler finished.
    pub acked: u64,
    /// Failed deliveries (not redriven letters) the bus did not dead-letter.
    pub retries: u64,
    /// Failed deliveries (not redriven letters) the bus dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters the world had redriven.
    pub redriven: u64,
}

/// The bus checker: fed by the world as the run goes, asked at rest.
#[derive(Clone, Debug, Default)]
pub struct BusChecker {
    /// Attempts before dead-lettering, as the bus declares ([`BusPolicy::attempts_max`]).
    pub attempts_max: u32,
    /// Retention bound, as the bus declares ([`BusPolicy::capacity`]).
    pub capacity: usize,
    /// Per topic: the events published, by seq: (payload, time).
    pub published: BTreeMap<String, Vec<(u64, SimTime)>>,
    /// Per (subscriber, topic).
    pub tracks: BTreeMap<(u32, String), Track>,
    /// Dead events by the world's facts: accepted publishes to a topic no subscription
    /// of the world's covered.
    pub dead_events: u64,
    /// Publishes refused with `BusFull` and given up.
    pub full: u64,
    /// What the world counted at the boundary, for the bus's totals (`bus.reports`).
    pub counts: Counts,
    /// Highest retention seen.
    pub retained_max: usize,
    /// Delivery lags (publish to first handling), ms, per subscriber.
    pub lags: BTreeMap<u32, Vec<(SimTime, f64)>>,
}

impl BusChecker {
    /// A checker for these settings.
    pub fn new(attempts_max: u32, capacity: usize) -> Self {
        BusChecker {
            attempts_max,
            capacity,
            ..BusChecker::default()
        }
    }

    /// The longest delivery lag seen so far, of any subscriber, ms (0 before any).
    pub fn lag_ms_max(&self) -> f64 {
        self.lags
            .values()
            .flatten()
            .map(|(_, l)| *l)
            .fold(0.0, f64::max)
    }

    /// A checker judging a bus by the policy it declares.
    pub fn for_policy(policy: &BusPolicy) -> Self {
        BusChecker::new(policy.attempts_max, policy.capacity)
    }

    fn next_seq(&self, topic: &str) -> u64 {
        self.published.get(topic).map_or(0, |v| v.len() as u64)
    }

    /// Subscriber `sub` joined `topics` now.
    pub fn on_join(&mut self, sub: u32, topics: &[String]) {
        for t in topics {
            let from = self.next_seq(t);
            self.tracks.insert(
                (sub, t.clone()),
                Track {
                    from,
                    next: from,
                    ..Track::default()
                },
            );
        }
    }

    /// Subscriber `sub` left now: it is owed nothing published from here on.
    pub fn on_leave(&mut self, sub: u32) {
        let next: BTreeMap<String, u64> = self
            .published
            .iter()
            .map(|(t, v)| (t.clone(), v.len() as u64))
            .collect();
        for ((s, t), track) in self.tracks.iter_mut() {
            if *s == sub && track.until.is_none() {
                track.until = Some(next.get(t).copied().unwrap_or(0));
            }
        }
    }

    /// How many events `topic` must hold now, from the world's own ledger: the events
    /// owed to a subscriber still subscribed and not yet handled or dead-lettered by it
    /// (in order, so the span from the laggiest such subscriber's next event to the
    /// topic's next seq). Returns (count, laggiest subscriber, its next seq).
    pub fn must_retain(&self, topic: &str) -> (u64, Option<u32>, u64) {
        let end = self.next_seq(topic);
        self.tracks
            .iter()
            .filter(|((_, t), track)| t == topic && track.until.is_none())
            .map(|((s, _), track)| (end.saturating_sub(track.next), Some(*s), track.next))
            .max_by_key(|(n, s, _)| (*n, std::cmp::Reverse(*s)))
            .unwrap_or((0, None, end))
    }

    /// A publish of `payload` on `topic` was accepted; the bus said `seq` (`None`: a
    /// dead event). `subscribed` is the world's own fact: whether a subscription it made
    /// (and has not ended) covers the topic. `retained_max` is the bus's self-report,
    /// compared with what the world's ledger says must be retained.
    pub fn on_published(
        &mut self,
        topic: &str,
        seq: Option<u64>,
        payload: u64,
        now: SimTime,
        subscribed: bool,
        retained_max: usize,
    ) -> Result<(), Violation> {
        self.on_published_seen(topic, seq, payload, now, subscribed, Some(retained_max))
    }

    /// As [`on_published`](BusChecker::on_published), for a world that may not know the
    /// bus's retention (`retained_max` `None`, a black-box observer): the ledger's own
    /// facts are checked all the same, the comparisons with the report only when given.
    pub fn on_published_seen(
        &mut self,
        topic: &str,
        seq: Option<u64>,
        payload: u64,
        now: SimTime,
        subscribed: bool,
        retained_max: Option<usize>,
    ) -> Result<(), Violation> {
        if let Some(r) = retained_max {
            self.retained_max = self.retained_max.max(r);
        }
        match (seq, subscribed) {
            (None, true) => {
                return Err(Violation::new(
                    DEAD_EVENTS_COUNTED,
                    format!(
                        "event {payload} on `{topic}` was called a dead event, but the topic has subscribers"
                    ),
                ));
            }
            (None, false) => self.dead_events += 1,
            (Some(seq), false) => {
                return Err(Violation::new(
                    BOUNDED_RETENTION,
                    format!(
                        "the bus reports event {payload} on `{topic}` as retained (seq {seq}), but `{topic}` had no \
                         subscriber when it was published: nothing is owed there, so nothing may be retained \
                         (it is a dead event)"
                    ),
                ));
            }
            (Some(seq), true) => {
                let expected = self.next_seq(topic);
                if seq != expected {
                    return Err(Violation::new(
                        FIFO,
                        format!(
                            "event {payload} on `{topic}` got seq {seq}; the next seq is {expected}"
                        ),
                    ));
                }
                self.published
                    .entry(topic.to_string())
                    .or_default()
                    .push((payload, now));
            }
        }
        // What must be retained, from the ledger, against the bus's report and the bound.
        let topics: Vec<String> = self.published.keys().cloned().collect();
        let mut most = (0, String::new(), None, 0);
        for t in topics {
            let (n, sub, from) = self.must_retain(&t);
            if n > most.0 {
                most = (n, t, sub, from);
            }
        }
        let (must, t, sub, from) = most;
        if let Some(sub) = sub {
            let end = from + must;
            if let Some(retained_max) = retained_max
                && (retained_max as u64) < must
            {
                return Err(Violation::new(
                    FIFO,
                    format!(
                        "the bus reports at most {retained_max} events retained on any topic, but `{t}` must still hold \
                         {must}: events {from}..{end}, owed to subscriber {sub} and not yet handled or dead-lettered \
                         (the bus lost some, or misreports its retention)"
                    ),
                ));
            }
            if must > self.capacity as u64 {
                return Err(Violation::new(
                    BOUNDED_RETENTION,
                    format!(
                        "`{t}` must hold {must} events (events {from}..{end}, owed to subscriber {sub} and not yet \
                         handled or dead-lettered), yet the bus accepted event {payload}; the capacity is {}",
                        self.capacity
                    ),
                ));
            }
        }
        if let Some(retained_max) = retained_max
            && retained_max > self.capacity
        {
            return Err(Violation::new(
                BOUNDED_RETENTION,
                format!(
                    "the bus reports a topic retaining {retained_max} events; the capacity is {}",
                    self.capacity
                ),
            ));
        }
        Ok(())
    }

    /// The bus handed `sub` event `seq` of `topic`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_delivery(
        &mut self,
        sub: u32,
        left: bool,
        topic: &str,
        seq: u64,
        payload: u64,
        redriven: bool,
    ) -> Result<(), Violation> {
        self.counts.handed_out += 1;
        if left {
            return Err(Violation::new(
                NOTHING_AFTER_UNSUBSCRIBE,
                format!("subscriber {sub} got event {seq} of `{topic}` after it unsubscribed"),
            ));
        }
        let published = self
            .published
            .get(topic)
            .and_then(|v| v.get(seq as usize))
            .map(|p| p.0);
        let Some(track) = self.tracks.get_mut(&(sub, topic.to_string())) else {
            return Err(Violation::new(
                EXACTLY_ONCE,
                format!(
                    "subscriber {sub} got event {seq} of `{topic}`, a topic it never subscribed to"
                ),
            ));
        };
        if published != Some(payload) {
            return Err(Violation::new(
                FIFO,
                format!(
                    "subscriber {sub} got payload {payload} as event {seq} of `{topic}`, which was published as {published:?}"
                ),
            ));
        }
        if redriven {
            if !track.redriving.contains(&seq) {
                return Err(Violation::new(
                    EXACTLY_ONCE,
                    format!(
                        "subscriber {sub} got event {seq} of `{topic}` as a redriven dead letter, but it was not one"
                    ),
                ));
            }
            return Ok(());
        }
        if seq < track.from || track.until.is_some_and(|u| seq >= u) {
            return Err(Violation::new(
                EXACTLY_ONCE,
                format!(
                    "subscriber {sub} got event {seq} of `{topic}`, published while it was not subscribed"
                ),
            ));
        }
        if seq < track.next {
            return Err(Violation::new(
                EXACTLY_ONCE,
                format!(
                    "subscriber {sub} got event {seq} of `{topic}` again after it was {}",
                    if track.dead.contains(&seq) {
                        "dead-lettered"
                    } else {
                        "handled"
                    }
                ),
            ));
        }
        if seq > track.next {
            return Err(if track.failures > 0 {
                Violation::new(
                    EXACTLY_ONCE,
                    format!(
                        "event {} of `{topic}` failed {} time(s) for subscriber {sub} and was then skipped: \
                         neither retried up to {} attempts nor dead-lettered",
                        track.next, track.failures, self.attempts_max
                    ),
                )
            } else {
                Violation::new(
                    FIFO,
                    format!(
                        "subscriber {sub} got event {seq} of `{topic}` but never event {}: lost or out of order",
                        track.next
                    ),
                )
            });
        }
        Ok(())
    }

    /// The handler of `sub` finished event `seq` of `topic` successfully.
    pub fn on_handled(&mut self, sub: u32, topic: &str, seq: u64, redriven: bool, now: SimTime) {
        self.counts.acked += 1;
        let published_at = self
            .published
            .get(topic)
            .and_then(|v| v.get(seq as usize))
            .map(|p| p.1);
        let Some(track) = self.tracks.get_mut(&(sub, topic.to_string())) else {
            return;
        };
        if redriven {
            track.redriving.remove(&seq);
            track.dead.remove(&seq);
            track.handled.insert(seq);
            return;
        }
        if seq == track.next {
            track.handled.insert(seq);
            track.next += 1;
            track.failures = 0;
            track.failures_since_crash = 0;
            if let Some(at) = published_at {
                self.lags
                    .entry(sub)
                    .or_default()
                    .push((now, (now - at).as_nanos() as f64 / 1e6));
            }
        }
    }

    /// The handler of `sub` failed event `seq` of `topic`; `dead` says whether the bus
    /// now lists it as a dead letter.
    pub fn on_failed(
        &mut self,
        sub: u32,
        topic: &str,
        seq: u64,
        redriven: bool,
        dead: bool,
    ) -> Result<(), Violation> {
        let attempts_max = self.attempts_max;
        match (redriven, dead) {
            (true, _) => {}
            (false, true) => self.counts.dead_lettered += 1,
            (false, false) => self.counts.retries += 1,
        }
        let Some(track) = self.tracks.get_mut(&(sub, topic.to_string())) else {
            return Ok(());
        };
        if redriven {
            track.redriving.remove(&seq);
            return Ok(());
        }
        if seq != track.next {
            return Ok(());
        }
        track.failures += 1;
        track.failures_since_crash += 1;
        if dead {
            if track.failures < attempts_max {
                return Err(Violation::new(
                    EXACTLY_ONCE,
                    format!(
                        "event {seq} of `{topic}` was dead-lettered for subscriber {sub} after {} attempt(s); the bus declares {attempts_max}",
                        track.failures
                    ),
                ));
            }
            track.dead.insert(seq);
            track.next += 1;
            track.failures = 0;
            track.failures_since_crash = 0;
        } else if track.failures_since_crash >= attempts_max {
            return Err(Violation::new(
                EXACTLY_ONCE,
                format!(
                    "event {seq} of `{topic}` failed {} time(s) in a row for subscriber {sub} (no crash between) and \
                     was not dead-lettered; the bus declares {attempts_max} attempt(s) before a dead letter",
                    track.failures_since_crash
                ),
            ));
        }
        Ok(())
    }

    /// Subscriber `sub` crashed: a bus may count the attempts of its events afresh.
    pub fn on_crash(&mut self, sub: u32) {
        for ((s, _), track) in self.tracks.iter_mut() {
            if *s == sub {
                track.failures_since_crash = 0;
            }
        }
    }

    /// `sub`'s dead letters (`letters`, as the bus listed them just before, or as the
    /// world saw them go) were handed back for delivery.
    pub fn on_redrive(&mut self, sub: u32, letters: &[(String, u64)]) {
        self.counts.redriven += letters.len() as u64;
        for (t, seq) in letters {
            if let Some(track) = self.tracks.get_mut(&(sub, t.clone())) {
                track.redriving.insert(*seq);
            }
        }
    }

    /// `redrive` said it handed back `returned` of `sub`'s `listed` dead letters
    /// (`bus.reports`).
    pub fn compare_redriven(
        &self,
        sub: u32,
        listed: usize,
        returned: usize,
    ) -> Result<(), Violation> {
        if returned != listed {
            return Err(Violation::new(
                REPORTS,
                format!(
                    "subscriber {sub} had {listed} dead letters; redrive says it handed back {returned}"
                ),
            ));
        }
        Ok(())
    }

    /// The bus's report of the next seq on `topic`, against the world's count of the
    /// events published on it (`bus.reports`).
    pub fn compare_next_seq(&self, topic: &str, reported: u64) -> Result<(), Violation> {
        let counted = self.next_seq(topic);
        if reported != counted {
            return Err(Violation::new(
                REPORTS,
                format!(
                    "the bus reports {reported} as the next seq of `{topic}`; {counted} events were published on it"
                ),
            ));
        }
        Ok(())
    }

    /// The bus's report of each current subscription's lag (`reported(sub, topic)`,
    /// `None` where it does not say), against the ledger: the events published on the
    /// topic from the first one the subscriber has not settled (`bus.reports`).
    pub fn compare_lags(
        &self,
        mut reported: impl FnMut(u32, &str) -> Option<u64>,
    ) -> Result<(), Violation> {
        for ((sub, topic), track) in &self.tracks {
            if track.until.is_some() {
                continue;
            }
            let Some(lag) = reported(*sub, topic) else {
                continue;
            };
            let end = self.next_seq(topic);
            let owed = end.saturating_sub(track.next);
            if lag != owed {
                return Err(Violation::new(
                    REPORTS,
                    format!(
                        "the bus reports a lag of {lag} for subscriber {sub} on `{topic}`; it has settled every event \
                         before {} and {end} were published, so {owed} are owed and unsettled",
                        track.next
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bus's totals against the world's counts (`bus.reports`); `dead_events` and
    /// `redelivered` are not compared here.
    pub fn compare_totals(&self, totals: &BusTotals) -> Result<(), Violation> {
        let published: u64 = self.published.values().map(|v| v.len() as u64).sum();
        let c = &self.counts;
        let pairs = [
            (
                "published",
                totals.published,
                published,
                "events accepted with a seq",
            ),
            ("full", totals.full, c.refusals, "publishes refused as full"),
            (
                "handed_out",
                totals.handed_out,
                c.handed_out,
                "deliveries handed out",
            ),
            (
                "acked",
                totals.acked,
                c.acked,
                "deliveries the handler finished",
            ),
            ("retries", totals.retries, c.retries, "failures retried"),
            (
                "dead_lettered",
                totals.dead_lettered,
                c.dead_lettered,
                "events dead-lettered",
            ),
            (
                "redriven",
                totals.redriven,
                c.redriven,
                "dead letters redriven",
            ),
        ];
        for (name, reported, counted, what) in pairs {
            if reported != counted {
                return Err(Violation::new(
                    REPORTS,
                    format!(
                        "the bus's totals say {name} = {reported}; the world counted {counted} {what}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// True when `sub` is owed an event on `topic` that it could be handed now (not
    /// waiting for a retry).
    pub fn owed_now(&self, sub: u32, topic: &str) -> bool {
        let Some(track) = self.tracks.get(&(sub, topic.to_string())) else {
            return false;
        };
        let end = track.until.unwrap_or(self.next_seq(topic));
        (track.next < end && track.failures == 0) || !track.redriving.is_empty()
    }

    /// True when everything owed to `sub` is settled.
    pub fn settled(&self, sub: u32) -> bool {
        self.tracks
            .iter()
            .filter(|((s, _), _)| *s == sub)
            .all(|((_, t), track)| {
                let end = track.until.unwrap_or(self.next_seq(t));
                track.next >= end && track.redriving.is_empty()
            })
    }

    /// At rest: handled + dead-lettered = owed, for every subscriber still subscribed,
    /// checked against the bus's own dead letters; dead events counted.
    pub fn finish(
        &self,
        bus_dead_letters: &BTreeMap<u32, Vec<(String, u64)>>,
        bus_dead_events: u64,
    ) -> Result<(), Violation> {
        for ((sub, topic), track) in &self.tracks {
            let end = track.until.unwrap_or(self.next_seq(topic));
            if track.until.is_none() && (track.next < end || !track.redriving.is_empty()) {
                return Err(Violation::new(
                    DRAINED,
                    format!(
                        "after the faults healed and everything went quiet, subscriber {sub} on `{topic}` was still owed \
                         events {}..{end} (none delivered or dead-lettered){}",
                        track.next,
                        if track.failures > 0 {
                            format!(
                                "; event {} failed {} time(s) and was never retried",
                                track.next, track.failures
                            )
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            let owed = end.saturating_sub(track.from);
            let handled = track.handled.iter().filter(|s| **s < end).count() as u64;
            let dead = track.dead.len() as u64;
            if track.until.is_none() && handled + dead != owed {
                return Err(Violation::new(
                    DRAINED,
                    format!(
                        "subscriber {sub} on `{topic}`: {handled} handled + {dead} dead-lettered, but {owed} events are owed"
                    ),
                ));
            }
            if track.until.is_none() {
                let listed: BTreeSet<u64> = bus_dead_letters
                    .get(sub)
                    .into_iter()
                    .flatten()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, s)| *s)
                    .collect();
                if listed != track.dead {
                    return Err(Violation::new(
                        EXACTLY_ONCE,
                        format!(
                            "subscriber {sub} on `{topic}`: the bus lists dead letters {listed:?}, the world saw {:?} dead-lettered",
                            track.dead
                        ),
                    ));
                }
            }
        }
        if bus_dead_events != self.dead_events {
            return Err(Violation::new(
                DEAD_EVENTS_COUNTED,
                format!(
                    "{} events went to topics with no subscriber, the bus counted {bus_dead_events}",
                    self.dead_events
                ),
            ));
        }
        Ok(())
    }
}
