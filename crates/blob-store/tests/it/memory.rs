//! `put_file` and `get_to_file` keep memory bounded: a child process (this test binary,
//! running only [`memory_helper_process`]) moves a large file through a store and reports
//! how much its peak resident set grew. A child, because the tests of this process run in
//! parallel and share its peak.

use std::path::Path;
use std::process::Command;

use blob_store::conformance::{file_test_store, s3_test_store, write_unique_file};
use blob_store::{BlobStore, PutMode};

/// Env var naming the backend the helper process measures.
const HELPER_BACKEND_ENV: &str = "FOLIO_BLOB_STORE_MEMORY_HELPER";

/// Peak resident set growth allowed while moving the file, far below its size.
const MAX_GROWTH: u64 = 64 * 1024 * 1024;

#[test]
fn put_file_and_get_to_file_of_200_mib_on_the_file_backend_stay_under_64_mib() {
    let growth = run_helper("file");
    assert!(growth < MAX_GROWTH, "grew by {growth} bytes");
}

#[test]
fn put_file_and_get_to_file_of_96_mib_on_s3_stay_under_64_mib() {
    let growth = run_helper("s3");
    assert!(growth < MAX_GROWTH, "grew by {growth} bytes");
}

/// Runs the helper for `backend`; returns the growth of its peak resident set in bytes.
fn run_helper(backend: &str) -> u64 {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memory::memory_helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_BACKEND_ENV, backend)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let growth = stdout
        .lines()
        .find_map(|line| {
            line.split_once("peak rss growth: ")
                .map(|(_, growth)| growth)
        })
        .unwrap_or_else(|| panic!("the helper measured: {stdout}"));
    println!("{backend}: peak rss growth {growth} bytes");
    growth.trim().parse().unwrap()
}

/// The peak resident set of this process so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// Not a test on its own: the body of the helper process. Without its env var it only
/// checks that it was not asked to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_helper_process() {
    let Some(backend) = std::env::var_os(HELPER_BACKEND_ENV) else {
        assert!(std::env::var_os(HELPER_BACKEND_ENV).is_none());
        return;
    };
    let (fixture, size) = if backend == "s3" {
        // moto keeps objects in its own memory (another process): a smaller file.
        (s3_test_store().await, 96 * 1024 * 1024)
    } else {
        (file_test_store().await, 200 * 1024 * 1024)
    };
    let store: &dyn BlobStore = fixture.as_ref();
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("large.pdf");
    sparse_ish_file(&source, size);
    let copy = directory.path().join("copy.pdf");

    let before = peak_rss();
    let etag = store
        .put_file("books/big/source.pdf", &source, PutMode::Create)
        .await
        .unwrap();
    let written = store
        .get_to_file("books/big/source.pdf", &copy)
        .await
        .unwrap();
    let growth = peak_rss().saturating_sub(before);

    assert_eq!(written, size);
    assert_eq!(store.head("books/big/source.pdf").await.unwrap().etag, etag);
    assert!(same_content(&source, &copy), "the copy differs");
    println!("peak rss growth: {growth}");
}

/// A file of `size` bytes, mostly a hole, with unique bytes at its start and end: quick to
/// make, and still a wrong offset or a lost piece shows.
fn sparse_ish_file(path: &Path, size: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let head = path.with_extension("head");
    write_unique_file(&head, 1024 * 1024, 7);
    let unique = std::fs::read(&head).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&unique).unwrap();
    file.seek(SeekFrom::Start(size - unique.len() as u64))
        .unwrap();
    file.write_all(&unique).unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(path).unwrap().len(), size);
}

/// Whether two files hold the same bytes, compared in pieces (memcmp: an unoptimized
/// SHA-256 of 200 MiB takes many seconds).
fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut buffer_a, mut buffer_b) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let read = a.read(&mut buffer_a).unwrap();
        if read == 0 {
            return b.read(&mut buffer_b).unwrap() == 0;
        }
        if b.read_exact(&mut buffer_b[..read]).is_err() || buffer_a[..read] != buffer_b[..read] {
            return false;
        }
    }
}
