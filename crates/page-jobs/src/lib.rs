//! The engine of page-by-page book jobs, shared by the `ocr` job and the `guidelines` job.
//!
//! A handler says what one page's work is ([`PageWork`]) and what the manifest should record
//! when a page is done or has failed; [`run_pages`] does the rest, the same way for every
//! job:
//! 1. Pages run `concurrency` at a time, in order of the checkpoint's page list, skipping
//!    the pages it names as done (and pages that vanished from the manifest).
//! 2. A page error that is worth another try is retried with [`Backoff`] (honouring the
//!    cause's asked-for delay) up to `max_tries`; cancellation ends the wait at once.
//! 3. One manifest change per finished page goes to a [`books::ManifestWriter`], which
//!    writes every `manifest_flush_every` pages; the pages a write made durable then enter
//!    the checkpoint, which is flushed at once. So the persisted checkpoint never runs
//!    ahead of the manifest.
//! 4. A failed page is recorded and the job goes on ([`OnPageFailure::Record`], bulk OCR),
//!    or it stops the job, naming the page ([`OnPageFailure::FailJob`], extraction in
//!    order). Errors that would hit every page ([`PageError::Fatal`]) stop the job.
//! 5. On cancel (request, lost lease) or a fatal error no new page starts, pages in flight
//!    are abandoned, and the manifest is written with what finished. On shutdown no new
//!    page starts either, but pages in flight finish (within the worker's shutdown grace):
//!    a rolling restart redoes no page.
//! 6. Object storage that is unavailable (an outage, throttling, timeouts: a transient
//!    [`BlobError`] after the store's own retries) is waited out for up to
//!    [`PageJobConfig::storage_wait`]: a manifest write is retried with backoff, and
//!    handlers wrap their page's storage calls in [`ride_out_storage`]. Only then does the
//!    job stop, with code [`STORAGE_UNAVAILABLE`] (retryable), so a storage blip neither
//!    uses up the job's attempts nor redoes pages.
//!
//! Architecture Invariant: this crate knows only jobs-core, books and the `BlobStore` trait.

#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use blob_store::BlobError;
use books::{BookId, Books, BooksError, Manifest, ManifestChange};
use jobs_core::Backoff;
use jobs_core::runtime::{CancelReason, ErrorKind, HandlerError, JobContext, error_chain};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Checkpoint of a page job.
///
/// Invariant: `done` names only pages whose result the manifest durably holds (written by
/// this job). Failed pages are never in `done`, so resume redoes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCheckpoint {
    /// Every page of the job, in the order they run, fixed at its first run.
    pub pages: Vec<u32>,
    /// Pages done and durably recorded in the manifest, sorted.
    pub done: Vec<u32>,
}

impl PageCheckpoint {
    /// A first run's checkpoint over `pages` (in the order given), none done.
    pub fn new(pages: Vec<u32>) -> Self {
        Self {
            pages,
            done: Vec::new(),
        }
    }

    /// The last page of the longest run of done pages from the start of `pages`: the
    /// job's `last_completed_item`. It never passes a page that is not done.
    pub fn done_through(&self) -> Option<u32> {
        let done: BTreeSet<u32> = self.done.iter().copied().collect();
        self.pages
            .iter()
            .take_while(|page| done.contains(page))
            .last()
            .copied()
    }

    /// The pages not done yet, in order.
    pub fn remaining(&self) -> Vec<u32> {
        let done: BTreeSet<u32> = self.done.iter().copied().collect();
        self.pages
            .iter()
            .copied()
            .filter(|page| !done.contains(page))
            .collect()
    }

    fn record_done(&mut self, pages: &[u32]) {
        let mut done: BTreeSet<u32> = self.done.iter().copied().collect();
        done.extend(pages.iter().copied());
        self.done = done.into_iter().collect();
    }
}

