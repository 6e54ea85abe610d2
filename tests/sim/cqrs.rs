//! CQRS with event sourcing in its simulated world: every invariant under proptest
//! (knob seeds x fault plans), determinism, a golden digest, coverage, and the mutants.

use crate::support::{
    assert_deterministic, assert_every_mark_hit, assert_mutants_caught, check, seed_and_plan,
};
use faultline::cqrs::invariants::INVARIANTS;
use faultline::cqrs::pattern::CqrsPattern;
use faultline::cqrs::world::{CqrsKnobs, CqrsWorld, MARKS, run};
use faultline::harness::Pattern;
use faultline::harness::Scenario;
use faultline_sim::prelude::*;
use proptest::prelude::*;

const ALL: &[FaultKindTag] = &[
    FaultKindTag::Crash,
    FaultKindTag::Drop,
    FaultKindTag::Duplicate,
    FaultKindTag::Delay,
];

proptest! {
    /// All five invariants under every kind of fault the world knows.
    #[test]
    fn every_invariant_holds((seed, plan) in seed_and_plan(CqrsPattern, ALL)) {
        check(&CqrsPattern, "every_invariant_holds", seed, plan)?;
    }

    /// 1, 3, 4. Crashes of the writer (between append and dispatch) and of the
    /// projections (between apply and checkpoint): nothing acknowledged is lost, replays
    /// change nothing, and every read model catches up with the log.
    #[test]
    fn crashes_lose_nothing_and_replays_change_nothing((seed, plan) in seed_and_plan(CqrsPattern, &[FaultKindTag::Crash])) {
        let world = check(&CqrsPattern, "crashes_lose_nothing_and_replays_change_nothing", seed, plan)?;
        prop_assert_eq!(world.checker.log.len() as u64, world.stats.events);
    }

    /// 3, 4, 5. Dropped, duplicated and delayed deliveries: the read models still
    /// converge, duplicates change nothing, queries never go back.
    #[test]
    fn faulty_deliveries_still_converge(
        (seed, plan) in seed_and_plan(CqrsPattern, &[FaultKindTag::Drop, FaultKindTag::Duplicate, FaultKindTag::Delay]),
    ) {
        check(&CqrsPattern, "faulty_deliveries_still_converge", seed, plan)?;
    }

    /// 2. Any snapshot interval: loading from a snapshot equals folding every event.
    #[test]
    fn snapshots_fold_like_the_whole_stream(seed in any::<u64>()) {
        let knobs = CqrsKnobs::from_seed(seed);
        let plan = FaultPlan::healthy(knobs.horizon_ms);
        let world = check(&CqrsPattern, "snapshots_fold_like_the_whole_stream", seed, plan)?;
        // Every item with `snapshot_every` events or more has a snapshot, the others none.
        for (item, rec) in &world.checker.streams {
            let snapshot = world.system().repository.snapshot(*item);
            prop_assert_eq!(snapshot.is_some(), rec.events.len() as u64 >= knobs.snapshot_every);
        }
    }
}

/// Mutant (a) in isolation: with the writer crashing (and no link fault), the
/// reference loses a dispatch and still converges through its checkpoint, while the
/// push-only projection loses those read-model updates.
#[test]
fn a_crash_between_append_and_dispatch_needs_the_checkpoint() {
    let push = CqrsPattern
        .mutant_info("push_without_checkpoint")
        .unwrap()
        .name;
    let mut shown = 0;
    for seed in 0..100 {
        let knobs = CqrsKnobs::from_seed(seed);
        let plan = FaultPlan::from_json(&format!(
            r#"{{"horizon_ms": {}, "faults": [
                {{"kind": "crash", "target": "writer", "from_ms": 1500, "until_ms": 2500}},
                {{"kind": "crash", "target": "writer", "from_ms": 4000, "until_ms": 4500}}]}}"#,
            knobs.horizon_ms
        ))
        .unwrap();
        let reference = CqrsPattern.run(seed, &plan, TraceMode::Off, None).unwrap();
        reference.report.assert_pass();
        if reference.report.coverage.count("cqrs.dispatch_lost") == 0 {
            continue;
        }
        let mutant = CqrsPattern
            .run(seed, &plan, TraceMode::Off, Some(push))
            .unwrap();
        assert_eq!(
            mutant.report.outcome.invariant(),
            Some("cqrs.caught_up"),
            "seed {seed}: {}",
            mutant.report.outcome
        );
        // Caught as soon as a query shows a read model past the lost event (the fold
        // of the ledger up to its position differs), or at rest.
        let text = mutant.report.outcome.to_string();
        assert!(
            text.contains("the fold of the acknowledged events") || text.contains("read model is"),
            "{text}"
        );
        shown += 1;
    }
    assert!(shown >= 5, "only {shown} seeds lost a dispatch");
}

#[test]
fn same_seed_same_digest() {
    assert_deterministic(&CqrsPattern, 0..6);
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = CqrsPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.events),
        (16_978_205_862_772_909_876, 4_002, 384),
        "golden digest changed"
    );
}

#[test]
fn every_mark_is_hit_over_300_seeds() {
    assert_every_mark_hit(&CqrsPattern, MARKS, 300);
}

/// Every mutant is caught by its expected invariant, and every invariant catches one.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&CqrsPattern, &INVARIANTS, 200);
}

