//! The checkout's three participants as plain, durable, idempotent state machines:
//! [`OrderService`], [`InventoryService`] and [`PaymentService`] (bundled as
//! [`Services`]), the ids and commands they share, and [`SagaState`], where a saga
//! stands in either saga (the orchestrator keeps it; in the choreography, the order
//! service does).
//!
//! Every [`Command`] carries an [`IdempotencyKey`] (saga, step, action or compensation):
//! a service applies a key at most once and answers a duplicate, or a retry, with the
//! reply it gave the first time. Compensation is safe when the action never took effect
//! (it leaves a *tombstone*), and an action that arrives after its compensation is
//! refused with [`Refusal::Compensated`] and takes no effect. Each service counts the
//! effects it applied per key in its [`EffectLedger`], so a checker can prove that
//! duplicates had no extra effect.
//!
//! The services are durable: their state survives a crash (a crash only makes them
//! unreachable, which is the world's business), so they have no crash method. Lost
//! requests, lost replies and infrastructure errors are the world's business too; a
//! service only ever answers [`Reply::Ok`] or a business [`Reply::Refused`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::name::{Name, NameError};

/// What a saga definition's payload (`P`) and refusal reason (`R`) must be: plain data
/// that can be cloned, compared, printed, and stored in the log as JSON (serde), and
/// sent between tasks. Implemented for every such type; the checkout's are [`Order`]
/// and [`Refusal`].
pub trait SagaData:
    Clone
    + fmt::Debug
    + PartialEq
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<T> SagaData for T where
    T: Clone
        + fmt::Debug
        + PartialEq
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A saga's identity, chosen by the caller.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SagaId(pub u64);

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saga {}", self.0)
    }
}

/// Where a saga is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Doing its steps.
    Running,
    /// Undoing the steps that may have taken effect.
    Compensating,
    /// At rest: every step succeeded.
    Completed,
    /// At rest: every step that may have taken effect was compensated.
    Compensated,
    /// At rest: a compensation could not be done within its attempts; an alert was
    /// emitted.
    Failed,
}

impl SagaState {
    /// A stable lower-case name (`running`, `compensating`, `completed`, `compensated`,
    /// `failed`).
    pub const fn name(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::Failed => "failed",
        }
    }

    /// True for the states at rest: completed, compensated or failed.
    pub fn is_at_rest(self) -> bool {
        matches!(
            self,
            SagaState::Completed | SagaState::Compensated | SagaState::Failed
        )
    }
}

/// A step of a saga definition: a short validated name ([`Name`]), e.g. `flight`.
///
/// A definition (the [`SagaConfig`](crate::saga::SagaConfig)'s steps) runs its steps in
/// the order it lists them; the derived `Ord` is the names' text order and says nothing
/// about execution. The checkout's three steps are [`StepId::ORDER`],
/// [`StepId::INVENTORY`] and [`StepId::PAYMENT`] ([`StepId::ALL`] in execution order).
///
/// ```
/// use faultline::saga::StepId;
///
/// const FLIGHT: StepId = StepId::from_static("flight");
/// assert_eq!(StepId::new("flight")?, FLIGHT);
/// assert_eq!(serde_json::to_string(&StepId::PAYMENT).unwrap(), "\"payment\"");
/// assert!(StepId::new("").is_err());
/// # Ok::<(), faultline::name::NameError>(())
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct StepId(Name);

impl StepId {
    /// The checkout's first step: create the order (compensation: cancel it).
    pub const ORDER: StepId = StepId::from_static("order");
    /// The checkout's second step: reserve, i.e. deduct, inventory (compensation:
    /// release it).
    pub const INVENTORY: StepId = StepId::from_static("inventory");
    /// The checkout's third step: charge the payment (compensation: refund it).
    pub const PAYMENT: StepId = StepId::from_static("payment");

    /// The checkout's steps, in execution order.
    pub const ALL: [StepId; 3] = [StepId::ORDER, StepId::INVENTORY, StepId::PAYMENT];

    /// `name` as a step id, or why it is not a [`Name`].
    ///
    /// # Errors
    ///
    /// [`NameError`] for an empty name, one longer than [`Name::MAX`] bytes, or one
    /// holding a control character.
    pub fn new(name: &str) -> Result<StepId, NameError> {
        Name::new(name).map(StepId)
    }

    /// A step id from a literal, for constants (see [`Name::from_static`]: an invalid
    /// literal is a compile error in a `const`).
    pub const fn from_static(name: &'static str) -> StepId {
        StepId(Name::from_static(name))
    }

    /// The step's name, e.g. `inventory`.
    pub fn name(&self) -> &str {
        self.0.as_str()
    }

    /// The step's name as a [`Name`].
    pub fn as_name(self) -> Name {
        self.0
    }

