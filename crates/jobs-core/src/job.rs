//! Jobs and their parts: ids, status, progress, errors.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Error codes that jobs-core itself writes into [`JobError::code`].
pub mod codes {
    /// A running job's heartbeat was older than `stale_after`.
    pub const LEASE_EXPIRED: &str = "lease_expired";
    /// A pending job was not claimed within `pending_timeout`.
    pub const PENDING_TIMEOUT: &str = "pending_timeout";
    /// The worker shut down while the job ran; the job was handed back.
    pub const INTERRUPTED: &str = "interrupted";
    /// The handler panicked (the runner caught it): retried like a retryable error while
    /// attempts remain, the panic message kept as the error's message.
    pub const PANICKED: &str = "panicked";
}

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh UUID v7 id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps `uuid` as it is, without checking that it is a v7 (ids parsed from a URL or
    /// read back from a database).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside, to bind in SQL (the stores' `id` columns hold it).
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The fencing token of one claim. It changes on every claim of a job; every write by a
/// worker carries it, and a write with an older lease changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lease(pub i64);

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life. See [`crate::state`] for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a worker that heartbeats it.
    Running,
    /// Finished successfully. Terminal.
    Completed,
    /// Finished with an error. Terminal.
    Failed,
    /// Cancelled before or while running. Terminal.
    Cancelled,
}

/// The names of [`JobStatus::ACTIVE`] as a list of SQL string literals, `'pending', 'running'`,
/// for `concat!` into an `ARRAY[...]`; [`active_statuses_sql!`](crate::active_statuses_sql)
/// is the same list in parentheses, for `IN`.
#[macro_export]
macro_rules! active_status_names_sql {
    () => {
        "'pending', 'running'"
    };
}

/// The active statuses as an SQL list, `('pending', 'running')`: a string literal, so a store
/// builds every query that names the active set at compile time,
/// `concat!("... WHERE status IN ", jobs_core::active_statuses_sql!())`. It is the one
/// spelling of [`JobStatus::ACTIVE`] in SQL: a unit test fails when the two differ, and each
/// store has a test that no query of its sources writes the list by hand. (Migrations cannot
/// use it; the conformance suite reads the one-active index back and compares it instead.)
#[macro_export]
macro_rules! active_statuses_sql {
    () => {
        concat!("(", $crate::active_status_names_sql!(), ")")
    };
}

