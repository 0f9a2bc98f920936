//! Lease fencing: a worker that lost its claim can never write again.

use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, assert_lease_lost};
use crate::{Finish, FinishOutcome, JobError, JobStatus, JobStore, Progress};

fn every_finish(now: chrono::DateTime<chrono::Utc>) -> Vec<FinishOutcome> {
    vec![
        FinishOutcome::Completed,
        FinishOutcome::Failed(JobError::new("boom", "stale worker error", false)),
        FinishOutcome::Cancelled,
        FinishOutcome::Requeue {
            error: JobError::new("flaky", "stale worker retry", true),
            run_at: now,
            consume_attempt: true,
        },
        FinishOutcome::Requeue {
            error: JobError::new("interrupted", "stale worker shutdown", true),
            run_at: now,
            consume_attempt: false,
        },
    ]
}

/// A worker whose job was requeued and claimed by another gets `LeaseLost` for heartbeat,
/// progress, checkpoint, complete, fail, cancel and requeue, and the row stays as it was.
pub async fn stale_lease_gets_lease_lost_for_every_worker_write_and_changes_nothing(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    let paused = fx.running("a").await;
    fx.advance_past_stale();
    assert_eq!(fx.rescue_all().await.requeued, [paused.id]);
    let live = fx.claim_one().await;
    assert_eq!(live.id, paused.id);
    assert_ne!(live.lease, paused.lease);
    fx.heartbeat(
        &live,
        Some(Progress {
            completed: 1,
            ..Progress::default()
        }),
        None,
    )
    .await
    .unwrap();
    let before = fx.get(&live).await;

    fx.advance(Duration::from_secs(1));
    assert_lease_lost(fx.heartbeat(&paused, None, None).await, JobStatus::Running);
    let progress = Progress {
        completed: 99,
        ..Progress::default()
    };
    assert_lease_lost(
        fx.heartbeat(&paused, Some(progress), None).await,
        JobStatus::Running,
    );
    let checkpoint = serde_json::json!({ "stale": true });
    assert_lease_lost(
        fx.heartbeat(&paused, None, Some(checkpoint)).await,
        JobStatus::Running,
    );
    for outcome in every_finish(fx.now()) {
        assert_lease_lost(fx.finish(&paused, outcome).await, JobStatus::Running);
    }
    assert_eq!(
        fx.get(&live).await,
        before,
        "a stale lease must change nothing"
    );

    // The live worker's writes still go through.
    fx.heartbeat(&live, None, None).await.unwrap();
    let done = fx.finish(&live, FinishOutcome::Completed).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
}

/// Between requeue and the next claim the old lease is already dead.
pub async fn old_lease_is_lost_as_soon_as_the_job_is_requeued(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.advance_past_stale();
    fx.rescue_all().await;
    let before = fx.get(&job).await;
    assert_eq!(before.status, JobStatus::Pending);
    assert_lease_lost(fx.heartbeat(&job, None, None).await, JobStatus::Pending);
    for outcome in every_finish(fx.now()) {
        assert_lease_lost(fx.finish(&job, outcome).await, JobStatus::Pending);
    }
    assert_eq!(fx.get(&job).await, before);
}

/// In one batch of finishes, a stale lease fails only its own job.
pub async fn batch_finish_fences_each_job_on_its_own(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    for key in ["a", "b", "c", "d"] {
        fx.create(key).await;
    }
    let claimed = fx.claim(4).await;
    assert_eq!(claimed.len(), 4);
    let mut batch: Vec<Finish> = claimed
        .iter()
        .map(|job| Finish::new(job.id, job.lease, FinishOutcome::Completed))
        .collect();
    batch[1].lease = crate::Lease(claimed[1].lease.0 + 1000);
    batch[3].outcome = FinishOutcome::Failed(JobError::new("boom", "page 2 unreadable", false));
    let results = fx.store.finish(fx.now(), &batch).await.unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(*results[0].as_ref().unwrap(), JobStatus::Completed);
    assert!(
        matches!(results[1], Err(crate::StoreError::LeaseLost { id, .. }) if id == claimed[1].id)
    );
    assert_eq!(*results[2].as_ref().unwrap(), JobStatus::Completed);
    assert_eq!(*results[3].as_ref().unwrap(), JobStatus::Failed);
    assert_eq!(fx.get(&claimed[1]).await, claimed[1]);
}
