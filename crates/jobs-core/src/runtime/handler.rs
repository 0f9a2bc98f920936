//! What a handler implements and how it says what kind of failure it had.

use std::time::Duration;

use async_trait::async_trait;

use super::JobContext;

/// Runs the jobs of one `job_type`.
///
/// A handler returns `Ok(())` or a classified [`HandlerError`]; it never writes the job's
/// status itself: the runner alone ends claims. It should stop at a safe point when
/// [`JobContext::cancelled`] fires, returning [`HandlerError::cancelled`].
///
/// The job's heartbeat is a task of its own, so a handler that holds its thread for a while
/// (decoding an image, say) keeps its lease on a multi-threaded runtime. Long CPU-bound or
/// blocking work still belongs in `tokio::task::spawn_blocking` or a child process: it
/// stalls every other task of its thread.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The job type this handler runs.
    fn job_type(&self) -> &str;

    /// Runs one job (or resumes it from [`JobContext::checkpoint`]).
    async fn run(&self, context: JobContext) -> Result<(), HandlerError>;
}

/// What kind of failure a [`HandlerError`] is; decides what the runner does with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth another attempt (timeouts, connection resets, HTTP 408/429/5xx): the job is
    /// requeued with exponential backoff, at least `after` when given, until its attempts
    /// are used, then it fails with this error.
    Retryable {
        /// The earliest retry the cause asked for (a `Retry-After`, say).
        after: Option<Duration>,
    },
    /// Another attempt would fail the same way (bad input, HTTP 4xx, a missing book): the
    /// job fails at once.
    Terminal,
    /// The handler stopped because its cancellation token fired.
    Cancelled,
}

/// A classified handler failure. The message is the original error's, with its causes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    /// The kind, which decides retry, fail or cancel.
    pub kind: ErrorKind,
    /// A stable, machine-readable code: the job's [`JobError::code`](crate::JobError::code).
    pub code: String,
    /// The original error's message (with its causes when it came through [`ResultExt`]):
    /// the job's error message.
    pub message: String,
}

impl HandlerError {
    /// A failure worth another attempt: the job is requeued after the worker's backoff, and
    /// fails with this error once its attempts are used.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable { after: None },
            code: code.into(),
            message: message.into(),
        }
    }

    /// A retryable failure that should not be retried before `after`.
    pub fn retry_after(
        code: impl Into<String>,
        message: impl Into<String>,
        after: Duration,
    ) -> Self {
        Self {
            kind: ErrorKind::Retryable { after: Some(after) },
            code: code.into(),
            message: message.into(),
        }
    }

    /// A failure another attempt would repeat: the job fails at once, attempts left or not.
    pub fn terminal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Terminal,
            code: code.into(),
            message: message.into(),
        }
    }

    /// The handler stopped on its cancellation token.
    pub fn cancelled() -> Self {
        Self {
            kind: ErrorKind::Cancelled,
            code: "cancelled".into(),
            message: "stopped on request".into(),
        }
    }

    /// Whether this is [`ErrorKind::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Retryable { .. })
    }
}

/// The message of `error` followed by its causes, `top: cause: root`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Classifies any error where the handler knows its cause:
/// `store.read(key).await.retryable("storage")?`.
pub trait ResultExt<T> {
    /// Makes the error a retryable [`HandlerError`] with `code`, its message the whole
    /// [`error_chain`].
    fn retryable(self, code: &str) -> Result<T, HandlerError>;
    /// Makes the error a terminal [`HandlerError`] with `code`, its message the whole
    /// [`error_chain`].
    fn terminal(self, code: &str) -> Result<T, HandlerError>;
}

impl<T, E: std::error::Error + 'static> ResultExt<T> for Result<T, E> {
    fn retryable(self, code: &str) -> Result<T, HandlerError> {
        self.map_err(|error| HandlerError::retryable(code, error_chain(&error)))
    }

    fn terminal(self, code: &str) -> Result<T, HandlerError> {
        self.map_err(|error| HandlerError::terminal(code, error_chain(&error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading page 3")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn classified_errors_keep_the_whole_original_message() {
        let failed: Result<(), Outer> = Err(Outer(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection timed out",
        )));
        let error = failed.retryable("storage").unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(error.code, "storage");
        assert_eq!(error.message, "reading page 3: connection timed out");
    }
}
