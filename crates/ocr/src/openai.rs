//! [`OpenAiEngine`]: OCR through any OpenAI-compatible chat-completions endpoint.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::head;
use crate::{OcrEngine, OcrError, PageImage};

/// The instruction sent with every page.
pub const DEFAULT_PROMPT: &str = "Transcribe all text on this book page exactly as printed, \
    in reading order. Keep line breaks. Answer with the text only, without comments.";

/// Where and how to call the endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// The API base, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Sent as `Authorization: Bearer KEY` when given.
    pub api_key: Option<String>,
    /// The model, e.g. `gpt-4o-mini`.
    pub model: String,
    /// Time for one request, connect to last byte; longer is a retryable timeout.
    pub timeout: Duration,
    /// The instruction sent with each page.
    pub prompt: String,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiConfig {
    /// A configuration with the default timeout (2 minutes) and prompt.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            model: model.into(),
            timeout: Duration::from_secs(120),
            prompt: DEFAULT_PROMPT.to_owned(),
        }
    }
}

/// An OpenAI-compatible chat-completions endpoint as an [`OcrEngine`].
///
/// Each page is one `POST {base_url}/chat/completions` with the PNG as a
/// `data:image/png;base64,...` URL; the answer is the first choice's message content.
/// Failures are classified by type: HTTP 408, 429 and 5xx are retryable (honouring a
/// `Retry-After` in seconds), other statuses terminal; transport errors (connect, timeout,
/// reset) retryable; a 2xx body that is not a completion with text terminal.
#[derive(Debug, Clone)]
pub struct OpenAiEngine {
    config: OpenAiConfig,
    name: String,
    endpoint: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<serde_json::Value>,
}

impl OpenAiEngine {
    /// An engine for `config`; fails only if the HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, OcrError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|source| OcrError::Transport { source })?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            name: format!("openai:{}", config.model),
            endpoint,
            config,
            client,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    async fn call(&self, png: Bytes) -> Result<String, OcrError> {
        let data_url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        let body = json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": self.config.prompt},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            }],
        });
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|source| OcrError::Transport { source })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.text().await.unwrap_or_default();
            return Err(OcrError::Http {
                status: status.as_u16(),
                retry_after,
                body: head(&body, 500),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| OcrError::Transport { source })?;
        let completion: Completion =
            serde_json::from_slice(&bytes).map_err(|error| OcrError::InvalidResponse {
                reason: format!("not a chat completion: {error}"),
            })?;
        let content = completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .ok_or_else(|| OcrError::InvalidResponse {
                reason: "no choice with message content".to_owned(),
            })?;
        text_of(content)
    }
}

/// The text of a message content: a string, or an array of `{"type": "text", "text"}`
/// parts.
fn text_of(content: serde_json::Value) -> Result<String, OcrError> {
    match content {
        serde_json::Value::String(text) => Ok(text.trim().to_owned()),
        serde_json::Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|part| part.get("text").and_then(|text| text.as_str()))
            .collect::<Vec<_>>()
            .join("")
            .trim()
            .to_owned()),
        other => Err(OcrError::InvalidResponse {
            reason: format!("message content is neither text nor parts: {other}"),
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
        let png = page.png.clone();
        tokio::select! {
            result = self.call(png) => result,
            () = cancel.cancelled() => Err(OcrError::Cancelled),
        }
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
