//! [`ApiError`]: the one error of every handler, rendered as
//! `{"error": {"code", "message", "details"}}` with the stable codes of SPEC section 5.
//!
//! 5xx bodies are generic; the cause travels in a response extension to the observing
//! middleware, which logs it once with the route.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use books::BooksError;
use jobs_core::{LockError, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::dto::{Job, RejectedFile};
use crate::languages::LanguageRefused;

/// The stable error codes (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or fails validation (400, 405 or 422).
    InvalidRequest,
    /// No such book, page, job or route (404).
    NotFound,
    /// A book with this id exists (409).
    BookExists,
    /// A job of this type is active for the book; `details.job` is that job (409).
    JobActive,
    /// Only failed or cancelled jobs can be resumed (409).
    JobNotResumable,
    /// The job has finished; it cannot be cancelled (409).
    JobTerminal,
    /// Some pages are not OCRed yet (409).
    OcrIncomplete,
    /// Some pages have no guidelines yet (409).
    GuidelinesIncomplete,
    /// The body or a file is of a type the API does not take (415).
    UnsupportedMediaType,
    /// The body is larger than allowed (413).
    PayloadTooLarge,
    /// Missing or wrong bearer token (401).
    Unauthorized,
    /// A state-changing request sent from another site (its `Origin` or `Sec-Fetch-Site`
    /// says so): refused (403).
    CrossSite,
    /// Without a token, the request's `Host` is neither a loopback name nor a
    /// `--public-host` (421).
    Misdirected,
    /// The client sent its request body too slowly: the request timeout ended it (408).
    RequestTimeout,
    /// Other uploads hold the memory for decoding images; try again after `Retry-After`
    /// seconds (503).
    ServerBusy,
    /// A request with this `Idempotency-Key` is still running; send it again after
    /// `Retry-After` seconds to get its answer (409).
    IdempotencyInFlight,
    /// This `Idempotency-Key` was used for another request (another body or path) (422).
    IdempotencyMismatch,
    /// Something failed on the server (500, 503); the body says no more.
    Internal,
}

/// The body of every error answer (4xx and 5xx): `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong: match on `code`, show `message` to people.
    pub error: ErrorObject,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// A stable, machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Machine-readable details (e.g. `job` for `job_active`, `rejected` for a refused
    /// upload); an empty object when there are none.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// The cause of a 5xx answer, handed from the handler to the logging middleware.
#[derive(Debug, Clone)]
pub(crate) struct ErrorCause(pub(crate) Arc<anyhow::Error>);

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed syntax (bad JSON, bad multipart): 400 `invalid_request`.
    #[error("{message}")]
    BadRequest { message: String },
    /// Well-formed but invalid (a bad id, an unknown job type, rejected files): 422
    /// `invalid_request`.
    #[error("{message}")]
    Invalid {
        message: String,
        /// The body's `details`; `None` sends an empty object.
        details: Option<Value>,
    },
    /// No such method on this path: 405 `invalid_request`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `book_exists`.
    #[error("book {0} already exists")]
    BookExists(String),
    /// 409 `job_active`, with the active job.
    #[error("a {} job is already active for book {}", .0.job_type, .0.book_id)]
    JobActive(Box<Job>),
    /// 409 `job_not_resumable`.
    #[error("{message}")]
    JobNotResumable {
        message: String,
        /// The job that cannot be resumed, if there is one.
        job: Option<Box<Job>>,
    },
    /// 409 `job_terminal`, with the job.
    #[error("job {} is {}: it has finished and cannot be cancelled", .0.id, .0.status)]
    JobTerminal(Box<Job>),
    /// 409 `ocr_incomplete`, with the pages not done.
    #[error("{}", incomplete("OCR is not done for", .0))]
    OcrIncomplete(Vec<u32>),
    /// 409 `guidelines_incomplete`, with the pages missing guidelines.
    #[error("{}", incomplete("guidelines are not extracted for", .0))]
    GuidelinesIncomplete(Vec<u32>),
    /// Uploaded files the API refuses: 422 `invalid_request`, or 415
    /// `unsupported_media_type` when every one is of an unsupported format.
    #[error("{} of the uploaded files were rejected; nothing was stored", .0.len())]
    RejectedFiles(Vec<RejectedFile>),
    /// 415 `unsupported_media_type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 401 `unauthorized`.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403 `cross_site`.
    #[error(
        "a request that changes something must come from this server's own origin, not from \
         another site"
    )]
    CrossSite,
    /// 421 `misdirected`, with the host name the request was sent to.
    #[error(
        "this server does not answer for host {0:?}: without a token it serves loopback names \
         and its --public-host names only"
    )]
    Misdirected(String),
    /// The request took longer than allowed: 503 `internal`.
    #[error("the request timed out")]
    Timeout,
    /// The request timeout ended a request whose body had not all arrived: 408
    /// `request_timeout`.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// 503 `server_busy` with `Retry-After`.
    #[error("{message}")]
    Busy {
        message: String,
        /// Sent as `Retry-After` in whole seconds (at least 1).
        retry_after: std::time::Duration,
    },
    /// 409 `idempotency_in_flight`, with `Retry-After`.
    #[error("a request with this Idempotency-Key is still running: send it again shortly")]
    IdempotencyInFlight,
    /// 422 `idempotency_mismatch`.
    #[error(
        "this Idempotency-Key was used for another request (another body or path) in the \
         last 24 hours: use a new key for a new request"
    )]
    IdempotencyMismatch,
    /// A backend is unreachable or overloaded: 503 `internal`.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected backend answer: 500 `internal`.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// "`what` page 3, 4" (at most 20 pages named), or that the book has no pages.
