//! The benchmark library: the full pipeline and bare tesseract on the same pages.

use std::time::Duration;

use books::{BookId, Books, OcrStatus};
use jobs_core::JobStatus;
use ocr::TesseractConfig;
use ocr::bench::{PipelineOptions, run_bare_tesseract, run_pipeline};
use ocr::testing::{fixture_pages, require_tesseract};
use page_jobs::testing::LocalStores;

#[tokio::test]
async fn the_pipeline_and_bare_tesseract_read_the_same_pages_and_report_their_timings() {
    require_tesseract().await;
    let stores = LocalStores::open().await;
    let (blobs, jobs) = (stores.blobs.clone(), stores.jobs.clone());
    let pages: Vec<_> = fixture_pages()
        .into_iter()
        .take(3)
        .map(|page| page.png)
        .collect();

    let mut options = PipelineOptions::tesseract(2);
    options.timeout = Duration::from_secs(120);
    let report = run_pipeline(blobs.clone(), jobs, pages.clone(), options)
        .await
        .unwrap();
    assert_eq!(report.pages, 3);
    assert_eq!(report.job.status, JobStatus::Completed);
    assert_eq!(report.job.progress.completed, 3);
    assert!(report.total >= report.ocr && report.total >= report.upload);
    assert!(report.pages_per_s() > 0.0);
    let manifest = Books::new(blobs)
        .manifest(&BookId::parse(report.book_id.as_str()).unwrap())
        .await
        .unwrap();
    assert!(
        manifest
            .pages
            .iter()
            .all(|page| page.ocr.status == OcrStatus::Done)
    );

    let bare = run_bare_tesseract(&pages, 2, &TesseractConfig::default())
        .await
        .unwrap();
    assert_eq!(bare.pages, 3);
    assert!(bare.pages_per_s() > 0.0);
}
