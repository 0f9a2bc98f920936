//! The JSON the API speaks. Only this module knows the wire format; it is built from the
//! core types (`jobs_core::Job`, `books::Manifest`) and never the other way round.

use books::{BookId, GuidelinesStatus, Manifest, OcrStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A job (SPEC section 5). `book_id` is the job's resource key, `type` its job type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// The job's id (UUID v7).
    pub id: Uuid,
    /// The book it works on.
    pub book_id: String,
    /// The job type, e.g. `ocr`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Where it is in its life.
    pub status: JobStatus,
    /// Claims so far that counted.
    pub attempt: u32,
    /// Claims that may end in error or a lost heartbeat.
    pub max_attempts: u32,
    /// Item-level progress.
    pub progress: Progress,
    /// Why it failed (or why its last attempt failed, while it waits to run again).
    pub error: Option<JobError>,
    /// The failed or cancelled job this one resumes.
    pub resumed_from: Option<Uuid>,
    /// Whether a cancel was requested while it ran.
    pub cancel_requested: bool,
    /// The worker that holds or last held it.
    pub worker_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its latest claim started.
    pub started_at: Option<DateTime<Utc>>,
    /// The latest heartbeat of its current claim.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its chain: the job types still to run on the book after this one, in order. When it
    /// completes, the first becomes the next job (carrying the rest); a failure or cancel
    /// stops the chain, a resume carries it on.
    pub then: Vec<String>,
    /// The job whose completion started this one (the previous job of its chain).
    pub previous_job_id: Option<Uuid>,
    /// The job its completion started: the one it created, or the job of that type that
    /// was already active on the book (whose `previous_job_id` stays as it was).
    pub next_job_id: Option<Uuid>,
}

/// Status of a job: `pending` and `running` are active; the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Pending,
    /// A worker runs it.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error; can be resumed.
    Failed,
    /// Cancelled; can be resumed.
    Cancelled,
}

impl JobStatus {
    /// Whether no change can follow.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        })
    }
}

impl From<jobs_core::JobStatus> for JobStatus {
    fn from(status: jobs_core::JobStatus) -> Self {
        match status {
            jobs_core::JobStatus::Pending => Self::Pending,
            jobs_core::JobStatus::Running => Self::Running,
            jobs_core::JobStatus::Completed => Self::Completed,
            jobs_core::JobStatus::Failed => Self::Failed,
            jobs_core::JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Item-level progress of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Items in all; null until known.
    pub total: Option<u64>,
    /// Items done.
    pub completed: u64,
    /// Items that failed.
    pub failed: u64,
    /// The item being worked on.
    pub current_item: Option<String>,
    /// The last item done.
    pub last_completed_item: Option<String>,
    /// A short human message.
    pub message: Option<String>,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// A stable code, e.g. `lease_expired`.
    pub code: String,
    /// The original error message.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

impl From<&jobs_core::Job> for Job {
    fn from(job: &jobs_core::Job) -> Self {
        let progress = &job.progress;
        Self {
            id: *job.id.as_uuid(),
            book_id: job.resource_key.clone(),
            job_type: job.job_type.clone(),
            status: job.status.into(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            progress: Progress {
                total: progress.total,
                completed: progress.completed,
                failed: progress.failed,
                current_item: progress.current_item.clone(),
                last_completed_item: progress.last_completed_item.clone(),
                message: progress.message.clone(),
            },
            error: job.error.as_ref().map(|error| JobError {
                code: error.code.clone(),
                message: error.message.clone(),
                retryable: error.retryable,
            }),
            resumed_from: job.resumed_from.map(|id| *id.as_uuid()),
            cancel_requested: job.cancel_requested,
            worker_id: job.worker_id.clone(),
            created_at: job.created_at,
            started_at: job.started_at,
            heartbeat_at: job.heartbeat_at,
            finished_at: job.finished_at,
            then: job.then.iter().map(|step| step.job_type.clone()).collect(),
            previous_job_id: job.previous_job_id.map(|id| *id.as_uuid()),
            next_job_id: job.next_job_id.map(|id| *id.as_uuid()),
        }
    }
}

/// Jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<Job>,
}

/// Body of `POST /v1/books/{book_id}/jobs`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The job type: `ocr`, `guidelines` or `finalize`.
    #[serde(rename = "type")]
    #[schema(schema_with = create_job_type_schema)]
    pub job_type: String,
    /// Continue the latest failed or cancelled job of this type from its checkpoint
    /// instead of starting afresh.
    #[serde(default)]
    pub resume: bool,
    /// A chain: job types to run on the book after this one, each started when the one
    /// before it completes.
    #[schema(schema_with = chain_schema)]
    pub then: Option<Vec<String>>,
}

/// The schema of `CreateJob.type`: one of `BOOK_JOB_TYPES`.
fn create_job_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(crate::routes::BOOK_JOB_TYPES))
        .description(Some("The job type."))
        .build()
}

