//! [`OcrHandler`]: the bulk `ocr` job (SPEC 4.2), on the page-job engine of `page-jobs`.
//!
//! The page list comes from the checkpoint when the job was claimed before (or resumed),
//! else from the payload (`{"pages": [..]}`), else every page whose OCR is not `done`.
//! Each page: read the PNG, recognize, write the text; a failed page is recorded with its
//! reason and the job goes on ([`OnPageFailure::Record`]). The engine runs the pages
//! `concurrency` at a time, retries, batches the manifest and keeps the checkpoint behind
//! it. Errors that would hit every page (storage down, book deleted, engine missing) stop
//! the job as a whole; unavailable storage is first waited out for
//! [`OcrJobConfig::storage_wait`], around each storage call, so an outage redoes no
//! recognition.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use blob_store::{BlobError, BlobStore, PutMode};
use books::{BookId, Books, Manifest, ManifestChange, OcrStatus, layout};
use bytes::Bytes;
use jobs_core::runtime::{HandlerError, JobContext, JobHandler, error_chain};
use page_jobs::{
    OnPageFailure, PageCheckpoint, PageError, PageJobConfig, PageRetryPolicy, PageWork,
    books_error, is_storage_unavailable, ride_out_storage, run_pages,
};
use serde::{Deserialize, Serialize};
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

/// Checkpoint of an `ocr` job: the page-job checkpoint (`{pages, done}`).
pub type OcrCheckpoint = PageCheckpoint;

/// How `ocr` jobs run.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrJobConfig {
    /// Pages recognized at once within one job (default: number of CPUs).
    pub concurrency: usize,
    /// Finished pages per manifest write (default 5).
    pub manifest_flush_every: usize,
    /// Retries of one page.
    pub retry: PageRetryPolicy,
    /// How long unavailable storage is waited out before the job stops with
    /// `storage_unavailable` (default 60 s).
    pub storage_wait: std::time::Duration,
    /// Pages whose mean word confidence is under this (0-100, default 60) are marked
    /// `needs_review`.
    pub review_below: f64,
}

/// The default of [`OcrJobConfig::review_below`].
pub const DEFAULT_REVIEW_BELOW: f64 = 60.0;

impl Default for OcrJobConfig {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            manifest_flush_every: 5,
            retry: PageRetryPolicy::default(),
            storage_wait: page_jobs::DEFAULT_STORAGE_WAIT,
            review_below: DEFAULT_REVIEW_BELOW,
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

impl OcrHandler {
    pub fn new(books: Books, engine: Arc<dyn OcrEngine>, config: OcrJobConfig) -> Self {
        Self {
            books,
            engine,
            config,
        }
    }

    pub fn config(&self) -> &OcrJobConfig {
        &self.config
    }

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
        Ok(OcrCheckpoint::new(pages))
    }
}

