//! The JSON the API speaks. Only this module knows the wire format; it is built from the
//! core types (`jobs_core::Job`, `books::Manifest`) and never the other way round.

use books::{BookId, GuidelinesStatus, Manifest, OcrStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder,
    Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Path parameters. Handlers take them as text and validate them (`crate::extract`) before
// any storage call; these types only document them, with every rule the validation
// enforces, so a client (or a schema fuzzer) that follows the document is never refused.

/// A book id as `books::BookId::parse` accepts it: 1-64 characters of `a-z`, `0-9`, `_` and
/// `-`, starting with a letter or a digit.
pub const BOOK_ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// The longest book id.
const BOOK_ID_MAX_CHARS: usize = 64;

/// The schema of a book id.
fn book_id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(BOOK_ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(BOOK_ID_MAX_CHARS))
}

fn path_parameter(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn book_id_parameter() -> Parameter {
    path_parameter(
        "book_id",
        "The book id: 1-64 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter or \
         a digit (else 422 `invalid_request`).",
        book_id_schema(),
    )
}

/// Path of the routes of one book: `{book_id}`.
#[derive(Debug, Clone, Copy)]
pub struct BookPath;

impl IntoParams for BookPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![book_id_parameter()]
    }
}

/// Path of the routes of one page: `{book_id}` and `{page}`.
#[derive(Debug, Clone, Copy)]
pub struct PagePath;

impl IntoParams for PagePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        // `crate::extract::page_number`: a `u32` from 1.
        let page = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(u32::MAX));
        vec![
            book_id_parameter(),
            path_parameter(
                "page",
                "The page number, from 1 (else 422 `invalid_request`).",
                page,
            ),
        ]
    }
}

/// Path of the routes of one job: `{job_id}`.
#[derive(Debug, Clone, Copy)]
pub struct JobPath;

impl IntoParams for JobPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let id = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
        vec![path_parameter(
            "job_id",
            "The job id, a UUID (else 422 `invalid_request`).",
            id,
        )]
    }
}

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
    /// Where it is in its life: `pending` and `running` are active, and a book has at most one
    /// active job of each type.
    pub status: JobStatus,
    /// Claims so far that counted (a claim handed back when its worker shut down does not).
    pub attempt: u32,
    /// Claims that may end in error or a lost heartbeat.
    pub max_attempts: u32,
    /// Item-level progress as the worker last wrote it: while the job runs it may trail the
    /// work by the worker's `--progress-flush` (1 s by default).
    pub progress: Progress,
    /// Why it failed (or why its last attempt failed, while it waits to run again).
    pub error: Option<JobError>,
    /// The failed or cancelled job this one resumes.
    pub resumed_from: Option<Uuid>,
    /// Whether a cancel was requested while it ran: the worker stops it at its next safe
    /// point, and it ends `cancelled`.
    pub cancel_requested: bool,
    /// The worker of its current claim, or of its last one once it ended; null while it
    /// waits for a worker.
    pub worker_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When a worker last claimed it; null until the first claim.
    pub started_at: Option<DateTime<Utc>>,
    /// The latest heartbeat of its latest claim. A running job whose heartbeat is older than
    /// the worker's `--stale-after` (30 s by default) is taken back and retried.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When it reached a final status; null while it is active. Finished jobs are deleted
    /// after the worker's `--job-retention` (30 days by default).
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

/// Item-level progress of a job. For `ocr` and `guidelines` jobs an item is a page, named by
/// its number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Items in all; null until known.
    pub total: Option<u64>,
    /// Items done.
    pub completed: u64,
    /// Items that failed after their own retries: an `ocr` job goes on without them, a
    /// `guidelines` job stops at the first.
    pub failed: u64,
    /// The item being worked on; null when none is.
    pub current_item: Option<String>,
    /// The item up to which every item is done: a resumed job goes on after it.
    pub last_completed_item: Option<String>,
    /// A short message for people, e.g. `2 page(s) failed`.
    pub message: Option<String>,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// A stable code, e.g. `lease_expired`.
    pub code: String,
    /// The original error message (at most 8 KiB: a longer one is cut, with a note of its
    /// length).
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
    /// The book's jobs, newest first, at most `limit`.
    pub jobs: Vec<Job>,
}

