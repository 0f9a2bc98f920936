//! Books, pages, page images and text, page uploads and single-page OCR retry.

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use blob_store::BlobError;
use books::{BookId, IngestError, Manifest, OcrStatus, StagedInput, layout};
use futures::{StreamExt, TryStreamExt};
use ingest::{INGEST_JOB_TYPE, IngestPayload, TextLayersChoice};
use jobs_core::{Acquire, ChainStep};
use ocr::{OCR_JOB_TYPE, OcrPayload};

use crate::conditional::{self, Etag};
use crate::dto::{
    Book, BookList, BookPath, BookSummary, CreateBook, Job, Page, PageList, PageListQuery,
    PagePath, UPLOAD_MEDIA_TYPES, UpdateBook, UploadAccepted, UploadForm, UploadOcr, UploadQuery,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query, book_id, page_number};
use crate::state::AppState;

/// Manifests read at once when listing books.
const LIST_CONCURRENCY: usize = 16;

/// Creates a book without pages. Without `id`, the id is made from the title (its words and a
/// random suffix); without `language`, the book gets the server's `--tesseract-languages`.
#[utoipa::path(
    post, path = "/v1/books", tag = "books",
    request_body = CreateBook,
    responses(
        (status = 201, description = "The new book", body = Book),
        (status = 409, description = "`book_exists`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad id or title, or a language that is not installed (`details.missing`, `details.installed`)", body = ErrorBody),
        (status = 400, description = "`invalid_request`: malformed JSON", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive within the request timeout", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not JSON", body = ErrorBody),
    )
)]
pub(crate) async fn create_book(
    State(state): State<AppState>,
    Json(request): Json<CreateBook>,
) -> Result<(StatusCode, axum::Json<Book>), ApiError> {
    if !crate::dto::valid_title(&request.title) {
        return Err(ApiError::invalid(format!(
            "title must have 1 to {} characters, not all white space",
            crate::dto::MAX_TITLE_CHARS
        )));
    }
    let title = request.title.trim();
    let book_id = match request.id.as_deref() {
        Some(id) => book_id(id)?,
        None => id_from_title(title),
    };
    let language = match request.language {
        Some(language) => {
            crate::languages::check(&language)?;
            language
        }
        None => state.config().default_language.clone(),
    };
    let manifest = state
        .books()
        .create_with_language(&book_id, title, Some(language))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Book::from(&manifest))))
}

