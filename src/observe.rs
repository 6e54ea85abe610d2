//! What the tokio adapters tell the outside about what they do: `tracing` events and
//! spans (feature `tracing`) and counters and gauges through the `metrics` facade
//! (feature `metrics`), each labelled with the instance's [`Name`]. Without either
//! feature every function here is empty and compiles away.
//!
//! The names, labels and levels are the public contract listed in the README
//! ("Observability"); the simulated worlds never call into this module, so it cannot
//! change a trace digest.

// Without both features some parameters go unread.
#![cfg_attr(
    not(all(feature = "tracing", feature = "metrics")),
    allow(unused_variables, unused_imports, dead_code)
)]

use std::future::Future;
use std::time::Duration;

use crate::breaker::circuit::{BreakerEvent, State};
use crate::name::Name;

/// The name of an instance nobody named.
pub(crate) const UNNAMED: Name = Name::from_static("unnamed");

/// `faultline_breaker_state`'s value for a state.
pub(crate) const fn state_code(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
        State::ForcedOpen => 3.0,
        State::Disabled => 4.0,
        State::MetricsOnly => 5.0,
    }
}

/// A breaker's event: for a state change, a `tracing` event (`warn` when it opens,
/// `info` otherwise), `faultline_breaker_transitions_total` and the
/// `faultline_breaker_state` gauge; for the others, a `tracing` event.
pub(crate) fn breaker_transition(breaker: Name, event: &BreakerEvent) {
    let BreakerEvent::Transition {
        from,
        to,
        reason,
        generation,
        ..
    } = *event
    else {
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "faultline::breaker",
            breaker = breaker.as_str(),
            event = ?event,
            "circuit breaker event"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = breaker;
        return;
    };
    #[cfg(feature = "tracing")]
    {
        if matches!(to, State::Open | State::ForcedOpen) {
            tracing::warn!(
                target: "faultline::breaker",
                breaker = breaker.as_str(),
                from = from.name(),
                to = to.name(),
                reason = ?reason,
                generation,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                target: "faultline::breaker",
                breaker = breaker.as_str(),
                from = from.name(),
                to = to.name(),
                reason = ?reason,
                generation,
                "circuit breaker changed state"
            );
        }
    }
    #[cfg(feature = "metrics")]
    {
        let name = breaker.as_str().to_owned();
        metrics::counter!(
            "faultline_breaker_transitions_total",
            "breaker" => name.clone(),
            "from" => from.name(),
            "to" => to.name()
        )
        .increment(1);
        metrics::gauge!("faultline_breaker_state", "breaker" => name).set(state_code(to));
    }
}

/// A breaker's starting state on the `faultline_breaker_state` gauge.
pub(crate) fn breaker_created(breaker: Name, state: State) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("faultline_breaker_state", "breaker" => breaker.as_str().to_owned())
        .set(state_code(state));
}

/// How one attempt of a [`Resilient`](crate::breaker::tokio::Resilient) call ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Attempted {
    /// The API answered a value.
    Success,
    /// The API answered an error that counts as a failure.
    Failure,
    /// The API answered an error classified ignored (or success).
    Other,
    /// The attempt ran out of time.
    Timeout,
}

impl Attempted {
    const fn name(self) -> &'static str {
        match self {
            Attempted::Success => "success",
            Attempted::Failure => "failure",
            Attempted::Other => "ignored",
            Attempted::Timeout => "timeout",
        }
    }
}

/// Who refused a call (or its retry).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// The bulkhead was full.
    Bulkhead,
    /// The breaker rejected an attempt.
    Breaker,
    /// The retry budget refused a retry.
    Budget,
}

impl Refusal {
    const fn name(self) -> &'static str {
        match self {
            Refusal::Bulkhead => "bulkhead",
            Refusal::Breaker => "breaker",
            Refusal::Budget => "budget",
        }
    }
}

