//! Uploads for the durable `ingest` job (issue 24): the api streams each file of a request
//! to a local file, then [`Books::stage_upload`] checks them all (name, size, format sniffed
//! from the content, image dimensions from the header, a PDF's pages, sizes and encryption
//! from `pdfinfo`), all or nothing; fixes the upload's page numbers in the manifest (one
//! conditional write, within the book's page limit) and stores the files as they came at
//! `uploads/{upload_id}/NNNN`. The `ingest` job then makes each page with
//! [`Books::make_page`]: converted, stored at its fixed number with its preview (and text
//! layer), and returned for the manifest. A page made twice overwrites itself: never a gap,
//! never a duplicate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use blob_store::PutMode;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use image::{ImageFormat, ImageReader};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::catalog::storage;
use crate::ingest::{
    ACCEPTED_FORMATS, Content, Convert, Outcome, StagedPdf, Unit, blocking, check_name,
    check_request, inspect, jpeg_has_end_of_image, page_blobs, rejection,
};
use crate::pdf;
use crate::{
    BookId, Books, FileRejection, IngestError, IngestLimits, Page, RejectedFile, TextLayers,
    UploadedFile, layout,
};

/// A file of an upload request, streamed by the caller to a local file.
#[derive(Debug, Clone)]
pub struct StagedInput {
    /// The client's file name.
    pub name: String,
    /// Where the caller wrote it.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, lowercase hex, taken as it streamed.
    pub sha256: String,
}

/// What a file is, judged by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A PNG, JPEG, WebP, TIFF, BMP or GIF: one page.
    Image,
    /// A PDF: one page per PDF page.
    Pdf,
}

/// One stored file of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFile {
    /// Its position in the request, from 0.
    pub index: u32,
    /// The client's file name.
    pub name: String,
    pub kind: FileKind,
    /// Its size as uploaded.
    pub bytes: u64,
    /// Its SHA-256 as uploaded, lowercase hex.
    pub sha256: String,
    /// How many pages it makes.
    pub pages: u32,
    /// The book's page number of its first page; the others follow.
    pub first_page: u32,
}

/// An upload: its files, stored as they came, with their page numbers fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// A UUIDv7 in text.
    pub id: String,
    pub files: Vec<UploadFile>,
}

impl Upload {
    /// Every page number the upload makes, in order.
    pub fn pages(&self) -> Vec<u32> {
        self.files
            .iter()
            .flat_map(|file| file.first_page..file.first_page + file.pages)
            .collect()
    }

    /// The file that makes page `number`, and the page's index in it (from 0).
    pub fn locate(&self, number: u32) -> Option<(&UploadFile, u32)> {
        self.files.iter().find_map(|file| {
            (number >= file.first_page && number < file.first_page + file.pages)
                .then(|| (file, number - file.first_page))
        })
    }

    /// Where file `index` is stored, relative to the book.
    pub fn file_path(&self, index: u32) -> String {
        layout::upload_file_path(&self.id, index)
    }
}

/// A stored file of an upload, copied to a local file by the `ingest` job, ready to make
/// pages from ([`Books::open_source`]).
#[derive(Debug)]
pub struct PageSource {
    file: UploadFile,
    path: PathBuf,
    /// The limits its pages are made under.
    limits: IngestLimits,
    text_layers: TextLayers,
    /// A PDF's pages, from `pdfinfo`.
    pdf: Option<Arc<StagedPdf>>,
}

impl PageSource {
    pub fn file(&self) -> &UploadFile {
        &self.file
    }
}

/// How many bytes of a file's start sniff its format.
const HEAD_BYTES: usize = 64 * 1024;

