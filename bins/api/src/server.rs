//! The `api` process: flags, the refusal of unauthenticated public listeners, stores from
//! URLs, the optional in-process worker, and serving with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use app::config::{CommonArgs, WorkerArgs, byte_size};
use clap::Parser;
use jobs_core::RecoveryPolicy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{ApiConfig, AppState, app};

/// Folio's HTTP API; with `--with-worker` it also runs the jobs (one machine, one command).
#[derive(Debug, Clone, Parser)]
#[command(name = "api", version, about)]
pub struct Cli {
    /// Stores and logging.
    #[command(flatten)]
    pub common: CommonArgs,

    /// The address to serve on.
    #[arg(long, env = "FOLIO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Every `/v1` route then needs `Authorization: Bearer TOKEN`. At least 16 characters,
    /// not a placeholder. A flag shows in `ps`: prefer `--api-token-file` or the variable.
    #[arg(long, env = "FOLIO_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// A file whose first line is the API token (instead of `--api-token`).
    #[arg(long, env = "FOLIO_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,

    /// `/metrics` then needs `Authorization: Bearer TOKEN` with this token (the API token
    /// does not open it); same rules as the API token. `/healthz` and `/readyz` stay open.
    #[arg(long, env = "FOLIO_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// A file whose first line is the metrics token (instead of `--metrics-token`).
    #[arg(
        long,
        env = "FOLIO_METRICS_TOKEN_FILE",
        conflicts_with = "metrics_token"
    )]
    pub metrics_token_file: Option<PathBuf>,

    /// Serve on a non-loopback address without a token (anyone who reaches it can use it).
    #[arg(long, env = "FOLIO_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// A host name this api answers for without a token, besides loopback names (repeat
    /// it, or separate names with commas); requests for any other `Host` are refused then.
    #[arg(
        long = "public-host",
        env = "FOLIO_PUBLIC_HOSTS",
        value_delimiter = ','
    )]
    pub public_hosts: Vec<String>,

    /// Run a worker in this process too (the embedded default for one machine); it takes
    /// the worker flags below.
    #[arg(long, env = "FOLIO_WITH_WORKER")]
    pub with_worker: bool,

    /// Longest time a request may take to produce its response.
    #[arg(long, env = "FOLIO_REQUEST_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub request_timeout: Duration,

    /// Longest time a page upload may take.
    #[arg(long, env = "FOLIO_UPLOAD_TIMEOUT", value_parser = duration, default_value = "10m")]
    pub upload_timeout: Duration,

    /// Event streams open at once; one more is answered 503 `server_busy`.
    #[arg(long, env = "FOLIO_MAX_EVENT_STREAMS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_event_streams: u32,

    /// An event stream ends after this long; clients reconnect with `Last-Event-ID`.
    #[arg(long, env = "FOLIO_EVENT_STREAM_LIFETIME", value_parser = duration, default_value = "10m")]
    pub event_stream_lifetime: Duration,

    /// Longest time a client may take to send a request's headers, or keep a connection
    /// idle between requests: the connection is closed then.
    #[arg(long, env = "FOLIO_HEADER_READ_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Connections served at once; past it, new ones wait to be accepted (those open are
    /// never stalled). Keep it below the process's file limit.
    #[arg(long, env = "FOLIO_MAX_CONNECTIONS", default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Largest image file of an upload (e.g. `100MiB`): a larger one is refused as
    /// `too_large`.
    #[arg(long, env = "FOLIO_MAX_IMAGE_BYTES", value_parser = byte_size, default_value = "100MiB")]
    pub max_image_bytes: u64,

    /// Largest PDF of an upload (e.g. `1GiB`): a larger one is refused as `too_large`.
    #[arg(long, env = "FOLIO_MAX_PDF_BYTES", value_parser = byte_size, default_value = "1GiB")]
    pub max_pdf_bytes: u64,

    /// Largest upload request, all its files together: 413 `payload_too_large` past it.
    #[arg(long, env = "FOLIO_MAX_UPLOAD_BYTES", value_parser = byte_size, default_value = "2GiB")]
    pub max_upload_bytes: u64,

    /// Most pages of one book: an upload that would pass it is 413 `payload_too_large`.
    #[arg(long, env = "FOLIO_MAX_BOOK_PAGES", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_book_pages: u32,

    /// Uploads this process takes at once; one more is answered 503 `server_busy` with
    /// `Retry-After`.
    #[arg(long, env = "FOLIO_MAX_UPLOADS_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads_in_flight: u32,

    /// Memory that decoding uploaded images may take at once, across every upload
    /// (e.g. `1GiB`, `512MiB`; `0` for no bound). Uploads beyond it wait for it.
    #[arg(long, env = "FOLIO_DECODE_BUDGET", value_parser = byte_size, default_value = "1GiB")]
    pub decode_budget: u64,

    /// Longest time an upload waits for the decode budget before it is answered 503
    /// `server_busy` with `Retry-After`.
    #[arg(long, env = "FOLIO_DECODE_WAIT", value_parser = duration, default_value = "30s")]
    pub decode_wait: Duration,

    /// Attempts of the jobs the API starts (claims that may end in a retryable error or a
    /// lost heartbeat).
    #[arg(long, env = "FOLIO_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// The worker's flags (used with `--with-worker`; `--stale-after` and
    /// `--pending-timeout` also apply to the lazy rescue of the API's lock service).
    #[command(flatten)]
    pub worker: WorkerArgs,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (write e.g. 500ms, 5s, 10m)"))
}