/// How a whole call ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answered {
    /// With the API's value.
    Api,
    /// With the fallback's, for this reason (a stable lower-case name).
    Fallback(&'static str),
    /// With an error of this kind (a stable lower-case name).
    Error(&'static str),
}

/// The counters of one stack, registered once when it is built (so a call costs an
/// atomic add per counter, not a registry lookup): the `metrics` recorder must be
/// installed before the stack is built.
#[derive(Debug)]
pub(crate) struct CallObserver {
    stack: Name,
    upstream: Name,
    #[cfg(feature = "metrics")]
    counters: CallCounters,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct CallCounters {
    /// By [`Attempted`], in its order.
    attempts: [metrics::Counter; 4],
    retries: metrics::Counter,
    /// By who refused: the bulkhead, the breaker, the retry budget.
    refusals: [metrics::Counter; 3],
    api: metrics::Counter,
    fallback: metrics::Counter,
    error: metrics::Counter,
}

impl CallObserver {
    /// The observer of stack `stack` calling upstream `upstream`.
    pub(crate) fn new(stack: Name, upstream: Name) -> Self {
        #[cfg(feature = "metrics")]
        let counters = {
            let labels = |extra: (&'static str, &'static str)| {
                vec![
                    metrics::Label::new("stack", stack.as_str().to_owned()),
                    metrics::Label::new("upstream", upstream.as_str().to_owned()),
                    metrics::Label::new(extra.0, extra.1),
                ]
            };
            let attempt = |a: Attempted| {
                metrics::counter!("faultline_attempts_total", labels(("outcome", a.name())))
            };
            let call =
                |a: &'static str| metrics::counter!("faultline_calls_total", labels(("answer", a)));
            CallCounters {
                attempts: [
                    attempt(Attempted::Success),
                    attempt(Attempted::Failure),
                    attempt(Attempted::Other),
                    attempt(Attempted::Timeout),
                ],
                retries: metrics::counter!(
                    "faultline_retries_total",
                    "stack" => stack.as_str().to_owned(),
                    "upstream" => upstream.as_str().to_owned()
                ),
                refusals: ["bulkhead", "breaker", "budget"]
                    .map(|by| metrics::counter!("faultline_refusals_total", labels(("by", by)))),
                api: call("api"),
                fallback: call("fallback"),
                error: call("error"),
            }
        };
        CallObserver {
            stack,
            upstream,
            #[cfg(feature = "metrics")]
            counters,
        }
    }

    /// The stack's name.
    pub(crate) fn stack(&self) -> Name {
        self.stack
    }

    /// Runs `call` inside a `faultline.call` span naming the stack and its upstream.
    pub(crate) fn in_span<F: Future>(&self, call: F) -> impl Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            call.instrument(tracing::debug_span!(
                target: "faultline::breaker",
                "faultline.call",
                stack = self.stack.as_str(),
                upstream = self.upstream.as_str()
            ))
        }
        #[cfg(not(feature = "tracing"))]
        call
    }

    /// Attempt number `attempt` (1 for the first) ended so, after `elapsed`.
    pub(crate) fn attempt(&self, attempt: u32, outcome: Attempted, elapsed: Duration) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "faultline::breaker",
            attempt,
            outcome = outcome.name(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "attempt ended"
        );
        #[cfg(feature = "metrics")]
        self.counters.attempts[outcome as usize].increment(1);
    }

    /// A retry waits `delay` before its attempt.
    pub(crate) fn retry(&self, delay: Duration) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "faultline::breaker",
            delay_ms = delay.as_secs_f64() * 1e3,
            "retrying after a backoff"
        );
        #[cfg(feature = "metrics")]
        self.counters.retries.increment(1);
    }

    /// The call was refused a slot or an attempt, by the bulkhead, the breaker or the
    /// retry budget.
    pub(crate) fn refused(&self, by: Refusal) {
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "faultline::breaker", by = by.name(), "refused");
        #[cfg(feature = "metrics")]
        self.counters.refusals[by as usize].increment(1);
    }

    /// The call ended so.
    pub(crate) fn answered(&self, answered: Answered) {
        #[cfg(feature = "tracing")]
        match answered {
            Answered::Api => {}
            Answered::Fallback(cause) => {
                tracing::info!(target: "faultline::breaker", cause, "answered by the fallback");
            }
            Answered::Error(kind) => {
                tracing::info!(target: "faultline::breaker", error = kind, "call failed");
            }
        }
        #[cfg(feature = "metrics")]
        match answered {
            Answered::Api => self.counters.api.increment(1),
            Answered::Fallback(_) => self.counters.fallback.increment(1),
            Answered::Error(_) => self.counters.error.increment(1),
        }
    }
}

