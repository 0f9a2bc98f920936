//! The worker runtime: claims jobs, runs their handlers, heartbeats them, ends them.
//!
//! A [`Worker`] is built from a store, a clock, handlers and a [`WorkerConfig`], and runs
//! until its shutdown token fires:
//!
//! - It claims up to its free slots in one statement whenever a slot is free and work may be
//!   there: at once when the store signals a new or requeued job, else every
//!   `poll_interval`; as many claim loops as the store runs side by side share the slots.
//! - Each running job is a task that polls its handler, beside a heartbeat task that renews
//!   `heartbeat_at` every `heartbeat_interval` and writes coalesced progress and checkpoint at
//!   most every `progress_flush`, in the same fenced write: a handler that holds its thread
//!   for a while does not stall its heartbeat. A lost lease or a cancel request fires the
//!   handler's token with its reason; a handler still running `shutdown_grace` after losing
//!   its lease is dropped.
//! - The runner alone ends claims: success completes; `Terminal` fails; `Retryable` and
//!   panics requeue with exponential backoff and jitter until attempts are used; a cancelled
//!   handler is marked cancelled; ends are batched into one store call, fenced per job.
//! - Every `heartbeat_interval` it touches its registry row; every second (or
//!   `heartbeat_interval`, if shorter) it rescues stuck jobs, so a dead worker's job is
//!   requeued within a second of going stale; with it, it enqueues the latest tick of each
//!   of its schedules (see [`crate::schedule`]).
//! - With a `job_retention`, once a minute (by its clock) it deletes the finished jobs that
//!   ended longer ago, `retention_batch` at a time with a short pause between batches, in a
//!   task of its own so a long backlog never delays a rescue.
//! - On shutdown it stops claiming, fires every handler's token with reason `Shutdown`, waits
//!   up to `shutdown_grace`, and hands back what is left as `interrupted` without using an
//!   attempt.

mod context;
mod handler;
mod metrics;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use context::{CancelReason, JobContext};
pub use handler::{ErrorKind, HandlerError, JobHandler, ResultExt, error_chain};
pub use metrics::WorkerMetrics;

use context::{Flushed, Shared};

use crate::{
    Backoff, ClaimParams, Clock, Finish, FinishOutcome, Job, JobError, JobId, JobStatus, JobStore,
    LockService, RecoveryPolicy, Schedule, StoreError, Tick, WorkerInfo, codes,
};

/// How a worker runs. The defaults are the ones of the product specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// This worker's id in the registry and on the jobs it claims; unique among live workers
    /// (the default, `host-pid-random`, is).
    pub worker_id: String,
    /// The host it runs on, for the registry: by default `$HOSTNAME`, else `/etc/hostname`,
    /// else `localhost`.
    pub host: String,
    /// Most jobs run at once: a claim asks for at most the free slots.
    pub concurrency: usize,
    /// How often a running job's heartbeat is renewed (and the rescuer runs).
    pub heartbeat_interval: Duration,
    /// A running job whose heartbeat is older is requeued or failed.
    pub stale_after: Duration,
    /// A due job not claimed for this long fails with `pending_timeout`.
    pub pending_timeout: Duration,
    /// Fallback claim poll when the store sends no signal.
    pub poll_interval: Duration,
    /// Progress and checkpoint changes are written at most this often.
    pub progress_flush: Duration,
    /// Time handlers get to stop after a shutdown before their jobs are handed back, and
    /// after losing their lease before they are dropped.
    pub shutdown_grace: Duration,
    /// First retry delay; doubles per attempt, with ±25 % jitter.
    pub retry_backoff: Duration,
    /// Longest retry delay before jitter; it also caps the delay a handler asks for
    /// ([`HandlerError::retry_after`]).
    pub max_retry_backoff: Duration,
    /// Most jobs claimed in one statement.
    pub claim_batch: u32,
    /// Claim statements in flight at once; `None` takes the store's
    /// [`JobStore::parallel_claims`] (2 on Postgres, 1 on SQLite).
    pub claimers: Option<usize>,
    /// Most job ends written in one statement.
    pub finish_batch: usize,
    /// Finished jobs (completed, failed, cancelled) that ended longer ago than this are
    /// deleted; `None` keeps them forever.
    pub job_retention: Option<Duration>,
    /// Most finished jobs one retention delete removes (one short transaction).
    pub retention_batch: u32,
    /// After this many claims since its last compaction, a worker whose claim comes back
    /// empty compacts the store ([`JobStore::compact`]) in the background; 0 never does.
    /// Until something reclaims them, every claimed job leaves an entry in the claim index
    /// that each later claim steps over (on Postgres, a pickup after a drain of 100,000 jobs
    /// took twice as long until autovacuum came by).
    pub compact_after: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|host| !host.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let worker_id = format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        Self {
            worker_id,
            host,
            concurrency: 2,
            heartbeat_interval: Duration::from_secs(5),
            stale_after: Duration::from_secs(30),
            pending_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            progress_flush: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(2),
            max_retry_backoff: Duration::from_secs(600),
            claim_batch: 256,
            claimers: None,
            finish_batch: 512,
            job_retention: Some(Self::DEFAULT_JOB_RETENTION),
            retention_batch: 500,
            compact_after: 10_000,
        }
    }
}