impl Books {
    /// Checks every file of an upload (all or nothing), fixes its page numbers after the
    /// book's last page, and stores the files as they came. Nothing is stored when a file
    /// is refused or the book would pass `limits.max_book_pages`; a failure after the
    /// numbers were fixed deletes what was stored (the numbers stay unused).
    pub async fn stage_upload(
        &self,
        book_id: &BookId,
        inputs: Vec<StagedInput>,
        limits: &IngestLimits,
    ) -> Result<Upload, IngestError> {
        check_request(
            inputs.len(),
            inputs.iter().map(|input| input.bytes).sum(),
            limits,
        )?;
        // Indices, not references, through the stream: a closure over `&StagedInput` makes
        // the future not `Send` for every lifetime, which a handler's future must be.
        let checked: Vec<Result<(FileKind, u32), FileRejection>> = stream::iter(0..inputs.len())
            .map(|index| self.check_staged(&inputs[index], limits))
            .buffered(limits.decode_concurrency.max(1))
            .try_collect()
            .await?;
        let rejected: Vec<RejectedFile> = checked
            .iter()
            .zip(&inputs)
            .enumerate()
            .filter_map(|(index, (result, input))| {
                result.as_ref().err().map(|reason| RejectedFile {
                    index,
                    name: input.name.clone(),
                    reason: reason.clone(),
                })
            })
            .collect();
        if !rejected.is_empty() {
            return Err(IngestError::InvalidFiles { rejected });
        }
        let kinds: Vec<(FileKind, u32)> = checked.into_iter().flatten().collect();
        let count: u64 = kinds.iter().map(|(_, pages)| u64::from(*pages)).sum();

        // Checked before the write as well as in it: a refused upload leaves the manifest
        // as it was (the check in the write only catches a race with another upload).
        let after = u64::from(self.manifest(book_id).await?.next_free_page() - 1) + count;
        if after > u64::from(limits.max_book_pages) {
            return Err(IngestError::BookFull {
                pages: after,
                max: limits.max_book_pages,
            });
        }
        let mut first_page = 0;
        let mut full = None;
        self.update(book_id, |manifest| {
            first_page = manifest.next_free_page();
            let after = u64::from(first_page - 1) + count;
            full = (after > u64::from(limits.max_book_pages)).then_some(after);
            if full.is_none() {
                manifest.next_page = first_page + count as u32;
            }
        })
        .await?;
        if let Some(pages) = full {
            return Err(IngestError::BookFull {
                pages,
                max: limits.max_book_pages,
            });
        }

        let upload = Upload {
            id: uuid_v7(self.now()),
            files: inputs
                .iter()
                .zip(kinds)
                .zip(0..)
                .scan(first_page, |next, ((input, (kind, pages)), index)| {
                    let file = UploadFile {
                        index,
                        name: input.name.clone(),
                        kind,
                        bytes: input.bytes,
                        sha256: input.sha256.clone(),
                        pages,
                        first_page: *next,
                    };
                    *next += pages;
                    Some(file)
                })
                .collect(),
        };
        let stored = stream::iter(0..inputs.len())
            .map(|position| {
                let input = &inputs[position];
                let key = layout::book_key(book_id, &upload.file_path(position as u32));
                async move {
                    self.store()
                        .put_file(&key, &input.path, PutMode::Overwrite)
                        .await
                        .map_err(|source| IngestError::Books(storage(book_id, source)))
                }
            })
            .buffer_unordered(2)
            .try_collect::<Vec<_>>()
            .await;
        if let Err(error) = stored {
            self.delete_upload(book_id, &upload).await;
            return Err(error);
        }
        Ok(upload)
    }

    /// Deletes an upload's stored files (best effort; the sweeper takes what is left).
    pub async fn delete_upload(&self, book_id: &BookId, upload: &Upload) {
        for file in &upload.files {
            let key = layout::book_key(book_id, &upload.file_path(file.index));
            if let Err(error) = self.store().delete(&key).await
                && !error.is_not_found()
            {
                tracing::warn!(key, %error, "could not delete an uploaded file");
            }
        }
    }

