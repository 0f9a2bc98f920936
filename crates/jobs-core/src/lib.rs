//! Durable background jobs for services that must survive crashes, pauses and redeploys.
//!
//! `jobs-core` holds everything about jobs that does not depend on a database:
//!
//! - [`Job`], [`JobStatus`] and the pure state machine in [`state`];
//! - the [`JobStore`] trait that the store crates (`jobs-postgres`, `jobs-sqlite`) implement;
//! - the [`LockService`]: one active job per (resource, job type), lazy rescue, resume, cancel;
//! - the worker runtime in [`runtime`]: handlers, heartbeats, retries, graceful shutdown;
//! - typed jobs in [`typed`]: a job type as a Rust type, its payload and checkpoint decoded;
//! - the injectable [`Clock`];
//! - with the `conformance` feature, the suite every store runs ([`conformance`]).
//!
//! Architecture Invariant: this crate knows nothing of sqlx, Postgres, SQLite, axum or S3.
//! Stores receive every timestamp from the caller, so time is always the injected clock's.

mod backoff;
mod clock;
mod job;
mod lock;
pub mod runtime;
pub mod state;
mod store;
pub mod typed;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use async_trait::async_trait;
pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use job::{
    ChainStep, Job, JobError, JobId, JobStatus, Lease, NewJob, Progress, UnknownJobStatus, codes,
    storable_text, truncate_to_micros,
};
pub use lock::{Acquire, AcquireRequest, LockError, LockService, RecoveryPolicy};
pub use state::{IllegalTransition, Transition};
pub use store::{
    ActiveIndex, ClaimParams, Finish, FinishChain, FinishOutcome, HeartbeatAck, HeartbeatParams,
    Insert, JobQuery, JobStore, RescueParams, RescueReport, RescueScope, StoreError, WorkerInfo,
    parse_active_index,
};
