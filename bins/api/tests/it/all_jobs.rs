//! `GET /v1/jobs`: every book's jobs newest first, status and type filters, keyset pages with
//! `before` / `next_before`, the 422s, and the parameters in the OpenAPI document.

use axum::http::StatusCode;
use chrono::Utc;
use jobs_core::{ClaimParams, Finish, FinishOutcome, Insert, JobError, JobId, JobStatus, NewJob};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error};

/// Puts a job of `job_type` on `book` in the store and brings it to `status`.
async fn job_in(app: &TestApp, book: &str, job_type: &str, status: JobStatus) -> jobs_core::Job {
    let now = Utc::now();
    // A job meant to stay pending is due tomorrow, so the claims below pass it by.
    let created = if status == JobStatus::Pending {
        now + chrono::Duration::days(1)
    } else {
        now
    };
    let new = NewJob {
        id: JobId::new(),
        resource_key: book.to_owned(),
        job_type: job_type.to_owned(),
        payload: json!({}),
        max_attempts: 3,
        checkpoint: None,
        resumed_from: None,
        then: Vec::new(),
        trace_parent: None,
        now: created,
    };
    let Insert::Inserted(job) = app.job_store.insert(new).await.unwrap() else {
        panic!("{book} already has an active {job_type} job");
    };
    match status {
        JobStatus::Pending => return job,
        JobStatus::Cancelled => return app.job_store.request_cancel(job.id, now).await.unwrap(),
        _ => {}
    }
    let claimed = app
        .job_store
        .claim(&ClaimParams {
            worker_id: "test-worker".into(),
            job_types: vec![job_type.into()],
            limit: 1,
            now,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, job.id);
    let outcome = match status {
        JobStatus::Running => return claimed[0].clone(),
        JobStatus::Completed => FinishOutcome::Completed,
        _ => FinishOutcome::Failed(JobError::new("broken", "it broke", false)),
    };
    let finish = Finish::new(job.id, claimed[0].lease, outcome);
    assert_eq!(app.job_store.finish_one(now, finish).await.unwrap(), status);
    app.job_store.get(job.id).await.unwrap()
}

/// Twelve jobs over three books, every type and every status, oldest first. Each active job
/// has its own (book, type).
async fn jobs_of_three_books(app: &TestApp) -> Vec<jobs_core::Job> {
    let plan = [
        ("algebra", "ocr", JobStatus::Completed),
        ("biology", "ocr", JobStatus::Failed),
        ("algebra", "guidelines", JobStatus::Completed),
        ("chemistry", "ocr", JobStatus::Running),
        ("biology", "guidelines", JobStatus::Cancelled),
        ("algebra", "finalize", JobStatus::Completed),
        ("biology", "ocr", JobStatus::Pending),
        ("chemistry", "guidelines", JobStatus::Failed),
        ("algebra", "ocr", JobStatus::Completed),
        ("chemistry", "finalize", JobStatus::Completed),
        ("algebra", "guidelines", JobStatus::Cancelled),
        ("biology", "finalize", JobStatus::Completed),
    ];
    let mut jobs = Vec::new();
    for (book, job_type, status) in plan {
        jobs.push(job_in(app, book, job_type, status).await);
    }
    jobs
}

/// The ids of `jobs` newest first, as the API writes them.
fn newest_first<'a>(jobs: impl DoubleEndedIterator<Item = &'a jobs_core::Job>) -> Vec<String> {
    jobs.rev().map(|job| job.id.to_string()).collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `next_before` from the first page of `query` to the last; the pages' ids.
async fn every_page(app: &TestApp, query: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut uri = format!("/v1/jobs?{query}");
    loop {
        let (status, page) = app.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {page}");
        pages.push(ids(&page));
        match page["next_before"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), pages.last().unwrap().last().map(String::as_str));
                uri = format!("/v1/jobs?{query}&before={next}");
            }
            None => {
                assert!(page["next_before"].is_null(), "{page}");
                return pages;
            }
        }
        assert!(pages.len() <= 100, "paging does not end: {uri}");
    }
}

#[tokio::test]
async fn every_books_jobs_are_listed_newest_first_in_the_job_shape() {
    let app = TestApp::sqlite().await;
    let jobs = jobs_of_three_books(&app).await;
    let (status, page) = app.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), newest_first(jobs.iter()));
    assert!(page["next_before"].is_null(), "{page}");
    let newest = &page["jobs"][0];
    assert_eq!(newest["book_id"], "biology");
    assert_eq!(newest["type"], "finalize");
    assert_eq!(newest["status"], "completed");
    // The pending job was created "tomorrow", yet it sits where its id puts it.
    assert_eq!(page["jobs"][5]["status"], "pending");
}

#[tokio::test]
async fn status_and_type_filters_select_jobs_and_combine() {
    let app = TestApp::sqlite().await;
    let jobs = jobs_of_three_books(&app).await;
    let with = |statuses: &[JobStatus], job_type: Option<&str>| {
        newest_first(
            jobs.iter()
                .filter(|job| statuses.is_empty() || statuses.contains(&job.status))
                .filter(|job| job_type.is_none_or(|job_type| job.job_type == job_type)),
        )
    };
    let cases = [
        ("status=failed", with(&[JobStatus::Failed], None)),
        (
            "status=failed,cancelled",
            with(&[JobStatus::Failed, JobStatus::Cancelled], None),
        ),
        (
            "status=pending,running",
            with(&[JobStatus::Pending, JobStatus::Running], None),
        ),
        ("status=completed", with(&[JobStatus::Completed], None)),
        ("type=ocr", with(&[], Some("ocr"))),
        (
            "status=completed&type=guidelines",
            with(&[JobStatus::Completed], Some("guidelines")),
        ),
        (
            "status=completed,failed&type=ocr",
            with(&[JobStatus::Completed, JobStatus::Failed], Some("ocr")),
        ),
        ("status=running&type=finalize", Vec::new()),
    ];
    for (query, expected) in cases {
        let (status, page) = app.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(ids(&page), expected, "{query}");
    }
    assert_eq!(with(&[JobStatus::Failed], None).len(), 2);
}

