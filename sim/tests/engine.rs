//! Engine tests: queue order, fork independence, plan round-trips and validation,
//! shrinking, phases and bounds, determinism (also across sweep thread counts), and a
//! golden digest.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use faultline_sim::prelude::*;
use faultline_sim::sweep::{SeedRange, Shard, SweepSummary, sweep};
use faultline_sim::{EventQueue, PlanError, check_determinism};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};

// ---------------------------------------------------------------------------------
// A toy world: clients ping an API through a link; faults make it fail, slow down,
// drop or duplicate replies; a client node can crash. Optionally it checks that it
// never sees the API down for longer than `max_outage` (a property built to fail).
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Ev {
    Ping { client: u32 },
    Reply { client: u32, ok: bool },
}

struct Toy {
    clients: u32,
    period_ms: u64,
    max_outage: Option<SimDuration>,
    crashed: Vec<bool>,
    in_flight: u64,
    replies: u64,
    down_since: Option<SimTime>,
}

impl Toy {
    fn new(clients: u32) -> Self {
        Toy {
            clients,
            period_ms: 10,
            max_outage: None,
            crashed: vec![false; clients as usize],
            in_flight: 0,
            replies: 0,
            down_since: None,
        }
    }
}

const TOY_MARKS: &[&str] = &[
    "toy.saw_outage",
    "toy.saw_slow",
    "toy.saw_error",
    "toy.dropped",
    "toy.duplicated",
    "toy.crashed",
    "toy.restarted",
];

impl World for Toy {
    type Event = Ev;
    fn marks(&self) -> Vec<&'static str> {
        TOY_MARKS.to_vec()
    }
    fn start(&mut self, ctx: &mut Ctx<Ev>) -> Result<(), Violation> {
        for client in 0..self.clients {
            let jitter = ctx.rng().below(self.period_ms);
            ctx.schedule_in(SimDuration::from_millis(jitter), Ev::Ping { client });
        }
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Ctx<Ev>, ev: Ev) -> Result<(), Violation> {
        match ev {
            Ev::Ping { client } => {
                if ctx.is_healed() {
                    return Ok(());
                }
                ctx.schedule_in(
                    SimDuration::from_millis(self.period_ms),
                    Ev::Ping { client },
                );
                if self.crashed[client as usize] {
                    return Ok(());
                }
                let now = ctx.now();
                if ctx.faults().is_down("api") {
                    ctx.cover("toy.saw_outage");
                    let since = *self.down_since.get_or_insert(now);
                    if let Some(max) = self.max_outage
                        && now - since > max
                    {
                        return Err(Violation::new(
                            "toy.outage_shorter_than_max",
                            format!("the API has been down since {since}, longer than {max}"),
                        ));
                    }
                    self.in_flight += 1;
                    ctx.schedule_in(SimDuration::ZERO, Ev::Reply { client, ok: false });
                    return Ok(());
                }
                self.down_since = None;
                let extra = ctx.faults().extra_latency("api");
                if extra > SimDuration::ZERO {
                    ctx.cover("toy.saw_slow");
                }
                let failed = ctx.faults().injects_error("api");
                if failed {
                    ctx.cover("toy.saw_error");
                }
                let fate = ctx.faults().link("net");
                if fate.dropped {
                    ctx.cover("toy.dropped");
                }
                if fate.copies > 1 {
                    ctx.cover("toy.duplicated");
                }
                let latency = SimDuration::from_millis(5) + extra + fate.extra_delay;
                for _ in 0..fate.copies {
                    self.in_flight += 1;
                    ctx.schedule_in(
                        latency,
                        Ev::Reply {
                            client,
                            ok: !failed,
                        },
                    );
                }
            }
            Ev::Reply { client, ok } => {
                self.in_flight -= 1;
                self.replies += 1;
                ctx.record(format!("client-{client}"), format_args!("reply ok={ok}"));
            }
        }
        Ok(())
    }
    fn on_fault(&mut self, ctx: &mut Ctx<Ev>, edge: FaultEdge) -> Result<(), Violation> {
        if edge.fault.kind == FaultKind::Crash
            && let Some(i) = edge.fault.target.strip_prefix("client-")
            && let Ok(i) = i.parse::<usize>()
            && i < self.crashed.len()
        {
            self.crashed[i] = edge.started;
            ctx.cover(if edge.started {
                "toy.crashed"
            } else {
                "toy.restarted"
            });
        }
        Ok(())
    }
    fn is_quiescent(&self, _: &Ctx<Ev>) -> bool {
        self.in_flight == 0
    }
    fn finish(&mut self, _: &mut Ctx<Ev>) -> Result<(), Violation> {
        if self.crashed.iter().any(|c| *c) {
            return Err(Violation::new(
                "toy.restarted",
                "a client is still down at rest",
            ));
        }
        Ok(())
    }
}

