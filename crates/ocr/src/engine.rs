//! The engine seam: one page image in, its text (and, from engines that give them, its
//! hOCR and quality signals) out.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::OcrError;

/// One page to recognize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageImage {
    /// The page number (for logs, and engines that care).
    pub page: u32,
    pub png: Bytes,
    /// The book's language, as for `tesseract -l` (`deu`, `eng+fra`); the engine's own
    /// default when `None`. Engines that read any language ignore it.
    pub language: Option<String>,
}

impl PageImage {
    /// Page `page` with the engine's default language.
    pub fn new(page: u32, png: Bytes) -> Self {
        Self {
            page,
            png,
            language: None,
        }
    }

    /// The same page read as `language`.
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }
}

/// What an engine read on a page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recognized {
    pub text: String,
    /// The page's hOCR (XHTML with each word's box and confidence), from engines that
    /// give one (tesseract).
    pub hocr: Option<String>,
    /// The mean confidence of the words, 0 to 100; `None` from engines without word
    /// confidences, and when no word was found.
    pub confidence: Option<f64>,
    /// Words found, from engines that count them.
    pub words: Option<u64>,
    /// How far the page was found turned, counter-clockwise in degrees (0, 90, 180, 270),
    /// when the engine looked (tesseract looks at pages it read badly upright: a page
    /// turned 90 degrees clockwise is 270); `None` when it did not.
    pub rotation: Option<u16>,
}

impl Recognized {
    /// Text alone, without quality signals.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Whether a person should look at the page: its confidence is under `review_below`,
    /// or the engine counted words and found none (a blank page, or nothing it could read).
    /// Pages of engines without quality signals are never flagged.
    pub fn needs_review(&self, review_below: f64) -> bool {
        match (self.confidence, self.words) {
            (Some(confidence), _) => confidence < review_below,
            (None, Some(words)) => words == 0,
            (None, None) => false,
        }
    }
}

/// Recognizes the text of one page.
///
/// Implementations must stop promptly when `cancel` fires (returning
/// [`OcrError::Cancelled`]) and classify their failures by type, never by message text.
#[async_trait]
pub trait OcrEngine: Send + Sync + fmt::Debug + 'static {
    /// The engine's name as recorded in the manifest (`tesseract`, `openai:MODEL`).
    fn name(&self) -> &str;

    /// The text of `page`.
    async fn recognize(
        &self,
        page: &PageImage,
        cancel: &CancellationToken,
    ) -> Result<String, OcrError>;

    /// The text of `page` with what the engine knows of its quality (hOCR, word
    /// confidence, word count). The default is [`OcrEngine::recognize`]'s text alone.
    async fn recognize_page(
        &self,
        page: &PageImage,
        cancel: &CancellationToken,
    ) -> Result<Recognized, OcrError> {
        Ok(Recognized::text(self.recognize(page, cancel).await?))
    }

    /// Checks before a job's first page that the engine can read `language` (the engine's
    /// default when `None`): [`OcrError::LanguageNotInstalled`] when it cannot. The default
    /// accepts every language.
    async fn check_language(&self, language: Option<&str>) -> Result<(), OcrError> {
        let _ = language;
        Ok(())
    }
}
