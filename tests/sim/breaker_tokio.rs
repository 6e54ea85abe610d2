//! The tokio harness on the breaker: faultline's `Resilient` and stacks nobody here
//! wrote (a plain tower timeout + retry stack) run as real async code in the hosted SMS
//! world, judged by black-box oracles from what the API and the callers saw.

use faultline::breaker::contract::{Policy, TripRule};
use faultline::breaker::hosted::{
    BreakerTokioPattern, HostedSms, SmsApi, SmsReceipt, SmsRequest, Stack, caller, service_caller,
};
use faultline::breaker::world::SmsKnobs;
use faultline::harness::{Pattern, Plugin};
use faultline_sim::{Outcome, TraceMode};
use std::time::Duration;

/// Seeds every test here sweeps.
const SEEDS: std::ops::Range<u64> = 0..40;

fn first_failure(pattern: &dyn Pattern, mutant: Option<&str>) -> Option<(u64, Outcome)> {
    SEEDS.clone().find_map(|seed| {
        let run = pattern
            .run(seed, &pattern.plan(seed), TraceMode::Off, mutant)
            .expect("runs");
        (!run.report.outcome.is_pass()).then_some((seed, run.report.outcome))
    })
}

#[test]
fn resilient_passes_every_seed() {
    if let Some((seed, outcome)) = first_failure(&BreakerTokioPattern, None) {
        panic!("seed {seed}: {outcome:?}");
    }
}

#[test]
fn every_async_mutant_is_caught_by_its_invariant() {
    for m in BreakerTokioPattern.mutants() {
        let (seed, outcome) = first_failure(&BreakerTokioPattern, Some(m.name))
            .unwrap_or_else(|| panic!("mutant {} survived seeds {SEEDS:?}", m.name));
        assert_eq!(
            outcome.invariant(),
            Some(m.expected),
            "mutant {} at seed {seed}: {outcome:?}",
            m.name
        );
    }
}

/// The black-box oracles stand alone: with the white-box checks off, each mutant is
/// still caught, by the invariant it is meant for.
#[test]
fn every_async_mutant_is_caught_with_the_white_box_off() {
    use faultline::harness::Scenario;
    let p = BreakerTokioPattern;
    for m in p.mutants() {
        let caught = SEEDS.clone().find_map(|seed| {
            let knobs = p.seed_knobs(seed);
            let world = p.mutant(m.name).unwrap().world(&knobs).unwrap().black_box();
            let (report, _) = p.simulate(world, p.fault_plan(&knobs), TraceMode::Off);
            (!report.outcome.is_pass()).then_some((seed, report.outcome))
        });
        let (seed, outcome) =
            caught.unwrap_or_else(|| panic!("mutant {} survived the black box", m.name));
        // `breaker.half_open_limit` reads the breaker's transitions (a white-box check in
        // this world): with it off, a half-open flood shows as load over the outage.
        let expected = if m.expected == faultline::breaker::invariants::HALF_OPEN_LIMIT {
            faultline::breaker::invariants::LOAD_BOUND
        } else {
            m.expected
        };
        assert_eq!(
            outcome.invariant(),
            Some(expected),
            "{} seed {seed}",
            m.name
        );
    }
}

