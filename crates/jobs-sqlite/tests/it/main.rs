//! Integration tests of the SQLite store: the whole jobs-core conformance suite, each case
//! on a fresh database file.

use std::sync::Arc;

use jobs_sqlite::SqliteJobStore;

async fn fresh_store() -> (tempfile::TempDir, SqliteJobStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteJobStore::connect(&url)
        .await
        .expect("open the test store");
    (dir, store)
}

macro_rules! conformance_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh_store().await;
            jobs_core::conformance::$name(Arc::new(store)).await;
        }
    };
}

mod conformance {
    use super::*;
    jobs_core::conformance_cases!(conformance_case);
}

macro_rules! conformance_transaction_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh_store().await;
            let transactions = Arc::new(transactions::Pool(store.pool().clone()));
            jobs_core::conformance::$name(Arc::new(store), transactions).await;
        }
    };
}

mod conformance_transaction {
    use super::*;
    jobs_core::conformance_transaction_cases!(conformance_transaction_case);
}

/// The caller's side of `jobs_sqlite::in_transaction` for the transaction cases: transactions
/// begun on the store's pool.
mod transactions {
    use async_trait::async_trait;
    use jobs_core::conformance::{OpenTransaction, Transactions};
    use jobs_core::{InTransaction, Insert, NewJob, StoreError};

    pub(crate) struct Pool(pub(crate) sqlx::Pool<sqlx::Sqlite>);

    struct Open(sqlx::Transaction<'static, sqlx::Sqlite>);

    fn backend(error: sqlx::Error) -> StoreError {
        StoreError::Backend(Box::new(error))
    }

    #[async_trait]
    impl Transactions for Pool {
        async fn begin(&self) -> Box<dyn OpenTransaction> {
            Box::new(Open(self.0.begin().await.expect("begin a transaction")))
        }
    }

    #[async_trait]
    impl InTransaction for Open {
        async fn insert(&mut self, job: NewJob) -> Result<Insert, StoreError> {
            jobs_sqlite::in_transaction(&mut self.0).insert(job).await
        }
    }

    #[async_trait]
    impl OpenTransaction for Open {
        async fn commit(self: Box<Self>) -> Result<(), StoreError> {
            self.0.commit().await.map_err(backend)
        }

        async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
            self.0.rollback().await.map_err(backend)
        }
    }
}

#[tokio::test]
async fn connect_creates_the_database_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/folio.db");
    SqliteJobStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
}
