//! The S3 backend through the fault proxy (`conformance::fault_proxy`) in front of moto:
//! SlowDown bursts and resets are retried, an outage is a prompt transient error that
//! ends with the outage, and a stalled server never holds a call past its timeouts.

use std::time::{Duration, Instant};

use blob_store::conformance::fault_proxy::{Fault, FaultProxy, FaultRule};
use blob_store::conformance::{file_sha256, moto, write_unique_file};
use blob_store::{BlobError, BlobStore, PutMode, S3BlobStore, S3Config};
use bytes::Bytes;

/// A fresh bucket on moto, and a store of it whose requests all go through a new proxy.
async fn store_through_proxy(
    max_attempts: u32,
    timeouts: Option<(Duration, Duration, Duration)>,
) -> (S3BlobStore, FaultProxy, moto::TestEndpoint) {
    let endpoint = moto::test_endpoint();
    let bucket = format!("folio-faults-{}", uuid_like());
    let direct = S3BlobStore::from_env(
        S3Config::new(&bucket)
            .with_endpoint(endpoint.url())
            .with_region("us-east-1")
            .with_credentials(moto::test_credentials()),
    )
    .await
    .unwrap();
    direct
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let proxy = FaultProxy::start(endpoint.url()).await;
    let mut config = S3Config::new(&bucket)
        .with_endpoint(proxy.url())
        .with_region("us-east-1")
        .with_credentials(moto::test_credentials())
        .with_max_attempts(max_attempts);
    if let Some((connect, attempt, operation)) = timeouts {
        config = config.with_timeouts(connect, attempt, operation);
    }
    let store = S3BlobStore::from_env(config).await.unwrap();
    (store, proxy, endpoint)
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_bursts_through_the_proxy_are_retried_by_the_sdk() {
    let (store, proxy, _endpoint) = store_through_proxy(4, None).await;
    proxy.slow_down_next(3);
    let etag = store
        .put("k", payload(1000), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(proxy.stats().slow_downs, 3);
    proxy.slow_down_fraction(0.5);
    for _ in 0..6 {
        let blob = store.get("k").await.unwrap();
        assert_eq!(blob.etag, etag);
        assert_eq!(blob.bytes, payload(1000));
    }
    assert!(proxy.stats().slow_downs >= 6, "{:?}", proxy.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_past_the_attempts_is_a_transient_error() {
    let (store, proxy, _endpoint) = store_through_proxy(2, None).await;
    proxy.add_rule(FaultRule::always(Fault::SlowDown));
    let error = store.get("k").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(proxy.stats().slow_downs, 2);
    assert_eq!(proxy.stats().forwarded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_reset_mid_body_is_retried() {
    let (store, proxy, _endpoint) = store_through_proxy(3, None).await;
    store
        .put("big", payload(200_000), PutMode::Overwrite)
        .await
        .unwrap();
    proxy.add_rule(FaultRule::next(Fault::ResetMidResponse, 1).method("GET"));
    let blob = store.get("big").await.unwrap();
    assert_eq!(blob.bytes, payload(200_000));
    assert_eq!(proxy.stats().resets, 1);
    // A write whose response is cut took effect on the server; an unconditional one is
    // simply sent again.
    proxy.add_rule(FaultRule::next(Fault::ResetMidResponse, 1).method("PUT"));
    store
        .put("big", payload(10), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(store.get("big").await.unwrap().bytes, payload(10));
    assert_eq!(proxy.stats().resets, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_put_whose_response_is_lost_reports_precondition_failed_and_took_effect() {
    let (store, proxy, _endpoint) = store_through_proxy(3, None).await;
    let etag = store.put("m", payload(10), PutMode::Create).await.unwrap();
    proxy.add_rule(FaultRule::next(Fault::ResetMidResponse, 1).method("PUT"));
    let error = store
        .put("m", payload(20), PutMode::Update { etag })
        .await
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error:?}");
    assert_eq!(store.get("m").await.unwrap().bytes, payload(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_a_prompt_transient_error_and_ends_at_its_deadline() {
    let (store, proxy, _endpoint) = store_through_proxy(3, None).await;
    store
        .put("k", payload(10), PutMode::Overwrite)
        .await
        .unwrap();
    proxy.outage_for(Duration::from_secs(3));
    let started = Instant::now();
    let error = store.get("k").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.stats().outage_resets >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get("k").await {
            Ok(blob) => {
                assert_eq!(blob.bytes, payload(10));
                break;
            }
            Err(error) => {
                assert!(error.is_transient(), "{error:?}");
                assert!(Instant::now() < deadline, "the outage never ended");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!proxy.in_outage());

    proxy.outage();
    assert!(store.head("k").await.unwrap_err().is_transient());
    proxy.heal();
    assert_eq!(store.head("k").await.unwrap().size, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_never_holds_a_call_past_its_timeouts() {
    let timeouts = (
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(4),
    );
    let (store, proxy, _endpoint) = store_through_proxy(3, Some(timeouts)).await;
    store
        .put("k", payload(100_000), PutMode::Overwrite)
        .await
        .unwrap();

    // No answer at all: the SDK's attempt and operation timeouts.
    proxy.add_rule(FaultRule::always(Fault::Stall));
    for call in ["get", "put", "head"] {
        let started = Instant::now();
        let error = match call {
            "get" => store.get("k").await.unwrap_err(),
            "put" => store
                .put("k", payload(5), PutMode::Overwrite)
                .await
                .unwrap_err(),
            _ => store.head("k").await.unwrap_err(),
        };
        assert!(
            matches!(error, BlobError::Transient { .. }),
            "{call}: {error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{call} took {:?}",
            started.elapsed()
        );
    }
    proxy.heal();

    // The head arrives, then half the body and silence: the SDK's timeouts are over by
    // then, the store's own bound on reading the body ends it.
    proxy.add_rule(FaultRule::always(Fault::StallMidResponse).method("GET"));
    let started = Instant::now();
    let error = store.get("k").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a stalled body held the get for {:?}",
        started.elapsed()
    );
    proxy.heal();
    assert_eq!(store.get("k").await.unwrap().bytes, payload(100_000));
}

/// SlowDown answers to a part are retried (the SDK re-reads that part from the file); a
/// part that keeps failing makes `put_file` a transient error and aborts the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_parts_are_retried_and_a_failed_upload_is_aborted() {
    let (store, proxy, _endpoint) = store_through_proxy(3, None).await;
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("large");
    let expected = write_unique_file(&source, 20 * 1024 * 1024 + 1, 8);

    proxy.add_rule(FaultRule::next(Fault::SlowDown, 2).path_contains("partNumber=2"));
    let etag = store
        .put_file("retried", &source, PutMode::Create)
        .await
        .unwrap();
    assert_eq!(proxy.stats().slow_downs, 2);
    let copy = directory.path().join("copy");
    store.get_to_file("retried", &copy).await.unwrap();
    assert_eq!(file_sha256(&copy), expected);
    assert_eq!(store.head("retried").await.unwrap().etag, etag);

    proxy.add_rule(FaultRule::always(Fault::SlowDown).path_contains("partNumber=3"));
    let error = store
        .put_file("failed", &source, PutMode::Create)
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    proxy.heal();
    let uploads = store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{uploads:?}");
    assert!(store.head("failed").await.unwrap_err().is_not_found());
}

/// A body reset midway is retried by `get_to_file` from the start, and the file holds the
/// object exactly; resets past the attempts are a transient error that leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_to_file_retries_a_body_reset_and_leaves_no_partial_file() {
    let (store, proxy, _endpoint) = store_through_proxy(3, None).await;
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("large");
    let expected = write_unique_file(&source, 12 * 1024 * 1024, 9);
    store
        .put_file("k", &source, PutMode::Overwrite)
        .await
        .unwrap();

    let copy = directory.path().join("copy");
    proxy.add_rule(FaultRule::next(Fault::ResetMidResponse, 1).method("GET"));
    assert_eq!(
        store.get_to_file("k", &copy).await.unwrap(),
        12 * 1024 * 1024
    );
    assert_eq!(file_sha256(&copy), expected);

    std::fs::remove_file(&copy).unwrap();
    proxy.add_rule(FaultRule::always(Fault::ResetMidResponse).method("GET"));
    let error = store.get_to_file("k", &copy).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(!copy.exists());
}
