//! Validation of object keys and list prefixes, shared by every backend.

use crate::BlobError;

/// Longest accepted key, in bytes (S3's limit).
const MAX_KEY_BYTES: usize = 1024;

/// Names starting with this are reserved for the file backend's temp and lock files.
pub(crate) const RESERVED_NAME_PREFIX: &str = ".folio-";

/// Checks that `key` is a relative `/`-separated object path that every backend can
/// store: 1 to 1024 bytes, no leading or trailing `/`, no empty, `.` or `..` segment,
/// no backslash or control character, and no segment starting with `.folio-`.
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let invalid = |reason| {
        Err(BlobError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("key is empty");
    }
    if key.ends_with('/') {
        return invalid("key ends with '/'");
    }
    validate_path_text(key)
}

/// Checks a list prefix: empty, or like a key except that it may end with `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BlobError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path_text(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|error| match error {
        BlobError::InvalidKey { reason, .. } => BlobError::InvalidKey {
            key: prefix.to_owned(),
            reason,
        },
        other => other,
    })
}

fn validate_path_text(text: &str) -> Result<(), BlobError> {
    let invalid = |reason| {
        Err(BlobError::InvalidKey {
            key: text.to_owned(),
            reason,
        })
    };
    if text.len() > MAX_KEY_BYTES {
        return invalid("key is longer than 1024 bytes");
    }
    if text.starts_with('/') {
        return invalid("key starts with '/'");
    }
    if text.chars().any(|c| c == '\\' || c.is_control()) {
        return invalid("key contains a backslash or a control character");
    }
    for segment in text.split('/') {
        match segment {
            "" => return invalid("key has an empty segment"),
            "." | ".." => return invalid("key has a '.' or '..' segment"),
            _ if segment.starts_with(RESERVED_NAME_PREFIX) => {
                return invalid("key has a segment starting with the reserved '.folio-'");
            }
            _ => {}
        }
    }
    Ok(())
}
