//! Flags shared by the binaries. Every flag has an env twin: `FOLIO_` + the flag in upper
//! snake case, or the standard name where one exists (`DATABASE_URL`). Durations are
//! written as `500ms`, `5s`, `10m`.

use std::time::Duration;

use clap::{Args, ValueEnum};
use jobs_core::runtime::WorkerConfig;

/// Where state lives and how logs look.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The job database: `sqlite://PATH` (embedded default) or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://folio-data/folio.db"
    )]
    pub database_url: String,

    /// Object storage: `file://DIR` or `s3://BUCKET/PREFIX` (with `AWS_ENDPOINT_URL` for
    /// S3-compatible servers).
    #[arg(
        long,
        env = "FOLIO_STORAGE",
        default_value = "file://folio-data/objects"
    )]
    pub storage: String,

    /// Log lines as text for people, or as JSON objects (one a line) for a log collector.
    #[arg(long, env = "FOLIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export traces with OpenTelemetry to this OTLP collector over HTTP/protobuf, e.g.
    /// `http://localhost:4318` (`/v1/traces` is appended unless the URL ends with it). Off
    /// when not given (builds with the `otlp` feature also honour the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`). A build without the `otlp` feature refuses to start
    /// with it.
    #[arg(long, env = "FOLIO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// How logs are written (to stderr; the level comes from `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (write e.g. 500ms, 5s, 10m)"))
}

/// A size in bytes: a number with an optional `KiB`, `MiB` or `GiB`.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "unknown unit in {text:?} (write e.g. 512MiB, 1GiB)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .ok_or_else(|| format!("invalid size {text:?} (write e.g. 512MiB, 1GiB)"))
}

