//! The S3 backend (`s3://BUCKET/PREFIX`), for AWS S3 and S3-compatible servers.
//!
//! Invariants:
//! - `Create` sends `If-None-Match: *` and `Update` sends `If-Match: ETAG`; the server
//!   decides, so conditional writes are atomic across every process sharing the bucket.
//! - Errors are classified in one place ([`classify`]) by HTTP status and SDK error kind,
//!   never by message text: 404 is `NotFound` (for a put with `If-Match`, S3's answer to an
//!   absent key, `PreconditionFailed`; `NoSuchBucket` is a backend error), 412 (and 409, a concurrent conditional
//!   write in progress) is `PreconditionFailed`, timeouts, I/O, 408, 429 and 5xx are
//!   `Transient` once the SDK's retries (exponential backoff with jitter) are exhausted.
//! - One TLS stack: rustls with ring.
//! - `put_file` sends a file of up to [`PART_SIZE`] in one PutObject and a larger one as a
//!   multipart upload, both streamed from the file (the SDK re-reads it on a retry), so
//!   memory never holds more than a read buffer. `Create` puts `If-None-Match: *` on
//!   CompleteMultipartUpload. `Update` of a multipart file is refused
//!   ([`BlobError::Unsupported`]): S3 checks `If-Match` there, but S3-compatible servers
//!   may not (moto 5.2 ignores it), and an unchecked condition would lose updates. A failed
//!   or dropped multipart upload is aborted, so no parts are left behind.
//! - `get_to_file` writes the body to the file chunk by chunk; a chunk that does not come
//!   within the attempt timeout fails the attempt (a stall is bounded, a long download of a
//!   large object is not).
//!
//! Caveat (inherent to HTTP, documented for callers): if a conditional PUT succeeds on the
//! server but the response is lost, the SDK's retry of it reports `PreconditionFailed`.
//! Read-modify-write callers re-read and find their change already applied.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::error::BoxError;
use crate::key::{validate_key, validate_prefix};
use crate::{Blob, BlobError, BlobMeta, BlobStore, ETag, ListEntry, PutMode};

