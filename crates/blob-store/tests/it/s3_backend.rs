//! The S3 backend against a real S3-compatible server (moto, started by the test setup).

use blob_store::conformance::{moto, s3_test_store};
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
