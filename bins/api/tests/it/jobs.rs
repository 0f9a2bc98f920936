//! Jobs of a book (start, resume, list, latest) and one job (get, cancel, resume).

use axum::http::StatusCode;
use chrono::Utc;
use jobs_core::{ClaimParams, Finish, FinishOutcome, HeartbeatParams, JobError, JobStatus};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error};

/// Claims the book's pending ocr job, records a checkpoint and fails it.
async fn fail_pending_job(app: &TestApp, checkpoint: Value) -> jobs_core::Job {
    let now = Utc::now();
    let claimed = app
        .job_store
        .claim(&ClaimParams {
            worker_id: "test-worker".into(),
            job_types: vec!["ocr".into()],
            limit: 1,
            now,
        })
        .await
        .unwrap();
    let job = claimed.into_iter().next().expect("a pending job to claim");
    app.job_store
        .heartbeat(&HeartbeatParams {
            id: job.id,
            lease: job.lease,
            now,
            progress: None,
            checkpoint: Some(checkpoint),
        })
        .await
        .unwrap();
    let status = app
        .job_store
        .finish_one(
            now,
            Finish::new(
                job.id,
                job.lease,
                FinishOutcome::Failed(JobError::new("storage_down", "storage is down", false)),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, JobStatus::Failed);
    app.job_store.get(job.id).await.unwrap()
}

#[tokio::test]
async fn starting_a_job_answers_202_with_the_job_in_the_specified_shape() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("start", 1).await;
    let (status, job) = app
        .post("/v1/books/start/jobs", json!({"type": "ocr"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let keys: Vec<&str> = job
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "id",
        "book_id",
        "type",
        "status",
        "attempt",
        "max_attempts",
        "progress",
        "error",
        "resumed_from",
        "cancel_requested",
        "worker_id",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "then",
        "previous_job_id",
        "next_job_id",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(job["book_id"], "start");
    assert_eq!(job["type"], "ocr");
    assert_eq!(job["status"], "pending");
    assert_eq!(job["max_attempts"], 3);
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["resumed_from"], Value::Null);
    assert_eq!(job["then"], json!([]));
    assert_eq!(job["previous_job_id"], Value::Null);
    assert_eq!(job["next_job_id"], Value::Null);
    let progress: Vec<&str> = job["progress"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "total",
        "completed",
        "failed",
        "current_item",
        "last_completed_item",
        "message",
    ] {
        assert!(progress.contains(&field), "{job}");
    }
}

#[tokio::test]
async fn a_second_start_is_409_job_active_carrying_the_active_job() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("twice", 1).await;
    let (_, first) = app
        .post("/v1/books/twice/jobs", json!({"type": "ocr"}))
        .await;
    let (status, body) = app
        .post("/v1/books/twice/jobs", json!({"type": "ocr"}))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_active");
    assert_eq!(body["error"]["details"]["job"]["id"], first["id"]);
    assert_eq!(body["error"]["details"]["job"]["status"], "pending");
}

#[tokio::test]
async fn starting_a_job_checks_the_type_the_book_and_the_body() {
    let app = TestApp::sqlite().await;
    app.create_book("checks").await;
    let (status, body) = app
        .post("/v1/books/checks/jobs", json!({"type": "summarize"}))
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_eq!(
        body["error"]["details"]["known_types"],
        json!(["ocr", "guidelines", "finalize"])
    );
    let (status, body) = app.post("/v1/books/checks/jobs", json!({})).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let (status, body) = app
        .post("/v1/books/ghost/jobs", json!({"type": "ocr"}))
        .await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post("/v1/books/GHOST/jobs", json!({"type": "ocr"}))
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn jobs_are_listed_newest_first_with_type_and_limit() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("list", 1).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, job) = app
            .post("/v1/books/list/jobs", json!({"type": "ocr"}))
            .await;
        app.post(
            &format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap()),
            json!(null),
        )
        .await;
        ids.push(job["id"].clone());
    }
    let (status, body) = app.get("/v1/books/list/jobs").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<Value> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].clone())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    let (_, body) = app.get("/v1/books/list/jobs?type=ocr&limit=2").await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2);
    let (_, body) = app.get("/v1/books/list/jobs?type=finalize").await;
    assert_eq!(body["jobs"], json!([]));
    for query in [
        "limit=0",
        "limit=501",
        "limit=many",
        "type=unknown",
        "type=",
    ] {
        let (status, body) = app.get(&format!("/v1/books/list/jobs?{query}")).await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    let (status, body) = app.get("/v1/books/nobody/jobs").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn latest_is_null_without_jobs_then_the_newest_job() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("latest", 1).await;
    let (status, body) = app.get("/v1/books/latest/jobs/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null);
    let (_, job) = app
        .post("/v1/books/latest/jobs", json!({"type": "ocr"}))
        .await;
    let (status, body) = app.get("/v1/books/latest/jobs/latest?type=ocr").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], job["id"]);
    let (_, body) = app.get("/v1/books/latest/jobs/latest?type=finalize").await;
    assert_eq!(body, Value::Null);
    let (status, body) = app.get("/v1/books/latest/jobs/latest?type=unknown").await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let (status, body) = app.get("/v1/books/unknown/jobs/latest").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_job_is_found_by_id_404_when_unknown_422_when_not_a_uuid() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("byid", 1).await;
    let (_, job) = app
        .post("/v1/books/byid/jobs", json!({"type": "ocr"}))
        .await;
    let (status, body) = app
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, job);
    let (status, body) = app.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/jobs/not-a-uuid").await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn cancelling_a_pending_job_ends_it_and_cancelling_again_is_409_job_terminal() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("cancel", 1).await;
    let (_, job) = app
        .post("/v1/books/cancel/jobs", json!({"type": "ocr"}))
        .await;
    let uri = format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap());
    let (status, body) = app.post(&uri, json!(null)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert!(body["finished_at"].is_string());
    let (status, body) = app.post(&uri, json!(null)).await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_terminal");
    assert_eq!(body["error"]["details"]["job"]["id"], job["id"]);
    let (status, body) = app
        .post(
            &format!("/v1/jobs/{}/cancel", uuid::Uuid::now_v7()),
            json!(null),
        )
        .await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.post("/v1/jobs/42/cancel", json!(null)).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn cancelling_a_running_job_requests_the_cancel() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("running", 1).await;
    let (_, job) = app
        .post("/v1/books/running/jobs", json!({"type": "ocr"}))
        .await;
    app.job_store
        .claim(&ClaimParams {
            worker_id: "w".into(),
            job_types: vec!["ocr".into()],
            limit: 1,
            now: Utc::now(),
        })
        .await
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap()),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "running");
    assert_eq!(body["cancel_requested"], true);
    assert_eq!(body["worker_id"], "w");
}

