//! Serde of the builder-made configurations: each reads back through its builder (a bad
//! value is refused with the builder's `ConfigError`, naming the field), refuses unknown
//! keys and `null`, takes the builder's default for a key left out, and writes every
//! knob from the getters so that write → read gives back an equal configuration.

use std::fmt::Debug;
use std::time::Duration;

use faultline::breaker::circuit::{Ratio, State};
use faultline::breaker::{BreakerConfig, SlidingWindow, WaitInOpen};
use faultline::bus::BusConfig;
use faultline::config::ConfigError;
use faultline::queue::QueueConfig;
use faultline::queue::tokio::PoolConfig;
use faultline::saga::twopc::core::TwoPcConfig;
use faultline::saga::{SagaConfig, StepId};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const MS: Duration = Duration::from_millis(1);

/// serde's form of a duration.
fn d(duration: Duration) -> Value {
    json!({"secs": duration.as_secs(), "nanos": duration.subsec_nanos()})
}

/// Writes `config`, reads it back, checks it is equal and writes the same again;
/// returns the JSON.
fn round_trip<T>(config: &T) -> Value
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_value(config).unwrap();
    let back: T = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{json} does not read back as {config:?}: {e}"));
    assert_eq!(&back, config, "{json}");
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    json
}

/// The message of the error reading `json` as a `T` (which must fail).
fn refused<T: DeserializeOwned + Debug>(json: Value) -> String {
    match serde_json::from_value::<T>(json.clone()) {
        Ok(config) => panic!("{json} was read as {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// Every key of `written` differs from the default's: the round trip moved each knob.
fn all_keys_differ(written: &Value, default: &Value) {
    let (Value::Object(w), Value::Object(d)) = (written, default) else {
        panic!("not objects: {written} {default}");
    };
    for (key, value) in w {
        assert_ne!(d.get(key), Some(value), "`{key}` has its default value");
    }
}

// ----- breaker -----

fn breaker_changed() -> BreakerConfig {
    BreakerConfig::builder()
        .count_window(20)
        .minimum_calls(7)
        .failure_rate_threshold_percent(40)
        .slow_call_rate_threshold_percent(80)
        .slow_call_duration(MS * 1_500)
        .wait_in_open(MS * 250)
        .half_open_calls_permitted(3)
        .half_open_wait_max(Duration::from_secs(5))
        .after_half_open_wait_max(State::Closed)
        .automatic_transition(true)
        .initial_state(State::MetricsOnly)
        .events_max(64)
        .build()
        .unwrap()
}

#[test]
fn breaker_config_round_trips_with_every_knob_changed() {
    let default = round_trip(&BreakerConfig::builder().build().unwrap());
    let changed = round_trip(&breaker_changed());
    all_keys_differ(&changed, &default);
    assert_eq!(
        changed,
        json!({
            "count_window": 20,
            "minimum_calls": 7,
            "failure_rate_threshold_permille": 400,
            "slow_call_rate_threshold_permille": 800,
            "slow_call_duration": d(MS * 1_500),
            "wait_in_open": d(MS * 250),
            "half_open_calls_permitted": 3,
            "half_open_wait_max": d(Duration::from_secs(5)),
            "after_half_open_wait_max": "closed",
            "automatic_transition": true,
            "initial_state": "metrics_only",
            "events_max": 64,
        })
    );
    // A threshold in percent reads as its permille; one in both forms is refused.
    let percent: BreakerConfig =
        serde_json::from_value(json!({"failure_rate_threshold_percent": 40})).unwrap();
    assert_eq!(percent.failure_rate_threshold_permille(), 400);
    assert!(
        refused::<BreakerConfig>(json!({
            "failure_rate_threshold_percent": 40,
            "failure_rate_threshold_permille": 400
        }))
        .contains("failure_rate_threshold_permille")
    );
    // Resilience4j's randomized wait with an exact ratio for a multiplier.
    let randomized = BreakerConfig::builder()
        .wait_in_open_randomized(MS * 500, Ratio::new(3, 2), Duration::from_secs(30), 50)
        .build()
        .unwrap();
    let json = round_trip(&randomized);
    assert_eq!(
        json["wait_in_open_randomized"],
        json!({"initial": d(MS * 500), "multiplier": "3/2", "max": d(Duration::from_secs(30)), "randomization_percent": 50})
    );
    assert!(
        refused::<BreakerConfig>(json!({"wait_in_open_exponential": {
            "initial": d(MS * 500), "multiplier": "2/3", "max": d(MS * 900), "jitter_percent": 0
        }}))
        .contains("wait_in_open_exponential.multiplier")
    );
    // The alternative window and wait policy, and "no slow calls" (the longest duration).
    let other = BreakerConfig::builder()
        .time_window(30)
        .wait_in_open_exponential(MS * 100, 3, Duration::from_secs(8), 25)
        .without_slow_calls()
        .build()
        .unwrap();
    let json = round_trip(&other);
    assert_eq!(json["time_window"], 30);
    assert_eq!(json.get("count_window"), None);
    assert_eq!(json.get("wait_in_open"), None);
    assert_eq!(
        json["wait_in_open_exponential"],
        json!({"initial": d(MS * 100), "multiplier": 3, "max": d(Duration::from_secs(8)), "jitter_percent": 25})
    );
    assert_eq!(json["slow_call_duration"], d(Duration::MAX));
    let back: BreakerConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.window(), SlidingWindow::Time { size_secs: 30 });
    assert!(matches!(
        back.wait_in_open(),
        WaitInOpen::Exponential { multiplier, .. } if multiplier == 3.into()
    ));
}

/// A count window smaller than `minimum_calls` caps it: the configuration stores the
/// capped value, so it reads back equal to itself.
#[test]
fn breaker_config_with_a_window_below_minimum_calls_round_trips() {
    let config = BreakerConfig::builder().count_window(10).build().unwrap();
    assert_eq!(config.minimum_calls(), 10);
    let json = round_trip(&config);
    assert_eq!(json["minimum_calls"], 10);
    assert_eq!(
        config,
        BreakerConfig::builder()
            .count_window(10)
            .minimum_calls(10)
            .build()
            .unwrap()
    );
}

#[test]
fn breaker_config_takes_the_builder_defaults_for_keys_left_out() {
    let empty: BreakerConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, BreakerConfig::builder().build().unwrap());
    assert_eq!(empty, BreakerConfig::default());
    let partial: BreakerConfig = serde_json::from_value(json!({
        "count_window": 20,
        "minimum_calls": 5,
        "wait_in_open": d(Duration::from_secs(2)),
    }))
    .unwrap();
    let built = BreakerConfig::builder()
        .count_window(20)
        .minimum_calls(5)
        .wait_in_open(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(partial, built);
    assert_eq!(partial.failure_rate_threshold_permille(), 500);
}

#[test]
fn breaker_config_refuses_a_bad_value_naming_the_field() {
    for (json, field) in [
        (json!({"count_window": 0}), "count_window"),
        (json!({"time_window": 86_401}), "time_window"),
        (json!({"minimum_calls": 0}), "minimum_calls"),
        (
            json!({"failure_rate_threshold_percent": 101}),
            "failure_rate_threshold_percent",
        ),
        (
            json!({"slow_call_rate_threshold_percent": 0}),
            "slow_call_rate_threshold_percent",
        ),
        (
            json!({"slow_call_duration": d(Duration::ZERO)}),
            "slow_call_duration",
        ),
        (json!({"wait_in_open": d(Duration::ZERO)}), "wait_in_open"),
        (
            json!({"wait_in_open_exponential": {"initial": d(MS * 10), "multiplier": 0, "max": d(MS * 100), "jitter_percent": 0}}),
            "wait_in_open_exponential.multiplier",
        ),
        (
            json!({"wait_in_open_exponential": {"initial": d(MS * 10), "multiplier": 2, "max": d(MS), "jitter_percent": 0}}),
            "wait_in_open_exponential.max",
        ),
        (
            json!({"half_open_calls_permitted": 10_001}),
            "half_open_calls_permitted",
        ),
        (json!({"events_max": 0}), "events_max"),
        // Two calls that set the same thing.
        (
            json!({"count_window": 10, "time_window": 10}),
            "time_window",
        ),
        (
            json!({"wait_in_open": d(MS), "wait_in_open_exponential": {"initial": d(MS), "multiplier": 2, "max": d(MS), "jitter_percent": 0}}),
            "wait_in_open_exponential",
        ),
    ] {
        let msg = refused::<BreakerConfig>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    // The builder's own message, word for word.
    let built = BreakerConfig::builder()
        .failure_rate_threshold_percent(101)
        .build()
        .unwrap_err();
    let msg = refused::<BreakerConfig>(json!({"failure_rate_threshold_percent": 101}));
    assert_eq!(msg, built.to_string());
}

#[test]
fn breaker_config_refuses_unknown_keys_null_and_wrong_types() {
    let msg = refused::<BreakerConfig>(json!({"minimum_call": 5}));
    assert!(msg.contains("unknown field `minimum_call`"), "{msg}");
    let msg = refused::<BreakerConfig>(json!({"window": {"count": {"size": 10}}}));
    assert!(msg.contains("unknown field `window`"), "{msg}");
    let msg = refused::<BreakerConfig>(json!({
        "wait_in_open_exponential": {"initial": d(MS), "multiplier": 2, "max": d(MS), "jitter": 0}
    }));
    assert!(msg.contains("unknown field `jitter`"), "{msg}");
    let msg = refused::<BreakerConfig>(json!({"minimum_calls": null}));
    assert!(msg.contains("invalid type: null"), "{msg}");
    let msg = refused::<BreakerConfig>(json!({"minimum_calls": "5"}));
    assert!(msg.contains("invalid type: string"), "{msg}");
    let msg = refused::<BreakerConfig>(json!({"minimum_calls": -1}));
    assert!(msg.contains("invalid value: integer `-1`"), "{msg}");
    let msg = refused::<BreakerConfig>(json!({"wait_in_open_exponential": {"initial": d(MS)}}));
    assert!(msg.contains("missing field `multiplier`"), "{msg}");
}

/// Any builder input, written as JSON, reads back exactly as the builder builds it:
/// the same configuration, or the same error. (A reader that bypassed the builder's
/// validation, or replayed a key on the wrong builder method, fails this.)
fn breaker_inputs() -> impl Strategy<Value = (Value, Result<BreakerConfig, ConfigError>)> {
    (
        (
            prop::option::of(0u32..=120),
            any::<bool>(),
            prop::option::of(0u32..=150),
            prop::option::of(0u32..=110),
            prop::option::of(0u32..=110),
            prop::option::of(0u64..=3_000),
        ),
        (
            prop::option::of((0u64..=2_000, 0u32..=3, 0u64..=3_000, 0u32..=105, any::<bool>())),
            prop::option::of(0u32..=12_000),
            prop::option::of(0u64..=3_000),
            prop::option::of(any::<bool>()),
            prop::option::of(0usize..=3),
        ),
    )
        .prop_map(
            |(
                (window, time, minimum, failure, slow, slow_ms),
                (wait, half_open, half_open_wait_ms, automatic, events),
            )| {
                let mut json = serde_json::Map::new();
                let mut b = BreakerConfig::builder();
                if let Some(size) = window {
                    if time {
                        json.insert("time_window".into(), json!(size));
                        b = b.time_window(size);
                    } else {
                        json.insert("count_window".into(), json!(size));
                        b = b.count_window(size);
                    }
                }
                if let Some(n) = minimum {
                    json.insert("minimum_calls".into(), json!(n));
                    b = b.minimum_calls(n);
                }
                if let Some(p) = failure {
                    json.insert("failure_rate_threshold_percent".into(), json!(p));
                    b = b.failure_rate_threshold_percent(p);
                }
                if let Some(p) = slow {
                    json.insert("slow_call_rate_threshold_percent".into(), json!(p));
                    b = b.slow_call_rate_threshold_percent(p);
                }
                if let Some(ms) = slow_ms {
                    json.insert("slow_call_duration".into(), d(MS * ms as u32));
                    b = b.slow_call_duration(MS * ms as u32);
                }
                if let Some((initial, multiplier, max, jitter, exponential)) = wait {
                    let (initial, max) = (MS * initial as u32, MS * max as u32);
                    if exponential {
                        json.insert(
                            "wait_in_open_exponential".into(),
                            json!({"initial": d(initial), "multiplier": multiplier, "max": d(max), "jitter_percent": jitter}),
                        );
                        b = b.wait_in_open_exponential(initial, multiplier, max, jitter);
                    } else {
                        json.insert("wait_in_open".into(), d(initial));
                        b = b.wait_in_open(initial);
                    }
                }
                if let Some(n) = half_open {
                    json.insert("half_open_calls_permitted".into(), json!(n));
                    b = b.half_open_calls_permitted(n);
                }
                if let Some(ms) = half_open_wait_ms {
                    json.insert("half_open_wait_max".into(), d(MS * ms as u32));
                    b = b.half_open_wait_max(MS * ms as u32);
                }
                if let Some(on) = automatic {
                    json.insert("automatic_transition".into(), json!(on));
                    b = b.automatic_transition(on);
                }
                if let Some(n) = events {
                    json.insert("events_max".into(), json!(n));
                    b = b.events_max(n);
                }
                (Value::Object(json), b.build())
            },
        )
}

/// Reading `json` agrees with `built`: equal and round-tripping when it built, refused
/// with the builder's message when it did not.
fn agrees<T>(json: Value, built: Result<T, ConfigError>) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let read = serde_json::from_value::<T>(json.clone());
    match (read, built) {
        (Ok(read), Ok(built)) => {
            prop_assert_eq!(&read, &built, "{}", json);
            let written = serde_json::to_value(&read).unwrap();
            prop_assert_eq!(serde_json::from_value::<T>(written).unwrap(), built);
        }
        (Err(e), Err(built)) => prop_assert_eq!(e.to_string(), built.to_string(), "{}", json),
        (read, built) => prop_assert!(false, "{}: read {:?}, built {:?}", json, read, built),
    }
    Ok(())
}

proptest! {
    #[test]
    fn breaker_config_reads_as_the_builder_builds((json, built) in breaker_inputs()) {
        agrees(json, built)?;
    }

    #[test]
    fn queue_config_reads_as_the_builder_builds(
        visibility_ms in prop::option::of(0u64..=50_000_000),
        attempts in prop::option::of(0u32..=1_100),
        backoff in prop::option::of((0u64..=3_000, 0u64..=3_000)),
    ) {
        let mut json = serde_json::Map::new();
        let mut b = QueueConfig::builder();
        if let Some(ms) = visibility_ms {
            json.insert("visibility_timeout".into(), d(Duration::from_millis(ms)));
            b = b.visibility_timeout(Duration::from_millis(ms));
        }
        if let Some(n) = attempts {
            json.insert("attempts_max".into(), json!(n));
            b = b.attempts_max(n);
        }
        if let Some((base, cap)) = backoff {
            let (base, cap) = (Duration::from_millis(base), Duration::from_millis(cap));
            json.insert("backoff".into(), json!({"base": d(base), "cap": d(cap)}));
            b = b.backoff(base, cap);
        }
        agrees(Value::Object(json), b.build())?;
    }
}

// ----- bus -----

#[test]
fn bus_config_round_trips_refuses_and_defaults() {
    let default = round_trip(&BusConfig::builder().build().unwrap());
    let changed = BusConfig::builder()
        .capacity(64)
        .attempts_max(7)
        .backoff(MS * 20, MS * 900)
        .dead_letters_max(12)
        .build()
        .unwrap();
    let json = round_trip(&changed);
    all_keys_differ(&json, &default);
    assert_eq!(
        json,
        json!({"capacity": 64, "attempts_max": 7, "backoff": {"base": d(MS * 20), "cap": d(MS * 900)}, "dead_letters_max": 12})
    );
    for (json, field) in [
        (json!({"capacity": 1_000_001}), "capacity"),
        (json!({"attempts_max": 0}), "attempts_max"),
        (
            json!({"backoff": {"base": d(Duration::ZERO), "cap": d(MS)}}),
            "base",
        ),
        (json!({"backoff": {"base": d(MS * 2), "cap": d(MS)}}), "cap"),
        (json!({"dead_letters_max": 0}), "dead_letters_max"),
    ] {
        let msg = refused::<BusConfig>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    let msg = refused::<BusConfig>(json!({"attempts": 3}));
    assert!(msg.contains("unknown field `attempts`"), "{msg}");
    let msg = refused::<BusConfig>(json!({"backoff": {"base": d(MS), "cap": d(MS), "max": d(MS)}}));
    assert!(msg.contains("unknown field `max`"), "{msg}");
    let msg = refused::<BusConfig>(json!({"backoff": {"base": d(MS)}}));
    assert!(msg.contains("missing field `cap`"), "{msg}");
    let partial: BusConfig = serde_json::from_value(json!({"attempts_max": 2})).unwrap();
    assert_eq!(
        partial,
        BusConfig::builder().attempts_max(2).build().unwrap()
    );
    let empty: BusConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, BusConfig::builder().build().unwrap());
}

// ----- queue -----

fn queue_changed() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(90))
        .attempts_max(4)
        .backoff(MS * 5, MS * 500)
        .leases_per_target_max(2)
        .dead_letters_max(1_000)
        .redrive_after(Duration::from_secs(60), 3)
        .build()
        .unwrap()
}

