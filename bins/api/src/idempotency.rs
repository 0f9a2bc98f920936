//! `Idempotency-Key` on every POST: a client that sends a request again (a retry after a
//! timeout or a dropped connection) with the same key gets the first answer, and nothing
//! is done twice.
//!
//! The request's body is read whole first (to a temporary file past [`IN_MEMORY`], so an
//! upload's memory stays bounded) and its SHA-256 taken (of a multipart form, of its
//! fields: a client that sends a form again draws a new boundary); the key is claimed in
//! the job store's database ([`jobs_core::keys`]) for the method, path and query and that
//! digest:
//! - new: the request runs, and its answer is kept with the key, unless a repeat could be
//!   answered otherwise (408, 409, 413, 429, 5xx: the key is let go);
//! - the same request answered before: that answer again, with `Idempotency-Replayed:
//!   true`, without running anything;
//! - the same request still running: 409 `idempotency_in_flight` with `Retry-After`;
//! - another request under the key: 422 `idempotency_mismatch`.
//!
//! Keys are kept [`KEEP`] (24 h) from their claim; a claim older than its route's timeout
//! plus [`STALE_MARGIN`] belongs to a process that died, and a repeat takes it over.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use jobs_core::{KeptAnswer, KeyClaim, KeyedRequest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::state::AppState;

/// The request header.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// On a kept answer sent again.
pub(crate) const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");
/// How long a key is kept from its claim.
pub(crate) const KEEP: Duration = Duration::from_secs(24 * 60 * 60);
/// Added to a route's timeout before a claim without an answer counts as abandoned.
const STALE_MARGIN: Duration = Duration::from_secs(60);
/// A body up to this size is read into memory; a bigger one into a temporary file.
const IN_MEMORY: usize = 1024 * 1024;
/// The largest answer kept (the API's POST answers are small JSON documents).
const MAX_KEPT_ANSWER: u64 = 1024 * 1024;

/// What a route's POSTs may send and how long they may run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The route's body limit.
    pub(crate) body: usize,
    /// The route's request timeout.
    pub(crate) timeout: Duration,
}

/// The middleware (see the module's doc).
pub(crate) async fn idempotent(
    State((state, limits)): State<(AppState, Limits)>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(&HEADER) else {
        return next.run(request).await;
    };
    let key = match valid_key(value) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let line = format!(
        "POST {}",
        request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
    );
    let (parts, body) = request.into_parts();
    let read = match ReadBody::read(body, limits.body).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let fingerprint = read.fingerprint(parts.headers.get(CONTENT_TYPE)).await;
    let claim = uuid::Uuid::new_v4().to_string();
    let keyed = KeyedRequest {
        key: &key,
        request: &line,
        fingerprint: &fingerprint,
        claim: &claim,
    };
    let now = state.clock().now();
    let stale =
        chrono::Duration::from_std(limits.timeout + STALE_MARGIN).unwrap_or(chrono::Duration::MAX);
    let store = state.job_store();
    match store.claim_key(&keyed, now, now - stale).await {
        Err(error) => ApiError::from(error).into_response(),
        Ok(KeyClaim::Running) => ApiError::IdempotencyInFlight.into_response(),
        Ok(KeyClaim::Mismatch) => ApiError::IdempotencyMismatch.into_response(),
        Ok(KeyClaim::Answered(answer)) => replay(answer),
        Ok(KeyClaim::Claimed) => {
            let body = match read.body().await {
                Ok(body) => body,
                Err(error) => {
                    let _ = store.release_key(&key, &claim).await;
                    return ApiError::Internal(error.into()).into_response();
                }
            };
            let response = next.run(Request::from_parts(parts, body)).await;
            keep(&state, &key, &claim, response).await
        }
    }
}

