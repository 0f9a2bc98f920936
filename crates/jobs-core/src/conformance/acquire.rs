//! Acquire and Busy, concurrency, lazy rescue.

use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, TEST_TYPE};
use crate::testing::enqueue_new;
use crate::{Acquire, FinishOutcome, JobError, JobQuery, JobStatus, JobStore, Progress, codes};

/// A new job is pending, carries its payload and has every field at its start value.
pub async fn acquire_creates_a_pending_job_with_its_payload(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let payload = serde_json::json!({ "pages": [1, 2, 3], "note": "ünïcode ✓" });
    let job = enqueue_new(&fx.lock, "book-1", TEST_TYPE, payload.clone()).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.resource_key, "book-1");
    assert_eq!(job.job_type, TEST_TYPE);
    assert_eq!(job.payload, payload);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.progress, Progress::default());
    assert_eq!(job.checkpoint, None);
    assert_eq!(job.error, None);
    assert_eq!(job.resumed_from, None);
    assert!(!job.cancel_requested);
    assert_eq!(job.worker_id, None);
    assert_eq!(job.created_at, fx.now());
    assert_eq!(job.run_at, fx.now());
    assert_eq!(job.started_at, None);
    assert_eq!(job.heartbeat_at, None);
    assert_eq!(job.finished_at, None);
    assert_eq!(fx.get(&job).await, job);
}

/// While a job is pending or running, acquire answers Busy with that job.
pub async fn acquire_answers_busy_with_the_active_job(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.create("book-1").await;
    let again = fx
        .lock
        .acquire("book-1", TEST_TYPE, serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(again, Acquire::Busy(job.clone()));

    let running = fx.claim_one().await;
    match fx
        .lock
        .acquire("book-1", TEST_TYPE, serde_json::json!({}))
        .await
        .unwrap()
    {
        Acquire::Busy(active) => {
            assert_eq!(active.id, job.id);
            assert_eq!(active.status, JobStatus::Running);
            assert_eq!(active.lease, running.lease);
        }
        other => panic!("expected busy, got {other:?}"),
    }
    let all = fx
        .store
        .list(&JobQuery {
            resource_key: Some("book-1".into()),
            job_type: None,
            limit: 10,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "busy acquires must insert nothing");
}

/// The lock is per (resource, job type): other types and other resources are free.
pub async fn acquire_allows_other_job_types_and_resources(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let a = fx.create_typed("book-1", "ocr").await;
    let b = fx.create_typed("book-1", "guidelines").await;
    let c = fx.create_typed("book-2", "ocr").await;
    assert_ne!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert_ne!(b.id, c.id);
}

/// Once the active job is completed, failed or cancelled, acquire creates a new one.
pub async fn acquire_creates_a_new_job_once_the_previous_one_ended(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let outcomes = [
        FinishOutcome::Completed,
        FinishOutcome::Failed(JobError::new("bad_input", "page 3 is not an image", false)),
        FinishOutcome::Cancelled,
    ];
    let mut previous = Vec::new();
    for outcome in outcomes {
        let job = fx.running("book-1").await;
        fx.finish(&job, outcome).await.unwrap();
        previous.push(job.id);
        let next = fx.create("book-1").await;
        assert!(!previous.contains(&next.id));
        fx.lock.cancel(next.id).await.unwrap();
    }
}

/// 200 acquires racing for one key create exactly one job; every loser sees it.
pub async fn concurrent_acquires_for_one_key_create_exactly_one_job(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let lock = fx.lock.clone();
            tokio::spawn(async move {
                lock.acquire("contended", TEST_TYPE, serde_json::json!({ "caller": i }))
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut busy = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Acquire::Created(job) => created.push(job),
            Acquire::Busy(job) => busy.push(job),
        }
    }
    assert_eq!(created.len(), 1, "exactly one acquire wins");
    assert_eq!(busy.len(), 199);
    assert!(busy.iter().all(|job| job.id == created[0].id));
    let stored = fx
        .store
        .list(&JobQuery {
            resource_key: Some("contended".into()),
            job_type: None,
            limit: 500,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
}

/// A running job whose worker died is rescued by the next acquire, not left locked.
pub async fn acquire_rescues_a_stale_running_job_before_answering_busy(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    // Attempts left: the stale job is requeued, and Busy names the requeued job.
    let job = fx.running("book-1").await;
    fx.advance_past_stale();
    match fx
        .lock
        .acquire("book-1", TEST_TYPE, serde_json::json!({}))
        .await
        .unwrap()
    {
        Acquire::Busy(active) => {
            assert_eq!(active.id, job.id);
            assert_eq!(active.status, JobStatus::Pending);
            assert_eq!(active.error.unwrap().code, codes::LEASE_EXPIRED);
        }
        other => panic!("expected busy with the requeued job, got {other:?}"),
    }

    // No attempts left: the stale job fails and acquire creates a new one.
    let lock = fx.lock.clone().with_max_attempts(1);
    let Acquire::Created(single) = lock
        .acquire("book-2", TEST_TYPE, serde_json::json!({}))
        .await
        .unwrap()
    else {
        panic!("book-2 is free");
    };
    let claimed = fx.claim(10).await;
    assert!(claimed.iter().any(|job| job.id == single.id));
    fx.advance_past_stale();
    let fresh = enqueue_new(&lock, "book-2", TEST_TYPE, serde_json::json!({})).await;
    assert_ne!(fresh.id, single.id);
    let old = fx.get(&single).await;
    assert_eq!(old.status, JobStatus::Failed);
    assert_eq!(old.error.unwrap().code, codes::LEASE_EXPIRED);
}

/// A job nobody claimed within `pending_timeout` is failed by the next acquire.
pub async fn acquire_fails_an_expired_pending_job_before_answering_busy(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.create("book-1").await;
    fx.advance(fx.lock.policy().pending_timeout - Duration::from_secs(1));
    assert!(matches!(
        fx.lock
            .acquire("book-1", TEST_TYPE, serde_json::json!({}))
            .await
            .unwrap(),
        Acquire::Busy(_)
    ));
    fx.advance(Duration::from_secs(2));
    let fresh = enqueue_new(&fx.lock, "book-1", TEST_TYPE, serde_json::json!({})).await;
    assert_ne!(fresh.id, job.id);
    let old = fx.get(&job).await;
    assert_eq!(old.status, JobStatus::Failed);
    assert_eq!(old.error.unwrap().code, codes::PENDING_TIMEOUT);
    assert_eq!(old.finished_at, Some(fresh.created_at));
}
