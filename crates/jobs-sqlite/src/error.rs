//! The translation of sqlx errors into [`StoreError`]s.

use jobs_core::StoreError;

/// Whether the database refused a write for breaking one of its constraints: a refusal of
/// that one write, not a failure of the backend.
pub(crate) fn is_refusal(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.kind() != sqlx::error::ErrorKind::Other)
}

/// Translates every sqlx error of this store: the one place backend errors are classified.
pub(crate) fn translate(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.kind() != sqlx::error::ErrorKind::Other => {
            StoreError::Corrupt(format!(
                "the database rejected a write: {}",
                database.message()
            ))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::Decode(_) => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Backend(Box::new(error)),
    }
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
