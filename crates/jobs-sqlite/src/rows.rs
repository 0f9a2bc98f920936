//! Rows into jobs: ids as UUID text, times as integer microseconds, JSON as text.

use chrono::{DateTime, Utc};
use jobs_core::{ChainStep, Job, JobError, JobId, Lease, Progress, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{corrupt, translate};

pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(format!("time {micros}")))
}

pub(crate) fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("job fields serialize to JSON")
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

pub(crate) fn job_id(text: &str) -> Result<JobId, StoreError> {
    text.parse()
        .map_err(|error| corrupt(format!("job id {text:?}: {error}")))
}

pub(crate) fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(format!("{column} is {value}")))
}

pub(crate) fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
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

pub(crate) fn jobs_from_rows(rows: &[SqliteRow]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job_from_row).collect()
}
