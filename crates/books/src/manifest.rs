//! The manifest model (`metadata.json`, SPEC 3.3).
//!
//! Paths in the manifest (`image`, `ocr.text`, `guidelines.final`) are relative to the
//! book's folder (`books/{book_id}/`); [`crate::layout::book_key`] makes them full keys.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::BookId;
use crate::layout;

/// The manifest schema this crate writes. Manifests with a higher version are refused
/// rather than rewritten without fields this version does not know.
pub const SCHEMA_VERSION: u32 = 1;

/// A book's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The schema of this document; see [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The book.
    pub book_id: BookId,
    /// The title.
    pub title: String,
    /// When the book was created.
    pub created_at: DateTime<Utc>,
    /// When the manifest was last written.
    pub updated_at: DateTime<Utc>,
    /// The lowest page number never handed out. Ingestion reserves numbers here before it
    /// stores images, so concurrent uploads never share a number; a crashed upload leaves
    /// a gap rather than a page without its image.
    #[serde(default)]
    pub next_page: u32,
    /// The pages, sorted by number.
    pub pages: Vec<Page>,
    /// Guidelines progress.
    pub guidelines: GuidelinesState,
}

/// One page of a book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The page number, from 1, in upload order.
    pub page: u32,
    /// The normalized PNG, relative to the book (`pages/0001.png`).
    pub image: String,
    /// The uploaded file name.
    pub source_name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size of the PNG in bytes.
    pub bytes: u64,
    /// SHA-256 of the PNG, lowercase hex.
    pub sha256: String,
    /// OCR state of the page.
    pub ocr: OcrState,
}

/// OCR state of one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrState {
    /// Where the page is.
    pub status: OcrStatus,
    /// The text file, relative to the book (`ocr/0001.txt`), once done.
    pub text: Option<String>,
    /// The engine that produced the text.
    pub engine: Option<String>,
    /// Number of characters recognized.
    pub chars: Option<u64>,
    /// Recognition attempts so far.
    pub attempts: u32,
    /// The last error, when failed.
    pub error: Option<String>,
    /// When this state last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Default for OcrState {
    fn default() -> Self {
        Self {
            status: OcrStatus::Pending,
            text: None,
            engine: None,
            chars: None,
            attempts: 0,
            error: None,
            updated_at: None,
        }
    }
}

/// OCR status of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcrStatus {
    /// Not recognized yet.
    Pending,
    /// Text recognized and stored.
    Done,
    /// Recognition failed; see `error`.
    Failed,
}

/// Guidelines progress of a book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuidelinesState {
    /// Where the book is.
    pub status: GuidelinesStatus,
    /// Pages whose guidelines are extracted.
    pub pages_done: u32,
    /// The finalized guidelines, relative to the book, once final.
    #[serde(rename = "final")]
    pub final_path: Option<String>,
}

impl Default for GuidelinesState {
    fn default() -> Self {
        Self {
            status: GuidelinesStatus::None,
            pages_done: 0,
            final_path: None,
        }
    }
}

/// Guidelines status of a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuidelinesStatus {
    /// Nothing extracted.
    None,
    /// Extraction running.
    Extracting,
    /// Every page extracted.
    Extracted,
    /// Finalized.
    Final,
}

impl Manifest {
    /// A new, empty manifest.
    pub fn new(book_id: BookId, title: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            book_id,
            title: title.into(),
            created_at: now,
            updated_at: now,
            next_page: 1,
            pages: Vec::new(),
            guidelines: GuidelinesState::default(),
        }
    }

    /// The page with number `page`.
    pub fn page(&self, page: u32) -> Option<&Page> {
        self.pages
            .binary_search_by_key(&page, |entry| entry.page)
            .ok()
            .map(|index| &self.pages[index])
    }

    /// The page with number `page`, for changing it.
    pub fn page_mut(&mut self, page: u32) -> Option<&mut Page> {
        match self.pages.binary_search_by_key(&page, |entry| entry.page) {
            Ok(index) => Some(&mut self.pages[index]),
            Err(_) => None,
        }
    }

    /// Inserts `page`, or replaces the page with its number; pages stay sorted.
    pub fn upsert_page(&mut self, page: Page) {
        match self
            .pages
            .binary_search_by_key(&page.page, |entry| entry.page)
        {
            Ok(index) => self.pages[index] = page,
            Err(index) => self.pages.insert(index, page),
        }
        self.next_page = self
            .next_page
            .max(self.pages.last().map_or(0, |last| last.page) + 1);
    }

    /// The highest page number, or 0 without pages.
    pub fn last_page(&self) -> u32 {
        self.pages.last().map_or(0, |page| page.page)
    }

    /// The number the next reserved page gets: after the last page and every reservation.
    pub fn next_free_page(&self) -> u32 {
        self.next_page.max(self.last_page() + 1).max(1)
    }
}

impl Page {
    /// A new page entry with pending OCR.
    pub fn new(
        page: u32,
        source_name: impl Into<String>,
        width: u32,
        height: u32,
        bytes: u64,
        sha256: impl Into<String>,
    ) -> Self {
        Self {
            page,
            image: layout::page_image_path(page),
            source_name: source_name.into(),
            width,
            height,
            bytes,
            sha256: sha256.into(),
            ocr: OcrState::default(),
        }
    }
}
