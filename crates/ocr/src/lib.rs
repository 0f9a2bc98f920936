//! OCR for Folio: engines that turn a page image into text, and the bulk `ocr` job handler.
//!
//! - [`OcrEngine`]: one page PNG in, its text out, cancellable, with errors classified by
//!   type ([`OcrError::kind`]): retryable, terminal for the page, or fatal for the whole job
//!   ([`OcrError::affects_every_page`]).
//! - [`TesseractEngine`]: the `tesseract` CLI (Debian `tesseract-ocr`), one process per page
//!   with `OMP_THREAD_LIMIT=1`, a timeout, killed on cancel; failures classified by exit
//!   status and signal; a two-column page that tesseract reads partly straight across
//!   its gutter is read column by column ([`page_text`]).
//! - [`OpenAiEngine`]: any OpenAI-compatible chat-completions endpoint through
//!   `chat-client`, the page sent as a data URL; failures classified by HTTP status and
//!   transport error type.
//! - [`OcrHandler`]: the `ocr` job (SPEC 4.2): pages `ocr_concurrency` at a time, per-page
//!   retries with backoff, failed pages recorded with their reason, the manifest written
//!   every `manifest_flush_every` pages and at the end, on cancel and on shutdown, and a
//!   checkpoint ([`OcrCheckpoint`]) that only ever names pages the manifest durably holds
//!   as done, so resume and page retry redo exactly the pages not done.
//! - [`bench`](mod@bench): the full pipeline and bare tesseract on the same pages, timed.
//!
//! Architecture Invariant: this crate knows nothing of sqlx, Postgres, SQLite, axum or
//! aws-sdk-s3; it sees storage only through `dyn BlobStore` and jobs through `jobs-core`.

pub mod bench;
mod columns;
mod engine;
mod error;
mod handler;
pub mod languages;
mod openai;
mod tesseract;
#[cfg(feature = "testing")]
pub mod testing;

pub use engine::{OcrEngine, PageImage, Recognized};
pub use error::OcrError;
pub use handler::{
    DEFAULT_REVIEW_BELOW, OCR_JOB_TYPE, OcrCheckpoint, OcrHandler, OcrJobConfig, OcrPayload,
};
pub use openai::{DEFAULT_PROMPT as OPENAI_DEFAULT_PROMPT, OpenAiConfig, OpenAiEngine};
pub use page_jobs::PageRetryPolicy;
pub use tesseract::{TesseractConfig, TesseractEngine, page_text, word_quality};
