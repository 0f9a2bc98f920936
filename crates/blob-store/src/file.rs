//! The local filesystem backend (`file://DIR`).
//!
//! Invariants:
//! - A write goes to a temp file in the target's directory, is fsynced, then renamed over
//!   the target (and the directory fsynced): readers see the old or the new bytes.
//! - Every write and delete of a key holds an exclusive advisory lock (`flock`) on one of
//!   256 lock files under `DIR/.folio-locks/`, chosen by a hash of the key. The check of a
//!   `Create` or `Update` precondition and the rename happen under that lock, so they are
//!   atomic across threads and processes sharing the directory.
//! - The etag is a hash of the content, so it changes whenever the bytes change.
//! - Names starting with `.folio-` are reserved (temp and lock files) and never listed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::key::{RESERVED_NAME_PREFIX, validate_key, validate_prefix};
use crate::{Blob, BlobError, BlobMeta, BlobStore, ETag, ListEntry, PutMode};

/// Directory (under the root) that holds the lock stripes.
const LOCK_DIR: &str = ".folio-locks";

/// Number of lock files; keys hash onto them.
const LOCK_STRIPES: usize = 256;

/// A [`BlobStore`] on a local (or shared POSIX) directory.
#[derive(Debug, Clone)]
pub struct FileBlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
}

impl FileBlobStore {
    /// Opens (and creates if missing) a store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let root_text = root.display().to_string();
        let lock_dir = root.join(LOCK_DIR);
        tokio::task::spawn_blocking(move || fs::create_dir_all(&lock_dir))
            .await
            .map_err(|join_error| backend("open", &root_text, join_error))?
            .map_err(|io_error| backend("open", &root_text, io_error))?;
        Ok(Self {
            inner: Arc::new(Inner { root }),
        })
    }

    /// The directory this store writes under.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T, F>(
        &self,
        operation: &'static str,
        key: &str,
        work: F,
    ) -> Result<T, BlobError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, BlobError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|join_error| backend(operation, key, join_error))?
    }
}

#[async_trait]
impl BlobStore for FileBlobStore {
    async fn get(&self, key: &str) -> Result<Blob, BlobError> {
        validate_key(key)?;
        let key_owned = key.to_owned();
        self.blocking("get", key, move |inner| {
            let bytes = read_object(&inner.path_of(&key_owned), "get", &key_owned)?;
            let etag = content_etag(&bytes);
            Ok(Blob {
                bytes: Bytes::from(bytes),
                etag,
            })
        })
        .await
    }

