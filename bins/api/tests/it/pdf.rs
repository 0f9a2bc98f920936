//! PDF uploads through the API with PDFs written by the tests (`books::testing`): a
//! scanned-only PDF, one with a text layer, a mixed one, `?ocr=force`, encrypted and
//! broken ones. Scanned pages are read by the real tesseract in an `ocr` job, text-layer
//! pages are done at upload with engine `pdf-text`, and refused PDFs store nothing.

use std::sync::Arc;

use axum::http::StatusCode;
use books::Books;
use books::testing::{PdfBuilder, encrypt, require_poppler};
use ocr::testing::{character_error_rate, fixture_pages, require_tesseract};
use ocr::{OcrHandler, OcrJobConfig, TesseractEngine};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, into_bytes};

/// Most characters wrong in a recognized fixture page.
const MAX_CER: f64 = 0.03;

/// A worker with the real tesseract engine over the app's books.
/// Workers of the upload's chain: `ingest`, and `ocr` with tesseract.
fn tesseract_worker(app: &TestApp) -> crate::support::RunningWorker {
    app.start_worker(vec![
        Arc::new(ingest::IngestHandler::new(
            Books::new(app.blob_store.clone()),
            ingest::IngestJobConfig::default(),
        )),
        Arc::new(OcrHandler::new(
            Books::new(app.blob_store.clone()),
            Arc::new(TesseractEngine::default()),
            OcrJobConfig {
                concurrency: 2,
                ..OcrJobConfig::default()
            },
        )),
    ])
}

async fn text_of(app: &TestApp, book: &str, page: u64) -> String {
    let request = axum::http::Request::builder()
        .uri(format!("/v1/books/{book}/pages/{page}/text"))
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, bytes) = into_bytes(app.send(request).await).await;
    assert_eq!(status, StatusCode::OK, "text of page {page}");
    String::from_utf8(bytes).unwrap()
}

