//! Processes that start at the same moment on an empty database (issue 15, acceptance 3):
//! two `api` and three `worker` processes are spawned back to back on a fresh database, so
//! each runs the migrations while the others do. Checked: all five start (both apis answer
//! `/readyz` 200 and count the three workers live), every migration is recorded exactly
//! once and succeeded, no log mentions a failed migration, and SIGTERM stops all five
//! cleanly. A few rounds, each on a fresh database, to give the race chances to go wrong:
//! on Postgres (sqlx serializes the runs with an advisory lock) and on one SQLite file
//! shared by the five (the store migrates in one `BEGIN IMMEDIATE` transaction).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jobs_postgres::testing::TestDatabase;
use sqlx::Connection;

use crate::support::{Process, api_binary, logs, worker_binary};
use jobs_core::testing::eventually_with;

const ROUNDS: usize = 3;
const APIS: usize = 2;
const WORKERS: usize = 3;
/// How long five debug builds get to connect, migrate and start on a busy machine.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Starts the five on `database_url`, with their logs and file storage in `dir`. The
/// commands are built first and spawned back to back: the processes start within a few
/// milliseconds of each other, while connecting and migrating takes each of them longer.
fn start_at_once(database_url: &str, dir: &Path) -> Vec<Process> {
    let storage = format!("file://{}/objects", dir.display());
    let common = |command: &mut Command| {
        command
            .args(["--database-url", database_url, "--storage", &storage])
            .args(["--log-format", "json"]);
    };
    let mut commands = Vec::new();
    let api = api_binary();
    for index in 1..=APIS {
        let mut command = Command::new(&api);
        common(&mut command);
        command.args(["--listen", "127.0.0.1:0"]);
        commands.push((format!("api-{index}"), command));
    }
    for index in 1..=WORKERS {
        let mut command = Command::new(worker_binary());
        common(&mut command);
        // Types that need no OCR engine: what is tested here is the start, not tesseract.
        command.args(["--types", "guidelines,finalize"]);
        command.args(["--worker-id", &format!("worker-{index}")]);
        commands.push((format!("worker-{index}"), command));
    }
    commands
        .into_iter()
        .map(|(name, command)| Process::spawn(command, &name, dir))
        .collect()
}

/// Waits until every process runs, both apis answer `/readyz` 200 and each counts the
/// three workers live; fails at once when a process exits.
async fn wait_until_all_started(processes: &[Process]) {
    let http = reqwest::Client::new();
    eventually_with(
        START_LIMIT,
        "two ready apis that each see three live workers",
        String::new,
        || async {
            for process in processes {
                if let Some(status) = process.exit_status() {
                    panic!(
                        "{} exited with {status} while starting\n{}",
                        process.name,
                        logs(processes)
                    );
                }
            }
            for api in processes
                .iter()
                .filter(|process| process.name.starts_with("api"))
            {
                let Some(address) = api.logged_address() else {
                    return Err(format!("{} is not listening yet", api.name));
                };
                let response = http
                    .get(format!("http://{address}/readyz"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|error| format!("{}: {error}", api.name))?;
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if status != 200 || body["live_workers"] != WORKERS {
                    return Err(format!("{}: {status} {body}", api.name));
                }
            }
            Ok(())
        },
    )
    .await;
}

/// The migration versions every process carries. The SQLite store's folder holds the same
/// versions as the Postgres store's (a tidy test compares them).
fn expected_versions() -> Vec<i64> {
    jobs_postgres::migrator()
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| migration.version)
        .collect()
}

/// Checks the migration records (version and success, in version order), the logs, and a
/// clean stop of every process on SIGTERM.
async fn check_and_stop(round: usize, processes: &[Process], applied: Vec<(i64, bool)>) {
    let versions: Vec<i64> = applied.iter().map(|(version, _)| *version).collect();
    assert_eq!(
        versions,
        expected_versions(),
        "round {round}: each migration recorded once\n{}",
        logs(processes)
    );
    assert!(
        applied.iter().all(|(_, success)| *success),
        "round {round}: a migration did not succeed: {applied:?}"
    );
    for process in processes {
        assert_eq!(process.exit_status(), None, "{}", process.labelled_log());
        process.signal("-TERM");
    }
    for process in processes {
        let status = process.wait_for_exit(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|status| status.success()),
            "round {round}: {} ends cleanly on SIGTERM: {status:?}\n{}",
            process.name,
            process.labelled_log()
        );
        let log = process.labelled_log();
        let failed_migration = log.lines().find(|line| {
            let line = line.to_lowercase();
            line.contains("migrat")
                && ["error", "warn", "fail", "panic"]
                    .iter()
                    .any(|word| line.contains(word))
        });
        assert_eq!(failed_migration, None, "round {round}\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_starting_at_once_on_an_empty_postgres_database_migrate_it_once_and_all_start()
 {
    for round in 1..=ROUNDS {
        let database = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let processes = start_at_once(database.url(), dir.path());
        wait_until_all_started(&processes).await;
        let mut connection = sqlx::PgConnection::connect(database.url()).await.unwrap();
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM folio_schema_migrations ORDER BY version")
                .fetch_all(&mut connection)
                .await
                .unwrap();
        connection.close().await.unwrap();
        check_and_stop(round, &processes, applied).await;
        drop(processes);
        database.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_starting_at_once_on_a_new_sqlite_file_migrate_it_once_and_all_start() {
    for round in 1..=ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/folio.db", dir.path().display());
        let processes = start_at_once(&url, dir.path());
        wait_until_all_started(&processes).await;
        let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM folio_schema_migrations ORDER BY version")
                .fetch_all(&mut connection)
                .await
                .unwrap();
        connection.close().await.unwrap();
        check_and_stop(round, &processes, applied).await;
    }
}
