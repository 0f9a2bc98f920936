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

macro_rules! conformance_transaction_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let database = TestDatabase::create().await;
            let store = Arc::new(database.store().await);
            let transactions = Arc::new(transactions::Pool(store.pool().clone()));
            jobs_core::conformance::$name(store, transactions).await;
            database.drop().await;
        }
    };
}

mod conformance_transaction {
    use super::*;
    jobs_core::conformance_transaction_cases!(conformance_transaction_case);
}

/// The caller's side of `jobs_postgres::in_transaction` for the transaction cases: transactions
/// begun on the store's pool.
mod transactions {
    use async_trait::async_trait;
    use jobs_core::conformance::{OpenTransaction, Transactions};
    use jobs_core::{InTransaction, Insert, NewJob, StoreError};

    pub(crate) struct Pool(pub(crate) sqlx::Pool<sqlx::Postgres>);

    struct Open(sqlx::Transaction<'static, sqlx::Postgres>);

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
            jobs_postgres::in_transaction(&mut self.0).insert(job).await
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

mod listener {
    use jobs_core::JobStore;
    use jobs_core::conformance::{Fixture, WAIT, signalled};
    use jobs_core::testing::eventually;

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
        eventually(WAIT, "a listener connection", || async {
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

    /// A job enqueued in a caller's transaction wakes workers when the transaction commits,
    /// not before: its `NOTIFY` is part of the transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_enqueued_in_a_transaction_wakes_workers_when_it_commits() {
        let database = TestDatabase::create().await;
        let store = Arc::new(database.store().await);
        let pool = store.pool().clone();
        let signal = store.job_signal().expect("Postgres signals new jobs");
        let fx = Fixture::new(store);
        wait_for_listener(&pool, None).await;
        // Notifications arrive (and the one wake-up of the listener's connect is past).
        assert!(signalled(&signal, async { drop(fx.create("plain").await) }).await);
        let mut transaction = pool.begin().await.unwrap();
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let request = jobs_core::AcquireRequest::new(
            "tx-notify",
            jobs_core::conformance::TEST_TYPE,
            serde_json::json!({}),
        );
        fx.lock
            .acquire_in(
                &mut jobs_postgres::in_transaction(&mut transaction),
                request,
            )
            .await
            .unwrap();
        // Given time to (wrongly) arrive before the commit.
        let early = tokio::time::timeout(std::time::Duration::from_millis(500), notified.as_mut());
        assert!(early.await.is_err(), "woken before the commit");
        transaction.commit().await.unwrap();
        tokio::time::timeout(WAIT, notified)
            .await
            .expect("no wake-up after the commit");
        database.drop().await;
    }
}

mod restart {
    //! The store across a restart of its server (a throwaway cluster of its own).

    use std::time::{Duration, Instant};

    use jobs_core::JobStore;
    use jobs_core::conformance::{Fixture, WAIT, signalled};
    use jobs_core::testing::eventually;
    use jobs_postgres::testing::ThrowawayCluster;
    use jobs_postgres::{PgJobStore, PoolSettings};

    use super::*;

    /// While the server is down a call fails after the acquire timeout, it does not hang;
    /// once the server is back the pool serves calls again and the LISTEN connection
    /// returns, each within about a second, so inserts wake workers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_fail_fast_while_the_server_is_down_and_everything_reconnects_after() {
        let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
            .await
            .unwrap();
        let settings = PoolSettings {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(2),
        };
        let store = Arc::new(
            PgJobStore::connect_with(&cluster.url(), &settings)
                .await
                .unwrap(),
        );
        let signal = store.job_signal().expect("Postgres signals new jobs");
        let fx = Fixture::new(store.clone());
        eventually(WAIT, "the listener", || async {
            (cluster.listeners("postgres").await? == 1).then_some(())
        })
        .await;
        let before = fx.create("before").await;

        let cluster = tokio::task::spawn_blocking(move || {
            cluster.stop();
            cluster
        })
        .await
        .unwrap();
        let asked = Instant::now();
        let error = store.get(before.id).await;
        let waited = asked.elapsed();
        assert!(error.is_err(), "{error:?}");
        assert!(
            waited < Duration::from_secs(4),
            "a call while the server was down waited {waited:?}"
        );

        let cluster = tokio::task::spawn_blocking(move || {
            cluster.resume();
            cluster
        })
        .await
        .unwrap();
        let back = Instant::now();
        eventually(WAIT, "the pool to serve calls again", || async {
            store.get(before.id).await.ok()
        })
        .await;
        eventually(WAIT, "the listener to reconnect", || async {
            (cluster.listeners("postgres").await? == 1).then_some(())
        })
        .await;
        let reconnected = back.elapsed();
        assert!(
            reconnected < Duration::from_secs(3),
            "reconnected {reconnected:?} after the server was back"
        );
        for key in ["after-1", "after-2"] {
            assert!(
                signalled(&signal, async {
                    fx.create(key).await;
                })
                .await,
                "insert of {key} after the restart woke nobody"
            );
        }
        drop(cluster);
    }

    /// `ThrowawayCluster` removes its folder and stops its server when dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_cluster_is_stopped_and_removed() {
        let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
            .await
            .unwrap();
        let url = cluster.url();
        let folder = cluster.folder().to_owned();
        let store = PgJobStore::connect(&url, 1).await.unwrap();
        drop(store);
        tokio::task::spawn_blocking(move || drop(cluster))
            .await
            .unwrap();
        assert!(!folder.exists(), "{} is left", folder.display());
        let settings = PoolSettings {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(500),
        };
        assert!(PgJobStore::connect_with(&url, &settings).await.is_err());
    }
}