    /// One file's kind and page count, or why it is refused.
    async fn check_staged(
        &self,
        input: &StagedInput,
        limits: &IngestLimits,
    ) -> Outcome<(FileKind, u32)> {
        if let Err(rejection) = check_name(&input.name) {
            return Ok(Err(rejection));
        }
        if input.bytes == 0 {
            return Ok(Err(FileRejection::Empty));
        }
        let head = read_range(&input.path, 0, HEAD_BYTES).await?;
        if pdf::is_pdf(&head) {
            if input.bytes > limits.max_pdf_bytes {
                return Ok(Err(FileRejection::TooLarge {
                    bytes: input.bytes,
                    max: limits.max_pdf_bytes,
                }));
            }
            return Ok(pdf::inspect(self.pdf_tools(), &input.path, limits)
                .await?
                .map(|pages| (FileKind::Pdf, pages.len() as u32)));
        }
        if input.bytes > limits.max_file_bytes {
            return Ok(Err(FileRejection::TooLarge {
                bytes: input.bytes,
                max: limits.max_file_bytes,
            }));
        }
        let Ok(format) = image::guess_format(&head) else {
            return Ok(Err(FileRejection::UnsupportedFormat));
        };
        if !ACCEPTED_FORMATS.contains(&format) {
            return Ok(Err(FileRejection::UnsupportedFormat));
        }
        if format == ImageFormat::Jpeg {
            let tail_start = input.bytes.saturating_sub(HEAD_BYTES as u64);
            let tail = read_range(&input.path, tail_start, HEAD_BYTES).await?;
            if !jpeg_has_end_of_image(&tail) {
                return Ok(Err(FileRejection::Corrupt {
                    detail: "truncated jpeg: no end-of-image marker after the last scan".to_owned(),
                }));
            }
        }
        let path = input.path.clone();
        let limits = *limits;
        Ok(blocking(move || {
            let file = std::fs::File::open(&path).map_err(|error| FileRejection::Corrupt {
                detail: error.to_string(),
            })?;
            let decoder = ImageReader::with_format(std::io::BufReader::new(file), format)
                .into_decoder()
                .map_err(|error| rejection(error, &limits))?;
            let (width, height) = image::ImageDecoder::dimensions(&decoder);
            if width > limits.max_width || height > limits.max_height {
                return Err(FileRejection::TooManyPixels {
                    width,
                    height,
                    max_width: limits.max_width,
                    max_height: limits.max_height,
                });
            }
            Ok((FileKind::Image, 1))
        })
        .await)
    }

    /// A stored upload file, copied to `path` by the caller, ready to make pages from
    /// under `limits`, with its PDF text layers kept or not: a PDF is read by `pdfinfo`
    /// again (a file changed since its upload is refused).
    pub async fn open_source(
        &self,
        file: UploadFile,
        path: PathBuf,
        limits: &IngestLimits,
        text_layers: TextLayers,
    ) -> Outcome<PageSource> {
        let pdf = match file.kind {
            FileKind::Image => None,
            FileKind::Pdf => {
                let pages = match pdf::inspect(self.pdf_tools(), &path, limits).await? {
                    Ok(pages) => pages,
                    Err(rejection) => return Ok(Err(rejection)),
                };
                if pages.len() != file.pages as usize {
                    return Ok(Err(FileRejection::Corrupt {
                        detail: format!(
                            "the stored PDF has {} pages, the upload had {}",
                            pages.len(),
                            file.pages
                        ),
                    }));
                }
                Some(Arc::new(StagedPdf {
                    name: file.name.clone(),
                    path: path.clone(),
                    pages,
                    failed: AtomicBool::new(false),
                }))
            }
        };
        Ok(Ok(PageSource {
            file,
            path,
            limits: *limits,
            text_layers,
            pdf,
        }))
    }

