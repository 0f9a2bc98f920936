//! Page ingestion (SPEC 4.1, 4.6): validate, decode under limits, convert to PNG, store,
//! and record in the manifest, all or nothing.
//!
//! Steps of [`Books::ingest_pages`]:
//! 1. Request limits (file count, total bytes), then every file is inspected, a few at a
//!    time: the name must be a plain file name; the format is sniffed from the content
//!    (never the name). An image's dimensions are read from its header before any pixel
//!    is decoded. A PDF is written to the request's staging folder (a local temp dir) and
//!    `pdfinfo` gives its page count, page sizes and encryption (see [`crate::pdf`]).
//! 2. If any file is rejected, the error lists every bad file with its reason and nothing
//!    has been decoded or rendered.
//! 3. Each image, and each PDF page, is converted a few at a time, each reserving its
//!    memory from the process's [`DecodeBudget`] first. Images are decoded under dimension
//!    and allocation limits and re-encoded as PNG on a blocking thread (a JPEG without its
//!    end-of-image marker is refused as truncated: the decoder would pad it). A PDF page is
//!    rendered by `pdftoppm` into the staging folder, and with [`TextLayers::Keep`] its
//!    text layer, if it has one, is staged beside it: only file names and hashes stay in
//!    memory, so a PDF of a thousand pages takes no more memory than a few pages. A page
//!    that fails rejects its file (the file's remaining pages are skipped) and, again,
//!    the request, with nothing stored.
//! 4. Page numbers are reserved in the manifest (`next_page`, one conditional write), the
//!    PNGs (and text layers) are stored at those numbers, then the pages are added to the
//!    manifest (a second conditional write); a page with a text layer is added with its
//!    OCR done by engine `pdf-text`. A failure after the reservation deletes what was
//!    stored; the reserved numbers stay unused. The staging folder goes with the request.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blob_store::PutMode;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, error::LimitErrorKind,
};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::catalog::storage;
use crate::pdf::{self, PDF_TEXT_ENGINE, PdfPage, PdfTools};
use crate::{BookId, Books, BooksError, OcrStatus, Page, layout};

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    /// The client's file name (metadata only: the format is sniffed from the content).
    pub name: String,
    pub bytes: Bytes,
}

/// Limits of one ingestion request (defaults from SPEC 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Widest accepted image, in pixels (12000).
    pub max_width: u32,
    /// Tallest accepted image, in pixels (12000).
    pub max_height: u32,
    /// Largest accepted image file (100 MiB).
    pub max_file_bytes: u64,
    /// Most files in one request (300).
    pub max_files: usize,
    /// Largest request, all files together (2 GiB).
    pub max_request_bytes: u64,
    /// Largest allocation a decoder may make for one image (1 GiB).
    pub max_decode_alloc_bytes: u64,
    /// Files decoded, or PDF pages rendered, at once (default: number of CPUs).
    pub decode_concurrency: usize,
    /// Largest accepted PDF (1 GiB: a scanned book is far larger than one page image).
    pub max_pdf_bytes: u64,
    /// Most pages of one PDF (1,000).
    pub max_pdf_pages: u32,
    /// Most pages of one book (5,000): an upload that would pass it is refused.
    pub max_book_pages: u32,
    /// Longest run of one PDF tool (reading a PDF's pages, rendering a page, reading its
    /// text); a PDF whose page takes longer is refused (60 s).
    pub pdf_timeout: Duration,
    /// Most memory one PDF tool may allocate (see [`crate::child`]); a page that needs more
    /// fails to render (2 GiB; unlimited when `None`).
    pub tool_memory_limit: Option<u64>,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_width: 12_000,
            max_height: 12_000,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 300,
            max_request_bytes: 2 * 1024 * 1024 * 1024,
            max_decode_alloc_bytes: 1024 * 1024 * 1024,
            decode_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            max_pdf_bytes: 1024 * 1024 * 1024,
            max_pdf_pages: 1_000,
            max_book_pages: 5_000,
            pdf_timeout: Duration::from_secs(60),
            tool_memory_limit: Some(crate::child::DEFAULT_MEMORY_LIMIT),
        }
    }
}

