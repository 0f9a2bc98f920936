//! [`PgJobStore`]: the [`JobStore`] for many workers on many machines, on Postgres.
//!
//! Claims use `FOR UPDATE SKIP LOCKED` in a CTE, so concurrent claimers never block on or
//! double-take a row; every other change is one guarded `UPDATE ... WHERE status = ... AND
//! lease = ...`, and ends of claims are batched into one statement with per-row fencing.
//! Inserting a job sends `NOTIFY folio_jobs` with the job type so workers wake at once.
//! The schema lives in `migrations/postgres` at the workspace root.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobs_core::{
    ActiveIndex, ChainStep, ClaimParams, Finish, FinishOutcome, HeartbeatAck, HeartbeatParams,
    Insert, Job, JobError, JobId, JobQuery, JobStatus, JobStore, Lease, NewJob, Progress,
    RescueParams, RescueReport, RescueScope, StoreError, Transition, WorkerInfo,
    parse_active_index,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Acquire, Row};
use tokio::sync::Notify;
use uuid::Uuid;

mod bulk;
#[cfg(feature = "testing")]
pub mod testing;

/// The channel that job inserts are announced on; the payload is the job type.
pub const NOTIFY_CHANNEL: &str = "folio_jobs";

/// The table that records which migrations ran (kept apart from the embedding service's).
const MIGRATIONS_TABLE: &str = "folio_schema_migrations";

/// The migrations of `migrations/postgres`.
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
}

impl PoolSettings {
    /// `max_connections` with the default [`PoolSettings::ACQUIRE_TIMEOUT`].
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            acquire_timeout: Self::ACQUIRE_TIMEOUT,
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

/// A [`JobStore`] on Postgres.
#[derive(Debug, Clone)]
pub struct PgJobStore {
    pool: PgPool,
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
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store over an existing pool; call [`PgJobStore::migrate`] once before use. The
    /// pool's own settings apply: to plan statements once, as [`PgJobStore::connect`] does,
    /// give its connections `plan_cache_mode = force_generic_plan`.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            signal: Arc::new(OnceLock::new()),
        }
    }

    /// Runs the pending migrations. Safe to call from many processes at once (sqlx takes an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(|error| StoreError::Backend(Box::new(error)))
    }

    /// The pool, for LISTEN connections and health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Why a fenced write to each of `ids` changed nothing: `NotFound` or `LeaseLost`.
    async fn fencing_errors(
        &self,
        ids: &[JobId],
    ) -> Result<HashMap<JobId, StoreError>, StoreError> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        let rows = sqlx::query("SELECT id, status FROM folio_jobs WHERE id = ANY($1)")
            .bind(&uuids)
            .fetch_all(&self.pool)
            .await
            .map_err(translate)?;
        let mut statuses = HashMap::new();
        for row in rows {
            let id = JobId::from_uuid(row.try_get("id").map_err(translate)?);
            statuses.insert(id, parse_status(row.try_get("status").map_err(translate)?)?);
        }
        Ok(ids
            .iter()
            .map(|id| {
                let error = match statuses.get(id) {
                    Some(status) => StoreError::LeaseLost {
                        id: *id,
                        status: *status,
                    },
                    None => StoreError::NotFound(*id),
                };
                (*id, error)
            })
            .collect())
    }
}

/// The longest pause between two attempts of the listener to connect again. Each attempt
/// itself waits up to the pool's acquire timeout (retrying the connection inside it), so
/// a longer pause would only delay the reconnect after the server is back.
const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Listens on [`NOTIFY_CHANNEL`] and fires `signal` on each notification, reconnecting
/// with backoff when the connection drops (a server restart, a terminated backend). After
/// every (re)connect it fires once, since notifications sent while disconnected are lost.
/// Ends when the last worker drops the signal.
async fn listen(pool: PgPool, signal: Weak<Notify>) {
    let mut backoff = Duration::from_millis(100);
    let mut reconnecting = false;
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if reconnecting {
                        tracing::info!("job notification listener reconnected");
                    }
                    reconnecting = true;
                    loop {
                        let Some(signal) = signal.upgrade() else {
                            return;
                        };
                        signal.notify_waiters();
                        drop(signal);
                        match listener.try_recv().await {
                            Ok(Some(_notification)) => {}
                            Ok(None) => {
                                tracing::warn!("job notification connection lost; reconnecting");
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "job notification listener failed");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "LISTEN {NOTIFY_CHANNEL} failed"),
            },
            Err(error) => tracing::warn!(%error, "job notification listener cannot connect"),
        }
        if signal.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
    }
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
                "the database rejected a write ({}): {}",
                database.constraint().unwrap_or("constraint"),
                database.message()
            ))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::Decode(_) => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Backend(Box::new(error)),
    }
}

fn parse_status(status: String) -> Result<JobStatus, StoreError> {
    status
        .parse()
        .map_err(|error: jobs_core::UnknownJobStatus| StoreError::Corrupt(error.to_string()))
}

fn to_u32(value: i32, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is {value}")))
}

fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: JobId::from_uuid(row.try_get("id").map_err(translate)?),
        resource_key: row.try_get("resource_key").map_err(translate)?,
        job_type: row.try_get("job_type").map_err(translate)?,
        status: parse_status(row.try_get("status").map_err(translate)?)?,
        payload: row
            .try_get::<Json<serde_json::Value>, _>("payload")
            .map_err(translate)?
            .0,
        attempt: to_u32(row.try_get("attempt").map_err(translate)?, "attempt")?,
        max_attempts: to_u32(
            row.try_get("max_attempts").map_err(translate)?,
            "max_attempts",
        )?,
        progress: row
            .try_get::<Json<Progress>, _>("progress")
            .map_err(translate)?
            .0,
        checkpoint: row
            .try_get::<Option<Json<serde_json::Value>>, _>("checkpoint")
            .map_err(translate)?
            .map(|json| json.0),
        error: row
            .try_get::<Option<Json<JobError>>, _>("error")
            .map_err(translate)?
            .map(|json| json.0),
        resumed_from: row
            .try_get::<Option<Uuid>, _>("resumed_from")
            .map_err(translate)?
            .map(JobId::from_uuid),
        then: row
            .try_get::<Json<Vec<ChainStep>>, _>("then")
            .map_err(translate)?
            .0,
        previous_job_id: row
            .try_get::<Option<Uuid>, _>("previous_job_id")
            .map_err(translate)?
            .map(JobId::from_uuid),
        next_job_id: row
            .try_get::<Option<Uuid>, _>("next_job_id")
            .map_err(translate)?
            .map(JobId::from_uuid),
        trace_parent: row.try_get("trace_parent").map_err(translate)?,
        cancel_requested: row.try_get("cancel_requested").map_err(translate)?,
        worker_id: row.try_get("worker_id").map_err(translate)?,
        lease: Lease(row.try_get("lease").map_err(translate)?),
        run_at: row.try_get("run_at").map_err(translate)?,
        created_at: row.try_get("created_at").map_err(translate)?,
        started_at: row.try_get("started_at").map_err(translate)?,
        heartbeat_at: row.try_get("heartbeat_at").map_err(translate)?,
        finished_at: row.try_get("finished_at").map_err(translate)?,
    })
}

