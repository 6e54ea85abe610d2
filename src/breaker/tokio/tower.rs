//! The resilience stack as a tower [`Layer`]: [`ResilienceLayer`] wraps any
//! [`Service`] (a hyper, reqwest or tonic client, or a stack of other layers) in a
//! [`Resilient`]: bulkhead, circuit breaker, timeouts, retries with backoff and a budget,
//! fallback, exactly as [`Resilient::call`] runs them.
//!
//! ```
//! use std::time::Duration;
//!
//! use faultline::breaker::BreakerConfig;
//! use faultline::breaker::tokio::tower::ResilienceLayer;
//! use faultline::breaker::tokio::{Resilient, Upstream};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // One upstream (one breaker, one bulkhead), two stacks: two endpoints calling the
//!     // same provider share one opinion of it.
//!     let upstream = Upstream::builder(BreakerConfig::builder().build()?).build()?;
//!     let stack = Resilient::builder_for(&upstream)
//!         .timeout(Duration::from_secs(2))
//!         .build()?;
//!     // Any `Service`; here a function standing for an HTTP client.
//!     let client = tower::service_fn(|name: String| async move {
//!         Ok::<_, std::io::Error>(format!("hello {name}"))
//!     });
//!     let mut service = ServiceBuilder::new()
//!         .layer(ResilienceLayer::new(stack))
//!         .service(client);
//!     let answer = service.ready().await?.call("ada".to_string()).await?;
//!     assert_eq!(answer, "hello ada");
//!     assert_eq!(upstream.breaker().metrics().totals.succeeded, 1);
//!     Ok(())
//! }
//! ```
//!
//! # What a call does
//!
//! [`ResilienceService::call`] runs [`Resilient::call`] with one attempt per call of the
//! inner service: each attempt takes a clone of the inner service, waits until it is
//! ready and calls it with a clone of the request (so `Req: Clone`, as tower's own
//! `Retry` asks of its policy; a request that cannot be cloned can be mapped from one
//! that can with tower's `MapRequest`). The wait for readiness is part of the attempt:
//! it runs under the attempt's timeout and holds the breaker's permit, so an inner
//! service that never becomes ready times out like one that never answers.
//!
//! [`poll_ready`](Service::poll_ready) is always ready: the stack's own admission (its
//! bulkhead, its breaker) answers inside the call, with
//! [`CallError::BulkheadFull`] and [`CallError::Unavailable`] (or the fallback), not by
//! holding the caller back. A caller that wants back-pressure instead puts tower's
//! `ConcurrencyLimit` or `LoadShed` outside this layer.
//!
//! The error is [`CallError<S::Error>`](CallError): the inner service's own error is in
//! [`CallError::Failed`] (and its [`source`](std::error::Error::source)), so a
//! `tower::BoxError` chain keeps it.
//!
//! Cancellation-safe as [`Resilient::call`] is: dropping the response future releases
//! the breaker's permit and the bulkhead's slot.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use tower_layer::Layer;
pub use tower_service::Service;

use super::Resilient;
use crate::breaker::CallError;

/// The future a [`ResilienceService`] answers with: boxed, `Send`, `'static`, so the
/// service fits axum, tonic and `tower::buffer` alike.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, CallError<E>>> + Send>>;

/// A tower [`Layer`] putting a [`Resilient`] stack around a service.
///
/// Cloning the layer (or the services it makes) shares the one stack: build the layers of
/// several endpoints that call one provider from one
/// [`Upstream`](super::Upstream) (with [`Resilient::builder_for`]) and they share its
/// breaker, bulkhead and retry budget while each keeps its own timeouts, retries and
/// fallback.
pub struct ResilienceLayer<T, E> {
    stack: Resilient<T, E>,
}

impl<T, E> ResilienceLayer<T, E> {
    /// A layer running every call through `stack`.
    pub fn new(stack: Resilient<T, E>) -> Self {
        ResilienceLayer { stack }
    }

    /// The stack every service of this layer calls through (its breaker, bulkhead and
    /// counters).
    pub fn stack(&self) -> &Resilient<T, E> {
        &self.stack
    }
}

impl<T, E> From<Resilient<T, E>> for ResilienceLayer<T, E> {
    fn from(stack: Resilient<T, E>) -> Self {
        ResilienceLayer::new(stack)
    }
}

impl<T, E> Clone for ResilienceLayer<T, E> {
    fn clone(&self) -> Self {
        ResilienceLayer {
            stack: self.stack.clone(),
        }
    }
}

impl<T, E> fmt::Debug for ResilienceLayer<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("stack", &self.stack)
            .finish()
    }
}

impl<S, T, E> Layer<S> for ResilienceLayer<T, E> {
    type Service = ResilienceService<S, T, E>;

    fn layer(&self, inner: S) -> Self::Service {
        ResilienceService {
            inner,
            stack: self.stack.clone(),
        }
    }
}

/// A service behind a [`Resilient`] stack; made by [`ResilienceLayer`]. See the
/// [module docs](self) for what a call does.
pub struct ResilienceService<S, T, E> {
    inner: S,
    stack: Resilient<T, E>,
}

impl<S, T, E> ResilienceService<S, T, E> {
    /// `inner` behind `stack` (what [`ResilienceLayer::layer`] builds).
    pub fn new(inner: S, stack: Resilient<T, E>) -> Self {
        ResilienceService { inner, stack }
    }

    /// The stack every call goes through.
    pub fn stack(&self) -> &Resilient<T, E> {
        &self.stack
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, taken out of the stack.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, T, E> Clone for ResilienceService<S, T, E> {
    fn clone(&self) -> Self {
        ResilienceService {
            inner: self.inner.clone(),
            stack: self.stack.clone(),
        }
    }
}

impl<S: fmt::Debug, T, E> fmt::Debug for ResilienceService<S, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceService")
            .field("inner", &self.inner)
            .field("stack", &self.stack)
            .finish()
    }
}

impl<S, Req, T, E> Service<Req> for ResilienceService<S, T, E>
where
    S: Service<Req, Response = T, Error = E> + Clone + Send + 'static,
    S::Future: Send,
    Req: Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Response = T;
    type Error = CallError<E>;
    type Future = ResponseFuture<T, E>;

    /// Always ready: the stack admits or refuses inside the call (see the
    /// [module docs](self)).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let inner = self.inner.clone();
        let stack = self.stack.clone();
        Box::pin(async move {
            stack
                .call(move || {
                    let mut service = inner.clone();
                    let request = request.clone();
                    async move {
                        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                        service.call(request).await
                    }
                })
                .await
        })
    }
}
