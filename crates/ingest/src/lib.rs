//! The `ingest` job (issue 24): the first step of every upload's chain. An upload's files
//! were checked and stored as they came, and its page numbers fixed, by
//! [`books::Books::stage_upload`]; this job makes the pages from them on the page-job
//! engine of `page-jobs`:
//! - the page list is the upload's page numbers (from the checkpoint once it ran);
//! - each stored file with pages still to make is copied to the job's local folder once
//!   per run (a PDF is read by `pdfinfo` there);
//! - each page is made by [`books::Books::make_page`] (a PDF page rendered by `pdftoppm`,
//!   an image converted, each with its preview and a PDF page's text layer) and stored at
//!   its fixed number, overwriting an earlier try, then added to the manifest (batched);
//!   so pages appear in the book as they are made, and a page made twice is the same page;
//! - a page that cannot be made (a broken page stream) fails the job naming the file and
//!   the page ([`OnPageFailure::FailJob`]); the pages made stay and a resume goes on from
//!   there;
//! - when every page is made, the upload's stored files are deleted (kept with
//!   [`IngestJobConfig::keep_originals`]).
//!
//! Architecture Invariant: this crate knows only jobs-core, page-jobs, books and the
//! `BlobStore` trait.

mod sweep;

pub use sweep::{SweepError, SweepReport, Sweeper};

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blob_store::BlobError;
use books::{
    BookId, Books, IngestError, IngestLimits, Manifest, ManifestChange, Page, PageSource,
    TextLayers, Upload, layout,
};
use jobs_core::runtime::{HandlerError, JobContext, JobHandler, error_chain};
use page_jobs::{
    OnPageFailure, PageCheckpoint, PageError, PageJobConfig, PageRetryPolicy, PageWork,
    books_error, is_storage_unavailable, ride_out_storage, run_pages,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The job type.
pub const INGEST_JOB_TYPE: &str = "ingest";

/// Payload of an `ingest` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestPayload {
    /// The upload: its stored files and their page numbers.
    pub upload: Upload,
    /// Whether PDF text layers become the pages' text (`keep`) or every page is left for
    /// OCR (`ignore`, the api's `?ocr=force`).
    #[serde(default)]
    pub text_layers: TextLayersChoice,
}

/// [`TextLayers`] as a payload spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextLayersChoice {
    #[default]
    Keep,
    Ignore,
}

impl From<TextLayersChoice> for TextLayers {
    fn from(choice: TextLayersChoice) -> Self {
        match choice {
            TextLayersChoice::Keep => Self::Keep,
            TextLayersChoice::Ignore => Self::Ignore,
        }
    }
}

/// How `ingest` jobs run.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestJobConfig {
    /// Pages made at once (default: number of CPUs).
    pub concurrency: usize,
    /// Pages per manifest write (default 5).
    pub manifest_flush_every: usize,
    /// Tries of one page.
    pub retry: PageRetryPolicy,
    /// How long unavailable storage is waited out.
    pub storage_wait: Duration,
    /// The limits a page is made under (dimensions, decoding, the PDF tools' time).
    pub limits: IngestLimits,
    /// Keep the upload's stored files after the ingest (default: deleted).
    pub keep_originals: bool,
    /// The local folder a job's `folio-ingest-*` folder is made in (the system's temp
    /// folder by default).
    pub local_dir: PathBuf,
}

impl Default for IngestJobConfig {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            manifest_flush_every: 5,
            retry: PageRetryPolicy::default(),
            storage_wait: page_jobs::DEFAULT_STORAGE_WAIT,
            limits: IngestLimits::default(),
            keep_originals: false,
            local_dir: std::env::temp_dir(),
        }
    }
}

/// Runs `ingest` jobs on the books of one blob store.
#[derive(Debug, Clone)]
pub struct IngestHandler {
    books: Books,
    config: IngestJobConfig,
}

impl IngestHandler {
    pub fn new(books: Books, config: IngestJobConfig) -> Self {
        Self { books, config }
    }
}

#[async_trait::async_trait]
impl JobHandler for IngestHandler {
    fn job_type(&self) -> &str {
        INGEST_JOB_TYPE
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let payload: IngestPayload = context.payload()?;
        let book_id = page_jobs::book_of(&context)?;
        let cancel = context.cancellation_token();
        let manifest = ride_out_storage(
            self.config.storage_wait,
            &cancel,
            is_storage_unavailable,
            || self.books.manifest(&book_id),
        )
        .await
        .map_err(books_error)?;
        let checkpoint = match context.checkpoint::<PageCheckpoint>()? {
            Some(checkpoint) => checkpoint,
            None => PageCheckpoint::new(payload.upload.pages()),
        };
        let work_dir = tempfile::Builder::new()
            .prefix("folio-ingest-")
            .tempdir_in(&self.config.local_dir)
            .map_err(|error| {
                HandlerError::retryable("local", format!("creating the job's folder: {error}"))
            })?;
        let remaining: BTreeSet<u32> = checkpoint.remaining().into_iter().collect();
        tracing::info!(book.id = %book_id, upload = %payload.upload.id, pages = checkpoint.pages.len(), remaining = remaining.len(), "ingest started");
        let sources = self
            .open_sources(&book_id, &payload, &remaining, &work_dir, &cancel)
            .await?;
        let work = Arc::new(IngestWork {
            books: self.books.clone(),
            book_id: book_id.clone(),
            upload: payload.upload.clone(),
            sources,
            work_dir: work_dir.path().to_path_buf(),
        });
        let config = PageJobConfig {
            concurrency: self.config.concurrency,
            manifest_flush_every: self.config.manifest_flush_every,
            retry: self.config.retry,
            on_failure: OnPageFailure::FailJob,
            storage_wait: self.config.storage_wait,
            makes_pages: true,
        };
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
        if !self.config.keep_originals {
            self.books.delete_upload(&book_id, &payload.upload).await;
        }
        tracing::info!(book.id = %book_id, upload = %payload.upload.id, done = summary.checkpoint.done.len(), "ingest finished");
        Ok(())
    }
}

