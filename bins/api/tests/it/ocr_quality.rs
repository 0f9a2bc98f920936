//! Issue 16: book languages, OCR quality signals and hOCR, through the API with a real
//! tesseract worker over the same stores.
//!
//! - A German page read with `deu` has a CER under 3 % (the pack is installed by
//!   `scripts/install-tesseract.sh deu`, which `cargo xtask ci` runs).
//! - A blurred, low-contrast page is flagged `needs_review` and listed by
//!   `GET /v1/books/{book_id}/pages?needs_review=true`; a clean page is not.
//! - Languages are checked at creation and change against the installed ones (422 with the
//!   list); `/readyz` shows the in-process worker's OCR engine.

use std::sync::Arc;

use api::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use jobs_core::SystemClock;
use jobs_core::runtime::Worker;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, into_bytes};

#[derive(Debug, Parser)]
struct WorkerCli {
    #[command(flatten)]
    worker: app::config::WorkerArgs,
}

fn worker_args() -> app::config::WorkerArgs {
    WorkerCli::try_parse_from([
        "worker",
        "--types",
        "ingest,ocr",
        "--poll-interval",
        "50ms",
        "--progress-flush",
        "100ms",
        "--manifest-flush-every",
        "1",
    ])
    .unwrap()
    .worker
}

