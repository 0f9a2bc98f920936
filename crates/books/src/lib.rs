//! Books: the manifest (`books/{book_id}/metadata.json`) and page ingestion.
//!
//! - [`BookId`]: the validated id (1-64 chars of `[a-z0-9_-]`, starting with a letter or
//!   digit); every storage key is built from one, so a bad id never reaches storage.
//! - [`Manifest`]: the JSON model of SPEC 3.3, versioned by `schema_version`.
//! - [`Books`]: create, read and list books, and [`Books::update`], the read-modify-write
//!   with `PutMode::Update { etag }` and a bounded, jittered retry that never loses a
//!   concurrent writer's change.
//! - [`ManifestWriter`]: folds many page updates into one manifest write every
//!   `manifest_flush_every` pages.
//! - [`Books::ingest_pages`]: validates, decodes (under limits) and converts uploads to
//!   PNG, all or nothing; a PDF becomes one page per PDF page ([`pdf`]: rendered at 300
//!   dpi by poppler-utils, text layers kept as OCR text of engine `pdf-text`).
//!
//! Architecture Invariant: this crate sees storage only through `dyn BlobStore`; it knows
//! nothing of S3, the filesystem, HTTP or jobs.

mod book_id;
mod catalog;
pub mod child;
mod ingest;
pub mod layout;
mod manifest;
pub mod pdf;
#[cfg(feature = "testing")]
pub mod testing;
mod upload;
mod writer;

pub use book_id::{BookId, InvalidBookId};
pub use catalog::{Books, BooksError, UpdatePolicy};
pub use ingest::{
    DecodeBudget, FileRejection, IngestError, IngestLimits, RejectedFile, THUMBNAIL_WIDTH,
    TextLayers, UploadedFile,
};
pub use manifest::{
    Fence, GuidelinesState, GuidelinesStatus, Manifest, OcrState, OcrStatus, Page, SCHEMA_VERSION,
};
pub use pdf::{PDF_TEXT_ENGINE, PdfTools};
pub use upload::{FileKind, PageSource, StagedInput, Upload, UploadFile};
pub use writer::{ManifestChange, ManifestWriter};