/// Body of `POST /v1/books/{book_id}/jobs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The job type: `ocr`, `guidelines` or `finalize`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Continue the latest failed or cancelled job of this type from its checkpoint
    /// instead of starting afresh.
    #[serde(default)]
    pub resume: bool,
    /// A chain: job types to run on the book after this one, each started when the one
    /// before it completes.
    pub then: Option<Vec<String>>,
}

/// The schema of [`CreateJob`]: one alternative per job type, each with the chains that
/// type may carry, so the document states the whole rule the server enforces.
impl PartialSchema for CreateJob {
    fn schema() -> RefOr<Schema> {
        let pipeline = app::jobs::PIPELINE;
        let mut alternatives = OneOfBuilder::new().description(Some(format!(
            "A job to start on the book: `type`, and optionally `resume` and `then`. `then` is \
             a chain: job types to run on the book after this one, in the pipeline's order \
             ({}): each comes later in that order than the type before it (the first, later \
             than `type`), so none is named twice. Each job starts when the one before it \
             completes, in the same database transaction; a failure or cancel stops the chain \
             and resuming that job resumes it. Preconditions (`ocr_incomplete`, \
             `guidelines_incomplete`) are checked for `type` only: each later job checks its \
             own when it runs. With `resume: true`, `then` replaces the chain of the resumed \
             job (absent or null, the resumed job keeps its chain). Any other chain is 422 \
             `invalid_request`, before anything is written.",
            pipeline.join(", ")
        )));
        for job_type in pipeline {
            let chains: Vec<Value> = std::iter::once(Value::Null)
                .chain(
                    app::jobs::chains(job_type)
                        .into_iter()
                        .map(|chain| json!(chain)),
                )
                .collect();
            let alternative = ObjectBuilder::new()
                .schema_type(Type::Object)
                .title(Some(job_type))
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([job_type]))
                        .description(Some("The job type.")),
                )
                .required("type")
                .property(
                    "resume",
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .default(Some(json!(false)))
                        .description(Some(
                            "Continue the latest failed or cancelled job of this type from \
                             its checkpoint instead of starting afresh.",
                        )),
                )
                .property(
                    "then",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .enum_values(Some(chains))
                        .description(Some(format!(
                            "The job types to run after this `{job_type}` job, in order; null \
                             or empty: none."
                        ))),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            alternatives = alternatives.item(alternative);
        }
        alternatives.into()
    }
}

impl ToSchema for CreateJob {}

/// Query of `GET /v1/books/{book_id}/jobs`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = book_job_type_schema)]
    pub job_type: Option<String>,
    /// At most this many (1-500, default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
}

/// Query of `GET /v1/jobs`: every book's jobs, newest first, a page at a time.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllJobsQuery {
    /// Only jobs in one of these statuses, comma-separated (`failed,cancelled`); any status
    /// when absent. An empty value is refused (422): on the wire it is both no status and
    /// one empty one.
    #[param(value_type = Option<Vec<JobStatus>>, style = Form, explode = false, min_items = 1)]
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

/// The schema of the `type` filter: one of the pipeline's steps (`app::jobs::PIPELINE`).
/// It carries the description, which a parameter whose schema is built by hand does not
/// get from its doc comment.
fn book_job_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(app::jobs::PIPELINE))
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
    #[param(rename = "type", schema_with = book_job_type_schema)]
    pub job_type: Option<String>,
}

/// Query of `POST /v1/books/{book_id}/pages`. Any other parameter is 422, as the document
/// says (`additionalProperties: false`): a misspelled `ocr` must not store pages silently
/// without the job that was asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `true`: start an `ocr` job for the book after the upload; `force`: the same, and
    /// PDF text layers are ignored (every page is OCRed); `false` (default): no job.
    #[serde(default)]
    pub ocr: UploadOcr,
    /// With `ocr=true` or `ocr=force`: the chain of the `ocr` job, comma-separated job
    /// types in pipeline order, each started when the one before it completes:
    /// `then=guidelines,finalize` processes the whole book. Without an `ocr` job, or any
    /// other value, it is 422 `invalid_request` and nothing is stored.
    pub then: Option<String>,
}

