//! Enqueueing in the caller's own transaction (see `jobs_core::transaction`).

use async_trait::async_trait;
use jobs_core::{InTransaction, Insert, NewJob, StoreError};
use sqlx::postgres::PgConnection;

use crate::PgJobStore;
use crate::sql::Statements;

/// A caller's Postgres connection, usually an open transaction, that
/// [`LockService::acquire_in`](jobs_core::LockService::acquire_in) and
/// [`LockService::enqueue_in`](jobs_core::LockService::enqueue_in) insert jobs through. The
/// job and its `NOTIFY` exist only if the transaction commits; a plain connection (no
/// transaction) commits at once.
pub struct PgTransaction<'c> {
    connection: &'c mut PgConnection,
    sql: &'static Statements,
}

impl PgJobStore {
    /// `connection` as an [`InTransaction`] on this store's tables (its schema's, whatever
    /// the connection's search path): `store.in_transaction(&mut tx)` of a
    /// `sqlx::Transaction<'_, Postgres>`, after the caller's own writes and before its
    /// commit.
    pub fn in_transaction<'c>(&self, connection: &'c mut PgConnection) -> PgTransaction<'c> {
        PgTransaction {
            connection,
            sql: self.sql,
        }
    }
}

#[async_trait]
impl InTransaction for PgTransaction<'_> {
    async fn insert(&mut self, job: NewJob) -> Result<Insert, StoreError> {
        crate::store::insert_one(self.connection, self.sql, &job).await
    }
}