/// How a bus delivery was settled.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Settled {
    /// The handler took it: acknowledged.
    Handled,
    /// The handler failed; the bus will retry it.
    Retried,
    /// The handler failed its last attempt: dead-lettered.
    DeadLettered,
}

/// The counters and gauges of one bus subscriber, registered when it subscribes.
#[derive(Debug)]
pub(crate) struct SubscriberObserver {
    bus: Name,
    subscriber: u32,
    #[cfg(feature = "metrics")]
    gauges: SubscriberMetrics,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct SubscriberMetrics {
    /// By [`Settled`], in its order.
    deliveries: [metrics::Counter; 3],
    lag: metrics::Gauge,
    dead_letters: metrics::Gauge,
}

impl SubscriberObserver {
    /// The observer of subscriber `subscriber` of bus `bus`.
    pub(crate) fn new(bus: Name, subscriber: u32) -> Self {
        #[cfg(feature = "metrics")]
        let gauges = {
            let labels = || {
                vec![
                    metrics::Label::new("bus", bus.as_str().to_owned()),
                    metrics::Label::new("subscriber", subscriber.to_string()),
                ]
            };
            let delivery = |outcome: &'static str| {
                let mut l = labels();
                l.push(metrics::Label::new("outcome", outcome));
                metrics::counter!("faultline_bus_deliveries_total", l)
            };
            SubscriberMetrics {
                deliveries: [
                    delivery("handled"),
                    delivery("retried"),
                    delivery("dead_lettered"),
                ],
                lag: metrics::gauge!("faultline_bus_lag", labels()),
                dead_letters: metrics::gauge!("faultline_bus_dead_letters", labels()),
            }
        };
        SubscriberObserver {
            bus,
            subscriber,
            #[cfg(feature = "metrics")]
            gauges,
        }
    }

    /// Event `seq` of `topic`, delivered for the `attempt`th time, was settled so;
    /// `backlog()` is what the subscriber is still owed and holds in dead letters (read
    /// only when a metric wants it).
    pub(crate) fn settled(
        &self,
        topic: &str,
        seq: u64,
        attempt: u32,
        settled: Settled,
        backlog: impl FnOnce() -> (u64, usize),
    ) {
        #[cfg(feature = "tracing")]
        {
            // The fields are read only when the event is enabled.
            let subscriber = self.subscriber;
            match settled {
                Settled::Handled => self.handled(topic, seq, attempt),
                Settled::Retried => tracing::debug!(
                    target: "faultline::bus", bus = self.bus.as_str(), subscriber, topic, seq,
                    attempt, "handler failed; the event will be retried"
                ),
                Settled::DeadLettered => tracing::warn!(
                    target: "faultline::bus", bus = self.bus.as_str(), subscriber, topic, seq,
                    attempt, "handler failed its last attempt; the event is dead-lettered"
                ),
            }
        }
        #[cfg(feature = "metrics")]
        {
            self.gauges.deliveries[settled as usize].increment(1);
            let (owed, dead) = backlog();
            self.gauges.lag.set(owed as f64);
            self.gauges.dead_letters.set(dead as f64);
        }
    }

