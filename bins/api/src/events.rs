//! The event stream of one job: a `job` event with the job's JSON on every change, ending
//! after the event that shows a terminal status (or when the server shuts down).
//!
//! The stream polls the job store every `event_poll_interval` and sends only when the
//! job's JSON changed, so an idle job costs one indexed read per interval and no bytes;
//! keep-alive comments hold idle connections open.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use futures::Stream;
use jobs_core::{JobId, StoreError};

use crate::dto::Job;
use crate::state::AppState;

struct Cursor {
    state: AppState,
    id: JobId,
    next: Option<jobs_core::Job>,
    last_sent: Option<Job>,
    finished: bool,
}

/// The events of job `id`, starting with `first` (already read, so a missing job is a 404
/// before the stream starts).
pub(crate) fn job_events(
    state: AppState,
    first: jobs_core::Job,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let cursor = Cursor {
        id: first.id,
        state,
        next: Some(first),
        last_sent: None,
        finished: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.finished {
            return None;
        }
        let poll = cursor.state.config().event_poll_interval;
        let shutdown = cursor.state.shutdown().clone();
        loop {
            let job = match cursor.next.take() {
                Some(job) => job,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        () = shutdown.cancelled() => return None,
                    }
                    match cursor.state.job_store().get(cursor.id).await {
                        Ok(job) => job,
                        Err(StoreError::NotFound(_)) => return None,
                        Err(error) => {
                            tracing::warn!(job.id = %cursor.id, %error, "event stream: reading the job failed; retrying");
                            tokio::time::sleep(backoff(poll)).await;
                            continue;
                        }
                    }
                }
            };
            let view = Job::from(&job);
            if cursor.last_sent.as_ref() == Some(&view) {
                continue;
            }
            cursor.finished = view.status.is_terminal();
            let event = Event::default()
                .event("job")
                .json_data(&view)
                .unwrap_or_else(|error| unreachable!("a job always serializes: {error}"));
            cursor.last_sent = Some(view);
            return Some((Ok(event), cursor));
        }
    })
}

fn backoff(poll: Duration) -> Duration {
    (poll * 4).min(Duration::from_secs(5))
}