/// Tries of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRetryPolicy {
    /// Tries in all, including the first (3).
    pub max_tries: u32,
    /// The delay between tries (1 s doubling up to 30 s, which also caps a `Retry-After`).
    pub backoff: Backoff,
}

impl Default for PageRetryPolicy {
    fn default() -> Self {
        Self {
            max_tries: 3,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

/// What a page that failed (after its tries) does to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPageFailure {
    /// The failure is recorded in the manifest and the job goes on (bulk OCR).
    Record,
    /// The job stops and fails, naming the page; its checkpoint ends before it, so resume
    /// starts there (extraction, where each page builds on the one before).
    FailJob,
}

/// How a page job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageJobConfig {
    /// Pages in flight at once.
    pub concurrency: usize,
    /// Finished pages per manifest write.
    pub manifest_flush_every: usize,
    /// Tries of one page.
    pub retry: PageRetryPolicy,
    /// What a failed page does to the job.
    pub on_failure: OnPageFailure,
    /// How long unavailable storage is waited out before the job stops with
    /// [`STORAGE_UNAVAILABLE`] (default [`DEFAULT_STORAGE_WAIT`]).
    pub storage_wait: Duration,
    /// The job makes its pages (`ingest`): its pages are not in the manifest before they
    /// are done. Other jobs skip a page that vanished from the manifest.
    pub makes_pages: bool,
}

impl Default for PageJobConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            manifest_flush_every: 5,
            retry: PageRetryPolicy::default(),
            on_failure: OnPageFailure::Record,
            storage_wait: DEFAULT_STORAGE_WAIT,
            makes_pages: false,
        }
    }
}

/// The error code of a job stopped by object storage that stayed unavailable (transient
/// errors: connection refused or reset, timeouts, 5xx, `SlowDown`) through the store's
/// retries and the job's wait. Retryable: the runtime retries the job while attempts
/// remain, and a failed job can be resumed once storage is back.
pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";

/// The error code of any other storage failure (permissions, missing bucket, bad key).
pub const STORAGE: &str = "storage";

/// The error code of a run whose manifest write was refused because a newer run of its
/// job wrote the manifest ([`BooksError::Fenced`]).
pub const FENCED: &str = "fenced";

/// How long a book job waits out unavailable storage by default.
pub const DEFAULT_STORAGE_WAIT: Duration = Duration::from_secs(60);

/// The delays between storage retries while waiting it out: 500 ms doubling to 5 s.
const STORAGE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));

/// Runs `op` again while it fails with a transient storage error ([`BlobError::is_transient`]
/// or [`is_storage_unavailable`], per `transient`), with backoff, until `wait` has passed
/// since its first failure or `cancel` fires; returns its last result. A caller maps a
/// transient error it still gets to [`STORAGE_UNAVAILABLE`] (as [`storage_error`] and
/// [`books_error`] do).
pub async fn ride_out_storage<T, E, Op, Fut>(
    wait: Duration,
    cancel: &CancellationToken,
    transient: impl Fn(&E) -> bool,
    mut op: Op,
) -> Result<T, E>
where
    E: std::fmt::Display,
    Op: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut outage = StorageOutage::new(wait);
    loop {
        match op().await {
            Ok(value) => {
                outage.ended();
                return Ok(value);
            }
            Err(error)
                if transient(&error) && outage.wait_more(error.to_string(), cancel).await => {}
            Err(error) => return Err(error),
        }
    }
}

