//! The `JobStore` trait: the one seam between the job logic and a database.
//!
//! Stores are deliberately dumb: each method is one guarded write (or read) that the database
//! makes atomic. They take every timestamp from the caller, so the injected clock rules time.
//! Worker writes are fenced: they name the [`Lease`] of their claim, and a write whose lease
//! is not the job's current one while it runs changes nothing and returns
//! [`StoreError::LeaseLost`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::job::{Job, JobError, JobId, JobStatus, Lease, NewJob, Progress};
use crate::keys::{KeptAnswer, KeyClaim, KeyedRequest};
use crate::state::IllegalTransition;

/// What [`JobStore::insert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Insert {
    /// The job was inserted.
    Inserted(Job),
    /// Another job for the same (resource, job type) is active; nothing was inserted.
    Busy(Job),
}

impl Insert {
    /// The job inserted, or the active one.
    pub fn job(&self) -> &Job {
        match self {
            Insert::Inserted(job) | Insert::Busy(job) => job,
        }
    }
}

/// Which jobs [`JobStore::claim`] may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimParams {
    /// The claiming worker, written as the claimed jobs' `worker_id`.
    pub worker_id: String,
    /// Only jobs of these types are claimed: the types the worker has handlers for.
    pub job_types: Vec<String>,
    /// At most this many jobs (the worker's free slots); fewer when fewer are due.
    pub limit: u32,
    /// Jobs whose `run_at` is not after this are due; also the claim's start time.
    pub now: DateTime<Utc>,
}

/// A heartbeat, optionally carrying coalesced progress and a checkpoint: one write.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatParams {
    /// The running job whose heartbeat is renewed.
    pub id: JobId,
    /// The lease of the caller's claim.
    pub lease: Lease,
    /// The new `heartbeat_at`.
    pub now: DateTime<Utc>,
    /// New progress, if it changed since the last write.
    pub progress: Option<Progress>,
    /// A new checkpoint, if one was set since the last write.
    pub checkpoint: Option<serde_json::Value>,
}

/// What the store tells a heartbeating worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// A cancel was requested: the handler should stop at a safe point.
    pub cancel_requested: bool,
}

/// How a claim ends.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishOutcome {
    /// Success: the job completes.
    Completed,
    /// Failure: the job fails with this error.
    Failed(JobError),
    /// The handler stopped on a cancel request: the job is cancelled.
    Cancelled,
    /// The job goes back to pending, to run again at `run_at`. With `consume_attempt` false
    /// (graceful shutdown) the claim does not count against `max_attempts`. A job whose
    /// cancel was requested is cancelled instead; a job on its last attempt fails with
    /// `error` instead, unless the claim does not count.
    Requeue {
        /// Why it is requeued; kept as the job's last error.
        error: JobError,
        /// When it may run again.
        run_at: DateTime<Utc>,
        /// Whether the claim counts as an attempt.
        consume_attempt: bool,
    },
}

/// Whether the job of an ended claim carries a chain ([`Job::then`] not empty), as the
/// runner's copy of the job says: `then` never changes after the insert, so the copy is
/// exact. A store reads the chain of a completed job only when it is [`Chained`]; ends of
/// unchained jobs keep the cost of the plain batched write.
///
/// [`Chained`]: FinishChain::Chained
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FinishChain {
    /// No chain: the end is written alone.
    #[default]
    Unchained,
    /// A chain: a completion also inserts the next job, in the same transaction.
    Chained,
}

impl FinishChain {
    /// The mark of `job`: [`FinishChain::Chained`] when its `then` is not empty.
    pub fn of(job: &Job) -> Self {
        if job.then.is_empty() {
            Self::Unchained
        } else {
            Self::Chained
        }
    }
}

/// One fenced end of a claim, with the last coalesced progress and checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// The job whose claim ends.
    pub id: JobId,
    /// The lease of the caller's claim.
    pub lease: Lease,
    /// How it ends, as the runner decided: the store may still turn a requeue into a cancel
    /// or a failure ([`FinishOutcome::Requeue`]).
    pub outcome: FinishOutcome,
    /// Final progress, if it changed since the last write.
    pub progress: Option<Progress>,
    /// Final checkpoint, if it changed since the last write.
    pub checkpoint: Option<serde_json::Value>,
    /// Whether the job has a chain to continue when it completes.
    pub chain: FinishChain,
}

impl Finish {
    /// A finish with no progress or checkpoint to flush, of a job without a chain.
    pub fn new(id: JobId, lease: Lease, outcome: FinishOutcome) -> Self {
        Self {
            id,
            lease,
            outcome,
            progress: None,
            checkpoint: None,
            chain: FinishChain::Unchained,
        }
    }

