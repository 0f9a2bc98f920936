//! [`ChatError`]: why a chat-completions call failed, classified by type.

use std::time::Duration;

use jobs_core::runtime::ErrorKind;

/// Why a [`ChatClient`](crate::ChatClient) call failed.
///
/// [`ChatError::kind`] says whether another try may succeed; it is decided from the error's
/// type (HTTP status, transport error kind), never from message text. Callers with their own
/// error type convert from this one and classify their HTTP and transport variants with
/// [`ChatError::kind_of_status`] and [`ChatError::kind_of_transport`].
///
/// Not `#[non_exhaustive]`: the callers convert it variant by variant, and a new variant
/// should make them decide what it means for them.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The endpoint answered with an HTTP error status. 408, 429 and 5xx are retryable
    /// (after `retry_after` when the server said so); other statuses are terminal.
    #[error("chat endpoint answered HTTP {status}: {body}")]
    Http {
        status: u16,
        /// The server's `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
        /// The start of the response body ([`ChatError::HTTP_BODY_HEAD`] characters).
        body: String,
    },
    /// The request did not get an answer (connect, timeout, reset). Retryable, except for
    /// requests that could not even be built.
    #[error("request to the chat endpoint failed")]
    Transport {
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered 2xx with a body that is not a chat completion. Terminal.
    #[error("the chat endpoint answered with no chat completion: {body}")]
    InvalidResponse {
        /// Why the body does not parse as a chat completion.
        #[source]
        source: serde_json::Error,
        /// The start of the body ([`ChatError::INVALID_BODY_HEAD`] characters).
        body: String,
    },
    /// The cancellation token fired; the request was dropped.
    #[error("chat request cancelled")]
    Cancelled,
}

impl ChatError {
    /// How much of an HTTP error's body [`ChatError::Http`] keeps, in characters.
    pub const HTTP_BODY_HEAD: usize = 500;

    /// How much of a 2xx body that is not a completion [`ChatError::InvalidResponse`]
    /// keeps, in characters.
    pub const INVALID_BODY_HEAD: usize = 200;

    /// Whether another try may succeed, and not before when.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Http {
                status,
                retry_after,
                ..
            } => Self::kind_of_status(*status, *retry_after),
            Self::Transport { source } => Self::kind_of_transport(source),
            Self::InvalidResponse { .. } => ErrorKind::Terminal,
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// The kind of an HTTP error status: 408, 429 and 5xx are retryable after
    /// `retry_after`, other statuses terminal.
    pub fn kind_of_status(status: u16, retry_after: Option<Duration>) -> ErrorKind {
        if status == 408 || status == 429 || (500..=599).contains(&status) {
            ErrorKind::Retryable { after: retry_after }
        } else {
            ErrorKind::Terminal
        }
    }

    /// The kind of a transport error: a request that could not be built, was redirected
    /// or whose answer could not be decoded is terminal; timeouts, connection failures and
    /// resets while sending or reading are retryable.
    pub fn kind_of_transport(error: &reqwest::Error) -> ErrorKind {
        if error.is_builder() || error.is_redirect() || error.is_decode() {
            ErrorKind::Terminal
        } else {
            ErrorKind::Retryable { after: None }
        }
    }
}

/// The first `max` characters of `text` (trimmed), with `...` when cut: the useful start
/// of an HTTP body.
pub fn head(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let head: String = text.chars().take(max).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, retry_after: Option<Duration>) -> ChatError {
        ChatError::Http {
            status,
            retry_after,
            body: String::new(),
        }
    }

    #[test]
    fn timeouts_throttling_and_server_errors_are_retryable_other_statuses_terminal() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                http(status, None).kind(),
                ErrorKind::Retryable { after: None },
                "{status}"
            );
        }
        for status in [300, 400, 401, 403, 404, 413, 422, 600] {
            assert_eq!(http(status, None).kind(), ErrorKind::Terminal, "{status}");
        }
        let after = Some(Duration::from_secs(7));
        assert_eq!(http(429, after).kind(), ErrorKind::Retryable { after });
        assert_eq!(http(400, after).kind(), ErrorKind::Terminal);
        assert_eq!(ChatError::Cancelled.kind(), ErrorKind::Cancelled);
    }

    #[test]
    fn a_request_that_cannot_be_built_is_terminal() {
        let source = reqwest::Client::new()
            .post("not a url")
            .build()
            .unwrap_err();
        assert!(source.is_builder());
        assert_eq!(ChatError::Transport { source }.kind(), ErrorKind::Terminal);
    }

    #[test]
    fn a_body_that_is_not_a_completion_is_terminal() {
        let source = serde_json::from_str::<serde_json::Value>("<html>").unwrap_err();
        let error = ChatError::InvalidResponse {
            source,
            body: "<html>".to_owned(),
        };
        assert_eq!(error.kind(), ErrorKind::Terminal);
    }

    #[test]
    fn head_keeps_the_trimmed_start_and_marks_a_cut() {
        assert_eq!(head("  abc ", 5), "abc");
        assert_eq!(head("abcdef", 3), "abc...");
        assert_eq!(head("ééé", 2), "éé...");
        assert_eq!(head("", 3), "");
    }
}