/// The manifest writer's flush, with unavailable storage waited out as by
/// [`ride_out_storage`] (the writer keeps its changes queued between tries).
async fn flush_riding_out_storage(
    writer: &mut books::ManifestWriter,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<Option<Manifest>, BooksError> {
    let mut outage = StorageOutage::new(wait);
    loop {
        match writer.flush().await {
            Ok(written) => {
                outage.ended();
                return Ok(written);
            }
            Err(error)
                if is_storage_unavailable(&error)
                    && outage.wait_more(error.to_string(), cancel).await => {}
            Err(error) => return Err(error),
        }
    }
}

/// One stretch of unavailable storage, as seen by one caller.
struct StorageOutage {
    wait: Duration,
    since: Option<tokio::time::Instant>,
    failures: u32,
}

impl StorageOutage {
    fn new(wait: Duration) -> Self {
        Self {
            wait,
            since: None,
            failures: 0,
        }
    }

    /// After a transient failure: sleeps the next backoff and returns true, or returns
    /// false at once when that would pass the wait, or when `cancel` fires.
    async fn wait_more(&mut self, error: String, cancel: &CancellationToken) -> bool {
        self.failures += 1;
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        let delay = STORAGE_BACKOFF.delay(self.failures, None);
        if since.elapsed() + delay > self.wait || cancel.is_cancelled() {
            tracing::warn!(failures = self.failures, waited = ?since.elapsed(), %error, "storage still unavailable; giving up");
            return false;
        }
        tracing::warn!(failures = self.failures, ?delay, %error, "storage unavailable; waiting it out");
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = cancel.cancelled() => false,
        }
    }

    fn ended(&self) {
        if let Some(since) = self.since {
            tracing::info!(failures = self.failures, waited = ?since.elapsed(), "storage is back");
        }
    }
}

/// Why one try of a page failed, classified where the cause is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageError {
    /// Another try may succeed (not before `after`, when given).
    Retryable {
        /// A stable code (`extractor_http`, `tesseract_timeout`, ...).
        code: String,
        /// The original message.
        message: String,
        /// The earliest retry the cause asked for.
        after: Option<Duration>,
    },
    /// This page cannot be done; another try would fail the same way.
    Failed {
        /// A stable code.
        code: String,
        /// The original message.
        message: String,
    },
    /// An error that would hit every page (storage down, book deleted): the job stops.
    Fatal(HandlerError),
    /// The page stopped on the cancellation token.
    Cancelled,
}

impl PageError {
    /// A page error of `kind`: retryable, failed (terminal) or cancelled.
    pub fn of_kind(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        match kind {
            ErrorKind::Retryable { after } => Self::Retryable {
                code: code.into(),
                message: message.into(),
                after,
            },
            ErrorKind::Terminal => Self::Failed {
                code: code.into(),
                message: message.into(),
            },
            ErrorKind::Cancelled => Self::Cancelled,
        }
    }

    /// A storage error while working on a page: it would hit every page. (Wrap the call
    /// in [`ride_out_storage`] first, so an outage is waited out.)
    pub fn storage(error: &BlobError) -> Self {
        Self::Fatal(storage_error(error))
    }
}

/// One page's work in a page job.
#[async_trait]
pub trait PageWork: Send + Sync + 'static {
    /// What a done page hands to [`PageWork::done_change`].
    type Done: Send + 'static;

    /// One try of `page`. It should stop promptly when `stop` fires.
    async fn run(&self, page: u32, stop: &CancellationToken) -> Result<Self::Done, PageError>;

    /// The manifest change that records `page` as done after `tries` tries. It may run more
    /// than once (once per write attempt), so it describes the change.
    fn done_change(&self, page: u32, done: Self::Done, tries: u32) -> ManifestChange;

    /// The manifest change that records `page` as failed with `reason`, if any.
    fn failed_change(&self, page: u32, reason: &str, tries: u32) -> Option<ManifestChange>;
}

/// What a page job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSummary {
    /// The checkpoint at the end, as persisted.
    pub checkpoint: PageCheckpoint,
    /// Pages that failed in this run, with their reasons.
    pub failed: Vec<(u32, String)>,
}

/// How one page ended.
enum PageOutcome<D> {
    Done {
        page: u32,
        done: D,
        tries: u32,
    },
    Failed {
        page: u32,
        error: PageFailure,
    },
    /// Stopped by cancellation before it finished; nothing recorded.
    Abandoned,
    /// An error that hits every page: the job stops.
    Fatal(HandlerError),
}

