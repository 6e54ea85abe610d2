//! faultline's tower layer around a real HTTP client (hyper-util's pooled client, a
//! `tower::Service`) calling a real HTTP server on 127.0.0.1: two endpoints of a service
//! (send a message, read a status) call one provider through two stacks built on one
//! [`Upstream`], so they share one breaker and one bulkhead. The provider goes down, the
//! breaker opens, the provider comes back, the breaker closes; every request the server
//! answered is counted on the server's side, and checked against what the `tracing`
//! events said and what the `metrics` facade recorded.
//!
//! ```text
//! cargo run --example tower_http
//! ```
//!
//! `cargo test --example tower_http` runs the same scenario as a test.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use faultline::breaker::fallback::FallbackPolicy;
use faultline::breaker::tokio::tower::ResilienceLayer;
use faultline::breaker::tokio::{Resilient, Upstream};
use faultline::breaker::{BreakerConfig, CallError, State};
use faultline::retry::{Backoff, RetryPolicy};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Service, ServiceBuilder, ServiceExt};

/// The provider: answers 200 while up, 503 while down, and counts every request.
#[derive(Clone, Default)]
struct Provider {
    down: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
}

impl Provider {
    /// Serves on 127.0.0.1 (a free port) until the runtime ends.
    async fn serve(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let provider = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let provider = provider.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<_>| {
                        let provider = provider.clone();
                        async move {
                            provider.requests.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = if provider.down.load(Ordering::SeqCst) {
                                (StatusCode::SERVICE_UNAVAILABLE, "down")
                            } else {
                                (StatusCode::OK, "sent")
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    // A connection the client drops mid-way is not the server's error.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}

/// What a call to the provider can fail with, below the resilience layer.
#[derive(Debug)]
enum ProviderError {
    /// It answered with a server error.
    Status(StatusCode),
    /// The request did not get an answer.
    Transport(String),
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::Status(status) => write!(f, "the provider answered {status}"),
            ProviderError::Transport(e) => write!(f, "no answer: {e}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// The provider's answer, read in full.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    status: u16,
    body: Bytes,
}

/// Where the `tracing` events go: a buffer the scenario reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

/// What the scenario saw, from each side.
#[derive(Debug)]
struct Seen {
    /// Requests the server answered.
    server_requests: u64,
    /// Attempts the layer made, by the `faultline_attempts_total` counters.
    attempts_metric: u64,
    /// Calls answered with an error, by the caller and by `faultline_calls_total`.
    errors_seen: u64,
    errors_metric: u64,
    /// Calls the breaker refused during the outage (`CallError::Unavailable`).
    refused: u64,
    /// Status calls answered by the fallback, by the stack and by the metric.
    fallbacks_seen: u64,
    fallbacks_metric: u64,
    /// The breaker's transitions, by `faultline_breaker_transitions_total`.
    opened_metric: u64,
    closed_metric: u64,
    /// The captured `tracing` output.
    trace: String,
}

/// A counter read back: its name, its labels, its value.
type Counter = (String, Vec<(String, String)>, u64);

/// The sum of the counters named `name` whose labels include every one of `labels`.
fn counter(snapshot: &[Counter], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// The counters recorded so far (reading resets them).
fn counters(snapshotter: &Snapshotter) -> Vec<Counter> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((
                key.key().name().to_owned(),
                key.key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                n,
            )),
            _ => None,
        })
        .collect()
}

/// Runs the scenario: the recorder and the subscriber must be installed by the caller
/// (globally, before the stacks are built), `trace` being where the subscriber writes.
async fn scenario(
    snapshotter: &Snapshotter,
    trace: &Captured,
) -> Result<Seen, Box<dyn std::error::Error>> {
    let provider = Provider::default();
    let addr = provider.serve().await?;
    let uri: hyper::Uri = format!("http://{addr}/send").parse()?;

    // One upstream for the provider: its breaker trips at 50 % failures over the last
    // 10 calls (after 5), waits 300 ms in open, then lets 2 probes through.
    let upstream = Upstream::builder(
        BreakerConfig::builder()
            .count_window(10)
            .minimum_calls(5)
            .failure_rate_threshold_percent(50)
            .wait_in_open(Duration::from_millis(300))
            .half_open_calls_permitted(2)
            .build()?,
    )
    .name("sms-provider")
    .bulkhead(8)
    .build()?;
    let send: Resilient<Answer, ProviderError> = Resilient::builder_for(&upstream)
        .name("send")
        .timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(
            2,
            Backoff::new(Duration::from_millis(5), Duration::from_millis(20))?,
        )?)
        .build()?;
    let status: Resilient<Answer, ProviderError> = Resilient::builder_for(&upstream)
        .name("status")
        .timeout(Duration::from_secs(1))
        .fallback(FallbackPolicy::Default(Answer {
            status: 0,
            body: Bytes::from_static(b"unknown"),
        }))
        .build()?;

    // The client as a service: a request in, the provider's answer read in full out,
    // a 5xx turned into an error (so the breaker counts it).
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let http = ServiceBuilder::new()
        .and_then(|response: Response<hyper::body::Incoming>| async move {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ProviderError::Transport(e.to_string()))?
                .to_bytes();
            if status.is_server_error() {
                return Err(ProviderError::Status(status));
            }
            Ok(Answer {
                status: status.as_u16(),
                body,
            })
        })
        .map_err(|e: hyper_util::client::legacy::Error| ProviderError::Transport(e.to_string()))
        .service(client);
    let mut send_service = ServiceBuilder::new()
        .layer(ResilienceLayer::new(send.clone()))
        .service(http.clone());
    let mut status_service = ServiceBuilder::new()
        .layer(ResilienceLayer::new(status.clone()))
        .service(http);
    let request = || {
        Request::post(uri.clone())
            .body(Full::new(Bytes::from_static(b"hello")))
            .map_err(|e| e.to_string())
    };

    let mut errors_seen = 0;
    let mut refused = 0;
    // Up: every message goes through.
    for _ in 0..10 {
        let answer = send_service.ready().await?.call(request()?).await?;
        assert_eq!(answer.body, Bytes::from_static(b"sent"));
    }
    // Down: the breaker opens after a handful of failures and refuses the rest.
    provider.down.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        match send_service.ready().await?.call(request()?).await {
            Ok(answer) => return Err(format!("sent while down: {answer:?}").into()),
            Err(CallError::Unavailable { .. }) => {
                errors_seen += 1;
                refused += 1;
            }
            Err(_) => errors_seen += 1,
        }
    }
    assert_eq!(upstream.breaker().state(), State::Open);
    // The status endpoint shares the breaker: it answers from its fallback at once.
    let answer = status_service.ready().await?.call(request()?).await?;
    assert_eq!(answer.body, Bytes::from_static(b"unknown"));
    let fallbacks_seen = status.fallback_used_total();
    // Back up: once the wait in open is over, the probes close the breaker (a bounded
    // loop of real time: 40 tries 25 ms apart).
    provider.down.store(false, Ordering::SeqCst);
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        match send_service.ready().await?.call(request()?).await {
            Ok(_) if upstream.breaker().state() == State::Closed => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(_) => errors_seen += 1,
        }
    }
    if !closed {
        return Err("the breaker did not close within 1 s of the recovery".into());
    }

