//! Page ingestion (SPEC 4.1): validate, decode under limits, convert to PNG, store, and
//! record in the manifest, all or nothing.
//!
//! Steps of [`Books::ingest_pages`]:
//! 1. Request limits (file count, total bytes), then each file is decoded and converted to
//!    PNG on a blocking thread, a few at a time. The name must be a plain file name; the
//!    format is sniffed from the content (never the name); dimensions are checked from the
//!    header before any pixel is decoded, the file's decode memory is reserved from the
//!    process's [`DecodeBudget`], and the decoder runs under dimension and allocation
//!    limits. A JPEG without its end-of-image marker is refused as truncated (the decoder
//!    would pad it).
//! 2. If any file is rejected, the error lists every bad file with its reason and nothing
//!    has touched storage.
//! 3. Page numbers are reserved in the manifest (`next_page`, one conditional write), the
//!    PNGs are stored at those numbers, then the pages are added to the manifest (a second
//!    conditional write). A failure after the reservation deletes the stored images; the
//!    reserved numbers stay unused.

use std::io::Cursor;
use std::sync::Arc;
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
use crate::{BookId, Books, BooksError, Page, layout};

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    /// The client's file name (metadata only: the format is sniffed from the content).
    pub name: String,
    /// The file's content.
    pub bytes: Bytes,
}

/// Limits of one ingestion request (defaults from SPEC 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Widest accepted image, in pixels (12000).
    pub max_width: u32,
    /// Tallest accepted image, in pixels (12000).
    pub max_height: u32,
    /// Largest accepted file (25 MiB).
    pub max_file_bytes: u64,
    /// Most files in one request (300).
    pub max_files: usize,
    /// Largest request, all files together (512 MiB).
    pub max_request_bytes: u64,
    /// Largest allocation a decoder may make for one image (1 GiB).
    pub max_decode_alloc_bytes: u64,
    /// Files decoded at once (default: number of CPUs).
    pub decode_concurrency: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_width: 12_000,
            max_height: 12_000,
            max_file_bytes: 25 * 1024 * 1024,
            max_files: 300,
            max_request_bytes: 512 * 1024 * 1024,
            max_decode_alloc_bytes: 1024 * 1024 * 1024,
            decode_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

/// Why one file was rejected. [`FileRejection::code`] gives a stable code for APIs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileRejection {
    /// Not PNG, JPEG, WebP, TIFF, BMP or GIF (judged by content).
    #[error("unsupported format (accepted: png, jpeg, webp, tiff, bmp, gif)")]
    UnsupportedFormat,
    /// Recognized but undecodable (truncated, damaged).
    #[error("corrupt image: {detail}")]
    Corrupt {
        /// The decoder's diagnosis.
        detail: String,
    },
    /// Larger than the per-file byte limit, or needs more memory to decode than allowed.
    #[error("file too large: {bytes} bytes, limit {max}")]
    TooLarge {
        /// The file's size (or the decoder's allocation).
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A file of 0 bytes.
    #[error("empty file")]
    Empty,
    /// A file name with a path separator or a control character (such as NUL), or longer
    /// than 255 bytes: the name is kept as the page's source, so it must be a plain name.
    #[error("invalid file name: {reason}")]
    InvalidName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Wider or taller than allowed (e.g. a decompression bomb).
    #[error("too many pixels: {width}x{height}, limit {max_width}x{max_height}")]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// Width limit.
        max_width: u32,
        /// Height limit.
        max_height: u32,
    },
}

