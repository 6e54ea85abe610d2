//! Saga throughput: checkouts driven to rest per second by the sans-IO orchestrator, and
//! simulated events per second of the whole checkout world.
//!
//! - `saga/orchestrator`: [`SAGAS`] checkouts are started on one [`Orchestrator`] (all
//!   in flight at once) and driven to rest against in-memory [`Services`], every
//!   [`Output::Send`] delivered synchronously and its reply fed straight back (as in
//!   the `faultline::saga` module example), every [`Output::Append`] pushed to a `Vec`
//!   standing for the durable log. No message is lost, so no timer fires. Throughput is
//!   in sagas.
//!   - `no_faults`: enough stock, no declines: every saga completes (3 steps, 8 log
//!     records, 3 commands).
//!   - `refusals`: every 5th saga's card is declined: those compensate inventory and
//!     order in reverse (12 records, 5 commands), the others complete.
//!   - `choreography_no_faults` / `choreography_refusals`: the same checkouts through
//!     the choreography's sans-IO [`Reactor`]: each event handed to every participant
//!     that reacts to it, the events it publishes queued in a `VecDeque` standing for
//!     the bus, until none is left.
//! - `saga/world`, `saga/choreo_world`: the whole simulated checkout world of seed 7,
//!   orchestrated or choreographed (its knobs and its default-profile fault plan, trace
//!   off), run through `faultline_sim::Simulation` with the reference bounds. Throughput
//!   is in simulated events; `saga/world_sagas` counts the same orchestrated run in
//!   sagas (checkouts driven to rest under the default fault profile).
//!
//! Setup (building the orchestrator, the services, the world and its plan) is outside
//! the timed part; every figure is checked once before it is measured.
//!
//! Run with `cargo bench --bench saga`; `cargo bench --bench saga -- --test` runs each
//! function once as a smoke test.

// Bench code, not user input: a failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/mod.rs"]
mod support;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use faultline::clock::Instant;
use faultline::saga::choreographed::core::{CheckoutEvent, Reactor, Service};
use faultline::saga::choreographed::pattern::ChoreoPattern;
use faultline::saga::orchestrated::pattern::SagaPattern;
use faultline::saga::{
    InventoryService, LogRecord, Orchestrator, Order, Output, PaymentService, SagaConfig, SagaId,
    SagaState, Services,
};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

/// Sagas per iteration of the orchestrator benchmarks.
const SAGAS: u64 = 1_000;
/// Every `DECLINE_EVERY`-th saga is declined in `refusals`.
const DECLINE_EVERY: u64 = 5;
/// The item every order buys.
const ITEM: u32 = 1;
/// Items per order.
const QTY: u32 = 2;
/// The world's seed (the golden seed).
const WORLD_SEED: u64 = 7;

/// The orders: saga `i` (1-based) buys [`QTY`] of [`ITEM`] for `100 + i`.
fn orders() -> Vec<(SagaId, Order)> {
    (1..=SAGAS)
        .map(|i| {
            let order = Order {
                item: ITEM,
                qty: QTY,
                amount: 100 + i,
            };
            (SagaId(i), order)
        })
        .collect()
}

fn declined(id: SagaId) -> bool {
    id.0.is_multiple_of(DECLINE_EVERY)
}

/// Fresh services with stock for every order; `refusals` declines every 5th card.
fn services(refusals: bool) -> Services {
    let stock = u32::try_from(SAGAS).unwrap() * QTY;
    let mut payment = PaymentService::new();
    if refusals {
        payment = payment.with_declined((1..=SAGAS).map(SagaId).filter(|s| declined(*s)));
    }
    Services::new(InventoryService::new([(ITEM, stock)]), payment)
}

/// Everything one iteration leaves behind (dropped outside the timed part).
struct Run {
    orchestrator: Orchestrator,
    services: Services,
    log: Vec<LogRecord>,
}

