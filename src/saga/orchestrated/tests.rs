//! Unit tests of the orchestrator: its configuration, its log and its state machine,
//! driven by hand and by a small synchronous driver that crashes it at every
//! persistence point.

use crate::clock::Instant;
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::core::*;
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{
    Command, InventoryService, Kind, Order, PaymentService, Refusal, Reply, ReservationState,
    SagaId, SagaState, Services, StepId,
};
use crate::splitmix::SplitMix64;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

const S1: SagaId = SagaId(1);
const ORDER: Order = Order {
    item: 1,
    qty: 2,
    amount: 100,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn config() -> SagaConfig {
    SagaConfig::builder()
        .step_timeout(ms(100))
        .attempts_max(3)
        .compensation_attempts_max(4)
        .backoff(ms(10), ms(40))
        .seed(7)
        .build()
        .unwrap()
}

fn drain(o: &mut Orchestrator) -> Vec<Output> {
    std::iter::from_fn(|| o.poll_output()).collect()
}

/// Handles timeouts until something comes out; returns when and what.
fn fire(o: &mut Orchestrator) -> (Instant, Vec<Output>) {
    for _ in 0..10 {
        let now = o.poll_timeout().expect("a timer is pending");
        o.handle_timeout(now);
        let out = drain(o);
        if !out.is_empty() {
            return (now, out);
        }
    }
    panic!("nothing came out of the timers");
}

fn append(r: LogRecord) -> Output {
    Output::Append(r)
}

fn intent(step: StepId, attempt: u32) -> Output {
    append(LogRecord::StepIntent {
        saga: S1,
        step,
        attempt,
    })
}

fn outcome(step: StepId, ok: bool) -> Output {
    append(LogRecord::StepOutcome {
        saga: S1,
        step,
        ok,
        refusal: None,
    })
}

fn refused(step: StepId, refusal: Refusal) -> Output {
    append(LogRecord::StepOutcome {
        saga: S1,
        step,
        ok: false,
        refusal: Some(refusal),
    })
}

fn comp_intent(step: StepId, attempt: u32) -> Output {
    append(LogRecord::CompensationIntent {
        saga: S1,
        step,
        attempt,
    })
}

fn comp_done(step: StepId) -> Output {
    append(LogRecord::CompensationDone { saga: S1, step })
}

fn ended(state: SagaState) -> Output {
    append(LogRecord::Ended { saga: S1, state })
}

fn send(step: StepId, attempt: u32) -> Output {
    Output::Send(Command::action(S1, step, ORDER), attempt)
}

fn send_comp(step: StepId, attempt: u32) -> Output {
    Output::Send(Command::compensation(S1, step, ORDER), attempt)
}

/// Starts S1 and answers its actions `Ok` up to (not including) `upto`.
fn run_until(o: &mut Orchestrator, upto: StepId) {
    assert!(o.start(S1, ORDER, at(0)));
    drain(o);
    for step in StepId::ALL {
        if step == upto {
            return;
        }
        assert!(o.on_reply(S1, step, Kind::Action, 1, Reply::Ok, at(0)));
        drain(o);
    }
}

// ----- the in-test driver -----

/// What the network does to one sent command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    /// The command never reaches the service.
    LoseRequest,
    /// The service applies it; the reply is lost.
    LoseReply,
    /// The service gets it twice; both replies come back.
    Duplicate,
}

/// Delivers `Send` outputs to real services, appends records to an in-memory
/// durable log, feeds replies back, fires timers, and can crash the orchestrator
/// after any number of performed outputs. The log, the services and replies in
/// flight survive a crash; the orchestrator's memory does not.
struct Driver {
    config: SagaConfig,
    flaw: Flaw,
    orch: Orchestrator,
    services: Services,
    log: Vec<LogRecord>,
    replies: VecDeque<(Command, u32, Reply)>,
    fate: fn(&Command, u32) -> Fate,
    now: Instant,
    performed: usize,
    crashes: u32,
    alerts: Vec<(SagaId, AlertReason)>,
    violations: Vec<String>,
}

impl Driver {
    fn new(config: SagaConfig, services: Services, fate: fn(&Command, u32) -> Fate) -> Self {
        Driver::flawed(config, services, fate, Flaw::None)
    }

