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
        assert_eq!(
            outcome.invariant(),
            Some(m.expected),
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
        run.report.digest, 11419700933122214951,
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

#[test]
fn a_tower_timeout_and_retry_stack_is_caught_flooding_an_outage() {
    let tower = tower_stack();
    let (seed, outcome) = first_failure(&tower, None).expect("tower's stack floods some seed");
    assert_eq!(
        outcome.invariant(),
        Some("breaker.load_bound"),
        "seed {seed}: {outcome:?}"
    );
    eprintln!("tower timeout+retry: seed {seed}: {outcome:?}");
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