/// The shortest API token taken.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Tokens that come from examples and templates, compared without case.
const PLACEHOLDER_TOKENS: [&str; 12] = [
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "token",
    "secret",
    "password",
    "example",
    "your-token",
    "your-api-token",
    "xxxxxxxxxxxxxxxx",
];

/// Refuses a token that is a placeholder or shorter than [`MIN_TOKEN_CHARS`], naming the
/// rule; `what` names the token ("API token").
pub fn check_token(what: &str, token: &str) -> Result<()> {
    let lowercase = token.to_lowercase();
    if PLACEHOLDER_TOKENS.contains(&lowercase.as_str()) || lowercase.contains("change-me") {
        bail!(
            "the {what} {token:?} is a placeholder: set a random one, e.g. the output of \
             `openssl rand -hex 32`"
        );
    }
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        bail!(
            "the {what} has {chars} characters, fewer than {MIN_TOKEN_CHARS}: set a random \
             one, e.g. the output of `openssl rand -hex 32`"
        );
    }
    Ok(())
}

/// Reads a token file's first line, trimmed, into `token`, then refuses a token
/// [`check_token`] refuses. A token that is empty counts as none.
fn load_one_token(what: &str, token: &mut Option<String>, file: Option<PathBuf>) -> Result<()> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?;
        let read = text.lines().next().unwrap_or_default().trim().to_owned();
        if read.is_empty() {
            bail!("the {what} file {} is empty", path.display());
        }
        *token = Some(read);
    }
    match token.as_deref() {
        Some(token) if !token.is_empty() => check_token(what, token),
        _ => Ok(()),
    }
}

impl Cli {
    /// Loads the API and metrics tokens from their files, if given, and refuses one that
    /// [`check_token`] refuses.
    pub fn load_token(&mut self) -> Result<()> {
        load_one_token("API token", &mut self.api_token, self.api_token_file.take())?;
        load_one_token(
            "metrics token",
            &mut self.metrics_token,
            self.metrics_token_file.take(),
        )
    }

    /// Refuses a non-loopback listen address without a token, unless
    /// `--allow-unauthenticated` says so.
    pub fn check_listen(&self) -> Result<()> {
        let has_token = self
            .api_token
            .as_deref()
            .is_some_and(|token| !token.is_empty());
        if !has_token && !self.listen.ip().is_loopback() && !self.allow_unauthenticated {
            bail!(
                "refusing to listen on {} without an API token: anyone who can reach it could \
                 use the API. Set --api-token (FOLIO_API_TOKEN), listen on a loopback address \
                 such as 127.0.0.1:8080, or pass --allow-unauthenticated",
                self.listen
            );
        }
        Ok(())
    }

