//! CQRS with event sourcing in the tokio harness (`cqrs-tokio`): real async command
//! handling and projection tasks against an async event store under fault plans; the
//! black-box oracles (the store's ledger, the clients' answers, the read models as
//! queried) pass the reference and a user's own service and catch the async mutants.

use crate::support::{assert_deterministic, assert_every_mark_hit, assert_mutants_caught};
use faultline::cqrs::hosted::pattern::CqrsTokioPattern;
use faultline::cqrs::hosted::{
    Answer, CqrsTokioWorld, Defect, Factory, HostedInventory, INVARIANTS, LocalFuture, MARKS,
    Store, StoreError, factory_with, run,
};
use faultline::cqrs::world::CqrsKnobs;
use faultline::cqrs::{
    Aggregate, AppendError, ExpectedVersion, Item, ItemCommand, ItemEvent, Projection, StockView,
    StoredEvent, StreamId, Upcast,
};
use faultline::harness::{Pattern, Scenario};
use faultline_sim::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The reference keeps every promise over a sweep of seeds (each run twice: the
/// determinism check is part of every hosted run).
#[test]
fn a_sweep_of_the_reference_has_no_violation() {
    for seed in 0..60 {
        let (report, world) = CqrsTokioPattern.run_seed(seed, TraceMode::Off).unwrap();
        report.assert_pass();
        assert!(world.stats.events > 0, "seed {seed} appended nothing");
    }
}

#[test]
fn every_mark_is_hit_over_100_seeds() {
    assert_every_mark_hit(&CqrsTokioPattern, MARKS, 100);
}

/// Every async mutant is caught by its expected invariant (the table prints the seed
/// count it took), and every invariant catches one.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&CqrsTokioPattern, &INVARIANTS, 60);
}

#[test]
fn same_seed_same_digest_three_times() {
    assert_deterministic(&CqrsTokioPattern, 0..4);
    let digest = || {
        CqrsTokioPattern
            .run_seed(3, TraceMode::Full)
            .unwrap()
            .0
            .digest
    };
    let d = digest();
    assert_eq!((digest(), digest()), (d, d));
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = CqrsTokioPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.events),
        (5_868_109_644_733_578_667, 1_776, 443),
        "golden digest changed"
    );
}

/// A plan file (an outage and errors of the store's command side, a projection crash,
/// a duplicated read) replayed through the command: it passes, and its report is the
/// same twice.
#[test]
fn a_plan_file_replays_through_the_command() {
    let dir = std::env::temp_dir().join(format!("faultline-cqrs-tokio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    std::fs::write(
        &plan,
        r#"{"seed": 4, "horizon_ms": 8000, "faults": [
            {"kind": "outage", "target": "writer", "from_ms": 1000, "until_ms": 1800},
            {"kind": "errors", "target": "writer", "from_ms": 3000, "until_ms": 4000, "ratio": "50/100"},
            {"kind": "crash", "target": "proj-0", "from_ms": 2000, "until_ms": 2600},
            {"kind": "duplicate", "target": "dispatch->proj-1", "from_ms": 500, "until_ms": 6000, "ratio": "100/100"}]}"#,
    )
    .unwrap();
    let replay = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["replay", "cqrs-tokio", "--plan"])
            .arg(&plan)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let o = replay();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("replaying cqrs-tokio seed 4"), "{stdout}");
    let report = dir.join("runs/cqrs-tokio-seed-4-plan.html");
    let first = std::fs::read(&report).unwrap();
    assert_eq!(replay().status.code(), Some(0));
    assert!(first == std::fs::read(&report).unwrap());
    // The same plan through the harness: the outage was met, nothing failed.
    let plan = FaultPlan::from_json(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let run = CqrsTokioPattern
        .run(4, &plan, TraceMode::Off, None)
        .unwrap();
    run.report.assert_pass();
    assert!(run.report.coverage.count("cqrs-tokio.unavailable") > 0);
    assert!(run.report.coverage.count("cqrs-tokio.redelivery") > 0);
}

