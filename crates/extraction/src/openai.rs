//! [`OpenAiExtractor`]: guidelines through any OpenAI-compatible chat-completions endpoint
//! with a strict JSON schema of the page (SPEC 4.3).

use async_trait::async_trait;
use chat_client::{ChatClient, ChatCompletion, ChatEndpoint, ChatError, head, text_of_content};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{ExtractError, Extractor, GuidelineKind, PageInput, Topic};

/// Where and how to call the endpoint: base URL, key, model and the time for one request
/// (2 minutes by [`ChatEndpoint::new`]; longer is a retryable transport error).
pub type OpenAiExtractorConfig = ChatEndpoint;

/// An OpenAI-compatible chat-completions endpoint as an [`Extractor`].
///
/// Each page is one `POST {base_url}/chat/completions` with the system prompt
/// ([`OpenAiExtractor::DEFAULT_PROMPT`] unless [`OpenAiExtractor::with_prompt`] says
/// otherwise), the page's text and `response_format` `json_schema`
/// ([`OpenAiExtractor::page_schema`], strict). An answer that does not fit the schema (or a
/// refusal, or no content) is asked for once more, then fails the page with
/// [`ExtractError::InvalidAnswer`]. HTTP and transport failures are returned at once,
/// classified by [`ExtractError::kind`]: retrying them with backoff is the job's work, not
/// the extractor's. A page with no text (once the book's running headers are left out) has
/// no topics and costs no request.
#[derive(Debug, Clone)]
pub struct OpenAiExtractor {
    client: ChatClient,
    name: String,
    prompt: String,
}

