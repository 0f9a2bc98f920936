//! The job handlers this application runs, one for each type of the registry in
//! [`crate::jobs`], and which of them a worker selects.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use blob_store::BlobStore;
use books::Books;
use extraction::{
    Extractor, FINALIZE_JOB_TYPE, FinalizeHandler, GUIDELINES_JOB_TYPE, GuidelinesConfig,
    GuidelinesHandler, OpenAiExtractor, OpenAiExtractorConfig, RulesExtractor,
};
use ingest::{INGEST_JOB_TYPE, IngestHandler, IngestJobConfig};
use jobs_core::runtime::{HandlerError, JobContext, JobHandler};
use jobs_core::{Clock, SystemClock};
use ocr::{
    OCR_JOB_TYPE, OcrEngine, OcrHandler, OcrJobConfig, OpenAiConfig, OpenAiEngine, TesseractConfig,
    TesseractEngine,
};
use serde::{Deserialize, Serialize};

use crate::config::{ExtractionArgs, ExtractorKind, OcrArgs, OcrEngineKind, WorkerArgs};
use crate::jobs;
pub use crate::jobs::{BENCH_NOOP, BENCH_STEPS};

/// Runs [`BENCH_NOOP`] jobs.
#[derive(Debug, Default)]
pub struct NoopHandler;

#[async_trait]
impl JobHandler for NoopHandler {
    fn job_type(&self) -> &str {
        BENCH_NOOP
    }

