//! A worker process SIGKILLed mid-ingest on Postgres, and a second one that finishes it
//! (issue 24): a 200-page PDF whose every page carries its own marker ends as exactly 200
//! pages, each marker on its own page once, and no staged file left.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use books::testing::{PdfBuilder, require_poppler};
use books::{BookId, Books, IngestLimits, OcrStatus, StagedInput, layout};
use ingest::{INGEST_JOB_TYPE, IngestPayload, TextLayersChoice};
use jobs_core::testing::{enqueue_new, wait_for_job_with};
use jobs_core::{JobStatus, LockService, RecoveryPolicy, SystemClock};
use jobs_postgres::testing::TestDatabase;

use crate::support::{Process, checkpointed_pages, logs, worker_binary};

const PAGES: u32 = 200;

/// An `ingest` worker making two pages at a time, its manifest written every 5 pages.
fn ingest_worker(database_url: &str, storage_url: &str, id: &str, dir: &Path) -> Process {
    let mut command = Command::new(worker_binary());
    command
        .args(["--database-url", database_url, "--storage", storage_url])
        .args(["--worker-id", id, "--types", "ingest"])
        .args(["--ingest-concurrency", "2", "--manifest-flush-every", "5"])
        .args(["--heartbeat-interval", "200ms", "--stale-after", "2s"])
        .args(["--poll-interval", "100ms", "--progress-flush", "100ms"])
        .env("RUST_LOG", "info");
    Process::spawn(command, id, dir)
}

fn marker(page: u32) -> String {
    format!("Page marker {page:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_ingest_on_postgres_leaves_every_page_once_and_no_staging() {
    require_poppler().await;
    let database = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let storage_url = format!("file://{}/objects", dir.path().display());
    let blobs = app::storage::open_blob_store(&storage_url).await.unwrap();
    let books = Books::new(blobs.clone());
    let book = BookId::parse("two-hundred").unwrap();
    books.create(&book, "Two hundred pages").await.unwrap();
    // Each page's text layer is its marker and a line of prose: kept as the page's text.
    let pdf = (1..=PAGES)
        .fold(PdfBuilder::new(), |pdf, page| {
            pdf.text_page(&format!(
                "{}\nAdd the numerators and keep the denominator.",
                marker(page)
            ))
        })
        .build();
    let path = dir.path().join("book.pdf");
    std::fs::write(&path, &pdf).unwrap();
    let upload = books
        .stage_upload(
            &book,
            vec![StagedInput {
                name: "book.pdf".into(),
                path,
                bytes: pdf.len() as u64,
                sha256: String::new(),
            }],
            &IngestLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(upload.pages().len(), PAGES as usize);
    let jobs = app::stores::open_job_store(database.url()).await.unwrap();
    let lock = LockService::new(
        jobs.clone(),
        Arc::new(SystemClock),
        RecoveryPolicy::default(),
    );
    let payload = IngestPayload {
        upload: upload.clone(),
        text_layers: TextLayersChoice::Keep,
    };
    let job = enqueue_new(
        &lock,
        book.as_str(),
        INGEST_JOB_TYPE,
        serde_json::to_value(payload).unwrap(),
    )
    .await;

    let first = ingest_worker(database.url(), &storage_url, "ingest-a", dir.path());
    let running = wait_for_job_with(
        jobs.as_ref(),
        job.id,
        Duration::from_secs(120),
        "20 pages made and recorded",
        || logs(&[&first]),
        |job| job.status.is_terminal() || checkpointed_pages(job) >= 20,
    )
    .await;
    assert_eq!(running.status, JobStatus::Running, "ended before the kill");
    first.kill();
    let made_by_first = books.manifest(&book).await.unwrap().pages.len();
    assert!(made_by_first < PAGES as usize);

    let second = ingest_worker(database.url(), &storage_url, "ingest-b", dir.path());
    let done = wait_for_job_with(
        jobs.as_ref(),
        job.id,
        Duration::from_secs(600),
        "the ingest completed by the second worker",
        || logs(&[&second]),
        |job| job.status.is_terminal(),
    )
    .await;
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{done:#?}\n{}",
        second.log()
    );
    assert_eq!(done.worker_id.as_deref(), Some("ingest-b"));
    assert_eq!(done.progress.completed, u64::from(PAGES));

    // Exactly the 200 pages, in order, each with its own marker once.
    let manifest = books.manifest(&book).await.unwrap();
    let numbers: Vec<u32> = manifest.pages.iter().map(|page| page.page).collect();
    assert_eq!(numbers, (1..=PAGES).collect::<Vec<_>>());
    let mut texts = Vec::new();
    for page in &manifest.pages {
        assert_eq!(page.ocr.status, OcrStatus::Done, "{page:?}");
        let text = blobs
            .get(&layout::book_key(&book, page.ocr.text.as_deref().unwrap()))
            .await
            .unwrap()
            .bytes;
        texts.push(String::from_utf8(text.to_vec()).unwrap());
    }
    for (page, text) in (1..=PAGES).zip(&texts) {
        assert!(text.contains(&marker(page)), "page {page}: {text:?}");
        let everywhere = texts
            .iter()
            .filter(|text| text.contains(&marker(page)))
            .count();
        assert_eq!(everywhere, 1, "{} is on {everywhere} pages", marker(page));
    }
    let staged = blobs
        .list(&format!(
            "books/two-hundred/{}",
            layout::upload_dir(&upload.id)
        ))
        .await
        .unwrap();
    assert!(staged.is_empty(), "staging left: {staged:?}");
    eprintln!(
        "200-page ingest: {made_by_first} pages made before the kill, completed by the \
         second worker on attempt {}",
        done.attempt
    );
    database.drop().await;
}