/// A real `ingest` and `ocr` worker over the app's stores until dropped.
struct OcrWorker {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OcrWorker {
    fn start(app: &TestApp) -> Self {
        let args = worker_args();
        let deps = app::handlers::HandlerDeps::new(app.blob_store.clone(), &args);
        let mut worker = Worker::new(
            app.job_store.clone(),
            Arc::new(SystemClock),
            args.worker_config(),
        );
        for handler in app::handlers::select_handlers(&args.types, &deps).unwrap() {
            worker = worker.handler(handler);
        }
        let shutdown = CancellationToken::new();
        let run = worker.run(shutdown.clone());
        let task = tokio::spawn(async move {
            run.await.unwrap();
        });
        Self {
            shutdown,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for OcrWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Uploads `files` with `?ocr=true` and waits for the job to complete.
async fn upload_and_read(app: &TestApp, book: &str, files: &[(&str, &[u8])]) {
    let (status, body) = app.upload(book, "?ocr=true", files).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_chain_end(&body["job"]).await;
    assert_eq!(
        (&job["type"], &job["status"]),
        (&json!("ocr"), &json!("completed")),
        "{job}"
    );
}

async fn text_of(app: &TestApp, book: &str, page: u32) -> String {
    let request = Request::get(format!("/v1/books/{book}/pages/{page}/text"))
        .body(Body::empty())
        .unwrap();
    let (status, bytes) = into_bytes(app.send(request).await).await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_german_page_read_with_deu_has_under_three_percent_character_errors() {
    ocr::testing::require_tesseract_languages(&["deu"]).await;
    let app = TestApp::sqlite().await;
    let (status, book) = app
        .post(
            "/v1/books",
            json!({"id": "bruch", "title": "Brüche", "language": "deu"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{book}");
    assert_eq!(book["language"], "deu");
    let worker = OcrWorker::start(&app);
    let page = ocr::testing::german_page();
    upload_and_read(&app, "bruch", &[("seite-1.png", &page.png)]).await;
    worker.stop().await;
    let text = text_of(&app, "bruch", 1).await;
    let rate = ocr::testing::character_error_rate(&page.text, &text);
    let (_, page_json) = app.get("/v1/books/bruch/pages/1").await;
    println!(
        "German page with deu: CER {:.2} %, confidence {}, words {}",
        rate * 100.0,
        page_json["ocr"]["confidence"],
        page_json["ocr"]["words"]
    );
    assert!(rate < 0.03, "CER {rate:.4}:\n{text}");
    assert!(
        text.contains("Brüche") && text.contains("Größere"),
        "{text}"
    );
    assert_eq!(page_json["ocr"]["needs_review"], false, "{page_json}");
}

/// The fixture page blurred (Gaussian, sigma 3.5) with its contrast cut to 15 % around a
/// light grey: text a person can still make out, that tesseract reads badly.
pub(crate) fn degraded(png: &[u8]) -> Vec<u8> {
    let page = image::load_from_memory(png).unwrap().to_luma8();
    let mut page = image::imageops::blur(&page, 3.5);
    for pixel in page.pixels_mut() {
        let value = f32::from(pixel.0[0]);
        pixel.0[0] = (200.0 + (value - 255.0) * 0.15).clamp(0.0, 255.0) as u8;
    }
    let mut out = std::io::Cursor::new(Vec::new());
    page.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blurred_low_contrast_page_needs_review_and_a_clean_page_does_not() {
    ocr::testing::require_tesseract().await;
    let app = TestApp::sqlite().await;
    app.create_book("quality").await;
    let clean = ocr::testing::fixture_pages()[0].png.to_vec();
    let blurred = degraded(&clean);
    let worker = OcrWorker::start(&app);
    upload_and_read(
        &app,
        "quality",
        &[("clean.png", &clean), ("blurred.png", &blurred)],
    )
    .await;
    worker.stop().await;

    let (status, book) = app.get("/v1/books/quality").await;
    assert_eq!(status, StatusCode::OK);
    let confidence = |page: &Value| page["ocr"]["confidence"].as_f64().unwrap();
    let (clean_page, blurred_page) = (&book["pages"][0], &book["pages"][1]);
    println!(
        "confidence: clean {} ({} words), blurred {} ({} words)",
        confidence(clean_page),
        clean_page["ocr"]["words"],
        confidence(blurred_page),
        blurred_page["ocr"]["words"]
    );
    assert!(confidence(clean_page) >= 80.0, "{clean_page}");
    assert_eq!(clean_page["ocr"]["needs_review"], false, "{clean_page}");
    assert!(confidence(blurred_page) < 60.0, "{blurred_page}");
    assert_eq!(blurred_page["ocr"]["needs_review"], true, "{blurred_page}");
    assert!(clean_page["ocr"]["words"].as_u64().unwrap() > 30);

    let (status, listed) = app.get("/v1/books/quality/pages?needs_review=true").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let numbers: Vec<u64> = listed["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|page| page["page"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2]);
    let (_, others) = app.get("/v1/books/quality/pages?needs_review=false").await;
    assert_eq!(others["pages"][0]["page"], 1);
    assert_eq!(others["pages"].as_array().unwrap().len(), 1);
    let (_, all) = app.get("/v1/books/quality/pages").await;
    assert_eq!(all["pages"].as_array().unwrap().len(), 2);

    // hOCR beside the text, served as HTML in a sandbox.
    assert_eq!(
        clean_page["ocr"]["hocr_url"],
        "/v1/books/quality/pages/1/hocr"
    );
    let response = app
        .send(
            Request::get("/v1/books/quality/pages/1/hocr")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(
        response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    let (_, hocr) = into_bytes(response).await;
    let hocr = String::from_utf8(hocr).unwrap();
    assert!(
        hocr.contains("ocrx_word") && hocr.contains("Chapter"),
        "{hocr}"
    );
    let stored = app
        .blob_store
        .get("books/quality/ocr/0001.hocr")
        .await
        .unwrap();
    assert_eq!(stored.bytes.as_ref(), hocr.as_bytes());
}

#[tokio::test]
async fn the_hocr_of_a_page_not_read_is_404() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("unread", 1).await;
    let (status, body) = app.get("/v1/books/unread/pages/1/hocr").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (_, page) = app.get("/v1/books/unread/pages/1").await;
    assert_eq!(page["ocr"]["hocr_url"], Value::Null);
    assert_eq!(page["ocr"]["needs_review"], false);
    let (status, _) = app.get("/v1/books/missing/pages").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/books/unread/pages?needs_review=maybe").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_language_must_be_installed_at_creation_and_change() {
    ocr::testing::require_tesseract_languages(&["deu"]).await;
    let app = TestApp::sqlite().await;
    // Without a language: the default (--tesseract-languages, eng).
    let (status, book) = app
        .post("/v1/books", json!({"id": "plain", "title": "Plain"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{book}");
    assert_eq!(book["language"], "eng");
    let (status, book) = app
        .post(
            "/v1/books",
            json!({"id": "mixed", "title": "Mixed", "language": "eng+deu"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{book}");
    assert_eq!(book["language"], "eng+deu");

    let (status, body) = app
        .post(
            "/v1/books",
            json!({"id": "klingon", "title": "K", "language": "eng+zzz_test"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["details"]["missing"], json!(["zzz_test"]));
    let installed = body["error"]["details"]["installed"].as_array().unwrap();
    assert!(installed.contains(&json!("eng")) && installed.contains(&json!("deu")));
    assert!(!installed.contains(&json!("osd")));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tesseract-ocr-zzz-test"), "{message}");
    let (status, _) = app.get("/v1/books/klingon").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    for bad in ["English", "eng deu", "", "eng+", "script/Latin"] {
        let (status, body) = app
            .post("/v1/books", json!({"title": "B", "language": bad}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }

    let (status, book) = app
        .json("PATCH", "/v1/books/plain", Some(json!({"language": "deu"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{book}");
    assert_eq!(book["language"], "deu");
    let (_, book) = app.get("/v1/books/plain").await;
    assert_eq!(book["language"], "deu");
    let (status, body) = app
        .json(
            "PATCH",
            "/v1/books/plain",
            Some(json!({"language": "zzz_test"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .json("PATCH", "/v1/books/plain", Some(json!({"title": "x"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .json(
            "PATCH",
            "/v1/books/nobody",
            Some(json!({"language": "deu"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, book) = app.get("/v1/books/plain").await;
    assert_eq!(book["language"], "deu");
}

#[tokio::test]
async fn the_document_lists_the_installed_languages() {
    ocr::testing::require_tesseract_languages(&["deu"]).await;
    let document = serde_json::to_value(api::openapi()).unwrap();
    let schema = &document["components"]["schemas"]["UpdateBook"]["properties"]["language"];
    let pattern = schema["pattern"].as_str().unwrap();
    assert!(
        pattern.contains("deu") && pattern.contains("eng"),
        "{pattern}"
    );
    assert!(!pattern.contains("osd"), "{pattern}");
    assert!(
        document["paths"]["/v1/books/{book_id}/pages"]["get"].is_object()
            && document["paths"]["/v1/books/{book_id}/pages"]["post"].is_object()
    );
    assert!(document["paths"]["/v1/books/{book_id}"]["patch"].is_object());
}

#[tokio::test]
async fn readyz_shows_the_ocr_engine_of_the_in_process_worker() {
    ocr::testing::require_tesseract_languages(&["deu"]).await;
    let app = TestApp::sqlite().await;
    let (_, body) = app.get("/readyz").await;
    assert_eq!(body["ocr"], Value::Null, "no in-process worker: {body}");

    let mut args = worker_args();
    args.ocr.tesseract_languages = "eng+deu".to_owned();
    let engine = app::preflight::check_ocr(&args).await.unwrap().unwrap();
    let state = AppState::builder(
        app.job_store.clone(),
        app.blob_store.clone(),
        api::ApiConfig::default(),
    )
    .ocr_engine(engine)
    .build();
    let response = tower::ServiceExt::oneshot(
        api::app(state),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let (status, body) = crate::support::into_json(response).await;
    println!("{body}");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ocr"]["engine"], "tesseract");
    assert!(
        body["ocr"]["version"]
            .as_str()
            .unwrap()
            .starts_with("tesseract ")
    );
    let languages = body["ocr"]["languages"].as_array().unwrap();
    assert!(languages.contains(&json!("deu")) && languages.contains(&json!("eng")));
    assert_eq!(body["ocr"]["default_language"], "eng+deu");

    args.ocr.tesseract_languages = "eng+zzz_test".to_owned();
    let error = app::preflight::check_ocr(&args)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tesseract-ocr-zzz-test")
            && error.contains("scripts/install-tesseract.sh zzz_test"),
        "{error}"
    );
}