    /// Makes page `index` (from 0) of `source` into the book's page `number`: converts it
    /// (an image to PNG; a PDF page rendered at 300 dpi, with its text layer unless the
    /// source ignores them) with its preview, in `work_dir`, and stores its objects,
    /// overwriting any left by an earlier try. Returns the page's manifest entry, which the
    /// caller records. `Err` inside: the file's page cannot be made.
    pub async fn make_page(
        &self,
        book_id: &BookId,
        source: &PageSource,
        index: u32,
        number: u32,
        work_dir: &Path,
    ) -> Outcome<Page> {
        let limits = &source.limits;
        let convert = Convert {
            limits: *limits,
            budget: self.decode_budget(),
            tools: self.pdf_tools(),
            staging: Some(work_dir),
            text_layers: source.text_layers,
        };
        let unit = match &source.pdf {
            Some(pdf) => {
                let Some(page) = pdf.pages.get(index as usize).copied() else {
                    return Ok(Err(no_such_page(index)));
                };
                Unit::PdfPage(pdf.clone(), page)
            }
            None => {
                let bytes =
                    tokio::fs::read(&source.path)
                        .await
                        .map_err(|source| IngestError::Local {
                            what: "reading an uploaded image",
                            source,
                        })?;
                let file = UploadedFile {
                    name: source.file.name.clone(),
                    bytes: Bytes::from(bytes),
                };
                let header = match inspect(&file, limits) {
                    Ok(header) => header,
                    Err(rejection) => return Ok(Err(rejection)),
                };
                Unit::Image(file, header)
            }
        };
        // The page's number keeps its renderings apart from the pages in flight beside it.
        let converted = match convert.convert_one(number as usize, unit).await? {
            Ok(Some(converted)) => converted,
            Ok(None) => return Ok(Err(no_such_page(index))),
            Err(rejection) => return Ok(Err(rejection)),
        };
        let (entry, blobs) = page_blobs(book_id, number, converted, self.now());
        let stored = self.store_contents(book_id, &blobs).await;
        for (_, content) in &blobs {
            content.discard().await;
        }
        stored.map(|()| Ok(entry))
    }

    /// Stores each object, in order (the preview and text before nothing reads them: the
    /// manifest names the page only after).
    async fn store_contents(
        &self,
        book_id: &BookId,
        blobs: &[(String, Content)],
    ) -> Result<(), IngestError> {
        for (key, content) in blobs {
            let bytes = content.load().await?;
            self.store()
                .put(key, bytes, PutMode::Overwrite)
                .await
                .map_err(|source| IngestError::Books(storage(book_id, source)))?;
        }
        Ok(())
    }
}

fn no_such_page(index: u32) -> FileRejection {
    FileRejection::Corrupt {
        detail: format!("the file has no page {}", index + 1),
    }
}

/// A UUIDv7 of `now` in text: upload ids sort by time, and tell an upload's age (the
/// sweeper reads it back).
fn uuid_v7(now: chrono::DateTime<chrono::Utc>) -> String {
    let millis = now.timestamp_millis().max(0) as u64;
    let random: u128 = rand::random();
    let value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7 << 76)
        | ((random >> 64) & 0x0FFF) << 64
        | (0b10 << 62)
        | (random & 0x3FFF_FFFF_FFFF_FFFF);
    let hex = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Up to `len` bytes of the file at `path` from `start`.
async fn read_range(path: &Path, start: u64, len: usize) -> Result<Vec<u8>, IngestError> {
    let local = |source| IngestError::Local {
        what: "reading an uploaded file",
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(local)?;
    let mut bytes = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut bytes)
        .await
        .map_err(local)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_locates_each_page_in_its_file() {
        let file = |index, pages, first_page| UploadFile {
            index,
            name: format!("f{index}"),
            kind: FileKind::Pdf,
            bytes: 1,
            sha256: String::new(),
            pages,
            first_page,
        };
        let upload = Upload {
            id: uuid_v7(chrono::Utc::now()),
            files: vec![file(0, 1, 5), file(1, 3, 6)],
        };
        assert_eq!(upload.pages(), [5, 6, 7, 8]);
        assert_eq!(upload.locate(5).map(|(f, i)| (f.index, i)), Some((0, 0)));
        assert_eq!(upload.locate(8).map(|(f, i)| (f.index, i)), Some((1, 2)));
        assert_eq!(upload.locate(9), None);
        assert_eq!(upload.id.len(), 36);
        assert_eq!(&upload.id[14..15], "7");
    }
}
