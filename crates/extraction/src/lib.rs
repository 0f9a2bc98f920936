//! Guidelines for Folio: extractors that turn a page's OCR text into teaching guidelines,
//! the `guidelines` job (page by page, SPEC 4.3) and the `finalize` job (one document per
//! book, SPEC 4.4).
//!
//! - [`Extractor`]: one page's OCR text (plus the topic the previous page ended in and the
//!   book's running headers) in, its topics out; errors classified by type
//!   ([`ExtractError::kind`]).
//! - [`RulesExtractor`]: offline and deterministic heuristics (the default).
//! - [`OpenAiExtractor`]: any OpenAI-compatible chat-completions endpoint (through
//!   `chat-client`) with a strict JSON schema of the page.
//! - [`finalize`]: merging per-page guidelines into one document (topics by normalized
//!   title, near-duplicate guidelines by token-set similarity) and its Markdown form.
//! - [`GuidelinesHandler`] and [`FinalizeHandler`]: the two jobs.
//!
//! Architecture Invariant: this crate knows nothing of sqlx, Postgres, SQLite, axum or
//! aws-sdk-s3; it sees storage only through `dyn BlobStore` and jobs through `jobs-core`.

mod error;
mod extractor;
pub mod finalize;
mod handler;
mod model;
mod numbering;
mod openai;
#[cfg(feature = "quality")]
pub mod quality;
mod rules;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::ExtractError;
pub use extractor::{Extractor, NearbyPage, PageInput, extract_book, normalize_line};
pub use handler::{
    FINALIZE_JOB_TYPE, FinalizeHandler, GUIDELINES_INCOMPLETE, GUIDELINES_JOB_TYPE,
    GuidelinesConfig, GuidelinesHandler, OCR_INCOMPLETE, pages_without_guidelines,
    pages_without_ocr,
};
pub use model::{
    FinalGuideline, FinalGuidelines, FinalTopic, Guideline, GuidelineKind, PageGuidelines, Topic,
};
pub use openai::{OpenAiExtractor, OpenAiExtractorConfig};
pub use rules::{RulesExtractor, running_lines};
