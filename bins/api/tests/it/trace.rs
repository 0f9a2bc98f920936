//! One trace from an HTTP request through its job to the worker (issue 17, acceptance 4),
//! with the `otlp` feature: spans go through tracing-opentelemetry to an in-memory exporter.
//! The request carries a W3C `traceparent`; the router's request span is its child, the job
//! stores the request span's context, and the worker's span of the job's first attempt (and
//! of the job its chain starts) is a child of the request span, while the retry links to it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use jobs_core::JobStatus;
use jobs_core::runtime::{HandlerError, JobContext, JobHandler};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{TestApp, eventually, into_json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// An `ocr` handler whose first attempt fails retryably; the second completes.
struct FlakyOcr;

#[jobs_core::async_trait]
impl JobHandler for FlakyOcr {
    fn job_type(&self) -> &str {
        "ocr"
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        match context.attempt() {
            1 => Err(HandlerError::retryable("flaky", "the first attempt fails")),
            _ => Ok(()),
        }
    }
}

/// A `guidelines` handler that completes at once.
struct Guidelines;

#[jobs_core::async_trait]
impl JobHandler for Guidelines {
    fn job_type(&self) -> &str {
        "guidelines"
    }

    async fn run(&self, _context: JobContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn text<'a>(span: &'a SpanData, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    span.attributes
        .iter()
        .find(|KeyValue { key: name, .. }| name.as_str() == key)
        .map(|KeyValue { value, .. }| value.as_str())
}

/// The exported spans of job `id`'s runs, in the order they started.
fn job_runs(exporter: &InMemorySpanExporter, id: &str) -> Vec<SpanData> {
    let mut runs: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.name == "job" && text(span, "job.id").as_deref() == Some(id))
        .collect();
    runs.sort_by_key(|span| span.start_time);
    runs
}

/// The exported request span of `POST /v1/books/{book_id}/jobs` in trace `trace_id`.
fn request_span(exporter: &InMemorySpanExporter, trace_id: TraceId) -> SpanData {
    let spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| {
            span.name == "request"
                && span.span_context.trace_id() == trace_id
                && text(span, "http.route").as_deref() == Some("/v1/books/{book_id}/jobs")
        })
        .collect();
    assert_eq!(
        spans.len(),
        1,
        "one request span in trace {trace_id}: {spans:#?}"
    );
    spans.into_iter().next().unwrap()
}

async fn start_job(app: &TestApp, book: &str, traceparent: Option<&str>) -> serde_json::Value {
    let mut request = Request::post(format!("/v1/books/{book}/jobs"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let body = json!({"type": "ocr", "then": ["guidelines"]}).to_string();
    let (status, job) = into_json(app.send(request.body(Body::from(body)).unwrap()).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job
}

/// Single-threaded: the subscriber set for this thread sees the router's and the worker's
/// spans (the worker runs in tasks of this runtime).
#[tokio::test(flavor = "current_thread")]
async fn a_requests_trace_reaches_the_workers_job_spans_as_parent_then_as_a_link() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("api-test")));
    let _subscriber = tracing::subscriber::set_default(subscriber);

    let app = TestApp::sqlite().await;
    app.create_book("traced").await;
    app.create_book("untraced").await;
    let worker = app.start_worker(vec![Arc::new(FlakyOcr), Arc::new(Guidelines)]);
    let traced = start_job(
        &app,
        "traced",
        Some(&format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")),
    )
    .await;
    let untraced = start_job(&app, "untraced", None).await;

    // Each ocr job runs twice (a retry), then its chain's guidelines job once.
    let runs = eventually(Duration::from_secs(30), "every run's span", || async {
        let mut runs = Vec::new();
        for job in [&traced, &untraced] {
            let ocr = app.stored_job(&job["id"]).await;
            let next = ocr.next_job_id?;
            if app.job_store.get(next).await.ok()?.status != JobStatus::Completed {
                return None;
            }
            let ocr_runs = job_runs(&exporter, &ocr.id.to_string());
            let next_runs = job_runs(&exporter, &next.to_string());
            if ocr_runs.len() < 2 || next_runs.is_empty() {
                return None;
            }
            runs.push((ocr, ocr_runs, next_runs));
        }
        Some(runs)
    })
    .await;
    worker.stop().await;

    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    // The request span continues the caller's trace, as a child of the caller's span.
    let request = request_span(&exporter, trace_id);
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(CALLER_SPAN_ID).unwrap()
    );
    assert!(request.parent_span_is_remote);
    let request_span_id = request.span_context.span_id();

    let (ocr, ocr_runs, next_runs) = &runs[0];
    // The job stored the request span's context.
    assert_eq!(
        ocr.trace_parent.as_deref(),
        Some(format!("00-{TRACE_ID}-{request_span_id}-01").as_str())
    );
    // Attempt 1: the worker's span is a child of the request span, in the caller's trace.
    let first = &ocr_runs[0];
    assert_eq!(text(first, "attempt").as_deref(), Some("1"));
    assert_eq!(text(first, "job.type").as_deref(), Some("ocr"));
    assert_eq!(text(first, "resource").as_deref(), Some("traced"));
    assert_eq!(first.span_context.trace_id(), trace_id);
    assert_eq!(first.parent_span_id, request_span_id);
    assert!(first.links.is_empty());
    // Attempt 2: a trace of its own, linked to the request span.
    let retry = &ocr_runs[1];
    assert_eq!(text(retry, "attempt").as_deref(), Some("2"));
    assert_ne!(retry.span_context.trace_id(), trace_id);
    assert_eq!(retry.parent_span_id, SpanId::INVALID);
    assert_eq!(retry.links.len(), 1, "{retry:#?}");
    assert_eq!(retry.links[0].span_context.trace_id(), trace_id);
    assert_eq!(retry.links[0].span_context.span_id(), request_span_id);
    // The chain's next job inherited the trace parent: its first run is in the trace too.
    let next = &next_runs[0];
    assert_eq!(text(next, "job.type").as_deref(), Some("guidelines"));
    assert_eq!(next.span_context.trace_id(), trace_id);
    assert_eq!(next.parent_span_id, request_span_id);

    // Without a traceparent, the request starts a trace, and its job's first run joins it.
    let (ocr, ocr_runs, next_runs) = &runs[1];
    let own = ocr_runs[0].span_context.trace_id();
    assert_ne!(own, trace_id);
    let request = request_span(&exporter, own);
    assert_eq!(request.parent_span_id, SpanId::INVALID);
    assert_eq!(ocr_runs[0].parent_span_id, request.span_context.span_id());
    assert_eq!(next_runs[0].span_context.trace_id(), own);
    assert_eq!(
        ocr.trace_parent.as_deref(),
        Some(format!("00-{own}-{}-01", request.span_context.span_id()).as_str())
    );
}
