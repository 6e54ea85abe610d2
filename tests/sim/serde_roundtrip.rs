//! Round trips through serde_json of the public data types a service sends, stores or
//! logs (every pattern's core and adapter), the JSON spelling of a few of them, and the
//! validated types refusing bad values through their constructors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use faultline::breaker::bulkhead::BulkheadFull;
use faultline::breaker::contract::{
    Answer, ApiError, ApiReply, GuardMetrics, Policy, Transition, TripRule, Why,
};
use faultline::breaker::fallback::FallbackPolicy;
use faultline::breaker::timeout::TimeoutPolicy;
use faultline::breaker::{
    BreakerEvent, CallOutcome, Metrics, Rejected, SlidingWindow, State, Totals, TransitionReason,
    WaitInOpen,
};
use faultline::bus::contract::{BusPolicy, Handed};
use faultline::bus::tokio::{Event, ShutdownReport, SubscriptionStats};
use faultline::bus::{BusFull, BusTotals, Published, SubscriberId, TopicId};
use faultline::clock::Instant;
use faultline::cqrs::{
    Appended, Executed, ExpectedVersion, Item, ItemCommand, ItemEvent, Recorded, Rehydrated,
    Snapshot, Step, StockView, StoredEvent, StreamId,
};
use faultline::queue::profile::{ProfileId, TargetId};
use faultline::queue::tokio::PoolReport;
use faultline::queue::{
    Applied, BackoffPolicy, Enqueued, Fenced, Job, JobId, JobType, Lease, LeaseToken, Nacked,
    Payload, QueueCounts, QueuePolicy,
};
use faultline::retry::{Backoff, RetryPolicy};
use faultline::saga::choreographed::core::{CheckoutEvent, Service};
use faultline::saga::twopc::core::{
    CoordinatorOutput, CoordinatorTotals, Decision, Effect, Local, Request, Response, StockRow,
    ToCoordinator, ToParticipant, TxRecord, TxState, Vote,
};
use faultline::saga::{
    ActionOutcome, AlertReason, Charge, ChargeState, Command, IdempotencyKey, Kind, Order,
    OrderStatus, Refusal, Reply, Reservation, ReservationState, SagaHistory, SagaId, SagaPolicy,
    SagaState, SagaTotals, StepHistory, StepId, StepProgress,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Serializes `value`, reads it back, and checks it is equal; returns the JSON.
fn round_trip<T>(value: &T) -> String
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{json} does not read back as {value:?}: {e}"));
    assert_eq!(&back, value, "{json}");
    json
}

/// Every value of `values` round-trips, and no two share a JSON form (so a derive that
/// dropped a field or a variant would show).
fn all_round_trip<T>(values: &[T])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let jsons: BTreeSet<String> = values.iter().map(round_trip).collect();
    assert_eq!(
        jsons.len(),
        values.len(),
        "two values share a JSON form: {jsons:?}"
    );
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn clock_instant_is_its_nanoseconds() {
    let at = Instant::from_millis(1_500);
    assert_eq!(round_trip(&at), "1500000000");
    all_round_trip(&[Instant::from_nanos(0), at, Instant::from_nanos(u64::MAX)]);
}

