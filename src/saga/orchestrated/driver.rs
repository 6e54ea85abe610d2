//! The driver core of the orchestrated saga: what a driver of a [`SagaCoordinator`]
//! decides between the coordinator and its surroundings, written once, sans-IO, for the
//! two drivers there are: the simulated checkout ([`world`](super::world)), which the
//! simulator verifies, and the tokio [`SagaRunner`](super::tokio::SagaRunner), which a
//! service runs (quinn over quinn-proto). Neither holds a policy of its own: each feeds
//! inputs and `now` to a [`Pipeline`] and carries out what it hands back.
//!
//! The decisions:
//!
//! - **The output pipeline.** Outputs are carried out in the order emitted. A record is
//!   handed to the store ([`Perform::Write`]) and nothing after it is handed out until
//!   the driver reports it durable ([`Pipeline::durable`]): a command leaves only once
//!   every record before it (its intent, its saga's start) is durable (write-ahead).
//!   A store that may be slow (the world's disk) and one that is durable on return (the
//!   runner's [`LogStore`](super::tokio::LogStore)) go through the same queue.
//! - **Sends are reported.** A command is handed out ([`Perform::Send`]) only as it
//!   leaves, and the coordinator is told then
//!   ([`on_sent`](SagaCoordinator::on_sent)), so with
//!   [`deadline_from_sent`](crate::saga::SagaConfigBuilder::deadline_from_sent) its
//!   deadline counts from the send, not from when it was emitted before the disk.
//! - **A failed append halts.** After [`Pipeline::append_failed`] nothing more is
//!   handed out and no input is fed: the record may not be durable, so nothing that
//!   depends on it may happen. Only a recovery from the log goes on.
//! - **Replies.** A participant's answer is fed with
//!   [`on_reply`](SagaCoordinator::on_reply); no answer (`None`: a transport failure) is
//!   fed as nothing, and the attempt's deadline decides (a timeout, then a retry or a
//!   compensation, by the coordinator's rules).
//! - **Timers.** The driver wakes at [`Pipeline::wake_at`] (the coordinator's earliest
//!   deadline or retry time, never in the past) and calls [`Pipeline::timer`].
//! - **Recovery and crashes.** A recovered coordinator's outputs (the resends of what was
//!   in flight) go through a fresh pipeline ([`Pipeline::recovering`]); a crash loses
//!   whatever was not durable ([`Pipeline::crash`]).
//! - **At rest** is the coordinator at rest with nothing left to carry out
//!   ([`Pipeline::is_at_rest`]).

use std::collections::VecDeque;

use crate::clock::Instant;
use crate::saga::orchestrated::contract::SagaCoordinator;
use crate::saga::orchestrated::core::{AlertReason, Output};
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Command, Order, Refusal, Reply, SagaData, SagaId};

/// One thing for the driver to carry out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Perform<P = Order, R = Refusal> {
    /// Hand this record to the durable store, then report [`Pipeline::durable`] (or
    /// [`Pipeline::append_failed`]); nothing else is handed out meanwhile.
    Write(LogRecord<P, R>),
    /// Send this command (attempt number second). The coordinator was told it left.
    Send(Command<P>, u32),
    /// Raise this alert: the saga needs a human.
    Alert(SagaId, AlertReason),
}

impl<P, R> Perform<P, R> {
    /// The saga it is about.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn saga(&self) -> SagaId {
        match self {
            Perform::Write(record) => record.saga(),
            Perform::Send(cmd, _) => cmd.saga,
            Perform::Alert(saga, _) => *saga,
        }
    }
}

/// What [`Pipeline::next`] hands out: the thing to do and when the coordinator emitted
/// it (it may have waited behind the disk since).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Due<P = Order, R = Refusal> {
    /// What to do.
    pub(crate) perform: Perform<P, R>,
    /// When the coordinator emitted it.
    pub(crate) emitted: Instant,
}

/// What a crash lost: the record being written (if any), then everything still
/// waiting its turn, each with when it was emitted.
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Lost<P = Order, R = Refusal> {
    /// The record handed to the store and not reported durable.
    pub(crate) writing: Option<LogRecord<P, R>>,
    /// The outputs that had not reached the head of the queue, in order.
    pub(crate) waiting: Vec<(Output<P, R>, Instant)>,
}

impl<P, R> Default for Lost<P, R> {
    fn default() -> Self {
        Lost {
            writing: None,
            waiting: Vec::new(),
        }
    }
}

/// The output pipeline between a coordinator and its driver: see the [module
/// docs](self).
#[derive(Debug)]
pub(crate) struct Pipeline<P = Order, R = Refusal> {
    /// The outputs not yet carried out, with when each was emitted; while `writing`,
    /// the head is the record being written.
    queue: VecDeque<(Output<P, R>, Instant)>,
    /// The head record is with the store, not yet reported durable.
    writing: bool,
    /// An append failed: nothing more is handed out or fed.
    halted: bool,
}

impl<P, R> Default for Pipeline<P, R> {
    fn default() -> Self {
        Pipeline {
            queue: VecDeque::new(),
            writing: false,
            halted: false,
        }
    }
}

impl<P: SagaData, R: SagaData> Pipeline<P, R> {
    /// An empty pipeline.
    pub(crate) fn new() -> Self {
        Pipeline::default()
    }

