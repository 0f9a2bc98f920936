//! Bulk enqueue: `LockService::acquire_many` over `JobStore::insert_many`. Answers per item
//! in order, duplicates inside one batch, busy answers, an empty and a large batch, lazy
//! rescue, and races between batches and with single acquires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Fixture, TEST_TYPE};
use crate::typed::{Context, Job as TypedJob};
use crate::{
    Acquire, AcquireRequest, ChainStep, FinishOutcome, Job, JobQuery, JobStatus, JobStore,
    LockService, Progress, codes,
};

/// A second job type, for locks per (resource, type).
const OTHER_TYPE: &str = "conformance.other";

/// A request of [`TEST_TYPE`] on `key` whose payload names the key and `n`.
fn request(key: &str, n: usize) -> AcquireRequest {
    AcquireRequest::new(key, TEST_TYPE, serde_json::json!({ "key": key, "n": n }))
}

#[track_caller]
fn created(answer: &Acquire) -> &Job {
    match answer {
        Acquire::Created(job) => job,
        Acquire::Busy(job) => panic!("expected a new job, got busy with {job:?}"),
    }
}

#[track_caller]
fn busy(answer: &Acquire) -> &Job {
    match answer {
        Acquire::Busy(job) => job,
        Acquire::Created(job) => panic!("expected busy, got a new job {job:?}"),
    }
}

fn job_of(answer: &Acquire) -> &Job {
    match answer {
        Acquire::Created(job) | Acquire::Busy(job) => job,
    }
}

