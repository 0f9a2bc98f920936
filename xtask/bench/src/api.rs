//! `bench api --connections C --seconds S`: `GET /v1/jobs/{id}` under load (SPEC section 8).
//!
//! The API runs in this process on 127.0.0.1 over Postgres (a fresh `TestDatabase`) and a
//! `file://` store, with one job created. C keep-alive HTTP/1.1 connections (hyper
//! clients) then each send one request at a time for S seconds after a one-second warm-up,
//! bounded by `--max-requests` in all. Reports `req_per_s`, `p50_ms` and `p99_ms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jobs_core::{Acquire, JobStore};
use jobs_postgres::testing::TestDatabase;
use tokio_util::sync::CancellationToken;

use crate::flags::{Flags, report};

/// Warm-up before measuring.
const WARM_UP: Duration = Duration::from_secs(1);

pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let connections: usize = flags.get("connections", 64)?;
    let seconds: u64 = flags.get("seconds", 10)?;
    let max_requests: u64 = flags.get("max-requests", 5_000_000)?;
    if connections == 0 || seconds == 0 {
        bail!("--connections and --seconds must be at least 1");
    }

    let database = TestDatabase::create().await;
    let job_store: Arc<dyn JobStore> = Arc::new(database.store().await);
    let dir = tempfile::tempdir()?;
    let blob_store = blob_store::open(&format!("file://{}/objects", dir.path().display())).await?;
    let shutdown = CancellationToken::new();
    let state = api::AppState::builder(job_store, blob_store, api::ApiConfig::default())
        .shutdown(shutdown.clone())
        .build();
    let Acquire::Created(job) = state
        .lock()
        .acquire(
            "bench-book",
            app::handlers::BENCH_NOOP,
            serde_json::json!({}),
        )
        .await?
    else {
        bail!("a fresh database has no active job");
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(api::server::serve(listener, state, shutdown.clone()));
    let path = format!("/v1/jobs/{}", job.id);

    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let deadline = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let path = path.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            connection_loop(address, &path, measure_from, deadline, &sent, max_requests).await
        }));
    }
    let mut latencies_us: Vec<u32> = Vec::new();
    let mut measured_until = measure_from;
    for task in tasks {
        let (latencies, last) = task.await.context("a load task panicked")??;
        latencies_us.extend(latencies);
        measured_until = measured_until.max(last);
    }
    shutdown.cancel();
    server.await??;
    database.drop().await;

    if latencies_us.is_empty() {
        bail!("no request completed in the measured window");
    }
    latencies_us.sort_unstable();
    let elapsed = measured_until
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let percentile = |fraction: f64| {
        let index = ((latencies_us.len() as f64 - 1.0) * fraction).round() as usize;
        f64::from(latencies_us[index]) / 1000.0
    };
    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    report(&serde_json::json!({
        "bench": "api",
        "store": "postgres",
        "connections": connections,
        "seconds": seconds,
        "requests": latencies_us.len(),
        "req_per_s": round(latencies_us.len() as f64 / elapsed),
        "p50_ms": round(percentile(0.50)),
        "p99_ms": round(percentile(0.99)),
        "max_ms": round(percentile(1.0)),
    }));
    Ok(())
}

/// One keep-alive connection sending requests back to back until `deadline`; returns the
/// latencies (µs) of the requests started after `measure_from`, and when the last ended.
async fn connection_loop(
    address: std::net::SocketAddr,
    path: &str,
    measure_from: Instant,
    deadline: Instant,
    sent: &AtomicU64,
    max_requests: u64,
) -> Result<(Vec<u32>, Instant)> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(connection);
    let host = address.to_string();
    let mut latencies = Vec::new();
    let mut last = measure_from;
    loop {
        let now = Instant::now();
        if now >= deadline || sent.fetch_add(1, Ordering::Relaxed) >= max_requests {
            break;
        }
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &host)
            .body(Empty::<Bytes>::new())?;
        sender.ready().await.context("connection ready")?;
        let response = sender.send_request(request).await.context("sending")?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .context("reading the body")?;
        if status != hyper::StatusCode::OK {
            bail!("GET {path} answered {status}");
        }
        let end = Instant::now();
        if now >= measure_from {
            latencies.push(u32::try_from((end - now).as_micros()).unwrap_or(u32::MAX));
            last = last.max(end);
        }
    }
    drop(sender);
    let _ = driver.await;
    Ok((latencies, last))
}