    /// The name of a checkout step's action or compensation, e.g. `Reserve` or
    /// `Refund`; for any other step, `action` or `compensation`.
    pub fn operation(self, kind: Kind) -> &'static str {
        let checkout = [
            (StepId::ORDER, "CreateOrder", "CancelOrder"),
            (StepId::INVENTORY, "Reserve", "Release"),
            (StepId::PAYMENT, "Charge", "Refund"),
        ];
        let found = checkout.iter().find(|(s, _, _)| *s == self);
        match (found, kind) {
            (Some((_, action, _)), Kind::Action) => action,
            (Some((_, _, compensation)), Kind::Compensation) => compensation,
            (None, kind) => kind.name(),
        }
    }
}

/// The checkout's steps as a closed enum, for code that matches on them (a [`StepId`]
/// is any name, so it cannot be matched on directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum CheckoutStep {
    Order,
    Inventory,
    Payment,
}

impl StepId {
    /// Which of the checkout's steps this is, if it is one.
    pub(crate) fn checkout(self) -> Option<CheckoutStep> {
        if self == StepId::ORDER {
            Some(CheckoutStep::Order)
        } else if self == StepId::INVENTORY {
            Some(CheckoutStep::Inventory)
        } else if self == StepId::PAYMENT {
            Some(CheckoutStep::Payment)
        } else {
            None
        }
    }
}

impl From<Name> for StepId {
    fn from(name: Name) -> Self {
        StepId(name)
    }
}

impl std::str::FromStr for StepId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepId::new(s)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a command does a step or undoes it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The step's forward action.
    Action,
    /// The step's compensation (its semantic undo).
    Compensation,
}

impl Kind {
    /// `action` or `compensation`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Action => "action",
            Kind::Compensation => "compensation",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the customer ordered: the parameters of all three services.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Order {
    /// The item to reserve.
    pub item: u32,
    /// How many of it.
    pub qty: u32,
    /// The amount to charge, in the smallest currency unit.
    pub amount: u64,
}

/// A command's idempotency key: a service applies each key at most once.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct IdempotencyKey {
    /// The saga.
    pub saga: SagaId,
    /// The step (which also names the service).
    pub step: StepId,
    /// Action or compensation.
    pub kind: Kind,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.saga, self.step, self.kind)
    }
}

impl IdempotencyKey {
    /// The checkout's name of the key's operation, e.g. `saga 7/Reserve`.
    pub fn checkout_name(&self) -> String {
        format!("{}/{}", self.saga, self.step.operation(self.kind))
    }
}

/// A command to one participant: the action or the compensation of `step` for `saga`,
/// with the saga's payload (`P`: for the checkout, the [`Order`]).
///
/// Retries and duplicates of a command are the same command: same key, same reply.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Command<P = Order> {
    /// The saga.
    pub saga: SagaId,
    /// The step; [`Services::handle`] routes by it.
    pub step: StepId,
    /// Action or compensation.
    pub kind: Kind,
    /// The saga's payload, as given to `start` (compensations carry it too, though a
    /// participant should undo what it recorded, not what the compensation says).
    pub payload: P,
}

impl<P> Command<P> {
    /// The action of `step` for `saga`.
    pub fn action(saga: SagaId, step: StepId, payload: P) -> Self {
        Command {
            saga,
            step,
            kind: Kind::Action,
            payload,
        }
    }

    /// The compensation of `step` for `saga`.
    pub fn compensation(saga: SagaId, step: StepId, payload: P) -> Self {
        Command {
            saga,
            step,
            kind: Kind::Compensation,
            payload,
        }
    }

    /// The idempotency key: saga, step, action or compensation.
    pub fn key(&self) -> IdempotencyKey {
        IdempotencyKey {
            saga: self.saga,
            step: self.step,
            kind: self.kind,
        }
    }

    /// The operation's name, e.g. `Reserve` (see [`StepId::operation`]).
    pub fn operation(&self) -> &'static str {
        self.step.operation(self.kind)
    }
}

impl fmt::Display for Command<Order> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({}: item {} x{}, amount {})",
            self.operation(),
            self.saga,
            self.payload.item,
            self.payload.qty,
            self.payload.amount
        )
    }
}

/// Why a service refused a command. A refusal is a business answer: the action did not
/// take effect, and the saga compensates.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Not enough stock of the item (or an item the inventory does not know).
    OutOfStock,
    /// The payment was declined.
    CardDeclined,
    /// The action arrived after its compensation: it must not take effect any more.
    Compensated,
    /// The command was sent to a service that does not own its step.
    Misrouted,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::OutOfStock => "out of stock",
            Refusal::CardDeclined => "card declined",
            Refusal::Compensated => "already compensated",
            Refusal::Misrouted => "misrouted",
        })
    }
}

/// A participant's answer to a command; `R` is the definition's refusal reason (for
/// the checkout, [`Refusal`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reply<R = Refusal> {
    /// Done (or already done: the same reply as the first time).
    Ok,
    /// A business refusal: no effect. An action refused starts compensation; a
    /// compensation refused is retried like a failed one.
    Refused(R),
    /// A transient failure ("failed, retry now"): the call failed fast (connection
    /// refused, a 503, a broken pipe) and its outcome is unknown, as after a timeout
    /// (it may have taken effect). The attempt ends at once: the next one follows after
    /// the backoff, not after the step timeout; when attempts are spent the saga
    /// compensates, this step included. Counts only for the attempt awaited.
    Failed,
}

