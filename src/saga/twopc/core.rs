//! Two-phase commit (2PC): the baseline the checkout saga replaces. A sans-IO
//! [`Coordinator`] runs many concurrent transactions (one per checkout) against three
//! participants, the [`Cohort`]s (order, inventory, payment; "cohort" as in the 2PC
//! literature, so the name is not taken for the saga's services).
//!
//! Phase one: the coordinator sends `Prepare`; each participant takes its locks (the
//! inventory locks the item's stock row, so another transaction on the same item gets a
//! retryable [`Vote::Locked`]), makes its tentative change (order pending, stock held,
//! card authorised) and votes. Phase two: the coordinator makes its decision durable in
//! its log ([`TxRecord::Decision`]) and only then sends `Commit` or `Abort`, re-sending
//! until every participant acknowledges. A participant that voted Yes is *in doubt*: it
//! holds its locks until the decision arrives and may not decide on its own (it asks
//! again by re-sending its vote). The coordinator presumes abort: a transaction with no
//! decision in its log is aborted, so after a crash it [recovers](Coordinator::recover)
//! every logged decision and answers any other vote with `Abort`.
//!
//! Call order, as for the saga [`Orchestrator`](crate::saga::Orchestrator): inputs
//! (`start`, `on_answer`, `handle_timeout`, with `now`), then drain
//! [`poll_output`](Coordinator::poll_output) and carry the outputs out in order (an
//! [`CoordinatorOutput::Append`] must be durable before anything after it happens), then arm a
//! timer for [`poll_timeout`](Coordinator::poll_timeout).
//!
//! ```
//! use faultline::clock::Instant;
//! use faultline::saga::twopc::core::{
//!     Coordinator, Decision, CoordinatorOutput, Cohort, TwoPcConfig, TxState, step_index,
//! };
//! use faultline::saga::{Order, SagaId, StepId};
//!
//! let config = TwoPcConfig::default();
//! let mut coordinator = Coordinator::new(config.clone());
//! let mut participants = [
//!     Cohort::orders(config.clone()),
//!     Cohort::inventory(config.clone(), [(1, 10)]),
//!     Cohort::payment(config, []),
//! ];
//! let mut log = Vec::new(); // stands for durable storage
//! let now = Instant::ZERO;
//! coordinator.start(SagaId(1), Order { item: 1, qty: 2, amount: 500 }, now);
//! while let Some(output) = coordinator.poll_output() {
//!     match output {
//!         CoordinatorOutput::Append(record) => log.push(record),
//!         CoordinatorOutput::Send(msg) => {
//!             let answer = participants[step_index(msg.step)].handle(&msg, now);
//!             coordinator.on_answer(&answer, now);
//!         }
//!     }
//! }
//! assert_eq!(coordinator.state(SagaId(1)), Some(TxState::Ended(Decision::Commit)));
//! assert_eq!(participants[1].available(1), 8);
//! assert_eq!(participants[2].captured_total(), 500);
//! assert_eq!(participants.iter().map(|p| p.locks_held()).sum::<usize>(), 0);
//! ```

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::saga::services::{Order, SagaId, StepId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// The position of `step` among the participants: order 0, inventory 1, payment 2 (two-
/// phase commit runs the checkout's steps only; any other step is 0).
pub fn step_index(step: StepId) -> usize {
    StepId::ALL.iter().position(|s| *s == step).unwrap_or(0)
}

/// The outcome of a transaction.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every participant voted Yes: apply.
    Commit,
    /// Some participant voted No, or a vote did not arrive in time: undo.
    Abort,
}

/// A participant's vote on `Prepare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    /// Prepared: locks held, ready to commit or abort. The participant is now in doubt.
    Yes,
    /// Cannot commit (declined card, out of stock, or already aborted). Nothing held.
    No,
    /// Another transaction holds the lock this one needs: nothing held, ask again.
    Locked,
}

/// What the coordinator sends a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Phase one: lock, make the tentative change, vote.
    Prepare(Order),
    /// Phase two: apply the decision and release the locks.
    Decide(Decision),
}

/// A message from the coordinator to the participant `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToParticipant {
    /// The transaction.
    pub tx: SagaId,
    /// The participant.
    pub step: StepId,
    /// What is asked.
    pub request: Request,
}

impl fmt::Display for ToParticipant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.request {
            Request::Prepare(_) => write!(f, "{} prepare {}", self.tx, self.step),
            Request::Decide(d) => write!(f, "{} {d:?} {}", self.tx, self.step),
        }
    }
}

