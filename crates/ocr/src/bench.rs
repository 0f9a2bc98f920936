//! Timed runs for `cargo xtask bench ocr`: the full pipeline (upload, a worker, the `ocr`
//! job) and bare tesseract on the same pages at the same parallelism.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blob_store::BlobStore;
use books::{BookId, Books, BooksError, IngestError, IngestLimits, UploadedFile};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use jobs_core::runtime::{Worker, WorkerConfig, WorkerError};
use jobs_core::{Acquire, Job, JobStatus, JobStore, LockService, StoreError, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::{
    OCR_JOB_TYPE, OcrEngine, OcrError, OcrHandler, OcrJobConfig, PageImage, TesseractConfig,
    TesseractEngine,
};

/// How [`run_pipeline`] runs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The engine (tesseract for the benchmark).
    pub engine: Arc<dyn OcrEngine>,
    /// The `ocr` job's settings; `concurrency` is the parallelism.
    pub job: OcrJobConfig,
    /// The in-process worker's settings.
    pub worker: WorkerConfig,
    /// Longest wait for the job to end.
    pub timeout: Duration,
}

impl PipelineOptions {
    /// Tesseract with default settings, `parallelism` pages at a time.
    pub fn tesseract(parallelism: usize) -> Self {
        Self {
            engine: Arc::new(TesseractEngine::default()),
            job: OcrJobConfig {
                concurrency: parallelism.max(1),
                ..OcrJobConfig::default()
            },
            worker: WorkerConfig {
                concurrency: 1,
                poll_interval: Duration::from_millis(50),
                progress_flush: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
            timeout: Duration::from_secs(3600),
        }
    }
}

/// What [`run_pipeline`] measured.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    /// The book it created.
    pub book_id: BookId,
    /// Pages uploaded.
    pub pages: usize,
    /// Creating the book and ingesting the pages (validation, PNG conversion, storage).
    pub upload: Duration,
    /// From enqueueing the `ocr` job to seeing it completed.
    pub ocr: Duration,
    /// Upload and OCR together.
    pub total: Duration,
    /// The job as it ended.
    pub job: Job,
}

impl PipelineReport {
    /// Pages per second over the whole pipeline.
    pub fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.total.as_secs_f64()
    }
}

/// What [`run_bare_tesseract`] measured.
#[derive(Debug, Clone, Copy)]
pub struct BareReport {
    /// Pages recognized.
    pub pages: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl BareReport {
    pub fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Creating the book failed.
    #[error("creating the benchmark book failed")]
    Books(#[from] BooksError),
    /// Uploading the pages failed.
    #[error("uploading the pages failed")]
    Ingest(#[from] IngestError),
    /// The job store failed.
    #[error("job store failed")]
    Store(#[from] StoreError),
    /// The worker stopped with an error.
    #[error("worker failed")]
    Worker(#[from] WorkerError),
    /// Another `ocr` job holds the book.
    #[error("an ocr job is already active for the book")]
    Busy,
    /// The job ended without completing.
    #[error("the ocr job ended {status}: {error}")]
    JobNotCompleted { status: JobStatus, error: String },
    /// The job did not end in time.
    #[error("the ocr job did not end within {0:?}")]
    Timeout(Duration),
    /// Recognition failed (bare tesseract).
    #[error("recognition failed")]
    Ocr(#[from] OcrError),
}

/// The full pipeline on `pages` (PNGs): creates a fresh book in `blob_store`, uploads the
/// pages through ingestion, enqueues an `ocr` job for every page in `job_store`, runs an
/// in-process worker with only the `ocr` handler until the job completes, and reports the
/// timings. The worker claims any due `ocr` job of the store: use a store of its own.
pub async fn run_pipeline(
    blob_store: Arc<dyn BlobStore>,
    job_store: Arc<dyn JobStore>,
    pages: Vec<Bytes>,
    options: PipelineOptions,
) -> Result<PipelineReport, BenchError> {
    let files = pages
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| UploadedFile {
            name: format!("page-{:04}.png", index + 1),
            bytes,
        })
        .collect();
    run_pipeline_on_files(blob_store, job_store, files, options).await
}

/// [`run_pipeline`] on uploaded files as they are (page images, or PDFs that ingestion
/// renders to one page per PDF page, their text layers ignored so every page is OCRed):
/// the upload's time includes the rendering.
pub async fn run_pipeline_on_files(
    blob_store: Arc<dyn BlobStore>,
    job_store: Arc<dyn JobStore>,
    files: Vec<UploadedFile>,
    options: PipelineOptions,
) -> Result<PipelineReport, BenchError> {
    let started = Instant::now();
    let books = Books::new(blob_store);
    let book_id = BookId::parse(&format!("bench-{:016x}", rand::random::<u64>()))
        .expect("generated book ids are valid");
    books.create(&book_id, "OCR benchmark").await?;
    let count = books
        .ingest_pages_with(
            &book_id,
            files,
            &IngestLimits::default(),
            books::TextLayers::Ignore,
        )
        .await?
        .len();
    let upload = started.elapsed();

    let clock = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let worker = Worker::new(job_store.clone(), clock.clone(), options.worker.clone()).handler(
        Arc::new(OcrHandler::new(books, options.engine.clone(), options.job)),
    );
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let lock = LockService::new(job_store.clone(), clock, options.worker.recovery_policy());
    let ocr_started = Instant::now();
    let outcome = async {
        let job = match lock
            .acquire(book_id.as_str(), OCR_JOB_TYPE, serde_json::json!({}))
            .await?
        {
            Acquire::Created(job) => job,
            Acquire::Busy(_) => return Err(BenchError::Busy),
        };
        let deadline = Instant::now() + options.timeout;
        loop {
            let job = job_store.get(job.id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(options.timeout));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    .await;
    let ocr = ocr_started.elapsed();
    shutdown.cancel();
    let stopped = worker_task.await.expect("the worker task does not panic");
    let job = outcome?;
    stopped?;
    if job.status != JobStatus::Completed {
        return Err(BenchError::JobNotCompleted {
            status: job.status,
            error: job
                .error
                .as_ref()
                .map(|error| format!("{}: {}", error.code, error.message))
                .unwrap_or_default(),
        });
    }
    Ok(PipelineReport {
        book_id,
        pages: count,
        upload,
        ocr,
        total: started.elapsed(),
        job,
    })
}

/// Bare tesseract on `pages` (PNGs), `parallelism` processes at a time, with the same
/// command line as [`TesseractEngine`] (`OMP_THREAD_LIMIT=1`, PNG on standard input).
pub async fn run_bare_tesseract(
    pages: &[Bytes],
    parallelism: usize,
    config: &TesseractConfig,
) -> Result<BareReport, BenchError> {
    let engine = TesseractEngine::new(config.clone());
    let cancel = CancellationToken::new();
    let started = Instant::now();
    stream::iter(pages.iter().enumerate())
        .map(|(index, png)| {
            let image = PageImage::new(index as u32 + 1, png.clone());
            let engine = &engine;
            let cancel = &cancel;
            async move { engine.recognize_page(&image, cancel).await }
        })
        .buffer_unordered(parallelism.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(BareReport {
        pages: pages.len(),
        elapsed: started.elapsed(),
    })
}