fn jobs_from_rows(rows: &[PgRow]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job_from_row).collect()
}

fn json_value<T: serde::Serialize>(value: &T) -> Json<serde_json::Value> {
    Json(serde_json::to_value(value).expect("job fields serialize to JSON"))
}

/// The statements of a rescue, and the scope to bind after their other parameters.
fn rescue_statements(scope: &RescueScope) -> (&'static str, &'static str, Option<(&str, &str)>) {
    match scope {
        RescueScope::All => (RESCUE_STALE, RESCUE_PENDING, None),
        RescueScope::Resource {
            resource_key,
            job_type,
        } => (
            RESCUE_STALE_SCOPED,
            RESCUE_PENDING_SCOPED,
            Some((resource_key.as_str(), job_type.as_str())),
        ),
    }
}

/// The statuses the one-active index admits, from its predicate as `pg_indexes` deparses it:
/// `(status = ANY (ARRAY['a'::text, 'b'::text]))`.
fn active_index_statuses(predicate: &str) -> Option<Vec<&str>> {
    let list = predicate
        .strip_prefix("(status = ANY (ARRAY[")?
        .strip_suffix("]))")?;
    list.split(", ")
        .map(|item| item.strip_prefix('\'')?.strip_suffix("'::text"))
        .collect()
}

const INSERT: &str = concat!(
    "
WITH inserted AS (
    INSERT INTO folio_jobs
        (id, resource_key, job_type, status, payload, max_attempts, checkpoint, resumed_from,
         \"then\", previous_job_id, trace_parent, run_at, created_at)
    VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $9, $10, $11, $8, $8)
    ON CONFLICT (resource_key, job_type) WHERE status IN ",
    jobs_core::active_statuses_sql!(),
    " DO NOTHING
    RETURNING *
), notified AS (
    SELECT pg_notify('folio_jobs', job_type) FROM inserted
)
SELECT inserted.* FROM inserted LEFT JOIN notified ON true"
);

const SELECT_ACTIVE: &str = concat!(
    "
SELECT * FROM folio_jobs
WHERE resource_key = $1 AND job_type = $2 AND status IN ",
    jobs_core::active_statuses_sql!()
);