/// The schema of a chain in a request: job types that may follow another one in the
/// pipeline (every type but the first), each once.
fn chain_schema() -> utoipa::openapi::Array {
    let pipeline = crate::routes::BOOK_JOB_TYPES;
    let followers = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(pipeline[1..].iter().copied()))
        .build();
    utoipa::openapi::ArrayBuilder::new()
        .items(followers)
        .unique_items(true)
        .max_items(Some(pipeline.len() - 1))
        .description(Some(format!(
            "A chain: job types to run on the book after this one, in the pipeline's order \
             ({}): each comes later in that order than the type before it (the first, later \
             than `type`), so none is named twice. Each job starts when the one before it \
             completes, in the same database transaction; a failure or cancel stops the chain \
             and resuming that job resumes it. Preconditions (`ocr_incomplete`, \
             `guidelines_incomplete`) are checked for `type` only: each later job checks its \
             own when it runs. With `resume: true`, `then` replaces the chain of the resumed \
             job (absent, the resumed job keeps its chain). Any other chain is 422 \
             `invalid_request`, before anything is written.",
            pipeline.join(", ")
        )))
        .build()
}

/// Query of `GET /v1/books/{book_id}/jobs`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub job_type: Option<String>,
    /// At most this many (1-500, default 50).
    pub limit: Option<u32>,
}

/// Query of `GET /v1/jobs`: every book's jobs, newest first, a page at a time.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllJobsQuery {
    /// Only jobs in one of these statuses, comma-separated (`failed,cancelled`); any status
    /// when absent or empty.
    #[param(value_type = Option<Vec<JobStatus>>, style = Form, explode = false)]
    pub status: Option<String>,
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = book_job_type_schema)]
    pub job_type: Option<String>,
    /// At most this many jobs in the page (1-500, default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    /// Only jobs older than this one (a job id): the `next_before` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub before: Option<String>,
}

/// The schema of the `type` filter: one of `BOOK_JOB_TYPES`. It carries the description,
/// which a parameter whose schema is built by hand does not get from its doc comment.
fn book_job_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(crate::routes::BOOK_JOB_TYPES))
        .description(Some("Only jobs of this type."))
        .build()
}

/// A page of every book's jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// The `before` of the next page (the id of this page's last job), or null when no older
    /// job matches.
    pub next_before: Option<Uuid>,
}

/// Query of `GET /v1/books/{book_id}/jobs/latest`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestJobQuery {
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub job_type: Option<String>,
}

/// Query of `POST /v1/books/{book_id}/pages`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Start an `ocr` job for the book after the upload.
    #[serde(default)]
    pub ocr: bool,
    /// With `ocr=true`: the chain of the `ocr` job, comma-separated job types in pipeline
    /// order, each started when the one before it completes: `then=guidelines,finalize`
    /// processes the whole book. Without `ocr=true`, or any other value, it is 422
    /// `invalid_request` and nothing is stored.
    #[param(schema_with = upload_chain_schema)]
    pub then: Option<String>,
}

/// The schema of the upload's `then`: every chain an `ocr` job may carry, comma-separated.
fn upload_chain_schema() -> utoipa::openapi::Object {
    let followers = &crate::routes::BOOK_JOB_TYPES[1..];
    // Every non-empty ordered selection of the types after `ocr`.
    let chains: Vec<String> = (1..1u32 << followers.len())
        .map(|mask| {
            followers
                .iter()
                .enumerate()
                .filter(|(index, _)| mask & (1 << index) != 0)
                .map(|(_, job_type)| *job_type)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(chains))
        .description(Some(
            "With `ocr=true`: the chain of the `ocr` job, comma-separated job types in \
             pipeline order, each started when the one before it completes: \
             `then=guidelines,finalize` processes the whole book. Needs `ocr=true` (else 422 \
             `invalid_request`, and nothing is stored).",
        ))
        .build()
}

/// Body of `POST /v1/books`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBook {
    /// The book id: 1-64 chars of `[a-z0-9_-]`, starting with a letter or digit. Made
    /// from the title when absent.
    pub id: Option<String>,
    /// The title (1-500 characters).
    pub title: String,
}

/// A book's manifest (SPEC 3.3) as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Book {
    /// Version of the stored manifest schema.
    pub schema_version: u32,
    /// The book id.
    pub book_id: String,
    /// The title.
    pub title: String,
    /// When the book was created.
    pub created_at: DateTime<Utc>,
    /// When the manifest last changed.
    pub updated_at: DateTime<Utc>,
    /// The pages, by number.
    pub pages: Vec<Page>,
    /// Guidelines progress.
    pub guidelines: Guidelines,
}

