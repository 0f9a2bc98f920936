//! The file backend: the conformance suite, plus what only a local directory can show
//! (atomic temp files, locks across processes).

use std::process::{Command, Stdio};

use blob_store::conformance::file_test_store;
use blob_store::{BlobStore, FileBlobStore, PutMode};
use bytes::Bytes;

blob_store::conformance_tests!(file_test_store());

/// Env var that turns [`helper_process_for_cross_process_tests`] into a writer process.
const HELPER_DIR_ENV: &str = "FOLIO_BLOB_STORE_HELPER_DIR";

#[tokio::test]
async fn writes_leave_no_temp_files_and_lock_files_are_never_listed() {
    let directory = tempfile::tempdir().unwrap();
    let store = FileBlobStore::open(directory.path()).await.unwrap();
    for round in 0..5 {
        store
            .put(
                "a/b.json",
                Bytes::from(format!("round {round}")),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(directory.path().join("a"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["b.json"]);
    assert!(directory.path().join(".folio-locks").is_dir());
    let listed = store.list("").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn two_stores_on_one_directory_see_each_others_writes() {
    let directory = tempfile::tempdir().unwrap();
    let first = FileBlobStore::open(directory.path()).await.unwrap();
    let second = FileBlobStore::open(directory.path()).await.unwrap();
    let etag = first
        .put("k", Bytes::from_static(b"one"), PutMode::Create)
        .await
        .unwrap();
    let error = second
        .put("k", Bytes::from_static(b"two"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error:?}");
    second
        .put("k", Bytes::from_static(b"two"), PutMode::Update { etag })
        .await
        .unwrap();
    assert_eq!(
        first.get("k").await.unwrap().bytes,
        Bytes::from_static(b"two")
    );
}

/// Four processes race on one directory: one `Create` each (exactly one wins) and 20
/// read-modify-write increments each with `Update` (none lost).
#[test]
fn conditional_writes_are_atomic_across_processes() {
    let directory = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "file_backend::helper_process_for_cross_process_tests",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(HELPER_DIR_ENV, directory.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut winners = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "helper failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("helper done"), "the helper ran: {stdout}");
        winners += stdout.matches("create won").count();
    }
    assert_eq!(winners, 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let counter = runtime.block_on(async {
        let store = FileBlobStore::open(directory.path()).await.unwrap();
        store.get("counter").await.unwrap().bytes
    });
    assert_eq!(counter, Bytes::from_static(b"80"));
}

/// Not a test on its own: the body of each writer process of
/// [`conditional_writes_are_atomic_across_processes`]. Without its env var it only checks
/// that it was not asked to run.
#[tokio::test]
async fn helper_process_for_cross_process_tests() {
    let Some(directory) = std::env::var_os(HELPER_DIR_ENV) else {
        assert!(std::env::var_os(HELPER_DIR_ENV).is_none());
        return;
    };
    let store = FileBlobStore::open(directory).await.unwrap();
    match store
        .put(
            "race",
            Bytes::from(std::process::id().to_string()),
            PutMode::Create,
        )
        .await
    {
        Ok(_) => println!("create won"),
        Err(error) => assert!(error.is_precondition_failed(), "{error:?}"),
    }
    match store
        .put("counter", Bytes::from_static(b"0"), PutMode::Create)
        .await
    {
        Ok(_) => {}
        Err(error) => assert!(error.is_precondition_failed(), "{error:?}"),
    }
    for _ in 0..20 {
        loop {
            let blob = store.get("counter").await.unwrap();
            let value: u64 = std::str::from_utf8(&blob.bytes).unwrap().parse().unwrap();
            let next = Bytes::from((value + 1).to_string());
            match store
                .put("counter", next, PutMode::Update { etag: blob.etag })
                .await
            {
                Ok(_) => break,
                Err(error) if error.is_precondition_failed() => {}
                Err(error) => panic!("{error:?}"),
            }
        }
    }
    println!("helper done");
}

#[tokio::test]
async fn open_builds_a_file_store_from_a_file_url_and_creates_the_directory() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("nested/objects");
    let store = blob_store::open(&format!("file://{}", root.display()))
        .await
        .unwrap();
    store
        .put("a/b", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("a/b")).unwrap(), b"x");
}