impl<R> Reply<R> {
    /// True for [`Reply::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Ok)
    }

    /// True for [`Reply::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, Reply::Failed)
    }
}

/// A service's idempotency record: the reply given to each key, and how many effects
/// each key applied (at most one, for a correct service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectLedger {
    replies: BTreeMap<IdempotencyKey, Reply>,
    effects: BTreeMap<IdempotencyKey, u32>,
    handled: u64,
    duplicates: u64,
}

impl EffectLedger {
    // ----- getters -----

    /// Effects applied for `key` (stock or money moved, an order placed or cancelled).
    /// A tombstone is not an effect.
    pub fn effects(&self, key: IdempotencyKey) -> u32 {
        self.effects.get(&key).copied().unwrap_or(0)
    }

    /// The most effects any one key applied: 1 (or 0) for an idempotent service.
    pub fn effects_max(&self) -> u32 {
        self.effects.values().copied().max().unwrap_or(0)
    }

    /// Every key that applied an effect, with its count, in key order.
    pub fn all_effects(&self) -> impl Iterator<Item = (IdempotencyKey, u32)> + '_ {
        self.effects.iter().map(|(k, n)| (*k, *n))
    }

    /// The reply recorded for `key`, if the service handled it.
    pub fn reply(&self, key: IdempotencyKey) -> Option<Reply> {
        self.replies.get(&key).copied()
    }

    /// Commands handled (duplicates included, misrouted ones excluded).
    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// Commands answered from the record: duplicates and retries of a key already
    /// handled.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    // ----- internals -----

    /// Counts the command; the recorded reply if its key was handled before.
    fn replay(&mut self, cmd: &Command) -> Option<Reply> {
        self.handled += 1;
        let reply = self.replies.get(&cmd.key()).copied();
        if reply.is_some() {
            self.duplicates += 1;
        }
        reply
    }

    fn remember(&mut self, cmd: &Command, reply: Reply) -> Reply {
        self.replies.entry(cmd.key()).or_insert(reply);
        reply
    }

    fn effect(&mut self, cmd: &Command) {
        let n = self.effects.entry(cmd.key()).or_insert(0);
        *n = n.saturating_add(1);
    }
}

/// An order's status.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created and live.
    Placed,
    /// Created, then cancelled by the compensation.
    Cancelled,
    /// Tombstone: cancelled before it was ever created, so a late create is refused.
    Voided,
}

/// The order service: creates orders and cancels them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderService {
    orders: BTreeMap<SagaId, OrderStatus>,
    ledger: EffectLedger,
}

impl OrderService {
    /// No orders.
    pub fn new() -> Self {
        OrderService::default()
    }

    // ----- getters -----

    /// The status of `saga`'s order, if it has one (or a tombstone).
    pub fn status(&self, saga: SagaId) -> Option<OrderStatus> {
        self.orders.get(&saga).copied()
    }

    /// Every order, in saga order.
    pub fn orders(&self) -> impl Iterator<Item = (SagaId, OrderStatus)> + '_ {
        self.orders.iter().map(|(s, o)| (*s, *o))
    }

    /// Orders placed and not cancelled.
    pub fn placed(&self) -> usize {
        self.orders
            .values()
            .filter(|s| **s == OrderStatus::Placed)
            .count()
    }

    /// The idempotency record.
    pub fn ledger(&self) -> &EffectLedger {
        &self.ledger
    }

    // ----- inputs -----

    /// Handles `CreateOrder` or `CancelOrder`, idempotently.
    pub fn handle(&mut self, cmd: &Command) -> Reply {
        if cmd.step != StepId::ORDER {
            return Reply::Refused(Refusal::Misrouted);
        }
        if let Some(reply) = self.ledger.replay(cmd) {
            return reply;
        }
        let reply = match (cmd.kind, self.orders.get(&cmd.saga).copied()) {
            (Kind::Action, None) => {
                self.orders.insert(cmd.saga, OrderStatus::Placed);
                self.ledger.effect(cmd);
                Reply::Ok
            }
            (Kind::Action, Some(OrderStatus::Voided | OrderStatus::Cancelled)) => {
                Reply::Refused(Refusal::Compensated)
            }
            (Kind::Action, Some(OrderStatus::Placed)) => Reply::Ok,
            (Kind::Compensation, None) => {
                self.orders.insert(cmd.saga, OrderStatus::Voided);
                Reply::Ok
            }
            (Kind::Compensation, Some(OrderStatus::Placed)) => {
                self.orders.insert(cmd.saga, OrderStatus::Cancelled);
                self.ledger.effect(cmd);
                Reply::Ok
            }
            (Kind::Compensation, Some(OrderStatus::Cancelled | OrderStatus::Voided)) => Reply::Ok,
        };
        self.ledger.remember(cmd, reply)
    }
}

/// A reservation's state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// The stock is deducted and held for the saga.
    Reserved,
    /// Reserved, then released by the compensation: the stock is back.
    Released,
    /// Tombstone: released before it was ever reserved, so a late reserve is refused.
    Voided,
}