/// The black-box oracles alone: with the white-box checkpoint checks off, the
/// projection that skips an event after a read error and the lost update are still
/// caught, and the reference still passes.
#[test]
fn black_box_oracles_catch_mutants_without_white_box_checks() {
    let catch = |defect: Defect, invariant: &str| {
        let seed = (0..60)
            .find(|seed| {
                let knobs = CqrsKnobs::from_seed(*seed);
                let plan = CqrsTokioPattern.fault_plan(&knobs);
                let world = CqrsTokioWorld::new(knobs, factory_with(defect)).with_white_box(false);
                let (report, _) = run(world, plan, TraceMode::Off);
                report.outcome.invariant() == Some(invariant)
            })
            .unwrap_or_else(|| panic!("{defect:?} not caught by {invariant} in 60 seeds"));
        println!("{defect:?}: caught by {invariant} at seed {seed}");
    };
    catch(Defect::SkipAfterReadError, "cqrs.caught_up");
    catch(Defect::RetryWithoutReload, "cqrs.no_lost_write");
    for seed in 0..10 {
        let knobs = CqrsKnobs::from_seed(seed);
        let plan = CqrsTokioPattern.fault_plan(&knobs);
        let world = CqrsTokioWorld::new(knobs, factory_with(Defect::None)).with_white_box(false);
        run(world, plan, TraceMode::Off).0.assert_pass();
    }
}

/// A user's own async service: reload and decide on every conflict with no backoff;
/// read models that poll the log and fold it themselves, with no checkpoint. It keeps
/// every promise (no false positive).
mod plug_in {
    use super::*;

    struct Mine {
        store: Store,
        views: Vec<Rc<RefCell<StockView>>>,
    }

    async fn command(store: Store, item: StreamId, command: ItemCommand, legacy: bool) -> Answer {
        for _ in 0..4 {
            let records = match store.read_stream(item).await {
                Ok(r) => r,
                Err(e) => return Answer::Failed(e),
            };
            let events: Vec<ItemEvent> = records.iter().map(|r| r.event.upcast()).collect();
            let state = Item::default().fold(events.iter());
            let decided = match state.decide(&command) {
                Ok(d) => d,
                Err(why) => return Answer::Rejected(why),
            };
            let stored = decided
                .iter()
                .map(|e| match (*e, legacy) {
                    (ItemEvent::Restocked { units }, true) => {
                        StoredEvent::RestockedV1 { dozens: units / 12 }
                    }
                    (e, _) => StoredEvent::Current(e),
                })
                .collect();
            let expected = ExpectedVersion::Exact(records.len() as u64);
            match store.append(item, expected, stored).await {
                Ok(a) => return Answer::Appended(a),
                Err(StoreError::Append(AppendError::WrongExpectedVersion { .. })) => continue,
                Err(e) => return Answer::Failed(e),
            }
        }
        let actual = store.read_stream(item).await.map_or(0, |r| r.len() as u64);
        Answer::Conflict { actual }
    }

    async fn follow(store: Store, p: usize, view: Rc<RefCell<StockView>>) {
        loop {
            let after = view.borrow().position;
            match store.read_all(p, after, 10).await {
                Ok(records) if records.iter().any(|r| r.position > after) => {
                    let mut v = view.borrow_mut();
                    for r in &records {
                        if r.position == v.position + 1 {
                            v.apply(&r.map(Upcast::upcast));
                        }
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(30)).await,
            }
        }
    }

    impl HostedInventory for Mine {
        fn execute(&self, item: StreamId, c: ItemCommand, legacy: bool) -> LocalFuture<Answer> {
            Box::pin(command(self.store.clone(), item, c, legacy))
        }
        fn projections(&self) -> usize {
            self.views.len()
        }
        fn query(&self, p: usize) -> StockView {
            self.views[p].borrow().clone()
        }
        fn checkpoint(&self, _: usize) -> Option<u64> {
            None
        }
        fn crash(&self, _: usize) {}
        fn rebuild(&self, _: usize) {}
    }

    fn factory() -> Factory {
        Rc::new(|store: &Store, _: &CqrsKnobs| {
            let views: Vec<_> = (0..2)
                .map(|p| {
                    let v = Rc::new(RefCell::new(StockView::default()));
                    tokio::task::spawn_local(follow(store.clone(), p, Rc::clone(&v)));
                    v
                })
                .collect();
            Ok(Box::new(Mine {
                store: store.clone(),
                views,
            }) as Box<dyn HostedInventory>)
        })
    }

    #[test]
    fn a_users_service_keeps_every_promise() {
        for seed in 0..30 {
            let knobs = CqrsKnobs::from_seed(seed);
            let plan = CqrsTokioPattern.fault_plan(&knobs);
            let (report, world) = run(CqrsTokioWorld::new(knobs, factory()), plan, TraceMode::Off);
            report.assert_pass();
            assert!(world.stats.accepted > 0);
        }
    }
}
