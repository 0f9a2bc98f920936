//! Retention: finished jobs older than a cutoff are deleted a batch at a time, oldest first;
//! active and young jobs stay, links to a deleted job become `None`, and concurrent deleters
//! each take their own jobs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::chain::{CHAIN_LAST, CHAIN_NEXT, chained, claim_type, finish_as_runner};
use super::runtime::{RunningWorker, StepsPayload, WAIT, fast_config};
use super::{Fixture, TEST_TYPE, WORKER};
use crate::runtime::WorkerConfig;
use crate::testing::eventually;
use crate::{
    Acquire, AcquireRequest, ChainStep, Finish, FinishOutcome, Job, JobError, JobQuery, JobStatus,
    JobStore, StoreError,
};

/// The retention the cases use: the default.
const RETENTION: Duration = WorkerConfig::DEFAULT_JOB_RETENTION;

/// A job type no case claims with [`Fixture::claim`], for jobs that stay pending.
const IDLE_TYPE: &str = "conformance.retention.idle";

fn failure() -> JobError {
    JobError::new("engine_down", "connection refused", false)
}

/// A job for `key`, claimed and ended with `outcome` now.
async fn ended(fx: &Fixture, key: &str, outcome: FinishOutcome) -> Job {
    let job = fx.running(key).await;
    fx.finish(&job, outcome).await.unwrap()
}

/// The cutoff of the default retention, as of the fixture's clock.
fn cutoff(fx: &Fixture) -> DateTime<Utc> {
    fx.now() - chrono::Duration::from_std(RETENTION).unwrap()
}

/// Whether `job` is gone.
async fn is_deleted(store: &Arc<dyn JobStore>, job: &Job) -> bool {
    match store.get(job.id).await {
        Err(StoreError::NotFound(id)) => id == job.id,
        Ok(_) => false,
        Err(error) => panic!("reading {}: {error}", job.id),
    }
}

/// Every job in the store.
async fn every_job(store: &Arc<dyn JobStore>) -> Vec<Job> {
    store
        .list(&JobQuery {
            limit: 10_000,
            ..JobQuery::default()
        })
        .await
        .unwrap()
}

/// Panics unless every link of every job names a job that exists.
async fn assert_links_name_existing_jobs(store: &Arc<dyn JobStore>) {
    let jobs = every_job(store).await;
    let ids: HashSet<_> = jobs.iter().map(|job| job.id).collect();
    for job in &jobs {
        for (name, link) in [
            ("resumed_from", job.resumed_from),
            ("previous_job_id", job.previous_job_id),
            ("next_job_id", job.next_job_id),
        ] {
            if let Some(link) = link {
                assert!(
                    ids.contains(&link),
                    "{name} of {} names {link}, which is gone",
                    job.id
                );
            }
        }
    }
}

/// Only completed, failed and cancelled jobs that ended before the cutoff go; pending and
/// running jobs (however old), a job requeued after it ran, young finished jobs and a job
/// that ended exactly at the cutoff stay, unchanged.
pub async fn retention_deletes_only_finished_jobs_older_than_the_cutoff(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let start = fx.now();
    let completed = ended(&fx, "completed", FinishOutcome::Completed).await;
    let failed = ended(&fx, "failed", FinishOutcome::Failed(failure())).await;
    let cancelled = ended(&fx, "cancelled", FinishOutcome::Cancelled).await;
    let running_then = fx.running("requeued").await;
    let requeued = fx.requeue(&running_then, RETENTION * 3).await;
    assert_eq!(requeued.status, JobStatus::Pending);
    let running = fx.running("running").await;
    let pending = fx.create_typed("pending", IDLE_TYPE).await;

    fx.advance(RETENTION + Duration::from_secs(1));
    let at_cutoff = {
        fx.advance(Duration::from_secs(1));
        let job = ended(&fx, "at-cutoff", FinishOutcome::Completed).await;
        fx.advance(RETENTION);
        job
    };
    let young = ended(&fx, "young", FinishOutcome::Completed).await;
    let staying = [requeued, running, pending, at_cutoff.clone(), young];

    // Nothing ended before the start.
    assert_eq!(fx.store.delete_finished(start, 100).await.unwrap(), 0);
    assert_eq!(every_job(&fx.store).await.len(), 8);

    assert_eq!(at_cutoff.finished_at, Some(cutoff(&fx)));
    let deleted = fx.store.delete_finished(cutoff(&fx), 100).await.unwrap();
    assert_eq!(deleted, 3, "the three jobs that ended at the start");
    for job in [&completed, &failed, &cancelled] {
        assert!(is_deleted(&fx.store, job).await, "{job:?}");
    }
    for job in &staying {
        assert_eq!(&fx.get(job).await, job, "left as it was");
    }
    assert_eq!(fx.store.delete_finished(cutoff(&fx), 100).await.unwrap(), 0);
    assert_eq!(every_job(&fx.store).await.len(), staying.len());
}

