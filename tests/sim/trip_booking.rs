//! The generic saga on a domain of its own: `examples/trip_booking.rs` (four steps, a
//! `Trip` payload, a `TripRefusal` reason) run by the tokio runner over a real file,
//! crashed mid-flight (the runner dropped) and recovered from the file, on paused time.

#[path = "../../examples/trip_booking.rs"]
#[allow(dead_code)]
mod booking;

use booking::{Agency, CAR, FLIGHT, HOTEL, PAYMENT, STEPS, Shared, Trip, TripRefusal};
use faultline::saga::orchestrated::tokio::{FileLog, LogStore};
use faultline::saga::{ActionOutcome, LogRecord, SagaHistory, SagaId, SagaState};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LATENCY: Duration = Duration::from_millis(10);

type TripLog = FileLog<Trip, TripRefusal>;

fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "faultline-trip-{}-{name}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn trip(n: u64, total_cents: u64) -> (SagaId, Trip) {
    (
        SagaId(n),
        Trip {
            traveller: format!("traveller {n}"),
            from: "2026-05-01".to_string(),
            to: "2026-05-04".to_string(),
            flight_cents: total_cents / 2,
            hotel_cents: total_cents / 4,
            car_cents: total_cents - total_cents / 2 - total_cents / 4,
        },
    )
}

fn agency(seats: u64, rooms: u64, cars: u64, limit: u64) -> Shared {
    Arc::new(Mutex::new(Agency::new(seats, rooms, cars, limit)))
}