/// Why one file was rejected. [`FileRejection::code`] gives a stable code for APIs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileRejection {
    /// Not PNG, JPEG, WebP, TIFF, BMP, GIF or PDF (judged by content).
    #[error("unsupported format (accepted: png, jpeg, webp, tiff, bmp, gif, pdf)")]
    UnsupportedFormat,
    /// Recognized but undecodable (truncated, damaged): an image, or a PDF that poppler
    /// cannot open or whose page it cannot render.
    #[error("corrupt file: {detail}")]
    Corrupt {
        /// The decoder's diagnosis.
        detail: String,
    },
    /// Larger than the per-file byte limit, or needs more memory to decode than allowed.
    #[error("file too large: {bytes} bytes, limit {max}")]
    TooLarge {
        /// The file's size (or the decoder's allocation).
        bytes: u64,
        max: u64,
    },
    /// A file of 0 bytes.
    #[error("empty file")]
    Empty,
    /// A file name with a path separator or a control character (such as NUL), or longer
    /// than 255 bytes: the name is kept as the page's source, so it must be a plain name.
    #[error("invalid file name: {reason}")]
    InvalidName { reason: &'static str },
    /// Wider or taller than allowed (e.g. a decompression bomb).
    #[error("too many pixels: {width}x{height}, limit {max_width}x{max_height}")]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        max_width: u32,
        max_height: u32,
    },
    /// An encrypted PDF, with or without a password to open it: it must be decrypted
    /// first (`qpdf --decrypt`).
    #[error(
        "encrypted PDF: remove its encryption (e.g. `qpdf --decrypt --password=... in.pdf \
         out.pdf`) and upload it again"
    )]
    EncryptedPdf,
    /// A PDF with more pages than allowed.
    #[error("too many pages: {pages}, limit {max} per PDF")]
    TooManyPages { pages: u64, max: u32 },
    /// A PDF page larger than the pixel limit at 300 dpi (code `too_many_pixels`).
    #[error(
        "too many pixels: page {page} is {width}x{height} at 300 dpi, limit \
         {max_width}x{max_height}"
    )]
    PdfPageTooLarge {
        /// The page's number in the PDF, from 1.
        page: u32,
        /// Width at 300 dpi.
        width: u32,
        /// Height at 300 dpi.
        height: u32,
        max_width: u32,
        max_height: u32,
    },
    /// A PDF tool ran longer than `pdf_timeout` on the file (or on one of its pages).
    #[error("the PDF took too long to read{}: over {seconds}s", page.map(|page| format!(" at page {page}")).unwrap_or_default())]
    RenderTimeout {
        /// The page, when one page was being rendered or read.
        page: Option<u32>,
        /// The limit, in seconds.
        seconds: u64,
    },
}

impl FileRejection {
    /// A stable machine-readable code: `unsupported_format`, `corrupt`, `too_large`,
    /// `empty`, `invalid_name`, `too_many_pixels`, `encrypted_pdf`, `too_many_pages` or
    /// `render_timeout`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EncryptedPdf => "encrypted_pdf",
            Self::TooManyPages { .. } => "too_many_pages",
            Self::PdfPageTooLarge { .. } => "too_many_pixels",
            Self::RenderTimeout { .. } => "render_timeout",
            Self::UnsupportedFormat => "unsupported_format",
            Self::Empty => "empty",
            Self::InvalidName { .. } => "invalid_name",
            Self::Corrupt { .. } => "corrupt",
            Self::TooLarge { .. } => "too_large",
            Self::TooManyPixels { .. } => "too_many_pixels",
        }
    }
}

/// A rejected file of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedFile {
    /// Position in the request, from 0.
    pub index: usize,
    /// The client's file name.
    pub name: String,
    pub reason: FileRejection,
}

