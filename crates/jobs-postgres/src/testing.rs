//! Fresh Postgres databases for tests: one per test, dropped when the test passes; and
//! [`ThrowawayCluster`], a server of its own for tests that stop or restart it.
//!
//! The server comes from `FOLIO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the local server of the development
//! machines). No server means a loud failure, never a skipped test. Databases that a
//! failed test left behind are dropped by the first test of a later run, after an hour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::PgJobStore;
use jobs_core::{Job, JobId};

/// The default test server.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "folio_test_";
/// Serializes CREATE DATABASE across processes (concurrent copies of template1 can fail).
const CREATE_LOCK: i64 = 0x466f_6c69_6f00;

/// One fresh, empty database.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// The URL of the test server.
pub fn server_url() -> String {
    std::env::var("FOLIO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn admin(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|error| {
        panic!(
            "cannot reach the test Postgres at {url}: {error}. Start it (CI does: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
             or set FOLIO_TEST_POSTGRES_URL"
        )
    })
}

async fn drop_leftovers(connection: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'folio\\_test\\_%'")
            .fetch_all(&mut *connection)
            .await
            .expect("list test databases");
    let cutoff = epoch_seconds().saturating_sub(3600);
    for name in names {
        let created = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *connection)
                .await;
        }
    }
}

impl TestDatabase {
    /// Creates a fresh database on the test server.
    pub async fn create() -> Self {
        let admin_url = server_url();
        let mut connection = admin(&admin_url).await;
        drop_leftovers(&mut connection).await;
        let name = format!("{PREFIX}{}_{:016x}", epoch_seconds(), rand::random::<u64>());
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(CREATE_LOCK)
            .execute(&mut connection)
            .await
            .expect("take the create lock");
        let created = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(CREATE_LOCK)
            .execute(&mut connection)
            .await
            .expect("release the create lock");
        created.unwrap_or_else(|error| panic!("create test database {name}: {error}"));
        let url = match admin_url.rsplit_once('/') {
            Some((server, _database)) => format!("{server}/{name}"),
            None => panic!("FOLIO_TEST_POSTGRES_URL must name a database: {admin_url}"),
        };
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on the database.
    pub async fn store(&self) -> PgJobStore {
        self.store_in(crate::Schema::default()).await
    }

    /// A migrated store on the database, its tables in `schema`.
    pub async fn store_in(&self, schema: crate::Schema) -> PgJobStore {
        let settings = crate::PoolSettings {
            schema,
            ..crate::PoolSettings::new(16)
        };
        PgJobStore::connect_with(&self.url, &settings)
            .await
            .expect("connect the test store")
    }

    /// Drops the database. A test calls this at its end, so a failed test leaves its
    /// database for inspection.
    pub async fn drop(self) {
        let mut connection = admin(&self.admin_url).await;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut connection)
            .await
            .expect("drop test database");
    }
}

/// A row lock on one job, held by an open transaction until [`JobRowLock::release`]: every
/// write to the job (heartbeats, checkpoints, its end) waits behind it, as behind a slow
/// transaction. Process tests use it to hold a worker between two of its writes.
#[derive(Debug)]
pub struct JobRowLock {
    /// The job as it was when the lock was taken.
    pub job: Job,
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl JobRowLock {
    /// Ends the transaction: the writes waiting for the row go on.
    pub async fn release(self) {
        self.transaction
            .rollback()
            .await
            .expect("release the row lock");
    }
}

impl TestDatabase {
    /// Locks job `id`'s row (`SELECT ... FOR UPDATE`) until the lock is released.
    pub async fn lock_job(&self, id: JobId) -> JobRowLock {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .expect("connect for a row lock");
        let mut transaction = pool.begin().await.expect("begin");
        let row = sqlx::query("SELECT * FROM folio_jobs WHERE id = $1 FOR UPDATE")
            .bind(id.as_uuid())
            .fetch_one(&mut *transaction)
            .await
            .expect("lock the job's row");
        let job = crate::rows::job_from_row(&row).expect("a job");
        JobRowLock { job, transaction }
    }
}

/// A Postgres cluster of its own, for tests and benchmarks that stop, restart or break the
/// server (the shared one at 127.0.0.1:5432 serves other tests at the same time).
///
/// [`ThrowawayCluster::start`] runs `initdb` (trust authentication, superuser `postgres`)
/// into a fresh temporary folder and starts the server on a free port of 127.0.0.1, with
/// its socket in that folder. The binaries come from `FOLIO_PG_BIN` or the newest
/// `/usr/lib/postgresql/<version>/bin`; as root they run as the `postgres` user (`runuser`),
/// which owns the folder. A missing binary is a loud failure, never a skipped test.
/// Dropping the cluster stops it (`immediate`) and removes the folder, also while a test
/// panics; a cluster left by a killed process is removed by the next one started. Its
/// methods block on `pg_ctl`: from async code, call them in `spawn_blocking`, or accept a
/// pause of the calling thread.
#[derive(Debug)]
pub struct ThrowawayCluster {
    dir: ClusterDir,
    bin: std::path::PathBuf,
    port: u16,
    /// Run the binaries through `runuser -u postgres --` (we are root).
    as_postgres: bool,
}

/// The prefix of the clusters' folders in the temporary folder.
const CLUSTER_PREFIX: &str = "folio-pg-";

impl ThrowawayCluster {
    /// Creates and starts a cluster; panics with what went wrong when it cannot.
    pub fn start() -> Self {
        let bin = postgres_bin();
        let as_postgres = running_as_root();
        remove_leftover_clusters(&bin, as_postgres);
        let dir = ClusterDir::create();
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
            .expect("record the owner");
        if as_postgres {
            chown_to_postgres(dir.path());
        }
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run_checked(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // A port that was free a moment ago may be taken by the time the server binds it.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            cluster.write_settings();
            match cluster.pg_ctl(&["start", "-w", "-t", "60"]) {
                Ok(()) => return cluster,
                Err(error) => last_error = error,
            }
        }
        panic!("the throwaway Postgres cluster did not start: {last_error}");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on it.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (`fast`: open transactions roll back, clients are disconnected) and
    /// waits until it is down.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast", "-t", "60"])
            .unwrap_or_else(|error| panic!("pg_ctl stop: {error}"));
    }

