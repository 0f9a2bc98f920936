//! `cargo xtask bench recovery [--pages N] [--stale-after D] [--heartbeat-interval D]
//! [--second at-kill|standby]` (SPEC section 8): a `worker` process SIGKILLed in the middle
//! of a book's `ocr` job (real tesseract), and a second worker process that takes the job
//! over from its checkpoint.
//!
//! Both workers are the release `worker` binary (built here) with the product's timings:
//! the defaults, or the `--stale-after` / `--heartbeat-interval` given, on a fresh database
//! of the local Postgres (`TestDatabase`) and a `file://` store. The book is `--pages`
//! fixture pages (default 40, the twelve fixtures repeated); the first worker is killed
//! once a third of them are done. The second worker is started right after the kill
//! (`--second at-kill`, the default: a replacement process) or is running from the start
//! (`--second standby`: the survivor of a pair).
//!
//! Figures:
//! - `recover_s`: from the kill until the second worker has the job running again: its
//!   claim's `started_at` (written by the claim) minus the time of the kill. The job must
//!   first be stale (`stale_after` since its last heartbeat, which progress keeps within a
//!   second of the kill), and then be found by a rescuer, which every worker runs every
//!   second (the first time at its start): so about `stale_after` when the second worker
//!   starts at the kill, and up to `stale_after` + 1 s for a standby worker.
//! - `next_page_s`: from the kill until the second worker made its first page durable (the
//!   checkpoint grew; polled every 50 ms).
//! - `pages_redone`: page recognitions beyond one per page, counted by a `tesseract` on
//!   the workers' `PATH` that logs each page it is given before running the real one: the
//!   pages the killed worker recognized (or was recognizing) that its durable checkpoint
//!   did not name yet.
//! - `pages_lost`: pages of the book not done in the manifest at the end, or whose stored
//!   text is missing or not the page's text (character error rate 3 % or more). Must be
//!   0: the bench fails otherwise, after printing its figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use books::{BookId, Books, IngestLimits, OcrStatus, layout};
use jobs_core::{Acquire, Job, JobId, JobStatus, JobStore, LockService, SystemClock};
use jobs_postgres::testing::TestDatabase;
use ocr::testing::{character_error_rate, fixture_pages, fixture_uploads};

use crate::flags::{Flags, report};

/// Longest the whole job may take.
const JOB_LIMIT: Duration = Duration::from_secs(600);

pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let settings = Settings::parse(flags)?;
    ocr::TesseractEngine::default()
        .version()
        .await
        .context("the tesseract CLI (scripts/install-tesseract.sh)")?;
    let [worker_binary] = <[PathBuf; 1]>::try_from(crate::build_release(&["worker"])?)
        .expect("one binary for one package");
    let bench = Bench::set_up(settings, worker_binary).await?;

    let mut first = bench.launch("recovery-a")?;
    let job = bench.acquire_job().await?;
    let standby = bench.start_standby(job, &first).await?;
    let before_kill = bench.wait_for_kill_point(job, &first).await?;
    let mut takeover = bench.take_over(job, &mut first, standby).await?;
    let done = bench.finish(job, &mut takeover.second).await?;

    let pages_lost = bench.report(&before_kill, &takeover, &done).await?;
    drop(first);
    drop(takeover);
    bench.database.drop().await;
    if pages_lost > 0 {
        bail!("{pages_lost} page(s) lost");
    }
    Ok(())
}

/// The bench's flags.
struct Settings {
    pages: usize,
    /// As given to the workers, and in seconds for the report.
    stale_after: String,
    stale_after_s: f64,
    heartbeat_interval: String,
    heartbeat_interval_s: f64,
    /// `at-kill` or `standby`.
    second: String,
}

impl Settings {
    fn parse(flags: &Flags) -> Result<Self> {
        let pages: usize = flags.get("pages", 40)?;
        if pages < 3 {
            bail!("--pages must be at least 3");
        }
        let stale_after = flags.text("stale-after", "30s");
        let heartbeat_interval = flags.text("heartbeat-interval", "5s");
        let stale_after_s = seconds(&stale_after)?;
        let heartbeat_interval_s = seconds(&heartbeat_interval)?;
        let second = flags.text("second", "at-kill");
        if second != "at-kill" && second != "standby" {
            bail!("--second {second}: use at-kill or standby");
        }
        Ok(Self {
            pages,
            stale_after,
            stale_after_s,
            heartbeat_interval,
            heartbeat_interval_s,
            second,
        })
    }
}

/// What the workers run on: a fresh database, a `file://` store in a temporary folder with
/// the book ingested, and the counting `tesseract`.
struct Bench {
    settings: Settings,
    worker_binary: PathBuf,
    database: TestDatabase,
    dir: tempfile::TempDir,
    storage_url: String,
    books: Books,
    book_id: BookId,
    jobs: Arc<dyn JobStore>,
    tesseract_dir: PathBuf,
    /// The counting `tesseract`'s log: a line per page recognized.
    runs: PathBuf,
}

