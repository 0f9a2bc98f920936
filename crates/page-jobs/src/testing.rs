//! Test helpers (feature `testing`): [`PageScript`], the per-page failure script and call
//! counter behind the scripted OCR engine and the scripted extractor, and [`LocalStores`],
//! the stores of the embedded default in a temporary folder.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blob_store::{BlobStore, FileBlobStore};
use books::Books;
use jobs_core::JobStore;
use tokio_util::sync::CancellationToken;

/// The stores of the embedded default, as `api --with-worker` runs them, in a temporary
/// folder that goes when this is dropped: blobs in files (`objects/`), jobs in a SQLite file
/// (`jobs.db`), and the books on the blobs.
pub struct LocalStores {
    pub blobs: Arc<dyn BlobStore>,
    pub jobs: Arc<dyn JobStore>,
    pub books: Books,
    /// The folder. Last, so it is removed after the stores are dropped (fields drop in
    /// order).
    pub dir: tempfile::TempDir,
}

impl LocalStores {
    /// Opens both stores in a new temporary folder; panics when either cannot be opened.
    pub async fn open() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let blobs: Arc<dyn BlobStore> = Arc::new(
            FileBlobStore::open(dir.path().join("objects"))
                .await
                .expect("the file blob store opens"),
        );
        let url = format!("sqlite://{}/jobs.db", dir.path().display());
        let jobs: Arc<dyn JobStore> = Arc::new(
            jobs_sqlite::SqliteJobStore::connect(&url)
                .await
                .expect("the SQLite job store opens"),
        );
        let books = Books::new(blobs.clone());
        Self {
            blobs,
            jobs,
            books,
            dir,
        }
    }
}

/// What a scripted page worker does on one call for a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptStep {
    /// Fail with a retryable error.
    Transient,
    /// Fail with a terminal error.
    Terminal,
}

/// Per page, the failures the next calls give (in order; later calls succeed), the calls so
/// far, and how long each call takes.
#[derive(Debug, Default)]
pub struct PageScript {
    script: Mutex<HashMap<u32, VecDeque<ScriptStep>>>,
    calls: Mutex<HashMap<u32, u32>>,
    delay: Duration,
}

impl PageScript {
    /// Each call takes `delay`.
    pub fn set_delay(&mut self, delay: Duration) {
        self.delay = delay;
    }

    /// The next calls for `page` fail as `steps` say, in order.
    pub fn fail(&self, page: u32, steps: &[ScriptStep]) {
        self.script
            .lock()
            .expect("script mutex")
            .entry(page)
            .or_default()
            .extend(steps.iter().copied());
    }

    /// Calls so far, per page.
    pub fn calls(&self) -> HashMap<u32, u32> {
        self.calls.lock().expect("calls mutex").clone()
    }

    /// One call for `page`: counts it, takes the delay (`None` when `cancel` fires first),
    /// and gives the scripted failure, if any is left.
    pub async fn call(&self, page: u32, cancel: &CancellationToken) -> Option<Option<ScriptStep>> {
        *self
            .calls
            .lock()
            .expect("calls mutex")
            .entry(page)
            .or_default() += 1;
        if !self.delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                () = cancel.cancelled() => return None,
            }
        }
        Some(
            self.script
                .lock()
                .expect("script mutex")
                .get_mut(&page)
                .and_then(VecDeque::pop_front),
        )
    }
}
