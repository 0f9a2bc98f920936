//! [`ExtractError`]: why extracting a page failed, classified by type.

use std::time::Duration;

use chat_client::ChatError;
use jobs_core::runtime::ErrorKind;

/// Why an [`Extractor`](crate::Extractor) failed on a page.
///
/// [`ExtractError::kind`] says whether another try may succeed; it is decided from the
/// error's type (HTTP status, transport error kind), never from message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The endpoint answered with an HTTP error status. 408, 429 and 5xx are retryable
    /// (after `retry_after` when the server said so); other statuses are terminal.
    #[error("extractor endpoint answered HTTP {status}: {body}")]
    Http {
        status: u16,
        /// The server's `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
        /// The start of the response body.
        body: String,
    },
    /// The request did not get an answer (connect, timeout, reset). Retryable, except for
    /// requests that could not even be built.
    #[error("request to the extractor endpoint failed")]
    Transport {
        #[source]
        source: reqwest::Error,
    },
    /// The answer does not fit the page schema (after the one retry it gets). Terminal.
    #[error("invalid answer from the extractor: {reason}")]
    InvalidAnswer { reason: String },
    /// A scripted or otherwise deliberate failure (test extractors). Terminal unless
    /// `retryable`.
    #[error("{message}")]
    Failed { retryable: bool, message: String },
    /// The cancellation token fired; the extractor stopped.
    #[error("extraction cancelled")]
    Cancelled,
}

impl ExtractError {
    /// Whether another try may succeed, and not before when.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Http {
                status,
                retry_after,
                ..
            } => ChatError::kind_of_status(*status, *retry_after),
            Self::Transport { source } => ChatError::kind_of_transport(source),
            Self::InvalidAnswer { .. } => ErrorKind::Terminal,
            Self::Failed { retryable, .. } => {
                if *retryable {
                    ErrorKind::Retryable { after: None }
                } else {
                    ErrorKind::Terminal
                }
            }
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// A stable code for the page's failure: `extractor_http`, `extractor_unreachable`,
    /// `extractor_invalid_answer`, `extractor_failed`, `cancelled`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Http { .. } => "extractor_http",
            Self::Transport { .. } => "extractor_unreachable",
            Self::InvalidAnswer { .. } => "extractor_invalid_answer",
            Self::Failed { .. } => "extractor_failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A failed chat-completions call of the [`OpenAiExtractor`](crate::OpenAiExtractor), with
/// the extractor's messages and codes. A 2xx body that is not a chat completion is an
/// invalid answer, which the extractor asks for once more.
impl From<ChatError> for ExtractError {
    fn from(error: ChatError) -> Self {
        match error {
            ChatError::Http {
                status,
                retry_after,
                body,
            } => Self::Http {
                status,
                retry_after,
                body,
            },
            ChatError::Transport { source } => Self::Transport { source },
            ChatError::InvalidResponse { source, body } => Self::InvalidAnswer {
                reason: format!("not a chat completion ({source}): {body}"),
            },
            ChatError::Cancelled => Self::Cancelled,
        }
    }
}
