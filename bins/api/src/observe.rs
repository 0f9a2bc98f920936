//! Observing middleware: request metrics by matched route (recorded into
//! [`crate::metrics`]), the one log line of a 5xx cause, the JSON body of 405 answers, and
//! request timeouts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::error::{ApiError, ErrorCause};
use crate::state::AppState;

/// Route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Records metrics, logs the cause of 5xx answers once, and gives 405 answers the API's
/// error body.
pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(CONTENT_TYPE)
    {
        let allow = response.headers().get(ALLOW).cloned();
        response = ApiError::MethodNotAllowed.into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(ALLOW, allow);
        }
    }
    let status = response.status();
    if let Some(ErrorCause(cause)) = response.extensions().get::<ErrorCause>() {
        tracing::error!(
            http.method = crate::metrics::method_label(&method),
            http.route = %route,
            http.status = status.as_u16(),
            error = format!("{cause:#}"),
            "request failed"
        );
    }
    state
        .http_metrics()
        .record(&method, &route, status.as_u16(), started.elapsed());
    response
}

/// Ends a request that takes longer than `limit`: 408 `request_timeout` when its body has
/// not all arrived (a client sending slowly, or stalled), else 503.
pub(crate) async fn timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let received = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = Body::new(Watched {
        inner: body,
        received: received.clone(),
    });
    match tokio::time::timeout(limit, next.run(Request::from_parts(parts, body))).await {
        Ok(response) => response,
        Err(_) if !received.load(Ordering::Acquire) => {
            tracing::info!(http.path = %path, ?limit, "request body did not arrive in time");
            ApiError::RequestTimeout(limit).into_response()
        }
        Err(_) => {
            tracing::warn!(http.path = %path, ?limit, "request timed out");
            ApiError::Timeout.into_response()
        }
    }
}

/// A request body that notes when it has all been received.
struct Watched {
    inner: Body,
    received: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(context);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.received.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