fn toy_profile() -> FaultProfile {
    FaultProfile::new(5_000)
        .target("api")
        .node("client-0")
        .node("client-1")
        .link("net")
        .faults(0, 6)
        .duration_ms(50, 2_000)
        .latency_ms_max(300)
}

fn toy_plan(seed: u64) -> FaultPlan {
    FaultPlan::generate(&mut SimRng::new(seed).fork("plan"), &toy_profile())
}

fn toy_sim(seed: u64) -> Simulation {
    Simulation::new(seed)
        .plan(toy_plan(seed))
        .replay_hint("cargo test -p faultline-sim --test engine -- toy seed={seed}")
}

// ---------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------

proptest! {
    /// Events come out in (time, seq) order: by time, and FIFO among equal times; a
    /// cancelled event never comes out.
    #[test]
    fn queue_pops_in_time_then_seq_order(
        ops in prop::collection::vec((0u64..50, any::<bool>()), 1..300)
    ) {
        let mut q = EventQueue::new();
        let mut expected = Vec::new();
        for (i, (t, cancel)) in ops.iter().enumerate() {
            let id = q.schedule_at(SimTime::from_millis(*t), i);
            if *cancel {
                prop_assert!(q.cancel(id));
            } else {
                expected.push((*t, i));
            }
        }
        expected.sort();
        let got: Vec<(u64, usize)> =
            std::iter::from_fn(|| q.pop().map(|(t, i)| (t.as_millis(), i))).collect();
        prop_assert_eq!(got, expected);
    }

    /// Scheduling while popping (as a world does) keeps the order, and the clock never
    /// goes backwards.
    #[test]
    fn queue_clock_is_monotonic(delays in prop::collection::vec(0u64..20, 1..200)) {
        let mut q = EventQueue::new();
        q.schedule_in(SimDuration::ZERO, 0usize);
        let mut last = SimTime::ZERO;
        let mut k = 0;
        while let Some((t, _)) = q.pop() {
            prop_assert!(t >= last);
            last = t;
            if k < delays.len() {
                q.schedule_in(SimDuration::from_millis(delays[k]), k);
                k += 1;
            }
        }
        prop_assert_eq!(k, delays.len());
    }
}

// ---------------------------------------------------------------------------------
// RNG
// ---------------------------------------------------------------------------------

proptest! {
    /// Drawing more from one fork never changes what a sibling fork produces.
    #[test]
    fn fork_streams_are_independent(seed in any::<u64>(), extra in 0usize..500) {
        let root = SimRng::new(seed);
        let mut a1 = root.fork("a");
        let b_alone: Vec<u64> = (0..16).map(|_| root.fork("b").next_u64()).collect();
        for _ in 0..extra {
            a1.next_u64();
        }
        let mut b = root.fork("b");
        let b_after: Vec<u64> = (0..16).map(|_| { let _ = a1.next_u64(); b.next_u64() }).collect();
        // The first draw of a fresh "b" equals the first draw of "b" after "a" drew a lot.
        prop_assert_eq!(b_alone[0], b_after[0]);
        // And the parent's position does not matter either.
        let mut moved = root.clone();
        for _ in 0..extra { moved.next_u64(); }
        prop_assert_eq!(moved.fork("b").next_u64(), b_alone[0]);
        prop_assert_ne!(root.fork("a").next_u64(), root.fork("b").next_u64());
    }
}

#[test]
fn nested_forks_are_not_commutative() {
    let r = SimRng::new(1);
    assert_ne!(
        r.fork("a").fork("b").next_u64(),
        r.fork("b").fork("a").next_u64()
    );
    assert_ne!(
        r.fork_indexed("client", 1).next_u64(),
        r.fork_indexed("client", 2).next_u64()
    );
}

// ---------------------------------------------------------------------------------
// Fault plans: JSON round trip, validation with named fields
// ---------------------------------------------------------------------------------