/// Why an ingestion request failed. Nothing is stored in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// One or more files are invalid; each is listed with its reason.
    #[error("{} of the uploaded files were rejected", rejected.len())]
    InvalidFiles {
        /// Every bad file, in request order.
        rejected: Vec<RejectedFile>,
    },
    /// The request has no file.
    #[error("no files were uploaded")]
    NoFiles,
    /// The book would have more pages than allowed.
    #[error("the book would have {pages} pages, limit {max}")]
    BookFull { pages: u64, max: u32 },
    /// The request has more files than allowed.
    #[error("too many files: {count}, limit {max}")]
    TooManyFiles { count: usize, max: usize },
    /// The files together are larger than allowed.
    #[error("request too large: {bytes} bytes, limit {max}")]
    RequestTooLarge { bytes: u64, max: u64 },
    /// The images of every request in flight already take the whole [`DecodeBudget`], and
    /// this one waited for it longer than the budget's `wait`. Nothing is stored; the
    /// request can be sent again.
    #[error("the server is busy decoding other uploads; waited {waited:?}")]
    Busy {
        /// How long the request waited.
        waited: Duration,
    },
    /// The book is missing, or the manifest or storage failed.
    #[error(transparent)]
    Books(#[from] BooksError),
    /// A PDF was uploaded and this server cannot read PDFs: poppler-utils is missing.
    /// Nothing is stored.
    #[error("the PDF tools are unavailable: {reason}")]
    PdfToolsMissing {
        /// What is missing, and what to install.
        reason: String,
    },
    /// The local staging folder (a temp dir) or a PDF tool's process failed.
    #[error("{what} failed")]
    Local {
        /// What was being done.
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How an upload treats the text layers of its PDF pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextLayers {
    /// A page with a text layer ([`pdf::text_layer`]) keeps it as its text: it is stored
    /// as the page's OCR text and the page is added with OCR done by engine `pdf-text`.
    #[default]
    Keep,
    /// Text layers are not read: every page is left for OCR (the API's `?ocr=force`).
    Ignore,
}

/// The memory that decoding uploaded images may take at once, shared by every request of
/// a process (clones share it). Each file reserves its estimated need (twice its decoded
/// size: the pixels and the PNG written from them) before it is decoded, and releases it
/// when its conversion ends; a file whose need is over the whole budget reserves all of
/// it and is decoded alone. A request that cannot reserve within `wait` fails with
/// [`IngestError::Busy`].
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    permits: Option<Arc<Semaphore>>,
    total_kib: u32,
    wait: Duration,
}

impl DecodeBudget {
    /// A budget of `bytes` (rounded down to KiB, at most 4 TiB); a reservation waits at
    /// most `wait`.
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            permits: Some(Arc::new(Semaphore::new(total_kib as usize))),
            total_kib,
            wait,
        }
    }

    /// No bound (the default of [`Books::new`]; a server sets one).
    pub fn unlimited() -> Self {
        Self {
            permits: None,
            total_kib: u32::MAX,
            wait: Duration::ZERO,
        }
    }

    /// The budget in bytes, `None` when unlimited.
    pub fn bytes(&self) -> Option<u64> {
        self.permits
            .as_ref()
            .map(|_| u64::from(self.total_kib) * 1024)
    }

    /// Reserves `bytes` (capped at the whole budget) for one decode, until the permit
    /// drops (`None` when unlimited); [`IngestError::Busy`] after waiting `wait`.
    pub async fn reserve(&self, bytes: u64) -> Result<Option<OwnedSemaphorePermit>, IngestError> {
        let Some(permits) = &self.permits else {
            return Ok(None);
        };
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        match tokio::time::timeout(self.wait, permits.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed; a closed one would mean no budget at all.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(IngestError::Busy { waited: self.wait }),
        }
    }
}

/// A file converted to PNG, not yet stored.
pub(crate) struct ConvertedPage {
    source_name: String,
    png: Content,
    png_bytes: u64,
    width: u32,
    height: u32,
    sha256: String,
    /// The page's preview (a small JPEG).
    thumbnail: Bytes,
    /// A PDF page's text layer, and its length in characters.
    text: Option<(Content, u64)>,
}

/// Bytes waiting to be stored: in memory (a converted image) or in the staging folder (a
/// rendered PDF page, its text).
pub(crate) enum Content {
    Memory(Bytes),
    Staged(PathBuf),
}

impl Content {
    /// Removes a staged file (a page made by the `ingest` job is stored, then its
    /// rendering goes, so the job's folder holds a few pages, never the book).
    pub(crate) async fn discard(&self) {
        if let Self::Staged(path) = self {
            let _ = tokio::fs::remove_file(path).await;
        }
    }

    pub(crate) async fn load(&self) -> Result<Bytes, IngestError> {
        match self {
            Self::Memory(bytes) => Ok(bytes.clone()),
            Self::Staged(path) => tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(|source| IngestError::Local {
                    what: "reading a staged page",
                    source,
                }),
        }
    }
}

/// A file after inspection.
enum Inspected {
    Image(UploadedFile, Header),
    Pdf(Arc<StagedPdf>),
}

/// A PDF written to the staging folder, with its pages.
#[derive(Debug)]
pub(crate) struct StagedPdf {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) pages: Vec<PdfPage>,
    /// Set when one of its pages fails: its other pages are skipped.
    pub(crate) failed: AtomicBool,
}

/// One conversion: an image, or one page of a PDF.
pub(crate) enum Unit {
    Image(UploadedFile, Header),
    PdfPage(Arc<StagedPdf>, PdfPage),
}

/// What the conversions share.
pub(crate) struct Convert<'a> {
    pub(crate) limits: IngestLimits,
    pub(crate) budget: &'a DecodeBudget,
    pub(crate) tools: &'a PdfTools,
    pub(crate) staging: Option<&'a Path>,
    pub(crate) text_layers: TextLayers,
}

