//! Complete, fail, requeue and cancel; terminal states are absorbing.

use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, assert_lease_lost};
use crate::{
    FinishOutcome, IllegalTransition, Job, JobError, JobStatus, JobStore, RecoveryPolicy,
    StoreError, Transition,
};

/// Complete sets the status and `finished_at`, clears the last attempt's error, and keeps
/// who ran it.
pub async fn complete_marks_the_job_completed_and_finished(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let first = fx.running("a").await;
    fx.requeue(&first, Duration::ZERO).await;
    let job = fx.claim_one().await;
    assert!(job.error.is_some(), "a requeued job keeps its last error");
    fx.advance(Duration::from_secs(2));
    let done = fx.finish(&job, FinishOutcome::Completed).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.finished_at, Some(fx.now()));
    assert_eq!(done.error, None, "a completed job shows no error");
    assert_eq!(done.attempt, 2);
    assert_eq!(done.worker_id, job.worker_id);
    assert_eq!(fx.get(&job).await, done);
}

/// A failed job shows the handler's own error, word for word.
pub async fn fail_keeps_the_original_error(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let error = JobError::new(
        "undecodable_image",
        "page 7: invalid PNG signature [137, 80, 78, 0] — \"quotes\" and 'apostrophes'",
        false,
    );
    let failed = fx
        .finish(&job, FinishOutcome::Failed(error.clone()))
        .await
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error, Some(error));
    assert_eq!(failed.finished_at, Some(fx.now()));
    assert_eq!(fx.get(&job).await, failed);
}

/// A retryable error requeues for later: attempt counted, checkpoint and error kept.
pub async fn requeue_with_backoff_consumes_an_attempt_and_keeps_the_checkpoint(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let checkpoint = serde_json::json!({ "after": 2 });
    fx.heartbeat(&job, None, Some(checkpoint.clone()))
        .await
        .unwrap();
    let error = JobError::new("timeout", "engine timed out after 30s", true);
    let run_at = fx.now() + chrono::Duration::seconds(4);
    let outcome = FinishOutcome::Requeue {
        error: error.clone(),
        run_at,
        consume_attempt: true,
    };
    let requeued = fx.finish(&job, outcome).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 1);
    assert_eq!(requeued.run_at, run_at);
    assert_eq!(requeued.error, Some(error));
    assert_eq!(requeued.checkpoint, Some(checkpoint));
    assert_eq!(requeued.worker_id, None);
    assert_eq!(requeued.finished_at, None);
    fx.advance(Duration::from_secs(4));
    assert_eq!(fx.claim_one().await.attempt, 2);
}

/// A shutdown hands the job back without counting the attempt.
pub async fn interrupted_requeue_gives_the_attempt_back(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let outcome = FinishOutcome::Requeue {
        error: JobError::new(crate::codes::INTERRUPTED, "worker shut down", true),
        run_at: fx.now(),
        consume_attempt: false,
    };
    let requeued = fx.finish(&job, outcome).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 0);
    assert_eq!(fx.claim_one().await.attempt, 1);
}

/// A job whose cancel was requested is cancelled, not requeued, when handed back.
pub async fn requeue_of_a_job_with_a_cancel_request_cancels_it(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.lock.cancel(job.id).await.unwrap();
    let ended = fx.requeue(&job, Duration::ZERO).await;
    assert_eq!(ended.status, JobStatus::Cancelled);
    assert_eq!(ended.finished_at, Some(fx.now()));
    assert!(fx.claim(10).await.is_empty());
}

/// A pending job is cancelled at once and is never claimed.
pub async fn cancel_of_a_pending_job_cancels_it_at_once(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.create("a").await;
    let cancelled = fx.lock.cancel(job.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(fx.now()));
    assert!(fx.claim(10).await.is_empty());
    assert_eq!(fx.get(&job).await, cancelled);
}

/// A running job is flagged; the runner's acknowledgement cancels it.
pub async fn cancel_of_a_running_job_flags_it_until_the_runner_acknowledges(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let flagged = fx.lock.cancel(job.id).await.unwrap();
    assert_eq!(flagged.status, JobStatus::Running);
    assert!(flagged.cancel_requested);
    assert_eq!(flagged.finished_at, None);
    let again = fx.lock.cancel(job.id).await.unwrap();
    assert_eq!(again, flagged, "a second cancel request changes nothing");
    let cancelled = fx.finish(&job, FinishOutcome::Cancelled).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(fx.now()));
}

/// Cancelling a finished job is refused with a typed error.
pub async fn cancel_of_a_terminal_job_is_an_illegal_transition(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.finish(&job, FinishOutcome::Completed).await.unwrap();
    match fx.lock.cancel(job.id).await {
        Err(StoreError::IllegalTransition { id, source }) => {
            assert_eq!(id, job.id);
            assert_eq!(
                source,
                IllegalTransition {
                    from: JobStatus::Completed,
                    transition: Transition::Cancel
                }
            );
        }
        other => panic!("expected an illegal transition, got {other:?}"),
    }
}

async fn ended_jobs(fx: &Fixture) -> Vec<Job> {
    let completed = fx.running("completed").await;
    fx.finish(&completed, FinishOutcome::Completed)
        .await
        .unwrap();
    let failed = fx.running("failed").await;
    let error = JobError::new("boom", "it broke", false);
    fx.finish(&failed, FinishOutcome::Failed(error))
        .await
        .unwrap();
    let cancelled = fx.running("cancelled").await;
    fx.finish(&cancelled, FinishOutcome::Cancelled)
        .await
        .unwrap();
    let cancelled_pending = fx.create("cancelled-pending").await;
    fx.lock.cancel(cancelled_pending.id).await.unwrap();
    vec![completed, failed, cancelled, cancelled_pending]
}

/// No write changes a completed, failed or cancelled job: not a worker's, not a cancel,
/// not a claim, not a rescue hours later.
pub async fn terminal_jobs_are_absorbing(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let jobs = ended_jobs(&fx).await;
    let mut before = Vec::new();
    for job in &jobs {
        before.push(fx.get(job).await);
    }
    fx.advance(Duration::from_secs(24 * 3600));
    for (job, stored) in jobs.iter().zip(&before) {
        assert_lease_lost(fx.heartbeat(job, None, None).await, stored.status);
        for outcome in [
            FinishOutcome::Completed,
            FinishOutcome::Failed(JobError::new("late", "late error", false)),
            FinishOutcome::Cancelled,
            FinishOutcome::Requeue {
                error: JobError::new("late", "late retry", true),
                run_at: fx.now(),
                consume_attempt: false,
            },
        ] {
            assert_lease_lost(fx.finish(job, outcome).await, stored.status);
        }
        assert!(matches!(
            fx.lock.cancel(job.id).await,
            Err(StoreError::IllegalTransition { .. })
        ));
    }
    assert!(fx.claim(10).await.is_empty());
    let strict = RecoveryPolicy {
        stale_after: Duration::ZERO,
        pending_timeout: Duration::ZERO,
    };
    let params = strict.rescue_params(fx.now(), crate::RescueScope::All);
    assert!(fx.store.rescue(&params).await.unwrap().is_empty());
    for stored in &before {
        assert_eq!(&fx.store.get(stored.id).await.unwrap(), stored);
    }
}
