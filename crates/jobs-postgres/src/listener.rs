//! The `LISTEN` task behind [`JobStore::job_signal`](jobs_core::JobStore::job_signal).

use std::sync::Weak;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;

/// The longest pause between two attempts of the listener to connect again. Each attempt
/// itself waits up to the pool's acquire timeout (retrying the connection inside it), so
/// a longer pause would only delay the reconnect after the server is back.
pub(crate) const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Listens on `channel` (the store's [`crate::Schema::channel`]) and fires `signal` on each
/// notification, reconnecting with backoff when the connection drops (a server restart, a
/// terminated backend). After every (re)connect it fires once, since notifications sent
/// while disconnected are lost. Ends when the last worker drops the signal.
pub(crate) async fn listen(pool: PgPool, channel: &'static str, signal: Weak<Notify>) {
    let mut backoff = Duration::from_millis(100);
    let mut reconnecting = false;
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if reconnecting {
                        tracing::info!("job notification listener reconnected");
                    }
                    reconnecting = true;
                    loop {
                        let Some(signal) = signal.upgrade() else {
                            return;
                        };
                        signal.notify_waiters();
                        drop(signal);
                        match listener.try_recv().await {
                            Ok(Some(_notification)) => {}
                            Ok(None) => {
                                tracing::warn!("job notification connection lost; reconnecting");
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "job notification listener failed");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "LISTEN {channel} failed"),
            },
            Err(error) => tracing::warn!(%error, "job notification listener cannot connect"),
        }
        if signal.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
    }
}
