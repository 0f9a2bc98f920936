//! [`ChatCompletion`]: the parts of a chat-completions answer Folio reads.

use serde::Deserialize;
use serde_json::Value;

use crate::{ChatError, head};

/// A 2xx answer of a chat-completions endpoint: its choices, and of each only what Folio
/// reads (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletion {
    /// The choices, usually one.
    pub choices: Vec<ChatChoice>,
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatChoice {
    /// The assistant's message.
    pub message: ChatMessage,
    /// Why the model stopped: `stop`, `length` (cut off), `content_filter`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant's message of a [`ChatChoice`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatMessage {
    /// The content: a string, or an array of parts (read it with [`text_of_content`]);
    /// `None` when absent or `null`.
    #[serde(default)]
    pub content: Option<Value>,
    /// The model's refusal, when it refused.
    #[serde(default)]
    pub refusal: Option<String>,
}

impl ChatCompletion {
    /// The completion in a 2xx `body`, or [`ChatError::InvalidResponse`] with why not and
    /// the start of the body.
    pub fn from_body(body: &[u8]) -> Result<Self, ChatError> {
        serde_json::from_slice(body).map_err(|source| ChatError::InvalidResponse {
            source,
            body: head(&String::from_utf8_lossy(body), ChatError::INVALID_BODY_HEAD),
        })
    }

    /// The first choice, the one a request without `n` gets; `None` when there is none.
    pub fn into_first_choice(self) -> Option<ChatChoice> {
        self.choices.into_iter().next()
    }
}

/// The text of a message content: a string as it is, or the `text` of each part of an
/// array of `{"type": "text", "text"}` parts joined (some compatible servers answer so);
/// `None` for any other content.
pub fn text_of_content(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_choice_carries_content_refusal_and_finish_reason() {
        let body = json!({
            "id": "chatcmpl-1",
            "choices": [
                {"index": 0, "finish_reason": "length",
                 "message": {"role": "assistant", "content": null, "refusal": "no"}},
                {"index": 1, "message": {"content": "second"}},
            ],
        });
        let choice = ChatCompletion::from_body(body.to_string().as_bytes())
            .unwrap()
            .into_first_choice()
            .unwrap();
        assert_eq!(choice.finish_reason.as_deref(), Some("length"));
        assert_eq!(choice.message.content, None);
        assert_eq!(choice.message.refusal.as_deref(), Some("no"));
        let empty = ChatCompletion::from_body(br#"{"choices": []}"#).unwrap();
        assert_eq!(empty.into_first_choice(), None);
    }

    #[test]
    fn a_body_without_choices_is_an_invalid_response_with_its_start() {
        let error = ChatCompletion::from_body(br#"{"unexpected": true}"#).unwrap_err();
        let ChatError::InvalidResponse { source, body } = &error else {
            panic!("{error:?}");
        };
        assert!(
            source.to_string().contains("missing field `choices`"),
            "{source}"
        );
        assert_eq!(body, r#"{"unexpected": true}"#);
        let long = "x".repeat(1000);
        let ChatError::InvalidResponse { body, .. } =
            ChatCompletion::from_body(long.as_bytes()).unwrap_err()
        else {
            panic!("not an invalid response");
        };
        assert_eq!(body.chars().count(), ChatError::INVALID_BODY_HEAD + 3);
    }

    #[test]
    fn message_content_may_be_text_or_text_parts() {
        assert_eq!(text_of_content(&json!(" a ")).as_deref(), Some(" a "));
        let parts = json!([{"type": "text", "text": "a"}, {"type": "image_url"},
                           {"type": "text", "text": "b"}]);
        assert_eq!(text_of_content(&parts).as_deref(), Some("ab"));
        assert_eq!(text_of_content(&json!(3)), None);
        assert_eq!(text_of_content(&json!({"text": "a"})), None);
    }
}