#[test]
fn queue_config_round_trips_refuses_and_defaults() {
    let default = round_trip(&QueueConfig::builder().build().unwrap());
    // A default configuration writes only the three keys it always had.
    let Value::Object(keys) = &default else {
        panic!("{default}")
    };
    let mut written: Vec<&String> = keys.keys().collect();
    written.sort();
    assert_eq!(written, ["attempts_max", "backoff", "visibility_timeout"]);
    let changed = queue_changed();
    let json = round_trip(&changed);
    all_keys_differ(&json, &default);
    assert_eq!(
        json["redrive_after"],
        json!({"after": d(Duration::from_secs(60)), "redrives_max": 3})
    );
    for (json, field) in [
        (
            json!({"visibility_timeout": d(Duration::ZERO)}),
            "visibility_timeout",
        ),
        (
            json!({"visibility_timeout": d(Duration::from_secs(12 * 3_600 + 1))}),
            "visibility_timeout",
        ),
        (json!({"attempts_max": 1_001}), "attempts_max"),
        (json!({"backoff": {"base": d(MS * 2), "cap": d(MS)}}), "cap"),
        (json!({"leases_per_target_max": 0}), "leases_per_target_max"),
        (json!({"dead_letters_max": 0}), "dead_letters_max"),
        (
            json!({"redrive_after": {"after": d(Duration::ZERO), "redrives_max": 1}}),
            "redrive_after",
        ),
        (
            json!({"redrive_after": {"after": d(MS), "redrives_max": 0}}),
            "redrive_after",
        ),
    ] {
        let msg = refused::<QueueConfig>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    let msg = refused::<QueueConfig>(json!({"visibility": d(MS)}));
    assert!(msg.contains("unknown field `visibility`"), "{msg}");
    let msg = refused::<QueueConfig>(json!({"attempts_max": null}));
    assert!(msg.contains("invalid type: null"), "{msg}");
    let partial: QueueConfig =
        serde_json::from_value(json!({"visibility_timeout": d(Duration::from_secs(5))})).unwrap();
    assert_eq!(
        partial,
        QueueConfig::builder()
            .visibility_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    );
    assert_eq!(partial.attempts_max(), 25);
    let empty: QueueConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, QueueConfig::default());
}

