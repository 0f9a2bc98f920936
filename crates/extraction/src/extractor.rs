//! The extractor seam: one page's OCR text in, its topics out.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{ExtractError, Topic};

/// One page to extract, with what the book around it says.
#[derive(Debug, Clone)]
pub struct PageInput {
    /// The page number (for logs; the page's JSON gets it from Folio, not the extractor).
    pub page: u32,
    /// The page's OCR text.
    pub text: String,
    /// The title of the topic the previous page ended in, if any: a page without a heading
    /// continues it.
    pub previous_topic: Option<String>,
    /// Lines repeated on most pages of the book (running headers and footers), normalized
    /// with [`normalize_line`]; an extractor ignores them.
    pub running_lines: Arc<HashSet<String>>,
}

/// A line as compared for running headers and footers: lowercase, inner whitespace
/// collapsed, digits dropped (so "Fractions - 12" and "Fractions - 13" are one line).
pub fn normalize_line(line: &str) -> String {
    line.split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|c| !c.is_ascii_digit())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Extracts the guidelines of one page.
///
/// Implementations must stop promptly when `cancel` fires (returning
/// [`ExtractError::Cancelled`]) and classify failures by type ([`ExtractError::kind`]),
/// never by message text.
#[async_trait]
pub trait Extractor: Send + Sync + fmt::Debug + 'static {
    /// The extractor's name (`rules`, `openai:MODEL`).
    fn name(&self) -> &str;

    /// The topics of `page`, in page order.
    async fn extract(
        &self,
        page: &PageInput,
        cancel: &CancellationToken,
    ) -> Result<Vec<Topic>, ExtractError>;
}
