//! The state every handler shares: stores, the lock service and the API's settings.

use std::sync::Arc;
use std::time::Duration;

use app::preflight::OcrEngineInfo;
use blob_store::BlobStore;
use books::{Books, DecodeBudget, IngestLimits};
use jobs_core::runtime::WorkerMetrics;
use jobs_core::{Clock, JobStore, LockService, RecoveryPolicy, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::metrics::HttpMetrics;

/// Settings of the HTTP API. The defaults follow SPEC sections 4.1 and 5.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// With a token, every `/v1` route needs `Authorization: Bearer TOKEN`.
    pub api_token: Option<String>,
    /// With a metrics token, `/metrics` needs `Authorization: Bearer TOKEN` (this one, not
    /// the API's). `/healthz` and `/readyz` stay open for probes.
    pub metrics_token: Option<String>,
    /// Host names served without a token besides loopback ones (`--public-host`); other
    /// `Host` names are 421 `misdirected` then (DNS rebinding).
    pub public_hosts: Vec<String>,
    /// Stale detection of the lock service (lazy rescue before `job_active`); also the
    /// window in which a worker counts as live for `/readyz`.
    pub recovery: RecoveryPolicy,
    /// `max_attempts` of the jobs the API creates.
    pub max_attempts: u32,
    /// Limits of one page upload.
    pub ingest_limits: IngestLimits,
    /// Memory that decoding uploaded images may take at once, across every request
    /// (`None`: no bound).
    pub decode_budget_bytes: Option<u64>,
    /// Longest time an upload waits for that memory before it is answered 503
    /// `server_busy` with `Retry-After`.
    pub decode_wait: Duration,
    /// Longest time a request may take to produce its response (not the event stream).
    pub request_timeout: Duration,
    /// Longest time a page upload may take (reading, checking and storing the files).
    pub upload_timeout: Duration,
    /// Uploads this process takes at once; one more is answered 503 `server_busy`.
    pub max_uploads_in_flight: usize,
    /// Largest JSON body.
    pub json_body_limit: usize,
    /// Longest time a connection may take to send a request's headers, and may stay idle
    /// between requests (hyper's header timer runs whenever it waits for a request).
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How often an event stream looks for a change of its job.
    pub event_poll_interval: Duration,
    /// Comment lines sent this often keep idle event streams open through proxies.
    pub event_keep_alive: Duration,
    /// Event streams open at once; one more is answered 503 `server_busy`.
    pub max_event_streams: usize,
    /// An event stream ends after this long; the client reconnects with `Last-Event-ID`.
    pub event_stream_lifetime: Duration,
    /// The OCR language of books created without one (`--tesseract-languages`).
    pub default_language: String,
    /// The local folder an upload's files are received into (one `folio-upload-*` folder
    /// per request, removed when it ends); the system's temp folder by default.
    pub staging_dir: std::path::PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            api_token: None,
            metrics_token: None,
            public_hosts: Vec::new(),
            recovery: RecoveryPolicy::default(),
            max_attempts: LockService::DEFAULT_MAX_ATTEMPTS,
            ingest_limits: IngestLimits::default(),
            decode_budget_bytes: Some(ApiConfig::DEFAULT_DECODE_BUDGET_BYTES),
            decode_wait: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(600),
            max_uploads_in_flight: 4,
            json_body_limit: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4_096,
            event_poll_interval: Duration::from_millis(500),
            event_keep_alive: Duration::from_secs(15),
            max_event_streams: 1_000,
            event_stream_lifetime: Duration::from_secs(600),
            default_language: "eng".to_owned(),
            staging_dir: std::env::temp_dir(),
        }
    }
}

impl ApiConfig {
    /// The default decode budget: 1 GiB, room for one image at the pixel limit (12000 x
    /// 12000 RGB is 432 MB decoded) or several ordinary pages at once, and small beside
    /// the machines Folio runs on (2 cores, several GiB).
    pub const DEFAULT_DECODE_BUDGET_BYTES: u64 = 1024 * 1024 * 1024;
}

/// What handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    job_store: Arc<dyn JobStore>,
    books: Books,
    lock: LockService,
    clock: Arc<dyn Clock>,
    config: ApiConfig,
    worker_metrics: Option<Arc<WorkerMetrics>>,
    ocr_engine: Option<OcrEngineInfo>,
    http_metrics: HttpMetrics,
    shutdown: CancellationToken,
    upload_slots: Arc<tokio::sync::Semaphore>,
    feeds: crate::feeds::JobFeeds,
    stream_slots: Arc<tokio::sync::Semaphore>,
    /// The last `/readyz` answer and when it was checked (by [`Inner::clock`]).
    readiness: tokio::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, crate::dto::Readiness)>>,
}

impl AppState {
    /// The state over a job store and a blob store, with the system clock.
    pub fn new(
        job_store: Arc<dyn JobStore>,
        blob_store: Arc<dyn BlobStore>,
        config: ApiConfig,
    ) -> Self {
        Self::builder(job_store, blob_store, config).build()
    }

