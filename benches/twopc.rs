//! Two-phase commit against the saga on the same checkouts: transactions driven to a
//! decision per second by the sans-IO 2PC core, next to the saga [`Orchestrator`], and
//! simulated events per second of the whole 2PC checkout world.
//!
//! - `checkout/no_faults`: [`CHECKOUTS`] checkouts, each buying [`QTY`] of its own item
//!   (so no two transactions contend for a stock row's lock), all started at once and
//!   driven to rest with every message delivered synchronously and its answer fed
//!   straight back, every log append pushed to a `Vec` standing for the durable log.
//!   No message is lost, so no timer fires. Throughput is in checkouts.
//!   - `twopc_coordinator`: a [`Coordinator`] and three [`Cohort`]s; each
//!     transaction is 3 prepares, 3 votes, a decision record, 3 commits, 3 acks and an
//!     end record.
//!   - `saga_orchestrator`: the saga [`Orchestrator`] and [`Services`] on the same
//!     orders (3 commands, 8 log records per saga).
//! - `twopc/world`: the whole simulated 2PC checkout world of seed 7 (the saga's knobs
//!   and fault plan of that seed, trace off), run through `faultline_sim::Simulation`
//!   with the reference bounds. Throughput is in simulated events.
//!
//! Setup is outside the timed part; every figure is checked once before it is measured.
//!
//! Run with `cargo bench --bench twopc`; `cargo bench --bench twopc -- --test` runs
//! each function once as a smoke test.

// Bench code, not user input: a failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/mod.rs"]
mod support;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use faultline::clock::Instant;
use faultline::saga::twopc::core::{
    self as twopc, Cohort, Coordinator, Decision, TwoPcConfig, TxState, step_index,
};
use faultline::saga::twopc::pattern::TwoPcPattern;
use faultline::saga::{
    InventoryService, LogRecord, Orchestrator, Order, Output, PaymentService, SagaConfig, SagaId,
    SagaState, Services,
};
use std::hint::black_box;
use std::time::Duration;

/// Checkouts per iteration.
const CHECKOUTS: u64 = 1_000;
/// Items per order.
const QTY: u32 = 2;
/// The world's seed (the golden seed).
const WORLD_SEED: u64 = 7;

/// Checkout `i` (1-based) buys [`QTY`] of item `i` for `100 + i`.
fn orders() -> Vec<(SagaId, Order)> {
    (1..=CHECKOUTS)
        .map(|i| {
            let order = Order {
                item: u32::try_from(i).unwrap(),
                qty: QTY,
                amount: 100 + i,
            };
            (SagaId(i), order)
        })
        .collect()
}

fn stock() -> Vec<(u32, u32)> {
    (1..=u32::try_from(CHECKOUTS).unwrap())
        .map(|i| (i, QTY))
        .collect()
}

/// Everything one 2PC iteration leaves behind (dropped outside the timed part).
struct TwoPc {
    coordinator: Coordinator,
    participants: [Cohort; 3],
    log: Vec<twopc::TxRecord>,
}

fn fresh_twopc() -> TwoPc {
    let config = TwoPcConfig::default();
    TwoPc {
        coordinator: Coordinator::new(config.clone()),
        participants: [
            Cohort::orders(config.clone()),
            Cohort::inventory(config.clone(), stock()),
            Cohort::payment(config, []),
        ],
        log: Vec::new(),
    }
}

fn drive_twopc(orders: &[(SagaId, Order)], mut run: TwoPc) -> TwoPc {
    let now = Instant::ZERO;
    for &(tx, order) in orders {
        run.coordinator.start(tx, order, now);
    }
    while let Some(output) = run.coordinator.poll_output() {
        match output {
            twopc::CoordinatorOutput::Append(record) => run.log.push(record),
            twopc::CoordinatorOutput::Send(msg) => {
                let answer = run.participants[step_index(msg.step)].handle(&msg, now);
                run.coordinator.on_answer(&answer, now);
            }
        }
    }
    run
}

fn check_twopc(orders: &[(SagaId, Order)], run: &TwoPc) {
    let c = &run.coordinator;
    assert!(c.is_at_rest());
    assert_eq!(c.poll_timeout(), None, "no timer left");
    for &(tx, _) in orders {
        assert_eq!(c.state(tx), Some(TxState::Ended(Decision::Commit)), "{tx}");
    }
    assert_eq!(c.totals().committed, CHECKOUTS);
    assert!(run.participants.iter().all(|p| p.locks_held() == 0));
    let due: u128 = orders.iter().map(|(_, o)| u128::from(o.amount)).sum();
    assert_eq!(run.participants[2].captured_total(), due);
    assert_eq!(run.log.len(), 2 * orders.len());
}

/// Everything one saga iteration leaves behind.
struct Saga {
    orchestrator: Orchestrator,
    services: Services,
    log: Vec<LogRecord>,
}

fn fresh_saga() -> Saga {
    Saga {
        orchestrator: Orchestrator::new(SagaConfig::default()),
        services: Services::new(InventoryService::new(stock()), PaymentService::new()),
        log: Vec::new(),
    }
}

fn drive_saga(orders: &[(SagaId, Order)], mut run: Saga) -> Saga {
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

fn check_saga(orders: &[(SagaId, Order)], run: &Saga) {
    let o = &run.orchestrator;
    assert!(o.is_at_rest());
    for &(saga, _) in orders {
        assert_eq!(o.state(saga), Some(SagaState::Completed), "{saga}");
    }
    let due: u128 = orders.iter().map(|(_, o)| u128::from(o.amount)).sum();
    assert!(run.services.is_conserved());
    assert_eq!(run.services.payment.captured_total(), due);
}

fn checkout(c: &mut Criterion) {
    let orders = orders();
    check_twopc(&orders, &drive_twopc(&orders, fresh_twopc()));
    check_saga(&orders, &drive_saga(&orders, fresh_saga()));
    let mut group = c.benchmark_group("checkout/no_faults");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(CHECKOUTS));
    group.bench_function("twopc_coordinator", |b| {
        b.iter_batched(
            fresh_twopc,
            |run| drive_twopc(black_box(&orders), run),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("saga_orchestrator", |b| {
        b.iter_batched(
            fresh_saga,
            |run| drive_saga(black_box(&orders), run),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn world(c: &mut Criterion) {
    support::world_events(c, "twopc/world", &TwoPcPattern, WORLD_SEED);
}

criterion_group!(benches, checkout, world);
criterion_main!(benches);
