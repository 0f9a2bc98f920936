//! The engine seam: one page image in, its text out.

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
    /// The page's PNG.
    pub png: Bytes,
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
}
