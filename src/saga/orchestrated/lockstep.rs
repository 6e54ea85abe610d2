//! The runner and the verified driver core agree: the tokio [`SagaRunner`] and the sans-IO
//! [`Orchestrator`] driven through the [`Pipeline`] by hand (as the simulated world drives
//! them), run one after the other on one paused tokio clock through the same script of
//! checkouts, participant behaviours and a crash with a restart over the same log, must
//! make the same decisions: the same commands at the same instants, the same log records,
//! the same alerts, the same end states and counters.
//!
//! The hand-driven side is carried out exactly as the pipeline's contract says (a write is
//! durable at once, as with [`MemoryLog`], a send is a scripted answer after its delay, a
//! timer is a sleep until [`Pipeline::wake_at`]), by the same tokio timers as the runner's,
//! so tokio's rounding of timers to the millisecond is the same on both sides.
//!
//! Events of different sagas may fall on the same millisecond; their order may differ
//! between the sides (tokio's task order) without changing any saga's decisions, so the
//! trace is kept per saga. The script keeps a reply clear of its own attempt's deadline
//! (every answer comes well within the step timeout) and refuses no compensation (so every
//! backoff draw happens inside one `handle_timeout`, in timer order on both sides).

use super::driver::{Perform, Pipeline};
use super::tokio::{MemoryLog, SagaRunner};
use crate::clock::Instant;
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::core::{AlertReason, Orchestrator, SagaTotals};
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Command, Kind, Order, Refusal, Reply, SagaId, SagaState, StepId};
use crate::splitmix::SplitMix64;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const STEP_TIMEOUT: Duration = Duration::from_millis(100);

fn config(deadline_from_sent: bool) -> SagaConfig {
    SagaConfig::builder()
        .step_timeout(STEP_TIMEOUT)
        .attempts_max(3)
        .compensation_attempts_max(3)
        .backoff(ms(10), ms(80))
        .seed(5)
        .deadline_from_sent(deadline_from_sent)
        .build()
        .unwrap()
}

/// What a participant does with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Resolves to this after the delay ([`Reply::Failed`]: a transport failure).
    Answer(Duration, Reply),
    /// Never resolves (a black-holed request).
    Never,
}

/// The script: checkouts (when, since the test's origin), participants' behaviour per
/// attempt (a hash of the attempt and the script's seed), and when the first runner
/// crashes (then a second one is built over the same log).
#[derive(Clone, Debug)]
struct Script {
    seed: u64,
    starts: Vec<(Duration, SagaId, Order)>,
    crash_at: Duration,
}

impl Script {
    fn new(seed: u64, sagas: u64, crash_at: Duration) -> Self {
        let mut rng = SplitMix64(seed);
        let mut at = Duration::ZERO;
        let starts = (1..=sagas)
            .map(|n| {
                at += ms(rng.next() % 40);
                let order = Order {
                    item: 1,
                    qty: 1,
                    amount: 100 + n,
                };
                (at, SagaId(n), order)
            })
            .collect();
        Script {
            seed,
            starts,
            crash_at,
        }
    }

    fn behaviour(&self, cmd: &Command, attempt: u32) -> Behaviour {
        let step = StepId::ALL.iter().position(|s| *s == cmd.step).unwrap_or(0) as u64;
        let kind = u64::from(cmd.kind == Kind::Compensation);
        let key = self.seed
            ^ cmd.saga.0.wrapping_mul(0x9E37_79B9)
            ^ (step << 40)
            ^ (kind << 44)
            ^ (u64::from(attempt) << 48);
        let roll = SplitMix64(key).next();
        // Well within the step timeout: a reply never races its own deadline.
        let delay = ms(1 + (roll >> 8) % 60);
        match (cmd.kind, roll % 10) {
            (_, 0) => Behaviour::Never,
            // A fast failure draws the backoff jitter when it arrives, from the one
            // generator all sagas share: two draws at the same instant may go in
            // either order (the runner's tasks and the script's queue order ties
            // differently, both legitimately), so it arrives off the millisecond grid
            // the other events keep to, at an instant of its own.
            (_, 1) => {
                let offset =
                    Duration::from_micros(1 + (cmd.saga.0 * 37 + u64::from(attempt)) % 997);
                Behaviour::Answer(delay + offset, Reply::Failed)
            }
            (Kind::Action, 2) if cmd.step == StepId::PAYMENT => {
                Behaviour::Answer(delay, Reply::Refused(Refusal::CardDeclined))
            }
            (Kind::Action, 3) if cmd.step == StepId::INVENTORY => {
                Behaviour::Answer(delay, Reply::Refused(Refusal::OutOfStock))
            }
            _ => Behaviour::Answer(delay, Reply::Ok),
        }
    }
}

/// One decision, as both sides can state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// The command's attempt left at this time since the test's origin.
    Sent(Duration, StepId, Kind, u32),
    /// An alert was raised.
    Alert(AlertReason),
}