/// The answer as the schema allows it, and nothing more.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageAnswer {
    topics: Vec<TopicAnswer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicAnswer {
    title: String,
    guidelines: Vec<GuidelineAnswer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuidelineAnswer {
    kind: GuidelineKind,
    text: String,
}

impl OpenAiExtractor {
    /// The system prompt: the task, the kinds, and what to leave out.
    pub const DEFAULT_PROMPT: &str = "You extract teaching guidelines from the OCR text of one \
page of a book. Answer with JSON only, as the schema says: {\"topics\": [{\"title\": ..., \
\"guidelines\": [{\"kind\": ..., \"text\": ...}]}]}.\n\
- A topic is a heading of the page (a chapter, a section, a short title line) with the \
guidelines under it. Keep titles as printed and topics and guidelines in page order.\n\
- Kinds: \"rule\" for what to always or never do (imperatives, must, should, always, never, \
Remember); \"step\" for one step of a numbered procedure; \"tip\" for advice and notes (Tip:, \
Note:); \"definition\" for what a term means (Definition:, \"X is ...\", \"X means ...\"); \
\"example\" for a worked example (Example:).\n\
- Strip labels (Tip:, Note:, Example:, Definition:, Remember:) and list markers (1., 2), a., \
-, *, bullets) from the text. Otherwise keep the book's wording: do not invent, merge or \
summarize guidelines.\n\
- Ignore page numbers, running headers and footers.\n\
- Guidelines before the page's first heading continue the topic the previous page ended in \
when the user names it; otherwise put them under a short title saying what they are about.\n\
- A heading with no guidelines under it on this page (a chapter's title page, a heading at \
the foot of the page) is still a topic, with an empty guidelines list: the next page continues \
it. A page with neither headings nor guidelines has no topics: {\"topics\": []}.";

    /// An extractor for `config` with the default prompt; fails only if the HTTP client
    /// cannot be built.
    pub fn new(config: OpenAiExtractorConfig) -> Result<Self, ExtractError> {
        Ok(Self {
            name: format!("openai:{}", config.model),
            client: ChatClient::new(config)?,
            prompt: Self::DEFAULT_PROMPT.to_owned(),
        })
    }

    /// The same extractor, sending `prompt` as the system prompt with each page.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = prompt.into();
        self
    }

    pub fn config(&self) -> &OpenAiExtractorConfig {
        self.client.endpoint()
    }

    /// The system prompt sent with each page.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// The JSON schema of an answer:
    /// `{"topics": [{"title", "guidelines": [{"kind", "text"}]}]}`.
    ///
    /// Strict mode needs `additionalProperties: false` and every property `required` on each
    /// object. There is no page number: that is Folio's, never the model's.
    pub fn page_schema() -> Value {
        let kinds: Vec<&str> = GuidelineKind::ALL
            .iter()
            .map(|kind| kind.as_str())
            .collect();
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["topics"],
            "properties": {
                "topics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["title", "guidelines"],
                        "properties": {
                            "title": {
                                "type": "string",
                                "description": "The heading as printed."
                            },
                            "guidelines": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": false,
                                    "required": ["kind", "text"],
                                    "properties": {
                                        "kind": {"type": "string", "enum": kinds},
                                        "text": {
                                            "type": "string",
                                            "description": "Without labels or list markers."
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    }

    async fn extract_page(
        &self,
        page: &PageInput,
        cancel: &CancellationToken,
    ) -> Result<Vec<Topic>, ExtractError> {
        // Without the book's running headers and footers (at its edges, as the `rules`
        // extractor drops them: a body line that only looks like one stays), and over page
        // breaks as the `rules` extractor reads them: a sentence the page ends unfinished is
        // completed with the next page's lines that finish it, which the next page leaves out.
        let (text, carried) = crate::rules::text_over_page_breaks(page);
        if text.trim().is_empty() {
            // Nothing to extract; not worth a request.
            return Ok(Vec::new());
        }
        let user = user_message(&text, page.previous_topic.as_deref());
        let mut messages = vec![
            json!({"role": "system", "content": self.prompt}),
            json!({"role": "user", "content": user}),
        ];
        let marked = |mut topics: Vec<Topic>| {
            mark_carried(&mut topics, page, &carried);
            topics
        };
        let first_reason = match self.call(&messages, cancel).await? {
            Ok(topics) => return Ok(marked(topics)),
            Err(reason) => reason,
        };
        tracing::warn!(
            page = page.page,
            reason = %first_reason,
            "invalid answer from the extractor, asking once more"
        );
        // Same temperature-0 request plus what was wrong, so the second answer may differ.
        messages.push(json!({
            "role": "user",
            "content": format!(
                "Your previous answer was not valid: {first_reason}. Answer again with JSON \
                 that fits the schema exactly."
            ),
        }));
        match self.call(&messages, cancel).await? {
            Ok(topics) => Ok(marked(topics)),
            Err(reason) => Err(ExtractError::InvalidAnswer {
                reason: format!("{reason} (first answer: {first_reason})"),
            }),
        }
    }

    /// One request: `Err` for HTTP and transport failures, `Ok(Err(reason))` for a 2xx
    /// answer that does not fit the schema.
    async fn call(
        &self,
        messages: &[Value],
        cancel: &CancellationToken,
    ) -> Result<Result<Vec<Topic>, String>, ExtractError> {
        let request = json!({
            "model": self.config().model,
            "temperature": 0,
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "page_guidelines",
                    "strict": true,
                    "schema": Self::page_schema(),
                },
            },
        });
        answer_of(self.client.complete(&request, cancel).await)
    }
}

/// The answer's guidelines that hold `carried` (lines of the next page appended to the
/// text sent) list both pages, as the `rules` extractor's do.
fn mark_carried(topics: &mut [Topic], page: &PageInput, carried: &[String]) {
    let (Some(first), Some(next)) = (carried.first(), &page.next_page) else {
        return;
    };
    let carried = words(first);
    if carried.is_empty() {
        return;
    }
    for guideline in topics.iter_mut().flat_map(|topic| &mut topic.guidelines) {
        let text = words(&guideline.text);
        if text
            .windows(carried.len())
            .any(|window| window == carried.as_slice())
        {
            guideline.pages = vec![page.page, next.page];
        }
    }
}

/// The lowercase words of `text`, letters and digits only: text compared whatever its
/// punctuation and line breaks.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn user_message(text: &str, previous_topic: Option<&str>) -> String {
    let mut message = String::new();
    if let Some(topic) = previous_topic {
        message.push_str(&format!(
            "The previous page ended in the topic \"{topic}\". If this page starts without a \
             heading, the guidelines before its first heading continue that topic: put them \
             under a topic titled exactly \"{topic}\".\n\n"
        ));
    }
    message.push_str("The page's OCR text:\n\"\"\"\n");
    message.push_str(text.trim());
    message.push_str("\n\"\"\"");
    message
}

/// What one request's outcome means: `Err` for HTTP and transport failures (and cancel),
/// `Ok(Err(reason))` for a 2xx answer that is not a chat completion or does not fit the
/// schema.
fn answer_of(
    response: Result<ChatCompletion, ChatError>,
) -> Result<Result<Vec<Topic>, String>, ExtractError> {
    match response {
        Ok(completion) => Ok(topics_of(completion)),
        Err(error) => match ExtractError::from(error) {
            ExtractError::InvalidAnswer { reason } => Ok(Err(reason)),
            error => Err(error),
        },
    }
}

/// The topics of a completion, or why it has none.
fn topics_of(completion: ChatCompletion) -> Result<Vec<Topic>, String> {
    let choice = completion
        .into_first_choice()
        .ok_or_else(|| "the completion has no choices".to_owned())?;
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.trim().is_empty()) {
        return Err(format!("the model refused: {}", head(&refusal, 200)));
    }
    let content = match choice.message.content {
        None | Some(Value::Null) => String::new(),
        Some(content) => text_of(content)?,
    };
    if content.trim().is_empty() {
        return Err(match choice.finish_reason.as_deref() {
            Some(reason) if reason != "stop" => {
                format!("the message has no content (finish_reason {reason})")
            }
            _ => "the message has no content".to_owned(),
        });
    }
    parse_topics(&content).map_err(|reason| match choice.finish_reason.as_deref() {
        // A cut-off answer is invalid JSON; say why it was cut.
        Some("length") => format!("{reason} (the answer was cut off: finish_reason length)"),
        _ => reason,
    })
}

