//! The openai engine against a local server speaking the chat-completions wire format.

use std::sync::Arc;
use std::time::Duration;

use chat_client::testing::{FakeAnswer, FakeChatServer};
use ocr::testing::fixture_pages;
use ocr::{OcrEngine, OcrError, OpenAiConfig, OpenAiEngine, PageImage};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The engine of a fake chat server (key `sk-test`, model `test-model`).
trait FakeServerEngine {
    fn engine(&self) -> OpenAiEngine;
}

impl FakeServerEngine for FakeChatServer {
    fn engine(&self) -> OpenAiEngine {
        OpenAiEngine::new(self.endpoint()).unwrap()
    }
}

fn page() -> PageImage {
    PageImage::new(1, fixture_pages()[0].png.clone())
}

#[tokio::test]
async fn a_page_goes_out_as_a_data_url_and_the_completion_text_comes_back() {
    let server = FakeChatServer::start(vec![FakeAnswer::completion(
        "Chapter 1: Adding fractions\n",
    )])
    .await;
    let engine = server.engine();
    assert_eq!(engine.name(), "openai:test-model");
    let text = engine
        .recognize(&page(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(text, "Chapter 1: Adding fractions");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(seen[0].body["model"], "test-model");
    let content = &seen[0].body["messages"][0]["content"];
    assert_eq!(content[0]["type"], "text");
    let url = content[1]["image_url"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("data:image/png;base64,iVBORw0KGgo"),
        "{}",
        &url[..40]
    );
}

#[tokio::test]
async fn http_429_is_retryable_after_the_servers_delay_and_then_succeeds() {
    let server = FakeChatServer::start(vec![
        FakeAnswer::error(429).with_header("retry-after", "2"),
        FakeAnswer::completion("hello"),
    ])
    .await;
    let engine = server.engine();
    let cancel = CancellationToken::new();
    let first = engine.recognize(&page(), &cancel).await.unwrap_err();
    assert!(
        matches!(first, OcrError::Http { status: 429, .. }),
        "{first:?}"
    );
    assert_eq!(
        first.kind(),
        jobs_core::runtime::ErrorKind::Retryable {
            after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(engine.recognize(&page(), &cancel).await.unwrap(), "hello");
}

#[tokio::test]
async fn the_ocr_job_retries_a_429_and_records_the_page_done() {
    let server = FakeChatServer::start(vec![
        FakeAnswer::error(429),
        FakeAnswer::completion("page text"),
    ])
    .await;
    let harness = crate::harness::Harness::with_pages(1).await;
    let worker = harness.start_worker(Arc::new(server.engine()), crate::harness::job_config(1, 5));
    let job = harness.enqueue(serde_json::json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, jobs_core::JobStatus::Completed);
    assert_eq!(server.requests().len(), 2);
    let manifest = harness.manifest().await;
    let entry = &manifest.page(1).unwrap().ocr;
    assert_eq!(entry.status, books::OcrStatus::Done);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.engine.as_deref(), Some("openai:test-model"));
    assert_eq!(harness.text(1).await.unwrap(), "page text");
}

#[tokio::test]
async fn http_500_on_every_try_exhausts_the_retries_and_fails_the_page() {
    let server = FakeChatServer::start(vec![FakeAnswer::error(500)]).await;
    let harness = crate::harness::Harness::with_pages(1).await;
    let worker = harness.start_worker(Arc::new(server.engine()), crate::harness::job_config(1, 5));
    let job = harness.enqueue(serde_json::json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(server.requests().len(), 3, "three tries");
    assert_eq!(job.status, jobs_core::JobStatus::Completed);
    assert_eq!(job.progress.failed, 1);
    let manifest = harness.manifest().await;
    let entry = &manifest.page(1).unwrap().ocr;
    assert_eq!(entry.status, books::OcrStatus::Failed);
    assert!(entry.error.as_deref().unwrap().contains("500"), "{entry:?}");
}

#[tokio::test]
async fn http_401_is_terminal_and_fails_the_job_without_retrying() {
    let server = FakeChatServer::start(vec![FakeAnswer::error(401)]).await;
    let engine = server.engine();
    let error = engine
        .recognize(&page(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), jobs_core::runtime::ErrorKind::Terminal);

    let harness = crate::harness::Harness::with_pages(3).await;
    let worker = harness.start_worker(Arc::new(engine), crate::harness::job_config(1, 5));
    let job = harness.enqueue(serde_json::json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, jobs_core::JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "ocr_http");
    // One call by the test, one by the job: bad credentials stop the job at once.
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_server_that_is_not_listening_is_a_retryable_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let engine =
        OpenAiEngine::new(OpenAiConfig::new(format!("http://{address}/v1"), None, "m")).unwrap();
    let error = engine
        .recognize(&page(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(error, OcrError::Transport { .. }), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_2xx_body_that_is_not_a_completion_is_terminal() {
    let server = FakeChatServer::start(vec![FakeAnswer::new(200, r#"{"unexpected": true}"#)]).await;
    let error = server
        .engine()
        .recognize(&page(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OcrError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), jobs_core::runtime::ErrorKind::Terminal);
}