/// Images stored at once.
const STORE_CONCURRENCY: usize = 4;

/// Accepted input formats.
pub(crate) const ACCEPTED_FORMATS: [ImageFormat; 6] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Tiff,
    ImageFormat::Bmp,
    ImageFormat::Gif,
];

impl Books {
    /// Adds `files` as new pages of the book, numbered in upload order after its last
    /// page (a PDF gives one page per PDF page, in order), each converted to PNG with its
    /// size and SHA-256 in the manifest; PDF pages with a text layer keep it
    /// ([`TextLayers::Keep`]). All or nothing: any invalid file fails the whole request
    /// before any storage call. Returns the new pages.
    pub async fn ingest_pages(
        &self,
        book_id: &BookId,
        files: Vec<UploadedFile>,
        limits: &IngestLimits,
    ) -> Result<Vec<Page>, IngestError> {
        self.ingest_pages_with(book_id, files, limits, TextLayers::Keep)
            .await
    }

    /// [`Books::ingest_pages`], with PDF text layers kept or ignored as `text_layers` says.
    pub async fn ingest_pages_with(
        &self,
        book_id: &BookId,
        files: Vec<UploadedFile>,
        limits: &IngestLimits,
        text_layers: TextLayers,
    ) -> Result<Vec<Page>, IngestError> {
        check_request(
            files.len(),
            files.iter().map(|file| file.bytes.len() as u64).sum(),
            limits,
        )?;
        // Removed (with everything rendered into it) when the request ends, however.
        let staging = if files.iter().any(|file| pdf::is_pdf(&file.bytes)) {
            Some(
                tempfile::Builder::new()
                    .prefix("folio-upload-")
                    .tempdir()
                    .map_err(|source| IngestError::Local {
                        what: "creating the upload's staging folder",
                        source,
                    })?,
            )
        } else {
            None
        };
        let convert = Convert {
            limits: *limits,
            budget: self.decode_budget(),
            tools: self.pdf_tools(),
            staging: staging.as_ref().map(tempfile::TempDir::path),
            text_layers,
        };

        let names: Vec<String> = files.iter().map(|file| file.name.clone()).collect();
        let inspected = convert.inspect_all(files).await?;
        let mut units = Vec::new();
        let mut rejected = Vec::new();
        for (index, result) in inspected.into_iter().enumerate() {
            match result {
                Ok(Inspected::Image(file, header)) => {
                    units.push((index, Unit::Image(file, header)))
                }
                Ok(Inspected::Pdf(document)) => units.extend(
                    document
                        .pages
                        .iter()
                        .map(|page| (index, Unit::PdfPage(document.clone(), *page))),
                ),
                Err(reason) => rejected.push(RejectedFile {
                    index,
                    name: names[index].clone(),
                    reason,
                }),
            }
        }
        if !rejected.is_empty() {
            return Err(IngestError::InvalidFiles { rejected });
        }

        let converted = convert.convert_all(units).await?;
        let mut pages = Vec::with_capacity(converted.len());
        for (index, result) in converted {
            match result {
                Ok(Some(page)) => pages.push(page),
                // A page of a PDF that already failed.
                Ok(None) => {}
                Err(reason) => {
                    if rejected
                        .last()
                        .is_none_or(|last: &RejectedFile| last.index != index)
                    {
                        rejected.push(RejectedFile {
                            index,
                            name: names[index].clone(),
                            reason,
                        });
                    }
                }
            }
        }
        if !rejected.is_empty() {
            return Err(IngestError::InvalidFiles { rejected });
        }
        let stored = self.store_pages(book_id, pages).await;
        drop(staging);
        stored
    }

