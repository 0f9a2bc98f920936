//! [`Sweeper`]: removes what uploads leave behind when nothing will use it: the stored
//! files of an upload that no active `ingest` job names (an api killed between storing
//! an upload and starting its job; an ingest that failed and was not resumed), and the
//! local folders of requests and runs that a killed process never removed
//! (`folio-upload-*` of the api, `folio-ingest-*` of a worker). Only what is older than
//! the grace period goes: an upload's age is the time in its UUIDv7 id, a folder's its
//! last change. Run at start, then hourly, by the api and the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use books::{BookId, Books, layout};
use chrono::{DateTime, Utc};
use jobs_core::{Clock, JobQuery, JobStatus, JobStore};
use tokio_util::sync::CancellationToken;

use crate::{INGEST_JOB_TYPE, IngestPayload};

/// The prefixes of the local folders a sweep may remove.
const LOCAL_PREFIXES: [&str; 2] = ["folio-upload-", "folio-ingest-"];

/// What one sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Uploads whose stored files were deleted, as `book/upload`.
    pub uploads: Vec<String>,
    /// Local folders removed.
    pub folders: Vec<PathBuf>,
}

/// Sweeps stale upload staging; see the module.
#[derive(Debug, Clone)]
pub struct Sweeper {
    books: Books,
    jobs: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    grace: Duration,
    local_dir: PathBuf,
}

impl Sweeper {
    /// A sweeper of `books`' uploads and of the folders in the system's temp folder.
    pub fn new(
        books: Books,
        jobs: Arc<dyn JobStore>,
        clock: Arc<dyn Clock>,
        grace: Duration,
    ) -> Self {
        Self {
            books,
            jobs,
            clock,
            grace,
            local_dir: std::env::temp_dir(),
        }
    }

    /// Sweeps local folders in `dir` instead of the system's temp folder.
    pub fn with_local_dir(mut self, dir: PathBuf) -> Self {
        self.local_dir = dir;
        self
    }

    /// Sweeps now, then every `every` until `shutdown`; a failed sweep is logged and the
    /// next one tries again.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(report) if report == SweepReport::default() => {}
                Ok(report) => {
                    tracing::info!(uploads = ?report.uploads, folders = ?report.folders, "swept stale upload staging");
                }
                Err(error) => tracing::warn!(%error, "sweeping upload staging failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One sweep.
    pub async fn sweep(&self) -> Result<SweepReport, SweepError> {
        let now = self.clock.now();
        let cutoff = now - chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::MAX);
        let mut report = SweepReport::default();
        for ((book, upload), keys) in self.stored_uploads().await? {
            if upload_time(&upload).is_none_or(|created| created > cutoff) {
                continue;
            }
            if self.live_uploads(&book).await?.contains(&upload) {
                continue;
            }
            for key in &keys {
                self.books.store().delete(key).await?;
            }
            report.uploads.push(format!("{book}/{upload}"));
        }
        report.folders = self.sweep_local(now);
        Ok(report)
    }

    /// Every stored upload file, by book and upload id.
    async fn stored_uploads(&self) -> Result<BTreeMap<(BookId, String), Vec<String>>, SweepError> {
        let mut uploads: BTreeMap<(BookId, String), Vec<String>> = BTreeMap::new();
        for entry in self.books.store().list(layout::BOOKS_PREFIX).await? {
            let Some(rest) = entry.key.strip_prefix(layout::BOOKS_PREFIX) else {
                continue;
            };
            let mut parts = rest.splitn(4, '/');
            let (Some(book), Some("uploads"), Some(upload), Some(_)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(book) = BookId::parse(book) else {
                continue;
            };
            uploads
                .entry((book, upload.to_owned()))
                .or_default()
                .push(entry.key);
        }
        Ok(uploads)
    }

    /// The uploads the book's active `ingest` jobs name.
    async fn live_uploads(&self, book: &BookId) -> Result<BTreeSet<String>, SweepError> {
        let active = self
            .jobs
            .list(&JobQuery {
                resource_key: Some(book.to_string()),
                job_type: Some(INGEST_JOB_TYPE.to_owned()),
                statuses: JobStatus::ACTIVE.to_vec(),
                limit: 100,
                ..JobQuery::default()
            })
            .await?;
        Ok(active
            .iter()
            .filter_map(|job| serde_json::from_value::<IngestPayload>(job.payload.clone()).ok())
            .map(|payload| payload.upload.id)
            .collect())
    }

    /// Removes the local folders of ours older than the grace period.
    fn sweep_local(&self, now: DateTime<Utc>) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.local_dir) else {
            return Vec::new();
        };
        let cutoff = std::time::SystemTime::from(now)
            .checked_sub(self.grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let ours = name
                .to_str()
                .is_some_and(|name| LOCAL_PREFIXES.iter().any(|prefix| name.starts_with(prefix)));
            let stale = entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified < cutoff);
            if ours && stale && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
        removed
    }
}

/// When an upload was made: the milliseconds of its UUIDv7 id.
fn upload_time(id: &str) -> Option<DateTime<Utc>> {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    let millis = i64::from_str_radix(&hex, 16).ok()?;
    DateTime::from_timestamp_millis(millis)
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("storage: {0}")]
    Storage(#[from] blob_store::BlobError),
    #[error("jobs: {0}")]
    Jobs(#[from] jobs_core::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploads_time_is_read_from_its_id() {
        let time = upload_time("01a24e75-8770-7502-ad64-023341d2a1ef").unwrap();
        assert_eq!(time.timestamp_millis(), 0x01a2_4e75_8770);
        assert_eq!(upload_time("not-an-id"), None);
    }
}
