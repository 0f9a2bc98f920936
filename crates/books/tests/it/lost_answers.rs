//! Manifest writes whose answer is lost: the write was stored, but the writer heard
//! `PreconditionFailed` (S3's verdict on the SDK's retry of its own write) or a transient
//! error. Its change must count once: a re-read that finds exactly the bytes sent stops
//! there, in `Books::update` and across the flushes of a `ManifestWriter`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use blob_store::conformance::fault_proxy::{Fault, FaultProxy, FaultRule};
use blob_store::conformance::{file_test_store, moto};
use blob_store::{Blob, BlobError, BlobMeta, BlobStore, ETag, ListEntry, PutMode, S3Config};
use books::{BookId, Books, Page};
use bytes::Bytes;

fn id(text: &str) -> BookId {
    BookId::parse(text).unwrap()
}

fn page(number: u32) -> Page {
    Page::new(
        number,
        format!("p{number}.png"),
        10,
        10,
        100,
        "ab".repeat(32),
    )
}

/// Stores the next `count` conditional manifest writes, then answers them with `answer`
/// as if the answer had been lost on the way.
#[derive(Debug)]
struct LosesAnswers {
    inner: Arc<dyn BlobStore>,
    count: AtomicU32,
    transient: bool,
    /// Conditional writes to refuse (not stored, a transient error) before that.
    refuse: AtomicU32,
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl BlobStore for LosesAnswers {
    async fn get(&self, key: &str) -> Result<Blob, BlobError> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, BlobError> {
        let conditional = matches!(mode, PutMode::Update { .. });
        if conditional && take_one(&self.refuse) {
            return Err(BlobError::Transient {
                operation: "put",
                key: key.to_owned(),
                source: "connection refused".into(),
            });
        }
        let etag = self.inner.put(key, bytes, mode).await?;
        if conditional && take_one(&self.count) {
            return Err(if self.transient {
                BlobError::Transient {
                    operation: "put",
                    key: key.to_owned(),
                    source: "connection reset".into(),
                }
            } else {
                BlobError::PreconditionFailed {
                    key: key.to_owned(),
                }
            });
        }
        Ok(etag)
    }

    async fn head(&self, key: &str) -> Result<BlobMeta, BlobError> {
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError> {
        self.inner.list(prefix).await
    }

    // Manifests are written with `put`; files pass through untouched.
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        mode: PutMode,
    ) -> Result<ETag, BlobError> {
        self.inner.put_file(key, path, mode).await
    }

    async fn get_to_file(&self, key: &str, path: &std::path::Path) -> Result<u64, BlobError> {
        self.inner.get_to_file(key, path).await
    }
}

/// A change that counts: one more OCR attempt of page 1.
fn count_an_attempt(manifest: &mut books::Manifest) {
    if let Some(entry) = manifest.page_mut(1) {
        entry.ocr.attempts += 1;
    }
}

#[tokio::test]
async fn an_update_whose_stored_write_was_answered_precondition_failed_counts_once() {
    let fixture = file_test_store().await;
    let store = Arc::new(LosesAnswers {
        inner: fixture.store(),
        count: AtomicU32::new(0),
        transient: false,
        refuse: AtomicU32::new(0),
    });
    let books = Books::new(store.clone());
    books.create(&id("b"), "B").await.unwrap();
    books
        .update(&id("b"), |manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    store.count.store(1, Ordering::SeqCst);
    let written = books.update(&id("b"), count_an_attempt).await.unwrap();
    assert_eq!(written.page(1).unwrap().ocr.attempts, 1);
    let stored = books.manifest(&id("b")).await.unwrap();
    assert_eq!(stored, written);
}

#[tokio::test]
async fn a_writer_flush_that_failed_but_was_stored_is_not_applied_again() {
    let fixture = file_test_store().await;
    let store = Arc::new(LosesAnswers {
        inner: fixture.store(),
        count: AtomicU32::new(0),
        transient: true,
        refuse: AtomicU32::new(0),
    });
    let books = Books::new(store.clone());
    books.create(&id("b"), "B").await.unwrap();
    books
        .update(&id("b"), |manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    let mut writer = books.manifest_writer(&id("b"), 10);
    writer.push(count_an_attempt).await.unwrap();
    store.count.store(1, Ordering::SeqCst);
    assert!(writer.flush().await.unwrap_err().is_transient());
    assert_eq!(writer.pending(), 1);
    let written = writer.flush().await.unwrap().expect("a write");
    assert_eq!(written.page(1).unwrap().ocr.attempts, 1);
    assert_eq!(writer.pending(), 0);
    assert_eq!(
        books
            .manifest(&id("b"))
            .await
            .unwrap()
            .page(1)
            .unwrap()
            .ocr
            .attempts,
        1
    );

    // A failed write that was not stored is applied on the next flush, once.
    writer.push(count_an_attempt).await.unwrap();
    store.refuse.store(1, Ordering::SeqCst);
    assert!(writer.flush().await.unwrap_err().is_transient());
    writer.flush().await.unwrap();
    assert_eq!(
        books
            .manifest(&id("b"))
            .await
            .unwrap()
            .page(1)
            .unwrap()
            .ocr
            .attempts,
        2
    );
}

/// The same on real S3: the proxy in front of moto cuts the answer of the manifest write,
/// the SDK retries it and hears 412 for its own write; the change still counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_manifest_write_whose_answer_is_cut_counts_once() {
    let endpoint = moto::test_endpoint();
    let bucket = format!(
        "folio-lost-answers-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let proxy = FaultProxy::start(endpoint.url()).await;
    let store = blob_store::S3BlobStore::from_env(
        S3Config::new(&bucket)
            .with_endpoint(proxy.url())
            .with_region("us-east-1")
            .with_credentials(moto::test_credentials())
            .with_max_attempts(3),
    )
    .await
    .unwrap();
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let books = Books::new(Arc::new(store));
    books.create(&id("b"), "B").await.unwrap();
    books
        .update(&id("b"), |manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    for round in 1..=3 {
        proxy.add_rule(
            FaultRule::next(Fault::ResetMidResponse, 1)
                .method("PUT")
                .path_contains("metadata.json"),
        );
        let written = books.update(&id("b"), count_an_attempt).await.unwrap();
        assert_eq!(written.page(1).unwrap().ocr.attempts, round);
    }
    assert_eq!(proxy.stats().resets, 3);
    assert_eq!(
        books
            .manifest(&id("b"))
            .await
            .unwrap()
            .page(1)
            .unwrap()
            .ocr
            .attempts,
        3
    );
}