#[async_trait::async_trait]
impl JobHandler for OcrHandler {
    fn job_type(&self) -> &str {
        OCR_JOB_TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let payload: OcrPayload = context.payload()?;
        let book_id = page_jobs::book_of(&context)?;
        let manifest = self.manifest(&context, &book_id).await?;
        let checkpoint = match context.checkpoint::<OcrCheckpoint>()? {
            Some(checkpoint) => checkpoint,
            None => Self::plan(&manifest, &payload)?,
        };
        // A language this worker cannot read fails every page alike: stop before the first.
        if let Err(error) = self
            .engine
            .check_language(manifest.language.as_deref())
            .await
        {
            return Err(HandlerError::terminal(error.code(), error_chain(&error)));
        }
        tracing::info!(book.id = %book_id, pages = checkpoint.pages.len(), remaining = checkpoint.remaining().len(), engine = self.engine.name(), language = manifest.language.as_deref().unwrap_or("(worker default)"), "ocr started");
        let config = PageJobConfig {
            concurrency: self.config.concurrency,
            manifest_flush_every: self.config.manifest_flush_every,
            retry: self.config.retry,
            on_failure: OnPageFailure::Record,
            storage_wait: self.config.storage_wait,
            makes_pages: false,
        };
        let (mut manifest, mut checkpoint) = (manifest, checkpoint);
        loop {
            let summary = run_pages(
                &context,
                &self.books,
                &book_id,
                &manifest,
                checkpoint,
                Arc::new(self.work(&book_id, &manifest)),
                &config,
            )
            .await?;
            // Pages an upload added while the job ran (its chain's ocr step joined this
            // job): a job for every page not done reads them too before it ends.
            let added: Vec<u32> = if payload.pages.is_some() {
                Vec::new()
            } else {
                manifest = self.manifest(&context, &book_id).await?;
                let planned: BTreeSet<u32> = summary.checkpoint.pages.iter().copied().collect();
                manifest
                    .pages
                    .iter()
                    .filter(|page| {
                        page.ocr.status == OcrStatus::Pending && !planned.contains(&page.page)
                    })
                    .map(|page| page.page)
                    .collect()
            };
            if added.is_empty() {
                tracing::info!(book.id = %book_id, done = summary.checkpoint.done.len(), failed = summary.failed.len(), "ocr finished");
                return Ok(());
            }
            tracing::info!(book.id = %book_id, pages = added.len(), "ocr continues with pages added meanwhile");
            checkpoint = summary.checkpoint;
            checkpoint.pages.extend(added);
        }
    }
}

impl OcrHandler {
    /// The book's manifest, unavailable storage waited out.
    async fn manifest(
        &self,
        context: &JobContext,
        book_id: &BookId,
    ) -> Result<Manifest, HandlerError> {
        ride_out_storage(
            self.config.storage_wait,
            &context.cancellation_token(),
            is_storage_unavailable,
            || self.books.manifest(book_id),
        )
        .await
        .map_err(books_error)
    }

    /// One page's work for the pages of `manifest`.
    fn work(&self, book_id: &BookId, manifest: &Manifest) -> OcrWork {
        OcrWork {
            books: self.books.clone(),
            store: self.books.store().clone(),
            engine: self.engine.clone(),
            book_id: book_id.clone(),
            storage_wait: self.config.storage_wait,
            language: manifest.language.clone(),
            review_below: self.config.review_below,
            images: manifest
                .pages
                .iter()
                .map(|page| (page.page, page.image.clone()))
                .collect(),
        }
    }
}

/// One page of an `ocr` job: read the PNG, recognize, write the text.
struct OcrWork {
    books: Books,
    store: Arc<dyn BlobStore>,
    engine: Arc<dyn OcrEngine>,
    book_id: BookId,
    storage_wait: std::time::Duration,
    language: Option<String>,
    review_below: f64,
    images: HashMap<u32, String>,
}

/// What one page's work recorded.
#[derive(Debug, Clone)]
struct PageDone {
    chars: u64,
    hocr: bool,
    confidence: Option<f64>,
    words: Option<u64>,
    needs_review: bool,
    rotation: Option<u16>,
}

#[async_trait::async_trait]
impl PageWork for OcrWork {
    /// Characters recognized and the quality signals.
    type Done = PageDone;

