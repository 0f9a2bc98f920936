//! Object storage faults under a real `worker` process with real tesseract, on moto (S3)
//! behind the fault proxy (`blob_store::conformance::fault_proxy`): the worker's storage
//! goes through the proxy, the test watches the book through a direct, unproxied store.
//!
//! 1. SlowDown bursts, resets mid-response, latency and a 20 s outage mid-job: the job
//!    completes, every page is done once with its text, and the manifest parses at every
//!    observation.
//! 2. A permanent outage: the job fails in bounded time with `storage_unavailable`; once
//!    storage is back, a resume completes it.
//!
//! Pages redone are counted as tesseract runs beyond one per page: the worker runs a
//! `tesseract` wrapper (first on its `PATH`) that records each recognition and then runs
//! the real program. Each test prints its figures.
//!
//! The process, polling and counting-`tesseract` helpers are the package's `tests/support`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blob_store::conformance::fault_proxy::{Fault, FaultProxy, FaultRule};
use blob_store::conformance::moto;
use blob_store::{S3BlobStore, S3Config};
use books::{BookId, Books, Manifest, OcrStatus, layout};
use jobs_core::testing::{enqueue_new, expect_created, wait_for_job_with};
use jobs_core::{Job, JobId, JobStatus, JobStore, LockService, RecoveryPolicy, SystemClock};
use jobs_postgres::testing::TestDatabase;
use ocr::testing::{
    FIXTURE_PAGES, character_error_rate, fixture_book, fixture_pages, require_tesseract,
};
use support::{
    Process, checkpointed_pages, counting_tesseract, path_with, recognitions, total, worker_binary,
};

mod support;

const PAGES: usize = 12;

/// A `worker` of `ocr` jobs whose storage is `book`'s bucket through its fault proxy;
/// killed when dropped.
fn worker(database_url: &str, book: &S3Book, id: &str, storage_wait: &str) -> Process {
    let credentials = moto::test_credentials();
    let mut command = Command::new(worker_binary());
    command
        .args(["--database-url", database_url])
        .args(["--storage", &format!("s3://{}", book.bucket)])
        .args([
            "--worker-id",
            id,
            "--types",
            "ocr",
            "--ocr-engine",
            "tesseract",
        ])
        .args(["--ocr-concurrency", "2", "--manifest-flush-every", "2"])
        .args(["--storage-wait", storage_wait])
        .args(["--heartbeat-interval", "200ms", "--stale-after", "5s"])
        .args(["--poll-interval", "100ms", "--progress-flush", "100ms"])
        .env("PATH", path_with(&book.tesseract_wrapper_dir))
        .env("AWS_ENDPOINT_URL", book.proxy.url())
        .env("AWS_ACCESS_KEY_ID", &credentials.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &credentials.secret_access_key)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env("RUST_LOG", "info");
    Process::spawn(command, id, book.dir.path())
}

/// A book of the twelve fixture pages on S3 (moto), the fault proxy the worker talks
/// through, a direct store the test reads through, and a job store.
struct S3Book {
    dir: tempfile::TempDir,
    _endpoint: moto::TestEndpoint,
    proxy: FaultProxy,
    bucket: String,
    books: Books,
    book_id: BookId,
    jobs: Arc<dyn JobStore>,
    lock: LockService,
    tesseract_wrapper_dir: PathBuf,
    tesseract_runs: PathBuf,
}

impl S3Book {
    async fn create(database_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = moto::test_endpoint();
        let bucket = format!(
            "folio-faults-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let direct = S3BlobStore::from_env(
            S3Config::new(&bucket)
                .with_endpoint(endpoint.url())
                .with_region("us-east-1")
                .with_credentials(moto::test_credentials()),
        )
        .await
        .unwrap();
        direct
            .client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let books = Books::new(Arc::new(direct));
        let book_id = fixture_book(&books, "fractions", "Fractions", FIXTURE_PAGES as usize).await;
        let proxy = FaultProxy::start(endpoint.url()).await;
        let jobs = app::stores::open_job_store(database_url).await.unwrap();
        let lock = LockService::new(
            jobs.clone(),
            Arc::new(SystemClock),
            RecoveryPolicy::default(),
        );
        let (tesseract_wrapper_dir, tesseract_runs) = counting_tesseract(dir.path());
        Self {
            dir,
            _endpoint: endpoint,
            proxy,
            bucket,
            books,
            book_id,
            jobs,
            lock,
            tesseract_wrapper_dir,
            tesseract_runs,
        }
    }

    async fn enqueue(&self) -> Job {
        let (book, payload) = (self.book_id.as_str(), serde_json::json!({}));
        enqueue_new(&self.lock, book, ocr::OCR_JOB_TYPE, payload).await
    }

