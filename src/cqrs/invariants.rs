//! The promises of event sourcing with CQRS, checked by the world as the run goes and at
//! rest, against its own record of every acknowledged append:
//!
//! 1. `cqrs.no_lost_write`: of the commands that loaded the same version of an item,
//!    exactly one appends and the others get a conflict (no spurious conflict either);
//!    an accepted append gets the next versions and positions without gaps; no
//!    acknowledged event is ever missing from its stream or from the global log.
//! 2. `cqrs.snapshot_fold`: an item loaded from a snapshot plus the later events equals
//!    the fold of all its acknowledged events.
//! 3. `cqrs.caught_up`: a read model that reports position `n` is the fold of the
//!    acknowledged events 1..=`n` (checked at every query, from the world's ledger, not
//!    from what the read model says it applied); a checkpoint never passes that
//!    position; at rest every checkpoint is the log's head and every read model equals
//!    the fold of the log.
//! 4. `cqrs.idempotent_replay`: an event applied again (a replay after a crash between
//!    apply and checkpoint, or a duplicated delivery) leaves the read model unchanged.
//! 5. `cqrs.monotonic_reads`: a query never sees a read model go back in position.

use crate::cqrs::core::{Aggregate, Appended, ExpectedVersion, Projection, Recorded, StreamId};
use crate::cqrs::item::{Item, ItemEvent, StockView};
use faultline_sim::Violation;
use std::collections::BTreeMap;

/// Names of the invariants, in order.
pub const INVARIANTS: [&str; 5] = [
    NO_LOST_WRITE,
    SNAPSHOT_FOLD,
    CAUGHT_UP,
    IDEMPOTENT_REPLAY,
    MONOTONIC_READS,
];

/// What each invariant promises, in words (the list above), in the order of
/// [`INVARIANTS`]: what `faultline list` prints beside each name.
pub const PROMISES: [(&str, &str); 5] = [
    (
        NO_LOST_WRITE,
        "Of the commands that loaded the same version of an item, exactly one appends and the others get a conflict (no spurious conflict either); an accepted append gets the next versions and positions without gaps; no acknowledged event is ever missing from its stream or from the global log.",
    ),
    (
        SNAPSHOT_FOLD,
        "An item loaded from a snapshot plus the later events equals the fold of all its acknowledged events.",
    ),
    (
        CAUGHT_UP,
        "A read model that reports position n is the fold of the acknowledged events 1..=n (checked at every query, from the world's ledger, not from what the read model says it applied); a checkpoint never passes that position; at rest every checkpoint is the log's head and every read model equals the fold of the log.",
    ),
    (
        IDEMPOTENT_REPLAY,
        "An event applied again (a replay after a crash between apply and checkpoint, or a duplicated delivery) leaves the read model unchanged.",
    ),
    (
        MONOTONIC_READS,
        "A query never sees a read model go back in position.",
    ),
];

/// The invariant `cqrs.no_lost_write` (see the list above).
pub const NO_LOST_WRITE: &str = "cqrs.no_lost_write";
/// The invariant `cqrs.snapshot_fold` (see the list above).
pub const SNAPSHOT_FOLD: &str = "cqrs.snapshot_fold";
/// The invariant `cqrs.caught_up` (see the list above).
pub const CAUGHT_UP: &str = "cqrs.caught_up";
/// The invariant `cqrs.idempotent_replay` (see the list above).
pub const IDEMPOTENT_REPLAY: &str = "cqrs.idempotent_replay";
/// The invariant `cqrs.monotonic_reads` (see the list above).
pub const MONOTONIC_READS: &str = "cqrs.monotonic_reads";

/// The world's record of one item: every acknowledged event, and their fold.
#[derive(Clone, Debug, Default)]
pub struct StreamRecord {
    /// Acknowledged events, by version - 1, with their positions.
    pub events: Vec<(u64, ItemEvent)>,
    /// The fold of `events`.
    pub state: Item,
}