proptest! {
    #[test]
    fn plan_json_round_trips(plan in FaultPlan::strategy(&toy_profile())) {
        prop_assert!(plan.validate().is_ok());
        let back = FaultPlan::from_json(&plan.to_json()).unwrap();
        prop_assert_eq!(&back, &plan);
        let compact = serde_json::to_string(&plan).unwrap();
        prop_assert_eq!(FaultPlan::from_json(&compact).unwrap(), plan);
    }
}

fn plan_error(json: &str) -> String {
    match FaultPlan::from_json(json) {
        Ok(p) => panic!("accepted a bad plan: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_plans_are_rejected_with_the_field_named() {
    let unknown_kind = plan_error(
        r#"{"horizon_ms": 100, "faults": [{"kind": "meteor", "target": "api", "from_ms": 1, "until_ms": 2}]}"#,
    );
    assert!(unknown_kind.contains("faults[0].kind"), "{unknown_kind}");
    assert!(
        unknown_kind.contains("meteor") && unknown_kind.contains("outage"),
        "{unknown_kind}"
    );

    let negative = plan_error(
        r#"{"horizon_ms": 100, "faults": [{"kind": "outage", "target": "api", "from_ms": -5, "until_ms": 2}]}"#,
    );
    assert!(negative.contains("faults[0].from_ms"), "{negative}");
    assert!(negative.contains("line 1"), "{negative}");

    let inverted = plan_error(
        "{\"horizon_ms\": 100,\n \"faults\": [{\"kind\": \"outage\", \"target\": \"api\", \"from_ms\": 50, \"until_ms\": 20}]}",
    );
    assert!(
        inverted.contains("until_ms") && inverted.contains("inverted"),
        "{inverted}"
    );
    assert!(inverted.contains("line 2"), "{inverted}");

    let above_one = plan_error(
        r#"{"horizon_ms": 100, "faults": [
            {"kind": "outage", "target": "api", "from_ms": 1, "until_ms": 2},
            {"kind": "errors", "target": "api", "from_ms": 1, "until_ms": 2, "ratio": "11/10"}]}"#,
    );
    assert!(above_one.contains("faults[1].ratio"), "{above_one}");
    assert!(above_one.contains("above 1"), "{above_one}");

    let unknown_field = plan_error(
        r#"{"horizon_ms": 100, "faults": [{"kind": "outage", "target": "api", "from_ms": 1, "until_ms": 2, "severity": 3}]}"#,
    );
    assert!(unknown_field.contains("severity"), "{unknown_field}");

    let missing = plan_error(
        r#"{"horizon_ms": 100, "faults": [{"kind": "errors", "target": "api", "from_ms": 1, "until_ms": 2}]}"#,
    );
    assert!(
        missing.contains("ratio") && missing.contains("required"),
        "{missing}"
    );

    let unused = plan_error(
        r#"{"horizon_ms": 100, "faults": [{"kind": "outage", "target": "api", "from_ms": 1, "until_ms": 2, "ratio": "1/2"}]}"#,
    );
    assert!(
        unused.contains("ratio") && unused.contains("not used"),
        "{unused}"
    );

    let latency = plan_error(
        r#"{"horizon_ms": 100, "faults": [{"kind": "slow", "target": "api", "from_ms": 1, "until_ms": 2, "latency_ms_min": 9, "latency_ms_max": 3}]}"#,
    );
    assert!(latency.contains("latency_ms_max"), "{latency}");

    assert!(matches!(
        FaultPlan::from_json("{\"horizon_ms\": 1,"),
        Err(PlanError::Json { .. })
    ));
}

// ---------------------------------------------------------------------------------
// Shrinking
// ---------------------------------------------------------------------------------