/// The `ocr` query parameter of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum UploadOcr {
    /// No `ocr` job (PDF pages with a text layer still keep it, as `pdf-text`).
    #[default]
    #[serde(rename = "false")]
    No,
    /// An `ocr` job for the book's pages not done (pages with a PDF text layer are done).
    #[serde(rename = "true")]
    Yes,
    /// PDF text layers are ignored, and an `ocr` job recognizes every page of the upload.
    #[serde(rename = "force")]
    Force,
}

impl UploadOcr {
    /// Whether the upload starts an `ocr` job.
    pub fn starts_job(self) -> bool {
        self != Self::No
    }

    /// The values, as the document lists them.
    const VALUES: [&'static str; 3] = ["false", "true", "force"];
}

/// The query of an upload is documented as one object parameter (`style: form`, `explode:
/// true`, so each property is a query parameter of its own), because `then` depends on `ocr`
/// and only a schema over both can say so: either no chain (`then` absent or empty, `ocr`
/// any value), or `ocr=true` or `ocr=force` with a chain.
impl IntoParams for UploadQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let ocr = |values: &[&str]| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values.iter().copied()))
                .description(Some(
                    "`true`: start an `ocr` job for the book after the upload (PDF pages \
                     with a text layer are done already, engine `pdf-text`); `force`: \
                     ignore PDF text layers and OCR every page; `false`: no job.",
                ))
        };
        let no_chain = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("without a chain"))
            .property("ocr", ocr(&UploadOcr::VALUES).default(Some(json!("false"))))
            .property(
                "then",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([""]))
                    .description(Some("Empty: no chain.")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let chains: Vec<String> = app::jobs::chains(ocr::OCR_JOB_TYPE)
            .into_iter()
            .filter(|chain| !chain.is_empty())
            .map(|chain| chain.join(","))
            .collect();
        let with_chain = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("an ocr job with a chain"))
            .property("ocr", ocr(&UploadOcr::VALUES[1..]))
            .required("ocr")
            .property(
                "then",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(chains))
                    .description(Some(
                        "The chain of the `ocr` job: comma-separated job types in pipeline \
                         order, each started when the one before it completes.",
                    )),
            )
            .required("then")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let schema = AnyOfBuilder::new()
            .item(no_chain)
            .item(with_chain)
            .description(Some(
                "`ocr=true` starts an `ocr` job for the book after the upload (`ocr=force` \
                 too, and PDF text layers are ignored: every page is OCRed); with it, \
                 `then` chains the rest of the pipeline to that job (`then=guidelines,finalize` \
                 processes the whole book). `then` needs `ocr=true` or `ocr=force` (else 422 \
                 `invalid_request`, and nothing is stored); an empty `then` is no chain. Any \
                 other query parameter is 422 `invalid_request`.",
            ));
        vec![
            ParameterBuilder::new()
                .name("upload")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "The query parameters `ocr` and `then` (an object in form style: each \
                     property is a query parameter of its own).",
                ))
                .style(Some(ParameterStyle::Form))
                .explode(Some(true))
                .schema(Some(schema))
                .build(),
        ]
    }
}

/// Body of `POST /v1/books`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBook {
    /// The book id: 1-64 chars of `[a-z0-9_-]`, starting with a letter or digit. Made
    /// from the title when absent.
    #[schema(schema_with = create_book_id_schema)]
    pub id: Option<String>,
    /// The title (1-500 characters).
    #[schema(schema_with = title_schema)]
    pub title: String,
    /// The OCR language (see [`language_schema`]); the server's `--tesseract-languages` when
    /// absent or null.
    #[schema(schema_with = create_book_language_schema)]
    pub language: Option<String>,
}

/// Body of `PATCH /v1/books/{book_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBook {
    /// The new OCR language (see [`language_schema`]).
    #[schema(schema_with = language_schema)]
    pub language: String,
}

