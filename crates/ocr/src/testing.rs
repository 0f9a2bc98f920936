//! Test helpers (feature `testing`): the page fixtures with their known text, the character
//! error rate, a check that tesseract is installed, and a scripted engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use books::{BookId, Books, IngestLimits, Manifest, OcrStatus, UploadedFile};
use bytes::Bytes;
use page_jobs::testing::PageScript;
use tokio_util::sync::CancellationToken;

use crate::{OcrEngine, OcrError, PageImage, TesseractEngine};

/// Number of fixture pages.
pub const FIXTURE_PAGES: u32 = 12;

/// One fixture page: a PNG rendered from known text.
#[derive(Debug, Clone)]
pub struct FixturePage {
    /// Its number, from 1.
    pub number: u32,
    /// The PNG (DejaVu Sans, 26 pt, 1-bit, a few KB).
    pub png: Bytes,
    /// The text it shows.
    pub text: String,
}

/// The folder of the fixtures (`crates/ocr/tests/fixtures`).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The twelve fixture pages, in order.
pub fn fixture_pages() -> Vec<FixturePage> {
    (1..=FIXTURE_PAGES)
        .map(|number| {
            let dir = fixtures_dir();
            let png = std::fs::read(dir.join(format!("page-{number:02}.png")))
                .expect("fixture png is readable");
            let text = std::fs::read_to_string(dir.join(format!("page-{number:02}.txt")))
                .expect("fixture text is readable");
            FixturePage {
                number,
                png: Bytes::from(png),
                text,
            }
        })
        .collect()
}

/// `count` fixture pages as uploads named `page-001.png`, `page-002.png`, ...: the twelve in
/// order, repeated when `count` is more.
pub fn fixture_uploads(count: usize) -> Vec<UploadedFile> {
    fixture_pages()
        .into_iter()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(index, page)| UploadedFile {
            name: format!("page-{:03}.png", index + 1),
            bytes: page.png,
        })
        .collect()
}

/// Creates book `id` titled `title` with `count` fixture pages ([`fixture_uploads`]).
pub async fn fixture_book(books: &Books, id: &str, title: &str, count: usize) -> BookId {
    let book_id = BookId::parse(id).expect("a valid book id");
    books
        .create(&book_id, title)
        .await
        .expect("the book is created");
    books
        .ingest_pages(&book_id, fixture_uploads(count), &IngestLimits::default())
        .await
        .expect("the fixture pages are ingested");
    book_id
}

/// The pages of `manifest` whose OCR is done, in order.
pub fn done_pages(manifest: &Manifest) -> std::collections::BTreeSet<u32> {
    manifest
        .pages
        .iter()
        .filter(|page| page.ocr.status == OcrStatus::Done)
        .map(|page| page.page)
        .collect()
}

/// The German page: a letter-size page at 300 dpi (2550 x 3300) of German text with
/// umlauts and `ß` (`deu-page.png`, made by `generate-deu.sh`), numbered 1. Read it with
/// `deu`.
pub fn german_page() -> FixturePage {
    let dir = fixtures_dir();
    FixturePage {
        number: 1,
        png: Bytes::from(std::fs::read(dir.join("deu-page.png")).expect("fixture png is readable")),
        text: std::fs::read_to_string(dir.join("deu-page.txt")).expect("fixture text is readable"),
    }
}

/// A two-column page (`two-columns.png`, made by `generate-two-columns.sh`), numbered 44:
/// tesseract reads the lower rows of its columns straight across the gutter. Its text is
/// the left column, then the right one, then the footer.
pub fn two_column_page() -> FixturePage {
    let dir = fixtures_dir();
    FixturePage {
        number: 44,
        png: Bytes::from(
            std::fs::read(dir.join("two-columns.png")).expect("fixture png is readable"),
        ),
        text: std::fs::read_to_string(dir.join("two-columns.txt"))
            .expect("fixture text is readable"),
    }
}

/// Letter size at 300 dpi, in pixels.
pub const FULL_PAGE_SIZE: (u32, u32) = (2550, 3300);

