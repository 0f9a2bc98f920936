//! The openai engine against a local server speaking the chat-completions wire format.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ocr::testing::fixture_pages;
use ocr::{OcrEngine, OcrError, OpenAiConfig, OpenAiEngine, PageImage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One scripted answer: status, extra headers, body.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn completion(text: &str) -> Answer {
    Answer {
        status: 200,
        headers: vec![],
        body: serde_json::json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
        })
        .to_string(),
    }
}

fn error(status: u16, headers: Vec<(&'static str, String)>) -> Answer {
    Answer {
        status,
        headers,
        body: format!(r#"{{"error": {{"message": "status {status}", "type": "test"}}}}"#),
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    authorization: Option<String>,
    body: Value,
}

/// An HTTP/1.1 server answering each request with the next scripted answer (the last one
/// repeats), one request per connection.
struct ChatServer {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ChatServer {
    async fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let answer = answers[index.min(answers.len() - 1)].clone();
                index += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    log.lock().unwrap().push(request);
                    let mut response = format!(
                        "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (name, value) in &answer.headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&answer.body);
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { base_url, seen }
    }

    fn engine(&self) -> OpenAiEngine {
        OpenAiEngine::new(OpenAiConfig::new(
            self.base_url.clone(),
            Some("sk-test".to_owned()),
            "test-model",
        ))
        .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buffer = Vec::new();
    let header_end = loop {
        let mut chunk = [0_u8; 8192];
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let mut content_length = 0;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().ok()?,
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    while buffer.len() < header_end + content_length {
        let mut chunk = [0_u8; 65536];
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&buffer[header_end..header_end + content_length]).ok()?;
    Some(Seen {
        request_line,
        authorization,
        body,
    })
}

fn page() -> PageImage {
    PageImage {
        page: 1,
        png: fixture_pages()[0].png.clone(),
    }
}

#[tokio::test]
async fn a_page_goes_out_as_a_data_url_and_the_completion_text_comes_back() {
    let server = ChatServer::start(vec![completion("Chapter 1: Adding fractions\n")]).await;
    let engine = server.engine();
    assert_eq!(engine.name(), "openai:test-model");
    let text = engine
        .recognize(&page(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(text, "Chapter 1: Adding fractions");
    let seen = server.seen();
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
    let server = ChatServer::start(vec![
        error(429, vec![("retry-after", "2".to_owned())]),
        completion("hello"),
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
    let server = ChatServer::start(vec![error(429, vec![]), completion("page text")]).await;
    let harness = crate::harness::Harness::with_pages(1).await;
    let worker = harness.start_worker(Arc::new(server.engine()), crate::harness::job_config(1, 5));
    let job = harness.enqueue(serde_json::json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, jobs_core::JobStatus::Completed);
    assert_eq!(server.seen().len(), 2);
    let manifest = harness.manifest().await;
    let entry = &manifest.page(1).unwrap().ocr;
    assert_eq!(entry.status, books::OcrStatus::Done);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.engine.as_deref(), Some("openai:test-model"));
    assert_eq!(harness.text(1).await.unwrap(), "page text");
}

#[tokio::test]
async fn http_500_on_every_try_exhausts_the_retries_and_fails_the_page() {
    let server = ChatServer::start(vec![error(500, vec![])]).await;
    let harness = crate::harness::Harness::with_pages(1).await;
    let worker = harness.start_worker(Arc::new(server.engine()), crate::harness::job_config(1, 5));
    let job = harness.enqueue(serde_json::json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(server.seen().len(), 3, "three tries");
    assert_eq!(job.status, jobs_core::JobStatus::Completed);
    assert_eq!(job.progress.failed, 1);
    let manifest = harness.manifest().await;
    let entry = &manifest.page(1).unwrap().ocr;
    assert_eq!(entry.status, books::OcrStatus::Failed);
    assert!(entry.error.as_deref().unwrap().contains("500"), "{entry:?}");
}

#[tokio::test]
async fn http_401_is_terminal_and_fails_the_job_without_retrying() {
    let server = ChatServer::start(vec![error(401, vec![])]).await;
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
    assert_eq!(server.seen().len(), 2);
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
    let server = ChatServer::start(vec![Answer {
        status: 200,
        headers: vec![],
        body: r#"{"unexpected": true}"#.to_owned(),
    }])
    .await;
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