/// The schema of a book's language: tesseract codes joined by `+`, each installed on this
/// server (the pattern lists them, from `tesseract --list-langs` at start), else 422.
pub fn language_schema() -> ObjectBuilder {
    let installed = crate::languages::installed().map_or_else(
        || "any (tesseract does not run on the API's host; a worker without the language fails the book's ocr job with `language_not_installed`)".to_owned(),
        |codes| codes.join(", "),
    );
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(crate::languages::pattern()))
        .min_length(Some(1))
        .max_length(Some(
            ocr::languages::MAX_CODES * (ocr::languages::MAX_CODE_CHARS + 1) - 1,
        ))
        .description(Some(format!(
            "The OCR language of the book, as for `tesseract -l`: codes joined by `+` \
             (`eng`, `deu`, `eng+fra`), at most {}, each installed on the server (else 422 \
             `invalid_request` with `details.missing` and `details.installed`). Installed: \
             {installed}. `ocr` jobs read the book's pages in it; pages already read keep \
             their text.",
            ocr::languages::MAX_CODES
        )))
}

fn create_book_language_schema() -> ObjectBuilder {
    language_schema().schema_type(
        [Type::String, Type::Null]
            .into_iter()
            .collect::<SchemaType>(),
    )
}

/// The longest title, in characters (Unicode scalar values, as JSON Schema counts them).
pub const MAX_TITLE_CHARS: usize = 500;

/// The white space `str::trim` removes (Unicode `White_Space`), spelled out so that every
/// regular expression dialect reads the title pattern alike.
const WHITE_SPACE: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// Whether `title` is a valid title: at most [`MAX_TITLE_CHARS`] characters, at least one
/// of them not white space. The book stores it trimmed.
pub fn valid_title(title: &str) -> bool {
    title.chars().count() <= MAX_TITLE_CHARS && !title.trim().is_empty()
}

fn title_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_TITLE_CHARS))
        .pattern(Some(format!("[^{WHITE_SPACE}]")))
        .description(Some(format!(
            "The title: 1-{MAX_TITLE_CHARS} characters, not all white space; stored without \
             leading and trailing white space."
        )))
}

fn create_book_id_schema() -> ObjectBuilder {
    book_id_schema()
        .schema_type(
            [Type::String, Type::Null]
                .into_iter()
                .collect::<SchemaType>(),
        )
        .description(Some(
            "The book id: 1-64 characters of `a-z`, `0-9`, `_` and `-`, starting with a \
             letter or a digit. Made from the title when absent or null.",
        ))
}

/// A book's manifest (SPEC 3.3) as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Book {
    /// Version of the stored manifest schema.
    pub schema_version: u32,
    /// The book id, as in its URLs.
    pub book_id: String,
    /// The title, trimmed.
    pub title: String,
    /// The OCR language (`eng`, `deu`, `eng+fra`); null for books created before books had
    /// a language, which are read in the worker's `--tesseract-languages`.
    pub language: Option<String>,
    /// When the book was created.
    pub created_at: DateTime<Utc>,
    /// When the manifest last changed.
    pub updated_at: DateTime<Utc>,
    /// The pages, by number.
    pub pages: Vec<Page>,
    /// How far the `guidelines` and `finalize` jobs have come with the book.
    pub guidelines: Guidelines,
}