    /// Polls the job until `done` holds; panics after `limit` with the proxy's figures and
    /// the log.
    async fn wait_for(
        &self,
        id: JobId,
        what: &str,
        worker: &Process,
        limit: Duration,
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let context = || {
            format!(
                "proxy: {:?}\nworker log:\n{}",
                self.proxy.stats(),
                worker.log()
            )
        };
        wait_for_job_with(self.jobs.as_ref(), id, limit, what, context, done).await
    }

    /// Recognitions run so far, every page together.
    fn tesseract_runs(&self) -> usize {
        total(&recognitions(&self.tesseract_runs))
    }

    /// Every page done once, its text stored as the manifest says and close to the
    /// fixture; no page missing.
    async fn assert_every_page_done_once(&self) -> Manifest {
        let manifest = self.books.manifest(&self.book_id).await.unwrap();
        assert_eq!(manifest.pages.len(), PAGES);
        for (entry, fixture) in manifest.pages.iter().zip(fixture_pages()) {
            assert_eq!(entry.page, fixture.number);
            assert_eq!(entry.ocr.status, OcrStatus::Done, "page {}", entry.page);
            assert_eq!(
                entry.ocr.attempts, 1,
                "page {} recorded {} attempts",
                entry.page, entry.ocr.attempts
            );
            assert_eq!(entry.ocr.engine.as_deref(), Some("tesseract"));
            assert_eq!(
                entry.ocr.text.as_deref(),
                Some(layout::ocr_text_path(entry.page).as_str())
            );
            let key = layout::book_key(&self.book_id, &layout::ocr_text_path(entry.page));
            let text =
                String::from_utf8(self.books.store().get(&key).await.unwrap().bytes.to_vec())
                    .unwrap();
            assert_eq!(entry.ocr.chars, Some(text.chars().count() as u64));
            let rate = character_error_rate(&fixture.text, &text);
            assert!(
                rate < 0.03,
                "page {}: error rate {rate:.3}: {text:?}",
                entry.page
            );
        }
        manifest
    }
}

