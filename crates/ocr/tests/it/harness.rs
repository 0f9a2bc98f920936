//! A book in a file blob store, a SQLite job store and an in-process worker.

use std::sync::Arc;
use std::time::Duration;

use books::{BookId, Books, Manifest};
use jobs_core::runtime::{Worker, WorkerConfig};
use jobs_core::testing::{enqueue_new, wait_for_job};
use jobs_core::{Job, JobId, JobStore, LockService, SystemClock};
use ocr::testing::fixture_book;
use ocr::{OCR_JOB_TYPE, OcrEngine, OcrHandler, OcrJobConfig, PageRetryPolicy};
use page_jobs::testing::LocalStores;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct Harness {
    _dir: tempfile::TempDir,
    pub(crate) books: Books,
    pub(crate) jobs: Arc<dyn JobStore>,
    pub(crate) lock: LockService,
    pub(crate) book_id: BookId,
}

pub(crate) fn worker_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        heartbeat_interval: Duration::from_millis(200),
        stale_after: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        progress_flush: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        retry_backoff: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

pub(crate) fn job_config(concurrency: usize, flush_every: usize) -> OcrJobConfig {
    OcrJobConfig {
        concurrency,
        manifest_flush_every: flush_every,
        retry: PageRetryPolicy {
            max_tries: 3,
            backoff: jobs_core::Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        },
        storage_wait: Duration::from_secs(5),
        ..OcrJobConfig::default()
    }
}

impl Harness {
    /// A book with the `pages` first fixture pages.
    pub(crate) async fn with_pages(pages: usize) -> Self {
        let LocalStores {
            dir, jobs, books, ..
        } = LocalStores::open().await;
        let book_id = fixture_book(&books, "test-book", "Fractions", pages).await;
        let lock = LockService::new(
            jobs.clone(),
            Arc::new(SystemClock),
            worker_config().recovery_policy(),
        );
        Self {
            _dir: dir,
            books,
            jobs,
            lock,
            book_id,
        }
    }

    pub(crate) async fn enqueue(&self, payload: serde_json::Value) -> Job {
        enqueue_new(&self.lock, self.book_id.as_str(), OCR_JOB_TYPE, payload).await
    }

    pub(crate) fn start_worker(
        &self,
        engine: Arc<dyn OcrEngine>,
        config: OcrJobConfig,
    ) -> RunningWorker {
        let shutdown = CancellationToken::new();
        let handler = OcrHandler::new(self.books.clone(), engine, config);
        let worker = Worker::new(self.jobs.clone(), Arc::new(SystemClock), worker_config())
            .handler(Arc::new(handler));
        let task = tokio::spawn(worker.run(shutdown.clone()));
        RunningWorker { shutdown, task }
    }

    pub(crate) async fn manifest(&self) -> Manifest {
        self.books.manifest(&self.book_id).await.unwrap()
    }

    /// Waits (with a deadline) until `check` holds for the job, returning it.
    pub(crate) async fn wait_for(
        &self,
        id: JobId,
        what: &str,
        check: impl Fn(&Job) -> bool,
    ) -> Job {
        wait_for_job(&*self.jobs, id, Duration::from_secs(60), what, check).await
    }

    pub(crate) async fn wait_terminal(&self, id: JobId) -> Job {
        self.wait_for(id, "a terminal status", |job| job.status.is_terminal())
            .await
    }

    pub(crate) async fn text(&self, page: u32) -> Option<String> {
        let key = books::layout::book_key(&self.book_id, &books::layout::ocr_text_path(page));
        match self.books.store().get(&key).await {
            Ok(blob) => Some(String::from_utf8(blob.bytes.to_vec()).unwrap()),
            Err(error) if error.is_not_found() => None,
            Err(error) => panic!("{error}"),
        }
    }
}

pub(crate) struct RunningWorker {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), jobs_core::runtime::WorkerError>>,
}

impl RunningWorker {
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}