    /// Events `first`, `first + 1`, ... (`n` of them) of `topic`, each at its first
    /// attempt, were handled and acknowledged in turn: the same events and counts as `n`
    /// calls of [`settled`](Self::settled), with the gauges set once, after the last.
    pub(crate) fn handled_run(
        &self,
        topic: &str,
        first: u64,
        n: u64,
        backlog: impl FnOnce() -> (u64, usize),
    ) {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        if n == 0 {
            return;
        }
        #[cfg(feature = "tracing")]
        for seq in first..first + n {
            self.handled(topic, seq, 1);
        }
        #[cfg(feature = "metrics")]
        {
            self.gauges.deliveries[Settled::Handled as usize].increment(n);
            let (owed, dead) = backlog();
            self.gauges.lag.set(owed as f64);
            self.gauges.dead_letters.set(dead as f64);
        }
    }

    /// The `tracing` event of one handled delivery.
    #[cfg(feature = "tracing")]
    #[inline]
    fn handled(&self, topic: &str, seq: u64, attempt: u32) {
        tracing::trace!(
            target: "faultline::bus", bus = self.bus.as_str(), subscriber = self.subscriber,
            topic, seq, attempt, "event handled"
        );
    }
}

/// The counters of one saga runner, registered when it is built.
#[derive(Debug)]
pub(crate) struct SagaObserver {
    runner: Name,
    #[cfg(feature = "metrics")]
    metrics: SagaMetrics,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct SagaMetrics {
    started: metrics::Counter,
    /// Completed, compensated, failed.
    ended: [metrics::Counter; 3],
    /// Step compensations begun (first attempts).
    compensations: metrics::Counter,
    alerts: metrics::Counter,
    running: metrics::Gauge,
}

impl SagaObserver {
    /// The observer of the saga runner `runner`.
    pub(crate) fn new(runner: Name) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = {
            let name = || runner.as_str().to_owned();
            let state = |state: &'static str| metrics::counter!("faultline_sagas_total", "runner" => name(), "state" => state);
            SagaMetrics {
                started: state("started"),
                ended: [state("completed"), state("compensated"), state("failed")],
                compensations: metrics::counter!("faultline_saga_compensations_total", "runner" => name()),
                alerts: metrics::counter!("faultline_saga_alerts_total", "runner" => name()),
                running: metrics::gauge!("faultline_sagas_running", "runner" => name()),
            }
        };
        SagaObserver {
            runner,
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    /// The runner decided `record` (it is being made durable); `running` sagas are not
    /// at rest.
    pub(crate) fn record<P, R>(&self, record: &crate::saga::LogRecord<P, R>, running: usize) {
        use crate::saga::{LogRecord, SagaState};
        let runner = self.runner.as_str();
        match record {
            LogRecord::Started { saga, .. } => {
                #[cfg(feature = "tracing")]
                tracing::info!(target: "faultline::saga", runner, saga = saga.0, "saga started");
                #[cfg(feature = "metrics")]
                self.metrics.started.increment(1);
            }
            LogRecord::StepIntent {
                saga,
                step,
                attempt,
            } => {
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    target: "faultline::saga", runner, saga = saga.0, step = step.name(), attempt,
                    "step action sent"
                );
            }
            LogRecord::StepOutcome { saga, step, ok, .. } => {
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    target: "faultline::saga", runner, saga = saga.0, step = step.name(), ok,
                    "step action answered"
                );
            }
            LogRecord::CompensationIntent {
                saga,
                step,
                attempt,
            } => {
                #[cfg(feature = "tracing")]
                tracing::info!(
                    target: "faultline::saga", runner, saga = saga.0, step = step.name(), attempt,
                    "step compensation sent"
                );
                #[cfg(feature = "metrics")]
                if *attempt == 1 {
                    self.metrics.compensations.increment(1);
                }
            }
            LogRecord::CompensationDone { saga, step } => {
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    target: "faultline::saga", runner, saga = saga.0, step = step.name(),
                    "step compensated"
                );
            }
            LogRecord::Ended { saga, state } => {
                #[cfg(feature = "tracing")]
                if *state == SagaState::Failed {
                    tracing::warn!(
                        target: "faultline::saga", runner, saga = saga.0, state = state.name(),
                        "saga ended failed: a compensation could not be done"
                    );
                } else {
                    tracing::info!(
                        target: "faultline::saga", runner, saga = saga.0, state = state.name(),
                        "saga ended"
                    );
                }
                #[cfg(feature = "metrics")]
                match state {
                    SagaState::Completed => self.metrics.ended[0].increment(1),
                    SagaState::Compensated => self.metrics.ended[1].increment(1),
                    SagaState::Failed => self.metrics.ended[2].increment(1),
                    SagaState::Running | SagaState::Compensating => {}
                }
            }
        }
        #[cfg(feature = "metrics")]
        self.metrics.running.set(running as f64);
    }

    /// The runner raised an alert for `saga`.
    pub(crate) fn alert(&self, saga: crate::saga::SagaId, reason: &dyn std::fmt::Debug) {
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "faultline::saga", runner = self.runner.as_str(), saga = saga.0,
            reason = ?reason, "saga alert: it needs a human"
        );
        #[cfg(feature = "metrics")]
        self.metrics.alerts.increment(1);
    }
}

