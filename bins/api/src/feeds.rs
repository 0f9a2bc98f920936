//! One poller per followed job, shared by every event stream that follows it: however many
//! clients watch a job, the database sees one read of it per `event_poll_interval`, and the
//! pollers together hold at most [`CONCURRENT_READS`] of the pool's connections, so streams
//! can never starve the in-process worker's heartbeats.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::{JobId, JobStore, StoreError};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// Reads of followed jobs in flight at once, across every feed.
pub(crate) const CONCURRENT_READS: usize = 2;

/// What a feed holds: the job as last read, `None` once it is gone (deleted).
pub(crate) type Snapshot = Option<Arc<jobs_core::Job>>;

/// The feeds of the jobs followed now. Cheap to clone: every clone is the same feeds.
#[derive(Debug, Clone)]
pub(crate) struct JobFeeds {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn JobStore>,
    interval: Duration,
    shutdown: CancellationToken,
    /// Each feed's receiver: the map's own keeps the feed open while followers come and go
    /// within one poll, and tells the poller it is the last one left.
    feeds: Mutex<HashMap<JobId, watch::Receiver<Snapshot>>>,
    reads: Semaphore,
    /// Reads of the job store made for event streams, for `/metrics`.
    reads_done: AtomicU64,
}

impl JobFeeds {
    /// Feeds reading `store` every `interval`, until `shutdown` fires.
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                interval,
                shutdown,
                feeds: Mutex::default(),
                reads: Semaphore::new(CONCURRENT_READS),
                reads_done: AtomicU64::new(0),
            }),
        }
    }

    /// A receiver of job `id`'s feed, starting one (with one read, which answers
    /// `NotFound` for a missing job) when nobody follows it yet.
    pub(crate) async fn follow(&self, id: JobId) -> Result<watch::Receiver<Snapshot>, StoreError> {
        if let Some(feed) = self.lock().get(&id) {
            return Ok(feed.clone());
        }
        let first = self.read(id).await?;
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get(&id) {
            // Another follower started it meanwhile.
            return Ok(feed.clone());
        }
        let terminal = first.status.is_terminal();
        let (sender, receiver) = watch::channel(Some(Arc::new(first)));
        if !terminal {
            feeds.insert(id, receiver.clone());
            tokio::spawn(poll(self.clone(), id, sender));
        }
        Ok(receiver)
    }

    async fn read(&self, id: JobId) -> Result<jobs_core::Job, StoreError> {
        let _slot = self.shared.reads.acquire().await;
        self.shared.reads_done.fetch_add(1, Ordering::Relaxed);
        self.shared.store.get(id).await
    }

    /// Appends the Prometheus text of the feeds' figures to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP folio_event_feed_reads_total Reads of the job store for event streams (one per followed job and poll, however many follow it).\n\
             # TYPE folio_event_feed_reads_total counter\n\
             folio_event_feed_reads_total {}\n\
             # HELP folio_event_feeds Jobs followed by event streams now.\n\
             # TYPE folio_event_feeds gauge\n\
             folio_event_feeds {}",
            self.shared.reads_done.load(Ordering::Relaxed),
            self.lock().len()
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Receiver<Snapshot>>> {
        self.shared
            .feeds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the feed of `id` if the map's receiver is the only one left; whether it ended.
    fn end_if_unfollowed(&self, id: JobId, sender: &watch::Sender<Snapshot>) -> bool {
        let mut feeds = self.lock();
        // Followers clone the map's receiver under this lock, so the count is exact here.
        if sender.receiver_count() > 1 {
            return false;
        }
        feeds.remove(&id);
        true
    }

    fn end(&self, id: JobId) {
        self.lock().remove(&id);
    }
}

/// Reads job `id` every poll interval while anyone follows it, and publishes each change;
/// ends after a terminal status, when the job is gone, or at shutdown.
async fn poll(feeds: JobFeeds, id: JobId, sender: watch::Sender<Snapshot>) {
    let interval = feeds.shared.interval;
    let shutdown = feeds.shared.shutdown.clone();
    let mut wait = interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => break,
        }
        if feeds.end_if_unfollowed(id, &sender) {
            return;
        }
        match feeds.read(id).await {
            Ok(job) => {
                wait = interval;
                let terminal = job.status.is_terminal();
                sender.send_if_modified(|current| {
                    let changed = current.as_deref() != Some(&job);
                    if changed {
                        *current = Some(Arc::new(job));
                    }
                    changed
                });
                if terminal {
                    break;
                }
            }
            Err(StoreError::NotFound(_)) => {
                sender.send_replace(None);
                break;
            }
            Err(error) => {
                tracing::warn!(job.id = %id, %error, "event feed: reading the job failed; retrying");
                wait = backoff(interval);
            }
        }
    }
    // Followers see the sender drop after the last snapshot: their streams end.
    feeds.end(id);
}

fn backoff(poll: Duration) -> Duration {
    (poll * 4).min(Duration::from_secs(5))
}
