//! The `guidelines` job (SPEC 4.3) and the `finalize` job (SPEC 4.4).
//!
//! `guidelines` runs on the page-job engine of `page-jobs`, one page at a time in page
//! order (each page continues the topic the one before ended in), and a page that still
//! fails after its tries fails the job ([`OnPageFailure::FailJob`]): its checkpoint then
//! ends at the page before, so resume starts at the failed page and never extracts the
//! earlier pages again. `finalize` reads every page's guidelines, merges them
//! ([`crate::finalize`]) and writes `final.json` and `final.md`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use blob_store::{BlobError, BlobStore, PutMode};
use books::{BookId, Books, GuidelinesStatus, Manifest, ManifestChange, OcrStatus, layout};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jobs_core::runtime::{HandlerError, JobContext, JobHandler, error_chain};
use page_jobs::{
    OnPageFailure, PageCheckpoint, PageError, PageJobConfig, PageRetryPolicy, PageWork, book_of,
    books_error, run_pages, storage_error,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Extractor, FinalGuidelines, NearbyPage, PageGuidelines, PageInput, finalize, running_lines,
};

/// The job type of guidelines extraction.
pub const GUIDELINES_JOB_TYPE: &str = "guidelines";
/// The job type of finalization.
pub const FINALIZE_JOB_TYPE: &str = "finalize";

/// Storage reads in flight at once when a job reads many small files.
const READ_CONCURRENCY: usize = 16;

/// The error code of a `guidelines` job started before every page's OCR is done.
pub const OCR_INCOMPLETE: &str = "ocr_incomplete";
/// The error code of a `finalize` job started before every page has its guidelines.
pub const GUIDELINES_INCOMPLETE: &str = "guidelines_incomplete";

/// The pages of `manifest` whose OCR is not `done`: a `guidelines` job needs none.
pub fn pages_without_ocr(manifest: &Manifest) -> Vec<u32> {
    manifest
        .pages
        .iter()
        .filter(|page| page.ocr.status != OcrStatus::Done)
        .map(|page| page.page)
        .collect()
}

/// The pages of the book without their guidelines file: a `finalize` job needs none.
pub async fn pages_without_guidelines(
    books: &Books,
    manifest: &Manifest,
) -> Result<Vec<u32>, BlobError> {
    let prefix = layout::book_key(&manifest.book_id, layout::PAGE_GUIDELINES_DIR);
    let stored: HashSet<String> = books
        .store()
        .list(&prefix)
        .await?
        .into_iter()
        .map(|entry| entry.key)
        .collect();
    Ok(manifest
        .pages
        .iter()
        .map(|page| page.page)
        .filter(|page| {
            !stored.contains(&layout::book_key(
                &manifest.book_id,
                &layout::page_guidelines_path(*page),
            ))
        })
        .collect())
}

