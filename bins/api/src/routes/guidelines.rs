//! A book's guidelines: the finalized document (JSON, or Markdown by content negotiation)
//! and one page's extracted guidelines.

use axum::extract::State;
use axum::http::header::{ACCEPT, CACHE_CONTROL, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use books::{GuidelinesStatus, layout};

use crate::conditional::{self, Etag};
use crate::dto::{BookPath, FinalGuidelines, PageGuidelines, PagePath};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Path, book_id};
use crate::routes::books::manifest_page;
use crate::state::AppState;

/// The media type of the Markdown form.
const MARKDOWN: &str = "text/markdown; charset=utf-8";

/// Whether `Accept` prefers `text/markdown` to `application/json`: by quality, then by how
/// specific the matching range is; a tie (or no header) is JSON.
fn prefers_markdown(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    // (quality, specificity) of the best range matching each type.
    let mut markdown = (0.0_f32, 0_u8);
    let mut json = (0.0_f32, 0_u8);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|parameter| {
                let (name, value) = parameter.split_once('=')?;
                (name.trim() == "q").then(|| value.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let specificity = |wanted: &str| -> Option<u8> {
            let (kind, _) = wanted.split_once('/')?;
            if media == wanted {
                Some(2)
            } else if media == format!("{kind}/*") {
                Some(1)
            } else if media == "*/*" {
                Some(0)
            } else {
                None
            }
        };
        for (wanted, best) in [
            ("text/markdown", &mut markdown),
            ("application/json", &mut json),
        ] {
            if let Some(specificity) = specificity(wanted)
                && (quality, specificity) > *best
            {
                *best = (quality, specificity);
            }
        }
    }
    markdown.0 > 0.0 && markdown > json
}

/// The book's finalized guidelines: `final.json`, or `final.md` when `Accept` prefers
/// `text/markdown`.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/guidelines", tag = "guidelines",
    params(BookPath),
    responses(
        (status = 200, description = "The finalized guidelines; Markdown (a heading per topic, a bullet per guideline with its kind and pages) when `Accept` prefers `text/markdown`",
            content(
                (FinalGuidelines = "application/json"),
                (String = "text/markdown"),
            )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book, or its guidelines are not finalized", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_guidelines(
    State(state): State<AppState>,
    Path(book): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let book_id = book_id(&book)?;
    let manifest = state.books().manifest(&book_id).await?;
    if manifest.guidelines.status != GuidelinesStatus::Final {
        return Err(ApiError::NotFound(format!(
            "the guidelines of book {book_id} are not finalized yet: run a finalize job"
        )));
    }
    let markdown = prefers_markdown(&headers);
    let path = if markdown {
        layout::FINAL_MARKDOWN_PATH
    } else {
        layout::FINAL_JSON_PATH
    };
    let blob = state
        .books()
        .store()
        .get(&layout::book_key(&book_id, path))
        .await
        .map_err(|error| {
            if error.is_not_found() {
                ApiError::NotFound(format!(
                    "the finalized guidelines of book {book_id} are missing"
                ))
            } else {
                error.into()
            }
        })?;
    if markdown {
        return Ok(conditional::respond(
            &headers,
            Etag::of(&blob.bytes),
            &[
                (CACHE_CONTROL, conditional::REVALIDATE),
                (VARY, HeaderValue::from_static("accept")),
            ],
            HeaderValue::from_static(MARKDOWN),
            blob.bytes,
        ));
    }
    let document: extraction::FinalGuidelines = serde_json::from_slice(&blob.bytes)
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error).context(path)))?;
    Ok(conditional::json(
        &headers,
        &FinalGuidelines::from(&document),
        true,
    ))
}

/// One page's extracted guidelines.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages/{page}/guidelines", tag = "guidelines",
    params(PagePath),
    responses(
        (status = 200, description = "The page's guidelines", body = PageGuidelines),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book or page, or not extracted yet", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_page_guidelines(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (book_id, page) = manifest_page(&state, &book, &page).await?;
    let path = layout::page_guidelines_path(page.page);
    let blob = state
        .books()
        .store()
        .get(&layout::book_key(&book_id, &path))
        .await
        .map_err(|error| {
            if error.is_not_found() {
                ApiError::NotFound(format!(
                    "page {} of book {book_id} has no guidelines yet: run a guidelines job",
                    page.page
                ))
            } else {
                error.into()
            }
        })?;
    let document: extraction::PageGuidelines = serde_json::from_slice(&blob.bytes)
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error).context(path)))?;
    Ok(conditional::json(
        &headers,
        &PageGuidelines::from(&document),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn markdown_is_chosen_only_when_accept_prefers_it() {
        assert!(!prefers_markdown(&HeaderMap::new()));
        for (header, markdown) in [
            ("text/markdown", true),
            ("text/markdown; charset=utf-8", true),
            ("application/json", false),
            ("*/*", false),
            ("text/markdown, application/json", false),
            ("text/markdown, */*", true),
            ("text/*", true),
            ("application/json;q=0.5, text/markdown", true),
            ("text/markdown;q=0.4, application/json;q=0.9", false),
            ("text/markdown;q=0", false),
            ("text/html", false),
        ] {
            assert_eq!(prefers_markdown(&accept(header)), markdown, "{header}");
        }
    }
}
