//! The worker runtime end to end on a real store: a real handler, real heartbeats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::runtime::{
    CancelReason, HandlerError, JobContext, JobHandler, Worker, WorkerConfig, WorkerMetrics,
};
use crate::testing::{enqueue_new, eventually, expect_created, wait_for_job};
use crate::{
    Acquire, ChainStep, ClaimParams, Clock, Job, JobId, JobQuery, JobStatus, JobStore, LockService,
    RecoveryPolicy, RescueScope, SystemClock, codes,
};

/// The job type of the suite's runtime handler.
pub const STEPS: &str = "conformance.steps";

/// How a [`StepsHandler`] job behaves, from its payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StepsPayload {
    /// Steps to run.
    pub steps: u32,
    /// Fail at this step ...
    pub fail_at: Option<u32>,
    /// ... in this way (`retryable`, `terminal`, `panic`) ...
    pub fail_kind: String,
    /// ... while the attempt is at most this, and the job is not a resumed one.
    pub fail_attempts: u32,
    /// Wait at this step until cancelled ...
    pub block_at: Option<u32>,
    /// ... or, when set, forever: a handler that ignores its token.
    pub deaf: bool,
    /// Hold the thread (a blocking sleep) this many milliseconds before the first step.
    pub hog_ms: u64,
    /// When set, a `terminal` failure (and the progress before it) says
    /// `step N: bad<NUL>byte` and this many `x`: a message no store keeps as it is.
    pub error_padding: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StepsCheckpoint {
    done: u32,
}

/// A handler that runs numbered steps, checkpointing after each, and records what it ran.
#[derive(Debug, Default)]
pub struct StepsHandler {
    /// (job, attempt, step) for every step run.
    pub ran: Mutex<Vec<(JobId, u32, u32)>>,
    /// Why each job's token fired, as the handler saw it.
    pub reasons: Mutex<Vec<(JobId, Option<CancelReason>)>>,
    /// Set while a handler holds its thread (`hog_ms`).
    pub hogging: AtomicBool,
}

impl StepsHandler {
    fn steps_of(&self, id: JobId) -> Vec<(u32, u32)> {
        let ran = self.ran.lock().unwrap();
        ran.iter()
            .filter(|(job, ..)| *job == id)
            .map(|(_, attempt, step)| (*attempt, *step))
            .collect()
    }
}

#[async_trait]
impl JobHandler for StepsHandler {
    fn job_type(&self) -> &str {
        STEPS
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let payload: StepsPayload = context.payload()?;
        let start = context
            .checkpoint::<StepsCheckpoint>()?
            .map_or(0, |c| c.done);
        context.update_progress(|progress| progress.total = Some(u64::from(payload.steps)));
        if payload.hog_ms > 0 {
            self.hogging.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(payload.hog_ms));
            self.hogging.store(false, Ordering::SeqCst);
        }
        for step in start + 1..=payload.steps {
            if payload.block_at == Some(step) {
                if payload.deaf {
                    std::future::pending::<()>().await;
                }
                context.cancelled().await;
                self.reasons
                    .lock()
                    .unwrap()
                    .push((context.job().id, context.cancel_reason()));
                return Err(HandlerError::cancelled());
            }
            context.check_cancelled()?;
            self.ran
                .lock()
                .unwrap()
                .push((context.job().id, context.attempt(), step));
            let fails = payload.fail_at == Some(step)
                && context.attempt() <= payload.fail_attempts
                && context.job().resumed_from.is_none();
            if fails {
                match payload.fail_kind.as_str() {
                    "retryable" => {
                        return Err(HandlerError::retryable(
                            "flaky",
                            format!("step {step} timed out"),
                        ));
                    }
                    "panic" => panic!("step {step} exploded"),
                    _ => {
                        let message = match payload.error_padding {
                            Some(padding) => {
                                format!("step {step}: bad\0byte {}", "x".repeat(padding))
                            }
                            None => format!("step {step} is invalid"),
                        };
                        context.update_progress(|progress| {
                            progress.message = Some(message.clone());
                        });
                        return Err(HandlerError::terminal("bad_step", message));
                    }
                }
            }
            context.update_progress(|progress| {
                progress.completed = u64::from(step);
                progress.last_completed_item = Some(step.to_string());
            });
            context.set_checkpoint(&StepsCheckpoint { done: step });
        }
        Ok(())
    }
}