/// What a participant answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Its vote (also re-sent by an in-doubt participant to ask for the decision).
    Vote(Vote),
    /// It applied (or had already applied) this decision.
    Ack(Decision),
}

/// A message from the participant `step` to the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToCoordinator {
    /// The transaction.
    pub tx: SagaId,
    /// The participant.
    pub step: StepId,
    /// The answer.
    pub reply: Response,
}

impl fmt::Display for ToCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.tx, self.step, self.reply)
    }
}

/// Timing of the protocol, shared by the coordinator and the participants.
///
/// Serde: an object keyed by the builder's methods, read through the builder (a bad
/// value is refused with its [`ConfigError`], an unknown key too, a key left out keeps
/// the default), e.g. `{"vote_timeout": {"secs": 2, "nanos": 0}}`; see
/// [`config`](crate::config#reading-a-configuration-from-a-file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoPcConfig {
    vote_timeout: Duration,
    resend_interval: Duration,
}

impl Default for TwoPcConfig {
    fn default() -> Self {
        TwoPcConfig {
            vote_timeout: Duration::from_secs(1),
            resend_interval: Duration::from_millis(50),
        }
    }
}

impl TwoPcConfig {
    /// A builder starting from the defaults (vote timeout 1 s, resend every 50 ms).
    pub fn builder() -> TwoPcConfigBuilder {
        TwoPcConfigBuilder {
            config: TwoPcConfig::default(),
        }
    }
    /// How long the coordinator waits for every vote before it aborts.
    pub fn vote_timeout(&self) -> Duration {
        self.vote_timeout
    }
    /// How often an unanswered `Prepare`, an unacknowledged decision, or an in-doubt
    /// participant's vote is sent again.
    pub fn resend_interval(&self) -> Duration {
        self.resend_interval
    }
}

/// Builds a [`TwoPcConfig`].
#[derive(Clone, Debug)]
pub struct TwoPcConfigBuilder {
    config: TwoPcConfig,
}

impl TwoPcConfigBuilder {
    /// How long the coordinator waits for every vote (more than zero). Default: 1 s.
    pub fn vote_timeout(mut self, d: Duration) -> Self {
        self.config.vote_timeout = d;
        self
    }
    /// How often messages are re-sent (more than zero). Default: 50 ms.
    pub fn resend_interval(mut self, d: Duration) -> Self {
        self.config.resend_interval = d;
        self
    }
    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `vote_timeout` or `resend_interval` when zero.
    pub fn build(self) -> Result<TwoPcConfig, ConfigError> {
        if self.config.vote_timeout.is_zero() {
            return Err(ConfigError::new(
                "vote_timeout",
                "must be greater than zero, got 0ns",
            ));
        }
        if self.config.resend_interval.is_zero() {
            return Err(ConfigError::new(
                "resend_interval",
                "must be greater than zero, got 0ns",
            ));
        }
        Ok(self.config)
    }
}

/// A record of the coordinator's durable log. Presumed abort: nothing is logged before
/// the decision, and a transaction without a decision record is aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxRecord {
    /// The decision, durable before any participant hears of it.
    Decision {
        /// The transaction.
        tx: SagaId,
        /// What was decided.
        decision: Decision,
        /// The order (to re-send the decision after recovery).
        order: Order,
    },
    /// Every participant acknowledged the decision: nothing more to send.
    Ended {
        /// The transaction.
        tx: SagaId,
    },
}

/// What the coordinator asks its environment to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordinatorOutput {
    /// Make this record durable; nothing after it may happen before it is.
    Append(TxRecord),
    /// Send this message.
    Send(ToParticipant),
}

/// Where a transaction stands at the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Collecting votes.
    Voting,
    /// Decided (and logged); waiting for every acknowledgement.
    Decided(Decision),
    /// Every participant acknowledged the decision.
    Ended(Decision),
}

impl TxState {
    /// The decision, once there is one.
    pub fn decision(self) -> Option<Decision> {
        match self {
            TxState::Voting => None,
            TxState::Decided(d) | TxState::Ended(d) => Some(d),
        }
    }
}

/// Counters of a coordinator since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoordinatorTotals {
    /// Transactions started.
    pub started: u64,
    /// Decided Commit.
    pub committed: u64,
    /// Decided Abort (after a No vote or a vote timeout).
    pub aborted: u64,
    /// Aborted because a vote did not arrive in time.
    pub vote_timeouts: u64,
    /// Votes for transactions this coordinator does not know, answered with Abort.
    pub presumed_aborts: u64,
    /// Decisions sent again (not first sends).
    pub decisions_resent: u64,
}

