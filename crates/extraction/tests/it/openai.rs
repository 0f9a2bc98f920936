//! The openai extractor against a local server speaking the chat-completions wire format.
//!
//! [`FakeChatServer`] and [`topics_answer`] are shared with the other modules of this test
//! binary, to run whole jobs against the same server.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use extraction::{
    ExtractError, Extractor, Guideline, GuidelineKind, OpenAiExtractor, OpenAiExtractorConfig,
    PageInput, Topic,
};
use jobs_core::runtime::ErrorKind;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One scripted answer of a [`FakeChatServer`]: status, extra headers, body, and how long
/// the server waits before sending it.
#[derive(Debug, Clone)]
pub(crate) struct FakeAnswer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// Headers besides content-type, content-length and connection.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: String,
    /// Time before the answer is sent (a slow model).
    pub(crate) delay: Duration,
}

impl FakeAnswer {
    /// A 200 chat completion whose message content is `content`.
    pub(crate) fn completion(content: &str) -> Self {
        Self::completion_with_message(json!({"role": "assistant", "content": content}))
    }

    /// A 200 chat completion with `message` as its first choice's message.
    pub(crate) fn completion_with_message(message: Value) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "test-model",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            })
            .to_string(),
            delay: Duration::ZERO,
        }
    }

    /// An HTTP error in the OpenAI error shape; the body names the status.
    pub(crate) fn error(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: format!(
                r#"{{"error": {{"message": "scripted status {status}", "type": "test"}}}}"#
            ),
            delay: Duration::ZERO,
        }
    }

    /// The same answer with one more header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same answer, sent after `delay`.
    pub(crate) fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A valid answer: a completion whose content is `{"topics": topics}` (`topics` a JSON
/// array of `{"title", "guidelines": [{"kind", "text"}]}`).
pub(crate) fn topics_answer(topics: Value) -> FakeAnswer {
    FakeAnswer::completion(&json!({ "topics": topics }).to_string())
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct SeenRequest {
    /// `POST /v1/chat/completions HTTP/1.1`.
    pub(crate) request_line: String,
    /// The `Authorization` header.
    pub(crate) authorization: Option<String>,
    /// The JSON body.
    pub(crate) body: Value,
}

impl SeenRequest {
    /// The content of the message with `role` (the first one).
    pub(crate) fn message(&self, role: &str) -> String {
        self.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|message| message["role"] == role)
            .and_then(|message| message["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering each request with the next scripted answer
/// (the last one repeats), one request per connection.
pub(crate) struct FakeChatServer {
    base_url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    seen_count: watch::Receiver<usize>,
}

impl FakeChatServer {
    /// Starts a server answering with `script`, in order.
    pub(crate) async fn start(script: Vec<FakeAnswer>) -> Self {
        assert!(!script.is_empty(), "a server needs at least one answer");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count_sender, seen_count) = watch::channel(0_usize);
        let log = seen.clone();
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let answer = script[index.min(script.len() - 1)].clone();
                index += 1;
                let log = log.clone();
                let count_sender = count_sender.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
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
                });
            }
        });
        Self {
            base_url,
            seen,
            seen_count,
        }
    }

    /// The API base to configure, `http://127.0.0.1:PORT/v1`.
    pub(crate) fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The requests received so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived (their answers may still be pending).
    pub(crate) async fn wait_for_requests(&self, count: usize) {
        let mut seen_count = self.seen_count.clone();
        seen_count.wait_for(|seen| *seen >= count).await.unwrap();
    }

    /// An extractor for this server, with key `sk-test` and model `test-model`.
    pub(crate) fn extractor(&self) -> OpenAiExtractor {
        OpenAiExtractor::new(self.config()).unwrap()
    }

    /// The configuration [`FakeChatServer::extractor`] uses, to adjust.
    pub(crate) fn config(&self) -> OpenAiExtractorConfig {
        OpenAiExtractorConfig::new(self.base_url(), Some("sk-test".to_owned()), "test-model")
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<SeenRequest> {
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

const PAGE_TEXT: &str = "Chapter 2. Adding Fractions\n\
    Always find a common denominator first.\n\
    1. Multiply the denominators.\n\
    Tip: Simplify at the end.";

fn page(text: &str, previous_topic: Option<&str>) -> PageInput {
    PageInput {
        page: 12,
        text: text.to_owned(),
        previous_topic: previous_topic.map(str::to_owned),
        running_lines: Arc::new(HashSet::new()),
    }
}

fn fraction_topics() -> Value {
    json!([{
        "title": "Chapter 2. Adding Fractions",
        "guidelines": [
            {"kind": "rule", "text": "Always find a common denominator first."},
            {"kind": "step", "text": "Multiply the denominators."},
            {"kind": "tip", "text": "Simplify at the end."},
        ],
    }])
}

async fn extract(
    extractor: &OpenAiExtractor,
    input: &PageInput,
) -> Result<Vec<Topic>, ExtractError> {
    extractor.extract(input, &CancellationToken::new()).await
}

#[tokio::test]
async fn a_page_goes_out_with_the_strict_schema_the_key_the_model_and_its_text() {
    let server = FakeChatServer::start(vec![topics_answer(fraction_topics())]).await;
    let extractor = server.extractor();
    assert_eq!(extractor.name(), "openai:test-model");
    extract(&extractor, &page(PAGE_TEXT, None)).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(request.body["model"], "test-model");
    assert_eq!(request.body["temperature"], 0);
    assert!(!request.message("system").is_empty());
    let user = request.message("user");
    assert!(user.contains(PAGE_TEXT), "{user}");
    assert!(!user.contains("previous page"), "{user}");

    let format = &request.body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "page_guidelines");
    assert_eq!(format["json_schema"]["strict"], true);
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema, &OpenAiExtractor::page_schema());
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["topics"]));
    assert!(schema["properties"].get("page").is_none(), "{schema}");
    let topic = &schema["properties"]["topics"]["items"];
    assert_eq!(topic["required"], json!(["title", "guidelines"]));
    let guideline = &topic["properties"]["guidelines"]["items"];
    assert_eq!(guideline["required"], json!(["kind", "text"]));
    assert_eq!(
        guideline["properties"]["kind"]["enum"],
        json!(["rule", "step", "tip", "definition", "example"])
    );
}

