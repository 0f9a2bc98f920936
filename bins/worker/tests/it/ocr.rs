//! Process-level tests of bulk OCR: real `worker` processes with real tesseract, on
//! Postgres and on SQLite, including a worker SIGKILLed mid-book and a second worker that
//! takes the book over, and a worker SIGKILLed right after the last page of an OCR job with
//! a chain, whose book still ends finalized.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Process, checkpointed_pages, logs, worker_binary};
use books::{BookId, Books, GuidelinesStatus, Manifest, OcrStatus, layout};
use jobs_core::testing::{enqueue_new, eventually_with, expect_created, wait_for_job_with};
use jobs_core::{
    ChainStep, Job, JobId, JobStatus, JobStore, LockService, RecoveryPolicy, SystemClock,
};
use jobs_postgres::testing::TestDatabase;
use ocr::OcrCheckpoint;
use ocr::testing::{
    FIXTURE_PAGES, character_error_rate, done_pages, fixture_book, fixture_pages, require_tesseract,
};

const OCR_CONCURRENCY: usize = 2;
const MANIFEST_FLUSH_EVERY: usize = 5;

/// A `worker` of `ocr` jobs only.
fn ocr_worker(database_url: &str, storage_url: &str, id: &str, log_dir: &Path) -> Process {
    let concurrency = OCR_CONCURRENCY.to_string();
    let flush_every = MANIFEST_FLUSH_EVERY.to_string();
    let flags = [
        "--types",
        "ocr",
        "--ocr-concurrency",
        &concurrency,
        "--manifest-flush-every",
        &flush_every,
    ];
    spawn_worker(database_url, storage_url, id, log_dir, &flags)
}

/// A worker of every product job type (`ocr`, `guidelines`, `finalize`) that reads one page
/// at a time and checkpoints after each.
fn pipeline_worker(database_url: &str, storage_url: &str, id: &str, log_dir: &Path) -> Process {
    let flags = ["--ocr-concurrency", "1", "--manifest-flush-every", "1"];
    spawn_worker(database_url, storage_url, id, log_dir, &flags)
}

/// A `worker` process with the suite's timings and `flags`; killed when dropped.
fn spawn_worker(
    database_url: &str,
    storage_url: &str,
    id: &str,
    log_dir: &Path,
    flags: &[&str],
) -> Process {
    let mut command = Command::new(worker_binary());
    command
        .args(["--database-url", database_url, "--storage", storage_url])
        .args(["--worker-id", id, "--ocr-engine", "tesseract"])
        .args(flags)
        .args(["--heartbeat-interval", "200ms", "--stale-after", "2s"])
        .args(["--poll-interval", "100ms", "--progress-flush", "100ms"])
        .env("RUST_LOG", "info");
    Process::spawn(command, id, log_dir)
}

/// A book of the twelve fixture pages in a file store, and a job store.
struct Book {
    dir: tempfile::TempDir,
    storage_url: String,
    books: Books,
    book_id: BookId,
    jobs: Arc<dyn JobStore>,
    lock: LockService,
}

impl Book {
    async fn create(database_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage_url = format!("file://{}/objects", dir.path().display());
        let books = Books::new(app::storage::open_blob_store(&storage_url).await.unwrap());
        let book_id = fixture_book(&books, "fractions", "Fractions", FIXTURE_PAGES as usize).await;
        let jobs = app::stores::open_job_store(database_url).await.unwrap();
        let lock = LockService::new(
            jobs.clone(),
            Arc::new(SystemClock),
            RecoveryPolicy::default(),
        );
        Self {
            dir,
            storage_url,
            books,
            book_id,
            jobs,
            lock,
        }
    }

    fn worker(&self, database_url: &str, id: &str) -> Process {
        ocr_worker(database_url, &self.storage_url, id, self.dir.path())
    }

    fn pipeline_worker(&self, database_url: &str, id: &str) -> Process {
        pipeline_worker(database_url, &self.storage_url, id, self.dir.path())
    }

    async fn enqueue(&self) -> Job {
        let (book, payload) = (self.book_id.as_str(), serde_json::json!({}));
        enqueue_new(&self.lock, book, ocr::OCR_JOB_TYPE, payload).await
    }

    /// Polls the job until `done` holds; panics after 120 s with the logs.
    async fn wait_for(
        &self,
        id: JobId,
        what: &str,
        workers: &[&Process],
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let context = || format!("logs:\n{}", logs(workers));
        wait_for_job_with(
            self.jobs.as_ref(),
            id,
            Duration::from_secs(120),
            what,
            context,
            done,
        )
        .await
    }

    async fn manifest(&self) -> Manifest {
        self.books.manifest(&self.book_id).await.unwrap()
    }

