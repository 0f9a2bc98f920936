//! Heartbeats with coalesced progress and checkpoint writes.

use std::sync::Arc;
use std::time::Duration;

use super::Fixture;
use crate::{Finish, FinishOutcome, JobStatus, JobStore, Progress};

fn progress(completed: u64) -> Progress {
    Progress {
        total: Some(12),
        completed,
        failed: 1,
        current_item: Some((completed + 1).to_string()),
        last_completed_item: Some(completed.to_string()),
        message: Some(format!("page {completed} done")),
    }
}

/// A heartbeat moves `heartbeat_at` to now and nothing else.
pub async fn heartbeat_renews_heartbeat_at(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.advance(Duration::from_secs(5));
    let ack = fx.heartbeat(&job, None, None).await.unwrap();
    assert!(!ack.cancel_requested);
    let after = fx.get(&job).await;
    assert_eq!(after.heartbeat_at, Some(fx.now()));
    assert_eq!(after.started_at, job.started_at);
    assert_eq!(after.progress, job.progress);
    assert_eq!(after.lease, job.lease);
}

/// Progress and checkpoint ride on the heartbeat; omitted ones stay as they were.
pub async fn heartbeat_writes_progress_and_checkpoint_together(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let checkpoint = serde_json::json!({ "after_page": 4 });
    fx.heartbeat(&job, Some(progress(4)), Some(checkpoint.clone()))
        .await
        .unwrap();
    let after = fx.get(&job).await;
    assert_eq!(after.progress, progress(4));
    assert_eq!(after.checkpoint, Some(checkpoint.clone()));

    fx.advance(Duration::from_secs(5));
    fx.heartbeat(&job, None, None).await.unwrap();
    let later = fx.get(&job).await;
    assert_eq!(later.progress, progress(4));
    assert_eq!(later.checkpoint, Some(checkpoint));

    fx.heartbeat(&job, Some(progress(5)), None).await.unwrap();
    assert_eq!(fx.get(&job).await.progress, progress(5));
}

/// A cancel request reaches the worker through its next heartbeat.
pub async fn heartbeat_reports_a_cancel_request(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.lock.cancel(job.id).await.unwrap();
    let ack = fx.heartbeat(&job, None, None).await.unwrap();
    assert!(ack.cancel_requested);
    assert_eq!(fx.get(&job).await.status, JobStatus::Running);
}

/// The checkpoint stays through a requeue and is handed to the next claim.
pub async fn checkpoint_survives_a_requeue_and_the_next_claim(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let checkpoint = serde_json::json!({ "done": [1, 2, 3] });
    fx.heartbeat(&job, Some(progress(3)), Some(checkpoint.clone()))
        .await
        .unwrap();
    let requeued = fx.requeue(&job, Duration::ZERO).await;
    assert_eq!(requeued.checkpoint, Some(checkpoint.clone()));
    let next = fx.claim_one().await;
    assert_eq!(next.checkpoint, Some(checkpoint));
    assert_eq!(next.progress, progress(3));
}

/// A finish carries the last coalesced progress and checkpoint in the same write.
pub async fn finish_flushes_the_last_progress_and_checkpoint(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let finish = Finish {
        progress: Some(progress(12)),
        checkpoint: Some(serde_json::json!({ "after_page": 12 })),
        ..Finish::new(job.id, job.lease, FinishOutcome::Completed)
    };
    let status = fx.store.finish_one(fx.now(), finish).await.unwrap();
    assert_eq!(status, JobStatus::Completed);
    let done = fx.get(&job).await;
    assert_eq!(done.progress, progress(12));
    assert_eq!(
        done.checkpoint,
        Some(serde_json::json!({ "after_page": 12 }))
    );
}
