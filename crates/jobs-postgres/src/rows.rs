//! Rows into jobs: the decoding of `folio_jobs` rows and of the columns statements return.

use std::collections::HashMap;

use jobs_core::{ChainStep, Job, JobError, JobId, JobStatus, Lease, Progress, StoreError};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::translate;

pub(crate) fn parse_status(status: String) -> Result<JobStatus, StoreError> {
    status
        .parse()
        .map_err(|error: jobs_core::UnknownJobStatus| StoreError::Corrupt(error.to_string()))
}

pub(crate) fn to_u32(value: i32, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is {value}")))
}

pub(crate) fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
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

pub(crate) fn jobs_from_rows(rows: &[PgRow]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job_from_row).collect()
}

pub(crate) fn json_value<T: serde::Serialize>(value: &T) -> Json<serde_json::Value> {
    Json(serde_json::to_value(value).expect("job fields serialize to JSON"))
}

/// Adds the `(id, status)` of each row that [`FINISH`](crate::sql::FINISH) returned to `finished`.
pub(crate) fn finished_statuses(
    rows: &[PgRow],
    finished: &mut HashMap<JobId, JobStatus>,
) -> Result<(), StoreError> {
    for row in rows {
        let id = JobId::from_uuid(row.try_get("id").map_err(translate)?);
        finished.insert(id, parse_status(row.try_get("status").map_err(translate)?)?);
    }
    Ok(())
}
