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

#[tokio::test]
async fn connect_creates_the_database_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/folio.db");
    SqliteJobStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
}
