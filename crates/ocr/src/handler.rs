//! [`OcrHandler`]: the bulk `ocr` job (SPEC 4.2).
//!
//! A run goes like this:
//! 1. The page list: from the checkpoint when the job was claimed before (or resumed),
//!    else from the payload (`{"pages": [..]}`), else every page whose OCR is not `done`.
//!    Pages the checkpoint names as done are skipped.
//! 2. Pages run `concurrency` at a time, each in its own task: read the PNG, recognize
//!    (retrying retryable engine errors with exponential backoff and jitter), write the
//!    text, and hand back done or failed with the reason.
//! 3. The main task queues one manifest change per finished page in a
//!    [`books::ManifestWriter`], which writes them every `manifest_flush_every` pages; the
//!    pages a write made durable then enter the checkpoint, which is flushed at once. So
//!    the persisted checkpoint never runs ahead of the manifest.
//! 4. On cancel (request, shutdown, lost lease) no new page starts, pages in flight are
//!    abandoned (their engine killed), and the manifest is written with what finished.
//!    Errors that would hit every page (storage down, book deleted, engine missing) stop
//!    the job the same way and fail it as a whole.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use blob_store::{BlobError, BlobStore, PutMode};
use books::{BookId, Books, BooksError, Manifest, OcrStatus, layout};
use bytes::Bytes;
use chrono::Utc;
use jobs_core::runtime::{ErrorKind, HandlerError, JobContext, JobHandler, error_chain};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{OcrEngine, PageImage};

/// The job type of bulk OCR.
pub const OCR_JOB_TYPE: &str = "ocr";

/// Payload of an `ocr` job: `{"pages": [3, 7]}` for those pages (a page retry), or `{}`
/// for every page whose OCR is not `done`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcrPayload {
    /// The pages to recognize; every page not `done` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<u32>>,
}

/// Checkpoint of an `ocr` job.
///
/// Invariant: `done` names only pages whose `done` status the manifest durably holds
/// (written by this job). Failed pages are never in `done`, so resume redoes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcrCheckpoint {
    /// Every page of the job, sorted, fixed at its first run.
    pub pages: Vec<u32>,
    /// Pages done and durably recorded in the manifest, sorted.
    pub done: Vec<u32>,
}

impl OcrCheckpoint {
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

/// Retries of one page's recognition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRetryPolicy {
    /// Tries in all, including the first (3).
    pub max_tries: u32,
    /// Delay before the second try; doubles per try, with ±50 % jitter (1 s).
    pub base_delay: Duration,
    /// Longest delay, also the cap on a server's `Retry-After` (30 s).
    pub max_delay: Duration,
}

impl Default for PageRetryPolicy {
    fn default() -> Self {
        Self {
            max_tries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl PageRetryPolicy {
    /// The delay after failed try number `tries` (1-based), at least `after` (capped).
    pub fn delay(&self, tries: u32, after: Option<Duration>) -> Duration {
        let exponent = tries.saturating_sub(1).min(20);
        let base = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let jittered = base.mul_f64(0.5 + rand::random::<f64>());
        jittered
            .max(after.unwrap_or_default())
            .min(self.max_delay.max(base))
    }
}

/// How `ocr` jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcrJobConfig {
    /// Pages recognized at once within one job (default: number of CPUs).
    pub concurrency: usize,
    /// Finished pages per manifest write (default 5).
    pub manifest_flush_every: usize,
    /// Retries of one page.
    pub retry: PageRetryPolicy,
}

impl Default for OcrJobConfig {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            manifest_flush_every: 5,
            retry: PageRetryPolicy::default(),
        }
    }
}

/// Runs `ocr` jobs on the books of one blob store with one engine.
#[derive(Debug, Clone)]
pub struct OcrHandler {
    books: Books,
    engine: Arc<dyn OcrEngine>,
    config: OcrJobConfig,
}

/// How one page ended.
#[derive(Debug)]
enum PageOutcome {
    Done {
        page: u32,
        chars: u64,
        tries: u32,
    },
    Failed {
        page: u32,
        reason: String,
        tries: u32,
    },
    /// Stopped by cancellation before it finished; nothing recorded.
    Abandoned,
    /// An error that hits every page: the job stops.
    Fatal(HandlerError),
}

/// What a page task needs.
#[derive(Clone)]
struct PageWork {
    store: Arc<dyn BlobStore>,
    engine: Arc<dyn OcrEngine>,
    retry: PageRetryPolicy,
    book_id: BookId,
    stop: CancellationToken,
}

