//! The `guidelines` and `finalize` jobs through a real worker on SQLite and `file://`: the
//! openai extractor's retries through the job (429 then success, 500 exhausted), the job's
//! own precondition check, and finalize writing identical bytes twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blob_store::{BlobStore, PutMode};
use books::{BookId, Books, GuidelinesStatus, OcrStatus, Page, layout};
use chat_client::testing::{FakeAnswer, FakeChatServer};
use extraction::{
    Extractor, FINALIZE_JOB_TYPE, FinalizeHandler, GUIDELINES_JOB_TYPE, GuidelinesConfig,
    GuidelinesHandler, RulesExtractor,
};
use jobs_core::runtime::{Worker, WorkerConfig};
use jobs_core::testing::{enqueue_new, wait_for_job};
use jobs_core::{Backoff, Job, JobStatus, JobStore, LockService, SystemClock};
use page_jobs::PageRetryPolicy;
use page_jobs::testing::LocalStores;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::openai::{FakeServerExtractor, topics_answer};

/// A book whose OCR is done, a worker with both handlers, and a lock service.
struct Harness {
    _dir: tempfile::TempDir,
    books: Books,
    store: Arc<dyn BlobStore>,
    jobs: Arc<dyn JobStore>,
    lock: LockService,
    book_id: BookId,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), jobs_core::runtime::WorkerError>>,
}

