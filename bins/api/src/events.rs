//! The event stream of one job: a `job` event with the job's JSON on every change, ending
//! after the event that shows a terminal status, when the job is gone, when the server
//! shuts down, or after `event_stream_lifetime`.
//!
//! Streams read the job's shared feed ([`crate::feeds`]): one poller per followed job,
//! however many clients follow it. Each event's id is a digest of its JSON. A client that
//! reconnects (EventSource does so by itself when a stream ends before the terminal event)
//! sends it back as `Last-Event-ID`, and the new stream skips the first event if it is the
//! same: a client sees every change of the job once.

use std::convert::Infallible;

use axum::response::sse::Event;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::dto::Job;
use crate::feeds::Snapshot;
use crate::state::AppState;

struct Cursor {
    state: AppState,
    feed: watch::Receiver<Snapshot>,
    /// The id of the last event the client has (sent here, or `Last-Event-ID`).
    last_id: Option<String>,
    first: bool,
    finished: bool,
    ends_at: tokio::time::Instant,
    /// The stream's place under `max_event_streams`, given back when it ends.
    _slot: OwnedSemaphorePermit,
}

/// The events of a job's `feed`; `last_event_id` is the client's `Last-Event-ID`.
pub(crate) fn job_events(
    state: AppState,
    feed: watch::Receiver<Snapshot>,
    last_event_id: Option<String>,
    slot: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let ends_at = tokio::time::Instant::now() + state.config().event_stream_lifetime;
    let cursor = Cursor {
        state,
        feed,
        last_id: last_event_id,
        first: true,
        finished: false,
        ends_at,
        _slot: slot,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.finished {
            return None;
        }
        let shutdown = cursor.state.shutdown().clone();
        loop {
            if cursor.first {
                cursor.first = false;
                cursor.feed.mark_unchanged();
            } else {
                tokio::select! {
                    changed = cursor.feed.changed() => {
                        if changed.is_err() {
                            // The feed ended; its last snapshot was seen.
                            return None;
                        }
                    }
                    () = tokio::time::sleep_until(cursor.ends_at) => return None,
                    () = shutdown.cancelled() => return None,
                }
            }
            let Some(job) = cursor.feed.borrow_and_update().clone() else {
                // The job is gone.
                return None;
            };
            let view = Job::from(&*job);
            let json = serde_json::to_string(&view)
                .unwrap_or_else(|error| unreachable!("a job always serializes: {error}"));
            let id = event_id(&json);
            let terminal = view.status.is_terminal();
            if cursor.last_id.as_deref() == Some(id.as_str()) {
                if terminal {
                    return None;
                }
                continue;
            }
            cursor.finished = terminal;
            cursor.last_id = Some(id.clone());
            let event = Event::default().event("job").id(id).data(json);
            return Some((Ok(event), cursor));
        }
    })
}

/// The id of an event with `json` as its data: the same on every api host.
fn event_id(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
