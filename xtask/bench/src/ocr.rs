//! `bench ocr`: the ocr job with real tesseract against bare tesseract.

use std::sync::Arc;

use anyhow::{Context, Result};
use jobs_core::JobStore;

use crate::flags::{Flags, report};

/// `bench ocr --pages N [--parallelism P] [--pdf true]`: the full stack (upload, a worker,
/// the `ocr` job with real tesseract) against bare `tesseract` on the same full book pages
/// (letter size at 300 dpi, a column of text; `ocr::testing::full_pages`) at the same
/// parallelism. With `--pdf true` the same pages are uploaded as one PDF (scanned pages, no
/// text layer), which ingestion renders back to 300 dpi PNGs with poppler's `pdftoppm`: the
/// difference in upload time is the cost of rendering.
pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let n_pages: usize = flags.get("pages", 20)?;
    let pdf: bool = flags.get("pdf", false)?;
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let parallelism: usize = flags.get("parallelism", cpus)?;
    let fixtures = ocr::testing::full_pages(n_pages);
    let pages: Vec<bytes::Bytes> = fixtures.iter().map(|page| page.png.clone()).collect();
    let chars_per_page = fixtures
        .iter()
        .map(|page| page.text.chars().count())
        .sum::<usize>()
        / n_pages.max(1);

    let bare =
        ocr::bench::run_bare_tesseract(&pages, parallelism, &ocr::TesseractConfig::default())
            .await
            .context("bare tesseract (is tesseract-ocr installed? scripts/install-tesseract.sh)")?;

    let fixtures = &fixtures;
    let run = |files: Vec<books::UploadedFile>| async move {
        let dir = tempfile::tempdir()?;
        let blob_store =
            blob_store::open(&format!("file://{}/objects", dir.path().display())).await?;
        let url = format!("sqlite://{}/jobs.db", dir.path().display());
        let job_store: Arc<dyn JobStore> =
            Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await?);
        let options = ocr::bench::PipelineOptions::tesseract(parallelism);
        let report =
            ocr::bench::run_pipeline_on_files(blob_store.clone(), job_store, files, options)
                .await?;
        let text_errors = character_errors(&blob_store, &report.book_id, fixtures).await?;
        anyhow::Ok((report, text_errors))
    };
    let png_files: Vec<books::UploadedFile> = pages
        .iter()
        .enumerate()
        .map(|(index, png)| books::UploadedFile {
            name: format!("page-{:04}.png", index + 1),
            bytes: png.clone(),
        })
        .collect();
    let (pipeline, cer) = run(png_files).await?;

    let pipeline_pages_per_s = pipeline.pages_per_s();
    let ocr_pages_per_s = n_pages as f64 / pipeline.ocr.as_secs_f64();
    let bare_pages_per_s = bare.pages_per_s();
    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    let mut result = serde_json::json!({
        "bench": "ocr",
        "pages": n_pages,
        "page_px": "2550x3300",
        "chars_per_page": chars_per_page,
        "parallelism": parallelism,
        "pages_per_s": round(pipeline_pages_per_s),
        "ocr_phase_pages_per_s": round(ocr_pages_per_s),
        "bare_pages_per_s": round(bare_pages_per_s),
        "overhead_ratio": round(bare_pages_per_s / pipeline_pages_per_s),
        "relative_throughput": round(pipeline_pages_per_s / bare_pages_per_s),
        "upload_s": round(pipeline.upload.as_secs_f64()),
        "ocr_s": round(pipeline.ocr.as_secs_f64()),
        "bare_s": round(bare.elapsed.as_secs_f64()),
        "mean_cer": round(cer),
    });
    if pdf {
        let mut builder = books::testing::PdfBuilder::new();
        for png in &pages {
            builder = builder.scanned_page(png);
        }
        let document = builder.build();
        let pdf_bytes = document.len();
        let (with_pdf, pdf_cer) = run(vec![books::UploadedFile {
            name: "book.pdf".to_owned(),
            bytes: bytes::Bytes::from(document),
        }])
        .await?;
        anyhow::ensure!(
            with_pdf.pages == n_pages,
            "the PDF became {} pages, not {n_pages}",
            with_pdf.pages
        );
        let render_s = with_pdf.upload.as_secs_f64() - pipeline.upload.as_secs_f64();
        let object = result.as_object_mut().expect("an object");
        object.insert("pdf_bytes".into(), pdf_bytes.into());
        object.insert(
            "pdf_pages_per_s".into(),
            round(with_pdf.pages_per_s()).into(),
        );
        object.insert(
            "pdf_upload_s".into(),
            round(with_pdf.upload.as_secs_f64()).into(),
        );
        object.insert(
            "pdf_render_s_per_page".into(),
            round(render_s / n_pages as f64).into(),
        );
        object.insert("pdf_ocr_s".into(), round(with_pdf.ocr.as_secs_f64()).into());
        object.insert("pdf_mean_cer".into(), round(pdf_cer).into());
    }
    report(&result);
    Ok(())
}

/// The mean character error rate of the book's OCR texts against the pages' texts.
async fn character_errors(
    blob_store: &Arc<dyn blob_store::BlobStore>,
    book_id: &books::BookId,
    pages: &[ocr::testing::FixturePage],
) -> Result<f64> {
    let mut sum = 0.0;
    for (index, page) in pages.iter().enumerate() {
        let key = books::layout::book_key(book_id, &books::layout::ocr_text_path(index as u32 + 1));
        let text = blob_store.get(&key).await?.bytes;
        sum += ocr::testing::character_error_rate(&page.text, &String::from_utf8_lossy(&text));
    }
    Ok(sum / pages.len().max(1) as f64)
}
