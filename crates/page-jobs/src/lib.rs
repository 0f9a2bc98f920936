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
//! 5. On cancel (request, shutdown, lost lease) no new page starts, pages in flight are
//!    abandoned, and the manifest is written with what finished.
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
use jobs_core::runtime::{ErrorKind, HandlerError, JobContext, error_chain};
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
}

impl Default for PageJobConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            manifest_flush_every: 5,
            retry: PageRetryPolicy::default(),
            on_failure: OnPageFailure::Record,
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

    /// A storage error while working on a page: it would hit every page.
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
    mut checkpoint: PageCheckpoint,
    work: Arc<W>,
    config: &PageJobConfig,
) -> Result<PageSummary, HandlerError> {
    let mut remaining = Vec::new();
    for page in checkpoint.remaining() {
        if manifest.page(page).is_some() {
            remaining.push(page);
        } else {
            tracing::warn!(book.id = %book_id, page, "page vanished from the manifest; skipped");
        }
    }
    context.set_checkpoint(&checkpoint);
    context.update_progress(|progress| {
        progress.total = Some(checkpoint.pages.len() as u64);
        progress.completed = checkpoint.done.len() as u64;
        progress.failed = 0;
        progress.current_item = None;
        progress.last_completed_item = checkpoint.done_through().map(|page| page.to_string());
        progress.message = None;
    });

    let stop = context.cancellation_token().child_token();
    let mut writer = books.manifest_writer(book_id, config.manifest_flush_every);
    let mut queue = remaining.into_iter();
    let mut tasks = JoinSet::new();
    let mut unflushed_done: Vec<u32> = Vec::new();
    let mut fatal: Option<HandlerError> = None;
    let mut failed: Vec<(u32, String)> = Vec::new();
    let concurrency = config.concurrency.max(1);
    loop {
        while tasks.len() < concurrency && !stop.is_cancelled() {
            let Some(page) = queue.next() else {
                break;
            };
            context.update_progress(|progress| progress.current_item = Some(page.to_string()));
            tasks.spawn(try_page(work.clone(), page, config.retry, stop.clone()));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => PageOutcome::Abandoned,
        };
        let pushed = match outcome {
            PageOutcome::Done { page, done, tries } => {
                unflushed_done.push(page);
                context.update_progress(|progress| progress.completed += 1);
                writer.push(work.done_change(page, done, tries)).await
            }
            PageOutcome::Failed { page, error } => {
                let reason = error.reason();
                tracing::warn!(book.id = %book_id, page, %reason, "page failed");
                failed.push((page, reason.clone()));
                context.update_progress(|progress| progress.failed += 1);
                if config.on_failure == OnPageFailure::FailJob {
                    let message = format!("page {page}: {}", error.message);
                    fatal.get_or_insert(if error.retryable {
                        HandlerError::retryable(error.code, message)
                    } else {
                        HandlerError::terminal(error.code, message)
                    });
                    stop.cancel();
                }
                match work.failed_change(page, &reason, error.tries) {
                    Some(change) => writer.push(change).await,
                    None => Ok(None),
                }
            }
            PageOutcome::Abandoned => Ok(None),
            PageOutcome::Fatal(error) => {
                fatal.get_or_insert(error);
                stop.cancel();
                Ok(None)
            }
        };
        match pushed {
            Ok(Some(_written)) => {
                checkpoint.record_done(&unflushed_done);
                unflushed_done.clear();
                record_durable(context, &checkpoint).await;
            }
            Ok(None) => {}
            Err(error) => {
                fatal.get_or_insert(books_error(error));
                stop.cancel();
            }
        }
    }

    // The end, a cancel or a fatal error: write what finished.
    match writer.flush().await {
        Ok(Some(_written)) => {
            checkpoint.record_done(&unflushed_done);
            unflushed_done.clear();
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(book.id = %book_id, error = %error_chain(&error), "final manifest write failed");
            fatal.get_or_insert(books_error(error));
        }
    }
    context.set_checkpoint(&checkpoint);
    let failed_pages = failed.len();
    context.update_progress(|progress| {
        progress.current_item = None;
        progress.last_completed_item = checkpoint.done_through().map(|page| page.to_string());
        progress.message = (failed_pages > 0).then(|| format!("{failed_pages} page(s) failed"));
    });
    if let Some(error) = fatal {
        // Best effort: the checkpoint matches the manifest just written.
        let _ = context.flush().await;
        return Err(error);
    }
    if context.is_cancelled() {
        let _ = context.flush().await;
        tracing::info!(book.id = %book_id, reason = ?context.cancel_reason(), done = checkpoint.done.len(), "page job stopped");
        return Err(HandlerError::cancelled());
    }
    Ok(PageSummary { checkpoint, failed })
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

/// Tries one page up to the policy's tries.
async fn try_page<W: PageWork>(
    work: Arc<W>,
    page: u32,
    retry: PageRetryPolicy,
    stop: CancellationToken,
) -> PageOutcome<W::Done> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (code, message, after) = match work.run(page, &stop).await {
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

/// A storage error as a job error: retryable unless the key or URL itself is bad.
pub fn storage_error(error: &BlobError) -> HandlerError {
    match error {
        BlobError::InvalidKey { .. } | BlobError::InvalidUrl { .. } => {
            HandlerError::terminal("storage", error_chain(error))
        }
        _ => HandlerError::retryable("storage", error_chain(error)),
    }
}

/// A manifest error as a job error: a missing book or a bad manifest is terminal,
/// storage trouble retryable.
pub fn books_error(error: BooksError) -> HandlerError {
    let message = error_chain(&error);
    match error {
        BooksError::BookNotFound { .. } => HandlerError::terminal("book_not_found", message),
        BooksError::CorruptManifest { .. } | BooksError::UnsupportedSchema { .. } => {
            HandlerError::terminal("manifest", message)
        }
        _ => HandlerError::retryable("storage", message),
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
