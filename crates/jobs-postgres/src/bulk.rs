//! Bulk insert: many jobs in one statement.
//!
//! The batch goes up as one array per column and comes in through `UNNEST`; a multi-row
//! `INSERT ... ON CONFLICT DO NOTHING` on the one-active index inserts every job whose
//! (resource, type) is free, and the same statement reads the active job of every other
//! one. Two limits of one statement shape the rest:
//!
//! - The rows a data-modifying CTE inserts are invisible to the rest of the statement, so
//!   the statement could not tell a job of the batch from another one. Jobs of the batch
//!   for the same (resource, type) are therefore sent once (the first in input order) and
//!   the others answered `Busy` with what the first got.
//! - A job that lost to one committed by another session after the statement's snapshot
//!   conflicts (the unique index sees it) but is not found (the snapshot does not). Those
//!   jobs go again, alone, in a follow-up round; the conflicting job is visible to it, or
//!   has already ended and the insert wins.
//!
//! The jobs are sent sorted by (resource, type), so two batches that share keys wait for
//! each other's inserts in one order and never deadlock (a multi-row insert holds each
//! inserted key until it commits, and an insert of a key held by another waits).

use std::collections::{HashMap, HashSet};

use jobs_core::{Insert, Job, JobId, NewJob, StoreError};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::error::translate;
use crate::rows::job_from_row;

/// Inserts each job of the batch whose (resource, type) has no active job, and returns the
/// inserted rows and the active rows of the others. The batch holds at most one job per
/// (resource, type). One notification for the whole batch, when it inserted any. The
/// active jobs are looked up per item not inserted, through the one-active index (`LATERAL`):
/// a join would let the generic plan hash the batch and scan every active job.
pub(crate) const INSERT_MANY: &str = concat!(
    "
WITH batch AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int4[],
                         $6::jsonb[], $7::uuid[], $8::jsonb[], $9::timestamptz[], $10::text[])
        AS batch(id, resource_key, job_type, payload, max_attempts, checkpoint, resumed_from,
                 \"then\", created_at, trace_parent)
), inserted AS (
    INSERT INTO folio_jobs
        (id, resource_key, job_type, status, payload, max_attempts, checkpoint, resumed_from,
         \"then\", trace_parent, run_at, created_at)
    SELECT id, resource_key, job_type, 'pending', payload, max_attempts, checkpoint,
           resumed_from, \"then\", trace_parent, created_at, created_at
    FROM batch
    ON CONFLICT (resource_key, job_type) WHERE status IN ",
    jobs_core::active_statuses_sql!(),
    " DO NOTHING
    RETURNING *
), notified AS (
    SELECT pg_notify('folio_jobs', min(job_type)) FROM inserted HAVING count(*) > 0
)
SELECT inserted.* FROM inserted LEFT JOIN notified ON true
UNION ALL
SELECT job.*
FROM batch
CROSS JOIN LATERAL (
    SELECT * FROM folio_jobs
    WHERE resource_key = batch.resource_key AND job_type = batch.job_type
      AND status IN ",
    jobs_core::active_statuses_sql!(),
    "
) AS job
WHERE batch.id NOT IN (SELECT id FROM inserted)"
);

/// How many rounds a batch gets before its remaining jobs are an error: each round after the
/// first only retries jobs that lost to a job committed during the round before.
const ROUNDS: usize = 16;

/// Postgres's `deadlock_detected`: a batch waited on a chained completion's insert of
/// several next jobs that waited on it in turn. The batch is rolled back; it goes again.
const DEADLOCK_DETECTED: &str = "40P01";