/// Static S3 credentials, for tests and S3-compatible servers. Production uses the
/// standard AWS credential chain instead (leave [`S3Config::credentials`] empty).
#[derive(Clone)]
pub struct S3Credentials {
    /// The access key id (what `AWS_ACCESS_KEY_ID` holds in the standard chain).
    pub access_key_id: String,
    /// The secret access key; `Debug` prints it redacted.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Where and how [`S3BlobStore`] connects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket, which must exist: the store never creates it, and a missing bucket is
    /// [`BlobError::Backend`].
    pub bucket: String,
    /// Prepended to every key: empty, or ends with `/`.
    pub prefix: String,
    /// Endpoint override for S3-compatible servers (else `AWS_ENDPOINT_URL` or AWS).
    pub endpoint: Option<String>,
    /// Region (else from the AWS configuration chain, else `us-east-1`).
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`); default: on when an endpoint
    /// override is set, since S3-compatible servers rarely do virtual-hosted buckets.
    pub force_path_style: Option<bool>,
    /// Static credentials; `None` uses the standard AWS credential chain.
    pub credentials: Option<S3Credentials>,
    /// Attempts per request, including the first (transient errors only).
    pub max_attempts: u32,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one attempt of one request, including reading a `get`'s body.
    pub attempt_timeout: Duration,
    /// Time for one operation, every attempt and backoff included: no call waits longer,
    /// whatever the server does (a stalled connection is given up after this at most).
    pub operation_timeout: Duration,
}

impl S3Config {
    /// A config for `bucket` with no prefix and the defaults: 5 attempts, 5 s connect
    /// timeout, 60 s per attempt, 120 s per operation.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            force_path_style: None,
            credentials: None,
            max_attempts: 5,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(120),
        }
    }

    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn from_url(url: &str) -> Result<Self, BlobError> {
        let invalid = |reason| BlobError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("expected s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("bucket name is empty"));
        }
        Self::new(bucket)
            .with_prefix(prefix)
            .map_err(|_| invalid("prefix is not a valid key path"))
    }

    /// Sets the key prefix (a trailing `/` is added when missing).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, BlobError> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            self.prefix = String::new();
        } else {
            validate_key(trimmed)?;
            self.prefix = format!("{trimmed}/");
        }
        Ok(self)
    }

    /// Sets the endpoint override (path-style addressing then defaults to on).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the region instead of the AWS configuration chain's.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets static credentials instead of the standard chain.
    pub fn with_credentials(mut self, credentials: S3Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the connect, per-attempt and per-operation timeouts (see the fields).
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        attempt: Duration,
        operation: Duration,
    ) -> Self {
        self.connect_timeout = connect;
        self.attempt_timeout = attempt;
        self.operation_timeout = operation;
        self
    }

    /// Sets the attempts per request (at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }
}

/// A [`BlobStore`] on an S3 bucket (or an S3-compatible server).
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    /// Longest read of one `get`'s body (the SDK's timeouts end when the head arrives).
    body_timeout: Duration,
    /// Longest `get`, every request and body attempt included.
    get_timeout: Duration,
}

impl S3BlobStore {
    /// Connects with `config`, filling the gaps from the standard AWS configuration chain
    /// (environment, profile, web identity, container and instance credentials;
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`). No request is sent here.
    pub async fn from_env(config: S3Config) -> Result<Self, BlobError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_attempt_timeout(config.attempt_timeout)
                    .operation_timeout(config.operation_timeout)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        if let Some(credentials) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.clone(),
                None,
                None,
                "folio-static",
            ));
        }
        let sdk_config = loader.load().await;
        let endpoint_overridden = config.endpoint.is_some()
            || sdk_config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(config.force_path_style.unwrap_or(endpoint_overridden));
        if sdk_config.region().is_none() {
            s3_config = s3_config.region(Region::new("us-east-1"));
        }
        if endpoint_overridden {
            // S3-compatible servers vary in their support of the newer default checksums.
            s3_config = s3_config
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let mut store = Self::with_client(
            Client::from_conf(s3_config.build()),
            config.bucket,
            config.prefix,
        );
        store.body_timeout = config.attempt_timeout;
        store.get_timeout = config.operation_timeout;
        Ok(store)
    }

    /// Wraps an existing client. `prefix` is empty or ends with `/`.
    pub fn with_client(
        client: Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        let defaults = S3Config::new("");
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            body_timeout: defaults.attempt_timeout,
            get_timeout: defaults.operation_timeout,
        }
    }

    /// The underlying SDK client (for bucket administration in tests and tools).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket it reads and writes, under its key prefix.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// `get` without its overall time bound.
    async fn get_unbounded(&self, key: &str) -> Result<Blob, BlobError> {
        let full_key = self.full_key(key);
        let mut attempt = 1;
        loop {
            let output = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full_key)
                .send()
                .await
                .map_err(|error| classify("get", key, error))?;
            let etag = output.e_tag().map(ETag::new);
            let body = tokio::time::timeout(self.body_timeout, output.body.collect()).await;
            let body = match body {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(error)) => Err(BoxError::from(error)),
                Err(_) => {
                    Err(format!("reading the body took longer than {:?}", self.body_timeout).into())
                }
            };
            match body {
                Ok(body) => {
                    let etag = etag.ok_or_else(|| missing_etag("get", key))?;
                    return Ok(Blob {
                        bytes: body.into_bytes(),
                        etag,
                    });
                }
                Err(error) if attempt < GET_BODY_ATTEMPTS => {
                    tracing::debug!(key, attempt, %error, "s3 body read failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(BlobError::Transient {
                        operation: "get",
                        key: key.to_owned(),
                        source: error,
                    });
                }
            }
        }
    }
}

/// Attempts of a GET whose body stream fails midway (the SDK retries only the request).
const GET_BODY_ATTEMPTS: u32 = 3;

/// The part size of a multipart upload, and the largest file `put_file` sends in one
/// PutObject.
pub(crate) const PART_SIZE: u64 = 8 * 1024 * 1024;

/// S3's limit on the parts of one upload; a file too large for it gets larger parts.
const MAX_PARTS: u64 = 10_000;

/// The read buffer of a file streamed to S3 (the SDK's default, 4 KiB, costs CPU).
const FILE_READ_BUFFER: usize = 64 * 1024;

/// Why a `get_to_file` attempt failed: the server's side is retried, the local file's is not.
enum DownloadError {
    Body(BoxError),
    File(std::io::Error),
}

