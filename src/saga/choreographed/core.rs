//! The choreographed checkout: no orchestrator. Each service reacts to the others'
//! events on the [event bus](crate::bus): the order service creates the order on a
//! checkout and publishes `order.created`; inventory reserves stock and publishes
//! `stock.reserved` (or `stock.refused`); payment charges and publishes
//! `payment.captured` (or `payment.declined`); a decline makes inventory release the
//! stock (`stock.released`); a refusal or a release makes the order service cancel the
//! order; a capture makes it confirm the order. The order service, which sees how each
//! checkout ends, keeps the saga's state.
//!
//! Each reaction is one local, durable step of one service: apply the command (with
//! the same idempotency keys as the orchestrated saga, so a redelivered event has the
//! effect of one) and put the events it causes in the service's outbox; the outbox is
//! then published and the delivery acknowledged together. A crash in between only
//! repeats the reaction: the command answers as before and the events are published
//! again, which their consumers absorb by the same keys.
//!
//! ```
//! use faultline::saga::choreographed::core::{CheckoutEvent, Service, Reactor};
//! use faultline::saga::{InventoryService, Order, PaymentService, SagaId, SagaState, Services};
//!
//! let services = Services::new(InventoryService::new([(1, 5)]), PaymentService::new());
//! let mut reactor = Reactor::new(services);
//! let order = Order { item: 1, qty: 2, amount: 300 };
//! // Hand every event to every participant that listens to it until none is left.
//! let mut pending = vec![CheckoutEvent::CheckoutRequested { saga: SagaId(1), order }];
//! while let Some(event) = pending.pop() {
//!     for p in Service::ALL {
//!         if p.listens_to(event.topic()) {
//!             pending.extend(reactor.react(p, &event));
//!         }
//!     }
//! }
//! assert_eq!(reactor.state(SagaId(1)), Some(SagaState::Completed));
//! assert_eq!(reactor.services().inventory.available(1), 3);
//! ```

use crate::saga::services::{Command, Kind, Order, Reply, SagaId, SagaState, Services, StepId};
use std::collections::BTreeMap;
use std::fmt;

/// An event of the choreographed checkout.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutEvent {
    /// A customer checked out (to the order service).
    CheckoutRequested {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// The order service created the order.
    OrderCreated {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// Inventory reserved the stock.
    StockReserved {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// Inventory refused: not enough stock.
    StockRefused {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// Payment captured the money.
    PaymentCaptured {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// Payment was declined.
    PaymentDeclined {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// Inventory released the stock after a decline.
    StockReleased {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// The order service confirmed the order: the saga completed.
    OrderConfirmed {
        /// The saga.
        saga: SagaId,
    },
    /// The order service cancelled the order: the saga is compensated.
    OrderCancelled {
        /// The saga.
        saga: SagaId,
    },
}

impl CheckoutEvent {
    /// Every topic, in flow order.
    pub const TOPICS: [&'static str; 9] = [
        "checkout.requested",
        "order.created",
        "stock.reserved",
        "stock.refused",
        "payment.captured",
        "payment.declined",
        "stock.released",
        "order.confirmed",
        "order.cancelled",
    ];

    /// The topic it is published on.
    pub fn topic(&self) -> &'static str {
        Self::TOPICS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            CheckoutEvent::CheckoutRequested { .. } => 0,
            CheckoutEvent::OrderCreated { .. } => 1,
            CheckoutEvent::StockReserved { .. } => 2,
            CheckoutEvent::StockRefused { .. } => 3,
            CheckoutEvent::PaymentCaptured { .. } => 4,
            CheckoutEvent::PaymentDeclined { .. } => 5,
            CheckoutEvent::StockReleased { .. } => 6,
            CheckoutEvent::OrderConfirmed { .. } => 7,
            CheckoutEvent::OrderCancelled { .. } => 8,
        }
    }

    /// The saga it belongs to.
    pub fn saga(&self) -> SagaId {
        match *self {
            CheckoutEvent::CheckoutRequested { saga, .. }
            | CheckoutEvent::OrderCreated { saga, .. }
            | CheckoutEvent::StockReserved { saga, .. }
            | CheckoutEvent::StockRefused { saga, .. }
            | CheckoutEvent::PaymentCaptured { saga, .. }
            | CheckoutEvent::PaymentDeclined { saga, .. }
            | CheckoutEvent::StockReleased { saga, .. }
            | CheckoutEvent::OrderConfirmed { saga }
            | CheckoutEvent::OrderCancelled { saga } => saga,
        }
    }
}

impl fmt::Display for CheckoutEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.topic(), self.saga())
    }
}

/// One of the three services taking part in the choreography (its identity: node
/// name and subscriptions; the state is in [`Services`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// The order service (it also keeps each saga's state).
    Orders,
    /// The inventory service.
    Inventory,
    /// The payment service.
    Payment,
}

impl Service {
    /// All three.
    pub const ALL: [Service; 3] = [Service::Orders, Service::Inventory, Service::Payment];

