//! Jobs of a book: start (or resume), list, latest; every book's jobs, a page at a time; one
//! job: get, events, cancel, resume.

use app::jobs::{self, ChainError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use books::{BookId, Manifest};
use extraction::{FINALIZE_JOB_TYPE, GUIDELINES_JOB_TYPE};
use jobs_core::{Acquire, ChainStep, JobId, JobQuery, JobStatus, LockError, StoreError};
use serde_json::json;

use crate::dto::{
    AllJobsQuery, BookPath, CreateJob, Job, JobEvent, JobList, JobListQuery, JobPage, JobPath,
    LatestJobQuery,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query, book_id, job_id};
use crate::state::AppState;

/// Default and largest `limit` of a job listing.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// A listing's `limit`: the default when absent, else 1 to [`MAX_LIMIT`], or 422.
fn listing_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// How far back `resume: true` looks for a failed or cancelled job.
const RESUME_LOOKBACK: u32 = 100;

fn accepted(job: &jobs_core::Job) -> (StatusCode, axum::Json<Job>) {
    (StatusCode::ACCEPTED, axum::Json(Job::from(job)))
}

fn created_or_active(acquire: Acquire) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    match acquire {
        Acquire::Created(job) => Ok(accepted(&job)),
        Acquire::Busy(job) => Err(ApiError::JobActive(Box::new(Job::from(&job)))),
    }
}

/// `text` as a job type a client may start on a book, or 422 naming the known ones.
fn job_type(text: &str) -> Result<&'static str, ApiError> {
    jobs::pipeline_step(text).ok_or_else(|| unknown_type(text))
}

fn unknown_type(text: &str) -> ApiError {
    ApiError::Invalid {
        message: ChainError::UnknownType(text.to_owned()).to_string(),
        details: Some(json!({ "known_types": jobs::PIPELINE })),
    }
}

/// The chain of a job of type `first`: the steps of `then` (empty: no chain), or 422 when
/// the registry's rule ([`app::jobs::chain`]) refuses it: a type is unknown, named twice
/// (`first` included), or out of the pipeline's order.
pub(crate) fn chain(first: &str, then: &[String]) -> Result<Vec<ChainStep>, ApiError> {
    match jobs::chain(first, then) {
        Ok(steps) => Ok(steps
            .into_iter()
            .map(|job_type| ChainStep::new(job_type, json!({})))
            .collect()),
        Err(ChainError::UnknownType(text)) => Err(unknown_type(&text)),
        Err(error) => Err(ApiError::Invalid {
            message: error.to_string(),
            details: Some(json!({ "then": then, "pipeline": jobs::PIPELINE })),
        }),
    }
}

