//! Fresh Postgres databases for tests: one per test, dropped when the test passes.
//!
//! The server comes from `FOLIO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the local server of the development
//! machines). No server means a loud failure, never a skipped test. Databases that a
//! failed test left behind are dropped by the first test of a later run, after an hour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::PgJobStore;
use jobs_core::{Job, JobId};

/// The default test server.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "folio_test_";
/// Serializes CREATE DATABASE across processes (concurrent copies of template1 can fail).
const CREATE_LOCK: i64 = 0x466f_6c69_6f00;

/// One fresh, empty database.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// The URL of the test server.
pub fn server_url() -> String {
    std::env::var("FOLIO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn admin(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|error| {
        panic!(
            "cannot reach the test Postgres at {url}: {error}. Start it (CI does: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
             or set FOLIO_TEST_POSTGRES_URL"
        )
    })
}

async fn drop_leftovers(connection: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'folio\\_test\\_%'")
            .fetch_all(&mut *connection)
            .await
            .expect("list test databases");
    let cutoff = epoch_seconds().saturating_sub(3600);
    for name in names {
        let created = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *connection)
                .await;
        }
    }
}

impl TestDatabase {
    /// Creates a fresh database on the test server.
    pub async fn create() -> Self {
        let admin_url = server_url();
        let mut connection = admin(&admin_url).await;
        drop_leftovers(&mut connection).await;
        let name = format!("{PREFIX}{}_{:016x}", epoch_seconds(), rand::random::<u64>());
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(CREATE_LOCK)
            .execute(&mut connection)
            .await
            .expect("take the create lock");
        let created = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(CREATE_LOCK)
            .execute(&mut connection)
            .await
            .expect("release the create lock");
        created.unwrap_or_else(|error| panic!("create test database {name}: {error}"));
        let url = match admin_url.rsplit_once('/') {
            Some((server, _database)) => format!("{server}/{name}"),
            None => panic!("FOLIO_TEST_POSTGRES_URL must name a database: {admin_url}"),
        };
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on the database.
    pub async fn store(&self) -> PgJobStore {
        PgJobStore::connect(&self.url, 16)
            .await
            .expect("connect the test store")
    }

    /// Drops the database. A test calls this at its end, so a failed test leaves its
    /// database for inspection.
    pub async fn drop(self) {
        let mut connection = admin(&self.admin_url).await;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut connection)
            .await
            .expect("drop test database");
    }
}

/// A row lock on one job, held by an open transaction until [`JobRowLock::release`]: every
/// write to the job (heartbeats, checkpoints, its end) waits behind it, as behind a slow
/// transaction. Process tests use it to hold a worker between two of its writes.
#[derive(Debug)]
pub struct JobRowLock {
    /// The job as it was when the lock was taken.
    pub job: Job,
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl JobRowLock {
    /// Ends the transaction: the writes waiting for the row go on.
    pub async fn release(self) {
        self.transaction
            .rollback()
            .await
            .expect("release the row lock");
    }
}

impl TestDatabase {
    /// Locks job `id`'s row (`SELECT ... FOR UPDATE`) until the lock is released.
    pub async fn lock_job(&self, id: JobId) -> JobRowLock {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .expect("connect for a row lock");
        let mut transaction = pool.begin().await.expect("begin");
        let row = sqlx::query("SELECT * FROM folio_jobs WHERE id = $1 FOR UPDATE")
            .bind(id.as_uuid())
            .fetch_one(&mut *transaction)
            .await
            .expect("lock the job's row");
        let job = crate::job_from_row(&row).expect("a job");
        JobRowLock { job, transaction }
    }
}