/// `count` full book pages: letter size at 300 dpi (2550 x 3300, 8-bit grey PNG), each the
/// fixture strips (scaled 1.5 times, so their 26 px letters become about 10 pt at 300 dpi)
/// stacked in one column from the top margin down, as many as fit, continuing through the
/// fixtures in order from page to page. The text of each is its strips' texts in order.
pub fn full_pages(count: usize) -> Vec<FixturePage> {
    use image::{GrayImage, ImageFormat, Luma, imageops};

    const MARGIN: u32 = 150;
    let (width, height) = FULL_PAGE_SIZE;
    let strips: Vec<(GrayImage, String)> = fixture_pages()
        .into_iter()
        .map(|page| {
            let strip = image::load_from_memory_with_format(&page.png, ImageFormat::Png)
                .expect("fixture pngs decode")
                .to_luma8();
            let scaled = imageops::resize(
                &strip,
                strip.width() * 3 / 2,
                strip.height() * 3 / 2,
                imageops::FilterType::Triangle,
            );
            (scaled, page.text)
        })
        .collect();
    let mut next = 0;
    (1..=count)
        .map(|number| {
            let mut canvas = GrayImage::from_pixel(width, height, Luma([255]));
            let mut texts = Vec::new();
            let mut top = MARGIN;
            loop {
                let (strip, text) = &strips[next % strips.len()];
                if top + strip.height() > height - MARGIN {
                    break;
                }
                imageops::overlay(&mut canvas, strip, i64::from(MARGIN), i64::from(top));
                texts.push(text.trim_end().to_owned());
                top += strip.height();
                next += 1;
            }
            let mut png = std::io::Cursor::new(Vec::new());
            canvas
                .write_to(&mut png, ImageFormat::Png)
                .expect("a png encodes");
            FixturePage {
                number: number as u32,
                png: Bytes::from(png.into_inner()),
                text: texts.join("\n"),
            }
        })
        .collect()
}

/// Edit distance over characters between `expected` and `actual` divided by the length
/// of `expected`, after collapsing every run of whitespace into one space.
pub fn character_error_rate(expected: &str, actual: &str) -> f64 {
    let normalize = |text: &str| -> Vec<char> {
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .collect()
    };
    let expected = normalize(expected);
    let actual = normalize(actual);
    if expected.is_empty() {
        return if actual.is_empty() { 0.0 } else { 1.0 };
    }
    let mut previous: Vec<usize> = (0..=actual.len()).collect();
    let mut current = vec![0; actual.len() + 1];
    for (i, expected_char) in expected.iter().enumerate() {
        current[0] = i + 1;
        for (j, actual_char) in actual.iter().enumerate() {
            let substitution = previous[j] + usize::from(expected_char != actual_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[actual.len()] as f64 / expected.len() as f64
}

/// Panics with an install hint unless `tesseract` runs: tests that need it fail, never
/// skip.
pub async fn require_tesseract() {
    if let Err(error) = TesseractEngine::default().version().await {
        panic!(
            "this test needs the tesseract CLI: run scripts/install-tesseract.sh \
             (apt-get install tesseract-ocr): {error}"
        );
    }
}

/// Panics with an install hint unless tesseract has every one of `languages`: tests that
/// need a language pack fail, never skip.
pub async fn require_tesseract_languages(languages: &[&str]) {
    require_tesseract().await;
    let installed = TesseractEngine::default()
        .installed_languages()
        .await
        .expect("tesseract --list-langs runs");
    let missing: Vec<&str> = languages
        .iter()
        .copied()
        .filter(|language| !installed.iter().any(|have| have == language))
        .collect();
    assert!(
        missing.is_empty(),
        "this test needs the tesseract languages {missing:?}: run scripts/install-tesseract.sh {} \
         (cargo xtask ci does); installed: {installed:?}",
        missing.join(" ")
    );
}

pub use page_jobs::testing::ScriptStep;

/// An engine that answers `text of page N`, after failing as scripted per page (a
/// `Transient` step is an HTTP 503, a `Terminal` one exit status 1), and counts its calls.
/// With a delay, each call takes that long (and stops on cancel).
#[derive(Debug, Default)]
pub struct ScriptedEngine {
    script: PageScript,
}

impl ScriptedEngine {
    /// An engine that never fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each call takes `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.script.set_delay(delay);
        self
    }

    /// The next calls for `page` fail as `steps` say, in order; later calls succeed.
    pub fn fail(self, page: u32, steps: &[ScriptStep]) -> Self {
        self.script.fail(page, steps);
        self
    }

    /// The text this engine gives for `page`.
    pub fn text_for(page: u32) -> String {
        format!("text of page {page}")
    }

    /// Calls so far, per page.
    pub fn calls(&self) -> HashMap<u32, u32> {
        self.script.calls()
    }
}

#[async_trait]
impl OcrEngine for ScriptedEngine {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn recognize(
        &self,
        page: &PageImage,
        cancel: &CancellationToken,
    ) -> Result<String, OcrError> {
        match self.script.call(page.page, cancel).await {
            None => Err(OcrError::Cancelled),
            Some(Some(ScriptStep::Transient)) => Err(OcrError::Http {
                status: 503,
                retry_after: None,
                body: "scripted overload".to_owned(),
            }),
            Some(Some(ScriptStep::Terminal)) => Err(OcrError::ExitStatus {
                code: 1,
                stderr: format!("scripted failure of page {}", page.page),
            }),
            Some(None) => Ok(Self::text_for(page.page)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn character_error_rate_counts_edits_per_expected_character() {
        assert_eq!(character_error_rate("abcd", "abcd"), 0.0);
        assert_eq!(character_error_rate("abcd", "abed"), 0.25);
        assert_eq!(character_error_rate("a  b\nc", "a b c"), 0.0);
        assert_eq!(character_error_rate("ab", ""), 1.0);
    }
}