impl FileRejection {
    /// A stable machine-readable code: `unsupported_format`, `corrupt`, `too_large`,
    /// `empty`, `invalid_name` or `too_many_pixels`.
    pub fn code(&self) -> &'static str {
        match self {
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
    /// Why.
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
    /// The request has more files than allowed.
    #[error("too many files: {count}, limit {max}")]
    TooManyFiles {
        /// Files sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The files together are larger than allowed.
    #[error("request too large: {bytes} bytes, limit {max}")]
    RequestTooLarge {
        /// Bytes sent.
        bytes: u64,
        /// The limit.
        max: u64,
    },
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
struct ConvertedPage {
    source_name: String,
    png: Bytes,
    width: u32,
    height: u32,
    sha256: String,
}

/// Images stored at once.
const STORE_CONCURRENCY: usize = 4;

/// Accepted input formats.
const ACCEPTED_FORMATS: [ImageFormat; 6] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Tiff,
    ImageFormat::Bmp,
    ImageFormat::Gif,
];

impl Books {
    /// Adds `files` as new pages of the book, numbered in upload order after its last
    /// page, each converted to PNG with its size and SHA-256 in the manifest. All or
    /// nothing: any invalid file fails the whole request before any storage call.
    /// Returns the new pages.
    pub async fn ingest_pages(
        &self,
        book_id: &BookId,
        files: Vec<UploadedFile>,
        limits: &IngestLimits,
    ) -> Result<Vec<Page>, IngestError> {
        if files.is_empty() {
            return Err(IngestError::NoFiles);
        }
        if files.len() > limits.max_files {
            return Err(IngestError::TooManyFiles {
                count: files.len(),
                max: limits.max_files,
            });
        }
        let total: u64 = files.iter().map(|file| file.bytes.len() as u64).sum();
        if total > limits.max_request_bytes {
            return Err(IngestError::RequestTooLarge {
                bytes: total,
                max: limits.max_request_bytes,
            });
        }

        let converted = convert_all(files, *limits, self.decode_budget()).await?;
        let mut pages = Vec::with_capacity(converted.len());
        let mut rejected = Vec::new();
        for (index, (name, result)) in converted.into_iter().enumerate() {
            match result {
                Ok(page) => pages.push(page),
                Err(reason) => rejected.push(RejectedFile {
                    index,
                    name,
                    reason,
                }),
            }
        }
        if !rejected.is_empty() {
            return Err(IngestError::InvalidFiles { rejected });
        }
        Ok(self.store_pages(book_id, pages).await?)
    }

    async fn store_pages(
        &self,
        book_id: &BookId,
        converted: Vec<ConvertedPage>,
    ) -> Result<Vec<Page>, BooksError> {
        let count = u32::try_from(converted.len()).unwrap_or(u32::MAX);
        let mut first_page = 0;
        self.update(book_id, |manifest| {
            first_page = manifest.next_free_page();
            manifest.next_page = first_page + count;
        })
        .await?;

        let pages: Vec<Page> = converted
            .iter()
            .zip(first_page..)
            .map(|(page, number)| {
                Page::new(
                    number,
                    page.source_name.clone(),
                    page.width,
                    page.height,
                    page.png.len() as u64,
                    page.sha256.clone(),
                )
            })
            .collect();
        let keys: Vec<String> = pages
            .iter()
            .map(|page| layout::book_key(book_id, &page.image))
            .collect();

        let stored = stream::iter(
            keys.iter()
                .cloned()
                .zip(converted.into_iter().map(|page| page.png)),
        )
        .map(|(key, png)| async move {
            self.store()
                .put(&key, png, PutMode::Overwrite)
                .await
                .map_err(|source| storage(book_id, source))
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
            return Err(error);
        }
        Ok(pages)
    }

    /// Best-effort cleanup of images that no manifest will reference.
    async fn delete_images(&self, keys: &[String]) {
        for key in keys {
            if let Err(error) = self.store().delete(key).await {
                tracing::warn!(key, %error, "could not delete an orphaned page image");
            }
        }
    }
}

/// Converts every file, `decode_concurrency` at a time, in order; fails only when the
/// decode budget is busy for too long (a bad file is a rejection in the list).
async fn convert_all(
    files: Vec<UploadedFile>,
    limits: IngestLimits,
    budget: &DecodeBudget,
) -> Result<Vec<(String, Result<ConvertedPage, FileRejection>)>, IngestError> {
    stream::iter(files)
        .map(|file| async move {
            let name = file.name.clone();
            convert_one(file, limits, budget)
                .await
                .map(|result| (name, result))
        })
        .buffered(limits.decode_concurrency.max(1))
        .try_collect()
        .await
}

/// Checks one file's name and header, reserves its decode memory, then decodes and
/// converts it on a blocking thread (which holds the reservation until it is done).
async fn convert_one(
    file: UploadedFile,
    limits: IngestLimits,
    budget: &DecodeBudget,
) -> Result<Result<ConvertedPage, FileRejection>, IngestError> {
    let (file, header) = match blocking(move || {
        let header = inspect(&file, &limits);
        Ok((file, header))
    })
    .await
    {
        Ok((file, Ok(header))) => (file, header),
        Ok((_, Err(rejection))) | Err(rejection) => return Ok(Err(rejection)),
    };
    let permit = budget.reserve(header.decode_bytes).await?;
    Ok(blocking(move || {
        let converted = convert_to_png(file, &header, &limits);
        drop(permit);
        converted
    })
    .await)
}

/// Runs CPU-bound work on a blocking thread; a panic there is a corrupt file.
async fn blocking<T: Send + 'static>(
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
struct Header {
    format: ImageFormat,
    /// Bytes a decode and conversion of it may hold at once (see [`DecodeBudget`]).
    decode_bytes: u64,
}

/// Checks a file's name, size, format and dimensions from its header alone: a bomb is
/// refused before any pixel is decoded.
fn inspect(file: &UploadedFile, limits: &IngestLimits) -> Result<Header, FileRejection> {
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
fn check_name(name: &str) -> Result<(), FileRejection> {
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
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(limits.max_width);
    decode_limits.max_image_height = Some(limits.max_height);
    decode_limits.max_alloc = Some(limits.max_decode_alloc_bytes);
    reader.limits(decode_limits);
    let image = reader.decode().map_err(|error| rejection(error, limits))?;
    drop(file.bytes);
    let image = match image {
        // PNG has no float samples: keep the precision PNG has.
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            DynamicImage::ImageRgba16(image.to_rgba16())
        }
        other => other,
    };

    let mut png = Vec::new();
    image
        .write_to(Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|error| rejection(error, limits))?;
    let digest = Sha256::digest(&png);
    let sha256 = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(ConvertedPage {
        source_name: file.name,
        png: Bytes::from(png),
        width: image.width(),
        height: image.height(),
        sha256,
    })
}

/// Whether a JPEG's last scan is followed by an EOI marker (`FF D9`). The decoder pads a
/// truncated scan with gray instead of failing; a truncated upload must be refused. Scan
/// data cannot contain `FF DA` or `FF D9` (an `FF` there is stuffed as `FF 00`), so the
/// last `FF DA` starts the last scan, whatever thumbnails the metadata embeds.
fn jpeg_has_end_of_image(bytes: &[u8]) -> bool {
    let last_scan = bytes
        .windows(2)
        .rposition(|pair| pair == [0xFF, 0xDA])
        .unwrap_or(0);
    bytes[last_scan..]
        .windows(2)
        .any(|pair| pair == [0xFF, 0xD9])
}

/// Classifies a decoder error by its kind (never its text).
fn rejection(error: ImageError, limits: &IngestLimits) -> FileRejection {
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