/// How a worker runs; `worker` and `api --with-worker` take the same flags.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs this worker runs at once (an `ocr` job also reads several pages at once: see
    /// `--ocr-concurrency`).
    #[arg(long, env = "FOLIO_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,

    /// Job types this worker runs (comma-separated); the product's types (`ingest`, `ocr`,
    /// `guidelines`, `finalize`) when not given. Benchmark types run only when named here.
    #[arg(long, env = "FOLIO_TYPES", value_delimiter = ',')]
    pub types: Vec<String>,

    /// How often a running job's heartbeat is renewed; the rescuer runs as often.
    #[arg(long, env = "FOLIO_HEARTBEAT_INTERVAL", value_parser = duration, default_value = "5s")]
    pub heartbeat_interval: Duration,

    /// A running job whose heartbeat is older is requeued (or failed when out of attempts).
    #[arg(long, env = "FOLIO_STALE_AFTER", value_parser = duration, default_value = "30s")]
    pub stale_after: Duration,

    /// A job never claimed for this long fails with `pending_timeout`.
    #[arg(long, env = "FOLIO_PENDING_TIMEOUT", value_parser = duration, default_value = "10m")]
    pub pending_timeout: Duration,

    /// Fallback claim poll (Postgres wakes workers at once with LISTEN/NOTIFY).
    #[arg(long, env = "FOLIO_POLL_INTERVAL", value_parser = duration, default_value = "1s")]
    pub poll_interval: Duration,

    /// Progress and checkpoint writes are coalesced to at most one per this interval.
    #[arg(long, env = "FOLIO_PROGRESS_FLUSH", value_parser = duration, default_value = "1s")]
    pub progress_flush: Duration,

    /// Time handlers get to checkpoint and stop on SIGTERM before their jobs are handed back.
    #[arg(long, env = "FOLIO_SHUTDOWN_GRACE", value_parser = duration, default_value = "30s")]
    pub shutdown_grace: Duration,

    /// Finished jobs (completed, failed, cancelled) that ended longer ago than this are
    /// deleted by the workers, a small batch at a time, about once a minute; `0` keeps them
    /// forever.
    #[arg(long, env = "FOLIO_JOB_RETENTION", value_parser = duration, default_value = "30d")]
    pub job_retention: Duration,

    /// This worker's id; a unique one (host, pid, random) when not given.
    #[arg(long, env = "FOLIO_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Finished pages a book job records per manifest write (also written at the end, on
    /// cancel and on shutdown).
    #[arg(long, env = "FOLIO_MANIFEST_FLUSH_EVERY", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub manifest_flush_every: u32,

    /// How long a book job waits out unavailable object storage (connection refused or
    /// reset, timeouts, 5xx, SlowDown after the store's own retries), retrying with backoff,
    /// before its attempt fails with `storage_unavailable`.
    #[arg(long, env = "FOLIO_STORAGE_WAIT", value_parser = duration, default_value = "60s")]
    pub storage_wait: Duration,

    /// Pages an `ingest` job makes at once (PDF pages rendered, images converted): the
    /// number of CPUs when not given.
    #[arg(long, env = "FOLIO_INGEST_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub ingest_concurrency: Option<u32>,

    /// Most memory one child tool (`pdfinfo`, `pdftoppm`, `pdftotext`, `tesseract`) may
    /// allocate (e.g. `2GiB`; `0` for no limit): a page that needs more fails, and nothing
    /// else does. Each tool also has a time limit.
    #[arg(long, env = "FOLIO_TOOL_MEMORY_LIMIT", value_parser = byte_size, default_value = "2GiB")]
    pub tool_memory_limit: u64,

    /// Keep an upload's files as they came (`uploads/{upload_id}/` in the book) after its
    /// `ingest` job made the pages; by default they are deleted then.
    #[arg(long, env = "FOLIO_KEEP_ORIGINALS")]
    pub keep_originals: bool,

    /// The local folder where uploads are received (api) and pages are made (`ingest`
    /// jobs), one `folio-upload-*` or `folio-ingest-*` folder each; it needs room for the
    /// uploads in flight. The system's temp folder when not given.
    #[arg(long, env = "FOLIO_STAGING_DIR")]
    pub staging_dir: Option<std::path::PathBuf>,

    /// Staging older than this is swept (at start, then hourly): the stored files of an
    /// upload no active `ingest` job names, and local upload and ingest folders a killed
    /// process left.
    #[arg(long, env = "FOLIO_UPLOAD_GRACE", value_parser = duration, default_value = "24h")]
    pub upload_grace: Duration,

    /// A periodic job, `NAME=CRON:TYPE` (repeat the flag; `;` between them in the variable):
    /// a `TYPE` job on resource `NAME` at each tick of the five-field `CRON`, e.g.
    /// `book-7=0 3 * * *:finalize`. Every worker given the same schedule shares it: one job
    /// per tick in all; a tick missed while no worker ran runs once, late.
    #[arg(long = "schedule", env = "FOLIO_SCHEDULES", value_delimiter = ';', value_parser = schedule_flag)]
    pub schedules: Vec<(String, String, String)>,

    /// The IANA time zone the schedules' patterns are read in (`Europe/Berlin`).
    #[arg(long, env = "FOLIO_SCHEDULE_TIMEZONE", default_value = "UTC")]
    pub schedule_timezone: String,

    /// How `ocr` jobs recognize pages.
    #[command(flatten)]
    pub ocr: OcrArgs,

    /// How `guidelines` jobs extract guidelines.
    #[command(flatten)]
    pub extraction: ExtractionArgs,
}

/// The extractor of `guidelines` jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExtractorKind {
    /// Offline, deterministic heuristics over headings, labels and sentence shapes.
    Rules,
    /// An OpenAI-compatible chat-completions endpoint (`--openai-base-url`) with a strict
    /// JSON schema.
    Openai,
}