    /// The API settings these flags describe.
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            api_token: self.api_token.clone().filter(|token| !token.is_empty()),
            metrics_token: self.metrics_token.clone().filter(|token| !token.is_empty()),
            public_hosts: self.public_hosts.clone(),
            recovery: RecoveryPolicy {
                stale_after: self.worker.stale_after,
                pending_timeout: self.worker.pending_timeout,
            },
            max_attempts: self.max_attempts,
            request_timeout: self.request_timeout,
            upload_timeout: self.upload_timeout,
            header_read_timeout: self.header_read_timeout,
            max_event_streams: self.max_event_streams as usize,
            event_stream_lifetime: self.event_stream_lifetime,
            max_connections: self.max_connections as usize,
            decode_budget_bytes: (self.decode_budget > 0).then_some(self.decode_budget),
            decode_wait: self.decode_wait,
            default_language: self.worker.ocr.tesseract_languages.clone(),
            ingest_limits: books::IngestLimits {
                max_file_bytes: self.max_image_bytes,
                max_pdf_bytes: self.max_pdf_bytes,
                max_request_bytes: self.max_upload_bytes,
                max_book_pages: self.max_book_pages,
                tool_memory_limit: self.worker.tool_memory_limit(),
                ..books::IngestLimits::default()
            },
            max_uploads_in_flight: self.max_uploads_in_flight as usize,
            staging_dir: self.worker.staging_dir(),
            ..ApiConfig::default()
        }
    }
}

/// Serves `state` on `listener` until `shutdown` fires, then finishes the requests in
/// flight (open event streams end at once).
///
/// Each connection is HTTP/1 with a header-read timeout that also closes idle keep-alive
/// connections ([`ApiConfig::header_read_timeout`]), and at most
/// [`ApiConfig::max_connections`] are served at once: beyond that, new connections wait in
/// the listen backlog, so clients that hold connections open without sending a request can
/// neither exhaust the process's files nor stall the connections already open.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let config = state.config().clone();
    let router = app(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of files or memory for a moment: try again soon, without spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Runs the `api` process until SIGINT or SIGTERM.
pub async fn run(mut cli: Cli) -> Result<()> {
    cli.load_token()?;
    cli.check_listen()?;
    let shutdown = app::shutdown_on_signals();
    let job_store = app::stores::open_job_store(&cli.common.database_url).await?;
    let blob_store = app::storage::open_blob_store(&cli.common.storage).await?;
    let mut state = AppState::builder(job_store.clone(), blob_store.clone(), cli.api_config())
        .shutdown(shutdown.clone());
    let (sweep_store, sweep_jobs) = (blob_store.clone(), job_store.clone());
    let key_store = job_store.clone();
    match crate::languages::installed() {
        Some(languages) => {
            tracing::info!(languages = %languages.join(","), "tesseract languages installed")
        }
        None => tracing::info!(
            "tesseract does not run here: book languages are not checked against installed ones"
        ),
    }
    let worker = if cli.with_worker {
        // Fail fast: a worker whose OCR engine cannot run exits now, naming what to install.
        if let Some(engine) = app::preflight::check_ocr(&cli.worker).await? {
            tracing::info!(engine = %engine.engine, version = ?engine.version, languages = %engine.languages.join(","), "ocr engine ready");
            state = state.ocr_engine(engine);
        }
        let deps = app::handlers::HandlerDeps::new(blob_store, &cli.worker);
        let worker = app::handlers::worker(job_store, &cli.worker, &deps)?;
        state = state.worker_metrics(worker.metrics());
        Some(worker)
    } else {
        None
    };
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        with_worker = cli.with_worker,
        auth = cli.api_token.is_some(),
        "api listening"
    );
    let worker = worker.map(|worker| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let result = worker.run(shutdown.clone()).await;
            if !shutdown.is_cancelled() {
                // The worker stopped on its own: take the API down with it rather than
                // accept jobs nobody runs.
                shutdown.cancel();
            }
            result
        })
    });
    // The api's own request folders, and stored uploads whose ingest never started.
    let sweeper =
        app::handlers::spawn_sweeper(sweep_store, sweep_jobs, &cli.worker, shutdown.clone());
    let purge = crate::idempotency::spawn_key_purge(
        key_store,
        Arc::new(jobs_core::SystemClock),
        shutdown.clone(),
    );
    let served = serve(listener, state.build(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = sweeper.await;
    let _ = purge.await;
    if let Some(worker) = worker {
        worker
            .await
            .context("the worker task panicked")?
            .context("running the worker")?;
    }
    served.context("serving HTTP")?;
    tracing::info!("api stopped");
    Ok(())
}