impl Harness {
    /// `texts` become pages 1, 2, ... with OCR done; `extractor` runs the guidelines.
    async fn start(texts: &[&str], extractor: Arc<dyn Extractor>) -> Self {
        let LocalStores {
            dir,
            blobs: store,
            jobs,
            books,
        } = LocalStores::open().await;
        let book_id = BookId::parse("book").unwrap();
        books.create(&book_id, "A book").await.unwrap();
        for (index, text) in texts.iter().enumerate() {
            let page = index as u32 + 1;
            store
                .put(
                    &layout::book_key(&book_id, &layout::ocr_text_path(page)),
                    bytes::Bytes::from(text.to_string()),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
        let pages = texts.len() as u32;
        books
            .update(&book_id, |manifest| {
                for page in 1..=pages {
                    let mut entry = Page::new(page, "page.png", 1, 1, 0, "");
                    entry.ocr.status = OcrStatus::Done;
                    entry.ocr.text = Some(layout::ocr_text_path(page));
                    manifest.upsert_page(entry);
                }
            })
            .await
            .unwrap();
        let config = WorkerConfig {
            heartbeat_interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(20),
            progress_flush: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(20),
            ..WorkerConfig::default()
        };
        let guidelines = GuidelinesHandler::new(
            books.clone(),
            extractor,
            GuidelinesConfig {
                manifest_flush_every: 5,
                retry: PageRetryPolicy {
                    max_tries: 3,
                    backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(2)),
                },
            },
        );
        let shutdown = CancellationToken::new();
        let worker = Worker::new(jobs.clone(), Arc::new(SystemClock), config.clone())
            .handler(Arc::new(guidelines))
            .handler(Arc::new(FinalizeHandler::new(books.clone())));
        let worker = tokio::spawn(worker.run(shutdown.clone()));
        let lock = LockService::new(
            jobs.clone(),
            Arc::new(SystemClock),
            config.recovery_policy(),
        );
        Self {
            _dir: dir,
            books,
            store,
            jobs,
            lock,
            book_id,
            shutdown,
            worker,
        }
    }

    /// Starts a job of `job_type` on the book and waits for its end.
    async fn run(&self, job_type: &str) -> Job {
        let job = enqueue_new(&self.lock, self.book_id.as_str(), job_type, json!({})).await;
        let what = format!("the {job_type} job to end");
        wait_for_job(&*self.jobs, job.id, Duration::from_secs(30), &what, |job| {
            job.status.is_terminal()
        })
        .await
    }

    async fn read(&self, path: &str) -> Vec<u8> {
        self.store
            .get(&layout::book_key(&self.book_id, path))
            .await
            .unwrap()
            .bytes
            .to_vec()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.worker.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn the_openai_extractor_in_a_job_retries_a_429_after_its_delay_and_completes() {
    let server = FakeChatServer::start(vec![
        FakeAnswer::error(429).with_header("retry-after", "1"),
        topics_answer(json!([{"title": "Fractions", "guidelines": [
            {"kind": "rule", "text": "Always simplify the result."}
        ]}])),
    ])
    .await;
    let harness = Harness::start(
        &["Fractions\nAlways simplify the result."],
        Arc::new(server.extractor()),
    )
    .await;
    let started = Instant::now();
    let job = harness.run(GUIDELINES_JOB_TYPE).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited for the server's Retry-After"
    );
    assert_eq!(server.requests().len(), 2);
    let page: serde_json::Value =
        serde_json::from_slice(&harness.read(&layout::page_guidelines_path(1)).await).unwrap();
    assert_eq!(
        page,
        json!({"page": 1, "topics": [{"title": "Fractions", "guidelines": [
            {"kind": "rule", "text": "Always simplify the result."}
        ]}]})
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_page_whose_500s_exhaust_its_tries_fails_the_job_naming_the_page() {
    let server =
        FakeChatServer::start(vec![topics_answer(json!([])), FakeAnswer::error(500)]).await;
    let harness = Harness::start(&["One", "Two", "Three"], Arc::new(server.extractor())).await;
    let job = harness.run(GUIDELINES_JOB_TYPE).await;
    // Page 1 got its answer; page 2 got three 500s: its tries are used, and the job's
    // attempts too (each attempt tries page 2 three times).
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap();
    assert_eq!(error.code, "extractor_http");
    assert!(error.message.starts_with("page 2: "), "{error:?}");
    assert!(error.message.contains("HTTP 500"), "{error:?}");
    assert!(error.retryable);
    assert_eq!(job.progress.last_completed_item.as_deref(), Some("1"));
    assert_eq!(server.requests().len(), 1 + 3 * job.attempt as usize);
    let manifest = harness.books.manifest(&harness.book_id).await.unwrap();
    assert_eq!(manifest.guidelines.pages_done, 1);
    assert_eq!(manifest.guidelines.status, GuidelinesStatus::Extracting);
    harness.stop().await;
}

#[tokio::test]
async fn the_job_itself_refuses_a_book_whose_ocr_is_not_done() {
    let harness = Harness::start(&["One", "Two"], Arc::new(RulesExtractor::new())).await;
    harness
        .books
        .update(&harness.book_id, |manifest| {
            manifest.page_mut(2).unwrap().ocr.status = OcrStatus::Failed;
        })
        .await
        .unwrap();
    let job = harness.run(GUIDELINES_JOB_TYPE).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert_eq!(error.code, "ocr_incomplete");
    assert_eq!(error.message, "OCR is not done for page 2");
    let job = harness.run(FINALIZE_JOB_TYPE).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert_eq!(error.code, "guidelines_incomplete");
    assert_eq!(error.message, "no guidelines for page 1, 2");
    harness.stop().await;
}

#[tokio::test]
async fn finalize_writes_identical_bytes_when_run_twice_and_marks_the_book_final() {
    let texts: Vec<&str> = vec![
        "Chapter 1. Adding Fractions\nAlways find a common denominator first.\nTip: draw a picture.",
        "1.2 Adding fractions\nAlways find a common denominator first!\nExample: 1/2 + 1/3 = 5/6.",
        "Chapter 2: Decimals\nA decimal is another way to write a fraction.",
    ];
    let harness = Harness::start(&texts, Arc::new(RulesExtractor::new())).await;
    assert_eq!(
        harness.run(GUIDELINES_JOB_TYPE).await.status,
        JobStatus::Completed
    );
    let manifest = harness.books.manifest(&harness.book_id).await.unwrap();
    assert_eq!(manifest.guidelines.status, GuidelinesStatus::Extracted);
    assert_eq!(manifest.guidelines.pages_done, 3);

    let first = harness.run(FINALIZE_JOB_TYPE).await;
    assert_eq!(first.status, JobStatus::Completed, "{first:?}");
    let json_once = harness.read(layout::FINAL_JSON_PATH).await;
    let markdown_once = harness.read(layout::FINAL_MARKDOWN_PATH).await;
    let second = harness.run(FINALIZE_JOB_TYPE).await;
    assert_eq!(second.status, JobStatus::Completed);
    assert_eq!(harness.read(layout::FINAL_JSON_PATH).await, json_once);
    assert_eq!(
        harness.read(layout::FINAL_MARKDOWN_PATH).await,
        markdown_once
    );

    let document: extraction::FinalGuidelines = serde_json::from_slice(&json_once).unwrap();
    let titles: Vec<&str> = document
        .topics
        .iter()
        .map(|topic| topic.title.as_str())
        .collect();
    assert_eq!(
        titles,
        ["Chapter 1. Adding Fractions", "Chapter 2: Decimals"]
    );
    assert_eq!(document.topics[0].pages, [1, 2]);
    let common = &document.topics[0].guidelines[0];
    assert_eq!(common.text, "Always find a common denominator first.");
    assert_eq!(
        common.pages,
        [1, 2],
        "the near-duplicate on page 2 merged into it"
    );
    let manifest = harness.books.manifest(&harness.book_id).await.unwrap();
    assert_eq!(manifest.guidelines.status, GuidelinesStatus::Final);
    assert_eq!(
        manifest.guidelines.final_path.as_deref(),
        Some(layout::FINAL_JSON_PATH)
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_job_gives_each_page_its_neighbours_so_a_sentence_over_a_page_break_is_one() {
    let texts = [
        "Chapter 1. Adding\nAlways write the units.\nTo add two fractions, first find the least common",
        "multiple of the denominators.\nNever divide by zero.",
        "Chapter 2. Ratios\nWrite the ratio in its simplest form.",
    ];
    let harness = Harness::start(&texts, Arc::new(RulesExtractor::new())).await;
    let job = harness.run(GUIDELINES_JOB_TYPE).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let page =
        |bytes: Vec<u8>| -> extraction::PageGuidelines { serde_json::from_slice(&bytes).unwrap() };
    let first = page(harness.read(&layout::page_guidelines_path(1)).await);
    let carried = &first.topics[0].guidelines[1];
    assert_eq!(
        carried.text,
        "To add two fractions, first find the least common multiple of the denominators."
    );
    assert_eq!(carried.pages, [1, 2]);
    let second = page(harness.read(&layout::page_guidelines_path(2)).await);
    assert_eq!(second.topics.len(), 1);
    let texts: Vec<&str> = second.topics[0]
        .guidelines
        .iter()
        .map(|guideline| guideline.text.as_str())
        .collect();
    assert_eq!(texts, ["Never divide by zero."]);
    harness.stop().await;
}