impl IngestHandler {
    /// Copies each stored file with a page in `remaining` to `work_dir` and opens it.
    async fn open_sources(
        &self,
        book_id: &BookId,
        payload: &IngestPayload,
        remaining: &BTreeSet<u32>,
        work_dir: &tempfile::TempDir,
        cancel: &CancellationToken,
    ) -> Result<HashMap<u32, Arc<PageSource>>, HandlerError> {
        let upload = &payload.upload;
        let text_layers = payload.text_layers.into();
        let mut sources = HashMap::new();
        for file in &upload.files {
            if !(file.first_page..file.first_page + file.pages)
                .any(|page| remaining.contains(&page))
            {
                continue;
            }
            let key = layout::book_key(book_id, &upload.file_path(file.index));
            let path = work_dir.path().join(format!("upload-{:04}", file.index));
            let copied = ride_out_storage(
                self.config.storage_wait,
                cancel,
                BlobError::is_transient,
                || self.books.store().get_to_file(&key, &path),
            )
            .await;
            match copied {
                Ok(_) => {}
                Err(error) if error.is_not_found() => {
                    return Err(HandlerError::terminal(
                        "upload_missing",
                        format!(
                            "file {} of upload {} ({}) is no longer stored at {key}",
                            file.index + 1,
                            upload.id,
                            file.name
                        ),
                    ));
                }
                Err(error) => return Err(page_jobs::storage_error(&error)),
            }
            let source = self
                .books
                .open_source(file.clone(), path, &self.config.limits, text_layers)
                .await
                .map_err(ingest_error)?
                .map_err(|rejection| {
                    HandlerError::terminal(
                        rejection.code(),
                        format!("file {} ({}): {rejection}", file.index + 1, file.name),
                    )
                })?;
            sources.insert(file.index, Arc::new(source));
        }
        Ok(sources)
    }
}

/// A server-side failure while making pages: storage as page-jobs classifies it, anything
/// local (the job's folder, a PDF tool that cannot start) retryable.
fn ingest_error(error: IngestError) -> HandlerError {
    match error {
        IngestError::Books(error) => books_error(error),
        IngestError::PdfToolsMissing { reason } => {
            HandlerError::terminal("pdf_tools_missing", reason)
        }
        other => HandlerError::retryable("local", error_chain(&other)),
    }
}

/// One page of an `ingest` job.
struct IngestWork {
    books: Books,
    book_id: BookId,
    upload: Upload,
    sources: HashMap<u32, Arc<PageSource>>,
    work_dir: PathBuf,
}

#[async_trait::async_trait]
impl PageWork for IngestWork {
    type Done = Page;

    async fn run(&self, page: u32, _stop: &CancellationToken) -> Result<Page, PageError> {
        let Some((file, index)) = self.upload.locate(page) else {
            return Err(PageError::Failed {
                code: "page_not_in_upload".into(),
                message: format!("upload {} makes no page {page}", self.upload.id),
            });
        };
        let Some(source) = self.sources.get(&file.index) else {
            return Err(PageError::Fatal(HandlerError::terminal(
                "upload_missing",
                format!(
                    "file {} of upload {} was not opened",
                    file.index + 1,
                    self.upload.id
                ),
            )));
        };
        let made = self
            .books
            .make_page(&self.book_id, source, index, page, &self.work_dir)
            .await;
        match made {
            Ok(Ok(entry)) => Ok(entry),
            Ok(Err(rejection)) => Err(PageError::Failed {
                code: rejection.code().into(),
                message: format!(
                    "file {} ({}), page {} of the file: {rejection}",
                    file.index + 1,
                    file.name,
                    index + 1
                ),
            }),
            Err(IngestError::Books(error)) if error.is_transient() => Err(PageError::Retryable {
                code: page_jobs::STORAGE_UNAVAILABLE.into(),
                message: error_chain(&error),
                after: None,
            }),
            Err(error) => Err(PageError::Fatal(ingest_error(error))),
        }
    }

    fn done_change(&self, _page: u32, done: Page, _tries: u32) -> ManifestChange {
        Box::new(move |manifest: &mut Manifest| manifest.upsert_page(done.clone()))
    }

    fn failed_change(&self, _page: u32, _reason: &str, _tries: u32) -> Option<ManifestChange> {
        None
    }
}
