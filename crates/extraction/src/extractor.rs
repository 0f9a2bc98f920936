//! The extractor seam: one page's OCR text in, its topics out.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{ExtractError, PageGuidelines, Topic, running_lines};

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
    /// The page before in the book, if any: lines at the top of this page that finish its
    /// last sentence belong to the guideline that sentence starts there.
    pub previous_page: Option<NearbyPage>,
    /// The page after in the book, if any: a sentence this page leaves unfinished is
    /// completed from its first lines (and lists both pages).
    pub next_page: Option<NearbyPage>,
}

impl PageInput {
    /// A page with no neighbours and no running lines.
    pub fn new(page: u32, text: impl Into<String>) -> Self {
        Self {
            page,
            text: text.into(),
            previous_topic: None,
            running_lines: Arc::default(),
            previous_page: None,
            next_page: None,
        }
    }
}

/// A page next to the one extracted: its number and OCR text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearbyPage {
    pub page: u32,
    pub text: Arc<str>,
}

/// A line as compared for running headers and footers: lowercase, inner whitespace
/// collapsed, and a number replaced by `#` only where it reads as a page number (a folio):
/// the first or last word of the line (not a number that ends a sentence, "equals 43."),
/// after "page" / "p." / "pg.", or the total of "N of M" and "N/M" after one. So
/// "Fractions - 12" and "Fractions - 13" are one line, and "Page 21 of the book" and "Page 22
/// of the book" too, while "Example: 21 plus 22 equals 43." stays its own.
pub fn normalize_line(line: &str) -> String {
    let words: Vec<String> = spaced_separators(line)
        .split_whitespace()
        .map(|word| word.chars().flat_map(char::to_lowercase).collect())
        .collect();
    let last = words.len().saturating_sub(1);
    let mut folio_before = false;
    let mut normalized = Vec::with_capacity(words.len());
    for (index, word) in words.iter().enumerate() {
        let after_page_word = index > 0
            && matches!(
                words[index - 1].as_str(),
                "page" | "p." | "p" | "pg." | "pg" | "pages" | "pp."
            );
        let after_folio_total = folio_before && index > 0 && words[index - 1] == "of";
        let folio = folio_number(word).is_some_and(|sentence_end| {
            after_page_word || after_folio_total || ((index == 0 || index == last) && !sentence_end)
        });
        if folio {
            normalized.push(replace_digits(word));
        } else if let Some((page, total)) = word.split_once('/')
            && folio_number(page).is_some()
            && folio_number(total).is_some()
            && (index == 0 || index == last || after_page_word)
        {
            normalized.push(format!(
                "{}/{}",
                replace_digits(page),
                replace_digits(total)
            ));
        } else {
            normalized.push(word.clone());
        }
        folio_before = folio || (folio_before && word == "of");
    }
    normalized.join(" ")
}

/// The line with a space on each side of a dash, bar or dot next to a digit: OCR reads
/// "Everyone - 14" as "Everyone-14" as often as not.
fn spaced_separators(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut spaced = String::with_capacity(line.len() + 4);
    for (index, c) in chars.iter().enumerate() {
        let separator = matches!(c, '-' | '–' | '—' | '|' | '·' | '•');
        let by_digit = index
            .checked_sub(1)
            .is_some_and(|before| chars[before].is_ascii_digit())
            || chars.get(index + 1).is_some_and(char::is_ascii_digit);
        if separator && by_digit {
            spaced.extend([' ', *c, ' ']);
        } else {
            spaced.push(*c);
        }
    }
    spaced
}

/// If `word` is a number with only decoration around it ("12", "[12]", "-12-", "12."),
/// whether it ends a sentence (a trailing `.`, `,`, `;`, `!`, `?` or `:`).
fn folio_number(word: &str) -> Option<bool> {
    const DECORATION: &[char] = &['-', '–', '—', '|', '[', ']', '(', ')', '·', '•', '*', '~'];
    let core = word.trim_matches(DECORATION);
    let sentence_end = core.ends_with(['.', ',', ';', '!', '?', ':']);
    let core = core.trim_end_matches(['.', ',', ';', '!', '?', ':']);
    (!core.is_empty() && core.len() <= 4 && core.bytes().all(|byte| byte.is_ascii_digit()))
        .then_some(sentence_end)
}

/// The word with each run of digits replaced by one `#`.
fn replace_digits(word: &str) -> String {
    let mut replaced = String::with_capacity(word.len());
    for c in word.chars() {
        if c.is_ascii_digit() {
            if !replaced.ends_with('#') {
                replaced.push('#');
            }
        } else {
            replaced.push(c);
        }
    }
    replaced
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

/// Every page of a book (number and OCR text, in book order) extracted by `extractor` as
/// the `guidelines` job does: the book's running lines, each page continuing the topic the
/// one before ended in, and each page seeing its neighbours. Pages run one at a time.
pub async fn extract_book(
    extractor: &dyn Extractor,
    pages: &[(u32, &str)],
    cancel: &CancellationToken,
) -> Result<Vec<PageGuidelines>, ExtractError> {
    let running = Arc::new(running_lines(pages.iter().map(|(_, text)| *text)));
    let nearby = |index: usize| {
        pages.get(index).map(|(page, text)| NearbyPage {
            page: *page,
            text: Arc::from(*text),
        })
    };
    let mut previous_topic: Option<String> = None;
    let mut book = Vec::with_capacity(pages.len());
    for (index, (page, text)) in pages.iter().enumerate() {
        let input = PageInput {
            page: *page,
            text: (*text).to_owned(),
            previous_topic: previous_topic.clone(),
            running_lines: running.clone(),
            previous_page: index.checked_sub(1).and_then(nearby),
            next_page: nearby(index + 1),
        };
        let topics = extractor.extract(&input, cancel).await?;
        if let Some(last) = topics.last() {
            previous_topic = Some(last.title.clone());
        }
        book.push(PageGuidelines {
            page: *page,
            topics,
        });
    }
    Ok(book)
}
