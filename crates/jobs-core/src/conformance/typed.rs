//! Typed jobs on a real store: payload and checkpoint decoded, resume from the typed
//! checkpoint, a payload that does not decode failing at once.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::runtime::{WAIT, fast_config};
use crate::runtime::{HandlerError, Worker};
use crate::testing::eventually;
use crate::typed::{self, Context, Job as TypedJob};
use crate::{Acquire, Job, JobId, JobStatus, JobStore, LockService, SystemClock};

/// Counts to `to`, one step per checkpoint, failing (terminally) at `fail_at` unless the job
/// is a resumed one.
#[derive(Debug, Serialize, Deserialize)]
struct CountTo {
    to: u32,
    fail_at: Option<u32>,
}

/// Every step run, by job.
type Steps = Mutex<Vec<(JobId, u32)>>;

#[crate::async_trait]
impl TypedJob for CountTo {
    const TYPE: &'static str = "conformance.count_to";
    type Checkpoint = u32;
    type State = Arc<Steps>;

    async fn run(self, steps: &Arc<Steps>, context: Context<Self>) -> Result<(), HandlerError> {
        let start = context.checkpoint().copied().unwrap_or(0);
        for step in start + 1..=self.to {
            context.check_cancelled()?;
            if self.fail_at == Some(step) && context.job().resumed_from.is_none() {
                return Err(HandlerError::terminal("bad_step", format!("step {step}")));
            }
            steps.lock().unwrap().push((context.job().id, step));
            context.set_checkpoint(&step);
        }
        Ok(())
    }
}

/// A worker of `CountTo` jobs over `store`; stop it with the token.
fn start(store: &Arc<dyn JobStore>) -> (Arc<Steps>, LockService, CancellationToken) {
    let config = fast_config();
    let clock = Arc::new(SystemClock);
    let lock = LockService::new(store.clone(), clock.clone(), config.recovery_policy());
    let steps = Arc::new(Steps::default());
    let shared = steps.clone();
    let worker =
        Worker::new(store.clone(), clock, config).handler(typed::handler::<CountTo>(shared));
    let shutdown = CancellationToken::new();
    tokio::spawn(worker.run(shutdown.clone()));
    (steps, lock, shutdown)
}

async fn finished(store: &Arc<dyn JobStore>, id: JobId) -> Job {
    eventually(WAIT, "the job to finish", || async {
        store
            .get(id)
            .await
            .ok()
            .filter(|job| job.status.is_terminal())
    })
    .await
}

/// A typed job runs with its decoded payload; failed part way, its resume starts after
/// the typed checkpoint.
pub async fn typed_job_resumes_from_its_typed_checkpoint(store: Arc<dyn JobStore>) {
    let (steps, lock, shutdown) = start(&store);
    let job = CountTo {
        to: 5,
        fail_at: Some(3),
    };
    let Acquire::Created(first) = lock.enqueue("resource-1", &job).await.unwrap() else {
        panic!("resource-1 is busy");
    };
    assert_eq!(first.job_type, CountTo::TYPE);
    let failed = finished(&store, first.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.checkpoint, Some(serde_json::json!(2)));
    let Acquire::Created(resumed) = lock.resume(first.id).await.unwrap() else {
        panic!("resume is busy");
    };
    let completed = finished(&store, resumed.id).await;
    assert_eq!(completed.status, JobStatus::Completed);
    assert_eq!(
        *steps.lock().unwrap(),
        [
            (first.id, 1),
            (first.id, 2),
            (resumed.id, 3),
            (resumed.id, 4),
            (resumed.id, 5)
        ]
    );
    shutdown.cancel();
}

/// A payload that does not decode as the job's type fails the job at once, with a message
/// naming the job type, the Rust type and the reason.
pub async fn typed_job_with_a_payload_that_does_not_decode_fails_at_once(store: Arc<dyn JobStore>) {
    let (steps, lock, shutdown) = start(&store);
    let payload = serde_json::json!({"to": "five"});
    let Acquire::Created(job) = lock
        .acquire("resource-1", CountTo::TYPE, payload)
        .await
        .unwrap()
    else {
        panic!("resource-1 is busy");
    };
    let failed = finished(&store, job.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempt, 1, "a decode error is not retried");
    let error = failed.error.unwrap();
    assert_eq!(error.code, "invalid_payload");
    assert!(
        error.message.contains("`conformance.count_to`")
            && error.message.contains("CountTo")
            && error.message.contains("invalid type"),
        "{}",
        error.message
    );
    assert!(steps.lock().unwrap().is_empty());
    shutdown.cancel();
}