    fn flawed(
        config: SagaConfig,
        services: Services,
        fate: fn(&Command, u32) -> Fate,
        flaw: Flaw,
    ) -> Self {
        Driver {
            orch: Orchestrator::new(config.clone())
                .with_flaw(flaw)
                .with_tamper(|o: &Order| Order {
                    qty: o.qty.saturating_add(1),
                    ..*o
                }),
            config,
            flaw,
            services,
            log: Vec::new(),
            replies: VecDeque::new(),
            fate,
            now: Instant::ZERO,
            performed: 0,
            crashes: 0,
            alerts: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn start(&mut self, sagas: &[(u64, Order)]) {
        for (id, order) in sagas {
            assert!(self.orch.start(SagaId(*id), *order, self.now));
        }
    }

    /// Performs the next output, if any.
    fn perform(&mut self) -> bool {
        let Some(out) = self.orch.poll_output() else {
            return false;
        };
        self.performed += 1;
        match out {
            Output::Append(record) => self.log.push(record),
            Output::Send(cmd, attempt) => {
                if !self.log.contains(&LogRecord::intent_for(&cmd, attempt)) {
                    self.violations.push(format!(
                        "write-ahead: {cmd} #{attempt} sent before its intent"
                    ));
                }
                match (self.fate)(&cmd, attempt) {
                    Fate::LoseRequest => {}
                    Fate::LoseReply => {
                        let _ = self.services.handle(&cmd);
                    }
                    Fate::Deliver => {
                        let reply = self.services.handle(&cmd);
                        self.replies.push_back((cmd, attempt, reply));
                    }
                    Fate::Duplicate => {
                        for _ in 0..2 {
                            let reply = self.services.handle(&cmd);
                            self.replies.push_back((cmd, attempt, reply));
                        }
                    }
                }
            }
            Output::Alert { saga, reason } => self.alerts.push((saga, reason)),
        }
        true
    }

    /// One unit of progress: an output, else a reply, else a timer. False when idle.
    fn step(&mut self) -> bool {
        if self.perform() {
            return true;
        }
        if let Some((cmd, attempt, reply)) = self.replies.pop_front() {
            let _ = self
                .orch
                .on_reply(cmd.saga, cmd.step, cmd.kind, attempt, reply, self.now);
            return true;
        }
        if let Some(t) = self.orch.poll_timeout() {
            self.now = self.now.max(t);
            self.orch.handle_timeout(self.now);
            return true;
        }
        false
    }

    /// Runs until idle (false) or until `crash_at` outputs were performed in all
    /// (true: the caller crashes it).
    fn run(&mut self, crash_at: Option<usize>) -> bool {
        for _ in 0..1_000_000 {
            if crash_at.is_some_and(|k| self.performed >= k) {
                return true;
            }
            if !self.step() {
                return false;
            }
        }
        panic!("the driver did not settle");
    }

    /// The orchestrator crashes and a new one recovers from the durable log.
    fn crash_and_recover(&mut self) {
        self.crashes += 1;
        self.orch =
            Orchestrator::recover_flawed(self.config.clone(), &self.log, self.now, self.flaw);
    }

    /// Every invariant at rest; empty when all hold.
    fn check(&self) -> Vec<String> {
        let mut v = self.violations.clone();
        let s = &self.services;
        if !s.inventory.is_conserved() {
            v.push("stock not conserved".into());
        }
        if !s.payment.is_conserved() {
            v.push("money not conserved".into());
        }
        if s.effects_max() > 1 {
            v.push(format!("a key applied {} effects", s.effects_max()));
        }
        for (id, state) in self.orch.sagas() {
            match state {
                SagaState::Completed if !s.holds_all(id) => {
                    v.push(format!("{id} completed without all its effects"));
                }
                SagaState::Compensated if s.holds(id) => {
                    v.push(format!("{id} compensated but still holds an effect"));
                }
                SagaState::Failed if !self.alerts.iter().any(|(a, _)| *a == id) => {
                    v.push(format!("{id} failed without an alert"));
                }
                SagaState::Running | SagaState::Compensating => {
                    v.push(format!("{id} not at rest: {state:?}"));
                }
                _ => {}
            }
        }
        let touched: BTreeSet<SagaId> = s
            .orders
            .orders()
            .map(|(id, _)| id)
            .chain(s.inventory.reservations().map(|(id, _)| id))
            .chain(s.payment.charges().map(|(id, _)| id))
            .collect();
        for id in touched {
            if self.orch.state(id).is_none() && s.holds(id) {
                v.push(format!("{id} holds an effect but the orchestrator lost it"));
            }
        }
        for (i, r) in self.log.iter().enumerate() {
            if let LogRecord::CompensationIntent { saga, step, .. } = *r {
                let sent = self.log[..i].iter().any(|e| {
                    matches!(*e, LogRecord::StepIntent { saga: s2, step: t2, .. }
                        if s2 == saga && t2 == step)
                });
                if !sent {
                    v.push(format!("{saga}: {step} compensated but never sent"));
                }
            }
        }
        v
    }
}

fn scenario_services() -> Services {
    Services::new(
        InventoryService::new([(1, 5), (2, 1)]),
        PaymentService::new().with_decline(|_, amount| amount > 500),
    )
}

/// Six sagas: completions, an out-of-stock, a decline, lost requests, a lost reply
/// (a charge that took effect unbeknownst), a lost compensation, duplicates.
const SCENARIO: [(u64, Order); 6] = [
    (
        1,
        Order {
            item: 1,
            qty: 2,
            amount: 100,
        },
    ),
    (
        2,
        Order {
            item: 2,
            qty: 1,
            amount: 50,
        },
    ),
    (
        3,
        Order {
            item: 2,
            qty: 1,
            amount: 70,
        },
    ),
    (
        4,
        Order {
            item: 1,
            qty: 1,
            amount: 999,
        },
    ),
    (
        5,
        Order {
            item: 1,
            qty: 1,
            amount: 30,
        },
    ),
    (
        6,
        Order {
            item: 1,
            qty: 1,
            amount: 40,
        },
    ),
];

fn scenario_fate(cmd: &Command, attempt: u32) -> Fate {
    match (cmd.saga.0, cmd.step, cmd.kind, attempt) {
        (1, _, _, _) | (2, StepId::INVENTORY, _, _) => Fate::Duplicate,
        (5, StepId::PAYMENT, Kind::Action, 1 | 2) => Fate::LoseRequest,
        (6, StepId::PAYMENT, Kind::Action, 1) => Fate::LoseReply,
        (6, StepId::PAYMENT, Kind::Action, _) => Fate::LoseRequest,
        (6, StepId::INVENTORY, Kind::Compensation, 1) => Fate::LoseRequest,
        _ => Fate::Deliver,
    }
}

fn scenario_driver(flaw: Flaw) -> Driver {
    let mut d = Driver::flawed(config(), scenario_services(), scenario_fate, flaw);
    d.start(&SCENARIO);
    d
}

// ----- configuration -----

#[test]
fn config_defaults_and_validation_name_the_field() {
    let c = SagaConfig::builder().build().unwrap();
    assert_eq!(c, SagaConfig::default());
    assert_eq!(c.step_timeout(), Duration::from_secs(1));
    assert_eq!(c.attempts_max(), 3);
    assert_eq!(c.compensation_attempts_max(), 10);
    assert_eq!(c.backoff().base(), ms(50));
    assert_eq!(c.backoff().cap(), Duration::from_secs(2));
    assert_eq!(c.steps(), &StepId::ALL);
    assert_eq!(SagaConfig::builder().seed(9).build().unwrap().seed(), 9);
    for (b, field) in [
        (
            SagaConfig::builder().step_timeout(Duration::ZERO),
            "step_timeout",
        ),
        (SagaConfig::builder().attempts_max(0), "attempts_max"),
        (SagaConfig::builder().attempts_max(1_001), "attempts_max"),
        (
            SagaConfig::builder().compensation_attempts_max(0),
            "compensation_attempts_max",
        ),
        (
            SagaConfig::builder().compensation_attempts_max(1_001),
            "compensation_attempts_max",
        ),
        (SagaConfig::builder().steps(&[]), "steps"),
        (
            SagaConfig::builder().steps(&[StepId::ORDER, StepId::ORDER]),
            "steps",
        ),
        (SagaConfig::builder().backoff(Duration::ZERO, ms(1)), "base"),
        (SagaConfig::builder().backoff(ms(2), ms(1)), "cap"),
    ] {
        assert_eq!(b.build().unwrap_err().field, field);
    }
}

#[test]
fn a_repeated_step_is_named_in_the_error() {
    let flight = StepId::from_static("flight");
    let err = SagaConfig::builder()
        .steps(&[flight, StepId::from_static("hotel"), flight])
        .build()
        .unwrap_err();
    assert_eq!(err.field, "steps");
    assert!(err.to_string().contains("\"flight\" twice"), "{err}");
    let err = SagaConfig::builder().steps(&[]).build().unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
}

// ----- output sequences -----

#[test]
fn happy_path_writes_each_intent_before_its_send_and_completes() {
    let mut o = Orchestrator::new(config());
    assert!(o.start(S1, ORDER, at(0)));
    assert!(!o.start(S1, ORDER, at(0)), "an id is accepted once");
    assert_eq!(
        drain(&mut o),
        vec![
            append(LogRecord::Started {
                saga: S1,
                payload: ORDER
            }),
            intent(StepId::ORDER, 1),
            send(StepId::ORDER, 1),
        ]
    );
    assert_eq!(o.state(S1), Some(SagaState::Running));
    assert_eq!(o.awaiting(S1), Some((StepId::ORDER, Kind::Action, 1)));
    assert_eq!(o.poll_timeout(), Some(at(100)));
    assert!(o.on_reply(S1, StepId::ORDER, Kind::Action, 1, Reply::Ok, at(5)));
    assert_eq!(
        drain(&mut o),
        vec![
            outcome(StepId::ORDER, true),
            intent(StepId::INVENTORY, 1),
            send(StepId::INVENTORY, 1),
        ]
    );
    assert_eq!(o.poll_timeout(), Some(at(105)));
    assert!(o.on_reply(S1, StepId::INVENTORY, Kind::Action, 1, Reply::Ok, at(6)));
    assert_eq!(
        drain(&mut o),
        vec![
            outcome(StepId::INVENTORY, true),
            intent(StepId::PAYMENT, 1),
            send(StepId::PAYMENT, 1),
        ]
    );
    assert!(o.on_reply(S1, StepId::PAYMENT, Kind::Action, 1, Reply::Ok, at(7)));
    assert_eq!(
        drain(&mut o),
        vec![outcome(StepId::PAYMENT, true), ended(SagaState::Completed)]
    );
    assert_eq!(o.state(S1), Some(SagaState::Completed));
    assert_eq!(o.poll_timeout(), None);
    assert!(o.is_at_rest());
    assert_eq!(o.in_flight(), 0);
    assert_eq!(o.payload(S1), Some(&ORDER));
    let t = o.totals();
    assert_eq!((t.started, t.completed, t.sends), (1, 1, 3));
    assert_eq!(
        o.progress(S1, StepId::PAYMENT),
        Some(StepProgress {
            attempts: 1,
            outcome: Some(true),
            compensation_attempts: 0,
            compensated: false
        })
    );
}

#[test]
fn refusal_at_payment_compensates_inventory_then_order() {
    let mut o = Orchestrator::new(config());
    run_until(&mut o, StepId::PAYMENT);
    let declined = Reply::Refused(Refusal::CardDeclined);
    assert!(o.on_reply(S1, StepId::PAYMENT, Kind::Action, 1, declined, at(1)));
    assert_eq!(o.state(S1), Some(SagaState::Compensating));
    assert_eq!(
        drain(&mut o),
        vec![
            refused(StepId::PAYMENT, Refusal::CardDeclined),
            comp_intent(StepId::INVENTORY, 1),
            send_comp(StepId::INVENTORY, 1),
        ],
        "the refused payment took no effect: not compensated"
    );
    assert!(o.on_reply(
        S1,
        StepId::INVENTORY,
        Kind::Compensation,
        1,
        Reply::Ok,
        at(2)
    ));
    assert_eq!(
        drain(&mut o),
        vec![
            comp_done(StepId::INVENTORY),
            comp_intent(StepId::ORDER, 1),
            send_comp(StepId::ORDER, 1),
        ]
    );
    assert!(o.on_reply(S1, StepId::ORDER, Kind::Compensation, 1, Reply::Ok, at(3)));
    assert_eq!(
        drain(&mut o),
        vec![comp_done(StepId::ORDER), ended(SagaState::Compensated)]
    );
    assert_eq!(o.state(S1), Some(SagaState::Compensated));
    assert_eq!(o.totals().compensations, 2);
    assert_eq!(o.totals().compensated, 1);
}

#[test]
fn refusal_at_the_first_step_compensates_nothing() {
    let mut o = Orchestrator::new(config());
    run_until(&mut o, StepId::ORDER);
    let refusal = Reply::Refused(Refusal::OutOfStock);
    assert!(o.on_reply(S1, StepId::ORDER, Kind::Action, 1, refusal, at(1)));
    assert_eq!(
        drain(&mut o),
        vec![
            refused(StepId::ORDER, Refusal::OutOfStock),
            ended(SagaState::Compensated)
        ]
    );
    assert_eq!(o.poll_timeout(), None);
}

#[test]
fn a_timeout_retries_with_the_same_key_then_compensates_when_attempts_run_out() {
    let mut o = Orchestrator::new(config());
    run_until(&mut o, StepId::PAYMENT);
    let mut last = at(0);
    for attempt in 2..=3 {
        let deadline = o.poll_timeout().unwrap();
        assert_eq!(
            deadline,
            last + ms(100),
            "attempt {} timed out",
            attempt - 1
        );
        let (when, out) = fire(&mut o);
        assert!(when >= deadline && when <= deadline + o.config().backoff().ceiling(attempt - 1));
        assert_eq!(
            out,
            vec![
                intent(StepId::PAYMENT, attempt),
                send(StepId::PAYMENT, attempt)
            ]
        );
        let Output::Send(cmd, _) = out[1] else {
            unreachable!()
        };
        assert_eq!(cmd.key(), Command::action(S1, StepId::PAYMENT, ORDER).key());
        last = when;
    }
    // The third attempt times out: no retry left, compensate the payment itself
    // first (its outcome is unknown: it may have taken effect).
    let (when, out) = fire(&mut o);
    assert_eq!(when, last + ms(100));
    assert_eq!(
        out,
        vec![
            comp_intent(StepId::PAYMENT, 1),
            send_comp(StepId::PAYMENT, 1)
        ]
    );
    // A late reply to an action is ignored once its compensation started.
    for attempt in 1..=3 {
        assert!(!o.on_reply(S1, StepId::PAYMENT, Kind::Action, attempt, Reply::Ok, when));
    }
    assert!(drain(&mut o).is_empty());
    for step in [StepId::PAYMENT, StepId::INVENTORY] {
        assert!(o.on_reply(S1, step, Kind::Compensation, 1, Reply::Ok, when));
        drain(&mut o);
    }
    assert!(o.on_reply(S1, StepId::ORDER, Kind::Compensation, 1, Reply::Ok, when));
    assert_eq!(
        drain(&mut o),
        vec![comp_done(StepId::ORDER), ended(SagaState::Compensated)]
    );
    let t = o.totals();
    assert_eq!((t.timeouts, t.action_retries, t.stale_replies), (3, 2, 3));
}

#[test]
fn a_compensation_is_retried_with_backoff_until_it_succeeds() {
    let mut o = Orchestrator::new(config());
    run_until(&mut o, StepId::PAYMENT);
    let declined = Reply::Refused(Refusal::CardDeclined);
    o.on_reply(S1, StepId::PAYMENT, Kind::Action, 1, declined, at(0));
    drain(&mut o);
    // Attempt 1 times out, attempt 2 is refused (an infrastructure-ish failure).
    let (when, out) = fire(&mut o);
    assert!(when >= at(100) && when <= at(110));
    assert_eq!(
        out,
        vec![
            comp_intent(StepId::INVENTORY, 2),
            send_comp(StepId::INVENTORY, 2)
        ]
    );
    let refused = Reply::Refused(Refusal::Misrouted);
    assert!(o.on_reply(S1, StepId::INVENTORY, Kind::Compensation, 2, refused, when));
    let (when2, out) = fire(&mut o);
    assert!(when2 >= when && when2 <= when + ms(20));
    assert_eq!(
        out,
        vec![
            comp_intent(StepId::INVENTORY, 3),
            send_comp(StepId::INVENTORY, 3)
        ]
    );
    assert!(o.on_reply(
        S1,
        StepId::INVENTORY,
        Kind::Compensation,
        3,
        Reply::Ok,
        when2
    ));
    assert_eq!(
        drain(&mut o),
        vec![
            comp_done(StepId::INVENTORY),
            comp_intent(StepId::ORDER, 1),
            send_comp(StepId::ORDER, 1)
        ]
    );
    assert_eq!(o.totals().compensation_retries, 2);
}

#[test]
fn a_compensation_failing_past_its_limit_fails_the_saga_with_an_alert() {
    let mut o = Orchestrator::new(config());
    run_until(&mut o, StepId::PAYMENT);
    let declined = Reply::Refused(Refusal::CardDeclined);
    o.on_reply(S1, StepId::PAYMENT, Kind::Action, 1, declined, at(0));
    drain(&mut o);
    for attempt in 2..=4 {
        let (_, out) = fire(&mut o);
        assert_eq!(out[0], comp_intent(StepId::INVENTORY, attempt));
    }
    let (_, out) = fire(&mut o);
    assert_eq!(
        out,
        vec![
            Output::Alert {
                saga: S1,
                reason: AlertReason::CompensationExhausted {
                    step: StepId::INVENTORY,
                    attempts: 4
                }
            },
            ended(SagaState::Failed)
        ]
    );
    assert_eq!(o.state(S1), Some(SagaState::Failed));
    assert!(o.is_at_rest());
    assert_eq!(o.poll_timeout(), None);
    assert_eq!(o.totals().failed, 1);
    assert_eq!(
        AlertReason::CompensationExhausted {
            step: StepId::INVENTORY,
            attempts: 4
        }
        .to_string(),
        "the inventory compensation failed after 4 attempts"
    );
}

#[test]
fn stale_replies_are_ignored() {
    let config = SagaConfig::builder()
        .steps(&[StepId::ORDER, StepId::PAYMENT])
        .build()
        .unwrap();
    let mut o = Orchestrator::new(config);
    assert!(o.start(S1, ORDER, at(0)));
    drain(&mut o);
    let stale = [
        (S1, StepId::ORDER, Kind::Action, 2),
        (S1, StepId::ORDER, Kind::Action, 0),
        (S1, StepId::ORDER, Kind::Compensation, 1),
        (S1, StepId::PAYMENT, Kind::Action, 1),
        (S1, StepId::INVENTORY, Kind::Action, 1),
        (SagaId(9), StepId::ORDER, Kind::Action, 1),
    ];
    for (saga, step, kind, attempt) in stale {
        assert!(!o.on_reply(saga, step, kind, attempt, Reply::Ok, at(1)));
    }
    assert!(drain(&mut o).is_empty());
    assert!(o.on_reply(S1, StepId::ORDER, Kind::Action, 1, Reply::Ok, at(1)));
    // A duplicate of the reply just taken is stale too.
    assert!(!o.on_reply(S1, StepId::ORDER, Kind::Action, 1, Reply::Ok, at(1)));
    assert_eq!(o.totals().stale_replies, 7);
    assert_eq!(o.awaiting(S1), Some((StepId::PAYMENT, Kind::Action, 1)));
    assert_eq!(o.progress(S1, StepId::INVENTORY), None);
    drain(&mut o);
    // A late reply to an attempt that timed out still counts: every attempt has
    // the same idempotency key, so the service answers each alike.
    let (_, out) = fire(&mut o);
    assert_eq!(
        out[1],
        Output::Send(Command::action(S1, StepId::PAYMENT, ORDER), 2)
    );
    assert!(!o.on_reply(S1, StepId::PAYMENT, Kind::Action, 3, Reply::Ok, at(500)));
    assert!(o.on_reply(S1, StepId::PAYMENT, Kind::Action, 1, Reply::Ok, at(500)));
    assert_eq!(o.state(S1), Some(SagaState::Completed));
    assert!(!o.on_reply(S1, StepId::PAYMENT, Kind::Action, 2, Reply::Ok, at(500)));
}

#[test]
fn a_deadline_counts_from_when_the_command_left() {
    let mut o = Orchestrator::new(config());
    assert!(o.start(S1, ORDER, at(0)));
    drain(&mut o);
    assert_eq!(o.poll_timeout(), Some(at(100)));
    // Queued behind log writes for 80 ms, then sent.
    assert!(o.on_sent(S1, StepId::ORDER, Kind::Action, 1, at(80)));
    assert_eq!(o.poll_timeout(), Some(at(180)));
    // Not the attempt awaited: nothing changes.
    assert!(!o.on_sent(S1, StepId::ORDER, Kind::Action, 2, at(90)));
    assert!(!o.on_sent(S1, StepId::PAYMENT, Kind::Action, 1, at(90)));
    assert_eq!(o.poll_timeout(), Some(at(180)));
    o.handle_timeout(at(150));
    assert_eq!(o.awaiting(S1), Some((StepId::ORDER, Kind::Action, 1)));

    // With deadline_from_sent, no timer runs until the command is reported sent.
    let config = SagaConfig::builder()
        .step_timeout(Duration::from_millis(100))
        .deadline_from_sent(true)
        .build()
        .unwrap();
    let mut o = Orchestrator::new(config);
    assert!(o.start(S1, ORDER, at(0)));
    drain(&mut o);
    assert_eq!(o.poll_timeout(), None);
    o.handle_timeout(at(10_000));
    assert_eq!(o.awaiting(S1), Some((StepId::ORDER, Kind::Action, 1)));
    assert!(o.on_sent(S1, StepId::ORDER, Kind::Action, 1, at(10_000)));
    assert_eq!(o.poll_timeout(), Some(at(10_100)));
}

#[test]
fn poll_timeout_is_the_earliest_deadline_or_retry() {
    let mut o = Orchestrator::new(config());
    assert_eq!(o.poll_timeout(), None);
    o.start(SagaId(1), ORDER, at(30));
    o.start(SagaId(2), ORDER, at(10));
    o.start(SagaId(3), ORDER, at(20));
    drain(&mut o);
    assert_eq!(o.poll_timeout(), Some(at(110)));
    o.on_reply(SagaId(2), StepId::ORDER, Kind::Action, 1, Reply::Ok, at(40));
    assert_eq!(o.poll_timeout(), Some(at(120)));
    o.handle_timeout(at(125));
    // Saga 3 backs off (at most 10 ms); saga 1's deadline is still 130.
    let next = o.poll_timeout().unwrap();
    assert!(next >= at(125) && next <= at(130), "{next}");
    assert_eq!(o.in_flight(), 3);
    let ids: Vec<SagaId> = o.sagas().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![SagaId(1), SagaId(2), SagaId(3)]);
}

#[test]
fn same_seed_same_outputs() {
    let run = |seed| {
        let config = SagaConfig::builder()
            .step_timeout(ms(100))
            .backoff(ms(10), ms(1_000))
            .seed(seed)
            .build()
            .unwrap();
        let mut d = Driver::new(config, scenario_services(), scenario_fate);
        d.start(&SCENARIO);
        d.run(None);
        (d.log, d.now)
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1).1, run(2).1, "the jitter depends on the seed");
}