    let snapshot = counters(snapshotter);
    let attempts_metric = counter(
        &snapshot,
        "faultline_attempts_total",
        &[("upstream", "sms-provider")],
    );
    Ok(Seen {
        server_requests: provider.requests.load(Ordering::SeqCst),
        attempts_metric,
        errors_seen,
        errors_metric: counter(
            &snapshot,
            "faultline_calls_total",
            &[("stack", "send"), ("answer", "error")],
        ),
        refused,
        fallbacks_seen,
        fallbacks_metric: counter(
            &snapshot,
            "faultline_calls_total",
            &[("stack", "status"), ("answer", "fallback")],
        ),
        opened_metric: counter(
            &snapshot,
            "faultline_breaker_transitions_total",
            &[("breaker", "sms-provider"), ("to", "open")],
        ),
        closed_metric: counter(
            &snapshot,
            "faultline_breaker_transitions_total",
            &[
                ("breaker", "sms-provider"),
                ("from", "half_open"),
                ("to", "closed"),
            ],
        ),
        trace: trace.text(),
    })
}

/// Installs the recorder and the subscriber (once per process) and runs the scenario on
/// a fresh runtime.
fn run() -> Result<Seen, Box<dyn std::error::Error>> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    let trace = Captured::default();
    let writer = trace.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(scenario(&snapshotter, &trace))
}

