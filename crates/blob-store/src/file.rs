//! The local filesystem backend (`file://DIR`).
//!
//! Invariants:
//! - A write (`put` or `put_file`) goes to a temp file in the target's directory, is
//!   fsynced, then renamed over the target (and the directory fsynced): readers see the old
//!   or the new bytes. `put_file` copies into the temp file with a fixed buffer.
//! - Every commit (rename) and delete of a key holds an exclusive advisory lock (`flock`) on
//!   one of 256 lock files under `DIR/.folio-locks/`, chosen by a hash of the key. The check
//!   of a `Create` or `Update` precondition and the rename happen under that lock, so they
//!   are atomic across threads and processes sharing the directory. The temp file is
//!   written before the lock is taken, so a large copy never holds a stripe.
//! - The etag is a hash of the content, so it changes whenever the bytes change. It is
//!   computed in pieces (`head`, `Update` checks, `put_file`): only `get` reads a whole
//!   object into memory.
//! - Names starting with `.folio-` are reserved (temp and lock files) and never listed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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

/// The buffer of every piecewise read (hashing, `put_file`).
const COPY_BUFFER: usize = 64 * 1024;

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
            let (etag, size) = object_etag(&inner.path_of(&key_owned), "head", &key_owned)?;
            Ok(BlobMeta {
                size,
                etag,
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

    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<ETag, BlobError> {
        validate_key(key)?;
        let key_owned = key.to_owned();
        let source = path.to_owned();
        self.blocking("put", key, move |inner| {
            inner.write(&key_owned, &mode, |temp| {
                let mut file = File::open(&source)?;
                let (etag, _) = copy_hashing(&mut file, temp)?;
                Ok(etag)
            })
        })
        .await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, BlobError> {
        validate_key(key)?;
        let key_owned = key.to_owned();
        let destination = path.to_owned();
        self.blocking("get", key, move |inner| {
            let mut source = open_object(&inner.path_of(&key_owned), "get", &key_owned)?;
            let copied = File::create(&destination).and_then(|mut file| {
                // copy_file_range on Linux: the kernel copies, no user buffer at all.
                let copied = io::copy(&mut source, &mut file)?;
                file.flush()?;
                Ok(copied)
            });
            copied.map_err(|error| {
                let _ = fs::remove_file(&destination);
                backend("get", &key_owned, error)
            })
        })
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
        self.write(key, mode, |temp| {
            temp.write_all(bytes)?;
            Ok(content_etag(bytes))
        })
    }

    /// Fills a temp file next to `key`'s path with `fill` (which returns the content's
    /// etag), then, under the key's lock, checks `mode` and renames it into place.
    fn write(
        &self,
        key: &str,
        mode: &PutMode,
        fill: impl FnOnce(&mut File) -> io::Result<ETag>,
    ) -> Result<ETag, BlobError> {
        let path = self.path_of(key);
        let mut temp = TempFile::create(&path).map_err(|error| backend("put", key, error))?;
        let etag = temp
            .fill(fill)
            .map_err(|error| backend("put", key, error))?;
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
            PutMode::Update { etag: expected } => match object_etag(&path, "put", key) {
                Ok((current, _)) if current == *expected => {}
                Ok(_) | Err(BlobError::NotFound { .. }) => {
                    return Err(BlobError::PreconditionFailed {
                        key: key.to_owned(),
                    });
                }
                Err(error) => return Err(error),
            },
        }
        temp.commit(&path)
            .map_err(|error| backend("put", key, error))?;
        Ok(etag)
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

/// Opens an object for reading; `NotFound` if there is no file at its path.
fn open_object(path: &Path, operation: &'static str, key: &str) -> Result<File, BlobError> {
    let not_found = || BlobError::NotFound {
        key: key.to_owned(),
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(not_found());
        }
        Err(error) => return Err(backend(operation, key, error)),
    };
    // Opening a directory succeeds on Unix; it is no object.
    match file.metadata() {
        Ok(metadata) if metadata.is_file() => Ok(file),
        Ok(_) => Err(not_found()),
        Err(error) => Err(backend(operation, key, error)),
    }
}

/// An object's etag and size, read in pieces.
fn object_etag(path: &Path, operation: &'static str, key: &str) -> Result<(ETag, u64), BlobError> {
    let mut file = open_object(path, operation, key)?;
    copy_hashing(&mut file, &mut io::sink()).map_err(|error| backend(operation, key, error))
}

/// Copies `source` to `destination` through one fixed buffer, hashing as it goes; returns
/// the etag of what was copied and its size.
fn copy_hashing(source: &mut impl Read, destination: &mut impl Write) -> io::Result<(ETag, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; COPY_BUFFER];
    let mut size = 0_u64;
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        destination.write_all(&buffer[..read])?;
        size += read as u64;
    }
    Ok((digest_etag(&hasher.finalize()), size))
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

/// A temp file next to a key's path, removed on drop unless renamed into place.
struct TempFile {
    path: PathBuf,
    directory: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates an empty temp file in the directory of `target` (and the directory).
    fn create(target: &Path) -> io::Result<Self> {
        static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
        let directory = target
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key has no parent"))?;
        fs::create_dir_all(directory)?;
        let path = directory.join(format!(
            "{RESERVED_NAME_PREFIX}tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        Ok(Self {
            path,
            directory: directory.to_owned(),
            file: Some(file),
        })
    }

    /// Writes the content with `fill` and fsyncs it.
    fn fill<T>(&mut self, fill: impl FnOnce(&mut File) -> io::Result<T>) -> io::Result<T> {
        let file = self.file.as_mut().expect("not yet committed");
        let value = fill(file)?;
        file.sync_all()?;
        Ok(value)
    }

    /// Renames the file over `target` and fsyncs the directory.
    fn commit(mut self, target: &Path) -> io::Result<()> {
        drop(self.file.take());
        fs::rename(&self.path, target)?;
        // Renamed: nothing left for drop to remove, even if the fsync fails.
        self.path = PathBuf::new();
        File::open(&self.directory)?.sync_all()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The etag of some content: the first 128 bits of its SHA-256, in hex.
fn content_etag(bytes: &[u8]) -> ETag {
    digest_etag(&Sha256::digest(bytes))
}

fn digest_etag(digest: &[u8]) -> ETag {
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