/// [`jobs_core::JobStore::insert_many`] on Postgres.
pub(crate) async fn insert_many(
    pool: &PgPool,
    sql: &'static str,
    jobs: Vec<NewJob>,
) -> Result<Vec<Insert>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    // The first job of each (resource, type) is sent; the others follow its answer.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::with_capacity(jobs.len());
    let leaders: Vec<usize> = (0..jobs.len())
        .filter(|&index| {
            let job = &jobs[index];
            let key = (job.resource_key.as_str(), job.job_type.as_str());
            *first_of.entry(key).or_insert(index) == index
        })
        .collect();
    let mut pending: Vec<usize> = leaders;
    pending.sort_by(|&a, &b| {
        (&jobs[a].resource_key, &jobs[a].job_type).cmp(&(&jobs[b].resource_key, &jobs[b].job_type))
    });
    let mut answers: Vec<Option<Insert>> = vec![None; jobs.len()];
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        if rounds > ROUNDS {
            return Err(StoreError::Backend(
                format!(
                    "{} inserts kept conflicting with jobs that ended at once",
                    pending.len()
                )
                .into(),
            ));
        }
        let sent: HashSet<JobId> = pending.iter().map(|&index| jobs[index].id).collect();
        let rows = match statement(sql, &jobs, &pending).fetch_all(pool).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(DEADLOCK_DETECTED) =>
            {
                continue;
            }
            Err(error) => return Err(translate(error)),
        };
        let mut inserted: HashMap<JobId, Job> = HashMap::with_capacity(rows.len());
        let mut active: HashMap<(String, String), Job> = HashMap::new();
        for row in &rows {
            let job = job_from_row(row)?;
            if sent.contains(&job.id) {
                inserted.insert(job.id, job);
            } else {
                active.insert((job.resource_key.clone(), job.job_type.clone()), job);
            }
        }
        pending.retain(|&index| {
            let job = &jobs[index];
            if let Some(created) = inserted.remove(&job.id) {
                answers[index] = Some(Insert::Inserted(created));
                return false;
            }
            match active.remove(&(job.resource_key.clone(), job.job_type.clone())) {
                Some(found) => {
                    answers[index] = Some(Insert::Busy(found));
                    false
                }
                None => true,
            }
        });
    }
    Ok((0..jobs.len())
        .map(|index| {
            let job = &jobs[index];
            let first = first_of[&(job.resource_key.as_str(), job.job_type.as_str())];
            match &answers[first] {
                Some(answer) if first == index => answer.clone(),
                Some(answer) => Insert::Busy(answer.job().clone()),
                None => unreachable!("every first job is answered"),
            }
        })
        .collect())
}

/// [`INSERT_MANY`] (`sql`, in the store's schema) bound to the jobs at `indexes`.
fn statement<'q>(
    sql: &'static str,
    jobs: &[NewJob],
    indexes: &[usize],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let n = indexes.len();
    let mut ids = Vec::with_capacity(n);
    let mut resource_keys = Vec::with_capacity(n);
    let mut job_types = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut checkpoints = Vec::with_capacity(n);
    let mut resumed_froms = Vec::with_capacity(n);
    let mut thens = Vec::with_capacity(n);
    let mut created_ats = Vec::with_capacity(n);
    let mut trace_parents = Vec::with_capacity(n);
    for &index in indexes {
        let job = &jobs[index];
        ids.push(*job.id.as_uuid());
        resource_keys.push(job.resource_key.clone());
        job_types.push(job.job_type.clone());
        payloads.push(Json(job.payload.clone()));
        max_attempts.push(i32::try_from(job.max_attempts).unwrap_or(i32::MAX));
        checkpoints.push(job.checkpoint.clone().map(Json));
        resumed_froms.push(job.resumed_from.map(|id| *id.as_uuid()));
        thens.push(Json(job.then.clone()));
        created_ats.push(job.now);
        trace_parents.push(
            jobs_core::trace::storable_trace_parent(job.trace_parent.as_deref()).map(str::to_owned),
        );
    }
    sqlx::query(sql)
        .bind(ids)
        .bind(resource_keys)
        .bind(job_types)
        .bind(payloads)
        .bind(max_attempts)
        .bind(checkpoints)
        .bind(resumed_froms)
        .bind(thens)
        .bind(created_ats)
        .bind(trace_parents)
}