/// What one side did, per saga.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Trace {
    decisions: BTreeMap<SagaId, Vec<Decision>>,
    log: BTreeMap<SagaId, Vec<LogRecord>>,
    states: Vec<(SagaId, SagaState)>,
    /// The counters of the first runner (up to the crash) and of the second.
    totals: Vec<SagaTotals>,
}

impl Trace {
    fn decide(&mut self, saga: SagaId, decision: Decision) {
        self.decisions.entry(saga).or_default().push(decision);
    }

    fn with_log(mut self, log: &[LogRecord]) -> Self {
        for record in log {
            self.log.entry(record.saga()).or_default().push(*record);
        }
        self
    }

    fn sends(&self) -> usize {
        self.decisions
            .values()
            .flatten()
            .filter(|d| matches!(d, Decision::Sent(..)))
            .count()
    }
}

/// The attempt of `cmd` being sent: its latest intent in the log (the runner's
/// participants are called with the command alone; its intent is durable before it
/// leaves, so a runner that sent before logging would be caught quoting the wrong one).
fn attempt_in(log: &[LogRecord], cmd: &Command) -> u32 {
    log.iter()
        .rev()
        .find_map(|r| match *r {
            LogRecord::StepIntent {
                saga,
                step,
                attempt,
            } if cmd.kind == Kind::Action && saga == cmd.saga && step == cmd.step => Some(attempt),
            LogRecord::CompensationIntent {
                saga,
                step,
                attempt,
            } if cmd.kind == Kind::Compensation && saga == cmd.saga && step == cmd.step => {
                Some(attempt)
            }
            _ => None,
        })
        .unwrap_or(0)
}

/// The runner through the script.
async fn run_adapter(config: SagaConfig, script: &Script) -> Trace {
    let origin = TokioInstant::now();
    let trace = Arc::new(Mutex::new(Trace::default()));
    let log = MemoryLog::new();
    let build = || {
        let (script, trace, seen) = (script.clone(), Arc::clone(&trace), log.clone());
        let call = move |cmd: Command| {
            let attempt = attempt_in(&seen.records(), &cmd);
            let at = TokioInstant::now() - origin;
            trace
                .lock()
                .unwrap()
                .decide(cmd.saga, Decision::Sent(at, cmd.step, cmd.kind, attempt));
            let behaviour = script.behaviour(&cmd, attempt);
            async move {
                match behaviour {
                    Behaviour::Answer(delay, reply) => {
                        tokio::time::sleep(delay).await;
                        reply
                    }
                    Behaviour::Never => std::future::pending().await,
                }
            }
        };
        let mut builder = SagaRunner::builder(config.clone(), log.clone());
        for step in StepId::ALL {
            builder = builder.step(step, call.clone(), call.clone());
        }
        builder.build().unwrap()
    };
    let first = build();
    for (at, saga, order) in script.starts.iter().filter(|s| s.0 < script.crash_at) {
        tokio::time::sleep_until(origin + *at).await;
        first.start(*saga, *order).unwrap();
    }
    tokio::time::sleep_until(origin + script.crash_at).await;
    {
        let mut t = trace.lock().unwrap();
        t.totals.push(first.totals());
        for (saga, reason) in first.alerts() {
            t.decide(saga, Decision::Alert(reason));
        }
    }
    drop(first);
    let second = build();
    for (at, saga, order) in script.starts.iter().filter(|s| s.0 >= script.crash_at) {
        tokio::time::sleep_until(origin + *at).await;
        second.start(*saga, *order).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(3_600), second.wait_at_rest())
        .await
        .expect("the runner came to rest")
        .unwrap();
    let mut t = trace.lock().unwrap().clone();
    for (saga, reason) in second.alerts() {
        t.decide(saga, Decision::Alert(reason));
    }
    t.states = second.sagas();
    t.totals.push(second.totals());
    t.with_log(&log.records())
}

/// The script's crash falls on the millisecond of another event of the first life, whose
/// order against the crash is tokio's: the script is moved a millisecond on.
#[derive(Debug)]
struct CrashTie;