/// A deliberate defect, set only by mutation tests. The reference has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    None,
    /// The coordinator sends the decision before appending it to its log.
    SendBeforeLog,
    /// An in-doubt participant gives up after the vote timeout and aborts on its own.
    UnilateralAbort,
    /// A duplicated `Prepare` makes its tentative change again.
    PrepareNotIdempotent,
    /// The inventory never releases the stock row's lock on abort.
    LockLeak,
    /// The inventory releases an aborted reservation without returning its stock.
    AbortLosesStock,
    /// The coordinator sends an Abort decision at once, logs nothing and forgets the
    /// transaction (so `state` no longer knows it).
    AbortUnloggedForgotten,
    /// The coordinator ignores every seventh `start` (no Prepare, no state).
    StartDropped,
    /// The coordinator's `state` reports every known transaction as ended committed.
    StateClaimsCommit,
}

#[derive(Clone, Copy, Debug)]
struct Tx {
    order: Order,
    state: TxState,
    /// Yes votes (by step index).
    yes: [bool; 3],
    /// Acknowledgements of the decision (by step index).
    acked: [bool; 3],
    deadline: Instant,
    resend_at: Instant,
}

/// The 2PC coordinator for many concurrent transactions. See the [module](self) docs.
#[derive(Clone, Debug)]
pub struct Coordinator {
    config: TwoPcConfig,
    pub(crate) flaw: Flaw,
    txs: BTreeMap<SagaId, Tx>,
    /// Transactions not yet ended.
    active: BTreeSet<SagaId>,
    outputs: VecDeque<CoordinatorOutput>,
    totals: CoordinatorTotals,
}

impl Coordinator {
    /// A coordinator with nothing in flight.
    pub fn new(config: TwoPcConfig) -> Self {
        Coordinator {
            config,
            flaw: Flaw::None,
            txs: BTreeMap::new(),
            active: BTreeSet::new(),
            outputs: VecDeque::new(),
            totals: CoordinatorTotals::default(),
        }
    }

    pub(crate) fn with_flaw(mut self, flaw: Flaw) -> Self {
        self.flaw = flaw;
        self
    }

    /// A coordinator rebuilt after a crash from its durable `log`: every decided
    /// transaction that did not end gets its decision re-sent at once; every other
    /// transaction is presumed aborted.
    pub fn recover(config: TwoPcConfig, log: &[TxRecord], now: Instant) -> Self {
        Self::recover_flawed(config, log, now, Flaw::None)
    }

    pub(crate) fn recover_flawed(
        config: TwoPcConfig,
        log: &[TxRecord],
        now: Instant,
        flaw: Flaw,
    ) -> Self {
        let mut c = Coordinator::new(config).with_flaw(flaw);
        for record in log {
            match *record {
                TxRecord::Decision {
                    tx,
                    decision,
                    order,
                } => {
                    c.txs.insert(
                        tx,
                        Tx {
                            order,
                            state: TxState::Decided(decision),
                            yes: [true; 3],
                            acked: [false; 3],
                            deadline: now,
                            resend_at: now,
                        },
                    );
                    c.active.insert(tx);
                }
                TxRecord::Ended { tx } => {
                    if let Some(t) = c.txs.get_mut(&tx)
                        && let TxState::Decided(d) = t.state
                    {
                        t.state = TxState::Ended(d);
                        c.active.remove(&tx);
                    }
                }
            }
        }
        let pending: Vec<SagaId> = c.active.iter().copied().collect();
        for tx in pending {
            c.send_decision(tx, now, false);
        }
        c
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &TwoPcConfig {
        &self.config
    }

    /// Counters since this coordinator was made.
    pub fn totals(&self) -> CoordinatorTotals {
        self.totals
    }

    /// Where `tx` stands, if this coordinator knows it.
    pub fn state(&self, tx: SagaId) -> Option<TxState> {
        let state = self.txs.get(&tx).map(|t| t.state);
        if self.flaw == Flaw::StateClaimsCommit {
            return state.map(|_| TxState::Ended(Decision::Commit));
        }
        state
    }

    /// Every known transaction and its state, in id order.
    pub fn transactions(&self) -> impl Iterator<Item = (SagaId, TxState)> + '_ {
        self.txs.iter().map(|(id, t)| (*id, t.state))
    }