#[tokio::test]
async fn pages_chained_with_next_before_return_every_job_exactly_once() {
    let app = TestApp::sqlite().await;
    let jobs = jobs_of_three_books(&app).await;
    for (query, expected) in [
        ("limit=5", newest_first(jobs.iter())),
        ("limit=1", newest_first(jobs.iter())),
        // 12 jobs in pages of 4: the third page is full and the last.
        ("limit=4", newest_first(jobs.iter())),
        (
            "limit=2&status=completed,failed",
            newest_first(
                jobs.iter()
                    .filter(|job| matches!(job.status, JobStatus::Completed | JobStatus::Failed)),
            ),
        ),
    ] {
        let pages = every_page(&app, query).await;
        let size: usize = query
            .trim_start_matches("limit=")
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pages.iter().all(|page| page.len() <= size), "{pages:?}");
        assert!(
            pages.iter().all(|page| !page.is_empty()),
            "no empty page at the end: {pages:?}"
        );
        assert_eq!(pages.concat(), expected, "{query}");
    }
    assert_eq!(every_page(&app, "limit=4").await.len(), 3);
    // A `before` older than every job is an empty last page.
    let oldest = jobs[0].id;
    let (status, page) = app.get(&format!("/v1/jobs?before={oldest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({"jobs": [], "next_before": null}));
}

#[tokio::test]
async fn bad_statuses_types_limits_and_before_answer_422_invalid_request() {
    let app = TestApp::sqlite().await;
    for query in [
        "status=done",
        "status=",
        "status=failed,nope",
        "status=FAILED",
        "status=failed,",
        "status=failed&status=cancelled",
        "type=unknown",
        "type=",
        "type=conformance.test",
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=ten",
        "before=not-a-uuid",
        "before=12",
    ] {
        let (status, body) = app.get(&format!("/v1/jobs?{query}")).await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    let (_, body) = app.get("/v1/jobs?status=done").await;
    assert_eq!(
        body["error"]["details"]["known_statuses"],
        json!(["pending", "running", "completed", "failed", "cancelled"])
    );
    let (_, body) = app.get("/v1/jobs?type=unknown").await;
    assert_eq!(
        body["error"]["details"]["known_types"],
        json!(["ocr", "guidelines", "finalize"])
    );
    for query in ["limit=1", "limit=500", "status=%20failed", ""] {
        let (status, body) = app.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
    }
}

#[tokio::test]
async fn every_books_jobs_are_filtered_and_paged_on_postgres() {
    let (app, database) = TestApp::postgres().await;
    let jobs = jobs_of_three_books(&app).await;
    let pages = every_page(&app, "limit=5").await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), newest_first(jobs.iter()));
    let rare = every_page(&app, "limit=1&status=failed,cancelled,running").await;
    assert_eq!(
        rare.concat(),
        newest_first(jobs.iter().filter(|job| matches!(
            job.status,
            JobStatus::Failed | JobStatus::Cancelled | JobStatus::Running
        )))
    );
    let (status, page) = app.get("/v1/jobs?status=completed&type=finalize").await;
    assert_eq!(status, StatusCode::OK);
    let finalized: Vec<&Value> = page["jobs"].as_array().unwrap().iter().collect();
    assert_eq!(finalized.len(), 3);
    assert!(
        finalized
            .iter()
            .all(|job| job["type"] == "finalize" && job["status"] == "completed")
    );
    database.drop().await;
}

#[test]
fn the_document_states_the_constraints_of_every_listing_parameter() {
    let document = serde_json::to_value(api::openapi()).unwrap();
    let operation = &document["paths"]["/v1/jobs"]["get"];
    let parameter = |name: &str| {
        operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}: {operation}"))
            .clone()
    };
    let status = parameter("status");
    assert_eq!(status["in"], "query");
    assert_eq!(status["style"], "form");
    assert_eq!(status["explode"], false);
    let status_schema = status["schema"].to_string();
    assert!(status_schema.contains("array"), "{status_schema}");
    let statuses = &document["components"]["schemas"]["JobStatus"]["enum"];
    assert_eq!(
        *statuses,
        json!(["pending", "running", "completed", "failed", "cancelled"]),
        "{status_schema}"
    );
    assert!(
        status_schema.contains("#/components/schemas/JobStatus"),
        "{status_schema}"
    );
    assert_eq!(
        parameter("type")["schema"]["enum"],
        json!(["ocr", "guidelines", "finalize"])
    );
    let limit = parameter("limit")["schema"].clone();
    assert_eq!(limit["minimum"], 1, "{limit}");
    assert_eq!(limit["maximum"], 500, "{limit}");
    assert_eq!(limit["default"], 50, "{limit}");
    assert_eq!(parameter("before")["schema"]["format"], "uuid");
    for name in ["status", "type", "limit", "before"] {
        assert_ne!(parameter(name)["required"], true, "{name}");
    }
    let page = &document["components"]["schemas"]["JobPage"];
    assert!(page["properties"]["jobs"].is_object(), "{page}");
    assert!(page["properties"]["next_before"].is_object(), "{page}");
}
