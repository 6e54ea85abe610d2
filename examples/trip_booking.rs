//! A saga of your own domain: booking a trip takes a flight, a hotel room, a rental car
//! and a payment, four independent services; when one of them says no, the ones
//! before are undone (the flight cancelled, the room released, the car returned).
//!
//! ```sh
//! cargo run --example trip_booking
//! ```
//!
//! The definition is four named steps in execution order ([`definition`]); the payload
//! is a [`Trip`] (who, when, what each part costs), the refusal a [`TripRefusal`]
//! (`NoSeats`, `HotelFull`, `NoCars`, `CardDeclined`). The tokio [`SagaRunner`] runs it
//! over a [`FileLog`], so a crash loses nothing: a new runner over the same file
//! finishes every saga, and [`SagaRunner::history`] tells an operator what happened to
//! each. The services ([`Agency`]) are in-memory stand-ins, idempotent by the
//! command's key like real ones must be; the car rental fails its first call of each
//! trip fast ([`Reply::Failed`]), which the runner retries after its backoff.
//!
//! `tests/sim/trip_booking.rs` runs this same definition with a crash and a recovery
//! and checks every trip at rest and every service's books.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline::saga::orchestrated::tokio::{FileLog, RunnerError, SagaRunner};
use faultline::saga::{
    Command, IdempotencyKey, Kind, Reply, SagaConfig, SagaId, SagaState, StepId,
};

/// The flight: book a seat (compensation: cancel it).
pub const FLIGHT: StepId = StepId::from_static("flight");
/// The hotel: reserve a room (compensation: release it).
pub const HOTEL: StepId = StepId::from_static("hotel");
/// The car: rent one (compensation: cancel the rental).
pub const CAR: StepId = StepId::from_static("car");
/// The payment: charge the card (compensation: refund it).
pub const PAYMENT: StepId = StepId::from_static("payment");

/// The steps in execution order. (Alphabetically `car` < `flight` < `hotel` <
/// `payment`: the order is the definition's, never the names'.)
pub const STEPS: [StepId; 4] = [FLIGHT, HOTEL, CAR, PAYMENT];

/// What a trip is booked with: the saga's payload, logged in its start record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trip {
    /// Who travels.
    pub traveller: String,
    /// The first day, `YYYY-MM-DD`.
    pub from: String,
    /// The last day, `YYYY-MM-DD`.
    pub to: String,
    /// The flight's price, in cents.
    pub flight_cents: u64,
    /// The hotel's price, in cents.
    pub hotel_cents: u64,
    /// The car's price, in cents.
    pub car_cents: u64,
}

impl Trip {
    /// What the payment step charges: the three parts together.
    pub fn total_cents(&self) -> u64 {
        self.flight_cents + self.hotel_cents + self.car_cents
    }
}

/// Why a service said no: the saga's refusal, logged with the step's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripRefusal {
    /// The flight is full.
    NoSeats,
    /// The hotel has no room left.
    HotelFull,
    /// No car left to rent.
    NoCars,
    /// The card was declined.
    CardDeclined,
    /// The booking arrived after its cancellation: it must not take effect.
    Cancelled,
}

/// The saga's configuration: the four steps, 200 ms per attempt, 3 attempts.
pub fn definition() -> Result<SagaConfig, faultline::config::ConfigError> {
    SagaConfig::builder()
        .steps(&STEPS)
        .step_timeout(Duration::from_millis(200))
        .attempts_max(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .build()
}

/// One service's record of one trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Booking {
    /// Booked (seat, room, car) or charged.
    Held,
    /// Undone after it was held.
    Undone,
    /// Cancelled before it was ever booked (a tombstone: a late booking is refused).
    Tombstone,
}

