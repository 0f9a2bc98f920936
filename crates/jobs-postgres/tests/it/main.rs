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

/// The schema the suite runs in a second time: an embedder's, not the search path's.
const EMBEDDER_SCHEMA: &str = "embedder_jobs";

macro_rules! conformance_case_in_schema {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let database = TestDatabase::create().await;
            let schema = jobs_postgres::Schema::named(EMBEDDER_SCHEMA).unwrap();
            let store = Arc::new(database.store_in(schema).await);
            jobs_core::conformance::$name(store).await;
            schema::assert_nothing_in_public(&database).await;
            database.drop().await;
        }
    };
}

/// The whole suite again with the tables in a schema of the embedder's choice.
mod conformance_in_schema {
    use super::*;
    jobs_core::conformance_cases!(conformance_case_in_schema);
}

macro_rules! conformance_transaction_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let database = TestDatabase::create().await;
            let store = Arc::new(database.store().await);
            let transactions = Arc::new(transactions::Pool(store.clone()));
            jobs_core::conformance::$name(store, transactions).await;
            database.drop().await;
        }
    };
}

mod conformance_transaction {
    use super::*;
    jobs_core::conformance_transaction_cases!(conformance_transaction_case);
}

/// The caller's side of `PgJobStore::in_transaction` for the transaction cases: transactions
/// begun on the store's pool.
mod transactions {
    use async_trait::async_trait;
    use jobs_core::conformance::{OpenTransaction, Transactions};
    use jobs_core::{InTransaction, Insert, NewJob, StoreError};

    pub(crate) struct Pool(pub(crate) std::sync::Arc<jobs_postgres::PgJobStore>);

    struct Open(
        std::sync::Arc<jobs_postgres::PgJobStore>,
        sqlx::Transaction<'static, sqlx::Postgres>,
    );

    fn backend(error: sqlx::Error) -> StoreError {
        StoreError::Backend(Box::new(error))
    }

    #[async_trait]
    impl Transactions for Pool {
        async fn begin(&self) -> Box<dyn OpenTransaction> {
            let transaction = self.0.pool().begin().await.expect("begin a transaction");
            Box::new(Open(self.0.clone(), transaction))
        }
    }

    #[async_trait]
    impl InTransaction for Open {
        async fn insert(&mut self, job: NewJob) -> Result<Insert, StoreError> {
            self.0.in_transaction(&mut self.1).insert(job).await
        }
    }

    #[async_trait]
    impl OpenTransaction for Open {
        async fn commit(self: Box<Self>) -> Result<(), StoreError> {
            self.1.commit().await.map_err(backend)
        }

        async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
            self.1.rollback().await.map_err(backend)
        }
    }
}

/// Stores in different schemas of one database are apart: jobs, the one-active rule,
/// notifications, migrations.
mod schema {
    use jobs_core::conformance::{Fixture, TEST_TYPE, signalled};
    use jobs_core::{Acquire, AcquireRequest, JobStore};
    use jobs_postgres::Schema;

    use super::*;

    /// Nothing of the store's went to the search path's schema.
    pub(crate) async fn assert_nothing_in_public(database: &TestDatabase) {
        let pool = sqlx::PgPool::connect(database.url()).await.unwrap();
        let public: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND relname LIKE 'folio%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(public, Vec::<String>::new(), "relations in public");
        pool.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_in_two_schemas_of_one_database_share_nothing() {
        let database = TestDatabase::create().await;
        let public = Arc::new(database.store().await);
        let acme = Arc::new(database.store_in(Schema::named("acme").unwrap()).await);
        assert_eq!(acme.schema().channel(), "acme.folio_jobs");
        let (public_fx, acme_fx) = (Fixture::new(public.clone()), Fixture::new(acme.clone()));
        let public_signal = public.job_signal().unwrap();
        let acme_signal = acme.job_signal().unwrap();
        // Both listening (each fires once as it connects: past before the checks below).
        jobs_core::testing::eventually(jobs_core::conformance::WAIT, "two listeners", || async {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .fetch_one(public.pool())
            .await
            .unwrap();
            (listening == 2).then_some(())
        })
        .await;

        // One active job per (resource, type) and schema: the same key is free in each.
        let in_public = public_fx.create("book-1").await;
        assert!(signalled(&acme_signal, async { drop(acme_fx.create("book-1").await) }).await);
        let in_acme = acme.list(&jobs_core::JobQuery::default()).await.unwrap();
        assert_eq!(in_acme.len(), 1);
        assert_ne!(in_acme[0].id, in_public.id);
        assert!(matches!(
            acme.get(in_public.id).await,
            Err(jobs_core::StoreError::NotFound(_))
        ));
        // An insert in one schema wakes only that schema's workers.
        assert!(
            !signalled(&public_signal, async {
                drop(acme_fx.create("book-2").await)
            })
            .await,
            "an insert in acme woke the search path's workers"
        );

        // A caller's transaction on a connection whose search path is `public` still
        // writes to the store's schema.
        let mut transaction = public.pool().begin().await.unwrap();
        let request = AcquireRequest::new("book-3", TEST_TYPE, serde_json::json!({}));
        let answer = acme_fx
            .lock
            .acquire_in(&mut acme.in_transaction(&mut transaction), request)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        let Acquire::Created(job) = answer else {
            panic!("book-3 was busy in acme")
        };
        assert_eq!(acme.get(job.id).await.unwrap().resource_key, "book-3");
        assert!(public.get(job.id).await.is_err());

        // Each schema keeps its own migration history; migrating again changes nothing.
        acme.migrate().await.unwrap();
        let histories: Vec<(String, i64)> = sqlx::query_as(
            "SELECT table_schema::text, count(*) FROM information_schema.tables
             WHERE table_name = 'folio_schema_migrations' GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(public.pool())
        .await
        .unwrap();
        assert_eq!(
            histories,
            [("acme".to_owned(), 1), ("public".to_owned(), 1)]
        );
        database.drop().await;
    }
}

/// `compact` vacuums the store's jobs table, in its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_vacuums_the_jobs_table_of_the_stores_schema() {
    use jobs_core::JobStore;
    let database = TestDatabase::create().await;
    let store = database
        .store_in(jobs_postgres::Schema::named("acme").unwrap())
        .await;
    let vacuums = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT vacuum_count FROM pg_stat_user_tables
             WHERE schemaname = 'acme' AND relname = 'folio_jobs'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    assert_eq!(vacuums().await, 0);
    store.compact().await.unwrap();
    jobs_core::testing::eventually(jobs_core::conformance::WAIT, "a vacuum", || async {
        (vacuums().await == 1).then_some(())
    })
    .await;
    database.drop().await;
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
        let fx = Fixture::new(store.clone());
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
            .acquire_in(&mut store.in_transaction(&mut transaction), request)
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
            acquire_timeout: Duration::from_secs(2),
            ..PoolSettings::new(4)
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
            acquire_timeout: Duration::from_millis(500),
            ..PoolSettings::new(1)
        };
        assert!(PgJobStore::connect_with(&url, &settings).await.is_err());
    }
}
