//! A router over fresh stores, and request helpers.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use blob_store::BlobStore;
use http_body_util::BodyExt;
use jobs_core::JobStore;
use serde_json::Value;
use tower::ServiceExt;

/// A router over its own stores.
pub(crate) struct TestApp {
    pub(crate) state: AppState,
    pub(crate) job_store: Arc<dyn JobStore>,
    pub(crate) blob_store: Arc<dyn BlobStore>,
    pub(crate) token: Option<String>,
    _guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl TestApp {
    /// SQLite in a temp dir and a `file://` store, default settings.
    pub(crate) async fn sqlite() -> Self {
        Self::sqlite_with(ApiConfig::default()).await
    }

    /// SQLite in a temp dir and a `file://` store.
    pub(crate) async fn sqlite_with(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/jobs.db", dir.path().display());
        let job_store: Arc<dyn JobStore> =
            Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await.unwrap());
        let blob_store: Arc<dyn BlobStore> = Arc::new(
            blob_store::FileBlobStore::open(dir.path().join("objects"))
                .await
                .unwrap(),
        );
        Self::over(job_store, blob_store, config, vec![Box::new(dir)])
    }

    /// A fresh Postgres database and a `file://` store.
    pub(crate) async fn postgres() -> (Self, jobs_postgres::testing::TestDatabase) {
        let database = jobs_postgres::testing::TestDatabase::create().await;
        let job_store: Arc<dyn JobStore> = Arc::new(database.store().await);
        let dir = tempfile::tempdir().unwrap();
        let blob_store: Arc<dyn BlobStore> = Arc::new(
            blob_store::FileBlobStore::open(dir.path().join("objects"))
                .await
                .unwrap(),
        );
        let app = Self::over(
            job_store,
            blob_store,
            ApiConfig::default(),
            vec![Box::new(dir)],
        );
        (app, database)
    }

    pub(crate) fn over(
        job_store: Arc<dyn JobStore>,
        blob_store: Arc<dyn BlobStore>,
        config: ApiConfig,
        guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        let token = config.api_token.clone();
        let state = AppState::new(job_store.clone(), blob_store.clone(), config);
        Self {
            state,
            job_store,
            blob_store,
            token,
            _guards: guards,
        }
    }

    pub(crate) fn router(&self) -> Router {
        api::app(self.state.clone())
    }

    /// Sends a request (with the token, if the app has one).
    pub(crate) async fn send(&self, mut request: Request<Body>) -> Response<Body> {
        if let Some(token) = &self.token
            && !request.headers().contains_key(header::AUTHORIZATION)
        {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        self.router().oneshot(request).await.unwrap()
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (`Value::Null` for an empty or non-JSON body).
    pub(crate) async fn json(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self.send(builder.body(body).unwrap()).await;
        into_json(response).await
    }

    pub(crate) async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.json("GET", uri, None).await
    }

    pub(crate) async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.json("POST", uri, Some(body)).await
    }