    /// A builder for the optional parts (clock, worker metrics, shutdown token).
    pub fn builder(
        job_store: Arc<dyn JobStore>,
        blob_store: Arc<dyn BlobStore>,
        config: ApiConfig,
    ) -> AppStateBuilder {
        AppStateBuilder {
            job_store,
            blob_store,
            config,
            clock: Arc::new(SystemClock),
            worker_metrics: None,
            ocr_engine: None,
            shutdown: CancellationToken::new(),
        }
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub fn job_store(&self) -> &Arc<dyn JobStore> {
        &self.inner.job_store
    }

    pub fn books(&self) -> &Books {
        &self.inner.books
    }

    /// The lock service the API starts, cancels and resumes jobs with.
    pub fn lock(&self) -> &LockService {
        &self.inner.lock
    }

    /// The clock of the lock service; `/readyz` counts workers seen within the stale window
    /// by it.
    pub(crate) fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// The in-process worker's metrics (`--with-worker`), served on `/metrics`.
    pub(crate) fn worker_metrics(&self) -> Option<&WorkerMetrics> {
        self.inner.worker_metrics.as_deref()
    }

    /// The in-process worker's OCR engine as its start-up check found it.
    pub(crate) fn ocr_engine(&self) -> Option<&OcrEngineInfo> {
        self.inner.ocr_engine.as_ref()
    }

    /// The API's request metrics.
    pub(crate) fn http_metrics(&self) -> &HttpMetrics {
        &self.inner.http_metrics
    }

    /// A slot for one upload, held until it drops; `None` when
    /// [`ApiConfig::max_uploads_in_flight`] uploads hold them all.
    pub(crate) fn upload_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.upload_slots.clone().try_acquire_owned().ok()
    }

    /// Fires at graceful shutdown: open event streams end.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The feeds of the jobs event streams follow.
    pub(crate) fn feeds(&self) -> &crate::feeds::JobFeeds {
        &self.inner.feeds
    }

    /// A place for one event stream, held until it drops; `None` when
    /// [`ApiConfig::max_event_streams`] streams hold them all.
    pub(crate) fn event_stream_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.stream_slots.clone().try_acquire_owned().ok()
    }

    /// The last `/readyz` answer with the time it was checked; held while a check runs, so
    /// that callers at once share one check.
    pub(crate) fn readiness(
        &self,
    ) -> &tokio::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, crate::dto::Readiness)>> {
        &self.inner.readiness
    }
}

/// Builds an [`AppState`].
#[derive(Debug)]
pub struct AppStateBuilder {
    job_store: Arc<dyn JobStore>,
    blob_store: Arc<dyn BlobStore>,
    config: ApiConfig,
    clock: Arc<dyn Clock>,
    worker_metrics: Option<Arc<WorkerMetrics>>,
    ocr_engine: Option<OcrEngineInfo>,
    shutdown: CancellationToken,
}

impl AppStateBuilder {
    /// The OCR engine of the in-process worker as its start-up check found it, shown by
    /// `/readyz`.
    pub fn ocr_engine(mut self, engine: OcrEngineInfo) -> Self {
        self.ocr_engine = Some(engine);
        self
    }

    /// The clock of the lock service (tests move time by hand).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The metrics of the in-process worker, served on `/metrics` with the API's own.
    pub fn worker_metrics(mut self, metrics: Arc<WorkerMetrics>) -> Self {
        self.worker_metrics = Some(metrics);
        self
    }

    /// A token that ends every open event stream when it fires (graceful shutdown).
    pub fn shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    pub fn build(self) -> AppState {
        let lock = LockService::new(
            self.job_store.clone(),
            self.clock.clone(),
            self.config.recovery,
        )
        .with_max_attempts(self.config.max_attempts);
        let feeds = crate::feeds::JobFeeds::new(
            self.job_store.clone(),
            self.config.event_poll_interval,
            self.shutdown.clone(),
        );
        AppState {
            inner: Arc::new(Inner {
                job_store: self.job_store,
                books: Books::new(self.blob_store)
                    .with_clock(self.clock.clone())
                    .with_decode_budget(
                        self.config
                            .decode_budget_bytes
                            .map_or_else(DecodeBudget::unlimited, |bytes| {
                                DecodeBudget::new(bytes, self.config.decode_wait)
                            }),
                    ),
                lock,
                clock: self.clock,
                worker_metrics: self.worker_metrics,
                ocr_engine: self.ocr_engine,
                http_metrics: HttpMetrics::default(),
                shutdown: self.shutdown,
                upload_slots: Arc::new(tokio::sync::Semaphore::new(
                    self.config.max_uploads_in_flight.max(1),
                )),
                readiness: tokio::sync::Mutex::new(None),
                feeds,
                stream_slots: Arc::new(tokio::sync::Semaphore::new(
                    self.config.max_event_streams.max(1),
                )),
                config: self.config,
            }),
        }
    }
}