// ----- recovery -----

#[test]
fn recovery_resends_unknown_outcomes_and_leaves_rest_states_alone() {
    let s = |n| SagaId(n);
    let o1 = Order {
        item: 1,
        qty: 1,
        amount: 10,
    };
    let started = |n| LogRecord::Started {
        saga: s(n),
        payload: o1,
    };
    let si = |n, step, attempt| LogRecord::StepIntent {
        saga: s(n),
        step,
        attempt,
    };
    let so = |n, step, ok| LogRecord::StepOutcome {
        saga: s(n),
        step,
        ok,
        refusal: None,
    };
    let ci = |n, step, attempt| LogRecord::CompensationIntent {
        saga: s(n),
        step,
        attempt,
    };
    let cd = |n, step| LogRecord::CompensationDone { saga: s(n), step };
    let records = vec![
        // 1: the first intent, no outcome: resend attempt 1.
        started(1),
        si(1, StepId::ORDER, 1),
        // 2: the last attempt of inventory, no outcome: resend it too (a crash
        //    costs no attempt).
        started(2),
        si(2, StepId::ORDER, 1),
        so(2, StepId::ORDER, true),
        si(2, StepId::INVENTORY, 3),
        // 3: a compensation intent without done: resend it.
        started(3),
        si(3, StepId::ORDER, 1),
        so(3, StepId::ORDER, true),
        si(3, StepId::INVENTORY, 1),
        so(3, StepId::INVENTORY, false),
        ci(3, StepId::ORDER, 2),
        // 4: ended: nothing to do.
        started(4),
        si(4, StepId::ORDER, 1),
        so(4, StepId::ORDER, false),
        LogRecord::Ended {
            saga: s(4),
            state: SagaState::Compensated,
        },
        // 5: every step succeeded, not ended yet: complete.
        started(5),
        si(5, StepId::ORDER, 1),
        so(5, StepId::ORDER, true),
        si(5, StepId::INVENTORY, 1),
        so(5, StepId::INVENTORY, true),
        si(5, StepId::PAYMENT, 2),
        so(5, StepId::PAYMENT, true),
        // 6: the last compensation attempt without done: resend it.
        started(6),
        si(6, StepId::ORDER, 1),
        so(6, StepId::ORDER, true),
        si(6, StepId::INVENTORY, 1),
        so(6, StepId::INVENTORY, false),
        ci(6, StepId::ORDER, 4),
        // 7: compensation done, the rest not begun: next compensation.
        started(7),
        si(7, StepId::ORDER, 1),
        so(7, StepId::ORDER, true),
        si(7, StepId::INVENTORY, 1),
        so(7, StepId::INVENTORY, true),
        si(7, StepId::PAYMENT, 1),
        ci(7, StepId::PAYMENT, 1),
        cd(7, StepId::PAYMENT),
        // Records of a saga never started are ignored.
        si(8, StepId::ORDER, 1),
    ];
    let mut o = Orchestrator::recover(config(), &records, at(1_000));
    let act = |n, step| Command::action(s(n), step, o1);
    let comp = |n, step| Command::compensation(s(n), step, o1);
    assert_eq!(
        drain(&mut o),
        vec![
            Output::Send(act(1, StepId::ORDER), 1),
            Output::Send(act(2, StepId::INVENTORY), 3),
            Output::Send(comp(3, StepId::ORDER), 2),
            append(LogRecord::Ended {
                saga: s(5),
                state: SagaState::Completed
            }),
            Output::Send(comp(6, StepId::ORDER), 4),
            append(ci(7, StepId::INVENTORY, 1)),
            Output::Send(comp(7, StepId::INVENTORY), 1),
        ]
    );
    assert_eq!(o.state(s(4)), Some(SagaState::Compensated));
    assert_eq!(o.state(s(2)), Some(SagaState::Running));
    assert_eq!(o.awaiting(s(2)), Some((StepId::INVENTORY, Kind::Action, 3)));
    assert_eq!(o.state(s(8)), None);
    assert_eq!(o.poll_timeout(), Some(at(1_100)));
    let t = o.totals();
    assert_eq!(
        (
            t.recovered,
            t.resumed,
            t.action_retries,
            t.compensation_retries
        ),
        (6, 4, 0, 0)
    );
    // The recovered orchestrator goes on: saga 2's inventory is refused, so its
    // order is compensated.
    assert!(o.on_reply(
        s(2),
        StepId::INVENTORY,
        Kind::Action,
        3,
        Reply::Refused(Refusal::OutOfStock),
        at(1_001)
    ));
    assert_eq!(
        drain(&mut o),
        vec![
            append(LogRecord::StepOutcome {
                saga: s(2),
                step: StepId::INVENTORY,
                ok: false,
                refusal: Some(Refusal::OutOfStock)
            }),
            append(ci(2, StepId::ORDER, 1)),
            Output::Send(comp(2, StepId::ORDER), 1),
        ]
    );
}