#[test]
fn pool_config_round_trips_refuses_and_defaults() {
    let default = round_trip(&PoolConfig::builder().build().unwrap());
    let changed = PoolConfig::builder()
        .workers(9)
        .poll_interval(MS * 40)
        .build()
        .unwrap();
    let json = round_trip(&changed);
    all_keys_differ(&json, &default);
    assert_eq!(json, json!({"workers": 9, "poll_interval": d(MS * 40)}));
    for (json, field) in [
        (json!({"workers": 0}), "workers"),
        (json!({"workers": 1_025}), "workers"),
        (
            json!({"poll_interval": d(Duration::from_secs(3_601))}),
            "poll_interval",
        ),
    ] {
        let msg = refused::<PoolConfig>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    let msg = refused::<PoolConfig>(json!({"worker": 2}));
    assert!(msg.contains("unknown field `worker`"), "{msg}");
    let partial: PoolConfig = serde_json::from_value(json!({"workers": 2})).unwrap();
    assert_eq!(partial, PoolConfig::builder().workers(2).build().unwrap());
    assert_eq!(partial.poll_interval(), Duration::from_secs(1));
}

// ----- sagas -----

#[test]
fn saga_config_round_trips_refuses_and_defaults() {
    let default = round_trip(&SagaConfig::builder().build().unwrap());
    let changed = SagaConfig::builder()
        .step_timeout(MS * 300)
        .attempts_max(5)
        .compensation_attempts_max(20)
        .backoff(MS * 10, MS * 700)
        .steps(&[StepId::INVENTORY, StepId::PAYMENT])
        .seed(42)
        .deadline_from_sent(true)
        .build()
        .unwrap();
    let json = round_trip(&changed);
    all_keys_differ(&json, &default);
    assert_eq!(json["steps"], json!(["inventory", "payment"]));
    for (json, field) in [
        (json!({"step_timeout": d(Duration::ZERO)}), "step_timeout"),
        (json!({"attempts_max": 0}), "attempts_max"),
        (
            json!({"compensation_attempts_max": 1_001}),
            "compensation_attempts_max",
        ),
        (
            json!({"backoff": {"base": d(Duration::ZERO), "cap": d(MS)}}),
            "base",
        ),
        (json!({"steps": []}), "steps"),
        (json!({"steps": ["order", "order"]}), "steps"),
    ] {
        let msg = refused::<SagaConfig>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    let msg = refused::<SagaConfig>(json!({"step_timeout_ms": 300}));
    assert!(msg.contains("unknown field `step_timeout_ms`"), "{msg}");
    let partial: SagaConfig = serde_json::from_value(json!({"seed": 7})).unwrap();
    assert_eq!(partial, SagaConfig::builder().seed(7).build().unwrap());
    assert_eq!(partial.steps(), SagaConfig::default().steps());
    let empty: SagaConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, SagaConfig::default());
}

#[test]
fn twopc_config_round_trips_refuses_and_defaults() {
    let default = round_trip(&TwoPcConfig::builder().build().unwrap());
    let changed = TwoPcConfig::builder()
        .vote_timeout(MS * 700)
        .resend_interval(MS * 30)
        .build()
        .unwrap();
    let json = round_trip(&changed);
    all_keys_differ(&json, &default);
    for (json, field) in [
        (json!({"vote_timeout": d(Duration::ZERO)}), "vote_timeout"),
        (
            json!({"resend_interval": d(Duration::ZERO)}),
            "resend_interval",
        ),
    ] {
        let msg = refused::<TwoPcConfig>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    let msg = refused::<TwoPcConfig>(json!({"vote_timeout": d(MS), "resend": d(MS)}));
    assert!(msg.contains("unknown field `resend`"), "{msg}");
    let partial: TwoPcConfig =
        serde_json::from_value(json!({"resend_interval": d(MS * 10)})).unwrap();
    assert_eq!(
        partial,
        TwoPcConfig::builder()
            .resend_interval(MS * 10)
            .build()
            .unwrap()
    );
    assert_eq!(partial.vote_timeout(), Duration::from_secs(1));
}

/// A configuration nested in a user's own settings file reads and fails the same way,
/// and serde_json's error says where.
#[test]
fn a_config_inside_a_settings_file() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Settings {
        breaker: BreakerConfig,
        queue: QueueConfig,
    }
    let text = r#"{
  "breaker": {"count_window": 20, "minimum_calls": 10},
  "queue": {"attempts_max": 0}
}"#;
    let err = serde_json::from_str::<Settings>(text).unwrap_err();
    // At the end of the object refused (past the breaker, which is fine).
    assert!(err.line() >= 3, "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid configuration: `attempts_max` must be between 1 and 1000, got 0"),
        "{err}"
    );
    let fixed = text.replace("\"attempts_max\": 0", "\"attempts_max\": 3");
    let settings: Settings = serde_json::from_str(&fixed).unwrap();
    assert_eq!(settings.breaker.minimum_calls(), 10);
    assert_eq!(settings.queue.attempts_max(), 3);
}