impl WorkerConfig {
    /// The default `job_retention`: 30 days.
    pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

    /// How often, by the worker's clock, a worker looks for finished jobs past the retention.
    pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

    /// The pause between two retention batches: other writers (the one writer of SQLite
    /// above all) get their turn, and a backlog drains at a bounded pace.
    pub const RETENTION_PAUSE: Duration = Duration::from_millis(100);

    /// Finished jobs that ended before the returned time are deleted, as of `now`; `None`
    /// when jobs are kept forever (or the retention reaches back before any time).
    pub fn retention_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let retention = chrono::Duration::from_std(self.job_retention?).ok()?;
        now.checked_sub_signed(retention)
    }

    /// The recovery policy these timings imply.
    pub fn recovery_policy(&self) -> RecoveryPolicy {
        RecoveryPolicy {
            stale_after: self.stale_after,
            pending_timeout: self.pending_timeout,
        }
    }

    /// How often the worker rescues stuck jobs: every second, or every heartbeat when that
    /// is more often.
    pub fn rescue_interval(&self) -> Duration {
        self.heartbeat_interval.min(Duration::from_secs(1))
    }

    /// The delay before retry number `attempt` (1-based), at least `after` (see
    /// [`Backoff`]).
    pub fn retry_delay(&self, attempt: u32, after: Option<Duration>) -> Duration {
        Backoff::new(self.retry_backoff, self.max_retry_backoff).delay(attempt, after)
    }
}

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// No handler was added.
    #[error("the worker has no handlers")]
    NoHandlers,
    /// The store refused to register the worker.
    #[error("registering the worker failed")]
    Register(#[source] StoreError),
}

/// Runs jobs from a [`JobStore`] with the handlers it was given.
pub struct Worker {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    schedules: Vec<Schedule>,
    metrics: Arc<WorkerMetrics>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("job_types", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A running job, as the shutdown path sees it.
#[derive(Clone)]
struct Running {
    shared: Arc<Shared>,
    /// Drops the handler: shutdown grace is over.
    abort: CancellationToken,
}

/// Everything the per-job tasks share.
struct Runtime {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    metrics: Arc<WorkerMetrics>,
    finisher: mpsc::Sender<(Finish, oneshot::Sender<Result<JobStatus, StoreError>>)>,
    running: Mutex<HashMap<JobId, Running>>,
    schedules: Vec<Schedule>,
    compaction: Compaction,
}

/// When the worker last compacted the store, and whether it is compacting now.
#[derive(Default)]
struct Compaction {
    /// The worker's claim count at its last compaction.
    claimed_at: std::sync::atomic::AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

impl Runtime {
    /// Compacts the store in the background when [`WorkerConfig::compact_after`] claims
    /// were made since the last compaction and none is running. Called when a claim came
    /// back empty: the queue ran dry, so the pause costs no job its pickup.
    fn compact_if_due(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let every = self.config.compact_after;
        let claimed = self.metrics.claimed.load(Ordering::Relaxed);
        if every == 0
            || claimed.saturating_sub(self.compaction.claimed_at.load(Ordering::Relaxed)) < every
            || self.compaction.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.compaction.claimed_at.store(claimed, Ordering::Relaxed);
        let runtime = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match runtime.store.compact().await {
                Ok(()) => {
                    tracing::debug!(elapsed = ?started.elapsed(), "compacted the job store");
                    WorkerMetrics::inc(&runtime.metrics.compactions);
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "compacting the job store failed");
                }
            }
            runtime.compaction.running.store(false, Ordering::Release);
        });
    }