    /// The pages whose OCR text exists in storage.
    async fn pages_with_text(&self) -> BTreeSet<u32> {
        let prefix = format!("{}ocr/", layout::book_prefix(&self.book_id));
        self.books
            .store()
            .list(&prefix)
            .await
            .unwrap()
            .iter()
            // Each page's hOCR sits beside its text: count the texts.
            .filter_map(|entry| {
                let name = entry.key.strip_prefix(&prefix).unwrap();
                name.strip_suffix(".txt")
                    .map(|number| number.parse().unwrap())
            })
            .collect()
    }

    async fn text(&self, page: u32) -> String {
        let key = layout::book_key(&self.book_id, &layout::ocr_text_path(page));
        let blob = self.books.store().get(&key).await.unwrap();
        String::from_utf8(blob.bytes.to_vec()).unwrap()
    }

    /// Every page done, its text stored as the manifest says, and close to the fixture.
    async fn assert_every_page_read(&self) {
        let manifest = self.manifest().await;
        assert_eq!(manifest.pages.len(), 12);
        for (entry, fixture) in manifest.pages.iter().zip(fixture_pages()) {
            assert_eq!(entry.ocr.status, OcrStatus::Done, "page {}", entry.page);
            assert_eq!(entry.ocr.engine.as_deref(), Some("tesseract"));
            assert_eq!(
                entry.ocr.text.as_deref(),
                Some(layout::ocr_text_path(entry.page).as_str())
            );
            let text = self.text(entry.page).await;
            assert_eq!(entry.ocr.chars, Some(text.chars().count() as u64));
            let rate = character_error_rate(&fixture.text, &text);
            assert!(
                rate < 0.03,
                "page {}: error rate {rate:.3}: {text:?}",
                entry.page
            );
        }
    }
}

fn checkpoint(job: &Job) -> OcrCheckpoint {
    serde_json::from_value(job.checkpoint.clone().expect("a checkpoint")).unwrap()
}

async fn a_twelve_page_book_is_read_by_a_worker_process(database_url: &str) {
    require_tesseract().await;
    let book = Book::create(database_url).await;
    let worker = book.worker(database_url, "ocr-worker");
    let job = book.enqueue().await;
    let job = book
        .wait_for(job.id, "the end of the job", &[&worker], |job| {
            job.status.is_terminal()
        })
        .await;
    assert_eq!(
        job.status,
        JobStatus::Completed,
        "{job:#?}\n{}",
        worker.log()
    );
    assert_eq!(job.progress.total, Some(12));
    assert_eq!(job.progress.completed, 12);
    assert_eq!(job.progress.failed, 0);
    assert_eq!(job.progress.last_completed_item.as_deref(), Some("12"));
    book.assert_every_page_read().await;
}

