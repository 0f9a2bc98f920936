//! Error mapping, listing, field round trips and the schema's index.

use std::sync::Arc;
use std::time::Duration;

use super::Fixture;
use crate::{
    Finish, FinishOutcome, HeartbeatParams, JobError, JobId, JobQuery, JobStatus, JobStore, Lease,
    LockError, NewJob, Progress, StoreError,
};

/// Every operation on an id that does not exist answers `NotFound`, typed.
pub async fn unknown_job_is_not_found_for_every_operation(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let id = JobId::new();
    let not_found = |error: &StoreError| matches!(error, StoreError::NotFound(seen) if *seen == id);
    assert!(not_found(&fx.store.get(id).await.unwrap_err()));
    let heartbeat = HeartbeatParams {
        id,
        lease: Lease(1),
        now: fx.now(),
        progress: None,
        checkpoint: None,
    };
    assert!(not_found(
        &fx.store.heartbeat(&heartbeat).await.unwrap_err()
    ));
    let finish = Finish::new(id, Lease(1), FinishOutcome::Completed);
    assert!(not_found(
        &fx.store.finish_one(fx.now(), finish).await.unwrap_err()
    ));
    assert!(not_found(
        &fx.store.request_cancel(id, fx.now()).await.unwrap_err()
    ));
    assert!(
        matches!(fx.lock.resume(id).await, Err(LockError::Store(StoreError::NotFound(seen))) if seen == id)
    );
}

/// Listing is newest first and filters by resource and type.
pub async fn list_returns_newest_first_with_filters(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let mut ocr = Vec::new();
    for _ in 0..3 {
        let job = fx.create_typed("book-1", "ocr").await;
        fx.lock.cancel(job.id).await.unwrap();
        ocr.push(job.id);
        fx.advance(Duration::from_secs(1));
    }
    let guidelines = fx.create_typed("book-1", "guidelines").await;
    fx.create_typed("book-2", "ocr").await;

    let query = |resource_key: Option<&str>, job_type: Option<&str>, limit| JobQuery {
        resource_key: resource_key.map(str::to_owned),
        job_type: job_type.map(str::to_owned),
        limit,
        ..JobQuery::default()
    };
    let ids = |jobs: Vec<crate::Job>| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>();
    let listed = ids(fx
        .store
        .list(&query(Some("book-1"), Some("ocr"), 10))
        .await
        .unwrap());
    assert_eq!(listed, [ocr[2], ocr[1], ocr[0]]);
    let limited = ids(fx
        .store
        .list(&query(Some("book-1"), Some("ocr"), 1))
        .await
        .unwrap());
    assert_eq!(limited, [ocr[2]]);
    let book = ids(fx
        .store
        .list(&query(Some("book-1"), None, 10))
        .await
        .unwrap());
    assert_eq!(book, [guidelines.id, ocr[2], ocr[1], ocr[0]]);
    assert_eq!(
        fx.store.list(&query(None, None, 100)).await.unwrap().len(),
        5
    );
    assert!(
        fx.store
            .list(&query(Some("nope"), None, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every field written comes back exactly: nested JSON, unicode, errors, times.
pub async fn job_fields_round_trip_exactly(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let payload = serde_json::json!({
        "pages": [1, 2, 3],
        "nested": { "deep": [null, true, 1.5, "ünïcödé ✓ 'quote' \"dq\""] },
    });
    let created =
        crate::testing::enqueue_new(&fx.lock, "r", super::TEST_TYPE, payload.clone()).await;
    assert_eq!(created.payload, payload);
    let job = fx.claim_one().await;
    let progress = Progress {
        total: None,
        completed: 0,
        failed: 0,
        current_item: Some("page 1 ✓".into()),
        last_completed_item: None,
        message: Some("starting…".into()),
    };
    fx.advance(Duration::from_micros(1234567));
    fx.heartbeat(
        &job,
        Some(progress.clone()),
        Some(serde_json::json!([1, "two"])),
    )
    .await
    .unwrap();
    let stored = fx.get(&job).await;
    assert_eq!(stored.progress, progress);
    assert_eq!(stored.heartbeat_at, Some(fx.now()));
    let error = JobError::new("e", "line 1\nline 2\tend", false);
    let failed = fx
        .finish(&job, FinishOutcome::Failed(error.clone()))
        .await
        .unwrap();
    assert_eq!(failed.error, Some(error));
    assert_eq!(failed.payload, payload);
    assert_eq!(fx.get(&job).await, failed);
}

/// The database's one-active-job index is unique on (resource_key, job_type) and admits
/// exactly `JobStatus::ACTIVE`.
pub async fn active_index_matches_job_status_active(store: Arc<dyn JobStore>) {
    let index = store.active_index().await.unwrap();
    assert!(index.unique, "the active-job index must be unique");
    assert_eq!(index.columns, ["resource_key", "job_type"]);
    let mut statuses = index.statuses.clone();
    statuses.sort_by_key(|status| status.as_str());
    let mut active = JobStatus::ACTIVE.to_vec();
    active.sort_by_key(|status| status.as_str());
    assert_eq!(
        statuses, active,
        "index predicate and JobStatus::ACTIVE disagree"
    );
}

/// A job that names a job that does not exist (`resumed_from` here) is refused, alone or in a
/// batch, and nothing of it is stored: the links name existing jobs or nothing (Postgres
/// checks them by trigger, SQLite by foreign key).
pub async fn a_link_to_a_job_that_does_not_exist_is_refused(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let dangling = |key: &str| NewJob {
        id: JobId::new(),
        resource_key: key.to_owned(),
        job_type: super::TEST_TYPE.to_owned(),
        payload: serde_json::json!({}),
        max_attempts: 3,
        checkpoint: None,
        resumed_from: Some(JobId::new()),
        then: Vec::new(),
        trace_parent: None,
        now: fx.now(),
    };
    let alone = fx.store.insert(dangling("book-1")).await;
    assert!(matches!(alone, Err(StoreError::Corrupt(_))), "{alone:?}");
    let mut fine = dangling("book-2");
    fine.resumed_from = None;
    let batch = fx.store.insert_many(vec![fine, dangling("book-3")]).await;
    assert!(matches!(batch, Err(StoreError::Corrupt(_))), "{batch:?}");
    let stored = fx.store.list(&JobQuery::default()).await.unwrap();
    assert!(stored.is_empty(), "{stored:#?}");
}