    /// A finish of the claimed `job` under its lease, its chain marked from the job.
    pub fn of(job: &Job, outcome: FinishOutcome) -> Self {
        Self {
            chain: FinishChain::of(job),
            ..Self::new(job.id, job.lease, outcome)
        }
    }

    /// Whether this end completes a job with a chain: the store inserts the next job.
    pub fn continues_chain(&self) -> bool {
        self.chain == FinishChain::Chained && matches!(self.outcome, FinishOutcome::Completed)
    }
}

/// Which jobs [`JobStore::rescue`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescueScope {
    /// Every active job: what each worker's rescuer runs.
    All,
    /// Only the jobs of one (resource, job type): the lazy rescue inside acquire.
    Resource {
        /// The resource whose job is looked at.
        resource_key: String,
        /// Its job type: with the key, it names at most one active job.
        job_type: String,
    },
}

/// Stale recovery, as of `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct RescueParams {
    /// The time of the rescue; written as `finished_at` and `run_at`.
    pub now: DateTime<Utc>,
    /// Running jobs whose heartbeat is older than this are requeued, or failed with
    /// `lease_expired` when their attempts are used.
    pub stale_before: DateTime<Utc>,
    /// Pending jobs due before this fail with `pending_timeout`.
    pub pending_before: DateTime<Utc>,
    /// Error recorded on a requeued stale job.
    pub requeue_error: JobError,
    /// Error recorded on a stale job whose attempts are used.
    pub expired_error: JobError,
    /// Error recorded on a job that timed out pending.
    pub pending_timeout_error: JobError,
    /// Which jobs to look at.
    pub scope: RescueScope,
}

/// What a rescue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Stale running jobs put back to pending.
    pub requeued: Vec<JobId>,
    /// Jobs failed: stale with attempts used (`lease_expired`) or pending too long
    /// (`pending_timeout`).
    pub failed: Vec<JobId>,
    /// Stale running jobs whose cancel had been requested: cancelled.
    pub cancelled: Vec<JobId>,
}

impl RescueReport {
    /// Sorts what a rescue changed: `stale` are the running jobs it ended or requeued, with
    /// the status each got; `expired` are the pending jobs it failed. Ids come out sorted.
    pub fn from_changes(
        stale: impl IntoIterator<Item = (JobId, JobStatus)>,
        expired: impl IntoIterator<Item = JobId>,
    ) -> Self {
        let mut report = Self::default();
        for (id, status) in stale {
            match status {
                JobStatus::Pending => report.requeued.push(id),
                JobStatus::Cancelled => report.cancelled.push(id),
                _ => report.failed.push(id),
            }
        }
        report.failed.extend(expired);
        report.requeued.sort();
        report.failed.sort();
        report.cancelled.sort();
        report
    }

    /// Whether the rescue changed nothing.
    pub fn is_empty(&self) -> bool {
        self.requeued.is_empty() && self.failed.is_empty() && self.cancelled.is_empty()
    }
}

/// A listing query. Jobs come newest first, by id: ids are UUID v7, so id order is creation
/// order. Name the filters you need and take the rest from [`Default`] (every resource, type
/// and status, from the newest job, [`JobQuery::DEFAULT_LIMIT`] jobs):
///
/// ```
/// # use jobs_core::{JobQuery, JobStatus};
/// let failed_ocr = JobQuery {
///     job_type: Some("ocr".into()),
///     statuses: vec![JobStatus::Failed],
///     ..JobQuery::default()
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs of this resource; `None`: every resource.
    pub resource_key: Option<String>,
    /// Only jobs of this type; `None`: every type.
    pub job_type: Option<String>,
    /// Only jobs in one of these statuses; empty: any status.
    pub statuses: Vec<JobStatus>,
    /// Keyset pagination: only jobs whose id is lower (older) than this one. The next page
    /// of a listing is the same query with `before` set to the last id of the page.
    pub before: Option<JobId>,
    /// At most this many jobs. Stores put no cap on it: a caller that takes it from a
    /// request bounds it first.
    pub limit: u32,
}

impl JobQuery {
    /// The `limit` of [`JobQuery::default`].
    pub const DEFAULT_LIMIT: u32 = 50;

