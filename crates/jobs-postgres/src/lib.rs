#![doc = include_str!("../README.md")]
//!
//! Modules: `sql` holds every statement (and the helpers that pick and bind them), `store`
//! the `JobStore` implementation, `bulk` the one-statement bulk insert, `rows` the decoding
//! of rows into jobs, `error` the translation of sqlx errors, `listener` the `LISTEN` task
//! behind [`JobStore::job_signal`](jobs_core::JobStore::job_signal), `plans` the tests of
//! the hot statements' query plans.

#![warn(missing_docs)]

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jobs_core::StoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::error::translate;
use crate::sql::Statements;

pub use schema::{InvalidSchema, Schema};
/// The sqlx that [`PgJobStore::in_transaction`] takes connections of, for callers without their own
/// dependency on it (the versions must match).
pub use sqlx;
pub use transaction::PgTransaction;

mod bulk;
mod error;
mod listener;
#[cfg(all(test, feature = "testing"))]
mod plans;
mod rows;
mod schema;
mod sql;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod transaction;

/// The channel that job inserts are announced on (in the search path's tables; a named
/// schema's is [`Schema::channel`]); the payload is the job type.
pub const NOTIFY_CHANNEL: &str = "folio_jobs";

/// The table that records which migrations ran (kept apart from the embedding service's).
const MIGRATIONS_TABLE: &str = "folio_schema_migrations";

/// The crate's `migrations/`, embedded, recorded in `folio_schema_migrations` rather than
/// sqlx's default table, which the embedding service may use for its own.
/// [`PgJobStore::connect`] runs them; an embedder with a pool of its own runs them through
/// [`PgJobStore::migrate`].
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The settings of the connection pool [`PgJobStore::connect_with`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once (the LISTEN connection of a worker among them).
    pub max_connections: u32,
    /// How long a statement waits for a connection before it fails. While the server is
    /// down this is how long every call waits (retrying the connection) before it returns
    /// an error its caller retries, and a fifth of it is the longest pause between two
    /// connection attempts: how late the pool notices that the server is back.
    pub acquire_timeout: Duration,
    /// The schema the store's tables are in (default: the connections' search path).
    pub schema: Schema,
}

impl PoolSettings {
    /// `max_connections` with the default [`PoolSettings::ACQUIRE_TIMEOUT`].
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            acquire_timeout: Self::ACQUIRE_TIMEOUT,
            schema: Schema::default(),
        }
    }

    /// The default acquire timeout: no longer than the default heartbeat interval, so a
    /// heartbeat attempt during an outage ends before the next one is due, and the pool
    /// retries a connection at least every second, so heartbeats land within about a
    /// second of the server's return, long before a job is stale.
    pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

    fn pool_options(&self) -> PgPoolOptions {
        // Idle connections are pinged before use (sqlx's default), so the connections a
        // server restart killed are replaced, not handed out.
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(true)
    }
}

/// A [`JobStore`](jobs_core::JobStore) on Postgres. Clones share the pool and the one `LISTEN`
/// task.
#[derive(Debug, Clone)]
pub struct PgJobStore {
    pool: PgPool,
    schema: Schema,
    sql: &'static Statements,
    /// Fired on every `NOTIFY folio_jobs`; the listener starts when a worker first asks.
    signal: Arc<OnceLock<Arc<Notify>>>,
}

impl PgJobStore {
    /// Connects to `url` with a pool of `max_connections` and runs the migrations.
    ///
    /// The connections plan each prepared statement once (`plan_cache_mode =
    /// force_generic_plan`): a claim or a finish costs about as much to plan as to run for a
    /// small batch, and every statement here is written so that its generic plan reaches its
    /// rows through the index it was written for.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, &PoolSettings::new(max_connections)).await
    }

    /// [`PgJobStore::connect`] with every pool setting given.
    pub async fn connect_with(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(translate)?
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = settings
            .pool_options()
            .connect_with(options)
            .await
            .map_err(translate)?;
        let store = Self::from_pool_in(pool, settings.schema.clone());
        store.migrate().await?;
        Ok(store)
    }

    /// A store over an existing pool; call [`PgJobStore::migrate`] once before use. The
    /// pool's own settings apply: to plan statements once, as [`PgJobStore::connect`] does,
    /// give its connections `plan_cache_mode = force_generic_plan`.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_pool_in(pool, Schema::default())
    }

    /// [`PgJobStore::from_pool`] with the tables in `schema`.
    pub fn from_pool_in(pool: PgPool, schema: Schema) -> Self {
        Self {
            pool,
            sql: schema.statements(),
            schema,
            signal: Arc::new(OnceLock::new()),
        }
    }

    /// Runs the pending migrations. Safe to call from many processes at once (sqlx takes an
    /// advisory lock). A named schema is created if missing, and gets its own migration
    /// history: the migrations run on a connection whose search path is that schema alone,
    /// closed afterwards so no other statement runs with it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let backend = |error: sqlx::migrate::MigrateError| StoreError::Backend(Box::new(error));
        let Some(schema) = self.schema.name() else {
            return migrator().run(&self.pool).await.map_err(backend);
        };
        let mut connection = self.pool.acquire().await.map_err(translate)?.detach();
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&mut connection)
        .await;
        match created {
            Ok(_) => {}
            // Two processes creating it at once: one of them meets the other's row.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("23505" | "42P06")) => {}
            Err(error) => return Err(translate(error)),
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET search_path TO \"{schema}\""
        )))
        .execute(&mut connection)
        .await
        .map_err(translate)?;
        let migrated = migrator().run(&mut connection).await.map_err(backend);
        let _ = sqlx::Connection::close(connection).await;
        migrated
    }

    /// The schema the store's tables are in.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The pool, for LISTEN connections and health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