/// The second worker's take-over of the job, timed from the first one's kill.
struct Takeover {
    second: WorkerProcess,
    /// Pages the checkpoint named right after the kill.
    durable: usize,
    recover_s: f64,
    next_page_s: f64,
}

impl Bench {
    async fn set_up(settings: Settings, worker_binary: PathBuf) -> Result<Self> {
        let database = TestDatabase::create().await;
        let dir = tempfile::tempdir()?;
        let storage_url = format!("file://{}/objects", dir.path().display());
        let books = Books::new(app::storage::open_blob_store(&storage_url).await?);
        let book_id = BookId::parse("recovery")?;
        books.create(&book_id, "Recovery benchmark").await?;
        ingest_fixture_pages(&books, &book_id, settings.pages).await?;
        let jobs = app::stores::open_job_store(database.url()).await?;
        let (tesseract_dir, runs) = counting_tesseract(dir.path())?;
        Ok(Self {
            settings,
            worker_binary,
            database,
            dir,
            storage_url,
            books,
            book_id,
            jobs,
            tesseract_dir,
            runs,
        })
    }

    /// Starts a worker process for `ocr` jobs with the bench's timings.
    fn launch(&self, id: &str) -> Result<WorkerProcess> {
        WorkerProcess::start(
            &self.worker_binary,
            &[
                "--database-url",
                self.database.url(),
                "--storage",
                &self.storage_url,
                "--worker-id",
                id,
                "--types",
                ocr::OCR_JOB_TYPE,
                "--stale-after",
                &self.settings.stale_after,
                "--heartbeat-interval",
                &self.settings.heartbeat_interval,
            ],
            &self.tesseract_dir,
            self.dir.path(),
            id,
        )
    }

    /// Creates the book's `ocr` job.
    async fn acquire_job(&self) -> Result<JobId> {
        let lock = LockService::new(
            self.jobs.clone(),
            Arc::new(SystemClock),
            jobs_core::RecoveryPolicy::default(),
        );
        match lock
            .acquire(
                self.book_id.as_str(),
                ocr::OCR_JOB_TYPE,
                serde_json::json!({}),
            )
            .await?
        {
            Acquire::Created(job) => Ok(job.id),
            Acquire::Busy(job) => bail!("a fresh database has an active job: {job:?}"),
        }
    }

    /// With `--second standby`, the second worker, started once the first has claimed the
    /// job, so the job is the first's whichever worker polls sooner.
    async fn start_standby(
        &self,
        job: JobId,
        first: &WorkerProcess,
    ) -> Result<Option<WorkerProcess>> {
        if self.settings.second != "standby" {
            return Ok(None);
        }
        wait_for(&self.jobs, job, &[first], |job| {
            job.status.is_terminal() || job.worker_id.as_deref() == Some("recovery-a")
        })
        .await?;
        Ok(Some(self.launch("recovery-b")?))
    }

    /// Waits until the first worker has done a third of the pages.
    async fn wait_for_kill_point(&self, job: JobId, first: &WorkerProcess) -> Result<Job> {
        let kill_at = self.settings.pages.div_ceil(3) as u64;
        let before_kill = wait_for(&self.jobs, job, &[first], |job| {
            job.status.is_terminal()
                || (job.worker_id.as_deref() == Some("recovery-a")
                    && job.progress.completed >= kill_at)
        })
        .await?;
        if before_kill.status.is_terminal()
            || before_kill.worker_id.as_deref() != Some("recovery-a")
        {
            bail!("the first worker did not run the job to a third: {before_kill:#?}");
        }
        Ok(before_kill)
    }

    /// Kills the first worker, has the second (the standby, or one started now) take the job
    /// over, and times its claim and its first durable page.
    async fn take_over(
        &self,
        job: JobId,
        first: &mut WorkerProcess,
        standby: Option<WorkerProcess>,
    ) -> Result<Takeover> {
        first.kill()?;
        let killed_at = jobs_core::Clock::now(&SystemClock);
        let killed = Instant::now();
        let second = match standby {
            Some(worker) => worker,
            None => self.launch("recovery-b")?,
        };
        let durable = done_pages(&self.jobs.get(job).await?);

        let taken = wait_for(&self.jobs, job, &[first, &second], |job| {
            job.worker_id.as_deref() == Some("recovery-b") || job.status.is_terminal()
        })
        .await?;
        let started = taken
            .started_at
            .filter(|_| taken.worker_id.as_deref() == Some("recovery-b"))
            .with_context(|| format!("the second worker never claimed the job: {taken:#?}"))?;
        let recover_s = (started - killed_at).as_seconds_f64();
        wait_for(&self.jobs, job, &[&second], |job| {
            job.status.is_terminal() || done_pages(job) > durable
        })
        .await?;
        let next_page_s = killed.elapsed().as_secs_f64();
        Ok(Takeover {
            second,
            durable,
            recover_s,
            next_page_s,
        })
    }

