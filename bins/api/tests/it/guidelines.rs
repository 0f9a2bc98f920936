//! Guidelines and finalize through the routes with a real worker: preconditions (409 with
//! the pages), resume of a failed `guidelines` job from the failed page on SQLite and
//! Postgres, the per-page and the final documents, and content negotiation.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use books::Books;
use extraction::testing::{ScriptStep, ScriptedExtractor};
use extraction::{FinalizeHandler, GuidelinesConfig, GuidelinesHandler};
use jobs_core::runtime::JobHandler;
use serde_json::json;

use crate::support::{TestApp, assert_error, into_bytes};

/// The guidelines and finalize handlers over the app's storage, with `extractor`.
fn handlers(app: &TestApp, extractor: Arc<ScriptedExtractor>) -> Vec<Arc<dyn JobHandler>> {
    let books = Books::new(app.blob_store.clone());
    vec![
        Arc::new(GuidelinesHandler::new(
            books.clone(),
            extractor,
            GuidelinesConfig {
                manifest_flush_every: 2,
                ..GuidelinesConfig::default()
            },
        )),
        Arc::new(FinalizeHandler::new(books)),
    ]
}

#[tokio::test]
async fn guidelines_need_every_page_ocred_and_say_which_are_not() {
    let app = TestApp::sqlite().await;
    app.create_book("empty").await;
    let (status, body) = app
        .post("/v1/books/empty/jobs", json!({"type": "guidelines"}))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "ocr_incomplete");
    assert_eq!(body["error"]["details"]["pages"], json!([]));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no pages")
    );

    app.book_with_pages("pending", 3).await;
    let (status, body) = app
        .post("/v1/books/pending/jobs", json!({"type": "guidelines"}))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "ocr_incomplete");
    assert_eq!(body["error"]["details"]["pages"], json!([1, 2, 3]));
    assert_eq!(body["error"]["message"], "OCR is not done for page 1, 2, 3");
    let (_, jobs) = app.get("/v1/books/pending/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "nothing was started");
}

#[tokio::test]
async fn finalize_needs_every_page_extracted_and_says_which_are_not() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("partial", 3).await;
    app.ocr_done_with_fixture_text("partial").await;
    let (status, body) = app
        .post("/v1/books/partial/jobs", json!({"type": "finalize"}))
        .await;
    assert_error(
        (status, &body),
        StatusCode::CONFLICT,
        "guidelines_incomplete",
    );
    assert_eq!(body["error"]["details"]["pages"], json!([1, 2, 3]));

    // Extract, then take page 2's guidelines away.
    let extractor = Arc::new(ScriptedExtractor::new());
    let worker = app.start_worker(handlers(&app, extractor));
    let (status, job) = app
        .post("/v1/books/partial/jobs", json!({"type": "guidelines"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        app.wait_until_finished(&job["id"]).await["status"],
        "completed"
    );
    app.blob_store
        .delete("books/partial/guidelines/pages/0002.json")
        .await
        .unwrap();
    let (status, body) = app
        .post("/v1/books/partial/jobs", json!({"type": "finalize"}))
        .await;
    assert_error(
        (status, &body),
        StatusCode::CONFLICT,
        "guidelines_incomplete",
    );
    assert_eq!(body["error"]["details"]["pages"], json!([2]));
    worker.stop().await;
}

#[tokio::test]
async fn page_and_final_guidelines_are_404_until_they_exist() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("early", 1).await;
    let (status, body) = app.get("/v1/books/early/guidelines").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/books/early/pages/1/guidelines").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/books/early/pages/2/guidelines").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/books/ghost/guidelines").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/books/Bad!/guidelines").await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

/// A guideline whose sentence runs over a page break names both pages in its page's
/// answer; one all on its page has no `pages`.
#[tokio::test]
async fn a_page_guideline_over_a_page_break_names_both_pages() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("break", 2).await;
    let mut over = extraction::Guideline::new(
        extraction::GuidelineKind::Rule,
        "Always line up the digits before you add the columns.",
    );
    over.pages = vec![1, 2];
    let page = extraction::PageGuidelines {
        page: 1,
        topics: vec![extraction::Topic {
            title: "Adding".to_owned(),
            guidelines: vec![
                extraction::Guideline::new(extraction::GuidelineKind::Tip, "Check the sum."),
                over,
            ],
        }],
    };
    let key = books::layout::book_key(
        &books::BookId::parse("break").unwrap(),
        &books::layout::page_guidelines_path(1),
    );
    app.blob_store
        .put(
            &key,
            serde_json::to_vec(&page).unwrap().into(),
            blob_store::PutMode::Overwrite,
        )
        .await
        .unwrap();
    let (status, body) = app.get("/v1/books/break/pages/1/guidelines").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let guidelines = &body["topics"][0]["guidelines"];
    assert!(guidelines[0].get("pages").is_none(), "{body}");
    assert_eq!(guidelines[1]["pages"], json!([1, 2]), "{body}");
}

