//! The `ingest` job on the embedded default's stores through the real worker runtime: an
//! upload of images and a PDF becomes its pages with previews (a PDF text layer kept),
//! staged files go when it completes, a page made twice is the same page, and a file cut in
//! its pixels fails the job naming the file and the page, keeping the pages made.

use std::sync::Arc;
use std::time::Duration;

use books::testing::{PdfBuilder, require_poppler};
use books::{BookId, IngestLimits, OcrStatus, StagedInput, Upload, layout};
use ingest::{INGEST_JOB_TYPE, IngestHandler, IngestJobConfig, IngestPayload, TextLayersChoice};
use jobs_core::runtime::{Worker, WorkerConfig};
use jobs_core::testing::{enqueue_new, wait_for_job};
use jobs_core::{Job, JobStatus, LockService, SystemClock};
use page_jobs::testing::LocalStores;
use tokio_util::sync::CancellationToken;

fn fixture(number: u32) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ocr/tests/fixtures");
    std::fs::read(format!("{dir}/page-{number:02}.png")).unwrap()
}

/// Writes `files` to a folder of `dir` as the api streams an upload, and stages them.
async fn stage(stores: &LocalStores, book: &BookId, files: &[(&str, Vec<u8>)]) -> Upload {
    let folder = stores.dir.path().join(format!("request-{}", rand_suffix()));
    std::fs::create_dir_all(&folder).unwrap();
    let inputs = files
        .iter()
        .enumerate()
        .map(|(index, (name, bytes))| {
            let path = folder.join(index.to_string());
            std::fs::write(&path, bytes).unwrap();
            StagedInput {
                name: (*name).to_owned(),
                path,
                bytes: bytes.len() as u64,
                sha256: String::new(),
            }
        })
        .collect();
    stores
        .books
        .stage_upload(book, inputs, &IngestLimits::default())
        .await
        .unwrap()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Runs one `ingest` job of `upload` with `config` to its end.
async fn run(stores: &LocalStores, book: &BookId, upload: &Upload, config: IngestJobConfig) -> Job {
    let clock = Arc::new(SystemClock);
    let worker_config = WorkerConfig {
        poll_interval: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(200),
        progress_flush: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let lock = LockService::new(
        stores.jobs.clone(),
        clock.clone(),
        worker_config.recovery_policy(),
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
    let worker = Worker::new(stores.jobs.clone(), clock, worker_config)
        .handler(Arc::new(IngestHandler::new(stores.books.clone(), config)));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let ended = wait_for_job(
        stores.jobs.as_ref(),
        job.id,
        Duration::from_secs(120),
        "the ingest to end",
        |job| job.status.is_terminal(),
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    ended
}

async fn keys(stores: &LocalStores, prefix: &str) -> Vec<String> {
    stores
        .blobs
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_images_and_a_pdf_becomes_its_pages_in_order_and_its_files_go() {
    require_poppler().await;
    let stores = LocalStores::open().await;
    let book = BookId::parse("mixed").unwrap();
    stores.books.create(&book, "Mixed").await.unwrap();
    let pdf = PdfBuilder::new()
        .scanned_page(&fixture(3))
        .text_page("Chapter 2. Subtracting fractions\nSubtract the numerators.")
        .build();
    let upload = stage(
        &stores,
        &book,
        &[
            ("a.png", fixture(1)),
            ("book.pdf", pdf),
            ("b.png", fixture(2)),
        ],
    )
    .await;
    assert_eq!(upload.pages(), [1, 2, 3, 4]);
    assert_eq!(keys(&stores, "books/mixed/uploads/").await.len(), 3);
    assert!(stores.books.manifest(&book).await.unwrap().pages.is_empty());

    let job = run(&stores, &book, &upload, IngestJobConfig::default()).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.progress.completed, 4);
    let manifest = stores.books.manifest(&book).await.unwrap();
    let sources: Vec<(u32, &str)> = manifest
        .pages
        .iter()
        .map(|page| (page.page, page.source_name.as_str()))
        .collect();
    assert_eq!(
        sources,
        [(1, "a.png"), (2, "book.pdf"), (3, "book.pdf"), (4, "b.png")]
    );
    for page in &manifest.pages {
        assert!(page.thumbnail.is_some(), "{page:?}");
        let image = stores
            .blobs
            .get(&layout::book_key(&book, &page.image))
            .await
            .unwrap();
        assert_eq!(page.sha256.len(), 64);
        assert_eq!(page.bytes, image.bytes.len() as u64);
    }
    // The PDF's text page keeps its text layer; the scan is left for OCR.
    assert_eq!(manifest.pages[1].ocr.status, OcrStatus::Pending);
    assert_eq!(manifest.pages[2].ocr.status, OcrStatus::Done);
    assert_eq!(manifest.pages[2].ocr.engine.as_deref(), Some("pdf-text"));
    assert_eq!(
        keys(&stores, "books/mixed/uploads/").await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_made_twice_is_the_same_page_and_kept_originals_stay() {
    let stores = LocalStores::open().await;
    let book = BookId::parse("twice").unwrap();
    stores.books.create(&book, "Twice").await.unwrap();
    let upload = stage(
        &stores,
        &book,
        &[("a.png", fixture(1)), ("b.png", fixture(2))],
    )
    .await;
    let keep = IngestJobConfig {
        keep_originals: true,
        ..IngestJobConfig::default()
    };
    let first = run(&stores, &book, &upload, keep.clone()).await;
    assert_eq!(first.status, JobStatus::Completed, "{first:?}");
    let before = stores.books.manifest(&book).await.unwrap().pages;
    let objects = keys(&stores, "books/twice/").await;
    assert_eq!(keys(&stores, "books/twice/uploads/").await.len(), 2, "kept");
    // The whole upload again, as a run that lost its checkpoint would make it.
    let second = run(&stores, &book, &upload, keep).await;
    assert_eq!(second.status, JobStatus::Completed, "{second:?}");
    let after = stores.books.manifest(&book).await.unwrap().pages;
    assert_eq!(after.len(), 2, "no duplicate page");
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.page, &a.sha256, &a.thumbnail),
            (b.page, &b.sha256, &b.thumbnail)
        );
    }
    assert_eq!(
        keys(&stores, "books/twice/").await,
        objects,
        "the same objects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_in_its_pixels_fails_the_job_naming_it_and_the_pages_made_stay() {
    let stores = LocalStores::open().await;
    let book = BookId::parse("cut").unwrap();
    stores.books.create(&book, "Cut").await.unwrap();
    let good = fixture(1);
    let cut = good[..good.len() / 2].to_vec();
    let upload = stage(&stores, &book, &[("ok.png", good), ("cut.png", cut)]).await;
    let config = IngestJobConfig {
        concurrency: 1,
        ..IngestJobConfig::default()
    };
    let job = run(&stores, &book, &upload, config).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.unwrap();
    assert_eq!(error.code, "corrupt");
    assert!(
        error.message.contains("page 2") && error.message.contains("file 2 (cut.png)"),
        "{}",
        error.message
    );
    let manifest = stores.books.manifest(&book).await.unwrap();
    assert_eq!(manifest.pages.len(), 1);
    assert_eq!(manifest.pages[0].source_name, "ok.png");
    assert_eq!(
        keys(&stores, "books/cut/uploads/").await.len(),
        2,
        "a failed ingest keeps its files for a resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_stale_staging_after_the_grace_period_and_never_a_live_ingests() {
    let stores = LocalStores::open().await;
    let book = BookId::parse("swept").unwrap();
    stores.books.create(&book, "Swept").await.unwrap();
    // An upload whose api was killed before it started the ingest, and one whose ingest
    // is waiting for a worker.
    let orphan = stage(&stores, &book, &[("a.png", fixture(1))]).await;
    let live = stage(&stores, &book, &[("b.png", fixture(2))]).await;
    let clock = Arc::new(jobs_core::ManualClock::new(chrono::Utc::now()));
    let lock = LockService::new(
        stores.jobs.clone(),
        clock.clone(),
        jobs_core::RecoveryPolicy::default(),
    );
    let payload = IngestPayload {
        upload: live.clone(),
        text_layers: TextLayersChoice::Keep,
    };
    enqueue_new(
        &lock,
        book.as_str(),
        INGEST_JOB_TYPE,
        serde_json::to_value(payload).unwrap(),
    )
    .await;
    // A request folder a killed api left, and a file of someone else's.
    let local = stores.dir.path().join("tmp");
    std::fs::create_dir_all(local.join("folio-upload-killed")).unwrap();
    std::fs::write(local.join("folio-upload-killed/0000"), b"half a file").unwrap();
    std::fs::create_dir_all(local.join("not-ours")).unwrap();
    let grace = Duration::from_secs(3600);
    let sweeper = ingest::Sweeper::new(
        stores.books.clone(),
        stores.jobs.clone(),
        clock.clone(),
        grace,
    )
    .with_local_dir(local.clone());
    let uploads = |upload: &Upload| format!("books/swept/{}", layout::upload_dir(&upload.id));

    // Within the grace period nothing goes.
    assert_eq!(
        sweeper.sweep().await.unwrap(),
        ingest::SweepReport::default()
    );
    assert_eq!(keys(&stores, &uploads(&orphan)).await.len(), 1);

    clock.advance(grace + Duration::from_secs(60));
    let report = sweeper.sweep().await.unwrap();
    assert_eq!(report.uploads, [format!("swept/{}", orphan.id)]);
    assert_eq!(report.folders, [local.join("folio-upload-killed")]);
    assert_eq!(keys(&stores, &uploads(&orphan)).await, Vec::<String>::new());
    assert_eq!(
        keys(&stores, &uploads(&live)).await.len(),
        1,
        "a live ingest's upload stays"
    );
    assert!(local.join("not-ours").exists());
    // Nothing of the book itself goes.
    assert!(stores.books.manifest(&book).await.is_ok());
}