/// A call deletes at most `limit` jobs, the ones that ended first, and says how many; a
/// `limit` of 0 deletes nothing.
pub async fn retention_deletes_at_most_limit_jobs_oldest_first(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let mut jobs = Vec::new();
    for index in 0..5 {
        jobs.push(ended(&fx, &format!("book-{index}"), FinishOutcome::Completed).await);
        fx.advance(Duration::from_secs(60));
    }
    // Ended last, started first: finished_at decides, not creation.
    let long_runner = fx.running("long-runner").await;
    let last = fx.running("last").await;
    fx.advance(Duration::from_secs(60));
    let last = fx.finish(&last, FinishOutcome::Completed).await.unwrap();
    fx.advance(Duration::from_secs(60));
    let long_runner = fx
        .finish(&long_runner, FinishOutcome::Completed)
        .await
        .unwrap();
    jobs.push(last);
    jobs.push(long_runner);
    fx.advance(RETENTION + Duration::from_secs(3600));
    let before = cutoff(&fx);

    assert_eq!(fx.store.delete_finished(before, 0).await.unwrap(), 0);
    assert_eq!(every_job(&fx.store).await.len(), 7);
    for (round, expected) in [2, 2, 2, 1, 0].into_iter().enumerate() {
        let deleted = fx.store.delete_finished(before, 2).await.unwrap();
        assert_eq!(deleted, expected, "round {round}");
        let gone = (2 * round + expected as usize).min(jobs.len());
        for (index, job) in jobs.iter().enumerate() {
            assert_eq!(
                is_deleted(&fx.store, job).await,
                index < gone,
                "round {round}, job {index}"
            );
        }
    }
}

