//! Typed jobs: a job type as a Rust type, so an embedder never handles `serde_json::Value`.
//!
//! A type that implements [`Job`] is its own payload: [`LockService::enqueue`] stores it,
//! and [`handler`] gives the worker a [`JobHandler`] that decodes it and its
//! [`Job::Checkpoint`] before [`Job::run`] sees them. A payload or checkpoint that does not
//! decode (a job enqueued by an older version, say) fails the job at once with the code
//! `invalid_payload` or `invalid_checkpoint` and a message naming the job type, the Rust type
//! and serde's reason: another attempt would decode no better.
//!
//! ```
//! use jobs_core::runtime::{HandlerError, JobHandler};
//! use jobs_core::typed::{self, Context, Job};
//! use serde::{Deserialize, Serialize};
//!
//! /// Resizes one image to each width, resuming after the last width done.
//! #[derive(Serialize, Deserialize)]
//! struct ResizeImage {
//!     key: String,
//!     widths: Vec<u32>,
//! }
//!
//! #[jobs_core::async_trait]
//! impl Job for ResizeImage {
//!     const TYPE: &'static str = "resize";
//!     /// How many widths are done.
//!     type Checkpoint = usize;
//!     /// What every run shares (a client, a pool); `()` for nothing.
//!     type State = ();
//!
//!     async fn run(self, _state: &(), context: Context<Self>) -> Result<(), HandlerError> {
//!         let done = context.checkpoint().copied().unwrap_or(0);
//!         for (index, width) in self.widths.iter().enumerate().skip(done) {
//!             context.check_cancelled()?;
//!             println!("resizing {} to {width}", self.key);
//!             context.set_checkpoint(&(index + 1));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // Given to a worker: `Worker::new(..).handler(typed::handler::<ResizeImage>(()))`;
//! // enqueued with `lock.enqueue("image-7", &ResizeImage { .. })`.
//! let handler = typed::handler::<ResizeImage>(());
//! assert_eq!(handler.job_type(), "resize");
//! ```

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::runtime::{HandlerError, JobContext, JobHandler};
use crate::{Acquire, LockService, StoreError};

/// A job type as a Rust type: the value is the payload.
#[async_trait]
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The job type it is stored under (one active job per resource and type).
    const TYPE: &'static str;
    /// What the job saves to resume from (`()` when it cannot resume part way).
    type Checkpoint: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What every run of this type shares, given once to [`handler`].
    type State: Send + Sync + 'static;

    /// Runs the job, or resumes it from [`Context::checkpoint`]. The same contract as
    /// [`JobHandler::run`]: classify failures, stop at a safe point when cancelled.
    async fn run(self, state: &Self::State, context: Context<Self>) -> Result<(), HandlerError>;
}

/// A running typed job's context: its checkpoint typed, and everything of [`JobContext`]
/// (progress, flush, cancellation, the stored job) through `Deref`.
pub struct Context<J: Job> {
    inner: JobContext,
    checkpoint: Option<J::Checkpoint>,
}

impl<J: Job> std::fmt::Debug for Context<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("type", &J::TYPE)
            .field("job", &self.inner.job().id)
            .finish()
    }
}

impl<J: Job> Context<J> {
    /// The checkpoint the job was claimed (or resumed) with, decoded; `None` on a first run.
    pub fn checkpoint(&self) -> Option<&J::Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Sets the checkpoint to resume from; written with the next heartbeat (or at once
    /// with [`JobContext::flush`]).
    pub fn set_checkpoint(&self, checkpoint: &J::Checkpoint) {
        self.inner.set_checkpoint(checkpoint);
    }
}

impl<J: Job> Deref for Context<J> {
    type Target = JobContext;

    fn deref(&self) -> &JobContext {
        &self.inner
    }
}

/// The [`JobHandler`] that runs jobs of type `J` with `state`.
pub fn handler<J: Job>(state: J::State) -> Arc<dyn JobHandler> {
    Arc::new(TypedHandler::<J> {
        state,
        job: PhantomData,
    })
}

struct TypedHandler<J: Job> {
    state: J::State,
    job: PhantomData<fn() -> J>,
}

#[async_trait]
impl<J: Job> JobHandler for TypedHandler<J> {
    fn job_type(&self) -> &str {
        J::TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let job: J = decode(&context.job().payload, J::TYPE, "payload")?;
        let checkpoint = context
            .job()
            .checkpoint
            .as_ref()
            .map(|value| decode(value, J::TYPE, "checkpoint"))
            .transpose()?;
        let context = Context {
            inner: context,
            checkpoint,
        };
        job.run(&self.state, context).await
    }
}

/// `value` as `T`, or a terminal `invalid_{what}` naming the job type, the Rust type and
/// serde's reason.
fn decode<T: DeserializeOwned>(
    value: &serde_json::Value,
    job_type: &str,
    what: &str,
) -> Result<T, HandlerError> {
    T::deserialize(value).map_err(|error| {
        HandlerError::terminal(
            format!("invalid_{what}"),
            format!(
                "the {what} of a `{job_type}` job does not decode as {}: {error}",
                std::any::type_name::<T>()
            ),
        )
    })
}

impl LockService {
    /// Enqueues `job` on `resource_key` as a job of type `J::TYPE`: created, or `Busy`
    /// with the active job of that type (see [`LockService::acquire`]).
    ///
    /// # Panics
    /// When `J` does not serialize to JSON (a map with non-string keys, say): a bug of the
    /// job type, as for [`JobContext::set_checkpoint`].
    pub async fn enqueue<J: Job>(
        &self,
        resource_key: &str,
        job: &J,
    ) -> Result<Acquire, StoreError> {
        self.acquire(resource_key, J::TYPE, payload_of(job)).await
    }
}

/// `job` as its stored payload.
///
/// # Panics
/// When `J` does not serialize to JSON: a bug of the job type.
pub(crate) fn payload_of<J: Job>(job: &J) -> serde_json::Value {
    serde_json::to_value(job)
        .unwrap_or_else(|error| panic!("a `{}` job does not serialize: {error}", J::TYPE))
}