/// Each requested type's due jobs come from its own ordered index range (locked with SKIP
/// LOCKED), then the oldest `limit` of them are claimed under new leases. The update finds
/// the locked rows by `ctid`, which cannot move while this statement holds their locks: one
/// primary-key lookup less per job.
const CLAIM: &str = "
WITH picked AS (
    SELECT due.ctid
    FROM unnest($2::text[]) AS wanted(job_type)
    CROSS JOIN LATERAL (
        SELECT ctid, id, run_at FROM folio_jobs
        WHERE status = 'pending' AND job_type = wanted.job_type AND run_at <= $1
        ORDER BY run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS due
    ORDER BY due.run_at, due.id
    LIMIT $3
)
UPDATE folio_jobs AS job
SET status = 'running', attempt = job.attempt + 1, lease = job.lease + 1, worker_id = $4,
    started_at = $1, heartbeat_at = $1
WHERE job.ctid = ANY(ARRAY(SELECT ctid FROM picked))
RETURNING job.*";

const HEARTBEAT: &str = "
UPDATE folio_jobs
SET heartbeat_at = $3, progress = COALESCE($4, progress), checkpoint = COALESCE($5, checkpoint)
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING cancel_requested";

/// Ends many claims in one statement; each row is fenced on its own lease. `id = ANY($2)`
/// lets the planner find the rows by primary key. The status each row must still have comes
/// from the batch (`expected`, always `running`) rather than a literal: a literal
/// `status = 'running'` implies the one-active index's predicate, and on a table without
/// statistics the planner then scans every active job for each batch (3.5x slower at 20,000
/// pending jobs, and worse as the queue grows). `requeue`
/// becomes `cancelled` when a cancel was requested, and `failed` (with the original error)
/// when it would consume the last attempt. SET expressions see the row before the update.
const FINISH: &str = "
UPDATE folio_jobs AS job
SET status = CASE
        WHEN batch.kind <> 'requeue' THEN batch.kind
        WHEN job.cancel_requested THEN 'cancelled'
        WHEN batch.consume AND job.attempt >= job.max_attempts THEN 'failed'
        ELSE 'pending' END,
    attempt = CASE
        WHEN batch.kind = 'requeue' AND NOT batch.consume AND NOT job.cancel_requested
        THEN job.attempt - 1 ELSE job.attempt END,
    error = CASE
        WHEN batch.kind IN ('failed', 'requeue') THEN batch.error
        WHEN batch.kind = 'completed' THEN NULL
        ELSE job.error END,
    run_at = CASE WHEN batch.kind = 'requeue' THEN batch.run_at ELSE job.run_at END,
    finished_at = CASE
        WHEN batch.kind = 'requeue' AND NOT job.cancel_requested
             AND NOT (batch.consume AND job.attempt >= job.max_attempts)
        THEN NULL ELSE $1 END,
    worker_id = CASE
        WHEN batch.kind = 'requeue' AND NOT job.cancel_requested
             AND NOT (batch.consume AND job.attempt >= job.max_attempts)
        THEN NULL ELSE job.worker_id END,
    progress = COALESCE(batch.progress, job.progress),
    checkpoint = COALESCE(batch.checkpoint, job.checkpoint)
FROM UNNEST($2::uuid[], $3::int8[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::bool[],
            $8::jsonb[], $9::jsonb[], $10::text[])
     AS batch(id, lease, kind, error, run_at, consume, progress, checkpoint, expected)
WHERE job.id = ANY($2) AND job.id = batch.id AND job.lease = batch.lease
  AND job.status = batch.expected
RETURNING job.id, job.status";

/// Completes one job of a chain (the `completed` case of [`FINISH`], for one row) and reads
/// what its next job needs. It runs in the transaction that inserts the next job.
const COMPLETE_CHAINED: &str = "
UPDATE folio_jobs
SET status = 'completed', error = NULL, finished_at = $3,
    progress = COALESCE($4, progress), checkpoint = COALESCE($5, checkpoint)
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING resource_key, max_attempts, \"then\", trace_parent";

/// Links a job just completed to the job its chain continues in.
const LINK_NEXT: &str = "UPDATE folio_jobs SET next_job_id = $2 WHERE id = $1";

const REQUEST_CANCEL: &str = concat!(
    "
UPDATE folio_jobs
SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
    finished_at = CASE WHEN status = 'pending' THEN $2 ELSE finished_at END,
    cancel_requested = true
WHERE id = $1 AND status IN ",
    jobs_core::active_statuses_sql!(),
    "
RETURNING *"
);

/// Rescues come in two forms, for every job and for one resource's job of one type: the
/// scoped form names the resource outright, so its plan (made once, generic) looks the
/// resource up in the one-active index instead of filtering every active job.
macro_rules! rescue_stale {
    ($scope:literal) => {
        concat!(
            "
UPDATE folio_jobs
SET status = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempt < max_attempts THEN 'pending'
        ELSE 'failed' END,
    error = CASE
        WHEN cancel_requested THEN error
        WHEN attempt < max_attempts THEN $3
        ELSE $4 END,
    finished_at = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN NULL ELSE $1 END,
    run_at = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN $1 ELSE run_at END,
    worker_id = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN NULL ELSE worker_id END
WHERE status = 'running' AND heartbeat_at < $2",
            $scope,
            "
RETURNING id, status"
        )
    };
}

macro_rules! rescue_pending {
    ($scope:literal) => {
        concat!(
            "
UPDATE folio_jobs
SET status = 'failed', error = $3, finished_at = $1
WHERE status = 'pending' AND run_at < $2",
            $scope,
            "
RETURNING id"
        )
    };
}

const RESCUE_STALE: &str = rescue_stale!("");
const RESCUE_STALE_SCOPED: &str = rescue_stale!(" AND resource_key = $5 AND job_type = $6");
const RESCUE_PENDING: &str = rescue_pending!("");
const RESCUE_PENDING_SCOPED: &str = rescue_pending!(" AND resource_key = $4 AND job_type = $5");

const NOTIFY: &str = "SELECT pg_notify('folio_jobs', 'requeued')";

/// Retention: the oldest `$2` finished jobs that ended before `$1`, from the
/// `folio_jobs_finished` index (a range that ends where the young jobs begin), locked with
/// SKIP LOCKED so a row another transaction holds (a resume's insert checking the job it
/// names) is left for the next round rather than waited for; then deleted by primary key.
/// The foreign keys' `ON DELETE SET NULL` clears the links of the jobs that remain, through
/// the partial index of each link column (`migrations/postgres/0008_retention.sql`).
const DELETE_FINISHED: &str = "
DELETE FROM folio_jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM folio_jobs
    WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED))";

/// The transaction-level advisory lock that lets one retention delete run at a time across
/// every worker. Two at once could deadlock: each locks its own batch, then clearing the
/// links into it waits for a row the other one locked (the first job of a chain in one
/// batch, the second in the other: `next_job_id` names one way, `previous_job_id` the
/// other). A batch holds it for milliseconds, and deletes of one table in parallel would
/// only contend for the same index pages. The key spells `folio_rt`.
const RETENTION_LOCK: i64 = 0x666f_6c69_6f5f_7274;

const REGISTER_WORKER: &str = "
INSERT INTO folio_workers (id, host, job_types, started_at, last_seen)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, job_types = excluded.job_types, started_at = excluded.started_at,
    last_seen = excluded.last_seen";

/// Every book's jobs, newest first, each status read where it costs least (see
/// `migrations/postgres/0006_list_by_status.sql`). `$1` holds the statuses found by a
/// backward scan of the primary key (every status when the query names none, else
/// `completed`), `$2` those read from an index of their own (`pending` and `running` from the
/// one-active index, `failed` and `cancelled` from theirs);
/// [`JobQuery::listing_branches`] splits them. A branch whose statuses are not asked for stops before it reads a row: its parameter test
/// is a one-time filter of the plan. The active branch has no `ORDER BY ... LIMIT` of its
/// own: with one, the planner would rather walk the primary key in order, which reads the
/// whole table when a few old jobs still run; without, it reads the active jobs (at most one
/// per resource and type) from their index and sorts them with the rest.
const LIST: &str = concat!(
    "
SELECT * FROM (
    (SELECT * FROM folio_jobs
     WHERE cardinality($1::text[]) > 0 AND status = ANY($1)
       AND id < $3 AND ($4::text IS NULL OR job_type = $4)
     ORDER BY id DESC
     LIMIT $5)
    UNION ALL
    (SELECT * FROM folio_jobs
     WHERE status IN ",
    jobs_core::active_statuses_sql!(),
    " AND $2::text[] && ARRAY[",
    jobs_core::active_status_names_sql!(),
    "]
       AND status = ANY($2) AND id < $3 AND ($4::text IS NULL OR job_type = $4))
    UNION ALL
    (SELECT * FROM folio_jobs
     WHERE status = 'failed' AND 'failed' = ANY($2)
       AND id < $3 AND ($4::text IS NULL OR job_type = $4)
     ORDER BY id DESC
     LIMIT $5)
    UNION ALL
    (SELECT * FROM folio_jobs
     WHERE status = 'cancelled' AND 'cancelled' = ANY($2)
       AND id < $3 AND ($4::text IS NULL OR job_type = $4)
     ORDER BY id DESC
     LIMIT $5)
) AS jobs
ORDER BY id DESC
LIMIT $5"
);