    /// The names of the statuses a listing asks for: every status when it names none.
    pub fn wanted_statuses(statuses: &[JobStatus]) -> Vec<&'static str> {
        if statuses.is_empty() {
            JobStatus::ALL.map(JobStatus::as_str).to_vec()
        } else {
            statuses.iter().map(|status| status.as_str()).collect()
        }
    }

    /// Splits the statuses of an all-resources listing between the two ways a store reads
    /// them: those found by scanning the primary key newest first (every status when
    /// `statuses` is empty, else `completed`, the status of most jobs) and those read from
    /// an index of their own (the active ones, `failed`, `cancelled`).
    pub fn listing_branches(statuses: &[JobStatus]) -> (Vec<&'static str>, Vec<&'static str>) {
        if statuses.is_empty() {
            return (Self::wanted_statuses(statuses), Vec::new());
        }
        let (scanned, indexed): (Vec<JobStatus>, Vec<JobStatus>) = statuses
            .iter()
            .partition(|status| **status == JobStatus::Completed);
        (
            scanned.into_iter().map(JobStatus::as_str).collect(),
            indexed.into_iter().map(JobStatus::as_str).collect(),
        )
    }
}

impl Default for JobQuery {
    fn default() -> Self {
        Self {
            resource_key: None,
            job_type: None,
            statuses: Vec::new(),
            before: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// The unique index that keeps one active job per (resource, job type), as the database
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveIndex {
    /// Whether the index is unique: without that, it would not keep one active job.
    pub unique: bool,
    /// Its key columns, in order: `resource_key, job_type` in both stores.
    pub columns: Vec<String>,
    /// The statuses its predicate admits, in the order written; they must be
    /// [`JobStatus::ACTIVE`].
    pub statuses: Vec<JobStatus>,
}

/// A worker process, as registered for liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The worker's id, unique among live workers.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// The job types it has handlers for, sorted.
    pub job_types: Vec<String>,
    /// When it registered; registering again with the same id resets it.
    pub started_at: DateTime<Utc>,
    /// Its latest sign of life: its registration, then every `heartbeat_interval`
    /// ([`JobStore::touch_worker`]).
    pub last_seen: DateTime<Utc>,
}

/// Errors of a [`JobStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No job has this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// A fenced write named a lease that is not the running job's current one: the job was
    /// taken over, requeued or finished. Nothing was written.
    #[error("lease lost on job {id}: it is {status} now")]
    LeaseLost {
        /// The job the write named.
        id: JobId,
        /// Its status at the time of the write.
        status: JobStatus,
    },
    /// The state machine does not allow the change.
    #[error("job {id}: {source}")]
    IllegalTransition {
        /// The job the change was refused for.
        id: JobId,
        /// The status it was in and the transition refused.
        #[source]
        source: IllegalTransition,
    },
    /// A row or index in the database does not match what this crate expects, or the
    /// database refused a write that would break one of its constraints (such as the next
    /// job of a chain with an empty job type).
    #[error("unexpected data in the job store: {0}")]
    Corrupt(String),
    /// The database could not be reached or refused the statement.
    #[error("job store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether retrying the same call later may succeed (connection loss, pool timeout).
    pub fn is_backend(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// The storage of jobs. Object-safe: used as `Arc<dyn JobStore>`.
///
/// Every implementation must pass the suite in `jobs_core::conformance`.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts a pending job unless one for the same (resource, job type) is active, in
    /// which case it returns that one. Race-free: the database's unique index decides.
    async fn insert(&self, job: NewJob) -> Result<Insert, StoreError>;

    /// Inserts many jobs, each as [`JobStore::insert`] would, and answers per job in input
    /// order: [`Insert::Inserted`] or [`Insert::Busy`] with the active job of its (resource,
    /// job type). Jobs of one batch for the same (resource, job type) count in input order:
    /// the first is inserted (or is `Busy` with the job already active), the rest are `Busy`
    /// with that job. Race-free as `insert` is: the database's unique index decides, and a
    /// busy answer names a job that was active during the call. One round trip (one
    /// statement or one transaction) per batch in the common case; workers are woken once
    /// per batch. An empty batch answers an empty list without touching the database.
    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Insert>, StoreError>;

    /// The job with `id`, or [`StoreError::NotFound`] (an id never inserted, or a finished
    /// job that retention deleted).
    async fn get(&self, id: JobId) -> Result<Job, StoreError>;

    /// Jobs matching `query`, newest first (by id, descending), at most `query.limit`.
    async fn list(&self, query: &JobQuery) -> Result<Vec<Job>, StoreError>;

    /// Claims up to `limit` due pending jobs, oldest `run_at` first, each under a new lease.
    /// Two concurrent claims never return the same job.
    async fn claim(&self, params: &ClaimParams) -> Result<Vec<Job>, StoreError>;

    /// Renews a running job's heartbeat and writes coalesced progress and checkpoint, in one
    /// fenced write.
    async fn heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatAck, StoreError>;

    /// Ends claims, one fenced write per job (batched where the database allows). The outer
    /// error is a backend failure; each inner result is the status that job ended in
    /// (`pending` for a requeue).
    ///
    /// Chains: a completion marked [`FinishChain::Chained`] whose job's `then` is not empty
    /// also inserts the next job, in the same transaction: type and payload of `then[0]`,
    /// `then[1..]` as its chain, the same resource and `max_attempts`, `previous_job_id` the
    /// completed job; the completed job's `next_job_id` names it. When that (resource, type)
    /// already has an active job, nothing is inserted and `next_job_id` names the active job
    /// (whose own `previous_job_id` is left as it was). All or nothing: when the database
    /// refuses the insert, the completion is rolled back too (the job still runs under its
    /// lease), that job's result is the error, and the rest of the batch is written. Only a
    /// batch with such a completion pays for the transaction and the extra statements.
    async fn finish(
        &self,
        now: DateTime<Utc>,
        batch: &[Finish],
    ) -> Result<Vec<Result<JobStatus, StoreError>>, StoreError>;

    /// Requests a cancel: a pending job is cancelled at once, a running one gets
    /// `cancel_requested`. A terminal job gives [`StoreError::IllegalTransition`].
    async fn request_cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Job, StoreError>;

    /// Stale recovery: requeues or fails running jobs with stale heartbeats, fails jobs
    /// pending too long. Each change is guarded, so concurrent rescuers and heartbeats are
    /// safe.
    async fn rescue(&self, params: &RescueParams) -> Result<RescueReport, StoreError>;

    /// Retention: deletes at most `limit` finished jobs (completed, failed or cancelled)
    /// whose `finished_at` is before `finished_before`, oldest first, and returns how many it
    /// deleted. Pending and running jobs are never deleted. Links to a deleted job from the
    /// jobs that remain (`resumed_from`, `previous_job_id`, `next_job_id`) become `None`, so
    /// a link always names an existing job. Safe to call from many workers at once: each job
    /// is deleted once, and a call skips rows another transaction holds rather than wait for
    /// them. Fewer than `limit` means nothing more was eligible (or free) at the time; a
    /// `limit` of 0 deletes nothing.
    async fn delete_finished(
        &self,
        finished_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Reclaims the room of the row versions that claims and ends left behind, so claims and
    /// inserts stop stepping over them (Postgres: `VACUUM (SKIP_LOCKED)` of the jobs table,
    /// skipped while another vacuum holds it). Changes no job. A worker calls it when its
    /// queue runs dry after [`WorkerConfig::compact_after`](crate::runtime::WorkerConfig::compact_after)
    /// claims. Does nothing unless overridden.
    async fn compact(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The definition of the one-active-job index, read back from the database.
    async fn active_index(&self) -> Result<ActiveIndex, StoreError>;

    /// Registers a worker, or refreshes it if its id is known.
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), StoreError>;

    /// Moves a registered worker's `last_seen`; `NotFound`-free: an unknown id is a no-op
    /// that returns `false`.
    async fn touch_worker(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Removes a worker that shut down.
    async fn remove_worker(&self, id: &str) -> Result<(), StoreError>;

    /// Workers seen at or after `seen_since`, most recently seen first.
    async fn list_workers(&self, seen_since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError>;

    /// Claims `request.key` for `request` ([request keys](crate::keys)):
    /// [`KeyClaim::Claimed`] when the key is new, or held without an answer by the same
    /// request (key, request and fingerprint) claimed before `stale_before` (a request whose
    /// process died: this one takes over, and the old claim can no longer answer or release
    /// it); [`KeyClaim::Running`] while the same request holds it otherwise;
    /// [`KeyClaim::Answered`] with the kept answer once it has one; [`KeyClaim::Mismatch`]
    /// when another request (request or fingerprint) has it. Race-free: of concurrent claims
    /// of a new key exactly one is `Claimed`. `now` is kept as the claim's time.
    async fn claim_key(
        &self,
        request: &KeyedRequest<'_>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError>;

    /// Keeps `answer` for `key` if `claim` still holds it; whether it did.
    async fn answer_key(
        &self,
        key: &str,
        claim: &str,
        answer: &KeptAnswer,
    ) -> Result<bool, StoreError>;

    /// Lets go of `key` without an answer if `claim` still holds it (the request failed in a
    /// way a repeat may not), so the next request with it runs.
    async fn release_key(&self, key: &str, claim: &str) -> Result<(), StoreError>;

    /// Deletes the keys claimed before `claimed_before`, answered or not; how many.
    async fn delete_keys(&self, claimed_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// How many claims a worker should keep in flight at once. Stores whose claims run side
    /// by side (Postgres, with `SKIP LOCKED`) gain from a second claim while the first one's
    /// jobs start; a store with one writer (SQLite) only queues it. 1 unless overridden.
    fn parallel_claims(&self) -> usize {
        1
    }

    /// A signal that fires when jobs may have become claimable (a job was inserted or
    /// requeued), so workers claim at once instead of waiting for their next poll. `None`
    /// when the store cannot tell; workers then only poll.
    fn job_signal(&self) -> Option<Arc<Notify>> {
        None
    }
}

impl std::fmt::Debug for dyn JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn JobStore")
    }
}

impl dyn JobStore {
    /// Ends one claim; see [`JobStore::finish`].
    pub async fn finish_one(
        &self,
        now: DateTime<Utc>,
        finish: Finish,
    ) -> Result<JobStatus, StoreError> {
        let mut results = self.finish(now, std::slice::from_ref(&finish)).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("finish returned no result".into())))
    }
}

/// Parses the SQL text of the one-active-job index as a store reads it back from its catalog,
/// `CREATE UNIQUE INDEX name ON table [USING method] (col, col) WHERE predicate`, whitespace
/// runs counting as one space. The predicate is in the database's own spelling, so the store
/// parses it: `predicate_statuses` returns the status names it admits, in the order written,
/// or `None` when it does not recognise the predicate. Either that or a name that is no
/// [`JobStatus`] is [`StoreError::Corrupt`].
pub fn parse_active_index(
    definition: &str,
    predicate_statuses: fn(&str) -> Option<Vec<&str>>,
) -> Result<ActiveIndex, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("unexpected index definition: {definition}"));
    let definition = definition.split_whitespace().collect::<Vec<_>>().join(" ");
    let upper = definition.to_ascii_uppercase();
    let unique = upper.starts_with("CREATE UNIQUE INDEX");
    let where_at = upper.find(" WHERE ").ok_or_else(corrupt)?;
    let head = &definition[..where_at];
    let predicate = &definition[where_at + " WHERE ".len()..];
    let open = head.find('(').ok_or_else(corrupt)?;
    let close = head.rfind(')').ok_or_else(corrupt)?;
    let columns = head[open + 1..close]
        .split(',')
        .map(|column| column.trim().trim_matches('"').to_owned())
        .collect();
    let statuses = predicate_statuses(predicate)
        .ok_or_else(corrupt)?
        .into_iter()
        .map(|name| name.parse::<JobStatus>().map_err(|_| corrupt()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ActiveIndex {
        unique,
        columns,
        statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A predicate spelling for the tests: the names, comma-separated.
    fn names(predicate: &str) -> Option<Vec<&str>> {
        Some(predicate.split(',').map(str::trim).collect())
    }

    #[test]
    fn parses_the_head_and_hands_the_predicate_to_the_store() {
        let index = parse_active_index(
            "CREATE UNIQUE INDEX folio_jobs_one_active ON public.folio_jobs USING btree\n \
             (resource_key, \"job_type\") WHERE pending,  running",
            names,
        )
        .unwrap();
        assert!(index.unique);
        assert_eq!(index.columns, ["resource_key", "job_type"]);
        assert_eq!(index.statuses, [JobStatus::Pending, JobStatus::Running]);
    }

    #[test]
    fn rejects_index_without_predicate_or_with_unknown_statuses() {
        assert!(parse_active_index("CREATE INDEX x ON t (a)", names).is_err());
        assert!(parse_active_index("CREATE INDEX x ON t (a) WHERE pending", |_| None).is_err());
        assert!(parse_active_index("CREATE INDEX x ON t (a) WHERE pending, done", names).is_err());
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn listings_scan_the_key_for_completed_jobs_and_read_the_others_from_their_indexes() {
        assert_eq!(
            JobQuery::wanted_statuses(&[]),
            JobStatus::ALL.map(JobStatus::as_str)
        );
        assert_eq!(
            JobQuery::listing_branches(&[]),
            (JobStatus::ALL.map(JobStatus::as_str).to_vec(), Vec::new())
        );
        assert_eq!(
            JobQuery::listing_branches(&[
                JobStatus::Failed,
                JobStatus::Completed,
                JobStatus::Running
            ]),
            (vec!["completed"], vec!["failed", "running"])
        );
        assert_eq!(
            JobQuery::wanted_statuses(&[JobStatus::Cancelled]),
            ["cancelled"]
        );
    }
}