/// Short timings so the suite runs fast.
pub fn fast_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        heartbeat_interval: Duration::from_millis(100),
        progress_flush: Duration::from_millis(50),
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        retry_backoff: Duration::from_millis(10),
        max_retry_backoff: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// A worker with a [`StepsHandler`] running in the background.
pub struct RunningWorker {
    /// The handler, to see what ran.
    pub handler: Arc<StepsHandler>,
    /// Fires the worker's shutdown.
    pub shutdown: CancellationToken,
    /// The worker's task; ends after shutdown.
    pub task: tokio::task::JoinHandle<()>,
    /// A lock service over the same store.
    pub lock: LockService,
    /// The store.
    pub store: Arc<dyn JobStore>,
    /// The worker's counters.
    pub metrics: Arc<WorkerMetrics>,
}

impl RunningWorker {
    /// Starts a worker with `config` over `store`.
    pub fn start(store: Arc<dyn JobStore>, config: WorkerConfig) -> Self {
        Self::start_with_clock(store, config, Arc::new(SystemClock))
    }

    /// Starts a worker with `config` over `store`, taking time from `clock`.
    pub fn start_with_clock(
        store: Arc<dyn JobStore>,
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let handler = Arc::new(StepsHandler::default());
        let shutdown = CancellationToken::new();
        let lock = LockService::new(store.clone(), clock.clone(), config.recovery_policy());
        let worker = Worker::new(store.clone(), clock, config).handler(handler.clone());
        let metrics = worker.metrics();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { worker.run(token).await.expect("worker runs") });
        Self {
            handler,
            shutdown,
            task,
            lock,
            store,
            metrics,
        }
    }

    /// Enqueues a steps job for `key`.
    pub async fn enqueue(&self, key: &str, payload: StepsPayload) -> Job {
        let payload = serde_json::to_value(payload).unwrap();
        enqueue_new(&self.lock, key, STEPS, payload).await
    }

    /// Waits (polling, up to [`WAIT`]) until the job satisfies `done`.
    pub async fn wait_for(&self, id: JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        wait_for_job(&*self.store, id, WAIT, what, done).await
    }

    /// Shuts the worker down and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// How long the suite waits for a state it polls for.
pub const WAIT: Duration = Duration::from_secs(20);

fn steps(n: u32) -> StepsPayload {
    StepsPayload {
        steps: n,
        ..StepsPayload::default()
    }
}

/// Enqueues a steps job for `key` with the chain `then`.
async fn enqueue_chain(worker: &RunningWorker, key: &str, steps: u32, then: Vec<ChainStep>) -> Job {
    let payload = serde_json::to_value(self::steps(steps)).unwrap();
    let acquire = worker.lock.acquire_chain(key, STEPS, payload, then);
    expect_created(acquire.await.unwrap(), key)
}

/// The runner completes a job of a chain through the chained finish: the next job is
/// inserted with the completion, and a worker runs it at once, to the end of the chain.
pub async fn runtime_runs_a_chain_job_after_job(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let step = |n| ChainStep::new(STEPS, serde_json::to_value(steps(n)).unwrap());
    let first = enqueue_chain(&worker, "book-1", 3, vec![step(2), step(1)]).await;
    let completed = |job: &Job| job.status == JobStatus::Completed;
    let first = worker.wait_for(first.id, "the first job", completed).await;
    let second_id = first
        .next_job_id
        .expect("the completion inserted the next job");
    let second = worker
        .wait_for(second_id, "the second job", completed)
        .await;
    assert_eq!(second.previous_job_id, Some(first.id));
    assert_eq!(second.then, [step(1)]);
    assert_eq!(worker.handler.steps_of(second.id), [(1, 1), (1, 2)]);
    let third_id = second.next_job_id.expect("the chain goes on");
    let third = worker.wait_for(third_id, "the third job", completed).await;
    assert_eq!(third.previous_job_id, Some(second.id));
    assert!(third.then.is_empty());
    assert_eq!(third.next_job_id, None);
    assert_eq!(worker.handler.steps_of(third.id), [(1, 1)]);
    worker.stop().await;
}

