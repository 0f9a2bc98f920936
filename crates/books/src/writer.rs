//! [`ManifestWriter`]: many page updates, one manifest write per batch.

use crate::catalog::Unconfirmed;
use crate::{BookId, Books, BooksError, Manifest};

/// One change to a manifest. It may run more than once (once per write attempt, each
/// time on a freshly read manifest), so it describes the change, not a one-shot action.
pub type ManifestChange = Box<dyn Fn(&mut Manifest) + Send + Sync>;

/// Folds page updates of one book into one manifest write every `flush_every` changes.
///
/// A job pushes one change per finished page; every `flush_every`-th push writes them all
/// with one [`Books::update`] (so with the same no-lost-update guarantee). The job must
/// call [`ManifestWriter::flush`] at the end, on cancel and on shutdown, and should only
/// advance its checkpoint past pages a flush has made durable (a push that flushed
/// returns the written manifest).
///
/// Changes still pending when the writer is dropped are lost (and logged): flush first.
#[derive(Debug)]
pub struct ManifestWriter {
    books: Books,
    book_id: BookId,
    flush_every: usize,
    pending: Vec<PendingChange>,
    /// The last write of a failed flush, which may have been stored all the same: the
    /// next flush then finds its changes in, and does not apply them twice.
    unconfirmed: Option<Unconfirmed>,
    /// The job type and run this writer writes for, when fenced.
    fence: Option<(String, crate::Fence)>,
}

struct PendingChange(ManifestChange);

impl std::fmt::Debug for PendingChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManifestChange")
    }
}

impl ManifestWriter {
    pub(crate) fn new(books: Books, book_id: BookId, flush_every: usize) -> Self {
        Self {
            books,
            book_id,
            flush_every: flush_every.max(1),
            pending: Vec::new(),
            unconfirmed: None,
            fence: None,
        }
    }

    /// Writes for run `fence` of a `job_type` job: once a newer run of that type has
    /// written the manifest, every flush fails with [`BooksError::Fenced`] and writes
    /// nothing, so a worker that lost its job (cut off from the database while another
    /// took over) cannot overwrite the newer run's pages when it comes back.
    pub fn fenced(mut self, job_type: impl Into<String>, fence: crate::Fence) -> Self {
        self.fence = Some((job_type.into(), fence));
        self
    }

    /// Queues `change`; when `flush_every` changes are queued, writes them all and
    /// returns the manifest as written. Else returns `None` and writes nothing.
    pub async fn push<F>(&mut self, change: F) -> Result<Option<Manifest>, BooksError>
    where
        F: Fn(&mut Manifest) + Send + Sync + 'static,
    {
        self.pending.push(PendingChange(Box::new(change)));
        if self.pending.len() >= self.flush_every {
            self.flush().await
        } else {
            Ok(None)
        }
    }

    /// Writes every queued change in one manifest update; `None` when nothing was queued.
    /// On error the changes stay queued, so a later flush can retry them; if the failed
    /// write was stored after all (its answer was lost), the retry finds it and applies
    /// nothing twice.
    pub async fn flush(&mut self) -> Result<Option<Manifest>, BooksError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let pending = &self.pending;
        let manifest = self
            .books
            .update_unconfirmed(
                &self.book_id,
                self.fence.as_ref(),
                |manifest| {
                    for change in pending {
                        (change.0)(manifest);
                    }
                },
                &mut self.unconfirmed,
            )
            .await?;
        self.pending.clear();
        Ok(Some(manifest))
    }

    /// Changes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Changes per manifest write (at least 1).
    pub fn flush_every(&self) -> usize {
        self.flush_every
    }
}

impl Drop for ManifestWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            tracing::warn!(
                book.id = %self.book_id,
                pending = self.pending.len(),
                "manifest writer dropped with unflushed changes"
            );
        }
    }
}