/// The orchestrator driven through the pipeline by hand, through the script.
async fn run_core(config: SagaConfig, script: &Script) -> Result<Trace, CrashTie> {
    let origin = TokioInstant::now();
    let mut trace = Trace::default();
    let mut log: Vec<LogRecord> = Vec::new();
    let mut starts: Vec<(Duration, SagaId, Order)> = script.starts.clone();
    starts.reverse();
    let mut life_origin = origin;
    let mut orch = Orchestrator::recover(config.clone(), &[], Instant::ZERO);
    let mut pipeline = Pipeline::recovering(&mut orch, Instant::ZERO);
    let mut pending: Vec<(TokioInstant, Command, u32, Reply)> = Vec::new();
    let mut crashed = false;
    loop {
        let now = crate::rt::now_since(life_origin);
        while let Some(due) = pipeline.next(&mut orch, now) {
            match due.perform {
                Perform::Write(record) => {
                    log.push(record);
                    pipeline.durable();
                }
                Perform::Send(cmd, attempt) => {
                    let at = TokioInstant::now() - origin;
                    trace.decide(cmd.saga, Decision::Sent(at, cmd.step, cmd.kind, attempt));
                    if let Behaviour::Answer(delay, reply) = script.behaviour(&cmd, attempt) {
                        pending.push((TokioInstant::now() + delay, cmd, attempt, reply));
                    }
                }
                Perform::Alert(saga, reason) => trace.decide(saga, Decision::Alert(reason)),
            }
        }
        if crashed && starts.is_empty() && pipeline.is_at_rest(&orch) {
            break;
        }
        let timer =
            Pipeline::wake_at(&orch, now).and_then(|at| crate::rt::tokio_instant(life_origin, at));
        let next = [
            timer,
            pending.iter().map(|p| p.0).min(),
            starts.last().map(|s| origin + s.0),
            (!crashed).then_some(origin + script.crash_at),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("something is left to happen");
        tokio::time::sleep_until(next).await;
        let tnow = TokioInstant::now();
        if !crashed && tnow >= origin + script.crash_at {
            if pending.iter().any(|p| p.0 <= tnow) || timer.is_some_and(|t| t <= tnow) {
                return Err(CrashTie);
            }
            crashed = true;
            trace.totals.push(orch.totals());
            // The runner is dropped: in-flight calls are cancelled, memory is lost.
            pending.clear();
            life_origin = tnow;
            orch = Orchestrator::recover(config.clone(), &log, Instant::ZERO);
            pipeline = Pipeline::recovering(&mut orch, Instant::ZERO);
            continue;
        }
        let now = crate::rt::now_since(life_origin);
        pending.sort_by_key(|p| p.0);
        while pending.first().is_some_and(|p| p.0 <= tnow) {
            let (_, cmd, attempt, reply) = pending.remove(0);
            pipeline.reply(&mut orch, &cmd, attempt, Some(reply), now);
        }
        while starts.last().is_some_and(|s| origin + s.0 <= tnow) {
            if let Some((_, saga, order)) = starts.pop() {
                assert!(pipeline.start(&mut orch, saga, order, now));
            }
        }
        pipeline.timer(&mut orch, now);
    }
    trace.states = orch.sagas().collect();
    trace.totals.push(orch.totals());
    Ok(trace.with_log(&log))
}

/// Both sides through `script`, which must exercise what it is meant to.
async fn agree(deadline_from_sent: bool, script: &Script) -> Trace {
    let mut script = script.clone();
    let core = loop {
        match run_core(config(deadline_from_sent), &script).await {
            Ok(trace) => break trace,
            Err(CrashTie) => script.crash_at += ms(1),
        }
    };
    let script = &script;
    let adapter = run_adapter(config(deadline_from_sent), script).await;
    for (saga, decisions) in &core.decisions {
        assert_eq!(
            adapter.decisions.get(saga),
            Some(decisions),
            "{saga}: the runner decided otherwise than the driver core"
        );
    }
    assert_eq!(adapter, core, "the runner and the driver core disagree");
    core
}

fn exercised(trace: &Trace) {
    let first = trace.totals[0];
    let second = trace.totals[1];
    let total = |f: fn(&SagaTotals) -> u64| f(&first) + f(&second);
    assert!(total(|t| t.timeouts) > 0, "{trace:?}");
    assert!(total(|t| t.action_retries) > 0, "{trace:?}");
    assert!(total(|t| t.compensations) > 0, "{trace:?}");
    assert!(second.recovered > 0 && second.resumed > 0, "{second:?}");
    let states: Vec<SagaState> = trace.states.iter().map(|s| s.1).collect();
    for state in [SagaState::Completed, SagaState::Compensated] {
        assert!(states.contains(&state), "{states:?}");
    }
    assert!(states.iter().all(|s| s.is_at_rest()));
    assert!(trace.sends() > 2 * trace.states.len());
}

#[tokio::test(start_paused = true)]
async fn the_runner_decides_as_the_driver_core() {
    let trace = agree(false, &Script::new(3, 12, ms(230))).await;
    exercised(&trace);
}

#[tokio::test(start_paused = true)]
async fn the_runner_decides_as_the_driver_core_with_deadlines_from_sends() {
    let trace = agree(true, &Script::new(4, 12, ms(230))).await;
    exercised(&trace);
}

#[tokio::test(start_paused = true)]
async fn the_runner_agrees_over_many_scripts() {
    for seed in 10..30 {
        let crash_at = ms(100 + 17 * seed);
        agree(seed % 2 == 0, &Script::new(seed, 8, crash_at)).await;
    }
}
