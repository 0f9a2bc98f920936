//! The routes of SPEC section 5 and the OpenAPI document generated from them.
//!
//! Every route is registered with `utoipa_axum::routes!`, which takes the path and the
//! method from the handler's `#[utoipa::path]`: the router and the document cannot drift.

mod books;
mod guidelines;
mod jobs;
mod system;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::MatchedPath;
use axum::http::Request;
use axum::middleware::from_fn_with_state;
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDocument, SecurityRequirement};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;
use crate::{auth, idempotency, observe, site};

/// Name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// Extra room in an upload's body limit for the multipart framing around the files.
const MULTIPART_OVERHEAD: usize = 8 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Folio API",
        description = "Books, bulk page uploads and durable background jobs (OCR, guidelines \
                       extraction, finalization) with live \
                       progress. Every error is `{\"error\": {\"code\", \"message\", \"details\"}}`; \
                       with a token configured, every `/v1` route needs `Authorization: Bearer TOKEN`. \
                       Every POST takes an `Idempotency-Key` header (1-255 visible ASCII \
                       characters): a repeat of the same request gets the first answer \
                       (`Idempotency-Replayed: true`), 409 `idempotency_in_flight` while the first \
                       runs, 422 `idempotency_mismatch` for another request under the key."
    ),
    components(schemas(ErrorBody, ErrorCode)),
    tags(
        (name = "books", description = "Books, pages and page images"),
        (name = "guidelines", description = "Extracted and finalized teaching guidelines"),
        (name = "jobs", description = "Background jobs: start, watch, cancel, resume"),
        (name = "system", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// Page uploads: a large body limit and a long timeout.
fn upload_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(books::upload_pages))
}

/// Every other `/v1` route.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(books::create_book, books::list_books))
        .routes(routes!(books::get_book, books::update_book))
        .routes(routes!(books::list_pages))
        .routes(routes!(books::get_page))
        .routes(routes!(books::get_page_image))
        .routes(routes!(books::get_page_thumbnail))
        .routes(routes!(books::get_page_text))
        .routes(routes!(books::get_page_hocr))
        .routes(routes!(books::retry_page_ocr))
        .routes(routes!(guidelines::get_guidelines))
        .routes(routes!(guidelines::get_page_guidelines))
        .routes(routes!(jobs::create_book_job, jobs::list_book_jobs))
        .routes(routes!(jobs::latest_book_job))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::resume_job))
}

/// Health, readiness and the document: no auth.
fn system_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::openapi_json))
}

/// The metrics: open, or behind `--metrics-token`.
fn metrics_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(system::metrics))
}

/// The OpenAPI 3.1 document of every route, generated from the handlers and their types.
pub fn openapi() -> OpenApiDocument {
    let mut document = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(upload_routes())
        .merge(v1_routes())
        .merge(system_routes())
        .merge(metrics_routes())
        .into_openapi();
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    // Answers of the site guard (`crate::site`), on every operation: 421 for any, 403 for
    // those that change something.
    let error = |description: &str| {
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in document.paths.paths.values_mut() {
        for (operation, changes) in [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, true),
        ] {
            let Some(operation) = operation else {
                continue;
            };
            let responses = &mut operation.responses.responses;
            responses.insert(
                "421".to_owned(),
                error("`misdirected`: without a token, a `Host` that is neither loopback nor a `--public-host`").into(),
            );
            if changes {
                responses.insert(
                    "403".to_owned(),
                    error("`cross_site`: sent from another site (`Origin`, `Sec-Fetch-Site`)")
                        .into(),
                );
            }
        }
    }
    for (path, item) in document.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
        }
    }
    document
}

/// The document as JSON, built once.
pub(crate) fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .unwrap_or_else(|error| unreachable!("the document always serializes: {error}"))
    })
}

/// The router with every layer, and the operations it routes (as recorded by
/// `utoipa_axum` while it registered each route on the router).
pub(crate) fn router(state: AppState) -> (Router, Vec<(String, String)>) {
    let config = state.config().clone();
    let upload_limit = usize::try_from(config.ingest_limits.max_request_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD);
    // Inside the timeout, so a body that does not arrive in time is a 408 there too.
    let idempotent = |body, timeout| {
        from_fn_with_state(
            (state.clone(), idempotency::Limits { body, timeout }),
            idempotency::idempotent,
        )
    };
    let uploads = upload_routes()
        .layer(DefaultBodyLimit::max(upload_limit))
        .layer(idempotent(upload_limit, config.upload_timeout))
        .layer(from_fn_with_state(config.upload_timeout, observe::timeout));
    let v1 = v1_routes()
        .layer(DefaultBodyLimit::max(config.json_body_limit))
        .layer(idempotent(config.json_body_limit, config.request_timeout))
        .layer(from_fn_with_state(config.request_timeout, observe::timeout));
    let v1 = uploads
        .merge(v1)
        .route_layer(from_fn_with_state(state.clone(), auth::require_token));
    let system = system_routes()
        .merge(metrics_routes().route_layer(from_fn_with_state(
            state.clone(),
            auth::require_metrics_token,
        )))
        .layer(DefaultBodyLimit::max(config.json_body_limit))
        .layer(from_fn_with_state(config.request_timeout, observe::timeout));
    let (router, document) = OpenApiRouter::new()
        .merge(v1)
        .merge(system)
        .split_for_parts();
    // The dashboard is not an API operation: merged after the document was split off.
    let router = router
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), site::same_site))
        .layer(from_fn_with_state(state.clone(), observe::observe))
        .layer(axum::middleware::map_response(default_security_headers))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!(
                        "request",
                        http.method = crate::metrics::method_label(request.method()),
                        http.route = route,
                        http.path = request.uri().path(),
                    )
                })
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(()),
        )
        .with_state(state);
    (router, operations(&document))
}

/// `nosniff` on every answer, and on each answer that sets no policy of its own (the
/// dashboard and page images do) a content security policy that lets nothing load or
/// frame it: the API's answers are data, never a page.
async fn default_security_headers(
    mut response: axum::response::Response,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    use axum::http::header::{CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

/// The `(method, path)` of every operation of `document`, sorted.
pub fn operations(document: &OpenApiDocument) -> Vec<(String, String)> {
    let mut operations: Vec<(String, String)> = document
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                ("get", item.get.is_some()),
                ("post", item.post.is_some()),
                ("put", item.put.is_some()),
                ("patch", item.patch.is_some()),
                ("delete", item.delete.is_some()),
                ("head", item.head.is_some()),
                ("options", item.options.is_some()),
            ]
            .into_iter()
            .filter(|(_, present)| *present)
            .map(move |(method, _)| (method.to_owned(), path.clone()))
        })
        .collect();
    operations.sort();
    operations
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
