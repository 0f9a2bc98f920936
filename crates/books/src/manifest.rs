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
///
/// - 1: the fields of SPEC 3.3 and `next_page`.
/// - 2: the book's `language`; per page `ocr.hocr`, `ocr.confidence`, `ocr.words` and
///   `ocr.needs_review`. Every new field has a default, so version 1 manifests read as they
///   are (and are written back as version 2).
/// - 3: `writers`, the newest run of each job type that wrote the manifest (its fence).
pub const SCHEMA_VERSION: u32 = 3;

/// A book's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The schema of this document; see [`SCHEMA_VERSION`].
    pub schema_version: u32,
    pub book_id: BookId,
    pub title: String,
    /// The OCR language of the book, as for `tesseract -l` (`eng`, `deu`, `eng+fra`). `None`
    /// in books created before books had a language: their `ocr` jobs read them with the
    /// worker's `--tesseract-languages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
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
    pub guidelines: GuidelinesState,
    /// Per job type, the newest job run that wrote its part of the manifest. A write by an
    /// older run (a worker that lost its job while cut off, say) is refused: see
    /// [`Fence`].
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub writers: std::collections::BTreeMap<String, Fence>,
}

/// Who writes a manifest for a job: the job's id and the lease of its run. Runs are
/// ordered by job id (ids are UUIDv7, so a newer job has a greater id; one job of a type
/// is active per book at a time) and then by lease (each claim of a job raises it). A
/// [`crate::ManifestWriter`] with a fence refuses to write once a newer run of its job
/// type has written the manifest, with [`crate::BooksError::Fenced`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fence {
    /// The job's id (a UUIDv7 in text).
    pub job: String,
    /// The job's lease while this run holds it.
    pub lease: i64,
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
    /// The page's preview, relative to the book (`pages/0001.thumb.jpg`); pages stored
    /// before previews existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
    pub ocr: OcrState,
}

/// OCR state of one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrState {
    pub status: OcrStatus,
    /// The text file, relative to the book (`ocr/0001.txt`), once done.
    pub text: Option<String>,
    /// The engine that produced the text: `tesseract`, `openai`, or `pdf-text` (a PDF
    /// page's text layer).
    pub engine: Option<String>,
    /// Characters in the text (Unicode scalar values).
    pub chars: Option<u64>,
    /// Recognition attempts so far.
    pub attempts: u32,
    /// The last error, when failed.
    pub error: Option<String>,
    /// When this state last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// The page's hOCR (words with their boxes and confidences), relative to the book
    /// (`ocr/0001.hocr`), once done by an engine that gives one (tesseract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hocr: Option<String>,
    /// The mean confidence of the recognized words, 0 to 100, from an engine that gives one
    /// (tesseract); `None` for other engines and for a page without words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Words recognized, from an engine that counts them (tesseract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<u64>,
    /// Whether a person should look at the page: its `confidence` is under the worker's
    /// `--ocr-review-below`, or the engine found no words on it.
    #[serde(default)]
    pub needs_review: bool,
    /// How far the page was found turned, counter-clockwise in degrees (0, 90, 180, 270),
    /// when the engine looked: tesseract reads a page again with orientation detection when
    /// it read it badly upright, and records the angle when that reading is kept. The image
    /// stays as uploaded; the hOCR boxes are in its coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<u16>,
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
            hocr: None,
            confidence: None,
            words: None,
            needs_review: false,
            rotation: None,
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
    /// No `guidelines` job has started on the book.
    None,
    /// A `guidelines` job started and not every page is extracted yet: it runs, or it
    /// stopped part way.
    Extracting,
    /// Every page extracted.
    Extracted,
    /// A `finalize` job wrote the final guidelines (`final_path`).
    Final,
}

impl Manifest {
    /// A manifest without pages, its first page number 1, created and updated `now`.
    pub fn new(book_id: BookId, title: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            book_id,
            title: title.into(),
            language: None,
            created_at: now,
            updated_at: now,
            next_page: 1,
            pages: Vec::new(),
            guidelines: GuidelinesState::default(),
            writers: std::collections::BTreeMap::new(),
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
            thumbnail: None,
            ocr: OcrState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_manifest_reads_with_the_defaults_of_the_new_fields() {
        let json = r#"{
            "schema_version": 1, "book_id": "b1", "title": "T",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "next_page": 2,
            "pages": [{"page": 1, "image": "pages/0001.png", "source_name": "a.png",
                       "width": 1, "height": 1, "bytes": 1, "sha256": "00",
                       "ocr": {"status": "done", "text": "ocr/0001.txt", "engine": "tesseract",
                               "chars": 3, "attempts": 1, "error": null, "updated_at": null}}],
            "guidelines": {"status": "none", "pages_done": 0, "final": null}
        }"#;
        let manifest: Manifest = serde_json::from_str(json).unwrap();
        assert_eq!(manifest.language, None);
        let ocr = &manifest.pages[0].ocr;
        assert_eq!(ocr.status, OcrStatus::Done);
        assert_eq!(
            (ocr.hocr.as_deref(), ocr.confidence, ocr.words),
            (None, None, None)
        );
        assert!(!ocr.needs_review);
    }

    #[test]
    fn the_quality_fields_round_trip() {
        let mut manifest = Manifest::new(BookId::parse("b1").unwrap(), "T", Utc::now());
        manifest.language = Some("deu".to_owned());
        let mut page = Page::new(1, "a.png", 1, 1, 1, "00");
        page.ocr.hocr = Some(layout::ocr_hocr_path(1));
        page.ocr.confidence = Some(42.5);
        page.ocr.words = Some(7);
        page.ocr.needs_review = true;
        manifest.upsert_page(page);
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["language"], "deu");
        assert_eq!(json["pages"][0]["ocr"]["hocr"], "ocr/0001.hocr");
        assert_eq!(json["pages"][0]["ocr"]["needs_review"], true);
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, manifest);
    }
}