/// One saga's reservation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Reservation {
    /// The item.
    pub item: u32,
    /// How many (for a tombstone: how many the compensation named; none were taken).
    pub qty: u32,
    /// Its state.
    pub state: ReservationState,
}

/// The inventory service: reserves (deducts) stock and releases it.
///
/// Conservation: for every item, `available + reserved == initial`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryService {
    initial: BTreeMap<u32, u32>,
    stock: BTreeMap<u32, u32>,
    reserved: BTreeMap<u32, u64>,
    reservations: BTreeMap<SagaId, Reservation>,
    ledger: EffectLedger,
}

impl InventoryService {
    /// An inventory with `stock` as `(item, available)` pairs (a repeated item keeps its
    /// last count). This is the initial stock the conservation law refers to.
    pub fn new(stock: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let stock: BTreeMap<u32, u32> = stock.into_iter().collect();
        InventoryService {
            initial: stock.clone(),
            stock,
            ..InventoryService::default()
        }
    }

    // ----- getters -----

    /// Units of `item` available now (0 for an unknown item).
    pub fn available(&self, item: u32) -> u32 {
        self.stock.get(&item).copied().unwrap_or(0)
    }

    /// Units of `item` at the start.
    pub fn initial(&self, item: u32) -> u32 {
        self.initial.get(&item).copied().unwrap_or(0)
    }

    /// Units of `item` held by live reservations ([`ReservationState::Reserved`]).
    pub fn reserved(&self, item: u32) -> u64 {
        self.reserved.get(&item).copied().unwrap_or(0)
    }

    /// The items the inventory knows, in order.
    pub fn items(&self) -> impl Iterator<Item = u32> + '_ {
        self.initial.keys().copied()
    }

    /// `saga`'s reservation (or tombstone), if any.
    pub fn reservation(&self, saga: SagaId) -> Option<Reservation> {
        self.reservations.get(&saga).copied()
    }

    /// Every reservation and tombstone, in saga order.
    pub fn reservations(&self) -> impl Iterator<Item = (SagaId, Reservation)> + '_ {
        self.reservations.iter().map(|(s, r)| (*s, *r))
    }

    /// True when, for every item, `available + reserved == initial`, where `reserved`
    /// is recounted from the live reservations.
    pub fn is_conserved(&self) -> bool {
        let mut held: BTreeMap<u32, u64> = BTreeMap::new();
        for r in self.reservations.values() {
            if r.state == ReservationState::Reserved {
                *held.entry(r.item).or_insert(0) += u64::from(r.qty);
            }
        }
        self.initial.iter().all(|(item, initial)| {
            u64::from(self.available(*item)) + held.get(item).copied().unwrap_or(0)
                == u64::from(*initial)
        }) && held.keys().all(|item| self.initial.contains_key(item))
    }

    /// The idempotency record.
    pub fn ledger(&self) -> &EffectLedger {
        &self.ledger
    }

    // ----- inputs -----

    /// Handles `Reserve` or `Release`, idempotently. A reserve is refused with
    /// [`Refusal::OutOfStock`] when fewer than `qty` units are available.
    pub fn handle(&mut self, cmd: &Command) -> Reply {
        if cmd.step != StepId::INVENTORY {
            return Reply::Refused(Refusal::Misrouted);
        }
        if let Some(reply) = self.ledger.replay(cmd) {
            return reply;
        }
        let existing = self.reservations.get(&cmd.saga).copied();
        let reply = match (cmd.kind, existing) {
            (Kind::Action, None) => self.reserve(cmd),
            (Kind::Action, Some(r)) if r.state != ReservationState::Reserved => {
                Reply::Refused(Refusal::Compensated)
            }
            (Kind::Action, Some(_)) => Reply::Ok,
            (Kind::Compensation, None) => {
                self.reservations.insert(
                    cmd.saga,
                    Reservation {
                        item: cmd.payload.item,
                        qty: cmd.payload.qty,
                        state: ReservationState::Voided,
                    },
                );
                Reply::Ok
            }
            (Kind::Compensation, Some(r)) if r.state == ReservationState::Reserved => {
                let available = self.stock.entry(r.item).or_insert(0);
                *available = available.saturating_add(r.qty);
                let held = self.reserved.entry(r.item).or_insert(0);
                *held = held.saturating_sub(u64::from(r.qty));
                self.reservations.insert(
                    cmd.saga,
                    Reservation {
                        state: ReservationState::Released,
                        ..r
                    },
                );
                self.ledger.effect(cmd);
                Reply::Ok
            }
            (Kind::Compensation, Some(_)) => Reply::Ok,
        };
        self.ledger.remember(cmd, reply)
    }

    fn reserve(&mut self, cmd: &Command) -> Reply {
        let Order { item, qty, .. } = cmd.payload;
        let Some(available) = self.stock.get_mut(&item) else {
            return Reply::Refused(Refusal::OutOfStock);
        };
        let Some(left) = available.checked_sub(qty) else {
            return Reply::Refused(Refusal::OutOfStock);
        };
        *available = left;
        *self.reserved.entry(item).or_insert(0) += u64::from(qty);
        self.reservations.insert(
            cmd.saga,
            Reservation {
                item,
                qty,
                state: ReservationState::Reserved,
            },
        );
        self.ledger.effect(cmd);
        Reply::Ok
    }
}

