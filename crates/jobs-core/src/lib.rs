//! Durable background jobs for services that must survive crashes, pauses and redeploys.
//!
//! `jobs-core` holds everything about jobs that does not depend on a database:
//!
//! - [`Job`], [`JobStatus`] and the pure state machine in [`state`];
//! - the [`JobStore`] trait that the store crates (`jobs-postgres`, `jobs-sqlite`) implement;
//! - the [`LockService`]: one active job per (resource, job type), lazy rescue, resume, cancel,
//!   and enqueueing in the caller's own database transaction ([`transaction`]);
//! - the worker runtime in [`runtime`]: handlers, heartbeats, retries, graceful shutdown;
//! - periodic jobs in [`schedule`]: cron schedules in a time zone, one job per tick across
//!   every worker;
//! - typed jobs in [`typed`]: a job type as a Rust type, its payload and checkpoint decoded;
//! - tracing across the queue in [`trace`]: a span around every handler run, and the trace
//!   of the request that enqueued a job carried to the worker;
//! - the injectable [`Clock`];
//! - with the `conformance` feature, the suite every store runs ([`conformance`]);
//! - with the `testing` feature, helpers for tests of code that runs jobs ([`testing`]).
//!
//! # Example
//!
//! A typed job on the SQLite store (`jobs-sqlite`; `jobs-postgres` is the same for many
//! machines): a worker runs it, checkpointing after each step, while the caller waits.
//!
//! ```
//! use std::sync::Arc;
//!
//! use jobs_core::runtime::{HandlerError, Worker, WorkerConfig};
//! use jobs_core::typed::{self, Context, Job};
//! use jobs_core::{Acquire, JobStatus, JobStore, LockService, RecoveryPolicy, SystemClock};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Thumbnails {
//!     sizes: Vec<u32>,
//! }
//!
//! #[jobs_core::async_trait]
//! impl Job for Thumbnails {
//!     const TYPE: &'static str = "thumbnails";
//!     type Checkpoint = usize; // sizes done
//!     type State = ();
//!
//!     async fn run(self, _: &(), context: Context<Self>) -> Result<(), HandlerError> {
//!         let done = context.checkpoint().copied().unwrap_or(0);
//!         for (index, _size) in self.sizes.iter().enumerate().skip(done) {
//!             context.check_cancelled()?; // stop here on cancel or shutdown
//!             context.set_checkpoint(&(index + 1)); // a resume starts after it
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite://{}/jobs.db", dir.path().display());
//! let store: Arc<dyn JobStore> = Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await?);
//!
//! let shutdown = CancellationToken::new();
//! let worker = Worker::new(store.clone(), Arc::new(SystemClock), WorkerConfig::default())
//!     .handler(typed::handler::<Thumbnails>(()));
//! let running = tokio::spawn(worker.run(shutdown.clone()));
//!
//! // One active `thumbnails` job per resource: a second enqueue answers `Busy`.
//! let lock = LockService::new(store.clone(), Arc::new(SystemClock), RecoveryPolicy::default());
//! let job = Thumbnails { sizes: vec![64, 256, 1024] };
//! let Acquire::Created(job) = lock.enqueue("image-7", &job).await? else {
//!     unreachable!("nothing else runs on image-7");
//! };
//! let job = loop {
//!     let job = store.get(job.id).await?;
//!     if job.status.is_terminal() {
//!         break job;
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! };
//! assert_eq!(job.status, JobStatus::Completed);
//! assert_eq!(job.checkpoint, Some(serde_json::json!(3)));
//! shutdown.cancel();
//! running.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - A job moves only `pending -> running -> completed | failed | cancelled` (and back to
//!   `pending` for a retry); terminal statuses never change. Stores enforce this in SQL; the
//!   conformance suite checks each store against [`state`].
//! - At most one active (pending or running) job per (resource, job type), decided by the
//!   database's unique index, also under races.
//! - Fencing: every write of a running job names the lease of its claim; after a takeover
//!   the old worker's writes change nothing.
//! - A worker that dies is detected by its stale heartbeat and its job requeued (or failed
//!   when its attempts are used); a resumed job starts from the last checkpoint.
//! - Every failure keeps its original message (cleaned of NUL and capped, see
//!   [`storable_text`]).
//! - Only finished jobs are ever deleted: workers delete those that ended longer ago than
//!   [`runtime::WorkerConfig::job_retention`] (30 days by default; `None` keeps them), a
//!   small batch at a time; a link to a deleted job (`resumed_from`, `previous_job_id`,
//!   `next_job_id`) becomes `None`.
//!
//! # Feature flags
//!
//! - `conformance`: the suite every [`JobStore`] implementation runs from its tests
//!   (implies `testing`).
//! - `testing`: polling with a deadline and an enqueue that expects a new job, for tests.
//! - `opentelemetry`: acquires store the current span's OpenTelemetry context as the job's
//!   W3C `traceparent`, and the worker's span of a job's first attempt is its child (a retry
//!   links to it), through `tracing-opentelemetry` (see [`trace`]).
//!
//! Architecture Invariant: this crate knows nothing of sqlx, Postgres, SQLite, axum or S3.
//! Stores receive every timestamp from the caller, so time is always the injected clock's.

#![warn(missing_docs)]

mod backoff;
mod clock;
mod job;
pub mod keys;
mod lock;
pub mod runtime;
pub mod schedule;
pub mod state;
mod store;
pub mod trace;
pub mod transaction;
pub mod typed;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

/// The crate's README (its page when published), whose example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use async_trait::async_trait;
pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use job::{
    ChainStep, Job, JobError, JobId, JobStatus, Lease, NewJob, Progress, UnknownJobStatus, codes,
    storable_text, truncate_to_micros,
};
pub use keys::{KeptAnswer, KeyClaim, KeyedRequest};
pub use lock::{Acquire, AcquireRequest, LockError, LockService, RecoveryPolicy};
pub use schedule::{CatchUp, Schedule, ScheduleError, Tick};
pub use state::{IllegalTransition, Transition};
pub use store::{
    ActiveIndex, ClaimParams, Finish, FinishChain, FinishOutcome, HeartbeatAck, HeartbeatParams,
    Insert, JobQuery, JobStore, RescueParams, RescueReport, RescueScope, StoreError, WorkerInfo,
    parse_active_index,
};
pub use transaction::InTransaction;