    /// True when every known transaction has ended and no output is waiting.
    pub fn is_at_rest(&self) -> bool {
        self.active.is_empty() && self.outputs.is_empty()
    }

    // ----- inputs -----

    /// Starts transaction `tx` for `order`: sends `Prepare` to every participant.
    /// Starting a known transaction again does nothing.
    pub fn start(&mut self, tx: SagaId, order: Order, now: Instant) {
        if self.txs.contains_key(&tx) {
            return;
        }
        self.totals.started += 1;
        if self.flaw == Flaw::StartDropped && self.totals.started.is_multiple_of(7) {
            return;
        }
        self.txs.insert(
            tx,
            Tx {
                order,
                state: TxState::Voting,
                yes: [false; 3],
                acked: [false; 3],
                deadline: now.saturating_add(self.config.vote_timeout),
                resend_at: now.saturating_add(self.config.resend_interval),
            },
        );
        self.active.insert(tx);
        for step in StepId::ALL {
            self.outputs
                .push_back(CoordinatorOutput::Send(ToParticipant {
                    tx,
                    step,
                    request: Request::Prepare(order),
                }));
        }
    }

    /// A participant's answer arrived (duplicates and stale answers are fine).
    pub fn on_answer(&mut self, answer: &ToCoordinator, now: Instant) {
        let i = step_index(answer.step);
        let Some(t) = self.txs.get_mut(&answer.tx) else {
            // Presumed abort: no record means no commit.
            if let Response::Vote(_) = answer.reply {
                self.totals.presumed_aborts += 1;
                self.outputs
                    .push_back(CoordinatorOutput::Send(ToParticipant {
                        tx: answer.tx,
                        step: answer.step,
                        request: Request::Decide(Decision::Abort),
                    }));
            }
            return;
        };
        match (t.state, answer.reply) {
            (TxState::Voting, Response::Vote(Vote::Yes)) => {
                t.yes[i] = true;
                if t.yes.iter().all(|y| *y) {
                    self.decide(answer.tx, Decision::Commit, now);
                }
            }
            (TxState::Voting, Response::Vote(Vote::No)) => {
                self.decide(answer.tx, Decision::Abort, now);
            }
            (TxState::Voting, _) => {}
            (TxState::Decided(d) | TxState::Ended(d), Response::Vote(_)) => {
                // An in-doubt participant asking again, or a late duplicate.
                self.totals.decisions_resent += 1;
                self.outputs
                    .push_back(CoordinatorOutput::Send(ToParticipant {
                        tx: answer.tx,
                        step: answer.step,
                        request: Request::Decide(d),
                    }));
            }
            (TxState::Decided(d), Response::Ack(_)) => {
                t.acked[i] = true;
                if t.acked.iter().all(|a| *a) {
                    t.state = TxState::Ended(d);
                    self.active.remove(&answer.tx);
                    self.outputs
                        .push_back(CoordinatorOutput::Append(TxRecord::Ended { tx: answer.tx }));
                }
            }
            (TxState::Ended(_), Response::Ack(_)) => {}
        }
    }

    /// Timers: aborts transactions whose votes are overdue, re-sends unanswered
    /// `Prepare`s and unacknowledged decisions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<SagaId> = self
            .active
            .iter()
            .copied()
            .filter(|tx| {
                self.txs.get(tx).is_some_and(|t| {
                    t.resend_at <= now || (t.state == TxState::Voting && t.deadline <= now)
                })
            })
            .collect();
        for tx in due {
            let Some(t) = self.txs.get_mut(&tx) else {
                continue;
            };
            match t.state {
                TxState::Voting if t.deadline <= now => {
                    self.totals.vote_timeouts += 1;
                    self.decide(tx, Decision::Abort, now);
                }
                TxState::Voting => {
                    t.resend_at = now.saturating_add(self.config.resend_interval);
                    let order = t.order;
                    for step in StepId::ALL {
                        if !t.yes[step_index(step)] {
                            self.outputs
                                .push_back(CoordinatorOutput::Send(ToParticipant {
                                    tx,
                                    step,
                                    request: Request::Prepare(order),
                                }));
                        }
                    }
                }
                TxState::Decided(_) => self.send_decision(tx, now, true),
                TxState::Ended(_) => {}
            }
        }
    }

    // ----- outputs -----

    /// The next output, in the order they must be carried out.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<CoordinatorOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.active
            .iter()
            .filter_map(|tx| self.txs.get(tx))
            .map(|t| match t.state {
                TxState::Voting => t.deadline.min(t.resend_at),
                _ => t.resend_at,
            })
            .min()
    }

    // ----- internals -----

    fn decide(&mut self, tx: SagaId, decision: Decision, now: Instant) {
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        t.state = TxState::Decided(decision);
        match decision {
            Decision::Commit => self.totals.committed += 1,
            Decision::Abort => self.totals.aborted += 1,
        }
        let record = TxRecord::Decision {
            tx,
            decision,
            order: t.order,
        };
        if self.flaw == Flaw::AbortUnloggedForgotten && decision == Decision::Abort {
            self.send_decision(tx, now, false);
            self.txs.remove(&tx);
            self.active.remove(&tx);
        } else if self.flaw == Flaw::SendBeforeLog {
            self.send_decision(tx, now, false);
            self.outputs.push_back(CoordinatorOutput::Append(record));
        } else {
            // Write-ahead: the decision is durable before anyone hears of it.
            self.outputs.push_back(CoordinatorOutput::Append(record));
            self.send_decision(tx, now, false);
        }
    }

    fn send_decision(&mut self, tx: SagaId, now: Instant, resend: bool) {
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        let Some(d) = t.state.decision() else { return };
        t.resend_at = now.saturating_add(self.config.resend_interval);
        for step in StepId::ALL {
            if !t.acked[step_index(step)] {
                if resend {
                    self.totals.decisions_resent += 1;
                }
                self.outputs
                    .push_back(CoordinatorOutput::Send(ToParticipant {
                        tx,
                        step,
                        request: Request::Decide(d),
                    }));
            }
        }
    }
}