/// A charge's state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ChargeState {
    /// The money is taken.
    Captured,
    /// Captured, then refunded by the compensation.
    Refunded,
    /// Tombstone: refunded before it was ever charged, so a late charge is refused.
    Voided,
}

/// One saga's charge.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Charge {
    /// The amount (for a tombstone: what the compensation named; nothing was taken).
    pub amount: u64,
    /// Its state.
    pub state: ChargeState,
}

/// The payment service: charges and refunds.
///
/// Conservation: `captured_total − refunded_total` equals the sum of the
/// [`ChargeState::Captured`] charges ([`held_total`](PaymentService::held_total)).
/// Declines are decided by the caller's rule, so tests and worlds force them
/// deterministically.
#[derive(Clone, Debug)]
pub struct PaymentService {
    charges: BTreeMap<SagaId, Charge>,
    captured_total: u128,
    refunded_total: u128,
    decline_rule: fn(SagaId, u64) -> bool,
    declined: BTreeSet<SagaId>,
    ledger: EffectLedger,
    /// False only in the payment-idempotency mutant: every `Charge` command is applied
    /// again, duplicates included.
    pub(crate) idempotent: bool,
}

impl Default for PaymentService {
    fn default() -> Self {
        PaymentService::new()
    }
}

fn never_decline(_: SagaId, _: u64) -> bool {
    false
}

impl PaymentService {
    /// A payment service that declines nothing.
    pub fn new() -> Self {
        PaymentService {
            charges: BTreeMap::new(),
            captured_total: 0,
            refunded_total: 0,
            decline_rule: never_decline,
            declined: BTreeSet::new(),
            ledger: EffectLedger::default(),
            idempotent: true,
        }
    }

    /// Declines a charge when `rule(saga, amount)` is true (evaluated once per saga:
    /// the reply is recorded).
    pub fn with_decline(mut self, rule: fn(SagaId, u64) -> bool) -> Self {
        self.decline_rule = rule;
        self
    }

    /// Also declines the charges of these sagas.
    pub fn with_declined(mut self, sagas: impl IntoIterator<Item = SagaId>) -> Self {
        self.declined.extend(sagas);
        self
    }

    // ----- getters -----

    /// Total money captured (refunded charges included).
    pub fn captured_total(&self) -> u128 {
        self.captured_total
    }

    /// Total money refunded.
    pub fn refunded_total(&self) -> u128 {
        self.refunded_total
    }

    /// Money held now: the sum of the [`ChargeState::Captured`] charges, recounted.
    pub fn held_total(&self) -> u128 {
        self.charges
            .values()
            .filter(|c| c.state == ChargeState::Captured)
            .map(|c| u128::from(c.amount))
            .sum()
    }

    /// True when `captured_total − refunded_total == held_total`.
    pub fn is_conserved(&self) -> bool {
        self.captured_total.checked_sub(self.refunded_total) == Some(self.held_total())
    }

    /// `saga`'s charge (or tombstone), if any.
    pub fn charge(&self, saga: SagaId) -> Option<Charge> {
        self.charges.get(&saga).copied()
    }

    /// Every charge and tombstone, in saga order.
    pub fn charges(&self) -> impl Iterator<Item = (SagaId, Charge)> + '_ {
        self.charges.iter().map(|(s, c)| (*s, *c))
    }

    /// True when a charge of `amount` for `saga` would be declined.
    pub fn declines(&self, saga: SagaId, amount: u64) -> bool {
        self.declined.contains(&saga) || (self.decline_rule)(saga, amount)
    }

    /// The idempotency record.
    pub fn ledger(&self) -> &EffectLedger {
        &self.ledger
    }

    // ----- inputs -----

    /// Handles `Charge` or `Refund`, idempotently. A charge is refused with
    /// [`Refusal::CardDeclined`] when the decline rule says so.
    pub fn handle(&mut self, cmd: &Command) -> Reply {
        if cmd.step != StepId::PAYMENT {
            return Reply::Refused(Refusal::Misrouted);
        }
        let replayed = self.ledger.replay(cmd);
        let redo = !self.idempotent && cmd.kind == Kind::Action;
        if let Some(reply) = replayed
            && !redo
        {
            return reply;
        }
        let existing = self.charges.get(&cmd.saga).copied();
        let reply = match (cmd.kind, existing) {
            (Kind::Action, None) => {
                if self.declines(cmd.saga, cmd.payload.amount) {
                    Reply::Refused(Refusal::CardDeclined)
                } else {
                    self.charges.insert(
                        cmd.saga,
                        Charge {
                            amount: cmd.payload.amount,
                            state: ChargeState::Captured,
                        },
                    );
                    self.captured_total += u128::from(cmd.payload.amount);
                    self.ledger.effect(cmd);
                    Reply::Ok
                }
            }
            (Kind::Action, Some(c)) if redo && c.state != ChargeState::Voided => {
                // The defect: the customer is charged again, even after a refund.
                self.charges.insert(
                    cmd.saga,
                    Charge {
                        state: ChargeState::Captured,
                        ..c
                    },
                );
                self.captured_total += u128::from(c.amount);
                self.ledger.effect(cmd);
                Reply::Ok
            }
            (Kind::Action, Some(c)) if c.state != ChargeState::Captured => {
                Reply::Refused(Refusal::Compensated)
            }
            (Kind::Action, Some(_)) => Reply::Ok,
            (Kind::Compensation, None) => {
                self.charges.insert(
                    cmd.saga,
                    Charge {
                        amount: cmd.payload.amount,
                        state: ChargeState::Voided,
                    },
                );
                Reply::Ok
            }
            (Kind::Compensation, Some(c)) if c.state == ChargeState::Captured => {
                self.charges.insert(
                    cmd.saga,
                    Charge {
                        state: ChargeState::Refunded,
                        ..c
                    },
                );
                self.refunded_total += u128::from(c.amount);
                self.ledger.effect(cmd);
                Reply::Ok
            }
            (Kind::Compensation, Some(_)) => Reply::Ok,
        };
        self.ledger.remember(cmd, reply)
    }
}