/// A page's last error after its tries.
struct PageFailure {
    code: String,
    message: String,
    retryable: bool,
    tries: u32,
}

impl PageFailure {
    fn reason(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

/// Runs the pages of `checkpoint` that are not done with `work`, and returns the final
/// checkpoint. The job's progress (`total`, `completed`, `failed`, `current_item`,
/// `last_completed_item`) follows the pages. Errors: a fatal page error, a failed page
/// under [`OnPageFailure::FailJob`] (code and message of the page's error, prefixed with
/// the page), or [`HandlerError::cancelled`] when the job's token fired.
pub async fn run_pages<W: PageWork>(
    context: &JobContext,
    books: &Books,
    book_id: &BookId,
    manifest: &Manifest,
    checkpoint: PageCheckpoint,
    work: Arc<W>,
    config: &PageJobConfig,
) -> Result<PageSummary, HandlerError> {
    let mut run = PageRun::start(context, books, book_id, manifest, checkpoint, work, config);
    while let Some(outcome) = run.next_outcome().await {
        let pushed = run.record(outcome).await;
        run.after_push(pushed).await;
    }
    run.finish().await
}

/// One run of [`run_pages`]: the pages still to start, the pages in flight, and what the
/// finished ones left to write and to report.
struct PageRun<'a, W: PageWork> {
    context: &'a JobContext,
    book_id: &'a BookId,
    config: &'a PageJobConfig,
    work: Arc<W>,
    checkpoint: PageCheckpoint,
    writer: books::ManifestWriter,
    queue: std::vec::IntoIter<u32>,
    tasks: JoinSet<PageOutcome<W::Done>>,
    /// Pages done and pushed to the writer, not yet written: they enter the checkpoint
    /// once a write makes them durable.
    unflushed_done: Vec<u32>,
    fatal: Option<HandlerError>,
    failed: Vec<(u32, String)>,
    /// No new page starts once fired.
    stop: CancellationToken,
    /// Pages in flight give up once fired.
    abandon: CancellationToken,
    /// Shutting down: the pages in flight finish.
    draining: bool,
}

impl<'a, W: PageWork> PageRun<'a, W> {
    /// The pages of `checkpoint` still to do (those in `manifest`), with the job's
    /// checkpoint and progress set to where the run starts.
    fn start(
        context: &'a JobContext,
        books: &Books,
        book_id: &'a BookId,
        manifest: &Manifest,
        checkpoint: PageCheckpoint,
        work: Arc<W>,
        config: &'a PageJobConfig,
    ) -> Self {
        let remaining = if config.makes_pages {
            checkpoint.remaining()
        } else {
            pages_in_manifest(book_id, manifest, &checkpoint)
        };
        report_start(context, &checkpoint);
        // `stop`: no new page starts. `abandon`: pages in flight give up; on shutdown it stays
        // unfired, so they finish.
        let stop = context.cancellation_token().child_token();
        let abandon = CancellationToken::new();
        let writer = fenced_writer(context, books, book_id, config);
        Self {
            context,
            book_id,
            config,
            work,
            checkpoint,
            writer,
            queue: remaining.into_iter(),
            tasks: JoinSet::new(),
            unflushed_done: Vec::new(),
            fatal: None,
            failed: Vec::new(),
            stop,
            abandon,
            draining: false,
        }
    }

    /// Starts pages from the queue up to the concurrency, unless the run stopped.
    fn spawn_ready(&mut self) {
        let concurrency = self.config.concurrency.max(1);
        while self.tasks.len() < concurrency && !self.stop.is_cancelled() {
            let Some(page) = self.queue.next() else {
                break;
            };
            self.context
                .update_progress(|progress| progress.current_item = Some(page.to_string()));
            self.tasks.spawn(try_page(
                self.work.clone(),
                page,
                self.config.retry,
                self.stop.clone(),
                self.abandon.clone(),
            ));
        }
    }

