//! [`SqliteJobStore`]: the embedded default [`JobStore`], on one SQLite file.
//!
//! SQLite has one writer at a time, so a claim is one `UPDATE ... WHERE id IN (SELECT ...
//! LIMIT n) RETURNING *` statement, which the database runs atomically; batches of finishes
//! run in one `BEGIN IMMEDIATE` transaction. The file runs in WAL mode with a busy timeout,
//! so readers never block the writer and writers queue instead of failing. Ids are stored
//! as UUID text, times as integer microseconds (exact comparisons in SQL), JSON as text.
//! The schema lives in `migrations/sqlite` at the workspace root.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobs_core::{
    ActiveIndex, ChainStep, ClaimParams, Finish, FinishOutcome, HeartbeatAck, HeartbeatParams,
    Insert, Job, JobError, JobId, JobQuery, JobStatus, JobStore, Lease, NewJob, Progress,
    RescueParams, RescueReport, RescueScope, StoreError, Transition, WorkerInfo,
    parse_active_index,
};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Acquire, Row, SqliteConnection};
use tokio::sync::Notify;

/// The table that records which migrations ran (kept apart from the embedding service's).
const MIGRATIONS_TABLE: &str = "folio_schema_migrations";

/// The migrations of `migrations/sqlite`.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// A [`JobStore`] on SQLite.
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

/// Whether the database refused a write for breaking one of its constraints: a refusal of
/// that one write, not a failure of the backend.
fn is_refusal(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.kind() != sqlx::error::ErrorKind::Other)
}

/// Translates every sqlx error of this store: the one place backend errors are classified.
fn translate(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.kind() != sqlx::error::ErrorKind::Other => {
            StoreError::Corrupt(format!(
                "the database rejected a write: {}",
                database.message()
            ))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::Decode(_) => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Backend(Box::new(error)),
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(format!("time {micros}")))
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("job fields serialize to JSON")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

fn job_id(text: &str) -> Result<JobId, StoreError> {
    text.parse()
        .map_err(|error| corrupt(format!("job id {text:?}: {error}")))
}

fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(format!("{column} is {value}")))
}

fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
    let get_text = |column: &str| row.try_get::<String, _>(column).map_err(translate);
    let get_opt_text = |column: &str| row.try_get::<Option<String>, _>(column).map_err(translate);
    let get_int = |column: &str| row.try_get::<i64, _>(column).map_err(translate);
    let get_opt_time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<i64>, _>(column)
            .map_err(translate)?
            .map(time)
            .transpose()
    };
    Ok(Job {
        id: job_id(&get_text("id")?)?,
        resource_key: get_text("resource_key")?,
        job_type: get_text("job_type")?,
        status: get_text("status")?.parse().map_err(corrupt)?,
        payload: from_json(&get_text("payload")?)?,
        attempt: to_u32(get_int("attempt")?, "attempt")?,
        max_attempts: to_u32(get_int("max_attempts")?, "max_attempts")?,
        progress: from_json::<Progress>(&get_text("progress")?)?,
        checkpoint: get_opt_text("checkpoint")?
            .map(|text| from_json(&text))
            .transpose()?,
        error: get_opt_text("error")?
            .map(|text| from_json::<JobError>(&text))
            .transpose()?,
        resumed_from: get_opt_text("resumed_from")?
            .map(|text| job_id(&text))
            .transpose()?,
        then: from_json::<Vec<ChainStep>>(&get_text("then")?)?,
        previous_job_id: get_opt_text("previous_job_id")?
            .map(|text| job_id(&text))
            .transpose()?,
        next_job_id: get_opt_text("next_job_id")?
            .map(|text| job_id(&text))
            .transpose()?,
        trace_parent: get_opt_text("trace_parent")?,
        cancel_requested: get_int("cancel_requested")? != 0,
        worker_id: get_opt_text("worker_id")?,
        lease: Lease(get_int("lease")?),
        run_at: time(get_int("run_at")?)?,
        created_at: time(get_int("created_at")?)?,
        started_at: get_opt_time("started_at")?,
        heartbeat_at: get_opt_time("heartbeat_at")?,
        finished_at: get_opt_time("finished_at")?,
    })
}

fn jobs_from_rows(rows: &[SqliteRow]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job_from_row).collect()
}

/// Why a fenced write to `id` changed nothing: `NotFound` or `LeaseLost`.
async fn fencing_error(connection: &mut SqliteConnection, id: JobId) -> StoreError {
    let status = sqlx::query_scalar::<_, String>("SELECT status FROM folio_jobs WHERE id = ?1")
        .bind(id.to_string())
        .fetch_optional(connection)
        .await;
    match status {
        Ok(Some(status)) => match status.parse() {
            Ok(status) => StoreError::LeaseLost { id, status },
            Err(error) => corrupt(error),
        },
        Ok(None) => StoreError::NotFound(id),
        Err(error) => translate(error),
    }
}

