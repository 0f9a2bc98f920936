//! Test helpers (feature `testing`): [`FakeChatServer`], a local HTTP server speaking the
//! chat-completions wire format, answering as scripted and recording what it got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::ChatEndpoint;

/// One scripted answer of a [`FakeChatServer`]: status, extra headers, body, and how long
/// the server waits before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeAnswer {
    /// The HTTP status.
    pub status: u16,
    /// Headers besides content-type, content-length and connection.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Time before the answer is sent (a slow model).
    pub delay: Duration,
}

impl FakeAnswer {
    /// An answer with `status` and `body`, no extra headers, at once.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A 200 chat completion whose message content is `content`.
    pub fn completion(content: &str) -> Self {
        Self::completion_with_message(json!({"role": "assistant", "content": content}))
    }

    /// A 200 chat completion with `message` as its first choice's message.
    pub fn completion_with_message(message: Value) -> Self {
        let body = json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        });
        Self::new(200, body.to_string())
    }

    /// An HTTP error in the OpenAI error shape; the body names the status
    /// (`scripted status 500`).
    pub fn error(status: u16) -> Self {
        Self::new(
            status,
            format!(r#"{{"error": {{"message": "scripted status {status}", "type": "test"}}}}"#),
        )
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same answer, sent after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    /// `POST /v1/chat/completions HTTP/1.1`.
    pub request_line: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

impl SeenRequest {
    /// The text content of the first message with `role` (empty when there is none or its
    /// content is not a string).
    pub fn message(&self, role: &str) -> String {
        self.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|message| message["role"] == role)
            .and_then(|message| message["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering each request with the next scripted answer
/// (the last one repeats), or with what a responder makes of the request; one request per
/// connection. It runs on the test's runtime and stops with it.
#[derive(Debug)]
pub struct FakeChatServer {
    base_url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    seen_count: watch::Receiver<usize>,
}

/// What a [`FakeChatServer`] answers: given the request and its 0-based arrival index.
pub type Responder = dyn Fn(&SeenRequest, usize) -> FakeAnswer + Send + Sync;

impl FakeChatServer {
    /// Starts a server answering with `script`, in order.
    pub async fn start(script: Vec<FakeAnswer>) -> Self {
        assert!(!script.is_empty(), "a server needs at least one answer");
        Self::respond(Arc::new(move |_: &SeenRequest, index: usize| {
            script[index.min(script.len() - 1)].clone()
        }))
        .await
    }

    /// Starts a server answering each request with `responder`'s answer to it: a fake
    /// model that reads what it is sent.
    pub async fn respond(responder: Arc<Responder>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count_sender, seen_count) = watch::channel(0_usize);
        let log = seen.clone();
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let count_sender = count_sender.clone();
                let responder = responder.clone();
                tokio::spawn(async move {
                    answer_one(socket, index, &*responder, &log, &count_sender).await;
                });
                index += 1;
            }
        });
        Self {
            base_url,
            seen,
            seen_count,
        }
    }

    /// The API base to configure, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// An endpoint for this server, with key `sk-test` and model `test-model`.
    pub fn endpoint(&self) -> ChatEndpoint {
        ChatEndpoint::new(self.base_url(), Some("sk-test".to_owned()), "test-model")
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived (their answers may still be pending).
    pub async fn wait_for_requests(&self, count: usize) {
        let mut seen_count = self.seen_count.clone();
        seen_count.wait_for(|seen| *seen >= count).await.unwrap();
    }
}

/// Reads one request from `socket`, records it, and sends the responder's answer after its
/// delay.
async fn answer_one(
    mut socket: TcpStream,
    index: usize,
    responder: &Responder,
    log: &Mutex<Vec<SeenRequest>>,
    count_sender: &watch::Sender<usize>,
) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let answer = responder(&request, index);
    let count = {
        let mut log = log.lock().unwrap();
        log.push(request);
        log.len()
    };
    count_sender.send_replace(count);
    tokio::time::sleep(answer.delay).await;
    let mut response = format!(
        "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
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
}

/// One HTTP/1.1 request with a `content-length` JSON body; `None` when the connection
/// closes early or the body is not JSON.
async fn read_request(socket: &mut TcpStream) -> Option<SeenRequest> {
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
    Some(SeenRequest {
        request_line,
        authorization,
        body,
    })
}
