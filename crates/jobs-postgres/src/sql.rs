//! Every statement of the store, with the helpers that pick and bind them. The active
//! statuses come from [`jobs_core::active_statuses_sql!`], never written by hand (a test
//! reads this crate's sources).

use chrono::{DateTime, Utc};
use jobs_core::{Finish, FinishOutcome, JobId, JobStatus, RescueScope};
use sqlx::types::Json;
use uuid::Uuid;

use crate::NOTIFY_CHANNEL;
use crate::rows::json_value;
use crate::schema::qualify;

/// Declares [`Statements`]: one field per statement, its template written against the
/// unqualified tables.
macro_rules! statements {
    ($($field:ident: $template:expr,)*) => {
        /// Every statement of a store, for the schema its tables are in
        /// ([`crate::Schema::statements`]), and the schema's notification channel.
        pub(crate) struct Statements {
            $(pub(crate) $field: &'static str,)*
            pub(crate) channel: &'static str,
        }

        impl Statements {
            /// The templates themselves: tables found through the search path.
            pub(crate) const UNQUALIFIED: Statements = Statements {
                $($field: $template,)*
                channel: NOTIFY_CHANNEL,
            };

            /// Every template qualified by `schema` (rendered once per schema and kept for
            /// the process's life, see `Schema::statements`).
            pub(crate) fn in_schema(schema: &str) -> Statements {
                let leak = |sql: String| -> &'static str { Box::leak(sql.into_boxed_str()) };
                Statements {
                    $($field: leak(qualify($template, schema)),)*
                    channel: leak(format!("{schema}.{NOTIFY_CHANNEL}")),
                }
            }

            #[cfg(test)]
            pub(crate) fn all(&self) -> Vec<&'static str> {
                vec![$(self.$field,)*]
            }
        }
    };
}

statements! {
    insert: INSERT,
    insert_many: crate::bulk::INSERT_MANY,
    select_active: SELECT_ACTIVE,
    get: GET,
    statuses: STATUSES,
    claim: CLAIM,
    heartbeat: HEARTBEAT,
    finish: FINISH,
    complete_chained: COMPLETE_CHAINED,
    link_next: LINK_NEXT,
    request_cancel: REQUEST_CANCEL,
    rescue_stale: RESCUE_STALE,
    rescue_stale_scoped: RESCUE_STALE_SCOPED,
    rescue_pending: RESCUE_PENDING,
    rescue_pending_scoped: RESCUE_PENDING_SCOPED,
    notify: NOTIFY,
    delete_finished: DELETE_FINISHED,
    compact: COMPACT,
    register_worker: REGISTER_WORKER,
    touch_worker: TOUCH_WORKER,
    remove_worker: REMOVE_WORKER,
    list_workers: LIST_WORKERS,
    claim_key: CLAIM_KEY,
    get_key: GET_KEY,
    answer_key: ANSWER_KEY,
    release_key: RELEASE_KEY,
    delete_keys: DELETE_KEYS,
    list: LIST,
    list_resource: LIST_RESOURCE,
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The statements are long and the same for every store of a schema.
        f.debug_struct("Statements")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Statements {
    /// The statements of a rescue, and the scope to bind after their other parameters.
    pub(crate) fn rescue<'s>(
        &self,
        scope: &'s RescueScope,
    ) -> (&'static str, &'static str, Option<(&'s str, &'s str)>) {
        match scope {
            RescueScope::All => (self.rescue_stale, self.rescue_pending, None),
            RescueScope::Resource {
                resource_key,
                job_type,
            } => (
                self.rescue_stale_scoped,
                self.rescue_pending_scoped,
                Some((resource_key.as_str(), job_type.as_str())),
            ),
        }
    }
}

/// Claims a request key: inserts it, or takes over a stale claim of the same request
/// without an answer (`$6`: claims before it are stale); the claim when it is this one's.
pub(crate) const CLAIM_KEY: &str = "
INSERT INTO folio_request_keys AS held (key, request, fingerprint, claim, claimed_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key) DO UPDATE SET claim = EXCLUDED.claim, claimed_at = EXCLUDED.claimed_at
WHERE held.status IS NULL AND held.claimed_at < $6
  AND held.request = EXCLUDED.request AND held.fingerprint = EXCLUDED.fingerprint
RETURNING held.claim";

/// A request key's request, fingerprint and answer.
pub(crate) const GET_KEY: &str = "
SELECT request, fingerprint, status, content_type, body FROM folio_request_keys WHERE key = $1";

/// Keeps the answer of a request key its claim still holds.
pub(crate) const ANSWER_KEY: &str = "
UPDATE folio_request_keys SET status = $3, content_type = $4, body = $5
WHERE key = $1 AND claim = $2 AND status IS NULL";

/// Lets go of a request key its claim still holds, without an answer.
pub(crate) const RELEASE_KEY: &str =
    "DELETE FROM folio_request_keys WHERE key = $1 AND claim = $2 AND status IS NULL";

/// Deletes the request keys claimed before `$1`.
pub(crate) const DELETE_KEYS: &str = "DELETE FROM folio_request_keys WHERE claimed_at < $1";

/// A job by id.
pub(crate) const GET: &str = "SELECT * FROM folio_jobs WHERE id = $1";

/// The status of each job of `$1` that exists (why a fenced write changed nothing).
pub(crate) const STATUSES: &str = "SELECT id, status FROM folio_jobs WHERE id = ANY($1)";

/// The statuses the one-active index admits, from its predicate as `pg_indexes` deparses it:
/// `(status = ANY (ARRAY['a'::text, 'b'::text]))`.
pub(crate) fn active_index_statuses(predicate: &str) -> Option<Vec<&str>> {
    let list = predicate
        .strip_prefix("(status = ANY (ARRAY[")?
        .strip_suffix("]))")?;
    list.split(", ")
        .map(|item| item.strip_prefix('\'')?.strip_suffix("'::text"))
        .collect()
}

