//! Chains through the routes: `then` on a job and on an upload, its validation (422 before
//! anything is written), the chain fields of the job JSON, resume, and real runs with a
//! worker on SQLite and Postgres: a `guidelines` job with `then: ["finalize"]`, and one
//! upload with `?ocr=true&then=guidelines,finalize` that ends with the final guidelines.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use books::Books;
use extraction::testing::ScriptedExtractor;
use extraction::{FinalizeHandler, GuidelinesConfig, GuidelinesHandler};
use jobs_core::runtime::JobHandler;
use jobs_core::{ClaimParams, Finish, FinishOutcome, JobStore};
use ocr::{OcrEngine, OcrError, OcrHandler, OcrJobConfig, PageImage};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, assert_error, eventually};

/// An OCR engine that reads each page as the fixture page of the same number.
#[derive(Debug)]
struct FixtureTextEngine;

#[jobs_core::async_trait]
impl OcrEngine for FixtureTextEngine {
    fn name(&self) -> &str {
        "fixture"
    }

    async fn recognize(
        &self,
        page: &PageImage,
        _cancel: &CancellationToken,
    ) -> Result<String, OcrError> {
        let fixtures = ocr::testing::fixture_pages();
        Ok(fixtures[(page.page as usize - 1) % fixtures.len()]
            .text
            .clone())
    }
}

/// The product's handlers over the app's storage, with offline engines.
pub(crate) fn handlers(app: &TestApp) -> Vec<Arc<dyn JobHandler>> {
    let books = Books::new(app.blob_store.clone());
    vec![
        Arc::new(OcrHandler::new(
            books.clone(),
            Arc::new(FixtureTextEngine),
            OcrJobConfig::default(),
        )),
        Arc::new(GuidelinesHandler::new(
            books.clone(),
            Arc::new(ScriptedExtractor::new()),
            GuidelinesConfig::default(),
        )),
        Arc::new(FinalizeHandler::new(books.clone())),
        Arc::new(ingest::IngestHandler::new(
            books,
            ingest::IngestJobConfig::default(),
        )),
    ]
}

/// The jobs of `book`, newest first.
async fn jobs_of(app: &TestApp, book: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/v1/books/{book}/jobs")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["jobs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_invalid_chain_is_422_and_starts_nothing() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("book", 1).await;
    for (request, says) in [
        (
            json!({"type": "ocr", "then": ["guidelines", "summary"]}),
            "unknown job type",
        ),
        (json!({"type": "ocr", "then": ["ocr"]}), "named twice"),
        (
            json!({"type": "ocr", "then": ["finalize", "finalize"]}),
            "named twice",
        ),
        (
            json!({"type": "ocr", "then": ["finalize", "guidelines"]}),
            "guidelines cannot run after finalize",
        ),
        (
            json!({"type": "finalize", "then": ["guidelines"]}),
            "guidelines cannot run after finalize",
        ),
        (
            // Before the precondition: the chain is checked first (OCR is not done here).
            json!({"type": "guidelines", "then": ["ocr"]}),
            "ocr cannot run after guidelines",
        ),
        (
            json!({"type": "ocr", "resume": true, "then": ["guidelines", "guidelines"]}),
            "named twice",
        ),
        (json!({"type": "ocr", "then": "guidelines"}), "then"),
        (json!({"type": "ocr", "then": [1]}), "then"),
    ] {
        let (status, body) = app.post("/v1/books/book/jobs", request.clone()).await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{request}: {message}");
    }
    assert_eq!(jobs_of(&app, "book").await, Vec::<Value>::new());
}

#[tokio::test]
async fn an_upload_with_then_needs_ocr_and_a_valid_chain_and_stores_nothing_otherwise() {
    let app = TestApp::sqlite().await;
    app.create_book("book").await;
    let page = ocr::testing::fixture_pages()[0].png.to_vec();
    for query in [
        "?then=guidelines,finalize",
        "?ocr=false&then=guidelines",
        "?ocr=true&then=ocr",
        "?ocr=true&then=finalize,guidelines",
        "?ocr=true&then=guidelines,guidelines",
        "?ocr=true&then=guidelines,,finalize",
        "?ocr=true&then=summary",
        // A misspelled parameter is refused, not ignored.
        "?orc=true",
    ] {
        let (status, body) = app
            .upload("book", query, &[("page.png", page.as_slice())])
            .await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        let (_, book) = app.get("/v1/books/book").await;
        assert_eq!(book["pages"], json!([]), "{query}: nothing stored");
    }
    assert_eq!(jobs_of(&app, "book").await, Vec::<Value>::new());

    // An empty `then` is no chain after the upload's ocr job.
    let (status, body) = app
        .upload("book", "?ocr=true&then=", &[("page.png", page.as_slice())])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["job"]["then"], json!(["ocr"]));
}

