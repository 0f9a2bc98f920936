//! The conformance suite every [`BlobStore`] backend runs, and test fixtures.
//!
//! Each case is a `pub async fn` taking `&dyn BlobStore` on a fresh, empty store and
//! panicking on a violation. [`conformance_tests!`](crate::conformance_tests) expands to
//! one `#[tokio::test]` per case, so every case name shows in `cargo test` output:
//!
//! ```text
//! mod file_backend {
//!     blob_store::conformance_tests!(blob_store::conformance::file_test_store());
//! }
//! ```
//!
//! [`file_test_store`] and [`s3_test_store`] give fresh stores to any crate's tests; the
//! S3 one runs against a local S3-compatible server (see [`moto`]). [`fault_proxy`] puts a
//! fault-injecting proxy (503 SlowDown, resets mid-response, stalls, latency, outages)
//! between an S3 client and that server.

pub mod fault_proxy;
pub mod moto;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use sha2::{Digest, Sha256};

use crate::{BlobError, BlobStore, ETag, FileBlobStore, PutMode, S3BlobStore, S3Config};

/// A fresh store for one test, with whatever keeps it alive (temp dir, server).
pub struct TestStore {
    store: Arc<dyn BlobStore>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl TestStore {
    /// The store, shareable with spawned tasks.
    pub fn store(&self) -> Arc<dyn BlobStore> {
        Arc::clone(&self.store)
    }
}

impl AsRef<dyn BlobStore> for TestStore {
    fn as_ref(&self) -> &(dyn BlobStore + 'static) {
        &*self.store
    }
}

/// A [`FileBlobStore`] in a fresh temp dir (removed on drop).
pub async fn file_test_store() -> TestStore {
    let directory = tempfile::tempdir().expect("creating a temp dir");
    let store = FileBlobStore::open(directory.path().join("objects"))
        .await
        .expect("opening the file store");
    TestStore {
        store: Arc::new(store),
        _guard: Box::new(directory),
    }
}

/// An [`S3BlobStore`] on a fresh bucket (with a key prefix, to exercise prefixing) of
/// the test S3 server: `FOLIO_TEST_S3_ENDPOINT` if set, else a moto server this process
/// starts (see [`moto::shared_server`]). Panics, never skips, when neither is available.
pub async fn s3_test_store() -> TestStore {
    let endpoint = moto::test_endpoint();
    let bucket = format!("folio-test-{}", uuid::Uuid::new_v4().simple());
    let config = S3Config::new(&bucket)
        .with_prefix("tenant/objects")
        .expect("valid prefix")
        .with_endpoint(endpoint.url())
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials())
        .with_max_attempts(3);
    let store = S3BlobStore::from_env(config).await.expect("configuring s3");
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "creating bucket {bucket} at {}: {}",
                endpoint.url(),
                aws_sdk_s3::error::DisplayErrorContext(error)
            )
        });
    TestStore {
        store: Arc::new(store),
        _guard: Box::new(endpoint),
    }
}