/// The checker: fed by the world as the run goes, asked at rest.
#[derive(Clone, Debug, Default)]
pub struct CqrsChecker {
    /// Per item: what was acknowledged.
    pub streams: BTreeMap<StreamId, StreamRecord>,
    /// The global log as acknowledged.
    pub log: Vec<Recorded<ItemEvent>>,
    /// Per projection: the highest position a query has seen.
    pub seen: BTreeMap<usize, u64>,
    /// Per projection: the fold of the acknowledged log up to the position its last
    /// query reported (kept forward as positions rise).
    pub folded: BTreeMap<usize, StockView>,
}

impl CqrsChecker {
    /// The version of `item` as acknowledged.
    pub fn version(&self, item: StreamId) -> u64 {
        self.streams.get(&item).map_or(0, |s| s.events.len() as u64)
    }

    /// The log's head as acknowledged.
    pub fn head(&self) -> u64 {
        self.log.len() as u64
    }

    /// An append of `events` at `expected` was acknowledged with `appended`.
    pub fn on_ack(
        &mut self,
        item: StreamId,
        expected: ExpectedVersion,
        appended: &Appended,
        events: &[ItemEvent],
    ) -> Result<(), Violation> {
        let version = self.version(item);
        if !expected.admits(version) {
            return Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "an append to {item} expecting {expected} was accepted, but {version} events were \
                     already acknowledged: two commands that loaded the same version both appended"
                ),
            ));
        }
        let n = events.len() as u64;
        let head = self.head();
        if appended.from_version != version
            || appended.to_version != version + n
            || appended.first_position != head + 1
            || appended.last_position != head + n
        {
            return Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "{n} events appended to {item} got versions {}..={} at positions {}..={}; \
                     expected versions {}..={} at positions {}..={}",
                    appended.from_version + 1,
                    appended.to_version,
                    appended.first_position,
                    appended.last_position,
                    version + 1,
                    version + n,
                    head + 1,
                    head + n
                ),
            ));
        }
        let rec = self.streams.entry(item).or_default();
        for (i, e) in events.iter().enumerate() {
            let position = head + 1 + i as u64;
            rec.events.push((position, *e));
            rec.state.apply(e);
            self.log.push(Recorded {
                stream: item,
                version: version + 1 + i as u64,
                position,
                event: *e,
            });
        }
        Ok(())
    }

    /// An append at `expected` was refused as a conflict with the stream at `actual`.
    pub fn on_conflict(
        &self,
        item: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    ) -> Result<(), Violation> {
        let version = self.version(item);
        if expected.admits(version) || actual != version {
            return Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "an append to {item} expecting {expected} was refused as a conflict at version {actual}, \
                     but {version} events are acknowledged: a write that should have gone in was lost"
                ),
            ));
        }
        Ok(())
    }

    /// `item` was loaded as `state` at `version` (from a snapshot at `snapshot`).
    pub fn on_load(
        &self,
        item: StreamId,
        state: &Item,
        version: u64,
        snapshot: Option<u64>,
    ) -> Result<(), Violation> {
        let want = self.streams.get(&item).map(|s| s.state).unwrap_or_default();
        let at = self.version(item);
        if *state != want || version != at {
            return Err(Violation::new(
                SNAPSHOT_FOLD,
                format!(
                    "{item} loaded {}as {state:?} at version {version}; the fold of its {at} acknowledged \
                     events is {want:?}",
                    snapshot.map_or(String::new(), |v| format!(
                        "from the snapshot at version {v} "
                    ))
                ),
            ));
        }
        Ok(())
    }

    /// Projection `p` handled something: `before` and `after` are its read model around
    /// it, `checkpoint` its checkpoint after, `reapplied` the position handed to it
    /// again (a replay or a duplicate), if any.
    pub fn after_projection(
        &mut self,
        p: usize,
        before: &StockView,
        after: &StockView,
        checkpoint: u64,
        reapplied: Option<u64>,
    ) -> Result<(), Violation> {
        if let Some(position) = reapplied
            && after != before
        {
            return Err(Violation::new(
                IDEMPOTENT_REPLAY,
                format!(
                    "proj-{p} was handed event {position} again (its read model was at {}), and the read model \
                     changed: {before:?} became {after:?}",
                    before.position
                ),
            ));
        }
        if checkpoint > after.position {
            return Err(Violation::new(
                CAUGHT_UP,
                format!(
                    "proj-{p}'s checkpoint is {checkpoint}, but its read model has applied events only up to {}: \
                     a crash now would skip events {}..={checkpoint}",
                    after.position,
                    after.position + 1
                ),
            ));
        }
        let seen = self.seen.entry(p).or_insert(0);
        if after.position < *seen {
            return Err(Violation::new(
                MONOTONIC_READS,
                format!(
                    "a query of proj-{p} saw its read model at position {}, after one had seen it at {}",
                    after.position, *seen
                ),
            ));
        }
        *seen = after.position;
        self.check_fold(p, after)
    }

    /// Observed, not trusted: a read model that reports position `n` is the fold of the
    /// acknowledged events 1..=`n`, whatever it says it applied.
    fn check_fold(&mut self, p: usize, view: &StockView) -> Result<(), Violation> {
        let head = self.head();
        if view.position > head {
            return Err(Violation::new(
                CAUGHT_UP,
                format!(
                    "a query of proj-{p} reports its read model at position {}, past the {head} \
                     acknowledged events",
                    view.position
                ),
            ));
        }
        let want = self.folded.entry(p).or_default();
        if want.position > view.position {
            *want = StockView::default();
        }
        let from = usize::try_from(want.position).unwrap_or(usize::MAX);
        let to = usize::try_from(view.position).unwrap_or(usize::MAX);
        for r in self.log.get(from..to).unwrap_or_default() {
            want.apply(r);
        }
        if view != want {
            return Err(Violation::new(
                CAUGHT_UP,
                format!(
                    "a query of proj-{p} reports its read model at position {}, but it is \
                     {view:?}; the fold of the acknowledged events 1..={} is {want:?}: it claims \
                     more than it applied",
                    view.position, view.position
                ),
            ));
        }
        Ok(())
    }

    /// At rest: the store holds every acknowledged event (`stream_of` reads a stream,
    /// `log` is the store's global log), and every projection (`views` with their
    /// checkpoints) is caught up with the fold of the log.
    pub fn finish(
        &self,
        stream_of: impl Fn(StreamId) -> Vec<Recorded<ItemEvent>>,
        log: &[Recorded<ItemEvent>],
        views: &[(StockView, u64)],
    ) -> Result<(), Violation> {
        for (item, rec) in &self.streams {
            let stored = stream_of(*item);
            for (i, (position, e)) in rec.events.iter().enumerate() {
                let version = i as u64 + 1;
                let found = stored.iter().find(|r| r.version == version);
                if found.is_none_or(|r| r.position != *position || r.event != *e) {
                    return Err(Violation::new(
                        NO_LOST_WRITE,
                        format!(
                            "acknowledged event {version} of {item} ({e:?} at position {position}) is missing: \
                             the stream holds {found:?}"
                        ),
                    ));
                }
            }
            if stored.len() != rec.events.len() {
                return Err(Violation::new(
                    NO_LOST_WRITE,
                    format!(
                        "{item} holds {} events, {} were acknowledged",
                        stored.len(),
                        rec.events.len()
                    ),
                ));
            }
        }
        if log != self.log.as_slice() {
            let at = log
                .iter()
                .zip(&self.log)
                .position(|(a, b)| a != b)
                .unwrap_or(log.len().min(self.log.len()));
            return Err(Violation::new(
                NO_LOST_WRITE,
                format!(
                    "the global log differs from the acknowledged one at index {at}: {} events stored, {} acknowledged",
                    log.len(),
                    self.log.len()
                ),
            ));
        }
        let want = StockView::fold(&self.log);
        for (p, (view, checkpoint)) in views.iter().enumerate() {
            if *view != want {
                return Err(Violation::new(
                    CAUGHT_UP,
                    format!(
                        "at rest proj-{p}'s read model is {view:?}; the fold of the log is {want:?}"
                    ),
                ));
            }
            if *checkpoint != self.head() {
                return Err(Violation::new(
                    CAUGHT_UP,
                    format!(
                        "at rest proj-{p}'s checkpoint is {checkpoint}, the log's head is {}",
                        self.head()
                    ),
                ));
            }
        }
        Ok(())
    }
}