#[test]
fn the_scenario_settles_as_expected_without_crashes() {
    let mut d = scenario_driver(Flaw::None);
    assert!(!d.run(None));
    assert_eq!(d.check(), Vec::<String>::new());
    let states: Vec<(u64, SagaState)> = d.orch.sagas().map(|(id, s)| (id.0, s)).collect();
    use SagaState::{Compensated, Completed};
    assert_eq!(
        states,
        vec![
            (1, Completed),
            (2, Completed),
            (3, Compensated),
            (4, Compensated),
            (5, Completed),
            (6, Compensated)
        ]
    );
    // Saga 6's charge took effect though its reply was lost: it was refunded.
    let s = &d.services;
    assert_eq!(s.payment.captured_total(), 100 + 50 + 30 + 40);
    assert_eq!(s.payment.refunded_total(), 40);
    assert_eq!(s.inventory.available(1), 2);
    assert_eq!(s.inventory.available(2), 0);
    assert_eq!(
        s.inventory.reservation(SagaId(6)).map(|r| r.state),
        Some(ReservationState::Released)
    );
    assert!(
        s.orders.ledger().duplicates() > 0,
        "duplicates were delivered"
    );
    let t = d.orch.totals();
    assert!(t.action_retries >= 4 && t.compensation_retries >= 1 && t.stale_replies > 0);
}