fn incomplete(what: &str, pages: &[u32]) -> String {
    if pages.is_empty() {
        return "the book has no pages yet".to_owned();
    }
    let named: Vec<String> = pages.iter().take(20).map(u32::to_string).collect();
    let more = pages.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{what} page {}{more}", named.join(", "))
}

impl ApiError {
    /// 422 `invalid_request` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            details: None,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BookExists(_)
            | Self::JobActive(_)
            | Self::JobNotResumable { .. }
            | Self::JobTerminal(_)
            | Self::OcrIncomplete(_)
            | Self::GuidelinesIncomplete(_)
            | Self::IdempotencyInFlight => StatusCode::CONFLICT,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RejectedFiles(rejected) if all_unsupported(rejected) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::RejectedFiles(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Timeout | Self::Unavailable(_) | Self::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest { .. } | Self::Invalid { .. } | Self::MethodNotAllowed => {
                ErrorCode::InvalidRequest
            }
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BookExists(_) => ErrorCode::BookExists,
            Self::JobActive(_) => ErrorCode::JobActive,
            Self::JobNotResumable { .. } => ErrorCode::JobNotResumable,
            Self::JobTerminal(_) => ErrorCode::JobTerminal,
            Self::OcrIncomplete(_) => ErrorCode::OcrIncomplete,
            Self::GuidelinesIncomplete(_) => ErrorCode::GuidelinesIncomplete,
            Self::RejectedFiles(rejected) if all_unsupported(rejected) => {
                ErrorCode::UnsupportedMediaType
            }
            Self::RejectedFiles(_) => ErrorCode::InvalidRequest,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::CrossSite => ErrorCode::CrossSite,
            Self::Misdirected(_) => ErrorCode::Misdirected,
            Self::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Self::Busy { .. } => ErrorCode::ServerBusy,
            Self::IdempotencyInFlight => ErrorCode::IdempotencyInFlight,
            Self::IdempotencyMismatch => ErrorCode::IdempotencyMismatch,
            Self::Timeout | Self::Unavailable(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::Invalid {
                details: Some(details),
                ..
            } => details.clone(),
            Self::JobActive(job) | Self::JobTerminal(job) => json!({ "job": job }),
            Self::JobNotResumable { job: Some(job), .. } => json!({ "job": job }),
            Self::OcrIncomplete(pages) | Self::GuidelinesIncomplete(pages) => {
                json!({ "pages": pages })
            }
            Self::RejectedFiles(rejected) => json!({ "rejected": rejected }),
            _ => json!({}),
        }
    }

    fn into_cause(self) -> Option<anyhow::Error> {
        match self {
            Self::Unavailable(cause) | Self::Internal(cause) => Some(cause),
            _ => None,
        }
    }
}

fn all_unsupported(rejected: &[RejectedFile]) -> bool {
    !rejected.is_empty()
        && rejected
            .iter()
            .all(|file| file.code == "unsupported_format")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = match &self {
            Self::Busy { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            Self::IdempotencyInFlight => Some(1),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message: self.to_string(),
                details: self.details(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if let Some(cause) = self.into_cause() {
            response
                .extensions_mut()
                .insert(ErrorCause(Arc::new(cause)));
        }
        response
    }
}

impl From<LanguageRefused> for ApiError {
    fn from(refused: LanguageRefused) -> Self {
        Self::Invalid {
            message: refused.message,
            details: refused.details,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => Self::NotFound(format!("job {id} not found")),
            error if error.is_backend() => {
                Self::Unavailable(anyhow::Error::new(error).context("job store"))
            }
            error => Self::Internal(anyhow::Error::new(error).context("job store")),
        }
    }
}

impl From<LockError> for ApiError {
    fn from(error: LockError) -> Self {
        match error {
            LockError::NotResumable { id, status } => Self::JobNotResumable {
                message: format!(
                    "job {id} is {status}: only failed or cancelled jobs can be resumed"
                ),
                job: None,
            },
            LockError::Store(error) => error.into(),
            error => Self::Internal(anyhow::Error::new(error)),
        }
    }
}

impl From<BooksError> for ApiError {
    fn from(error: BooksError) -> Self {
        match error {
            BooksError::BookNotFound { book_id } => {
                Self::NotFound(format!("book {book_id} not found"))
            }
            BooksError::BookExists { book_id } => Self::BookExists(book_id.to_string()),
            error if error.is_transient() => {
                Self::Unavailable(anyhow::Error::new(error).context("object storage"))
            }
            error => Self::Internal(anyhow::Error::new(error).context("books")),
        }
    }
}

impl From<blob_store::BlobError> for ApiError {
    fn from(error: blob_store::BlobError) -> Self {
        if error.is_transient() {
            Self::Unavailable(anyhow::Error::new(error).context("object storage"))
        } else {
            Self::Internal(anyhow::Error::new(error).context("object storage"))
        }
    }
}