/// What must hold, from the three sides (server, caller, metrics and traces).
fn check(seen: &Seen) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    expect(
        seen.attempts_metric == seen.server_requests,
        format!(
            "faultline_attempts_total says {} attempts, the server answered {} requests",
            seen.attempts_metric, seen.server_requests
        ),
    );
    expect(
        seen.errors_metric == seen.errors_seen,
        format!(
            "faultline_calls_total{{answer=error}} says {}, the caller saw {} errors",
            seen.errors_metric, seen.errors_seen
        ),
    );
    // 20 calls of up to 2 attempts while down: the breaker must have refused most.
    expect(
        seen.refused >= 10,
        format!(
            "the breaker refused only {} of 20 calls while down",
            seen.refused
        ),
    );
    expect(
        seen.fallbacks_seen == 1 && seen.fallbacks_metric == 1,
        format!(
            "one fallback answer expected: the stack counted {}, the metric {}",
            seen.fallbacks_seen, seen.fallbacks_metric
        ),
    );
    expect(
        seen.opened_metric >= 1 && seen.closed_metric >= 1,
        format!(
            "the breaker's transitions: {} to open, {} from half-open to closed",
            seen.opened_metric, seen.closed_metric
        ),
    );
    let opened = seen
        .trace
        .lines()
        .filter(|l| l.contains("circuit breaker opened") && l.contains("breaker=\"sms-provider\""))
        .count() as u64;
    expect(
        opened == seen.opened_metric,
        format!(
            "tracing logged {opened} openings, the metric counted {}",
            seen.opened_metric
        ),
    );
    let attempts = seen
        .trace
        .lines()
        .filter(|l| l.contains("attempt ended"))
        .count() as u64;
    expect(
        attempts == seen.attempts_metric,
        format!(
            "tracing logged {attempts} attempts, the metric counted {}",
            seen.attempts_metric
        ),
    );
    expect(
        seen.trace
            .contains("faultline.call{stack=\"status\" upstream=\"sms-provider\"}"),
        "no faultline.call span of the status stack in the trace".to_string(),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seen = run()?;
    check(&seen)?;
    println!(
        "server answered {} requests, {} attempts by the metrics; {} calls failed ({} refused \
         by the open breaker); {} status call answered by the fallback; the breaker opened \
         {} time(s) and closed again",
        seen.server_requests,
        seen.attempts_metric,
        seen.errors_seen,
        seen.refused,
        seen.fallbacks_seen,
        seen.opened_metric
    );
    println!("the trace's first openings:");
    for line in seen
        .trace
        .lines()
        .filter(|l| l.contains("circuit breaker"))
        .take(4)
    {
        println!("  {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The scenario, as `main` runs it: server, caller, metrics and traces agree.
    #[test]
    fn the_layer_around_a_real_http_client_is_seen_by_traces_and_metrics() {
        let seen = super::run().expect("the scenario runs");
        if let Err(problems) = super::check(&seen) {
            panic!("{problems}\n{seen:#?}");
        }
    }
}
