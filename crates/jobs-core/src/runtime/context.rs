//! What a running handler sees: its job, progress, checkpoint and cancellation.

use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::handler::HandlerError;
use crate::{Clock, HeartbeatParams, Job, JobStore, Progress, StoreError};

/// Why a handler's cancellation token fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A client asked to cancel the job: the runner marks it cancelled.
    CancelRequested,
    /// The worker lost the job's lease (another worker took it over): nothing this handler
    /// does will be written.
    LeaseLost,
    /// The worker is shutting down: the job is handed back without losing an attempt.
    Shutdown,
}

/// Progress and checkpoint not yet written, with versions so a write that raced a newer
/// change does not mark it written.
#[derive(Debug)]
struct Pending {
    progress: Progress,
    checkpoint: Option<serde_json::Value>,
    progress_version: u64,
    progress_written: u64,
    checkpoint_version: u64,
    checkpoint_written: u64,
}

/// What the runner and the heartbeat task share with the handler.
pub(crate) struct Shared {
    job: Job,
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    pending: Mutex<Pending>,
    /// Serializes writes so an older snapshot never lands after a newer one.
    write_lock: tokio::sync::Mutex<()>,
    token: CancellationToken,
    reason: OnceLock<CancelReason>,
}

/// The outcome of one coalesced write.
pub(crate) enum Flushed {
    /// Written; a cancel request has fired the token.
    Ok,
    /// The lease is gone: the token has fired with [`CancelReason::LeaseLost`].
    LeaseLost,
    /// The store failed; the changes stay pending for the next write.
    Failed(StoreError),
}

impl Shared {
    pub(crate) fn new(job: Job, store: Arc<dyn JobStore>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let pending = Pending {
            progress: job.progress.clone(),
            checkpoint: job.checkpoint.clone(),
            progress_version: 0,
            progress_written: 0,
            checkpoint_version: 0,
            checkpoint_written: 0,
        };
        Arc::new(Self {
            job,
            store,
            clock,
            pending: Mutex::new(pending),
            write_lock: tokio::sync::Mutex::new(()),
            token: CancellationToken::new(),
            reason: OnceLock::new(),
        })
    }

    pub(crate) fn job(&self) -> &Job {
        &self.job
    }

    /// Fires the token; the first reason given is the one that stays.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        self.reason.get().copied()
    }

    pub(crate) fn is_dirty(&self) -> bool {
        let pending = self.pending.lock().expect("pending mutex");
        pending.progress_version != pending.progress_written
            || pending.checkpoint_version != pending.checkpoint_written
    }

    /// The unwritten progress and checkpoint, with the versions they carry.
    fn snapshot(&self) -> (Option<Progress>, Option<serde_json::Value>, u64, u64) {
        let pending = self.pending.lock().expect("pending mutex");
        let progress = (pending.progress_version != pending.progress_written)
            .then(|| pending.progress.clone());
        let checkpoint = (pending.checkpoint_version != pending.checkpoint_written)
            .then(|| pending.checkpoint.clone())
            .flatten();
        (
            progress,
            checkpoint,
            pending.progress_version,
            pending.checkpoint_version,
        )
    }

    fn mark_written(&self, progress_version: u64, checkpoint_version: u64) {
        let mut pending = self.pending.lock().expect("pending mutex");
        pending.progress_written = pending.progress_written.max(progress_version);
        pending.checkpoint_written = pending.checkpoint_written.max(checkpoint_version);
    }

    /// Heartbeat and write whatever progress and checkpoint changed: one fenced write.
    pub(crate) async fn flush(&self) -> Flushed {
        let _serialized = self.write_lock.lock().await;
        let (progress, checkpoint, progress_version, checkpoint_version) = self.snapshot();
        let params = HeartbeatParams {
            id: self.job.id,
            lease: self.job.lease,
            now: self.clock.now(),
            progress,
            checkpoint,
        };
        match self.store.heartbeat(&params).await {
            Ok(ack) => {
                self.mark_written(progress_version, checkpoint_version);
                if ack.cancel_requested {
                    self.cancel(CancelReason::CancelRequested);
                }
                Flushed::Ok
            }
            Err(StoreError::LeaseLost { .. } | StoreError::NotFound(_)) => {
                self.cancel(CancelReason::LeaseLost);
                Flushed::LeaseLost
            }
            Err(error) => Flushed::Failed(error),
        }
    }

    /// The progress and checkpoint still unwritten, for the final write with the finish.
    pub(crate) fn take_unwritten(&self) -> (Option<Progress>, Option<serde_json::Value>) {
        let (progress, checkpoint, progress_version, checkpoint_version) = self.snapshot();
        self.mark_written(progress_version, checkpoint_version);
        (progress, checkpoint)
    }
}

