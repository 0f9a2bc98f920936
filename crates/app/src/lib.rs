//! The application assembly shared by the `api` and `worker` binaries: configuration
//! (flags with env twins), job and blob stores picked from URLs, the registry of job types
//! and their handlers, logging and shutdown signals. Binaries parse their flags and call
//! into here; tests reach the same code.

pub mod config;
pub mod handlers;
pub mod jobs;
pub mod preflight;
pub mod storage;
pub mod stores;
pub mod telemetry;

use tokio_util::sync::CancellationToken;

/// A token that fires on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
            () = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
        fired.cancel();
    });
    token
}