    /// How the next page in flight ended, starting pages as room frees up; `None` once no
    /// page is in flight and none will start. On a stop, shutdown lets the pages in flight
    /// finish, anything else abandons them.
    async fn next_outcome(&mut self) -> Option<PageOutcome<W::Done>> {
        loop {
            self.spawn_ready();
            let next = tokio::select! {
                joined = self.tasks.join_next() => joined,
                () = self.stop.cancelled(), if !self.draining && !self.abandon.is_cancelled() => {
                    if self.context.cancel_reason() == Some(CancelReason::Shutdown) {
                        tracing::info!(book.id = %self.book_id, in_flight = self.tasks.len(), "shutting down: finishing the pages in flight");
                        self.draining = true;
                    } else {
                        self.abandon.cancel();
                    }
                    continue;
                }
            };
            let joined = next?;
            return Some(match joined {
                Ok(outcome) => outcome,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => PageOutcome::Abandoned,
            });
        }
    }

    /// Records how a page ended: in the progress, and as a change pushed to the manifest
    /// writer (whose result this is). A fatal error stops the run.
    async fn record(
        &mut self,
        outcome: PageOutcome<W::Done>,
    ) -> Result<Option<Manifest>, BooksError> {
        match outcome {
            PageOutcome::Done { page, done, tries } => {
                self.unflushed_done.push(page);
                self.context
                    .update_progress(|progress| progress.completed += 1);
                self.writer
                    .push(self.work.done_change(page, done, tries))
                    .await
            }
            PageOutcome::Failed { page, error } => self.record_failed(page, error).await,
            PageOutcome::Abandoned => Ok(None),
            PageOutcome::Fatal(error) => {
                self.fatal.get_or_insert(error);
                self.stop.cancel();
                Ok(None)
            }
        }
    }

    /// Records a failed page; under [`OnPageFailure::FailJob`] it stops the run.
    async fn record_failed(
        &mut self,
        page: u32,
        error: PageFailure,
    ) -> Result<Option<Manifest>, BooksError> {
        let reason = error.reason();
        tracing::warn!(book.id = %self.book_id, page, %reason, "page failed");
        self.failed.push((page, reason.clone()));
        self.context
            .update_progress(|progress| progress.failed += 1);
        if self.config.on_failure == OnPageFailure::FailJob {
            let message = format!("page {page}: {}", error.message);
            self.fatal.get_or_insert(if error.retryable {
                HandlerError::retryable(error.code, message)
            } else {
                HandlerError::terminal(error.code, message)
            });
            self.stop.cancel();
        }
        match self.work.failed_change(page, &reason, error.tries) {
            Some(change) => self.writer.push(change).await,
            None => Ok(None),
        }
    }

    /// After a push: storage that did not answer is waited out; a write moves the pages it
    /// made durable into the checkpoint; a write that failed (or was fenced) stops the run.
    async fn after_push(&mut self, pushed: Result<Option<Manifest>, BooksError>) {
        let pushed = match pushed {
            // The changes stay queued: flush them again while storage is waited out.
            Err(error) if is_storage_unavailable(&error) => {
                flush_riding_out_storage(
                    &mut self.writer,
                    self.config.storage_wait,
                    &self.context.cancellation_token(),
                )
                .await
            }
            other => other,
        };
        match pushed {
            Ok(Some(_written)) => {
                self.written();
                record_durable(self.context, &self.checkpoint).await;
            }
            Ok(None) => {}
            Err(error) => {
                if matches!(error, BooksError::Fenced { .. }) {
                    tracing::warn!(book.id = %self.book_id, error = %error_chain(&error), "manifest write refused: a newer run has the job; stopping");
                }
                self.fatal.get_or_insert(books_error(error));
                self.stop.cancel();
            }
        }
    }

    /// A manifest write made the pages done since the last one durable: they enter the
    /// checkpoint.
    fn written(&mut self) {
        self.checkpoint.record_done(&self.unflushed_done);
        self.unflushed_done.clear();
    }