/// Reads the manifest through the direct store every 50 ms until stopped: every read
/// must parse, and a page once done must stay done.
struct ManifestWatch {
    stop: Arc<AtomicBool>,
    observations: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl ManifestWatch {
    fn start(books: Books, book_id: BookId) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let observations = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            let observations = observations.clone();
            async move {
                let key = layout::manifest_key(&book_id);
                let mut done: BTreeSet<u32> = BTreeSet::new();
                while !stop.load(Ordering::SeqCst) {
                    let raw = books
                        .store()
                        .get(&key)
                        .await
                        .map_err(|error| format!("reading the manifest: {error:?}"))?;
                    let manifest: Manifest =
                        serde_json::from_slice(&raw.bytes).map_err(|error| {
                            format!(
                                "the manifest does not parse: {error}:\n{}",
                                String::from_utf8_lossy(&raw.bytes)
                            )
                        })?;
                    books
                        .manifest(&book_id)
                        .await
                        .map_err(|error| format!("Books::manifest: {error:?}"))?;
                    for page in &manifest.pages {
                        let now_done = page.ocr.status == OcrStatus::Done;
                        if done.contains(&page.page) && !now_done {
                            return Err(format!("page {} was done and is not", page.page));
                        }
                        if now_done {
                            done.insert(page.page);
                        }
                    }
                    if manifest.pages.len() != PAGES {
                        return Err(format!("{} pages in the manifest", manifest.pages.len()));
                    }
                    observations.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            }
        });
        Self {
            stop,
            observations,
            task,
        }
    }

    /// Stops watching; panics with the first violation seen. Returns the reads made.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(violation) = self.task.await.unwrap() {
            panic!("{violation}");
        }
        self.observations.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocr_job_rides_out_slow_down_bursts_resets_latency_and_a_20s_outage_on_postgres() {
    require_tesseract().await;
    let database = TestDatabase::create().await;
    let url = database.url();
    let book = S3Book::create(url).await;
    let watch = ManifestWatch::start(book.books.clone(), book.book_id.clone());

    // Throttling, cut responses and latency from the start.
    book.proxy.slow_down_fraction(0.2);
    book.proxy.reset_fraction(0.1);
    book.proxy
        .add_rule(FaultRule::fraction(Fault::ResetMidResponse, 0.5).path_contains("metadata.json"));
    book.proxy.set_latency(Duration::from_millis(30));

    let started = Instant::now();
    let worker = worker(url, &book, "faults-worker", "60s");
    let job = book.enqueue().await;
    book.wait_for(
        job.id,
        "four pages checkpointed",
        &worker,
        Duration::from_secs(60),
        |job| job.status.is_terminal() || checkpointed_pages(job) >= 4,
    )
    .await;
    let before_outage = book.jobs.get(job.id).await.unwrap();
    assert_eq!(
        before_outage.status,
        JobStatus::Running,
        "the job ended before the outage: {before_outage:#?}"
    );

    // A full outage for 20 s, mid-job.
    book.proxy.outage_for(Duration::from_secs(20));
    let outage_started = Instant::now();
    while book.proxy.in_outage() {
        let job = book.jobs.get(job.id).await.unwrap();
        assert!(
            !job.status.is_terminal(),
            "the job ended in the outage: {job:#?}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outage = outage_started.elapsed();
    // Then a burst of each fault.
    book.proxy.slow_down_next(5);
    book.proxy.reset_next(3);

    let done = book
        .wait_for(
            job.id,
            "the end of the job",
            &worker,
            Duration::from_secs(90),
            |job| job.status.is_terminal(),
        )
        .await;
    let elapsed = started.elapsed();
    let observations = watch.finish().await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{done:#?}\nproxy: {:?}\n{}",
        book.proxy.stats(),
        worker.log()
    );
    assert_eq!(done.attempt, 1, "the outage used up an attempt: {done:#?}");
    assert_eq!(done.progress.completed, PAGES as u64);
    assert_eq!(done.progress.failed, 0);
    book.assert_every_page_done_once().await;
    let stats = book.proxy.stats();
    assert!(
        stats.slow_downs > 0 && stats.resets > 0 && stats.outage_resets > 0,
        "{stats:?}"
    );
    let runs = book.tesseract_runs();
    assert!(runs >= PAGES, "{runs} tesseract runs");
    eprintln!(
        "storage faults (bursts, resets, latency, {outage:.1?} outage): pages done {PAGES}, \
         pages redone {}, tesseract runs {runs}, time to complete {elapsed:.1?}, \
         manifest reads {observations} (all valid), proxy {stats:?}",
        runs - PAGES
    );
    drop(worker);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_outage_fails_the_job_with_storage_unavailable_and_resume_completes_it_on_sqlite()
 {
    require_tesseract().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let book = S3Book::create(&url).await;
    let watch = ManifestWatch::start(book.books.clone(), book.book_id.clone());

    let started = Instant::now();
    let worker = worker(&url, &book, "outage-worker", "3s");
    let job = book.enqueue().await;
    book.wait_for(
        job.id,
        "two pages checkpointed",
        &worker,
        Duration::from_secs(60),
        |job| job.status.is_terminal() || checkpointed_pages(job) >= 2,
    )
    .await;
    book.proxy.outage();
    let outage_started = Instant::now();
    let failed = book
        .wait_for(
            job.id,
            "the job's failure",
            &worker,
            Duration::from_secs(60),
            |job| job.status.is_terminal(),
        )
        .await;
    let time_to_fail = outage_started.elapsed();
    assert_eq!(
        failed.status,
        JobStatus::Failed,
        "{failed:#?}\n{}",
        worker.log()
    );
    let error = failed.error.clone().expect("an error");
    assert_eq!(error.code, "storage_unavailable", "{error:#?}");
    assert!(error.retryable, "{error:#?}");
    assert!(
        error
            .message
            .contains("storage temporarily unavailable during"),
        "{error:#?}"
    );
    assert_eq!(failed.attempt, failed.max_attempts, "{failed:#?}");
    // What the failed job holds as done, the manifest holds as done.
    let manifest = book.books.manifest(&book.book_id).await.unwrap();
    let checkpoint: ocr::OcrCheckpoint =
        serde_json::from_value(failed.checkpoint.clone().expect("a checkpoint")).unwrap();
    for page in &checkpoint.done {
        assert_eq!(
            manifest.page(*page).unwrap().ocr.status,
            OcrStatus::Done,
            "checkpointed page {page}"
        );
    }
    let runs_before_resume = book.tesseract_runs();

    // Storage is back: a resume completes the book.
    book.proxy.heal();
    let resumed = expect_created(book.lock.resume(failed.id).await.unwrap(), "fractions");
    let done = book
        .wait_for(
            resumed.id,
            "the resumed job's end",
            &worker,
            Duration::from_secs(60),
            |job| job.status.is_terminal(),
        )
        .await;
    let elapsed = started.elapsed();
    let observations = watch.finish().await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{done:#?}\n{}",
        worker.log()
    );
    assert_eq!(done.resumed_from, Some(failed.id));
    book.assert_every_page_done_once().await;
    let runs = book.tesseract_runs();
    eprintln!(
        "permanent outage: failed after {time_to_fail:.1?} with {}: {}; checkpoint held {} \
         pages; after resume: pages done {PAGES}, pages redone {}, tesseract runs {runs} \
         ({runs_before_resume} before the resume), time to complete {elapsed:.1?}, manifest \
         reads {observations} (all valid)",
        error.code,
        error.message,
        checkpoint.done.len(),
        runs - PAGES
    );
}