/// A user's own system through the contract: a `Vec` log, no snapshots, projections that
/// pull one event at a time and checkpoint after each. It keeps every promise.
mod plug_in {
    use super::*;
    use faultline::cqrs::contract::EventSourced;
    use faultline::cqrs::{
        Aggregate, AppendError, Appended, ExpectedVersion, Item, ItemEvent, Projection, Recorded,
        Rehydrated, Step, StockView, StoredEvent, StreamId, Upcast,
    };

    #[derive(Default)]
    struct VecSystem {
        log: Vec<Recorded<StoredEvent>>,
        views: Vec<(StockView, u64)>,
    }

    impl VecSystem {
        fn upcast_stream(&self, item: StreamId) -> Vec<Recorded<ItemEvent>> {
            self.log
                .iter()
                .filter(|r| r.stream == item)
                .map(|r| r.map(Upcast::upcast))
                .collect()
        }
    }

    impl EventSourced for VecSystem {
        fn rehydrate(&self, item: StreamId) -> Rehydrated<Item> {
            let events = self.upcast_stream(item);
            Rehydrated {
                state: Item::default().fold(events.iter().map(|r| &r.event)),
                version: events.len() as u64,
                snapshot_version: None,
                folded: events.len() as u64,
                upcast: 0,
            }
        }
        fn read_stream(&self, item: StreamId) -> Vec<Recorded<ItemEvent>> {
            self.upcast_stream(item)
        }
        fn append(
            &mut self,
            item: StreamId,
            expected: ExpectedVersion,
            events: Vec<StoredEvent>,
        ) -> Result<Appended, AppendError> {
            let version = self.log.iter().filter(|r| r.stream == item).count() as u64;
            if !expected.admits(version) {
                return Err(AppendError::WrongExpectedVersion {
                    stream: item,
                    expected,
                    actual: version,
                });
            }
            let first = self.log.len() as u64 + 1;
            for (i, event) in events.into_iter().enumerate() {
                self.log.push(Recorded {
                    stream: item,
                    version: version + 1 + i as u64,
                    position: self.log.len() as u64 + 1,
                    event,
                });
            }
            let last = self.log.len() as u64;
            Ok(Appended {
                from_version: version,
                to_version: version + (last + 1 - first),
                first_position: first,
                last_position: last,
            })
        }
        fn snapshot_if_due(&mut self, _item: StreamId) -> Option<u64> {
            None
        }
        fn head(&self) -> u64 {
            self.log.len() as u64
        }
        fn read_all(&self) -> Vec<Recorded<ItemEvent>> {
            self.log.iter().map(|r| r.map(Upcast::upcast)).collect()
        }
        fn projections(&self) -> usize {
            2
        }
        fn deliver(&mut self, _p: usize, _record: &Recorded<ItemEvent>) {}
        fn step(&mut self, p: usize) -> Step {
            if self.views.len() < 2 {
                self.views.resize(2, (StockView::default(), 0));
            }
            let (view, checkpoint) = &mut self.views[p];
            if *checkpoint < view.position {
                *checkpoint = view.position;
                return Step::Checkpointed {
                    position: *checkpoint,
                };
            }
            match self.log.get(view.position as usize) {
                Some(r) => {
                    view.apply(&r.map(Upcast::upcast));
                    Step::Applied {
                        position: r.position,
                        replay: false,
                    }
                }
                None => Step::Idle,
            }
        }
        fn crash(&mut self, _p: usize) {}
        fn rebuild(&mut self, _p: usize) {}
        fn query(&self, p: usize) -> StockView {
            self.views.get(p).map(|v| v.0.clone()).unwrap_or_default()
        }
        fn checkpoint(&self, p: usize) -> u64 {
            self.views.get(p).map_or(0, |v| v.1)
        }
    }

    #[test]
    fn a_hand_rolled_system_keeps_every_promise() {
        for seed in 0..1_000 {
            let knobs = CqrsKnobs::from_seed(seed);
            let (report, world) = run(
                CqrsWorld::new(knobs.clone(), VecSystem::default()),
                knobs.fault_plan(),
                TraceMode::Off,
            );
            report.assert_pass();
            assert_eq!(world.checker.log.len() as u64, world.stats.events);
        }
    }
}

/// A read model's position is checked against the world's ledger: whatever position a
/// query reports, the read model must be the fold of the acknowledged log up to it.
/// `position_ahead_of_apply` reports the checkpoint as its position before applying the
/// event; over the default seeds 0..500, the number caught, and how many during the run
/// (not only at rest, when a crash made it skip an event for good).
#[test]
fn a_position_ahead_of_what_was_applied_is_caught_as_it_is_queried() {
    let (mut caught, mut in_run) = (0, 0);
    let mut by = std::collections::BTreeMap::new();
    let seeds = 0..500u64;
    for seed in seeds.clone() {
        let run = CqrsPattern
            .run(
                seed,
                &CqrsPattern.plan(seed),
                TraceMode::Off,
                Some("position_ahead_of_apply"),
            )
            .unwrap();
        if let Some(inv) = run.report.outcome.invariant() {
            *by.entry(inv.to_string()).or_insert(0) += 1;
            caught += 1;
            in_run += usize::from(!run.report.outcome.to_string().contains("at rest"));
        }
    }
    let n = seeds.count();
    println!(
        "position_ahead_of_apply caught on {caught}/{n} seeds, {in_run} during the run, by {by:?}"
    );
    assert_eq!(caught, n);
    assert_eq!(by.get("cqrs.caught_up"), Some(&n), "{by:?}");
}
