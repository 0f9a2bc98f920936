//! Health, readiness and metrics.

use std::sync::Arc;

use api::ApiConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use jobs_core::WorkerInfo;

use crate::support::{TestApp, into_bytes};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::sqlite().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_reports_database_storage_and_live_workers() {
    let app = TestApp::sqlite().await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["ok"], true);
    assert_eq!(body["storage"]["ok"], true);
    assert_eq!(body["live_workers"], 0);
    let now = Utc::now();
    app.job_store
        .register_worker(&WorkerInfo {
            id: "w-1".into(),
            host: "h".into(),
            job_types: vec!["ocr".into()],
            started_at: now,
            last_seen: now,
        })
        .await
        .unwrap();
    let (_, body) = app.get("/readyz").await;
    assert_eq!(body["live_workers"], 1);
}

#[derive(Debug)]
struct BrokenStore;

#[jobs_core::async_trait]
impl blob_store::BlobStore for BrokenStore {
    async fn get(&self, key: &str) -> Result<blob_store::Blob, blob_store::BlobError> {
        Err(broken(key))
    }
    async fn put(
        &self,
        key: &str,
        _bytes: bytes::Bytes,
        _mode: blob_store::PutMode,
    ) -> Result<blob_store::ETag, blob_store::BlobError> {
        Err(broken(key))
    }
    async fn head(&self, key: &str) -> Result<blob_store::BlobMeta, blob_store::BlobError> {
        Err(broken(key))
    }
    async fn delete(&self, key: &str) -> Result<(), blob_store::BlobError> {
        Err(broken(key))
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<blob_store::ListEntry>, blob_store::BlobError> {
        Err(broken(prefix))
    }
    async fn put_file(
        &self,
        key: &str,
        _path: &std::path::Path,
        _mode: blob_store::PutMode,
    ) -> Result<blob_store::ETag, blob_store::BlobError> {
        Err(broken(key))
    }
    async fn get_to_file(
        &self,
        key: &str,
        _path: &std::path::Path,
    ) -> Result<u64, blob_store::BlobError> {
        Err(broken(key))
    }
}

fn broken(key: &str) -> blob_store::BlobError {
    blob_store::BlobError::InvalidKey {
        key: key.to_owned(),
        reason: "secret backend detail /var/lib/x",
    }
}

#[tokio::test]
async fn a_broken_storage_makes_readyz_503_and_routes_answer_a_generic_500() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let job_store = Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await.unwrap());
    let app = TestApp::over(
        job_store,
        Arc::new(BrokenStore),
        ApiConfig::default(),
        vec![Box::new(dir)],
    );
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["storage"]["ok"], false);
    let (status, body) = app.get("/v1/books/any").await;
    crate::support::assert_error(
        (status, &body),
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
    );
    assert!(
        !body.to_string().contains("secret"),
        "5xx bodies leak nothing: {body}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route() {
    let app = TestApp::sqlite().await;
    app.get("/v1/books/one").await;
    app.get("/v1/books/two").await;
    let response = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let (status, bytes) = into_bytes(response).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(
            "folio_http_requests_total{method=\"GET\",route=\"/v1/books/{book_id}\",status=\"404\"} 2"
        ),
        "{text}"
    );
}
