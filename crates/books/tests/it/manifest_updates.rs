//! The manifest: creation, reading, schema checks, and read-modify-write updates that
//! lose nothing under concurrency, on both storage backends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use blob_store::conformance::{TestStore, file_test_store, s3_test_store};
use blob_store::{Blob, BlobError, BlobMeta, BlobStore, ETag, ListEntry, PutMode};
use books::{BookId, Books, BooksError, GuidelinesStatus, Manifest, OcrStatus, Page, UpdatePolicy};
use bytes::Bytes;

use crate::counting_store::CountingStore;

fn id(text: &str) -> BookId {
    BookId::parse(text).unwrap()
}

fn page(number: u32) -> Page {
    Page::new(
        number,
        format!("scan-{number}.jpg"),
        100,
        200,
        1234,
        "ab".repeat(32),
    )
}

#[tokio::test]
async fn a_created_book_has_an_empty_versioned_manifest() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    let created = books.create(&id("b1"), "Fractions").await.unwrap();
    let read = books.manifest(&id("b1")).await.unwrap();
    assert_eq!(read, created);
    assert_eq!(read.schema_version, books::SCHEMA_VERSION);
    assert_eq!(read.title, "Fractions");
    assert!(read.pages.is_empty());
    assert_eq!(read.guidelines.status, GuidelinesStatus::None);
}

#[tokio::test]
async fn the_manifest_json_has_the_fields_of_the_spec() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    books
        .update(&id("b1"), |manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    let raw = fixture
        .store()
        .get("books/b1/metadata.json")
        .await
        .unwrap()
        .bytes;
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for field in [
        "schema_version",
        "book_id",
        "title",
        "created_at",
        "updated_at",
        "pages",
        "guidelines",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    let page = &json["pages"][0];
    for field in [
        "page",
        "image",
        "source_name",
        "width",
        "height",
        "bytes",
        "sha256",
        "ocr",
    ] {
        assert!(page.get(field).is_some(), "missing pages[].{field}: {page}");
    }
    assert_eq!(page["image"], "pages/0001.png");
    assert_eq!(page["ocr"]["status"], "pending");
    for field in [
        "status",
        "text",
        "engine",
        "chars",
        "attempts",
        "error",
        "updated_at",
    ] {
        assert!(page["ocr"].get(field).is_some(), "missing ocr.{field}");
    }
    assert_eq!(json["guidelines"]["status"], "none");
    assert!(json["guidelines"].get("pages_done").is_some());
    assert!(json["guidelines"].get("final").is_some());
}

#[tokio::test]
async fn creating_an_existing_book_is_book_exists_and_keeps_the_first() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "First").await.unwrap();
    let error = books.create(&id("b1"), "Second").await.unwrap_err();
    assert!(matches!(error, BooksError::BookExists { .. }), "{error:?}");
    assert_eq!(books.manifest(&id("b1")).await.unwrap().title, "First");
}

#[tokio::test]
async fn reading_or_updating_a_missing_book_is_book_not_found() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    let error = books.manifest(&id("nope")).await.unwrap_err();
    assert!(
        matches!(error, BooksError::BookNotFound { .. }),
        "{error:?}"
    );
    let error = books.update(&id("nope"), |_| {}).await.unwrap_err();
    assert!(
        matches!(error, BooksError::BookNotFound { .. }),
        "{error:?}"
    );
    assert!(fixture.store().list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_manifest_with_a_newer_schema_is_refused_not_rewritten() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    let future = serde_json::json!({"schema_version": 99, "book_id": "b1", "whatever": true});
    fixture
        .store()
        .put(
            "books/b1/metadata.json",
            Bytes::from(future.to_string()),
            PutMode::Create,
        )
        .await
        .unwrap();
    let error = books.update(&id("b1"), |_| {}).await.unwrap_err();
    assert!(
        matches!(error, BooksError::UnsupportedSchema { found: 99, .. }),
        "{error:?}"
    );
    let stored = fixture
        .store()
        .get("books/b1/metadata.json")
        .await
        .unwrap()
        .bytes;
    assert_eq!(stored, Bytes::from(future.to_string()));
}