/// One service: a stock of units (seats, rooms, cars; for the payment, a card limit in
/// cents per trip) and its books, idempotent by the command's key.
#[derive(Clone, Debug, Default)]
pub struct Service {
    /// Units left.
    pub stock: u64,
    /// Each trip's booking.
    pub books: BTreeMap<SagaId, Booking>,
    /// The reply given to each key (a retry or duplicate gets the same one).
    pub replies: BTreeMap<IdempotencyKey, Reply<TripRefusal>>,
    /// Effects applied per key (at most one for a correct service).
    pub effects: BTreeMap<IdempotencyKey, u32>,
    /// The trips whose first call was answered `Failed` (the flaky car rental).
    pub failed_once: BTreeSet<SagaId>,
}

/// The four services of the trip (in real life, four companies' APIs).
#[derive(Clone, Debug)]
pub struct Agency {
    /// Per step, its service.
    pub services: BTreeMap<StepId, Service>,
    /// The payment's card limit, in cents: a larger trip is declined.
    pub card_limit_cents: u64,
    /// When set, the car rental fails the first call of each trip fast.
    pub flaky_car: bool,
}

impl Agency {
    /// `seats` seats, `rooms` rooms, `cars` cars, a card limit.
    pub fn new(seats: u64, rooms: u64, cars: u64, card_limit_cents: u64) -> Agency {
        let service = |stock| Service {
            stock,
            ..Service::default()
        };
        Agency {
            services: BTreeMap::from([
                (FLIGHT, service(seats)),
                (HOTEL, service(rooms)),
                (CAR, service(cars)),
                (PAYMENT, service(0)),
            ]),
            card_limit_cents,
            flaky_car: true,
        }
    }

    /// The service of `step`.
    pub fn service(&self, step: StepId) -> Option<&Service> {
        self.services.get(&step)
    }

    /// Handles one command, idempotently: a key already handled gets its first reply
    /// and no effect; an undo before its booking leaves a tombstone.
    pub fn handle(&mut self, cmd: &Command<Trip>) -> Reply<TripRefusal> {
        let key = cmd.key();
        let limit = self.card_limit_cents;
        let flaky = self.flaky_car && cmd.step == CAR && cmd.kind == Kind::Action;
        let Some(svc) = self.services.get_mut(&cmd.step) else {
            return Reply::Failed; // no such service: nothing was done
        };
        if let Some(reply) = svc.replies.get(&key) {
            return *reply;
        }
        if flaky && svc.failed_once.insert(cmd.saga) {
            return Reply::Failed; // "503, try again": nothing was done
        }
        let existing = svc.books.get(&cmd.saga).copied();
        let reply = match (cmd.kind, existing) {
            (Kind::Action, Some(Booking::Held)) => Reply::Ok,
            (Kind::Action, Some(_)) => Reply::Refused(TripRefusal::Cancelled),
            (Kind::Action, None) => {
                let refusal = match cmd.step {
                    FLIGHT => TripRefusal::NoSeats,
                    HOTEL => TripRefusal::HotelFull,
                    CAR => TripRefusal::NoCars,
                    _ => TripRefusal::CardDeclined,
                };
                let available = if cmd.step == PAYMENT {
                    cmd.payload.total_cents() <= limit
                } else {
                    svc.stock > 0
                };
                if available {
                    if cmd.step != PAYMENT {
                        svc.stock -= 1;
                    }
                    svc.books.insert(cmd.saga, Booking::Held);
                    *svc.effects.entry(key).or_insert(0) += 1;
                    Reply::Ok
                } else {
                    Reply::Refused(refusal)
                }
            }
            (Kind::Compensation, Some(Booking::Held)) => {
                if cmd.step != PAYMENT {
                    svc.stock += 1;
                }
                svc.books.insert(cmd.saga, Booking::Undone);
                *svc.effects.entry(key).or_insert(0) += 1;
                Reply::Ok
            }
            (Kind::Compensation, Some(_)) => Reply::Ok,
            (Kind::Compensation, None) => {
                svc.books.insert(cmd.saga, Booking::Tombstone);
                Reply::Ok
            }
        };
        svc.replies.insert(key, reply);
        reply
    }
}

