//! Helpers for tests of code that runs jobs (feature `testing`): wait for a state by polling
//! with a deadline, never by a fixed sleep, and enqueue a job a test expects to be new.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn jobs_core::JobStore>, lock: jobs_core::LockService) {
//! use std::time::Duration;
//! use jobs_core::JobStatus;
//! use jobs_core::testing::{enqueue_new, wait_for_job};
//!
//! let job = enqueue_new(&lock, "book-1", "ocr", serde_json::json!({})).await;
//! let done = wait_for_job(&*store, job.id, Duration::from_secs(30), "the job to complete", |job| {
//!     job.status == JobStatus::Completed
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use crate::{Acquire, Job, JobId, JobStore, LockService};

/// How often [`eventually`] probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a probe of [`eventually`] answers: the value it waited for, or not yet. `Option`
/// says nothing more; `Result<T, String>` says what it saw, for the timeout's message.
pub trait Probed<T> {
    /// The value, or what was seen instead (empty when nothing worth showing).
    fn into_result(self) -> Result<T, String>;
}

impl<T> Probed<T> for Option<T> {
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Probed<T> for Result<T, String> {
    fn into_result(self) -> Result<T, String> {
        self
    }
}

/// Polls `probe` every [`POLL_INTERVAL`] until it gives a value; after `limit`, panics with
/// `what` and what the probe saw last.
pub async fn eventually<T, P, F>(limit: Duration, what: &str, probe: impl FnMut() -> F) -> T
where
    P: Probed<T>,
    F: Future<Output = P>,
{
    eventually_with(limit, what, String::new, probe).await
}

/// [`eventually`], with `context()` (the processes' logs, say) added to the timeout's
/// message.
pub async fn eventually_with<T, P, F>(
    limit: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut probe: impl FnMut() -> F,
) -> T
where
    P: Probed<T>,
    F: Future<Output = P>,
{
    // Tokio's clock, so a test with paused time times out in its own time.
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = match probe().await.into_result() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() > deadline {
            let mut message = format!("timed out after {limit:?} waiting for {what}");
            if !seen.is_empty() {
                message.push_str(&format!("; last seen:\n{seen}"));
            }
            let context = context();
            if !context.is_empty() {
                message.push_str(&format!("\n{context}"));
            }
            panic!("{message}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls job `id` until `done` holds for it; on timeout the message shows the job as last
/// read. A store error counts as not yet (a test of store faults polls through them).
pub async fn wait_for_job(
    store: &dyn JobStore,
    id: JobId,
    limit: Duration,
    what: &str,
    done: impl Fn(&Job) -> bool,
) -> Job {
    wait_for_job_with(store, id, limit, what, String::new, done).await
}

/// [`wait_for_job`], with `context()` added to the timeout's message.
pub async fn wait_for_job_with(
    store: &dyn JobStore,
    id: JobId,
    limit: Duration,
    what: &str,
    context: impl Fn() -> String,
    done: impl Fn(&Job) -> bool,
) -> Job {
    eventually_with(limit, what, context, || async {
        match store.get(id).await {
            Ok(job) if done(&job) => Ok(job),
            Ok(job) => Err(format!("{job:#?}")),
            Err(error) => Err(format!("reading the job failed: {error}")),
        }
    })
    .await
}

/// The new job of an acquire; panics when `resource` was busy, naming the active job.
pub fn expect_created(acquire: Acquire, resource: &str) -> Job {
    match acquire {
        Acquire::Created(job) => job,
        Acquire::Busy(job) => panic!("{resource} is busy with {job:?}"),
    }
}

/// Enqueues a `job_type` job for `resource`; panics when the store fails or the resource is
/// busy.
pub async fn enqueue_new(
    lock: &LockService,
    resource: &str,
    job_type: &str,
    payload: serde_json::Value,
) -> Job {
    let acquire = lock
        .acquire(resource, job_type, payload)
        .await
        .unwrap_or_else(|error| panic!("enqueueing {job_type} for {resource} failed: {error}"));
    expect_created(acquire, resource)
}