#[test]
fn breaker_types_round_trip() {
    all_round_trip(&[
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::Disabled,
        State::ForcedOpen,
        State::MetricsOnly,
    ]);
    assert_eq!(round_trip(&State::HalfOpen), "\"half_open\"");
    all_round_trip(&[
        CallOutcome::Success,
        CallOutcome::Failure,
        CallOutcome::Ignored,
    ]);
    all_round_trip(&[
        SlidingWindow::Count { size: 10 },
        SlidingWindow::Time { size_secs: 10 },
    ]);
    all_round_trip(&[
        WaitInOpen::Fixed(MS * 30),
        WaitInOpen::Exponential {
            initial: MS * 30,
            multiplier: 2.into(),
            max: MS * 600,
            jitter_percent: 20,
        },
        WaitInOpen::Randomized {
            initial: MS * 30,
            multiplier: faultline::breaker::circuit::Ratio::new(3, 2),
            max: MS * 600,
            randomization_percent: 50,
        },
    ]);
    round_trip(&Rejected {
        retry_after: MS * 7,
        state: State::Open,
    });
    let reasons = [
        TransitionReason::FailureRate {
            failed: 5,
            calls: 10,
        },
        TransitionReason::SlowCallRate { slow: 6, calls: 10 },
        TransitionReason::WaitElapsed,
        TransitionReason::ProbesSucceeded,
        TransitionReason::HalfOpenExpired,
        TransitionReason::Manual,
    ];
    all_round_trip(&reasons);
    let event = BreakerEvent::Transition {
        from: State::Closed,
        to: State::Open,
        at: Instant::from_millis(42),
        reason: reasons[0],
        generation: 3,
    };
    // Field names stay the Rust ones; variants are snake_case.
    assert_eq!(
        round_trip(&event),
        r#"{"transition":{"from":"closed","to":"open","at":42000000,"reason":{"failure_rate":{"failed":5,"calls":10}},"generation":3}}"#
    );
    let totals = Totals {
        admitted: 1,
        rejected: 2,
        succeeded: 3,
        failed: 4,
        ignored: 5,
        released: 6,
        slow: 7,
        stale: 8,
        events_dropped: 9,
    };
    round_trip(&totals);
    all_round_trip(&[
        Metrics {
            state: State::HalfOpen,
            generation: 2,
            window_calls: 10,
            window_failed: 4,
            window_slow: 1,
            failure_rate_permille: Some(400),
            slow_call_rate_permille: None,
            half_open_admitted: 1,
            half_open_permits_left: 1,
            in_flight: 2,
            totals,
        },
        Metrics {
            state: State::Closed,
            generation: 0,
            window_calls: 0,
            window_failed: 0,
            window_slow: 0,
            failure_rate_permille: None,
            slow_call_rate_permille: Some(0),
            half_open_admitted: 0,
            half_open_permits_left: 0,
            in_flight: 0,
            totals: Totals::default(),
        },
    ]);
    round_trip(&BulkheadFull { max_concurrent: 8 });
    all_round_trip(&[
        FallbackPolicy::None,
        FallbackPolicy::Default("queued".to_string()),
        FallbackPolicy::LastGood { max_age: Some(MS) },
        FallbackPolicy::LastGood { max_age: None },
    ]);
}

#[test]
fn breaker_contract_types_round_trip() {
    all_round_trip(&[
        ApiReply::Ok,
        ApiReply::Err(ApiError::Unavailable),
        ApiReply::Err(ApiError::Internal),
        ApiReply::Err(ApiError::InvalidNumber),
    ]);
    let whys = [
        Why::Rejected { retry_after: MS },
        Why::BulkheadFull,
        Why::Api(ApiError::Internal),
        Why::Timeout,
        Why::BudgetExhausted,
        Why::DeadlineReached,
    ];
    all_round_trip(&whys);
    all_round_trip(&[
        Answer::Delivered,
        Answer::Fallback(whys[1]),
        Answer::Failed(whys[0]),
    ]);
    round_trip(&Transition {
        from: State::Open,
        to: State::HalfOpen,
        at: Instant::from_millis(9),
    });
    round_trip(&GuardMetrics {
        admitted: 5,
        succeeded: 1,
        failed: 2,
        ignored: 1,
        released: 1,
    });
    let rate = TripRule::Rate {
        window: SlidingWindow::Count { size: 20 },
        minimum_calls: 10,
        failure_rate_threshold_permille: 500,
        slow_call_rate_threshold_permille: 1000,
        slow_call_duration: MS * 200,
    };
    all_round_trip(&[rate, TripRule::ConsecutiveFailures { failures: 3 }]);
    round_trip(&Policy {
        trip: rate,
        half_open_calls_permitted: 3,
        wait_in_open_min: MS * 30,
        wait_in_open_max: MS * 600,
        answer_within: MS * 500,
        in_progress_max: u32::MAX,
    });
}

#[test]
fn validated_retry_and_timeout_types_round_trip() {
    let backoff = Backoff::new(MS * 50, MS * 800).unwrap();
    assert_eq!(
        round_trip(&backoff),
        r#"{"base":{"secs":0,"nanos":50000000},"cap":{"secs":0,"nanos":800000000}}"#
    );
    all_round_trip(&[backoff, Backoff::default()]);
    all_round_trip(&[
        RetryPolicy::new(3, backoff).unwrap(),
        RetryPolicy::new(1, Backoff::default()).unwrap(),
    ]);
    all_round_trip(&[
        TimeoutPolicy::new(MS * 250).unwrap(),
        TimeoutPolicy::new(Duration::from_nanos(1)).unwrap(),
    ]);
}