// ----- the resilient stack's parts -----

#[test]
fn retry_budget_is_its_configuration() {
    use faultline::clock::Instant;
    use faultline::retry::RetryBudget;

    let budget = RetryBudget::new(Duration::from_secs(5), 3, 25).unwrap();
    let json = round_trip(&budget);
    assert_eq!(
        json,
        json!({"ttl": d(Duration::from_secs(5)), "min_per_sec": 3, "retry_percent": 25})
    );
    assert_ne!(json, round_trip(&RetryBudget::default()));
    // The window's counts are state, not configuration: a used budget reads back new.
    let mut used = budget.clone();
    for _ in 0..10 {
        used.deposit(Instant::ZERO);
    }
    let back: RetryBudget = serde_json::from_value(serde_json::to_value(&used).unwrap()).unwrap();
    assert_eq!(back, budget);
    assert_eq!(back.first_attempts(Instant::ZERO), 0);
    for (json, field) in [
        (
            json!({"ttl": d(MS * 999), "min_per_sec": 0, "retry_percent": 20}),
            "ttl",
        ),
        (
            json!({"ttl": d(Duration::from_secs(10)), "min_per_sec": 0, "retry_percent": 1_001}),
            "retry_percent",
        ),
    ] {
        let msg = refused::<RetryBudget>(json.clone());
        assert!(
            msg.starts_with(&format!("invalid configuration: `{field}` ")),
            "{json}: {msg}"
        );
    }
    let msg = refused::<RetryBudget>(
        json!({"ttl": d(Duration::from_secs(10)), "min_per_sec": 0, "retry_percent": 20, "max": 1}),
    );
    assert!(msg.contains("unknown field `max`"), "{msg}");
}

