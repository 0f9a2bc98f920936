//! Bearer-token auth of the `/v1` routes (SPEC section 5), and of `/metrics` with
//! `--metrics-token`.
//!
//! Tokens are compared in constant time over their SHA-256 digests, so neither the
//! content nor the length of the configured token leaks through timing.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Answers 401 unless the request carries `Authorization: Bearer TOKEN` when a token is
/// configured.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.config().api_token.clone();
    require(expected.as_deref(), request, next).await
}

/// `require_token` for `/metrics` with `--metrics-token`: a scraper's token opens the
/// metrics and nothing else, and the API's token does not open them.
pub(crate) async fn require_metrics_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.config().metrics_token.clone();
    require(expected.as_deref(), request, next).await
}

/// Runs `request` when no token is `expected` or the request's bearer token matches it;
/// else 401.
async fn require(expected: Option<&str>, request: Request, next: Next) -> Response {
    let Some(expected) = expected else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if tokens_match(token, expected) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Whether two tokens are equal, in time independent of their content.
pub(crate) fn tokens_match(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.as_slice().ct_eq(expected.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secret", "secreT"));
        assert!(!tokens_match("", "secret"));
        assert!(!tokens_match("secret-and-more", "secret"));
    }
}