/// Expands to one `#[tokio::test]` per conformance case. The argument is an expression
/// of a future whose output implements `AsRef<dyn BlobStore>` (e.g. [`TestStore`]); it is
/// evaluated once per case, so every case gets a fresh store.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@cases ($fixture)
            put_then_get_returns_the_bytes_and_the_etag_put_returned,
            get_of_a_missing_key_is_not_found,
            head_reports_the_size_and_the_etag_of_get,
            head_of_a_missing_key_is_not_found,
            overwrite_replaces_the_content_and_changes_the_etag,
            create_writes_when_the_key_is_absent,
            create_fails_with_precondition_failed_when_the_key_exists,
            update_with_the_current_etag_writes,
            update_with_a_stale_etag_fails_with_precondition_failed,
            update_of_a_missing_key_fails_with_precondition_failed,
            delete_removes_the_object_and_is_idempotent,
            create_succeeds_again_after_delete,
            list_returns_every_key_under_a_prefix_sorted_with_sizes,
            list_of_an_unknown_prefix_is_empty,
            invalid_keys_are_rejected,
            empty_and_large_objects_round_trip,
            keys_with_spaces_and_unicode_round_trip,
            exactly_one_of_sixteen_concurrent_creates_wins,
            exactly_one_of_sixteen_concurrent_updates_from_one_etag_wins,
            concurrent_read_modify_write_loops_lose_no_increment,
            put_file_of_a_multipart_file_round_trips,
            put_file_of_small_and_empty_files_round_trips,
            put_file_create_fails_with_precondition_failed_when_the_key_exists,
            put_file_update_is_checked_or_refused,
            get_to_file_of_a_missing_key_is_not_found_and_creates_no_file,
            put_file_of_a_missing_file_fails_and_writes_nothing,
        );
    };
    (@cases ($fixture:expr) $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $fixture.await;
                $crate::conformance::$case(
                    ::core::convert::AsRef::<dyn $crate::BlobStore>::as_ref(&fixture),
                )
                .await;
            }
        )*
    };
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// `get` returns exactly what `put` wrote, with the etag `put` returned.
pub async fn put_then_get_returns_the_bytes_and_the_etag_put_returned(store: &dyn BlobStore) {
    let etag = store
        .put(
            "books/a/metadata.json",
            bytes("{\"v\":1}"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let blob = store.get("books/a/metadata.json").await.unwrap();
    assert_eq!(blob.bytes, bytes("{\"v\":1}"));
    assert_eq!(blob.etag, etag);
}

/// `get` of an absent key is the typed `NotFound`.
pub async fn get_of_a_missing_key_is_not_found(store: &dyn BlobStore) {
    let error = store.get("books/none/metadata.json").await.unwrap_err();
    assert!(
        matches!(&error, BlobError::NotFound { key } if key == "books/none/metadata.json"),
        "{error:?}"
    );
}

/// `head` reports the size and the same etag as `get`, without the content.
pub async fn head_reports_the_size_and_the_etag_of_get(store: &dyn BlobStore) {
    let etag = store
        .put("a/b.txt", bytes("hello"), PutMode::Overwrite)
        .await
        .unwrap();
    let meta = store.head("a/b.txt").await.unwrap();
    assert_eq!(meta.key, "a/b.txt");
    assert_eq!(meta.size, 5);
    assert_eq!(meta.etag, etag);
    assert_eq!(store.get("a/b.txt").await.unwrap().etag, meta.etag);
}

/// `head` of an absent key is the typed `NotFound`.
pub async fn head_of_a_missing_key_is_not_found(store: &dyn BlobStore) {
    let error = store.head("a/missing.txt").await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
}

/// `Overwrite` replaces the content whatever is there, and the etag changes.
pub async fn overwrite_replaces_the_content_and_changes_the_etag(store: &dyn BlobStore) {
    let first = store
        .put("k", bytes("one"), PutMode::Overwrite)
        .await
        .unwrap();
    let second = store
        .put("k", bytes("two"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_ne!(first, second);
    let blob = store.get("k").await.unwrap();
    assert_eq!(blob.bytes, bytes("two"));
    assert_eq!(blob.etag, second);
}

/// `Create` writes when the key is absent.
pub async fn create_writes_when_the_key_is_absent(store: &dyn BlobStore) {
    let etag = store
        .put("new/key", bytes("x"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(store.get("new/key").await.unwrap().etag, etag);
}

/// `Create` on an existing key fails with `PreconditionFailed` and changes nothing.
pub async fn create_fails_with_precondition_failed_when_the_key_exists(store: &dyn BlobStore) {
    let etag = store
        .put("k", bytes("original"), PutMode::Create)
        .await
        .unwrap();
    let error = store
        .put("k", bytes("intruder"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BlobError::PreconditionFailed { key } if key == "k"),
        "{error:?}"
    );
    let blob = store.get("k").await.unwrap();
    assert_eq!(blob.bytes, bytes("original"));
    assert_eq!(blob.etag, etag);
}

/// `Update` with the etag just read writes, and returns the new etag.
pub async fn update_with_the_current_etag_writes(store: &dyn BlobStore) {
    let first = store.put("k", bytes("v1"), PutMode::Create).await.unwrap();
    let second = store
        .put(
            "k",
            bytes("v2"),
            PutMode::Update {
                etag: first.clone(),
            },
        )
        .await
        .unwrap();
    assert_ne!(first, second);
    let blob = store.get("k").await.unwrap();
    assert_eq!(blob.bytes, bytes("v2"));
    assert_eq!(blob.etag, second);
}

/// `Update` with an etag that is no longer current fails and changes nothing.
pub async fn update_with_a_stale_etag_fails_with_precondition_failed(store: &dyn BlobStore) {
    let stale = store.put("k", bytes("v1"), PutMode::Create).await.unwrap();
    let current = store
        .put(
            "k",
            bytes("v2"),
            PutMode::Update {
                etag: stale.clone(),
            },
        )
        .await
        .unwrap();
    let error = store
        .put("k", bytes("lost"), PutMode::Update { etag: stale })
        .await
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error:?}");
    let blob = store.get("k").await.unwrap();
    assert_eq!(blob.bytes, bytes("v2"));
    assert_eq!(blob.etag, current);
}

/// `Update` of an absent key fails with `PreconditionFailed` and creates nothing.
pub async fn update_of_a_missing_key_fails_with_precondition_failed(store: &dyn BlobStore) {
    let etag = store
        .put("gone", bytes("v1"), PutMode::Create)
        .await
        .unwrap();
    store.delete("gone").await.unwrap();
    let error = store
        .put("gone", bytes("v2"), PutMode::Update { etag })
        .await
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error:?}");
    let bogus = ETag::new("\"00000000000000000000000000000000\"");
    let error = store
        .put("never", bytes("v"), PutMode::Update { etag: bogus })
        .await
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error:?}");
    assert!(store.get("gone").await.unwrap_err().is_not_found());
    assert!(store.get("never").await.unwrap_err().is_not_found());
}

/// `delete` removes the object; deleting an absent key succeeds.
pub async fn delete_removes_the_object_and_is_idempotent(store: &dyn BlobStore) {
    store
        .put("d/k", bytes("x"), PutMode::Overwrite)
        .await
        .unwrap();
    store.delete("d/k").await.unwrap();
    assert!(store.get("d/k").await.unwrap_err().is_not_found());
    assert!(store.head("d/k").await.unwrap_err().is_not_found());
    store.delete("d/k").await.unwrap();
    store.delete("never/existed").await.unwrap();
    assert!(store.list("d/").await.unwrap().is_empty());
}

/// After a delete, `Create` succeeds again.
pub async fn create_succeeds_again_after_delete(store: &dyn BlobStore) {
    store.put("k", bytes("one"), PutMode::Create).await.unwrap();
    store.delete("k").await.unwrap();
    store.put("k", bytes("two"), PutMode::Create).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().bytes, bytes("two"));
}

/// `list` finds keys at any depth under a string prefix (also one ending mid-name),
/// sorted, with sizes, and nothing outside it.
pub async fn list_returns_every_key_under_a_prefix_sorted_with_sizes(store: &dyn BlobStore) {
    for (key, content) in [
        ("books/b1/pages/0002.png", "22"),
        ("books/b1/metadata.json", "m"),
        ("books/b1/pages/0001.png", "1"),
        ("books/b10/metadata.json", "mm"),
        ("books/b2/metadata.json", "mmm"),
        ("other/x", "x"),
    ] {
        store
            .put(key, bytes(content), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let listed = |prefix: &'static str| async move {
        store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| (entry.key, entry.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed("books/b1/").await,
        vec![
            ("books/b1/metadata.json".to_owned(), 1),
            ("books/b1/pages/0001.png".to_owned(), 1),
            ("books/b1/pages/0002.png".to_owned(), 2),
        ]
    );
    assert_eq!(
        listed("books/b1").await.len(),
        4,
        "a prefix ending mid-name also matches books/b10"
    );
    assert_eq!(
        listed("books/b1/pages/000").await,
        vec![
            ("books/b1/pages/0001.png".to_owned(), 1),
            ("books/b1/pages/0002.png".to_owned(), 2),
        ]
    );
    let all = listed("").await;
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "sorted: {all:?}"
    );
}

/// `list` of a prefix nothing is under is empty, not an error.
pub async fn list_of_an_unknown_prefix_is_empty(store: &dyn BlobStore) {
    store
        .put("a/b", bytes("x"), PutMode::Overwrite)
        .await
        .unwrap();
    assert!(store.list("zzz/").await.unwrap().is_empty());
    assert!(store.list("a/b/c/").await.unwrap().is_empty());
}

/// Keys that are not relative, clean paths are `InvalidKey` for every operation.
pub async fn invalid_keys_are_rejected(store: &dyn BlobStore) {
    for key in [
        "",
        "/abs",
        "a/../b",
        "..",
        "a//b",
        "a/",
        "./a",
        "a\\b",
        "a/.folio-tmp-1",
    ] {
        let put = store.put(key, bytes("x"), PutMode::Overwrite).await;
        assert!(
            matches!(put, Err(BlobError::InvalidKey { .. })),
            "put {key:?}: {put:?}"
        );
        let get = store.get(key).await;
        assert!(
            matches!(get, Err(BlobError::InvalidKey { .. })),
            "get {key:?}: {get:?}"
        );
        let head = store.head(key).await;
        assert!(
            matches!(head, Err(BlobError::InvalidKey { .. })),
            "head {key:?}: {head:?}"
        );
        let delete = store.delete(key).await;
        assert!(
            matches!(delete, Err(BlobError::InvalidKey { .. })),
            "delete {key:?}: {delete:?}"
        );
    }
    let list = store.list("../").await;
    assert!(
        matches!(list, Err(BlobError::InvalidKey { .. })),
        "{list:?}"
    );
    assert!(
        store.list("").await.unwrap().is_empty(),
        "nothing was written"
    );
}

/// A zero-byte object and a 5 MiB object round-trip byte for byte.
pub async fn empty_and_large_objects_round_trip(store: &dyn BlobStore) {
    store
        .put("empty", Bytes::new(), PutMode::Create)
        .await
        .unwrap();
    let empty = store.get("empty").await.unwrap();
    assert!(empty.bytes.is_empty());
    assert_eq!(store.head("empty").await.unwrap().size, 0);

    let large: Vec<u8> = (0..5 * 1024 * 1024_u32).map(|i| (i % 251) as u8).collect();
    store
        .put("large.bin", Bytes::from(large.clone()), PutMode::Create)
        .await
        .unwrap();
    let blob = store.get("large.bin").await.unwrap();
    assert_eq!(blob.bytes.len(), large.len());
    assert!(blob.bytes == large, "content differs");
    assert_eq!(
        store.head("large.bin").await.unwrap().size,
        large.len() as u64
    );
}

/// Keys with spaces, `+`, `%` and non-ASCII characters are stored and listed verbatim.
pub async fn keys_with_spaces_and_unicode_round_trip(store: &dyn BlobStore) {
    let keys = ["dir with space/file+plus%25.txt", "unicode/ñandú-页.txt"];
    for key in keys {
        store.put(key, bytes(key), PutMode::Create).await.unwrap();
        assert_eq!(store.get(key).await.unwrap().bytes, bytes(key));
    }
    let listed: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect();
    assert_eq!(listed, keys.map(str::to_owned).to_vec());
}

/// Of 16 simultaneous `Create`s of one key, exactly one wins; the others get
/// `PreconditionFailed`, and the stored content is the winner's.
pub async fn exactly_one_of_sixteen_concurrent_creates_wins(store: &dyn BlobStore) {
    let results = join_all((0..16).map(|writer| {
        store.put(
            "race/create",
            bytes(&format!("writer {writer}")),
            PutMode::Create,
        )
    }))
    .await;
    assert_one_writer_won(store, "race/create", &results).await;
}

/// Exactly one of the racing writers (writer `n` wrote `"writer n"`) succeeded, every other
/// one got `PreconditionFailed`, and the stored object is the winner's, with its etag.
async fn assert_one_writer_won(
    store: &dyn BlobStore,
    key: &str,
    results: &[Result<ETag, BlobError>],
) {
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter_map(|(writer, result)| result.is_ok().then_some(writer))
        .collect();
    assert_eq!(winners.len(), 1, "results: {results:?}");
    for result in results {
        if let Err(error) = result {
            assert!(error.is_precondition_failed(), "{error:?}");
        }
    }
    let blob = store.get(key).await.unwrap();
    assert_eq!(blob.bytes, bytes(&format!("writer {}", winners[0])));
    assert_eq!(Some(&blob.etag), results[winners[0]].as_ref().ok());
}

/// Of 16 simultaneous `Update`s from the same etag, exactly one wins.
pub async fn exactly_one_of_sixteen_concurrent_updates_from_one_etag_wins(store: &dyn BlobStore) {
    let base = store
        .put("race/update", bytes("base"), PutMode::Create)
        .await
        .unwrap();
    let results = join_all((0..16).map(|writer| {
        store.put(
            "race/update",
            bytes(&format!("writer {writer}")),
            PutMode::Update { etag: base.clone() },
        )
    }))
    .await;
    assert_one_writer_won(store, "race/update", &results).await;
}

/// Eight concurrent read-modify-write loops, each adding 10 increments to one counter
/// with `Update` and retrying on `PreconditionFailed`, end at exactly 80.
pub async fn concurrent_read_modify_write_loops_lose_no_increment(store: &dyn BlobStore) {
    store
        .put("counter", bytes("0"), PutMode::Create)
        .await
        .unwrap();
    join_all((0..8).map(|_| async {
        for _ in 0..10 {
            loop {
                let blob = store.get("counter").await.unwrap();
                let value: u64 = std::str::from_utf8(&blob.bytes).unwrap().parse().unwrap();
                match store
                    .put(
                        "counter",
                        bytes(&(value + 1).to_string()),
                        PutMode::Update { etag: blob.etag },
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(error) if error.is_precondition_failed() => {
                        tokio::task::yield_now().await;
                    }
                    Err(error) => panic!("{error:?}"),
                }
            }
        }
    }))
    .await;
    assert_eq!(store.get("counter").await.unwrap().bytes, bytes("80"));
}

/// Writes `size` bytes that never repeat a pattern (a splitmix64 stream from `seed`) to
/// `path`, in pieces; returns their SHA-256.
pub fn write_unique_file(path: &Path, size: u64, seed: u64) -> [u8; 32] {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("creating"));
    let mut hasher = Sha256::new();
    let mut state = seed;
    let mut left = size;
    while left > 0 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        let word = mixed.to_le_bytes();
        let take = usize::try_from(left.min(8)).expect("at most 8");
        hasher.update(&word[..take]);
        file.write_all(&word[..take]).expect("writing");
        left -= take as u64;
    }
    file.flush().expect("flushing");
    hasher.finalize().into()
}

/// The SHA-256 of a file, read in pieces.
pub fn file_sha256(path: &Path) -> [u8; 32] {
    use std::io::Read;
    let mut file = std::fs::File::open(path).expect("opening");
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).expect("reading");
        if read == 0 {
            return hasher.finalize().into();
        }
        hasher.update(&buffer[..read]);
    }
}

