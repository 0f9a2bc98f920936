//! The job handlers this application runs, by job type.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use async_trait::async_trait;
use jobs_core::runtime::{HandlerError, JobContext, JobHandler};
use serde::{Deserialize, Serialize};

/// A job that does nothing: measures the runtime's own cost (`cargo xtask bench jobs`).
pub const BENCH_NOOP: &str = "bench.noop";
/// A job of timed, checkpointed steps: exercises crash, pause and shutdown recovery.
pub const BENCH_STEPS: &str = "bench.steps";

/// Runs [`BENCH_NOOP`] jobs.
#[derive(Debug, Default)]
pub struct NoopHandler;

#[async_trait]
impl JobHandler for NoopHandler {
    fn job_type(&self) -> &str {
        BENCH_NOOP
    }

    async fn run(&self, _context: JobContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Payload of [`BENCH_STEPS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepsPayload {
    /// Steps to run.
    pub steps: u32,
    /// Milliseconds each step takes.
    pub step_ms: u64,
}

/// Checkpoint of [`BENCH_STEPS`]: steps done, and which worker started where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsCheckpoint {
    /// Steps done and durably recorded.
    pub done: u32,
    /// One entry per run: the worker and the first step it ran.
    pub runs: Vec<StepsRun>,
}

/// One run of a [`BENCH_STEPS`] job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsRun {
    /// The worker that ran it.
    pub worker: String,
    /// The first step it ran.
    pub from: u32,
}

/// Runs [`BENCH_STEPS`] jobs: sleeps per step, checkpointing after each, stopping at a step
/// boundary when cancelled.
#[derive(Debug, Default)]
pub struct StepsHandler;

#[async_trait]
impl JobHandler for StepsHandler {
    fn job_type(&self) -> &str {
        BENCH_STEPS
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let payload: StepsPayload = context.payload()?;
        let mut checkpoint: StepsCheckpoint = context.checkpoint()?.unwrap_or_default();
        let worker = context.job().worker_id.clone().unwrap_or_default();
        checkpoint.runs.push(StepsRun {
            worker,
            from: checkpoint.done + 1,
        });
        context.set_checkpoint(&checkpoint);
        context.update_progress(|progress| progress.total = Some(u64::from(payload.steps)));
        for step in checkpoint.done + 1..=payload.steps {
            context.update_progress(|progress| progress.current_item = Some(step.to_string()));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(payload.step_ms)) => {}
                () = context.cancelled() => return Err(HandlerError::cancelled()),
            }
            checkpoint.done = step;
            context.set_checkpoint(&checkpoint);
            context.update_progress(|progress| {
                progress.completed = u64::from(step);
                progress.last_completed_item = Some(step.to_string());
            });
        }
        Ok(())
    }
}

/// Every handler this application knows.
pub fn all_handlers() -> Vec<Arc<dyn JobHandler>> {
    vec![Arc::new(NoopHandler), Arc::new(StepsHandler)]
}

/// The handlers for `types`, or all of them when `types` is empty. An unknown type is an
/// error that names the known ones.
pub fn select_handlers(types: &[String]) -> Result<Vec<Arc<dyn JobHandler>>> {
    let all = all_handlers();
    if types.is_empty() {
        return Ok(all);
    }
    let known: Vec<String> = all
        .iter()
        .map(|handler| handler.job_type().to_owned())
        .collect();
    for wanted in types {
        if !known.contains(wanted) {
            bail!(
                "unknown job type {wanted:?}; known types: {}",
                known.join(", ")
            );
        }
    }
    Ok(all
        .into_iter()
        .filter(|handler| types.iter().any(|t| t == handler.job_type()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_handlers_filters_and_names_unknown_types() {
        let selected = select_handlers(&[BENCH_NOOP.to_owned()]).unwrap();
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].job_type(), BENCH_NOOP);
        assert_eq!(select_handlers(&[]).unwrap().len(), all_handlers().len());
        let error = select_handlers(&["ocr2".to_owned()])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("bench.noop"), "{error}");
    }
}
