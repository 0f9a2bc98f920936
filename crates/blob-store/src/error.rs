//! The one error type of the blob store boundary.

/// A boxed source error from a backend (I/O, SDK).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a [`BlobStore`](crate::BlobStore) operation failed.
///
/// Semantic variants come first; callers match on them, never on message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No object exists at the key.
    #[error("object not found: {key}")]
    NotFound {
        /// The key as the caller gave it (without an S3 store's prefix).
        key: String,
    },
    /// A conditional put lost: the object exists (`Create`) or changed or vanished
    /// (`Update`). Re-read and retry, or give up.
    #[error("precondition failed for {key}")]
    PreconditionFailed {
        /// The key as the caller gave it; nothing was written to it.
        key: String,
    },
    /// The key (or list prefix) is not a valid relative object path.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key or list prefix, as given.
        key: String,
        /// What is wrong with it, a fixed phrase for the message; match on the variant, not
        /// on this.
        reason: &'static str,
    },
    /// The storage URL or configuration is unusable.
    #[error("invalid storage url {url:?}: {reason}")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// What is wrong with it, a fixed phrase for the message; match on the variant, not
        /// on this.
        reason: &'static str,
    },
    /// The backend cannot do this operation with these arguments without breaking a
    /// guarantee (e.g. a write condition it cannot enforce); nothing was written.
    #[error("unsupported {operation} of {key}: {reason}")]
    Unsupported {
        /// The operation, e.g. put_file.
        operation: &'static str,
        /// The key as the caller gave it.
        key: String,
        /// What the backend cannot do, a fixed phrase for the message; match on the
        /// variant, not on this.
        reason: &'static str,
    },
    /// A transient failure (timeout, connection reset, throttling, 5xx) that persisted
    /// through the backend's own retries. Retrying later may succeed.
    #[error("storage temporarily unavailable during {operation} {key}")]
    Transient {
        /// The operation: get, put, head, delete or list.
        operation: &'static str,
        /// The key or prefix.
        key: String,
        /// The backend's error (an `io::Error` or the AWS SDK's), with its causes.
        #[source]
        source: BoxError,
    },
    /// Any other backend failure (permissions, missing bucket, disk full, ...).
    #[error("storage error during {operation} {key}")]
    Backend {
        /// The operation: get, put, head, delete or list.
        operation: &'static str,
        /// The key or prefix.
        key: String,
        /// The backend's error (an `io::Error` or the AWS SDK's), with its causes.
        #[source]
        source: BoxError,
    },
}

impl BlobError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Whether this is [`BlobError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether this is [`BlobError::PreconditionFailed`].
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, Self::PreconditionFailed { .. })
    }
}
