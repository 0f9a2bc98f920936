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

mod listener {
    use jobs_core::JobStore;
    use jobs_core::conformance::{Fixture, signalled, wait_until};

    use super::*;

    /// The backend of the store's LISTEN connection, once it is listening.
    async fn listener_pid(pool: &sqlx::PgPool) -> Option<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_optional(pool)
        .await
        .expect("pg_stat_activity")
    }

    async fn wait_for_listener(pool: &sqlx::PgPool, other_than: Option<i32>) -> i32 {
        wait_until("a listener connection", || async {
            listener_pid(pool)
                .await
                .filter(|pid| Some(*pid) != other_than)
        })
        .await
    }

    /// A dropped LISTEN connection reconnects, and new jobs wake workers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_job_signal_survives_a_dropped_listener_connection() {
        let database = TestDatabase::create().await;
        let store = Arc::new(database.store().await);
        let pool = store.pool().clone();
        let signal = store.job_signal().expect("Postgres signals new jobs");
        let fx = Fixture::new(store);
        let first = wait_for_listener(&pool, None).await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(first)
            .execute(&pool)
            .await
            .expect("terminate the listener's backend");
        wait_for_listener(&pool, Some(first)).await;
        // The reconnect fires the signal once by itself; every insert after it must too.
        for key in ["a", "b", "c"] {
            assert!(
                signalled(&signal, async {
                    fx.create(key).await;
                })
                .await,
                "insert of {key} after the reconnect woke nobody"
            );
        }
        database.drop().await;
    }
}
