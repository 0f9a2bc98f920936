//! 50 concurrent starts of one job type on one book: one 202, 49 × 409 `job_active`
//! naming the same job, on both job stores.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{TestApp, assert_error};

async fn fifty_concurrent_starts_create_one_job(app: TestApp) {
    app.book_with_pages("race", 1).await;
    let app = Arc::new(app);
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                app.post("/v1/books/race/jobs", json!({"type": "ocr"}))
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut busy = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::ACCEPTED {
            created.push(body["id"].clone());
        } else {
            assert_error((status, &body), StatusCode::CONFLICT, "job_active");
            busy.push(body["error"]["details"]["job"]["id"].clone());
        }
    }
    assert_eq!(created.len(), 1, "exactly one 202");
    assert_eq!(busy.len(), 49);
    assert!(
        busy.iter().all(|id| *id == created[0]),
        "every 409 names the created job"
    );
    let (_, list) = app.get("/v1/books/race/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_starts_answer_one_202_and_49_job_active_on_sqlite() {
    fifty_concurrent_starts_create_one_job(TestApp::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_starts_answer_one_202_and_49_job_active_on_postgres() {
    let (app, database) = TestApp::postgres().await;
    fifty_concurrent_starts_create_one_job(app).await;
    database.drop().await;
}
