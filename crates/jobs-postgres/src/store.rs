//! The [`JobStore`] implementation.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobs_core::{
    ActiveIndex, ChainStep, ClaimParams, Finish, HeartbeatAck, HeartbeatParams, Insert, Job, JobId,
    JobQuery, JobStatus, JobStore, KeptAnswer, KeyClaim, KeyedRequest, NewJob, RescueParams,
    RescueReport, StoreError, Transition, WorkerInfo, parse_active_index,
};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Json;
use sqlx::{Acquire, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::{is_refusal, translate};
use crate::rows::{finished_statuses, job_from_row, jobs_from_rows, json_value, parse_status};
use crate::sql::*;
use crate::{PgJobStore, bulk, listener};

impl PgJobStore {
    /// Why a fenced write to each of `ids` changed nothing: `NotFound` or `LeaseLost`.
    async fn fencing_errors(
        &self,
        ids: &[JobId],
    ) -> Result<HashMap<JobId, StoreError>, StoreError> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        let rows = sqlx::query(self.sql.statuses)
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

/// Inserts `job` (inserted by the completion of `previous` when it continues a chain), or
/// reads the active job of its (resource, type): `Ok(Ok(inserted))` or `Ok(Err(active))`.
/// The insert loses to an active job; that job may end before it is read, so it retries.
async fn insert_job(
    connection: &mut PgConnection,
    sql: &'static Statements,
    job: &NewJob,
    previous: Option<JobId>,
) -> Result<Result<PgRow, PgRow>, sqlx::Error> {
    for _ in 0..16 {
        let inserted = sqlx::query(sql.insert)
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
        let active = sqlx::query(sql.select_active)
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

/// [`JobStore::insert`] on `connection` (the store's, or a caller's transaction).
pub(crate) async fn insert_one(
    connection: &mut PgConnection,
    sql: &'static Statements,
    job: &NewJob,
) -> Result<Insert, StoreError> {
    match insert_job(connection, sql, job, None).await {
        Ok(Ok(inserted)) => Ok(Insert::Inserted(job_from_row(&inserted)?)),
        Ok(Err(active)) => Ok(Insert::Busy(job_from_row(&active)?)),
        Err(error) => Err(translate(error)),
    }
}

/// Completes one job of a chain in the caller's transaction: the fenced completion, the
/// insert of the next job (or the read of the active one of that type), the link. `None`
/// when the fence refused the completion (nothing written).
async fn complete_chained(
    connection: &mut PgConnection,
    sql: &'static Statements,
    now: DateTime<Utc>,
    finish: &Finish,
) -> Result<Option<JobStatus>, sqlx::Error> {
    let Some(row) = sqlx::query(sql.complete_chained)
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
    let next_id: Uuid = match insert_job(connection, sql, &next, Some(finish.id)).await? {
        Ok(inserted) | Err(inserted) => inserted.try_get("id")?,
    };
    sqlx::query(sql.link_next)
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
            match complete_chained(&mut savepoint, self.sql, now, finish).await {
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
            let rows = finish_statement(self.sql.finish, now, &plain)
                .fetch_all(&mut *transaction)
                .await
                .map_err(translate)?;
            finished_statuses(&rows, &mut finished)?;
        }
        transaction.commit().await.map_err(translate)?;
        Ok((finished, refused))
    }
}

#[async_trait]
impl JobStore for PgJobStore {
    async fn insert(&self, job: NewJob) -> Result<Insert, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(translate)?;
        insert_one(&mut connection, self.sql, &job).await
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Insert>, StoreError> {
        bulk::insert_many(&self.pool, self.sql.insert_many, jobs).await
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        let row = sqlx::query(self.sql.get)
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
            Some(resource_key) => sqlx::query(self.sql.list_resource)
                .bind(resource_key)
                .bind(job_type)
                .bind(JobQuery::wanted_statuses(&query.statuses))
                .bind(before)
                .bind(limit),
            None => {
                let (scanned, indexed) = JobQuery::listing_branches(&query.statuses);
                sqlx::query(self.sql.list)
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
        let rows = sqlx::query(self.sql.claim)
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
        let row = sqlx::query(self.sql.heartbeat)
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
            let rows = finish_statement(self.sql.finish, now, batch)
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
            sqlx::query(self.sql.notify)
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
        let row = sqlx::query(self.sql.request_cancel)
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
        let (stale_sql, pending_sql, scope) = self.sql.rescue(&params.scope);
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
            sqlx::query(self.sql.notify)
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
        let deleted = sqlx::query(self.sql.delete_finished)
            .bind(finished_before)
            .bind(i64::from(limit))
            .execute(&mut *transaction)
            .await
            .map_err(translate)?
            .rows_affected();
        transaction.commit().await.map_err(translate)?;
        Ok(deleted)
    }

    async fn compact(&self) -> Result<(), StoreError> {
        // VACUUM runs outside a transaction block: the simple protocol, one statement.
        sqlx::raw_sql(self.sql.compact)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn active_index(&self) -> Result<ActiveIndex, StoreError> {
        let definition: String = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes
             WHERE indexname = 'folio_jobs_one_active'
               AND schemaname = COALESCE($1, current_schema())",
        )
        .bind(self.schema.name())
        .fetch_optional(&self.pool)
        .await
        .map_err(translate)?
        .ok_or_else(|| StoreError::Corrupt("index folio_jobs_one_active is missing".into()))?;
        parse_active_index(&definition, active_index_statuses)
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        sqlx::query(self.sql.register_worker)
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
        let result = sqlx::query(self.sql.touch_worker)
            .bind(id)
            .bind(now)
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
            let claimed: Option<String> = sqlx::query_scalar(self.sql.claim_key)
                .bind(request.key)
                .bind(request.request)
                .bind(request.fingerprint)
                .bind(request.claim)
                .bind(now)
                .bind(stale_before)
                .fetch_optional(&self.pool)
                .await
                .map_err(translate)?;
            if claimed.is_some() {
                return Ok(KeyClaim::Claimed);
            }
            let Some(row) = sqlx::query(self.sql.get_key)
                .bind(request.key)
                .fetch_optional(&self.pool)
                .await
                .map_err(translate)?
            else {
                continue;
            };
            let answer = KeptAnswer::from_columns(
                row.try_get::<Option<i32>, _>("status")
                    .map_err(translate)?
                    .map(i64::from),
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
        let result = sqlx::query(self.sql.answer_key)
            .bind(key)
            .bind(claim)
            .bind(i32::from(answer.status))
            .bind(&answer.content_type)
            .bind(&answer.body)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(result.rows_affected() > 0)
    }

    async fn release_key(&self, key: &str, claim: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql.release_key)
            .bind(key)
            .bind(claim)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn delete_keys(&self, claimed_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query(self.sql.delete_keys)
            .bind(claimed_before)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(result.rows_affected())
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql.remove_worker)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(translate)?;
        Ok(())
    }

    async fn list_workers(&self, seen_since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query(self.sql.list_workers)
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
            tokio::spawn(listener::listen(
                self.pool.clone(),
                self.sql.channel,
                Arc::downgrade(&signal),
            ));
            signal
        });
        Some(signal.clone())
    }
}
