//! Liveness, readiness, metrics and the OpenAPI document. These routes need no API token;
//! `/metrics` needs the metrics token when one is set.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use blob_store::BlobError;

use crate::dto::{Check, Health, OcrReadiness, Readiness};
use crate::state::AppState;

/// Longest time one readiness check may take. A database that is down does not refuse a
/// call at once (the pool retries the connection until its acquire timeout), so this is
/// how soon `/readyz` says 503 during an outage: within a probe's usual timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A key that never exists; reading its metadata proves the storage answers.
const STORAGE_PROBE_KEY: &str = "folio/readiness-probe";

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Alive", body = Health))
)]
pub(crate) async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the database and the storage answer; also counts live workers, and with
/// `--with-worker` running `ocr` jobs shows its OCR engine (version, installed languages)
/// as checked at start (a worker whose engine cannot run never starts).
#[utoipa::path(
    get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the database or the storage does not answer", body = Readiness),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    // Checked at most once per `READINESS_FRESH`: an unauthenticated caller cannot make
    // the api query the database and the storage at its own pace.
    let mut cached = state.readiness().lock().await;
    let now = state.clock().now();
    let readiness = match &*cached {
        Some((at, readiness)) if *at <= now && now - *at < READINESS_FRESH => readiness.clone(),
        _ => {
            let readiness = check_readiness(&state, now).await;
            *cached = Some((now, readiness.clone()));
            readiness
        }
    };
    drop(cached);
    let status = if readiness.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// How long a readiness answer is served from the cache.
const READINESS_FRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Asks the database (and counts live workers) and the storage, each within
/// [`CHECK_TIMEOUT`].
async fn check_readiness(state: &AppState, now: chrono::DateTime<chrono::Utc>) -> Readiness {
    let seen_since = now
        - chrono::Duration::from_std(state.config().recovery.stale_after)
            .unwrap_or(chrono::Duration::seconds(30));
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, state.job_store().list_workers(seen_since)).await;
    let (database, live_workers) = match database {
        Ok(Ok(workers)) => (ok(), Some(workers.len())),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the job database failed");
            (failed("the job database failed"), None)
        }
        Err(_) => (failed("the job database did not answer in time"), None),
    };
    let storage =
        match tokio::time::timeout(CHECK_TIMEOUT, state.books().store().head(STORAGE_PROBE_KEY))
            .await
        {
            Ok(Ok(_) | Err(BlobError::NotFound { .. })) => ok(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: the object storage failed");
                failed("the object storage failed")
            }
            Err(_) => failed("the object storage did not answer in time"),
        };
    let ready = database.ok && storage.ok;
    Readiness {
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        database,
        storage,
        live_workers,
        ocr: state.ocr_engine().map(|engine| OcrReadiness {
            engine: engine.engine.clone(),
            version: engine.version.clone(),
            languages: engine.languages.clone(),
            default_language: engine.default_language.clone(),
        }),
    }
}

fn ok() -> Check {
    Check {
        ok: true,
        error: None,
    }
}

fn failed(message: &str) -> Check {
    Check {
        ok: false,
        error: Some(message.to_owned()),
    }
}

/// Prometheus text: HTTP requests by route and status, and the in-process worker's
/// metrics with `--with-worker`.
#[utoipa::path(
    get, path = "/metrics", tag = "system",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: with `--metrics-token`, the request does not carry it", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    state.http_metrics().render(&mut text);
    state.feeds().render(&mut text);
    if let Some(worker) = state.worker_metrics() {
        worker.render(&mut text);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        crate::routes::openapi_json(),
    )
        .into_response()
}