#[test]
fn same_seed_same_digest_three_times() {
    let plan = BreakerTokioPattern.plan(7);
    let digests: Vec<u64> = (0..3)
        .map(|_| {
            BreakerTokioPattern
                .run(7, &plan, TraceMode::Off, None)
                .expect("runs")
                .report
                .digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[1], digests[2]);
}

#[test]
fn golden_digest() {
    let run = BreakerTokioPattern
        .run(7, &BreakerTokioPattern.plan(7), TraceMode::Off, None)
        .expect("runs");
    run.report.assert_pass();
    assert_eq!(
        run.report.digest, 16913873500307744345,
        "breaker-tokio golden digest changed"
    );
    // Every observation is digested whatever the trace keeps.
    let full = BreakerTokioPattern
        .run(7, &BreakerTokioPattern.plan(7), TraceMode::Full, None)
        .expect("runs");
    assert_eq!(full.report.digest, run.report.digest);
}

/// What a user who put tower's timeout and retry in front of the API hopes for: that
/// it does not hammer a dead API. Declared as a breaker that trips after 5 failures in
/// a row and probes once a second: the stack has no breaker, so it cannot keep that.
fn hoped_policy(k: &SmsKnobs) -> Policy {
    Policy {
        trip: TripRule::ConsecutiveFailures { failures: 5 },
        half_open_calls_permitted: 1,
        wait_in_open_min: Duration::from_secs(1),
        wait_in_open_max: Duration::from_secs(1),
        answer_within: Duration::from_millis(k.timeout_ms),
        in_progress_max: u32::MAX,
    }
}

/// Retries every error up to twice more: tower's own `Policy` trait, as a user writes it.
#[derive(Clone)]
struct Attempts(u32);

impl<E> tower::retry::Policy<SmsRequest, SmsReceipt, E> for Attempts {
    type Future = std::future::Ready<()>;
    fn retry(
        &mut self,
        _: &mut SmsRequest,
        result: &mut Result<SmsReceipt, E>,
    ) -> Option<Self::Future> {
        (result.is_err() && self.0 > 0).then(|| {
            self.0 -= 1;
            std::future::ready(())
        })
    }
    fn clone_request(&mut self, req: &SmsRequest) -> Option<SmsRequest> {
        Some(*req)
    }
}

fn tower_stack() -> Plugin<BreakerTokioPattern, HostedSms> {
    Plugin::infallible(
        BreakerTokioPattern,
        "tower-timeout-retry",
        |k: &SmsKnobs| {
            let deadline = Duration::from_millis(k.timeout_ms);
            let stack = Stack::new(hoped_policy(k), move |_, api: SmsApi| {
                // The whole call under the deadline, each attempt under a third of it.
                let service = tower::ServiceBuilder::new()
                    .timeout(deadline)
                    .retry(Attempts(2))
                    .timeout(deadline / 3)
                    .service(api);
                Ok::<_, String>(service_caller(service))
            });
            HostedSms::new(k.clone(), stack)
        },
    )
}

/// Runs `stack` through the check API as a user's `#[test]` would (seeds 0..40 unless
/// `FAULTLINE_SEEDS` or `FAULTLINE_REPLAY` say otherwise), requires it to be caught by `invariant`, and replays the shrunk plan file
/// the failure names: it fails the same way.
pub fn caught_by_check(
    stack: &Plugin<BreakerTokioPattern, HostedSms>,
    test: &str,
    invariant: &str,
) -> faultline::check::Failure {
    use faultline::check::Check;
    let out = std::env::temp_dir().join(format!("faultline-check-{}", stack.name()));
    let check = Check::new(stack)
        .out(&out)
        .test_name(test)
        .seeds(faultline_sim::SeedRange { start: 0, end: 40 });
    // As a user's test does: `FAULTLINE_SEEDS` or `FAULTLINE_REPLAY` steer it.
    let verdict = check.try_run().expect("the check runs");
    let failure = verdict
        .failure()
        .unwrap_or_else(|| panic!("{} passed every seed", stack.name()))
        .clone();
    eprintln!("{failure}");
    assert_eq!(failure.invariant, invariant, "{failure}");
    let again = check.replay(&failure.plan_file).expect("the plan replays");
    assert_eq!(
        again.failure().map(|f| f.invariant.as_str()),
        Some(invariant),
        "the replay of {}",
        failure.plan_file.display()
    );
    failure
}

#[test]
fn a_tower_timeout_and_retry_stack_is_caught_flooding_an_outage() {
    caught_by_check(
        &tower_stack(),
        "breaker_tokio::a_tower_timeout_and_retry_stack_is_caught_flooding_an_outage",
        "breaker.load_bound",
    );
}

/// faultline's tower layer around the API, as a service puts it around its HTTP client:
/// the reference's stack (built from the knobs), declaring the reference's policy, judged
/// by the black-box oracles alone (the layer's breaker is not read). `half_open` set:
/// the same layer around a stack whose breaker admits that many half-open probes while
/// the declared policy keeps the knobs' own (a flooding mutant of the layer).
fn tower_layer(half_open: Option<u32>) -> Plugin<BreakerTokioPattern, HostedSms> {
    use faultline::breaker::hosted::reference_resilient;
    use faultline::breaker::tokio::tower::ResilienceLayer;
    let name = if half_open.is_some() {
        "faultline-layer-half-open-floods"
    } else {
        "faultline-layer"
    };
    Plugin::infallible(BreakerTokioPattern, name, move |k: &SmsKnobs| {
        let policy = k.reference_policy().expect("the knobs' policy");
        let stack = Stack::new(policy, move |k: &SmsKnobs, api: SmsApi| {
            let mut built = k.clone();
            if let Some(probes) = half_open {
                built.half_open_calls_permitted = probes;
            }
            let resilient = reference_resilient(&built).map_err(|e| e.to_string())?;
            let service = tower::ServiceBuilder::new()
                .layer(ResilienceLayer::new(resilient))
                .service(api);
            Ok::<_, String>(service_caller(service))
        });
        HostedSms::new(k.clone(), stack)
    })
}

#[test]
fn faultline_tower_layer_passes_every_seed() {
    let p = tower_layer(None);
    for seed in SEEDS {
        let outcome = p_run(&p, seed);
        assert!(outcome.is_pass(), "seed {seed}: {outcome:?}");
    }
}

#[test]
fn a_tower_layer_whose_half_open_floods_is_caught() {
    caught_by_check(
        &tower_layer(Some(10_000)),
        "breaker_tokio::a_tower_layer_whose_half_open_floods_is_caught",
        "breaker.load_bound",
    );
}

/// A stack that picks its path with an unbiased `tokio::select!` (tokio draws the
/// branch order from an unseeded generator): the determinism check must report it.
fn coin_flipping_stack() -> Plugin<BreakerTokioPattern, HostedSms> {
    Plugin::infallible(BreakerTokioPattern, "select-coin", |k: &SmsKnobs| {
        let policy = k.reference_policy().expect("policy");
        let stack = Stack::new(policy, |_, api: SmsApi| {
            Ok::<_, String>(caller(move |request: SmsRequest| {
                let api = api.clone();
                async move {
                    let twice = tokio::select! {
                        _ = std::future::ready(()) => false,
                        _ = std::future::ready(()) => true,
                    };
                    let first = api.send(request).await;
                    if twice && first.is_err() {
                        return api.send(request).await;
                    }
                    first
                }
            }))
        });
        HostedSms::new(k.clone(), stack)
    })
}

#[test]
fn an_unbiased_select_is_reported_by_the_determinism_check() {
    let p = coin_flipping_stack();
    let run = p.run(3, &p.plan(3), TraceMode::Off, None).expect("runs");
    let Outcome::Violated(v) = &run.report.outcome else {
        panic!("not reported: {:?}", run.report.outcome);
    };
    assert_eq!(v.invariant, "sim.determinism", "{v}");
    assert!(v.message.contains("first difference"), "{v}");
}

/// failsafe and recloser read `std::time::Instant`: hosted with faultline-clock's
/// virtual monotonic clock, set from engine time before every poll of a caller's task.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod real_clock_breakers {
    use super::*;
    use faultline::breaker::circuit::SlidingWindow;
    use faultline_sim::SimTime;

    thread_local! {
        /// One virtual clock per test thread, for every run on it (each run starts
        /// its stack afresh at engine time zero).
        static VIRTUAL: faultline_clock::Virtual =
            faultline_clock::Virtual::install(Duration::from_secs(3_600)).expect("virtual clock");
    }

    /// `call` under `deadline`, a timeout an error like any other.
    async fn within(
        deadline: Duration,
        call: impl std::future::Future<
            Output = Result<SmsReceipt, faultline::breaker::contract::ApiError>,
        >,
    ) -> Result<SmsReceipt, String> {
        match tokio::time::timeout(deadline, call).await {
            Ok(reply) => reply.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_string()),
        }
    }

    fn follow() -> Box<dyn FnMut(SimTime)> {
        Box::new(|t| VIRTUAL.with(|v| v.set(Duration::from_nanos(t.as_nanos()))))
    }

    /// failsafe 1.3: five failures in a row open it for 2 s; the user believes it then
    /// lets one probe through.
    pub fn failsafe_stack() -> Plugin<BreakerTokioPattern, HostedSms> {
        Plugin::infallible(BreakerTokioPattern, "failsafe", |k: &SmsKnobs| {
            let deadline = Duration::from_millis(k.timeout_ms);
            let policy = Policy {
                trip: TripRule::ConsecutiveFailures { failures: 5 },
                half_open_calls_permitted: 1,
                wait_in_open_min: Duration::from_secs(2),
                wait_in_open_max: Duration::from_secs(2),
                answer_within: deadline,
                in_progress_max: u32::MAX,
            };
            let stack = Stack::new(policy, move |_, api: SmsApi| {
                let breaker = std::rc::Rc::new(
                    failsafe::Config::new()
                        .failure_policy(failsafe::failure_policy::consecutive_failures(
                            5,
                            failsafe::backoff::constant(Duration::from_secs(2)),
                        ))
                        .build(),
                );
                Ok::<_, String>(caller(move |request: SmsRequest| {
                    let (api, breaker) = (api.clone(), std::rc::Rc::clone(&breaker));
                    async move {
                        // The timeout inside the breaker's future, so a timeout counts
                        // as a failure (outside it, the dropped future counts nothing).
                        let call = failsafe::futures::CircuitBreaker::call(
                            &*breaker,
                            within(deadline, api.send(request)),
                        );
                        call.await.map_err(|e| format!("{e:?}"))
                    }
                }))
            })
            .following_time(follow);
            HostedSms::new(k.clone(), stack)
        })
    }

    /// recloser 1.4: a count window of 20, 50 % errors, 2 s open, a half-open window
    /// of 3 calls, as its docs describe it.
    pub fn recloser_stack() -> Plugin<BreakerTokioPattern, HostedSms> {
        Plugin::infallible(BreakerTokioPattern, "recloser", |k: &SmsKnobs| {
            let deadline = Duration::from_millis(k.timeout_ms);
            let policy = Policy {
                trip: TripRule::Rate {
                    window: SlidingWindow::Count { size: 20 },
                    minimum_calls: 20,
                    failure_rate_threshold_permille: 500,
                    slow_call_rate_threshold_permille: 1000,
                    slow_call_duration: Duration::from_secs(86_400),
                },
                half_open_calls_permitted: 3,
                wait_in_open_min: Duration::from_secs(2),
                wait_in_open_max: Duration::from_secs(2),
                answer_within: deadline,
                in_progress_max: u32::MAX,
            };
            let stack = Stack::new(policy, move |_, api: SmsApi| {
                let breaker = std::rc::Rc::new(recloser::AsyncRecloser::from(
                    recloser::Recloser::custom()
                        .error_rate(0.5)
                        .closed_len(20)
                        .half_open_len(3)
                        .open_wait(Duration::from_secs(2))
                        .build(),
                ));
                Ok::<_, String>(caller(move |request: SmsRequest| {
                    let (api, breaker) = (api.clone(), std::rc::Rc::clone(&breaker));
                    async move {
                        let call = breaker.call(within(deadline, api.send(request)));
                        call.await.map_err(|e| format!("{e:?}"))
                    }
                }))
            })
            .following_time(follow);
            HostedSms::new(k.clone(), stack)
        })
    }

    #[test]
    fn failsafe_is_caught_admitting_unbounded_half_open_probes() {
        let p = failsafe_stack();
        let (seed, outcome) = first_failure(&p, None).expect("failsafe breaks some seed");
        eprintln!("failsafe: seed {seed}: {outcome:?}");
        assert_eq!(
            outcome.invariant(),
            Some("breaker.load_bound"),
            "seed {seed}"
        );
    }

    #[test]
    fn recloser_is_caught_admitting_unbounded_half_open_probes() {
        let p = recloser_stack();
        let (seed, outcome) = first_failure(&p, None).expect("recloser breaks some seed");
        eprintln!("recloser: seed {seed}: {outcome:?}");
        assert_eq!(
            outcome.invariant(),
            Some("breaker.load_bound"),
            "seed {seed}"
        );
    }
}
/// The survey behind the README's findings: of seeds 0..200, how many each outside
/// stack fails, by which invariant, and its worst load (calls / bound). Run with
/// `cargo test --release --test sim breaker_tokio::survey -- --ignored --nocapture`.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[test]
#[ignore]
fn survey() {
    let stacks = [
        tower_stack(),
        real_clock_breakers::failsafe_stack(),
        real_clock_breakers::recloser_stack(),
    ];
    for p in stacks {
        let (mut failed, mut worst) = (0, (0.0f64, 0u64, String::new()));
        for seed in 0..200 {
            let run = p.run(seed, &p.plan(seed), TraceMode::Off, None).unwrap();
            if let Outcome::Violated(v) = &run.report.outcome {
                failed += 1;
                let words: Vec<&str> = v.message.split_whitespace().collect();
                let calls: f64 = words[0].parse().unwrap_or(0.0);
                let bound: f64 = words
                    .iter()
                    .position(|w| *w == "allows")
                    .and_then(|i| words[i + 1].trim_end_matches(':').parse().ok())
                    .unwrap_or(f64::INFINITY);
                if calls / bound > worst.0 {
                    worst = (calls / bound, seed, v.to_string());
                }
            }
        }
        eprintln!(
            "{}: {failed}/200 seeds fail; worst seed {} ({:.1}x): {}",
            p.name(),
            worst.1,
            worst.0,
            worst.2
        );
    }
}

