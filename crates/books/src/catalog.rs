//! [`Books`]: create, read, list and update manifests, losing no concurrent update.

use std::sync::Arc;
use std::time::Duration;

use blob_store::{Blob, BlobError, BlobStore, ETag, PutMode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jobs_core::{Clock, SystemClock};

use crate::manifest::{Manifest, SCHEMA_VERSION};
use crate::writer::ManifestWriter;
use crate::{BookId, DecodeBudget, PdfTools, layout};

/// Why a manifest operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BooksError {
    /// The book has no manifest.
    #[error("book not found: {book_id}")]
    BookNotFound { book_id: BookId },
    /// A book with this id already exists.
    #[error("book already exists: {book_id}")]
    BookExists { book_id: BookId },
    /// Every attempt of a read-modify-write lost to a concurrent writer.
    #[error("manifest of {book_id} kept changing: gave up after {attempts} attempts")]
    UpdateConflict { book_id: BookId, attempts: u32 },
    /// The stored manifest is not valid JSON of the expected shape.
    #[error("manifest of {book_id} is corrupt")]
    CorruptManifest {
        book_id: BookId,
        #[source]
        source: serde_json::Error,
    },
    /// The stored manifest has a newer schema than this build understands.
    #[error("manifest of {book_id} has schema version {found}, newer than {SCHEMA_VERSION}")]
    UnsupportedSchema { book_id: BookId, found: u32 },
    #[error("storage failed for book {book_id}")]
    Storage {
        book_id: BookId,
        /// The storage error (see [`BlobError::is_transient`]).
        #[source]
        source: BlobError,
    },
    /// A newer run of the same job type wrote the manifest: this run lost its job and
    /// must stop writing (see [`crate::Fence`]).
    #[error(
        "manifest write of {book_id} refused: {job_type} run {ours:?} is fenced by the newer run {newer:?}"
    )]
    Fenced {
        book_id: BookId,
        /// The job type whose part of the manifest is fenced.
        job_type: String,
        /// This run.
        ours: crate::Fence,
        /// The newer run that wrote the manifest.
        newer: crate::Fence,
    },
    /// Listing the books failed.
    #[error("listing books failed")]
    ListFailed {
        #[source]
        source: BlobError,
    },
}

impl BooksError {
    /// Whether retrying later may succeed (storage transiently down, or contention).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Storage { source, .. } | Self::ListFailed { source } => source.is_transient(),
            Self::UpdateConflict { .. } => true,
            _ => false,
        }
    }
}

/// Retry bounds of [`Books::update`]: full-jitter exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// The backoff ceiling after the first conflict; doubles per conflict.
    pub base_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
}

impl Default for UpdatePolicy {
    /// 30 attempts, 5 ms doubling up to 250 ms: a few seconds of heavy contention.
    fn default() -> Self {
        Self {
            max_attempts: 30,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(250),
        }
    }
}

impl UpdatePolicy {
    /// A random delay in `[0, min(max_delay, base_delay * 2^(conflicts - 1))]`.
    fn backoff(&self, conflicts: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1_u32 << conflicts.saturating_sub(1).min(20))
            .min(self.max_delay);
        let ceiling_micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::random_range(0..=ceiling_micros))
    }
}

/// The books of one [`BlobStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Books {
    store: Arc<dyn BlobStore>,
    policy: UpdatePolicy,
    decode_budget: DecodeBudget,
    pdf_tools: PdfTools,
    /// The manifests' timestamps, as the jobs' come from the job runtime's clock.
    clock: Arc<dyn Clock>,
}

