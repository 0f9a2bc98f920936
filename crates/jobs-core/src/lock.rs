//! The lock service: one active job per (resource, job type), with lazy rescue, resume and
//! cancel.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::job::{ChainStep, Job, JobError, JobId, JobStatus, NewJob, codes};
use crate::store::{Insert, JobStore, RescueParams, RescueReport, RescueScope, StoreError};

/// When jobs count as stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// A running job whose heartbeat is older than this is requeued or failed.
    pub stale_after: Duration,
    /// A job pending (due but unclaimed) for longer than this fails with `pending_timeout`.
    pub pending_timeout: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(30),
            pending_timeout: Duration::from_secs(10 * 60),
        }
    }
}

impl RecoveryPolicy {
    /// The rescue at `now` under this policy: cut-offs `now - stale_after` and
    /// `now - pending_timeout`, and the errors written on the jobs it changes.
    pub fn rescue_params(&self, now: DateTime<Utc>, scope: RescueScope) -> RescueParams {
        let stale_after = humanize(self.stale_after);
        RescueParams {
            now,
            stale_before: now - to_chrono(self.stale_after),
            pending_before: now - to_chrono(self.pending_timeout),
            requeue_error: JobError::new(
                codes::LEASE_EXPIRED,
                format!("no heartbeat for more than {stale_after}: requeued"),
                true,
            ),
            expired_error: JobError::new(
                codes::LEASE_EXPIRED,
                format!("no heartbeat for more than {stale_after} and no attempts left"),
                false,
            ),
            pending_timeout_error: JobError::new(
                codes::PENDING_TIMEOUT,
                format!(
                    "not claimed within {}: is a worker running for this job type?",
                    humanize(self.pending_timeout)
                ),
                false,
            ),
            scope,
        }
    }

    /// Whether the rescue at `now` would change `job`: the same rule the stores apply.
    pub fn is_stuck(&self, job: &Job, now: DateTime<Utc>) -> bool {
        match job.status {
            JobStatus::Running => job
                .heartbeat_at
                .is_some_and(|at| at < now - to_chrono(self.stale_after)),
            JobStatus::Pending => job.run_at < now - to_chrono(self.pending_timeout),
            _ => false,
        }
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).expect("duration fits in chrono::Duration")
}

fn humanize(duration: Duration) -> String {
    format!("{:?}", duration)
}

/// What [`LockService::acquire`] and [`LockService::resume`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquire {
    /// A new pending job.
    Created(Job),
    /// Another job for the same (resource, job type) is active.
    Busy(Job),
}

impl From<Insert> for Acquire {
    fn from(insert: Insert) -> Self {
        match insert {
            Insert::Inserted(created) => Acquire::Created(created),
            Insert::Busy(active) => Acquire::Busy(active),
        }
    }
}

/// One job to create with [`LockService::acquire_many`]: what [`LockService::acquire_chain`]
/// takes.
#[derive(Debug, Clone, PartialEq)]
pub struct AcquireRequest {
    /// What the job works on (see [`Job::resource_key`]).
    pub resource_key: String,
    /// Which handler runs it; at most one job per (`resource_key`, `job_type`) is active.
    pub job_type: String,
    /// The handler's input, stored as it is.
    pub payload: serde_json::Value,
    /// The chain to run after it (see [`Job::then`]); empty for none.
    pub then: Vec<ChainStep>,
    /// The W3C `traceparent` to store with the job (see [`Job::trace_parent`]); `None`
    /// takes the current span's ([`crate::trace::current_trace_parent`]).
    pub trace_parent: Option<String>,
}

impl AcquireRequest {
    /// A job of `job_type` on `resource_key` with `payload`, without a chain.
    pub fn new(
        resource_key: impl Into<String>,
        job_type: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            resource_key: resource_key.into(),
            job_type: job_type.into(),
            payload,
            then: Vec::new(),
            trace_parent: None,
        }
    }

    /// The same request with `then` as its chain.
    pub fn with_chain(mut self, then: Vec<ChainStep>) -> Self {
        self.then = then;
        self
    }

    /// The same request with `trace_parent` as the job's trace parent instead of the
    /// current span's (an invalid one is dropped: the job is stored without one).
    pub fn with_trace_parent(mut self, trace_parent: impl Into<String>) -> Self {
        self.trace_parent = Some(trace_parent.into());
        self
    }
}

/// Errors of the lock service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Only failed or cancelled jobs can be resumed.
    #[error("job {id} is {status}: only failed or cancelled jobs can be resumed")]
    NotResumable {
        /// The job asked to resume.
        id: JobId,
        /// Its status then: pending, running or completed.
        status: JobStatus,
    },
    /// The store failed, or (resume) holds no job with that id: [`StoreError::NotFound`].
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Acquire, resume and cancel: the operations clients use to start and stop jobs.
#[derive(Debug, Clone)]
pub struct LockService {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    policy: RecoveryPolicy,
    max_attempts: u32,
}