/// Larger than one S3 part (8 MiB), and not a multiple of it: a multipart upload whose
/// last part holds one byte.
const MULTIPART_SIZE: u64 = 20 * 1024 * 1024 + 1;

/// A file of 20 MiB + 1 byte stored with `put_file` reads back byte for byte through `get`
/// and `get_to_file`, with the etag `put_file` returned (also `head`'s).
pub async fn put_file_of_a_multipart_file_round_trips(store: &dyn BlobStore) {
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("upload.pdf");
    let expected = write_unique_file(&source, MULTIPART_SIZE, 1);
    let etag = store
        .put_file("books/a/source.pdf", &source, PutMode::Overwrite)
        .await
        .unwrap();
    let meta = store.head("books/a/source.pdf").await.unwrap();
    assert_eq!(meta.size, MULTIPART_SIZE);
    assert_eq!(meta.etag, etag);

    let blob = store.get("books/a/source.pdf").await.unwrap();
    assert_eq!(blob.bytes.len() as u64, MULTIPART_SIZE);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&blob.bytes)), expected);
    assert_eq!(blob.etag, etag);

    let copy = directory.path().join("copy.pdf");
    let written = store
        .get_to_file("books/a/source.pdf", &copy)
        .await
        .unwrap();
    assert_eq!(written, MULTIPART_SIZE);
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), MULTIPART_SIZE);
    assert_eq!(file_sha256(&copy), expected);
}