/// A fresh id from a title: its words in lowercase, joined by `-`, and a random suffix.
fn id_from_title(title: &str) -> BookId {
    let mut slug = String::new();
    for character in title.chars().flat_map(char::to_lowercase) {
        if character.is_ascii_alphanumeric() {
            slug.push(character);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let id = if slug.is_empty() {
        format!("book-{suffix}")
    } else {
        format!("{slug}-{suffix}")
    };
    BookId::parse(&id).unwrap_or_else(|error| unreachable!("a generated id is valid: {error}"))
}

/// Lists every book, by id, with counts of its pages' OCR and guidelines.
#[utoipa::path(
    get, path = "/v1/books", tag = "books",
    responses(
        (status = 200, description = "The books, by id", body = BookList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn list_books(
    State(state): State<AppState>,
) -> Result<axum::Json<BookList>, ApiError> {
    let books = state.books();
    let ids = books.list().await?;
    let manifests: Vec<Option<Manifest>> = futures::stream::iter(ids)
        .map(|id| async move {
            match books.manifest(&id).await {
                Ok(manifest) => Ok(Some(manifest)),
                Err(books::BooksError::BookNotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        })
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(axum::Json(BookList {
        books: manifests.iter().flatten().map(BookSummary::from).collect(),
    }))
}

/// A book's manifest: its pages with their OCR status, and its guidelines status.
#[utoipa::path(
    get, path = "/v1/books/{book_id}", tag = "books",
    params(BookPath),
    responses(
        (status = 200, description = "The book", body = Book),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_book(
    State(state): State<AppState>,
    Path(book): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let book_id = book_id(&book)?;
    let manifest = state.books().manifest(&book_id).await?;
    Ok(conditional::json(&headers, &Book::from(&manifest), false))
}

/// Changes a book: its OCR language. Pages already read keep their text; the next `ocr`
/// job (a page retry, or a job for pages not done) reads in the new language.
#[utoipa::path(
    patch, path = "/v1/books/{book_id}", tag = "books",
    params(BookPath),
    request_body = UpdateBook,
    responses(
        (status = 200, description = "The book", body = Book),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id, or a language that is not installed (`details.missing`, `details.installed`)", body = ErrorBody),
        (status = 400, description = "`invalid_request`: malformed JSON", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not JSON", body = ErrorBody),
    )
)]
pub(crate) async fn update_book(
    State(state): State<AppState>,
    Path(book): Path<String>,
    Json(request): Json<UpdateBook>,
) -> Result<axum::Json<Book>, ApiError> {
    let book_id = book_id(&book)?;
    crate::languages::check(&request.language)?;
    let books = state.books();
    books.manifest(&book_id).await?;
    let language = request.language;
    let manifest = books
        .update(&book_id, move |manifest| {
            manifest.language = Some(language.clone());
        })
        .await?;
    Ok(axum::Json(Book::from(&manifest)))
}

/// A book's pages with their OCR state; `?needs_review=true` lists only the pages whose OCR
/// quality is low (mean word confidence under the worker's `--ocr-review-below`, or no
/// word found), `false` only the others.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages", tag = "books",
    params(BookPath, PageListQuery),
    responses(
        (status = 200, description = "The pages, by number", body = PageList),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or query", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn list_pages(
    State(state): State<AppState>,
    Path(book): Path<String>,
    Query(query): Query<PageListQuery>,
) -> Result<axum::Json<PageList>, ApiError> {
    let book_id = book_id(&book)?;
    let manifest = state.books().manifest(&book_id).await?;
    Ok(axum::Json(PageList {
        pages: manifest
            .pages
            .iter()
            .filter(|page| {
                query
                    .needs_review
                    .is_none_or(|wanted| page.ocr.needs_review == wanted)
            })
            .map(|page| Page::new(&book_id, page))
            .collect(),
    }))
}

/// Uploads pages: every `files` field is streamed to a local file, checked (all or nothing:
/// when any file is invalid nothing is kept and the error lists each bad file with its
/// reason in `details.rejected`: `encrypted_pdf`, `corrupt`, `too_many_pages`, ...) and
/// stored as it came; its pages get their numbers after the book's last page (a PDF one
/// per PDF page). The answer is 202 with the upload and its `ingest` job, which makes the
/// pages (PDF pages rendered at 300 dpi, images converted to PNG, each with its preview);
/// they appear in the book as they are made. A PDF page with a text layer keeps it as its
/// text (OCR done, engine `pdf-text`). With `?ocr=true` the `ingest` job's chain goes on
/// with an `ocr` job (for the book's pages not done); `?ocr=force` also ignores PDF text
/// layers; `&then=guidelines,finalize` chains the rest of the pipeline after the `ocr`
/// job. One `ingest` runs per book at a time: while one is active the upload is 409
/// `job_active` with that job in `details.job`, and nothing is kept.
#[utoipa::path(
    post, path = "/v1/books/{book_id}/pages", tag = "books",
    params(BookPath, UploadQuery),
    request_body(content(
        (UploadForm = "multipart/form-data", encoding(("files" = (content_type = UPLOAD_MEDIA_TYPES)))),
    )),
    responses(
        (status = 202, description = "The upload as stored, and the `ingest` job that makes its pages (its chain: `ocr`, then `then`, with `?ocr=true` or `?ocr=force`)", body = UploadAccepted),
        (status = 404, description = "`not_found`: no such book", body = ErrorBody),
        (status = 409, description = "`job_active`: an `ingest` of the book is active (`details.job`); send the upload when it ends", body = ErrorBody),
        (status = 422, description = "`invalid_request`: rejected files (listed in `details.rejected`, each with its code: `unsupported_format`, `corrupt`, `too_large`, `empty`, `invalid_name`, `too_many_pixels`, `encrypted_pdf`, `too_many_pages`, `render_timeout`), no files, a part other than `files`, bad id, `then` without `ocr=true` or `ocr=force`, an invalid chain, or an unknown query parameter", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not multipart, or every rejected file is of an unsupported format", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: too many files or bytes, or the book would pass its page limit", body = ErrorBody),
        (status = 400, description = "`invalid_request`: malformed multipart body", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive within the upload timeout", body = ErrorBody),
        (status = 503, description = "`server_busy`: as many uploads as the server takes at once are in flight; nothing was stored, send it again after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before sending the upload again"))),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn upload_pages(
    State(state): State<AppState>,
    Path(book): Path<String>,
    Query(query): Query<UploadQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, axum::Json<UploadAccepted>), ApiError> {
    let book_id = book_id(&book)?;
    let then = upload_chain(&query)?;
    let mut multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType(
            "expected a multipart/form-data body with one `files` field per page".to_owned(),
        )
    })?;
    let _slot = state.upload_slot().ok_or_else(|| ApiError::Busy {
        message: format!(
            "{} uploads are in flight, as many as this server takes at once; nothing was \
             stored, send the upload again",
            state.config().max_uploads_in_flight
        ),
        retry_after: std::time::Duration::from_secs(5),
    })?;
    let books = state.books();
    books.manifest(&book_id).await?;
    if let Some(active) = active_ingest(&state, &book_id).await? {
        return Err(ApiError::JobActive(Box::new(Job::from(&active))));
    }
    let limits = &state.config().ingest_limits;
    // Removed with everything in it when the request ends, however it ends.
    let staging = tempfile::Builder::new()
        .prefix("folio-upload-")
        .tempdir_in(&state.config().staging_dir)
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?;
    let inputs = read_files(&mut multipart, limits, staging.path()).await?;
    let upload = books
        .stage_upload(&book_id, inputs, limits)
        .await
        .map_err(ingest_error)?;
    drop(staging);
    let mut chain = Vec::new();
    if query.ocr.starts_job() {
        chain.push(ChainStep::new(OCR_JOB_TYPE, ocr_payload(None)));
        chain.extend(then);
    }
    let payload = IngestPayload {
        upload: upload.clone(),
        text_layers: if query.ocr == UploadOcr::Force {
            TextLayersChoice::Ignore
        } else {
            TextLayersChoice::Keep
        },
    };
    let payload = serde_json::to_value(&payload)
        .unwrap_or_else(|error| unreachable!("an ingest payload always serializes: {error}"));
    match state
        .lock()
        .acquire_chain(book_id.as_str(), INGEST_JOB_TYPE, payload, chain)
        .await
    {
        Ok(Acquire::Created(job)) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(UploadAccepted {
                upload: (&upload).into(),
                job: Job::from(&job),
            }),
        )),
        // Another upload of the book started its ingest since the check above.
        Ok(Acquire::Busy(active)) => {
            books.delete_upload(&book_id, &upload).await;
            Err(ApiError::JobActive(Box::new(Job::from(&active))))
        }
        Err(error) => {
            books.delete_upload(&book_id, &upload).await;
            Err(error.into())
        }
    }
}

/// The book's active `ingest` job, if any.
async fn active_ingest(
    state: &AppState,
    book_id: &BookId,
) -> Result<Option<jobs_core::Job>, ApiError> {
    let active = state
        .job_store()
        .list(&jobs_core::JobQuery {
            resource_key: Some(book_id.to_string()),
            job_type: Some(INGEST_JOB_TYPE.to_owned()),
            statuses: jobs_core::JobStatus::ACTIVE.to_vec(),
            limit: 1,
            ..jobs_core::JobQuery::default()
        })
        .await?;
    Ok(active.into_iter().next())
}

/// Streams each `files` field of `multipart` into a file of `dir` through a fixed buffer,
/// hashing it on the way, within the request's limits of count and bytes (checked as the
/// bytes arrive). A file over its own limit (`max_pdf_bytes` for a PDF, else
/// `max_file_bytes`) is not written past it, and is refused as `too_large` with the others.
async fn read_files(
    multipart: &mut Multipart,
    limits: &books::IngestLimits,
    dir: &std::path::Path,
) -> Result<Vec<StagedInput>, ApiError> {
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;

    let mut files = Vec::new();
    let mut total_bytes: u64 = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let field_name = field.name().unwrap_or_default().to_owned();
        if field_name != "files" {
            return Err(ApiError::invalid(format!(
                "unexpected form field {field_name:?}: send each page as a `files` field"
            )));
        }
        if files.len() >= limits.max_files {
            return Err(ApiError::PayloadTooLarge(format!(
                "too many files: at most {} per request",
                limits.max_files
            )));
        }
        let name = file_name(&field, files.len())?;
        let path = dir.join(format!("{:04}", files.len()));
        let local = |error: std::io::Error| ApiError::Internal(anyhow::Error::new(error));
        let mut out = tokio::io::BufWriter::with_capacity(
            256 * 1024,
            tokio::fs::File::create(&path).await.map_err(local)?,
        );
        let mut hasher = sha2::Sha256::new();
        let mut bytes: u64 = 0;
        let mut head = Vec::new();
        let mut cap = None;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            total_bytes += chunk.len() as u64;
            if total_bytes > limits.max_request_bytes {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the files are larger than {} bytes together",
                    limits.max_request_bytes
                )));
            }
            if cap.is_none() {
                head.extend_from_slice(&chunk[..chunk.len().min(8 - head.len().min(8))]);
                if head.len() >= 5 || chunk.is_empty() {
                    cap = Some(if head.starts_with(b"%PDF-") {
                        limits.max_pdf_bytes
                    } else {
                        limits.max_file_bytes
                    });
                }
            }
            let room = cap.unwrap_or(u64::MAX).saturating_sub(bytes);
            let keep = &chunk[..chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
            hasher.update(keep);
            out.write_all(keep).await.map_err(local)?;
            bytes += chunk.len() as u64;
        }
        out.flush().await.map_err(local)?;
        let sha256 = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        files.push(StagedInput {
            name,
            path,
            bytes,
            sha256,
        });
    }
    Ok(files)
}