impl LockService {
    /// Default `max_attempts` of new jobs.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// A lock service over `store`: the jobs it acquires get [`Self::DEFAULT_MAX_ATTEMPTS`],
    /// every time it writes comes from `clock`, and `policy` decides when its lazy rescue
    /// takes an active job as stuck.
    pub fn new(store: Arc<dyn JobStore>, clock: Arc<dyn Clock>, policy: RecoveryPolicy) -> Self {
        Self {
            store,
            clock,
            policy,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets `max_attempts` of the jobs it creates (at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The store it writes to, for the reads it has no method of its own for (`get`, `list`).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    /// The clock that stamps the jobs it creates and times its rescues.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// When its lazy rescue (and [`LockService::rescue`]) takes an active job as stuck.
    pub fn policy(&self) -> RecoveryPolicy {
        self.policy
    }

    /// Creates a pending job for (`resource_key`, `job_type`), or answers `Busy` with the
    /// active one. Before answering `Busy` it rescues a stuck active job (lazy rescue), so a
    /// resource whose worker died is never locked forever, even with no worker running.
    /// The job's trace parent is the current span's (see [`crate::trace`]).
    pub async fn acquire(
        &self,
        resource_key: &str,
        job_type: &str,
        payload: serde_json::Value,
    ) -> Result<Acquire, StoreError> {
        self.acquire_chain(resource_key, job_type, payload, Vec::new())
            .await
    }

    /// [`LockService::acquire`] of a job with a chain: when the job completes, the store
    /// inserts `then[0]` as the next job on the same resource, carrying the rest of `then`
    /// (see [`Job::then`]). Busy rules apply to this first job only; `Busy` leaves the active
    /// job's chain as it is.
    pub async fn acquire_chain(
        &self,
        resource_key: &str,
        job_type: &str,
        payload: serde_json::Value,
        then: Vec<ChainStep>,
    ) -> Result<Acquire, StoreError> {
        let request = AcquireRequest::new(resource_key, job_type, payload).with_chain(then);
        let job = self.new_job(
            request,
            self.clock.now(),
            &crate::trace::current_trace_parent(),
        );
        self.insert_with_rescue(job).await
    }

    /// [`LockService::acquire_chain`] of many jobs at once: answers per request, in order,
    /// `Created` or `Busy` with the active job, through one [`JobStore::insert_many`] (one
    /// round trip per batch in the common case). Requests of one batch for the same
    /// (resource, job type) count in order: the first creates the job (or is `Busy` with the
    /// active one), the rest are `Busy` with it. Requests that found a stuck active job get
    /// the lazy rescue of [`LockService::acquire`], and only those are inserted again. A
    /// request without a trace parent of its own takes the current span's.
    pub async fn acquire_many(
        &self,
        requests: Vec<AcquireRequest>,
    ) -> Result<Vec<Acquire>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let current_trace_parent = crate::trace::current_trace_parent();
        let jobs: Vec<NewJob> = requests
            .into_iter()
            .map(|request| self.new_job(request, now, &current_trace_parent))
            .collect();
        let mut answers = self.store.insert_many(jobs.clone()).await?;
        if answers.len() != jobs.len() {
            return Err(StoreError::Corrupt(format!(
                "insert_many answered {} of {} jobs",
                answers.len(),
                jobs.len()
            )));
        }
        // Lazy rescue: each stuck active job once, then the requests that found one again.
        let stuck: Vec<usize> = (0..jobs.len())
            .filter(|&index| match &answers[index] {
                Insert::Busy(active) => self.policy.is_stuck(active, now),
                Insert::Inserted(_) => false,
            })
            .collect();
        if !stuck.is_empty() {
            let mut rescued = std::collections::HashSet::new();
            for &index in &stuck {
                let job = &jobs[index];
                if !rescued.insert((job.resource_key.as_str(), job.job_type.as_str())) {
                    continue;
                }
                let scope = RescueScope::Resource {
                    resource_key: job.resource_key.clone(),
                    job_type: job.job_type.clone(),
                };
                let report = self
                    .store
                    .rescue(&self.policy.rescue_params(now, scope))
                    .await?;
                tracing::info!(job.id = %answers[index].job().id, ?report, "lazy rescue before acquire");
            }
            let again = stuck.iter().map(|&index| jobs[index].clone()).collect();
            let retried = self.store.insert_many(again).await?;
            if retried.len() != stuck.len() {
                return Err(StoreError::Corrupt(format!(
                    "insert_many answered {} of {} jobs",
                    retried.len(),
                    stuck.len()
                )));
            }
            for (index, answer) in stuck.into_iter().zip(retried) {
                answers[index] = answer;
            }
        }
        Ok(answers.into_iter().map(Acquire::from).collect())
    }

    /// The new job `request` asks for, stamped `now`, with `current_trace_parent` unless
    /// the request names its own.
    pub(crate) fn new_job(
        &self,
        request: AcquireRequest,
        now: DateTime<Utc>,
        current_trace_parent: &Option<String>,
    ) -> NewJob {
        NewJob {
            id: JobId::new(),
            resource_key: request.resource_key,
            job_type: request.job_type,
            payload: request.payload,
            max_attempts: self.max_attempts,
            checkpoint: None,
            resumed_from: None,
            then: request.then,
            trace_parent: request
                .trace_parent
                .or_else(|| current_trace_parent.clone()),
            now,
        }
    }

    /// Creates a new pending job that continues a failed or cancelled one: same type,
    /// resource, payload, chain (a failure or cancel stopped the chain; the resumed job
    /// carries it on) and trace parent (the current span's when the old job had none), its
    /// checkpoint copied, `resumed_from` set. Busy rules apply.
    pub async fn resume(&self, id: JobId) -> Result<Acquire, LockError> {
        self.resume_job(id, None).await
    }

    /// [`LockService::resume`] with `then` as the resumed job's chain instead of the old
    /// job's (empty: no chain).
    pub async fn resume_with_chain(
        &self,
        id: JobId,
        then: Vec<ChainStep>,
    ) -> Result<Acquire, LockError> {
        self.resume_job(id, Some(then)).await
    }

    async fn resume_job(
        &self,
        id: JobId,
        then: Option<Vec<ChainStep>>,
    ) -> Result<Acquire, LockError> {
        let previous = self.store.get(id).await?;
        if !matches!(previous.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(LockError::NotResumable {
                id,
                status: previous.status,
            });
        }
        let job = NewJob {
            id: JobId::new(),
            resource_key: previous.resource_key,
            job_type: previous.job_type,
            payload: previous.payload,
            max_attempts: previous.max_attempts,
            checkpoint: previous.checkpoint,
            resumed_from: Some(previous.id),
            then: then.unwrap_or(previous.then),
            trace_parent: previous
                .trace_parent
                .or_else(crate::trace::current_trace_parent),
            now: self.clock.now(),
        };
        Ok(self.insert_with_rescue(job).await?)
    }

    /// Cancels a pending job at once; flags a running one so its handler stops at a safe
    /// point and the runner marks it cancelled. A terminal job is an illegal transition.
    pub async fn cancel(&self, id: JobId) -> Result<Job, StoreError> {
        self.store.request_cancel(id, self.clock.now()).await
    }

    /// Stale recovery over every job (what each worker runs every heartbeat interval).
    pub async fn rescue(&self) -> Result<RescueReport, StoreError> {
        let params = self
            .policy
            .rescue_params(self.clock.now(), RescueScope::All);
        self.store.rescue(&params).await
    }

    async fn insert_with_rescue(&self, job: NewJob) -> Result<Acquire, StoreError> {
        match self.store.insert(job.clone()).await? {
            Insert::Inserted(created) => Ok(Acquire::Created(created)),
            Insert::Busy(active) if self.policy.is_stuck(&active, job.now) => {
                let scope = RescueScope::Resource {
                    resource_key: job.resource_key.clone(),
                    job_type: job.job_type.clone(),
                };
                let report = self
                    .store
                    .rescue(&self.policy.rescue_params(job.now, scope))
                    .await?;
                tracing::info!(job.id = %active.id, ?report, "lazy rescue before acquire");
                Ok(self.store.insert(job).await?.into())
            }
            Insert::Busy(active) => Ok(Acquire::Busy(active)),
        }
    }
}

impl LockService {
    /// [`LockService::enqueue`] of many typed jobs at once, each on its resource: answers per
    /// job, in order, as [`LockService::acquire_many`] does.
    ///
    /// # Panics
    /// When a job does not serialize to JSON, as [`LockService::enqueue`].
    pub async fn enqueue_many<'a, J: crate::typed::Job>(
        &self,
        jobs: impl IntoIterator<Item = (&'a str, &'a J)>,
    ) -> Result<Vec<Acquire>, StoreError> {
        let requests = jobs
            .into_iter()
            .map(|(resource_key, job)| {
                AcquireRequest::new(resource_key, J::TYPE, crate::typed::payload_of(job))
            })
            .collect();
        self.acquire_many(requests).await
    }
}
