//! Conditional GETs (RFC 9110, 13.1.2): what a client reads again and again (a book's
//! manifest, a page, its image, preview, text and hOCR, its guidelines, the final document,
//! the dashboard's files) carries a strong ETag, and a request whose `If-None-Match` names
//! it is answered `304 Not Modified` without a body. A poll of an unchanged book then
//! costs its reads on the server but not the transfer.

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Revalidate on every use: the API's documents change when a job writes them.
pub(crate) const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// A strong validator: `"HEX"`.
#[derive(Debug, Clone)]
pub(crate) struct Etag(HeaderValue);

impl Etag {
    /// Of a representation's bytes: the first 128 bits of their SHA-256.
    pub(crate) fn of(body: &[u8]) -> Self {
        let hex: String = Sha256::digest(body)
            .iter()
            .take(16)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self::quoted(&hex)
    }

    /// `tag` (a digest or a storage ETag, quotes optional) as a validator; one with
    /// characters a header cannot carry is hashed instead.
    pub(crate) fn quoted(tag: &str) -> Self {
        let tag = tag.trim_matches('"');
        match HeaderValue::from_str(&format!("\"{tag}\"")) {
            Ok(value) if !tag.contains('"') => Self(value),
            _ => Self::of(tag.as_bytes()),
        }
    }

    /// Whether the request's `If-None-Match` names this validator (weak comparison, as RFC
    /// 9110 asks for this header; `*` matches any).
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        let Ok(etag) = self.0.to_str() else {
            return false;
        };
        request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
    }
}

/// `body` as `content_type` with its ETag and `cache` (Cache-Control, and Vary when the
/// representation depends on a request header), or `304` with the same validator and cache
/// headers when the request's `If-None-Match` names it.
pub(crate) fn respond(
    request: &HeaderMap,
    etag: Etag,
    cache: &[(HeaderName, HeaderValue)],
    content_type: HeaderValue,
    body: Bytes,
) -> Response {
    if etag.matches(request) {
        return not_modified(etag, cache);
    }
    let mut response = not_modified(etag, cache);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    *response.body_mut() = Body::from(body);
    response
}

/// `304` with the validator and cache headers: for a handler that can tell before reading
/// the representation that the client's copy is current.
pub(crate) fn not_modified(etag: Etag, cache: &[(HeaderName, HeaderValue)]) -> Response {
    let mut headers = HeaderMap::with_capacity(cache.len() + 2);
    headers.insert(ETAG, etag.0);
    for (name, value) in cache {
        headers.insert(name.clone(), value.clone());
    }
    (StatusCode::NOT_MODIFIED, headers).into_response()
}

/// `value` as JSON, revalidated by the ETag of its bytes (with `Vary: accept` when
/// `varies`, for documents served in more than one form).
pub(crate) fn json<T: serde::Serialize>(request: &HeaderMap, value: &T, varies: bool) -> Response {
    let body = serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_else(|error| unreachable!("API documents always serialize: {error}"));
    let vary = (VARY, HeaderValue::from_static("accept"));
    let cache = [(CACHE_CONTROL, REVALIDATE), vary];
    let cache = if varies { &cache[..] } else { &cache[..1] };
    respond(
        request,
        Etag::of(&body),
        cache,
        HeaderValue::from_static("application/json"),
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn if_none_match(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = Etag::quoted("abc");
        assert!(etag.matches(&if_none_match("\"abc\"")));
        assert!(etag.matches(&if_none_match("W/\"abc\"")));
        assert!(etag.matches(&if_none_match("\"x\", \"abc\"")));
        assert!(etag.matches(&if_none_match("*")));
        assert!(!etag.matches(&if_none_match("\"abd\"")));
        assert!(!etag.matches(&HeaderMap::new()));
    }

    #[test]
    fn a_validator_is_quoted_once_and_never_carries_a_quote_inside() {
        assert_eq!(Etag::quoted("\"abc\"").0, "\"abc\"");
        assert_eq!(Etag::quoted("abc").0, "\"abc\"");
        let odd = Etag::quoted("a\"b");
        assert_eq!(odd.0.len(), 34, "{:?}", odd.0);
        assert_eq!(Etag::of(b"x").0, Etag::of(b"x").0);
        assert_ne!(Etag::of(b"x").0, Etag::of(b"y").0);
    }

    #[test]
    fn a_match_is_304_with_the_validator_and_cache_headers_and_no_body() {
        let etag = Etag::of(b"body");
        let cache = [(CACHE_CONTROL, REVALIDATE)];
        let content = HeaderValue::from_static("text/plain");
        let response = respond(
            &HeaderMap::new(),
            etag.clone(),
            &cache,
            content.clone(),
            Bytes::from_static(b"body"),
        );
        assert_eq!(response.status(), StatusCode::OK);
        let tag = response.headers()[ETAG].to_str().unwrap().to_owned();
        let response = respond(
            &if_none_match(&tag),
            etag,
            &cache,
            content,
            Bytes::from_static(b"body"),
        );
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[ETAG], tag.as_str());
        assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
        assert!(response.headers().get(CONTENT_TYPE).is_none());
    }
}
