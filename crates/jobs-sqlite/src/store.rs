//! The [`JobStore`] implementation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobs_core::{
    ActiveIndex, ChainStep, ClaimParams, Finish, FinishOutcome, HeartbeatAck, HeartbeatParams,
    Insert, Job, JobId, JobQuery, JobStatus, JobStore, KeptAnswer, KeyClaim, KeyedRequest, NewJob,
    RescueParams, RescueReport, StoreError, Transition, WorkerInfo, parse_active_index,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Acquire, Row, SqliteConnection};
use tokio::sync::Notify;

use crate::SqliteJobStore;
use crate::error::{corrupt, is_refusal, translate};
use crate::rows::*;
use crate::sql::*;

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

/// The finishes from the start of `batch` that end in one statement: up to the first that
/// continues a chain, or the second of one job.
fn plain_run(batch: &[Finish]) -> &[Finish] {
    let mut ids = HashSet::new();
    let end = batch
        .iter()
        .position(|finish| finish.continues_chain() || !ids.insert(finish.id))
        .unwrap_or(batch.len());
    &batch[..end]
}

/// Ends `run` (distinct jobs, none continuing a chain) in one statement ([`FINISH`]): per
/// job its new status, or why its fenced write changed nothing.
async fn finish_plain(
    connection: &mut SqliteConnection,
    now: DateTime<Utc>,
    run: &[Finish],
) -> Result<Vec<Result<JobStatus, StoreError>>, StoreError> {
    /// One element of [`FINISH`]'s array (serialized straight to JSON: no `Value` per job).
    #[derive(serde::Serialize)]
    struct Item {
        id: JobId,
        lease: i64,
        kind: &'static str,
        error: Option<String>,
        run_at: i64,
        consume: bool,
        progress: Option<String>,
        checkpoint: Option<String>,
    }
    let items: Vec<Item> = run
        .iter()
        .map(|finish| {
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
            Item {
                id: finish.id,
                lease: finish.lease.0,
                kind,
                error,
                run_at: micros(run_at),
                consume,
                progress: finish.progress.as_ref().map(json_text),
                checkpoint: finish.checkpoint.as_ref().map(json_text),
            }
        })
        .collect();
    let ended: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(FINISH)
        .bind(json_text(&items))
        .bind(micros(now))
        .fetch_all(&mut *connection)
        .await
        .map_err(translate)?
        .into_iter()
        .collect();
    let mut results = Vec::with_capacity(run.len());
    for finish in run {
        results.push(match ended.get(&finish.id.to_string()) {
            Some(status) => status.parse::<JobStatus>().map_err(corrupt),
            None => Err(fencing_error(connection, finish.id).await),
        });
    }
    Ok(results)
}

/// [`JobStore::insert`] on `connection` (the store's, or a caller's transaction), without
/// the in-process wake-up.
pub(crate) async fn insert_one(
    connection: &mut SqliteConnection,
    job: &NewJob,
) -> Result<Insert, StoreError> {
    match insert_job(connection, job, None).await {
        Ok(Ok(inserted)) => Ok(Insert::Inserted(job_from_row(&inserted)?)),
        Ok(Err(active)) => Ok(Insert::Busy(job_from_row(&active)?)),
        Err(error) => Err(translate(error)),
    }
}

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
        let insert = insert_one(&mut connection, &job).await?;
        if let Insert::Inserted(_) = insert {
            self.signal.notify_waiters();
        }
        Ok(insert)
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Insert>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // One write transaction: no other writer runs until it commits, so a conflict is
        // with a job this transaction sees (committed, or inserted by an earlier job of the
        // batch), which stays active until the commit. One statement inserts the batch; one
        // more reads the active jobs the others met.
        /// One element of [`INSERT_MANY`]'s array (serialized straight to JSON).
        #[derive(serde::Serialize)]
        struct Item<'a> {
            id: JobId,
            resource_key: &'a str,
            job_type: &'a str,
            payload: String,
            max_attempts: u32,
            checkpoint: Option<String>,
            resumed_from: Option<JobId>,
            then: String,
            trace_parent: Option<&'a str>,
            now: i64,
        }
        let batch: Vec<Item> = jobs
            .iter()
            .map(|job| Item {
                id: job.id,
                resource_key: &job.resource_key,
                job_type: &job.job_type,
                payload: json_text(&job.payload),
                max_attempts: job.max_attempts,
                checkpoint: job.checkpoint.as_ref().map(json_text),
                resumed_from: job.resumed_from,
                then: json_text(&job.then),
                trace_parent: jobs_core::trace::storable_trace_parent(job.trace_parent.as_deref()),
                now: micros(job.now),
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
        let mut next = 0;
        while next < batch.len() {
            let finish = &batch[next];
            if !finish.continues_chain() {
                // The jobs up to the next chained one (or a second finish of one job) end in
                // one statement; the batch's order holds between runs.
                let run = plain_run(&batch[next..]);
                results.extend(finish_plain(&mut transaction, now, run).await?);
                next += run.len();
                continue;
            }
            next += 1;
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

    async fn claim_key(
        &self,
        request: &KeyedRequest<'_>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        // A key released between the two statements is claimed on the next round.
        for _ in 0..3 {
            let claimed: Option<String> = sqlx::query_scalar(CLAIM_KEY)
                .bind(request.key)
                .bind(request.request)
                .bind(request.fingerprint)
                .bind(request.claim)
                .bind(micros(now))
                .bind(micros(stale_before))
                .fetch_optional(&self.pool)
                .await
                .map_err(translate)?;
            if claimed.is_some() {
                return Ok(KeyClaim::Claimed);
            }
            let Some(row) = sqlx::query(GET_KEY)
                .bind(request.key)
                .fetch_optional(&self.pool)
                .await
                .map_err(translate)?
            else {
                continue;
            };
            let answer = KeptAnswer::from_columns(
                row.try_get::<Option<i64>, _>("status").map_err(translate)?,
                row.try_get("content_type").map_err(translate)?,
                row.try_get("body").map_err(translate)?,
            )?;
            return Ok(request.meets(
                row.try_get("request").map_err(translate)?,
                row.try_get("fingerprint").map_err(translate)?,
                answer,
            ));
        }
        Err(StoreError::Corrupt(format!(
            "request key {} was released three times while being claimed",
            request.key
        )))
    }

    async fn answer_key(
        &self,
        key: &str,
        claim: &str,
        answer: &KeptAnswer,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(ANSWER_KEY)
            .bind(key)
            .bind(claim)
            .bind(i64::from(answer.status))
            .bind(&answer.content_type)
            .bind(&answer.body)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(result.rows_affected() > 0)
    }

    async fn release_key(&self, key: &str, claim: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_KEY)
            .bind(key)
            .bind(claim)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn delete_keys(&self, claimed_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query(DELETE_KEYS)
            .bind(micros(claimed_before))
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(result.rows_affected())
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