impl S3BlobStore {
    /// One PutObject of `body` (`length` bytes) under `mode`.
    async fn put_object(
        &self,
        key: &str,
        body: ByteStream,
        length: u64,
        mode: &PutMode,
    ) -> Result<ETag, BlobError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .body(body);
        request = match mode {
            PutMode::Overwrite => request,
            PutMode::Create => request.if_none_match("*"),
            PutMode::Update { etag } => request.if_match(etag.as_str()),
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify("put", key, error))?;
        output
            .e_tag()
            .map(ETag::new)
            .ok_or_else(|| missing_etag("put", key))
    }

    /// `length` bytes of the file from `offset`, as a body the SDK can re-read on a retry.
    async fn file_body(
        key: &str,
        path: &Path,
        offset: u64,
        length: u64,
    ) -> Result<ByteStream, BlobError> {
        ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(length))
            .buffer_size(FILE_READ_BUFFER)
            .build()
            .await
            .map_err(|error| local_file_error("put", key, error))
    }

    /// A multipart upload of the file (`size` bytes), aborted on any error.
    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        mode: &PutMode,
    ) -> Result<ETag, BlobError> {
        let full_key = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|error| classify("put", key, error))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BlobError::Backend {
                operation: "put",
                key: key.to_owned(),
                source: "the server sent no upload id".into(),
            })?
            .to_owned();
        let mut upload = PendingUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            full_key,
            upload_id,
            open: true,
        };
        let result = self
            .upload_and_complete(key, path, size, mode, &upload)
            .await;
        if result.is_ok() {
            upload.open = false;
        } else {
            upload.abort().await;
        }
        result
    }

    async fn upload_and_complete(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        mode: &PutMode,
        upload: &PendingUpload,
    ) -> Result<ETag, BlobError> {
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = part_size.min(size - offset);
            let output = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&upload.full_key)
                .upload_id(&upload.upload_id)
                .part_number(number)
                .content_length(i64::try_from(length).unwrap_or(i64::MAX))
                .body(Self::file_body(key, path, offset, length).await?)
                .send()
                .await
                .map_err(|error| classify("put", key, error))?;
            let etag = output.e_tag().ok_or_else(|| missing_etag("put", key))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
            offset += length;
            number += 1;
        }
        let mut request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.full_key)
            .upload_id(&upload.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        match mode {
            PutMode::Overwrite => {}
            PutMode::Create => request = request.if_none_match("*"),
            PutMode::Update { .. } => unreachable!("refused before the upload started"),
        }
        let output = request
            .send()
            .await
            .map_err(|error| classify("put", key, error))?;
        output
            .e_tag()
            .map(ETag::new)
            .ok_or_else(|| missing_etag("put", key))
    }

    /// One attempt of `get_to_file`: the response body into a new file at `path`.
    async fn download(&self, body: ByteStream, path: &Path) -> Result<u64, DownloadError> {
        let mut body = body;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(DownloadError::File)?;
        let mut written = 0_u64;
        loop {
            let chunk = match tokio::time::timeout(self.body_timeout, body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(error))) => return Err(DownloadError::Body(error.into())),
                Err(_) => {
                    return Err(DownloadError::Body(
                        format!("no data for {:?}", self.body_timeout).into(),
                    ));
                }
            };
            file.write_all(&chunk).await.map_err(DownloadError::File)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(DownloadError::File)?;
        Ok(written)
    }
}

/// A multipart upload not yet completed: aborted by [`PendingUpload::abort`] on an error,
/// or in the background if the `put_file` future is dropped midway.
struct PendingUpload {
    client: Client,
    bucket: String,
    full_key: String,
    upload_id: String,
    open: bool,
}