    /// Writes what finished, then sets the final checkpoint and progress and says how the
    /// run ended: its summary, the fatal error, or cancelled.
    async fn finish(mut self) -> Result<PageSummary, HandlerError> {
        // The end, a cancel or a fatal error: write what finished (waiting storage out, unless
        // the job was cancelled: a shutdown has its grace period to keep).
        let flushed = flush_riding_out_storage(
            &mut self.writer,
            self.config.storage_wait,
            &self.context.cancellation_token(),
        )
        .await;
        match flushed {
            Ok(Some(_written)) => self.written(),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(book.id = %self.book_id, error = %error_chain(&error), "final manifest write failed");
                self.fatal.get_or_insert(books_error(error));
            }
        }
        let context = self.context;
        let checkpoint = self.checkpoint;
        context.set_checkpoint(&checkpoint);
        let failed_pages = self.failed.len();
        context.update_progress(|progress| {
            progress.current_item = None;
            progress.last_completed_item = checkpoint.done_through().map(|page| page.to_string());
            progress.message = (failed_pages > 0).then(|| format!("{failed_pages} page(s) failed"));
        });
        if let Some(error) = self.fatal {
            // Best effort: the checkpoint matches the manifest just written.
            let _ = context.flush().await;
            return Err(error);
        }
        if context.is_cancelled() {
            let _ = context.flush().await;
            tracing::info!(book.id = %self.book_id, reason = ?context.cancel_reason(), done = checkpoint.done.len(), "page job stopped");
            return Err(HandlerError::cancelled());
        }
        Ok(PageSummary {
            checkpoint,
            failed: self.failed,
        })
    }
}

/// The pages of `checkpoint` not done yet that `manifest` still has, in order; a page
/// that vanished from the manifest is skipped.
fn pages_in_manifest(
    book_id: &BookId,
    manifest: &Manifest,
    checkpoint: &PageCheckpoint,
) -> Vec<u32> {
    let mut remaining = Vec::new();
    for page in checkpoint.remaining() {
        if manifest.page(page).is_some() {
            remaining.push(page);
        } else {
            tracing::warn!(book.id = %book_id, page, "page vanished from the manifest; skipped");
        }
    }
    remaining
}

/// The job's checkpoint and progress as a run starts: all its pages, those done, none
/// failed or in flight yet.
fn report_start(context: &JobContext, checkpoint: &PageCheckpoint) {
    context.set_checkpoint(checkpoint);
    context.update_progress(|progress| {
        progress.total = Some(checkpoint.pages.len() as u64);
        progress.completed = checkpoint.done.len() as u64;
        progress.failed = 0;
        progress.current_item = None;
        progress.last_completed_item = checkpoint.done_through().map(|page| page.to_string());
        progress.message = None;
    });
}

/// The run's manifest writer, fenced by the job's lease.
fn fenced_writer(
    context: &JobContext,
    books: &Books,
    book_id: &BookId,
    config: &PageJobConfig,
) -> books::ManifestWriter {
    // Fenced by this run: a worker that lost the job (cut off while another took it over)
    // finds its manifest writes refused once the newer run has written.
    let job = context.job();
    let fence = books::Fence {
        job: job.id.to_string(),
        lease: job.lease.0,
    };
    books
        .manifest_writer(book_id, config.manifest_flush_every)
        .fenced(job.job_type.clone(), fence)
}

/// After a manifest write: the checkpoint and progress name the pages it made durable,
/// written at once.
async fn record_durable(context: &JobContext, checkpoint: &PageCheckpoint) {
    context.set_checkpoint(checkpoint);
    context.update_progress(|progress| {
        progress.last_completed_item = checkpoint.done_through().map(|page| page.to_string());
    });
    if let Err(error) = context.flush().await {
        // A lost lease fires the token (the loop stops); a store error leaves the
        // checkpoint pending for the next heartbeat.
        tracing::debug!(%error, "checkpoint flush failed");
    }
}