/// Starts every order, then drains the outputs, delivering each command synchronously.
fn drive(orders: &[(SagaId, Order)], mut run: Run) -> Run {
    let now = Instant::ZERO;
    for &(saga, order) in orders {
        run.orchestrator.start(saga, order, now);
    }
    while let Some(output) = run.orchestrator.poll_output() {
        match output {
            Output::Append(record) => run.log.push(record),
            Output::Send(cmd, attempt) => {
                let reply = run.services.handle(&cmd);
                run.orchestrator
                    .on_reply(cmd.saga, cmd.step, cmd.kind, attempt, reply, now);
            }
            Output::Alert { saga, reason } => panic!("{saga}: {reason}"),
        }
    }
    run
}

fn fresh(refusals: bool) -> Run {
    Run {
        orchestrator: Orchestrator::new(SagaConfig::default()),
        services: services(refusals),
        log: Vec::new(),
    }
}

/// Checks one run: every saga at rest in the expected state, stock and money conserved.
fn check(orders: &[(SagaId, Order)], run: &Run, refusals: bool) {
    let o = &run.orchestrator;
    assert!(o.is_at_rest());
    assert_eq!(o.poll_timeout(), None, "no timer left");
    let mut captured: u128 = 0;
    let mut completed = 0;
    for &(saga, order) in orders {
        let expected = if refusals && declined(saga) {
            SagaState::Compensated
        } else {
            captured += u128::from(order.amount);
            completed += 1;
            SagaState::Completed
        };
        assert_eq!(o.state(saga), Some(expected), "{saga}");
    }
    let totals = o.totals();
    assert_eq!(totals.started, SAGAS);
    assert_eq!(totals.completed, completed);
    assert_eq!(totals.compensated, SAGAS - completed);
    assert_eq!(totals.failed, 0);
    assert!(run.services.is_conserved());
    assert_eq!(run.services.payment.captured_total(), captured);
    assert_eq!(
        run.services.inventory.available(ITEM),
        u32::try_from(SAGAS - completed).unwrap() * QTY
    );
}

fn orchestrator(c: &mut Criterion) {
    let orders = orders();
    let mut group = c.benchmark_group("saga/orchestrator");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(SAGAS));
    for (name, refusals) in [("no_faults", false), ("refusals", true)] {
        check(&orders, &drive(&orders, fresh(refusals)), refusals);
        group.bench_function(name, |b| {
            b.iter_batched(
                || fresh(refusals),
                |run| drive(black_box(&orders), run),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Drives `orders` through the choreography's reactions to rest.
fn choreograph(orders: &[(SagaId, Order)], mut reactor: Reactor) -> Reactor {
    let mut bus: VecDeque<CheckoutEvent> = orders
        .iter()
        .map(|&(saga, order)| CheckoutEvent::CheckoutRequested { saga, order })
        .collect();
    while let Some(event) = bus.pop_front() {
        for p in Service::ALL {
            if reactor.reacts_to(p, &event) {
                bus.extend(reactor.react(p, &event));
            }
        }
    }
    reactor
}

fn choreography(c: &mut Criterion) {
    let orders = orders();
    let mut group = c.benchmark_group("saga/orchestrator");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(SAGAS));
    for (name, refusals) in [
        ("choreography_no_faults", false),
        ("choreography_refusals", true),
    ] {
        let r = choreograph(&orders, Reactor::new(services(refusals)));
        for &(saga, _) in &orders {
            let expected = if refusals && declined(saga) {
                SagaState::Compensated
            } else {
                SagaState::Completed
            };
            assert_eq!(r.state(saga), Some(expected), "{saga}");
        }
        assert!(r.services().is_conserved());
        group.bench_function(name, |b| {
            b.iter_batched(
                || Reactor::new(services(refusals)),
                |reactor| choreograph(black_box(&orders), reactor),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn choreo_world(c: &mut Criterion) {
    support::world_events(c, "saga/choreo_world", &ChoreoPattern, WORLD_SEED);
}

fn world(c: &mut Criterion) {
    let done = support::world_events(c, "saga/world", &SagaPattern, WORLD_SEED);
    // The same run counted in sagas: checkouts driven to rest per second through the
    // orchestrator under the seed's default-profile fault plan, log disk and network
    // included (simulated, so no time is actually waited).
    support::bench_world(
        c,
        "saga/world_sagas",
        "default_fault_profile",
        &SagaPattern,
        WORLD_SEED,
        done.stats.started,
    );
}

criterion_group!(benches, orchestrator, choreography, world, choreo_world);
criterion_main!(benches);