impl From<&Manifest> for Book {
    fn from(manifest: &Manifest) -> Self {
        Self {
            schema_version: manifest.schema_version,
            book_id: manifest.book_id.to_string(),
            title: manifest.title.clone(),
            language: manifest.language.clone(),
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
    /// Where the book's extraction is.
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
    /// No `guidelines` job has started on the book.
    None,
    /// A `guidelines` job started and not every page is extracted yet: it runs, or it
    /// failed or was cancelled part way (resume it).
    Extracting,
    /// Every page extracted.
    Extracted,
    /// A `finalize` job wrote the book's guidelines (`final`).
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
    /// Where to fetch the page's preview (a JPEG about 256 pixels wide); null for a page
    /// stored before previews existed.
    pub thumbnail_url: Option<String>,
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
    /// Its OCR: status, where to fetch the text, and tesseract's confidence.
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
            thumbnail_url: page
                .thumbnail
                .as_ref()
                .map(|_| format!("/v1/books/{book_id}/pages/{}/thumbnail", page.page)),
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
                hocr_url: (ocr.status == OcrStatus::Done && ocr.hocr.is_some())
                    .then(|| format!("/v1/books/{book_id}/pages/{}/hocr", page.page)),
                confidence: ocr.confidence,
                words: ocr.words,
                needs_review: ocr.needs_review,
                rotation: ocr.rotation,
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
    /// The engine that produced the text: `tesseract`, `openai`, or `pdf-text` for a PDF
    /// page's text layer.
    pub engine: Option<String>,
    /// Characters in the text (Unicode scalar values), once done.
    pub chars: Option<u64>,
    /// Recognition attempts so far.
    pub attempts: u32,
    /// The last error, when failed.
    pub error: Option<String>,
    /// When this state last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// Where to fetch the page's hOCR (words with boxes and confidences), once done by an
    /// engine that gives one (tesseract).
    pub hocr_url: Option<String>,
    /// The mean confidence of the recognized words, 0 to 100 (tesseract); null for other
    /// engines and for a page without words.
    pub confidence: Option<f64>,
    /// Words recognized (tesseract); null for other engines.
    pub words: Option<u64>,
    /// Whether a person should look at the page: its confidence is under the worker's
    /// `--ocr-review-below` (default 60), or tesseract found no word on it.
    pub needs_review: bool,
    /// How far the page was found turned, counter-clockwise in degrees (0, 90, 180, 270;
    /// a page turned 90 degrees clockwise is 270), when tesseract looked: it reads a page
    /// again with orientation detection when it read it badly upright. Null when it did
    /// not look. The image stays as uploaded; the hOCR's boxes are in its coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<u16>,
}

/// A book's pages: `GET /v1/books/{book_id}/pages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PageList {
    /// The pages, by number.
    pub pages: Vec<Page>,
}

/// Query of `GET /v1/books/{book_id}/pages`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageListQuery {
    /// `true`: only pages marked `needs_review`; `false`: only pages not marked; every page
    /// when absent.
    pub needs_review: Option<bool>,
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
    /// The book id, as in its URLs.
    pub book_id: String,
    /// The title, trimmed.
    pub title: String,
    /// Pages uploaded.
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
    /// Every book, sorted by id, each with counts of its pages' progress.
    pub books: Vec<BookSummary>,
}

/// Answer of a page upload: the upload as stored, and the `ingest` job that makes its
/// pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadAccepted {
    pub upload: UploadInfo,
    /// The `ingest` job; with `?ocr=true` its chain goes on with `ocr` (then `then`).
    pub job: Job,
}

/// An upload: its files as stored, with the page numbers they make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadInfo {
    /// The upload's id (a UUIDv7).
    pub id: String,
    /// Its files, in request order.
    pub files: Vec<UploadFileInfo>,
}

/// One file of an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadFileInfo {
    /// The client's file name.
    pub name: String,
    /// Its size as uploaded.
    pub bytes: u64,
    /// Its SHA-256 as uploaded, lowercase hex.
    pub sha256: String,
    /// `image` (one page) or `pdf` (one page per PDF page), judged by the content.
    #[schema(pattern = "^(image|pdf)$")]
    pub kind: String,
    /// How many pages it makes.
    pub pages: u32,
    /// The page number of its first page; its other pages follow.
    pub first_page: u32,
}

impl From<&books::Upload> for UploadInfo {
    fn from(upload: &books::Upload) -> Self {
        Self {
            id: upload.id.clone(),
            files: upload
                .files
                .iter()
                .map(|file| UploadFileInfo {
                    name: file.name.clone(),
                    bytes: file.bytes,
                    sha256: file.sha256.clone(),
                    kind: match file.kind {
                        books::FileKind::Image => "image",
                        books::FileKind::Pdf => "pdf",
                    }
                    .to_owned(),
                    pages: file.pages,
                    first_page: file.first_page,
                })
                .collect(),
        }
    }
}