#[tokio::test]
async fn the_previous_topic_is_named_so_a_page_without_heading_continues_it() {
    let server = FakeChatServer::start(vec![topics_answer(json!([]))]).await;
    let input = page(
        "Never add the denominators.",
        Some("Chapter 2. Adding Fractions"),
    );
    extract(&server.extractor(), &input).await.unwrap();
    let user = server.requests()[0].message("user");
    assert!(
        user.contains("previous page ended in the topic \"Chapter 2. Adding Fractions\""),
        "{user}"
    );
    assert!(user.contains("Never add the denominators."), "{user}");
}

#[tokio::test]
async fn a_valid_answer_maps_to_topics_with_their_kinds() {
    let topics = json!([
        {"title": "Chapter 2. Adding Fractions", "guidelines": [
            {"kind": "rule", "text": "Always find a common denominator first."},
            {"kind": "step", "text": "Multiply the denominators."},
        ]},
        {"title": " 2.2 Unlike Denominators ", "guidelines": [
            {"kind": "tip", "text": "Simplify at the end."},
            {"kind": "definition", "text": "A denominator is the bottom number."},
            {"kind": "example", "text": " 1/2 + 1/3 = 5/6 "},
        ]},
    ]);
    let server = FakeChatServer::start(vec![topics_answer(topics)]).await;
    let topics = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap();
    let guideline = |kind, text: &str| Guideline {
        kind,
        text: text.to_owned(),
    };
    assert_eq!(
        topics,
        vec![
            Topic {
                title: "Chapter 2. Adding Fractions".to_owned(),
                guidelines: vec![
                    guideline(
                        GuidelineKind::Rule,
                        "Always find a common denominator first."
                    ),
                    guideline(GuidelineKind::Step, "Multiply the denominators."),
                ],
            },
            Topic {
                title: "2.2 Unlike Denominators".to_owned(),
                guidelines: vec![
                    guideline(GuidelineKind::Tip, "Simplify at the end."),
                    guideline(
                        GuidelineKind::Definition,
                        "A denominator is the bottom number."
                    ),
                    guideline(GuidelineKind::Example, "1/2 + 1/3 = 5/6"),
                ],
            },
        ]
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn http_429_is_retryable_after_the_servers_retry_after() {
    let server =
        FakeChatServer::start(vec![FakeAnswer::error(429).with_header("retry-after", "7")]).await;
    let error = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExtractError::Http { status: 429, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.kind(),
        ErrorKind::Retryable {
            after: Some(Duration::from_secs(7))
        }
    );
    // Retrying is the job's work: the extractor made one request.
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn http_500_is_retryable() {
    let server = FakeChatServer::start(vec![FakeAnswer::error(500)]).await;
    let error = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExtractError::Http { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Retryable { after: None });
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn http_401_is_terminal_and_keeps_the_body_in_the_message() {
    let server = FakeChatServer::start(vec![FakeAnswer::error(401)]).await;
    let error = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Terminal);
    let message = error.to_string();
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("scripted status 401"), "{message}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_invalid_answer_is_asked_for_once_more_and_the_second_answer_counts() {
    let server = FakeChatServer::start(vec![
        FakeAnswer::completion("Sure! Here are the guidelines: {\"topics\": ["),
        topics_answer(fraction_topics()),
    ])
    .await;
    let topics = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].guidelines.len(), 3);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    // The second request is the first plus what was wrong with the answer.
    let first = requests[0].body["messages"].as_array().unwrap();
    let second = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(second.len(), first.len() + 1);
    assert_eq!(&second[..first.len()], &first[..]);
    let correction = second.last().unwrap()["content"].as_str().unwrap();
    assert!(correction.contains("not valid"), "{correction}");
    assert_eq!(
        requests[1].body["response_format"],
        requests[0].body["response_format"]
    );
}

#[tokio::test]
async fn an_answer_invalid_twice_fails_the_page_after_exactly_two_requests() {
    let unknown_kind = json!([{"title": "Fractions", "guidelines": [
        {"kind": "warning", "text": "Careful."},
    ]}]);
    let server = FakeChatServer::start(vec![topics_answer(unknown_kind)]).await;
    let error = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    let ExtractError::InvalidAnswer { reason } = &error else {
        panic!("{error:?}");
    };
    assert!(reason.contains("warning"), "{reason}");
    assert_eq!(error.kind(), ErrorKind::Terminal);
    assert_eq!(error.code(), "extractor_invalid_answer");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn answers_with_a_page_field_or_a_blank_text_do_not_fit_the_schema() {
    let server = FakeChatServer::start(vec![
        FakeAnswer::completion(r#"{"page": 12, "topics": []}"#),
        topics_answer(json!([{"title": "Fractions", "guidelines": [
            {"kind": "rule", "text": "   "},
        ]}])),
    ])
    .await;
    let error = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    let ExtractError::InvalidAnswer { reason } = &error else {
        panic!("{error:?}");
    };
    assert!(reason.contains("empty text"), "{reason}");
    assert!(reason.contains("unknown field `page`"), "{reason}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_refusal_counts_as_an_invalid_answer() {
    let refusal = json!({"role": "assistant", "content": null, "refusal": "I cannot help."});
    let server = FakeChatServer::start(vec![FakeAnswer::completion_with_message(refusal)]).await;
    let error = extract(&server.extractor(), &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    let ExtractError::InvalidAnswer { reason } = &error else {
        panic!("{error:?}");
    };
    assert!(reason.contains("refused: I cannot help."), "{reason}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_blank_page_has_no_topics_and_costs_no_request() {
    let server = FakeChatServer::start(vec![FakeAnswer::error(500)]).await;
    let topics = extract(&server.extractor(), &page(" \n\n ", None))
        .await
        .unwrap();
    assert!(topics.is_empty());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn running_headers_are_not_sent() {
    let server = FakeChatServer::start(vec![topics_answer(json!([]))]).await;
    let mut input = page("Fractions - 12\nAlways simplify.", None);
    input.running_lines = Arc::new(HashSet::from([extraction::normalize_line(
        "Fractions - 13",
    )]));
    extract(&server.extractor(), &input).await.unwrap();
    let user = server.requests()[0].message("user");
    assert!(user.contains("Always simplify."), "{user}");
    assert!(!user.contains("Fractions - 12"), "{user}");
}

#[tokio::test]
async fn cancellation_stops_a_slow_request() {
    let server = FakeChatServer::start(vec![
        topics_answer(fraction_topics()).delayed(Duration::from_secs(60)),
    ])
    .await;
    let extractor = server.extractor();
    let cancel = CancellationToken::new();
    let input = page(PAGE_TEXT, None);
    let extraction = extractor.extract(&input, &cancel);
    let canceller = async {
        server.wait_for_requests(1).await;
        cancel.cancel();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(extraction, canceller)
    })
    .await
    .expect("the extractor stops when cancelled, without waiting for the answer");
    let error = result.unwrap_err();
    assert!(matches!(error, ExtractError::Cancelled), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Cancelled);
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_is_a_retryable_transport_error() {
    let server = FakeChatServer::start(vec![
        topics_answer(fraction_topics()).delayed(Duration::from_secs(60)),
    ])
    .await;
    let mut config = server.config();
    config.timeout = Duration::from_millis(300);
    let extractor = OpenAiExtractor::new(config).unwrap();
    let error = extract(&extractor, &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    assert!(matches!(error, ExtractError::Transport { .. }), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Retryable { after: None });
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_server_that_is_not_listening_is_a_retryable_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let extractor = OpenAiExtractor::new(OpenAiExtractorConfig::new(
        format!("http://{address}/v1"),
        None,
        "m",
    ))
    .unwrap();
    let error = extract(&extractor, &page(PAGE_TEXT, None))
        .await
        .unwrap_err();
    assert!(matches!(error, ExtractError::Transport { .. }), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Retryable { after: None });
}

#[tokio::test]
async fn without_a_key_no_authorization_header_is_sent() {
    let server = FakeChatServer::start(vec![topics_answer(json!([]))]).await;
    let mut config = server.config();
    config.api_key = None;
    let extractor = OpenAiExtractor::new(config).unwrap();
    extract(&extractor, &page(PAGE_TEXT, None)).await.unwrap();
    assert_eq!(server.requests()[0].authorization, None);
}