/// A transaction as a participant knows it (durable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Local {
    /// Voted Yes: locks held, tentative change made, waiting for the decision.
    InDoubt {
        /// When it voted Yes.
        since: Instant,
    },
    /// The decision Commit is applied.
    Committed,
    /// Aborted (by decision, or refused at prepare): nothing held.
    Aborted,
}

/// One item's stock row at the inventory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockRow {
    /// Stock at the start.
    pub initial: u32,
    /// Free to sell.
    pub available: u32,
    /// Held by prepared transactions.
    pub held: u32,
    /// Sold by committed transactions.
    pub sold: u32,
    /// The transaction holding the row's lock (between Yes and the decision).
    pub locked_by: Option<SagaId>,
}

#[derive(Clone, Debug)]
enum Resource {
    Orders,
    Inventory(BTreeMap<u32, StockRow>),
    Payment {
        declined: BTreeSet<SagaId>,
        held: u128,
        captured: u128,
        released: u128,
        authorised: u128,
    },
}

/// What a participant's request did, per transaction, counted for the idempotency check.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A tentative change and its locks were made.
    Prepared,
    /// A commit was applied.
    Committed,
    /// An abort was applied (a prepared change undone).
    Aborted,
}

/// One of the three 2PC participants (order, inventory or payment) with its durable
/// state. Every request is idempotent: a duplicate gets the same answer and has no
/// further effect. In doubt it holds its locks until the decision arrives, re-sending
/// its Yes vote every resend interval to ask for it.
#[derive(Clone, Debug)]
pub struct Cohort {
    step: StepId,
    config: TwoPcConfig,
    flaw: Flaw,
    resource: Resource,
    txs: BTreeMap<SagaId, (Order, Local)>,
    /// In-doubt transactions and when to ask again.
    asking: BTreeMap<SagaId, Instant>,
    effects: BTreeMap<(SagaId, Effect), u32>,
    outputs: VecDeque<ToCoordinator>,
}

