//! The openai extractor against a local server speaking the chat-completions wire format
//! (chat-client's [`FakeChatServer`]).
//!
//! [`FakeServerExtractor`] and [`topics_answer`] are shared with the other modules of this
//! test binary, to run whole jobs against the same server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chat_client::testing::{FakeAnswer, FakeChatServer};
use extraction::{
    ExtractError, Extractor, Guideline, GuidelineKind, OpenAiExtractor, OpenAiExtractorConfig,
    PageInput, Topic,
};
use jobs_core::runtime::ErrorKind;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A valid answer: a completion whose content is `{"topics": topics}` (`topics` a JSON
/// array of `{"title", "guidelines": [{"kind", "text"}]}`).
pub(crate) fn topics_answer(topics: Value) -> FakeAnswer {
    FakeAnswer::completion(&json!({ "topics": topics }).to_string())
}

/// The extractor of a fake chat server.
pub(crate) trait FakeServerExtractor {
    /// An extractor for this server, with key `sk-test` and model `test-model`.
    fn extractor(&self) -> OpenAiExtractor;
}

impl FakeServerExtractor for FakeChatServer {
    fn extractor(&self) -> OpenAiExtractor {
        OpenAiExtractor::new(self.endpoint()).unwrap()
    }
}

const PAGE_TEXT: &str = "Chapter 2. Adding Fractions\n\
    Always find a common denominator first.\n\
    1. Multiply the denominators.\n\
    Tip: Simplify at the end.";

fn page(text: &str, previous_topic: Option<&str>) -> PageInput {
    PageInput {
        previous_topic: previous_topic.map(str::to_owned),
        ..PageInput::new(12, text)
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
    let guideline = |kind, text: &str| Guideline::new(kind, text);
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
    let mut config = server.endpoint();
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
    let mut config = server.endpoint();
    config.api_key = None;
    let extractor = OpenAiExtractor::new(config).unwrap();
    extract(&extractor, &page(PAGE_TEXT, None)).await.unwrap();
    assert_eq!(server.requests()[0].authorization, None);
}
