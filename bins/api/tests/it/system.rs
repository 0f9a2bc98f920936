//! Health, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use api::ApiConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use jobs_core::{Clock as _, WorkerInfo};

use crate::support::{TestApp, eventually, into_bytes};

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
    // Answers are cached for a second: the new worker shows within a few.
    eventually(
        Duration::from_secs(10),
        "the new worker in /readyz",
        || async {
            let (_, body) = app.get("/readyz").await;
            (body["live_workers"] == 1).then_some(())
        },
    )
    .await;
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

/// A client chooses a request's method and path; neither can grow `/metrics`.
#[tokio::test]
async fn junk_methods_and_paths_leave_the_metrics_the_same_size() {
    let app = TestApp::sqlite().await;
    let metrics = || async {
        let response = app
            .send(Request::get("/metrics").body(Body::empty()).unwrap())
            .await;
        String::from_utf8(into_bytes(response).await.1).unwrap()
    };
    // The labels every junk request below lands on, once each.
    let junk = |method: &str, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    };
    app.send(junk("OTHERX", "/v1/books/a")).await;
    app.send(junk("GET", "/no/such/route")).await;
    let before = metrics().await;
    // Deterministic junk: 10 KB method tokens and paths no route matches.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for index in 0..1_000 {
        let letter = char::from(b'A' + (next() % 26) as u8);
        let method = format!("{letter}{}{index}", "Q".repeat(10_000));
        let status = app.send(junk(&method, "/v1/books/a")).await.status();
        assert!(status.is_client_error(), "{status}");
        let path = format!("/{:x}/{:x}/{index}", next(), next());
        app.send(junk("GET", &path)).await;
    }
    let after = metrics().await;
    assert!(
        after.len() <= before.len() + 2_048,
        "/metrics grew from {} to {} bytes:\n{after}",
        before.len(),
        after.len()
    );
    assert!(after.contains("method=\"OTHER\""), "{after}");
    assert!(after.contains("route=\"unmatched\""), "{after}");
}

/// Every answer carries `nosniff`, and the API's own answers (data, errors) a policy that
/// lets nothing load or frame them.
#[tokio::test]
async fn api_answers_carry_nosniff_and_a_closed_content_security_policy() {
    let app = TestApp::sqlite().await;
    for uri in ["/v1/books", "/v1/books/none", "/healthz", "/no/such/route"] {
        let response = app
            .send(Request::get(uri).body(Body::empty()).unwrap())
            .await;
        let headers = response.headers();
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; frame-ancestors 'none'",
            "{uri}"
        );
    }
}

/// Readiness is checked at most once a second (by the state's clock), however often it is
/// asked.
#[tokio::test]
async fn readyz_answers_from_a_cache_refreshed_at_most_once_a_second() {
    let mut app = TestApp::sqlite().await;
    let clock = Arc::new(jobs_core::ManualClock::starting_now());
    app.state = api::AppState::builder(
        app.job_store.clone(),
        app.blob_store.clone(),
        ApiConfig::default(),
    )
    .clock(clock.clone())
    .build();
    let first = app.get("/readyz").await;
    assert_eq!(first.1["live_workers"], 0);
    app.job_store
        .register_worker(&WorkerInfo {
            id: "w-1".into(),
            host: "h".into(),
            job_types: vec!["ocr".into()],
            started_at: clock.now(),
            last_seen: clock.now(),
        })
        .await
        .unwrap();
    clock.advance(Duration::from_millis(900));
    assert_eq!(
        app.get("/readyz").await,
        first,
        "within the second: the cached answer"
    );
    clock.advance(Duration::from_millis(100));
    let (_, body) = app.get("/readyz").await;
    assert_eq!(body["live_workers"], 1, "a second later: checked again");
}
