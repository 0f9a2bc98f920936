//! The S3 backend against a real S3-compatible server (moto, started by the test setup).

use blob_store::conformance::{moto, s3_test_store, write_unique_file};
use blob_store::{BlobError, BlobStore, PutMode, S3BlobStore, S3Config};
use bytes::Bytes;

blob_store::conformance_tests!(s3_test_store());

async fn store_on_a_missing_bucket(endpoint: &moto::TestEndpoint) -> S3BlobStore {
    let config = S3Config::new("folio-no-such-bucket")
        .with_endpoint(endpoint.url())
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials())
        .with_max_attempts(1);
    S3BlobStore::from_env(config).await.unwrap()
}

#[tokio::test]
async fn a_missing_bucket_is_a_backend_error_not_a_missing_object() {
    let endpoint = moto::test_endpoint();
    let store = store_on_a_missing_bucket(&endpoint).await;
    let get = store.get("books/a/metadata.json").await.unwrap_err();
    assert!(
        matches!(
            get,
            BlobError::Backend {
                operation: "get",
                ..
            }
        ),
        "{get:?}"
    );
    let put = store
        .put("k", Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(
        matches!(
            put,
            BlobError::Backend {
                operation: "put",
                ..
            }
        ),
        "{put:?}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transient_error_after_retries() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = S3Config::new("bucket")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials())
        .with_max_attempts(2);
    let store = S3BlobStore::from_env(config).await.unwrap();
    let error = store.get("k").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn keys_live_under_the_configured_prefix_in_the_bucket() {
    let endpoint = moto::test_endpoint();
    let bucket = format!("folio-prefix-{}", std::process::id());
    let config = S3Config::new(&bucket)
        .with_endpoint(endpoint.url())
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials());
    let whole_bucket = S3BlobStore::from_env(config).await.unwrap();
    whole_bucket
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let tenant = S3BlobStore::with_client(whole_bucket.client().clone(), &bucket, "tenant/");

    tenant
        .put(
            "books/a/metadata.json",
            Bytes::from_static(b"{}"),
            PutMode::Create,
        )
        .await
        .unwrap();
    whole_bucket
        .put("elsewhere/x", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();

    let keys = |entries: Vec<blob_store::ListEntry>| {
        entries
            .into_iter()
            .map(|entry| entry.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(tenant.list("").await.unwrap()),
        ["books/a/metadata.json"]
    );
    assert_eq!(
        keys(whole_bucket.list("").await.unwrap()),
        ["elsewhere/x", "tenant/books/a/metadata.json"]
    );
    assert!(tenant.get("elsewhere/x").await.unwrap_err().is_not_found());
}

#[test]
fn s3_urls_parse_into_bucket_and_normalized_prefix() {
    let config = S3Config::from_url("s3://my-bucket/some/prefix").unwrap();
    assert_eq!(config.bucket, "my-bucket");
    assert_eq!(config.prefix, "some/prefix/");
    let config = S3Config::from_url("s3://my-bucket/some/prefix/").unwrap();
    assert_eq!(config.prefix, "some/prefix/");
    let config = S3Config::from_url("s3://my-bucket").unwrap();
    assert_eq!(config.prefix, "");
    for bad in ["s3://", "s3:///prefix", "s3://bucket/../x", "file://x"] {
        let error = S3Config::from_url(bad).unwrap_err();
        assert!(
            matches!(error, BlobError::InvalidUrl { .. }),
            "{bad}: {error:?}"
        );
    }
}

#[tokio::test]
async fn open_rejects_unknown_url_schemes() {
    for bad in ["ftp://x", "/plain/path", "file://"] {
        let error = blob_store::open(bad).await.unwrap_err();
        assert!(
            matches!(error, BlobError::InvalidUrl { .. }),
            "{bad}: {error:?}"
        );
    }
}

/// Runs one S3 case of this test binary in a child process with `env` changes.
fn run_one_s3_case_with(env: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "s3_backend::get_of_a_missing_key_is_not_found",
            "--test-threads=1",
        ])
        .env_remove("FOLIO_TEST_S3_ENDPOINT");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn s3_tests_fail_with_install_instructions_when_moto_server_is_missing() {
    let (passed, output) =
        run_one_s3_case_with(&[("FOLIO_MOTO_SERVER", "/nonexistent/bin/moto_server")]);
    assert!(!passed, "the case must fail, not skip: {output}");
    assert!(output.contains("1 failed"), "{output}");
    assert!(output.contains("scripts/install-moto.sh"), "{output}");

    let (passed, output) =
        run_one_s3_case_with(&[("FOLIO_MOTO_SERVER", ""), ("PATH", "/nonexistent")]);
    assert!(!passed, "the case must fail, not skip: {output}");
    assert!(output.contains("found none"), "{output}");
    assert!(output.contains("scripts/install-moto.sh"), "{output}");
}

/// A one-trick S3 endpoint on 127.0.0.1: answers the first `failures` requests with
/// `503 SlowDown`, then any GET with `hello`. Returns its URL and the request counter.
fn flaky_s3_endpoint(failures: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // The request head; a GET has no body.
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                line.clear();
            }
            let response = if counter.fetch_add(1, Ordering::SeqCst) < failures {
                let body = "<Error><Code>SlowDown</Code><Message>slow down</Message></Error>";
                format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, requests)
}

async fn store_at(url: &str, max_attempts: u32) -> S3BlobStore {
    let config = S3Config::new("bucket")
        .with_endpoint(url)
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials())
        .with_max_attempts(max_attempts);
    S3BlobStore::from_env(config).await.unwrap()
}

#[tokio::test]
async fn a_slow_down_503_is_retried_with_backoff_and_then_succeeds() {
    let (url, requests) = flaky_s3_endpoint(2);
    let store = store_at(&url, 3).await;
    let blob = store.get("k").await.unwrap();
    assert_eq!(blob.bytes, Bytes::from_static(b"hello"));
    assert_eq!(blob.etag.as_str(), "\"e1\"");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_persistent_503_is_a_transient_error_after_the_configured_attempts() {
    let (url, requests) = flaky_s3_endpoint(usize::MAX);
    let store = store_at(&url, 2).await;
    let error = store.get("k").await.unwrap_err();
    assert!(
        matches!(
            error,
            BlobError::Transient {
                operation: "get",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A store on a fresh bucket, with its direct client to look at multipart uploads.
async fn store_on_a_fresh_bucket(endpoint: &moto::TestEndpoint, name: &str) -> S3BlobStore {
    let bucket = format!("folio-{name}-{}", std::process::id());
    let config = S3Config::new(&bucket)
        .with_endpoint(endpoint.url())
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials());
    let store = S3BlobStore::from_env(config).await.unwrap();
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    store
}

async fn open_multipart_uploads(store: &S3BlobStore) -> usize {
    store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

/// A file over one part goes as a multipart upload (its etag counts the parts: 8 MiB
/// parts, so 3 for 20 MiB + 1 byte), one of 8 MiB exactly in one PutObject. A `Create`
/// that loses at CompleteMultipartUpload aborts the upload, and `Update` of a multipart
/// file is refused before any upload starts: no parts are left either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_put_file_counts_parts_and_leaves_no_upload_behind() {
    let endpoint = moto::test_endpoint();
    let store = store_on_a_fresh_bucket(&endpoint, "multipart").await;
    let directory = tempfile::tempdir().unwrap();
    let large = directory.path().join("large");
    write_unique_file(&large, 20 * 1024 * 1024 + 1, 5);
    let one_part = directory.path().join("one-part");
    write_unique_file(&one_part, 8 * 1024 * 1024, 6);

    let etag = store
        .put_file("large", &large, PutMode::Create)
        .await
        .unwrap();
    assert!(etag.as_str().ends_with("-3\""), "{etag}");
    let single = store
        .put_file("one-part", &one_part, PutMode::Create)
        .await
        .unwrap();
    assert!(!single.as_str().contains('-'), "{single}");

    let error = store
        .put_file("large", &large, PutMode::Create)
        .await
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error:?}");
    assert_eq!(open_multipart_uploads(&store).await, 0);

    let error = store
        .put_file("large", &large, PutMode::Update { etag: etag.clone() })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BlobError::Unsupported {
                operation: "put_file",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(open_multipart_uploads(&store).await, 0);
    assert_eq!(store.head("large").await.unwrap().etag, etag);
}