/// The three services together, routing each command by its step.
#[derive(Clone, Debug, Default)]
pub struct Services {
    /// The order service.
    pub orders: OrderService,
    /// The inventory service.
    pub inventory: InventoryService,
    /// The payment service.
    pub payment: PaymentService,
}

impl Services {
    /// The three services, with no orders yet.
    pub fn new(inventory: InventoryService, payment: PaymentService) -> Self {
        Services {
            orders: OrderService::new(),
            inventory,
            payment,
        }
    }

    /// The most effects any one key applied in any service: at most 1 when duplicates
    /// had no extra effect.
    pub fn effects_max(&self) -> u32 {
        self.orders
            .ledger()
            .effects_max()
            .max(self.inventory.ledger().effects_max())
            .max(self.payment.ledger().effects_max())
    }

    /// True when stock and money are both conserved.
    pub fn is_conserved(&self) -> bool {
        self.inventory.is_conserved() && self.payment.is_conserved()
    }

    /// The effects applied for `key` by the service that owns its step.
    pub fn effects(&self, key: IdempotencyKey) -> u32 {
        if key.step == StepId::ORDER {
            self.orders.ledger().effects(key)
        } else if key.step == StepId::INVENTORY {
            self.inventory.ledger().effects(key)
        } else if key.step == StepId::PAYMENT {
            self.payment.ledger().effects(key)
        } else {
            0
        }
    }

    /// True when `saga` holds a live effect anywhere: a placed order, a reservation, or
    /// a captured charge.
    pub fn holds(&self, saga: SagaId) -> bool {
        self.orders.status(saga) == Some(OrderStatus::Placed)
            || self
                .inventory
                .reservation(saga)
                .is_some_and(|r| r.state == ReservationState::Reserved)
            || self
                .payment
                .charge(saga)
                .is_some_and(|c| c.state == ChargeState::Captured)
    }

    /// True when `saga` holds all three effects: placed, reserved and captured.
    pub fn holds_all(&self, saga: SagaId) -> bool {
        self.orders.status(saga) == Some(OrderStatus::Placed)
            && self
                .inventory
                .reservation(saga)
                .is_some_and(|r| r.state == ReservationState::Reserved)
            && self
                .payment
                .charge(saga)
                .is_some_and(|c| c.state == ChargeState::Captured)
    }

    // ----- inputs -----