impl From<&Manifest> for Book {
    fn from(manifest: &Manifest) -> Self {
        Self {
            schema_version: manifest.schema_version,
            book_id: manifest.book_id.to_string(),
            title: manifest.title.clone(),
            created_at: manifest.created_at,
            updated_at: manifest.updated_at,
            pages: manifest
                .pages
                .iter()
                .map(|page| Page::new(&manifest.book_id, page))
                .collect(),
            guidelines: Guidelines {
                status: GuidelinesState::from(manifest.guidelines.status),
                pages_done: manifest.guidelines.pages_done,
                final_path: manifest.guidelines.final_path.clone(),
            },
        }
    }
}

/// Guidelines progress of a book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Guidelines {
    /// Where the book is.
    pub status: GuidelinesState,
    /// Pages whose guidelines are extracted.
    pub pages_done: u32,
    /// The finalized guidelines, relative to the book, once final.
    #[serde(rename = "final")]
    pub final_path: Option<String>,
}

/// Guidelines status of a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuidelinesState {
    /// Nothing extracted.
    None,
    /// Extraction running.
    Extracting,
    /// Every page extracted.
    Extracted,
    /// Finalized.
    Final,
}

impl From<GuidelinesStatus> for GuidelinesState {
    fn from(status: GuidelinesStatus) -> Self {
        match status {
            GuidelinesStatus::None => Self::None,
            GuidelinesStatus::Extracting => Self::Extracting,
            GuidelinesStatus::Extracted => Self::Extracted,
            GuidelinesStatus::Final => Self::Final,
        }
    }
}

/// One page with its OCR status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page {
    /// The page number, from 1, in upload order.
    pub page: u32,
    /// The stored PNG, relative to the book (`pages/0001.png`).
    pub image: String,
    /// Where to fetch the PNG.
    pub image_url: String,
    /// The uploaded file name.
    pub source_name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size of the PNG in bytes.
    pub bytes: u64,
    /// SHA-256 of the PNG, lowercase hex.
    pub sha256: String,
    /// OCR state.
    pub ocr: PageOcr,
}

impl Page {
    /// The API view of a manifest page.
    pub fn new(book_id: &BookId, page: &books::Page) -> Self {
        let ocr = &page.ocr;
        Self {
            page: page.page,
            image: page.image.clone(),
            image_url: format!("/v1/books/{book_id}/pages/{}/image", page.page),
            source_name: page.source_name.clone(),
            width: page.width,
            height: page.height,
            bytes: page.bytes,
            sha256: page.sha256.clone(),
            ocr: PageOcr {
                status: match ocr.status {
                    OcrStatus::Pending => PageOcrStatus::Pending,
                    OcrStatus::Done => PageOcrStatus::Done,
                    OcrStatus::Failed => PageOcrStatus::Failed,
                },
                text_url: (ocr.status == OcrStatus::Done)
                    .then(|| format!("/v1/books/{book_id}/pages/{}/text", page.page)),
                engine: ocr.engine.clone(),
                chars: ocr.chars,
                attempts: ocr.attempts,
                error: ocr.error.clone(),
                updated_at: ocr.updated_at,
            },
        }
    }
}

/// OCR state of one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PageOcr {
    /// Where the page is.
    pub status: PageOcrStatus,
    /// Where to fetch the text, once done.
    pub text_url: Option<String>,
    /// The engine that produced the text.
    pub engine: Option<String>,
    /// Characters recognized.
    pub chars: Option<u64>,
    /// Recognition attempts so far.
    pub attempts: u32,
    /// The last error, when failed.
    pub error: Option<String>,
    /// When this state last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

/// OCR status of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PageOcrStatus {
    /// Not recognized yet.
    Pending,
    /// Text recognized and stored.
    Done,
    /// Recognition failed; see `error`.
    Failed,
}

/// A book in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BookSummary {
    /// The book id.
    pub book_id: String,
    /// The title.
    pub title: String,
    /// Number of pages.
    pub pages: usize,
    /// Pages whose OCR is done.
    pub pages_ocr_done: usize,
    /// Pages whose OCR failed (see each page's `ocr.error` in the book).
    pub pages_ocr_failed: usize,
    /// Where the book's guidelines are.
    pub guidelines_status: GuidelinesState,
    /// Pages whose guidelines are extracted.
    pub guidelines_pages_done: u32,
    /// When the book was created.
    pub created_at: DateTime<Utc>,
    /// When the manifest last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Manifest> for BookSummary {
    fn from(manifest: &Manifest) -> Self {
        Self {
            book_id: manifest.book_id.to_string(),
            title: manifest.title.clone(),
            pages: manifest.pages.len(),
            pages_ocr_done: manifest
                .pages
                .iter()
                .filter(|page| page.ocr.status == OcrStatus::Done)
                .count(),
            pages_ocr_failed: manifest
                .pages
                .iter()
                .filter(|page| page.ocr.status == OcrStatus::Failed)
                .count(),
            guidelines_status: GuidelinesState::from(manifest.guidelines.status),
            guidelines_pages_done: manifest.guidelines.pages_done,
            created_at: manifest.created_at,
            updated_at: manifest.updated_at,
        }
    }
}