pub(crate) const INSERT: &str = concat!(
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

pub(crate) const SELECT_ACTIVE: &str = concat!(
    "
SELECT * FROM folio_jobs
WHERE resource_key = $1 AND job_type = $2 AND status IN ",
    jobs_core::active_statuses_sql!()
);

/// Each requested type's due jobs come from its own ordered index range (locked with SKIP
/// LOCKED), then the oldest `limit` of them are claimed under new leases. The update finds
/// the locked rows by `ctid`, which cannot move while this statement holds their locks: one
/// primary-key lookup less per job.
pub(crate) const CLAIM: &str = "
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

pub(crate) const HEARTBEAT: &str = "
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
pub(crate) const FINISH: &str = "
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
pub(crate) const COMPLETE_CHAINED: &str = "
UPDATE folio_jobs
SET status = 'completed', error = NULL, finished_at = $3,
    progress = COALESCE($4, progress), checkpoint = COALESCE($5, checkpoint)
WHERE id = $1 AND lease = $2 AND status = 'running'
RETURNING resource_key, max_attempts, \"then\", trace_parent";

/// Links a job just completed to the job its chain continues in.
pub(crate) const LINK_NEXT: &str = "UPDATE folio_jobs SET next_job_id = $2 WHERE id = $1";

pub(crate) const REQUEST_CANCEL: &str = concat!(
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

pub(crate) const RESCUE_STALE: &str = rescue_stale!("");
pub(crate) const RESCUE_STALE_SCOPED: &str =
    rescue_stale!(" AND resource_key = $5 AND job_type = $6");
pub(crate) const RESCUE_PENDING: &str = rescue_pending!("");
pub(crate) const RESCUE_PENDING_SCOPED: &str =
    rescue_pending!(" AND resource_key = $4 AND job_type = $5");

pub(crate) const NOTIFY: &str = "SELECT pg_notify('folio_jobs', 'requeued')";

/// Retention: the oldest `$2` finished jobs that ended before `$1`, from the
/// `folio_jobs_finished` index (a range that ends where the young jobs begin), locked with
/// SKIP LOCKED so a row another transaction holds (a resume's insert checking the job it
/// names) is left for the next round rather than waited for; then deleted by primary key.
/// A trigger then clears the links of the jobs that remain into the deleted ones, through
/// the partial index of each link column (`migrations/0010_link_triggers.sql`).
pub(crate) const DELETE_FINISHED: &str = "
DELETE FROM folio_jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM folio_jobs
    WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED))";

/// [`jobs_core::JobStore::compact`]: a vacuum of the jobs table, which also removes the
/// entries of ended row versions from its indexes (the claim index's among them, which
/// every claim walks from its oldest end). `SKIP_LOCKED`: when autovacuum or another
/// worker is at it, this one has nothing to add.
pub(crate) const COMPACT: &str = "VACUUM (SKIP_LOCKED) folio_jobs";

/// The transaction-level advisory lock that lets one retention delete run at a time across
/// every worker. Two at once could deadlock: each locks its own batch, then clearing the
/// links into it waits for a row the other one locked (the first job of a chain in one
/// batch, the second in the other: `next_job_id` names one way, `previous_job_id` the
/// other). A batch holds it for milliseconds, and deletes of one table in parallel would
/// only contend for the same index pages. The key spells `folio_rt`.
pub(crate) const RETENTION_LOCK: i64 = 0x666f_6c69_6f5f_7274;

pub(crate) const REGISTER_WORKER: &str = "
INSERT INTO folio_workers (id, host, job_types, started_at, last_seen)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, job_types = excluded.job_types, started_at = excluded.started_at,
    last_seen = excluded.last_seen";

pub(crate) const TOUCH_WORKER: &str = "UPDATE folio_workers SET last_seen = $2 WHERE id = $1";

pub(crate) const REMOVE_WORKER: &str = "DELETE FROM folio_workers WHERE id = $1";

pub(crate) const LIST_WORKERS: &str =
    "SELECT * FROM folio_workers WHERE last_seen >= $1 ORDER BY last_seen DESC, id";

/// Every book's jobs, newest first, each status read where it costs least (see
/// `migrations/0006_list_by_status.sql`). `$1` holds the statuses found by a
/// backward scan of the primary key (every status when the query names none, else
/// `completed`), `$2` those read from an index of their own (`pending` and `running` from the
/// one-active index, `failed` and `cancelled` from theirs);
/// [`JobQuery::listing_branches`](jobs_core::JobQuery::listing_branches) splits them. A branch whose statuses are not asked for stops before it reads a row: its parameter test
/// is a one-time filter of the plan. The active branch has no `ORDER BY ... LIMIT` of its
/// own: with one, the planner would rather walk the primary key in order, which reads the
/// whole table when a few old jobs still run; without, it reads the active jobs (at most one
/// per resource and type) from their index and sorts them with the rest.
pub(crate) const LIST: &str = concat!(
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
pub(crate) const LIST_RESOURCE: &str = concat!(
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
pub(crate) fn list_before(before: Option<JobId>) -> Uuid {
    before.map_or(Uuid::max(), |id| *id.as_uuid())
}

/// The `FINISH` statement (`sql`, so tests can `EXPLAIN` it) bound to one batch.
pub(crate) fn finish_statement<'q>(
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

#[cfg(test)]
mod tests {
    //! The active statuses in this store's SQL: its queries take them from
    //! `jobs_core::active_statuses_sql!`, and its index definition parses back to them.

    use jobs_core::parse_active_index;

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