/// The gauges of one projection task, registered when it is spawned.
#[derive(Debug)]
pub(crate) struct ProjectionObserver {
    #[cfg(feature = "metrics")]
    lag: metrics::Gauge,
    #[cfg(feature = "metrics")]
    position: metrics::Gauge,
}

impl ProjectionObserver {
    /// The observer of projection `projection`.
    pub(crate) fn new(projection: Name) -> Self {
        ProjectionObserver {
            #[cfg(feature = "metrics")]
            lag: metrics::gauge!("faultline_projection_lag", "projection" => projection.as_str().to_owned()),
            #[cfg(feature = "metrics")]
            position: metrics::gauge!("faultline_projection_position", "projection" => projection.as_str().to_owned()),
        }
    }

    /// The read model has applied the log up to `position`; the log's head is `head`.
    pub(crate) fn stepped(&self, position: u64, head: u64) {
        #[cfg(feature = "metrics")]
        {
            self.position.set(position as f64);
            self.lag.set(head.saturating_sub(position) as f64);
        }
    }
}

/// Reading metrics back in tests: a `metrics-util` debugging recorder scoped to one
/// thread, and lookups by name and exact label set.
#[cfg(all(test, feature = "metrics"))]
pub(crate) mod testing {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// One metric read back: its name, its labels, its value.
    type Read = (String, Vec<(String, String)>, DebugValue);

    /// The metrics recorded, by name and labels.
    pub(crate) struct Recorded(Vec<Read>);

    /// Runs `f` on a paused current-thread runtime with a recorder of its own, and
    /// returns what was recorded (the handles registered inside `f` record there).
    // Test support: a runtime that cannot start fails the test.
    #[allow(clippy::expect_used)]
    pub(crate) fn recorded<F: std::future::Future>(f: impl FnOnce() -> F) -> Recorded {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            ::tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime")
                .block_on(f());
        });
        Recorded(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let labels = key
                        .key()
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    (key.key().name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    impl Recorded {
        /// The one metric named `name` with exactly `labels`.
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
            let found: Vec<&DebugValue> = self
                .0
                .iter()
                .filter(|(n, l, _)| {
                    n == name
                        && l.len() == labels.len()
                        && labels
                            .iter()
                            .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
                })
                .map(|(_, _, v)| v)
                .collect();
            assert_eq!(found.len(), 1, "{name} {labels:?} in {:#?}", self.0);
            found[0]
        }

        /// The counter named `name` with exactly `labels`.
        pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            match self.value(name, labels) {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is {other:?}"),
            }
        }

        /// The gauge named `name` with exactly `labels`.
        pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            match self.value(name, labels) {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{name} is {other:?}"),
            }
        }
    }
}

/// How a nack ended, for the queue's counters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NackEnd {
    /// Retried after a backoff.
    Retry,
    /// A newer version was waiting: superseded.
    Superseded,
    /// Its last attempt: dead-lettered.
    DeadLettered,
}