    async fn store_pages(
        &self,
        book_id: &BookId,
        converted: Vec<ConvertedPage>,
    ) -> Result<Vec<Page>, IngestError> {
        let count = u32::try_from(converted.len()).unwrap_or(u32::MAX);
        let mut first_page = 0;
        self.update(book_id, |manifest| {
            first_page = manifest.next_free_page();
            manifest.next_page = first_page + count;
        })
        .await?;

        let now = self.now();
        let mut pages = Vec::with_capacity(converted.len());
        let mut blobs = Vec::with_capacity(converted.len());
        for (page, number) in converted.into_iter().zip(first_page..) {
            let (entry, page_blobs) = page_blobs(book_id, number, page, now);
            pages.push(entry);
            blobs.extend(page_blobs);
        }
        let keys: Vec<String> = blobs.iter().map(|(key, _)| key.clone()).collect();

        let stored = stream::iter(blobs)
            .map(|(key, content)| async move {
                let bytes = content.load().await?;
                self.store()
                    .put(&key, bytes, PutMode::Overwrite)
                    .await
                    .map_err(|source| IngestError::Books(storage(book_id, source)))
            })
            .buffer_unordered(STORE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await;
        if let Err(error) = stored {
            self.delete_images(&keys).await;
            return Err(error);
        }

        let added = pages.clone();
        if let Err(error) = self
            .update(book_id, move |manifest| {
                for page in &added {
                    manifest.upsert_page(page.clone());
                }
            })
            .await
        {
            self.delete_images(&keys).await;
            return Err(error.into());
        }
        Ok(pages)
    }

    /// Best-effort cleanup of images (and texts) that no manifest will reference.
    async fn delete_images(&self, keys: &[String]) {
        for key in keys {
            if let Err(error) = self.store().delete(key).await {
                tracing::warn!(key, %error, "could not delete an orphaned page image");
            }
        }
    }
}

/// A request's file count and bytes against its limits (no file is an error too).
pub(crate) fn check_request(
    count: usize,
    bytes: u64,
    limits: &IngestLimits,
) -> Result<(), IngestError> {
    if count == 0 {
        return Err(IngestError::NoFiles);
    }
    if count > limits.max_files {
        return Err(IngestError::TooManyFiles {
            count,
            max: limits.max_files,
        });
    }
    if bytes > limits.max_request_bytes {
        return Err(IngestError::RequestTooLarge {
            bytes,
            max: limits.max_request_bytes,
        });
    }
    Ok(())
}

/// Page `number`'s manifest entry for `page` and the objects to store for it: its PNG, its
/// preview and, with a text layer, its text (the page's OCR then done by `pdf-text`).
pub(crate) fn page_blobs(
    book_id: &BookId,
    number: u32,
    page: ConvertedPage,
    now: chrono::DateTime<chrono::Utc>,
) -> (Page, Vec<(String, Content)>) {
    let mut entry = Page::new(
        number,
        page.source_name,
        page.width,
        page.height,
        page.png_bytes,
        page.sha256,
    );
    let mut blobs = vec![(layout::book_key(book_id, &entry.image), page.png)];
    let thumbnail = layout::page_thumbnail_path(number);
    blobs.push((
        layout::book_key(book_id, &thumbnail),
        Content::Memory(page.thumbnail),
    ));
    entry.thumbnail = Some(thumbnail);
    if let Some((text, chars)) = page.text {
        let path = layout::ocr_text_path(number);
        blobs.push((layout::book_key(book_id, &path), text));
        entry.ocr.status = OcrStatus::Done;
        entry.ocr.text = Some(path);
        entry.ocr.engine = Some(PDF_TEXT_ENGINE.to_owned());
        entry.ocr.chars = Some(chars);
        entry.ocr.updated_at = Some(now);
    }
    (entry, blobs)
}

/// A file's result: `Err` for a rejection; the outer error fails the whole request.
pub(crate) type Outcome<T> = Result<Result<T, FileRejection>, IngestError>;

impl Convert<'_> {
    /// Inspects every file, `decode_concurrency` at a time, in order.
    async fn inspect_all(
        &self,
        files: Vec<UploadedFile>,
    ) -> Result<Vec<Result<Inspected, FileRejection>>, IngestError> {
        stream::iter(files.into_iter().enumerate())
            .map(|(index, file)| self.inspect_one(index, file))
            .buffered(self.limits.decode_concurrency.max(1))
            .try_collect()
            .await
    }

    /// Checks one file's name and header; a PDF is staged and read by `pdfinfo`.
    async fn inspect_one(&self, index: usize, file: UploadedFile) -> Outcome<Inspected> {
        let limits = self.limits;
        if let Err(rejection) = check_name(&file.name).and_then(|()| {
            if file.bytes.is_empty() {
                Err(FileRejection::Empty)
            } else {
                Ok(())
            }
        }) {
            return Ok(Err(rejection));
        }
        let (Some(staging), true) = (self.staging, pdf::is_pdf(&file.bytes)) else {
            return Ok(blocking(move || {
                let header = inspect(&file, &limits)?;
                Ok(Inspected::Image(file, header))
            })
            .await);
        };
        let size = file.bytes.len() as u64;
        if size > limits.max_pdf_bytes {
            return Ok(Err(FileRejection::TooLarge {
                bytes: size,
                max: limits.max_pdf_bytes,
            }));
        }
        let path = staging.join(format!("{index}.pdf"));
        tokio::fs::write(&path, &file.bytes)
            .await
            .map_err(|source| IngestError::Local {
                what: "staging an uploaded PDF",
                source,
            })?;
        let pages = match pdf::inspect(self.tools, &path, &limits).await? {
            Ok(pages) => pages,
            Err(rejection) => return Ok(Err(rejection)),
        };
        Ok(Ok(Inspected::Pdf(Arc::new(StagedPdf {
            name: file.name,
            path,
            pages,
            failed: AtomicBool::new(false),
        }))))
    }

