//! Test helpers (feature `testing`): a scripted extractor that fails as told and counts its
//! calls per page.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{ExtractError, Extractor, PageInput, RulesExtractor, Topic};

/// What the [`ScriptedExtractor`] does on one call for a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptStep {
    /// Fail with a retryable error.
    Transient,
    /// Fail with a terminal error.
    Terminal,
}

/// An extractor that answers like [`RulesExtractor`], after failing as scripted per page,
/// and counts its calls per page. With a delay, each call takes that long (and stops on
/// cancel).
#[derive(Debug, Default)]
pub struct ScriptedExtractor {
    script: Mutex<HashMap<u32, VecDeque<ScriptStep>>>,
    calls: Mutex<HashMap<u32, u32>>,
    delay: Duration,
}

impl ScriptedExtractor {
    /// An extractor that never fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each call takes `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The next calls for `page` fail as `steps` say, in order; later calls succeed.
    pub fn fail(self, page: u32, steps: &[ScriptStep]) -> Self {
        self.script
            .lock()
            .expect("script mutex")
            .entry(page)
            .or_default()
            .extend(steps.iter().copied());
        self
    }

    /// Calls so far, per page.
    pub fn calls(&self) -> HashMap<u32, u32> {
        self.calls.lock().expect("calls mutex").clone()
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
        *self
            .calls
            .lock()
            .expect("calls mutex")
            .entry(page.page)
            .or_default() += 1;
        if !self.delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                () = cancel.cancelled() => return Err(ExtractError::Cancelled),
            }
        }
        let step = self
            .script
            .lock()
            .expect("script mutex")
            .get_mut(&page.page)
            .and_then(VecDeque::pop_front);
        match step {
            Some(ScriptStep::Transient) => Err(ExtractError::Failed {
                retryable: true,
                message: format!("scripted overload on page {}", page.page),
            }),
            Some(ScriptStep::Terminal) => Err(ExtractError::Failed {
                retryable: false,
                message: format!("scripted failure of page {}", page.page),
            }),
            None => Ok(RulesExtractor::new().extract_page(page)),
        }
    }
}
