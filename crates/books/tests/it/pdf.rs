//! PDF uploads (SPEC 4.6) with PDFs written by the tests: one page per PDF page in order,
//! rendered at 300 dpi; text layers kept as `pdf-text` (or ignored); encrypted, broken,
//! too long and too large PDFs refused with nothing stored; the decode budget covers
//! rendering.

use std::sync::Arc;
use std::time::Duration;

use blob_store::BlobStore;
use blob_store::conformance::file_test_store;
use books::testing::{LETTER, PdfBuilder, encrypt, require_poppler};
use books::{
    BookId, Books, DecodeBudget, FileRejection, IngestError, IngestLimits, OcrStatus,
    PDF_TEXT_ENGINE, PdfTools, TextLayers, UploadedFile, layout,
};
use bytes::Bytes;
use image::ImageFormat;
use sha2::{Digest, Sha256};

use crate::counting_store::CountingStore;
use crate::images::encoded;

fn id(text: &str) -> BookId {
    BookId::parse(text).unwrap()
}

fn file(name: &str, bytes: Vec<u8>) -> UploadedFile {
    UploadedFile {
        name: name.to_owned(),
        bytes: Bytes::from(bytes),
    }
}

/// The repo's fixture page `number` (crates/ocr/tests/fixtures): its PNG and its text.
fn fixture(number: u32) -> (Vec<u8>, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ocr/tests/fixtures");
    (
        std::fs::read(format!("{dir}/page-{number:02}.png")).unwrap(),
        std::fs::read_to_string(format!("{dir}/page-{number:02}.txt")).unwrap(),
    )
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn books() -> (Books, Arc<dyn BlobStore>, impl Sized) {
    require_poppler().await;
    let fixture = file_test_store().await;
    let store = fixture.store();
    let books = Books::new(store.clone());
    books.create(&id("b1"), "T").await.unwrap();
    (books, store, fixture)
}

async fn keys(store: &Arc<dyn BlobStore>, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect()
}

#[tokio::test]
async fn a_scanned_pdf_becomes_one_png_page_per_pdf_page_at_300_dpi_left_for_ocr() {
    let (books, store, _fixture) = books().await;
    let pdf = (1..=3)
        .fold(PdfBuilder::new(), |pdf, number| {
            pdf.scanned_page(&fixture(number).0)
        })
        .build();
    let pages = books
        .ingest_pages(
            &id("b1"),
            vec![file("scan.pdf", pdf)],
            &IngestLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        pages.iter().map(|page| page.page).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for (page, number) in pages.iter().zip(1..) {
        assert_eq!(page.source_name, "scan.pdf");
        assert_eq!(page.ocr.status, OcrStatus::Pending, "no text layer");
        assert_eq!(page.ocr.engine, None);
        let stored = store
            .get(&layout::book_key(&id("b1"), &page.image))
            .await
            .unwrap()
            .bytes;
        assert_eq!(page.sha256, hex(&stored));
        assert_eq!(page.bytes, stored.len() as u64);
        let preview = store
            .get(&layout::book_key(
                &id("b1"),
                page.thumbnail.as_deref().unwrap(),
            ))
            .await
            .unwrap()
            .bytes;
        let preview = image::load_from_memory_with_format(&preview, ImageFormat::Jpeg).unwrap();
        assert_eq!(preview.width(), books::THUMBNAIL_WIDTH);
        // The page is the image's size at 300 dpi: rendering gives its pixels back.
        let rendered = image::load_from_memory_with_format(&stored, ImageFormat::Png).unwrap();
        let original = image::load_from_memory(&fixture(number).0).unwrap();
        assert_eq!(
            (page.width, page.height),
            (rendered.width(), rendered.height())
        );
        assert!(
            rendered.width().abs_diff(original.width()) <= 1
                && rendered.height().abs_diff(original.height()) <= 1,
            "page {number}: {}x{} rendered from {}x{}",
            rendered.width(),
            rendered.height(),
            original.width(),
            original.height()
        );
    }
    assert_eq!(keys(&store, "books/b1/ocr/").await, Vec::<String>::new());
    assert_eq!(books.manifest(&id("b1")).await.unwrap().pages, pages);
}

#[tokio::test]
async fn a_full_page_of_prose_has_a_preview_of_a_few_kb_where_its_image_has_hundreds() {
    let (books, store, _fixture) = books().await;
    let line = "Add the numerators and keep the denominator when the denominators match. ";
    let text: Vec<String> = (0..42).map(|row| line[row % 9..].to_owned()).collect();
    let pdf = PdfBuilder::new().text_page(&text.join("\n")).build();
    let pages = books
        .ingest_pages_with(
            &id("b1"),
            vec![file("prose.pdf", pdf)],
            &IngestLimits::default(),
            TextLayers::Ignore,
        )
        .await
        .unwrap();
    let page = &pages[0];
    let preview = store
        .get(&layout::book_key(
            &id("b1"),
            page.thumbnail.as_deref().unwrap(),
        ))
        .await
        .unwrap()
        .bytes;
    // A few KB a page: a 1,000-page book's grid, scrolled top to bottom, is well under 20 MB.
    assert!(
        preview.len() < 12_000 && preview.len() * 20 < page.bytes as usize,
        "the preview is {} bytes, the {}x{} page {} bytes",
        preview.len(),
        page.width,
        page.height,
        page.bytes
    );
}

#[tokio::test]
async fn text_pages_keep_their_text_layer_as_done_pdf_text_pages() {
    let (books, store, _fixture) = books().await;
    let texts: Vec<String> = (1..=2).map(|number| fixture(number).1).collect();
    let pdf = PdfBuilder::new()
        .text_page(&texts[0])
        .text_page(&texts[1])
        .build();
    let pages = books
        .ingest_pages(
            &id("b1"),
            vec![file("text.pdf", pdf)],
            &IngestLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    for (page, text) in pages.iter().zip(&texts) {
        assert_eq!((page.width, page.height), (2550, 3300), "letter at 300 dpi");
        assert_eq!(page.ocr.status, OcrStatus::Done);
        assert_eq!(page.ocr.engine.as_deref(), Some(PDF_TEXT_ENGINE));
        assert_eq!(page.ocr.attempts, 0, "no OCR attempt");
        let path = page.ocr.text.clone().unwrap();
        assert_eq!(path, layout::ocr_text_path(page.page));
        let stored = store
            .get(&layout::book_key(&id("b1"), &path))
            .await
            .unwrap()
            .bytes;
        let stored = String::from_utf8(stored.to_vec()).unwrap();
        assert_eq!(words(&stored), words(text), "the text layer, line by line");
        assert_eq!(page.ocr.chars, Some(stored.chars().count() as u64));
    }
    assert_eq!(books.manifest(&id("b1")).await.unwrap().pages, pages);
}

#[tokio::test]
async fn files_and_pdf_pages_keep_their_order_and_ignored_text_layers_leave_pages_for_ocr() {
    let (books, store, _fixture) = books().await;
    let mixed = PdfBuilder::new()
        .scanned_page(&fixture(1).0)
        .text_page(&fixture(2).1)
        .scanned_page(&fixture(3).0)
        .build();
    let files = || {
        vec![
            file("first.png", encoded(ImageFormat::Png, 40, 30)),
            file("mixed.pdf", mixed.clone()),
            file("last.jpg", encoded(ImageFormat::Jpeg, 41, 30)),
        ]
    };
    let pages = books
        .ingest_pages(&id("b1"), files(), &IngestLimits::default())
        .await
        .unwrap();
    let summary: Vec<(u32, &str, Option<&str>)> = pages
        .iter()
        .map(|page| {
            (
                page.page,
                page.source_name.as_str(),
                page.ocr.engine.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "first.png", None),
            (2, "mixed.pdf", None),
            (3, "mixed.pdf", Some(PDF_TEXT_ENGINE)),
            (4, "mixed.pdf", None),
            (5, "last.jpg", None),
        ]
    );
    assert_eq!(pages[0].width, 40);
    assert_eq!(pages[4].width, 41);
    assert_eq!(
        keys(&store, "books/b1/ocr/").await,
        ["books/b1/ocr/0003.txt"]
    );

    // `?ocr=force`: the same upload, every page left for OCR.
    let forced = books
        .ingest_pages_with(
            &id("b1"),
            files(),
            &IngestLimits::default(),
            TextLayers::Ignore,
        )
        .await
        .unwrap();
    assert_eq!(
        forced.iter().map(|page| page.page).collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    assert!(
        forced
            .iter()
            .all(|page| page.ocr.status == OcrStatus::Pending && page.ocr.engine.is_none()),
        "{forced:?}"
    );
    assert_eq!(keys(&store, "books/b1/ocr/").await.len(), 1);
}

/// Ingests `bad` between a good image and a good PDF; returns the rejections, asserting
/// that storage saw no write and the manifest did not change.
async fn refused(
    bad: Vec<UploadedFile>,
    limits: &IngestLimits,
) -> Vec<(usize, String, FileRejection)> {
    require_poppler().await;
    let store = file_test_store().await;
    let counting = CountingStore::new(store.store());
    let books = Books::new(counting.clone());
    books.create(&id("b1"), "T").await.unwrap();
    let before = books.manifest(&id("b1")).await.unwrap();
    let puts_before = counting.puts();
    let mut files = vec![file("good.png", encoded(ImageFormat::Png, 8, 8))];
    files.extend(bad);
    files.push(file(
        "good.pdf",
        PdfBuilder::new().text_page(&fixture(4).1).build(),
    ));
    let error = books
        .ingest_pages(&id("b1"), files, limits)
        .await
        .unwrap_err();
    assert_eq!(counting.puts(), puts_before, "nothing was written");
    assert_eq!(books.manifest(&id("b1")).await.unwrap(), before);
    assert_eq!(counting.list("books/b1/pages/").await.unwrap(), []);
    assert_eq!(counting.list("books/b1/ocr/").await.unwrap(), []);
    match error {
        IngestError::InvalidFiles { rejected } => rejected
            .into_iter()
            .map(|file| (file.index, file.name, file.reason))
            .collect(),
        other => panic!("expected InvalidFiles, got {other:?}"),
    }
}

#[tokio::test]
async fn encrypted_pdfs_are_refused_with_or_without_a_password_to_open_them() {
    let plain = PdfBuilder::new().text_page(&fixture(1).1).build();
    let rejected = refused(
        vec![
            file("locked.pdf", encrypt(&plain, "user-secret")),
            file("restricted.pdf", encrypt(&plain, "")),
        ],
        &IngestLimits::default(),
    )
    .await;
    assert_eq!(
        rejected,
        [
            (1, "locked.pdf".to_owned(), FileRejection::EncryptedPdf),
            (2, "restricted.pdf".to_owned(), FileRejection::EncryptedPdf),
        ]
    );
    assert_eq!(rejected[0].2.code(), "encrypted_pdf");
    assert!(rejected[0].2.to_string().contains("qpdf --decrypt"));
}

#[tokio::test]
async fn broken_pdfs_are_refused_as_corrupt() {
    let whole = PdfBuilder::new()
        .scanned_page(&fixture(1).0)
        .text_page(&fixture(2).1)
        .build();
    let rejected = refused(
        vec![
            file("half.pdf", whole[..whole.len() / 2].to_vec()),
            file("no-xref.pdf", whole[..whole.len() - 40].to_vec()),
            file("garbage.pdf", b"%PDF-1.4\nnot really a PDF\n".to_vec()),
            file("header-only.pdf", b"%PDF-1.7".to_vec()),
        ],
        &IngestLimits::default(),
    )
    .await;
    let names: Vec<&str> = rejected.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["half.pdf", "no-xref.pdf", "garbage.pdf", "header-only.pdf"]
    );
    for (_, name, reason) in &rejected {
        assert_eq!(reason.code(), "corrupt", "{name}: {reason}");
        assert!(
            reason.to_string().contains("broken PDF"),
            "{name}: {reason}"
        );
    }
}

#[tokio::test]
async fn pdfs_over_the_page_or_pixel_limits_are_refused_before_rendering() {
    let three = PdfBuilder::new()
        .text_page("one")
        .text_page("two")
        .text_page("three")
        .build();
    let limits = IngestLimits {
        max_pdf_pages: 2,
        ..IngestLimits::default()
    };
    let rejected = refused(vec![file("long.pdf", three)], &limits).await;
    assert_eq!(
        rejected,
        [(
            1,
            "long.pdf".to_owned(),
            FileRejection::TooManyPages { pages: 3, max: 2 }
        )]
    );

    // The second page is a poster: 100 x 40 inches is 30000 x 12000 px at 300 dpi.
    let poster = PdfBuilder::new()
        .text_page("a page")
        .scanned_page_of_size(&fixture(1).0, (7200.0, 2880.0))
        .build();
    let rejected = refused(vec![file("poster.pdf", poster)], &IngestLimits::default()).await;
    assert_eq!(
        rejected,
        [(
            1,
            "poster.pdf".to_owned(),
            FileRejection::PdfPageTooLarge {
                page: 2,
                width: 30_000,
                height: 12_000,
                max_width: 12_000,
                max_height: 12_000,
            }
        )]
    );
    assert_eq!(rejected[0].2.code(), "too_many_pixels");

    // PDFs have their own byte limit (the good PDF is over it too here).
    let big = PdfBuilder::new().text_page("x").build();
    let small = IngestLimits {
        max_pdf_bytes: 100,
        ..IngestLimits::default()
    };
    let rejected = refused(vec![file("big.pdf", big)], &small).await;
    assert!(
        matches!(
            rejected[..],
            [
                (1, _, FileRejection::TooLarge { max: 100, .. }),
                (2, _, FileRejection::TooLarge { max: 100, .. })
            ]
        ),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn rendering_reserves_from_the_decode_budget_and_is_busy_past_its_wait() {
    require_poppler().await;
    let fixture_store = file_test_store().await;
    let budget = DecodeBudget::new(64 * 1024 * 1024, Duration::from_millis(100));
    let books = Books::new(fixture_store.store()).with_decode_budget(budget.clone());
    books.create(&id("b1"), "T").await.unwrap();
    let pdf = PdfBuilder::new()
        .scanned_page_of_size(&fixture(1).0, LETTER)
        .build();
    let held = budget.reserve(u64::MAX).await.unwrap();
    let error = books
        .ingest_pages(
            &id("b1"),
            vec![file("a.pdf", pdf.clone())],
            &IngestLimits::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, IngestError::Busy { .. }), "{error:?}");
    assert_eq!(books.manifest(&id("b1")).await.unwrap().pages, []);
    drop(held);
    let pages = books
        .ingest_pages(
            &id("b1"),
            vec![file("a.pdf", pdf)],
            &IngestLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(pages.len(), 1);
}

#[tokio::test]
async fn a_server_without_poppler_says_what_to_install_and_stores_nothing() {
    let fixture_store = file_test_store().await;
    let books = Books::new(fixture_store.store()).with_pdf_tools(PdfTools {
        pdfinfo: "/nonexistent/pdfinfo".into(),
        ..PdfTools::default()
    });
    books.create(&id("b1"), "T").await.unwrap();
    let pdf = PdfBuilder::new().text_page("x").build();
    let error = books
        .ingest_pages(
            &id("b1"),
            vec![file("a.pdf", pdf)],
            &IngestLimits::default(),
        )
        .await
        .unwrap_err();
    match &error {
        IngestError::PdfToolsMissing { reason } => {
            assert!(reason.contains("poppler-utils"), "{reason}");
        }
        other => panic!("expected PdfToolsMissing, got {other:?}"),
    }
    assert_eq!(books.manifest(&id("b1")).await.unwrap().pages, []);
    assert!(books.pdf_tools().version().await.is_err());
    require_poppler().await;
    assert!(!PdfTools::default().version().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pdf_tool_that_runs_out_of_time_refuses_the_file() {
    require_poppler().await;
    let fixture_store = file_test_store().await;
    let books = Books::new(fixture_store.store());
    books.create(&id("b1"), "T").await.unwrap();
    let pages = 40;
    let pdf = (0..pages)
        .fold(PdfBuilder::new(), |pdf, _| {
            pdf.scanned_page_of_size(&fixture(1).0, LETTER)
        })
        .build();
    let limits = IngestLimits {
        pdf_timeout: Duration::from_millis(1),
        ..IngestLimits::default()
    };
    let error = books
        .ingest_pages(&id("b1"), vec![file("slow.pdf", pdf)], &limits)
        .await
        .unwrap_err();
    match error {
        IngestError::InvalidFiles { rejected } => {
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].reason.code(), "render_timeout");
        }
        other => panic!("expected InvalidFiles, got {other:?}"),
    }
    assert_eq!(books.manifest(&id("b1")).await.unwrap().pages, []);
}