    /// Starts the stopped server again on the same port and waits until it accepts
    /// connections.
    pub fn resume(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60"])
            .unwrap_or_else(|error| panic!("pg_ctl start: {error}"));
    }

    /// `pg_ctl restart -m fast`: stop and start again.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-w", "-m", "fast", "-t", "60"])
            .unwrap_or_else(|error| panic!("pg_ctl restart: {error}"));
    }

    /// Whether the server runs (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).is_ok()
    }

    /// Its folder: the data directory, the socket and the server's log.
    pub fn folder(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn write_settings(&self) {
        let socket = self.dir.path();
        let settings = format!(
            "# written by ThrowawayCluster (last setting wins)\n\
             port = {}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             fsync = off\n\
             full_page_writes = off\n",
            self.port,
            socket.display()
        );
        let path = self.data().join("postgresql.conf");
        let mut conf = std::fs::read_to_string(&path).expect("read postgresql.conf");
        conf.push_str(&settings);
        std::fs::write(&path, conf).expect("write postgresql.conf");
    }

    fn command(&self, program: &str) -> std::process::Command {
        command_as(&self.bin, program, self.as_postgres)
    }

    fn run_checked(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let log = self.dir.path().join("server.log");
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(args)
            .output()
            .map_err(|error| format!("cannot run pg_ctl: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {args:?} failed ({}): {}{}\nserver log:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log()
            ))
        }
    }
}

/// The cluster's folder in the temporary folder, removed when dropped.
#[derive(Debug)]
struct ClusterDir(std::path::PathBuf);

impl ClusterDir {
    fn create() -> Self {
        loop {
            let path = std::env::temp_dir().join(format!(
                "{CLUSTER_PREFIX}{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Self(path),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => panic!("create the cluster folder {}: {error}", path.display()),
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-w", "-m", "immediate"])
            .output();
    }
}

/// The folder of the Postgres binaries: `FOLIO_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn postgres_bin() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("FOLIO_PG_BIN") {
        return bin.into();
    }
    let root = std::path::Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no Postgres server binaries (initdb, pg_ctl) in /usr/lib/postgresql/<version>/bin: \
             install postgresql (apt-get install postgresql) or set FOLIO_PG_BIN"
        ),
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn command_as(bin: &std::path::Path, program: &str, as_postgres: bool) -> std::process::Command {
    if as_postgres {
        let mut command = std::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        std::process::Command::new(bin.join(program))
    }
}

fn chown_to_postgres(path: &std::path::Path) {
    let id = |flag: &str| -> u32 {
        let output = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            output.status.success(),
            "running as root needs a postgres user to run the server: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g")))
        .expect("give the cluster folder to postgres");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Stops and removes the clusters whose owner process is gone (killed before it could drop
/// them). Once per process.
fn remove_leftover_clusters(bin: &std::path::Path, as_postgres: bool) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let is_cluster = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(CLUSTER_PREFIX));
        let owner = std::fs::read_to_string(entry.path().join("owner.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        let Some(owner) = owner.filter(|_| is_cluster) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let _ = command_as(bin, "pg_ctl", as_postgres)
            .arg("-D")
            .arg(entry.path().join("data"))
            .args(["stop", "-w", "-m", "immediate"])
            .output();
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

impl ThrowawayCluster {
    /// How many connections of database `database` listen for jobs ([`crate::NOTIFY_CHANNEL`]):
    /// the backends whose last statement was its `LISTEN`. `None` when the server does not
    /// answer.
    pub async fn listeners(&self, database: &str) -> Option<i64> {
        let mut connection = PgConnection::connect(&self.url()).await.ok()?;
        let count = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND state = 'idle' AND query ILIKE 'LISTEN%'",
        )
        .bind(database)
        .fetch_one(&mut connection)
        .await
        .ok();
        let _ = connection.close().await;
        count
    }
}