/// How `guidelines` jobs run. The `openai` extractor uses `--openai-base-url` and
/// `--openai-api-key`, as the OCR engine does.
#[derive(Debug, Clone, Args)]
pub struct ExtractionArgs {
    /// What finds the guidelines in a page's OCR text: offline rules, or an
    /// OpenAI-compatible model.
    #[arg(long, env = "FOLIO_EXTRACTOR", value_enum, default_value_t = ExtractorKind::Rules)]
    pub extractor: ExtractorKind,

    /// The model of the `openai` extractor.
    #[arg(long, env = "FOLIO_EXTRACTOR_MODEL", default_value = "gpt-4o-mini")]
    pub extractor_model: String,

    /// Longest time for one page's extraction request (one try).
    #[arg(long, env = "FOLIO_EXTRACTOR_TIMEOUT", value_parser = duration, default_value = "2m")]
    pub extractor_timeout: Duration,
}

/// The OCR engine of `ocr` jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OcrEngineKind {
    /// The `tesseract` CLI (Debian's `tesseract-ocr`), one process per page.
    Tesseract,
    /// An OpenAI-compatible chat-completions endpoint (`--openai-base-url`).
    Openai,
}

fn tesseract_languages(text: &str) -> Result<String, String> {
    if ocr::languages::valid(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a tesseract language: write codes such as eng, deu or chi_sim, \
             joined by + (eng+deu)"
        ))
    }
}

fn confidence(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a confidence from 0 to 100")),
    }
}

/// How `ocr` jobs run.
#[derive(Debug, Clone, Args)]
pub struct OcrArgs {
    /// What reads the pages: the local `tesseract` CLI, or an OpenAI-compatible model.
    #[arg(long, env = "FOLIO_OCR_ENGINE", value_enum, default_value_t = OcrEngineKind::Tesseract)]
    pub ocr_engine: OcrEngineKind,

    /// Pages recognized at once within one `ocr` job; the number of CPUs when not given.
    #[arg(long, env = "FOLIO_OCR_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub ocr_concurrency: Option<u32>,

    /// Longest time for one page (one try); a slower page is killed and retried.
    #[arg(long, env = "FOLIO_OCR_TIMEOUT", value_parser = duration, default_value = "2m")]
    pub ocr_timeout: Duration,

    /// Tesseract languages, as for `tesseract -l` (`eng`, `eng+deu`): the language of books
    /// created without one, and of books from before books had a language. A worker that
    /// runs `ocr` jobs with tesseract refuses to start unless every one is installed.
    #[arg(long, env = "FOLIO_TESSERACT_LANGUAGES", default_value = "eng", value_parser = tesseract_languages)]
    pub tesseract_languages: String,

    /// Pages whose mean word confidence (0-100, from tesseract) is under this are marked
    /// `needs_review` (as are pages where tesseract found no word).
    #[arg(long, env = "FOLIO_OCR_REVIEW_BELOW", default_value_t = ocr::DEFAULT_REVIEW_BELOW, value_parser = confidence)]
    pub ocr_review_below: f64,

    /// The OpenAI-compatible API base, e.g. `https://api.openai.com/v1`.
    #[arg(long, env = "FOLIO_OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,

    /// The API key, sent as a bearer token.
    #[arg(long, env = "FOLIO_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,

    /// The model that reads the pages.
    #[arg(long, env = "FOLIO_OPENAI_MODEL", default_value = "gpt-4o-mini")]
    pub openai_model: String,
}

impl OcrArgs {
    /// Pages at once per job: the flag, else the number of CPUs.
    pub fn concurrency(&self) -> usize {
        self.ocr_concurrency.map_or_else(
            || std::thread::available_parallelism().map_or(2, usize::from),
            |pages| pages as usize,
        )
    }
}

