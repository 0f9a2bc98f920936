//! Chains: a completion inserts the next job in the same transaction, linked both ways;
//! failure and cancel stop the chain, resume carries it on, and a refused insert rolls the
//! completion back.

use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, TEST_TYPE, WORKER, assert_lease_lost, signalled};
use crate::testing::enqueue_new;
use crate::{
    Acquire, ChainStep, ClaimParams, Finish, FinishOutcome, Job, JobError, JobQuery, JobStatus,
    JobStore, LockService, Progress, StoreError,
};

/// The job type of a chain's second job.
pub const CHAIN_NEXT: &str = "conformance.chain.next";
/// The job type of a chain's third job.
pub const CHAIN_LAST: &str = "conformance.chain.last";

fn step(job_type: &str, payload: serde_json::Value) -> ChainStep {
    ChainStep::new(job_type, payload)
}

/// A [`TEST_TYPE`] job for `key` with chain `then`, created by `lock`.
pub(super) async fn chained(lock: &LockService, key: &str, then: Vec<ChainStep>) -> Job {
    let payload = serde_json::json!({ "key": key });
    match lock.acquire_chain(key, TEST_TYPE, payload, then).await {
        Ok(Acquire::Created(job)) => job,
        other => panic!("expected a new chained job for {key}, got {other:?}"),
    }
}

/// Claims the due jobs of `job_type`.
pub(super) async fn claim_type(fx: &Fixture, job_type: &str, limit: u32) -> Vec<Job> {
    fx.store
        .claim(&ClaimParams {
            worker_id: WORKER.to_owned(),
            job_types: vec![job_type.to_owned()],
            limit,
            now: fx.now(),
        })
        .await
        .unwrap()
}

/// Claims the one due job of `job_type`.
async fn claim_one_of(fx: &Fixture, job_type: &str) -> Job {
    let mut claimed = claim_type(fx, job_type, 10).await;
    assert_eq!(claimed.len(), 1, "expected one {job_type} job: {claimed:?}");
    claimed.pop().unwrap()
}

/// Ends `job`'s claim as the runner does (its chain marked from the job), and reads it back.
pub(super) async fn finish_as_runner(
    fx: &Fixture,
    job: &Job,
    outcome: FinishOutcome,
) -> Result<Job, StoreError> {
    fx.store
        .finish_one(fx.now(), Finish::of(job, outcome))
        .await?;
    Ok(fx.get(job).await)
}

/// Every job of `key`, newest first.
async fn jobs_of(fx: &Fixture, key: &str) -> Vec<Job> {
    fx.store
        .list(&JobQuery {
            resource_key: Some(key.to_owned()),
            ..JobQuery::default()
        })
        .await
        .unwrap()
}

