//! Folio's HTTP API (SPEC section 5): books, bulk page uploads, jobs with live progress
//! (server-sent events), cancel and resume, health, metrics and its own OpenAPI document.
//!
//! - [`app`] builds the whole [`axum::Router`] from an [`AppState`]; the `api` binary only
//!   parses flags, opens the stores and serves it (see [`server`]). Tests drive the router
//!   with `tower::ServiceExt::oneshot`.
//! - Every route is registered through `utoipa_axum::routes!`, so the OpenAPI document
//!   ([`openapi`]) is generated from the handlers and their types and cannot miss a route.
//! - [`ApiError`] is the one error type of every handler: `{"error": {"code", "message",
//!   "details"}}` with the stable codes of [`ErrorCode`]; 5xx bodies are generic and the
//!   cause is logged once, by the observing middleware.
//! - HTTP DTOs live here ([`dto`]); the core types never reach the wire directly.
//! - The dashboard (SPEC section 7) is served from `/`, `/books/{book_id}`, `/jobs` and
//!   `/assets/`: static files embedded in the binary, outside `/v1` and the API document.
//!
//! Architecture Invariant: this crate picks no store itself; it receives `dyn JobStore` and
//! `dyn BlobStore` in its [`AppState`] (the binary opens them through `app`).

mod auth;
mod conditional;
mod dashboard;
pub mod dto;
mod error;
mod events;
mod extract;
mod feeds;
mod idempotency;
pub mod languages;
mod metrics;
mod observe;
mod routes;
pub mod server;
mod site;
mod state;
mod trace;

pub use error::{ApiError, ErrorBody, ErrorCode, ErrorObject};
pub use routes::{openapi, operations};
pub use state::{ApiConfig, AppState};

use axum::Router;

/// The whole HTTP service over `state`: every route of SPEC section 5 with its layers
/// (auth on `/v1`, body limits, timeouts, request tracing, metrics).
pub fn app(state: AppState) -> Router {
    routes::router(state).0.layer(trace::layer())
}

/// The `(method, path)` of every operation the router of [`app`] serves, taken from the
/// router as it is built (tests compare it with the OpenAPI document both ways).
pub fn routed_operations(state: AppState) -> Vec<(String, String)> {
    routes::router(state).1
}