impl Cohort {
    fn with_resource(step: StepId, config: TwoPcConfig, resource: Resource) -> Self {
        Cohort {
            step,
            config,
            flaw: Flaw::None,
            resource,
            txs: BTreeMap::new(),
            asking: BTreeMap::new(),
            effects: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The order service: Prepare creates the order tentatively (pending).
    pub fn orders(config: TwoPcConfig) -> Self {
        Self::with_resource(StepId::ORDER, config, Resource::Orders)
    }

    /// The inventory with `stock` per item: Prepare locks the item's row and holds the
    /// quantity (or votes No when short, [`Vote::Locked`] when another transaction
    /// holds the row).
    pub fn inventory(config: TwoPcConfig, stock: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let rows = stock
            .into_iter()
            .map(|(item, s)| {
                (
                    item,
                    StockRow {
                        initial: s,
                        available: s,
                        ..StockRow::default()
                    },
                )
            })
            .collect();
        Self::with_resource(StepId::INVENTORY, config, Resource::Inventory(rows))
    }

    /// The payment service: Prepare authorises the amount, except for the `declined`
    /// transactions, which vote No.
    pub fn payment(config: TwoPcConfig, declined: impl IntoIterator<Item = SagaId>) -> Self {
        Self::with_resource(
            StepId::PAYMENT,
            config,
            Resource::Payment {
                declined: declined.into_iter().collect(),
                held: 0,
                captured: 0,
                released: 0,
                authorised: 0,
            },
        )
    }

    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn with_flaw(mut self, flaw: Flaw) -> Self {
        self.flaw = flaw;
        self
    }

    // ----- getters -----

    /// Which participant this is.
    pub fn step(&self) -> StepId {
        self.step
    }

    /// Where `tx` stands here, if this participant has seen it.
    pub fn local(&self, tx: SagaId) -> Option<Local> {
        self.txs.get(&tx).map(|(_, l)| *l)
    }

    /// Every transaction seen, in id order.
    pub fn transactions(&self) -> impl Iterator<Item = (SagaId, Order, Local)> + '_ {
        self.txs.iter().map(|(id, (o, l))| (*id, *o, *l))
    }

    /// True when `tx` holds locks here.
    pub fn is_locked(&self, tx: SagaId) -> bool {
        matches!(self.local(tx), Some(Local::InDoubt { .. }))
            || matches!(&self.resource, Resource::Inventory(rows)
                if rows.values().any(|r| r.locked_by == Some(tx)))
    }

    /// Locks held: in-doubt transactions, and stock rows locked by a transaction that
    /// is no longer in doubt (a leak).
    pub fn locks_held(&self) -> usize {
        let in_doubt = self
            .txs
            .values()
            .filter(|(_, l)| matches!(l, Local::InDoubt { .. }))
            .count();
        let leaked = match &self.resource {
            Resource::Inventory(rows) => rows
                .values()
                .filter(|r| {
                    r.locked_by
                        .is_some_and(|tx| !matches!(self.local(tx), Some(Local::InDoubt { .. })))
                })
                .count(),
            _ => 0,
        };
        in_doubt + leaked
    }

    /// Stock of `item` free to sell (0 for an unknown item or another participant).
    pub fn available(&self, item: u32) -> u32 {
        self.row(item).map_or(0, |r| r.available)
    }

    /// The stock row of `item` (inventory only).
    pub fn row(&self, item: u32) -> Option<StockRow> {
        match &self.resource {
            Resource::Inventory(rows) => rows.get(&item).copied(),
            _ => None,
        }
    }

    /// Every stock row (inventory only), in item order.
    pub fn rows(&self) -> Vec<(u32, StockRow)> {
        match &self.resource {
            Resource::Inventory(rows) => rows.iter().map(|(i, r)| (*i, *r)).collect(),
            _ => Vec::new(),
        }
    }

    /// Money captured by committed transactions (payment only).
    pub fn captured_total(&self) -> u128 {
        match &self.resource {
            Resource::Payment { captured, .. } => *captured,
            _ => 0,
        }
    }

    /// Money (authorised, held, captured, released) at the payment (zeros elsewhere).
    pub fn money(&self) -> (u128, u128, u128, u128) {
        match &self.resource {
            Resource::Payment {
                authorised,
                held,
                captured,
                released,
                ..
            } => (*authorised, *held, *captured, *released),
            _ => (0, 0, 0, 0),
        }
    }

    /// How often `effect` took place for `tx`.
    pub fn effects(&self, tx: SagaId, effect: Effect) -> u32 {
        self.effects.get(&(tx, effect)).copied().unwrap_or(0)
    }

    /// The most times any one effect took place.
    pub fn effects_max(&self) -> u32 {
        self.effects.values().copied().max().unwrap_or(0)
    }

    // ----- inputs -----

    /// Handles a request from the coordinator and returns the answer to send back.
    pub fn handle(&mut self, msg: &ToParticipant, now: Instant) -> ToCoordinator {
        let reply = match msg.request {
            Request::Prepare(order) => Response::Vote(self.prepare(msg.tx, order, now)),
            Request::Decide(d) => Response::Ack(self.decide(msg.tx, d)),
        };
        ToCoordinator {
            tx: msg.tx,
            step: self.step,
            reply,
        }
    }

    /// Timers: an in-doubt transaction asks again for its decision (it never decides
    /// on its own).
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<SagaId> = self
            .asking
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(tx, _)| *tx)
            .collect();
        for tx in due {
            if self.flaw == Flaw::UnilateralAbort
                && let Some((_, Local::InDoubt { since })) = self.txs.get(&tx)
                && now.saturating_since(*since) >= self.config.vote_timeout
            {
                self.decide(tx, Decision::Abort);
                continue;
            }
            self.asking
                .insert(tx, now.saturating_add(self.config.resend_interval));
            self.outputs.push_back(ToCoordinator {
                tx,
                step: self.step,
                reply: Response::Vote(Vote::Yes),
            });
        }
    }

    // ----- outputs -----

    /// The next message to send the coordinator (re-sent votes of in-doubt
    /// transactions).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ToCoordinator> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.asking.values().copied().min()
    }

    // ----- internals -----

    fn effect(&mut self, tx: SagaId, effect: Effect) {
        *self.effects.entry((tx, effect)).or_default() += 1;
    }

    fn prepare(&mut self, tx: SagaId, order: Order, now: Instant) -> Vote {
        match self.local(tx) {
            Some(Local::InDoubt { .. }) if self.flaw != Flaw::PrepareNotIdempotent => {
                return Vote::Yes;
            }
            Some(Local::Committed) => return Vote::Yes,
            Some(Local::Aborted) => return Vote::No,
            _ => {}
        }
        let vote = match &mut self.resource {
            Resource::Orders => Vote::Yes,
            Resource::Inventory(rows) => match rows.get_mut(&order.item) {
                None => Vote::No,
                Some(row) if row.locked_by.is_some_and(|t| t != tx) => Vote::Locked,
                Some(row) if row.available < order.qty => Vote::No,
                Some(row) => {
                    row.available -= order.qty;
                    row.held += order.qty;
                    row.locked_by = Some(tx);
                    Vote::Yes
                }
            },
            Resource::Payment {
                declined,
                held,
                authorised,
                ..
            } => {
                if declined.contains(&tx) {
                    Vote::No
                } else {
                    *held += u128::from(order.amount);
                    *authorised += u128::from(order.amount);
                    Vote::Yes
                }
            }
        };
        match vote {
            Vote::Yes => {
                self.effect(tx, Effect::Prepared);
                self.txs.insert(tx, (order, Local::InDoubt { since: now }));
                self.asking
                    .insert(tx, now.saturating_add(self.config.resend_interval));
            }
            Vote::No => {
                self.txs.insert(tx, (order, Local::Aborted));
            }
            Vote::Locked => {}
        }
        vote
    }

    fn decide(&mut self, tx: SagaId, decision: Decision) -> Decision {
        let Some((order, local)) = self.txs.get(&tx).copied() else {
            // Never prepared here: an abort is remembered so that a late Prepare is
            // refused; a commit cannot happen without our Yes and changes nothing.
            if decision == Decision::Abort {
                self.txs.insert(
                    tx,
                    (
                        Order {
                            item: 0,
                            qty: 0,
                            amount: 0,
                        },
                        Local::Aborted,
                    ),
                );
            }
            return decision;
        };
        match local {
            Local::Committed => return Decision::Commit,
            Local::Aborted => return Decision::Abort,
            Local::InDoubt { .. } => {}
        }
        self.asking.remove(&tx);
        let flaw = self.flaw;
        match &mut self.resource {
            Resource::Orders => {}
            Resource::Inventory(rows) => {
                if let Some(row) = rows.get_mut(&order.item) {
                    row.held = row.held.saturating_sub(order.qty);
                    match decision {
                        Decision::Commit => row.sold += order.qty,
                        Decision::Abort if flaw == Flaw::AbortLosesStock => {}
                        Decision::Abort => row.available += order.qty,
                    }
                    if row.locked_by == Some(tx)
                        && !(flaw == Flaw::LockLeak && decision == Decision::Abort)
                    {
                        row.locked_by = None;
                    }
                }
            }
            Resource::Payment {
                held,
                captured,
                released,
                ..
            } => {
                let a = u128::from(order.amount);
                *held = held.saturating_sub(a);
                match decision {
                    Decision::Commit => *captured += a,
                    Decision::Abort => *released += a,
                }
            }
        }
        let (local, effect) = match decision {
            Decision::Commit => (Local::Committed, Effect::Committed),
            Decision::Abort => (Local::Aborted, Effect::Aborted),
        };
        self.effect(tx, effect);
        self.txs.insert(tx, (order, local));
        decision
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn order(item: u32) -> Order {
        Order {
            item,
            qty: 2,
            amount: 100,
        }
    }

    fn prepare(tx: u64, step: StepId) -> ToParticipant {
        ToParticipant {
            tx: SagaId(tx),
            step,
            request: Request::Prepare(order(1)),
        }
    }

    #[test]
    fn builder_rejects_zero() {
        assert_eq!(
            TwoPcConfig::builder()
                .vote_timeout(Duration::ZERO)
                .build()
                .unwrap_err()
                .field,
            "vote_timeout"
        );
        assert_eq!(
            TwoPcConfig::builder()
                .resend_interval(Duration::ZERO)
                .build()
                .unwrap_err()
                .field,
            "resend_interval"
        );
    }

    #[test]
    fn second_transaction_on_a_locked_row_is_told_locked() {
        let now = Instant::ZERO;
        let mut inv = Cohort::inventory(TwoPcConfig::default(), [(1, 10)]);
        let a = inv.handle(&prepare(1, StepId::INVENTORY), now);
        assert_eq!(a.reply, Response::Vote(Vote::Yes));
        let b = inv.handle(&prepare(2, StepId::INVENTORY), now);
        assert_eq!(b.reply, Response::Vote(Vote::Locked));
        assert_eq!(inv.available(1), 8);
        // The duplicate Prepare has no further effect.
        assert_eq!(
            inv.handle(&prepare(1, StepId::INVENTORY), now).reply,
            Response::Vote(Vote::Yes)
        );
        assert_eq!(inv.available(1), 8);
        let abort = ToParticipant {
            tx: SagaId(1),
            step: StepId::INVENTORY,
            request: Request::Decide(Decision::Abort),
        };
        assert_eq!(
            inv.handle(&abort, now).reply,
            Response::Ack(Decision::Abort)
        );
        assert_eq!(inv.available(1), 10);
        assert_eq!(inv.locks_held(), 0);
        // A late Prepare after the abort is refused.
        assert_eq!(
            inv.handle(&prepare(1, StepId::INVENTORY), now).reply,
            Response::Vote(Vote::No)
        );
        assert_eq!(
            inv.handle(&prepare(2, StepId::INVENTORY), now).reply,
            Response::Vote(Vote::Yes)
        );
    }

    #[test]
    fn in_doubt_participant_asks_and_never_decides_alone() {
        let config = TwoPcConfig::default();
        let mut p = Cohort::payment(config.clone(), []);
        p.handle(&prepare(1, StepId::PAYMENT), Instant::ZERO);
        let later = Instant::from_millis(60_000);
        p.handle_timeout(later);
        assert_eq!(
            p.poll_output().map(|m| m.reply),
            Some(Response::Vote(Vote::Yes))
        );
        assert!(p.is_locked(SagaId(1)));
        assert!(p.poll_timeout().is_some());
    }

    #[test]
    fn vote_timeout_aborts_and_logs_before_sending() {
        let mut c = Coordinator::new(TwoPcConfig::default());
        c.start(SagaId(1), order(1), Instant::ZERO);
        while c.poll_output().is_some() {}
        c.handle_timeout(Instant::from_millis(1_000));
        assert_eq!(c.state(SagaId(1)), Some(TxState::Decided(Decision::Abort)));
        assert!(matches!(
            c.poll_output(),
            Some(CoordinatorOutput::Append(TxRecord::Decision {
                decision: Decision::Abort,
                ..
            }))
        ));
        assert!(matches!(c.poll_output(), Some(CoordinatorOutput::Send(_))));
        assert_eq!(c.totals().vote_timeouts, 1);
    }

    #[test]
    fn recovery_resends_logged_decisions_and_presumes_abort() {
        let log = [TxRecord::Decision {
            tx: SagaId(1),
            decision: Decision::Commit,
            order: order(1),
        }];
        let mut c = Coordinator::recover(TwoPcConfig::default(), &log, Instant::ZERO);
        let mut sends = 0;
        while let Some(o) = c.poll_output() {
            assert!(matches!(
                o,
                CoordinatorOutput::Send(ToParticipant {
                    request: Request::Decide(Decision::Commit),
                    ..
                })
            ));
            sends += 1;
        }
        assert_eq!(sends, 3);
        c.on_answer(
            &ToCoordinator {
                tx: SagaId(9),
                step: StepId::PAYMENT,
                reply: Response::Vote(Vote::Yes),
            },
            Instant::ZERO,
        );
        assert!(matches!(
            c.poll_output(),
            Some(CoordinatorOutput::Send(ToParticipant {
                request: Request::Decide(Decision::Abort),
                ..
            }))
        ));
    }
}
