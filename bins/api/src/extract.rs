//! Extractors whose rejections use the API's error shape, and the validation of ids taken
//! from paths (before any storage call).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use books::BookId;
use jobs_core::JobId;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; a rejection is an [`ApiError`] (400 syntax, 422 shape, 413 size, 415 type).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub(crate) T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => ApiError::invalid(error.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "expected a body with Content-Type: application/json".to_owned(),
        ),
        rejection if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is too large".to_owned())
        }
        rejection => ApiError::BadRequest {
            message: rejection.body_text(),
        },
    }
}

/// A query string; a rejection is a 422 `invalid_request`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(rejection.body_text())
}

/// Path parameters as text; validated by [`book_id`], [`job_id`] and [`page_number`].
#[derive(Debug, Clone)]
pub(crate) struct Path<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

/// A validated book id, or 422.
pub(crate) fn book_id(text: &str) -> Result<BookId, ApiError> {
    BookId::parse(text).map_err(|error| ApiError::invalid(error.to_string()))
}

/// A validated job id (a UUID), or 422.
pub(crate) fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse::<JobId>().map_err(|_| {
        ApiError::invalid(format!(
            "invalid job id {:?}: expected a UUID",
            text.chars().take(100).collect::<String>()
        ))
    })
}

/// A validated page number (1 or more), or 422.
pub(crate) fn page_number(text: &str) -> Result<u32, ApiError> {
    match text.parse::<u32>() {
        Ok(page) if page >= 1 => Ok(page),
        _ => Err(ApiError::invalid(format!(
            "invalid page number {:?}: expected an integer from 1",
            text.chars().take(100).collect::<String>()
        ))),
    }
}