impl OcrHandler {
    /// A handler over `books` with `engine`.
    pub fn new(books: Books, engine: Arc<dyn OcrEngine>, config: OcrJobConfig) -> Self {
        Self {
            books,
            engine,
            config,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &OcrJobConfig {
        &self.config
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn OcrEngine> {
        &self.engine
    }

    /// The page list of a first run.
    fn plan(manifest: &Manifest, payload: &OcrPayload) -> Result<OcrCheckpoint, HandlerError> {
        let pages: Vec<u32> = match &payload.pages {
            Some(wanted) => {
                let wanted: BTreeSet<u32> = wanted.iter().copied().collect();
                let missing: Vec<String> = wanted
                    .iter()
                    .filter(|page| manifest.page(**page).is_none())
                    .map(u32::to_string)
                    .collect();
                if !missing.is_empty() {
                    return Err(HandlerError::terminal(
                        "page_not_found",
                        format!(
                            "book {} has no page {}",
                            manifest.book_id,
                            missing.join(", ")
                        ),
                    ));
                }
                wanted.into_iter().collect()
            }
            None => manifest
                .pages
                .iter()
                .filter(|page| page.ocr.status != OcrStatus::Done)
                .map(|page| page.page)
                .collect(),
        };
        Ok(OcrCheckpoint {
            pages,
            done: Vec::new(),
        })
    }
}

#[async_trait::async_trait]
impl JobHandler for OcrHandler {
    fn job_type(&self) -> &str {
        OCR_JOB_TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let payload: OcrPayload = context.payload()?;
        let book_id = BookId::parse(&context.job().resource_key)
            .map_err(|error| HandlerError::terminal("invalid_book_id", error.to_string()))?;
        let manifest = self.books.manifest(&book_id).await.map_err(books_error)?;
        let mut checkpoint = match context.checkpoint::<OcrCheckpoint>()? {
            Some(checkpoint) => checkpoint,
            None => Self::plan(&manifest, &payload)?,
        };
        let mut remaining = Vec::new();
        for page in checkpoint.remaining() {
            match manifest.page(page) {
                Some(entry) => remaining.push((page, entry.image.clone())),
                None => {
                    tracing::warn!(book.id = %book_id, page, "page vanished from the manifest; skipped")
                }
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
        tracing::info!(book.id = %book_id, pages = checkpoint.pages.len(), remaining = remaining.len(), engine = self.engine.name(), "ocr started");

        let stop = context.cancellation_token().child_token();
        let work = PageWork {
            store: self.books.store().clone(),
            engine: self.engine.clone(),
            retry: self.config.retry,
            book_id: book_id.clone(),
            stop: stop.clone(),
        };
        let mut writer = self
            .books
            .manifest_writer(&book_id, self.config.manifest_flush_every);
        let mut queue = remaining.into_iter();
        let mut tasks = JoinSet::new();
        let mut unflushed_done: Vec<u32> = Vec::new();
        let mut fatal: Option<HandlerError> = None;
        let mut failed_pages: u64 = 0;
        let concurrency = self.config.concurrency.max(1);
        loop {
            while tasks.len() < concurrency && !stop.is_cancelled() {
                let Some((page, image)) = queue.next() else {
                    break;
                };
                context.update_progress(|progress| progress.current_item = Some(page.to_string()));
                tasks.spawn(work.clone().run(page, image));
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let outcome = match joined {
                Ok(outcome) => outcome,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => PageOutcome::Abandoned,
            };
            let engine_name = self.engine.name().to_owned();
            let now = Utc::now();
            let pushed = match outcome {
                PageOutcome::Done { page, chars, tries } => {
                    unflushed_done.push(page);
                    context.update_progress(|progress| progress.completed += 1);
                    writer
                        .push(move |manifest: &mut Manifest| {
                            if let Some(entry) = manifest.page_mut(page) {
                                entry.ocr.status = OcrStatus::Done;
                                entry.ocr.text = Some(layout::ocr_text_path(page));
                                entry.ocr.engine = Some(engine_name.clone());
                                entry.ocr.chars = Some(chars);
                                entry.ocr.attempts += tries;
                                entry.ocr.error = None;
                                entry.ocr.updated_at = Some(now);
                            }
                        })
                        .await
                }
                PageOutcome::Failed {
                    page,
                    reason,
                    tries,
                } => {
                    tracing::warn!(book.id = %book_id, page, %reason, "page failed");
                    failed_pages += 1;
                    context.update_progress(|progress| progress.failed += 1);
                    writer
                        .push(move |manifest: &mut Manifest| {
                            if let Some(entry) = manifest.page_mut(page) {
                                entry.ocr.status = OcrStatus::Failed;
                                entry.ocr.text = None;
                                entry.ocr.engine = Some(engine_name.clone());
                                entry.ocr.chars = None;
                                entry.ocr.attempts += tries;
                                entry.ocr.error = Some(reason.clone());
                                entry.ocr.updated_at = Some(now);
                            }
                        })
                        .await
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
                    record_durable(&context, &checkpoint).await;
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
            tracing::info!(book.id = %book_id, reason = ?context.cancel_reason(), done = checkpoint.done.len(), "ocr stopped");
            return Err(HandlerError::cancelled());
        }
        tracing::info!(book.id = %book_id, done = checkpoint.done.len(), failed = failed_pages, "ocr finished");
        Ok(())
    }
}

/// After a manifest write: the checkpoint and progress name the pages it made durable,
/// written at once.
async fn record_durable(context: &JobContext, checkpoint: &OcrCheckpoint) {
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

impl PageWork {
    /// One page: read, recognize with retries, write the text.
    async fn run(self, page: u32, image: String) -> PageOutcome {
        let image_key = layout::book_key(&self.book_id, &image);
        let png = match self.store.get(&image_key).await {
            Ok(blob) => blob.bytes,
            Err(BlobError::NotFound { .. }) => {
                return PageOutcome::Failed {
                    page,
                    reason: format!("page_image_missing: no page image at {image_key}"),
                    tries: 0,
                };
            }
            Err(error) => return PageOutcome::Fatal(storage_error(&error)),
        };
        let (text, tries) = match self.recognize(page, png).await {
            Ok(recognized) => recognized,
            Err(outcome) => return outcome,
        };
        let text_key = layout::book_key(&self.book_id, &layout::ocr_text_path(page));
        let chars = text.chars().count() as u64;
        if let Err(error) = self
            .store
            .put(&text_key, Bytes::from(text), PutMode::Overwrite)
            .await
        {
            return PageOutcome::Fatal(storage_error(&error));
        }
        PageOutcome::Done { page, chars, tries }
    }

    /// Recognizes with retries; the text and the tries it took, or how the page ended.
    async fn recognize(&self, page: u32, png: Bytes) -> Result<(String, u32), PageOutcome> {
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match self
                .engine
                .recognize(
                    &PageImage {
                        page,
                        png: png.clone(),
                    },
                    &self.stop,
                )
                .await
            {
                Ok(text) => return Ok((text, tries)),
                Err(error) => error,
            };
            if error.affects_every_page() {
                let message = error_chain(&error);
                return Err(PageOutcome::Fatal(match error.kind() {
                    ErrorKind::Retryable { after: Some(after) } => {
                        HandlerError::retry_after(error.code(), message, after)
                    }
                    ErrorKind::Retryable { after: None } => {
                        HandlerError::retryable(error.code(), message)
                    }
                    _ => HandlerError::terminal(error.code(), message),
                }));
            }
            match error.kind() {
                ErrorKind::Cancelled => return Err(PageOutcome::Abandoned),
                ErrorKind::Retryable { after } if tries < self.retry.max_tries => {
                    let delay = self.retry.delay(tries, after);
                    tracing::info!(book.id = %self.book_id, page, tries, ?delay, error = %error_chain(&error), "page recognition failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Err(PageOutcome::Abandoned),
                    }
                }
                _ => {
                    return Err(PageOutcome::Failed {
                        page,
                        reason: format!("{}: {}", error.code(), error_chain(&error)),
                        tries,
                    });
                }
            }
        }
    }
}

fn storage_error(error: &BlobError) -> HandlerError {
    match error {
        BlobError::InvalidKey { .. } | BlobError::InvalidUrl { .. } => {
            HandlerError::terminal("storage", error_chain(error))
        }
        _ => HandlerError::retryable("storage", error_chain(error)),
    }
}

fn books_error(error: BooksError) -> HandlerError {
    let message = error_chain(&error);
    match error {
        BooksError::BookNotFound { .. } => HandlerError::terminal("book_not_found", message),
        BooksError::CorruptManifest { .. } | BooksError::UnsupportedSchema { .. } => {
            HandlerError::terminal("manifest", message)
        }
        _ => HandlerError::retryable("storage", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_through_never_passes_a_page_that_is_not_done() {
        let checkpoint = OcrCheckpoint {
            pages: vec![1, 2, 3, 4, 5],
            done: vec![1, 2, 4, 5],
        };
        assert_eq!(checkpoint.done_through(), Some(2));
        assert_eq!(checkpoint.remaining(), vec![3]);
        let none = OcrCheckpoint {
            pages: vec![1, 2],
            done: vec![2],
        };
        assert_eq!(none.done_through(), None);
    }

    #[test]
    fn page_retry_delays_grow_and_honour_retry_after_within_the_cap() {
        let policy = PageRetryPolicy {
            max_tries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let first = policy.delay(1, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
        let third = policy.delay(3, None);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(600));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn payloads_name_pages_or_nothing() {
        let all: OcrPayload = serde_json::from_str("{}").unwrap();
        assert_eq!(all.pages, None);
        let some: OcrPayload = serde_json::from_str(r#"{"pages": [3, 7]}"#).unwrap();
        assert_eq!(some.pages, Some(vec![3, 7]));
        assert_eq!(serde_json::to_string(&all).unwrap(), "{}");
    }
}