/// Tries one page up to the policy's tries. A try in flight gives up when `abandon` fires;
/// no retry starts once `stop` has.
async fn try_page<W: PageWork>(
    work: Arc<W>,
    page: u32,
    retry: PageRetryPolicy,
    stop: CancellationToken,
    abandon: CancellationToken,
) -> PageOutcome<W::Done> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (code, message, after) = match work.run(page, &abandon).await {
            Ok(done) => return PageOutcome::Done { page, done, tries },
            Err(PageError::Cancelled) => return PageOutcome::Abandoned,
            Err(PageError::Fatal(error)) => return PageOutcome::Fatal(error),
            Err(PageError::Failed { code, message }) => {
                let error = PageFailure {
                    code,
                    message,
                    retryable: false,
                    tries,
                };
                return PageOutcome::Failed { page, error };
            }
            Err(PageError::Retryable {
                code,
                message,
                after,
            }) => (code, message, after),
        };
        if tries >= retry.max_tries {
            let error = PageFailure {
                code,
                message,
                retryable: true,
                tries,
            };
            return PageOutcome::Failed { page, error };
        }
        let delay = retry.backoff.delay(tries, after);
        tracing::info!(page, tries, ?delay, %code, %message, "page failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return PageOutcome::Abandoned,
        }
    }
}

/// Whether a manifest operation failed because storage did not answer (a transient
/// storage error; not a lost race of writers).
pub fn is_storage_unavailable(error: &BooksError) -> bool {
    match error {
        BooksError::Storage { source, .. } | BooksError::ListFailed { source } => {
            source.is_transient()
        }
        _ => false,
    }
}

/// A storage error as a job error: [`STORAGE_UNAVAILABLE`] (retryable) when storage did
/// not answer, else [`STORAGE`], retryable unless the key or URL itself is bad.
pub fn storage_error(error: &BlobError) -> HandlerError {
    let message = error_chain(error);
    match error {
        BlobError::InvalidKey { .. } | BlobError::InvalidUrl { .. } => {
            HandlerError::terminal(STORAGE, message)
        }
        _ if error.is_transient() => HandlerError::retryable(STORAGE_UNAVAILABLE, message),
        _ => HandlerError::retryable(STORAGE, message),
    }
}

/// A manifest error as a job error: a missing book or a bad manifest is terminal,
/// storage that did not answer [`STORAGE_UNAVAILABLE`], other storage trouble [`STORAGE`]
/// (both retryable).
pub fn books_error(error: BooksError) -> HandlerError {
    let unavailable = is_storage_unavailable(&error);
    let message = error_chain(&error);
    match error {
        BooksError::BookNotFound { .. } => HandlerError::terminal("book_not_found", message),
        BooksError::CorruptManifest { .. } | BooksError::UnsupportedSchema { .. } => {
            HandlerError::terminal("manifest", message)
        }
        // This run lost its job to a newer one, whose lease also refuses this run's end in
        // the job store: the error only stops the handler.
        BooksError::Fenced { .. } => HandlerError::retryable(FENCED, message),
        _ if unavailable => HandlerError::retryable(STORAGE_UNAVAILABLE, message),
        _ => HandlerError::retryable(STORAGE, message),
    }
}

