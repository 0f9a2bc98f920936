//! [`OpenAiEngine`]: OCR through any OpenAI-compatible chat-completions endpoint.

use async_trait::async_trait;
use base64::Engine as _;
use chat_client::{ChatClient, ChatCompletion, ChatEndpoint, text_of_content};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{OcrEngine, OcrError, PageImage};

/// The instruction sent with every page.
pub const DEFAULT_PROMPT: &str = "Transcribe all text on this book page exactly as printed, \
    in reading order. Keep line breaks. Answer with the text only, without comments.";

/// Where and how to call the endpoint: base URL, key, model and the time for one request
/// (2 minutes by [`ChatEndpoint::new`]; longer is a retryable timeout).
pub type OpenAiConfig = ChatEndpoint;

/// An OpenAI-compatible chat-completions endpoint as an [`OcrEngine`].
///
/// Each page is one `POST {base_url}/chat/completions` with the prompt
/// ([`DEFAULT_PROMPT`] unless [`OpenAiEngine::with_prompt`] says otherwise) and the PNG as a
/// `data:image/png;base64,...` URL; the answer is the first choice's message content.
/// Failures are classified by type: HTTP 408, 429 and 5xx are retryable (honouring a
/// `Retry-After` in seconds), other statuses terminal; transport errors (connect, timeout,
/// reset) retryable; a 2xx body that is not a completion with text terminal.
#[derive(Debug, Clone)]
pub struct OpenAiEngine {
    client: ChatClient,
    name: String,
    prompt: String,
}

impl OpenAiEngine {
    /// An engine for `config` with the default prompt; fails only if the HTTP client cannot
    /// be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, OcrError> {
        Ok(Self {
            name: format!("openai:{}", config.model),
            client: ChatClient::new(config)?,
            prompt: DEFAULT_PROMPT.to_owned(),
        })
    }

    /// The same engine, sending `prompt` with each page.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = prompt.into();
        self
    }

    pub fn config(&self) -> &OpenAiConfig {
        self.client.endpoint()
    }

    /// The instruction sent with each page.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    fn request(&self, page: &PageImage) -> Value {
        let data_url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&page.png)
        );
        json!({
            "model": self.config().model,
            "temperature": 0,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": self.prompt},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            }],
        })
    }
}

/// The page's text in a completion: the first choice's message content, trimmed.
fn text_of_completion(completion: ChatCompletion) -> Result<String, OcrError> {
    let content = completion
        .into_first_choice()
        .and_then(|choice| choice.message.content)
        .ok_or_else(|| OcrError::InvalidResponse {
            reason: "no choice with message content".to_owned(),
        })?;
    text_of(content)
}

/// The text of a message content: a string, or an array of `{"type": "text", "text"}`
/// parts.
fn text_of(content: Value) -> Result<String, OcrError> {
    match text_of_content(&content) {
        Some(text) => Ok(text.trim().to_owned()),
        None => Err(OcrError::InvalidResponse {
            reason: format!("message content is neither text nor parts: {content}"),
        }),
    }
}

#[async_trait]
impl OcrEngine for OpenAiEngine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn recognize(
        &self,
        page: &PageImage,
        cancel: &CancellationToken,
    ) -> Result<String, OcrError> {
        let completion = self.client.complete(&self.request(page), cancel).await?;
        text_of_completion(completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_content_may_be_text_or_parts() {
        assert_eq!(text_of(json!(" Page one \n")).unwrap(), "Page one");
        let parts = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(text_of(parts).unwrap(), "ab");
        assert!(text_of(json!(3)).is_err());
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let config = OpenAiConfig::new("http://x/v1", Some("sk-secret".into()), "m");
        assert!(!format!("{config:?}").contains("sk-secret"));
    }
}