#[test]
fn recovery_after_a_crash_at_every_persistence_point_settles_and_conserves() {
    let mut full = scenario_driver(Flaw::None);
    full.run(None);
    let total = full.performed;
    assert!(total > 50, "{total} outputs");
    for k in 0..=total {
        let mut d = scenario_driver(Flaw::None);
        assert!(d.run(Some(k)), "crash point {k} reached");
        d.crash_and_recover();
        assert!(!d.run(None));
        assert_eq!(d.check(), Vec::<String>::new(), "crash after {k} outputs");
    }
}

#[test]
fn recovery_survives_a_second_crash_during_recovery() {
    let mut full = scenario_driver(Flaw::None);
    full.run(None);
    let total = full.performed;
    let mut runs = 0;
    for k1 in 0..=total {
        for k2 in k1..k1 + 30 {
            let mut d = scenario_driver(Flaw::None);
            d.run(Some(k1));
            d.crash_and_recover();
            if !d.run(Some(k2)) {
                break; // settled before the second crash point
            }
            d.crash_and_recover();
            assert!(!d.run(None));
            assert_eq!(
                d.check(),
                Vec::<String>::new(),
                "crashes after {k1} and {k2}"
            );
            runs += 1;
        }
    }
    assert!(runs > total);
}

/// The checkout step's position in its definition (what the enum's discriminant was).
fn step_number(step: StepId) -> u64 {
    StepId::ALL.iter().position(|s| *s == step).unwrap_or(0) as u64
}

