//! Process-level tests of the `worker` binary on Postgres: a worker killed, paused or
//! stopped mid-job, and a second worker that takes over; the metrics server; the start-up
//! checks of the OCR engine. Modules: `ocr` (bulk OCR with real tesseract: a worker killed
//! mid-book and one that takes the book over), `startup` (processes starting at once on an empty
//! database), `deploy` (the files in `deploy/`), `support` (the helpers the package's process
//! tests share: `tests/support`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use app::handlers::{BENCH_STEPS, StepsCheckpoint, StepsPayload, StepsRun};
use jobs_core::testing::{enqueue_new, eventually_with, wait_for_job_with};
use jobs_core::{Job, JobId, JobStatus, JobStore, LockService, RecoveryPolicy, SystemClock};
use jobs_postgres::testing::TestDatabase;
use support::{Process, worker_binary};

mod deploy;
mod ingest;
mod ocr;
mod startup;
#[path = "../support/mod.rs"]
mod support;

/// How long the suite waits for what it expects.
const WAIT: Duration = Duration::from_secs(30);

/// A `worker` process running `bench.steps` jobs; killed when dropped.
struct WorkerProcess {
    id: String,
    process: Process,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    fn start(database_url: &str, id: &str) -> Self {
        Self::start_with(database_url, id, &["--poll-interval", "1s"])
    }

    /// Starts a worker with the suite's timings and `extra` flags (a poll interval among them).
    fn start_with(database_url: &str, id: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(worker_binary());
        command
            .args([
                "--database-url",
                database_url,
                "--types",
                BENCH_STEPS,
                "--worker-id",
                id,
            ])
            .args(["--heartbeat-interval", "200ms", "--stale-after", "2s"])
            .args(extra)
            .args([
                "--progress-flush",
                "100ms",
                "--shutdown-grace",
                "5s",
                "--concurrency",
                "2",
            ])
            .env("RUST_LOG", "info,jobs_core=debug");
        Self {
            id: id.to_owned(),
            process: Process::spawn(command, id, dir.path()),
            _dir: dir,
        }
    }

    fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    fn log(&self) -> String {
        self.process.labelled_log()
    }
}

struct Setup {
    database: TestDatabase,
    store: Arc<dyn JobStore>,
    lock: LockService,
}

async fn setup() -> Setup {
    let database = TestDatabase::create().await;
    let store: Arc<dyn JobStore> = Arc::new(database.store().await);
    let lock = LockService::new(
        store.clone(),
        Arc::new(SystemClock),
        RecoveryPolicy::default(),
    );
    Setup {
        database,
        store,
        lock,
    }
}

impl Setup {
    async fn enqueue(&self, steps: u32, step_ms: u64) -> Job {
        let payload = serde_json::to_value(StepsPayload { steps, step_ms }).unwrap();
        enqueue_new(&self.lock, "book-1", BENCH_STEPS, payload).await
    }

    /// Polls the job until `done` holds.
    async fn wait_for(&self, id: JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        wait_for_job_with(self.store.as_ref(), id, WAIT, what, String::new, done).await
    }
}

fn checkpoint(job: &Job) -> StepsCheckpoint {
    serde_json::from_value(job.checkpoint.clone().expect("a checkpoint")).unwrap()
}

fn run(worker: &WorkerProcess, from: u32) -> StepsRun {
    StepsRun {
        worker: worker.id.clone(),
        from,
    }
}

