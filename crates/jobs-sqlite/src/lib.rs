#![doc = include_str!("../README.md")]
//!
//! Modules: `sql` holds every statement (and the helpers that pick and bind them), `store`
//! the `JobStore` implementation, `rows` the decoding of rows and columns, `error` the
//! translation of sqlx errors, `plans` the tests of the statements' query plans.

#![warn(missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jobs_core::StoreError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

use crate::error::translate;

/// The sqlx that [`in_transaction`] takes connections of, for callers without their own
/// dependency on it (the versions must match).
pub use sqlx;
pub use transaction::{SqliteTransaction, in_transaction};

mod error;
#[cfg(test)]
mod plans;
mod rows;
mod sql;
mod store;
mod transaction;

/// The table that records which migrations ran (kept apart from the embedding service's).
const MIGRATIONS_TABLE: &str = "folio_schema_migrations";

/// The crate's `migrations/`, embedded, recorded in `folio_schema_migrations` rather than
/// sqlx's default table, which the embedding service may use for its own.
/// [`SqliteJobStore::connect`] runs them, under a write lock that several processes opening
/// one new file need.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// A [`JobStore`](jobs_core::JobStore) on SQLite. Clones share the pool and the wake-up
/// signal, which only reaches workers in this process (others poll).
#[derive(Debug, Clone)]
pub struct SqliteJobStore {
    pool: SqlitePool,
    /// Fired when this store inserts or requeues a job: workers in the same process wake at
    /// once; other processes poll.
    signal: Arc<Notify>,
}

impl SqliteJobStore {
    /// Opens (creating it and its folder if missing) the database at `url`, such as
    /// `sqlite://folio-data/folio.db`, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // Processes opening a new file at once meet each other's locks where SQLite waits
        // for none (a connection switching the file to WAL answers "database is locked" at
        // once): opening is idempotent, so it is tried again for as long as a busy lock is
        // waited for anywhere else.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::open(url).await {
                Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url).map_err(translate)?;
        let path = options.get_filename();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| StoreError::Backend(Box::new(error)))?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(translate)?;
        let store = Self {
            pool,
            signal: Arc::new(Notify::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs the pending migrations in one `BEGIN IMMEDIATE` transaction. Safe when several
    /// processes open a new file at once: sqlx takes no lock on SQLite, so each would find
    /// the migrations missing and apply them over the others' ("table folio_jobs already
    /// exists"). The write lock makes the others wait (the busy timeout) and then find
    /// every migration applied. Each migration still runs in a savepoint of its own.
    async fn migrate(&self) -> Result<(), StoreError> {
        let backend = |error: MigrateError| StoreError::Backend(Box::new(error));
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(translate)?;
        // `run_direct`, sqlx's own way around `Migrator::run` on a connection, whose
        // `Acquire<'a>` bound makes the future `Send` for no caller that spawns `connect`.
        migrator()
            .run_direct(None, &mut *transaction, false)
            .await
            .map_err(backend)?;
        transaction.commit().await.map_err(translate)
    }

    /// The pool, for health checks.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// How long a statement waits for another connection's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `error` is SQLite's `SQLITE_BUSY` (or one of its extended codes): a lock held
/// elsewhere, worth another try.
fn is_busy(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    let database = match source.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(database)) => Some(database.as_ref()),
        _ => source
            .downcast_ref::<MigrateError>()
            .and_then(|error| match error {
                MigrateError::Execute(sqlx::Error::Database(database)) => Some(database.as_ref()),
                _ => None,
            }),
    };
    database
        .and_then(|database| database.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

#[cfg(test)]
mod migrations {
    //! Several stores opening one new file at once, as processes starting together do.

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_opening_a_new_file_at_once_apply_each_migration_once_and_all_open() {
        for _round in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
            let opening: Vec<_> = (0..8)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { SqliteJobStore::connect(&url).await })
                })
                .collect();
            let mut stores = Vec::new();
            for store in opening {
                stores.push(store.await.expect("no panic").expect("every store opens"));
            }
            let applied: Vec<(i64, bool)> = sqlx::query_as(
                "SELECT version, success FROM folio_schema_migrations ORDER BY version",
            )
            .fetch_all(stores[0].pool())
            .await
            .expect("read the migrations");
            let expected: Vec<(i64, bool)> = migrator()
                .iter()
                .map(|migration| (migration.version, true))
                .collect();
            assert_eq!(applied, expected);
        }
    }
}