/// A completion whose next job the store refuses is not written; the runner leaves the job
/// to the rescuer as any failed end, which requeues it until its attempts are used, and it
/// fails with `lease_expired`. Nothing is ever inserted.
pub async fn runtime_retries_a_completion_whose_next_job_is_refused(store: Arc<dyn JobStore>) {
    let config = WorkerConfig {
        stale_after: Duration::from_millis(300),
        ..fast_config()
    };
    let worker = RunningWorker::start(store, config);
    let refused = vec![ChainStep::new("", serde_json::json!({}))];
    let job = enqueue_chain(&worker, "book-1", 1, refused).await;
    let failed = worker
        .wait_for(job.id, "the job to fail", |job| {
            job.status == JobStatus::Failed
        })
        .await;
    assert_eq!(failed.error.unwrap().code, codes::LEASE_EXPIRED);
    assert_eq!(
        failed.attempt, failed.max_attempts,
        "every attempt was used"
    );
    assert_eq!(failed.next_job_id, None);
    let jobs = worker
        .store
        .list(&JobQuery {
            resource_key: Some("book-1".into()),
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "nothing was inserted: {jobs:?}");
    worker.stop().await;
}

/// A job runs to completion; its progress and checkpoint are written.
pub async fn runtime_completes_a_job_with_progress_and_checkpoint(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let job = worker.enqueue("book-1", steps(5)).await;
    let done = worker
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    assert_eq!(done.attempt, 1);
    assert_eq!(done.progress.total, Some(5));
    assert_eq!(done.progress.completed, 5);
    assert_eq!(done.progress.last_completed_item.as_deref(), Some("5"));
    assert_eq!(done.checkpoint, Some(serde_json::json!({ "done": 5 })));
    assert_eq!(done.error, None);
    assert_eq!(
        worker.handler.steps_of(job.id),
        [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    );
    worker.stop().await;
}

/// A retryable error requeues the job; the next attempt continues after the checkpoint.
pub async fn runtime_retries_a_retryable_error_then_succeeds(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let payload = StepsPayload {
        fail_at: Some(3),
        fail_kind: "retryable".into(),
        fail_attempts: 1,
        ..steps(5)
    };
    let job = worker.enqueue("book-1", payload).await;
    let done = worker
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    assert_eq!(done.attempt, 2);
    assert_eq!(done.error, None, "a completed job shows no error");
    assert_eq!(
        worker.handler.steps_of(job.id),
        [(1, 1), (1, 2), (1, 3), (2, 3), (2, 4), (2, 5)],
        "attempt 2 starts after the checkpoint of attempt 1"
    );
    worker.stop().await;
}

/// A terminal error fails the job at once with the handler's own message.
pub async fn runtime_fails_a_terminal_error_at_once_with_its_message(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let payload = StepsPayload {
        fail_at: Some(2),
        fail_kind: "terminal".into(),
        fail_attempts: 9,
        ..steps(5)
    };
    let job = worker.enqueue("book-1", payload).await;
    let failed = worker
        .wait_for(job.id, "failure", |job| job.status == JobStatus::Failed)
        .await;
    assert_eq!(failed.attempt, 1);
    let error = failed.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("bad_step", "step 2 is invalid")
    );
    assert!(!error.retryable);
    assert_eq!(failed.checkpoint, Some(serde_json::json!({ "done": 1 })));
    worker.stop().await;
}

/// An error message no store could keep as it is (a NUL byte, which Postgres refuses, and
/// a megabyte of text) still ends the job failed, with the message cleaned and capped.
pub async fn runtime_fails_a_job_whose_error_message_has_nul_and_no_end(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let payload = StepsPayload {
        fail_at: Some(2),
        fail_kind: "terminal".into(),
        fail_attempts: 9,
        error_padding: Some(1024 * 1024),
        ..steps(3)
    };
    let job = worker.enqueue("book-1", payload).await;
    let failed = worker
        .wait_for(job.id, "failure", |job| job.status == JobStatus::Failed)
        .await;
    let error = failed.error.unwrap();
    assert_eq!(error.code, "bad_step");
    assert!(
        error.message.starts_with("step 2: bad\\0byte xxx"),
        "{}",
        &error.message[..40]
    );
    assert!(error.message.len() <= crate::JobError::MAX_MESSAGE_BYTES);
    assert!(!error.message.contains('\0'));
    let progress = failed.progress.message.unwrap();
    assert!(progress.starts_with("step 2: bad\\0byte"), "{progress:.40}");
    assert!(progress.len() <= crate::Progress::MAX_TEXT_BYTES);
    worker.stop().await;
}

/// A panic fails the attempt with the panic message; attempts used, the job fails.
pub async fn runtime_turns_a_panic_into_a_failed_attempt(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let payload = StepsPayload {
        fail_at: Some(1),
        fail_kind: "panic".into(),
        fail_attempts: 9,
        ..steps(2)
    };
    let job = worker.enqueue("book-1", payload).await;
    let failed = worker
        .wait_for(job.id, "failure", |job| job.status == JobStatus::Failed)
        .await;
    assert_eq!(failed.attempt, failed.max_attempts);
    let error = failed.error.unwrap();
    assert_eq!(error.code, codes::PANICKED);
    assert_eq!(error.message, "step 1 exploded");
    assert_eq!(
        worker.handler.steps_of(job.id).len(),
        failed.max_attempts as usize
    );
    // Counted by what was written: the last attempt's panic failed the job.
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::SeqCst);
    let metrics = &worker.metrics;
    eventually(WAIT, "the failure to be counted", || async {
        (count(&metrics.failed) == 1).then_some(())
    })
    .await;
    assert_eq!(count(&metrics.retried), u64::from(failed.max_attempts) - 1);
    // The worker survives its handlers' panics.
    let next = worker.enqueue("book-2", steps(1)).await;
    worker
        .wait_for(next.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    worker.stop().await;
}

/// A cancel request reaches the running handler, which stops; the job ends cancelled.
pub async fn runtime_cancels_a_running_job_on_request(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let job = worker
        .enqueue(
            "book-1",
            StepsPayload {
                block_at: Some(3),
                ..steps(5)
            },
        )
        .await;
    worker
        .wait_for(job.id, "progress", |job| job.progress.completed == 2)
        .await;
    worker.lock.cancel(job.id).await.unwrap();
    let cancelled = worker
        .wait_for(job.id, "cancel", |job| job.status == JobStatus::Cancelled)
        .await;
    assert!(cancelled.cancel_requested);
    assert_eq!(cancelled.checkpoint, Some(serde_json::json!({ "done": 2 })));
    let reasons = worker.handler.reasons.lock().unwrap().clone();
    assert_eq!(reasons, [(job.id, Some(CancelReason::CancelRequested))]);
    worker.stop().await;
}

/// Resume of a failed job runs only the steps after its checkpoint.
pub async fn runtime_resume_continues_after_the_checkpoint(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store, fast_config());
    let payload = StepsPayload {
        fail_at: Some(4),
        fail_kind: "terminal".into(),
        fail_attempts: 1,
        ..steps(6)
    };
    let job = worker.enqueue("book-1", payload).await;
    worker
        .wait_for(job.id, "failure", |job| job.status == JobStatus::Failed)
        .await;
    let Acquire::Created(resumed) = worker.lock.resume(job.id).await.unwrap() else {
        panic!("nothing else is active");
    };
    let done = worker
        .wait_for(resumed.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    assert_eq!(done.resumed_from, Some(job.id));
    assert_eq!(
        worker.handler.steps_of(resumed.id),
        [(1, 4), (1, 5), (1, 6)]
    );
    assert_eq!(done.checkpoint, Some(serde_json::json!({ "done": 6 })));
    worker.stop().await;
}

/// Shutdown hands a running job back as `interrupted` without using an attempt.
pub async fn runtime_hands_jobs_back_on_shutdown_without_using_an_attempt(
    store: Arc<dyn JobStore>,
) {
    let worker = RunningWorker::start(store.clone(), fast_config());
    let job = worker
        .enqueue(
            "book-1",
            StepsPayload {
                block_at: Some(2),
                ..steps(3)
            },
        )
        .await;
    worker
        .wait_for(job.id, "progress", |job| job.progress.completed == 1)
        .await;
    let handler = worker.handler.clone();
    worker.stop().await;
    let requeued = store.get(job.id).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 0);
    assert_eq!(requeued.error.unwrap().code, codes::INTERRUPTED);
    assert_eq!(requeued.checkpoint, Some(serde_json::json!({ "done": 1 })));
    assert_eq!(
        handler.reasons.lock().unwrap().clone(),
        [(job.id, Some(CancelReason::Shutdown))]
    );
    assert!(
        store
            .list_workers(requeued.created_at)
            .await
            .unwrap()
            .is_empty(),
        "worker left the registry"
    );
}