fn noisy_fate(cmd: &Command, attempt: u32) -> Fate {
    let x = cmd.saga.0 * 1_000
        + step_number(cmd.step) * 100
        + (cmd.kind as u64) * 10
        + u64::from(attempt);
    match SplitMix64(x).next() % 10 {
        0 | 1 => Fate::LoseRequest,
        2 => Fate::LoseReply,
        3 => Fate::Duplicate,
        _ => Fate::Deliver,
    }
}

#[test]
fn many_concurrent_sagas_with_losses_and_crashes_come_to_rest() {
    let config = SagaConfig::builder()
        .step_timeout(ms(100))
        .backoff(ms(10), ms(200))
        .seed(42)
        .build()
        .unwrap();
    let services = Services::new(
        InventoryService::new([(0, 400), (1, 400), (2, 400)]),
        PaymentService::new().with_decline(|saga, _| saga.0 % 11 == 0),
    );
    let mut d = Driver::new(config, services, noisy_fate);
    let sagas: Vec<(u64, Order)> = (0..300)
        .map(|n| {
            (
                n,
                Order {
                    item: (n % 3) as u32,
                    qty: 1 + (n % 2) as u32,
                    amount: 10 + n,
                },
            )
        })
        .collect();
    d.start(&sagas);
    let mut crash_at = 0;
    while {
        crash_at += 1_500;
        d.run(Some(crash_at))
    } {
        d.crash_and_recover();
        // Clients whose start was lost (no durable `Started`) submit it again.
        for (id, order) in &sagas {
            if d.orch.state(SagaId(*id)).is_none() {
                assert!(d.orch.start(SagaId(*id), *order, d.now));
            }
        }
    }
    assert!(
        d.crashes >= 3,
        "{} crashes, {} outputs",
        d.crashes,
        d.performed
    );
    assert_eq!(d.check(), Vec::<String>::new());
    let count = |want| d.orch.sagas().filter(|(_, s)| *s == want).count();
    assert_eq!(d.orch.sagas().count(), 300);
    let (completed, compensated) = (count(SagaState::Completed), count(SagaState::Compensated));
    assert!(completed > 100, "{completed} completed");
    assert!(compensated > 20, "{compensated} compensated");
    assert!(d.services.effects_max() <= 1);
}