    /// Waits for the job to end, stops the second worker, and fails unless it completed.
    async fn finish(&self, job: JobId, second: &mut WorkerProcess) -> Result<Job> {
        let done = wait_for(&self.jobs, job, &[&*second], |job| job.status.is_terminal()).await?;
        second.kill()?;
        if done.status != JobStatus::Completed {
            bail!("the job ended {}: {done:#?}\n{}", done.status, second.log());
        }
        Ok(done)
    }

    /// Prints the figures and returns `pages_lost`.
    async fn report(&self, before_kill: &Job, takeover: &Takeover, done: &Job) -> Result<usize> {
        let pages = self.settings.pages;
        let pages_lost = lost_pages(&self.books, &self.book_id, pages).await?;
        let recognitions = std::fs::read_to_string(&self.runs)
            .map(|text| text.lines().count())
            .unwrap_or(0);
        let round = |value: f64| (value * 1000.0).round() / 1000.0;
        report(&serde_json::json!({
            "bench": "recovery",
            "pages": pages,
            "second": self.settings.second,
            "stale_after_s": self.settings.stale_after_s,
            "heartbeat_interval_s": self.settings.heartbeat_interval_s,
            "killed_after_pages": before_kill.progress.completed,
            "durable_at_kill": takeover.durable,
            "recover_s": round(takeover.recover_s),
            "next_page_s": round(takeover.next_page_s),
            "pages_redone": recognitions.saturating_sub(pages),
            "pages_lost": pages_lost,
            "attempt": done.attempt,
        }));
        Ok(pages_lost)
    }
}

/// Uploads `pages` pages to the book: the fixture pages, repeated.
async fn ingest_fixture_pages(books: &Books, book_id: &BookId, pages: usize) -> Result<()> {
    let files = fixture_uploads(pages);
    books
        .ingest_pages(book_id, files, &IngestLimits::default())
        .await?;
    Ok(())
}

/// Seconds of a duration written as the workers take it: `500ms`, `4s`, `2m`.
fn seconds(text: &str) -> Result<f64> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let number: f64 = number
        .parse()
        .with_context(|| format!("{text}: not a duration"))?;
    Ok(match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => bail!("{text}: use ms, s or m"),
    })
}

/// A folder with a `tesseract` that appends a line to `runs.log` for each page it is
/// given, then runs the real one.
fn counting_tesseract(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let real = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|path| path.join("tesseract"))
                .find(|path| path.is_file())
        })
        .context("tesseract on PATH")?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let runs = dir.join("runs.log");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = stdin ]; then echo page >> '{}'; fi\nexec '{}' \"$@\"\n",
        runs.display(),
        real.display()
    );
    let shim = bin.join("tesseract");
    std::fs::write(&shim, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    Ok((bin, runs))
}

/// A `worker` process, killed when dropped.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    fn start(
        binary: &Path,
        args: &[&str],
        tesseract_dir: &Path,
        dir: &Path,
        id: &str,
    ) -> Result<Self> {
        let log = dir.join(format!("{id}.log"));
        let path = format!(
            "{}:{}",
            tesseract_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(binary)
            .args(args)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, log })
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn done_pages(job: &Job) -> usize {
    job.checkpoint
        .as_ref()
        .and_then(|checkpoint| checkpoint["done"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Polls the job every 50 ms until `done` holds; fails after [`JOB_LIMIT`] with the logs.
async fn wait_for(
    jobs: &Arc<dyn JobStore>,
    id: JobId,
    workers: &[&WorkerProcess],
    done: impl Fn(&Job) -> bool,
) -> Result<Job> {
    let deadline = Instant::now() + JOB_LIMIT;
    loop {
        let job = jobs.get(id).await?;
        if done(&job) {
            return Ok(job);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = workers.iter().map(|worker| worker.log()).collect();
            bail!("timed out: {job:#?}\n{}", logs.join("\n---\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The book's pages that are not done with their own text stored.
async fn lost_pages(books: &Books, book_id: &BookId, pages: usize) -> Result<usize> {
    let manifest = books.manifest(book_id).await?;
    let fixtures = fixture_pages();
    let mut lost = pages.saturating_sub(manifest.pages.len());
    for (entry, fixture) in manifest.pages.iter().zip(fixtures.iter().cycle()) {
        let key = layout::book_key(book_id, &layout::ocr_text_path(entry.page));
        let text = match books.store().get(&key).await {
            Ok(blob) => String::from_utf8_lossy(&blob.bytes).into_owned(),
            Err(_) => String::new(),
        };
        if entry.ocr.status != OcrStatus::Done || character_error_rate(&fixture.text, &text) >= 0.03
        {
            lost += 1;
        }
    }
    Ok(lost)
}