/// The chain of the upload's `ocr` job from `then` (comma-separated; empty or absent: none),
/// or 422 when it is invalid or comes without `ocr=true`: checked before anything is stored.
fn upload_chain(query: &UploadQuery) -> Result<Vec<ChainStep>, ApiError> {
    let Some(text) = query.then.as_deref().filter(|text| !text.is_empty()) else {
        return Ok(Vec::new());
    };
    if !query.ocr.starts_job() {
        return Err(ApiError::invalid(
            "then needs ocr=true or ocr=force: the chain follows the upload's ocr job",
        ));
    }
    let then: Vec<String> = text.split(',').map(|name| name.trim().to_owned()).collect();
    crate::routes::jobs::chain(OCR_JOB_TYPE, &then)
}

/// The field's file name, `file-N` when it has none, or 422 when the name it sends is not
/// UTF-8 (the multipart parser would drop such a name silently).
fn file_name(
    field: &axum::extract::multipart::Field<'_>,
    index: usize,
) -> Result<String, ApiError> {
    if let Some(name) = field.file_name() {
        return Ok(name.to_owned());
    }
    let disposition = field
        .headers()
        .get(axum::http::header::CONTENT_DISPOSITION)
        .map(axum::http::HeaderValue::as_bytes)
        .unwrap_or_default();
    if disposition
        .windows(9)
        .any(|window| window.eq_ignore_ascii_case(b"filename="))
    {
        return Err(ApiError::invalid(format!(
            "the name of file {} is not valid UTF-8",
            index + 1
        )));
    }
    Ok(format!("file-{}", index + 1))
}