    /// Adds a claimed job to the running set.
    fn register(&self, job: Job) -> Running {
        let running = Running {
            shared: Shared::new(job, self.store.clone(), self.clock.clone()),
            abort: CancellationToken::new(),
        };
        let id = running.shared.job().id;
        self.running
            .lock()
            .expect("running mutex")
            .insert(id, running.clone());
        self.metrics
            .running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running
    }
}

impl Worker {
    /// A worker over `store`, with time from `clock`. It claims nothing until
    /// [`Worker::run`], which needs at least one [`Worker::handler`].
    pub fn new(store: Arc<dyn JobStore>, clock: Arc<dyn Clock>, config: WorkerConfig) -> Self {
        Self {
            store,
            clock,
            config,
            handlers: HashMap::new(),
            schedules: Vec::new(),
            metrics: Arc::default(),
        }
    }

    /// Adds a periodic job (see [`crate::schedule`]): with its rescue, every second, the
    /// worker enqueues the schedule's latest tick, once across every worker given it.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Adds the handler of one job type (replacing an earlier one for the same type).
    pub fn handler(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(handler.job_type().to_owned(), handler);
        self
    }

    /// The worker's counters, shared: a clone taken before [`Worker::run`] keeps counting
    /// while it runs (for a metrics endpoint).
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// The configuration given to [`Worker::new`], unchanged.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs until `shutdown` fires, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let job_types = self.register().await?;
        let (runtime, finisher) = self.start_runtime();
        let maintenance_stop = CancellationToken::new();
        let background = [
            tokio::spawn(maintain(runtime.clone(), maintenance_stop.clone())),
            tokio::spawn(retain(runtime.clone(), maintenance_stop.clone())),
        ];
        let tracker = TaskTracker::new();
        self.claim_until_shutdown(&runtime, &job_types, &tracker, &shutdown)
            .await;
        self.hand_back(&runtime, &tracker).await;
        maintenance_stop.cancel();
        for task in background {
            let _ = task.await;
        }
        // The finisher ends once the last sender (the runtime) is gone and it has written
        // what it holds.
        drop(runtime);
        let _ = finisher.await;
        if let Err(error) = self.store.remove_worker(&self.config.worker_id).await {
            tracing::warn!(%error, "could not remove the worker from the registry");
        }
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Enters the worker in the registry; returns the job types it runs, sorted.
    async fn register(&self) -> Result<Vec<String>, WorkerError> {
        if self.handlers.is_empty() {
            return Err(WorkerError::NoHandlers);
        }
        let mut job_types: Vec<String> = self.handlers.keys().cloned().collect();
        job_types.sort();
        let now = self.clock.now();
        let info = WorkerInfo {
            id: self.config.worker_id.clone(),
            host: self.config.host.clone(),
            job_types: job_types.clone(),
            started_at: now,
            last_seen: now,
        };
        self.store
            .register_worker(&info)
            .await
            .map_err(WorkerError::Register)?;
        tracing::info!(worker.id = %info.id, ?job_types, concurrency = self.config.concurrency, "worker started");
        Ok(job_types)
    }