/// A job resumed from, or continuing a chain from, a deleted job keeps its place: its link
/// becomes `None`, nothing else changes, and it still runs to its end.
pub async fn retention_clears_links_to_deleted_jobs(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let failed = ended(&fx, "book-1", FinishOutcome::Failed(failure())).await;
    let first = chained(
        &fx.lock,
        "book-2",
        vec![ChainStep::new(CHAIN_NEXT, serde_json::json!({ "n": 1 }))],
    )
    .await;
    let running = fx.claim_one().await;
    assert_eq!(running.id, first.id);
    let first = finish_as_runner(&fx, &running, FinishOutcome::Completed)
        .await
        .unwrap();
    let next = fx.store.get(first.next_job_id.unwrap()).await.unwrap();
    assert_eq!(next.previous_job_id, Some(first.id));

    fx.advance(RETENTION + Duration::from_secs(60));
    let Acquire::Created(resumed) = fx.lock.resume(failed.id).await.unwrap() else {
        panic!("nothing else is active on book-1");
    };
    assert_eq!(resumed.resumed_from, Some(failed.id));

    assert_eq!(fx.store.delete_finished(cutoff(&fx), 100).await.unwrap(), 2);
    assert!(is_deleted(&fx.store, &failed).await);
    assert!(is_deleted(&fx.store, &first).await);
    let resumed_now = fx.get(&resumed).await;
    assert_eq!(
        resumed_now,
        Job {
            resumed_from: None,
            ..resumed.clone()
        }
    );
    let next_now = fx.get(&next).await;
    assert_eq!(
        next_now,
        Job {
            previous_job_id: None,
            ..next.clone()
        }
    );
    assert_links_name_existing_jobs(&fx.store).await;

    // Both run to their end.
    let claimed = fx.claim_one().await;
    assert_eq!(claimed.id, resumed.id);
    let done = fx.finish(&claimed, FinishOutcome::Completed).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let mut claimed = claim_type(&fx, CHAIN_NEXT, 10).await;
    assert_eq!(claimed.len(), 1);
    let claimed = claimed.pop().unwrap();
    assert_eq!(claimed.id, next.id);
    let done = finish_as_runner(&fx, &claimed, FinishOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
}

/// Completes a chain of three jobs (`TEST_TYPE`, [`CHAIN_NEXT`], [`CHAIN_LAST`]) for each of
/// `keys`, every job ending now; returns them in chain order, book by book.
async fn completed_chains(fx: &Fixture, keys: &[String]) -> Vec<Job> {
    let then = vec![
        ChainStep::new(CHAIN_NEXT, serde_json::json!({})),
        ChainStep::new(CHAIN_LAST, serde_json::json!({})),
    ];
    let requests = keys
        .iter()
        .map(|key| {
            AcquireRequest::new(key.clone(), TEST_TYPE, serde_json::json!({}))
                .with_chain(then.clone())
        })
        .collect();
    for answer in fx.lock.acquire_many(requests).await.unwrap() {
        assert!(matches!(answer, Acquire::Created(_)), "{answer:?}");
    }
    let mut ids = Vec::new();
    for job_type in [TEST_TYPE, CHAIN_NEXT, CHAIN_LAST] {
        let claimed = claim_type(fx, job_type, keys.len() as u32 + 1).await;
        assert_eq!(claimed.len(), keys.len(), "{job_type}");
        let batch: Vec<Finish> = claimed
            .iter()
            .map(|job| Finish::of(job, FinishOutcome::Completed))
            .collect();
        for result in fx.store.finish(fx.now(), &batch).await.unwrap() {
            assert_eq!(result.unwrap(), JobStatus::Completed);
        }
        ids.extend(claimed.iter().map(|job| job.id));
    }
    let mut jobs = Vec::new();
    for id in ids {
        jobs.push(fx.store.get(id).await.unwrap());
    }
    let rank = |job_type: &str| {
        [TEST_TYPE, CHAIN_NEXT, CHAIN_LAST]
            .iter()
            .position(|t| *t == job_type)
    };
    jobs.sort_by_key(|job| (job.resource_key.clone(), rank(&job.job_type)));
    for chain in jobs.chunks(3) {
        assert_eq!(chain[0].next_job_id, Some(chain[1].id));
        assert_eq!(chain[1].previous_job_id, Some(chain[0].id));
        assert_eq!(chain[1].next_job_id, Some(chain[2].id));
        assert_eq!(chain[2].previous_job_id, Some(chain[1].id));
    }
    jobs
}

/// Jobs of a chain name each other both ways (`next_job_id`, `previous_job_id`). They are
/// deleted one at a time, each delete clearing the links of the rest of its chain, and a
/// whole chain in one batch; every link names an existing job after each delete.
pub async fn retention_deletes_chains_whose_jobs_name_each_other(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let keys = |from: usize| {
        (from..from + 2)
            .map(|n| format!("book-{n}"))
            .collect::<Vec<_>>()
    };
    let one_by_one = completed_chains(&fx, &keys(0)).await;
    fx.advance(Duration::from_secs(86_400));
    let in_one_batch = completed_chains(&fx, &keys(2)).await;
    fx.advance(RETENTION + Duration::from_secs(86_400));

    let first_cutoff = one_by_one[0].finished_at.unwrap() + chrono::Duration::seconds(1);
    for round in 1..=one_by_one.len() {
        assert_eq!(fx.store.delete_finished(first_cutoff, 1).await.unwrap(), 1);
        assert_links_name_existing_jobs(&fx.store).await;
        let left = every_job(&fx.store).await.len();
        assert_eq!(left, one_by_one.len() + in_one_batch.len() - round);
    }
    assert_eq!(fx.store.delete_finished(first_cutoff, 1).await.unwrap(), 0);
    for job in &in_one_batch {
        assert_eq!(&fx.get(job).await, job, "not past the first cutoff");
    }

    assert_eq!(
        fx.store.delete_finished(cutoff(&fx), 100).await.unwrap(),
        in_one_batch.len() as u64
    );
    assert!(every_job(&fx.store).await.is_empty());
}

/// Four deleters at once, in small batches, over chained and resumed jobs: none fails, each
/// job is deleted once (the counts add up to the jobs past the cutoff), and active and young
/// jobs stay with their links cleared.
pub async fn concurrent_retention_deletes_take_each_job_once(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let keys: Vec<String> = (0..40).map(|n| format!("chain-{n}")).collect();
    let chains = completed_chains(&fx, &keys).await;
    let failed_keys: Vec<String> = (0..20).map(|n| format!("failed-{n}")).collect();
    let requests = failed_keys
        .iter()
        .map(|key| AcquireRequest::new(key.clone(), TEST_TYPE, serde_json::json!({})))
        .collect();
    fx.lock.acquire_many(requests).await.unwrap();
    let claimed = fx.claim(100).await;
    assert_eq!(claimed.len(), failed_keys.len());
    let batch: Vec<Finish> = claimed
        .iter()
        .map(|job| Finish::new(job.id, job.lease, FinishOutcome::Failed(failure())))
        .collect();
    fx.store.finish(fx.now(), &batch).await.unwrap();
    let eligible = chains.len() + claimed.len();

    fx.advance(RETENTION + Duration::from_secs(60));
    let mut young = Vec::new();
    for n in 0..10 {
        young.push(ended(&fx, &format!("young-{n}"), FinishOutcome::Completed).await);
    }
    let mut resumed = Vec::new();
    for job in &claimed {
        match fx.lock.resume(job.id).await.unwrap() {
            Acquire::Created(job) => resumed.push(job),
            other => panic!("{other:?}"),
        }
    }

    let before = cutoff(&fx);
    let limit = 7;
    let deleters = (0..4).map(|_| {
        let store = fx.store.clone();
        tokio::spawn(async move {
            let mut total = 0;
            loop {
                let deleted = store.delete_finished(before, limit).await.unwrap();
                total += deleted;
                if deleted < u64::from(limit) {
                    return total;
                }
            }
        })
    });
    let counts = futures::future::join_all(deleters).await;
    let total: u64 = counts.into_iter().map(|count| count.unwrap()).sum();
    assert_eq!(total, eligible as u64, "each job deleted once");

    let left = every_job(&fx.store).await;
    assert_eq!(left.len(), resumed.len() + young.len());
    for job in &resumed {
        let now = fx.get(job).await;
        assert_eq!(now.status, JobStatus::Pending);
        assert_eq!(now.resumed_from, None);
    }
    for job in &young {
        assert_eq!(&fx.get(job).await, job);
    }
    assert_links_name_existing_jobs(&fx.store).await;
    // The store still works as before: the resumed jobs run.
    let claimed = fx.claim(100).await;
    assert_eq!(claimed.len(), resumed.len());
    assert!(
        claimed
            .iter()
            .all(|job| job.worker_id.as_deref() == Some(WORKER))
    );
}

/// A worker with a retention deletes the finished jobs that ended longer ago than it, as its
/// clock tells, in batches of `retention_batch`, and counts them; a job that ended since
/// stays.
pub async fn runtime_deletes_finished_jobs_past_the_retention(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store.clone());
    let config = WorkerConfig {
        job_retention: Some(RETENTION),
        retention_batch: 2,
        ..fast_config()
    };
    let worker = RunningWorker::start_with_clock(store.clone(), config, fx.clock.clone());
    let steps = StepsPayload {
        steps: 1,
        ..StepsPayload::default()
    };
    let completed = |job: &Job| job.status == JobStatus::Completed;
    let mut old = Vec::new();
    for index in 0..5 {
        let job = worker
            .enqueue(&format!("book-{index}"), steps.clone())
            .await;
        old.push(worker.wait_for(job.id, "an old job", completed).await);
    }
    assert!(old.iter().all(|job| job.finished_at == Some(fx.now())));

    fx.advance(RETENTION + Duration::from_secs(60));
    let young = worker.enqueue("book-young", steps).await;
    let young = worker.wait_for(young.id, "a young job", completed).await;
    eventually(WAIT, "the old jobs to be deleted", || async {
        for job in &old {
            if !is_deleted(&store, job).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    let metrics = worker.metrics.clone();
    eventually(WAIT, "the deletes to be counted", || async {
        let deleted = metrics
            .retention_deleted
            .load(std::sync::atomic::Ordering::SeqCst);
        (deleted == old.len() as u64).then_some(())
    })
    .await;
    assert_eq!(store.get(young.id).await.unwrap(), young);
    worker.stop().await;
    assert_eq!(
        metrics
            .retention_deleted
            .load(std::sync::atomic::Ordering::SeqCst),
        old.len() as u64
    );
}

/// A compaction of the store changes no job, in any status.
pub async fn compact_changes_no_job(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store.clone());
    ended(&fx, "book-completed", FinishOutcome::Completed).await;
    ended(&fx, "book-failed", FinishOutcome::Failed(failure())).await;
    fx.running("book-running").await;
    fx.create("book-pending").await;
    let before = every_job(&store).await;
    assert_eq!(before.len(), 4);
    store.compact().await.unwrap();
    assert_eq!(every_job(&store).await, before);
}

/// A worker compacts the store once its claims come back empty after `compact_after`
/// claims, not before, and counts it.
pub async fn runtime_compacts_the_store_when_its_queue_runs_dry_after_compact_after_claims(
    store: Arc<dyn JobStore>,
) {
    let config = WorkerConfig {
        compact_after: 3,
        ..fast_config()
    };
    let worker = RunningWorker::start(store.clone(), config);
    let metrics = worker.metrics.clone();
    let compactions = || {
        metrics
            .compactions
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let completed = |job: &Job| job.status == JobStatus::Completed;
    for index in 0..5 {
        let job = worker
            .enqueue(&format!("book-{index}"), StepsPayload::default())
            .await;
        worker.wait_for(job.id, "a job", completed).await;
        if index < 2 {
            assert_eq!(compactions(), 0, "compacted after {} claims", index + 1);
        }
    }
    eventually(WAIT, "a compaction", || async {
        (compactions() == 1).then_some(())
    })
    .await;
    worker.stop().await;
    assert_eq!(
        compactions(),
        1,
        "two claims since the compaction are below compact_after"
    );
}
