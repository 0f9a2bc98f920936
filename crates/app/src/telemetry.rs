//! Logging, trace export (OpenTelemetry, feature `otlp`) and the Prometheus text of a worker.

use anyhow::Result;
use jobs_core::runtime::WorkerMetrics;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{CommonArgs, LogFormat};

/// A layer of the process's subscriber.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// What [`init_logging`] set up. Keep it while the process runs, and call
/// [`Telemetry::shutdown`] before exiting so the last spans are exported.
#[derive(Debug, Default)]
#[must_use = "without `shutdown`, spans of the last seconds are not exported"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported: an endpoint was given to a build with the `otlp` feature.
    pub fn exports_traces(&self) -> bool {
        #[cfg(feature = "otlp")]
        {
            self.provider.is_some()
        }
        #[cfg(not(feature = "otlp"))]
        {
            false
        }
    }

    /// Exports the spans not yet exported (waiting up to the exporter's timeout) and stops
    /// the exporter. Nothing to do without trace export.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            // The exporter's requests run on this runtime while the flush blocks its thread.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = flushed {
                eprintln!("exporting the last spans failed: {error}");
            }
        }
    }
}

/// Logs to stderr in `common.log_format`; the level comes from `RUST_LOG` (default `info`).
/// Colours only on a terminal: a log file or journald gets plain text.
///
/// With an OTLP endpoint (`--otlp-endpoint`, see [`CommonArgs::otlp_endpoint`]) and the
/// `otlp` feature, spans at `info` and above (whatever `RUST_LOG` says) are also exported
/// as OpenTelemetry traces of the service `service_name` (unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names one): the API's request spans, the workers' job spans,
/// with the events logged inside them. An endpoint without the feature is an error.
/// Must run inside a Tokio runtime when it exports.
pub fn init_logging(common: &CommonArgs, service_name: &str) -> Result<Telemetry> {
    #[cfg(feature = "otlp")]
    let (telemetry, export) = match otlp::endpoint(common.otlp_endpoint.as_deref()) {
        Some(endpoint) => {
            let provider = otlp::provider(&endpoint, service_name)?;
            let layer = otlp::layer(&provider);
            let telemetry = Telemetry {
                provider: Some(provider),
            };
            (telemetry, Some(layer))
        }
        None => (Telemetry::default(), None),
    };
    #[cfg(not(feature = "otlp"))]
    let (telemetry, export): (Telemetry, Option<BoxedLayer>) = {
        let _ = service_name;
        if let Some(endpoint) = &common.otlp_endpoint {
            anyhow::bail!(
                "--otlp-endpoint (FOLIO_OTLP_ENDPOINT) is {endpoint:?}, but this build cannot \
                 export traces: build it with the `otlp` feature, or unset the flag"
            );
        }
        (Telemetry::default(), None)
    };
    if let Err(error) = subscriber(common.log_format, export).try_init() {
        eprintln!("logging already initialised: {error}");
    }
    Ok(telemetry)
}

/// The process's subscriber: the trace export, if any, and the log lines on stderr,
/// filtered by `RUST_LOG`. The layers are stacked, not collected in a
/// `Vec<Box<dyn Layer>>`: in a vector, layers with filters of their own lose their interest
/// in callsites, and a `RUST_LOG` naming a target silenced every other line
/// (tokio-rs/tracing#2929).
fn subscriber(
    format: LogFormat,
    export: Option<BoxedLayer>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let exported = tracing_subscriber::registry().with(export);
    match format {
        LogFormat::Text => Box::new(exported.with(log.with_filter(filter))),
        LogFormat::Json => Box::new(exported.with(log.json().with_filter(filter))),
    }
}

/// The Prometheus text of a worker's metrics.
pub fn render_worker_metrics(metrics: &WorkerMetrics) -> String {
    let mut text = String::new();
    metrics.render(&mut text);
    text
}