/// A property that fails whenever the API is seen down for longer than 400 ms. Whatever
/// plan first breaks it, shrinking must end at exactly one fault: an outage long enough.
#[test]
fn failing_plan_shrinks_to_the_one_fault_that_matters() {
    let max = SimDuration::from_millis(400);
    let profile = FaultProfile::new(5_000)
        .target("api")
        .node("client-0")
        .link("net")
        .faults(0, 8)
        .duration_ms(50, 2_000)
        .latency_ms_max(300);
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    for rng_seed in 0u8..4 {
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[rng_seed; 32]);
        let mut runner = TestRunner::new_with_rng(config.clone(), rng);
        let result = runner.run(&FaultPlan::strategy(&profile), |plan| {
            let mut toy = Toy::new(1);
            toy.period_ms = 1;
            toy.max_outage = Some(max);
            let report = Simulation::new(7).plan(plan).run(&mut toy);
            prop_assert!(report.outcome.is_pass(), "{}", report.outcome);
            Ok(())
        });
        match result {
            Err(TestError::Fail(_, plan)) => {
                assert_eq!(plan.faults.len(), 1, "shrunk plan: {}", plan.to_json());
                let f = &plan.faults[0];
                assert_eq!(f.kind, FaultKind::Outage, "{}", plan.to_json());
                assert!(f.duration() > max, "{}", plan.to_json());
            }
            other => panic!("the property should fail and shrink, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Phases, bounds, failures
// ---------------------------------------------------------------------------------

#[test]
fn toy_runs_pass_and_hit_the_faults() {
    let mut coverage = faultline_sim::Coverage::declare(TOY_MARKS.iter().copied());
    for seed in 0..200 {
        let mut toy = Toy::new(3);
        let report = toy_sim(seed).run(&mut toy);
        report.assert_pass();
        assert!(report.end >= report.horizon);
        for (m, n) in &report.coverage.hits {
            for _ in 0..*n.min(&1) {
                coverage.hit(m);
            }
        }
        assert!(report.coverage.undeclared.is_empty());
    }
    assert!(
        coverage.missed().is_empty(),
        "never hit: {:?}",
        coverage.missed()
    );
}

struct Forever;
impl World for Forever {
    type Event = ();
    fn start(&mut self, ctx: &mut Ctx<()>) -> Result<(), Violation> {
        ctx.schedule_in(SimDuration::from_secs(1), ());
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
        ctx.schedule_in(SimDuration::from_secs(1), ());
        Ok(())
    }
    fn is_quiescent(&self, _: &Ctx<()>) -> bool {
        false
    }
}

#[test]
fn a_world_that_never_settles_is_reported_not_hung() {
    let report = Simulation::new(5)
        .plan(FaultPlan::healthy(1_000))
        .liveness_max(SimDuration::from_secs(60))
        .replay_hint("faultline replay forever --seed {seed}")
        .run(&mut Forever);
    assert!(
        matches!(report.outcome, Outcome::NotQuiescent { .. }),
        "{:?}",
        report.outcome
    );
    let text = report.failure().unwrap().to_string();
    assert!(text.contains("did not settle"), "{text}");
    assert!(text.contains("seed:   5"), "{text}");
    assert!(text.contains("faultline replay forever --seed 5"), "{text}");
    assert!(report.end <= SimTime::from_secs(62));
}

struct Spinner;
impl World for Spinner {
    type Event = ();
    fn start(&mut self, ctx: &mut Ctx<()>) -> Result<(), Violation> {
        ctx.schedule_in(SimDuration::ZERO, ());
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
        ctx.schedule_in(SimDuration::ZERO, ()); // time never advances
        Ok(())
    }
    fn is_quiescent(&self, _: &Ctx<()>) -> bool {
        false
    }
}

#[test]
fn a_livelock_at_one_instant_is_bounded_by_events_max() {
    let report = Simulation::new(1).events_max(10_000).run(&mut Spinner);
    assert_eq!(
        report.outcome,
        Outcome::EventsExhausted { events_max: 10_000 }
    );
}

struct Stuck;
impl World for Stuck {
    type Event = ();
    fn start(&mut self, _: &mut Ctx<()>) -> Result<(), Violation> {
        Ok(())
    }
    fn handle(&mut self, _: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
        Ok(())
    }
    fn is_quiescent(&self, _: &Ctx<()>) -> bool {
        false
    }
}

#[test]
fn a_deadlocked_world_is_reported_as_stalled() {
    let report = Simulation::new(1)
        .plan(FaultPlan::healthy(10))
        .run(&mut Stuck);
    assert_eq!(report.outcome, Outcome::Stalled);
    assert_eq!(report.end, SimTime::from_millis(10));
}

#[test]
fn phases_and_fault_edges_arrive_in_order() {
    struct Watch(Vec<String>);
    impl World for Watch {
        type Event = ();
        fn start(&mut self, _: &mut Ctx<()>) -> Result<(), Violation> {
            Ok(())
        }
        fn handle(&mut self, _: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
            Ok(())
        }
        fn on_fault(&mut self, ctx: &mut Ctx<()>, e: FaultEdge) -> Result<(), Violation> {
            self.0.push(format!(
                "{} {} {}",
                ctx.now().as_millis(),
                e.index,
                e.started
            ));
            Ok(())
        }
        fn heal(&mut self, ctx: &mut Ctx<()>) -> Result<(), Violation> {
            assert!(ctx.faults().is_healed());
            assert!(!ctx.faults().is_down("api"));
            self.0.push(format!("heal {}", ctx.now().as_millis()));
            Ok(())
        }
        fn is_quiescent(&self, _: &Ctx<()>) -> bool {
            true
        }
    }
    let plan = FaultPlan::from_json(
        r#"{"horizon_ms": 100, "faults": [
            {"kind": "outage", "target": "api", "from_ms": 10, "until_ms": 20},
            {"kind": "crash", "target": "n", "from_ms": 50, "until_ms": 500},
            {"kind": "outage", "target": "api", "from_ms": 200, "until_ms": 300}]}"#,
    )
    .unwrap();
    let mut w = Watch(Vec::new());
    let report = Simulation::new(0).plan(plan).run(&mut w);
    report.assert_pass();
    assert_eq!(
        w.0,
        vec![
            "10 0 true",
            "20 0 false",
            "50 1 true",
            "100 1 false",
            "heal 100"
        ]
    );
}

#[test]
fn a_violation_carries_invariant_time_seed_and_replay() {
    let plan = FaultPlan::from_json(
        r#"{"horizon_ms": 2000, "faults": [{"kind": "outage", "target": "api", "from_ms": 100, "until_ms": 900}]}"#,
    )
    .unwrap();
    let mut toy = Toy::new(1);
    toy.period_ms = 1;
    toy.max_outage = Some(SimDuration::from_millis(300));
    let report = Simulation::new(99)
        .plan(plan)
        .trace(TraceMode::Ring(50))
        .replay_hint("faultline replay toy --seed {seed}")
        .run(&mut toy);
    let failure = report.failure().expect("must fail");
    let text = failure.to_string();
    assert!(
        text.contains("toy.outage_shorter_than_max violated at t=0.401s"),
        "{text}"
    );
    assert!(text.contains("seed:   99") && text.contains("faultline replay toy --seed 99"));
    assert!(report.trace.len() <= 50);
    assert!(report.trace.last().unwrap().what.contains("VIOLATION"));
}

// ---------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------

#[test]
fn same_seed_same_digest() {
    for seed in 0..20 {
        let report =
            check_determinism(&toy_sim(seed), || Toy::new(3)).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.outcome.is_pass());
    }
}