/// `NAME=CRON:TYPE` as its three parts (the pattern has spaces, no `=` and no `:`); the
/// pattern itself is checked with the time zone, by [`WorkerArgs::schedules`].
fn schedule_flag(text: &str) -> Result<(String, String, String), String> {
    let invalid = || {
        format!("invalid schedule {text:?}: write NAME=CRON:TYPE, e.g. book-7=0 3 * * *:finalize")
    };
    let (name, rest) = text.split_once('=').ok_or_else(invalid)?;
    let (pattern, job_type) = rest.rsplit_once(':').ok_or_else(invalid)?;
    let (name, pattern, job_type) = (name.trim(), pattern.trim(), job_type.trim());
    if name.is_empty() || pattern.is_empty() || job_type.is_empty() {
        return Err(invalid());
    }
    Ok((name.to_owned(), pattern.to_owned(), job_type.to_owned()))
}

impl WorkerArgs {
    /// The `--schedule`s in `--schedule-timezone`; an invalid pattern or zone is an error
    /// naming it.
    pub fn schedules(&self) -> Result<Vec<jobs_core::Schedule>, jobs_core::ScheduleError> {
        self.schedules
            .iter()
            .map(|(name, pattern, job_type)| {
                jobs_core::Schedule::new(name, pattern, job_type)?
                    .in_timezone(&self.schedule_timezone)
            })
            .collect()
    }