fn scope_params(scope: &RescueScope) -> (Option<&str>, Option<&str>) {
    match scope {
        RescueScope::All => (None, None),
        RescueScope::Resource {
            resource_key,
            job_type,
        } => (Some(resource_key.as_str()), Some(job_type.as_str())),
    }
}

/// The statuses the one-active index admits, from its predicate as SQLite keeps the text of
/// the migration: `status IN ('a', 'b')`.
fn active_index_statuses(predicate: &str) -> Option<Vec<&str>> {
    let list = predicate.strip_prefix("status IN (")?.strip_suffix(')')?;
    list.split(',')
        .map(|item| item.trim().strip_prefix('\'')?.strip_suffix('\''))
        .collect()
}

const INSERT: &str = concat!(
    "
INSERT INTO folio_jobs
    (id, resource_key, job_type, status, payload, max_attempts, checkpoint, resumed_from,
     \"then\", previous_job_id, trace_parent, run_at, created_at)
VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?9, ?10, ?11, ?8, ?8)
ON CONFLICT (resource_key, job_type) WHERE status IN ",
    jobs_core::active_statuses_sql!(),
    " DO NOTHING
RETURNING *"
);

/// [`INSERT`] for a whole batch, from a JSON array of the jobs (each field a string or
/// number, the JSON ones as their text): rows are inserted in array order, so of two jobs
/// of one (resource, type) the first wins and the second meets it as the active job.
/// (`WHERE true` tells SQLite's parser that `ON CONFLICT` is the upsert clause.)
const INSERT_MANY: &str = concat!(
    "
INSERT INTO folio_jobs
    (id, resource_key, job_type, status, payload, max_attempts, checkpoint, resumed_from,
     \"then\", previous_job_id, trace_parent, run_at, created_at)
SELECT value ->> '$.id', value ->> '$.resource_key', value ->> '$.job_type', 'pending',
       value ->> '$.payload', value ->> '$.max_attempts', value ->> '$.checkpoint',
       value ->> '$.resumed_from', value ->> '$.then', NULL, value ->> '$.trace_parent',
       value ->> '$.now', value ->> '$.now'
FROM json_each(?1) WHERE true
ON CONFLICT (resource_key, job_type) WHERE status IN ",
    jobs_core::active_statuses_sql!(),
    " DO NOTHING
RETURNING *"
);

/// The active jobs of a JSON array of `[resource_key, job_type]` pairs, each found through
/// the one-active index.
const SELECT_ACTIVE_MANY: &str = concat!(
    "
SELECT folio_jobs.* FROM json_each(?1) AS wanted
JOIN folio_jobs ON folio_jobs.resource_key = wanted.value ->> '$[0]'
               AND folio_jobs.job_type = wanted.value ->> '$[1]'
               AND folio_jobs.status IN ",
    jobs_core::active_statuses_sql!()
);

const SELECT_ACTIVE: &str = concat!(
    "
SELECT * FROM folio_jobs
WHERE resource_key = ?1 AND job_type = ?2 AND status IN ",
    jobs_core::active_statuses_sql!()
);

const CLAIM: &str = "
UPDATE folio_jobs
SET status = 'running', attempt = attempt + 1, lease = lease + 1, worker_id = ?4,
    started_at = ?1, heartbeat_at = ?1
WHERE id IN (
    SELECT id FROM folio_jobs
    WHERE status = 'pending' AND run_at <= ?1
      AND job_type IN (SELECT value FROM json_each(?2))
    ORDER BY run_at, id
    LIMIT ?3
)
RETURNING *";

const HEARTBEAT: &str = "
UPDATE folio_jobs
SET heartbeat_at = ?3, progress = COALESCE(?4, progress), checkpoint = COALESCE(?5, checkpoint)
WHERE id = ?1 AND lease = ?2 AND status = 'running'
RETURNING cancel_requested";

/// Ends one claim, fenced on its lease. `requeue` becomes `cancelled` when a cancel was
/// requested, and `failed` (with the original error) when it would consume the last
/// attempt. SET expressions see the row before the update.
const FINISH: &str = "
UPDATE folio_jobs
SET status = CASE
        WHEN ?3 <> 'requeue' THEN ?3
        WHEN cancel_requested THEN 'cancelled'
        WHEN ?6 AND attempt >= max_attempts THEN 'failed'
        ELSE 'pending' END,
    attempt = CASE
        WHEN ?3 = 'requeue' AND NOT ?6 AND NOT cancel_requested THEN attempt - 1
        ELSE attempt END,
    error = CASE
        WHEN ?3 IN ('failed', 'requeue') THEN ?4
        WHEN ?3 = 'completed' THEN NULL
        ELSE error END,
    run_at = CASE WHEN ?3 = 'requeue' THEN ?5 ELSE run_at END,
    finished_at = CASE
        WHEN ?3 = 'requeue' AND NOT cancel_requested AND NOT (?6 AND attempt >= max_attempts)
        THEN NULL ELSE ?9 END,
    worker_id = CASE
        WHEN ?3 = 'requeue' AND NOT cancel_requested AND NOT (?6 AND attempt >= max_attempts)
        THEN NULL ELSE worker_id END,
    progress = COALESCE(?7, progress),
    checkpoint = COALESCE(?8, checkpoint)
WHERE id = ?1 AND lease = ?2 AND status = 'running'
RETURNING status";

/// Completes one job of a chain (the `completed` case of [`FINISH`]) and reads what its
/// next job needs. It runs in the transaction that inserts the next job.
const COMPLETE_CHAINED: &str = "
UPDATE folio_jobs
SET status = 'completed', error = NULL, finished_at = ?3,
    progress = COALESCE(?4, progress), checkpoint = COALESCE(?5, checkpoint)
WHERE id = ?1 AND lease = ?2 AND status = 'running'
RETURNING resource_key, max_attempts, \"then\", trace_parent";

/// Links a job just completed to the job its chain continues in.
const LINK_NEXT: &str = "UPDATE folio_jobs SET next_job_id = ?2 WHERE id = ?1";

const REQUEST_CANCEL: &str = concat!(
    "
UPDATE folio_jobs
SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
    finished_at = CASE WHEN status = 'pending' THEN ?2 ELSE finished_at END,
    cancel_requested = 1
WHERE id = ?1 AND status IN ",
    jobs_core::active_statuses_sql!(),
    "
RETURNING *"
);

const RESCUE_STALE: &str = "
UPDATE folio_jobs
SET status = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempt < max_attempts THEN 'pending'
        ELSE 'failed' END,
    error = CASE
        WHEN cancel_requested THEN error
        WHEN attempt < max_attempts THEN ?3
        ELSE ?4 END,
    finished_at = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN NULL ELSE ?1 END,
    run_at = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN ?1 ELSE run_at END,
    worker_id = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN NULL ELSE worker_id END
WHERE status = 'running' AND heartbeat_at < ?2
  AND (?5 IS NULL OR (resource_key = ?5 AND job_type = ?6))
RETURNING id, status";

const RESCUE_PENDING: &str = "
UPDATE folio_jobs
SET status = 'failed', error = ?3, finished_at = ?1
WHERE status = 'pending' AND run_at < ?2
  AND (?4 IS NULL OR (resource_key = ?4 AND job_type = ?5))
RETURNING id";

/// Retention: the oldest `?2` finished jobs that ended before `?1`, from the
/// `folio_jobs_finished` index (a range that ends where the young jobs begin).
const SELECT_FINISHED: &str = "
SELECT id FROM folio_jobs
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?1
ORDER BY finished_at
LIMIT ?2";

/// Clears the links that jobs outside a retention batch (`?1`, a JSON array of ids) have
/// into it: what `ON DELETE SET NULL` does on Postgres, which SQLite cannot add to an existing
/// table (`migrations/0008_retention.sql`). Each column's partial index finds the jobs.
const UNLINK_RESUMED_FROM: &str = "
UPDATE folio_jobs SET resumed_from = NULL
WHERE resumed_from IN (SELECT value FROM json_each(?1))
  AND id NOT IN (SELECT value FROM json_each(?1))";
const UNLINK_PREVIOUS: &str = "
UPDATE folio_jobs SET previous_job_id = NULL
WHERE previous_job_id IN (SELECT value FROM json_each(?1))
  AND id NOT IN (SELECT value FROM json_each(?1))";
const UNLINK_NEXT: &str = "
UPDATE folio_jobs SET next_job_id = NULL
WHERE next_job_id IN (SELECT value FROM json_each(?1))
  AND id NOT IN (SELECT value FROM json_each(?1))";

/// Deletes a retention batch (`?1`, a JSON array of ids). Links among the batch's own jobs
/// go with them: the foreign keys are checked at the end of the statement.
const DELETE_JOBS: &str = "DELETE FROM folio_jobs WHERE id IN (SELECT value FROM json_each(?1))";

const REGISTER_WORKER: &str = "
INSERT INTO folio_workers (id, host, job_types, started_at, last_seen)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, job_types = excluded.job_types, started_at = excluded.started_at,
    last_seen = excluded.last_seen";

/// Every book's jobs, newest first, each status read where it costs least (see
/// `migrations/sqlite/0006_list_by_status.sql`). `?1` holds the statuses found by a backward
/// scan of the primary key's index (every status when the query names none, else
/// `completed`), `?2` those read from an index of their own (`pending` and `running` from the
/// one-active index, named here because SQLite would rather scan the key in order and could
/// read the whole table to find a few running jobs; `failed` and `cancelled` from theirs).
/// [`JobQuery::listing_branches`] splits them. A branch whose statuses are not asked for
/// stops before it reads a row: its test of the parameters does not depend on the row.
const LIST: &str = concat!(
    "
SELECT * FROM (
    SELECT * FROM (
        SELECT * FROM folio_jobs
        WHERE ?1 <> '[]' AND status IN (SELECT value FROM json_each(?1))
          AND id < ?3 AND (?4 IS NULL OR job_type = ?4)
        ORDER BY id DESC
        LIMIT ?5)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM folio_jobs INDEXED BY folio_jobs_one_active
        WHERE status IN ",
    jobs_core::active_statuses_sql!(),
    "
          AND EXISTS (SELECT 1 FROM json_each(?2) WHERE value IN ",
    jobs_core::active_statuses_sql!(),
    ")
          AND status IN (SELECT value FROM json_each(?2))
          AND id < ?3 AND (?4 IS NULL OR job_type = ?4)
        ORDER BY id DESC
        LIMIT ?5)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM folio_jobs
        WHERE status = 'failed' AND 'failed' IN (SELECT value FROM json_each(?2))
          AND id < ?3 AND (?4 IS NULL OR job_type = ?4)
        ORDER BY id DESC
        LIMIT ?5)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM folio_jobs
        WHERE status = 'cancelled' AND 'cancelled' IN (SELECT value FROM json_each(?2))
          AND id < ?3 AND (?4 IS NULL OR job_type = ?4)
        ORDER BY id DESC
        LIMIT ?5)
)
ORDER BY id DESC
LIMIT ?5"
);