    /// Creates a book with this id.
    pub(crate) async fn create_book(&self, id: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/books",
                serde_json::json!({"id": id, "title": format!("Book {id}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Uploads files to a book's pages.
    pub(crate) async fn upload(
        &self,
        book: &str,
        query: &str,
        files: &[(&str, &[u8])],
    ) -> (StatusCode, Value) {
        let (content_type, body) = multipart(files);
        let request = Request::builder()
            .method("POST")
            .uri(format!("/v1/books/{book}/pages{query}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        into_json(self.send(request).await).await
    }

    /// A book with `pages` fixture pages and no job: the pages are made in process by
    /// `Books::ingest_pages` (what an `ingest` job makes of an upload), for the tests that
    /// need a book, not an upload.
    pub(crate) async fn book_with_pages(&self, id: &str, pages: usize) {
        self.create_book(id).await;
        let files = ocr::testing::fixture_pages()
            .into_iter()
            .take(pages)
            .map(|page| books::UploadedFile {
                name: format!("page-{}.png", page.number),
                bytes: page.png,
            })
            .collect();
        self.state
            .books()
            .ingest_pages(
                &books::BookId::parse(id).unwrap(),
                files,
                &books::IngestLimits::default(),
            )
            .await
            .unwrap();
    }

    /// Uploads files (202 asserted) and runs the upload's `ingest` job to its end with an
    /// ingest worker of the test's own; the upload's answer and the ended job. The jobs
    /// its chain starts (`ocr` ...) stay pending for the test.
    pub(crate) async fn upload_and_ingest(
        &self,
        book: &str,
        query: &str,
        files: &[(&str, &[u8])],
    ) -> (Value, Value) {
        let (status, answer) = self.upload(book, query, files).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let job = self.ingest(&answer).await;
        (answer, job)
    }

    /// Runs the `ingest` job of an upload's answer to its end; the job as it ended.
    pub(crate) async fn ingest(&self, answer: &Value) -> Value {
        assert_eq!(answer["job"]["type"], "ingest", "{answer}");
        let id: jobs_core::JobId = answer["job"]["id"].as_str().unwrap().parse().unwrap();
        let worker = self.start_worker(vec![Arc::new(ingest::IngestHandler::new(
            self.state.books().clone(),
            ingest::IngestJobConfig::default(),
        ))]);
        let ended = jobs_core::testing::wait_for_job(
            self.job_store.as_ref(),
            id,
            Duration::from_secs(120),
            "the upload's ingest to end",
            |job| job.status.is_terminal(),
        )
        .await;
        worker.stop().await;
        let (status, job) = self.get(&format!("/v1/jobs/{}", ended.id)).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        job
    }

    /// The job with this id from the store.
    pub(crate) async fn stored_job(&self, id: &Value) -> jobs_core::Job {
        let id: jobs_core::JobId = id.as_str().unwrap().parse().unwrap();
        self.job_store.get(id).await.unwrap()
    }
}

pub(crate) async fn into_json(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

pub(crate) async fn into_bytes(response: Response<Body>) -> (StatusCode, Vec<u8>) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

/// A multipart/form-data body with one `files` field per file.
pub(crate) fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    multipart_with_boundary(files, "folio-test-boundary-7d1f")
}

/// [`multipart`] with its own boundary, as each sending of a real client draws one.
pub(crate) fn multipart_with_boundary(
    files: &[(&str, &[u8])],
    boundary: &str,
) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Asserts an error answer: status, code, and the error shape.
#[track_caller]
pub(crate) fn assert_error(actual: (StatusCode, &Value), status: StatusCode, code: &str) {
    let (actual_status, body) = actual;
    assert_eq!(actual_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}

/// Polling with a deadline: the workspace's helper (the dashboard tests poll the browser
/// through their own, which screenshots the page on a timeout).
pub(crate) use jobs_core::testing::eventually;

/// A worker running in the test's runtime; [`RunningWorker::stop`] shuts it down.
pub(crate) struct RunningWorker {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), jobs_core::runtime::WorkerError>>,
}

impl RunningWorker {
    /// Stops the worker and waits for it.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

impl TestApp {
    /// Runs a worker with `handlers` on the app's job store, with quick timings.
    pub(crate) fn start_worker(
        &self,
        handlers: Vec<Arc<dyn jobs_core::runtime::JobHandler>>,
    ) -> RunningWorker {
        let config = jobs_core::runtime::WorkerConfig {
            concurrency: 2,
            heartbeat_interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(20),
            progress_flush: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(50),
            ..jobs_core::runtime::WorkerConfig::default()
        };
        let mut worker = jobs_core::runtime::Worker::new(
            self.job_store.clone(),
            Arc::new(jobs_core::SystemClock),
            config,
        );
        for handler in handlers {
            worker = worker.handler(handler);
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        RunningWorker { shutdown, handle }
    }

    /// Marks every page of `book` as OCRed with the fixture page of the same number's text
    /// (as an `ocr` job would record it), without running OCR.
    pub(crate) async fn ocr_done_with_fixture_text(&self, book: &str) {
        let book_id = books::BookId::parse(book).unwrap();
        let books = books::Books::new(self.blob_store.clone());
        let manifest = books.manifest(&book_id).await.unwrap();
        let fixtures = ocr::testing::fixture_pages();
        for page in &manifest.pages {
            let text = &fixtures[(page.page as usize - 1) % fixtures.len()].text;
            let key = books::layout::book_key(&book_id, &books::layout::ocr_text_path(page.page));
            self.blob_store
                .put(
                    &key,
                    bytes::Bytes::from(text.clone()),
                    blob_store::PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
        books
            .update(&book_id, |manifest| {
                for page in &mut manifest.pages {
                    page.ocr.status = books::OcrStatus::Done;
                    page.ocr.text = Some(books::layout::ocr_text_path(page.page));
                    page.ocr.engine = Some("fixture".into());
                }
            })
            .await
            .unwrap();
    }

    /// Polls the job until it reaches a terminal status; its JSON.
    /// Waits for `first` and each job its chain starts to end; the last one. A chain
    /// stops at a job that did not complete.
    pub(crate) async fn wait_chain_end(&self, first: &Value) -> Value {
        let mut job = self.wait_until_finished(&first["id"]).await;
        while job["status"] == "completed" && job["next_job_id"].is_string() {
            job = self.wait_until_finished(&job["next_job_id"]).await;
        }
        job
    }

    pub(crate) async fn wait_until_finished(&self, job_id: &Value) -> Value {
        let uri = format!("/v1/jobs/{}", job_id.as_str().unwrap());
        eventually(Duration::from_secs(120), "the job to finish", || async {
            let (_, job) = self.get(&uri).await;
            matches!(
                job["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(job)
        })
        .await
    }
}
