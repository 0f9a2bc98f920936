//! Test helpers (feature `testing`): a scripted extractor that fails as told and counts its
//! calls per page.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use page_jobs::testing::PageScript;
use tokio_util::sync::CancellationToken;

use crate::{ExtractError, Extractor, PageInput, RulesExtractor, Topic};

pub use page_jobs::testing::ScriptStep;

/// An extractor that answers like [`RulesExtractor`], after failing as scripted per page,
/// and counts its calls per page. With a delay, each call takes that long (and stops on
/// cancel).
#[derive(Debug, Default)]
pub struct ScriptedExtractor {
    script: PageScript,
}

impl ScriptedExtractor {
    /// An extractor that never fails.
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

    /// Calls so far, per page.
    pub fn calls(&self) -> HashMap<u32, u32> {
        self.script.calls()
    }
}

#[async_trait]
impl Extractor for ScriptedExtractor {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn extract(
        &self,
        page: &PageInput,
        cancel: &CancellationToken,
    ) -> Result<Vec<Topic>, ExtractError> {
        match self.script.call(page.page, cancel).await {
            None => Err(ExtractError::Cancelled),
            Some(Some(ScriptStep::Transient)) => Err(ExtractError::Failed {
                retryable: true,
                message: format!("scripted overload on page {}", page.page),
            }),
            Some(Some(ScriptStep::Terminal)) => Err(ExtractError::Failed {
                retryable: false,
                message: format!("scripted failure of page {}", page.page),
            }),
            Some(None) => Ok(RulesExtractor::new().extract_page(page)),
        }
    }
}