fn page_list(pages: &[u32]) -> String {
    pages
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How `guidelines` jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuidelinesConfig {
    /// Extracted pages per manifest write (default 5).
    pub manifest_flush_every: usize,
    /// Tries of one page.
    pub retry: PageRetryPolicy,
}

impl Default for GuidelinesConfig {
    fn default() -> Self {
        Self {
            manifest_flush_every: 5,
            retry: PageRetryPolicy::default(),
        }
    }
}

/// Runs `guidelines` jobs on the books of one blob store with one extractor.
#[derive(Debug, Clone)]
pub struct GuidelinesHandler {
    books: Books,
    extractor: Arc<dyn Extractor>,
    config: GuidelinesConfig,
}

impl GuidelinesHandler {
    pub fn new(books: Books, extractor: Arc<dyn Extractor>, config: GuidelinesConfig) -> Self {
        Self {
            books,
            extractor,
            config,
        }
    }

    pub fn extractor(&self) -> &Arc<dyn Extractor> {
        &self.extractor
    }

    /// The work of the job's pages: their OCR text, the running lines and the topic to
    /// continue from.
    async fn page_work(
        &self,
        book_id: &BookId,
        checkpoint: &PageCheckpoint,
    ) -> Result<Arc<GuidelinesWork>, HandlerError> {
        let store = self.books.store();
        let texts = read_texts(store, book_id, &checkpoint.pages).await?;
        let running = Arc::new(running_lines(texts.values().map(|text| &**text)));
        let previous_topic = match checkpoint.remaining().first() {
            Some(first) => previous_topic(store, book_id, checkpoint, *first).await?,
            None => None,
        };
        Ok(Arc::new(GuidelinesWork {
            store: store.clone(),
            book_id: book_id.clone(),
            extractor: self.extractor.clone(),
            position: checkpoint
                .pages
                .iter()
                .enumerate()
                .map(|(index, page)| (*page, index as u32 + 1))
                .collect(),
            pages: checkpoint.pages.clone(),
            texts,
            running_lines: running,
            previous_topic: Mutex::new(previous_topic),
        }))
    }

    /// Marks the book extracting, with the pages a resumed job already did.
    async fn start(
        &self,
        book_id: &BookId,
        checkpoint: &PageCheckpoint,
    ) -> Result<(), HandlerError> {
        let done_before = checkpoint.done.len() as u32;
        self.books
            .update(book_id, |manifest| {
                manifest.guidelines.status = GuidelinesStatus::Extracting;
                manifest.guidelines.pages_done = done_before;
                manifest.guidelines.final_path = None;
            })
            .await
            .map_err(books_error)?;
        tracing::info!(book.id = %book_id, pages = checkpoint.pages.len(), remaining = checkpoint.remaining().len(), extractor = self.extractor.name(), "guidelines started");
        Ok(())
    }

    /// One page at a time, in order: each page continues the topic of the one before.
    fn page_job_config(&self) -> PageJobConfig {
        PageJobConfig {
            concurrency: 1,
            manifest_flush_every: self.config.manifest_flush_every,
            retry: self.config.retry,
            on_failure: OnPageFailure::FailJob,
            storage_wait: page_jobs::DEFAULT_STORAGE_WAIT,
            makes_pages: false,
        }
    }

    /// Marks the book extracted.
    async fn finish(&self, book_id: &BookId, pages_done: u32) -> Result<(), HandlerError> {
        self.books
            .update(book_id, |manifest| {
                manifest.guidelines.status = GuidelinesStatus::Extracted;
                manifest.guidelines.pages_done = pages_done;
            })
            .await
            .map_err(books_error)?;
        tracing::info!(book.id = %book_id, pages = pages_done, "guidelines extracted");
        Ok(())
    }
}

/// Fails unless every page of the book has its OCR done (and there is a page).
fn check_ocr_done(book_id: &BookId, manifest: &Manifest) -> Result<(), HandlerError> {
    let not_done = pages_without_ocr(manifest);
    if !not_done.is_empty() {
        return Err(HandlerError::terminal(
            OCR_INCOMPLETE,
            format!("OCR is not done for page {}", page_list(&not_done)),
        ));
    }
    if manifest.pages.is_empty() {
        return Err(HandlerError::terminal(
            OCR_INCOMPLETE,
            format!("book {book_id} has no pages"),
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl JobHandler for GuidelinesHandler {
    fn job_type(&self) -> &str {
        GUIDELINES_JOB_TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let book_id = book_of(&context)?;
        let manifest = self.books.manifest(&book_id).await.map_err(books_error)?;
        check_ocr_done(&book_id, &manifest)?;
        let checkpoint = match context.checkpoint::<PageCheckpoint>()? {
            Some(checkpoint) => checkpoint,
            None => PageCheckpoint::new(manifest.pages.iter().map(|page| page.page).collect()),
        };
        let work = self.page_work(&book_id, &checkpoint).await?;
        self.start(&book_id, &checkpoint).await?;
        let config = self.page_job_config();
        let summary = run_pages(
            &context,
            &self.books,
            &book_id,
            &manifest,
            checkpoint,
            work,
            &config,
        )
        .await?;
        self.finish(&book_id, summary.checkpoint.done.len() as u32)
            .await
    }
}

/// The OCR text of `pages`, read a few at a time.
async fn read_texts(
    store: &Arc<dyn BlobStore>,
    book_id: &BookId,
    pages: &[u32],
) -> Result<HashMap<u32, Arc<str>>, HandlerError> {
    futures::stream::iter(pages.iter().copied())
        .map(|page| async move {
            let key = layout::book_key(book_id, &layout::ocr_text_path(page));
            match store.get(&key).await {
                Ok(blob) => Ok((page, Arc::from(String::from_utf8_lossy(&blob.bytes)))),
                Err(BlobError::NotFound { .. }) => Err(HandlerError::terminal(
                    OCR_INCOMPLETE,
                    format!("page {page} has no OCR text at {key}"),
                )),
                Err(error) => Err(storage_error(&error)),
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// The topic the page before `first` ended in, from its stored guidelines (a resumed run).
async fn previous_topic(
    store: &Arc<dyn BlobStore>,
    book_id: &BookId,
    checkpoint: &PageCheckpoint,
    first: u32,
) -> Result<Option<String>, HandlerError> {
    let Some(index) = checkpoint.pages.iter().position(|page| *page == first) else {
        return Ok(None);
    };
    let Some(before) = index.checked_sub(1).map(|index| checkpoint.pages[index]) else {
        return Ok(None);
    };
    let key = layout::book_key(book_id, &layout::page_guidelines_path(before));
    match store.get(&key).await {
        Ok(blob) => {
            let page: PageGuidelines = serde_json::from_slice(&blob.bytes).map_err(|error| {
                HandlerError::terminal("guidelines_corrupt", format!("{key}: {error}"))
            })?;
            Ok(page.topics.last().map(|topic| topic.title.clone()))
        }
        Err(BlobError::NotFound { .. }) => Ok(None),
        Err(error) => Err(storage_error(&error)),
    }
}

/// One page of a `guidelines` job: extract, write `guidelines/pages/NNNN.json`.
struct GuidelinesWork {
    store: Arc<dyn BlobStore>,
    book_id: BookId,
    extractor: Arc<dyn Extractor>,
    /// Each page's 1-based position in the job: its `pages_done` once extracted.
    position: HashMap<u32, u32>,
    /// The job's pages in book order (a page's neighbours are the pages before and after).
    pages: Vec<u32>,
    texts: HashMap<u32, Arc<str>>,
    running_lines: Arc<HashSet<String>>,
    /// The topic the last extracted page ended in (pages run one at a time, in order).
    previous_topic: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl PageWork for GuidelinesWork {
    type Done = ();

    async fn run(&self, page: u32, stop: &CancellationToken) -> Result<(), PageError> {
        let nearby = |page: u32| {
            let text = self.texts.get(&page)?.clone();
            Some(NearbyPage { page, text })
        };
        // `position` is 1-based: the page before is at `position - 2`.
        let at = self
            .position
            .get(&page)
            .map_or(0, |position| *position as usize);
        let input = PageInput {
            page,
            text: self
                .texts
                .get(&page)
                .map(|text| text.to_string())
                .unwrap_or_default(),
            previous_topic: self.previous_topic.lock().expect("topic mutex").clone(),
            running_lines: self.running_lines.clone(),
            previous_page: at
                .checked_sub(2)
                .and_then(|index| nearby(self.pages[index])),
            next_page: self.pages.get(at).and_then(|next| nearby(*next)),
        };
        let topics = self
            .extractor
            .extract(&input, stop)
            .await
            .map_err(|error| PageError::of_kind(error.kind(), error.code(), error_chain(&error)))?;
        let last_topic = topics.last().map(|topic| topic.title.clone());
        let document = PageGuidelines { page, topics };
        let mut json = serde_json::to_vec_pretty(&document)
            .unwrap_or_else(|error| unreachable!("guidelines always serialize: {error}"));
        json.push(b'\n');
        let key = layout::book_key(&self.book_id, &layout::page_guidelines_path(page));
        self.store
            .put(&key, Bytes::from(json), PutMode::Overwrite)
            .await
            .map_err(|error| PageError::storage(&error))?;
        if let Some(title) = last_topic {
            *self.previous_topic.lock().expect("topic mutex") = Some(title);
        }
        Ok(())
    }

    fn done_change(&self, page: u32, (): (), _tries: u32) -> ManifestChange {
        let position = self.position.get(&page).copied().unwrap_or_default();
        Box::new(move |manifest: &mut Manifest| {
            manifest.guidelines.status = GuidelinesStatus::Extracting;
            manifest.guidelines.pages_done = manifest.guidelines.pages_done.max(position);
        })
    }

    fn failed_change(&self, _page: u32, _reason: &str, _tries: u32) -> Option<ManifestChange> {
        // The job fails naming the page; the manifest keeps what was extracted.
        None
    }
}

/// Runs `finalize` jobs on the books of one blob store.
#[derive(Debug, Clone)]
pub struct FinalizeHandler {
    books: Books,
}

impl FinalizeHandler {
    pub fn new(books: Books) -> Self {
        Self { books }
    }

    /// Fails unless every page of the book has its guidelines (and there is a page).
    async fn check_guidelines_done(
        &self,
        book_id: &BookId,
        manifest: &Manifest,
    ) -> Result<(), HandlerError> {
        let missing = pages_without_guidelines(&self.books, manifest)
            .await
            .map_err(|error| storage_error(&error))?;
        if !missing.is_empty() || manifest.pages.is_empty() {
            return Err(HandlerError::terminal(
                GUIDELINES_INCOMPLETE,
                if missing.is_empty() {
                    format!("book {book_id} has no pages")
                } else {
                    format!("no guidelines for page {}", page_list(&missing))
                },
            ));
        }
        Ok(())
    }

    /// Every page's guidelines, in page order.
    async fn read_pages(
        &self,
        context: &JobContext,
        book_id: &BookId,
        manifest: &Manifest,
    ) -> Result<Vec<PageGuidelines>, HandlerError> {
        let total = manifest.pages.len() as u64;
        context.update_progress(|progress| {
            progress.total = Some(total);
            progress.completed = 0;
            progress.message = Some("reading page guidelines".into());
        });
        let mut pages = read_page_guidelines(self.books.store(), book_id, manifest).await?;
        pages.sort_by_key(|page| page.page);
        Ok(pages)
    }

    /// Writes `final.json` and `final.md`.
    async fn write_final(
        &self,
        book_id: &BookId,
        manifest: &Manifest,
        merged: &FinalGuidelines,
    ) -> Result<(), HandlerError> {
        let json = finalize::to_json(merged);
        let markdown = finalize::to_markdown(merged, &manifest.title);
        for (path, bytes) in [
            (layout::FINAL_JSON_PATH, json),
            (layout::FINAL_MARKDOWN_PATH, markdown.into_bytes()),
        ] {
            self.books
                .store()
                .put(
                    &layout::book_key(book_id, path),
                    Bytes::from(bytes),
                    PutMode::Overwrite,
                )
                .await
                .map_err(|error| storage_error(&error))?;
        }
        Ok(())
    }

    /// Marks the book final and reports the merged topics and guidelines.
    async fn finish(
        &self,
        context: &JobContext,
        book_id: &BookId,
        manifest: &Manifest,
        pages: &[PageGuidelines],
        merged: &FinalGuidelines,
    ) -> Result<(), HandlerError> {
        self.books
            .update(book_id, |manifest| {
                manifest.guidelines.status = GuidelinesStatus::Final;
                manifest.guidelines.final_path = Some(layout::FINAL_JSON_PATH.to_owned());
            })
            .await
            .map_err(books_error)?;
        let total = manifest.pages.len() as u64;
        let topics = merged.topics.len();
        let guidelines: usize = merged
            .topics
            .iter()
            .map(|topic| topic.guidelines.len())
            .sum();
        context.update_progress(|progress| {
            progress.completed = total;
            progress.last_completed_item = pages.last().map(|page| page.page.to_string());
            progress.message = Some(format!("{topics} topics, {guidelines} guidelines"));
        });
        tracing::info!(book.id = %book_id, topics, guidelines, "guidelines finalized");
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobHandler for FinalizeHandler {
    fn job_type(&self) -> &str {
        FINALIZE_JOB_TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let book_id = book_of(&context)?;
        let manifest = self.books.manifest(&book_id).await.map_err(books_error)?;
        self.check_guidelines_done(&book_id, &manifest).await?;
        let pages = self.read_pages(&context, &book_id, &manifest).await?;
        context.check_cancelled()?;
        let merged = finalize::merge(book_id.as_str(), &pages);
        self.write_final(&book_id, &manifest, &merged).await?;
        self.finish(&context, &book_id, &manifest, &pages, &merged)
            .await
    }
}

/// Every page's stored guidelines, a few reads at a time (in any order).
async fn read_page_guidelines(
    store: &Arc<dyn BlobStore>,
    book_id: &BookId,
    manifest: &Manifest,
) -> Result<Vec<PageGuidelines>, HandlerError> {
    let numbers: Vec<u32> = manifest.pages.iter().map(|page| page.page).collect();
    futures::stream::iter(numbers)
        .map(|page| async move {
            let key = layout::book_key(book_id, &layout::page_guidelines_path(page));
            let blob = store.get(&key).await.map_err(|error| match error {
                BlobError::NotFound { .. } => HandlerError::terminal(
                    GUIDELINES_INCOMPLETE,
                    format!("no guidelines for page {page}"),
                ),
                other => storage_error(&other),
            })?;
            let mut parsed: PageGuidelines =
                serde_json::from_slice(&blob.bytes).map_err(|error| {
                    HandlerError::terminal("guidelines_corrupt", format!("{key}: {error}"))
                })?;
            // The page is the file's, whatever its content says.
            parsed.page = page;
            Ok(parsed)
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
}