/// The message of a refused read, which must name the field and why.
fn refused<T: DeserializeOwned + Debug>(json: &str) -> String {
    match serde_json::from_str::<T>(json) {
        Ok(value) => panic!("{json} was accepted as {value:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn validated_types_refuse_bad_values_through_their_constructors() {
    let zero = r#"{"secs":0,"nanos":0}"#;
    let ms = r#"{"secs":0,"nanos":1000000}"#;
    let s1 = r#"{"secs":1,"nanos":0}"#;

    let msg = refused::<Backoff>(&format!(r#"{{"base":{zero},"cap":{s1}}}"#));
    assert!(msg.contains("`base` must be greater than zero"), "{msg}");
    let msg = refused::<Backoff>(&format!(r#"{{"base":{s1},"cap":{ms}}}"#));
    assert!(msg.contains("`cap`"), "{msg}");

    let good = format!(r#"{{"base":{ms},"cap":{s1}}}"#);
    let msg = refused::<RetryPolicy>(&format!(r#"{{"attempts_max":0,"backoff":{good}}}"#));
    assert!(
        msg.contains("`attempts_max` must be between 1 and 1000, got 0"),
        "{msg}"
    );
    let msg = refused::<RetryPolicy>(&format!(r#"{{"attempts_max":1001,"backoff":{good}}}"#));
    assert!(msg.contains("got 1001"), "{msg}");
    // A bad backoff inside a policy is refused too.
    let msg = refused::<RetryPolicy>(&format!(
        r#"{{"attempts_max":3,"backoff":{{"base":{zero},"cap":{s1}}}}}"#
    ));
    assert!(msg.contains("`base`"), "{msg}");

    let msg = refused::<TimeoutPolicy>(&format!(r#"{{"duration":{zero}}}"#));
    assert!(
        msg.contains("`duration` must be greater than zero"),
        "{msg}"
    );

    // The private fields are not a way around the constructor, nor are unknown ones.
    let msg = refused::<Backoff>(r#"{"base_nanos":0,"cap_nanos":0}"#);
    assert!(msg.contains("unknown field `base_nanos`"), "{msg}");
    let msg = refused::<TimeoutPolicy>(&format!(r#"{{"duration":{ms},"extra":1}}"#));
    assert!(msg.contains("unknown field `extra`"), "{msg}");

    // The same JSON with good values is accepted.
    assert_eq!(
        serde_json::from_str::<RetryPolicy>(&format!(r#"{{"attempts_max":3,"backoff":{good}}}"#))
            .unwrap(),
        RetryPolicy::new(3, Backoff::new(MS, Duration::from_secs(1)).unwrap()).unwrap()
    );
}

#[test]
fn bus_types_round_trip() {
    all_round_trip(&[SubscriberId(0), SubscriberId(7)]);
    all_round_trip(&[TopicId(0), TopicId(3)]);
    round_trip(&BusFull {
        topic: "orders".to_string(),
        capacity: 64,
    });
    let dead = faultline::bus::DeadLetter {
        topic: Arc::from("orders"),
        seq: 12,
        payload: "order 7 placed".to_string(),
        attempts: 3,
        at: Instant::from_millis(900),
    };
    assert_eq!(
        round_trip(&dead),
        r#"{"topic":"orders","seq":12,"payload":"order 7 placed","attempts":3,"at":900000000}"#
    );
    all_round_trip(&[
        Published::Retained {
            seq: 4,
            subscribers: 2,
        },
        Published::DeadEvent,
    ]);
    let totals = BusTotals {
        published: 1,
        dead_events: 2,
        full: 3,
        handed_out: 4,
        acked: 5,
        retries: 6,
        dead_lettered: 7,
        redriven: 8,
        redelivered: 9,
    };
    round_trip(&totals);
    round_trip(&BusPolicy {
        capacity: 128,
        attempts_max: 5,
        retry_wait_max: MS * 100,
    });
    round_trip(&Handed {
        token: 17u64,
        topic: Arc::from("t"),
        seq: 1,
        payload: 2,
        attempt: 1,
        redelivery: true,
        redriven: false,
    });
    round_trip(&Event {
        topic: Arc::from("signups"),
        seq: 0,
        payload: vec![1u8, 2, 3],
        attempt: 2,
        redelivery: false,
        redriven: true,
    });
    round_trip(&SubscriptionStats {
        handled: 10,
        failed: 2,
        panicked: 1,
    });
    round_trip(&ShutdownReport {
        subscribers: 2,
        owed: 0,
        dead_letters: 1,
        totals,
    });
}

#[test]
fn queue_types_round_trip() {
    let task = faultline::queue::profile::job(ProfileId(42), TargetId(2), 7);
    let key = task.key;
    round_trip(&key);
    round_trip(&task);
    round_trip(&ProfileId(42));
    round_trip(&TargetId(2));
    let email = Job::unique(
        JobType::from_static("send_email"),
        JobId(3),
        Payload::encode(&("ada@example.com", "Ada")).unwrap(),
    )
    .run_at(Instant::from_millis(9));
    assert_eq!(
        round_trip(&email),
        r#"{"key":{"job_type":"send_email","slot":{"id":3}},"version":1,"payload":"[\"ada@example.com\",\"Ada\"]","run_at":9000000}"#
    );
    let token = LeaseToken::new(key, 9);
    round_trip(&token);
    let lease = Lease {
        job: task.clone(),
        token,
        attempt: 2,
        deadline: Instant::from_millis(5_000),
        redriven: false,
    };
    assert_eq!(
        round_trip(&lease),
        r#"{"job":{"key":{"job_type":"sync_profile","slot":{"key":"p42@t2"}},"version":7,"payload":"null","run_at":null},"token":{"key":{"job_type":"sync_profile","slot":{"key":"p42@t2"}},"fence":9},"attempt":2,"deadline":5000000000,"redriven":false}"#
    );
    round_trip(&Fenced::new(key, 3));
    all_round_trip(&[
        Enqueued::New,
        Enqueued::Coalesced,
        Enqueued::Queued,
        Enqueued::Duplicate,
    ]);
    all_round_trip(&[
        Nacked::Retry {
            at: Instant::from_millis(1),
        },
        Nacked::Superseded,
        Nacked::DeadLettered,
    ]);
    all_round_trip(&[
        faultline::queue::DeadLetter {
            job: task.clone(),
            attempts: 5,
            at: Instant::from_millis(60_000),
            last_error: "503 from billing".into(),
            redriven_at: None,
            history: Vec::new(),
            redrives: 0,
        },
        faultline::queue::DeadLetter {
            job: task,
            attempts: 5,
            at: Instant::from_millis(60_000),
            last_error: faultline::queue::LEASE_EXPIRED.into(),
            redriven_at: Some(Instant::from_millis(61_000)),
            history: vec![faultline::queue::Attempt {
                attempt: 5,
                at: Instant::from_millis(60_000),
                error: faultline::queue::LEASE_EXPIRED.into(),
            }],
            redrives: 2,
        },
    ]);
    round_trip(&QueueCounts {
        enqueued: 1,
        done: 2,
        superseded: 3,
        pending: 4,
        leased: 5,
        retrying: 6,
        dead: 7,
        expired: 8,
        retries: 9,
        redriven: 10,
        discarded: 11,
        dead_letters_dropped: 12,
    });
    all_round_trip(&[Applied::Applied, Applied::Stale, Applied::Fenced]);
    let backoffs = [
        BackoffPolicy::FullJitterExponential {
            base: MS * 10,
            cap: MS * 1_000,
        },
        BackoffPolicy::AdditiveJitter {
            base: MS * 10,
            jitter: MS * 5,
            cap: MS * 200,
        },
        BackoffPolicy::Fixed { delay: MS * 20 },
    ];
    all_round_trip(&backoffs);
    round_trip(&QueuePolicy {
        visibility_timeout: MS * 500,
        attempts_max: 4,
        backoff: backoffs[1],
        leases_per_target_max: Some(2),
    });
    round_trip(&PoolReport {
        delivered: 1,
        failed: 2,
        abandoned: 3,
        heartbeats: 4,
        panicked: 5,
    });
}

#[test]
fn saga_types_round_trip() {
    let order = Order {
        item: 3,
        qty: 2,
        amount: 1_999,
    };
    let command = Command {
        saga: SagaId(11),
        step: StepId::INVENTORY,
        kind: Kind::Compensation,
        payload: order,
    };
    assert_eq!(
        round_trip(&command),
        r#"{"saga":11,"step":"inventory","kind":"compensation","payload":{"item":3,"qty":2,"amount":1999}}"#
    );
    all_round_trip(&[StepId::ORDER, StepId::INVENTORY, StepId::PAYMENT]);
    all_round_trip(&[Kind::Action, Kind::Compensation]);
    round_trip(&IdempotencyKey {
        saga: SagaId(1),
        step: StepId::PAYMENT,
        kind: Kind::Action,
    });
    let refusals = [
        Refusal::OutOfStock,
        Refusal::CardDeclined,
        Refusal::Compensated,
        Refusal::Misrouted,
    ];
    all_round_trip(&refusals);
    let replies: Vec<Reply> = [Reply::Ok, Reply::Failed]
        .into_iter()
        .chain(refusals.iter().map(|&r| Reply::Refused(r)))
        .collect();
    all_round_trip(&replies);
    assert_eq!(round_trip(&Reply::<Refusal>::Failed), r#""failed""#);
    all_round_trip(&[
        ActionOutcome::Ok,
        ActionOutcome::Refused(Some(Refusal::OutOfStock)),
        ActionOutcome::Refused(None),
        ActionOutcome::Failed,
        ActionOutcome::Unknown,
    ]);
    let history = SagaHistory {
        saga: SagaId(3),
        payload: Order {
            item: 1,
            qty: 2,
            amount: 300,
        },
        state: SagaState::Compensated,
        steps: vec![
            StepHistory {
                step: StepId::ORDER,
                attempts: 1,
                outcome: ActionOutcome::Ok,
                compensation_attempts: 2,
                compensated: true,
            },
            StepHistory {
                step: StepId::INVENTORY,
                attempts: 1,
                outcome: ActionOutcome::Refused(Some(Refusal::OutOfStock)),
                compensation_attempts: 0,
                compensated: false,
            },
        ],
    };
    assert_eq!(
        round_trip(&history),
        r#"{"saga":3,"payload":{"item":1,"qty":2,"amount":300},"state":"compensated","steps":[{"step":"order","attempts":1,"outcome":"ok","compensation_attempts":2,"compensated":true},{"step":"inventory","attempts":1,"outcome":{"refused":"out_of_stock"},"compensation_attempts":0,"compensated":false}]}"#
    );
    assert_eq!(
        round_trip(&Reply::Refused(Refusal::CardDeclined)),
        r#"{"refused":"card_declined"}"#
    );
    all_round_trip(&[
        SagaState::Running,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Compensated,
        SagaState::Failed,
    ]);
    all_round_trip(&[
        OrderStatus::Placed,
        OrderStatus::Cancelled,
        OrderStatus::Voided,
    ]);
    all_round_trip(&[
        Reservation {
            item: 1,
            qty: 2,
            state: ReservationState::Reserved,
        },
        Reservation {
            item: 1,
            qty: 2,
            state: ReservationState::Released,
        },
        Reservation {
            item: 1,
            qty: 2,
            state: ReservationState::Voided,
        },
    ]);
    all_round_trip(&[
        Charge {
            amount: 5,
            state: ChargeState::Captured,
        },
        Charge {
            amount: 5,
            state: ChargeState::Refunded,
        },
        Charge {
            amount: 5,
            state: ChargeState::Voided,
        },
    ]);
    round_trip(&SagaPolicy {
        step_timeout: MS * 200,
        attempts_max: 3,
        compensation_attempts_max: 5,
        retry_delay_max: MS * 50,
    });
    round_trip(&AlertReason::CompensationExhausted {
        step: StepId::PAYMENT,
        attempts: 5,
    });
    all_round_trip(&[
        StepProgress {
            attempts: 2,
            outcome: Some(true),
            compensation_attempts: 1,
            compensated: true,
        },
        StepProgress {
            attempts: 2,
            outcome: Some(false),
            compensation_attempts: 0,
            compensated: false,
        },
        StepProgress::default(),
    ]);
    round_trip(&SagaTotals {
        started: 1,
        recovered: 2,
        completed: 3,
        compensated: 4,
        failed: 5,
        sends: 6,
        action_retries: 7,
        compensations: 8,
        compensation_retries: 9,
        timeouts: 10,
        stale_replies: 11,
        resumed: 12,
        failed_replies: 13,
    });
}

#[test]
fn choreography_and_twopc_types_round_trip() {
    let order = Order {
        item: 1,
        qty: 1,
        amount: 100,
    };
    let saga = SagaId(5);
    all_round_trip(&[
        CheckoutEvent::CheckoutRequested { saga, order },
        CheckoutEvent::OrderCreated { saga, order },
        CheckoutEvent::StockReserved { saga, order },
        CheckoutEvent::StockRefused { saga, order },
        CheckoutEvent::PaymentCaptured { saga, order },
        CheckoutEvent::PaymentDeclined { saga, order },
        CheckoutEvent::StockReleased { saga, order },
        CheckoutEvent::OrderConfirmed { saga },
        CheckoutEvent::OrderCancelled { saga },
    ]);
    all_round_trip(&[Service::Orders, Service::Inventory, Service::Payment]);

    all_round_trip(&[Decision::Commit, Decision::Abort]);
    all_round_trip(&[Vote::Yes, Vote::No, Vote::Locked]);
    let requests = [Request::Prepare(order), Request::Decide(Decision::Abort)];
    all_round_trip(&requests);
    let to_participant = ToParticipant {
        tx: saga,
        step: StepId::PAYMENT,
        request: requests[0],
    };
    round_trip(&to_participant);
    all_round_trip(&[
        Response::Vote(Vote::Locked),
        Response::Ack(Decision::Commit),
    ]);
    round_trip(&ToCoordinator {
        tx: saga,
        step: StepId::INVENTORY,
        reply: Response::Vote(Vote::Yes),
    });
    let records = [
        TxRecord::Decision {
            tx: saga,
            decision: Decision::Commit,
            order,
        },
        TxRecord::Ended { tx: saga },
    ];
    all_round_trip(&records);
    all_round_trip(&[
        CoordinatorOutput::Append(records[0]),
        CoordinatorOutput::Send(to_participant),
    ]);
    all_round_trip(&[
        TxState::Voting,
        TxState::Decided(Decision::Abort),
        TxState::Ended(Decision::Commit),
    ]);
    round_trip(&CoordinatorTotals {
        started: 1,
        committed: 2,
        aborted: 3,
        vote_timeouts: 4,
        presumed_aborts: 5,
        decisions_resent: 6,
    });
    all_round_trip(&[
        Local::InDoubt {
            since: Instant::from_millis(3),
        },
        Local::Committed,
        Local::Aborted,
    ]);
    all_round_trip(&[
        StockRow {
            initial: 10,
            available: 7,
            held: 2,
            sold: 1,
            locked_by: Some(saga),
        },
        StockRow::default(),
    ]);
    all_round_trip(&[Effect::Prepared, Effect::Committed, Effect::Aborted]);
}

#[test]
fn cqrs_types_round_trip() {
    all_round_trip(&[StreamId(0), StreamId(9)]);
    all_round_trip(&[
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(4),
    ]);
    let appended = Appended {
        from_version: 2,
        to_version: 4,
        first_position: 10,
        last_position: 11,
    };
    round_trip(&appended);
    let events = [
        ItemEvent::Restocked { units: 5 },
        ItemEvent::Withdrawn { units: 3 },
        ItemEvent::LowStock { left: 2 },
        ItemEvent::Replenished,
    ];
    all_round_trip(&events);
    all_round_trip(&[
        ItemCommand::Restock { units: 5 },
        ItemCommand::Withdraw { units: 1 },
    ]);
    all_round_trip(&[
        StoredEvent::RestockedV1 { dozens: 2 },
        StoredEvent::Current(events[1]),
    ]);
    assert_eq!(
        round_trip(&StoredEvent::RestockedV1 { dozens: 2 }),
        r#"{"restocked_v1":{"dozens":2}}"#
    );
    assert_eq!(
        round_trip(&Recorded {
            stream: StreamId(3),
            version: 1,
            position: 7,
            event: events[0],
        }),
        r#"{"stream":3,"version":1,"position":7,"event":{"restocked":{"units":5}}}"#
    );
    let item = Item {
        stock: 4,
        low: true,
    };
    round_trip(&item);
    round_trip(&Snapshot {
        version: 6,
        state: item,
    });
    all_round_trip(&[
        Rehydrated {
            state: item,
            version: 8,
            snapshot_version: Some(6),
            folded: 2,
            upcast: 1,
        },
        Rehydrated {
            state: Item::default(),
            version: 0,
            snapshot_version: None,
            folded: 0,
            upcast: 0,
        },
    ]);
    round_trip(&Executed {
        appended,
        events: events.to_vec(),
        snapshot: Some(4),
    });
    all_round_trip(&[
        Step::Applied {
            position: 3,
            replay: true,
        },
        Step::Checkpointed { position: 3 },
        Step::Swapped { position: 4 },
        Step::Idle,
    ]);
    // A read model keyed by stream: JSON object keys are the stream numbers.
    let view = StockView {
        position: 12,
        stock: BTreeMap::from([(StreamId(1), 4), (StreamId(2), 0)]),
        low: BTreeSet::from([StreamId(2)]),
        events: 12,
    };
    assert_eq!(
        round_trip(&view),
        r#"{"position":12,"stock":{"1":4,"2":0},"low":[2],"events":12}"#
    );
}