    async fn put(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<ETag, BlobError> {
        validate_key(key)?;
        let key_owned = key.to_owned();
        self.blocking("put", key, move |inner| {
            inner.put(&key_owned, &bytes, &mode)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<BlobMeta, BlobError> {
        validate_key(key)?;
        let key_owned = key.to_owned();
        self.blocking("head", key, move |inner| {
            let bytes = read_object(&inner.path_of(&key_owned), "head", &key_owned)?;
            Ok(BlobMeta {
                size: bytes.len() as u64,
                etag: content_etag(&bytes),
                key: key_owned,
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        let key_owned = key.to_owned();
        self.blocking("delete", key, move |inner| {
            let _lock = inner.lock(&key_owned, "delete")?;
            match fs::remove_file(inner.path_of(&key_owned)) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(backend("delete", &key_owned, error)),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError> {
        validate_prefix(prefix)?;
        let prefix_owned = prefix.to_owned();
        self.blocking("list", prefix, move |inner| inner.list(&prefix_owned))
            .await
    }
}

impl Inner {
    fn path_of(&self, key: &str) -> PathBuf {
        // Keys are validated: relative, no `..`, `/`-separated.
        self.root.join(key)
    }

    /// Takes the exclusive lock stripe of `key`; released when the file is dropped.
    fn lock(&self, key: &str, operation: &'static str) -> Result<File, BlobError> {
        let stripe = usize::from(Sha256::digest(key.as_bytes())[0]) % LOCK_STRIPES;
        let lock_path = self.root.join(LOCK_DIR).join(format!("{stripe:02x}.lock"));
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        };
        let file = match open() {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.root.join(LOCK_DIR))
                    .map_err(|error| backend(operation, key, error))?;
                open().map_err(|error| backend(operation, key, error))?
            }
            Err(error) => return Err(backend(operation, key, error)),
        };
        file.lock()
            .map_err(|error| backend(operation, key, error))?;
        Ok(file)
    }

    fn put(&self, key: &str, bytes: &[u8], mode: &PutMode) -> Result<ETag, BlobError> {
        let path = self.path_of(key);
        let _lock = self.lock(key, "put")?;
        match mode {
            PutMode::Overwrite => {}
            PutMode::Create => {
                if object_exists(&path, key)? {
                    return Err(BlobError::PreconditionFailed {
                        key: key.to_owned(),
                    });
                }
            }
            PutMode::Update { etag } => match read_object(&path, "put", key) {
                Ok(current) if content_etag(&current) == *etag => {}
                Ok(_) | Err(BlobError::NotFound { .. }) => {
                    return Err(BlobError::PreconditionFailed {
                        key: key.to_owned(),
                    });
                }
                Err(error) => return Err(error),
            },
        }
        write_atomically(&path, bytes).map_err(|error| backend("put", key, error))?;
        Ok(content_etag(bytes))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlobError> {
        // Walk only the deepest directory the prefix names in full.
        let start_relative = prefix.rfind('/').map_or("", |slash| &prefix[..slash]);
        let start = if start_relative.is_empty() {
            self.root.clone()
        } else {
            self.root.join(start_relative)
        };
        let mut entries = Vec::new();
        let mut pending = vec![(start, start_relative.to_owned())];
        while let Some((directory, relative)) = pending.pop() {
            let reader = match fs::read_dir(&directory) {
                Ok(reader) => reader,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Err(error) => return Err(backend("list", prefix, error)),
            };
            for entry in reader {
                let entry = entry.map_err(|error| backend("list", prefix, error))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not a key this store could have written
                };
                if name.starts_with(RESERVED_NAME_PREFIX) {
                    continue;
                }
                let key = if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                };
                let file_type = entry
                    .file_type()
                    .map_err(|error| backend("list", prefix, error))?;
                if file_type.is_dir() {
                    // Descend only where keys below can still match the prefix.
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        pending.push((entry.path(), key));
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    let size = match entry.metadata() {
                        Ok(metadata) => metadata.len(),
                        // Deleted between read_dir and stat.
                        Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                        Err(error) => return Err(backend("list", prefix, error)),
                    };
                    entries.push(ListEntry { key, size });
                }
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }
}

fn read_object(path: &Path, operation: &'static str, key: &str) -> Result<Vec<u8>, BlobError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::NotADirectory
            ) =>
        {
            Err(BlobError::NotFound {
                key: key.to_owned(),
            })
        }
        Err(error) => Err(backend(operation, key, error)),
    }
}

fn object_exists(path: &Path, key: &str) -> Result<bool, BlobError> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(metadata.is_file()),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(false)
        }
        Err(error) => Err(backend("put", key, error)),
    }
}

/// Writes `bytes` to a fresh temp file next to `path`, fsyncs it, renames it over `path`
/// and fsyncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
    let directory = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key has no parent"))?;
    fs::create_dir_all(directory)?;
    let temp_path = directory.join(format!(
        "{RESERVED_NAME_PREFIX}tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut temp = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&temp_path)?;
        temp.write_all(bytes)?;
        temp.sync_all()?;
        drop(temp);
        fs::rename(&temp_path, path)?;
        File::open(directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// The etag of some content: the first 128 bits of its SHA-256, in hex.
fn content_etag(bytes: &[u8]) -> ETag {
    let digest = Sha256::digest(bytes);
    let mut text = String::with_capacity(32);
    for byte in &digest[..16] {
        text.push_str(&format!("{byte:02x}"));
    }
    ETag::new(text)
}

fn backend(
    operation: &'static str,
    key: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> BlobError {
    BlobError::Backend {
        operation,
        key: key.to_owned(),
        source: source.into(),
    }
}