    /// Hands `cmd` to the service that owns its step.
    pub fn handle(&mut self, cmd: &Command) -> Reply {
        if cmd.step == StepId::ORDER {
            self.orders.handle(cmd)
        } else if cmd.step == StepId::INVENTORY {
            self.inventory.handle(cmd)
        } else if cmd.step == StepId::PAYMENT {
            self.payment.handle(cmd)
        } else {
            Reply::Refused(Refusal::Misrouted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: Order = Order {
        item: 1,
        qty: 2,
        amount: 300,
    };

    fn act(saga: u64, step: StepId) -> Command {
        Command::action(SagaId(saga), step, ORDER)
    }

    fn comp(saga: u64, step: StepId) -> Command {
        Command::compensation(SagaId(saga), step, ORDER)
    }

    #[test]
    fn keys_and_names() {
        let c = act(7, StepId::INVENTORY);
        assert_eq!(
            c.key(),
            IdempotencyKey {
                saga: SagaId(7),
                step: StepId::INVENTORY,
                kind: Kind::Action
            }
        );
        assert_ne!(c.key(), comp(7, StepId::INVENTORY).key());
        assert_eq!(c.operation(), "Reserve");
        assert_eq!(c.to_string(), "Reserve(saga 7: item 1 x2, amount 300)");
        assert_eq!(comp(7, StepId::PAYMENT).operation(), "Refund");
        assert_eq!(c.key().to_string(), "saga 7/inventory/action");
        assert_eq!(c.key().checkout_name(), "saga 7/Reserve");
        assert_eq!(
            comp(7, StepId::new("flight").unwrap()).key().to_string(),
            "saga 7/flight/compensation"
        );
        assert_eq!(
            StepId::new("flight").unwrap().operation(Kind::Action),
            "action"
        );
        // The checkout's execution order is not its names' order.
        assert!(StepId::INVENTORY < StepId::ORDER && StepId::ORDER < StepId::PAYMENT);
        assert_eq!(
            StepId::ALL,
            [StepId::ORDER, StepId::INVENTORY, StepId::PAYMENT]
        );
    }

    #[test]
    fn order_create_and_cancel_are_idempotent() {
        let mut s = OrderService::new();
        for _ in 0..3 {
            assert_eq!(s.handle(&act(1, StepId::ORDER)), Reply::Ok);
        }
        assert_eq!(s.status(SagaId(1)), Some(OrderStatus::Placed));
        assert_eq!(s.placed(), 1);
        for _ in 0..3 {
            assert_eq!(s.handle(&comp(1, StepId::ORDER)), Reply::Ok);
        }
        assert_eq!(s.status(SagaId(1)), Some(OrderStatus::Cancelled));
        // A duplicate create after the cancel gets its first reply, and no effect.
        assert_eq!(s.handle(&act(1, StepId::ORDER)), Reply::Ok);
        assert_eq!(s.status(SagaId(1)), Some(OrderStatus::Cancelled));
        assert_eq!(s.ledger().effects_max(), 1);
        assert_eq!(s.ledger().handled(), 7);
        assert_eq!(s.ledger().duplicates(), 5);
        assert_eq!(s.placed(), 0);
    }

    #[test]
    fn reserve_duplicates_take_stock_once_and_get_the_same_reply() {
        let mut inv = InventoryService::new([(1, 5)]);
        for _ in 0..4 {
            assert_eq!(inv.handle(&act(1, StepId::INVENTORY)), Reply::Ok);
        }
        assert_eq!(inv.available(1), 3);
        assert_eq!(inv.reserved(1), 2);
        assert_eq!(inv.ledger().effects(act(1, StepId::INVENTORY).key()), 1);
        for _ in 0..4 {
            assert_eq!(inv.handle(&comp(1, StepId::INVENTORY)), Reply::Ok);
        }
        assert_eq!(inv.available(1), 5);
        assert_eq!(inv.reserved(1), 0);
        assert_eq!(
            inv.reservation(SagaId(1)).map(|r| r.state),
            Some(ReservationState::Released)
        );
        assert_eq!(inv.ledger().effects_max(), 1);
        assert_eq!(inv.ledger().duplicates(), 6);
        assert!(inv.is_conserved());
    }

    #[test]
    fn reserve_is_refused_when_stock_is_short_and_the_refusal_is_replayed() {
        let mut inv = InventoryService::new([(1, 3)]);
        assert_eq!(inv.handle(&act(1, StepId::INVENTORY)), Reply::Ok);
        let refused = Reply::Refused(Refusal::OutOfStock);
        assert_eq!(inv.handle(&act(2, StepId::INVENTORY)), refused);
        // Stock comes back; the retry of the refused key still gets its first reply.
        assert_eq!(inv.handle(&comp(1, StepId::INVENTORY)), Reply::Ok);
        assert_eq!(inv.available(1), 3);
        assert_eq!(inv.handle(&act(2, StepId::INVENTORY)), refused);
        assert_eq!(inv.available(1), 3);
        assert_eq!(inv.reservation(SagaId(2)), None);
        // An unknown item is out of stock.
        let unknown = Command::action(
            SagaId(3),
            StepId::INVENTORY,
            Order {
                item: 9,
                qty: 1,
                amount: 1,
            },
        );
        assert_eq!(inv.handle(&unknown), refused);
        // Releasing the refused saga leaves a tombstone and moves nothing.
        assert_eq!(inv.handle(&comp(2, StepId::INVENTORY)), Reply::Ok);
        assert_eq!(inv.available(1), 3);
        assert!(inv.is_conserved());
    }

    #[test]
    fn release_before_reserve_leaves_a_tombstone_and_a_late_reserve_is_refused() {
        let mut inv = InventoryService::new([(1, 5)]);
        assert_eq!(inv.handle(&comp(1, StepId::INVENTORY)), Reply::Ok);
        assert_eq!(
            inv.reservation(SagaId(1)).map(|r| r.state),
            Some(ReservationState::Voided)
        );
        assert_eq!(
            inv.handle(&act(1, StepId::INVENTORY)),
            Reply::Refused(Refusal::Compensated)
        );
        assert_eq!(inv.available(1), 5);
        assert_eq!(inv.ledger().effects_max(), 0, "a tombstone is no effect");

        let mut pay = PaymentService::new();
        assert_eq!(pay.handle(&comp(1, StepId::PAYMENT)), Reply::Ok);
        assert_eq!(
            pay.handle(&act(1, StepId::PAYMENT)),
            Reply::Refused(Refusal::Compensated)
        );
        assert_eq!(pay.captured_total(), 0);
        assert_eq!(pay.refunded_total(), 0);
        assert_eq!(
            pay.charge(SagaId(1)).map(|c| c.state),
            Some(ChargeState::Voided)
        );

        let mut orders = OrderService::new();
        assert_eq!(orders.handle(&comp(1, StepId::ORDER)), Reply::Ok);
        assert_eq!(
            orders.handle(&act(1, StepId::ORDER)),
            Reply::Refused(Refusal::Compensated)
        );
        assert_eq!(orders.status(SagaId(1)), Some(OrderStatus::Voided));
        assert_eq!(orders.placed(), 0);
    }

    #[test]
    fn payment_charges_once_refunds_once_and_declines_by_rule() {
        let mut pay = PaymentService::new()
            .with_decline(|_, amount| amount > 1_000)
            .with_declined([SagaId(3)]);
        for _ in 0..3 {
            assert_eq!(pay.handle(&act(1, StepId::PAYMENT)), Reply::Ok);
        }
        assert_eq!(pay.captured_total(), 300);
        let big = Command::action(
            SagaId(2),
            StepId::PAYMENT,
            Order {
                amount: 1_001,
                ..ORDER
            },
        );
        for _ in 0..2 {
            assert_eq!(pay.handle(&big), Reply::Refused(Refusal::CardDeclined));
            assert_eq!(
                pay.handle(&act(3, StepId::PAYMENT)),
                Reply::Refused(Refusal::CardDeclined)
            );
        }
        assert!(pay.declines(SagaId(3), 1));
        assert!(!pay.declines(SagaId(4), 1));
        for _ in 0..3 {
            assert_eq!(pay.handle(&comp(1, StepId::PAYMENT)), Reply::Ok);
        }
        assert_eq!(pay.refunded_total(), 300);
        assert_eq!(pay.held_total(), 0);
        assert_eq!(pay.ledger().effects_max(), 1);
        assert!(pay.is_conserved());
    }

    #[test]
    fn conservation_arithmetic_over_interleaved_duplicates() {
        let mut s = Services::new(
            InventoryService::new([(1, 10), (2, 4)]),
            PaymentService::new().with_decline(|saga, _| saga.0 % 5 == 0),
        );
        // A deterministic mix of actions, compensations and duplicates.
        let mut x = 17u64;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let saga = SagaId((x >> 33) % 12);
            let step = StepId::ALL[((x >> 40) % 3) as usize];
            let order = Order {
                item: 1 + (saga.0 % 2) as u32,
                qty: 1 + (saga.0 % 3) as u32,
                amount: 10 * saga.0,
            };
            let cmd = if (x >> 50).is_multiple_of(3) {
                Command::compensation(saga, step, order)
            } else {
                Command::action(saga, step, order)
            };
            let first = s.handle(&cmd);
            assert_eq!(s.handle(&cmd), first, "a duplicate gets the same reply");
            assert!(s.is_conserved());
        }
        assert_eq!(s.effects_max(), 1);
        for item in s.inventory.items() {
            assert_eq!(
                u64::from(s.inventory.available(item)) + s.inventory.reserved(item),
                u64::from(s.inventory.initial(item))
            );
        }
        assert_eq!(
            s.payment.captured_total() - s.payment.refunded_total(),
            s.payment.held_total()
        );
    }

    #[test]
    fn misrouted_commands_are_refused_without_effect() {
        let mut inv = InventoryService::new([(1, 5)]);
        let misrouted = Reply::Refused(Refusal::Misrouted);
        assert_eq!(inv.handle(&act(1, StepId::PAYMENT)), misrouted);
        assert_eq!(
            OrderService::new().handle(&act(1, StepId::PAYMENT)),
            misrouted
        );
        assert_eq!(
            PaymentService::new().handle(&act(1, StepId::ORDER)),
            misrouted
        );
        assert_eq!(inv.available(1), 5);
        assert_eq!(inv.ledger().handled(), 0);
    }

    #[test]
    fn services_route_by_step_and_report_holdings() {
        let mut s = Services::new(InventoryService::new([(1, 5)]), PaymentService::new());
        for step in StepId::ALL {
            assert_eq!(s.handle(&act(1, step)), Reply::Ok);
        }
        assert!(s.holds_all(SagaId(1)));
        assert_eq!(s.effects(act(1, StepId::PAYMENT).key()), 1);
        s.handle(&comp(1, StepId::PAYMENT));
        assert!(s.holds(SagaId(1)) && !s.holds_all(SagaId(1)));
        s.handle(&comp(1, StepId::INVENTORY));
        s.handle(&comp(1, StepId::ORDER));
        assert!(!s.holds(SagaId(1)));
        assert!(s.is_conserved());
    }

    #[test]
    fn a_non_idempotent_payment_charges_every_duplicate() {
        let mut pay = PaymentService::new();
        pay.idempotent = false;
        for _ in 0..3 {
            assert_eq!(pay.handle(&act(1, StepId::PAYMENT)), Reply::Ok);
        }
        assert_eq!(pay.captured_total(), 900);
        assert_eq!(pay.ledger().effects_max(), 3);
        assert!(!pay.is_conserved());
    }
}
