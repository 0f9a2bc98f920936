//! The dashboard (SPEC section 7): a single-page app of static HTML, one stylesheet and
//! JavaScript modules, embedded in the binary; there is no build step.
//!
//! - `GET /`, `GET /books/{book_id}` and `GET /jobs` serve the same `index.html`: the app
//!   routes on the client with the history API, so deep links and reloads work.
//! - `GET /assets/{file}` serves the modules, the stylesheet and the icon, each with a
//!   strong `ETag` (a hash of its bytes, computed once), `Cache-Control: no-cache` and a
//!   `304` for a matching `If-None-Match`. Any other name is a 404.
//! - Every response carries a Content-Security-Policy that allows no inline script or
//!   style ([`CONTENT_SECURITY_POLICY`]), `X-Content-Type-Options: nosniff` and
//!   `Referrer-Policy: no-referrer`.
//!
//! These pages are not API operations: they live outside `/v1`, need no token (the page
//! asks for it and sends it as a bearer header on its API calls, never in a URL) and are
//! not in the OpenAPI document. `routes::router` merges [`router`] after the document is
//! split off.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CSP_HEADER, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::conditional::{self, Etag};

/// The policy of every dashboard response: scripts, styles and connections only from
/// this origin, no inline code, images also from `blob:` (page images are fetched with
/// the token and shown through object URLs) and `data:`.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The page every client-side route starts from.
const INDEX: &[u8] = include_bytes!("../assets/index.html");

/// Every file under `/assets/`: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("api.js", JAVASCRIPT, include_bytes!("../assets/api.js")),
    ("app.css", CSS, include_bytes!("../assets/app.css")),
    ("app.js", JAVASCRIPT, include_bytes!("../assets/app.js")),
    ("book.js", JAVASCRIPT, include_bytes!("../assets/book.js")),
    ("books.js", JAVASCRIPT, include_bytes!("../assets/books.js")),
    (
        "guidelines.js",
        JAVASCRIPT,
        include_bytes!("../assets/guidelines.js"),
    ),
    ("icon.svg", SVG, include_bytes!("../assets/icon.svg")),
    (
        "jobcard.js",
        JAVASCRIPT,
        include_bytes!("../assets/jobcard.js"),
    ),
    ("jobs.js", JAVASCRIPT, include_bytes!("../assets/jobs.js")),
    ("live.js", JAVASCRIPT, include_bytes!("../assets/live.js")),
    ("pages.js", JAVASCRIPT, include_bytes!("../assets/pages.js")),
    (
        "router.js",
        JAVASCRIPT,
        include_bytes!("../assets/router.js"),
    ),
    ("ui.js", JAVASCRIPT, include_bytes!("../assets/ui.js")),
    (
        "upload.js",
        JAVASCRIPT,
        include_bytes!("../assets/upload.js"),
    ),
];

/// One embedded file with its validator.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    etag: Etag,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static [u8]) -> Self {
        Self {
            content_type,
            body,
            etag: Etag::of(body),
        }
    }

    /// The file, or `304` when `If-None-Match` names its validator.
    fn respond(&self, headers: &HeaderMap) -> Response {
        conditional::respond(
            headers,
            self.etag.clone(),
            &[(CACHE_CONTROL, conditional::REVALIDATE)],
            HeaderValue::from_static(self.content_type),
            Bytes::from_static(self.body),
        )
    }
}

fn index_asset() -> &'static Asset {
    static INDEX_ASSET: OnceLock<Asset> = OnceLock::new();
    INDEX_ASSET.get_or_init(|| Asset::new(HTML, INDEX))
}

fn asset_named(name: &str) -> Option<&'static Asset> {
    static ASSETS: OnceLock<Vec<(&'static str, Asset)>> = OnceLock::new();
    ASSETS
        .get_or_init(|| {
            FILES
                .iter()
                .map(|(name, content_type, body)| (*name, Asset::new(content_type, body)))
                .collect()
        })
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, asset)| asset)
}

/// The dashboard's routes, with the security headers on every response. Generic over the
/// state so it merges into the API's router before the state is supplied.
pub(crate) fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/books/{book_id}", get(index))
        .route("/jobs", get(index))
        .route("/assets/{file}", get(asset))
        .layer(map_response(security_headers))
}

async fn index(headers: HeaderMap) -> Response {
    index_asset().respond(&headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match asset_named(&file) {
        Some(asset) => asset.respond(&headers),
        None => (
            StatusCode::NOT_FOUND,
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            "no such asset",
        )
            .into_response(),
    }
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CSP_HEADER,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_has_a_distinct_name_and_a_strong_etag() {
        let mut names: Vec<&str> = FILES.iter().map(|(name, _, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FILES.len());
        for name in names {
            let asset = asset_named(name).unwrap();
            let response = asset.respond(&HeaderMap::new());
            let etag = response.headers()[axum::http::header::ETAG]
                .to_str()
                .unwrap();
            assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        }
    }
}
