#![doc = include_str!("../README.md")]
//!
//! Architecture Invariant: this is the only workspace crate (besides the application
//! assembly) that depends on aws-sdk-s3, and only with its `s3` feature, which domain
//! crates never turn on: they see only `dyn BlobStore` and never reach the AWS SDK.

#![warn(missing_docs)]

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

mod error;
mod file;
mod key;
#[cfg(feature = "s3")]
mod s3;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::BlobError;
pub use file::FileBlobStore;
pub use key::validate_key;
#[cfg(feature = "s3")]
pub use s3::{S3BlobStore, S3Config, S3Credentials};

/// An opaque version tag of a stored object. It changes whenever the object's content
/// changes; pass it back in [`PutMode::Update`] to write only if the object is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps a tag as a backend spells it. Only tags a store returned are worth passing to
    /// [`PutMode::Update`]: any other never matches.
    pub fn new(tag: impl Into<String>) -> Self {
        Self(tag.into())
    }

    /// The tag as the backend spells it (S3 etags keep their quotes).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How [`BlobStore::put`] treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write unconditionally, replacing any existing object.
    Overwrite,
    /// Write only if no object exists at the key, else [`BlobError::PreconditionFailed`].
    Create,
    /// Write only if the object exists with this etag, else
    /// [`BlobError::PreconditionFailed`] (also when the object is absent).
    Update {
        /// The etag of the version the caller read (from `get`, `head` or `put`).
        etag: ETag,
    },
}

/// An object's content and version, as returned by [`BlobStore::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The whole object, read into memory ([`BlobStore::get_to_file`] streams instead).
    pub bytes: Bytes,
    /// The version of these bytes.
    pub etag: ETag,
}

/// What [`BlobStore::head`] tells about an object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// The key as asked for (without an S3 store's prefix).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The current version: the etag a `get` now would return.
    pub etag: ETag,
}

/// One object found by [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The full key (including the listed prefix).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A key-value object store with conditional writes.
///
/// Keys are `/`-separated relative paths (see [`validate_key`]); an invalid key is
/// rejected with [`BlobError::InvalidKey`] before any I/O. Every backend passes the same
/// conformance suite, so callers can rely on these semantics:
/// - `put` is atomic: readers see the old or the new bytes, never a mix.
/// - `put` with [`PutMode::Create`] or [`PutMode::Update`] is linearizable per key: of
///   many concurrent conditional writers from the same starting state, exactly one wins.
/// - `delete` of an absent key succeeds (deletes are idempotent).
/// - `list(prefix)` returns every object whose key starts with `prefix` (a plain string
///   prefix, at any depth), sorted by key.
/// - `put_file` and `get_to_file` move an object of any size between a local file and the
///   store in pieces: their memory does not grow with the object's size.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Reads an object and its etag; [`BlobError::NotFound`] if absent.
    async fn get(&self, key: &str) -> Result<Blob, BlobError>;

    /// Writes an object according to `mode` and returns the new etag.
    async fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, BlobError>;

    /// Reads an object's size and etag; [`BlobError::NotFound`] if absent.
    async fn head(&self, key: &str) -> Result<BlobMeta, BlobError>;

    /// Deletes an object; succeeds if it is already absent.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Lists every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError>;

    /// Stores the file at `path` under `key` as `put` does (same modes, same errors), reading
    /// it in pieces: memory stays bounded whatever the file's size.
    ///
    /// The file must not change until this returns. A file that cannot be read is
    /// [`BlobError::Backend`]. A backend that cannot enforce `mode` for a file this large
    /// refuses it with [`BlobError::Unsupported`] before writing anything (S3: `Update` of
    /// a file larger than one multipart part).
    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<ETag, BlobError>;

    /// Writes the object at `key` into a new file at `path` (created or truncated), in
    /// pieces; returns the bytes written. [`BlobError::NotFound`] as `get`, and then no file
    /// is created; a failed copy removes the partial file.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, BlobError>;
}

/// Opens a store from a URL: `file://DIR` (relative or absolute path, created if missing)
/// or, with the `s3` feature, `s3://BUCKET[/PREFIX]` (credentials, region and `AWS_ENDPOINT_URL` from the standard
/// AWS configuration chain; an endpoint override switches to path-style addressing).
pub async fn open(url: &str) -> Result<Arc<dyn BlobStore>, BlobError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(BlobError::InvalidUrl {
                url: url.to_owned(),
                reason: "file:// needs a directory",
            });
        }
        return Ok(Arc::new(FileBlobStore::open(path).await?));
    }
    if url.starts_with("s3://") {
        #[cfg(feature = "s3")]
        {
            let config = S3Config::from_url(url)?;
            return Ok(Arc::new(S3BlobStore::from_env(config).await?));
        }
        #[cfg(not(feature = "s3"))]
        return Err(BlobError::InvalidUrl {
            url: url.to_owned(),
            reason: "this build has no s3 support (blob-store feature `s3`)",
        });
    }
    Err(BlobError::InvalidUrl {
        url: url.to_owned(),
        reason: "expected file://DIR or s3://BUCKET/PREFIX",
    })
}
