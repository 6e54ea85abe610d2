//! Sagas: a checkout that spans three independent services (create the order, reserve
//! inventory, charge the payment), where a failure at any step undoes the steps before
//! it; orchestrated from a durable log, or choreographed over the event bus; and
//! two-phase commit, the baseline they replace, on the same checkout.
//!
//! What the family shares:
//!
//! - [`services`]: the three participants as plain, durable, idempotent state machines
//!   ([`OrderService`], [`InventoryService`], [`PaymentService`], bundled as
//!   [`Services`]), their commands and ids, and [`SagaState`]. A duplicated or retried
//!   [`Command`] has the effect of one and gets the same [`Reply`]; a compensation is
//!   safe when its action never took effect, and an action arriving after its
//!   compensation takes no effect.
#![cfg_attr(
    feature = "sim",
    doc = "- [`checkout`]: the simulated checkout every world runs: the knobs of a scenario
  from one seed ([`SagaKnobs`](checkout::SagaKnobs)), its fault plans, the customers
  ([`checkouts`](checkout::checkouts)), and the settling ledger.
- [`invariants`]: the promises both sagas keep, as named constants, with one copy of
  the checks they share.
- [`participants`]: [`Participants`](participants::Participants), what the"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `checkout` (feature `sim`): the simulated checkout every world runs: the knobs of a scenario
  from one seed (`SagaKnobs`), its fault plans, the customers
  (`checkouts`), and the settling ledger.
- `invariants` (feature `sim`): the promises both sagas keep, as named constants, with one copy of
  the checks they share.
- `participants` (feature `sim`): `Participants`, what the"
)]
//!   orchestrated world needs of any definition's far side (steps, nodes, commands
//!   handled, effect ledgers, holdings, customers); the checkout's [`Services`] are one
//!   implementation.
#![cfg_attr(
    feature = "sim",
    doc = "- [`generated`]: a saga of any domain whose definition the seed draws (2 to 6 named"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `generated` (feature `sim`): a saga of any domain whose definition the seed draws (2 to 6 named"
)]
//!   steps, refusal points, "failed, retry now" answers) over idempotent ledgers, in
//!   the same world with the same invariants and mutants (`saga-any`).
//!
//! The orchestrated saga works for any definition, not only the checkout: the
//! definition is the [`SagaConfig`]'s ordered list of named steps ([`StepId`], e.g.
//! `flight`, `hotel`, `car`, `payment`; they run in that order, whatever their
//! names), and the payload a saga is started with and the reason a participant refuses
//! are type parameters of [`Orchestrator`], [`Command`], [`Reply`], [`LogRecord`] and
//! the tokio runner (any [`SagaData`] type; the checkout's [`Order`] and [`Refusal`]
//! by default). A participant answers [`Reply::Ok`], [`Reply::Refused`] with its
//! reason, or [`Reply::Failed`] ("failed, retry now": retried after the backoff, not
//! the step timeout). [`SagaHistory`] reads a saga's history (payload, state, per step
//! its attempts, outcome with the refusal's reason, and compensation) from the log
//! records alone. See `examples/trip_booking.rs`.
//!
//! Three rooms built on the shared files above (the choreography also rides
//! [`crate::bus`]):
//!
//! - [`orchestrated`]: the sans-IO [`Orchestrator`] for many concurrent sagas. It emits
//!   log records and commands in the order they must happen (write-ahead: the intent
//!   before the command), retries on timeout with the same idempotency key, compensates
//!   in reverse order, and [recovers](Orchestrator::recover) from its log after a crash
//!   at any point. With its [`SagaCoordinator`] contract, tokio runner, world, mutants.
//! - [`choreographed`]: no coordinator; the services react to each other's events on
//!   the bus, with the same idempotency keys.
//! - [`twopc`]: two-phase commit with a durable coordinator log (presumed abort), and
//!   its [`TwoPcCoordinator`] contract.
//!
//! ```
//! use faultline::clock::Instant;
//! use faultline::saga::{
//!     InventoryService, Orchestrator, Order, Output, PaymentService, SagaConfig, SagaId,
//!     SagaState, Services,
//! };
//!
//! let mut services = Services::new(InventoryService::new([(1, 10)]), PaymentService::new());
//! let mut orchestrator = Orchestrator::new(SagaConfig::default());
//! let mut log = Vec::new(); // stands for durable storage
//! let now = Instant::ZERO;
//! orchestrator.start(SagaId(1), Order { item: 1, qty: 2, amount: 500 }, now);
//! while let Some(output) = orchestrator.poll_output() {
//!     match output {
//!         Output::Append(record) => log.push(record),
//!         Output::Send(cmd, attempt) => {
//!             let reply = services.handle(&cmd);
//!             orchestrator.on_reply(cmd.saga, cmd.step, cmd.kind, attempt, reply, now);
//!         }
//!         Output::Alert { saga, reason } => eprintln!("{saga}: {reason}"),
//!     }
//! }
//! assert_eq!(orchestrator.state(SagaId(1)), Some(SagaState::Completed));
//! assert_eq!(services.inventory.available(1), 8);
//! assert_eq!(services.payment.captured_total(), 500);
//!
//! // After a crash, a new orchestrator rebuilds the same state from the log.
//! let recovered = Orchestrator::recover(SagaConfig::default(), &log, now);
//! assert_eq!(recovered.state(SagaId(1)), Some(SagaState::Completed));
//! ```

#[cfg(feature = "sim")]
pub mod checkout;
pub mod choreographed;
#[cfg(feature = "sim")]
pub mod generated;
#[cfg(feature = "sim")]
pub mod invariants;
pub mod orchestrated;
#[cfg(feature = "sim")]
pub mod participants;
#[cfg(feature = "sim")]
pub(crate) mod report;
pub mod services;
pub mod twopc;

pub use self::orchestrated::config::{SagaConfig, SagaConfigBuilder};
pub use self::orchestrated::contract::{SagaCoordinator, SagaPolicy};
pub use self::orchestrated::core::{AlertReason, Orchestrator, Output, SagaTotals, StepProgress};
pub use self::orchestrated::history::{ActionOutcome, SagaHistory, StepHistory};
pub use self::orchestrated::log::LogRecord;
pub use self::services::{
    Charge, ChargeState, Command, EffectLedger, IdempotencyKey, InventoryService, Kind, Order,
    OrderService, OrderStatus, PaymentService, Refusal, Reply, Reservation, ReservationState,
    SagaData, SagaId, SagaState, Services, StepId,
};
pub use self::twopc::contract::TwoPcCoordinator;
