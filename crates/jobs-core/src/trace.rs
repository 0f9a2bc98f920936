//! Traces across the queue: the W3C `traceparent` of the span that enqueues a job is stored
//! with it ([`Job::trace_parent`]), and the worker's span of every run of the job names it.
//!
//! - Capture: the acquires of [`LockService`](crate::LockService) take the current span's
//!   context ([`current_trace_parent`]) unless the request names one
//!   ([`AcquireRequest::trace_parent`](crate::AcquireRequest::trace_parent)); the next job
//!   of a chain and a resumed job inherit the trace parent of the job they continue. An
//!   embedder whose request spans carry the incoming `traceparent` gets it for free.
//! - Storage: stores keep only a valid `traceparent` ([`storable_trace_parent`]): 55
//!   characters, `00-<32 hex>-<16 hex>-<2 hex>` in lowercase, neither id all zeros. Any other
//!   value is dropped, never an error: tracing never refuses a job.
//! - Runs: the worker runs each handler inside a span `job` with the fields `job.id`,
//!   `job.type`, `resource`, `attempt` and `trace_parent` (when the job has one), so log
//!   lines of a run name their job and the trace that started it. With the `opentelemetry`
//!   feature and a [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry) layer in
//!   the subscriber, the span of a job's first attempt is a child of the stored context, in
//!   the trace of the request that enqueued it; the span of a retry starts a trace of its own
//!   with a link to it (a retry may run long after that trace ended).

use crate::job::Job;

/// The length of a W3C `traceparent` of version `00`.
pub const TRACE_PARENT_LEN: usize = 55;

/// Whether `text` is a W3C `traceparent` a store keeps: version `00`, a 32-digit trace id, a
/// 16-digit parent span id and 2 digits of flags, in lowercase hex joined by `-` (55
/// characters), and neither id all zeros (the invalid ids of the W3C spec).
pub fn is_valid_trace_parent(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != TRACE_PARENT_LEN
        || !bytes.starts_with(b"00-")
        || bytes[35] != b'-'
        || bytes[52] != b'-'
    {
        return false;
    }
    let hex = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zero = |range: std::ops::Range<usize>| bytes[range].iter().all(|byte| *byte == b'0');
    hex(3..35) && hex(36..52) && hex(53..55) && !zero(3..35) && !zero(36..52)
}

/// `trace_parent` when it is valid ([`is_valid_trace_parent`]), else `None`: what stores
/// write for [`NewJob::trace_parent`](crate::NewJob::trace_parent).
pub fn storable_trace_parent(trace_parent: Option<&str>) -> Option<&str> {
    trace_parent.filter(|text| is_valid_trace_parent(text))
}

/// The `traceparent` of the current span's OpenTelemetry context (the current
/// `tracing` span's, else the current OpenTelemetry context's), or `None` outside a trace.
/// Always `None` without the `opentelemetry` feature.
pub fn current_trace_parent() -> Option<String> {
    #[cfg(feature = "opentelemetry")]
    {
        otel::current()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        None
    }
}

/// The span a claimed job's run goes in: see the module docs.
pub(crate) fn job_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        "job.type" = %job.job_type,
        resource = %job.resource_key,
        attempt = job.attempt,
        trace_parent = job.trace_parent.as_deref(),
    );
    #[cfg(feature = "opentelemetry")]
    otel::connect(&span, job);
    span
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::is_valid_trace_parent;
    use crate::job::Job;

    /// The current context as a `traceparent`.
    pub(super) fn current() -> Option<String> {
        let from_span = tracing::Span::current().context();
        let context = if from_span.span().span_context().is_valid() {
            from_span
        } else {
            opentelemetry::Context::current()
        };
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            )
        })
    }

    /// The remote span context a valid `traceparent` names.
    pub(super) fn parse(trace_parent: &str) -> Option<SpanContext> {
        if !is_valid_trace_parent(trace_parent) {
            return None;
        }
        let trace_id = TraceId::from_hex(&trace_parent[3..35]).ok()?;
        let span_id = SpanId::from_hex(&trace_parent[36..52]).ok()?;
        let flags = u8::from_str_radix(&trace_parent[53..55], 16).ok()?;
        Some(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        ))
    }

    /// Makes the job's stored context the parent of `span` (the first attempt) or a link of
    /// it (retries). `span` must not have been entered yet.
    pub(super) fn connect(span: &tracing::Span, job: &Job) {
        let Some(parent) = job.trace_parent.as_deref().and_then(parse) else {
            return;
        };
        if job.attempt <= 1 {
            // An error means no OpenTelemetry layer sees the span: nothing to connect.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        } else {
            span.add_link(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_trace_parents_are_kept_and_others_dropped() {
        assert_eq!(VALID.len(), TRACE_PARENT_LEN);
        assert!(is_valid_trace_parent(VALID));
        assert!(is_valid_trace_parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        for invalid in [
            "",
            "garbage",
            // another version, uppercase, wrong lengths and separators
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // 55 bytes, but not ASCII
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_trace_parent(invalid), "{invalid:?}");
            assert_eq!(storable_trace_parent(Some(invalid)), None);
        }
        assert_eq!(storable_trace_parent(Some(VALID)), Some(VALID));
        assert_eq!(storable_trace_parent(None), None);
    }

    #[test]
    fn outside_a_trace_there_is_no_trace_parent() {
        assert_eq!(current_trace_parent(), None);
        let _entered = tracing::info_span!("no subscriber").entered();
        assert_eq!(current_trace_parent(), None);
    }

    #[cfg(feature = "opentelemetry")]
    mod otel {
        use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;

        use super::super::*;
        use super::VALID;

        fn subscriber() -> (impl tracing::Subscriber, InMemorySpanExporter) {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
            (subscriber, exporter)
        }

        #[test]
        fn the_current_span_gives_its_own_trace_parent() {
            let (subscriber, _exporter) = subscriber();
            tracing::subscriber::with_default(subscriber, || {
                let request = tracing::info_span!("request");
                let parent = otel::parse(VALID).unwrap();
                request
                    .set_parent(opentelemetry::Context::new().with_remote_span_context(parent))
                    .unwrap();
                let _entered = request.enter();
                let trace_parent = current_trace_parent().expect("a trace parent");
                assert!(is_valid_trace_parent(&trace_parent), "{trace_parent}");
                let context = request.context();
                let own = context.span().span_context().clone();
                assert_eq!(
                    trace_parent,
                    format!("00-{}-{}-01", own.trace_id(), own.span_id())
                );
                assert!(trace_parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
                assert_ne!(own.span_id().to_string(), "00f067aa0ba902b7");
            });
        }

        #[test]
        fn parse_reads_every_part_of_a_trace_parent() {
            let context = otel::parse(VALID).unwrap();
            assert_eq!(
                context.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
            assert!(context.is_sampled());
            assert!(context.is_remote());
            assert!(
                otel::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
            );
        }
    }
}
