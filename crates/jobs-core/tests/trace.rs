//! The worker's span of a job run, exported through `tracing-opentelemetry` to an in-memory
//! exporter: its fields, the stored trace parent as the parent of the first attempt, and as
//! a link of the retry. Runs with the `opentelemetry` and `testing` features
//! (`--all-features` in CI).
#![cfg(all(feature = "opentelemetry", feature = "testing"))]

use std::sync::Arc;
use std::time::Duration;

use jobs_core::runtime::{HandlerError, JobContext, JobHandler, Worker, WorkerConfig};
use jobs_core::testing::eventually;
use jobs_core::{Insert, JobId, JobStatus, JobStore, NewJob, SystemClock};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const JOB_TYPE: &str = "trace.test";

/// Fails its first attempt (retryably), completes the second.
struct FailsOnce;

#[jobs_core::async_trait]
impl JobHandler for FailsOnce {
    fn job_type(&self) -> &str {
        JOB_TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        tracing::info!("handler runs");
        match context.attempt() {
            1 => Err(HandlerError::retryable("flaky", "the first attempt fails")),
            _ => Ok(()),
        }
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: name, .. }| name.as_str() == key)
        .map(|KeyValue { value, .. }| value)
}

fn job_spans(exporter: &InMemorySpanExporter, job: JobId) -> Vec<SpanData> {
    let id = job.to_string();
    let mut spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.name == "job")
        .filter(|span| attribute(span, "job.id").map(Value::as_str).as_deref() == Some(&id))
        .collect();
    spans.sort_by_key(|span| span.start_time);
    spans
}

/// Single-threaded, so the subscriber set for this thread sees every span of the worker.
#[tokio::test(flavor = "current_thread")]
async fn the_first_attempt_is_a_child_of_the_stored_trace_parent_and_a_retry_links_to_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("jobs-core-test")));
    let _subscriber = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let store: Arc<dyn JobStore> =
        Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await.unwrap());
    let new_job = |key: &str, trace_parent: Option<String>| NewJob {
        id: JobId::new(),
        resource_key: key.to_owned(),
        job_type: JOB_TYPE.to_owned(),
        payload: serde_json::json!({}),
        max_attempts: 3,
        checkpoint: None,
        resumed_from: None,
        then: Vec::new(),
        trace_parent,
        now: chrono::Utc::now(),
    };
    let trace_parent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let Insert::Inserted(traced) = store
        .insert(new_job("traced", Some(trace_parent.clone())))
        .await
        .unwrap()
    else {
        panic!("a new job");
    };
    let Insert::Inserted(untraced) = store.insert(new_job("untraced", None)).await.unwrap() else {
        panic!("a new job");
    };

    let config = WorkerConfig {
        poll_interval: Duration::from_millis(20),
        retry_backoff: Duration::from_millis(10),
        max_retry_backoff: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let worker =
        Worker::new(store.clone(), Arc::new(SystemClock), config).handler(Arc::new(FailsOnce));
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let (traced_spans, untraced_spans) =
        eventually(Duration::from_secs(30), "two runs of each job", || async {
            let spans = (
                job_spans(&exporter, traced.id),
                job_spans(&exporter, untraced.id),
            );
            if spans.0.len() == 2 && spans.1.len() == 2 {
                Ok(spans)
            } else {
                Err(format!("{spans:#?}"))
            }
        })
        .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        store.get(traced.id).await.unwrap().status,
        JobStatus::Completed
    );

    // Attempt 1: a child of the stored context, in the request's trace.
    let first = &traced_spans[0];
    assert_eq!(
        attribute(first, "attempt").map(Value::as_str).as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(first, "job.type").map(Value::as_str).as_deref(),
        Some(JOB_TYPE)
    );
    assert_eq!(
        attribute(first, "resource").map(Value::as_str).as_deref(),
        Some("traced")
    );
    assert_eq!(
        attribute(first, "trace_parent")
            .map(Value::as_str)
            .as_deref(),
        Some(trace_parent.as_str())
    );
    assert_eq!(first.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(first.parent_span_id.to_string(), PARENT_SPAN_ID);
    assert!(first.parent_span_is_remote);
    assert!(first.links.is_empty(), "{first:#?}");
    assert!(
        first
            .events
            .iter()
            .any(|event| event.name == "handler runs"),
        "the handler's events are in the job's span: {first:#?}"
    );

    // Attempt 2: a trace of its own, linked to the stored context.
    let retry = &traced_spans[1];
    assert_eq!(
        attribute(retry, "attempt").map(Value::as_str).as_deref(),
        Some("2")
    );
    assert_ne!(retry.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(retry.parent_span_id, SpanId::INVALID);
    assert_eq!(retry.links.len(), 1, "{retry:#?}");
    let link = &retry.links[0].span_context;
    assert_eq!(link.trace_id().to_string(), TRACE_ID);
    assert_eq!(link.span_id().to_string(), PARENT_SPAN_ID);

    // A job enqueued outside a trace: roots without links.
    for span in &untraced_spans {
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert!(span.links.is_empty());
        assert_eq!(attribute(span, "trace_parent"), None);
    }
}