/// A resource's jobs, newest first: its active ones (at most one per type) through the
/// one-active index, its newest ended ones through the ended-jobs index. `$3` holds the
/// statuses asked for (every status when the query names none), `$4` the keyset bound.
const LIST_RESOURCE: &str = concat!(
    "
SELECT * FROM (
    (SELECT * FROM folio_jobs
     WHERE resource_key = $1 AND ($2::text IS NULL OR job_type = $2)
       AND status IN ",
    jobs_core::active_statuses_sql!(),
    " AND status = ANY($3) AND id < $4)
    UNION ALL
    (SELECT * FROM folio_jobs
     WHERE resource_key = $1 AND ($2::text IS NULL OR job_type = $2)
       AND status IN ('completed', 'failed', 'cancelled') AND status = ANY($3) AND id < $4
     ORDER BY id DESC
     LIMIT $5)
) AS jobs
ORDER BY id DESC
LIMIT $5"
);

/// The keyset bound of a listing: below `before`, or below every id.
fn list_before(before: Option<JobId>) -> Uuid {
    before.map_or(Uuid::max(), |id| *id.as_uuid())
}

/// The `FINISH` statement (`sql`, so tests can `EXPLAIN` it) bound to one batch.
fn finish_statement<'q>(
    sql: impl sqlx::SqlSafeStr,
    now: DateTime<Utc>,
    batch: &[Finish],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut ids = Vec::with_capacity(batch.len());
    let mut leases = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut errors = Vec::with_capacity(batch.len());
    let mut run_ats = Vec::with_capacity(batch.len());
    let mut consumes = Vec::with_capacity(batch.len());
    let mut progresses = Vec::with_capacity(batch.len());
    let mut checkpoints = Vec::with_capacity(batch.len());
    for finish in batch {
        let (kind, error, run_at, consume) = match &finish.outcome {
            FinishOutcome::Completed => ("completed", None, now, true),
            FinishOutcome::Failed(error) => ("failed", Some(json_value(error)), now, true),
            FinishOutcome::Cancelled => ("cancelled", None, now, true),
            FinishOutcome::Requeue {
                error,
                run_at,
                consume_attempt,
            } => (
                "requeue",
                Some(json_value(error)),
                *run_at,
                *consume_attempt,
            ),
        };
        ids.push(*finish.id.as_uuid());
        leases.push(finish.lease.0);
        kinds.push(kind);
        errors.push(error);
        run_ats.push(run_at);
        consumes.push(consume);
        progresses.push(finish.progress.as_ref().map(json_value));
        checkpoints.push(finish.checkpoint.clone().map(Json));
    }
    sqlx::query(sql)
        .bind(now)
        .bind(ids)
        .bind(leases)
        .bind(kinds)
        .bind(errors)
        .bind(run_ats)
        .bind(consumes)
        .bind(progresses)
        .bind(checkpoints)
        .bind(vec![JobStatus::Running.as_str(); batch.len()])
}

