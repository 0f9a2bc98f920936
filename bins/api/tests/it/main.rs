//! Route tests of the `api` router (driven with `tower::ServiceExt::oneshot` on SQLite and
//! `file://`), the same on Postgres where the store matters, an end-to-end run on Postgres
//! and S3 with a real worker, and process tests of the binary.

mod all_jobs;
mod auth;
mod books;
mod chains;
mod cli;
mod concurrency;
mod conditional;
mod connections;
mod dashboard;
mod dashboard_assets;
mod e2e;
mod events;
mod guidelines;
mod hostile;
mod idempotency;
mod jobs;
mod ocr_quality;
mod openapi;
mod pages;
mod pdf;
mod schemathesis;
mod support;
mod system;
#[cfg(feature = "otlp")]
mod trace;