async fn wait_for_log(worker: &WorkerProcess, needle: &str) {
    let what = format!("{} to log {needle:?}", worker.id);
    eventually_with(WAIT, &what, String::new, || async {
        let log = worker.log();
        if log.contains(needle) {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_finished_by_another_worker_from_its_checkpoint() {
    let setup = setup().await;
    let first = WorkerProcess::start(setup.database.url(), "worker-a");
    let job = setup.enqueue(30, 100).await;
    setup
        .wait_for(job.id, "progress", |job| job.progress.completed >= 5)
        .await;
    first.signal("-KILL");
    drop(first);
    let durable = checkpoint(&setup.store.get(job.id).await.unwrap());
    assert!(durable.done >= 5);

    let second = WorkerProcess::start(setup.database.url(), "worker-b");
    let done = setup
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    assert_eq!(done.worker_id.as_deref(), Some("worker-b"));
    assert_eq!(done.attempt, 2);
    let first_run = StepsRun {
        worker: "worker-a".into(),
        from: 1,
    };
    assert_eq!(
        checkpoint(&done).runs,
        [first_run, run(&second, durable.done + 1)]
    );
    assert_eq!(checkpoint(&done).done, 30);
    drop(second);
    setup.database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_is_fenced_out_after_another_takes_its_job_over() {
    let setup = setup().await;
    let paused = WorkerProcess::start(setup.database.url(), "worker-a");
    let job = setup.enqueue(40, 100).await;
    setup
        .wait_for(job.id, "progress", |job| job.progress.completed >= 3)
        .await;
    paused.signal("-STOP");

    let second = WorkerProcess::start(setup.database.url(), "worker-b");
    let taken = setup
        .wait_for(job.id, "takeover", |job| {
            job.worker_id.as_deref() == Some("worker-b")
        })
        .await;
    assert_eq!(taken.attempt, 2);
    paused.signal("-CONT");
    wait_for_log(&paused, "lease lost").await;

    let done = setup
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    assert_eq!(
        done.worker_id.as_deref(),
        Some("worker-b"),
        "completed with the second worker's result"
    );
    assert_eq!(done.attempt, 2);
    let runs = checkpoint(&done).runs;
    assert_eq!(
        runs.len(),
        2,
        "the paused worker wrote nothing after its takeover: {runs:?}"
    );
    assert_eq!(runs[0], run(&paused, 1));
    assert_eq!(runs[1].worker, second.id);
    // Nothing the paused worker does later changes the finished job.
    let later = setup.store.get(job.id).await.unwrap();
    assert_eq!(later, done);
    drop((paused, second));
    setup.database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_and_another_worker_takes_it_within_a_second() {
    let setup = setup().await;
    let stopping = WorkerProcess::start(setup.database.url(), "worker-a");
    let job = setup.enqueue(30, 100).await;
    setup
        .wait_for(job.id, "progress", |job| job.progress.completed >= 3)
        .await;
    // Its poll is far away: only the requeue's notification can wake it within a second.
    let idle = WorkerProcess::start_with(
        setup.database.url(),
        "worker-b",
        &["--poll-interval", "60s"],
    );
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    eventually_with(WAIT, "worker-b to register", String::new, || async {
        let workers = setup.store.list_workers(since).await.unwrap();
        if workers.iter().any(|worker| worker.id == "worker-b") {
            Ok(())
        } else {
            Err(format!("{workers:?}"))
        }
    })
    .await;

    stopping.signal("-TERM");
    let taken = setup
        .wait_for(job.id, "takeover", |job| {
            job.worker_id.as_deref() == Some("worker-b")
        })
        .await;
    let status = stopping
        .process
        .wait_for_exit(Duration::from_secs(30))
        .await;
    assert!(
        status.is_some_and(|status| status.success()),
        "worker-a exits cleanly on SIGTERM: {status:?}\n{}",
        stopping.log()
    );
    assert_eq!(
        taken.attempt, 1,
        "the interrupted claim did not use an attempt"
    );
    assert_eq!(
        taken.error.as_ref().map(|error| error.code.as_str()),
        Some("interrupted"),
        "the job shows why it was handed back"
    );
    let pickup = taken.started_at.unwrap() - taken.run_at;
    assert!(
        pickup < chrono::Duration::seconds(1),
        "picked up after {pickup}"
    );
    assert!(stopping.log().contains("worker stopped"));

    let done = setup
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;
    let durable_before_stop = checkpoint(&done).runs[1].from - 1;
    assert!(durable_before_stop >= 3);
    assert_eq!(checkpoint(&done).runs[0], run(&stopping, 1));
    drop((idle, stopping));
    setup.database.drop().await;
}

/// `--schedule` on two worker processes: a job per tick of an every-second schedule, each
/// tick enqueued by one of them, every job run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_given_one_schedule_enqueue_each_tick_once() {
    let setup = setup().await;
    let flags = [
        "--types",
        app::handlers::BENCH_NOOP,
        "--schedule",
        "beat=* * * * * *:bench.noop",
    ];
    let workers = [
        WorkerProcess::start_with(setup.database.url(), "scheduler-a", &flags),
        WorkerProcess::start_with(setup.database.url(), "scheduler-b", &flags),
    ];
    let query = jobs_core::JobQuery {
        resource_key: Some("beat".to_owned()),
        limit: 100,
        ..jobs_core::JobQuery::default()
    };
    let jobs = eventually_with(
        WAIT,
        "four ticks' jobs to complete",
        || workers.iter().map(WorkerProcess::log).collect(),
        || async {
            let jobs = setup.store.list(&query).await.unwrap();
            let done = jobs
                .iter()
                .filter(|job| job.status == JobStatus::Completed)
                .count();
            (done >= 4).then_some(jobs)
        },
    )
    .await;
    for worker in &workers {
        worker.signal("-TERM");
    }
    for worker in &workers {
        let status = worker.process.wait_for_exit(WAIT).await;
        assert!(
            status.is_some_and(|status| status.success()),
            "{}",
            worker.log()
        );
    }
    let enqueued: usize = workers
        .iter()
        .map(|worker| worker.log().matches("enqueued a scheduled job").count())
        .sum();
    let jobs_now = setup.store.list(&query).await.unwrap();
    assert!(jobs_now.len() >= jobs.len());
    assert_eq!(
        enqueued,
        jobs_now.len(),
        "each job enqueued by exactly one worker: {jobs_now:?}"
    );
    assert!(
        jobs.iter()
            .all(|job| job.job_type == app::handlers::BENCH_NOOP)
    );
    setup.database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_serves_health_and_metrics_over_http() {
    let setup = setup().await;
    // Port 0: the worker logs the address it bound.
    let worker = WorkerProcess::start_with(
        setup.database.url(),
        "worker-a",
        &[
            "--poll-interval",
            "1s",
            "--log-format",
            "json",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    wait_for_log(&worker, "serving /healthz and /metrics").await;
    let address = worker
        .process
        .logged_address()
        .expect("the metrics address in the log");
    let job = setup.enqueue(3, 10).await;
    setup
        .wait_for(job.id, "completion", |job| {
            job.status == JobStatus::Completed
        })
        .await;

    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("http://{address}{path}")).send();
        async move {
            let response = request.await.expect("the metrics server answers");
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    let metrics = eventually_with(
        WAIT,
        "the completion to be counted",
        String::new,
        || async {
            let (status, text) = get("/metrics").await;
            assert_eq!(status, 200);
            if text.contains("folio_worker_jobs_finished_total{outcome=\"completed\"} 1") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    for line in [
        "folio_worker_jobs_claimed_total 1",
        "folio_worker_lease_lost_total 0",
        "folio_worker_job_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    for name in [
        "folio_worker_heartbeats_total",
        "folio_worker_rescues_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    drop(worker);
    setup.database.drop().await;
}

/// Runs the worker binary to its end with `PATH` set to `path` (`tesseract` is found there or
/// not), on a SQLite database in a temp dir: its exit status and standard error.
fn run_worker_with_path(
    path: &std::path::Path,
    extra: &[&str],
) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(worker_binary())
        .args([
            "--database-url",
            &format!("sqlite://{}/jobs.db", dir.path().display()),
            "--storage",
            &format!("file://{}/objects", dir.path().display()),
        ])
        .args(extra)
        .env("PATH", path)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_worker_without_tesseract_exits_at_start_naming_the_package() {
    // A PATH with no tesseract on it (the worker needs nothing else from PATH to start).
    let empty = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (status, stderr) = run_worker_with_path(empty.path(), &[]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("tesseract-ocr") && stderr.contains("scripts/install-tesseract.sh"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // A worker that runs no ocr jobs does not need tesseract: it starts (and is stopped).
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(worker_binary())
        .args([
            "--database-url",
            &format!("sqlite://{}/jobs.db", dir.path().display()),
            "--storage",
            &format!("file://{}/objects", dir.path().display()),
            "--types",
            "guidelines,finalize",
        ])
        .env("PATH", empty.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "it keeps running");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_worker_lacking_a_configured_language_exits_at_start_naming_its_package() {
    // tesseract itself is there: PATH holds a link to it, and nothing else.
    let tesseract = ["/usr/bin/tesseract", "/usr/local/bin/tesseract"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("this test needs the tesseract CLI: run scripts/install-tesseract.sh");
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(tesseract, bin.path().join("tesseract")).unwrap();
    let (status, stderr) =
        run_worker_with_path(bin.path(), &["--tesseract-languages", "eng+zzz_test"]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("tesseract-ocr-zzz-test")
            && stderr.contains("scripts/install-tesseract.sh zzz_test"),
        "{stderr}"
    );
}