/// Claims the job of `job_type` and completes it as a worker would (with its chain).
async fn complete_as_worker(app: &TestApp, job_type: &str) {
    let store: &Arc<dyn JobStore> = &app.job_store;
    let claimed = store
        .claim(&ClaimParams {
            worker_id: "test".into(),
            job_types: vec![job_type.into()],
            limit: 1,
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let job = claimed.first().expect("a due job");
    let status = store
        .finish_one(
            chrono::Utc::now(),
            Finish::of(job, FinishOutcome::Completed),
        )
        .await
        .unwrap();
    assert_eq!(status, jobs_core::JobStatus::Completed);
}

#[tokio::test]
async fn the_job_json_shows_the_chain_and_its_links_both_ways() {
    let app = TestApp::sqlite().await;
    app.create_book("book").await;
    let page = ocr::testing::fixture_pages()[0].png.to_vec();
    let (body, ingest_done) = app
        .upload_and_ingest(
            "book",
            "?ocr=true&then=guidelines,finalize",
            &[("page.png", page.as_slice())],
        )
        .await;
    assert_eq!(body["job"]["type"], "ingest");
    assert_eq!(
        body["job"]["then"],
        json!(["ocr", "guidelines", "finalize"])
    );
    assert_eq!(body["job"]["previous_job_id"], Value::Null);
    assert_eq!(ingest_done["status"], "completed");
    let ocr_id = ingest_done["next_job_id"]
        .as_str()
        .expect("linked")
        .to_owned();
    let (_, ocr_job) = app.get(&format!("/v1/jobs/{ocr_id}")).await;
    assert_eq!(ocr_job["type"], "ocr");
    assert_eq!(ocr_job["then"], json!(["guidelines", "finalize"]));
    assert_eq!(ocr_job["previous_job_id"], body["job"]["id"]);
    assert_eq!(ocr_job["next_job_id"], Value::Null);

    // While that ocr job is active, another upload's ingest links to it as it is.
    let (_, second) = app
        .upload_and_ingest(
            "book",
            "?ocr=true&then=guidelines",
            &[("page.png", page.as_slice())],
        )
        .await;
    assert_eq!(second["next_job_id"], ocr_job["id"]);
    let (_, still) = app.get(&format!("/v1/jobs/{ocr_id}")).await;
    assert_eq!(still["then"], json!(["guidelines", "finalize"]));

    complete_as_worker(&app, "ocr").await;
    let (_, ocr_done) = app
        .get(&format!("/v1/jobs/{}", ocr_job["id"].as_str().unwrap()))
        .await;
    assert_eq!(ocr_done["status"], "completed");
    assert_eq!(ocr_done["then"], json!(["guidelines", "finalize"]));
    let next_id = ocr_done["next_job_id"].as_str().expect("linked").to_owned();
    let (status, guidelines) = app.get(&format!("/v1/jobs/{next_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(guidelines["type"], "guidelines");
    assert_eq!(guidelines["status"], "pending");
    assert_eq!(guidelines["then"], json!(["finalize"]));
    assert_eq!(guidelines["previous_job_id"], ocr_job["id"]);
    assert_eq!(guidelines["next_job_id"], Value::Null);
    assert_eq!(guidelines["max_attempts"], ocr_job["max_attempts"]);
    // Listings show the same fields.
    let listed = jobs_of(&app, "book").await;
    assert_eq!(listed[0], guidelines);
    assert!(listed.contains(&ocr_done), "{listed:?}");
    assert_eq!(listed.last().unwrap()["id"], body["job"]["id"]);
}

#[tokio::test]
async fn preconditions_apply_to_the_first_job_of_a_chain_only() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("fresh", 2).await;
    let (status, job) = app
        .post(
            "/v1/books/fresh/jobs",
            json!({"type": "ocr", "then": ["guidelines", "finalize"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["then"], json!(["guidelines", "finalize"]));

    app.book_with_pages("ocred", 2).await;
    app.ocr_done_with_fixture_text("ocred").await;
    let (status, body) = app
        .post("/v1/books/ocred/jobs", json!({"type": "finalize"}))
        .await;
    assert_error(
        (status, &body),
        StatusCode::CONFLICT,
        "guidelines_incomplete",
    );
    let (status, job) = app
        .post(
            "/v1/books/ocred/jobs",
            json!({"type": "guidelines", "then": ["finalize"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["then"], json!(["finalize"]));

    let (status, body) = app
        .post(
            "/v1/books/fresh/jobs",
            json!({"type": "guidelines", "then": ["finalize"]}),
        )
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "ocr_incomplete");
}

#[tokio::test]
async fn resume_carries_the_chain_and_then_replaces_it() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("book", 1).await;
    let cancel = |job: &Value| {
        let uri = format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap());
        let app = &app;
        async move {
            let (status, body) = app.post(&uri, json!({})).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
    };
    let (status, first) = app
        .post(
            "/v1/books/book/jobs",
            json!({"type": "ocr", "then": ["guidelines", "finalize"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    cancel(&first).await;

    let uri = format!("/v1/jobs/{}/resume", first["id"].as_str().unwrap());
    let (status, resumed) = app.post(&uri, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    assert_eq!(resumed["resumed_from"], first["id"]);
    assert_eq!(resumed["then"], json!(["guidelines", "finalize"]));
    cancel(&resumed).await;

    let (status, again) = app
        .post(
            "/v1/books/book/jobs",
            json!({"type": "ocr", "resume": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["resumed_from"], resumed["id"]);
    assert_eq!(again["then"], json!(["guidelines", "finalize"]));
    cancel(&again).await;

    let (status, replaced) = app
        .post(
            "/v1/books/book/jobs",
            json!({"type": "ocr", "resume": true, "then": ["finalize"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replaced}");
    assert_eq!(replaced["resumed_from"], again["id"]);
    assert_eq!(replaced["then"], json!(["finalize"]));
    cancel(&replaced).await;

    let (status, unchained) = app
        .post(
            "/v1/books/book/jobs",
            json!({"type": "ocr", "resume": true, "then": []}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{unchained}");
    assert_eq!(unchained["then"], json!([]));
}

/// Waits until the job `id` has completed; its JSON.
async fn completed(app: &TestApp, id: &Value) -> Value {
    let job = app.wait_until_finished(id).await;
    assert_eq!(job["status"], "completed", "{job}");
    job
}

/// Follows the chain from `first` to its end (each completed job's `next_job_id`, read
/// once it has completed), checking the links both ways; the jobs in order.
pub(crate) async fn follow_chain(app: &TestApp, first: &Value) -> Vec<Value> {
    let mut jobs = vec![completed(app, &first["id"]).await];
    loop {
        let current = jobs.last().unwrap().clone();
        if current["then"] == json!([]) {
            assert_eq!(current["next_job_id"], Value::Null, "{current}");
            return jobs;
        }
        let next = completed(app, &current["next_job_id"]).await;
        assert_eq!(next["previous_job_id"], current["id"], "{next}");
        assert_eq!(next["type"], current["then"][0], "{next}");
        assert_eq!(
            next["then"].as_array().unwrap()[..],
            current["then"].as_array().unwrap()[1..]
        );
        jobs.push(next);
    }
}

async fn a_guidelines_job_with_then_finalize_ends_with_the_book_finalized(app: TestApp) {
    app.book_with_pages("book", 3).await;
    app.ocr_done_with_fixture_text("book").await;
    let worker = app.start_worker(handlers(&app));
    let (status, job) = app
        .post(
            "/v1/books/book/jobs",
            json!({"type": "guidelines", "then": ["finalize"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let chain = follow_chain(&app, &job).await;
    let types: Vec<&str> = chain
        .iter()
        .map(|job| job["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["guidelines", "finalize"]);
    assert_eq!(chain[0]["next_job_id"], chain[1]["id"]);
    assert_eq!(chain[1]["previous_job_id"], chain[0]["id"]);
    let (_, book) = app.get("/v1/books/book").await;
    assert_eq!(book["guidelines"]["status"], "final", "{book}");
    let (status, document) = app.get("/v1/books/book/guidelines").await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["book_id"], "book");
    worker.stop().await;
}

#[tokio::test]
async fn a_guidelines_job_with_then_finalize_ends_with_the_book_finalized_on_sqlite() {
    a_guidelines_job_with_then_finalize_ends_with_the_book_finalized(TestApp::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guidelines_job_with_then_finalize_ends_with_the_book_finalized_on_postgres() {
    let (app, database) = TestApp::postgres().await;
    a_guidelines_job_with_then_finalize_ends_with_the_book_finalized(app).await;
    database.drop().await;
}

async fn one_upload_with_then_processes_the_whole_book(app: TestApp) {
    app.create_book("book").await;
    let worker = app.start_worker(handlers(&app));
    let fixtures = ocr::testing::fixture_pages();
    let files: Vec<(String, &[u8])> = fixtures
        .iter()
        .map(|page| (format!("page-{}.png", page.number), page.png.as_ref()))
        .collect();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), *bytes))
        .collect();
    let (status, body) = app
        .upload("book", "?ocr=true&then=guidelines,finalize", &files)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Nothing but reads from here: the chain runs the pipeline by itself.
    let document = eventually(Duration::from_secs(60), "the final guidelines", || async {
        let (status, document) = app.get("/v1/books/book/guidelines").await;
        (status == StatusCode::OK).then_some(document)
    })
    .await;
    assert_eq!(document["book_id"], "book");
    assert!(
        !document["topics"].as_array().unwrap().is_empty(),
        "{document}"
    );
    let chain = follow_chain(&app, &body["job"]).await;
    let types: Vec<&str> = chain
        .iter()
        .map(|job| job["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ingest", "ocr", "guidelines", "finalize"]);
    worker.stop().await;
}

#[tokio::test]
async fn one_upload_with_then_processes_the_whole_book_on_sqlite() {
    one_upload_with_then_processes_the_whole_book(TestApp::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_with_then_processes_the_whole_book_on_postgres() {
    let (app, database) = TestApp::postgres().await;
    one_upload_with_then_processes_the_whole_book(app).await;
    database.drop().await;
}

#[test]
fn chains_are_documented_with_their_job_types_and_constraints() {
    let document = serde_json::to_value(api::openapi()).unwrap();
    let schemas = &document["components"]["schemas"];
    // One alternative per job type, each with exactly the chains that type may carry.
    let alternatives = schemas["CreateJob"]["oneOf"].as_array().unwrap();
    let chains: Vec<(Value, Value)> = alternatives
        .iter()
        .map(|alternative| {
            let properties = &alternative["properties"];
            assert_eq!(alternative["additionalProperties"], false, "{alternative}");
            (
                properties["type"]["enum"].clone(),
                properties["then"]["enum"].clone(),
            )
        })
        .collect();
    assert_eq!(
        chains,
        [
            (
                json!(["ocr"]),
                json!([
                    null,
                    [],
                    ["guidelines"],
                    ["finalize"],
                    ["guidelines", "finalize"]
                ])
            ),
            (json!(["guidelines"]), json!([null, [], ["finalize"]])),
            (json!(["finalize"]), json!([null, []])),
        ]
    );
    assert!(
        schemas["CreateJob"]["description"]
            .as_str()
            .unwrap()
            .contains("ocr, guidelines, finalize"),
        "{}",
        schemas["CreateJob"]
    );
    let job = &schemas["Job"]["properties"];
    for field in ["then", "previous_job_id", "next_job_id"] {
        assert!(job[field].is_object(), "Job.{field} is documented: {job}");
    }
    // The upload's `ocr` and `then` are one object parameter, so that `then` can need
    // an ocr job: no chain (any `ocr`), or `ocr=true` or `ocr=force` with a chain.
    let upload = document["paths"]["/v1/books/{book_id}/pages"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["in"] == "query")
        .cloned()
        .expect("the upload documents its query");
    assert_eq!(upload["style"], "form", "{upload}");
    assert_eq!(upload["explode"], true, "{upload}");
    let branches = upload["schema"]["anyOf"].as_array().unwrap();
    assert_eq!(
        branches[0]["properties"]["then"]["enum"],
        json!([""]),
        "{upload}"
    );
    assert_eq!(
        branches[1]["properties"]["ocr"]["enum"],
        json!(["true", "force"]),
        "{upload}"
    );
    assert_eq!(
        branches[1]["properties"]["then"]["enum"],
        json!(["guidelines", "finalize", "guidelines,finalize"]),
        "{upload}"
    );
    assert_eq!(branches[1]["required"], json!(["ocr", "then"]), "{upload}");
}
