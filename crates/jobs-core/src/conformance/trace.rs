//! Trace parents: the W3C `traceparent` stored with a job, kept only when valid, and
//! inherited by the jobs that continue it.

use std::sync::Arc;

use super::chain::{CHAIN_NEXT, claim_type, finish_as_runner};
use super::{Fixture, TEST_TYPE};
use crate::{
    Acquire, AcquireRequest, ChainStep, FinishOutcome, Insert, Job, JobError, JobId, JobQuery,
    JobStore, NewJob,
};

/// A valid trace parent (the W3C spec's example).
pub const TRACE_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Another valid one, not sampled.
const OTHER_TRACE_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

fn new_job(fx: &Fixture, key: &str, trace_parent: Option<&str>) -> NewJob {
    NewJob {
        id: JobId::new(),
        resource_key: key.to_owned(),
        job_type: TEST_TYPE.to_owned(),
        payload: serde_json::json!({ "key": key }),
        max_attempts: 3,
        checkpoint: None,
        resumed_from: None,
        then: Vec::new(),
        trace_parent: trace_parent.map(str::to_owned),
        now: fx.now(),
    }
}

fn inserted(answer: Insert) -> Job {
    match answer {
        Insert::Inserted(job) => job,
        Insert::Busy(active) => panic!("expected an insert, got busy with {active:?}"),
    }
}

/// `insert`, `insert_many` and `acquire_many` store a job's trace parent, and every read
/// (get, list, claim) gives it back; an invalid one (wrong version, uppercase, all-zero ids,
/// too long, not one at all) is dropped: the job is stored without one, and no insert fails.
pub async fn trace_parent_is_stored_and_an_invalid_one_dropped(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let invalid = [
        "00-garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ];

    let one = inserted(
        fx.store
            .insert(new_job(&fx, "one", Some(TRACE_PARENT)))
            .await
            .unwrap(),
    );
    assert_eq!(one.trace_parent.as_deref(), Some(TRACE_PARENT));
    let none = inserted(fx.store.insert(new_job(&fx, "none", None)).await.unwrap());
    assert_eq!(none.trace_parent, None);
    let mut expected = vec![(one.id, Some(TRACE_PARENT)), (none.id, None)];
    for (index, text) in invalid.iter().enumerate() {
        let job = inserted(
            fx.store
                .insert(new_job(&fx, &format!("bad-{index}"), Some(text)))
                .await
                .unwrap(),
        );
        assert_eq!(job.trace_parent, None, "{text:?} is dropped");
        expected.push((job.id, None));
    }

    // A batch: each job keeps its own, invalid ones dropped.
    let batch = vec![
        new_job(&fx, "many-1", Some(OTHER_TRACE_PARENT)),
        new_job(&fx, "many-2", Some(invalid[2])),
        new_job(&fx, "many-3", None),
        new_job(&fx, "many-4", Some(TRACE_PARENT)),
    ];
    let answers = fx.store.insert_many(batch).await.unwrap();
    let many: Vec<Job> = answers.into_iter().map(inserted).collect();
    let wanted = [Some(OTHER_TRACE_PARENT), None, None, Some(TRACE_PARENT)];
    for (job, wanted) in many.iter().zip(wanted) {
        assert_eq!(job.trace_parent.as_deref(), wanted, "{}", job.resource_key);
        expected.push((job.id, wanted));
    }

    // Through the lock service: a request's own trace parent, or none outside a trace.
    let requests = vec![
        AcquireRequest::new("lock-1", TEST_TYPE, serde_json::json!({}))
            .with_trace_parent(TRACE_PARENT),
        AcquireRequest::new("lock-2", TEST_TYPE, serde_json::json!({})),
        AcquireRequest::new("lock-3", TEST_TYPE, serde_json::json!({}))
            .with_trace_parent(invalid[0]),
    ];
    let acquired = fx.lock.acquire_many(requests).await.unwrap();
    let wanted = [Some(TRACE_PARENT), None, None];
    for (answer, wanted) in acquired.into_iter().zip(wanted) {
        let Acquire::Created(job) = answer else {
            panic!("every key is free: {answer:?}");
        };
        assert_eq!(job.trace_parent.as_deref(), wanted, "{}", job.resource_key);
        expected.push((job.id, wanted));
    }

    for (id, wanted) in &expected {
        assert_eq!(
            fx.store.get(*id).await.unwrap().trace_parent.as_deref(),
            *wanted
        );
    }
    let listed = fx.store.list(&JobQuery::default()).await.unwrap();
    assert_eq!(listed.len(), expected.len());
    for job in listed {
        let (_, wanted) = expected.iter().find(|(id, _)| *id == job.id).unwrap();
        assert_eq!(job.trace_parent.as_deref(), *wanted);
    }
    let claimed = fx.claim(100).await;
    assert_eq!(claimed.len(), expected.len());
    for job in claimed {
        let (_, wanted) = expected.iter().find(|(id, _)| *id == job.id).unwrap();
        assert_eq!(job.trace_parent.as_deref(), *wanted, "claim reads it");
    }
}

/// The next job of a chain (inserted by the completion) and a resumed job carry the trace
/// parent of the job they continue: one trace from the request to the chain's last job.
pub async fn chained_and_resumed_jobs_inherit_the_trace_parent(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let request = AcquireRequest::new("book", TEST_TYPE, serde_json::json!({}))
        .with_chain(vec![ChainStep::new(CHAIN_NEXT, serde_json::json!({}))])
        .with_trace_parent(TRACE_PARENT);
    let mut acquired = fx.lock.acquire_many(vec![request]).await.unwrap();
    let Some(Acquire::Created(first)) = acquired.pop() else {
        panic!("book is free");
    };
    assert_eq!(first.trace_parent.as_deref(), Some(TRACE_PARENT));

    let running = fx.claim_one().await;
    let completed = finish_as_runner(&fx, &running, FinishOutcome::Completed)
        .await
        .unwrap();
    let next = fx
        .store
        .get(
            completed
                .next_job_id
                .expect("the completion inserted the next job"),
        )
        .await
        .unwrap();
    assert_eq!(next.job_type, CHAIN_NEXT);
    assert_eq!(next.trace_parent.as_deref(), Some(TRACE_PARENT));

    let mut claimed = claim_type(&fx, CHAIN_NEXT, 1).await;
    let running = claimed.pop().expect("the next job is due");
    assert_eq!(running.trace_parent.as_deref(), Some(TRACE_PARENT));
    let error = JobError::new("broken", "the next job failed", false);
    finish_as_runner(&fx, &running, FinishOutcome::Failed(error))
        .await
        .unwrap();
    let Acquire::Created(resumed) = fx.lock.resume(next.id).await.unwrap() else {
        panic!("nothing else is active on book");
    };
    assert_eq!(resumed.resumed_from, Some(next.id));
    assert_eq!(resumed.trace_parent.as_deref(), Some(TRACE_PARENT));
    assert_eq!(
        fx.get(&resumed).await.trace_parent.as_deref(),
        Some(TRACE_PARENT)
    );
}
