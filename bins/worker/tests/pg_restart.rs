//! A Postgres restart in the middle of a book: the real `api` and two real `worker`
//! processes (real tesseract) on a throwaway cluster of their own
//! ([`ThrowawayCluster`]; the shared server at 127.0.0.1:5432 is never touched).
//!
//! The server is stopped (`pg_ctl stop -m fast`) while a worker is reading a book, held
//! down for a few seconds, and started again. Checked: the api and both workers keep
//! running; `/readyz` answers 503 while the database is down and 200 (with both workers
//! live) after; the job keeps its lease (the outage is shorter than `stale_after`) and
//! completes with every page done and none recognized twice; both LISTEN connections come
//! back, and a job enqueued after the restart is picked up by its notification, far
//! sooner than the workers' 60 s poll interval. The figures are printed as one JSON line.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use books::{BookId, Books, OcrStatus, layout};
use jobs_core::testing::eventually_with;
use jobs_core::{JobId, JobStatus, JobStore};
use jobs_postgres::testing::ThrowawayCluster;
use ocr::testing::{character_error_rate, fixture_book, fixture_pages, require_tesseract};
use support::{
    Process, api_binary, checkpointed_pages, counting_tesseract, free_port, logs, path_with,
    recognitions, round, total, worker_binary,
};

mod support;

/// Pages of the book read across the restart.
const PAGES: usize = 48;
/// The worker timings: the outage (about `DOWN_FOR` plus the stop and start) is shorter
/// than `STALE_AFTER`, so no job may be requeued.
const HEARTBEAT_INTERVAL: &str = "1s";
const STALE_AFTER: &str = "12s";
/// The poll interval is far away: only notifications can wake the workers promptly.
const POLL_INTERVAL: &str = "60s";
/// How long the database stays down once stopped (a fault setting, not a wait for state).
const DOWN_FOR: Duration = Duration::from_secs(6);

struct Fixture {
    dir: tempfile::TempDir,
    database_url: String,
    storage_url: String,
    books: Books,
    jobs: Arc<dyn JobStore>,
    api: String,
    http: reqwest::Client,
}

impl Fixture {
    /// A book of `pages` fixture pages (repeated in order).
    async fn book(&self, id: &str, pages: usize) -> BookId {
        fixture_book(&self.books, id, id, pages).await
    }