#[cfg(all(test, not(feature = "otlp")))]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn an_otlp_endpoint_without_the_feature_is_an_error() {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            common: CommonArgs,
        }
        let cli = Cli::try_parse_from(["api", "--otlp-endpoint", "http://127.0.0.1:4318"]).unwrap();
        let error = init_logging(&cli.common, "folio-test").unwrap_err();
        assert!(error.to_string().contains("`otlp` feature"), "{error}");
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    //! OTLP over HTTP/protobuf through the workspace's reqwest (rustls): no gRPC stack and
    //! no HTTP client of the exporter's own.

    use std::time::Duration;

    use anyhow::{Context as _, Result};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;

    use super::BoxedLayer;

    /// The standard variable, honoured when the flag is not given.
    const OTEL_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// The longest export request.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The largest collector answer read.
    const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

    /// The collector: the flag's, else the standard variable's; `None` when neither is set.
    pub(super) fn endpoint(flag: Option<&str>) -> Option<String> {
        flag.map(str::to_owned)
            .or_else(|| std::env::var(OTEL_ENDPOINT).ok())
            .map(|endpoint| endpoint.trim().to_owned())
            .filter(|endpoint| !endpoint.is_empty())
    }

    /// Where spans go: the collector's base URL with `/v1/traces`, unless it names it.
    pub(super) fn traces_url(endpoint: &str) -> String {
        let endpoint = endpoint.trim_end_matches('/');
        if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        }
    }

    /// A provider that exports batches of spans to `endpoint`.
    pub(super) fn provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the OTLP exporter runs its requests on a Tokio runtime")?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("building the OTLP exporter's HTTP client")?;
        let url = traces_url(endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient { client, runtime })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("--otlp-endpoint {endpoint:?}: the OTLP exporter to {url}"))?;
        let detected = Resource::builder().build();
        let named = detected
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
        let resource = if named {
            detected
        } else {
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build()
        };
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    }

    /// The layer that turns spans at `info` and above into OpenTelemetry spans.
    pub(super) fn layer(provider: &SdkTracerProvider) -> BoxedLayer {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("folio"))
            .with_filter(LevelFilter::INFO)
            .boxed()
    }

    /// reqwest as the exporter's client. The batch processor exports from a thread of its
    /// own, outside any runtime, so each request runs on the process's Tokio runtime.
    #[derive(Debug)]
    struct ExportClient {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl HttpClient for ExportClient {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let request = reqwest::Request::try_from(request)?;
            let client = self.client.clone();
            let sent = self.runtime.spawn(async move {
                let mut response = client.execute(request).await?;
                let status = response.status();
                let headers = std::mem::take(response.headers_mut());
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(HttpError::from("the collector's answer is over 4 MiB"));
                    }
                    body.extend_from_slice(&chunk);
                }
                let mut answer = Response::builder().status(status).body(Bytes::from(body))?;
                *answer.headers_mut() = headers;
                Ok(answer)
            });
            sent.await?
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_traces_path_is_appended_once() {
            assert_eq!(
                traces_url("http://collector:4318"),
                "http://collector:4318/v1/traces"
            );
            assert_eq!(
                traces_url("http://collector:4318/"),
                "http://collector:4318/v1/traces"
            );
            assert_eq!(
                traces_url("https://otel.example/v1/traces"),
                "https://otel.example/v1/traces"
            );
        }

        /// The process's subscriber (the log lines filtered by `RUST_LOG`) lets
        /// tracing-opentelemetry find its layer: a request span takes the caller's context
        /// as parent, and an acquire inside it reads the span's context for the job.
        #[test]
        fn acquires_inside_a_request_span_read_its_context_through_the_process_layers() {
            use opentelemetry::propagation::TextMapPropagator;
            use tracing_opentelemetry::OpenTelemetrySpanExt;

            let provider = SdkTracerProvider::builder().build();
            let subscriber =
                super::super::subscriber(crate::config::LogFormat::Text, Some(layer(&provider)));
            let headers = std::collections::HashMap::from([(
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            )]);
            let caller = TraceContextPropagator::new().extract(&headers);
            tracing::subscriber::with_default(subscriber, || {
                let request = tracing::info_span!("request");
                request
                    .set_parent(caller)
                    .expect("the OpenTelemetry layer is found");
                let _entered = request.enter();
                let trace_parent = jobs_core::trace::current_trace_parent().expect("a context");
                assert!(
                    trace_parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                    "{trace_parent}"
                );
                assert!(
                    !trace_parent.contains("00f067aa0ba902b7"),
                    "the request's own span"
                );
            });
        }

        /// Spans reach a collector: an OTLP/HTTP request with a protobuf body, to
        /// `/v1/traces`, through the workspace's reqwest on the test's runtime.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn spans_are_posted_to_the_collector_as_protobuf() {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let collector = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let read = socket.read(&mut buffer).await.unwrap();
                    assert!(read > 0, "the exporter hung up");
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
                String::from_utf8_lossy(&request).to_string()
            });

            let provider = provider(&format!("http://{address}"), "folio-test").unwrap();
            let tracer = provider.tracer("test");
            opentelemetry::trace::Tracer::in_span(&tracer, "exported", |_| {});
            tokio::task::spawn_blocking(move || provider.shutdown())
                .await
                .unwrap()
                .unwrap();
            let request = collector.await.unwrap();
            let head = request.lines().next().unwrap().to_owned();
            assert_eq!(head, "POST /v1/traces HTTP/1.1");
            let lower = request.to_ascii_lowercase();
            assert!(
                lower.contains("content-type: application/x-protobuf"),
                "{request}"
            );
            assert!(
                request.contains("exported"),
                "the span's name is in the body"
            );
            assert!(
                request.contains("folio-test"),
                "the service name is in the body"
            );
        }
    }
}