/// Every data part of the resilient stack reads from one settings file of the user's,
/// and builds a working `Resilient`.
#[tokio::test(start_paused = true)]
async fn a_resilient_stack_from_a_settings_file() {
    use faultline::breaker::fallback::FallbackPolicy;
    use faultline::breaker::timeout::TimeoutPolicy;
    use faultline::breaker::tokio::Resilient;
    use faultline::retry::{RetryBudget, RetryPolicy};

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct SmsSettings {
        breaker: BreakerConfig,
        timeout: TimeoutPolicy,
        retry: RetryPolicy,
        budget: RetryBudget,
        bulkhead: u32,
        fallback: FallbackPolicy<String>,
    }
    let text = r#"{
        "breaker": {"count_window": 10, "minimum_calls": 10, "wait_in_open": {"secs": 5, "nanos": 0}},
        "timeout": {"duration": {"secs": 1, "nanos": 0}},
        "retry": {"attempts_max": 3, "backoff": {"base": {"secs": 0, "nanos": 10000000}, "cap": {"secs": 0, "nanos": 100000000}}},
        "budget": {"ttl": {"secs": 10, "nanos": 0}, "min_per_sec": 1, "retry_percent": 20},
        "bulkhead": 5,
        "fallback": {"default": "queued"}
    }"#;
    let settings: SmsSettings = serde_json::from_str(text).unwrap();
    let written = serde_json::to_string(&settings).unwrap();
    assert_eq!(
        serde_json::from_str::<SmsSettings>(&written).unwrap(),
        settings
    );
    let sms: Resilient<String, &str> = Resilient::builder(settings.breaker)
        .timeout(settings.timeout.duration())
        .retry(settings.retry)
        .budget(settings.budget)
        .bulkhead(settings.bulkhead)
        .fallback(settings.fallback)
        .build()
        .unwrap();
    let mut attempts = 0;
    let answer = sms
        .call(|| {
            attempts += 1;
            async { Err("down") }
        })
        .await;
    assert_eq!(answer.as_deref(), Ok("queued"));
    assert_eq!(attempts, 3, "the retry policy from the file");
    assert_eq!(sms.bulkhead().max_concurrent(), 5);
}

