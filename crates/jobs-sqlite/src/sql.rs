//! Every statement of the store, with the helpers that pick and bind them. The active
//! statuses come from [`jobs_core::active_statuses_sql!`], never written by hand (a test
//! reads this crate's sources).

use jobs_core::RescueScope;

pub(crate) fn scope_params(scope: &RescueScope) -> (Option<&str>, Option<&str>) {
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
pub(crate) fn active_index_statuses(predicate: &str) -> Option<Vec<&str>> {
    let list = predicate.strip_prefix("status IN (")?.strip_suffix(')')?;
    list.split(',')
        .map(|item| item.trim().strip_prefix('\'')?.strip_suffix('\''))
        .collect()
}

pub(crate) const INSERT: &str = concat!(
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
pub(crate) const INSERT_MANY: &str = concat!(
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
pub(crate) const SELECT_ACTIVE_MANY: &str = concat!(
    "
SELECT folio_jobs.* FROM json_each(?1) AS wanted
JOIN folio_jobs ON folio_jobs.resource_key = wanted.value ->> '$[0]'
               AND folio_jobs.job_type = wanted.value ->> '$[1]'
               AND folio_jobs.status IN ",
    jobs_core::active_statuses_sql!()
);

pub(crate) const SELECT_ACTIVE: &str = concat!(
    "
SELECT * FROM folio_jobs
WHERE resource_key = ?1 AND job_type = ?2 AND status IN ",
    jobs_core::active_statuses_sql!()
);

pub(crate) const CLAIM: &str = "
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

pub(crate) const HEARTBEAT: &str = "
UPDATE folio_jobs
SET heartbeat_at = ?3, progress = COALESCE(?4, progress), checkpoint = COALESCE(?5, checkpoint)
WHERE id = ?1 AND lease = ?2 AND status = 'running'
RETURNING cancel_requested";

/// Ends claims, each fenced on its lease, in one statement (each statement is a round trip
/// to the connection's thread). `?1` is a JSON array of one object per job: `{id, lease,
/// kind, error, run_at, consume, progress, checkpoint}` (`kind` is `completed`, `failed`,
/// `cancelled` or `requeue`; the JSON fields as text), `?2` the time. `requeue` becomes
/// `cancelled` when a cancel was requested, and `failed` (with the original error) when it
/// would consume the last attempt. SET expressions see the row before the update. Answers
/// the id and new status of each job it ended; a fenced or missing job is absent. The jobs
/// must be distinct: of two rows for one job, SQLite would apply either.
pub(crate) const FINISH: &str = "
UPDATE folio_jobs
SET status = CASE
        WHEN f.kind <> 'requeue' THEN f.kind
        WHEN folio_jobs.cancel_requested THEN 'cancelled'
        WHEN f.consume AND folio_jobs.attempt >= folio_jobs.max_attempts THEN 'failed'
        ELSE 'pending' END,
    attempt = CASE
        WHEN f.kind = 'requeue' AND NOT f.consume AND NOT folio_jobs.cancel_requested
        THEN folio_jobs.attempt - 1
        ELSE folio_jobs.attempt END,
    error = CASE
        WHEN f.kind IN ('failed', 'requeue') THEN f.error
        WHEN f.kind = 'completed' THEN NULL
        ELSE folio_jobs.error END,
    run_at = CASE WHEN f.kind = 'requeue' THEN f.run_at ELSE folio_jobs.run_at END,
    finished_at = CASE
        WHEN f.kind = 'requeue' AND NOT folio_jobs.cancel_requested
             AND NOT (f.consume AND folio_jobs.attempt >= folio_jobs.max_attempts)
        THEN NULL ELSE ?2 END,
    worker_id = CASE
        WHEN f.kind = 'requeue' AND NOT folio_jobs.cancel_requested
             AND NOT (f.consume AND folio_jobs.attempt >= folio_jobs.max_attempts)
        THEN NULL ELSE folio_jobs.worker_id END,
    progress = COALESCE(f.progress, folio_jobs.progress),
    checkpoint = COALESCE(f.checkpoint, folio_jobs.checkpoint)
FROM (
    SELECT value ->> 'id' AS id, value ->> 'lease' AS lease, value ->> 'kind' AS kind,
           value ->> 'error' AS error, value ->> 'run_at' AS run_at,
           value ->> 'consume' AS consume, value ->> 'progress' AS progress,
           value ->> 'checkpoint' AS checkpoint
    FROM json_each(?1)
) AS f
WHERE folio_jobs.id = f.id AND folio_jobs.lease = f.lease AND folio_jobs.status = 'running'
RETURNING id, status";

/// Completes one job of a chain (the `completed` case of [`FINISH`]) and reads what its
/// next job needs. It runs in the transaction that inserts the next job.
pub(crate) const COMPLETE_CHAINED: &str = "
UPDATE folio_jobs
SET status = 'completed', error = NULL, finished_at = ?3,
    progress = COALESCE(?4, progress), checkpoint = COALESCE(?5, checkpoint)
WHERE id = ?1 AND lease = ?2 AND status = 'running'
RETURNING resource_key, max_attempts, \"then\", trace_parent";

/// Links a job just completed to the job its chain continues in.
pub(crate) const LINK_NEXT: &str = "UPDATE folio_jobs SET next_job_id = ?2 WHERE id = ?1";

pub(crate) const REQUEST_CANCEL: &str = concat!(
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

pub(crate) const RESCUE_STALE: &str = "
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

pub(crate) const RESCUE_PENDING: &str = "
UPDATE folio_jobs
SET status = 'failed', error = ?3, finished_at = ?1
WHERE status = 'pending' AND run_at < ?2
  AND (?4 IS NULL OR (resource_key = ?4 AND job_type = ?5))
RETURNING id";

/// Retention: the oldest `?2` finished jobs that ended before `?1`, from the
/// `folio_jobs_finished` index (a range that ends where the young jobs begin).
pub(crate) const SELECT_FINISHED: &str = "
SELECT id FROM folio_jobs
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?1
ORDER BY finished_at
LIMIT ?2";

/// Clears the links that jobs outside a retention batch (`?1`, a JSON array of ids) have
/// into it: what `ON DELETE SET NULL` does on Postgres, which SQLite cannot add to an existing
/// table (`migrations/0008_retention.sql`). Each column's partial index finds the jobs.
pub(crate) const UNLINK_RESUMED_FROM: &str = "
UPDATE folio_jobs SET resumed_from = NULL
WHERE resumed_from IN (SELECT value FROM json_each(?1))
  AND id NOT IN (SELECT value FROM json_each(?1))";
pub(crate) const UNLINK_PREVIOUS: &str = "
UPDATE folio_jobs SET previous_job_id = NULL
WHERE previous_job_id IN (SELECT value FROM json_each(?1))
  AND id NOT IN (SELECT value FROM json_each(?1))";
pub(crate) const UNLINK_NEXT: &str = "
UPDATE folio_jobs SET next_job_id = NULL
WHERE next_job_id IN (SELECT value FROM json_each(?1))
  AND id NOT IN (SELECT value FROM json_each(?1))";

/// Deletes a retention batch (`?1`, a JSON array of ids). Links among the batch's own jobs
/// go with them: the foreign keys are checked at the end of the statement.
pub(crate) const DELETE_JOBS: &str =
    "DELETE FROM folio_jobs WHERE id IN (SELECT value FROM json_each(?1))";

/// Claims a request key: inserts it, or takes over a stale claim of the same request
/// without an answer (`?6`: claims before it are stale); the claim when it is this one's.
pub(crate) const CLAIM_KEY: &str = "
INSERT INTO folio_request_keys (key, request, fingerprint, claim, claimed_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (key) DO UPDATE SET claim = excluded.claim, claimed_at = excluded.claimed_at
WHERE folio_request_keys.status IS NULL AND folio_request_keys.claimed_at < ?6
  AND folio_request_keys.request = excluded.request
  AND folio_request_keys.fingerprint = excluded.fingerprint
RETURNING claim";

/// A request key's request, fingerprint and answer.
pub(crate) const GET_KEY: &str = "
SELECT request, fingerprint, status, content_type, body FROM folio_request_keys WHERE key = ?1";

/// Keeps the answer of a request key its claim still holds.
pub(crate) const ANSWER_KEY: &str = "
UPDATE folio_request_keys SET status = ?3, content_type = ?4, body = ?5
WHERE key = ?1 AND claim = ?2 AND status IS NULL";

/// Lets go of a request key its claim still holds, without an answer.
pub(crate) const RELEASE_KEY: &str =
    "DELETE FROM folio_request_keys WHERE key = ?1 AND claim = ?2 AND status IS NULL";

/// Deletes the request keys claimed before `?1`.
pub(crate) const DELETE_KEYS: &str = "DELETE FROM folio_request_keys WHERE claimed_at < ?1";

pub(crate) const REGISTER_WORKER: &str = "
INSERT INTO folio_workers (id, host, job_types, started_at, last_seen)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, job_types = excluded.job_types, started_at = excluded.started_at,
    last_seen = excluded.last_seen";

/// Every book's jobs, newest first, each status read where it costs least (see
/// `migrations/0006_list_by_status.sql`). `?1` holds the statuses found by a backward
/// scan of the primary key's index (every status when the query names none, else
/// `completed`), `?2` those read from an index of their own (`pending` and `running` from the
/// one-active index, named here because SQLite would rather scan the key in order and could
/// read the whole table to find a few running jobs; `failed` and `cancelled` from theirs).
/// [`JobQuery::listing_branches`](jobs_core::JobQuery::listing_branches) splits them. A branch whose statuses are not asked for
/// stops before it reads a row: its test of the parameters does not depend on the row.
pub(crate) const LIST: &str = concat!(
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
pub(crate) const LIST_RESOURCE: &str = "
SELECT * FROM folio_jobs
WHERE resource_key = ?1 AND (?2 IS NULL OR job_type = ?2)
  AND status IN (SELECT value FROM json_each(?3)) AND id < ?4
ORDER BY id DESC
LIMIT ?5";

/// Above every job id in text order (ids are lowercase hyphenated UUIDs): the keyset bound of
/// a listing without `before`.
pub(crate) const ID_ABOVE_ALL: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";

#[cfg(test)]
mod tests {
    //! The active statuses in this store's SQL: its queries take them from
    //! `jobs_core::active_statuses_sql!`, and its index definition parses back to them.

    use jobs_core::{JobStatus, parse_active_index};

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