#[tokio::test]
async fn resuming_a_failed_job_creates_a_job_that_continues_from_its_checkpoint() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("resume", 2).await;
    app.post("/v1/books/resume/jobs", json!({"type": "ocr"}))
        .await;
    let checkpoint = json!({"pages": [1, 2], "done": [1]});
    let failed = fail_pending_job(&app, checkpoint.clone()).await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{}/resume", failed.id), json!(null))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["type"], "ocr");
    assert_eq!(body["book_id"], "resume");
    assert_eq!(body["resumed_from"], failed.id.to_string());
    assert_ne!(body["id"], failed.id.to_string());
    let resumed = app.stored_job(&body["id"]).await;
    assert_eq!(resumed.checkpoint, Some(checkpoint));
    assert_eq!(resumed.payload, failed.payload);
}

#[tokio::test]
async fn resuming_a_cancelled_job_works_and_resuming_an_active_or_completed_one_is_409() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("resume-rules", 1).await;
    let (_, job) = app
        .post("/v1/books/resume-rules/jobs", json!({"type": "ocr"}))
        .await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/resume"), json!(null))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_not_resumable");
    assert_eq!(body["error"]["details"]["job"]["status"], "pending");

    app.post(&format!("/v1/jobs/{id}/cancel"), json!(null))
        .await;
    let (status, resumed) = app
        .post(&format!("/v1/jobs/{id}/resume"), json!(null))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    assert_eq!(resumed["resumed_from"], id);

    // The resumed job is active: resuming the cancelled one again is job_active.
    let (status, body) = app
        .post(&format!("/v1/jobs/{id}/resume"), json!(null))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_active");
    assert_eq!(body["error"]["details"]["job"]["id"], resumed["id"]);

    let (status, body) = app
        .post(
            &format!("/v1/jobs/{}/resume", uuid::Uuid::now_v7()),
            json!(null),
        )
        .await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.post("/v1/jobs/zzz/resume", json!(null)).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn starting_with_resume_true_continues_the_latest_failed_or_cancelled_job() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("resume-flag", 2).await;
    let (status, body) = app
        .post(
            "/v1/books/resume-flag/jobs",
            json!({"type": "ocr", "resume": true}),
        )
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_not_resumable");

    app.post("/v1/books/resume-flag/jobs", json!({"type": "ocr"}))
        .await;
    let failed = fail_pending_job(&app, json!({"pages": [1, 2], "done": [2]})).await;
    let (status, resumed) = app
        .post(
            "/v1/books/resume-flag/jobs",
            json!({"type": "ocr", "resume": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    assert_eq!(resumed["resumed_from"], failed.id.to_string());
    assert_eq!(
        app.stored_job(&resumed["id"]).await.checkpoint,
        Some(json!({"pages": [1, 2], "done": [2]}))
    );

    let (status, body) = app
        .post(
            "/v1/books/resume-flag/jobs",
            json!({"type": "ocr", "resume": true}),
        )
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_active");
    assert_eq!(body["error"]["details"]["job"]["id"], resumed["id"]);
}