/// A scripted extractor fails page 4 for good: the job fails naming it, with page 3 as
/// its last completed item; resume extracts pages 4 to 6 only; finalize then serves the
/// merged document as JSON and Markdown.
async fn a_failed_guidelines_job_resumes_from_the_failed_page(app: TestApp) {
    app.book_with_pages("resume", 6).await;
    app.ocr_done_with_fixture_text("resume").await;
    let extractor = Arc::new(ScriptedExtractor::new().fail(4, &[ScriptStep::Terminal]));
    let worker = app.start_worker(handlers(&app, extractor.clone()));

    let (status, job) = app
        .post("/v1/books/resume/jobs", json!({"type": "guidelines"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let failed = app.wait_until_finished(&job["id"]).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "extractor_failed", "{failed}");
    assert_eq!(
        failed["error"]["message"], "page 4: scripted failure of page 4",
        "the extractor's own message, naming the page"
    );
    assert_eq!(failed["progress"]["last_completed_item"], "3", "{failed}");
    assert_eq!(failed["progress"]["completed"], 3, "{failed}");
    let (_, manifest) = app.get("/v1/books/resume").await;
    assert_eq!(manifest["guidelines"]["pages_done"], 3, "{manifest}");
    let (status, _) = app.get("/v1/books/resume/pages/3/guidelines").await;
    assert_eq!(status, StatusCode::OK);

    let (status, resumed) = app
        .post(
            &format!("/v1/jobs/{}/resume", job["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    assert_eq!(resumed["resumed_from"], job["id"]);
    let completed = app.wait_until_finished(&resumed["id"]).await;
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(completed["progress"]["completed"], 6, "{completed}");
    assert_eq!(completed["progress"]["last_completed_item"], "6");
    let calls = extractor.calls();
    for page in 1..=3 {
        assert_eq!(
            calls[&page], 1,
            "page {page} was extracted again: {calls:?}"
        );
    }
    assert_eq!(calls[&4], 2, "the failed page once per run: {calls:?}");
    for page in 5..=6 {
        assert_eq!(calls[&page], 1, "{calls:?}");
    }
    let (_, manifest) = app.get("/v1/books/resume").await;
    assert_eq!(manifest["guidelines"]["status"], "extracted", "{manifest}");
    assert_eq!(manifest["guidelines"]["pages_done"], 6);

    let (status, page) = app.get("/v1/books/resume/pages/5/guidelines").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["page"], 5);
    assert_eq!(page["topics"][0]["title"], "Chapter 5: Decimals", "{page}");
    assert!(
        page["topics"][0]["guidelines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|guideline| guideline["kind"] == "definition"),
        "{page}"
    );

    let (status, finalize) = app
        .post("/v1/books/resume/jobs", json!({"type": "finalize"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{finalize}");
    let finished = app.wait_until_finished(&finalize["id"]).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    let (status, document) = app.get("/v1/books/resume/guidelines").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["book_id"], "resume");
    let titles: Vec<&str> = document["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|topic| topic["title"].as_str().unwrap())
        .collect();
    let headings: Vec<String> = ocr::testing::fixture_pages()[..6]
        .iter()
        .map(|page| page.text.lines().next().unwrap().to_owned())
        .collect();
    assert_eq!(titles, headings);
    assert_eq!(document["topics"][0]["pages"], json!([1]));
    let (_, manifest) = app.get("/v1/books/resume").await;
    assert_eq!(manifest["guidelines"]["status"], "final", "{manifest}");

    let request = Request::builder()
        .uri("/v1/books/resume/guidelines")
        .header(header::ACCEPT, "text/markdown")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/markdown; charset=utf-8"
    );
    assert_eq!(response.headers()[header::VARY], "accept");
    let (status, markdown) = into_bytes(response).await;
    assert_eq!(status, StatusCode::OK);
    let markdown = String::from_utf8(markdown).unwrap();
    for heading in &headings {
        assert!(markdown.contains(&format!("## {heading}")), "{markdown}");
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_failed_guidelines_job_resumes_from_the_failed_page_on_sqlite() {
    a_failed_guidelines_job_resumes_from_the_failed_page(TestApp::sqlite().await).await;
}

#[tokio::test]
async fn a_failed_guidelines_job_resumes_from_the_failed_page_on_postgres() {
    let (app, database) = TestApp::postgres().await;
    a_failed_guidelines_job_resumes_from_the_failed_page(app).await;
    database.drop().await;
}