    async fn run(&self, page: u32, stop: &CancellationToken) -> Result<PageDone, PageError> {
        let image = self
            .images
            .get(&page)
            .cloned()
            .unwrap_or_else(|| layout::page_image_path(page));
        let image_key = layout::book_key(&self.book_id, &image);
        let read = ride_out_storage(self.storage_wait, stop, BlobError::is_transient, || {
            self.store.get(&image_key)
        });
        let png = match read.await {
            Ok(blob) => blob.bytes,
            Err(BlobError::NotFound { .. }) => {
                return Err(PageError::Failed {
                    code: "page_image_missing".into(),
                    message: format!("no page image at {image_key}"),
                });
            }
            Err(error) => return Err(PageError::storage(&error)),
        };
        let image = PageImage {
            page,
            png,
            language: self.language.clone(),
        };
        let recognized = match self.engine.recognize_page(&image, stop).await {
            Ok(recognized) => recognized,
            Err(error) => {
                let message = error_chain(&error);
                if error.affects_every_page() {
                    let fatal = match error.kind() {
                        jobs_core::runtime::ErrorKind::Retryable { after: Some(after) } => {
                            HandlerError::retry_after(error.code(), message, after)
                        }
                        jobs_core::runtime::ErrorKind::Retryable { after: None } => {
                            HandlerError::retryable(error.code(), message)
                        }
                        _ => HandlerError::terminal(error.code(), message),
                    };
                    return Err(PageError::Fatal(fatal));
                }
                return Err(PageError::of_kind(error.kind(), error.code(), message));
            }
        };
        let needs_review = recognized.needs_review(self.review_below);
        let done = PageDone {
            chars: recognized.text.chars().count() as u64,
            hocr: recognized.hocr.is_some(),
            confidence: recognized.confidence,
            words: recognized.words,
            needs_review,
            rotation: recognized.rotation,
        };
        // The hOCR first: a page whose text is stored always has its hOCR beside it.
        let mut outputs = Vec::with_capacity(2);
        if let Some(hocr) = recognized.hocr {
            outputs.push((layout::ocr_hocr_path(page), Bytes::from(hocr)));
        }
        outputs.push((layout::ocr_text_path(page), Bytes::from(recognized.text)));
        for (path, bytes) in outputs {
            let key = layout::book_key(&self.book_id, &path);
            ride_out_storage(self.storage_wait, stop, BlobError::is_transient, || {
                self.store.put(&key, bytes.clone(), PutMode::Overwrite)
            })
            .await
            .map_err(|error| PageError::storage(&error))?;
        }
        Ok(done)
    }

    fn done_change(&self, page: u32, done: PageDone, tries: u32) -> ManifestChange {
        let engine = self.engine.name().to_owned();
        let now = self.books.now();
        Box::new(move |manifest: &mut Manifest| {
            if let Some(entry) = manifest.page_mut(page) {
                entry.ocr.status = OcrStatus::Done;
                entry.ocr.text = Some(layout::ocr_text_path(page));
                entry.ocr.engine = Some(engine.clone());
                entry.ocr.chars = Some(done.chars);
                entry.ocr.attempts += tries;
                entry.ocr.error = None;
                entry.ocr.updated_at = Some(now);
                entry.ocr.hocr = done.hocr.then(|| layout::ocr_hocr_path(page));
                entry.ocr.confidence = done.confidence;
                entry.ocr.words = done.words;
                entry.ocr.needs_review = done.needs_review;
                entry.ocr.rotation = done.rotation;
            }
        })
    }

    fn failed_change(&self, page: u32, reason: &str, tries: u32) -> Option<ManifestChange> {
        let engine = self.engine.name().to_owned();
        let reason = reason.to_owned();
        let now = self.books.now();
        Some(Box::new(move |manifest: &mut Manifest| {
            if let Some(entry) = manifest.page_mut(page) {
                entry.ocr.status = OcrStatus::Failed;
                entry.ocr.text = None;
                entry.ocr.engine = Some(engine.clone());
                entry.ocr.chars = None;
                entry.ocr.attempts += tries;
                entry.ocr.error = Some(reason.clone());
                entry.ocr.updated_at = Some(now);
                entry.ocr.hocr = None;
                entry.ocr.confidence = None;
                entry.ocr.words = None;
                entry.ocr.needs_review = false;
                entry.ocr.rotation = None;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_pages_or_nothing() {
        let all: OcrPayload = serde_json::from_str("{}").unwrap();
        assert_eq!(all.pages, None);
        let some: OcrPayload = serde_json::from_str(r#"{"pages": [3, 7]}"#).unwrap();
        assert_eq!(some.pages, Some(vec![3, 7]));
        assert_eq!(serde_json::to_string(&all).unwrap(), "{}");
    }
}