/// Inserts `job` (inserted by the completion of `previous` when it continues a chain), or
/// reads the active job of its (resource, type): `Ok(Ok(inserted))` or `Ok(Err(active))`.
/// The insert loses to an active job; that job may end before it is read, so it retries.
async fn insert_job(
    connection: &mut PgConnection,
    job: &NewJob,
    previous: Option<JobId>,
) -> Result<Result<PgRow, PgRow>, sqlx::Error> {
    for _ in 0..16 {
        let inserted = sqlx::query(INSERT)
            .bind(job.id.as_uuid())
            .bind(&job.resource_key)
            .bind(&job.job_type)
            .bind(Json(&job.payload))
            .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
            .bind(job.checkpoint.as_ref().map(Json))
            .bind(job.resumed_from.map(|id| *id.as_uuid()))
            .bind(job.now)
            .bind(Json(&job.then))
            .bind(previous.map(|id| *id.as_uuid()))
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

/// Completes one job of a chain in the caller's transaction: the fenced completion, the
/// insert of the next job (or the read of the active one of that type), the link. `None`
/// when the fence refused the completion (nothing written).
async fn complete_chained(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
    finish: &Finish,
) -> Result<Option<JobStatus>, sqlx::Error> {
    let Some(row) = sqlx::query(COMPLETE_CHAINED)
        .bind(finish.id.as_uuid())
        .bind(finish.lease.0)
        .bind(now)
        .bind(finish.progress.as_ref().map(json_value))
        .bind(finish.checkpoint.clone().map(Json))
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let then: Vec<ChainStep> = row.try_get::<Json<Vec<ChainStep>>, _>("then")?.0;
    let Some((step, rest)) = then.split_first() else {
        return Ok(Some(JobStatus::Completed));
    };
    let next = NewJob {
        id: JobId::new(),
        resource_key: row.try_get("resource_key")?,
        job_type: step.job_type.clone(),
        payload: step.payload.clone(),
        max_attempts: u32::try_from(row.try_get::<i32, _>("max_attempts")?).unwrap_or(1),
        checkpoint: None,
        resumed_from: None,
        then: rest.to_vec(),
        // The next job continues the trace of the one it follows.
        trace_parent: row.try_get("trace_parent")?,
        now,
    };
    let next_id: Uuid = match insert_job(connection, &next, Some(finish.id)).await? {
        Ok(inserted) | Err(inserted) => inserted.try_get("id")?,
    };
    sqlx::query(LINK_NEXT)
        .bind(finish.id.as_uuid())
        .bind(next_id)
        .execute(&mut *connection)
        .await?;
    Ok(Some(JobStatus::Completed))
}

impl PgJobStore {
    /// Ends a batch that completes jobs with chains, in one transaction: each chained
    /// completion in a savepoint of its own (a refused insert rolls back that completion
    /// only, and is that job's error), then the rest of the batch in one [`FINISH`]. Returns
    /// the status each written job ended in, and the refusals.
    async fn finish_with_chains(
        &self,
        now: DateTime<Utc>,
        batch: &[Finish],
    ) -> Result<(HashMap<JobId, JobStatus>, HashMap<JobId, StoreError>), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(translate)?;
        let mut finished = HashMap::with_capacity(batch.len());
        let mut refused = HashMap::new();
        let (chained, plain): (Vec<&Finish>, Vec<&Finish>) =
            batch.iter().partition(|finish| finish.continues_chain());
        for finish in chained {
            let mut savepoint = transaction.begin().await.map_err(translate)?;
            match complete_chained(&mut savepoint, now, finish).await {
                Ok(status) => {
                    savepoint.commit().await.map_err(translate)?;
                    if let Some(status) = status {
                        finished.insert(finish.id, status);
                    }
                }
                Err(error) if is_refusal(&error) => {
                    savepoint.rollback().await.map_err(translate)?;
                    refused.insert(finish.id, translate(error));
                }
                Err(error) => return Err(translate(error)),
            }
        }
        if !plain.is_empty() {
            let plain: Vec<Finish> = plain.into_iter().cloned().collect();
            let rows = finish_statement(FINISH, now, &plain)
                .fetch_all(&mut *transaction)
                .await
                .map_err(translate)?;
            finished_statuses(&rows, &mut finished)?;
        }
        transaction.commit().await.map_err(translate)?;
        Ok((finished, refused))
    }
}

/// Adds the `(id, status)` of each row that [`FINISH`] returned to `finished`.
fn finished_statuses(
    rows: &[PgRow],
    finished: &mut HashMap<JobId, JobStatus>,
) -> Result<(), StoreError> {
    for row in rows {
        let id = JobId::from_uuid(row.try_get("id").map_err(translate)?);
        finished.insert(id, parse_status(row.try_get("status").map_err(translate)?)?);
    }
    Ok(())
}

#[async_trait]
impl JobStore for PgJobStore {
    async fn insert(&self, job: NewJob) -> Result<Insert, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(translate)?;
        match insert_job(&mut connection, &job, None).await {
            Ok(Ok(inserted)) => Ok(Insert::Inserted(job_from_row(&inserted)?)),
            Ok(Err(active)) => Ok(Insert::Busy(job_from_row(&active)?)),
            Err(error) => Err(translate(error)),
        }
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Insert>, StoreError> {
        bulk::insert_many(&self.pool, jobs).await
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        let row = sqlx::query("SELECT * FROM folio_jobs WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate)?
            .ok_or(StoreError::NotFound(id))?;
        job_from_row(&row)
    }

    async fn list(&self, query: &JobQuery) -> Result<Vec<Job>, StoreError> {
        let limit = i64::from(query.limit);
        let job_type = query.job_type.as_deref();
        let before = list_before(query.before);
        let statement = match query.resource_key.as_deref() {
            Some(resource_key) => sqlx::query(LIST_RESOURCE)
                .bind(resource_key)
                .bind(job_type)
                .bind(JobQuery::wanted_statuses(&query.statuses))
                .bind(before)
                .bind(limit),
            None => {
                let (scanned, indexed) = JobQuery::listing_branches(&query.statuses);
                sqlx::query(LIST)
                    .bind(scanned)
                    .bind(indexed)
                    .bind(before)
                    .bind(job_type)
                    .bind(limit)
            }
        };
        let rows = statement.fetch_all(&self.pool).await.map_err(translate)?;
        jobs_from_rows(&rows)
    }

    async fn claim(&self, params: &ClaimParams) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(CLAIM)
            .bind(params.now)
            .bind(&params.job_types)
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
        let row = sqlx::query(HEARTBEAT)
            .bind(params.id.as_uuid())
            .bind(params.lease.0)
            .bind(params.now)
            .bind(params.progress.as_ref().map(json_value))
            .bind(params.checkpoint.as_ref().map(Json))
            .fetch_optional(&self.pool)
            .await
            .map_err(translate)?;
        match row {
            Some(row) => Ok(HeartbeatAck {
                cancel_requested: row.try_get("cancel_requested").map_err(translate)?,
            }),
            None => Err(self
                .fencing_errors(&[params.id])
                .await?
                .remove(&params.id)
                .expect("one id")),
        }
    }

    async fn finish(
        &self,
        now: DateTime<Utc>,
        batch: &[Finish],
    ) -> Result<Vec<Result<JobStatus, StoreError>>, StoreError> {
        // Jobs without a chain (the common case) end in one statement, outside a transaction.
        let (finished, mut refused) = if batch.iter().any(Finish::continues_chain) {
            self.finish_with_chains(now, batch).await?
        } else {
            let rows = finish_statement(FINISH, now, batch)
                .fetch_all(&self.pool)
                .await
                .map_err(translate)?;
            let mut finished = HashMap::with_capacity(rows.len());
            finished_statuses(&rows, &mut finished)?;
            (finished, HashMap::new())
        };
        if finished
            .values()
            .any(|status| *status == JobStatus::Pending)
        {
            sqlx::query(NOTIFY)
                .execute(&self.pool)
                .await
                .map_err(translate)?;
        }
        let missing: Vec<JobId> = batch
            .iter()
            .map(|finish| finish.id)
            .filter(|id| !finished.contains_key(id) && !refused.contains_key(id))
            .collect();
        if !missing.is_empty() {
            refused.extend(self.fencing_errors(&missing).await?);
        }
        Ok(batch
            .iter()
            .map(|finish| match finished.get(&finish.id) {
                Some(status) => Ok(*status),
                None => Err(refused.remove(&finish.id).unwrap_or(StoreError::LeaseLost {
                    id: finish.id,
                    status: JobStatus::Running,
                })),
            })
            .collect())
    }

    async fn request_cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Job, StoreError> {
        let row = sqlx::query(REQUEST_CANCEL)
            .bind(id.as_uuid())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate)?;
        match row {
            Some(row) => job_from_row(&row),
            None => {
                let job = self.get(id).await?;
                match Transition::Cancel.apply(job.status) {
                    Err(source) => Err(StoreError::IllegalTransition { id, source }),
                    Ok(_) => Err(StoreError::Corrupt(format!(
                        "cancel of {id} matched no row"
                    ))),
                }
            }
        }
    }

    async fn rescue(&self, params: &RescueParams) -> Result<RescueReport, StoreError> {
        let (stale_sql, pending_sql, scope) = rescue_statements(&params.scope);
        let mut stale = sqlx::query(stale_sql)
            .bind(params.now)
            .bind(params.stale_before)
            .bind(json_value(&params.requeue_error))
            .bind(json_value(&params.expired_error));
        if let Some((resource_key, job_type)) = scope {
            stale = stale.bind(resource_key).bind(job_type);
        }
        let stale = stale.fetch_all(&self.pool).await.map_err(translate)?;
        let stale = stale
            .iter()
            .map(|row| {
                let id = JobId::from_uuid(row.try_get("id").map_err(translate)?);
                Ok((id, parse_status(row.try_get("status").map_err(translate)?)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut expired = sqlx::query_scalar::<_, Uuid>(pending_sql)
            .bind(params.now)
            .bind(params.pending_before)
            .bind(json_value(&params.pending_timeout_error));
        if let Some((resource_key, job_type)) = scope {
            expired = expired.bind(resource_key).bind(job_type);
        }
        let expired = expired.fetch_all(&self.pool).await.map_err(translate)?;
        let report = RescueReport::from_changes(stale, expired.into_iter().map(JobId::from_uuid));
        if !report.requeued.is_empty() {
            sqlx::query(NOTIFY)
                .execute(&self.pool)
                .await
                .map_err(translate)?;
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
        let mut transaction = self.pool.begin().await.map_err(translate)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(RETENTION_LOCK)
            .execute(&mut *transaction)
            .await
            .map_err(translate)?;
        let deleted = sqlx::query(DELETE_FINISHED)
            .bind(finished_before)
            .bind(i64::from(limit))
            .execute(&mut *transaction)
            .await
            .map_err(translate)?
            .rows_affected();
        transaction.commit().await.map_err(translate)?;
        Ok(deleted)
    }

    async fn active_index(&self) -> Result<ActiveIndex, StoreError> {
        let definition: String = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes
             WHERE indexname = 'folio_jobs_one_active' AND schemaname = current_schema()",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(translate)?
        .ok_or_else(|| StoreError::Corrupt("index folio_jobs_one_active is missing".into()))?;
        parse_active_index(&definition, active_index_statuses)
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        sqlx::query(REGISTER_WORKER)
            .bind(&worker.id)
            .bind(&worker.host)
            .bind(Json(&worker.job_types))
            .bind(worker.started_at)
            .bind(worker.last_seen)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn touch_worker(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE folio_workers SET last_seen = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(result.rows_affected() > 0)
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM folio_workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn list_workers(&self, seen_since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM folio_workers WHERE last_seen >= $1 ORDER BY last_seen DESC, id",
        )
        .bind(seen_since)
        .fetch_all(&self.pool)
        .await
        .map_err(translate)?;
        rows.iter()
            .map(|row| {
                Ok(WorkerInfo {
                    id: row.try_get("id").map_err(translate)?,
                    host: row.try_get("host").map_err(translate)?,
                    job_types: row
                        .try_get::<Json<Vec<String>>, _>("job_types")
                        .map_err(translate)?
                        .0,
                    started_at: row.try_get("started_at").map_err(translate)?,
                    last_seen: row.try_get("last_seen").map_err(translate)?,
                })
            })
            .collect()
    }

    fn parallel_claims(&self) -> usize {
        2
    }

    fn job_signal(&self) -> Option<Arc<Notify>> {
        let signal = self.signal.get_or_init(|| {
            let signal = Arc::new(Notify::new());
            tokio::spawn(listen(self.pool.clone(), Arc::downgrade(&signal)));
            signal
        });
        Some(signal.clone())
    }
}

#[cfg(all(test, feature = "testing"))]
mod plans {
    //! The plans of the hot statements on a table without statistics (autovacuum may never
    //! have run on it): each must reach its rows through the index it was written for.

    use sqlx::AssertSqlSafe;

    use super::*;

    /// Whether some node of `plan` finds rows by an index condition on `column`.
    fn looks_up(plan: &serde_json::Value, column: &str) -> bool {
        match plan {
            serde_json::Value::Object(node) => {
                node.get("Index Cond")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|condition| condition.contains(column))
                    || node.values().any(|value| looks_up(value, column))
            }
            serde_json::Value::Array(nodes) => nodes.iter().any(|node| looks_up(node, column)),
            _ => false,
        }
    }

    async fn explain<'q>(
        store: &PgJobStore,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> String {
        let row = query.fetch_one(store.pool()).await.expect("explain");
        let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
        plan.0.to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_finishes_and_scoped_rescues_reach_their_rows_without_scanning_the_queue() {
        let database = crate::testing::TestDatabase::create().await;
        let store = database.store().await;
        sqlx::query(
            "INSERT INTO folio_jobs (id, resource_key, job_type, status, payload, max_attempts,
                                     run_at, created_at)
             SELECT gen_random_uuid(), 'book-' || i, 'ocr', 'pending', '{}', 3, now(), now()
             FROM generate_series(1, 20000) AS i",
        )
        .execute(store.pool())
        .await
        .expect("enqueue");
        let now = Utc::now();
        let params = ClaimParams {
            worker_id: "w".into(),
            job_types: vec!["ocr".into()],
            limit: 200,
            now,
        };
        let claim = explain(
            &store,
            sqlx::query(AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {CLAIM}")))
                .bind(params.now)
                .bind(params.job_types.clone())
                .bind(i64::from(params.limit))
                .bind(params.worker_id.clone()),
        )
        .await;
        assert!(claim.contains("folio_jobs_claim"), "{claim}");
        assert!(claim.contains("Tid Scan"), "{claim}");

        let claimed = store.claim(&params).await.expect("claim");
        assert_eq!(claimed.len(), 200);
        let batch: Vec<Finish> = claimed
            .iter()
            .map(|job| Finish::new(job.id, job.lease, FinishOutcome::Completed))
            .collect();
        let finish = explain(
            &store,
            finish_statement(
                AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {FINISH}")),
                now,
                &batch,
            ),
        )
        .await;
        // By key, or on a table this small a scan of it; never every active job through the
        // one-active index, which the planner thinks holds a handful of running jobs.
        assert!(!finish.contains("folio_jobs_one_active"), "{finish}");

        // A rescue scoped to one resource looks its jobs up by key, not by scanning the
        // queue, in the generic plan these connections use.
        let mut connection = store.pool().acquire().await.expect("a connection");
        for (name, sql, types, arguments) in [
            (
                "stale",
                RESCUE_STALE_SCOPED,
                "timestamptz, timestamptz, jsonb, jsonb, text, text",
                "now(), now(), '{}', '{}', 'book-1', 'ocr'",
            ),
            (
                "pending",
                RESCUE_PENDING_SCOPED,
                "timestamptz, timestamptz, jsonb, text, text",
                "now(), now(), '{}', 'book-1', 'ocr'",
            ),
        ] {
            sqlx::raw_sql(AssertSqlSafe(format!("PREPARE {name} ({types}) AS {sql}")))
                .execute(&mut *connection)
                .await
                .expect("prepare");
            let row = sqlx::query(AssertSqlSafe(format!(
                "EXPLAIN (FORMAT JSON) EXECUTE {name} ({arguments})"
            )))
            .fetch_one(&mut *connection)
            .await
            .expect("explain");
            let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
            assert!(looks_up(&plan.0, "job_type ="), "{name}: {}", plan.0);
        }
        drop(connection);
        database.drop().await;
    }

    /// The most rows one node of an `EXPLAIN ANALYZE` plan handled: those it returned and
    /// those it read and threw away.
    fn most_rows_in_one_node(plan: &serde_json::Value) -> u64 {
        match plan {
            serde_json::Value::Object(node) => {
                let count = |key: &str| node.get(key).and_then(serde_json::Value::as_u64);
                let here = count("Actual Rows").unwrap_or(0) * count("Actual Loops").unwrap_or(1)
                    + count("Rows Removed by Filter").unwrap_or(0)
                    + count("Rows Removed by Index Recheck").unwrap_or(0);
                node.values()
                    .map(most_rows_in_one_node)
                    .fold(here, u64::max)
            }
            serde_json::Value::Array(nodes) => {
                nodes.iter().map(most_rows_in_one_node).max().unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// A Postgres array literal of `items`, for an `EXECUTE` argument.
    fn array(items: &[&str]) -> String {
        format!("'{{{}}}'", items.join(","))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_read_each_status_from_its_index_and_never_scan_the_table() {
        let database = crate::testing::TestDatabase::create().await;
        let store = database.store().await;
        // 20,000 jobs in id order over 2,000 books: the newest 100 active, one in 200 failed,
        // one in 200 cancelled, the rest completed.
        sqlx::query(concat!(
            "INSERT INTO folio_jobs (id, resource_key, job_type, status, payload, max_attempts,
                                     attempt, error, worker_id, started_at, heartbeat_at,
                                     run_at, created_at, finished_at)
             SELECT (lpad(to_hex(i), 12, '0') || '70008000' || lpad(to_hex(i), 12, '0'))::uuid,
                    'book-' || (i % 2000), (ARRAY['ocr', 'guidelines', 'finalize'])[1 + i % 3],
                    status, '{}', 3, CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
                    CASE WHEN status = 'failed' THEN '{}'::jsonb END,
                    CASE WHEN status <> 'pending' THEN 'w' END,
                    CASE WHEN status <> 'pending' THEN now() END,
                    CASE WHEN status <> 'pending' THEN now() END,
                    now(), now(),
                    CASE WHEN status NOT IN ",
            jobs_core::active_statuses_sql!(),
            " THEN now() END
             FROM (SELECT i, CASE WHEN i > 19900 THEN (ARRAY[",
            jobs_core::active_status_names_sql!(),
            "])[1 + i % 2]
                                  WHEN i % 200 = 0 THEN 'failed'
                                  WHEN i % 200 = 1 THEN 'cancelled'
                                  ELSE 'completed' END AS status
                   FROM generate_series(1, 20000) AS i) AS jobs"
        ))
        .execute(store.pool())
        .await
        .expect("20,000 jobs");
        let mut connection = store.pool().acquire().await.expect("a connection");
        sqlx::raw_sql(AssertSqlSafe(format!(
            "PREPARE list (text[], text[], uuid, text, int8) AS {LIST};
             PREPARE list_resource (text, text, text[], uuid, int8) AS {LIST_RESOURCE};"
        )))
        .execute(&mut *connection)
        .await
        .expect("prepare");
        let top = format!("'{}'", list_before(None));
        let middle = "'00000000-3a98-7000-8000-000000003a98'"; // the 15,000th job
        let cases: [(&[JobStatus], Option<&str>, &str, &str); 8] = [
            (&[], None, &top, "folio_jobs_pkey"),
            (&[], Some("'finalize'"), middle, "folio_jobs_pkey"),
            (&[JobStatus::Completed], None, middle, "folio_jobs_pkey"),
            (&[JobStatus::Failed], None, &top, "folio_jobs_failed"),
            (
                &[JobStatus::Cancelled],
                Some("'ocr'"),
                middle,
                "folio_jobs_cancelled",
            ),
            (&[JobStatus::Running], None, &top, "folio_jobs_one_active"),
            (&JobStatus::ACTIVE, None, &top, "folio_jobs_one_active"),
            (
                &[JobStatus::Failed, JobStatus::Completed],
                None,
                middle,
                "folio_jobs_failed",
            ),
        ];
        for (statuses, job_type, before, index) in cases {
            let (scanned, indexed) = JobQuery::listing_branches(statuses);
            let arguments = format!(
                "{}, {}, {before}, {}, 50",
                array(&scanned),
                array(&indexed),
                job_type.unwrap_or("NULL")
            );
            let row = sqlx::query(AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE list ({arguments})"
            )))
            .fetch_one(&mut *connection)
            .await
            .expect("explain");
            let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
            let text = plan.0.to_string();
            assert!(text.contains(index), "{statuses:?}: {text}");
            assert!(
                !text.contains("Seq Scan") && !text.contains("folio_jobs_ended_by_resource"),
                "{statuses:?}: {text}"
            );
            let most = most_rows_in_one_node(&plan.0);
            assert!(
                most <= 500,
                "{statuses:?} read {most} rows in one node: {text}"
            );
        }

        // A resource's jobs come from its own entries in the one-active and ended indexes.
        let every_status = array(&JobStatus::ALL.map(JobStatus::as_str));
        let row = sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE list_resource \
             ('book-1', NULL, {every_status}, {top}, 50)"
        )))
        .fetch_one(&mut *connection)
        .await
        .expect("explain");
        let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
        assert!(looks_up(&plan.0, "resource_key ="), "{}", plan.0);
        assert!(most_rows_in_one_node(&plan.0) <= 50, "{}", plan.0);
        drop(connection);
        database.drop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_deletes_read_a_batch_and_the_links_into_it_from_indexes() {
        let database = crate::testing::TestDatabase::create().await;
        let store = database.store().await;
        // 20,000 jobs in id order, job i ending i minutes after a start 60 days ago: the
        // newest 100 active, the rest finished. Jobs link to the one before them as chains do
        // (two of three `previous_job_id`, the finished one before it `next_job_id`), and one
        // in 50 was resumed from the job seven before it.
        let mut connection = store.pool().acquire().await.expect("a connection");
        sqlx::raw_sql(
            concat!("CREATE FUNCTION pg_temp.job(i int) RETURNS uuid LANGUAGE sql IMMUTABLE
             AS $$ SELECT (lpad(to_hex(i), 12, '0') || '70008000' || lpad(to_hex(i), 12, '0'))::uuid $$;
             INSERT INTO folio_jobs (id, resource_key, job_type, status, payload, max_attempts,
                                     attempt, error, worker_id, started_at, heartbeat_at,
                                     run_at, created_at, finished_at,
                                     previous_job_id, next_job_id, resumed_from)
             SELECT pg_temp.job(i), 'book-' || i, 'ocr', status, '{}', 3,
                    CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
                    CASE WHEN status = 'failed' THEN '{}'::jsonb END,
                    CASE WHEN status <> 'pending' THEN 'w' END,
                    CASE WHEN status <> 'pending' THEN now() END,
                    CASE WHEN status <> 'pending' THEN now() END,
                    now(), now(),
                    CASE WHEN status NOT IN ", jobs_core::active_statuses_sql!(), "
                         THEN now() - interval '60 days' + i * interval '1 minute' END,
                    CASE WHEN i % 3 <> 1 THEN pg_temp.job(i - 1) END,
                    CASE WHEN i % 3 <> 0 AND status NOT IN ", jobs_core::active_statuses_sql!(), "
                         THEN pg_temp.job(i + 1) END,
                    CASE WHEN i % 50 = 0 THEN pg_temp.job(i - 7) END
             FROM (SELECT i, CASE WHEN i > 19900 THEN (ARRAY[", jobs_core::active_status_names_sql!(), "])[1 + i % 2]
                                  WHEN i % 200 = 0 THEN 'failed'
                                  WHEN i % 200 = 1 THEN 'cancelled'
                                  ELSE 'completed' END AS status
                   FROM generate_series(1, 20000) AS i) AS jobs"),
        )
        .execute(&mut *connection)
        .await
        .expect("20,000 linked jobs");
        sqlx::raw_sql(AssertSqlSafe(format!(
            "PREPARE retention (timestamptz, int8) AS {DELETE_FINISHED}"
        )))
        .execute(&mut *connection)
        .await
        .expect("prepare");
        // A batch reads its rows from the finished-jobs index and deletes them by key; a
        // round with nothing old enough reads no row.
        for (before, deleted) in [("now() - interval '90 days'", 0), ("now()", 500)] {
            let row = sqlx::query(AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE retention ({before}, 500)"
            )))
            .fetch_one(&mut *connection)
            .await
            .expect("explain");
            let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
            let text = plan.0.to_string();
            assert!(looks_up(&plan.0, "finished_at <"), "{text}");
            assert!(text.contains("folio_jobs_finished"), "{text}");
            assert!(!text.contains("Seq Scan"), "{text}");
            assert!(most_rows_in_one_node(&plan.0) <= deleted, "{text}");
        }
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM folio_jobs")
            .fetch_one(&mut *connection)
            .await
            .expect("count");
        assert_eq!(left, 19_500);
        let dangling: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM folio_jobs j
             WHERE EXISTS (SELECT 1 FROM unnest(ARRAY[j.previous_job_id, j.next_job_id,
                                                      j.resumed_from]) AS link (id)
                           WHERE link.id IS NOT NULL
                             AND NOT EXISTS (SELECT 1 FROM folio_jobs k WHERE k.id = link.id))",
        )
        .fetch_one(&mut *connection)
        .await
        .expect("links");
        assert_eq!(dangling, 0);
        let cleared: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM folio_jobs WHERE id = pg_temp.job(501) AND previous_job_id IS NULL",
        )
        .fetch_one(&mut *connection)
        .await
        .expect("the job after the batch");
        assert_eq!(
            cleared, 1,
            "the first job left no longer names the last one deleted"
        );

        // Each delete makes the foreign keys clear the links into the deleted row with this
        // statement (as Postgres writes it): each must find them through its column's
        // partial index, not a scan of the table per deleted job.
        for column in ["resumed_from", "previous_job_id", "next_job_id"] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "PREPARE unlink_{column} (uuid) AS UPDATE ONLY folio_jobs SET {column} = NULL \
                 WHERE $1 OPERATOR(pg_catalog.=) {column}"
            )))
            .execute(&mut *connection)
            .await
            .expect("prepare");
            let row = sqlx::query(AssertSqlSafe(format!(
                "EXPLAIN (FORMAT JSON) EXECUTE unlink_{column} (pg_temp.job(9000))"
            )))
            .fetch_one(&mut *connection)
            .await
            .expect("explain");
            let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
            let text = plan.0.to_string();
            assert!(text.contains(&format!("folio_jobs_{column}")), "{text}");
            assert!(!text.contains("Seq Scan"), "{column}: {text}");
        }
        drop(connection);
        database.drop().await;
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
    fn parses_the_index_definition_postgres_deparses() {
        // How `pg_indexes` shows the migration's `WHERE status IN ('pending', ...)`.
        let statuses = JobStatus::ACTIVE.map(|status| format!("'{status}'::text"));
        let definition = format!(
            "CREATE UNIQUE INDEX folio_jobs_one_active ON public.folio_jobs USING btree \
             (resource_key, job_type) WHERE (status = ANY (ARRAY[{}]))",
            statuses.join(", ")
        );
        let index = parse_active_index(&definition, active_index_statuses).unwrap();
        assert!(index.unique);
        assert_eq!(index.columns, ["resource_key", "job_type"]);
        assert_eq!(index.statuses, JobStatus::ACTIVE);
        let other = "CREATE UNIQUE INDEX x ON folio_jobs (a) WHERE (status = 'pending'::text)";
        assert!(parse_active_index(other, active_index_statuses).is_err());
    }
}