/// The book of a book job (its resource key), or a terminal error.
pub fn book_of(context: &JobContext) -> Result<BookId, HandlerError> {
    BookId::parse(&context.job().resource_key)
        .map_err(|error| HandlerError::terminal("invalid_book_id", error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_through_never_passes_a_page_that_is_not_done() {
        let checkpoint = PageCheckpoint {
            pages: vec![1, 2, 3, 4, 5],
            done: vec![1, 2, 4, 5],
        };
        assert_eq!(checkpoint.done_through(), Some(2));
        assert_eq!(checkpoint.remaining(), vec![3]);
        let none = PageCheckpoint {
            pages: vec![1, 2],
            done: vec![2],
        };
        assert_eq!(none.done_through(), None);
    }

    fn transient(key: &str) -> BlobError {
        BlobError::Transient {
            operation: "get",
            key: key.to_owned(),
            source: "connection reset by peer".into(),
        }
    }

    #[test]
    fn storage_errors_have_a_code_that_says_whether_storage_answered() {
        let unavailable = storage_error(&transient("books/b/pages/0001.png"));
        assert_eq!(unavailable.code, STORAGE_UNAVAILABLE);
        assert!(matches!(unavailable.kind, ErrorKind::Retryable { .. }));
        assert!(
            unavailable
                .message
                .contains("storage temporarily unavailable during get books/b/pages/0001.png"),
            "{}",
            unavailable.message
        );
        assert!(unavailable.message.contains("connection reset by peer"));
        let backend = storage_error(&BlobError::Backend {
            operation: "put",
            key: "k".into(),
            source: "access denied".into(),
        });
        assert_eq!(backend.code, STORAGE);
        let bad_key = storage_error(&BlobError::InvalidKey {
            key: "../k".into(),
            reason: "traversal",
        });
        assert_eq!(
            (bad_key.code.as_str(), bad_key.kind),
            (STORAGE, ErrorKind::Terminal)
        );
        let book_id = BookId::parse("b").unwrap();
        let manifest = books_error(BooksError::Storage {
            book_id: book_id.clone(),
            source: transient("books/b/metadata.json"),
        });
        assert_eq!(manifest.code, STORAGE_UNAVAILABLE);
        let conflict = books_error(BooksError::UpdateConflict {
            book_id,
            attempts: 30,
        });
        assert_eq!(conflict.code, STORAGE);
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_storage_is_waited_out_up_to_the_wait_and_no_longer() {
        let never = CancellationToken::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let count = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;

        // Back after three failures: one result, four calls.
        let started = tokio::time::Instant::now();
        let result = ride_out_storage(
            Duration::from_secs(60),
            &never,
            BlobError::is_transient,
            || async {
                if count() <= 3 {
                    Err(transient("k"))
                } else {
                    Ok("bytes")
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), "bytes");
        assert_eq!(calls.swap(0, std::sync::atomic::Ordering::SeqCst), 4);
        assert!(started.elapsed() < Duration::from_secs(10));

        // Never back: given up within the wait.
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = ride_out_storage(
            Duration::from_secs(20),
            &never,
            BlobError::is_transient,
            || async {
                count();
                Err(transient("k"))
            },
        )
        .await;
        assert!(result.unwrap_err().is_transient());
        assert!(
            started.elapsed() <= Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(calls.swap(0, std::sync::atomic::Ordering::SeqCst) >= 4);

        // Not a storage outage: no retry.
        let result: Result<(), _> = ride_out_storage(
            Duration::from_secs(20),
            &never,
            BlobError::is_transient,
            || async {
                count();
                Err(BlobError::NotFound { key: "k".into() })
            },
        )
        .await;
        assert!(result.unwrap_err().is_not_found());
        assert_eq!(calls.swap(0, std::sync::atomic::Ordering::SeqCst), 1);

        // A cancel ends the wait at once.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = ride_out_storage(
            Duration::from_secs(20),
            &cancel,
            BlobError::is_transient,
            || async { Err(transient("k")) },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn page_errors_follow_the_kind_of_their_cause() {
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            PageError::of_kind(ErrorKind::Retryable { after }, "http", "429"),
            PageError::Retryable {
                code: "http".into(),
                message: "429".into(),
                after
            }
        );
        assert_eq!(
            PageError::of_kind(ErrorKind::Terminal, "http", "401"),
            PageError::Failed {
                code: "http".into(),
                message: "401".into()
            }
        );
        assert_eq!(
            PageError::of_kind(ErrorKind::Cancelled, "x", "y"),
            PageError::Cancelled
        );
    }
}