/// A resource's jobs, newest first, found through `folio_jobs_by_resource`. `?3` holds the
/// statuses asked for (every status when the query names none), `?4` the keyset bound.
const LIST_RESOURCE: &str = "
SELECT * FROM folio_jobs
WHERE resource_key = ?1 AND (?2 IS NULL OR job_type = ?2)
  AND status IN (SELECT value FROM json_each(?3)) AND id < ?4
ORDER BY id DESC
LIMIT ?5";

/// Above every job id in text order (ids are lowercase hyphenated UUIDs): the keyset bound of
/// a listing without `before`.
const ID_ABOVE_ALL: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/// Inserts `job` (inserted by the completion of `previous` when it continues a chain), or
/// reads the active job of its (resource, type): `Ok(Ok(inserted))` or `Ok(Err(active))`.
/// The insert loses to an active job; that job may end before it is read, so it retries.
async fn insert_job(
    connection: &mut SqliteConnection,
    job: &NewJob,
    previous: Option<JobId>,
) -> Result<Result<SqliteRow, SqliteRow>, sqlx::Error> {
    for _ in 0..16 {
        let inserted = sqlx::query(INSERT)
            .bind(job.id.to_string())
            .bind(&job.resource_key)
            .bind(&job.job_type)
            .bind(json_text(&job.payload))
            .bind(i64::from(job.max_attempts))
            .bind(job.checkpoint.as_ref().map(json_text))
            .bind(job.resumed_from.map(|id| id.to_string()))
            .bind(micros(job.now))
            .bind(json_text(&job.then))
            .bind(previous.map(|id| id.to_string()))
            .bind(jobs_core::trace::storable_trace_parent(
                job.trace_parent.as_deref(),
            ))
            .fetch_optional(&mut *connection)
            .await?;
        if let Some(row) = inserted {
            return Ok(Ok(row));
        }
        let active = sqlx::query(SELECT_ACTIVE)
            .bind(&job.resource_key)
            .bind(&job.job_type)
            .fetch_optional(&mut *connection)
            .await?;
        if let Some(row) = active {
            return Ok(Err(row));
        }
    }
    Err(sqlx::Error::Protocol(
        "insert kept conflicting with jobs that ended at once".into(),
    ))
}