#[test]
fn different_seeds_differ() {
    let a = toy_sim(1).trace(TraceMode::Full).run(&mut Toy::new(3));
    let b = toy_sim(2).trace(TraceMode::Full).run(&mut Toy::new(3));
    assert_ne!(a.digest, b.digest);
}

#[test]
fn ring_and_full_traces_give_the_same_digest() {
    let a = toy_sim(3).trace(TraceMode::Full).run(&mut Toy::new(3));
    let b = toy_sim(3).trace(TraceMode::Ring(8)).run(&mut Toy::new(3));
    assert_eq!(a.digest, b.digest);
    assert_eq!(b.trace.len(), 8);
}

/// A world that leaks state between runs through a global: the self-check must catch it
/// and point at the first entry that differs.
#[test]
fn determinism_check_catches_a_leaky_world() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    struct Leaky(u64);
    impl World for Leaky {
        type Event = u64;
        fn start(&mut self, ctx: &mut Ctx<u64>) -> Result<(), Violation> {
            self.0 = RUNS.fetch_add(1, Ordering::SeqCst);
            for i in 0..5 {
                ctx.schedule_in(SimDuration::from_millis(i), i);
            }
            Ok(())
        }
        fn handle(&mut self, ctx: &mut Ctx<u64>, e: u64) -> Result<(), Violation> {
            let v = if e == 3 { self.0 } else { 0 };
            ctx.record("leaky", format_args!("step {e} value {v}"));
            Ok(())
        }
        fn is_quiescent(&self, _: &Ctx<u64>) -> bool {
            true
        }
    }
    let err = check_determinism(&Simulation::new(8).plan(FaultPlan::healthy(10)), || {
        Leaky(0)
    })
    .expect_err("a leaky world must be caught");
    let text = err.to_string();
    assert!(text.contains("NONDETERMINISM: seed 8"), "{text}");
    assert!(text.contains("step 3 value"), "{text}");
}