    /// Converts every unit, `decode_concurrency` at a time, in order; each with the index
    /// of its file. `Ok(None)` is a page skipped because its PDF already failed.
    async fn convert_all(
        &self,
        units: Vec<(usize, Unit)>,
    ) -> Result<Vec<(usize, Result<Option<ConvertedPage>, FileRejection>)>, IngestError> {
        stream::iter(units)
            .map(|(index, unit)| async move {
                self.convert_one(index, unit)
                    .await
                    .map(|result| (index, result))
            })
            .buffered(self.limits.decode_concurrency.max(1))
            .try_collect()
            .await
    }

    pub(crate) async fn convert_one(
        &self,
        index: usize,
        unit: Unit,
    ) -> Outcome<Option<ConvertedPage>> {
        let limits = self.limits;
        match unit {
            Unit::Image(file, header) => {
                let permit = self.budget.reserve(header.decode_bytes).await?;
                Ok(blocking(move || {
                    let converted = convert_to_png(file, &header, &limits);
                    drop(permit);
                    converted.map(Some)
                })
                .await)
            }
            Unit::PdfPage(document, page) => {
                if document.failed.load(Ordering::Relaxed) {
                    return Ok(Ok(None));
                }
                let result = self.render_page(index, &document, page).await?;
                if result.is_err() {
                    document.failed.store(true, Ordering::Relaxed);
                }
                Ok(result.map(Some))
            }
        }
    }

    /// Renders one PDF page into the staging folder (within the decode budget), hashes
    /// it, and stages its text layer.
    async fn render_page(
        &self,
        index: usize,
        document: &StagedPdf,
        page: PdfPage,
    ) -> Outcome<ConvertedPage> {
        let limits = self.limits;
        let staging = self.staging.unwrap_or_else(|| Path::new("."));
        let out_root = staging.join(format!("{index}-{:05}", page.number));
        // Held through the preview too: it decodes the rendered page.
        let permit = self.budget.reserve(page.decode_bytes()).await?;
        let rendered = pdf::render(self.tools, &document.path, &page, &out_root, &limits).await?;
        let png_path = match rendered {
            Ok(path) => path,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let number = page.number;
        let hashed = tokio::task::spawn_blocking(move || {
            let checked = hash_png(&png_path, &limits).map(|checked| {
                checked.and_then(|checked| Ok((checked, preview_of_file(&png_path, &limits)?)))
            });
            (png_path, checked)
        })
        .await;
        drop(permit);
        let (png_path, ((png_bytes, width, height, sha256), thumbnail)) = match hashed {
            Ok((path, Ok(Ok(checked)))) => (path, checked),
            Ok((_, Ok(Err(rejection)))) => return Ok(Err(rejection)),
            Ok((_, Err(source))) => {
                return Err(IngestError::Local {
                    what: "reading a rendered page",
                    source,
                });
            }
            Err(join_error) => {
                return Ok(Err(FileRejection::Corrupt {
                    detail: format!("page {number} could not be read: {join_error}"),
                }));
            }
        };
        let text = match self.text_layers {
            TextLayers::Ignore => None,
            TextLayers::Keep => {
                match pdf::page_text(self.tools, &document.path, number, &limits).await? {
                    Ok(Some(text)) => {
                        let chars = text.chars().count() as u64;
                        let path = out_root.with_extension("txt");
                        tokio::fs::write(&path, text).await.map_err(|source| {
                            IngestError::Local {
                                what: "staging a page's text",
                                source,
                            }
                        })?;
                        Some((Content::Staged(path), chars))
                    }
                    Ok(None) => None,
                    Err(rejection) => return Ok(Err(rejection)),
                }
            }
        };
        Ok(Ok(ConvertedPage {
            source_name: document.name.clone(),
            png: Content::Staged(png_path),
            png_bytes,
            width,
            height,
            sha256,
            thumbnail,
            text,
        }))
    }
}

/// The size, dimensions (from the PNG header, checked against the limits) and SHA-256 of
/// a rendered page, read from its file in pieces. Blocking.
#[allow(clippy::type_complexity)]
fn hash_png(
    path: &Path,
    limits: &IngestLimits,
) -> std::io::Result<Result<(u64, u32, u32, String), FileRejection>> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut header = [0_u8; 24];
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut total = 0_u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        let start = total as usize;
        if start < header.len() {
            let take = (header.len() - start).min(read);
            header[start..start + take].copy_from_slice(&buffer[..take]);
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    if total < 24 || !header.starts_with(b"\x89PNG\r\n\x1a\n") || &header[12..16] != b"IHDR" {
        return Ok(Err(FileRejection::Corrupt {
            detail: "the renderer wrote no PNG".to_owned(),
        }));
    }
    let width = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
    let height = u32::from_be_bytes([header[20], header[21], header[22], header[23]]);
    if width > limits.max_width || height > limits.max_height {
        return Ok(Err(FileRejection::TooManyPixels {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        }));
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(Ok((total, width, height, sha256)))
}

/// Runs CPU-bound work on a blocking thread; a panic there is a corrupt file.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileRejection> + Send + 'static,
) -> Result<T, FileRejection> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| {
            Err(FileRejection::Corrupt {
                detail: format!("decoder crashed: {join_error}"),
            })
        })
}