    /// Its node name in fault plans (as in the orchestrated world).
    pub fn name(self) -> &'static str {
        match self {
            Service::Orders => "orders",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
        }
    }

    /// The topics it subscribes to.
    pub fn topics(self) -> &'static [&'static str] {
        match self {
            Service::Orders => &[
                "checkout.requested",
                "stock.refused",
                "stock.released",
                "payment.captured",
            ],
            Service::Inventory => &["order.created", "payment.declined"],
            Service::Payment => &["stock.reserved"],
        }
    }

    /// True when it subscribes to `topic`.
    pub fn listens_to(self, topic: &str) -> bool {
        self.topics().contains(&topic)
    }
}

/// A deliberate defect, set only by mutation tests. The reference has none.
#[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChoreoFlaw {
    None,
    /// On a decline, the order is cancelled but inventory never releases the stock
    /// (the last completed step is not compensated).
    SkipRelease,
    /// On a stock refusal, inventory "releases" the stock it never reserved.
    ReleaseOnRefusal,
    /// The bus's ack deadline is left at a broker's default of 30 s (SQS's default
    /// visibility timeout) instead of the step timeout.
    DefaultAckDeadline,
}

/// The three participants' reactions over their durable state: the services, and the
/// saga state the order service keeps.
#[derive(Clone, Debug)]
pub struct Reactor {
    services: Services,
    states: BTreeMap<SagaId, SagaState>,
    flaw: ChoreoFlaw,
}