/// The counters and gauges of one shared queue, registered when it is built.
#[derive(Debug)]
pub(crate) struct QueueObserver {
    queue: Name,
    #[cfg(feature = "metrics")]
    metrics: QueueMetrics,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct QueueMetrics {
    enqueued: metrics::Counter,
    leases: metrics::Counter,
    acks: metrics::Counter,
    /// By [`NackEnd`], in its order.
    nacks: [metrics::Counter; 3],
    fenced: metrics::Counter,
    unsettled: metrics::Gauge,
    dead_letters: metrics::Gauge,
}

impl QueueObserver {
    /// The observer of queue `queue`.
    pub(crate) fn new(queue: Name) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = {
            let name = || queue.as_str().to_owned();
            let nack = |outcome: &'static str| metrics::counter!("faultline_queue_nacks_total", "queue" => name(), "outcome" => outcome);
            QueueMetrics {
                enqueued: metrics::counter!("faultline_queue_enqueued_total", "queue" => name()),
                leases: metrics::counter!("faultline_queue_leases_total", "queue" => name()),
                acks: metrics::counter!("faultline_queue_acks_total", "queue" => name()),
                nacks: [nack("retry"), nack("superseded"), nack("dead_lettered")],
                fenced: metrics::counter!("faultline_queue_fenced_total", "queue" => name()),
                unsettled: metrics::gauge!("faultline_queue_unsettled", "queue" => name()),
                dead_letters: metrics::gauge!("faultline_queue_dead_letters", "queue" => name()),
            }
        };
        QueueObserver {
            queue,
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    /// Jobs now in the queue and not settled (pending, leased or retrying), and jobs
    /// dead now (not redriven): read only when a metric wants them.
    fn levels(&self, levels: impl FnOnce() -> (u64, u64)) {
        #[cfg(feature = "metrics")]
        {
            let (unsettled, dead) = levels();
            self.metrics.unsettled.set(unsettled as f64);
            self.metrics.dead_letters.set(dead as f64);
        }
    }

    /// `accepted` jobs were enqueued (duplicates are not).
    pub(crate) fn enqueued(&self, accepted: u64, levels: impl FnOnce() -> (u64, u64)) {
        #[cfg(feature = "metrics")]
        self.metrics.enqueued.increment(accepted);
        self.levels(levels);
    }

    /// A job was leased for its `attempt`th time.
    pub(crate) fn leased(&self, job: &dyn std::fmt::Display, attempt: u32, target: Option<Name>) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "faultline::queue", queue = self.queue.as_str(), job = %job, attempt,
            target = target.as_ref().map(Name::as_str),
            "job leased"
        );
        #[cfg(feature = "metrics")]
        self.metrics.leases.increment(1);
    }

    /// A lease was acked (`fenced`: refused, the lease was no longer valid).
    pub(crate) fn acked(&self, fenced: bool, levels: impl FnOnce() -> (u64, u64)) {
        #[cfg(feature = "metrics")]
        if fenced {
            self.metrics.fenced.increment(1);
        } else {
            self.metrics.acks.increment(1);
        }
        self.levels(levels);
    }

    /// A lease was nacked with `error` and ended so (`None`: fenced).
    pub(crate) fn nacked(
        &self,
        job: &dyn std::fmt::Display,
        error: &str,
        end: Option<NackEnd>,
        levels: impl FnOnce() -> (u64, u64),
    ) {
        #[cfg(feature = "tracing")]
        match end {
            Some(NackEnd::DeadLettered) => tracing::warn!(
                target: "faultline::queue", queue = self.queue.as_str(), job = %job, error,
                "job failed its last attempt; it is dead-lettered"
            ),
            Some(NackEnd::Retry) => tracing::info!(
                target: "faultline::queue", queue = self.queue.as_str(), job = %job, error,
                "job failed; it will be retried"
            ),
            Some(NackEnd::Superseded) => tracing::debug!(
                target: "faultline::queue", queue = self.queue.as_str(), job = %job, error,
                "job failed; a newer version supersedes it"
            ),
            None => {}
        }
        #[cfg(feature = "metrics")]
        match end {
            Some(end) => self.metrics.nacks[end as usize].increment(1),
            None => self.metrics.fenced.increment(1),
        }
        self.levels(levels);
    }
}