fn multipart_error(error: MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the request body is too large".to_owned())
    } else {
        ApiError::BadRequest {
            message: format!("malformed multipart body: {}", error.body_text()),
        }
    }
}

fn ingest_error(error: IngestError) -> ApiError {
    match error {
        IngestError::InvalidFiles { rejected } => ApiError::RejectedFiles(
            rejected
                .into_iter()
                .map(|file| crate::dto::RejectedFile {
                    index: file.index,
                    name: file.name,
                    code: file.reason.code().to_owned(),
                    message: file.reason.to_string(),
                })
                .collect(),
        ),
        IngestError::NoFiles => {
            ApiError::invalid("no files were uploaded: send each page as a `files` field")
        }
        error @ (IngestError::TooManyFiles { .. }
        | IngestError::RequestTooLarge { .. }
        | IngestError::BookFull { .. }) => ApiError::PayloadTooLarge(error.to_string()),
        IngestError::Busy { waited } => ApiError::Busy {
            message: format!(
                "the server is busy decoding other uploads (waited {}s); nothing was stored, \
                 send the upload again",
                waited.as_secs()
            ),
            retry_after: waited.max(std::time::Duration::from_secs(1)),
        },
        IngestError::Books(error) => error.into(),
        error @ IngestError::PdfToolsMissing { .. } => {
            tracing::error!(%error, "a PDF was uploaded and this server cannot read PDFs: install poppler-utils");
            ApiError::Internal(anyhow::Error::new(error))
        }
        error => ApiError::Internal(anyhow::Error::new(error)),
    }
}