    /// `--staging-dir`, else the system's temp folder.
    pub fn staging_dir(&self) -> std::path::PathBuf {
        self.staging_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// `--tool-memory-limit`, with `0` as no limit.
    pub fn tool_memory_limit(&self) -> Option<u64> {
        (self.tool_memory_limit > 0).then_some(self.tool_memory_limit)
    }

    /// The runtime configuration these flags describe.
    pub fn worker_config(&self) -> WorkerConfig {
        let defaults = WorkerConfig::default();
        WorkerConfig {
            worker_id: self.worker_id.clone().unwrap_or(defaults.worker_id.clone()),
            concurrency: self.concurrency.max(1),
            heartbeat_interval: self.heartbeat_interval,
            stale_after: self.stale_after,
            pending_timeout: self.pending_timeout,
            poll_interval: self.poll_interval,
            progress_flush: self.progress_flush,
            shutdown_grace: self.shutdown_grace,
            job_retention: Some(self.job_retention).filter(|retention| !retention.is_zero()),
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    }

    #[test]
    fn defaults_follow_the_specification() {
        let cli = Cli::try_parse_from(["worker"]).unwrap();
        assert_eq!(cli.common.database_url, "sqlite://folio-data/folio.db");
        assert_eq!(cli.common.storage, "file://folio-data/objects");
        assert_eq!(cli.common.otlp_endpoint, None);
        let config = cli.worker.worker_config();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(config.stale_after, Duration::from_secs(30));
        assert_eq!(config.pending_timeout, Duration::from_secs(600));
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.concurrency, 2);
        assert_eq!(
            config.job_retention,
            Some(Duration::from_secs(30 * 24 * 60 * 60))
        );
        assert_eq!(cli.worker.extraction.extractor, ExtractorKind::Rules);
        assert_eq!(cli.worker.manifest_flush_every, 5);
        assert_eq!(cli.worker.storage_wait, Duration::from_secs(60));
        assert_eq!(cli.worker.ocr.ocr_engine, OcrEngineKind::Tesseract);
        assert!(cli.worker.ocr.concurrency() >= 1);
        assert_eq!(cli.worker.ocr.ocr_review_below, 60.0);
        assert_eq!(cli.worker.ocr.tesseract_languages, "eng");
    }

    #[test]
    fn ocr_flags_parse() {
        let cli = Cli::try_parse_from([
            "worker",
            "--ocr-engine",
            "openai",
            "--ocr-concurrency",
            "3",
            "--manifest-flush-every",
            "2",
            "--openai-base-url",
            "http://127.0.0.1:9/v1",
            "--openai-model",
            "m",
        ])
        .unwrap();
        assert_eq!(cli.worker.ocr.ocr_engine, OcrEngineKind::Openai);
        assert_eq!(cli.worker.ocr.concurrency(), 3);
        assert_eq!(cli.worker.manifest_flush_every, 2);
        assert!(Cli::try_parse_from(["worker", "--ocr-concurrency", "0"]).is_err());
        let cli =
            Cli::try_parse_from(["worker", "--extractor", "openai", "--extractor-model", "x"])
                .unwrap();
        assert_eq!(cli.worker.extraction.extractor, ExtractorKind::Openai);
        assert_eq!(cli.worker.extraction.extractor_model, "x");
        assert!(Cli::try_parse_from(["worker", "--extractor", "magic"]).is_err());
        let cli = Cli::try_parse_from([
            "worker",
            "--ocr-review-below",
            "75.5",
            "--tesseract-languages",
            "eng+deu",
        ])
        .unwrap();
        assert_eq!(cli.worker.ocr.ocr_review_below, 75.5);
        assert_eq!(cli.worker.ocr.tesseract_languages, "eng+deu");
        for bad in [
            ["--ocr-review-below", "101"],
            ["--tesseract-languages", "eng deu"],
        ] {
            assert!(
                Cli::try_parse_from(["worker", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn durations_and_lists_parse() {
        let cli = Cli::try_parse_from([
            "worker",
            "--stale-after",
            "500ms",
            "--pending-timeout",
            "2m",
            "--types",
            "ocr,finalize",
        ])
        .unwrap();
        assert_eq!(cli.worker.stale_after, Duration::from_millis(500));
        assert_eq!(cli.worker.pending_timeout, Duration::from_secs(120));
        assert_eq!(cli.worker.types, ["ocr", "finalize"]);
        let error = Cli::try_parse_from(["worker", "--stale-after", "soon"]).unwrap_err();
        assert!(error.to_string().contains("500ms"), "{error}");
    }

    #[test]
    fn schedules_parse_as_name_cron_and_type_in_the_time_zone() {
        let cli = Cli::try_parse_from([
            "worker",
            "--schedule",
            "book-7=0 3 * * *:finalize",
            "--schedule",
            "sweep=*/5 * * * *:ocr",
            "--schedule-timezone",
            "Europe/Berlin",
        ])
        .unwrap();
        let schedules = cli.worker.schedules().unwrap();
        assert_eq!(schedules.len(), 2);
        assert_eq!(schedules[0].name(), "book-7");
        assert_eq!(schedules[0].job_type(), "finalize");
        let winter = chrono::DateTime::parse_from_rfc3339("2030-01-02T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            schedules[0].latest_tick(winter).unwrap().to_rfc3339(),
            "2030-01-02T02:00:00+00:00",
            "03:00 in Berlin"
        );
        for bad in ["no-equals", "name=0 3 * * *", "=0 3 * * *:ocr"] {
            let error = Cli::try_parse_from(["worker", "--schedule", bad]).unwrap_err();
            assert!(error.to_string().contains("NAME=CRON:TYPE"), "{error}");
        }
        let cli = Cli::try_parse_from(["worker", "--schedule", "x=61 * * * *:ocr"]).unwrap();
        let error = cli.worker.schedules().unwrap_err();
        assert!(error.to_string().contains("61 * * * *"), "{error}");
        let cli = Cli::try_parse_from([
            "worker",
            "--schedule",
            "x=* * * * *:ocr",
            "--schedule-timezone",
            "Nowhere/Else",
        ])
        .unwrap();
        assert!(cli.worker.schedules().is_err());
    }

    #[test]
    fn job_retention_parses_and_zero_keeps_jobs_forever() {
        let retention = |value: &str| {
            Cli::try_parse_from(["worker", "--job-retention", value])
                .unwrap()
                .worker
                .worker_config()
                .job_retention
        };
        assert_eq!(retention("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(retention("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(retention("0"), None);
        assert_eq!(retention("0s"), None);
        assert!(Cli::try_parse_from(["worker", "--job-retention", "a month"]).is_err());
    }
}
