//! [`ChatEndpoint`] and [`ChatClient`]: where to call, and one call.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{ChatCompletion, ChatError, head};

/// Where and how to call an OpenAI-compatible chat-completions endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatEndpoint {
    /// The API base, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Sent as `Authorization: Bearer KEY` when given.
    pub api_key: Option<String>,
    /// The model, e.g. `gpt-4o-mini`.
    pub model: String,
    /// Time for one request, connect to last byte; longer is a retryable transport error.
    pub timeout: Duration,
}

impl std::fmt::Debug for ChatEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEndpoint")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ChatEndpoint {
    /// The timeout [`ChatEndpoint::new`] sets: 2 minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    /// An endpoint with the default timeout.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            model: model.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The URL requests go to: `{base_url}/chat/completions`.
    pub fn completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// A client of one [`ChatEndpoint`]: one request per [`ChatClient::complete`], never
/// retried here (retrying with backoff is the job's work).
#[derive(Debug, Clone)]
pub struct ChatClient {
    endpoint: ChatEndpoint,
    url: String,
    http: reqwest::Client,
}

impl ChatClient {
    /// A client for `endpoint`; fails only if the HTTP client cannot be built.
    pub fn new(endpoint: ChatEndpoint) -> Result<Self, ChatError> {
        let http = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|source| ChatError::Transport { source })?;
        Ok(Self {
            url: endpoint.completions_url(),
            endpoint,
            http,
        })
    }

    pub fn endpoint(&self) -> &ChatEndpoint {
        &self.endpoint
    }

    /// Sends `request` (a chat-completions body: model, messages, ...) as JSON with the
    /// bearer key, and parses the 2xx answer. A token that already fired wins over a request
    /// that could still start; one that fires during the request drops it.
    pub async fn complete(
        &self,
        request: &Value,
        cancel: &CancellationToken,
    ) -> Result<ChatCompletion, ChatError> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(ChatError::Cancelled),
            result = self.send(request) => result,
        }
    }

    async fn send(&self, request: &Value) -> Result<ChatCompletion, ChatError> {
        let mut builder = self.http.post(&self.url).json(request);
        if let Some(key) = &self.endpoint.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder
            .send()
            .await
            .map_err(|source| ChatError::Transport { source })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            return Err(ChatError::Http {
                status: status.as_u16(),
                retry_after,
                body: head(&body, ChatError::HTTP_BODY_HEAD),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| ChatError::Transport { source })?;
        ChatCompletion::from_body(&body)
    }
}

/// The `Retry-After` of an answer when given in seconds (an HTTP date is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use jobs_core::runtime::ErrorKind;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;
    use crate::testing::{FakeAnswer, FakeChatServer};

    #[test]
    fn retry_after_is_read_in_seconds_only() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            retry_after(&headers)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(with(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(with("-1"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let endpoint = ChatEndpoint::new("http://x/v1/", Some("sk-secret".into()), "m");
        assert_eq!(endpoint.completions_url(), "http://x/v1/chat/completions");
        assert!(!format!("{endpoint:?}").contains("sk-secret"));
        let client = ChatClient::new(endpoint).unwrap();
        assert!(!format!("{client:?}").contains("sk-secret"));
    }

    #[tokio::test]
    async fn a_request_goes_out_with_the_key_and_the_completion_comes_back() {
        let server = FakeChatServer::start(vec![FakeAnswer::completion("hello")]).await;
        let client = ChatClient::new(server.endpoint()).unwrap();
        let request = json!({"model": "test-model", "messages": []});
        let completion = client
            .complete(&request, &CancellationToken::new())
            .await
            .unwrap();
        let message = completion.into_first_choice().unwrap().message;
        assert_eq!(message.content, Some(json!("hello")));
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].request_line,
            "POST /v1/chat/completions HTTP/1.1"
        );
        assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(requests[0].body, request);
    }

    #[tokio::test]
    async fn an_http_error_keeps_its_status_retry_after_and_body_start() {
        let server =
            FakeChatServer::start(vec![FakeAnswer::error(503).with_header("Retry-After", "3")])
                .await;
        let client = ChatClient::new(server.endpoint()).unwrap();
        let error = client
            .complete(&json!({}), &CancellationToken::new())
            .await
            .unwrap_err();
        let ChatError::Http {
            status,
            retry_after,
            body,
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(*status, 503);
        assert_eq!(*retry_after, Some(Duration::from_secs(3)));
        assert!(body.contains("scripted status 503"), "{body}");
        assert_eq!(
            error.kind(),
            ErrorKind::Retryable {
                after: Some(Duration::from_secs(3))
            }
        );
    }

    #[tokio::test]
    async fn cancellation_drops_a_request_waiting_for_its_answer() {
        let server = FakeChatServer::start(vec![
            FakeAnswer::completion("late").delayed(Duration::from_secs(60)),
        ])
        .await;
        let client = ChatClient::new(server.endpoint()).unwrap();
        let cancel = CancellationToken::new();
        let request = json!({});
        let canceller = async {
            server.wait_for_requests(1).await;
            cancel.cancel();
        };
        let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(client.complete(&request, &cancel), canceller)
        })
        .await
        .expect("the request stops when cancelled");
        assert!(matches!(result, Err(ChatError::Cancelled)), "{result:?}");
    }
}