/// Per-seed digests and the sweep digest are the same on 1 or 2 threads, and when the
/// sweep is split into shards and merged.
#[test]
fn sweep_results_do_not_depend_on_threads_or_shards() {
    let range = SeedRange::new(0, 48).unwrap();
    let run = |seed: u64| toy_sim(seed).trace(TraceMode::Full).run(&mut Toy::new(2));
    let summarize = |shard: Shard, jobs: usize| {
        let results = sweep(range, shard, jobs, run, |r| !r.outcome.is_pass(), |_| {}).unwrap();
        let mut s = SweepSummary::new(range, shard);
        let digests: Vec<(u64, u64)> = results
            .iter()
            .map(|r| {
                let report = r.result.as_ref().unwrap();
                s.add(report);
                (r.seed, report.digest)
            })
            .collect();
        (s, digests)
    };
    let (one, d1) = summarize(Shard::ALL, 1);
    let (two, d2) = summarize(Shard::ALL, 2);
    assert_eq!(d1, d2);
    assert_eq!(one.digest, two.digest);
    assert_eq!(one.runs, 48);
    let mut merged = summarize(Shard::new(1, 3).unwrap(), 2).0;
    merged
        .merge(summarize(Shard::new(3, 3).unwrap(), 1).0)
        .unwrap();
    assert!(!merged.is_complete());
    merged
        .merge(summarize(Shard::new(2, 3).unwrap(), 2).0)
        .unwrap();
    assert!(merged.is_complete());
    assert_eq!(merged.digest, one.digest);
    assert_eq!(merged.runs, one.runs);
    assert_eq!(merged.events, one.events);
    assert_eq!(merged.coverage, one.coverage);
    let again = summarize(Shard::new(2, 3).unwrap(), 1).0;
    assert!(
        merged.merge(again).is_err(),
        "a shard merged twice is refused"
    );
    let json = serde_json::to_string(&merged).unwrap();
    let back: SweepSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, merged);
}

/// The golden digest of one toy run. It changes only when the engine, the RNG, the
/// plan generator or the toy world changes on purpose; update it in the same commit
/// and say why.
#[test]
fn golden_digest() {
    let report = toy_sim(42).trace(TraceMode::Full).run(&mut Toy::new(3));
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events),
        (10_091_567_986_908_219_343, 3_005),
        "golden digest changed; plan was {}",
        toy_plan(42).to_json()
    );
}

/// A world is told when its run stops without passing, at the time it stopped, once:
/// on its own violation, on a stall; never after a passing finish.
#[test]
fn a_run_that_stops_without_passing_tells_the_world_when() {
    /// Ticks every 10 ms until the horizon; fails at tick `fail_at` if given; settles
    /// (or not) as `settles` says.
    struct Ticks {
        ticks: u64,
        fail_at: Option<u64>,
        settles: bool,
        stopped: Vec<SimTime>,
    }
    impl World for Ticks {
        type Event = ();
        fn start(&mut self, ctx: &mut Ctx<()>) -> Result<(), Violation> {
            ctx.schedule_in(SimDuration::from_millis(10), ());
            Ok(())
        }
        fn handle(&mut self, ctx: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
            self.ticks += 1;
            if Some(self.ticks) == self.fail_at {
                return Err(Violation::new("ticks.fail", "failed on purpose"));
            }
            if !ctx.is_healed() {
                ctx.schedule_in(SimDuration::from_millis(10), ());
            }
            Ok(())
        }
        fn is_quiescent(&self, _: &Ctx<()>) -> bool {
            self.settles
        }
        fn stopped(&mut self, ctx: &Ctx<()>) {
            self.stopped.push(ctx.now());
        }
    }
    let run = |fail_at, settles| {
        let mut w = Ticks {
            ticks: 0,
            fail_at,
            settles,
            stopped: Vec::new(),
        };
        let report = Simulation::new(1)
            .plan(FaultPlan::healthy(1_000))
            .run(&mut w);
        (report, w.stopped)
    };
    let (report, stopped) = run(Some(5), true);
    assert_eq!(report.outcome.invariant(), Some("ticks.fail"));
    assert_eq!(stopped, vec![SimTime::from_millis(50)]);
    assert_eq!(stopped[0], report.end);
    let (report, stopped) = run(None, false);
    assert_eq!(report.outcome, Outcome::Stalled);
    assert_eq!(stopped, vec![report.end]);
    let (report, stopped) = run(None, true);
    assert!(report.outcome.is_pass());
    assert!(stopped.is_empty());
}
