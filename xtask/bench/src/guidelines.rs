//! `cargo xtask bench guidelines --pages N`: the `guidelines` job with the `rules` extractor
//! through the real runtime on SQLite + `file://`, then the `finalize` job, on a synthetic
//! book whose OCR is done: the sample pages' text, renumbered per page, with a running
//! header, a page number line and one sentence unique to the page (so finalize keeps one
//! distinct guideline per page beside the merged repeats).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use books::{BookId, Books, OcrStatus, Page, layout};
use extraction::{
    FINALIZE_JOB_TYPE, FinalizeHandler, GUIDELINES_JOB_TYPE, GuidelinesConfig, GuidelinesHandler,
    RulesExtractor,
};
use jobs_core::runtime::{Worker, WorkerConfig};
use jobs_core::{Acquire, JobStatus, JobStore, LockService, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::flags::{Flags, report};

pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let n_pages: u32 = flags.get("pages", 1000)?;
    if n_pages == 0 {
        bail!("--pages must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let blob_store = blob_store::open(&format!("file://{}/objects", dir.path().display())).await?;
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let job_store: Arc<dyn JobStore> = Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await?);
    let books = Books::new(blob_store.clone());
    let book_id = BookId::parse("bench-guidelines")?;
    books.create(&book_id, "Guidelines benchmark").await?;
    write_ocr_done_book(&books, &book_id, n_pages).await?;

    let config = WorkerConfig {
        poll_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    };
    let clock = Arc::new(SystemClock);
    let worker = Worker::new(job_store.clone(), clock.clone(), config.clone())
        .handler(Arc::new(GuidelinesHandler::new(
            books.clone(),
            Arc::new(RulesExtractor::new()),
            GuidelinesConfig::default(),
        )))
        .handler(Arc::new(FinalizeHandler::new(books.clone())));
    let shutdown = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let lock = LockService::new(job_store.clone(), clock, config.recovery_policy());

    let guidelines = run_job(&lock, &job_store, &book_id, GUIDELINES_JOB_TYPE).await?;
    let finalize = run_job(&lock, &job_store, &book_id, FINALIZE_JOB_TYPE).await?;
    shutdown.cancel();
    worker_task.await??;

    let final_json = blob_store
        .get(&layout::book_key(&book_id, layout::FINAL_JSON_PATH))
        .await?;
    let document: extraction::FinalGuidelines = serde_json::from_slice(&final_json.bytes)?;
    let n_guidelines: usize = document
        .topics
        .iter()
        .map(|topic| topic.guidelines.len())
        .sum();
    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    report(&serde_json::json!({
        "bench": "guidelines",
        "pages": n_pages,
        "pages_per_s": round(f64::from(n_pages) / guidelines.as_secs_f64()),
        "guidelines_s": round(guidelines.as_secs_f64()),
        "finalize_ms": round(finalize.as_secs_f64() * 1000.0),
        "topics": document.topics.len(),
        "final_guidelines": n_guidelines,
    }));
    Ok(())
}

/// A book of `n_pages` pages whose OCR is done, with synthetic text.
async fn write_ocr_done_book(books: &Books, book_id: &BookId, n_pages: u32) -> Result<()> {
    let fixtures = ocr::testing::fixture_pages();
    for page in 1..=n_pages {
        let fixture = &fixtures[(page as usize - 1) % fixtures.len()];
        let mut lines = fixture.text.lines();
        let heading = lines.next().unwrap_or_default();
        let title = heading.split_once(": ").map_or(heading, |(_, title)| title);
        // The page's own sentence sits mid-page: at the edges, a line repeated on most
        // pages but for its number reads as a running footer.
        let mut text = format!(
            "Folio Bench Book\nSection {page}. {title}\nAlways check exercise {page} twice.\n"
        );
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!("{page}\n"));
        books
            .store()
            .put(
                &layout::book_key(book_id, &layout::ocr_text_path(page)),
                bytes::Bytes::from(text),
                blob_store::PutMode::Overwrite,
            )
            .await?;
    }
    books
        .update(book_id, |manifest| {
            for page in 1..=n_pages {
                let mut entry = Page::new(page, format!("page-{page:04}.png"), 1, 1, 0, "");
                entry.ocr.status = OcrStatus::Done;
                entry.ocr.text = Some(layout::ocr_text_path(page));
                entry.ocr.engine = Some("synthetic".into());
                manifest.upsert_page(entry);
            }
        })
        .await?;
    Ok(())
}

/// Starts a job and waits until it completes; its time from start to end.
async fn run_job(
    lock: &LockService,
    job_store: &Arc<dyn JobStore>,
    book_id: &BookId,
    job_type: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let Acquire::Created(job) = lock
        .acquire(book_id.as_str(), job_type, serde_json::json!({}))
        .await?
    else {
        bail!("a {job_type} job is already active");
    };
    let deadline = started + Duration::from_secs(600);
    loop {
        let job = job_store.get(job.id).await?;
        if job.status.is_terminal() {
            if job.status != JobStatus::Completed {
                bail!("the {job_type} job ended {}: {:?}", job.status, job.error);
            }
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the {job_type} job did not end within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