impl PendingUpload {
    async fn abort(&mut self) {
        self.open = false;
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.full_key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        if let Err(error) = result {
            // Parts stay until a bucket lifecycle rule (AbortIncompleteMultipartUpload)
            // removes them.
            tracing::warn!(
                key = %self.full_key,
                upload_id = %self.upload_id,
                error = %aws_sdk_s3::error::DisplayErrorContext(&error),
                "aborting a multipart upload failed"
            );
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut upload = Self {
            client: self.client.clone(),
            bucket: std::mem::take(&mut self.bucket),
            full_key: std::mem::take(&mut self.full_key),
            upload_id: std::mem::take(&mut self.upload_id),
            open: false,
        };
        runtime.spawn(async move { upload.abort().await });
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn get(&self, key: &str) -> Result<Blob, BlobError> {
        validate_key(key)?;
        // The SDK bounds the request; the body is streamed after it, so this bounds both.
        match tokio::time::timeout(self.get_timeout, self.get_unbounded(key)).await {
            Ok(result) => result,
            Err(elapsed) => Err(BlobError::Transient {
                operation: "get",
                key: key.to_owned(),
                source: format!("gave up after {:?}: {elapsed}", self.get_timeout).into(),
            }),
        }
    }
    async fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, BlobError> {
        validate_key(key)?;
        let length = bytes.len() as u64;
        self.put_object(key, ByteStream::from(bytes), length, &mode)
            .await
    }

    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<ETag, BlobError> {
        validate_key(key)?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|error| local_file_error("put", key, error))?
            .len();
        if size <= PART_SIZE {
            let body = Self::file_body(key, path, 0, size).await?;
            return self.put_object(key, body, size, &mode).await;
        }
        if matches!(mode, PutMode::Update { .. }) {
            return Err(BlobError::Unsupported {
                operation: "put_file",
                key: key.to_owned(),
                reason: "Update of a file larger than one part (S3-compatible servers may ignore If-Match on a multipart upload)",
            });
        }
        self.put_multipart(key, path, size, &mode).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, BlobError> {
        validate_key(key)?;
        let full_key = self.full_key(key);
        let mut attempt = 1;
        loop {
            // Asked before the file is created: a missing key leaves no file.
            let response = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full_key)
                .send()
                .await;
            let output = match response {
                Ok(output) => output,
                Err(error) => {
                    if attempt > 1 {
                        let _ = tokio::fs::remove_file(path).await;
                    }
                    return Err(classify("get", key, error));
                }
            };
            let error = match self.download(output.body, path).await {
                Ok(written) => return Ok(written),
                Err(DownloadError::Body(error)) if attempt < GET_BODY_ATTEMPTS => {
                    tracing::debug!(key, attempt, %error, "s3 body read failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                    continue;
                }
                Err(DownloadError::Body(error)) => BlobError::Transient {
                    operation: "get",
                    key: key.to_owned(),
                    source: error,
                },
                Err(DownloadError::File(error)) => local_file_error("get", key, error),
            };
            let _ = tokio::fs::remove_file(path).await;
            return Err(error);
        }
    }

    async fn head(&self, key: &str) -> Result<BlobMeta, BlobError> {
        validate_key(key)?;
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|error| classify("head", key, error))?;
        Ok(BlobMeta {
            key: key.to_owned(),
            size: output
                .content_length()
                .and_then(|length| u64::try_from(length).ok())
                .unwrap_or(0),
            etag: output
                .e_tag()
                .map(ETag::new)
                .ok_or_else(|| missing_etag("head", key))?,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => match classify("delete", key, error) {
                BlobError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError> {
        validate_prefix(prefix)?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut entries = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| classify("list", prefix, error))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|key| key.strip_prefix(&self.prefix)) else {
                    continue;
                };
                entries.push(ListEntry {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|size| u64::try_from(size).ok())
                        .unwrap_or(0),
                });
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }
}

/// Maps an SDK error to a [`BlobError`], by HTTP status and error kind only.
fn classify<E>(operation: &'static str, key: &str, error: SdkError<E, HttpResponse>) -> BlobError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    // A vanished bucket or multipart upload is no statement about the key.
    let bucket_missing = matches!(error.code(), Some("NoSuchBucket" | "NoSuchUpload"));
    let key = key.to_owned();
    match status {
        Some(404) if bucket_missing => {}
        // S3 answers `If-Match` on an absent key with 404 NoSuchKey: the precondition
        // (the object exists with this etag) failed.
        Some(404) if operation == "put" => return BlobError::PreconditionFailed { key },
        Some(404) => return BlobError::NotFound { key },
        // 409 ConditionalRequestConflict: another conditional write to the key is in flight.
        Some(412) | Some(409) if operation == "put" => {
            return BlobError::PreconditionFailed { key };
        }
        Some(408 | 429 | 500..=599) => {
            return BlobError::Transient {
                operation,
                key,
                source: error.into(),
            };
        }
        _ => {}
    }
    let transient = match &error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
        SdkError::ResponseError(_) => true,
        _ => false,
    };
    if transient {
        BlobError::Transient {
            operation,
            key,
            source: error.into(),
        }
    } else {
        BlobError::Backend {
            operation,
            key,
            source: error.into(),
        }
    }
}

/// The caller's local file could not be read or written: never transient.
fn local_file_error(operation: &'static str, key: &str, source: impl Into<BoxError>) -> BlobError {
    BlobError::Backend {
        operation,
        key: key.to_owned(),
        source: source.into(),
    }
}

fn missing_etag(operation: &'static str, key: &str) -> BlobError {
    BlobError::Backend {
        operation,
        key: key.to_owned(),
        source: "the server sent no etag".into(),
    }
}