/// The names of the fields of `value`'s derived `Debug` (`Name { a: .., b: .. }`), at
/// the top level only.
fn debug_fields<T: Debug>(value: &T) -> Vec<String> {
    let text = format!("{value:?}");
    let mut fields = Vec::new();
    let mut depth = 0;
    let mut name = String::new();
    for c in text.chars() {
        match c {
            '{' | '(' | '[' => {
                depth += 1;
                name.clear();
            }
            '}' | ')' | ']' => depth -= 1,
            ':' if depth == 1 && !name.is_empty() => {
                fields.push(std::mem::take(&mut name));
            }
            ',' if depth == 1 => name.clear(),
            c if depth == 1 && (c.is_alphanumeric() || c == '_') => name.push(c),
            _ if depth == 1 => {}
            _ => {}
        }
    }
    fields
}

/// Every field of each configuration has a key in its serde form (a field added to a
/// configuration without a key would otherwise be silently left at its default when
/// read back, and dropped when written). The breaker's `window` and `wait_in_open` are
/// written under the key of the builder call that set them.
#[test]
fn every_config_field_has_a_key() {
    fn keys<T: Serialize + Debug>(config: &T, renames: &[(&str, &str)]) {
        let Value::Object(json) = serde_json::to_value(config).unwrap() else {
            panic!("{config:?} is not written as an object");
        };
        let mut written: Vec<String> = json.keys().cloned().collect();
        for (field, key) in renames {
            if let Some(k) = written.iter_mut().find(|k| *k == key) {
                *k = (*field).to_owned();
            }
        }
        written.sort();
        let mut fields = debug_fields(config);
        fields.sort();
        assert_eq!(
            written, fields,
            "{config:?}: the serde form (src/config/serde.rs) and the fields differ"
        );
    }
    let breaker_renames = [
        ("window", "count_window"),
        ("window", "time_window"),
        ("wait_in_open", "wait_in_open_exponential"),
    ];
    keys(&breaker_changed(), &breaker_renames);
    keys(
        &BreakerConfig::builder()
            .time_window(5)
            .wait_in_open_exponential(MS, 2, MS * 10, 0)
            .build()
            .unwrap(),
        &breaker_renames,
    );
    keys(&BusConfig::builder().build().unwrap(), &[]);
    // The knobs that are off by default are written only when set.
    keys(&queue_changed(), &[("redrive", "redrive_after")]);
    keys(&PoolConfig::builder().build().unwrap(), &[]);
    keys(&SagaConfig::default(), &[]);
    keys(&TwoPcConfig::default(), &[]);
    assert_eq!(
        debug_fields(&QueueConfig::default()),
        [
            "visibility_timeout",
            "attempts_max",
            "backoff",
            "leases_per_target_max",
            "dead_letters_max",
            "redrive"
        ]
    );
}