    async fn run(&self, _context: JobContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Payload of [`BENCH_STEPS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepsPayload {
    pub steps: u32,
    /// Milliseconds each step takes.
    pub step_ms: u64,
}

/// Checkpoint of [`BENCH_STEPS`]: steps done, and which worker started where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsCheckpoint {
    /// Steps done and durably recorded.
    pub done: u32,
    /// One entry per run: the worker and the first step it ran.
    pub runs: Vec<StepsRun>,
}

/// One run of a [`BENCH_STEPS`] job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsRun {
    pub worker: String,
    /// The first step it ran.
    pub from: u32,
}

/// Runs [`BENCH_STEPS`] jobs: sleeps per step, checkpointing after each, stopping at a step
/// boundary when cancelled.
#[derive(Debug, Default)]
pub struct StepsHandler;

#[async_trait]
impl JobHandler for StepsHandler {
    fn job_type(&self) -> &str {
        BENCH_STEPS
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        let payload: StepsPayload = context.payload()?;
        let mut checkpoint: StepsCheckpoint = context.checkpoint()?.unwrap_or_default();
        let worker = context.job().worker_id.clone().unwrap_or_default();
        checkpoint.runs.push(StepsRun {
            worker,
            from: checkpoint.done + 1,
        });
        context.set_checkpoint(&checkpoint);
        context.update_progress(|progress| progress.total = Some(u64::from(payload.steps)));
        for step in checkpoint.done + 1..=payload.steps {
            context.update_progress(|progress| progress.current_item = Some(step.to_string()));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(payload.step_ms)) => {}
                () = context.cancelled() => return Err(HandlerError::cancelled()),
            }
            checkpoint.done = step;
            context.set_checkpoint(&checkpoint);
            context.update_progress(|progress| {
                progress.completed = u64::from(step);
                progress.last_completed_item = Some(step.to_string());
            });
        }
        Ok(())
    }
}

/// What the handlers need from the application: storage and their settings.
#[derive(Debug, Clone)]
pub struct HandlerDeps {
    /// Where books live; `None` when no selected handler needs storage.
    pub blob_store: Option<Arc<dyn BlobStore>>,
    /// How `ocr` jobs recognize pages.
    pub ocr: OcrArgs,
    /// How `guidelines` jobs extract.
    pub extraction: ExtractionArgs,
    /// Finished pages per manifest write.
    pub manifest_flush_every: usize,
    /// How long book jobs wait out unavailable storage.
    pub storage_wait: std::time::Duration,
    /// Pages an `ingest` job makes at once; `None`: the number of CPUs.
    pub ingest_concurrency: Option<usize>,
    /// Keep uploads' files after their ingest.
    pub keep_originals: bool,
    /// Most memory one child tool (PDF tools, tesseract) may allocate; `None`: no limit.
    pub tool_memory_limit: Option<u64>,
    /// Where `ingest` jobs make their pages.
    pub staging_dir: std::path::PathBuf,
    /// The clock of the books' manifest timestamps: the worker's own.
    pub clock: Arc<dyn Clock>,
}

impl HandlerDeps {
    /// The dependencies a worker configured by `worker` needs, over `blob_store`.
    pub fn new(blob_store: Arc<dyn BlobStore>, worker: &WorkerArgs) -> Self {
        Self::over(Some(blob_store), worker)
    }

    fn over(blob_store: Option<Arc<dyn BlobStore>>, worker: &WorkerArgs) -> Self {
        Self {
            blob_store,
            ocr: worker.ocr.clone(),
            extraction: worker.extraction.clone(),
            manifest_flush_every: worker.manifest_flush_every as usize,
            storage_wait: worker.storage_wait,
            ingest_concurrency: worker.ingest_concurrency.map(|n| n as usize),
            keep_originals: worker.keep_originals,
            tool_memory_limit: worker.tool_memory_limit(),
            staging_dir: worker.staging_dir(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The dependencies of the handlers `worker.types` selects, opening the blob store at
    /// `storage_url` only when one of them needs it.
    pub async fn open(storage_url: &str, worker: &WorkerArgs) -> Result<Self> {
        let needs_storage = selected_types(&worker.types)?
            .iter()
            .any(|wanted| jobs::get(wanted).is_some_and(|row| row.needs_storage));
        let blob_store = if needs_storage {
            Some(crate::storage::open_blob_store(storage_url).await?)
        } else {
            None
        };
        Ok(Self::over(blob_store, worker))
    }
}

/// The OCR engine `args` select, its child processes limited to `tool_memory_limit`; an
/// error when its settings are missing.
pub fn ocr_engine(args: &OcrArgs, tool_memory_limit: Option<u64>) -> Result<Arc<dyn OcrEngine>> {
    Ok(match args.ocr_engine {
        OcrEngineKind::Tesseract => Arc::new(TesseractEngine::new(TesseractConfig {
            languages: args.tesseract_languages.clone(),
            timeout: args.ocr_timeout,
            memory_limit: tool_memory_limit,
            ..TesseractConfig::default()
        })),
        OcrEngineKind::Openai => {
            let Some(base_url) = args.openai_base_url.clone() else {
                bail!("--ocr-engine openai needs --openai-base-url (FOLIO_OPENAI_BASE_URL)");
            };
            let mut config =
                OpenAiConfig::new(base_url, args.openai_api_key.clone(), &args.openai_model);
            config.timeout = args.ocr_timeout;
            Arc::new(OpenAiEngine::new(config).context("building the openai engine")?)
        }
    })
}

/// The guidelines extractor `args` select (with the OpenAI settings of `ocr`); an error
/// when its settings are missing.
pub fn extractor(args: &ExtractionArgs, ocr: &OcrArgs) -> Result<Arc<dyn Extractor>> {
    Ok(match args.extractor {
        ExtractorKind::Rules => Arc::new(RulesExtractor::new()),
        ExtractorKind::Openai => {
            let Some(base_url) = ocr.openai_base_url.clone() else {
                bail!("--extractor openai needs --openai-base-url (FOLIO_OPENAI_BASE_URL)");
            };
            let mut config = OpenAiExtractorConfig::new(
                base_url,
                ocr.openai_api_key.clone(),
                &args.extractor_model,
            );
            config.timeout = args.extractor_timeout;
            Arc::new(OpenAiExtractor::new(config).context("building the openai extractor")?)
        }
    })
}

/// The handler of one known job type.
fn handler(job_type: &str, deps: &HandlerDeps) -> Result<Arc<dyn JobHandler>> {
    let books = || -> Result<Books> {
        let store = deps
            .blob_store
            .clone()
            .with_context(|| format!("the {job_type} job needs object storage (--storage)"))?;
        Ok(Books::new(store).with_clock(deps.clock.clone()))
    };
    Ok(match job_type {
        BENCH_NOOP => Arc::new(NoopHandler),
        BENCH_STEPS => Arc::new(StepsHandler),
        GUIDELINES_JOB_TYPE => Arc::new(GuidelinesHandler::new(
            books()?,
            extractor(&deps.extraction, &deps.ocr)?,
            GuidelinesConfig {
                manifest_flush_every: deps.manifest_flush_every.max(1),
                ..GuidelinesConfig::default()
            },
        )),
        FINALIZE_JOB_TYPE => Arc::new(FinalizeHandler::new(books()?)),
        INGEST_JOB_TYPE => {
            let defaults = IngestJobConfig::default();
            Arc::new(IngestHandler::new(
                books()?,
                IngestJobConfig {
                    concurrency: deps.ingest_concurrency.unwrap_or(defaults.concurrency),
                    manifest_flush_every: deps.manifest_flush_every.max(1),
                    storage_wait: deps.storage_wait,
                    keep_originals: deps.keep_originals,
                    local_dir: deps.staging_dir.clone(),
                    limits: books::IngestLimits {
                        tool_memory_limit: deps.tool_memory_limit,
                        ..defaults.limits
                    },
                    ..defaults
                },
            ))
        }
        OCR_JOB_TYPE => Arc::new(OcrHandler::new(
            books()?,
            ocr_engine(&deps.ocr, deps.tool_memory_limit)?,
            OcrJobConfig {
                concurrency: deps.ocr.concurrency(),
                manifest_flush_every: deps.manifest_flush_every.max(1),
                storage_wait: deps.storage_wait,
                review_below: deps.ocr.ocr_review_below,
                ..OcrJobConfig::default()
            },
        )),
        other => bail!(
            "unknown job type {other:?}; known types: {}",
            jobs::ALL.join(", ")
        ),
    })
}

/// Sweeps upload staging older than `--upload-grace` (see [`ingest::Sweeper`]) at start,
/// then hourly, until `shutdown`.
pub fn spawn_sweeper(
    blob_store: Arc<dyn BlobStore>,
    jobs: Arc<dyn jobs_core::JobStore>,
    worker: &WorkerArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let sweeper = ingest::Sweeper::new(
        Books::new(blob_store),
        jobs,
        Arc::new(SystemClock),
        worker.upload_grace,
    )
    .with_local_dir(worker.staging_dir());
    tokio::spawn(sweeper.run(std::time::Duration::from_secs(3600), shutdown))
}

/// The types `types` selects: [`jobs::DEFAULT_TYPES`] when empty, else `types` in the
/// order of [`jobs::ALL`]. An unknown type is an error that names the known ones.
pub fn selected_types(types: &[String]) -> Result<Vec<&'static str>> {
    if types.is_empty() {
        return Ok(jobs::DEFAULT_TYPES.to_vec());
    }
    for wanted in types {
        if jobs::get(wanted).is_none() {
            bail!(
                "unknown job type {wanted:?}; known types: {}",
                jobs::ALL.join(", ")
            );
        }
    }
    Ok(jobs::ALL
        .iter()
        .copied()
        .filter(|known| types.iter().any(|wanted| wanted == known))
        .collect())
}

/// The handlers for `types` (see [`selected_types`]).
pub fn select_handlers(types: &[String], deps: &HandlerDeps) -> Result<Vec<Arc<dyn JobHandler>>> {
    selected_types(types)?
        .into_iter()
        .map(|job_type| handler(job_type, deps))
        .collect()
}

/// The worker `args` describe, on `store` and the system clock: the handlers of its types
/// and its schedules (`worker` and `api --with-worker` alike).
pub fn worker(
    store: Arc<dyn jobs_core::JobStore>,
    args: &WorkerArgs,
    deps: &HandlerDeps,
) -> Result<jobs_core::runtime::Worker> {
    let mut worker =
        jobs_core::runtime::Worker::new(store, Arc::new(SystemClock), args.worker_config());
    for handler in select_handlers(&args.types, deps)? {
        worker = worker.handler(handler);
    }
    for schedule in args.schedules()? {
        tracing::info!(schedule = schedule.name(), job_type = schedule.job_type(), timezone = %args.schedule_timezone, "periodic job");
        worker = worker.schedule(schedule);
    }
    Ok(worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    async fn deps(args: &[&str]) -> HandlerDeps {
        let cli =
            Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied())).unwrap();
        let store =
            blob_store::FileBlobStore::open(std::env::temp_dir().join("folio-app-handlers"))
                .await
                .unwrap();
        HandlerDeps::new(Arc::new(store), &cli.worker)
    }

    #[tokio::test]
    async fn select_handlers_filters_and_names_unknown_types() {
        let deps = deps(&[]).await;
        let selected = select_handlers(&[BENCH_NOOP.to_owned()], &deps).unwrap();
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].job_type(), BENCH_NOOP);
        let default: Vec<String> = select_handlers(&[], &deps)
            .unwrap()
            .iter()
            .map(|handler| handler.job_type().to_owned())
            .collect();
        assert_eq!(
            default,
            jobs::DEFAULT_TYPES,
            "the default is the registry's default types only"
        );
        for bench in [BENCH_NOOP, BENCH_STEPS] {
            assert!(!default.iter().any(|job_type| job_type == bench));
        }
        let error = select_handlers(&["ocr2".to_owned()], &deps)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("bench.noop") && error.contains("ocr"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn every_registered_type_has_its_handler() {
        let deps = deps(&[]).await;
        let all: Vec<String> = jobs::ALL.iter().map(|name| (*name).to_owned()).collect();
        let handlers: Vec<String> = select_handlers(&all, &deps)
            .unwrap()
            .iter()
            .map(|handler| handler.job_type().to_owned())
            .collect();
        assert_eq!(handlers, jobs::ALL);
    }

    #[tokio::test]
    async fn storage_is_opened_only_for_handlers_that_need_it() {
        let cli = Cli::try_parse_from(["worker", "--types", "bench.noop"]).unwrap();
        let deps = HandlerDeps::open("file:///nonexistent/never-created", &cli.worker)
            .await
            .unwrap();
        assert!(deps.blob_store.is_none());
        assert_eq!(select_handlers(&cli.worker.types, &deps).unwrap().len(), 1);
        assert!(!std::path::Path::new("/nonexistent/never-created").exists());
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::try_parse_from(["worker", "--types", "ocr"]).unwrap();
        let url = format!("file://{}/objects", dir.path().display());
        let deps = HandlerDeps::open(&url, &cli.worker).await.unwrap();
        assert!(deps.blob_store.is_some());
    }

    #[tokio::test]
    async fn the_openai_extractor_needs_a_base_url() {
        let error = select_handlers(
            &["guidelines".to_owned()],
            &deps(&["--extractor", "openai"]).await,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("--openai-base-url"), "{error}");
        let selected = select_handlers(
            &["guidelines".to_owned(), "finalize".to_owned()],
            &deps(&[
                "--extractor",
                "openai",
                "--openai-base-url",
                "http://127.0.0.1:9/v1",
            ])
            .await,
        )
        .unwrap();
        assert_eq!(selected[0].job_type(), GUIDELINES_JOB_TYPE);
        assert_eq!(selected[1].job_type(), FINALIZE_JOB_TYPE);
    }

    #[tokio::test]
    async fn the_openai_engine_needs_a_base_url() {
        let error = select_handlers(
            &["ocr".to_owned()],
            &deps(&["--ocr-engine", "openai"]).await,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("--openai-base-url"), "{error}");
        let selected = select_handlers(
            &["ocr".to_owned()],
            &deps(&[
                "--ocr-engine",
                "openai",
                "--openai-base-url",
                "http://127.0.0.1:9/v1",
            ])
            .await,
        )
        .unwrap();
        assert_eq!(selected[0].job_type(), OCR_JOB_TYPE);
    }
}
