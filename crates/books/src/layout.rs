//! Storage keys of a book (SPEC 3.2). Every key is built from a validated [`BookId`].

use crate::BookId;

/// The prefix under which every book lives.
pub const BOOKS_PREFIX: &str = "books/";

/// Everything of one book: `books/{book_id}/`.
pub fn book_prefix(book_id: &BookId) -> String {
    format!("{BOOKS_PREFIX}{book_id}/")
}

/// The manifest: `books/{book_id}/metadata.json`.
pub fn manifest_key(book_id: &BookId) -> String {
    format!("{BOOKS_PREFIX}{book_id}/metadata.json")
}

/// A page image, relative to the book: `pages/{page:04}.png` (as stored in the manifest).
pub fn page_image_path(page: u32) -> String {
    format!("pages/{page:04}.png")
}

/// A page's preview (a small JPEG for page grids), relative to the book:
/// `pages/{page:04}.thumb.jpg`, beside its image.
pub fn page_thumbnail_path(page: u32) -> String {
    format!("pages/{page:04}.thumb.jpg")
}

/// The folder of an upload's files as they came, relative to the book:
/// `uploads/{upload_id}/`; the `ingest` job makes pages from them, then deletes them.
pub fn upload_dir(upload_id: &str) -> String {
    format!("uploads/{upload_id}/")
}

/// File `index` (from 0) of an upload, relative to the book: `uploads/{upload_id}/{index:04}`.
pub fn upload_file_path(upload_id: &str, index: u32) -> String {
    format!("{}{index:04}", upload_dir(upload_id))
}

/// A page's OCR text, relative to the book: `ocr/{page:04}.txt`.
pub fn ocr_text_path(page: u32) -> String {
    format!("ocr/{page:04}.txt")
}

/// A page's hOCR, relative to the book: `ocr/{page:04}.hocr`.
pub fn ocr_hocr_path(page: u32) -> String {
    format!("ocr/{page:04}.hocr")
}

/// The folder of the per-page guidelines, relative to the book.
pub const PAGE_GUIDELINES_DIR: &str = "guidelines/pages/";

/// A page's guidelines, relative to the book: `guidelines/pages/{page:04}.json`.
pub fn page_guidelines_path(page: u32) -> String {
    format!("{PAGE_GUIDELINES_DIR}{page:04}.json")
}

/// The finalized guidelines, relative to the book.
pub const FINAL_JSON_PATH: &str = "guidelines/final.json";

/// The finalized guidelines for people, relative to the book.
pub const FINAL_MARKDOWN_PATH: &str = "guidelines/final.md";

/// The full key of a path relative to the book (e.g. a manifest's `image`).
pub fn book_key(book_id: &BookId, relative_path: &str) -> String {
    format!("{BOOKS_PREFIX}{book_id}/{relative_path}")
}
