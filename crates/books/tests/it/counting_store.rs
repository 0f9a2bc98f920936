//! A BlobStore wrapper that counts calls, to assert how often storage is touched.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use blob_store::{Blob, BlobError, BlobMeta, BlobStore, ETag, ListEntry, PutMode};
use bytes::Bytes;

/// Counts every call, and successful puts per key suffix of interest.
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn BlobStore>,
    calls: AtomicUsize,
    puts: AtomicUsize,
    manifest_puts: AtomicUsize,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn BlobStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicUsize::new(0),
            puts: AtomicUsize::new(0),
            manifest_puts: AtomicUsize::new(0),
        })
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    pub(crate) fn manifest_puts(&self) -> usize {
        self.manifest_puts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl BlobStore for CountingStore {
    async fn get(&self, key: &str) -> Result<Blob, BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.puts.fetch_add(1, Ordering::SeqCst);
        if key.ends_with("/metadata.json") {
            self.manifest_puts.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.put(key, bytes, mode).await
    }

    async fn head(&self, key: &str) -> Result<BlobMeta, BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix).await
    }

    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<ETag, BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.puts.fetch_add(1, Ordering::SeqCst);
        if key.ends_with("/metadata.json") {
            self.manifest_puts.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.put_file(key, path, mode).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, BlobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get_to_file(key, path).await
    }
}