/// The key of the header: 1 to 255 visible ASCII characters.
fn valid_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID, say)",
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Keeps `response` as the key's answer when a repeat should get it, else lets the key go;
/// the response either way.
async fn keep(state: &AppState, key: &str, claim: &str, response: Response) -> Response {
    let store = state.job_store();
    let status = response.status();
    let small = http_body::Body::size_hint(response.body())
        .upper()
        .is_some_and(|upper| upper <= MAX_KEPT_ANSWER);
    if !kept(status) || !small {
        let _ = store.release_key(key, claim).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_KEPT_ANSWER as usize).await else {
        let _ = store.release_key(key, claim).await;
        return ApiError::Internal(anyhow::anyhow!("reading an answer to keep it")).into_response();
    };
    let answer = KeptAnswer {
        status: status.as_u16(),
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
        body: bytes.to_vec(),
    };
    if let Err(error) = store.answer_key(key, claim, &answer).await {
        // The request ran: its answer still goes out, and a repeat runs it again.
        tracing::warn!(%error, key, "could not keep the answer of an idempotent request");
        let _ = store.release_key(key, claim).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether a repeat of a request answered `status` should get the same answer: not when
/// it may be answered otherwise (timeouts, conflicts with something that ends, limits,
/// server errors).
fn kept(status: StatusCode) -> bool {
    !(status.is_server_error()
        || [
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::CONFLICT,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::TOO_MANY_REQUESTS,
        ]
        .contains(&status))
}

/// A kept answer, sent again.
fn replay(answer: KeptAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let content_type = HeaderValue::from_str(&answer.content_type)
        .unwrap_or(HeaderValue::from_static("application/json"));
    (
        status,
        [
            (CONTENT_TYPE, content_type),
            (REPLAYED, HeaderValue::from_static("true")),
        ],
        answer.body,
    )
        .into_response()
}

/// A request body read whole, with its digest: in memory, or in a temporary file.
struct ReadBody {
    digest: String,
    held: Held,
}

enum Held {
    Memory(Bytes),
    File(Arc<tempfile::TempPath>),
}

impl ReadBody {
    /// Reads `body` up to `limit` bytes (413 past it; a body cut short is the error the
    /// body gave, a 408 when the route's timeout ended it).
    async fn read(body: Body, limit: usize) -> Result<Self, ApiError> {
        let mut hasher = Sha256::new();
        let mut memory: Vec<u8> = Vec::new();
        let mut file: Option<(tokio::fs::File, tempfile::TempPath)> = None;
        let mut total = 0_usize;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| ApiError::BadRequest {
                message: format!("the request body could not be read: {error}"),
            })?;
            total = total.saturating_add(chunk.len());
            if total > limit {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the request body is larger than {limit} bytes"
                )));
            }
            hasher.update(&chunk);
            if file.is_none() && memory.len() + chunk.len() > IN_MEMORY {
                let path = tempfile::NamedTempFile::new()
                    .map_err(spool_error)?
                    .into_temp_path();
                let mut opened = tokio::fs::File::create(&path).await.map_err(spool_error)?;
                opened.write_all(&memory).await.map_err(spool_error)?;
                memory = Vec::new();
                file = Some((opened, path));
            }
            match &mut file {
                Some((opened, _)) => opened.write_all(&chunk).await.map_err(spool_error)?,
                None => memory.extend_from_slice(&chunk),
            }
        }
        let held = match file {
            Some((mut opened, path)) => {
                opened.flush().await.map_err(spool_error)?;
                Held::File(Arc::new(path))
            }
            None => Held::Memory(Bytes::from(memory)),
        };
        Ok(Self {
            digest: hex(&hasher.finalize()),
            held,
        })
    }

    /// The body again (for the route, or to read its parts); a file is deleted when the
    /// last of these bodies and `self` are dropped.
    async fn body(&self) -> io::Result<Body> {
        match &self.held {
            Held::Memory(bytes) => Ok(Body::from(bytes.clone())),
            Held::File(path) => {
                let file = tokio::fs::File::open(path.as_ref()).await?;
                let path = path.clone();
                let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
                    let _held = &path;
                    chunk
                });
                Ok(Body::from_stream(stream))
            }
        }
    }

    /// What makes two requests the same: a multipart form's fields (names, file names,
    /// contents), whatever boundary each sending drew, else the body's bytes.
    async fn fingerprint(&self, content_type: Option<&HeaderValue>) -> String {
        let boundary = content_type
            .and_then(|value| value.to_str().ok())
            .and_then(|value| multer::parse_boundary(value).ok());
        let Some(boundary) = boundary else {
            return self.digest.clone();
        };
        // A form that does not parse is refused by its route; its bytes name it here.
        match self.fields_digest(boundary).await {
            Ok(digest) => digest,
            Err(_) => self.digest.clone(),
        }
    }

    async fn fields_digest(&self, boundary: String) -> anyhow::Result<String> {
        let mut form = multer::Multipart::new(self.body().await?.into_data_stream(), boundary);
        let mut hasher = Sha256::new();
        hasher.update(b"multipart/form-data\0");
        while let Some(mut field) = form.next_field().await? {
            for text in [field.name(), field.file_name()] {
                let text = text.unwrap_or_default();
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            let mut content = Sha256::new();
            let mut length = 0_u64;
            while let Some(chunk) = field.chunk().await? {
                length += chunk.len() as u64;
                content.update(&chunk);
            }
            hasher.update(length.to_be_bytes());
            hasher.update(content.finalize());
        }
        Ok(hex(&hasher.finalize()))
    }
}

fn spool_error(error: io::Error) -> ApiError {
    ApiError::Internal(anyhow::Error::new(error).context("keeping a request body to hash it"))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Deletes keys older than [`KEEP`] every hour until `shutdown`.
pub(crate) fn spawn_key_purge(
    store: Arc<dyn jobs_core::JobStore>,
    clock: Arc<dyn jobs_core::Clock>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let keep = chrono::Duration::from_std(KEEP).unwrap_or(chrono::Duration::MAX);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60 * 60));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match store.delete_keys(clock.now() - keep).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, "idempotency keys past their 24 hours deleted")
                }
                Err(error) => tracing::warn!(%error, "deleting old idempotency keys failed"),
            }
        }
    })
}