/// The white-box checks have teeth: a stack that calls the API straight (under the
/// deadline) while reporting transitions that contradict what the API saw is caught by
/// the white-box invariant each lie breaks, and passes with the white box off (the
/// declared policy asks nothing the black box could fail).
#[test]
fn white_box_checks_catch_reports_that_contradict_the_api() {
    use faultline::breaker::circuit::State;
    use faultline::breaker::hosted::{Built, Transitions};
    use faultline_sim::SimTime;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    type Script = fn() -> Vec<(SimTime, State, State)>;
    let lies: [(&str, Script); 3] = [
        ("breaker.accounting", || {
            vec![(SimTime::from_millis(1), State::Open, State::Closed)]
        }),
        ("breaker.no_call_while_open", || {
            vec![(SimTime::from_millis(1), State::Closed, State::Open)]
        }),
        ("breaker.half_open_limit", || {
            vec![
                (SimTime::from_millis(1), State::Closed, State::Open),
                (SimTime::from_millis(2), State::Open, State::HalfOpen),
            ]
        }),
    ];
    for (invariant, script) in lies {
        for white_box in [true, false] {
            let plugin = Plugin::infallible(BreakerTokioPattern, "liar", move |k: &SmsKnobs| {
                let deadline = Duration::from_millis(k.timeout_ms);
                let policy = Policy {
                    trip: TripRule::ConsecutiveFailures { failures: u32::MAX },
                    half_open_calls_permitted: 1,
                    wait_in_open_min: Duration::from_secs(1),
                    wait_in_open_max: Duration::from_secs(1),
                    answer_within: deadline,
                    in_progress_max: u32::MAX,
                };
                let stack = Stack::new(policy, move |_, api: SmsApi| {
                    let told = std::rc::Rc::new(RefCell::new(VecDeque::from(script())));
                    let transitions: Transitions =
                        std::rc::Rc::new(move || told.borrow_mut().pop_front());
                    let caller = caller(move |request: SmsRequest| {
                        let api = api.clone();
                        async move {
                            match tokio::time::timeout(deadline, api.send(request)).await {
                                Ok(reply) => reply.map_err(|e| e.to_string()),
                                Err(_) => Err("timed out".to_string()),
                            }
                        }
                    });
                    Ok::<_, String>(Built {
                        caller,
                        transitions: Some(transitions),
                    })
                });
                HostedSms::new(k.clone(), if white_box { stack } else { stack.black_box() })
            });
            let outcome = p_run(&plugin, 0);
            if white_box {
                assert_eq!(outcome.invariant(), Some(invariant), "{outcome:?}");
            } else {
                assert!(
                    outcome.is_pass(),
                    "{invariant}, black box only: {outcome:?}"
                );
            }
        }
    }
}