impl Reactor {
    /// The reactions over `services`.
    pub fn new(services: Services) -> Self {
        Reactor {
            services,
            states: BTreeMap::new(),
            flaw: ChoreoFlaw::None,
        }
    }

    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn with_flaw(mut self, flaw: ChoreoFlaw) -> Self {
        self.flaw = flaw;
        self
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The services, to configure them (e.g. payment's idempotency in mutants).
    pub fn services_mut(&mut self) -> &mut Services {
        &mut self.services
    }

    /// `saga`'s state as the order service knows it (`None` before its order exists).
    pub fn state(&self, saga: SagaId) -> Option<SagaState> {
        self.states.get(&saga).copied()
    }

    /// Every saga the order service knows, with its state, in id order.
    pub fn states(&self) -> impl Iterator<Item = (SagaId, SagaState)> + '_ {
        self.states.iter().map(|(s, st)| (*s, *st))
    }

    /// The command `participant` runs for `event`, if any.
    pub fn command_for(&self, participant: Service, event: &CheckoutEvent) -> Option<Command> {
        use CheckoutEvent as E;
        use Service as P;
        match (participant, *event) {
            (P::Orders, E::CheckoutRequested { saga, order }) => {
                Some(Command::action(saga, StepId::ORDER, order))
            }
            (P::Orders, E::StockRefused { saga, order } | E::StockReleased { saga, order }) => {
                Some(Command::compensation(saga, StepId::ORDER, order))
            }
            (P::Orders, E::PaymentDeclined { saga, order })
                if self.flaw == ChoreoFlaw::SkipRelease =>
            {
                Some(Command::compensation(saga, StepId::ORDER, order))
            }
            (P::Inventory, E::OrderCreated { saga, order }) => {
                Some(Command::action(saga, StepId::INVENTORY, order))
            }
            (P::Inventory, E::PaymentDeclined { saga, order })
                if self.flaw != ChoreoFlaw::SkipRelease =>
            {
                Some(Command::compensation(saga, StepId::INVENTORY, order))
            }
            (P::Inventory, E::StockRefused { saga, order })
                if self.flaw == ChoreoFlaw::ReleaseOnRefusal =>
            {
                Some(Command::compensation(saga, StepId::INVENTORY, order))
            }
            (P::Payment, E::StockReserved { saga, order }) => {
                Some(Command::action(saga, StepId::PAYMENT, order))
            }
            _ => None,
        }
    }

    /// True when `participant` reacts to `event` (with the flaw's extra subscriptions).
    pub fn reacts_to(&self, participant: Service, event: &CheckoutEvent) -> bool {
        self.command_for(participant, event).is_some()
            || matches!(
                (participant, event),
                (Service::Orders, CheckoutEvent::PaymentCaptured { .. })
            )
    }

    /// `participant` reacts to `event`: one local durable step that applies its command
    /// (idempotently) and returns the events to publish. Reacting again to the same
    /// event returns the same events and has no further effect.
    pub fn react(&mut self, participant: Service, event: &CheckoutEvent) -> Vec<CheckoutEvent> {
        self.react_with_reply(participant, event).0
    }

    /// [`react`](Reactor::react), also returning the command run and its reply.
    pub fn react_with_reply(
        &mut self,
        participant: Service,
        event: &CheckoutEvent,
    ) -> (Vec<CheckoutEvent>, Option<(Command, Reply)>) {
        use CheckoutEvent as E;
        let saga = event.saga();
        let Some(cmd) = self.command_for(participant, event) else {
            if let (Service::Orders, E::PaymentCaptured { .. }) = (participant, *event) {
                // The last step: the order service confirms the order.
                let st = self.states.entry(saga).or_insert(SagaState::Running);
                if *st == SagaState::Running {
                    *st = SagaState::Completed;
                }
                if *st == SagaState::Completed {
                    return (vec![E::OrderConfirmed { saga }], None);
                }
            }
            return (Vec::new(), None);
        };
        let reply = self.services.handle(&cmd);
        let order = cmd.payload;
        use crate::saga::services::CheckoutStep as S;
        let out = match (cmd.step.checkout(), cmd.kind, reply) {
            (Some(S::Order), Kind::Action, Reply::Ok) => {
                self.states.entry(saga).or_insert(SagaState::Running);
                vec![E::OrderCreated { saga, order }]
            }
            (Some(S::Order), Kind::Compensation, Reply::Ok) => {
                self.states.insert(saga, SagaState::Compensated);
                vec![E::OrderCancelled { saga }]
            }
            (Some(S::Inventory), Kind::Action, Reply::Ok) => vec![E::StockReserved { saga, order }],
            (Some(S::Inventory), Kind::Action, Reply::Refused(_)) => {
                vec![E::StockRefused { saga, order }]
            }
            (Some(S::Inventory), Kind::Compensation, Reply::Ok) => {
                vec![E::StockReleased { saga, order }]
            }
            (Some(S::Payment), Kind::Action, Reply::Ok) => vec![E::PaymentCaptured { saga, order }],
            (Some(S::Payment), Kind::Action, Reply::Refused(_)) => {
                vec![E::PaymentDeclined { saga, order }]
            }
            // A late create after a cancellation, or anything refused: nothing follows.
            _ => Vec::new(),
        };
        (out, Some((cmd, reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::services::{InventoryService, PaymentService};

    const ORDER: Order = Order {
        item: 1,
        qty: 2,
        amount: 300,
    };

    fn reactor(stock: u32, declined: &[u64]) -> Reactor {
        Reactor::new(Services::new(
            InventoryService::new([(1, stock)]),
            PaymentService::new().with_declined(declined.iter().map(|s| SagaId(*s))),
        ))
    }

    /// Runs the flow to the end, delivering each event `copies` times.
    fn run(r: &mut Reactor, saga: u64, copies: usize) -> Vec<&'static str> {
        let mut seen = Vec::new();
        let mut pending = vec![CheckoutEvent::CheckoutRequested {
            saga: SagaId(saga),
            order: ORDER,
        }];
        while !pending.is_empty() {
            let event = pending.remove(0);
            seen.push(event.topic());
            for p in Service::ALL {
                if r.reacts_to(p, &event) {
                    let mut out = Vec::new();
                    for _ in 0..copies {
                        out = r.react(p, &event);
                    }
                    pending.extend(out);
                }
            }
        }
        seen
    }

    #[test]
    fn a_checkout_completes() {
        let mut r = reactor(5, &[]);
        let seen = run(&mut r, 1, 1);
        assert_eq!(
            seen,
            [
                "checkout.requested",
                "order.created",
                "stock.reserved",
                "payment.captured",
                "order.confirmed"
            ]
        );
        assert_eq!(r.state(SagaId(1)), Some(SagaState::Completed));
        assert!(r.services().holds_all(SagaId(1)));
    }

    #[test]
    fn a_decline_releases_the_stock_then_cancels_the_order() {
        let mut r = reactor(5, &[1]);
        let seen = run(&mut r, 1, 2);
        assert_eq!(
            seen,
            [
                "checkout.requested",
                "order.created",
                "stock.reserved",
                "payment.declined",
                "stock.released",
                "order.cancelled"
            ]
        );
        assert_eq!(r.state(SagaId(1)), Some(SagaState::Compensated));
        assert!(!r.services().holds(SagaId(1)));
        assert_eq!(r.services().inventory.available(1), 5);
        assert_eq!(
            r.services().effects_max(),
            1,
            "duplicates had no extra effect"
        );
    }

    #[test]
    fn no_stock_cancels_the_order() {
        let mut r = reactor(1, &[]);
        run(&mut r, 1, 1);
        assert_eq!(r.state(SagaId(1)), Some(SagaState::Compensated));
        assert_eq!(r.services().inventory.available(1), 1);
    }

    #[test]
    fn the_flaws_break_what_they_should() {
        let mut r = reactor(5, &[1]).with_flaw(ChoreoFlaw::SkipRelease);
        run(&mut r, 1, 1);
        assert_eq!(r.state(SagaId(1)), Some(SagaState::Compensated));
        assert!(r.services().holds(SagaId(1)), "the stock stays reserved");
        let r = reactor(1, &[]).with_flaw(ChoreoFlaw::ReleaseOnRefusal);
        let refused = CheckoutEvent::StockRefused {
            saga: SagaId(1),
            order: ORDER,
        };
        assert_eq!(
            r.command_for(Service::Inventory, &refused),
            Some(Command::compensation(SagaId(1), StepId::INVENTORY, ORDER)),
            "a release of stock never reserved is sent"
        );
    }
}