/// Completing a job with a chain inserts the next job in the same write: `then[0]`'s type
/// and payload, the rest of the chain, the same resource and `max_attempts`, due at once,
/// linked both ways; workers are woken for it. Step by step the chain runs to its end, and
/// a late end of a completed job inserts nothing more.
pub async fn chained_completion_inserts_the_next_job_linked_both_ways(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let lock = fx.lock.clone().with_max_attempts(5);
    let then = vec![
        step(CHAIN_NEXT, serde_json::json!({ "pages": [1, 2] })),
        step(CHAIN_LAST, serde_json::json!({ "final": true })),
    ];
    let first = chained(&lock, "book-1", then.clone()).await;
    assert_eq!(first.then, then);
    assert_eq!((first.previous_job_id, first.next_job_id), (None, None));
    let running = fx.claim_one().await;
    assert_eq!(
        running.then, then,
        "the runner's copy of the job carries its chain"
    );

    fx.advance(Duration::from_secs(3));
    let progress = Progress {
        completed: 7,
        ..Progress::default()
    };
    let finish = Finish {
        progress: Some(progress.clone()),
        checkpoint: Some(serde_json::json!({ "done": 7 })),
        ..Finish::of(&running, FinishOutcome::Completed)
    };
    let finished = async {
        let status = fx.store.finish_one(fx.now(), finish).await.unwrap();
        assert_eq!(status, JobStatus::Completed);
    };
    match fx.store.job_signal() {
        Some(signal) => assert!(
            signalled(&signal, finished).await,
            "the next job of a chain wakes workers"
        ),
        None => finished.await,
    }
    let completed = fx.get(&first).await;
    assert_eq!(completed.status, JobStatus::Completed);
    assert_eq!(completed.finished_at, Some(fx.now()));
    assert_eq!(completed.progress, progress);
    assert_eq!(completed.checkpoint, Some(serde_json::json!({ "done": 7 })));
    assert_eq!(
        completed.then, then,
        "a completed job keeps the chain it ran"
    );
    let next_id = completed.next_job_id.expect("linked to the next job");

    let next = fx.store.get(next_id).await.unwrap();
    assert_eq!(next.status, JobStatus::Pending);
    assert_eq!(next.job_type, CHAIN_NEXT);
    assert_eq!(next.payload, serde_json::json!({ "pages": [1, 2] }));
    assert_eq!(next.then, then[1..]);
    assert_eq!(next.resource_key, "book-1");
    assert_eq!(next.max_attempts, 5, "the completed job's max_attempts");
    assert_eq!(next.previous_job_id, Some(first.id));
    assert_eq!(next.next_job_id, None);
    assert_eq!((next.attempt, next.checkpoint.clone()), (0, None));
    assert_eq!((next.resumed_from, next.error.clone()), (None, None));
    assert_eq!(next.run_at, fx.now(), "due at once");
    assert_eq!(next.created_at, fx.now());

    // A late or repeated end of the completed job is fenced out and inserts nothing.
    assert_lease_lost(
        finish_as_runner(&fx, &running, FinishOutcome::Completed).await,
        JobStatus::Completed,
    );
    assert_eq!(jobs_of(&fx, "book-1").await.len(), 2);

    let running_next = claim_one_of(&fx, CHAIN_NEXT).await;
    assert_eq!(running_next.id, next.id);
    let done_next = finish_as_runner(&fx, &running_next, FinishOutcome::Completed)
        .await
        .unwrap();
    let last_id = done_next.next_job_id.expect("linked to the last job");
    let last = fx.store.get(last_id).await.unwrap();
    assert_eq!(last.job_type, CHAIN_LAST);
    assert_eq!(last.payload, serde_json::json!({ "final": true }));
    assert!(last.then.is_empty(), "the last job has no chain left");
    assert_eq!(last.previous_job_id, Some(next.id));
    assert_eq!(last.max_attempts, 5);

    let running_last = claim_one_of(&fx, CHAIN_LAST).await;
    let done_last = finish_as_runner(&fx, &running_last, FinishOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(done_last.next_job_id, None, "the end of the chain");
    let ids: Vec<_> = jobs_of(&fx, "book-1")
        .await
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(ids, [last.id, next.id, first.id]);
}

/// A chain may continue with the type of the job it completes: the completion frees the
/// (resource, type) before the next job is inserted, in the same transaction.
pub async fn chain_step_of_the_completed_jobs_own_type_is_inserted(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let first = chained(
        &fx.lock,
        "a",
        vec![step(TEST_TYPE, serde_json::json!({ "again": true }))],
    )
    .await;
    let running = fx.claim_one().await;
    let done = finish_as_runner(&fx, &running, FinishOutcome::Completed)
        .await
        .unwrap();
    let again = fx.store.get(done.next_job_id.unwrap()).await.unwrap();
    assert_eq!(again.job_type, TEST_TYPE);
    assert_eq!(again.status, JobStatus::Pending);
    assert_eq!(again.payload, serde_json::json!({ "again": true }));
    assert_eq!(again.previous_job_id, Some(first.id));
    assert_eq!(fx.claim_one().await.id, again.id);
}

/// When the next (resource, type) already has an active job, the completion still happens
/// and links to that job; nothing is inserted and the active job is left as it is.
pub async fn chained_completion_links_to_the_active_job_of_the_next_type(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let active = enqueue_new(
        &fx.lock,
        "book-1",
        CHAIN_NEXT,
        serde_json::json!({ "mine": true }),
    )
    .await;
    chained(
        &fx.lock,
        "book-1",
        vec![
            step(CHAIN_NEXT, serde_json::json!({})),
            step(CHAIN_LAST, serde_json::json!({})),
        ],
    )
    .await;
    let running = fx.claim_one().await;
    let done = finish_as_runner(&fx, &running, FinishOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.next_job_id, Some(active.id));
    assert_eq!(
        fx.get(&active).await,
        active,
        "the active job is left as it is (its previous_job_id and chain too)"
    );
    assert_eq!(jobs_of(&fx, "book-1").await.len(), 2, "nothing inserted");

    // A running one counts as active too.
    let running_active = claim_one_of(&fx, CHAIN_NEXT).await;
    chained(
        &fx.lock,
        "book-1",
        vec![step(CHAIN_NEXT, serde_json::json!({}))],
    )
    .await;
    let second = fx.claim_one().await;
    let done = finish_as_runner(&fx, &second, FinishOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(done.next_job_id, Some(running_active.id));
    assert_eq!(jobs_of(&fx, "book-1").await.len(), 3);
}

/// Failure, cancel (pending or running), a retry that runs out of attempts and an expired
/// lease stop the chain: nothing is inserted and nothing is linked. A requeue keeps the
/// chain for the next attempt; an ended job keeps it for a resume.
pub async fn failure_and_cancel_stop_the_chain(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let lock = fx.lock.clone().with_max_attempts(1);
    let then = || vec![step(CHAIN_NEXT, serde_json::json!({}))];
    let error = JobError::new("boom", "it broke", false);

    let failed = chained(&lock, "failed", then()).await;
    let running = fx.claim_one().await;
    let ended = finish_as_runner(&fx, &running, FinishOutcome::Failed(error.clone()))
        .await
        .unwrap();
    assert_eq!(ended.status, JobStatus::Failed);

    let cancelled = chained(&lock, "cancelled", then()).await;
    let running = fx.claim_one().await;
    lock.cancel(cancelled.id).await.unwrap();
    let ended = finish_as_runner(&fx, &running, FinishOutcome::Cancelled)
        .await
        .unwrap();
    assert_eq!(ended.status, JobStatus::Cancelled);

    let cancelled_pending = chained(&lock, "cancelled-pending", then()).await;
    lock.cancel(cancelled_pending.id).await.unwrap();

    // The last attempt's retryable error fails the job.
    let retried = chained(&lock, "retried", then()).await;
    let running = fx.claim_one().await;
    let outcome = FinishOutcome::Requeue {
        error: error.clone(),
        run_at: fx.now(),
        consume_attempt: true,
    };
    let ended = finish_as_runner(&fx, &running, outcome).await.unwrap();
    assert_eq!(ended.status, JobStatus::Failed);

    // Handed back on shutdown, it keeps its chain; then its lease expires.
    let expired = chained(&lock, "expired", then()).await;
    let running = fx.claim_one().await;
    let outcome = FinishOutcome::Requeue {
        error: error.clone(),
        run_at: fx.now(),
        consume_attempt: false,
    };
    let requeued = finish_as_runner(&fx, &running, outcome).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.then, then());
    let running = fx.claim_one().await;
    assert_eq!(running.then, then());
    fx.advance_past_stale();
    fx.rescue_all().await;

    for job in [failed, cancelled, cancelled_pending, retried, expired] {
        let ended = fx.get(&job).await;
        assert!(ended.status.is_terminal(), "{ended:?}");
        assert_ne!(ended.status, JobStatus::Completed);
        assert_eq!(ended.next_job_id, None, "{ended:?}");
        assert_eq!(ended.then, then(), "kept for a resume: {ended:?}");
        assert_eq!(jobs_of(&fx, &job.resource_key).await.len(), 1);
    }
    assert!(claim_type(&fx, CHAIN_NEXT, 10).await.is_empty());
}

/// Resuming a failed job of a chain resumes the chain: the new job carries it and, when it
/// completes, inserts the next job linked to it. `resume_with_chain` replaces the chain.
pub async fn resume_of_a_chained_job_carries_its_chain(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let then = vec![
        step(CHAIN_NEXT, serde_json::json!({ "n": 1 })),
        step(CHAIN_LAST, serde_json::json!({ "n": 2 })),
    ];
    let failed = chained(&fx.lock, "book-1", then.clone()).await;
    let running = fx.claim_one().await;
    let error = JobError::new("engine_down", "connection refused", false);
    finish_as_runner(&fx, &running, FinishOutcome::Failed(error))
        .await
        .unwrap();

    let Acquire::Created(resumed) = fx.lock.resume(failed.id).await.unwrap() else {
        panic!("nothing else is active");
    };
    assert_eq!(resumed.then, then);
    assert_eq!(resumed.resumed_from, Some(failed.id));
    assert_eq!(resumed.previous_job_id, None);
    let running = fx.claim_one().await;
    let done = finish_as_runner(&fx, &running, FinishOutcome::Completed)
        .await
        .unwrap();
    let next = fx.store.get(done.next_job_id.unwrap()).await.unwrap();
    assert_eq!(next.job_type, CHAIN_NEXT);
    assert_eq!(next.then, then[1..]);
    assert_eq!(next.previous_job_id, Some(resumed.id));
    assert_eq!(
        fx.get(&failed).await.next_job_id,
        None,
        "the failed job stays unlinked"
    );

    // A cancelled one resumes with another chain, or none.
    let cancelled = chained(&fx.lock, "book-2", then.clone()).await;
    fx.lock.cancel(cancelled.id).await.unwrap();
    let replaced = vec![step(CHAIN_LAST, serde_json::json!({}))];
    let Acquire::Created(resumed) = fx
        .lock
        .resume_with_chain(cancelled.id, replaced.clone())
        .await
        .unwrap()
    else {
        panic!("nothing else is active");
    };
    assert_eq!(resumed.then, replaced);
    fx.lock.cancel(resumed.id).await.unwrap();
    let Acquire::Created(unchained) = fx
        .lock
        .resume_with_chain(resumed.id, Vec::new())
        .await
        .unwrap()
    else {
        panic!("nothing else is active");
    };
    assert!(unchained.then.is_empty());
}

/// All or nothing: when the database refuses the next job (here a step with an empty job
/// type, which no job may have), the completion is rolled back with it. That job's finish
/// is an error while the rest of the batch is written; the job still runs under its lease
/// with nothing of the end written, and no job was inserted. Its end can be written again
/// as any failed end: the rescuer requeues it once its heartbeat is stale, the next claim
/// meets the same refusal, and a failure (which stops the chain) is written.
pub async fn refused_next_job_rolls_the_completion_back(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    chained(
        &fx.lock,
        "refused",
        vec![
            step("", serde_json::json!({})),
            step(CHAIN_LAST, serde_json::json!({})),
        ],
    )
    .await;
    let refused = fx.claim_one().await;
    let plain = fx.running("plain").await;
    chained(
        &fx.lock,
        "linked",
        vec![step(CHAIN_NEXT, serde_json::json!({}))],
    )
    .await;
    let linked = fx.claim_one().await;

    fx.advance(Duration::from_secs(1));
    let batch = [
        Finish {
            progress: Some(Progress {
                completed: 3,
                ..Progress::default()
            }),
            checkpoint: Some(serde_json::json!({ "done": 3 })),
            ..Finish::of(&refused, FinishOutcome::Completed)
        },
        Finish::of(&plain, FinishOutcome::Completed),
        Finish::of(&linked, FinishOutcome::Completed),
    ];
    let results = fx.store.finish(fx.now(), &batch).await.unwrap();
    assert!(
        matches!(results[0], Err(StoreError::Corrupt(_))),
        "the refusal is that job's error: {:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().ok(), Some(&JobStatus::Completed));
    assert_eq!(results[2].as_ref().ok(), Some(&JobStatus::Completed));
    assert!(
        fx.get(&linked).await.next_job_id.is_some(),
        "another chain of the batch goes on"
    );

    let after = fx.get(&refused).await;
    assert_eq!(
        after, refused,
        "the job is as it was: running under its lease, no end, no progress, no link"
    );
    assert_eq!(jobs_of(&fx, "refused").await.len(), 1, "nothing inserted");
    fx.heartbeat(&refused, None, None)
        .await
        .expect("its lease still holds");

    // The same end meets the same refusal; a stale lease is still fenced out.
    let again = fx
        .store
        .finish_one(fx.now(), Finish::of(&refused, FinishOutcome::Completed))
        .await;
    assert!(matches!(again, Err(StoreError::Corrupt(_))), "{again:?}");
    let stale = Finish {
        lease: crate::Lease(refused.lease.0 - 1),
        ..Finish::of(&refused, FinishOutcome::Completed)
    };
    assert_lease_lost(
        fx.store.finish_one(fx.now(), stale).await,
        JobStatus::Running,
    );
    assert_eq!(fx.get(&refused).await.status, JobStatus::Running);

    // Retried as any failed end: requeued by the rescuer, claimed again, failed.
    fx.advance_past_stale();
    let report = fx.rescue_all().await;
    assert_eq!(report.requeued, [refused.id]);
    let retry = fx.claim_one().await;
    assert_eq!((retry.id, retry.attempt), (refused.id, 2));
    let error = JobError::new("chain_refused", "the next job was refused", false);
    let failed = finish_as_runner(&fx, &retry, FinishOutcome::Failed(error))
        .await
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.next_job_id, None);
    assert_eq!(jobs_of(&fx, "refused").await.len(), 1);
}