fn ocr_payload(pages: Option<Vec<u32>>) -> serde_json::Value {
    serde_json::to_value(OcrPayload { pages })
        .unwrap_or_else(|error| unreachable!("the ocr payload always serializes: {error}"))
}

/// The manifest of a book and one of its pages, or 404.
pub(crate) async fn manifest_page(
    state: &AppState,
    book: &str,
    page: &str,
) -> Result<(BookId, books::Page), ApiError> {
    let book_id = book_id(book)?;
    let number = page_number(page)?;
    let manifest = state.books().manifest(&book_id).await?;
    let page = manifest
        .page(number)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("book {book_id} has no page {number}")))?;
    Ok((book_id, page))
}

/// One page with its OCR status.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages/{page}", tag = "books",
    params(PagePath),
    responses(
        (status = 200, description = "The page", body = Page),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book or page", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_page(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (book_id, page) = manifest_page(&state, &book, &page).await?;
    Ok(conditional::json(
        &headers,
        &Page::new(&book_id, &page),
        false,
    ))
}

/// The page's normalized PNG.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages/{page}/image", tag = "books",
    params(PagePath),
    responses(
        (status = 200, description = "The PNG", content_type = "image/png"),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book or page", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_page_image(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (book_id, page) = manifest_page(&state, &book, &page).await?;
    // The manifest knows the image's digest: a current copy costs no storage read.
    let etag = Etag::quoted(&page.sha256);
    let cache = [(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    )];
    if etag.matches(&headers) {
        return Ok(conditional::not_modified(etag, &cache));
    }
    let key = layout::book_key(&book_id, &page.image);
    let blob = state
        .books()
        .store()
        .get(&key)
        .await
        .map_err(|error| missing_blob(error, &book_id, page.page, "image"))?;
    Ok(conditional::respond(
        &headers,
        etag,
        &cache,
        HeaderValue::from_static("image/png"),
        blob.bytes,
    ))
}

