//! Claim ordering, filtering and exclusivity.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, TEST_TYPE, WORKER};
use crate::{ClaimParams, JobId, JobStatus, JobStore, NewJob};

/// Due jobs come out oldest `run_at` first, at most `limit` at a time.
pub async fn claim_takes_due_jobs_oldest_first(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let mut created = Vec::new();
    for key in ["a", "b", "c", "d"] {
        created.push(fx.create(key).await.id);
        fx.advance(Duration::from_secs(1));
    }
    let first: Vec<JobId> = fx.claim(2).await.into_iter().map(|job| job.id).collect();
    assert_eq!(first, created[..2]);
    let rest: Vec<JobId> = fx.claim(10).await.into_iter().map(|job| job.id).collect();
    assert_eq!(rest, created[2..]);
    assert!(fx.claim(10).await.is_empty());
}

/// A job whose `run_at` lies ahead is not claimed until the clock reaches it.
pub async fn claim_skips_jobs_that_are_not_due_yet(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let job = fx.running("a").await;
    fx.requeue(&job, Duration::from_secs(10)).await;
    fx.advance(Duration::from_secs(9));
    assert!(fx.claim(10).await.is_empty());
    fx.advance(Duration::from_secs(1));
    assert_eq!(fx.claim_one().await.id, job.id);
}

/// A worker only gets the job types it asked for.
pub async fn claim_takes_only_the_requested_job_types(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let ocr = fx.create_typed("a", "ocr").await;
    let _other = fx.create_typed("a", "finalize").await;
    let claimed = fx
        .store
        .claim(&ClaimParams {
            worker_id: WORKER.into(),
            job_types: vec!["ocr".into(), "guidelines".into()],
            limit: 10,
            now: fx.now(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ocr.id);
}

/// A claim makes the job running under the worker, counts an attempt, stamps the times.
pub async fn claim_sets_running_fields_and_a_new_lease(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let created = fx.create("a").await;
    fx.advance(Duration::from_secs(3));
    let claimed = fx.claim_one().await;
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.worker_id.as_deref(), Some(WORKER));
    assert_eq!(claimed.started_at, Some(fx.now()));
    assert_eq!(claimed.heartbeat_at, Some(fx.now()));
    assert_ne!(claimed.lease, created.lease);
    assert_eq!(fx.get(&claimed).await, claimed);
}

/// Every claim of the same job gets a lease it never had before.
pub async fn claim_changes_the_lease_on_every_claim(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let first = fx.running("a").await;
    fx.requeue(&first, Duration::ZERO).await;
    let second = fx.claim_one().await;
    fx.requeue(&second, Duration::ZERO).await;
    let third = fx.claim_one().await;
    let leases: HashSet<_> = [first.lease, second.lease, third.lease]
        .into_iter()
        .collect();
    assert_eq!(leases.len(), 3);
    assert_eq!(third.attempt, 3);
}

/// 8 claimers racing over 2,000 pending jobs claim each exactly once.
pub async fn concurrent_claimers_take_every_job_exactly_once(store: Arc<dyn JobStore>) {
    const JOBS: usize = 2000;
    const CLAIMERS: usize = 8;
    let fx = Fixture::new(store);
    let now = fx.now();
    let inserts: Vec<_> = (0..CLAIMERS)
        .map(|claimer| {
            let store = fx.store.clone();
            tokio::spawn(async move {
                for i in (claimer..JOBS).step_by(CLAIMERS) {
                    let job = NewJob {
                        id: JobId::new(),
                        resource_key: format!("r{i}"),
                        job_type: TEST_TYPE.into(),
                        payload: serde_json::json!({}),
                        max_attempts: 3,
                        checkpoint: None,
                        resumed_from: None,
                        then: Vec::new(),
                        trace_parent: None,
                        now,
                    };
                    store.insert(job).await.unwrap();
                }
            })
        })
        .collect();
    for insert in inserts {
        insert.await.unwrap();
    }
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|claimer| {
            let store = fx.store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let params = ClaimParams {
                        worker_id: format!("worker-{claimer}"),
                        job_types: vec![TEST_TYPE.into()],
                        limit: 1 + (claimer as u32 % 4) * 8,
                        now,
                    };
                    let claimed = store.claim(&params).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    for job in &claimed {
                        assert_eq!(job.worker_id.as_deref(), Some(params.worker_id.as_str()));
                    }
                    mine.extend(claimed.into_iter().map(|job| job.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(total, JOBS);
    assert_eq!(seen.len(), JOBS);
}