/// What the completion of a job of a chain wrote.
enum ChainedEnd {
    /// The fence refused the completion: nothing was written.
    Fenced,
    /// Completed; the next job was inserted (`true`), or was already active or the chain
    /// was empty (`false`).
    Completed { inserted: bool },
}

/// Completes one job of a chain in the caller's transaction: the fenced completion, the
/// insert of the next job (or the read of the active one of that type), the link.
async fn complete_chained(
    connection: &mut SqliteConnection,
    now: DateTime<Utc>,
    finish: &Finish,
) -> Result<ChainedEnd, sqlx::Error> {
    let Some(row) = sqlx::query(COMPLETE_CHAINED)
        .bind(finish.id.to_string())
        .bind(finish.lease.0)
        .bind(micros(now))
        .bind(finish.progress.as_ref().map(json_text))
        .bind(finish.checkpoint.as_ref().map(json_text))
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(ChainedEnd::Fenced);
    };
    let then: Vec<ChainStep> = serde_json::from_str(&row.try_get::<String, _>("then")?)
        .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    let Some((step, rest)) = then.split_first() else {
        return Ok(ChainedEnd::Completed { inserted: false });
    };
    let next = NewJob {
        id: JobId::new(),
        resource_key: row.try_get("resource_key")?,
        job_type: step.job_type.clone(),
        payload: step.payload.clone(),
        max_attempts: u32::try_from(row.try_get::<i64, _>("max_attempts")?).unwrap_or(1),
        checkpoint: None,
        resumed_from: None,
        then: rest.to_vec(),
        // The next job continues the trace of the one it follows.
        trace_parent: row.try_get("trace_parent")?,
        now,
    };
    let (next_id, inserted) = match insert_job(connection, &next, Some(finish.id)).await? {
        Ok(row) => (row.try_get::<String, _>("id")?, true),
        Err(active) => (active.try_get::<String, _>("id")?, false),
    };
    sqlx::query(LINK_NEXT)
        .bind(finish.id.to_string())
        .bind(next_id)
        .execute(&mut *connection)
        .await?;
    Ok(ChainedEnd::Completed { inserted })
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn insert(&self, job: NewJob) -> Result<Insert, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(translate)?;
        match insert_job(&mut connection, &job, None).await {
            Ok(Ok(inserted)) => {
                self.signal.notify_waiters();
                Ok(Insert::Inserted(job_from_row(&inserted)?))
            }
            Ok(Err(active)) => Ok(Insert::Busy(job_from_row(&active)?)),
            Err(error) => Err(translate(error)),
        }
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Insert>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // One write transaction: no other writer runs until it commits, so a conflict is
        // with a job this transaction sees (committed, or inserted by an earlier job of the
        // batch), which stays active until the commit. One statement inserts the batch; one
        // more reads the active jobs the others met.
        let batch: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                serde_json::json!({
                    "id": job.id.to_string(),
                    "resource_key": job.resource_key,
                    "job_type": job.job_type,
                    "payload": json_text(&job.payload),
                    "max_attempts": job.max_attempts,
                    "checkpoint": job.checkpoint.as_ref().map(json_text),
                    "resumed_from": job.resumed_from.map(|id| id.to_string()),
                    "then": json_text(&job.then),
                    "trace_parent": jobs_core::trace::storable_trace_parent(job.trace_parent.as_deref()),
                    "now": micros(job.now),
                })
            })
            .collect();
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(translate)?;
        let rows = sqlx::query(INSERT_MANY)
            .bind(json_text(&batch))
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate)?;
        let mut inserted: HashMap<JobId, Job> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = job_from_row(row)?;
            inserted.insert(job.id, job);
        }
        let busy: Vec<(&str, &str)> = jobs
            .iter()
            .filter(|job| !inserted.contains_key(&job.id))
            .map(|job| (job.resource_key.as_str(), job.job_type.as_str()))
            .collect();
        let mut active: HashMap<(String, String), Job> = HashMap::new();
        if !busy.is_empty() {
            let rows = sqlx::query(SELECT_ACTIVE_MANY)
                .bind(json_text(&busy))
                .fetch_all(&mut *transaction)
                .await
                .map_err(translate)?;
            for row in &rows {
                let job = job_from_row(row)?;
                active.insert((job.resource_key.clone(), job.job_type.clone()), job);
            }
        }
        transaction.commit().await.map_err(translate)?;
        if !inserted.is_empty() {
            self.signal.notify_waiters();
        }
        jobs.iter()
            .map(|job| match inserted.remove(&job.id) {
                Some(created) => Ok(Insert::Inserted(created)),
                None => active
                    .get(&(job.resource_key.clone(), job.job_type.clone()))
                    .cloned()
                    .map(Insert::Busy)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "job {} was neither inserted nor met an active job",
                            job.id
                        ))
                    }),
            })
            .collect()
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        let row = sqlx::query("SELECT * FROM folio_jobs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate)?
            .ok_or(StoreError::NotFound(id))?;
        job_from_row(&row)
    }

    async fn list(&self, query: &JobQuery) -> Result<Vec<Job>, StoreError> {
        let before = query
            .before
            .map_or_else(|| ID_ABOVE_ALL.to_owned(), |id| id.to_string());
        let statement = match query.resource_key.as_deref() {
            Some(resource_key) => sqlx::query(LIST_RESOURCE)
                .bind(resource_key)
                .bind(query.job_type.as_deref())
                .bind(json_text(&JobQuery::wanted_statuses(&query.statuses)))
                .bind(before),
            None => {
                let (scanned, indexed) = JobQuery::listing_branches(&query.statuses);
                sqlx::query(LIST)
                    .bind(json_text(&scanned))
                    .bind(json_text(&indexed))
                    .bind(before)
                    .bind(query.job_type.as_deref())
            }
        };
        let rows = statement
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(translate)?;
        jobs_from_rows(&rows)
    }

    async fn claim(&self, params: &ClaimParams) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(CLAIM)
            .bind(micros(params.now))
            .bind(json_text(&params.job_types))
            .bind(i64::from(params.limit))
            .bind(&params.worker_id)
            .fetch_all(&self.pool)
            .await
            .map_err(translate)?;
        let mut jobs = jobs_from_rows(&rows)?;
        jobs.sort_by_key(|job| (job.run_at, job.id));
        Ok(jobs)
    }

    async fn heartbeat(&self, params: &HeartbeatParams) -> Result<HeartbeatAck, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(translate)?;
        let cancel_requested = sqlx::query_scalar::<_, i64>(HEARTBEAT)
            .bind(params.id.to_string())
            .bind(params.lease.0)
            .bind(micros(params.now))
            .bind(params.progress.as_ref().map(json_text))
            .bind(params.checkpoint.as_ref().map(json_text))
            .fetch_optional(&mut *connection)
            .await
            .map_err(translate)?;
        match cancel_requested {
            Some(flag) => Ok(HeartbeatAck {
                cancel_requested: flag != 0,
            }),
            None => Err(fencing_error(&mut connection, params.id).await),
        }
    }

    async fn finish(
        &self,
        now: DateTime<Utc>,
        batch: &[Finish],
    ) -> Result<Vec<Result<JobStatus, StoreError>>, StoreError> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(translate)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut chain_inserted = false;
        for finish in batch {
            if finish.continues_chain() {
                // In a savepoint: a refused insert of the next job rolls back this completion
                // only, and is this job's error.
                let mut savepoint = transaction.begin().await.map_err(translate)?;
                let result = match complete_chained(&mut savepoint, now, finish).await {
                    Ok(ChainedEnd::Fenced) => {
                        savepoint.commit().await.map_err(translate)?;
                        Err(fencing_error(&mut transaction, finish.id).await)
                    }
                    Ok(ChainedEnd::Completed { inserted }) => {
                        savepoint.commit().await.map_err(translate)?;
                        chain_inserted |= inserted;
                        Ok(JobStatus::Completed)
                    }
                    Err(error) if is_refusal(&error) => {
                        savepoint.rollback().await.map_err(translate)?;
                        Err(translate(error))
                    }
                    Err(error) => return Err(translate(error)),
                };
                results.push(result);
                continue;
            }
            let (kind, error, run_at, consume) = match &finish.outcome {
                FinishOutcome::Completed => ("completed", None, now, true),
                FinishOutcome::Failed(error) => ("failed", Some(json_text(error)), now, true),
                FinishOutcome::Cancelled => ("cancelled", None, now, true),
                FinishOutcome::Requeue {
                    error,
                    run_at,
                    consume_attempt,
                } => ("requeue", Some(json_text(error)), *run_at, *consume_attempt),
            };
            let status = sqlx::query_scalar::<_, String>(FINISH)
                .bind(finish.id.to_string())
                .bind(finish.lease.0)
                .bind(kind)
                .bind(error)
                .bind(micros(run_at))
                .bind(consume)
                .bind(finish.progress.as_ref().map(json_text))
                .bind(finish.checkpoint.as_ref().map(json_text))
                .bind(micros(now))
                .fetch_optional(&mut *transaction)
                .await
                .map_err(translate)?;
            results.push(match status {
                Some(status) => status.parse::<JobStatus>().map_err(corrupt),
                None => Err(fencing_error(&mut transaction, finish.id).await),
            });
        }
        transaction.commit().await.map_err(translate)?;
        if chain_inserted
            || results
                .iter()
                .any(|result| matches!(result, Ok(JobStatus::Pending)))
        {
            self.signal.notify_waiters();
        }
        Ok(results)
    }

    async fn request_cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Job, StoreError> {
        let row = sqlx::query(REQUEST_CANCEL)
            .bind(id.to_string())
            .bind(micros(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(translate)?;
        match row {
            Some(row) => job_from_row(&row),
            None => {
                let job = self.get(id).await?;
                match Transition::Cancel.apply(job.status) {
                    Err(source) => Err(StoreError::IllegalTransition { id, source }),
                    Ok(_) => Err(corrupt(format!("cancel of {id} matched no row"))),
                }
            }
        }
    }

    async fn rescue(&self, params: &RescueParams) -> Result<RescueReport, StoreError> {
        let (resource_key, job_type) = scope_params(&params.scope);
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(translate)?;
        let stale = sqlx::query(RESCUE_STALE)
            .bind(micros(params.now))
            .bind(micros(params.stale_before))
            .bind(json_text(&params.requeue_error))
            .bind(json_text(&params.expired_error))
            .bind(resource_key)
            .bind(job_type)
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate)?;
        let expired = sqlx::query_scalar::<_, String>(RESCUE_PENDING)
            .bind(micros(params.now))
            .bind(micros(params.pending_before))
            .bind(json_text(&params.pending_timeout_error))
            .bind(resource_key)
            .bind(job_type)
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate)?;
        transaction.commit().await.map_err(translate)?;
        let stale = stale
            .iter()
            .map(|row| {
                let id = job_id(&row.try_get::<String, _>("id").map_err(translate)?)?;
                let status = row.try_get::<String, _>("status").map_err(translate)?;
                Ok((id, status.parse::<JobStatus>().map_err(corrupt)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let expired = expired
            .iter()
            .map(|id| job_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let report = RescueReport::from_changes(stale, expired);
        if !report.requeued.is_empty() {
            self.signal.notify_waiters();
        }
        Ok(report)
    }

    async fn delete_finished(
        &self,
        finished_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        // One write transaction: no other writer runs until it commits, so no job can come
        // to name the batch between the unlinking and the delete, and concurrent calls take
        // turns (each sees the jobs the one before deleted as gone).
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(translate)?;
        let ids = sqlx::query_scalar::<_, String>(SELECT_FINISHED)
            .bind(micros(finished_before))
            .bind(i64::from(limit))
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate)?;
        if ids.is_empty() {
            transaction.commit().await.map_err(translate)?;
            return Ok(0);
        }
        let batch = json_text(&ids);
        for unlink in [UNLINK_RESUMED_FROM, UNLINK_PREVIOUS, UNLINK_NEXT] {
            sqlx::query(unlink)
                .bind(&batch)
                .execute(&mut *transaction)
                .await
                .map_err(translate)?;
        }
        let deleted = sqlx::query(DELETE_JOBS)
            .bind(&batch)
            .execute(&mut *transaction)
            .await
            .map_err(translate)?
            .rows_affected();
        transaction.commit().await.map_err(translate)?;
        Ok(deleted)
    }

    async fn active_index(&self) -> Result<ActiveIndex, StoreError> {
        let definition: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'folio_jobs_one_active'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(translate)?
        .ok_or_else(|| corrupt("index folio_jobs_one_active is missing"))?;
        parse_active_index(&definition, active_index_statuses)
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        sqlx::query(REGISTER_WORKER)
            .bind(&worker.id)
            .bind(&worker.host)
            .bind(json_text(&worker.job_types))
            .bind(micros(worker.started_at))
            .bind(micros(worker.last_seen))
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn touch_worker(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE folio_workers SET last_seen = ?2 WHERE id = ?1")
            .bind(id)
            .bind(micros(now))
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(result.rows_affected() > 0)
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM folio_workers WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn list_workers(&self, seen_since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM folio_workers WHERE last_seen >= ?1 ORDER BY last_seen DESC, id",
        )
        .bind(micros(seen_since))
        .fetch_all(&self.pool)
        .await
        .map_err(translate)?;
        rows.iter()
            .map(|row| {
                Ok(WorkerInfo {
                    id: row.try_get("id").map_err(translate)?,
                    host: row.try_get("host").map_err(translate)?,
                    job_types: from_json(
                        &row.try_get::<String, _>("job_types").map_err(translate)?,
                    )?,
                    started_at: time(row.try_get("started_at").map_err(translate)?)?,
                    last_seen: time(row.try_get("last_seen").map_err(translate)?)?,
                })
            })
            .collect()
    }

    fn job_signal(&self) -> Option<Arc<Notify>> {
        Some(self.signal.clone())
    }
}

#[cfg(test)]
mod plans {
    //! The query plans of the listings: each status comes from the index written for it,
    //! and no listing scans the table.

    use super::*;

    /// The `detail` lines of `EXPLAIN QUERY PLAN` for `sql` with `arguments` bound.
    async fn plan(store: &SqliteJobStore, sql: &str, arguments: &[Option<&str>]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(explain));
        for argument in arguments {
            query = query.bind(*argument);
        }
        let rows = query.fetch_all(store.pool()).await.expect("explain");
        rows.iter()
            .map(|row| row.try_get::<String, _>("detail").expect("a detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn listings_read_each_status_from_its_index_and_never_scan_the_table() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteJobStore::connect(&url).await.expect("open");
        let (scanned, indexed) = JobQuery::listing_branches(&JobStatus::ALL);
        let (scanned, indexed) = (json_text(&scanned), json_text(&indexed));
        let every_book = plan(
            &store,
            LIST,
            &[
                Some(&scanned),
                Some(&indexed),
                Some(ID_ABOVE_ALL),
                None,
                Some("50"),
            ],
        )
        .await;
        for index in [
            "SEARCH folio_jobs USING INDEX sqlite_autoindex_folio_jobs_1 (id<?)",
            "SCAN folio_jobs USING INDEX folio_jobs_one_active",
            "SEARCH folio_jobs USING INDEX folio_jobs_failed (id<?)",
            "SEARCH folio_jobs USING INDEX folio_jobs_cancelled (id<?)",
        ] {
            assert!(every_book.contains(index), "{index}:\n{every_book}");
        }
        let statuses = json_text(&JobQuery::wanted_statuses(&[]));
        let one_book = plan(
            &store,
            LIST_RESOURCE,
            &[
                Some("book-1"),
                None,
                Some(&statuses),
                Some(ID_ABOVE_ALL),
                Some("50"),
            ],
        )
        .await;
        assert!(
            one_book.contains("USING INDEX folio_jobs_by_resource (resource_key=?)"),
            "{one_book}"
        );
        for listing in [every_book, one_book] {
            assert!(
                !listing.lines().any(|line| line.trim() == "SCAN folio_jobs"),
                "{listing}"
            );
        }
    }

    /// A bulk insert's busy jobs find their active job through the one-active index.
    #[tokio::test]
    async fn bulk_inserts_find_the_active_jobs_they_met_through_the_one_active_index() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteJobStore::connect(&url).await.expect("open");
        let busy = plan(&store, SELECT_ACTIVE_MANY, &[Some(r#"[["book-1","ocr"]]"#)]).await;
        assert!(
            busy.contains("SEARCH folio_jobs USING INDEX folio_jobs_one_active (resource_key=? AND job_type=?)"),
            "{busy}"
        );
        assert!(
            !busy.lines().any(|line| line.trim() == "SCAN folio_jobs"),
            "{busy}"
        );
    }

    /// Retention reads a batch from the finished-jobs index, and finds the jobs that name it
    /// (to clear their links, and in the foreign keys' check as it deletes) through the
    /// partial index of each link column: no statement scans the table.
    #[tokio::test]
    async fn retention_reads_a_batch_and_the_links_into_it_from_indexes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteJobStore::connect(&url).await.expect("open");
        let batch = Some(r#"["00000000-0000-7000-8000-000000000001"]"#);
        let cases = [
            (
                SELECT_FINISHED,
                vec![Some("0"), Some("500")],
                vec!["SEARCH folio_jobs USING INDEX folio_jobs_finished (finished_at<?)"],
            ),
            (
                UNLINK_RESUMED_FROM,
                vec![batch],
                vec!["folio_jobs_resumed_from (resumed_from=?)"],
            ),
            (
                UNLINK_PREVIOUS,
                vec![batch],
                vec!["folio_jobs_previous_job_id (previous_job_id=?)"],
            ),
            (
                UNLINK_NEXT,
                vec![batch],
                vec!["folio_jobs_next_job_id (next_job_id=?)"],
            ),
            (
                DELETE_JOBS,
                vec![batch],
                vec![
                    "sqlite_autoindex_folio_jobs_1 (id=?)",
                    "folio_jobs_resumed_from (resumed_from=?)",
                    "folio_jobs_previous_job_id (previous_job_id=?)",
                    "folio_jobs_next_job_id (next_job_id=?)",
                ],
            ),
        ];
        for (sql, arguments, indexes) in cases {
            let plan = plan(&store, sql, &arguments).await;
            for index in indexes {
                assert!(plan.contains(index), "{index}:\n{plan}");
            }
            assert!(
                !plan.lines().any(|line| line.trim() == "SCAN folio_jobs"),
                "{plan}"
            );
        }
    }
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

#[cfg(test)]
mod active_set {
    //! The active statuses in this store's SQL: its queries take them from
    //! `jobs_core::active_statuses_sql!`, and its index definition parses back to them.

    use super::*;

    #[test]
    fn no_query_spells_the_active_statuses_by_hand() {
        jobs_core::conformance::assert_no_hand_written_active_set(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        );
    }

    #[test]
    fn parses_the_index_definition_sqlite_keeps() {
        let index = parse_active_index(
            concat!(
                "CREATE UNIQUE INDEX folio_jobs_one_active ON folio_jobs (resource_key, job_type)\n",
                "    WHERE status IN ",
                jobs_core::active_statuses_sql!()
            ),
            active_index_statuses,
        )
        .unwrap();
        assert!(index.unique);
        assert_eq!(index.columns, ["resource_key", "job_type"]);
        assert_eq!(index.statuses, JobStatus::ACTIVE);
        let other = "CREATE UNIQUE INDEX x ON folio_jobs (a) WHERE status = 'pending'";
        assert!(parse_active_index(other, active_index_statuses).is_err());
    }
}