/// Every active job of `job_type` whose resource starts with `prefix`, by resource.
async fn active_by_resource(
    store: &Arc<dyn JobStore>,
    job_type: &str,
    prefix: &str,
) -> HashMap<String, Vec<Job>> {
    let jobs = store
        .list(&JobQuery {
            job_type: Some(job_type.to_owned()),
            statuses: JobStatus::ACTIVE.to_vec(),
            limit: 100_000,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    let mut by_resource: HashMap<String, Vec<Job>> = HashMap::new();
    for job in jobs {
        if job.resource_key.starts_with(prefix) {
            by_resource
                .entry(job.resource_key.clone())
                .or_default()
                .push(job);
        }
    }
    by_resource
}

/// Each item is answered in input order: created with every field `acquire` sets, or busy
/// with the active job; the lock is per (resource, type).
pub async fn acquire_many_answers_created_or_busy_per_item_in_order(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let existing = fx.create("book-2").await;
    let chain = vec![ChainStep::new(OTHER_TYPE, serde_json::json!({ "next": 1 }))];
    let answers = fx
        .lock
        .acquire_many(vec![
            request("book-1", 0).with_chain(chain.clone()),
            request("book-2", 1),
            AcquireRequest::new("book-1", OTHER_TYPE, serde_json::json!({ "other": true })),
            request("book-3", 3),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 4);

    let first = created(&answers[0]);
    assert_eq!(first.resource_key, "book-1");
    assert_eq!(first.job_type, TEST_TYPE);
    assert_eq!(first.status, JobStatus::Pending);
    assert_eq!(
        first.payload,
        serde_json::json!({ "key": "book-1", "n": 0 })
    );
    assert_eq!(first.then, chain);
    assert_eq!(first.attempt, 0);
    assert_eq!(first.max_attempts, 3);
    assert_eq!(first.progress, Progress::default());
    assert_eq!(first.checkpoint, None);
    assert_eq!(first.error, None);
    assert_eq!(first.resumed_from, None);
    assert_eq!(first.previous_job_id, None);
    assert_eq!(first.next_job_id, None);
    assert!(!first.cancel_requested);
    assert_eq!(first.worker_id, None);
    assert_eq!(first.created_at, fx.now());
    assert_eq!(first.run_at, fx.now());
    assert_eq!(first.started_at, None);
    assert_eq!(first.finished_at, None);

    assert_eq!(busy(&answers[1]), &existing);

    let other = created(&answers[2]);
    assert_eq!(
        (other.resource_key.as_str(), other.job_type.as_str()),
        ("book-1", OTHER_TYPE)
    );
    assert_eq!(other.payload, serde_json::json!({ "other": true }));
    let third = created(&answers[3]);
    assert_eq!(third.resource_key, "book-3");
    assert_eq!(
        third.payload,
        serde_json::json!({ "key": "book-3", "n": 3 })
    );

    for answer in [&answers[0], &answers[2], &answers[3]] {
        let job = job_of(answer);
        assert_eq!(
            &fx.get(job).await,
            job,
            "a created job reads back as answered"
        );
    }
    let ids = [first.id, existing.id, other.id, third.id];
    for (index, id) in ids.iter().enumerate() {
        assert!(!ids[index + 1..].contains(id));
    }
    let stored = fx.store.list(&JobQuery::default()).await.unwrap();
    assert_eq!(
        stored.len(),
        4,
        "one busy item inserted nothing: {stored:?}"
    );

    // The lock service's max_attempts applies, as for acquire.
    let lock = fx.lock.clone().with_max_attempts(7);
    let answers = lock.acquire_many(vec![request("book-9", 0)]).await.unwrap();
    assert_eq!(created(&answers[0]).max_attempts, 7);
}

/// Items of one batch for the same (resource, type): the first creates the job, every later
/// one is busy with it; for a key already active, every one is busy with that job.
pub async fn acquire_many_gives_duplicates_in_a_batch_the_first_ones_job(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let active = fx.create("d").await;
    let keys = ["a", "b", "a", "d", "a", "c", "b", "d"];
    let requests = keys
        .iter()
        .enumerate()
        .map(|(n, key)| request(key, n))
        .collect();
    let answers = fx.lock.acquire_many(requests).await.unwrap();
    assert_eq!(answers.len(), keys.len());
    let a = created(&answers[0]).clone();
    let b = created(&answers[1]).clone();
    let c = created(&answers[5]).clone();
    assert_eq!(a.payload["n"], 0, "the first item of a key wins");
    assert_eq!(b.payload["n"], 1);
    assert_eq!(busy(&answers[2]), &a);
    assert_eq!(busy(&answers[4]), &a);
    assert_eq!(busy(&answers[6]), &b);
    assert_eq!(busy(&answers[3]), &active);
    assert_eq!(busy(&answers[7]), &active);
    assert_eq!(c.resource_key, "c");
    let active = active_by_resource(&fx.store, TEST_TYPE, "").await;
    assert_eq!(active.len(), 4);
    assert!(active.values().all(|jobs| jobs.len() == 1), "{active:?}");
    let all = fx.store.list(&JobQuery::default()).await.unwrap();
    assert_eq!(all.len(), 4, "duplicates inserted nothing");
}

/// A busy item gets the active job as it is now, pending or running; a resource whose job
/// ended is free again.
pub async fn acquire_many_answers_busy_with_an_already_active_job(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let running = fx.running("running").await;
    let progress = Progress {
        total: Some(5),
        completed: 2,
        ..Progress::default()
    };
    fx.heartbeat(
        &running,
        Some(progress.clone()),
        Some(serde_json::json!({ "page": 2 })),
    )
    .await
    .unwrap();
    let ended = fx.running("ended").await;
    fx.finish(&ended, FinishOutcome::Completed).await.unwrap();
    let pending = fx.create("pending").await;

    let answers = fx
        .lock
        .acquire_many(vec![
            request("running", 0),
            request("pending", 1),
            request("ended", 2),
        ])
        .await
        .unwrap();
    let now_running = busy(&answers[0]);
    assert_eq!(now_running.id, running.id);
    assert_eq!(now_running.status, JobStatus::Running);
    assert_eq!(now_running.lease, running.lease);
    assert_eq!(now_running.progress, progress);
    assert_eq!(now_running, &fx.get(&running).await);
    assert_eq!(busy(&answers[1]), &pending);
    let fresh = created(&answers[2]);
    assert_ne!(fresh.id, ended.id);
    assert_eq!(fx.get(&ended).await.status, JobStatus::Completed);
}

/// An empty batch answers an empty list and writes nothing.
pub async fn acquire_many_of_an_empty_batch_does_nothing(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    assert!(fx.lock.acquire_many(Vec::new()).await.unwrap().is_empty());
    assert!(fx.store.insert_many(Vec::new()).await.unwrap().is_empty());
    let none: Vec<(&str, &Counted)> = Vec::new();
    assert!(fx.lock.enqueue_many(none).await.unwrap().is_empty());
    assert!(
        fx.store
            .list(&JobQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// 5,000 items in one batch: each created, in order; the same batch again is busy with each.
pub async fn acquire_many_creates_a_batch_of_5000(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let keys: Vec<String> = (0..5000).map(|i| format!("bulk-{i}")).collect();
    let requests = keys
        .iter()
        .enumerate()
        .map(|(n, key)| request(key, n))
        .collect::<Vec<_>>();
    let answers = fx.lock.acquire_many(requests.clone()).await.unwrap();
    assert_eq!(answers.len(), 5000);
    for (n, answer) in answers.iter().enumerate() {
        let job = created(answer);
        assert_eq!(job.resource_key, keys[n]);
        assert_eq!(job.payload["n"], n);
    }
    let active = active_by_resource(&fx.store, TEST_TYPE, "bulk-").await;
    assert_eq!(active.len(), 5000);
    for answer in &answers {
        let job = job_of(answer);
        assert_eq!(active[&job.resource_key], std::slice::from_ref(job));
    }

    let again = fx.lock.acquire_many(requests).await.unwrap();
    for (first, second) in answers.iter().zip(&again) {
        assert_eq!(busy(second), job_of(first));
    }
    let claimed = fx.claim(10_000).await;
    assert_eq!(claimed.len(), 5000, "every job of the batch is claimable");
}

/// Checks the answers of racing enqueues over `keys` (with `existing` active before the
/// race) against the table: one active job per key, every answer names it, and exactly one
/// answer (or the existing job) created it.
async fn check_race(
    fx: &Fixture,
    prefix: &str,
    keys: &[String],
    existing: &HashMap<String, Job>,
    answers: &[Acquire],
) {
    let active = active_by_resource(&fx.store, TEST_TYPE, prefix).await;
    assert_eq!(active.len(), keys.len(), "every key has an active job");
    let mut creations: HashMap<&str, usize> = HashMap::new();
    for key in keys {
        let jobs = &active[key];
        assert_eq!(jobs.len(), 1, "two active jobs for {key}: {jobs:?}");
        if let Some(job) = existing.get(key) {
            assert_eq!(jobs[0].id, job.id);
        }
    }
    for answer in answers {
        let job = job_of(answer);
        assert_eq!(
            job.id, active[&job.resource_key][0].id,
            "{answer:?} is not the active job"
        );
        if let Acquire::Created(job) = answer {
            *creations.entry(job.resource_key.as_str()).or_default() += 1;
        }
    }
    for key in keys {
        let created = creations.get(key.as_str()).copied().unwrap_or(0);
        let expected = usize::from(!existing.contains_key(key));
        assert_eq!(created, expected, "{key} created {created} times");
    }
}

/// Creates every fifth key before a race, so a batch meets committed active jobs too.
async fn some_existing(fx: &Fixture, keys: &[String]) -> HashMap<String, Job> {
    let mut existing = HashMap::new();
    for key in keys.iter().step_by(5) {
        existing.insert(key.clone(), fx.create(key).await);
    }
    existing
}

/// Two batches over the same resources (in opposite orders, one with duplicates) run at
/// once, several rounds: never two active jobs for a (resource, type), and every item is
/// created or busy with the job the table holds afterwards.
pub async fn concurrent_acquire_many_batches_never_create_two_active_jobs(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    for round in 0..6 {
        let prefix = format!("race-{round}-");
        let keys: Vec<String> = (0..300).map(|i| format!("{prefix}{i}")).collect();
        let existing = some_existing(&fx, &keys).await;
        let forward: Vec<AcquireRequest> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| request(key, n))
            .collect();
        let mut backward: Vec<AcquireRequest> = forward.iter().rev().cloned().collect();
        backward.extend(forward.iter().step_by(7).cloned());
        let batches = [forward.clone(), backward, forward];
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let lock = fx.lock.clone();
                tokio::spawn(async move { lock.acquire_many(batch).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.extend(task.await.unwrap().unwrap());
        }
        assert_eq!(answers.len(), 300 + 300 + 43 + 300);
        check_race(&fx, &prefix, &keys, &existing, &answers).await;
    }
}

/// A batch races single acquires of the same resources, several rounds: the same rules.
pub async fn acquire_many_racing_single_acquires_never_create_two_active_jobs(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    for round in 0..6 {
        let prefix = format!("mixed-{round}-");
        let keys: Vec<String> = (0..200).map(|i| format!("{prefix}{i}")).collect();
        let existing = some_existing(&fx, &keys).await;
        let batch: Vec<AcquireRequest> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| request(key, n))
            .collect();
        let lock = fx.lock.clone();
        let bulk = tokio::spawn(async move { lock.acquire_many(batch).await });
        let singles: Vec<_> = keys
            .iter()
            .rev()
            .map(|key| {
                let lock = fx.lock.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    lock.acquire(&key, TEST_TYPE, serde_json::json!({ "single": true }))
                        .await
                })
            })
            .collect();
        let mut answers = bulk.await.unwrap().unwrap();
        for single in singles {
            answers.push(single.await.unwrap().unwrap());
        }
        check_race(&fx, &prefix, &keys, &existing, &answers).await;
    }
}

/// Items whose active job is stuck get the lazy rescue of `acquire`: a stale running job
/// with attempts left is requeued (busy with it), one without attempts and a job pending too
/// long fail and a new job is created; a healthy active job is left alone.
pub async fn acquire_many_rescues_stuck_active_jobs_before_answering_busy(
    store: Arc<dyn JobStore>,
) {
    let fx = Fixture::new(store);
    let expired = match fx
        .lock
        .acquire("book-3", OTHER_TYPE, serde_json::json!({}))
        .await
        .unwrap()
    {
        Acquire::Created(job) => job,
        other => panic!("book-3 is free: {other:?}"),
    };
    fx.advance(fx.lock.policy().pending_timeout - Duration::from_secs(60));
    let single = fx.lock.clone().with_max_attempts(1);
    let Acquire::Created(no_attempts) = single
        .acquire("book-2", TEST_TYPE, serde_json::json!({}))
        .await
        .unwrap()
    else {
        panic!("book-2 is free");
    };
    assert_eq!(fx.claim_one().await.id, no_attempts.id);
    let stale = fx.running("book-1").await;
    fx.advance(Duration::from_secs(120));
    let healthy = fx.create("book-4").await;

    let answers = fx
        .lock
        .acquire_many(vec![
            request("book-1", 0),
            request("book-2", 1),
            AcquireRequest::new("book-3", OTHER_TYPE, serde_json::json!({})),
            request("book-4", 3),
            request("book-2", 4),
        ])
        .await
        .unwrap();
    let requeued = busy(&answers[0]);
    assert_eq!(requeued.id, stale.id);
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.error.as_ref().unwrap().code, codes::LEASE_EXPIRED);
    let replacement = created(&answers[1]);
    assert_ne!(replacement.id, no_attempts.id);
    assert_eq!(replacement.payload["n"], 1);
    let old = fx.get(&no_attempts).await;
    assert_eq!(old.status, JobStatus::Failed);
    assert_eq!(old.error.unwrap().code, codes::LEASE_EXPIRED);
    let fresh = created(&answers[2]);
    assert_ne!(fresh.id, expired.id);
    let old = fx.get(&expired).await;
    assert_eq!(old.status, JobStatus::Failed);
    assert_eq!(old.error.unwrap().code, codes::PENDING_TIMEOUT);
    assert_eq!(busy(&answers[3]), &healthy);
    assert_eq!(busy(&answers[4]), replacement);
}

/// A typed job for [`LockService::enqueue_many`].
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Counted {
    count: u32,
}

#[crate::async_trait]
impl TypedJob for Counted {
    const TYPE: &'static str = "conformance.counted";
    type Checkpoint = ();
    type State = ();

    async fn run(
        self,
        _state: &(),
        _context: Context<Self>,
    ) -> Result<(), crate::runtime::HandlerError> {
        Ok(())
    }
}

/// Typed jobs enqueued many at once: stored under the job type with the value as payload,
/// answered in order with the same busy rules.
pub async fn enqueue_many_stores_typed_jobs_in_order(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let lock: &LockService = &fx.lock;
    let jobs = [
        Counted { count: 1 },
        Counted { count: 2 },
        Counted { count: 3 },
    ];
    let answers = lock
        .enqueue_many([
            ("image-1", &jobs[0]),
            ("image-2", &jobs[1]),
            ("image-1", &jobs[2]),
        ])
        .await
        .unwrap();
    let first = created(&answers[0]);
    assert_eq!(first.job_type, Counted::TYPE);
    assert_eq!(first.payload, serde_json::json!({ "count": 1 }));
    assert_eq!(
        created(&answers[1]).payload,
        serde_json::json!({ "count": 2 })
    );
    assert_eq!(busy(&answers[2]), first);
}