#[tokio::test]
async fn a_corrupt_manifest_is_a_typed_error() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    fixture
        .store()
        .put(
            "books/b1/metadata.json",
            Bytes::from_static(b"{not json"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let error = books.manifest(&id("b1")).await.unwrap_err();
    assert!(
        matches!(error, BooksError::CorruptManifest { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn list_returns_every_book_sorted() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    for book in ["zeta", "alpha", "m1"] {
        books.create(&id(book), book).await.unwrap();
    }
    books
        .update(&id("alpha"), |manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    assert_eq!(
        books.list().await.unwrap(),
        vec![id("alpha"), id("m1"), id("zeta")]
    );
}

#[tokio::test]
async fn an_update_changes_the_manifest_and_bumps_updated_at() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    let created = books.create(&id("b1"), "T").await.unwrap();
    let updated = books
        .update(&id("b1"), |manifest| {
            manifest.upsert_page(page(2));
            manifest.upsert_page(page(1));
            manifest.page_mut(2).unwrap().ocr.status = OcrStatus::Done;
        })
        .await
        .unwrap();
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(updated.created_at, created.created_at);
    let read = books.manifest(&id("b1")).await.unwrap();
    assert_eq!(read, updated);
    assert_eq!(
        read.pages.iter().map(|page| page.page).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(read.page(2).unwrap().ocr.status, OcrStatus::Done);
    assert_eq!(read.next_free_page(), 3);
}

/// A store whose manifest writes always lose to a phantom concurrent writer.
#[derive(Debug)]
struct AlwaysConflicting(Arc<CountingStore>);

#[async_trait]
impl BlobStore for AlwaysConflicting {
    async fn get(&self, key: &str) -> Result<Blob, BlobError> {
        self.0.get(key).await
    }
    async fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, BlobError> {
        match mode {
            PutMode::Update { .. } => self
                .0
                .put(key, bytes, PutMode::Create)
                .await
                .map(|_| unreachable!()),
            other => self.0.put(key, bytes, other).await,
        }
    }
    async fn head(&self, key: &str) -> Result<BlobMeta, BlobError> {
        self.0.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError> {
        self.0.list(prefix).await
    }
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        mode: PutMode,
    ) -> Result<ETag, BlobError> {
        match mode {
            PutMode::Update { .. } => self
                .0
                .put_file(key, path, PutMode::Create)
                .await
                .map(|_| unreachable!()),
            other => self.0.put_file(key, path, other).await,
        }
    }
    async fn get_to_file(&self, key: &str, path: &std::path::Path) -> Result<u64, BlobError> {
        self.0.get_to_file(key, path).await
    }
}

#[tokio::test]
async fn an_update_that_always_conflicts_gives_up_after_the_bounded_attempts() {
    let fixture = file_test_store().await;
    let counting = CountingStore::new(fixture.store());
    let books = Books::new(Arc::new(AlwaysConflicting(Arc::clone(&counting)))).with_update_policy(
        UpdatePolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        },
    );
    books.create(&id("b1"), "T").await.unwrap();
    let mut applied = 0;
    let error = books.update(&id("b1"), |_| applied += 1).await.unwrap_err();
    assert!(
        matches!(error, BooksError::UpdateConflict { attempts: 4, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(applied, 4, "the change is re-applied on every attempt");
    assert_eq!(
        counting.manifest_puts(),
        1 + 4,
        "one create, then four update attempts"
    );
}

/// 8 writers each add 25 distinct pages, one `update` per page, all at once. What is
/// checked is that no update is lost; the retry bound is raised above the default so that
/// a writer starved on a loaded 2-core machine retries instead of giving up (giving up
/// after the bound is checked on its own above).
async fn eight_concurrent_writers_lose_none_of_200_page_updates(fixture: TestStore) {
    let books = Books::new(fixture.store()).with_update_policy(UpdatePolicy {
        max_attempts: 500,
        ..UpdatePolicy::default()
    });
    books.create(&id("shared"), "Shared").await.unwrap();
    let writers: Vec<_> = (0..8_u32)
        .map(|writer| {
            let books = books.clone();
            tokio::spawn(async move {
                for index in 0..25_u32 {
                    let number = writer * 25 + index + 1;
                    books
                        .update(&id("shared"), |manifest| manifest.upsert_page(page(number)))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let manifest: Manifest = books.manifest(&id("shared")).await.unwrap();
    let numbers: Vec<u32> = manifest.pages.iter().map(|page| page.page).collect();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_writers_lose_none_of_200_page_updates_on_the_file_backend() {
    eight_concurrent_writers_lose_none_of_200_page_updates(file_test_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_writers_lose_none_of_200_page_updates_on_s3() {
    eight_concurrent_writers_lose_none_of_200_page_updates(s3_test_store().await).await;
}

fn fence(job: &str, lease: i64) -> books::Fence {
    books::Fence {
        job: job.to_owned(),
        lease,
    }
}

#[tokio::test]
async fn a_fenced_writer_is_refused_once_a_newer_run_of_its_job_type_wrote() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    let book = id("fenced");
    books.create(&book, "Fenced").await.unwrap();
    // UUIDv7 text: the second job was created after the first.
    let (job_a, job_b) = (
        "01a229de-0000-7000-8000-000000000001",
        "01a229df-0000-7000-8000-000000000001",
    );
    let mut first_run = books
        .manifest_writer(&book, 1)
        .fenced("ocr", fence(job_a, 1));
    first_run
        .push(|manifest: &mut Manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    // The job is taken over (lease 2) and the new run writes.
    let mut second_run = books
        .manifest_writer(&book, 1)
        .fenced("ocr", fence(job_a, 2));
    second_run
        .push(|manifest: &mut Manifest| manifest.upsert_page(page(2)))
        .await
        .unwrap();
    // Another job type's runs are not fenced by it.
    let mut guidelines = books
        .manifest_writer(&book, 1)
        .fenced("guidelines", fence(job_a, 1));
    guidelines
        .push(|manifest: &mut Manifest| manifest.title = "Renamed".to_owned())
        .await
        .unwrap();
    let before = books.manifest(&book).await.unwrap();

    // The first run comes back: refused, nothing written.
    let error = first_run
        .push(|manifest: &mut Manifest| manifest.upsert_page(page(3)))
        .await
        .unwrap_err();
    match &error {
        BooksError::Fenced {
            job_type,
            ours,
            newer,
            ..
        } => {
            assert_eq!(job_type, "ocr");
            assert_eq!(ours, &fence(job_a, 1));
            assert_eq!(newer, &fence(job_a, 2));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert_eq!(books.manifest(&book).await.unwrap(), before);
    assert_eq!(before.writers["ocr"], fence(job_a, 2));
    assert_eq!(before.writers["guidelines"], fence(job_a, 1));

    // A newer job of the type (a resume) fences every run of the older one, whatever the
    // lease; an unfenced update (an upload, say) is never refused.
    let mut resumed = books
        .manifest_writer(&book, 1)
        .fenced("ocr", fence(job_b, 1));
    resumed
        .push(|manifest: &mut Manifest| manifest.upsert_page(page(4)))
        .await
        .unwrap();
    assert!(matches!(
        second_run
            .push(|manifest: &mut Manifest| manifest.upsert_page(page(5)))
            .await,
        Err(BooksError::Fenced { .. })
    ));
    books
        .update(&book, |manifest| manifest.upsert_page(page(6)))
        .await
        .unwrap();
    let pages: Vec<u32> = books
        .manifest(&book)
        .await
        .unwrap()
        .pages
        .iter()
        .map(|page| page.page)
        .collect();
    assert_eq!(pages, [1, 2, 4, 6]);
}

#[tokio::test]
async fn manifest_timestamps_come_from_the_books_clock_and_every_write_moves_them_on() {
    use chrono::TimeZone;
    let fixture = file_test_store().await;
    let start = chrono::Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    let clock = Arc::new(jobs_core::ManualClock::new(start));
    let books = Books::new(fixture.store()).with_clock(clock.clone());
    let created = books.create(&id("timed"), "Timed").await.unwrap();
    assert_eq!(created.created_at, start);
    assert_eq!(books.now(), start);
    // The clock stands still: each write still moves `updated_at` on, by a microsecond.
    let first = books
        .update(&id("timed"), |manifest| manifest.upsert_page(page(1)))
        .await
        .unwrap();
    let second = books
        .update(&id("timed"), |manifest| manifest.upsert_page(page(2)))
        .await
        .unwrap();
    assert!(first.updated_at > created.updated_at);
    assert_eq!(
        second.updated_at - first.updated_at,
        chrono::Duration::microseconds(1)
    );
    clock.advance(Duration::from_secs(60));
    let later = books
        .update(&id("timed"), |manifest| manifest.title = "Later".to_owned())
        .await
        .unwrap();
    assert_eq!(later.updated_at, start + chrono::Duration::seconds(60));
}
