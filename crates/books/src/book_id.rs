//! The validated book id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted book id.
const MAX_LEN: usize = 64;

/// A book id: 1-64 chars of `[a-z0-9_-]`, starting with a letter or digit (SPEC 3.2).
///
/// It is safe as one path segment of a storage key: no `/`, `.`, `..` or uppercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BookId(String);

/// Why a string is not a [`BookId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid book id {value:?}: {reason}")]
pub struct InvalidBookId {
    /// The rejected input (truncated to 100 chars).
    pub value: String,
    pub reason: &'static str,
}

impl BookId {
    /// `value` as a book id, unchanged: nothing is lowercased or trimmed for the caller.
    pub fn parse(value: &str) -> Result<Self, InvalidBookId> {
        let invalid = |reason| {
            Err(InvalidBookId {
                value: value.chars().take(100).collect(),
                reason,
            })
        };
        if value.is_empty() {
            return invalid("must not be empty");
        }
        if value.len() > MAX_LEN {
            return invalid("must be at most 64 characters");
        }
        if !value.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
        }) {
            return invalid("may contain only a-z, 0-9, '_' and '-'");
        }
        if !value.as_bytes()[0].is_ascii_alphanumeric() {
            return invalid("must start with a letter or a digit");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BookId {
    type Err = InvalidBookId;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl TryFrom<String> for BookId {
    type Error = InvalidBookId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<BookId> for String {
    fn from(id: BookId) -> Self {
        id.0
    }
}

impl AsRef<str> for BookId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