#[test]
fn a_saga_whose_compensation_never_arrives_fails_with_an_alert() {
    fn fate(cmd: &Command, _: u32) -> Fate {
        match (cmd.step, cmd.kind) {
            (StepId::INVENTORY, Kind::Compensation) => Fate::LoseRequest,
            _ => Fate::Deliver,
        }
    }
    let services = Services::new(
        InventoryService::new([(1, 5)]),
        PaymentService::new().with_declined([S1]),
    );
    let mut d = Driver::new(config(), services, fate);
    d.start(&[(1, ORDER)]);
    d.run(None);
    assert_eq!(d.orch.state(S1), Some(SagaState::Failed));
    assert_eq!(d.alerts.len(), 1);
    assert_eq!(d.check(), Vec::<String>::new());
    // The reservation is still held: that is what the alert is for.
    assert_eq!(d.services.inventory.available(1), 3);
}

// ----- the mutants are caught -----

fn declined_fate(cmd: &Command, attempt: u32) -> Fate {
    match (cmd.step, cmd.kind, attempt) {
        (StepId::INVENTORY, Kind::Compensation, 1) => Fate::LoseRequest,
        (StepId::PAYMENT, Kind::Action, _) => Fate::Duplicate,
        _ => Fate::Deliver,
    }
}

fn mutant_driver(flaw: Flaw, payment_idempotent: bool) -> Driver {
    let mut payment = PaymentService::new().with_declined([SagaId(2)]);
    payment.idempotent = payment_idempotent;
    let services = Services::new(InventoryService::new([(1, 5), (2, 0)]), payment);
    let mut d = Driver::flawed(config(), services, declined_fate, flaw);
    d.start(&[
        (1, ORDER),
        (2, ORDER),
        (
            3,
            Order {
                item: 2,
                qty: 1,
                amount: 5,
            },
        ),
    ]);
    d
}

#[test]
fn each_mutant_breaks_an_invariant_the_reference_keeps() {
    let mut reference = mutant_driver(Flaw::None, true);
    reference.run(None);
    assert_eq!(reference.check(), Vec::<String>::new());
    for (flaw, idempotent, expected) in [
        (Flaw::CompensationsNotRetried, true, "still holds"),
        (Flaw::SkipLastCompensation, true, "still holds"),
        (Flaw::SendBeforeLog, true, "write-ahead"),
        (Flaw::CompensateNeverSent, true, "never sent"),
        (Flaw::None, false, "effects"),
    ] {
        let mut d = mutant_driver(flaw, idempotent);
        d.run(None);
        let found = d.check();
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{flaw:?} (idempotent payment: {idempotent}) not caught: {found:?}"
        );
    }
}

/// "Failed, retry now": the attempt ends at once (no outcome is logged: it is
/// unknown), the next one follows after the backoff, well before the step timeout; a
/// `Failed` reply to an attempt no longer awaited is stale; with the attempts spent the
/// saga compensates, that step included.
#[test]
fn a_failed_reply_ends_the_attempt_at_once_and_counts_only_when_awaited() {
    let mut o = Orchestrator::new(config());
    run_until(&mut o, StepId::INVENTORY);
    assert!(o.on_reply(S1, StepId::INVENTORY, Kind::Action, 1, Reply::Failed, at(3)));
    assert!(
        drain(&mut o).is_empty(),
        "no outcome record: the outcome is unknown"
    );
    assert_eq!(o.awaiting(S1), None, "backing off");
    let (when, out) = fire(&mut o);
    assert!(
        when >= at(3) && when <= at(13),
        "{when:?}: within the backoff's base"
    );
    assert_eq!(
        out,
        vec![intent(StepId::INVENTORY, 2), send(StepId::INVENTORY, 2)]
    );
    // A late Failed of attempt 1 does not end attempt 2; a late Ok of it would.
    assert!(!o.on_reply(S1, StepId::INVENTORY, Kind::Action, 1, Reply::Failed, when));
    assert_eq!(o.awaiting(S1), Some((StepId::INVENTORY, Kind::Action, 2)));
    assert!(o.on_reply(S1, StepId::INVENTORY, Kind::Action, 2, Reply::Failed, when));
    let (when, _) = fire(&mut o);
    assert!(o.on_reply(S1, StepId::INVENTORY, Kind::Action, 3, Reply::Failed, when));
    // Attempts spent: compensate inventory (it may have taken effect), then order.
    assert_eq!(
        drain(&mut o),
        vec![
            comp_intent(StepId::INVENTORY, 1),
            send_comp(StepId::INVENTORY, 1)
        ]
    );
    // A compensation answered Failed is retried too.
    assert!(o.on_reply(
        S1,
        StepId::INVENTORY,
        Kind::Compensation,
        1,
        Reply::Failed,
        when
    ));
    let (when2, out) = fire(&mut o);
    assert!(when2 <= when + ms(10), "{when2:?}");
    assert_eq!(
        out,
        vec![
            comp_intent(StepId::INVENTORY, 2),
            send_comp(StepId::INVENTORY, 2)
        ]
    );
    let t = o.totals();
    assert_eq!((t.failed_replies, t.timeouts, t.stale_replies), (4, 0, 1));
}

