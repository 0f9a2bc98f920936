//! Finalization (SPEC 4.4): per-page guidelines merged into one document. TO BE WRITTEN.

use crate::{FinalGuidelines, PageGuidelines};

/// Merges the pages' guidelines (in page order) into the book's final guidelines.
pub fn merge(book_id: &str, _pages: &[PageGuidelines]) -> FinalGuidelines {
    FinalGuidelines {
        book_id: book_id.to_owned(),
        topics: Vec::new(),
    }
}

/// `final.json`: pretty JSON with a trailing newline; the same input gives the same bytes.
pub fn to_json(guidelines: &FinalGuidelines) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(guidelines)
        .unwrap_or_else(|error| unreachable!("guidelines always serialize: {error}"));
    json.push(b'\n');
    json
}

/// `final.md`: a heading per topic, one bullet per guideline with its kind and pages.
pub fn to_markdown(_guidelines: &FinalGuidelines, _book_title: &str) -> String {
    String::new()
}
