//! Integration tests of the Postgres store: the whole jobs-core conformance suite, each
//! case on a fresh database.

use std::sync::Arc;

use jobs_postgres::testing::TestDatabase;

macro_rules! conformance_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let database = TestDatabase::create().await;
            let store = Arc::new(database.store().await);
            jobs_core::conformance::$name(store).await;
            database.drop().await;
        }
    };
}

mod conformance {
    use super::*;
    jobs_core::conformance_cases!(conformance_case);
}