/// The text of a message content: a string, or an array of `{"type": "text", "text"}`
/// parts (some compatible servers answer so).
fn text_of(content: Value) -> Result<String, String> {
    text_of_content(&content).ok_or_else(|| {
        format!(
            "the message content is neither text nor parts: {}",
            head(&content.to_string(), 200)
        )
    })
}

/// The topics of an answer's content, validated: the schema's fields only, known kinds,
/// non-empty titles and texts (trimmed).
fn parse_topics(content: &str) -> Result<Vec<Topic>, String> {
    let answer: PageAnswer = serde_json::from_str(strip_code_fence(content)).map_err(|error| {
        format!(
            "the content does not fit the page schema ({error}): {}",
            head(content, 200)
        )
    })?;
    answer
        .topics
        .into_iter()
        .enumerate()
        .map(|(topic_index, topic)| {
            let title = topic.title.trim();
            if title.is_empty() {
                return Err(format!("topic {} has an empty title", topic_index + 1));
            }
            let guidelines = topic
                .guidelines
                .into_iter()
                .enumerate()
                .map(|(index, guideline)| {
                    let text = guideline.text.trim();
                    if text.is_empty() {
                        return Err(format!(
                            "guideline {} of topic {} has an empty text",
                            index + 1,
                            topic_index + 1
                        ));
                    }
                    Ok(crate::Guideline::new(guideline.kind, text))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Topic {
                title: title.to_owned(),
                guidelines,
            })
        })
        .collect()
}

/// The JSON inside a Markdown code fence, for servers that ignore `response_format` and
/// wrap their answer in one; other content as it is.
fn strip_code_fence(content: &str) -> &str {
    let trimmed = content.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    let Some(inner) = rest.strip_suffix("```") else {
        return trimmed;
    };
    // Drop the info string (`json`) up to the first line break.
    match inner.split_once('\n') {
        Some((_info, body)) => body.trim(),
        None => inner.trim(),
    }
}

#[async_trait]
impl Extractor for OpenAiExtractor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn extract(
        &self,
        page: &PageInput,
        cancel: &CancellationToken,
    ) -> Result<Vec<Topic>, ExtractError> {
        // A token that already fired wins, even over a page that needs no request; one that
        // fires later stops the request in flight.
        if cancel.is_cancelled() {
            return Err(ExtractError::Cancelled);
        }
        self.extract_page(page, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::NearbyPage;

    fn page_text(page: &PageInput) -> String {
        crate::rules::text_over_page_breaks(page).0
    }

    /// The topics of a 2xx `body`, or why it has none.
    fn topics_of_completion(body: &[u8]) -> Result<Vec<Topic>, String> {
        answer_of(ChatCompletion::from_body(body)).unwrap()
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let config = OpenAiExtractorConfig::new("http://x/v1", Some("sk-secret".into()), "m");
        assert!(!format!("{config:?}").contains("sk-secret"));
        let extractor = OpenAiExtractor::new(config).unwrap();
        assert!(!format!("{extractor:?}").contains("sk-secret"));
    }

    #[test]
    fn every_object_of_the_schema_is_closed_and_requires_all_its_properties() {
        fn check(schema: &Value, objects: &mut usize) {
            if schema["type"] == "object" {
                *objects += 1;
                assert_eq!(schema["additionalProperties"], false, "{schema}");
                let mut properties: Vec<&str> = schema["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                let mut required: Vec<&str> = schema["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|name| name.as_str().unwrap())
                    .collect();
                properties.sort_unstable();
                required.sort_unstable();
                assert_eq!(properties, required, "{schema}");
                for property in schema["properties"].as_object().unwrap().values() {
                    check(property, objects);
                }
            } else if schema["type"] == "array" {
                check(&schema["items"], objects);
            }
        }
        let mut objects = 0;
        check(&OpenAiExtractor::page_schema(), &mut objects);
        assert_eq!(objects, 3);
        assert!(
            !OpenAiExtractor::page_schema()
                .to_string()
                .contains("\"page\"")
        );
    }

    #[test]
    fn answers_with_unknown_kinds_extra_fields_or_blank_texts_are_invalid() {
        let valid = r#"{"topics": [{"title": " Adding ", "guidelines": [
            {"kind": "rule", "text": " Add. "}]}]}"#;
        let topics = parse_topics(valid).unwrap();
        assert_eq!(topics[0].title, "Adding");
        assert_eq!(topics[0].guidelines[0].text, "Add.");
        let unknown_kind =
            r#"{"topics": [{"title": "A", "guidelines": [{"kind": "warning", "text": "x"}]}]}"#;
        assert!(parse_topics(unknown_kind).unwrap_err().contains("warning"));
        let extra_field = r#"{"page": 3, "topics": []}"#;
        assert!(parse_topics(extra_field).unwrap_err().contains("page"));
        let blank_title = r#"{"topics": [{"title": "  ", "guidelines": []}]}"#;
        assert!(
            parse_topics(blank_title)
                .unwrap_err()
                .contains("empty title")
        );
        let blank_text =
            r#"{"topics": [{"title": "A", "guidelines": [{"kind": "tip", "text": ""}]}]}"#;
        assert!(parse_topics(blank_text).unwrap_err().contains("empty text"));
        assert!(parse_topics("not json").is_err());
        assert!(parse_topics(r#"{"topics": [{"title": "A"}]}"#).is_err());
    }

    #[test]
    fn a_json_answer_in_a_code_fence_is_read() {
        let fenced = "```json\n{\"topics\": []}\n```";
        assert_eq!(parse_topics(fenced).unwrap(), Vec::<Topic>::new());
        assert_eq!(strip_code_fence("```{}```"), "{}");
        assert_eq!(strip_code_fence(" {} "), "{}");
    }

    #[test]
    fn running_headers_are_left_out_of_the_text_sent() {
        let running = Arc::new(HashSet::from([crate::normalize_line("Fractions - 13")]));
        let page = PageInput {
            running_lines: running.clone(),
            ..PageInput::new(12, "Fractions - 12\n\nAlways simplify.\n12")
        };
        assert_eq!(page_text(&page), "\nAlways simplify.\n12");
        // In the body it is a line of the page.
        let page = PageInput {
            running_lines: running,
            ..PageInput::new(
                12,
                "Fractions - 12\nAlways simplify.\nCheck.\nFractions - 12\nWrite the ratio.\nNever guess.\nKeep going.",
            )
        };
        assert_eq!(
            page_text(&page),
            "Always simplify.\nCheck.\nFractions - 12\nWrite the ratio.\nNever guess.\nKeep going."
        );
    }

    #[test]
    fn a_sentence_over_a_page_break_is_sent_whole_with_its_page_and_names_both_pages() {
        let nearby = |page: u32, text: &str| {
            Some(NearbyPage {
                page,
                text: Arc::from(text),
            })
        };
        let first = "Never guess.\nTo find the area of a rectangle, multiply its length";
        let second = "by its width and write square units.\nCheck your answer.";
        let page_5 = PageInput {
            next_page: nearby(6, second),
            ..PageInput::new(5, first)
        };
        let page_6 = PageInput {
            previous_page: nearby(5, first),
            ..PageInput::new(6, second)
        };
        assert_eq!(
            page_text(&page_5),
            "Never guess.\nTo find the area of a rectangle, multiply its length\n\
             by its width and write square units."
        );
        assert_eq!(page_text(&page_6), "Check your answer.");

        let (_, carried) = crate::rules::text_over_page_breaks(&page_5);
        let mut topics = vec![Topic {
            title: "Area".into(),
            guidelines: vec![
                crate::Guideline::new(GuidelineKind::Rule, "Never guess."),
                crate::Guideline::new(
                    GuidelineKind::Rule,
                    "To find the area of a rectangle, multiply its length by its width and \
                     write square units.",
                ),
            ],
        }];
        mark_carried(&mut topics, &page_5, &carried);
        assert!(topics[0].guidelines[0].pages.is_empty());
        assert_eq!(topics[0].guidelines[1].pages, vec![5, 6]);
    }

    #[test]
    fn an_empty_or_refused_completion_says_why() {
        let refused = json!({"choices": [{"message": {"content": null, "refusal": "I can't"}}]});
        let reason = topics_of_completion(refused.to_string().as_bytes()).unwrap_err();
        assert!(reason.contains("refused: I can't"), "{reason}");
        let cut = json!({"choices": [{"finish_reason": "length",
                                       "message": {"content": "{\"topics\": [{\"ti"}}]});
        let reason = topics_of_completion(cut.to_string().as_bytes()).unwrap_err();
        assert!(reason.contains("cut off"), "{reason}");
        let reason = topics_of_completion(br#"{"choices": []}"#).unwrap_err();
        assert!(reason.contains("no choices"), "{reason}");
        let reason = topics_of_completion(b"<html>").unwrap_err();
        assert!(reason.contains("not a chat completion"), "{reason}");
    }
}