/// Starts a job on a book, or with `resume: true` continues the latest failed or
/// cancelled job of that type from its checkpoint. With `then`, the job carries a chain:
/// the jobs to start, one after the other, when it completes.
#[utoipa::path(
    post, path = "/v1/books/{book_id}/jobs", tag = "jobs",
    params(BookPath),
    request_body = CreateJob,
    responses(
        (status = 202, description = "The new pending job", body = Job),
        (status = 409, description = "`job_active`: a job of this type is active (in `details.job`); `job_not_resumable`: nothing to resume; `ocr_incomplete` (guidelines) or `guidelines_incomplete` (finalize): the book is not ready, `details.pages` lists the pages that are not", body = ErrorBody),
        (status = 404, description = "`not_found`: no such book", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id, unknown type, or an invalid chain (`then`: an unknown type, a type named twice, or out of the pipeline's order)", body = ErrorBody),
        (status = 400, description = "`invalid_request`: malformed JSON", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not JSON", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn create_book_job(
    State(state): State<AppState>,
    Path(book): Path<String>,
    Json(request): Json<CreateJob>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    let book_id = book_id(&book)?;
    let job_type = job_type(&request.job_type)?;
    let then = request
        .then
        .as_deref()
        .map(|then| chain(job_type, then))
        .transpose()?;
    let manifest = state.books().manifest(&book_id).await?;
    // The first job's preconditions only: each later job checks its own when it runs.
    check_preconditions(&state, &manifest, job_type).await?;
    if !request.resume {
        let acquire = state
            .lock()
            .acquire_chain(
                book_id.as_str(),
                job_type,
                json!({}),
                then.unwrap_or_default(),
            )
            .await?;
        return created_or_active(acquire);
    }
    let recent = state
        .job_store()
        .list(&JobQuery {
            resource_key: Some(book_id.to_string()),
            job_type: Some(job_type.to_owned()),
            limit: RESUME_LOOKBACK,
            ..JobQuery::default()
        })
        .await?;
    if let Some(active) = recent.iter().find(|job| job.status.is_active()) {
        return Err(ApiError::JobActive(Box::new(Job::from(active))));
    }
    let Some(previous) = recent
        .iter()
        .find(|job| matches!(job.status, JobStatus::Failed | JobStatus::Cancelled))
    else {
        return Err(ApiError::JobNotResumable {
            message: format!("book {book_id} has no failed or cancelled {job_type} job to resume"),
            job: None,
        });
    };
    resume(&state, previous.id, then).await
}

/// What a job type needs of its book before it can start: `guidelines` every page's OCR
/// done (else `ocr_incomplete`), `finalize` every page's guidelines (else
/// `guidelines_incomplete`), each with the pages in `details.pages`. The job checks the
/// same again when it runs.
async fn check_preconditions(
    state: &AppState,
    manifest: &Manifest,
    job_type: &str,
) -> Result<(), ApiError> {
    match job_type {
        GUIDELINES_JOB_TYPE => {
            let pages = extraction::pages_without_ocr(manifest);
            if !pages.is_empty() || manifest.pages.is_empty() {
                return Err(ApiError::OcrIncomplete(pages));
            }
        }
        FINALIZE_JOB_TYPE => {
            let pages = extraction::pages_without_guidelines(state.books(), manifest).await?;
            if !pages.is_empty() || manifest.pages.is_empty() {
                return Err(ApiError::GuidelinesIncomplete(pages));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Resumes job `id`, with `then` as its chain instead of the old one's when given.
async fn resume(
    state: &AppState,
    id: JobId,
    then: Option<Vec<ChainStep>>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    if let Ok(job) = state.job_store().get(id).await
        && let Ok(book_id) = BookId::parse(&job.resource_key)
        && let Ok(manifest) = state.books().manifest(&book_id).await
    {
        check_preconditions(state, &manifest, &job.job_type).await?;
    }
    let resumed = match then {
        Some(then) => state.lock().resume_with_chain(id, then).await,
        None => state.lock().resume(id).await,
    };
    match resumed {
        Ok(acquire) => created_or_active(acquire),
        Err(LockError::NotResumable { id, status }) => {
            let job = state.job_store().get(id).await.ok();
            Err(ApiError::JobNotResumable {
                message: format!(
                    "job {id} is {status}: only failed or cancelled jobs can be resumed"
                ),
                job: job.map(|job| Box::new(Job::from(&job))),
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// A book's jobs, newest first.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/jobs", tag = "jobs",
    params(BookPath, JobListQuery),
    responses(
        (status = 200, description = "The jobs, newest first", body = JobList),
        (status = 404, description = "`not_found`: no such book", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id, unknown type or limit out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn list_book_jobs(
    State(state): State<AppState>,
    Path(book): Path<String>,
    Query(query): Query<JobListQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let book_id = book_id(&book)?;
    let job_type = query.job_type.as_deref().map(job_type).transpose()?;
    let limit = listing_limit(query.limit)?;
    state.books().manifest(&book_id).await?;
    let jobs = state
        .job_store()
        .list(&JobQuery {
            resource_key: Some(book_id.to_string()),
            job_type: job_type.map(str::to_owned),
            limit,
            ..JobQuery::default()
        })
        .await?;
    Ok(axum::Json(JobList {
        jobs: jobs.iter().map(Job::from).collect(),
    }))
}

/// The statuses of a comma-separated `status` parameter (none when it is absent), or 422
/// for an unknown or empty one.
fn job_statuses(text: Option<&str>) -> Result<Vec<JobStatus>, ApiError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|name| {
            name.trim()
                .parse::<JobStatus>()
                .map_err(|_| ApiError::Invalid {
                    message: format!(
                        "unknown job status {:?}: known statuses are {}",
                        name.chars().take(100).collect::<String>(),
                        JobStatus::ALL.map(JobStatus::as_str).join(", ")
                    ),
                    details: Some(
                        json!({ "known_statuses": JobStatus::ALL.map(JobStatus::as_str) }),
                    ),
                })
        })
        .collect()
}

/// Every book's jobs, newest first, a page at a time: pass a page's `next_before` as
/// `before` to get the next one.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(AllJobsQuery),
    responses(
        (status = 200, description = "A page of jobs, newest first, and where the next page starts", body = JobPage),
        (status = 422, description = "`invalid_request`: unknown status or type, limit out of range, or `before` not a UUID", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<AllJobsQuery>,
) -> Result<axum::Json<JobPage>, ApiError> {
    let statuses = job_statuses(query.status.as_deref())?;
    let job_type = query.job_type.as_deref().map(job_type).transpose()?;
    let limit = listing_limit(query.limit)?;
    let before = match query.before.as_deref() {
        Some(text) => Some(text.parse::<JobId>().map_err(|_| {
            ApiError::invalid(format!(
                "invalid before {:?}: expected a job id (a UUID)",
                text.chars().take(100).collect::<String>()
            ))
        })?),
        None => None,
    };
    // One job more than the page tells whether an older one follows.
    let mut jobs = state
        .job_store()
        .list(&JobQuery {
            job_type: job_type.map(str::to_owned),
            statuses,
            before,
            limit: limit + 1,
            ..JobQuery::default()
        })
        .await?;
    let page_size = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_before = if jobs.len() > page_size {
        jobs.truncate(page_size);
        jobs.last().map(|job| *job.id.as_uuid())
    } else {
        None
    };
    Ok(axum::Json(JobPage {
        jobs: jobs.iter().map(Job::from).collect(),
        next_before,
    }))
}

/// The newest job of a book (of one type with `?type=`), or `null` when it has none.
#[utoipa::path(
    get, path = "/v1/books/{book_id}/jobs/latest", tag = "jobs",
    params(BookPath, LatestJobQuery),
    responses(
        (status = 200, description = "The newest job, or null", body = Option<Job>),
        (status = 404, description = "`not_found`: no such book", body = ErrorBody),
        (status = 422, description = "`invalid_request`: bad book id or unknown type", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn latest_book_job(
    State(state): State<AppState>,
    Path(book): Path<String>,
    Query(query): Query<LatestJobQuery>,
) -> Result<axum::Json<Option<Job>>, ApiError> {
    let book_id = book_id(&book)?;
    let job_type = query.job_type.as_deref().map(job_type).transpose()?;
    state.books().manifest(&book_id).await?;
    let jobs = state
        .job_store()
        .list(&JobQuery {
            resource_key: Some(book_id.to_string()),
            job_type: job_type.map(str::to_owned),
            limit: 1,
            ..JobQuery::default()
        })
        .await?;
    Ok(axum::Json(jobs.first().map(Job::from)))
}

/// One job, whatever its book. A finished job is deleted after the worker's
/// `--job-retention` (30 days by default); it is 404 then.
#[utoipa::path(
    get, path = "/v1/jobs/{job_id}", tag = "jobs",
    params(JobPath),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not a UUID", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<axum::Json<Job>, ApiError> {
    let id = job_id(&job)?;
    let job = state.job_store().get(id).await?;
    Ok(axum::Json(Job::from(&job)))
}

/// Server-sent events: one `job` event (the job's JSON) per change, the first at once;
/// the stream ends after the event with a terminal status, or after the server's stream
/// lifetime: reconnect then with `Last-Event-ID` (EventSource does) to miss nothing.
#[utoipa::path(
    get, path = "/v1/jobs/{job_id}/events", tag = "jobs",
    params(JobPath),
    responses(
        (status = 200, description = "`text/event-stream` of `job` events whose data is the job's JSON", body = JobEvent, content_type = "text/event-stream"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`server_busy`: the server holds its most event streams; `Retry-After` says when to try again", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not a UUID", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn job_events(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let id = job_id(&job)?;
    let Some(slot) = state.event_stream_slot() else {
        return Err(ApiError::Busy {
            message: format!(
                "{} event streams are open, the most this server holds: try again later, or \
                 poll GET /v1/jobs/{{job_id}}",
                state.config().max_event_streams
            ),
            retry_after: std::time::Duration::from_secs(5),
        });
    };
    let feed = state.feeds().follow(id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let keep_alive = state.config().event_keep_alive;
    let stream = crate::events::job_events(state, feed, last_event_id, slot);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// Cancels a job: a pending one at once, a running one at its next safe point.
#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/cancel", tag = "jobs",
    params(JobPath),
    responses(
        (status = 202, description = "The job, cancelled or with `cancel_requested`", body = Job),
        (status = 409, description = "`job_terminal`: it has finished (in `details.job`)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not a UUID", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    let id = job_id(&job)?;
    match state.lock().cancel(id).await {
        Ok(job) => Ok(accepted(&job)),
        Err(StoreError::IllegalTransition { id, .. }) => {
            let job = state.job_store().get(id).await?;
            Err(ApiError::JobTerminal(Box::new(Job::from(&job))))
        }
        Err(error) => Err(error.into()),
    }
}

/// Resumes a failed or cancelled job: a new job with the same type, book, payload and chain
/// that continues from its checkpoint.
#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/resume", tag = "jobs",
    params(JobPath),
    responses(
        (status = 202, description = "The new pending job (`resumed_from` is the old one)", body = Job),
        (status = 409, description = "`job_not_resumable`: it is not failed or cancelled; `job_active`: another job of its type is active (in `details.job`); `ocr_incomplete` or `guidelines_incomplete`: the book is not ready (`details.pages`)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not a UUID", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn resume_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    let id = job_id(&job)?;
    resume(&state, id, None).await
}