/// What a file's header says, read before any pixel is decoded.
pub(crate) struct Header {
    pub(crate) format: ImageFormat,
    /// Bytes a decode and conversion of it may hold at once (see [`DecodeBudget`]).
    decode_bytes: u64,
}

/// Checks a file's name, size, format and dimensions from its header alone: a bomb is
/// refused before any pixel is decoded.
pub(crate) fn inspect(file: &UploadedFile, limits: &IngestLimits) -> Result<Header, FileRejection> {
    check_name(&file.name)?;
    let size = file.bytes.len() as u64;
    if size == 0 {
        return Err(FileRejection::Empty);
    }
    if size > limits.max_file_bytes {
        return Err(FileRejection::TooLarge {
            bytes: size,
            max: limits.max_file_bytes,
        });
    }
    let format = image::guess_format(&file.bytes).map_err(|_| FileRejection::UnsupportedFormat)?;
    if !ACCEPTED_FORMATS.contains(&format) {
        return Err(FileRejection::UnsupportedFormat);
    }
    if format == ImageFormat::Jpeg && !jpeg_has_end_of_image(&file.bytes) {
        return Err(FileRejection::Corrupt {
            detail: "truncated jpeg: no end-of-image marker after the last scan".to_owned(),
        });
    }
    let decoder = ImageReader::with_format(Cursor::new(&file.bytes[..]), format)
        .into_decoder()
        .map_err(|error| rejection(error, limits))?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_width || height > limits.max_height {
        return Err(FileRejection::TooManyPixels {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    Ok(Header {
        format,
        decode_bytes: decoder.total_bytes().saturating_mul(2),
    })
}

/// The longest file name kept, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// A file name must be a plain name: no path, no control characters, not too long.
pub(crate) fn check_name(name: &str) -> Result<(), FileRejection> {
    let reason = if name.contains(['/', '\\']) {
        "it contains a path separator"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 255 bytes"
    } else if name == "." || name == ".." {
        "it names a directory"
    } else {
        return Ok(());
    };
    Err(FileRejection::InvalidName { reason })
}

/// Decodes one file under limits and re-encodes it as PNG. Blocking and CPU-bound.
fn convert_to_png(
    file: UploadedFile,
    header: &Header,
    limits: &IngestLimits,
) -> Result<ConvertedPage, FileRejection> {
    let mut reader = ImageReader::with_format(Cursor::new(&file.bytes[..]), header.format);
    reader.limits(decode_limits(limits));
    let image = reader.decode().map_err(|error| rejection(error, limits))?;
    drop(file.bytes);
    let image = match image {
        // PNG has no float samples: keep the precision PNG has.
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            DynamicImage::ImageRgba16(image.to_rgba16())
        }
        other => other,
    };
    let thumbnail = preview(&image)?;

    let mut png = Vec::new();
    image
        .write_to(Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|error| rejection(error, limits))?;
    let digest = Sha256::digest(&png);
    let sha256 = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(ConvertedPage {
        source_name: file.name,
        png_bytes: png.len() as u64,
        png: Content::Memory(Bytes::from(png)),
        width: image.width(),
        height: image.height(),
        sha256,
        thumbnail,
        text: None,
    })
}

/// The width of a page's preview, in pixels: a grid tile (118-160 CSS pixels) on a
/// screen of 1.25-1.7 device pixels per CSS pixel.
pub const THUMBNAIL_WIDTH: u32 = 200;

/// A page's preview: scaled to [`THUMBNAIL_WIDTH`] (never up), gray unless the page has
/// color, as a JPEG of quality 60: about 8 KB for a dense page of prose, whose PNG at
/// 300 dpi is nearly 500 KB. Blocking and CPU-bound.
pub(crate) fn preview(image: &DynamicImage) -> Result<Bytes, FileRejection> {
    // A box average to twice the size (fast on a 300 dpi page), then a triangle filter:
    // smooth lines of text compress to half the bytes of the box average alone.
    let small = if image.width() > THUMBNAIL_WIDTH {
        image.thumbnail(THUMBNAIL_WIDTH * 2, u32::MAX).resize(
            THUMBNAIL_WIDTH,
            u32::MAX,
            image::imageops::FilterType::Triangle,
        )
    } else {
        image.clone()
    };
    let small = if small.color().has_color() {
        DynamicImage::ImageRgb8(small.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(small.to_luma8())
    };
    let mut jpeg = Vec::new();
    small
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut jpeg, 60,
        ))
        .map_err(|error| FileRejection::Corrupt {
            detail: format!("the preview could not be made: {error}"),
        })?;
    Ok(Bytes::from(jpeg))
}

/// The preview of a rendered page's PNG file, decoded under the upload's limits.
fn preview_of_file(path: &Path, limits: &IngestLimits) -> Result<Bytes, FileRejection> {
    let file = std::fs::File::open(path).map_err(|error| FileRejection::Corrupt {
        detail: format!("the rendered page could not be read: {error}"),
    })?;
    let mut reader = ImageReader::with_format(std::io::BufReader::new(file), ImageFormat::Png);
    reader.limits(decode_limits(limits));
    let image = reader.decode().map_err(|error| rejection(error, limits))?;
    preview(&image)
}

/// The decoder's limits of an upload: dimensions and allocation.
fn decode_limits(limits: &IngestLimits) -> image::Limits {
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(limits.max_width);
    decode_limits.max_image_height = Some(limits.max_height);
    decode_limits.max_alloc = Some(limits.max_decode_alloc_bytes);
    decode_limits
}

/// Whether a JPEG's last scan is followed by an EOI marker (`FF D9`). The decoder pads a
/// truncated scan with gray instead of failing; a truncated upload must be refused. Scan
/// data cannot contain `FF DA` or `FF D9` (an `FF` there is stuffed as `FF 00`), so the
/// last `FF DA` starts the last scan, whatever thumbnails the metadata embeds.
pub(crate) fn jpeg_has_end_of_image(bytes: &[u8]) -> bool {
    let last_scan = bytes
        .windows(2)
        .rposition(|pair| pair == [0xFF, 0xDA])
        .unwrap_or(0);
    bytes[last_scan..]
        .windows(2)
        .any(|pair| pair == [0xFF, 0xD9])
}

/// Classifies a decoder error by its kind (never its text).
pub(crate) fn rejection(error: ImageError, limits: &IngestLimits) -> FileRejection {
    match error {
        ImageError::Limits(limit) => match limit.kind() {
            LimitErrorKind::DimensionError => FileRejection::TooManyPixels {
                width: 0,
                height: 0,
                max_width: limits.max_width,
                max_height: limits.max_height,
            },
            _ => FileRejection::TooLarge {
                bytes: limits.max_decode_alloc_bytes.saturating_add(1),
                max: limits.max_decode_alloc_bytes,
            },
        },
        ImageError::Unsupported(_) => FileRejection::UnsupportedFormat,
        other => FileRejection::Corrupt {
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_is_capped_at_the_budget_and_gives_up_busy_after_its_wait() {
        let budget = DecodeBudget::new(1024 * 1024, Duration::from_millis(50));
        let whole = budget.reserve(10 * 1024 * 1024).await.unwrap();
        assert!(whole.is_some(), "a need over the budget takes all of it");
        let busy = budget.reserve(1).await.unwrap_err();
        assert!(
            matches!(busy, IngestError::Busy { waited } if waited == Duration::from_millis(50))
        );
        drop(whole);
        let half = budget.reserve(512 * 1024).await.unwrap();
        let other_half = budget.reserve(512 * 1024).await.unwrap();
        assert!(half.is_some() && other_half.is_some());
        assert!(
            DecodeBudget::unlimited()
                .reserve(u64::MAX)
                .await
                .unwrap()
                .is_none()
        );
    }
}