    /// The pipeline of a coordinator just rebuilt from the log: its outputs so far (the
    /// resends of what was in flight at the crash) are queued, emitted `now`.
    pub(crate) fn recovering<O: SagaCoordinator<P, R>>(coordinator: &mut O, now: Instant) -> Self {
        let mut pipeline = Pipeline::new();
        pipeline.pull(coordinator, now);
        pipeline
    }

    /// Queues the coordinator's pending outputs, emitted `now`.
    pub(crate) fn pull<O: SagaCoordinator<P, R>>(&mut self, coordinator: &mut O, now: Instant) {
        while let Some(output) = coordinator.poll_output() {
            if !self.halted {
                self.queue.push_back((output, now));
            }
        }
    }

    // ----- inputs -----

    /// Starts `saga` for `order` and queues what it emits. False if the coordinator
    /// knows the id already, or the pipeline is halted (then nothing is fed).
    pub(crate) fn start<O: SagaCoordinator<P, R>>(
        &mut self,
        coordinator: &mut O,
        saga: SagaId,
        payload: P,
        now: Instant,
    ) -> bool {
        if self.halted {
            return false;
        }
        let accepted = coordinator.start(saga, payload, now);
        self.pull(coordinator, now);
        accepted
    }

    /// A participant's answer to attempt `attempt` of `cmd`: `Some` is fed to the
    /// coordinator (true unless it was stale), `Failed` included; `None`, no answer (lost),
    /// is not: the attempt's deadline decides. Nothing is fed once halted.
    pub(crate) fn reply<O: SagaCoordinator<P, R>>(
        &mut self,
        coordinator: &mut O,
        cmd: &Command<P>,
        attempt: u32,
        reply: Option<Reply<R>>,
        now: Instant,
    ) -> bool {
        let Some(reply) = reply.filter(|_| !self.halted) else {
            return false;
        };
        let fresh = coordinator.on_reply(cmd.saga, cmd.step, cmd.kind, attempt, reply, now);
        self.pull(coordinator, now);
        fresh
    }

    /// The driver woke for a timer: handles every deadline and retry due at `now` and
    /// queues what follows. Nothing once halted.
    pub(crate) fn timer<O: SagaCoordinator<P, R>>(&mut self, coordinator: &mut O, now: Instant) {
        if self.halted {
            return;
        }
        coordinator.handle_timeout(now);
        self.pull(coordinator, now);
    }

    /// When the driver must wake and call [`timer`](Pipeline::timer) next: the
    /// coordinator's earliest timer, or `now` if that is past; `None` without a timer.
    /// (Ask again after carrying out sends: a reported send may arm a deadline.)
    pub(crate) fn wake_at<O: SagaCoordinator<P, R>>(
        coordinator: &O,
        now: Instant,
    ) -> Option<Instant> {
        coordinator.poll_timeout().map(|at| at.max(now))
    }

    // ----- outputs -----

    /// How many records are queued to be written (the one being written included).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn pending_writes(&self) -> usize {
        self.queue
            .iter()
            .filter(|(o, _)| matches!(o, Output::Append(_)))
            .count()
    }

    /// The next thing to carry out, at `now`; `None` while a record is being written,
    /// when nothing is queued, or once halted. A send is reported to the coordinator
    /// ([`on_sent`](SagaCoordinator::on_sent)) as it is handed out.
    pub(crate) fn next<O: SagaCoordinator<P, R>>(
        &mut self,
        coordinator: &mut O,
        now: Instant,
    ) -> Option<Due<P, R>> {
        if self.writing || self.halted {
            return None;
        }
        let (output, emitted) = self.queue.front()?.clone();
        let perform = match output {
            Output::Append(record) => {
                self.writing = true;
                Perform::Write(record)
            }
            Output::Send(cmd, attempt) => {
                self.queue.pop_front();
                coordinator.on_sent(cmd.saga, cmd.step, cmd.kind, attempt, now);
                Perform::Send(cmd, attempt)
            }
            Output::Alert { saga, reason } => {
                self.queue.pop_front();
                Perform::Alert(saga, reason)
            }
        };
        Some(Due { perform, emitted })
    }

    /// The record being written is durable: it is handed back, and what follows it may
    /// go out. `None` if no record was being written.
    pub(crate) fn durable(&mut self) -> Option<LogRecord<P, R>> {
        if !self.writing {
            return None;
        }
        self.writing = false;
        match self.queue.pop_front() {
            Some((Output::Append(record), _)) => Some(record),
            _ => None,
        }
    }

    /// The record being written may not be durable (the store failed): the pipeline
    /// halts, dropping what was queued; nothing more is handed out or fed.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn append_failed(&mut self) {
        self.halted = true;
        self.writing = false;
        self.queue.clear();
    }

    /// The driver crashed: what was not durable is lost, and handed back.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn crash(&mut self) -> Lost<P, R> {
        let mut lost = Lost::default();
        if std::mem::take(&mut self.writing)
            && let Some((Output::Append(record), _)) = self.queue.pop_front()
        {
            lost.writing = Some(record);
        }
        lost.waiting = self.queue.drain(..).collect();
        lost
    }

    // ----- state -----

    /// True once an append failed.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn is_halted(&self) -> bool {
        self.halted
    }

    /// True when the coordinator is at rest and nothing is left to carry out.
    pub(crate) fn is_at_rest<O: SagaCoordinator<P, R>>(&self, coordinator: &O) -> bool {
        self.queue.is_empty() && coordinator.is_at_rest()
    }
}