async fn a_worker_killed_mid_book_loses_no_page_and_the_next_redoes_few(database_url: &str) {
    require_tesseract().await;
    let book = Book::create(database_url).await;
    let first = book.worker(database_url, "ocr-worker-a");
    let job = book.enqueue().await;
    let running = book
        .wait_for(
            job.id,
            "a first manifest batch and more",
            &[&first],
            |job| job.status.is_terminal() || checkpointed_pages(job) >= MANIFEST_FLUSH_EVERY,
        )
        .await;
    assert_eq!(
        running.status,
        JobStatus::Running,
        "the book finished before the kill"
    );
    first.kill();

    // What the killed worker left: a durable checkpoint the manifest agrees with, and
    // maybe text of pages it never recorded.
    let killed = book.jobs.get(job.id).await.unwrap();
    let durable = checkpoint(&killed);
    let recorded = done_pages(&book.manifest().await);
    let written = book.pages_with_text().await;
    for page in &durable.done {
        assert!(
            recorded.contains(page),
            "checkpoint names page {page}, the manifest does not"
        );
    }
    assert!(durable.done.len() < 12);

    let second = book.worker(database_url, "ocr-worker-b");
    let done = book
        .wait_for(
            job.id,
            "completion by the second worker",
            &[&second],
            |job| job.status.is_terminal(),
        )
        .await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{done:#?}\n{}",
        second.log()
    );
    assert_eq!(done.worker_id.as_deref(), Some("ocr-worker-b"));
    assert_eq!(done.attempt, 2);

    // No page lost; pages read twice (text written by the first worker, yet not in its
    // durable checkpoint) are bounded by one manifest batch plus the pages in flight.
    book.assert_every_page_read().await;
    let durable_done: BTreeSet<u32> = durable.done.iter().copied().collect();
    let redone: Vec<u32> = written.difference(&durable_done).copied().collect();
    assert!(
        redone.len() <= MANIFEST_FLUSH_EVERY + OCR_CONCURRENCY,
        "redone {redone:?} after a checkpoint of {durable_done:?}"
    );
    let final_checkpoint = checkpoint(&done);
    assert_eq!(final_checkpoint.done, (1..=12).collect::<Vec<_>>());
    assert_eq!(book.pages_with_text().await, (1..=12).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_page_book_is_read_by_a_worker_process_with_tesseract_on_postgres() {
    let database = TestDatabase::create().await;
    a_twelve_page_book_is_read_by_a_worker_process(database.url()).await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_page_book_is_read_by_a_worker_process_with_tesseract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    a_twelve_page_book_is_read_by_a_worker_process(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_book_on_postgres_loses_no_page_and_the_next_redoes_few() {
    let database = TestDatabase::create().await;
    a_worker_killed_mid_book_loses_no_page_and_the_next_redoes_few(database.url()).await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_book_on_sqlite_loses_no_page_and_the_next_redoes_few() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    a_worker_killed_mid_book_loses_no_page_and_the_next_redoes_few(&url).await;
}

/// Issue 13: a worker SIGKILLed right after the last page of an `ocr` job with the chain
/// `guidelines, finalize` (the page recorded in the manifest, the job not completed yet)
/// breaks no link: the job is requeued, another worker completes it, the completion inserts
/// `guidelines` in the same transaction, and the book ends finalized. The first worker is
/// held between the last page and the job's end by a lock on the job's row (its writes wait),
/// and killed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_right_after_the_last_ocr_page_on_postgres_still_finalizes_the_chained_book()
 {
    require_tesseract().await;
    let database = TestDatabase::create().await;
    let url = database.url();
    let book = Book::create(url).await;
    let first = book.pipeline_worker(url, "chain-worker-a");
    let then = vec![
        ChainStep::new("guidelines", serde_json::json!({})),
        ChainStep::new("finalize", serde_json::json!({})),
    ];
    let job = expect_created(
        book.lock
            .acquire_chain(
                book.book_id.as_str(),
                ocr::OCR_JOB_TYPE,
                serde_json::json!({}),
                then,
            )
            .await
            .unwrap(),
        book.book_id.as_str(),
    );

    // Eleven pages checkpointed: the last one is in tesseract. Hold the job's row, so the
    // worker records the last page in the manifest and then waits to write its checkpoint.
    book.wait_for(job.id, "eleven pages done", &[&first], |job| {
        job.status.is_terminal() || checkpointed_pages(job) >= 11
    })
    .await;
    let lock = database.lock_job(job.id).await;
    assert_eq!(lock.job.status, JobStatus::Running, "{:#?}", lock.job);
    assert_eq!(
        checkpointed_pages(&lock.job),
        11,
        "the last page was done before the row was locked"
    );
    eventually_with(
        Duration::from_secs(60),
        "the last page to be recorded",
        || first.log(),
        || async { (done_pages(&book.manifest().await).len() >= 12).then_some(()) },
    )
    .await;
    first.kill();
    lock.release().await;

    let second = book.pipeline_worker(url, "chain-worker-b");
    let terminal = |job: &Job| job.status.is_terminal();
    let ocr_job = book
        .wait_for(job.id, "the ocr job's end", &[&second], terminal)
        .await;
    assert_eq!(
        ocr_job.status,
        JobStatus::Completed,
        "{ocr_job:#?}\n{}",
        second.log()
    );
    assert_eq!(ocr_job.worker_id.as_deref(), Some("chain-worker-b"));
    assert_eq!(ocr_job.attempt, 2);
    let guidelines_id = ocr_job
        .next_job_id
        .expect("the completion inserted guidelines");
    let guidelines = book
        .wait_for(
            guidelines_id,
            "the guidelines job's end",
            &[&second],
            terminal,
        )
        .await;
    assert_eq!(guidelines.status, JobStatus::Completed, "{guidelines:#?}");
    assert_eq!(guidelines.job_type, "guidelines");
    assert_eq!(guidelines.previous_job_id, Some(job.id));
    let finalize_id = guidelines.next_job_id.expect("then finalize");
    let finalize = book
        .wait_for(finalize_id, "the finalize job's end", &[&second], terminal)
        .await;
    assert_eq!(finalize.status, JobStatus::Completed, "{finalize:#?}");
    assert_eq!(finalize.previous_job_id, Some(guidelines.id));
    assert_eq!(finalize.next_job_id, None);

    book.assert_every_page_read().await;
    let manifest = book.manifest().await;
    assert_eq!(manifest.guidelines.status, GuidelinesStatus::Final);
    let final_key = layout::book_key(&book.book_id, "guidelines/final.json");
    assert!(book.books.store().head(&final_key).await.is_ok());
    drop(second);
    database.drop().await;
}
