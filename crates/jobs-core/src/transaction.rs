//! Enqueueing inside the caller's own database transaction: the job exists if and only if
//! the caller's transaction commits (with Postgres, so does its `NOTIFY`).
//!
//! A service that writes its own rows and starts a job about them wants both or neither: an
//! order and the job that sends its receipt. Each store crate wraps a connection of its
//! database (an open transaction, or a plain connection) as an [`InTransaction`]
//! (`PgJobStore::in_transaction` of `jobs-postgres`, `jobs_sqlite::in_transaction`), and
//! [`LockService::acquire_in`] / [`LockService::enqueue_in`] insert through it: begin a
//! transaction on the store's pool, write the service's own rows in it, call
//! `lock.enqueue_in(&mut store.in_transaction(&mut tx), resource_key, &job)`, and
//! commit (the README of `jobs-sqlite` has a complete example).
//!
//! One active job per (resource, job type) holds inside the transaction as outside it: the
//! store's unique index decides, so an acquire in a transaction answers `Busy` with a
//! committed active job, or with one this transaction inserted, and an acquire elsewhere that
//! meets this transaction's uncommitted job waits for its commit (then `Busy`) or rollback
//! (then `Created`). What differs: no lazy rescue of a stuck active job (it would write rows
//! the caller's transaction did not ask for; the workers' rescuer frees it within
//! `stale_after` or `pending_timeout`), and on SQLite, workers find the job at their next
//! poll rather than at once (the in-process wake-up fires on the store's own inserts only).

use async_trait::async_trait;

use crate::job::NewJob;
use crate::lock::{Acquire, AcquireRequest, LockService};
use crate::store::{Insert, StoreError};

/// A caller's open database transaction (or connection) that jobs can be inserted into.
/// What it inserts exists only if the caller commits.
#[async_trait]
pub trait InTransaction: Send {
    /// Inserts `job`, or answers `Busy` with the active job of its (resource, type), as
    /// [`JobStore::insert`](crate::JobStore::insert) does, in the transaction.
    async fn insert(&mut self, job: NewJob) -> Result<Insert, StoreError>;
}

impl LockService {
    /// [`LockService::acquire_many`]'s request, created in the caller's `transaction`: the
    /// job exists only if that transaction commits (see the [module docs](self)). A request
    /// without a trace parent of its own takes the current span's.
    pub async fn acquire_in(
        &self,
        transaction: &mut (dyn InTransaction + '_),
        request: AcquireRequest,
    ) -> Result<Acquire, StoreError> {
        let now = self.clock().now();
        let job = self.new_job(request, now, &crate::trace::current_trace_parent());
        Ok(transaction.insert(job).await?.into())
    }

    /// [`LockService::enqueue`] in the caller's `transaction`, as
    /// [`LockService::acquire_in`].
    ///
    /// # Panics
    /// When `J` does not serialize to JSON, as [`LockService::enqueue`].
    pub async fn enqueue_in<J: crate::typed::Job>(
        &self,
        transaction: &mut (dyn InTransaction + '_),
        resource_key: &str,
        job: &J,
    ) -> Result<Acquire, StoreError> {
        let request = AcquireRequest::new(resource_key, J::TYPE, crate::typed::payload_of(job));
        self.acquire_in(transaction, request).await
    }
}