/// A small and an empty file round-trip through `put_file` and `get_to_file`, which
/// truncates a longer file already at its path.
pub async fn put_file_of_small_and_empty_files_round_trips(store: &dyn BlobStore) {
    let directory = tempfile::tempdir().unwrap();
    let copy = directory.path().join("copy");
    for (key, size) in [("small", 1000), ("empty", 0)] {
        let source = directory.path().join(key);
        let expected = write_unique_file(&source, size, 2);
        let etag = store.put_file(key, &source, PutMode::Create).await.unwrap();
        let blob = store.get(key).await.unwrap();
        assert_eq!(blob.bytes, Bytes::from(std::fs::read(&source).unwrap()));
        assert_eq!(blob.etag, etag);
        assert_eq!(store.head(key).await.unwrap().size, size);

        std::fs::write(&copy, vec![b'x'; 5000]).unwrap();
        assert_eq!(store.get_to_file(key, &copy).await.unwrap(), size);
        assert_eq!(file_sha256(&copy), expected, "{key}: exactly the object");
    }
}

/// `put_file` with `Create` on an existing key fails with `PreconditionFailed` and changes
/// nothing, for a file of one request and a multipart one.
pub async fn put_file_create_fails_with_precondition_failed_when_the_key_exists(
    store: &dyn BlobStore,
) {
    let directory = tempfile::tempdir().unwrap();
    let etag = store
        .put("k", bytes("original"), PutMode::Create)
        .await
        .unwrap();
    for size in [10, MULTIPART_SIZE] {
        let source = directory.path().join(format!("intruder-{size}"));
        write_unique_file(&source, size, 3);
        let error = store
            .put_file("k", &source, PutMode::Create)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, BlobError::PreconditionFailed { key } if key == "k"),
            "{size} bytes: {error:?}"
        );
        let blob = store.get("k").await.unwrap();
        assert_eq!(blob.bytes, bytes("original"));
        assert_eq!(blob.etag, etag);
    }
}

