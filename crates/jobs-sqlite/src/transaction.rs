//! Enqueueing in the caller's own transaction (see `jobs_core::transaction`).

use async_trait::async_trait;
use jobs_core::{InTransaction, Insert, NewJob, StoreError};
use sqlx::SqliteConnection;

/// A caller's SQLite connection, usually an open transaction, that
/// [`LockService::acquire_in`](jobs_core::LockService::acquire_in) and
/// [`LockService::enqueue_in`](jobs_core::LockService::enqueue_in) insert jobs through. The
/// job exists only if the transaction commits; a plain connection (no transaction) commits
/// at once. Workers find it at their next poll: the in-process wake-up cannot see the
/// commit. The transaction holds SQLite's write lock from its first write to its end, so
/// keep it short.
#[derive(Debug)]
pub struct SqliteTransaction<'c> {
    connection: &'c mut SqliteConnection,
}

/// `connection` as an [`InTransaction`]: `in_transaction(&mut tx)` of a
/// `sqlx::Transaction<'_, Sqlite>`, after the caller's own writes and before its commit.
pub fn in_transaction(connection: &mut SqliteConnection) -> SqliteTransaction<'_> {
    SqliteTransaction { connection }
}

#[async_trait]
impl InTransaction for SqliteTransaction<'_> {
    async fn insert(&mut self, job: NewJob) -> Result<Insert, StoreError> {
        crate::store::insert_one(self.connection, &job).await
    }
}
