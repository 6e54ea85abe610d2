//! [`Participants`]: what the orchestrated saga world needs of a saga definition's far
//! side, whatever the domain: the steps in execution order, the node each runs on, how
//! a participant handles a command, the effect ledger per idempotency key, whether a
//! saga holds a step's effect, and the customers who submit sagas. The checkout's
//! [`Services`] are one implementation; the seed-generated ledgers of
//! [`generated`](crate::saga::generated) another. The world
//! ([`SagaWorld`](crate::saga::orchestrated::world::SagaWorld)) and the shared checks
//! ([`invariants`](crate::saga::invariants)) are written against this trait only.

use crate::saga::checkout::{self, SagaKnobs};
use crate::saga::services::{
    Command, IdempotencyKey, Order, Refusal, Reply, SagaData, SagaId, Services, StepId,
};
use faultline_sim::{SimTime, Violation};

/// The participants of one saga definition, as the world drives them: durable state
/// machines (a crash only makes a node unreachable) that apply each idempotency key at
/// most once and count the effects each key applied.
pub trait Participants {
    /// The saga's payload (the checkout's [`Order`]).
    type Payload: SagaData + Copy;
    /// The participants' refusal reason (the checkout's [`Refusal`]).
    type Refusal: SagaData + Copy;

    /// The definition's steps, in execution order.
    fn steps(&self) -> &[StepId];
    /// The fault-plan node of the participant that runs `step`.
    fn node(&self, step: StepId) -> &'static str;
    /// Handles `cmd` (an action or compensation of one of its steps) and answers.
    fn handle(&mut self, cmd: &Command<Self::Payload>) -> Reply<Self::Refusal>;
    /// The effects `key` applied at the participant that owns its step.
    fn effects(&self, key: IdempotencyKey) -> u32;
    /// Every key that applied an effect, with its count, in participant then key order.
    fn all_effects(&self) -> Vec<(IdempotencyKey, u32)>;
    /// What `saga` holds at `step`'s participant, in words, and whether it is a live
    /// effect (the step's action took effect and was not undone).
    fn holding(&self, saga: SagaId, step: StepId) -> (bool, String);
    /// The broken promise, in words, of a completed saga that does not hold every
    /// step's effect, and of a compensated one that still holds one.
    fn holding_promise(&self) -> (&'static str, &'static str) {
        (
            "does not hold every step's effect",
            "still holds a step's effect",
        )
    }
    /// Domain-wide conservation checks beyond the per-saga holdings (the checkout's
    /// stock and money); `Ok` by default.
    fn check_conserved(&self) -> Result<(), Violation> {
        Ok(())
    }
    /// `cmd` in words, for the trace.
    fn command_text(&self, cmd: &Command<Self::Payload>) -> String;
    /// A payload in words.
    fn payload_text(&self, payload: &Self::Payload) -> String;
    /// How `logged` differs from `submitted`, in words.
    fn payload_diff(&self, submitted: &Self::Payload, logged: &Self::Payload) -> String;
    /// The run's customers up to `horizon`: (arrival, saga, payload), in arrival order.
    fn customers(
        &self,
        knobs: &SagaKnobs,
        horizon: SimTime,
    ) -> Vec<(SimTime, SagaId, Self::Payload)>;
    /// Coverage marks of the domain, beyond the world's own.
    fn marks(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// The marks to cover when the run starts (e.g. the definition's shape).
    fn start_marks(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// The mark to cover when `cmd` was answered `reply`, if any.
    fn reply_mark(
        &self,
        _cmd: &Command<Self::Payload>,
        _reply: &Reply<Self::Refusal>,
    ) -> Option<&'static str> {
        None
    }
}

/// The checkout's three services: order, inventory, payment.
impl Participants for Services {
    type Payload = Order;
    type Refusal = Refusal;

    fn steps(&self) -> &[StepId] {
        &checkout::STEPS
    }

    fn node(&self, step: StepId) -> &'static str {
        checkout::service_node(step)
    }

    fn handle(&mut self, cmd: &Command) -> Reply {
        Services::handle(self, cmd)
    }

    fn effects(&self, key: IdempotencyKey) -> u32 {
        Services::effects(self, key)
    }

    fn all_effects(&self) -> Vec<(IdempotencyKey, u32)> {
        self.orders
            .ledger()
            .all_effects()
            .chain(self.inventory.ledger().all_effects())
            .chain(self.payment.ledger().all_effects())
            .collect()
    }

    fn holding(&self, saga: SagaId, step: StepId) -> (bool, String) {
        crate::saga::invariants::checkout_holding(self, saga, step)
    }

    fn holding_promise(&self) -> (&'static str, &'static str) {
        (
            "does not hold its order, stock and payment",
            "still holds an order, stock or money",
        )
    }

    fn check_conserved(&self) -> Result<(), Violation> {
        crate::saga::invariants::check_conserved(self)
    }

    fn command_text(&self, cmd: &Command) -> String {
        cmd.to_string()
    }

    fn payload_text(&self, order: &Order) -> String {
        format!(
            "item {} x{}, amount {}",
            order.item, order.qty, order.amount
        )
    }

    fn payload_diff(&self, submitted: &Order, order: &Order) -> String {
        let mut diff = Vec::new();
        if order.item != submitted.item {
            diff.push(format!("item {} instead of {}", order.item, submitted.item));
        }
        if order.qty != submitted.qty {
            diff.push(format!(
                "quantity {} instead of {} (stock of item {})",
                order.qty, submitted.qty, submitted.item
            ));
        }
        if order.amount != submitted.amount {
            diff.push(format!(
                "amount {} instead of {} (money)",
                order.amount, submitted.amount
            ));
        }
        diff.join(", ")
    }

    fn customers(&self, knobs: &SagaKnobs, horizon: SimTime) -> Vec<(SimTime, SagaId, Order)> {
        checkout::checkouts(knobs, horizon)
    }
}