/// The page's preview: a JPEG 200 pixels wide, for page grids. Read without the manifest
/// (a grid asks for hundreds at once); revalidated by its ETag (`If-None-Match` answers
/// 304) and cached for a day.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages/{page}/thumbnail", tag = "books",
    params(PagePath),
    responses(
        (status = 200, description = "The preview", content_type = "image/jpeg"),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book or page, or a page stored before previews existed (its `thumbnail_url` is null; use its image)", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_page_thumbnail(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let book_id = book_id(&book)?;
    let page = page_number(&page)?;
    let key = layout::book_key(&book_id, &layout::page_thumbnail_path(page));
    let blob = match state.books().store().get(&key).await {
        Ok(blob) => blob,
        Err(error) if error.is_not_found() => {
            return Err(ApiError::NotFound(format!(
                "book {book_id} has no preview of page {page}: no such page, or one stored \
                 before previews existed"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    Ok(conditional::respond(
        &headers,
        Etag::quoted(blob.etag.as_str()),
        &[(
            CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=86400"),
        )],
        HeaderValue::from_static("image/jpeg"),
        blob.bytes,
    ))
}

fn missing_blob(error: BlobError, book_id: &BookId, page: u32, what: &str) -> ApiError {
    if error.is_not_found() {
        ApiError::NotFound(format!(
            "the {what} of page {page} of book {book_id} is missing"
        ))
    } else {
        error.into()
    }
}

/// The page's OCR text; 404 while its OCR is not done.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages/{page}/text", tag = "books",
    params(PagePath),
    responses(
        (status = 200, description = "The recognized text", body = String, content_type = "text/plain"),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book or page, or OCR not done", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_page_text(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (book_id, page) = manifest_page(&state, &book, &page).await?;
    let text_path = match (&page.ocr.status, &page.ocr.text) {
        (OcrStatus::Done, Some(path)) => path.clone(),
        (status, _) => {
            let status = match status {
                OcrStatus::Pending => "pending",
                OcrStatus::Done => "done without text",
                OcrStatus::Failed => "failed",
            };
            return Err(ApiError::NotFound(format!(
                "page {} of book {book_id} has no text: its OCR is {status}",
                page.page
            )));
        }
    };
    let blob = state
        .books()
        .store()
        .get(&layout::book_key(&book_id, &text_path))
        .await
        .map_err(|error| missing_blob(error, &book_id, page.page, "text"))?;
    Ok(conditional::respond(
        &headers,
        Etag::of(&blob.bytes),
        &[(CACHE_CONTROL, conditional::REVALIDATE)],
        HeaderValue::from_static("text/plain; charset=utf-8"),
        blob.bytes,
    ))
}

/// The page's hOCR (tesseract's XHTML: every word with its box and confidence); 404 while
/// its OCR is not done, or when its engine gives no hOCR. Served as `text/html` in a
/// sandbox (`Content-Security-Policy: sandbox`), so a browser that opens it runs nothing.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/pages/{page}/hocr", tag = "books",
    params(PagePath),
    responses(
        (status = 200, description = "The hOCR", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current"),
        (status = 404, description = "`not_found`: no such book or page, OCR not done, or no hOCR from its engine", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_page_hocr(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (book_id, page) = manifest_page(&state, &book, &page).await?;
    let path = match (&page.ocr.status, &page.ocr.hocr) {
        (OcrStatus::Done, Some(path)) => path.clone(),
        _ => {
            return Err(ApiError::NotFound(format!(
                "page {} of book {book_id} has no hOCR: its OCR is not done, or its engine \
                 gives none",
                page.page
            )));
        }
    };
    let blob = state
        .books()
        .store()
        .get(&layout::book_key(&book_id, &path))
        .await
        .map_err(|error| missing_blob(error, &book_id, page.page, "hOCR"))?;
    Ok(conditional::respond(
        &headers,
        Etag::of(&blob.bytes),
        &[
            (CACHE_CONTROL, conditional::REVALIDATE),
            (
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox; default-src 'none'"),
            ),
        ],
        HeaderValue::from_static("text/html; charset=utf-8"),
        blob.bytes,
    ))
}

/// Runs OCR again for one page (e.g. a failed one): starts an `ocr` job with payload
/// `{"pages": [page]}`.
#[utoipa::path(
    post, path = "/v1/books/{book_id}/pages/{page}/ocr/retry", tag = "books",
    params(PagePath),
    responses(
        (status = 202, description = "The new ocr job for that page", body = Job),
        (status = 409, description = "`job_active`: an ocr job is active for the book (in `details.job`)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such book or page", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or page number", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn retry_page_ocr(
    State(state): State<AppState>,
    Path((book, page)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    let (book_id, page) = manifest_page(&state, &book, &page).await?;
    match state
        .lock()
        .acquire(
            book_id.as_str(),
            OCR_JOB_TYPE,
            ocr_payload(Some(vec![page.page])),
        )
        .await?
    {
        Acquire::Created(job) => Ok((StatusCode::ACCEPTED, axum::Json(Job::from(&job)))),
        Acquire::Busy(job) => Err(ApiError::JobActive(Box::new(Job::from(&job)))),
    }
}