/// A worker whose job was taken over stops its handler and writes nothing more.
pub async fn runtime_stops_a_handler_whose_lease_was_lost(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store.clone(), fast_config());
    let job = worker
        .enqueue(
            "book-1",
            StepsPayload {
                block_at: Some(2),
                ..steps(3)
            },
        )
        .await;
    worker
        .wait_for(job.id, "progress", |job| job.progress.completed == 1)
        .await;
    let stolen = take_over(&store, "book-1").await;
    let reasons = eventually(WAIT, "the handler to stop", || async {
        let reasons = worker.handler.reasons.lock().unwrap().clone();
        (!reasons.is_empty()).then_some(reasons)
    })
    .await;
    assert_eq!(reasons, [(job.id, Some(CancelReason::LeaseLost))]);
    worker.stop().await;
    let after = store.get(job.id).await.unwrap();
    assert_eq!(after.status, JobStatus::Running);
    assert_eq!(after.worker_id.as_deref(), Some("thief"));
    assert_eq!(after.lease, stolen.lease);
    assert_eq!(
        after.heartbeat_at, stolen.heartbeat_at,
        "the old worker wrote nothing"
    );
}

/// Another worker's rescuer decides the heartbeat of `key`'s running job is stale, and
/// another worker ("thief") claims it.
async fn take_over(store: &Arc<dyn JobStore>, key: &str) -> Job {
    let hasty = RecoveryPolicy {
        stale_after: Duration::ZERO,
        pending_timeout: Duration::from_secs(600),
    };
    let now = crate::Clock::now(&SystemClock) + chrono::Duration::seconds(1);
    let scope = RescueScope::Resource {
        resource_key: key.into(),
        job_type: STEPS.into(),
    };
    store
        .rescue(&hasty.rescue_params(now, scope))
        .await
        .unwrap();
    let params = ClaimParams {
        worker_id: "thief".into(),
        job_types: vec![STEPS.into()],
        limit: 1,
        now,
    };
    store
        .claim(&params)
        .await
        .unwrap()
        .pop()
        .expect("the requeued job")
}