/// `put_file` with `Update` writes with the current etag and fails with a stale one. A
/// multipart file is either written the same way or refused as `Unsupported` (S3); never
/// written with an unchecked condition.
pub async fn put_file_update_is_checked_or_refused(store: &dyn BlobStore) {
    let directory = tempfile::tempdir().unwrap();
    for size in [100, MULTIPART_SIZE] {
        let key = format!("update-{size}");
        let stale = store.put(&key, bytes("v1"), PutMode::Create).await.unwrap();
        let current = store
            .put(
                &key,
                bytes("v2"),
                PutMode::Update {
                    etag: stale.clone(),
                },
            )
            .await
            .unwrap();
        let source = directory.path().join(&key);
        let expected = write_unique_file(&source, size, 4);

        let error = store
            .put_file(&key, &source, PutMode::Update { etag: stale })
            .await
            .unwrap_err();
        let refused = matches!(error, BlobError::Unsupported { .. });
        assert!(
            error.is_precondition_failed() || (refused && size == MULTIPART_SIZE),
            "{size} bytes: {error:?}"
        );
        assert_eq!(store.get(&key).await.unwrap().bytes, bytes("v2"));

        let result = store
            .put_file(&key, &source, PutMode::Update { etag: current })
            .await;
        match result {
            Ok(etag) => {
                assert!(!refused, "a store refuses a mode always or never");
                let copy = directory.path().join("copy");
                store.get_to_file(&key, &copy).await.unwrap();
                assert_eq!(file_sha256(&copy), expected);
                assert_eq!(store.head(&key).await.unwrap().etag, etag);
            }
            Err(BlobError::Unsupported { .. }) if refused => {
                assert_eq!(store.get(&key).await.unwrap().bytes, bytes("v2"));
            }
            Err(error) => panic!("{size} bytes: {error:?}"),
        }
    }
}