/// The agency behind a lock, shared by the participants (and the checks).
pub type Shared = Arc<Mutex<Agency>>;

/// A runner over `log` whose four steps call `agency` with `latency` per call.
pub fn runner(
    log: FileLog<Trip, TripRefusal>,
    agency: &Shared,
    latency: Duration,
) -> Result<SagaRunner<Trip, TripRefusal>, Box<dyn std::error::Error>> {
    let call = {
        let agency = Arc::clone(agency);
        move |cmd: Command<Trip>| {
            let agency = Arc::clone(&agency);
            async move {
                tokio::time::sleep(latency).await; // the round trip
                match agency.lock() {
                    Ok(mut agency) => agency.handle(&cmd),
                    Err(_) => Reply::Failed,
                }
            }
        }
    };
    let mut builder = SagaRunner::builder(definition()?, log);
    for step in STEPS {
        builder = builder.step(step, call.clone(), call.clone());
    }
    builder.build().map_err(|e: RunnerError| e.into())
}

/// What is wrong with the trips at rest, if anything: each saga at rest, a completed
/// trip holds all four bookings, a compensated one none, and no key took effect twice.
pub fn problems(sagas: &[(SagaId, SagaState)], agency: &Agency) -> Vec<String> {
    let mut problems = Vec::new();
    for (step, svc) in &agency.services {
        for (key, n) in &svc.effects {
            if *n > 1 {
                problems.push(format!("{key} took effect {n} times at the {step}"));
            }
        }
    }
    for (saga, state) in sagas {
        let held: Vec<StepId> = STEPS
            .iter()
            .filter(|s| {
                agency
                    .service(**s)
                    .is_some_and(|svc| svc.books.get(saga) == Some(&Booking::Held))
            })
            .copied()
            .collect();
        match state {
            SagaState::Completed if held.len() == STEPS.len() => {}
            SagaState::Compensated if held.is_empty() => {}
            other => problems.push(format!("{saga} is {other:?} and holds {held:?}")),
        }
    }
    problems
}

/// Three trips, started one after the other over a hotel with one room: Edsger's is
/// over the card limit (declined at the payment: car, hotel and flight undone), Ada's
/// is booked, and Grace finds the hotel full (her flight is cancelled).
pub fn trips() -> Vec<(SagaId, Trip)> {
    let trip = |traveller: &str, flight, hotel, car| Trip {
        traveller: traveller.to_string(),
        from: "2026-03-01".to_string(),
        to: "2026-03-08".to_string(),
        flight_cents: flight,
        hotel_cents: hotel,
        car_cents: car,
    };
    vec![
        (SagaId(1), trip("Edsger", 50_000, 80_000, 30_000)),
        (SagaId(2), trip("Ada", 40_000, 70_000, 20_000)),
        (SagaId(3), trip("Grace", 35_000, 80_000, 25_000)),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("trip-booking-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // One room: Edsger's trip is over the card limit, so his room is released and
    // Ada gets it; then the hotel is full for Grace.
    let agency: Shared = Arc::new(Mutex::new(Agency::new(10, 1, 10, 150_000)));
    let trips = trips();
    let runner = runner(FileLog::open(&path)?, &agency, Duration::from_millis(5))?;
    for (saga, trip) in &trips {
        runner.start(*saga, trip.clone())?;
        // One after the other.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.wait_at_rest().await?;
    for (saga, _) in &trips {
        if let Some(history) = runner.history(*saga)? {
            println!("{history}");
        }
    }
    let agency = agency.lock().map_err(|e| e.to_string())?;
    let problems = problems(&runner.sagas(), &agency);
    println!("log: {}", path.display());
    if problems.is_empty() {
        println!("every trip is at rest, booked whole or undone whole");
        Ok(())
    } else {
        Err(problems.join("; ").into())
    }
}