/// What a handler gets for one job: payload, checkpoint, progress, cancellation.
///
/// Progress and checkpoint changes are cheap: they are kept in memory and written with the
/// next heartbeat (coalesced every `progress_flush`), or at once with [`JobContext::flush`],
/// and always with the job's end.
#[derive(Clone)]
pub struct JobContext {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.shared.job.id)
            .finish()
    }
}

impl JobContext {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The job as claimed: its `progress` and `checkpoint` stay the claim's while the handler
    /// changes them (read those with [`JobContext::progress`] and [`JobContext::checkpoint`]).
    pub fn job(&self) -> &Job {
        &self.shared.job
    }

    /// The attempt this run is (1 for the first claim).
    pub fn attempt(&self) -> u32 {
        self.shared.job.attempt
    }

    /// The payload, decoded; a payload that does not decode is a terminal error.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_value(self.shared.job.payload.clone()).map_err(|error| {
            HandlerError::terminal(
                "invalid_payload",
                format!("job payload does not decode: {error}"),
            )
        })
    }

    /// The latest checkpoint: the one this run set, else the one the job was claimed (or
    /// resumed) with. A checkpoint that does not decode is a terminal error.
    pub fn checkpoint<T: DeserializeOwned>(&self) -> Result<Option<T>, HandlerError> {
        let checkpoint = self
            .shared
            .pending
            .lock()
            .expect("pending mutex")
            .checkpoint
            .clone();
        checkpoint
            .map(serde_json::from_value)
            .transpose()
            .map_err(|error| HandlerError::terminal("invalid_checkpoint", error.to_string()))
    }

    /// Sets the checkpoint the job resumes from; written with the next heartbeat.
    pub fn set_checkpoint<T: Serialize>(&self, checkpoint: &T) {
        let value = serde_json::to_value(checkpoint).expect("checkpoint serializes to JSON");
        let mut pending = self.shared.pending.lock().expect("pending mutex");
        pending.checkpoint = Some(value);
        pending.checkpoint_version += 1;
    }

    /// Changes the progress; written with the next heartbeat.
    pub fn update_progress(&self, change: impl FnOnce(&mut Progress)) {
        let mut pending = self.shared.pending.lock().expect("pending mutex");
        change(&mut pending.progress);
        pending.progress.storable();
        pending.progress_version += 1;
    }

    /// The progress as the handler last set it.
    pub fn progress(&self) -> Progress {
        self.shared
            .pending
            .lock()
            .expect("pending mutex")
            .progress
            .clone()
    }

    /// Writes progress and checkpoint now (a fenced heartbeat). Use after a step whose
    /// checkpoint must be durable before going on. A lost lease returns a cancelled error.
    pub async fn flush(&self) -> Result<(), HandlerError> {
        match self.shared.flush().await {
            Flushed::Ok => Ok(()),
            Flushed::LeaseLost => Err(HandlerError::cancelled()),
            Flushed::Failed(error) => Err(HandlerError::retryable(
                "job_store",
                super::handler::error_chain(&error),
            )),
        }
    }

    /// Fires on a cancel request, a lost lease or shutdown.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.shared.token.cancelled()
    }

    /// Whether the token fired.
    pub fn is_cancelled(&self) -> bool {
        self.shared.token.is_cancelled()
    }

    /// Why the token fired, once it has.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.shared.reason()
    }

    /// A clone of the token, to hand to child tasks or processes.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.token.clone()
    }

    /// `Err(cancelled)` once the token fired: `context.check_cancelled()?` at safe points.
    pub fn check_cancelled(&self) -> Result<(), HandlerError> {
        if self.is_cancelled() {
            Err(HandlerError::cancelled())
        } else {
            Ok(())
        }
    }
}