/// A definition whose execution order is not its names' order (zulu, mike, alpha:
/// alphabetically the reverse), with a payload and a refusal of its own: steps run in
/// the definition's order and compensate in its reverse, and a recovery agrees.
#[test]
fn the_definition_order_is_the_execution_order_not_the_names_order() {
    let (z, m, a) = (
        StepId::from_static("zulu"),
        StepId::from_static("mike"),
        StepId::from_static("alpha"),
    );
    let config = SagaConfig::builder().steps(&[z, m, a]).build().unwrap();
    let mut o: Orchestrator<u32, String> = Orchestrator::new(config.clone());
    assert!(o.start(S1, 42, at(0)));
    let mut log = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..10 {
        for out in drain_any(&mut o) {
            match out {
                Output::Append(r) => log.push(r),
                Output::Send(cmd, attempt) => {
                    assert_eq!(cmd.payload, 42);
                    sent.push((cmd.step, cmd.kind));
                    let reply = if cmd.step == a && cmd.kind == Kind::Action {
                        Reply::Refused("no".to_string())
                    } else {
                        Reply::Ok
                    };
                    o.on_reply(S1, cmd.step, cmd.kind, attempt, reply, at(1));
                }
                Output::Alert { .. } => panic!("no alert"),
            }
        }
    }
    assert_eq!(
        sent,
        vec![
            (z, Kind::Action),
            (m, Kind::Action),
            (a, Kind::Action),
            (m, Kind::Compensation),
            (z, Kind::Compensation)
        ]
    );
    assert_eq!(o.state(S1), Some(SagaState::Compensated));
    let h = crate::saga::SagaHistory::of(S1, &log).unwrap();
    let names: Vec<StepId> = h.steps.iter().map(|s| s.step).collect();
    assert_eq!(names, vec![z, m, a]);
    assert_eq!(
        h.steps[2].outcome,
        crate::saga::ActionOutcome::Refused(Some("no".to_string()))
    );
    // The log round-trips through the v3 lines with this payload and refusal.
    for r in &log {
        let line = r.encode_line();
        assert_eq!(
            &LogRecord::<u32, String>::decode_line(line.as_bytes()).unwrap(),
            r
        );
    }
    let back = Orchestrator::<u32, String>::recover(config, &log, at(2));
    assert_eq!(back.state(S1), Some(SagaState::Compensated));
    assert_eq!(back.payload(S1), Some(&42));
}

fn drain_any<P: crate::saga::SagaData, R: crate::saga::SagaData>(
    o: &mut Orchestrator<P, R>,
) -> Vec<Output<P, R>> {
    std::iter::from_fn(|| o.poll_output()).collect()
}

/// The orchestrator's count of sagas in flight (`in_flight`, `is_at_rest`) and its
/// list of sagas come to rest (`take_rested`, the hint the world asks `state` by) agree
/// with a walk over every saga, at every step of random runs: random replies (ok,
/// refused, failed, lost), timeouts, sagas started all along, and crashes recovered
/// from the log (the new orchestrator's first `take_rested` starts its list).
#[test]
fn rest_count_and_rested_list_agree_with_every_saga() {
    for seed in 0..40u64 {
        let mut rng = SplitMix64(seed);
        let mut o = Orchestrator::new(config());
        let mut log: Vec<LogRecord> = Vec::new();
        let mut in_flight: Vec<Output> = Vec::new();
        let mut listing = o.take_rested(&mut Vec::new());
        assert!(!listing, "the first call only starts the list");
        listing = true;
        let mut before: Vec<(SagaId, SagaState)> = o.sagas().collect();
        let mut now = 0u64;
        let mut next_saga = 0u64;
        let mut rested_total = 0;
        for _ in 0..400 {
            now += rng.next() % 30;
            match rng.next() % 10 {
                0..=2 => {
                    next_saga += 1;
                    o.start(SagaId(next_saga), ORDER, at(now));
                }
                3 => {
                    o.handle_timeout(at(now));
                }
                4 if rng.next().is_multiple_of(4) => {
                    // A crash: the durable log is all the new one has.
                    o = Orchestrator::recover(config(), &log, at(now));
                    in_flight.clear();
                    listing = o.take_rested(&mut Vec::new());
                    assert!(!listing);
                    listing = true;
                    before = o.sagas().collect();
                }
                _ if !in_flight.is_empty() => {
                    let i = (rng.next() % in_flight.len() as u64) as usize;
                    if let Output::Send(cmd, attempt) = in_flight.swap_remove(i) {
                        let reply = match rng.next() % 5 {
                            0 => Some(Reply::Refused(Refusal::CardDeclined)),
                            1 => Some(Reply::Failed),
                            2 => None,
                            _ => Some(Reply::Ok),
                        };
                        if let Some(reply) = reply {
                            o.on_reply(cmd.saga, cmd.step, cmd.kind, attempt, reply, at(now));
                        }
                    }
                }
                _ => {}
            }
            for out in drain(&mut o) {
                match out {
                    Output::Append(r) => log.push(r),
                    Output::Send(cmd, attempt) => {
                        o.on_sent(cmd.saga, cmd.step, cmd.kind, attempt, at(now));
                        in_flight.push(Output::Send(cmd, attempt));
                    }
                    Output::Alert { .. } => {}
                }
            }
            let after: Vec<(SagaId, SagaState)> = o.sagas().collect();
            let walked = after.iter().filter(|(_, s)| !s.is_at_rest()).count();
            assert_eq!(o.in_flight(), walked, "seed {seed}");
            assert_eq!(o.is_at_rest(), walked == 0, "seed {seed}");
            let was_at_rest: BTreeSet<SagaId> = before
                .iter()
                .filter(|(_, s)| s.is_at_rest())
                .map(|(id, _)| *id)
                .collect();
            let came_to_rest: Vec<SagaId> = after
                .iter()
                .filter(|(id, s)| s.is_at_rest() && !was_at_rest.contains(id))
                .map(|(id, _)| *id)
                .collect();
            let mut named = Vec::new();
            assert!(o.take_rested(&mut named) && listing);
            named.sort_unstable();
            assert_eq!(named, came_to_rest, "seed {seed}");
            rested_total += named.len();
            before = after;
        }
        assert!(next_saga > 50, "the runs start sagas: {next_saga}");
        assert!(rested_total > 10, "and sagas come to rest: {rested_total}");
    }
}