/// `get_to_file` of a missing key is `NotFound` and creates no file.
pub async fn get_to_file_of_a_missing_key_is_not_found_and_creates_no_file(store: &dyn BlobStore) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("never");
    let error = store
        .get_to_file("books/none/source.pdf", &path)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BlobError::NotFound { key } if key == "books/none/source.pdf"),
        "{error:?}"
    );
    assert!(!path.exists(), "no file at {}", path.display());
}

/// `put_file` of a file that does not exist is a backend error and writes nothing;
/// invalid keys are refused by both streaming calls.
pub async fn put_file_of_a_missing_file_fails_and_writes_nothing(store: &dyn BlobStore) {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing.pdf");
    let error = store
        .put_file("k", &missing, PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(matches!(error, BlobError::Backend { .. }), "{error:?}");
    assert!(store.list("").await.unwrap().is_empty());

    std::fs::write(&missing, b"x").unwrap();
    let put = store.put_file("a/../b", &missing, PutMode::Overwrite).await;
    assert!(matches!(put, Err(BlobError::InvalidKey { .. })), "{put:?}");
    let get = store.get_to_file("/abs", &missing).await;
    assert!(matches!(get, Err(BlobError::InvalidKey { .. })), "{get:?}");
    assert_eq!(std::fs::read(&missing).unwrap(), b"x", "left alone");
}