    /// Starts an `ocr` job through the api.
    async fn start_ocr(&self, book_id: &BookId) -> JobId {
        let response = self
            .http
            .post(format!("{}/v1/books/{book_id}/jobs", self.api))
            .json(&serde_json::json!({"type": "ocr"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let job: serde_json::Value = response.json().await.unwrap();
        job["id"].as_str().unwrap().parse().unwrap()
    }

    /// `GET /readyz`: its status and body, or `None` when the api does not answer.
    async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let response = self
            .http
            .get(format!("{}/readyz", self.api))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    fn worker(&self, id: &str, tesseract_dir: &Path) -> Process {
        let mut command = Command::new(worker_binary());
        command
            .args(["--database-url", &self.database_url])
            .args(["--storage", &self.storage_url])
            .args(["--worker-id", id, "--types", "ocr"])
            .args(["--ocr-engine", "tesseract", "--ocr-concurrency", "1"])
            .args(["--manifest-flush-every", "1"])
            .args(["--heartbeat-interval", HEARTBEAT_INTERVAL])
            .args(["--stale-after", STALE_AFTER])
            .args(["--poll-interval", POLL_INTERVAL])
            .args(["--progress-flush", "200ms", "--shutdown-grace", "5s"])
            .env("PATH", path_with(tesseract_dir));
        Process::spawn(command, id, self.dir.path())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_workers_ride_out_a_postgres_restart_mid_book() {
    require_tesseract().await;
    let cluster = tokio::task::spawn_blocking(ThrowawayCluster::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database_url = cluster.url();
    let storage_url = format!("file://{}/objects", dir.path().display());
    let port = free_port();
    let api = Process::spawn(
        {
            let mut command = Command::new(api_binary());
            command
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--database-url", &database_url])
                .args(["--storage", &storage_url])
                .args(["--stale-after", STALE_AFTER]);
            command
        },
        "api",
        dir.path(),
    );
    let (tesseract_dir, runs) = counting_tesseract(dir.path());
    let jobs = app::stores::open_job_store(&database_url).await.unwrap();
    let books = Books::new(app::storage::open_blob_store(&storage_url).await.unwrap());
    let fixture = Fixture {
        dir,
        database_url,
        storage_url,
        books,
        jobs,
        api: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let workers = [
        fixture.worker("worker-a", &tesseract_dir),
        fixture.worker("worker-b", &tesseract_dir),
    ];
    eventually_with(
        Duration::from_secs(60),
        "the api ready with two live workers",
        || logs(&[&api, &workers[0], &workers[1]]),
        || async {
            let (status, body) = fixture.readyz().await?;
            (status == 200 && body["live_workers"] == 2).then_some(())
        },
    )
    .await;
    eventually_with(
        Duration::from_secs(30),
        "both workers listening",
        || logs(&[&workers[0], &workers[1]]),
        || async { (cluster.listeners("postgres").await? == 2).then_some(()) },
    )
    .await;

    // A book in progress: some pages durable, most to go.
    let book = fixture.book("restart", PAGES).await;
    let enqueued = Instant::now();
    let job_id = fixture.start_ocr(&book).await;
    let running = eventually_with(
        Duration::from_secs(120),
        "eight pages done",
        || logs(&[&workers[0], &workers[1]]),
        || async {
            let job = fixture.jobs.get(job_id).await.ok()?;
            (job.status.is_terminal() || checkpointed_pages(&job) >= 8).then_some(job)
        },
    )
    .await;
    assert_eq!(
        running.status,
        JobStatus::Running,
        "the book ended before the restart"
    );
    let runner = running.worker_id.clone().unwrap();

    // The database goes down.
    let stopping = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    let stop_s = (stopped - stopping).as_secs_f64();
    let (status, body) = eventually_with(
        Duration::from_secs(30),
        "/readyz to say not ready",
        || logs(&[&api]),
        || async {
            let (status, body) = fixture.readyz().await?;
            (status != 200).then_some((status, body))
        },
    )
    .await;
    let not_ready_after_s = stopped.elapsed().as_secs_f64();
    // The api's readiness check gives the database 2 s.
    assert!(
        not_ready_after_s < 4.0,
        "/readyz took {not_ready_after_s:.1} s to say not ready"
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["database"]["ok"], false, "{body}");
    assert_eq!(body["storage"]["ok"], true, "{body}");
    // Down for DOWN_FOR: every answer in that time is 503.
    let mut answers_while_down = vec![status];
    let _held = tokio::time::timeout_at((stopped + DOWN_FOR).into(), async {
        loop {
            if let Some((status, _)) = fixture.readyz().await {
                answers_while_down.push(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        answers_while_down.iter().all(|status| *status == 503),
        "{answers_while_down:?}"
    );
    api.assert_running();
    for worker in &workers {
        worker.assert_running();
    }

    // And comes back.
    let starting = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.resume();
        cluster
    })
    .await
    .unwrap();
    let started = Instant::now();
    let down_s = (started - stopping).as_secs_f64();
    eventually_with(
        Duration::from_secs(30),
        "/readyz to say ready with two live workers",
        || logs(&[&api, &workers[0], &workers[1]]),
        || async {
            let (status, body) = fixture.readyz().await?;
            (status == 200 && body["database"]["ok"] == true && body["live_workers"] == 2)
                .then_some(())
        },
    )
    .await;
    let ready_after_s = started.elapsed().as_secs_f64();
    eventually_with(
        Duration::from_secs(30),
        "both workers listening again",
        || logs(&[&workers[0], &workers[1]]),
        || async { (cluster.listeners("postgres").await? == 2).then_some(()) },
    )
    .await;
    let listening_after_s = started.elapsed().as_secs_f64();

    // A job enqueued now is picked up by its notification, not by the 60 s poll.
    let small = fixture.book("after-restart", 2).await;
    let small_id = fixture.start_ocr(&small).await;
    let small_job = eventually_with(
        Duration::from_secs(30),
        "the job after the restart to be picked up",
        || logs(&[&workers[0], &workers[1]]),
        || async {
            let job = fixture.jobs.get(small_id).await.ok()?;
            job.started_at.is_some().then_some(job)
        },
    )
    .await;
    let pickup = small_job.started_at.unwrap() - small_job.created_at;
    assert!(
        pickup < chrono::Duration::seconds(5),
        "picked up {pickup} after its insert: the notification was not heard\n{}",
        logs(&workers)
    );

    let done = eventually_with(
        Duration::from_secs(180),
        "the book's job to end",
        || logs(&[&workers[0], &workers[1]]),
        || async {
            let job = fixture.jobs.get(job_id).await.ok()?;
            job.status.is_terminal().then_some(job)
        },
    )
    .await;
    let complete_s = enqueued.elapsed().as_secs_f64();
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{done:#?}\n{}",
        logs(&workers)
    );

    // Every page done exactly once, its text stored and right.
    let manifest = fixture.books.manifest(&book).await.unwrap();
    assert_eq!(manifest.pages.len(), PAGES);
    let fixtures = fixture_pages();
    let mut pages_done = 0;
    for (entry, page) in manifest.pages.iter().zip(fixtures.iter().cycle()) {
        assert_eq!(entry.ocr.status, OcrStatus::Done, "page {}", entry.page);
        let key = layout::book_key(&book, &layout::ocr_text_path(entry.page));
        let text = fixture.books.store().get(&key).await.unwrap();
        let text = String::from_utf8(text.bytes.to_vec()).unwrap();
        assert!(
            character_error_rate(&page.text, &text) < 0.03,
            "page {}",
            entry.page
        );
        pages_done += 1;
    }
    let recorded_tries: u32 = manifest.pages.iter().map(|page| page.ocr.attempts).sum();
    // The small book's two pages went through the same tesseract.
    let small_done = eventually_with(
        Duration::from_secs(60),
        "the small book's job to end",
        || logs(&[&workers[0], &workers[1]]),
        || async {
            let job = fixture.jobs.get(small_id).await.ok()?;
            job.status.is_terminal().then_some(job)
        },
    )
    .await;
    assert_eq!(small_done.status, JobStatus::Completed, "{small_done:#?}");
    let pages_redone = total(&recognitions(&runs)) - PAGES - 2;

    let figures = serde_json::json!({
        "test": "pg_restart",
        "pages": PAGES,
        "pages_done": pages_done,
        "pages_redone": pages_redone,
        "manifest_tries": recorded_tries,
        "attempt": done.attempt,
        "worker": done.worker_id,
        "complete_s": round(complete_s),
        "stop_s": round(stop_s),
        "down_s": round(down_s),
        "start_s": round((started - starting).as_secs_f64()),
        "readyz_503_after_stop_s": round(not_ready_after_s),
        "readyz_answers_while_down": answers_while_down,
        "readyz_200_after_start_s": round(ready_after_s),
        "listening_after_start_s": round(listening_after_s),
        "pickup_after_restart_ms": pickup.num_milliseconds(),
    });
    eprintln!("{figures}");

    // The outage was shorter than stale_after: the lease held, nothing was requeued or
    // recognized twice, and the same worker finished the book.
    assert_eq!(done.attempt, 1, "{figures}\n{done:#?}");
    assert_eq!(
        done.worker_id.as_deref(),
        Some(runner.as_str()),
        "{figures}"
    );
    assert_eq!(pages_redone, 0, "{figures}");
    assert_eq!(recorded_tries as usize, PAGES, "{figures}");
    api.assert_running();
    for worker in &workers {
        worker.assert_running();
    }
    drop(workers);
    drop(api);
    drop(cluster);
}
