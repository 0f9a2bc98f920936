//! Where a pickup's time goes: a [`JobStore`] that passes every call through and, while
//! recording, notes when each claim started and returned; a task notes when the store's job
//! signal fired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use jobs_core::{
    ActiveIndex, ClaimParams, Finish, HeartbeatAck, HeartbeatParams, Insert, Job, JobId, JobQuery,
    JobStatus, JobStore, KeptAnswer, KeyClaim, KeyedRequest, NewJob, RescueParams, RescueReport,
    StoreError, WorkerInfo, async_trait,
};
use tokio::sync::Notify;

/// Instants of one kind, in the order they happened.
#[derive(Default)]
pub(crate) struct Marks(Mutex<Vec<Instant>>);

impl Marks {
    fn push(&self, at: Instant) {
        self.0.lock().unwrap().push(at);
    }

    /// The first mark at or after `after`. Marks are pushed in time order: one task pushes
    /// the signals, and only claims that took a job push theirs, one job at a time.
    pub(crate) fn first_after(&self, after: Instant) -> Option<Instant> {
        let marks = self.0.lock().unwrap();
        let index = marks.partition_point(|mark| *mark < after);
        marks.get(index).copied()
    }
}

/// The marks of a recording: claims that returned at least one job (their start and end),
/// and job signals.
#[derive(Default)]
pub(crate) struct Timeline {
    recording: AtomicBool,
    pub(crate) claim_started: Marks,
    pub(crate) claim_returned: Marks,
    pub(crate) signalled: Marks,
}

impl Timeline {
    pub(crate) fn record(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    fn recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// Notes every firing of `signal` while recording, until the signal's store is dropped.
    pub(crate) fn watch(self: &Arc<Self>, signal: Arc<Notify>) {
        let timeline = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                signal.notified().await;
                let at = Instant::now();
                let Some(timeline) = timeline.upgrade() else {
                    return;
                };
                if timeline.recording() {
                    timeline.signalled.push(at);
                }
            }
        });
    }
}

/// `inner`, with its claims timed into `timeline`.
pub(crate) struct TimedStore {
    pub(crate) inner: Arc<dyn JobStore>,
    pub(crate) timeline: Arc<Timeline>,
}

#[async_trait]
impl JobStore for TimedStore {
    async fn claim(&self, params: &ClaimParams) -> Result<Vec<Job>, StoreError> {
        let started = Instant::now();
        let claimed = self.inner.claim(params).await;
        if self.timeline.recording() && claimed.as_ref().is_ok_and(|jobs| !jobs.is_empty()) {
            self.timeline.claim_started.push(started);
            self.timeline.claim_returned.push(Instant::now());
        }
        claimed
    }

    async fn insert(&self, job: NewJob) -> Result<Insert, StoreError> {
        self.inner.insert(job).await
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Insert>, StoreError> {
        self.inner.insert_many(jobs).await
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        self.inner.get(id).await
    }

    async fn list(&self, query: &JobQuery) -> Result<Vec<Job>, StoreError> {
        self.inner.list(query).await
    }

    async fn heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatAck, StoreError> {
        self.inner.heartbeat(params).await
    }

    async fn finish(
        &self,
        now: DateTime<Utc>,
        batch: &[Finish],
    ) -> Result<Vec<Result<JobStatus, StoreError>>, StoreError> {
        self.inner.finish(now, batch).await
    }

    async fn request_cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Job, StoreError> {
        self.inner.request_cancel(id, now).await
    }

    async fn rescue(&self, params: &RescueParams) -> Result<RescueReport, StoreError> {
        self.inner.rescue(params).await
    }

    async fn delete_finished(
        &self,
        finished_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.inner.delete_finished(finished_before, limit).await
    }

    async fn compact(&self) -> Result<(), StoreError> {
        self.inner.compact().await
    }

    async fn active_index(&self) -> Result<ActiveIndex, StoreError> {
        self.inner.active_index().await
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        self.inner.register_worker(worker).await
    }

    async fn touch_worker(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.touch_worker(id, now).await
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        self.inner.remove_worker(id).await
    }

    async fn list_workers(&self, seen_since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        self.inner.list_workers(seen_since).await
    }

    async fn claim_key(
        &self,
        request: &KeyedRequest<'_>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        self.inner.claim_key(request, now, stale_before).await
    }

    async fn answer_key(
        &self,
        key: &str,
        claim: &str,
        answer: &KeptAnswer,
    ) -> Result<bool, StoreError> {
        self.inner.answer_key(key, claim, answer).await
    }

    async fn release_key(&self, key: &str, claim: &str) -> Result<(), StoreError> {
        self.inner.release_key(key, claim).await
    }

    async fn delete_keys(&self, claimed_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.delete_keys(claimed_before).await
    }

    fn parallel_claims(&self) -> usize {
        self.inner.parallel_claims()
    }

    fn job_signal(&self) -> Option<Arc<Notify>> {
        self.inner.job_signal()
    }
}