/// A handler that ignores its lost lease is dropped `shutdown_grace` later: its slot frees.
pub async fn runtime_drops_a_handler_that_ignores_its_lost_lease(store: Arc<dyn JobStore>) {
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..fast_config()
    };
    let worker = RunningWorker::start(store.clone(), config);
    let payload = StepsPayload {
        block_at: Some(2),
        deaf: true,
        ..steps(3)
    };
    let job = worker.enqueue("book-1", payload).await;
    worker
        .wait_for(job.id, "progress", |job| job.progress.completed == 1)
        .await;
    let stolen = take_over(&store, "book-1").await;
    let metrics = worker.metrics.clone();
    eventually(WAIT, "the deaf handler to be dropped", || async {
        (metrics.running.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    assert_eq!(metrics.lease_lost.load(Ordering::SeqCst), 1);
    worker.stop().await;
    let after = store.get(job.id).await.unwrap();
    assert_eq!(
        (after.lease, after.heartbeat_at),
        (stolen.lease, stolen.heartbeat_at)
    );
}

/// The heartbeat is a task of its own: it goes on while the handler holds its thread.
pub async fn runtime_heartbeats_while_a_handler_holds_its_thread(store: Arc<dyn JobStore>) {
    let worker = RunningWorker::start(store.clone(), fast_config());
    let payload = StepsPayload {
        hog_ms: 2000,
        ..steps(1)
    };
    let job = worker.enqueue("book-1", payload).await;
    let handler = worker.handler.clone();
    eventually(WAIT, "the handler to hold its thread", || async {
        handler.hogging.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let before = store.get(job.id).await.unwrap().heartbeat_at;
    eventually(
        WAIT,
        "a heartbeat while the handler holds its thread",
        || async {
            let now = store.get(job.id).await.unwrap().heartbeat_at;
            assert!(
                handler.hogging.load(Ordering::SeqCst),
                "no heartbeat was written while the handler held its thread"
            );
            (now > before).then_some(())
        },
    )
    .await;
    worker
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    worker.stop().await;
}