fn p_run(p: &Plugin<BreakerTokioPattern, HostedSms>, seed: u64) -> Outcome {
    p.run(seed, &p.plan(seed), TraceMode::Off, None)
        .expect("runs")
        .report
        .outcome
}

/// A hosted run stopped before the faults healed reports the loads of the failing
/// windows up to the stop (they were measured only at the healing, so such a run said
/// "no window in which every call failed" and had no load metric).
#[test]
fn a_run_stopped_early_reports_its_window_loads_up_to_the_stop() {
    use faultline::harness::Scenario;
    use faultline_sim::FaultKind;
    let p = BreakerTokioPattern;
    let name = "no_timeout";
    let found = SEEDS.clone().find_map(|seed| {
        let knobs = p.seed_knobs(seed);
        let plan = p.fault_plan(&knobs);
        let world = p.mutant(name).unwrap().world(&knobs).unwrap();
        let (report, world) = p.simulate(world, plan.clone(), TraceMode::Off);
        let outage_before_stop = plan
            .faults
            .iter()
            .any(|f| f.kind == FaultKind::Outage && f.from() < report.end);
        (!report.outcome.is_pass() && report.end < report.horizon && outage_before_stop)
            .then_some((seed, plan, report, world))
    });
    let (seed, plan, report, world) =
        found.unwrap_or_else(|| panic!("no seed of {SEEDS:?} stops {name} early after an outage"));
    let loads = &world.stats.loads;
    assert!(
        !loads.is_empty(),
        "seed {seed}: the outage before the stop was measured"
    );
    for (from, until, _, bound) in loads {
        assert!(
            from < until && *until <= report.end,
            "seed {seed}: {loads:?}"
        );
        assert!(*bound > 0);
    }
    let worst = loads
        .iter()
        .map(|l| l.2 as f64 / l.3 as f64)
        .reduce(f64::max);
    let run = p.run(seed, &plan, TraceMode::Off, Some(name)).unwrap();
    let metric = run
        .metrics
        .iter()
        .find(|m| m.name == "worst failing-window load / bound")
        .unwrap();
    assert_eq!(metric.value, worst);
}
