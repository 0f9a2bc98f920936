//! Stores picked from URLs: the only place that knows the concrete implementations.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use jobs_core::JobStore;

/// Connections of a process's Postgres pool.
const POSTGRES_CONNECTIONS: u32 = 16;

/// Opens the job store a database URL names, running its migrations.
///
/// On Postgres, a call waits at most [`jobs_postgres::PoolSettings::ACQUIRE_TIMEOUT`] for a
/// connection: while the server is down (a restart) calls fail after that and are retried
/// by their callers, and the pool reconnects within about a second of its return.
pub async fn open_job_store(url: &str) -> Result<Arc<dyn JobStore>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let settings = jobs_postgres::PoolSettings::new(POSTGRES_CONNECTIONS);
        let store = jobs_postgres::PgJobStore::connect_with(url, &settings)
            .await
            .with_context(|| format!("connecting to postgres at {}", redact(url)))?;
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = jobs_sqlite::SqliteJobStore::connect(url)
            .await
            .with_context(|| format!("opening sqlite database {url}"))?;
        Ok(Arc::new(store))
    } else {
        bail!(
            "unsupported database URL {}: use sqlite://PATH or postgres://...",
            redact(url)
        )
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("sqlite://folio-data/folio.db"),
            "sqlite://folio-data/folio.db"
        );
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_with_a_clear_message() {
        let error = open_job_store("mysql://x").await.err().unwrap();
        assert!(
            error.to_string().contains("sqlite://PATH or postgres://"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn sqlite_urls_open_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/jobs.db", dir.path().display());
        let store = open_job_store(&url).await.unwrap();
        assert!(
            store
                .list_workers(chrono::DateTime::UNIX_EPOCH)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