impl Books {
    /// Books stored in `store`, with the default [`UpdatePolicy`].
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        Self {
            store,
            policy: UpdatePolicy::default(),
            decode_budget: DecodeBudget::unlimited(),
            pdf_tools: PdfTools::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Takes the manifests' timestamps (`created_at`, `updated_at`, a page's OCR
    /// `updated_at`) from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The time now, by these books' clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Replaces the retry bounds of [`Books::update`].
    pub fn with_update_policy(mut self, policy: UpdatePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Shares `budget` among every ingestion of these books (and of their clones): the
    /// memory that decoding uploaded images may take at once.
    pub fn with_decode_budget(mut self, budget: DecodeBudget) -> Self {
        self.decode_budget = budget;
        self
    }

    /// The decode budget of these books' ingestions.
    pub fn decode_budget(&self) -> &DecodeBudget {
        &self.decode_budget
    }

    /// Replaces the poppler-utils programs that read uploaded PDFs (default: found on
    /// `PATH`).
    pub fn with_pdf_tools(mut self, tools: PdfTools) -> Self {
        self.pdf_tools = tools;
        self
    }

    /// The programs that read uploaded PDFs.
    pub fn pdf_tools(&self) -> &PdfTools {
        &self.pdf_tools
    }

    /// The underlying store (for page images, OCR text and guidelines).
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Creates a book with an empty manifest; [`BooksError::BookExists`] if it exists.
    pub async fn create(&self, book_id: &BookId, title: &str) -> Result<Manifest, BooksError> {
        self.create_with_language(book_id, title, None).await
    }

    /// Creates a book with an empty manifest and its OCR `language` (as for `tesseract -l`;
    /// `None`: the worker's default); [`BooksError::BookExists`] if it exists.
    pub async fn create_with_language(
        &self,
        book_id: &BookId,
        title: &str,
        language: Option<String>,
    ) -> Result<Manifest, BooksError> {
        let mut manifest = Manifest::new(book_id.clone(), title, self.now());
        manifest.language = language;
        let key = layout::manifest_key(book_id);
        match self
            .store
            .put(&key, encode(&manifest), PutMode::Create)
            .await
        {
            Ok(_) => Ok(manifest),
            Err(BlobError::PreconditionFailed { .. }) => Err(BooksError::BookExists {
                book_id: book_id.clone(),
            }),
            Err(source) => Err(storage(book_id, source)),
        }
    }

    /// Reads a book's manifest; [`BooksError::BookNotFound`] when the book has none.
    pub async fn manifest(&self, book_id: &BookId) -> Result<Manifest, BooksError> {
        Ok(self.manifest_with_etag(book_id).await?.0)
    }

    /// Reads a book's manifest and the etag to pass to a conditional write.
    pub async fn manifest_with_etag(
        &self,
        book_id: &BookId,
    ) -> Result<(Manifest, ETag), BooksError> {
        let (manifest, blob) = self.read_manifest(book_id).await?;
        Ok((manifest, blob.etag))
    }

    /// The manifest and the stored object it was decoded from.
    async fn read_manifest(&self, book_id: &BookId) -> Result<(Manifest, Blob), BooksError> {
        let blob = match self.store.get(&layout::manifest_key(book_id)).await {
            Ok(blob) => blob,
            Err(BlobError::NotFound { .. }) => {
                return Err(BooksError::BookNotFound {
                    book_id: book_id.clone(),
                });
            }
            Err(source) => return Err(storage(book_id, source)),
        };
        let manifest = decode(book_id, &blob.bytes)?;
        Ok((manifest, blob))
    }

    /// The ids of every book, sorted.
    pub async fn list(&self) -> Result<Vec<BookId>, BooksError> {
        let entries = self
            .store
            .list(layout::BOOKS_PREFIX)
            .await
            .map_err(|source| BooksError::ListFailed { source })?;
        let mut ids: Vec<BookId> = entries
            .iter()
            .filter_map(|entry| {
                let rest = entry.key.strip_prefix(layout::BOOKS_PREFIX)?;
                let (id, file) = rest.split_once('/')?;
                (file == "metadata.json").then(|| BookId::parse(id).ok())?
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Applies `change` to the book's manifest: reads it, applies the change, sets
    /// `updated_at` and writes with `PutMode::Update { etag }`. When another writer got
    /// there first, it re-reads and re-applies `change` to the fresh manifest, after a
    /// jittered backoff, up to [`UpdatePolicy::max_attempts`]. So `change` runs once per
    /// attempt on a fresh copy, and only the last run is stored: concurrent writers never
    /// lose each other's changes. Returns the manifest as written.
    ///
    /// A write whose answer was lost may have taken effect (the store's retry of it then
    /// fails its precondition on its own write): when the re-read finds exactly the bytes
    /// last sent, that write is the one stored and `change` is not applied again, so a
    /// change that counts (`attempts += 1`) counts once.
    pub async fn update<F>(&self, book_id: &BookId, change: F) -> Result<Manifest, BooksError>
    where
        F: FnMut(&mut Manifest) + Send,
    {
        self.update_unconfirmed(book_id, None, change, &mut None)
            .await
    }

    /// [`Books::update`] that also knows the last write a previous call sent without
    /// learning its outcome (`unconfirmed`, kept by the caller between calls): when the
    /// stored manifest is exactly that write, it is returned and `change` is not applied
    /// (it is in there already). A failed write's bytes are left in `unconfirmed`.
    ///
    /// With `fence` (a job type and its run), the write is refused with
    /// [`BooksError::Fenced`] when a newer run of that type wrote the manifest; else the
    /// run is recorded in `writers`.
    pub(crate) async fn update_unconfirmed<F>(
        &self,
        book_id: &BookId,
        fence: Option<&(String, crate::Fence)>,
        mut change: F,
        unconfirmed: &mut Option<Unconfirmed>,
    ) -> Result<Manifest, BooksError>
    where
        F: FnMut(&mut Manifest) + Send,
    {
        let key = layout::manifest_key(book_id);
        let max_attempts = self.policy.max_attempts.max(1);
        for attempt in 1..=max_attempts {
            let (mut manifest, blob) = self.read_manifest(book_id).await?;
            if let Some(Unconfirmed { bytes, manifest }) = unconfirmed.take()
                && bytes == blob.bytes
            {
                // `updated_at` makes every write's bytes unique: these are ours.
                tracing::info!(book.id = %book_id, attempt, "an earlier manifest write whose answer was lost is stored; not applied again");
                return Ok(manifest);
            }
            if let Some((job_type, ours)) = fence {
                match manifest.writers.get(job_type) {
                    Some(newer) if newer > ours => {
                        return Err(BooksError::Fenced {
                            book_id: book_id.clone(),
                            job_type: job_type.clone(),
                            ours: ours.clone(),
                            newer: newer.clone(),
                        });
                    }
                    _ => {
                        manifest.writers.insert(job_type.clone(), ours.clone());
                    }
                }
            }
            let previous = manifest.updated_at;
            change(&mut manifest);
            manifest.book_id = book_id.clone();
            manifest.schema_version = SCHEMA_VERSION;
            // Later than the write it replaces, even on a clock that stands still or runs
            // behind another host's: every write's bytes differ from the last one's, which
            // is how a write whose answer was lost is recognized.
            manifest.updated_at = self.now().max(previous + chrono::Duration::microseconds(1));
            let bytes = encode(&manifest);
            match self
                .store
                .put(&key, bytes.clone(), PutMode::Update { etag: blob.etag })
                .await
            {
                Ok(_) => return Ok(manifest),
                Err(BlobError::PreconditionFailed { .. }) => {
                    *unconfirmed = Some(Unconfirmed { bytes, manifest });
                    tracing::debug!(book.id = %book_id, attempt, "manifest changed concurrently, retrying");
                    if attempt < max_attempts {
                        tokio::time::sleep(self.policy.backoff(attempt)).await;
                    }
                }
                Err(source) => {
                    // Unless the store refused the write outright, it may have landed.
                    if source.is_transient() {
                        *unconfirmed = Some(Unconfirmed { bytes, manifest });
                    }
                    return Err(storage(book_id, source));
                }
            }
        }
        Err(BooksError::UpdateConflict {
            book_id: book_id.clone(),
            attempts: max_attempts,
        })
    }

    /// A batching writer of page updates for one book, writing the manifest once every
    /// `flush_every` changes (at least 1); see [`ManifestWriter`].
    pub fn manifest_writer(&self, book_id: &BookId, flush_every: usize) -> ManifestWriter {
        ManifestWriter::new(self.clone(), book_id.clone(), flush_every)
    }
}

/// A manifest write sent without learning whether it was stored (its answer was lost, or
/// the store's retry of it found its own write: `PreconditionFailed`).
#[derive(Debug)]
pub(crate) struct Unconfirmed {
    bytes: Bytes,
    manifest: Manifest,
}

fn encode(manifest: &Manifest) -> Bytes {
    let mut json = serde_json::to_vec_pretty(manifest)
        .unwrap_or_else(|error| unreachable!("a manifest always serializes: {error}"));
    json.push(b'\n');
    Bytes::from(json)
}

fn decode(book_id: &BookId, bytes: &[u8]) -> Result<Manifest, BooksError> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let corrupt = |source| BooksError::CorruptManifest {
        book_id: book_id.clone(),
        source,
    };
    let version: Version = serde_json::from_slice(bytes).map_err(corrupt)?;
    if version.schema_version > SCHEMA_VERSION {
        return Err(BooksError::UnsupportedSchema {
            book_id: book_id.clone(),
            found: version.schema_version,
        });
    }
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub(crate) fn storage(book_id: &BookId, source: BlobError) -> BooksError {
    BooksError::Storage {
        book_id: book_id.clone(),
        source,
    }
}