    /// The state the running jobs share, and the task that writes their ends in batches.
    fn start_runtime(&self) -> (Arc<Runtime>, tokio::task::JoinHandle<()>) {
        let (finisher_tx, finisher_rx) = mpsc::channel(self.config.finish_batch.max(1) * 4);
        let finisher = tokio::spawn(finish_batches(
            self.store.clone(),
            self.clock.clone(),
            self.metrics.clone(),
            finisher_rx,
            self.config.finish_batch.max(1),
            self.config.stale_after,
        ));
        let runtime = Arc::new(Runtime {
            store: self.store.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            finisher: finisher_tx,
            running: Mutex::new(HashMap::new()),
            compaction: Compaction::default(),
            schedules: self.schedules.clone(),
        });
        (runtime, finisher)
    }

    /// Claims and starts jobs until `shutdown` fires. The claim loops share the slots:
    /// while one claim's jobs start, the next claim runs. Only the first loop wakes on the
    /// store's signal (one claim picks up a new job); the others join in when a claim comes
    /// back full, a sign of a backlog.
    async fn claim_until_shutdown(
        &self,
        runtime: &Arc<Runtime>,
        job_types: &[String],
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let claimers = self
            .config
            .claimers
            .unwrap_or_else(|| self.store.parallel_claims())
            .max(1);
        let backlog = Arc::new(Notify::new());
        let loops = (0..claimers).map(|index| {
            let wake = match index {
                0 => self.store.job_signal(),
                _ => Some(backlog.clone()),
            };
            let context = ClaimLoop {
                runtime,
                job_types,
                tracker,
                shutdown,
                slots: &slots,
                backlog: &backlog,
            };
            self.claim_loop(context, wake)
        });
        futures::future::join_all(loops).await;
    }

    /// Graceful shutdown, once claiming has stopped: tells the running handlers, waits up
    /// to the grace for them, and hands back the jobs still running after it.
    async fn hand_back(&self, runtime: &Runtime, tracker: &TaskTracker) {
        let running = runtime.running.lock().expect("running mutex").len();
        tracing::info!(running, "worker shutting down");
        for entry in runtime.running.lock().expect("running mutex").values() {
            entry.shared.cancel(CancelReason::Shutdown);
        }
        tracker.close();
        if tokio::time::timeout(self.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace over; handing back the jobs still running");
            for entry in runtime.running.lock().expect("running mutex").values() {
                entry.abort.cancel();
            }
            tracker.wait().await;
        }
    }