async fn storage_keys(app: &TestApp, book: &str) -> Vec<String> {
    app.blob_store
        .list(&format!("books/{book}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect()
}

/// Uploads `pdf` with `query`, runs the upload's `ocr` job to its end with tesseract, and
/// returns the upload's answer, the job and the book.
async fn upload_and_ocr(
    app: &TestApp,
    book: &str,
    query: &str,
    pdf: &[u8],
) -> (Value, Value, Value) {
    require_poppler().await;
    require_tesseract().await;
    app.create_book(book).await;
    let worker = tesseract_worker(app);
    let (status, upload) = app.upload(book, query, &[("book.pdf", pdf)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{upload}");
    let job = app.wait_chain_end(&upload["job"]).await;
    assert_eq!(
        (&job["type"], &job["status"]),
        (&json!("ocr"), &json!("completed")),
        "{job}"
    );
    worker.stop().await;
    let (_, manifest) = app.get(&format!("/v1/books/{book}")).await;
    (upload, job, manifest)
}

/// (engine, text) of every page of a book, after checking each is done.
async fn engines_and_texts(app: &TestApp, book: &str, manifest: &Value) -> Vec<(String, String)> {
    let mut pages = Vec::new();
    for page in manifest["pages"].as_array().unwrap() {
        assert_eq!(page["ocr"]["status"], "done", "{page}");
        let number = page["page"].as_u64().unwrap();
        pages.push((
            page["ocr"]["engine"].as_str().unwrap().to_owned(),
            text_of(app, book, number).await,
        ));
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanned_pdf_is_ocred_page_by_page_by_tesseract() {
    let app = TestApp::sqlite().await;
    let fixtures = fixture_pages();
    let pdf = fixtures[..3]
        .iter()
        .fold(PdfBuilder::new(), |pdf, page| pdf.scanned_page(&page.png))
        .build();
    let (upload, job, manifest) = upload_and_ocr(&app, "scan", "?ocr=true", &pdf).await;
    let file = &upload["upload"]["files"][0];
    assert_eq!(
        (&file["kind"], &file["pages"]),
        (&json!("pdf"), &json!(3)),
        "one page per PDF page"
    );
    let pages = manifest["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3, "{manifest}");
    for (page, number) in pages.iter().zip(1..) {
        assert_eq!(page["page"], number);
        assert_eq!(page["source_name"], "book.pdf");
        assert_eq!(
            page["ocr"]["attempts"], 1,
            "no text layer, so OCRed: {page}"
        );
    }
    assert_eq!(job["progress"]["total"], 3, "{job}");
    assert_eq!(job["progress"]["completed"], 3, "{job}");
    for ((engine, text), fixture) in engines_and_texts(&app, "scan", &manifest)
        .await
        .into_iter()
        .zip(&fixtures)
    {
        assert_eq!(engine, "tesseract");
        let cer = character_error_rate(&fixture.text, &text);
        eprintln!("fixture page {} CER {cer:.4}", fixture.number);
        assert!(
            cer < MAX_CER,
            "page {}: CER {cer:.3}: {text:?}",
            fixture.number
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_layer_pages_are_done_at_upload_and_the_ocr_job_completes_at_once() {
    let app = TestApp::sqlite().await;
    let fixtures = fixture_pages();
    let pdf = fixtures[3..6]
        .iter()
        .fold(PdfBuilder::new(), |pdf, page| pdf.text_page(&page.text))
        .build();
    let (upload, job, manifest) = upload_and_ocr(&app, "text", "?ocr=true", &pdf).await;
    assert_eq!(upload["upload"]["files"][0]["pages"], 3);
    for page in manifest["pages"].as_array().unwrap() {
        assert_eq!(page["ocr"]["status"], "done", "{page}");
        assert_eq!(page["ocr"]["engine"], "pdf-text", "{page}");
        assert_eq!(page["ocr"]["attempts"], 0, "{page}");
        assert!(page["ocr"]["text_url"].is_string(), "{page}");
    }
    assert_eq!(job["progress"]["total"], 0, "nothing left to OCR: {job}");
    for ((engine, text), fixture) in engines_and_texts(&app, "text", &manifest)
        .await
        .into_iter()
        .zip(&fixtures[3..6])
    {
        assert_eq!(engine, "pdf-text");
        let cer = character_error_rate(&fixture.text, &text);
        eprintln!("fixture page {} CER {cer:.4}", fixture.number);
        assert!(
            cer < 0.001,
            "page {}: CER {cer:.3}: {text:?}",
            fixture.number
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_pdf_keeps_its_text_pages_and_ocrs_its_scanned_ones() {
    let app = TestApp::sqlite().await;
    let fixtures = fixture_pages();
    let pdf = PdfBuilder::new()
        .scanned_page(&fixtures[6].png)
        .text_page(&fixtures[7].text)
        .scanned_page(&fixtures[8].png)
        .text_page(&fixtures[9].text)
        .build();
    let (upload, job, manifest) = upload_and_ocr(&app, "mixed", "?ocr=true", &pdf).await;
    assert_eq!(upload["upload"]["files"][0]["pages"], 4);
    assert_eq!(job["progress"]["total"], 2, "only the scanned pages: {job}");
    let pages = engines_and_texts(&app, "mixed", &manifest).await;
    let engines: Vec<&str> = pages.iter().map(|(engine, _)| engine.as_str()).collect();
    assert_eq!(engines, ["tesseract", "pdf-text", "tesseract", "pdf-text"]);
    for ((_, text), fixture) in pages.iter().zip(&fixtures[6..10]) {
        let cer = character_error_rate(&fixture.text, text);
        eprintln!("fixture page {} CER {cer:.4}", fixture.number);
        assert!(
            cer < MAX_CER,
            "page {}: CER {cer:.3}: {text:?}",
            fixture.number
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocr_force_ignores_text_layers_and_ocrs_every_page() {
    let app = TestApp::sqlite().await;
    let fixtures = fixture_pages();
    let pdf = PdfBuilder::new()
        .text_page(&fixtures[10].text)
        .scanned_page(&fixtures[11].png)
        .build();
    let (upload, job, manifest) = upload_and_ocr(&app, "forced", "?ocr=force", &pdf).await;
    assert_eq!(upload["job"]["type"], "ingest");
    assert_eq!(upload["job"]["then"], json!(["ocr"]));
    assert_eq!(job["progress"]["total"], 2, "{job}");
    let pages = engines_and_texts(&app, "forced", &manifest).await;
    for ((engine, text), fixture) in pages.iter().zip(&fixtures[10..12]) {
        assert_eq!(engine, "tesseract");
        let cer = character_error_rate(&fixture.text, text);
        eprintln!("fixture page {} CER {cer:.4}", fixture.number);
        // The text page is Helvetica 12 pt at 300 dpi: tesseract reads it well too.
        assert!(
            cer < MAX_CER,
            "page {}: CER {cer:.3}: {text:?}",
            fixture.number
        );
    }
}

#[tokio::test]
async fn encrypted_and_broken_pdfs_are_422_naming_each_file_and_nothing_is_stored() {
    require_poppler().await;
    let app = TestApp::sqlite().await;
    app.create_book("refused").await;
    let fixtures = fixture_pages();
    let good = PdfBuilder::new()
        .text_page(&fixtures[0].text)
        .scanned_page(&fixtures[1].png)
        .build();
    let keys_before = storage_keys(&app, "refused").await;
    let (_, manifest_before) = app.get("/v1/books/refused").await;
    for query in ["", "?ocr=true", "?ocr=force&then=guidelines"] {
        let (status, body) = app
            .upload(
                "refused",
                query,
                &[
                    ("good.pdf", &good),
                    ("locked.pdf", &encrypt(&good, "user-secret")),
                    ("restricted.pdf", &encrypt(&good, "")),
                    ("truncated.pdf", &good[..good.len() * 2 / 3]),
                    ("page.png", &fixtures[0].png),
                ],
            )
            .await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        let rejected: Vec<(u64, &str, &str)> = body["error"]["details"]["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| {
                (
                    file["index"].as_u64().unwrap(),
                    file["name"].as_str().unwrap(),
                    file["code"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rejected,
            [
                (1, "locked.pdf", "encrypted_pdf"),
                (2, "restricted.pdf", "encrypted_pdf"),
                (3, "truncated.pdf", "corrupt"),
            ],
            "{query}: {body}"
        );
        assert_eq!(storage_keys(&app, "refused").await, keys_before, "{query}");
        assert_eq!(app.get("/v1/books/refused").await.1, manifest_before);
        let (_, latest) = app.get("/v1/books/refused/jobs/latest").await;
        assert_eq!(latest, Value::Null, "{query}: no job was started");
    }
}

#[tokio::test]
async fn the_document_lists_the_ocr_values_and_pdf_among_the_media_types() {
    let document = serde_json::to_value(api::openapi()).unwrap();
    let upload = &document["paths"]["/v1/books/{book_id}/pages"]["post"];
    let query = &upload["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "upload")
        .unwrap()["schema"]["anyOf"];
    assert_eq!(
        query[0]["properties"]["ocr"]["enum"],
        json!(["false", "true", "force"])
    );
    assert_eq!(
        query[1]["properties"]["ocr"]["enum"],
        json!(["true", "force"])
    );
    let encoding = &upload["requestBody"]["content"]["multipart/form-data"]["encoding"]["files"]["contentType"];
    assert!(
        encoding.as_str().unwrap().contains("application/pdf"),
        "{encoding}"
    );

    // `force` with a chain is accepted like `true`; any other value is 422.
    let app = TestApp::sqlite().await;
    app.create_book("values").await;
    let page = fixture_pages()[0].png.to_vec();
    let (status, body) = app
        .upload("values", "?ocr=maybe", &[("a.png", &page)])
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let (status, body) = app
        .upload("values", "?ocr=force&then=guidelines", &[("a.png", &page)])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["job"]["type"], "ingest");
    assert_eq!(body["job"]["then"], json!(["ocr", "guidelines"]), "{body}");
}