impl JobStatus {
    /// The active statuses: at most one job per (resource, job type) is in one of these.
    /// Both stores' partial unique index must name exactly these; the conformance suite
    /// reads the index back from each database and compares.
    /// Store SQL spells this set only through [`active_statuses_sql!`](crate::active_statuses_sql)
    /// (a unit test compares the two).
    pub const ACTIVE: [JobStatus; 2] = [JobStatus::Pending, JobStatus::Running];
    /// The terminal statuses: no write ever changes a job in one of these.
    pub const TERMINAL: [JobStatus; 3] = [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    /// Every status, active ones first: what [`FromStr`] accepts.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name stored in databases and shown in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the status is one of [`JobStatus::ACTIVE`].
    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// Whether the status is one of [`JobStatus::TERMINAL`].
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`JobStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownJobStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownJobStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownJobStatus(s.to_owned()))
    }
}

/// Item-level progress that clients poll. Items are named by strings (a page number, a file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// How many items the job has in all; `None` until known.
    pub total: Option<u64>,
    /// Items done successfully; the handler counts them, nothing checks them against
    /// `total`.
    pub completed: u64,
    /// Items that failed (and were not retried into success).
    pub failed: u64,
    /// The item being worked on, as the handler last set it: jobs-core never clears it, so
    /// after the job ends it names the last item started.
    pub current_item: Option<String>,
    /// The last item done; resume continues after it.
    pub last_completed_item: Option<String>,
    /// A short message for people (cut at [`Progress::MAX_TEXT_BYTES`] when stored).
    pub message: Option<String>,
}

/// Why a job (or one attempt of it) failed. The message is always the original error's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// A stable, machine-readable code such as `lease_expired`.
    pub code: String,
    /// The original error's message, cut at [`JobError::MAX_MESSAGE_BYTES`] with a note of
    /// its length.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

impl JobError {
    /// The longest message kept, in bytes; a longer one is cut with a note of its length.
    pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
    /// The longest code kept, in bytes.
    pub const MAX_CODE_BYTES: usize = 100;

    /// A new error, as a store can keep it (see [`storable_text`]): NUL bytes written as
    /// `\0` and the message capped at [`Self::MAX_MESSAGE_BYTES`].
    pub fn new(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: storable_text(code.into(), Self::MAX_CODE_BYTES),
            message: storable_text(message.into(), Self::MAX_MESSAGE_BYTES),
            retryable,
        }
    }
}

impl Progress {
    /// The longest item name or message kept, in bytes.
    pub const MAX_TEXT_BYTES: usize = 1024;

    /// The progress as a store can keep it: its texts through [`storable_text`].
    pub fn storable(&mut self) {
        for text in [
            &mut self.current_item,
            &mut self.last_completed_item,
            &mut self.message,
        ]
        .into_iter()
        .flatten()
        {
            *text = storable_text(std::mem::take(text), Self::MAX_TEXT_BYTES);
        }
    }
}

/// `text` as every store can keep it: a NUL byte (which Postgres refuses in text and
/// JSON) becomes the two characters `\0`, and text over `max_bytes` is cut on a character
/// boundary and ends with a note of its whole length, so an error of any size and content
/// still ends its job with a readable message.
pub fn storable_text(text: String, max_bytes: usize) -> String {
    let mut text = if text.contains('\0') {
        text.replace('\0', "\\0")
    } else {
        text
    };
    if text.len() > max_bytes {
        let note = format!(" [cut: {} bytes in all]", text.len());
        let mut end = max_bytes.saturating_sub(note.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(&note);
    }
    text
}

/// One job of a chain: what runs after a job completes, on the same resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStep {
    /// The type of the job this step inserts: a worker must have a handler for it.
    pub job_type: String,
    /// That job's payload, stored as it is.
    pub payload: serde_json::Value,
}

impl ChainStep {
    /// A step that inserts a job of `job_type` with `payload` (on the chain's resource).
    pub fn new(job_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            job_type: job_type.into(),
            payload,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// A UUID v7: id order is creation order, which listings and their `before` cursor use.
    pub id: JobId,
    /// What the job works on (for book jobs: the book id). One active job per key and type.
    pub resource_key: String,
    /// Which handler runs it.
    pub job_type: String,
    /// Where it is in its life; it changes only by the transitions of [`crate::state`].
    pub status: JobStatus,
    /// The handler's input: never changes, and a resume copies it.
    pub payload: serde_json::Value,
    /// Claims so far that counted (an interrupted claim is given back).
    pub attempt: u32,
    /// Claims that may end in error or a lost heartbeat.
    pub max_attempts: u32,
    /// Item-level progress as last written: up to `progress_flush` behind what the
    /// handler set while it runs, exact once the job ended.
    pub progress: Progress,
    /// Handler-owned resume state; survives requeues and is copied on resume.
    pub checkpoint: Option<serde_json::Value>,
    /// The last error: the final one for a failed job, the last attempt's for a requeued one.
    pub error: Option<JobError>,
    /// The failed or cancelled job this one resumes.
    pub resumed_from: Option<JobId>,
    /// The chain: the jobs to run after this one on the same resource, in order. When the
    /// runner completes the job, the store inserts the first step as the next job (carrying
    /// the rest) in the same transaction. A failure or cancel stops the chain; a resume
    /// carries it on. Never changes after the insert.
    #[serde(default)]
    pub then: Vec<ChainStep>,
    /// The job whose completion inserted this one (the previous link of its chain).
    #[serde(default)]
    pub previous_job_id: Option<JobId>,
    /// The job this one's completion started: the one it inserted, or the job of that
    /// (resource, type) that was already active (whose `previous_job_id` stays as it was).
    #[serde(default)]
    pub next_job_id: Option<JobId>,
    /// The W3C `traceparent` of the span that enqueued the job (see [`crate::trace`]): the
    /// request that acquired it, or what the job it continues had (a chain's next job and a
    /// resumed job inherit it). The worker's span of the first attempt is its child; later
    /// attempts link to it. `None` when the job was enqueued outside a trace.
    #[serde(default)]
    pub trace_parent: Option<String>,
    /// Whether a cancel was requested while it ran: the handler should stop at a safe
    /// point, and a retry or rescue cancels the job instead of requeueing it.
    pub cancel_requested: bool,
    /// The worker of the current claim; after the job ends, of its last claim. `None`
    /// while pending (a requeue clears it).
    pub worker_id: Option<String>,
    /// The fencing token of the current (or last) claim: 0 before the first claim, one more
    /// on each claim after.
    pub lease: Lease,
    /// When it may be claimed: its creation, or after a requeue the time of the retry
    /// (backoff included).
    pub run_at: DateTime<Utc>,
    /// When it was inserted ([`NewJob::now`]); a resumed or chained job has its own.
    pub created_at: DateTime<Utc>,
    /// When the latest claim started; `None` until the first claim, kept after a requeue.
    pub started_at: Option<DateTime<Utc>>,
    /// The latest heartbeat of the latest claim (the claim itself is the first); the
    /// rescuer compares it with `stale_after`. `None` until the first claim.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status; `None` exactly while it is active. Retention
    /// deletes by it.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The new job's id, usually [`JobId::new`] (a v7: listings sort by it); unused when
    /// the insert answers [`Insert::Busy`](crate::Insert::Busy).
    pub id: JobId,
    /// See [`Job::resource_key`].
    pub resource_key: String,
    /// See [`Job::job_type`].
    pub job_type: String,
    /// See [`Job::payload`].
    pub payload: serde_json::Value,
    /// See [`Job::max_attempts`]; at least 1.
    pub max_attempts: u32,
    /// A checkpoint to start from (copied on resume).
    pub checkpoint: Option<serde_json::Value>,
    /// See [`Job::resumed_from`].
    pub resumed_from: Option<JobId>,
    /// See [`Job::then`]; empty for a job without a chain.
    pub then: Vec<ChainStep>,
    /// See [`Job::trace_parent`]. Stores keep only a valid one
    /// ([`crate::trace::storable_trace_parent`]) and drop any other without an error.
    pub trace_parent: Option<String>,
    /// Creation time; also the time it may first run.
    pub now: DateTime<Utc>,
}

/// Truncates a time to whole microseconds, the precision both stores keep, so a time
/// read back compares equal to the time written.
pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).expect("time within range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_list_of_active_statuses_is_job_status_active() {
        let names: Vec<String> = JobStatus::ACTIVE
            .iter()
            .map(|status| format!("'{}'", status.as_str()))
            .collect();
        assert_eq!(crate::active_status_names_sql!(), names.join(", "));
        assert_eq!(
            crate::active_statuses_sql!(),
            format!("({})", names.join(", "))
        );
    }

    #[test]
    fn storable_text_writes_nul_as_an_escape_and_keeps_the_rest() {
        let error = JobError::new("bad\0code", "page 3: bad\0byte", false);
        assert_eq!(error.code, "bad\\0code");
        assert_eq!(error.message, "page 3: bad\\0byte");
    }

    #[test]
    fn storable_text_caps_long_text_on_a_character_boundary_with_its_length() {
        let long = format!("page 3: {}", "é".repeat(100_000));
        let error = JobError::new("ocr_failed", long.clone(), true);
        assert!(error.message.len() <= JobError::MAX_MESSAGE_BYTES);
        assert!(error.message.starts_with("page 3: éé"));
        assert!(
            error
                .message
                .ends_with(&format!(" [cut: {} bytes in all]", long.len())),
            "{}",
            &error.message[error.message.len() - 40..]
        );
        let short = storable_text("fine".to_owned(), 4);
        assert_eq!(short, "fine");
    }

    #[test]
    fn storable_progress_cleans_every_text() {
        let mut progress = Progress {
            current_item: Some("a\0".into()),
            last_completed_item: Some("b\0".into()),
            message: Some("x".repeat(5000)),
            ..Progress::default()
        };
        progress.storable();
        assert_eq!(progress.current_item.as_deref(), Some("a\\0"));
        assert_eq!(progress.last_completed_item.as_deref(), Some("b\\0"));
        assert!(progress.message.unwrap().len() <= Progress::MAX_TEXT_BYTES);
    }
}
