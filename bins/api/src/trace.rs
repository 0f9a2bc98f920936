//! Distributed tracing of requests (feature `otlp`): a request's span (made by the router's
//! `TraceLayer`) is a child of the caller's W3C `traceparent` header, so the request, and the
//! jobs it enqueues (jobs-core stores the request span's context with them), join the
//! caller's trace. A request without a valid header starts a trace of its own. Without the
//! feature the layer does nothing.

#[cfg(feature = "otlp")]
pub(crate) use otel::layer;

/// The layer: nothing to do without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
pub(crate) fn layer() -> tower::layer::util::Identity {
    tower::layer::util::Identity::new()
}

#[cfg(feature = "otlp")]
mod otel {
    use std::task::{Context, Poll};

    use axum::http::Request;
    use futures::future::Either;
    use opentelemetry::context::{FutureExt, WithContext};
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_http::HeaderExtractor;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tower::{Layer, Service};

    /// The layer to add outside the router's `TraceLayer`.
    pub(crate) fn layer() -> TraceContextLayer {
        TraceContextLayer
    }

    /// Makes the caller's trace context current while the inner service is called and its
    /// future polled.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct TraceContextLayer;

    impl<S> Layer<S> for TraceContextLayer {
        type Service = TraceContext<S>;

        fn layer(&self, inner: S) -> Self::Service {
            TraceContext { inner }
        }
    }

    /// See [`TraceContextLayer`].
    #[derive(Debug, Clone)]
    pub(crate) struct TraceContext<S> {
        inner: S,
    }

    impl<S, B> Service<Request<B>> for TraceContext<S>
    where
        S: Service<Request<B>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = Either<WithContext<S::Future>, S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        /// The `TraceLayer` inside makes the request's span with the current OpenTelemetry
        /// context as its parent (tracing-opentelemetry's context activation, on by
        /// default), in its own `call`, which an axum route makes when its future is first
        /// polled: the caller's context is current in both.
        fn call(&mut self, request: Request<B>) -> Self::Future {
            let caller = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
            if !caller.span().span_context().is_valid() {
                return Either::Right(self.inner.call(request));
            }
            let future = {
                let _current = caller.clone().attach();
                self.inner.call(request)
            };
            Either::Left(future.with_context(caller))
        }
    }
}