/// Eight trips at once over 6 seats, 4 rooms and a card limit: some are booked, some
/// find no seat or no room, some are declined; the runner is dropped while many are in
/// flight, and a new runner over the same file finishes every one. At rest each trip
/// holds all four bookings or none, and no booking, release, charge or refund happened
/// twice.
#[tokio::test(start_paused = true)]
async fn a_crash_mid_saga_is_recovered_from_the_file() {
    let path = temp_path("crash");
    let agency = agency(6, 4, 10, 100_000);
    let trips: Vec<(SagaId, Trip)> = (1..=8)
        .map(|n| trip(n, if n % 3 == 0 { 120_000 } else { 90_000 }))
        .collect();
    let first = booking::runner(TripLog::open(&path).unwrap(), &agency, LATENCY).unwrap();
    for (saga, trip) in &trips {
        first.start(*saga, trip.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(first); // the crash: in-flight calls cancelled, memory lost
    let before = TripLog::open(&path).unwrap().load().unwrap();
    let ended = |log: &[LogRecord<Trip, TripRefusal>]| {
        log.iter()
            .filter(|r| matches!(r, LogRecord::Ended { .. }))
            .count()
    };
    assert!(ended(&before) < trips.len(), "some trips were in flight");

    let second = booking::runner(TripLog::open(&path).unwrap(), &agency, LATENCY).unwrap();
    second.wait_at_rest().await.unwrap();
    assert!(second.totals().recovered > 0);
    let sagas = second.sagas();
    assert_eq!(sagas.len(), trips.len());
    let a = agency.lock().unwrap().clone();
    assert_eq!(booking::problems(&sagas, &a), Vec::<String>::new());
    let count = |st| sagas.iter().filter(|(_, s)| *s == st).count();
    assert!(count(SagaState::Completed) >= 1, "{sagas:?}");
    assert!(count(SagaState::Compensated) >= 1, "{sagas:?}");
    // Every trip's history is whole, from the file; a refused trip names why and
    // compensated every step before the one refused.
    let log = TripLog::open(&path).unwrap().load().unwrap();
    assert_eq!(ended(&log), trips.len());
    let mut reasons = Vec::new();
    for (saga, trip) in &trips {
        let h = SagaHistory::of(*saga, &log).unwrap();
        assert_eq!(&h.payload, trip);
        if h.state == SagaState::Compensated {
            let refused = h
                .steps
                .iter()
                .position(|s| matches!(s.outcome, ActionOutcome::Refused(_)))
                .unwrap_or_else(|| panic!("{h}"));
            if let ActionOutcome::Refused(Some(r)) = h.steps[refused].outcome {
                reasons.push(r);
            }
            assert!(h.steps[..refused].iter().all(|s| s.compensated), "{h}");
            assert_eq!(h.steps[refused].step, STEPS[refused], "{h}");
        } else {
            assert_eq!(h.state, SagaState::Completed, "{h}");
            assert_eq!(h.steps.len(), 4, "{h}");
        }
    }
    assert!(reasons.contains(&TripRefusal::CardDeclined), "{reasons:?}");
    // Each service's books: a compensated trip holds nothing anywhere.
    for step in [FLIGHT, HOTEL, CAR, PAYMENT] {
        let svc = a.service(step).unwrap();
        assert!(svc.effects.values().all(|n| *n == 1), "{step}: {svc:?}");
    }
    std::fs::remove_file(&path).unwrap();
}

/// An operator reads a trip's history from the file after a crash: the trip refused at
/// the hotel shows the refusal's reason and its flight compensated; the trip in flight
/// at the crash shows what was sent and not yet answered. After recovery its history
/// is complete.
#[tokio::test(start_paused = true)]
async fn the_history_is_read_from_the_file_after_a_crash() {
    let path = temp_path("history");
    let agency = agency(10, 0, 10, 1_000_000); // no room at all
    let runner = booking::runner(TripLog::open(&path).unwrap(), &agency, LATENCY).unwrap();
    let (refused, trip1) = trip(1, 50_000);
    runner.start(refused, trip1.clone()).unwrap();
    runner.wait_at_rest().await.unwrap();
    agency
        .lock()
        .unwrap()
        .services
        .get_mut(&HOTEL)
        .unwrap()
        .stock = 1;
    let (in_flight, trip2) = trip(2, 50_000);
    runner.start(in_flight, trip2.clone()).unwrap();
    tokio::time::sleep(LATENCY * 3 / 2).await; // the flight is booked, the hotel asked
    drop(runner);

    let mut log = TripLog::open(&path).unwrap();
    let h = log.history(refused).unwrap().unwrap();
    assert_eq!(h.state, SagaState::Compensated);
    assert_eq!(h.payload, trip1);
    assert_eq!(h.steps.len(), 2, "{h}");
    assert_eq!(
        (h.steps[0].step, h.steps[0].outcome),
        (FLIGHT, ActionOutcome::Ok)
    );
    assert!(h.steps[0].compensated && h.steps[0].compensation_attempts == 1);
    assert_eq!(h.steps[1].step, HOTEL);
    assert_eq!(
        h.steps[1].outcome,
        ActionOutcome::Refused(Some(TripRefusal::HotelFull))
    );
    assert!(!h.steps[1].compensated, "a refused step took no effect");
    let text = h.to_string();
    assert!(text.contains("hotel: refused (HotelFull)"), "{text}");
    assert!(
        text.contains("flight: ok after 1 attempt; compensated"),
        "{text}"
    );

    let h = log.history(in_flight).unwrap().unwrap();
    assert_eq!(h.state, SagaState::Running, "{h}");
    assert_eq!(h.steps[0].outcome, ActionOutcome::Ok, "{h}");
    assert_eq!(h.steps[1].step, HOTEL);
    assert_eq!(h.steps[1].outcome, ActionOutcome::Unknown, "{h}");
    assert_eq!(log.history(SagaId(99)).unwrap(), None);

    let runner = booking::runner(TripLog::open(&path).unwrap(), &agency, LATENCY).unwrap();
    runner.wait_at_rest().await.unwrap();
    let h = runner.history(in_flight).unwrap().unwrap();
    assert_eq!(h.state, SagaState::Completed, "{h}");
    assert!(
        h.steps.iter().all(|s| s.outcome == ActionOutcome::Ok),
        "{h}"
    );
    assert_eq!(
        h.step(CAR).map(|s| s.attempts),
        Some(2),
        "the car failed once: {h}"
    );
    let a = agency.lock().unwrap().clone();
    assert_eq!(booking::problems(&runner.sagas(), &a), Vec::<String>::new());
    std::fs::remove_file(&path).unwrap();
}