/// The form of a page upload: one `files` part per page, in page order. Documentation
/// only: the handler reads the parts as they arrive.
#[derive(Debug, Clone, Copy)]
pub struct UploadForm;

/// The media types of the page images and PDFs an upload takes (what `books` decodes), for
/// the `encoding` of the `files` part in the document.
pub const UPLOAD_MEDIA_TYPES: &str =
    "image/png, image/jpeg, image/webp, image/tiff, image/bmp, image/gif, application/pdf";

impl PartialSchema for UploadForm {
    fn schema() -> RefOr<Schema> {
        let limits = books::IngestLimits::default();
        let file = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)));
        let files = ArrayBuilder::new()
            .items(file)
            .min_items(Some(1))
            .max_items(Some(limits.max_files))
            .description(Some(format!(
                "The page images (PNG, JPEG, WebP, TIFF, BMP or GIF) and PDFs, in page order: \
                 at least one, at most {} (else 413 `payload_too_large`), each image at most \
                 {} bytes and {} x {} pixels. A PDF (at most {} bytes and {} pages, not \
                 encrypted) gives one page per PDF page, rendered at 300 dpi (each at most \
                 the same pixels). A file that is not such an image or PDF is rejected, and \
                 then nothing is stored (422, or 415 when every rejected file is of an \
                 unsupported format).",
                limits.max_files,
                limits.max_file_bytes,
                limits.max_width,
                limits.max_height,
                limits.max_pdf_bytes,
                limits.max_pdf_pages
            )));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "The form of a page upload: one `files` part per page, in page order; no other \
                 part (else 422 `invalid_request`).",
            ))
            .property("files", files)
            .required("files")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for UploadForm {}

/// One server-sent event of `GET /v1/jobs/{job_id}/events`, as the fields of the event:
/// `event: job` and, as `data`, the job's JSON. Documentation only: the stream sends
/// [`Job`]s (`crate::events`).
#[derive(Debug, Clone, Copy)]
pub struct JobEvent;

impl PartialSchema for JobEvent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One server-sent event: `event: job` with the job's JSON (a `Job`) as its \
                 `data`, sent when the job changes, the first at once; the stream ends after \
                 the event whose job has a terminal status. Comment lines keep an idle stream \
                 open.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["job"])),
            )
            .required("event")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .content_schema(Some(RefOr::Ref(Ref::from_schema_name(Job::name())))),
            )
            .required("data")
            .into()
    }
}

impl ToSchema for JobEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Job::name().into_owned(), Job::schema()));
        <Job as ToSchema>::schemas(schemas);
    }
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
    /// The job database: whether it listed the live workers within 2 s.
    pub database: Check,
    /// The object storage: whether it answered a metadata read within 2 s.
    pub storage: Check,
    /// Workers seen within `stale_after`; null when the database does not answer.
    pub live_workers: Option<usize>,
    /// The OCR engine of the in-process worker (`--with-worker` running `ocr` jobs), as
    /// checked at start; null without one. A worker whose engine cannot run never starts.
    pub ocr: Option<OcrReadiness>,
}

/// The OCR engine of the in-process worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OcrReadiness {
    /// `tesseract` or `openai`.
    pub engine: String,
    /// Its version (`tesseract 5.3.0`); null for `openai`.
    pub version: Option<String>,
    /// The languages installed for it, sorted (without `osd`); empty for `openai`.
    pub languages: Vec<String>,
    /// The language of books without one (`--tesseract-languages`).
    pub default_language: String,
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
    /// The page number, from 1.
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
    /// What kind of guideline it is.
    pub kind: GuidelineKind,
    /// The guideline, without its label (`Tip:`) or list marker.
    pub text: String,
    /// When its text runs over a page break: the page it starts on (this page), then the
    /// page it ends on. Absent when it is all on its page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<u32>,
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
                            pages: guideline.pages.clone(),
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
    /// The book they were extracted from.
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
    /// What kind of guideline it is.
    pub kind: GuidelineKind,
    /// The guideline as first seen, without its label (`Tip:`) or list marker.
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