    async fn claim_loop(&self, context: ClaimLoop<'_>, signal: Option<Arc<Notify>>) {
        let ClaimLoop {
            runtime,
            job_types,
            tracker,
            shutdown,
            slots,
            backlog,
        } = context;
        loop {
            let mut permits = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
                () = shutdown.cancelled() => return,
            };
            // Jobs that just ended release their slots together: let them, then claim for all.
            tokio::task::yield_now().await;
            let extra = slots
                .available_permits()
                .min(self.config.claim_batch.max(1) as usize - 1);
            if extra > 0
                && let Ok(more) = slots.clone().try_acquire_many_owned(extra as u32)
            {
                permits.merge(more);
            }
            let wanted = permits.num_permits();
            let notified = signal.as_ref().map(|signal| signal.notified());
            tokio::pin!(notified);
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            let params = ClaimParams {
                worker_id: self.config.worker_id.clone(),
                job_types: job_types.to_vec(),
                limit: wanted as u32,
                now: self.clock.now(),
            };
            WorkerMetrics::inc(&self.metrics.claim_batches);
            // A failed claim waits like an empty one: for the next job signal (a store whose
            // connection comes back sends one) or the poll interval.
            let claimed = self.store.claim(&params).await.unwrap_or_else(|error| {
                tracing::warn!(error = %error_chain(&error), "claim failed; retrying at the next job signal or poll");
                Vec::new()
            });
            let got = claimed.len();
            for job in claimed {
                WorkerMetrics::inc(&self.metrics.claimed);
                let permit = permits.split(1).expect("one permit per claimed job");
                let handler = self.handlers[&job.job_type].clone();
                // `job.id`, `job.type`, `resource`, `attempt`; the enqueuing trace as parent
                // (first attempt) or link (see `crate::trace`).
                let span = crate::trace::job_span(&job);
                // Registered before its task starts, so a shutdown right now still reaches it.
                let running = runtime.register(job);
                tracker.spawn(execute(runtime.clone(), handler, running, permit).instrument(span));
            }
            drop(permits);
            if got == 0 {
                runtime.compact_if_due();
            }
            if got == wanted {
                backlog.notify_waiters();
            } else {
                let wake = async {
                    match notified.as_mut().as_pin_mut() {
                        Some(notified) => notified.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// What the claim loops of one worker share.
#[derive(Clone, Copy)]
struct ClaimLoop<'a> {
    runtime: &'a Arc<Runtime>,
    job_types: &'a [String],
    tracker: &'a TaskTracker,
    shutdown: &'a CancellationToken,
    slots: &'a Arc<Semaphore>,
    /// Fired when a claim comes back full: the other loops claim too.
    backlog: &'a Notify,
}

/// Refreshes the registry row every `heartbeat_interval` and rescues stuck jobs every
/// [`WorkerConfig::rescue_interval`].
async fn maintain(runtime: Arc<Runtime>, stop: CancellationToken) {
    let lock = LockService::new(
        runtime.store.clone(),
        runtime.clock.clone(),
        runtime.config.recovery_policy(),
    );
    // Rescue at least every second: a job goes stale at any moment, and a rescue that waits
    // a whole heartbeat interval (5 s by default) after it adds that much to its recovery.
    let mut interval = tokio::time::interval(runtime.config.rescue_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut touched: Option<Instant> = None;
    // The latest tick of each schedule known to have its job: no read until the next one.
    let mut ticks_done: HashMap<String, DateTime<Utc>> = HashMap::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        enqueue_ticks(&runtime, &lock, &mut ticks_done).await;
        if touched.is_none_or(|at| at.elapsed() >= runtime.config.heartbeat_interval) {
            touched = Some(Instant::now());
            let worker_id = &runtime.config.worker_id;
            if let Err(error) = runtime
                .store
                .touch_worker(worker_id, runtime.clock.now())
                .await
            {
                tracing::warn!(error = %error_chain(&error), "worker registry refresh failed");
            }
        }
        match lock.rescue().await {
            Ok(report) if !report.is_empty() => {
                tracing::info!(?report, "rescued stuck jobs");
                let metrics = &runtime.metrics;
                let requeued = report.requeued.len() as u64;
                metrics
                    .rescued_requeued
                    .fetch_add(requeued, std::sync::atomic::Ordering::Relaxed);
                let failed = (report.failed.len() + report.cancelled.len()) as u64;
                metrics
                    .rescued_failed
                    .fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error_chain(&error), "rescue failed"),
        }
    }
}

/// Enqueues each schedule's latest tick unless `done` says its job exists.
async fn enqueue_ticks(
    runtime: &Runtime,
    lock: &LockService,
    done: &mut HashMap<String, DateTime<Utc>>,
) {
    for schedule in &runtime.schedules {
        let Some(tick) = schedule.latest_tick(runtime.clock.now()) else {
            continue;
        };
        if done.get(schedule.name()) == Some(&tick) {
            continue;
        }
        match lock.enqueue_tick(schedule).await {
            Ok(Tick::Enqueued(job)) => {
                tracing::info!(schedule = schedule.name(), %tick, job.id = %job.id, "enqueued a scheduled job");
                runtime
                    .metrics
                    .scheduled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                done.insert(schedule.name().to_owned(), tick);
            }
            Ok(Tick::AlreadyEnqueued | Tick::Skipped) => {
                done.insert(schedule.name().to_owned(), tick);
            }
            Ok(Tick::NotYet | Tick::Overlapping(_)) => {}
            Err(error) => {
                tracing::warn!(schedule = schedule.name(), error = %error_chain(&error), "enqueueing a scheduled job failed; retrying");
            }
        }
    }
}

/// Whether a retention round is due at `now`: the first one at once, then one every
/// [`WorkerConfig::RETENTION_INTERVAL`] by the worker's clock (also when the clock went back
/// since the last round, as only a test's clock does).
fn retention_due(last_round: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let interval = chrono::Duration::from_std(WorkerConfig::RETENTION_INTERVAL)
        .expect("a minute fits in a chrono duration");
    last_round.is_none_or(|last| now < last || now - last >= interval)
}

/// Retention: looks every [`WorkerConfig::rescue_interval`] (real time) whether a round is due
/// by the worker's clock; a round deletes the finished jobs past `job_retention` in batches
/// of `retention_batch` until a batch comes back short, pausing
/// [`WorkerConfig::RETENTION_PAUSE`] between batches. Every worker runs it; the store lets
/// concurrent deletes each take their own jobs. A failed batch is logged and the round ends:
/// the next round tries again.
async fn retain(runtime: Arc<Runtime>, stop: CancellationToken) {
    if runtime.config.job_retention.is_none() {
        return;
    }
    let batch = runtime.config.retention_batch.max(1);
    let mut interval = tokio::time::interval(runtime.config.rescue_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = runtime.clock.now();
        if !retention_due(last_round, now) {
            continue;
        }
        last_round = Some(now);
        let Some(cutoff) = runtime.config.retention_cutoff(now) else {
            continue;
        };
        let mut deleted = 0;
        loop {
            match runtime.store.delete_finished(cutoff, batch).await {
                Ok(count) => {
                    deleted += count;
                    runtime
                        .metrics
                        .retention_deleted
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    if count < u64::from(batch) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "deleting finished jobs past the retention failed; retrying next round");
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(WorkerConfig::RETENTION_PAUSE) => {}
                () = stop.cancelled() => break,
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, finished_before = %cutoff, "deleted finished jobs past the retention");
        }
    }
}

/// One job's heartbeat: renew every `heartbeat_interval`, write coalesced progress at most
/// every `progress_flush`, until `done` fires (a write in flight still lands) or the lease is
/// lost.
async fn heartbeat(runtime: Arc<Runtime>, shared: Arc<Shared>, done: CancellationToken) {
    if done.is_cancelled() {
        return;
    }
    let config = &runtime.config;
    let tick = config.progress_flush.min(config.heartbeat_interval);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_heartbeat = Instant::now() + config.heartbeat_interval;
    loop {
        tokio::select! {
            biased;
            () = done.cancelled() => return,
            _ = interval.tick() => {}
        }
        if Instant::now() < next_heartbeat && !shared.is_dirty() {
            continue;
        }
        match shared.flush().await {
            Flushed::Ok => {
                WorkerMetrics::inc(&runtime.metrics.heartbeats);
                next_heartbeat = Instant::now() + config.heartbeat_interval;
            }
            Flushed::LeaseLost => {
                tracing::warn!(job.id = %shared.job().id, "lease lost; stopping the handler");
                return;
            }
            Flushed::Failed(error) => {
                WorkerMetrics::inc(&runtime.metrics.heartbeat_errors);
                tracing::warn!(job.id = %shared.job().id, error = %error_chain(&error), "heartbeat failed; retrying");
            }
        }
    }
}

/// Runs one claimed job to its end and writes the outcome.
async fn execute(
    runtime: Arc<Runtime>,
    handler: Arc<dyn JobHandler>,
    running: Running,
    permit: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let Running { shared, abort } = running;
    let job_id = shared.job().id;
    let result = run_handler(&runtime, handler, &shared, &abort).await;

    let outcome = decide(&runtime, &shared, result);
    if let Some((outcome, counter)) = outcome {
        let (progress, checkpoint) = shared.take_unwritten();
        let job = shared.job();
        // A completion of a job with a chain inserts the next job in the same write.
        let finish = Finish {
            progress,
            checkpoint,
            ..Finish::of(job, outcome.clone())
        };
        let (reply, answer) = oneshot::channel::<Result<JobStatus, StoreError>>();
        let written = match runtime.finisher.send((finish, reply)).await {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Backend("finisher stopped".into()))),
            Err(_) => Err(StoreError::Backend("finisher stopped".into())),
        };
        match written {
            Ok(status) => {
                // Counted by what was written: a retry on the last attempt ends failed.
                let metrics = &runtime.metrics;
                WorkerMetrics::inc(metrics.ended(status).unwrap_or_else(|| counter(metrics)));
                tracing::debug!(job.id = %job_id, %status, "job claim ended");
            }
            Err(StoreError::LeaseLost { status, .. }) => {
                WorkerMetrics::inc(&runtime.metrics.lease_lost);
                tracing::warn!(job.id = %job_id, %status, ?outcome, "lease lost before the end was written; outcome discarded");
            }
            Err(error) => {
                tracing::error!(job.id = %job_id, error = %error_chain(&error), ?outcome, "writing the job's end failed; the rescuer will requeue it");
            }
        }
    }
    runtime
        .running
        .lock()
        .expect("running mutex")
        .remove(&job_id);
    runtime
        .metrics
        .running
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    runtime.metrics.observe_duration(started.elapsed());
    drop(permit);
}

/// Polls the handler to its end, with its heartbeat in a task of its own. The handler's
/// future is dropped before this returns: at shutdown once `abort` fires, and
/// `shutdown_grace` after a lost lease.
async fn run_handler(
    runtime: &Arc<Runtime>,
    handler: Arc<dyn JobHandler>,
    shared: &Arc<Shared>,
    abort: &CancellationToken,
) -> Ran {
    let done = CancellationToken::new();
    let beat = tokio::spawn(heartbeat(runtime.clone(), shared.clone(), done.clone()));
    // A task spawned last waits in a slot of this thread that no other thread takes over:
    // let the heartbeat start (and arm its timer) before the handler may hold the thread.
    tokio::task::yield_now().await;
    let run = AssertUnwindSafe(handler.run(JobContext::new(shared.clone()))).catch_unwind();
    tokio::pin!(run);
    let abandoned = async {
        shared.cancelled().await;
        if shared.reason() != Some(CancelReason::LeaseLost) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(runtime.config.shutdown_grace).await;
    };
    let ran = tokio::select! {
        biased;
        result = &mut run => Ran::from(result),
        () = abort.cancelled() => Ran::Aborted,
        () = abandoned => {
            tracing::warn!(job.id = %shared.job().id, "the handler ignored its lost lease; dropped");
            Ran::Aborted
        }
    };
    done.cancel();
    // A heartbeat write in flight lands before the job's end is written.
    if let Err(error) = beat.await {
        tracing::error!(job.id = %shared.job().id, %error, "heartbeat task failed");
    }
    ran
}

/// How a handler run ended.
#[derive(Debug)]
enum Ran {
    Returned(Result<(), HandlerError>),
    Panicked(String),
    Aborted,
}

impl From<std::thread::Result<Result<(), HandlerError>>> for Ran {
    fn from(result: std::thread::Result<Result<(), HandlerError>>) -> Self {
        match result {
            Ok(result) => Self::Returned(result),
            Err(panic) => Self::Panicked(panic_message(panic)),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "the handler panicked".to_owned()
    }
}

type Counter = fn(&WorkerMetrics) -> &std::sync::atomic::AtomicU64;

/// The end to write for a run, and the counter it adds to; `None` when the lease is lost.
fn decide(runtime: &Runtime, shared: &Shared, ran: Ran) -> Option<(FinishOutcome, Counter)> {
    let job = shared.job();
    let now = runtime.clock.now();
    let interrupted = || {
        let error = JobError::new(
            codes::INTERRUPTED,
            "the worker shut down while the job ran",
            true,
        );
        Some((
            FinishOutcome::Requeue {
                error,
                run_at: now,
                consume_attempt: false,
            },
            (|m: &WorkerMetrics| &m.interrupted) as Counter,
        ))
    };
    let retry = |error: JobError, after: Option<Duration>| {
        let delay = runtime.config.retry_delay(job.attempt, after);
        let run_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        Some((
            FinishOutcome::Requeue {
                error,
                run_at,
                consume_attempt: true,
            },
            (|m: &WorkerMetrics| &m.retried) as Counter,
        ))
    };
    let reason = shared.reason();
    if reason == Some(CancelReason::LeaseLost) {
        WorkerMetrics::inc(&runtime.metrics.lease_lost);
        tracing::warn!(job.id = %job.id, result = ?ran, "lease lost while running; result discarded");
        return None;
    }
    match ran {
        Ran::Returned(Ok(())) => Some((FinishOutcome::Completed, |m| &m.completed)),
        Ran::Returned(Err(error)) => {
            let job_error = JobError::new(&error.code, &error.message, error.is_retryable());
            match (error.kind, reason) {
                (ErrorKind::Terminal, _) => {
                    tracing::warn!(job.id = %job.id, code = %error.code, message = %error.message, "job failed");
                    Some((FinishOutcome::Failed(job_error), |m| &m.failed))
                }
                (
                    ErrorKind::Cancelled | ErrorKind::Retryable { .. },
                    Some(CancelReason::Shutdown),
                ) => interrupted(),
                (ErrorKind::Cancelled, _) => Some((FinishOutcome::Cancelled, |m| &m.cancelled)),
                (ErrorKind::Retryable { after }, _) => {
                    tracing::info!(job.id = %job.id, code = %error.code, message = %error.message, "job attempt failed; retrying");
                    retry(job_error, after)
                }
            }
        }
        Ran::Panicked(message) => {
            WorkerMetrics::inc(&runtime.metrics.panics);
            tracing::error!(job.id = %job.id, %message, "handler panicked");
            retry(JobError::new(codes::PANICKED, message, true), None)
        }
        Ran::Aborted => interrupted(),
    }
}

/// Collects job ends from every job task and writes them in batches: one store call for
/// whatever arrived while the previous call ran. A failed write is retried with backoff for
/// up to `stale_after` (a database restart, say): until then the jobs' leases may still
/// hold, and a later write would only be fenced out after a rescue.
async fn finish_batches(
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<WorkerMetrics>,
    mut requests: mpsc::Receiver<(Finish, oneshot::Sender<Result<JobStatus, StoreError>>)>,
    batch_size: usize,
    stale_after: Duration,
) {
    let mut batch = Vec::with_capacity(batch_size);
    while requests.recv_many(&mut batch, batch_size).await > 0 {
        let (finishes, replies): (Vec<Finish>, Vec<_>) = batch.drain(..).unzip();
        let mut delay = Duration::from_millis(50);
        let started = Instant::now();
        WorkerMetrics::inc(&metrics.finish_batches);
        let results = loop {
            match store.finish(clock.now(), &finishes).await {
                Ok(results) => break results.into_iter().map(Some).collect::<Vec<_>>(),
                Err(error) if started.elapsed() < stale_after => {
                    tracing::warn!(error = %error_chain(&error), "writing job ends failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "writing job ends failed; giving up");
                    break finishes.iter().map(|_| None).collect();
                }
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            let result =
                result.unwrap_or_else(|| Err(StoreError::Backend("job store unavailable".into())));
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn retention_rounds_run_at_once_then_once_a_minute_by_the_clock() {
        let start = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
        let seconds = chrono::Duration::seconds;
        assert!(retention_due(None, start));
        assert!(!retention_due(Some(start), start));
        assert!(!retention_due(Some(start), start + seconds(59)));
        assert!(retention_due(Some(start), start + seconds(60)));
        assert!(retention_due(
            Some(start),
            start + chrono::Duration::days(31)
        ));
        assert!(
            retention_due(Some(start), start - seconds(1)),
            "a clock moved back does not stop retention"
        );
    }

    #[test]
    fn retention_cutoff_is_now_minus_the_retention_and_none_keeps_jobs_forever() {
        let now = Utc.with_ymd_and_hms(2030, 3, 1, 0, 0, 0).unwrap();
        let config = WorkerConfig::default();
        assert_eq!(config.job_retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(config.retention_batch, 500);
        assert_eq!(
            config.retention_cutoff(now),
            Some(Utc.with_ymd_and_hms(2030, 1, 30, 0, 0, 0).unwrap())
        );
        let forever = WorkerConfig {
            job_retention: None,
            ..WorkerConfig::default()
        };
        assert_eq!(forever.retention_cutoff(now), None);
        let longer_than_time = WorkerConfig {
            job_retention: Some(Duration::MAX),
            ..WorkerConfig::default()
        };
        assert_eq!(longer_than_time.retention_cutoff(now), None);
    }
}