/// Every book, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BookList {
    /// The books.
    pub books: Vec<BookSummary>,
}

/// Answer of a page upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadedPages {
    /// The new pages, in upload order.
    pub pages: Vec<Page>,
    /// With `?ocr=true`: the `ocr` job that will recognize them (a new one, or the one
    /// already active for the book); else null.
    pub job: Option<Job>,
    /// With `?ocr=true`: whether `job` was created by this request (false when an `ocr`
    /// job was already active).
    pub job_created: bool,
}

/// One rejected file of an upload (in `error.details.rejected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RejectedFile {
    /// Position in the request, from 0.
    pub index: usize,
    /// The client's file name.
    pub name: String,
    /// `unsupported_format`, `corrupt`, `too_large` or `too_many_pixels`.
    pub code: String,
    /// Why, for people.
    pub message: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`: 200 when the database and the storage answer, else 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The job database.
    pub database: Check,
    /// The object storage.
    pub storage: Check,
    /// Workers seen within `stale_after`; null when the database does not answer.
    pub live_workers: Option<usize>,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// Whether it answered.
    pub ok: bool,
    /// What failed, in general terms.
    pub error: Option<String>,
}

/// What a guideline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuidelineKind {
    /// Something to always or never do.
    Rule,
    /// One step of a procedure.
    Step,
    /// Advice, a note.
    Tip,
    /// What a term means.
    Definition,
    /// A worked example.
    Example,
}

impl From<extraction::GuidelineKind> for GuidelineKind {
    fn from(kind: extraction::GuidelineKind) -> Self {
        match kind {
            extraction::GuidelineKind::Rule => Self::Rule,
            extraction::GuidelineKind::Step => Self::Step,
            extraction::GuidelineKind::Tip => Self::Tip,
            extraction::GuidelineKind::Definition => Self::Definition,
            extraction::GuidelineKind::Example => Self::Example,
        }
    }
}

/// The guidelines extracted from one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PageGuidelines {
    /// The page number.
    pub page: u32,
    /// The page's topics, in page order.
    pub topics: Vec<PageTopic>,
}

/// A topic of one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PageTopic {
    /// The heading as written.
    pub title: String,
    /// Its guidelines, in page order.
    pub guidelines: Vec<PageGuideline>,
}

/// One guideline of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PageGuideline {
    /// Its kind.
    pub kind: GuidelineKind,
    /// Its text.
    pub text: String,
}

impl From<&extraction::PageGuidelines> for PageGuidelines {
    fn from(page: &extraction::PageGuidelines) -> Self {
        Self {
            page: page.page,
            topics: page
                .topics
                .iter()
                .map(|topic| PageTopic {
                    title: topic.title.clone(),
                    guidelines: topic
                        .guidelines
                        .iter()
                        .map(|guideline| PageGuideline {
                            kind: guideline.kind.into(),
                            text: guideline.text.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The finalized guidelines of a book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FinalGuidelines {
    /// The book.
    pub book_id: String,
    /// Topics merged by normalized title, in order of first appearance.
    pub topics: Vec<FinalTopic>,
}

/// One topic of the finalized guidelines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FinalTopic {
    /// The title as first seen.
    pub title: String,
    /// The pages it appears on, ascending.
    pub pages: Vec<u32>,
    /// Its guidelines, near-duplicates merged, in order of first appearance.
    pub guidelines: Vec<FinalGuideline>,
}

/// One guideline of the finalized guidelines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FinalGuideline {
    /// Its kind.
    pub kind: GuidelineKind,
    /// Its text.
    pub text: String,
    /// Every page it (or a near-duplicate) came from, ascending.
    pub pages: Vec<u32>,
}

impl From<&extraction::FinalGuidelines> for FinalGuidelines {
    fn from(document: &extraction::FinalGuidelines) -> Self {
        Self {
            book_id: document.book_id.clone(),
            topics: document
                .topics
                .iter()
                .map(|topic| FinalTopic {
                    title: topic.title.clone(),
                    pages: topic.pages.clone(),
                    guidelines: topic
                        .guidelines
                        .iter()
                        .map(|guideline| FinalGuideline {
                            kind: guideline.kind.into(),
                            text: guideline.text.clone(),
                            pages: guideline.pages.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
