//! [`OcrError`]: why recognizing a page failed, classified by type.

use std::time::Duration;

use chat_client::ChatError;
use jobs_core::runtime::ErrorKind;

/// Why an [`OcrEngine`](crate::OcrEngine) failed on a page.
///
/// [`OcrError::kind`] says whether another try may succeed; it is decided from the error's
/// type (exit status, signal, HTTP status, transport error kind), never from message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcrError {
    /// The image is not one the engine can read. Terminal for the page.
    #[error("undecodable image: {reason}")]
    InvalidImage { reason: String },
    /// The engine cannot run at all (the `tesseract` program is missing or not
    /// executable). It would hit every page, so the job fails as a whole.
    #[error("ocr engine unavailable: {reason}")]
    EngineUnavailable {
        /// What is missing.
        reason: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// Starting the engine failed for a reason that may pass (too many processes or
    /// open files). Retryable.
    #[error("starting the ocr engine failed")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    /// Recognition took longer than the engine's timeout; the process was killed.
    /// Retryable.
    #[error("recognition timed out after {after:?}")]
    Timeout { after: Duration },
    /// The engine process exited with a non-zero status: it could not process this image.
    /// Terminal for the page.
    #[error("tesseract exited with status {code}: {stderr}")]
    ExitStatus {
        code: i32,
        /// The end of its standard error.
        stderr: String,
    },
    /// The engine process was killed by a signal (the OOM killer, a crash). Retryable.
    #[error("tesseract was killed by signal {signal}: {stderr}")]
    Killed {
        signal: i32,
        /// The end of its standard error.
        stderr: String,
    },
    /// The endpoint answered with an HTTP error status. 408, 429 and 5xx are retryable
    /// (after `retry_after` when the server said so); other statuses are terminal.
    #[error("ocr endpoint answered HTTP {status}: {body}")]
    Http {
        status: u16,
        /// The server's `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
        /// The start of the response body.
        body: String,
    },
    /// The request did not get an answer (connect, timeout, reset). Retryable, except for
    /// requests that could not even be built.
    #[error("request to the ocr endpoint failed")]
    Transport {
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered 2xx with a body that is not a chat completion with text.
    /// Terminal for the page.
    #[error("invalid response from the ocr endpoint: {reason}")]
    InvalidResponse { reason: String },
    /// The book's language is not installed for the engine (a tesseract language whose
    /// traineddata is missing). It would hit every page, so the job fails as a whole.
    #[error(
        "tesseract language {} not installed (install {}, e.g. scripts/install-tesseract.sh {}); installed: {}",
        missing.join("+"),
        missing.iter().map(|code| crate::languages::package(code)).collect::<Vec<_>>().join(" "),
        missing.join(" "),
        installed.join(", ")
    )]
    LanguageNotInstalled {
        /// The languages asked for that are missing.
        missing: Vec<String>,
        installed: Vec<String>,
    },
    /// The cancellation token fired; the engine stopped (and killed its process).
    #[error("recognition cancelled")]
    Cancelled,
}

impl OcrError {
    /// Whether another try may succeed, and not before when.
    pub fn kind(&self) -> ErrorKind {
        let retryable = ErrorKind::Retryable { after: None };
        match self {
            Self::InvalidImage { .. }
            | Self::EngineUnavailable { .. }
            | Self::LanguageNotInstalled { .. }
            | Self::ExitStatus { .. }
            | Self::InvalidResponse { .. } => ErrorKind::Terminal,
            Self::Spawn { .. } | Self::Timeout { .. } | Self::Killed { .. } => retryable,
            Self::Http {
                status,
                retry_after,
                ..
            } => ChatError::kind_of_status(*status, *retry_after),
            Self::Transport { source } => ChatError::kind_of_transport(source),
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// Whether another try may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Retryable { .. })
    }

    /// Whether this error would hit every page alike, so the job fails as a whole rather
    /// than marking each page failed.
    pub fn affects_every_page(&self) -> bool {
        match self {
            Self::EngineUnavailable { .. } | Self::LanguageNotInstalled { .. } => true,
            // Bad credentials or a wrong endpoint or model fail every page the same way.
            Self::Http { status, .. } => matches!(status, 401 | 403 | 404),
            _ => false,
        }
    }

    /// A stable, machine-readable code, recorded with failed pages and jobs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidImage { .. } => "undecodable_image",
            Self::EngineUnavailable { .. } => "engine_unavailable",
            Self::Spawn { .. } => "engine_spawn",
            Self::Timeout { .. } => "ocr_timeout",
            Self::ExitStatus { .. } => "engine_failed",
            Self::Killed { .. } => "engine_killed",
            Self::Http { .. } => "ocr_http",
            Self::Transport { .. } => "ocr_transport",
            Self::InvalidResponse { .. } => "ocr_invalid_response",
            Self::LanguageNotInstalled { .. } => "language_not_installed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The last `max` characters of `text` (trimmed): the useful end of a process's stderr.
pub(crate) fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let count = text.chars().count();
    if count <= max {
        text.to_owned()
    } else {
        let tail: String = text.chars().skip(count - max).collect();
        format!("...{tail}")
    }
}

/// A failed chat-completions call of the [`OpenAiEngine`](crate::OpenAiEngine), with the
/// engine's messages and codes.
impl From<ChatError> for OcrError {
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
            ChatError::InvalidResponse { source, .. } => Self::InvalidResponse {
                reason: format!("not a chat completion: {source}"),
            },
            ChatError::Cancelled => Self::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_client::head;

    use super::*;

    fn http(status: u16) -> OcrError {
        OcrError::Http {
            status,
            retry_after: None,
            body: String::new(),
        }
    }

    #[test]
    fn http_statuses_are_classified_by_number() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(http(status).is_retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 422] {
            assert_eq!(http(status).kind(), ErrorKind::Terminal, "{status}");
        }
        assert!(http(401).affects_every_page());
        assert!(!http(400).affects_every_page());
        let throttled = OcrError::Http {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            body: String::new(),
        };
        assert_eq!(
            throttled.kind(),
            ErrorKind::Retryable {
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn process_failures_are_classified_by_exit_status_and_signal() {
        let exited = OcrError::ExitStatus {
            code: 1,
            stderr: String::new(),
        };
        assert_eq!(exited.kind(), ErrorKind::Terminal);
        let killed = OcrError::Killed {
            signal: 9,
            stderr: String::new(),
        };
        assert!(killed.is_retryable());
        assert!(
            OcrError::Timeout {
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        let missing = OcrError::EngineUnavailable {
            reason: "no tesseract".into(),
            source: None,
        };
        assert!(missing.affects_every_page());
    }

    #[test]
    fn tail_and_head_keep_the_useful_end() {
        assert_eq!(tail("  abc ", 5), "abc");
        assert_eq!(tail("abcdef", 3), "...def");
        assert_eq!(head("abcdef", 3), "abc...");
    }
}
