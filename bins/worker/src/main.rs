//! `worker`: runs Folio's jobs as a separate process until SIGINT or SIGTERM, then hands
//! back what it could not finish within `--shutdown-grace`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use app::config::{CommonArgs, WorkerArgs};
use axum::Router;
use axum::routing::get;
use clap::Parser;
use jobs_core::runtime::WorkerMetrics;

/// Runs Folio's background jobs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Serve `/healthz` and `/metrics` (Prometheus) on this address.
    #[arg(long, env = "FOLIO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let telemetry = app::telemetry::init_logging(&cli.common, "folio-worker")?;
    let ran = run(cli).await;
    // The spans of the last jobs are exported before the process ends.
    telemetry.shutdown().await;
    ran
}

async fn run(cli: Cli) -> Result<()> {
    // Fail fast: a worker whose OCR engine cannot run exits now, naming what to install.
    if let Some(engine) = app::preflight::check_ocr(&cli.worker).await? {
        tracing::info!(engine = %engine.engine, version = ?engine.version, languages = %engine.languages.join(","), "ocr engine ready");
    }
    let shutdown = app::shutdown_on_signals();
    let store = app::stores::open_job_store(&cli.common.database_url).await?;
    let deps = app::handlers::HandlerDeps::open(&cli.common.storage, &cli.worker).await?;
    // A worker that makes pages sweeps what uploads left behind.
    let sweeper = deps
        .blob_store
        .clone()
        .filter(|_| {
            app::handlers::selected_types(&cli.worker.types)
                .is_ok_and(|types| types.contains(&ingest::INGEST_JOB_TYPE))
        })
        .map(|blobs| {
            app::handlers::spawn_sweeper(blobs, store.clone(), &cli.worker, shutdown.clone())
        });
    let worker = app::handlers::worker(store, &cli.worker, &deps)?;
    // Metrics stay up until the worker has stopped: through the shutdown grace too.
    let stopped = tokio_util::sync::CancellationToken::new();
    let mut metrics_server = None;
    if let Some(address) = cli.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the metrics address {address}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "serving /healthz and /metrics");
        let router = metrics_router(worker.metrics());
        let stop = stopped.clone();
        metrics_server = Some(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "metrics server failed");
            }
        }));
    }
    let ran = worker.run(shutdown).await.context("running the worker");
    if let Some(sweeper) = sweeper {
        let _ = sweeper.await;
    }
    stopped.cancel();
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    ran
}

fn metrics_router(metrics: Arc<WorkerMetrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        app::telemetry::render_worker_metrics(&metrics),
                    )
                }
            }),
        )
}
