//! Resume: a new job that continues a failed or cancelled one from its checkpoint.

use std::sync::Arc;

use super::Fixture;
use crate::{Acquire, FinishOutcome, JobError, JobStatus, JobStore, LockError};

/// The resumed job has the old type, resource, payload and checkpoint, and links back.
pub async fn resume_copies_payload_and_checkpoint_and_links_the_old_job(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("book-1").await;
    let checkpoint = serde_json::json!({ "last_page": 7 });
    fx.heartbeat(&job, None, Some(checkpoint.clone()))
        .await
        .unwrap();
    let error = JobError::new("engine_down", "connection refused", false);
    fx.finish(&job, FinishOutcome::Failed(error)).await.unwrap();

    let Acquire::Created(resumed) = fx.lock.resume(job.id).await.unwrap() else {
        panic!("nothing else is active");
    };
    assert_ne!(resumed.id, job.id);
    assert_eq!(resumed.status, JobStatus::Pending);
    assert_eq!(resumed.resumed_from, Some(job.id));
    assert_eq!(resumed.checkpoint, Some(checkpoint.clone()));
    assert_eq!(resumed.payload, job.payload);
    assert_eq!(resumed.resource_key, job.resource_key);
    assert_eq!(resumed.job_type, job.job_type);
    assert_eq!(resumed.attempt, 0);
    assert_eq!(resumed.error, None);
    assert_eq!(fx.claim_one().await.checkpoint, Some(checkpoint));

    // A cancelled job resumes too.
    let cancelled = fx.create("book-2").await;
    fx.lock.cancel(cancelled.id).await.unwrap();
    assert!(matches!(
        fx.lock.resume(cancelled.id).await.unwrap(),
        Acquire::Created(_)
    ));
}

/// Completed, pending and running jobs are not resumable.
pub async fn resume_refuses_completed_and_active_jobs(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let completed = fx.running("a").await;
    fx.finish(&completed, FinishOutcome::Completed)
        .await
        .unwrap();
    let running = fx.running("b").await;
    let pending = fx.create("c").await;
    for (job, status) in [
        (completed, JobStatus::Completed),
        (running, JobStatus::Running),
        (pending, JobStatus::Pending),
    ] {
        match fx.lock.resume(job.id).await {
            Err(LockError::NotResumable { id, status: seen }) => {
                assert_eq!(id, job.id);
                assert_eq!(seen, status);
            }
            other => panic!("expected not resumable, got {other:?}"),
        }
    }
}

/// Resume follows the lock: with another job active it answers Busy with that job.
pub async fn resume_answers_busy_when_another_job_is_active(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.finish(&job, FinishOutcome::Cancelled).await.unwrap();
    let other = fx.create("a").await;
    assert_eq!(fx.lock.resume(job.id).await.unwrap(), Acquire::Busy(other));
}
