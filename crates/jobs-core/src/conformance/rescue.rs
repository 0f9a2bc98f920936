//! Stale detection: requeue or fail after `stale_after`, and the pending timeout.

use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, TEST_TYPE};
use crate::{JobStatus, JobStore, RescueScope, codes};

/// A stale running job with attempts left goes back to pending, checkpoint intact.
pub async fn rescue_requeues_a_stale_job_with_attempts_left(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.heartbeat(&job, None, Some(serde_json::json!({ "page": 3 })))
        .await
        .unwrap();
    fx.advance_past_stale();
    let report = fx.rescue_all().await;
    assert_eq!(report.requeued, [job.id]);
    assert!(report.failed.is_empty());
    let requeued = fx.get(&job).await;
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 1);
    assert_eq!(requeued.run_at, fx.now());
    assert_eq!(requeued.worker_id, None);
    assert_eq!(requeued.checkpoint, Some(serde_json::json!({ "page": 3 })));
    let error = requeued.error.unwrap();
    assert_eq!(error.code, codes::LEASE_EXPIRED);
    assert!(error.retryable);
    assert_eq!(fx.claim_one().await.attempt, 2);
}

/// A stale job on its last attempt fails with `lease_expired`.
pub async fn rescue_fails_a_stale_job_with_attempts_used_as_lease_expired(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    for attempt in 2..=3 {
        fx.advance_past_stale();
        assert_eq!(fx.rescue_all().await.requeued, [job.id]);
        assert_eq!(fx.claim_one().await.attempt, attempt);
    }
    fx.advance_past_stale();
    let report = fx.rescue_all().await;
    assert_eq!(report.failed, [job.id]);
    let failed = fx.get(&job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempt, 3);
    assert_eq!(failed.finished_at, Some(fx.now()));
    let error = failed.error.unwrap();
    assert_eq!(error.code, codes::LEASE_EXPIRED);
    assert!(!error.retryable);
}

/// A heartbeat exactly `stale_after` old is still fresh; a microsecond more is stale.
pub async fn rescue_leaves_fresh_heartbeats_alone(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.advance(Duration::from_secs(20));
    fx.heartbeat(&job, None, None).await.unwrap();
    fx.advance(fx.lock.policy().stale_after);
    assert!(fx.rescue_all().await.is_empty());
    assert_eq!(fx.get(&job).await.status, JobStatus::Running);
    fx.advance(Duration::from_micros(1));
    assert_eq!(fx.rescue_all().await.requeued, [job.id]);
}

/// A stale job whose cancel was requested ends cancelled: nobody wants it run again.
pub async fn rescue_cancels_a_stale_job_whose_cancel_was_requested(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.lock.cancel(job.id).await.unwrap();
    fx.advance_past_stale();
    let report = fx.rescue_all().await;
    assert_eq!(report.cancelled, [job.id]);
    let cancelled = fx.get(&job).await;
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(fx.now()));
}

/// A job no worker claimed within `pending_timeout` fails with `pending_timeout`.
pub async fn pending_timeout_fails_a_job_never_claimed(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.create("a").await;
    fx.advance(fx.lock.policy().pending_timeout);
    assert!(fx.rescue_all().await.is_empty());
    fx.advance(Duration::from_secs(1));
    assert_eq!(fx.rescue_all().await.failed, [job.id]);
    let failed = fx.get(&job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().code, codes::PENDING_TIMEOUT);
    assert!(fx.claim(10).await.is_empty());
}

/// The pending timeout runs from `run_at`: a job backing off is not timed out early.
pub async fn pending_timeout_counts_from_when_the_job_became_due(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    let timeout = fx.lock.policy().pending_timeout;
    fx.requeue(&job, timeout).await;
    fx.advance(timeout + Duration::from_secs(60));
    assert!(fx.rescue_all().await.is_empty());
    assert_eq!(fx.get(&job).await.status, JobStatus::Pending);
    fx.advance(timeout);
    assert_eq!(fx.rescue_all().await.failed, [job.id]);
}

/// The lazy rescue inside acquire looks at its own (resource, job type) only.
pub async fn scoped_rescue_touches_only_its_resource(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let a = fx.running("a").await;
    let b = fx.running("b").await;
    fx.advance_past_stale();
    let scope = RescueScope::Resource {
        resource_key: "b".into(),
        job_type: TEST_TYPE.into(),
    };
    let params = fx.lock.policy().rescue_params(fx.now(), scope);
    let report = fx.store.rescue(&params).await.unwrap();
    assert_eq!(report.requeued, [b.id]);
    assert_eq!(fx.get(&a).await.status, JobStatus::Running);
    let other_type = RescueScope::Resource {
        resource_key: "a".into(),
        job_type: "other".into(),
    };
    let params = fx.lock.policy().rescue_params(fx.now(), other_type);
    assert!(fx.store.rescue(&params).await.unwrap().is_empty());
}
