//! `bench jobs`: no-op jobs through the real job stores: drain throughput, pickup latency
//! and CPU per job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use jobs_core::runtime::{HandlerError, JobContext, JobHandler, Worker, WorkerConfig};
use jobs_core::{
    Acquire, AcquireRequest, JobId, JobStore, LockService, RecoveryPolicy, SystemClock, async_trait,
};
use jobs_postgres::testing::TestDatabase;
use tokio_util::sync::CancellationToken;

use crate::flags::{Flags, report};
use crate::pickup::{TimedStore, Timeline};

/// A no-op handler that records when each job started running.
#[derive(Default)]
struct RecordingNoop {
    started: Mutex<HashMap<JobId, Instant>>,
    record: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl JobHandler for RecordingNoop {
    fn job_type(&self) -> &str {
        app::handlers::BENCH_NOOP
    }

    async fn run(&self, context: JobContext) -> Result<(), HandlerError> {
        if self.record.load(std::sync::atomic::Ordering::Relaxed) {
            self.started
                .lock()
                .unwrap()
                .insert(context.job().id, Instant::now());
        }
        Ok(())
    }
}

/// CPU time in clock ticks (Linux `/proc`): this process's, and the whole machine's busy time.
#[derive(Clone, Copy, Default)]
struct CpuTicks {
    process: u64,
    machine: u64,
}

impl CpuTicks {
    fn now() -> Self {
        let process = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                // Fields after the command name (which may hold spaces): utime is the 12th.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().next()?;
                let ticks: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|field| field.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
                Some(ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?)
            })
            .unwrap_or(0);
        Self { process, machine }
    }

    /// CPU milliseconds per 1,000 jobs since `self`: (this process, everything else).
    fn per_thousand_jobs(self, jobs: usize) -> (f64, f64) {
        let after = Self::now();
        // Linux reports /proc times in USER_HZ, 100 ticks per second.
        let ms = |ticks: u64| ticks as f64 * 10.0 * 1000.0 / jobs as f64;
        let process = after.process.saturating_sub(self.process);
        let machine = after.machine.saturating_sub(self.machine);
        let round = |value: f64| (value * 10.0).round() / 10.0;
        (
            round(ms(process)),
            round(ms(machine.saturating_sub(process))),
        )
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn wait_completed(
    worker_metrics: &jobs_core::runtime::WorkerMetrics,
    target: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while worker_metrics
        .completed
        .load(std::sync::atomic::Ordering::Relaxed)
        < target
    {
        if Instant::now() > deadline {
            bail!("jobs did not drain within 10 minutes");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(())
}

/// `bench jobs --store postgres|sqlite --jobs N --concurrency C [--enqueue-batch B]
/// [--enqueue-in-flight F]`: no-op jobs through bulk enqueue (`acquire_many` in batches of
/// B, default 5,000, F at once, default 3 on Postgres and 1 on SQLite), claim and complete,
/// with heartbeats and fencing on.
pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let store_kind = flags.text("store", "postgres");
    let n_jobs: usize = flags.get("jobs", 20_000)?;
    let concurrency: usize = flags.get("concurrency", 2000)?;

    let mut database = None;
    let _dir = tempfile::tempdir()?;
    let store: Arc<dyn JobStore> = match store_kind.as_str() {
        "postgres" => {
            let created = TestDatabase::create().await;
            let store = Arc::new(created.store().await);
            database = Some(created);
            store
        }
        "sqlite" => {
            let url = format!("sqlite://{}/bench.db", _dir.path().display());
            Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await?)
        }
        other => bail!("--store {other}: use postgres or sqlite"),
    };

    // Enqueue everything first, in batches through `acquire_many`, a few batches in flight
    // (one on SQLite: its writers queue on one lock).
    let enqueue_batch: usize = flags.get("enqueue-batch", 5_000)?.max(1);
    let default_in_flight = if store_kind == "sqlite" { 1 } else { 3 };
    let in_flight_batches: usize = flags.get("enqueue-in-flight", default_in_flight)?.max(1);
    let lock = LockService::new(
        store.clone(),
        Arc::new(SystemClock),
        RecoveryPolicy::default(),
    );
    let enqueue_started = Instant::now();
    let keys: Vec<usize> = (0..n_jobs).collect();
    let mut batches = keys.chunks(enqueue_batch);
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < in_flight_batches {
            let Some(batch) = batches.next() else { break };
            let requests: Vec<AcquireRequest> = batch
                .iter()
                .map(|i| {
                    AcquireRequest::new(
                        format!("bench-{i}"),
                        app::handlers::BENCH_NOOP,
                        serde_json::json!({}),
                    )
                })
                .collect();
            let lock = lock.clone();
            in_flight.spawn(async move { lock.acquire_many(requests).await });
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        for answer in done?? {
            if let Acquire::Busy(job) = answer {
                bail!("bench key {} busy", job.resource_key);
            }
        }
    }
    let enqueue_seconds = enqueue_started.elapsed().as_secs_f64();

    let result = if flags.text("raw", "false") == "true" {
        drain_raw(&store, &store_kind, n_jobs, concurrency).await?
    } else {
        drain_with_worker(
            flags,
            &store,
            &store_kind,
            n_jobs,
            concurrency,
            enqueue_seconds,
        )
        .await?
    };
    report(&result);
    if let Some(database) = database {
        database.drop().await;
    }
    Ok(())
}

/// The store alone: claim and finish in batches of `concurrency`, no runtime.
async fn drain_raw(
    store: &Arc<dyn JobStore>,
    store_kind: &str,
    n_jobs: usize,
    concurrency: usize,
) -> Result<serde_json::Value> {
    let started = Instant::now();
    let cpu = CpuTicks::now();
    let mut drained = 0;
    let mut claims = 0;
    let (mut claim_time, mut finish_time) = (Duration::ZERO, Duration::ZERO);
    while drained < n_jobs {
        let params = jobs_core::ClaimParams {
            worker_id: "raw".into(),
            job_types: vec![app::handlers::BENCH_NOOP.to_owned()],
            limit: concurrency as u32,
            now: jobs_core::Clock::now(&SystemClock),
        };
        let claim_started = Instant::now();
        let claimed = store.claim(&params).await?;
        claim_time += claim_started.elapsed();
        claims += 1;
        let batch: Vec<jobs_core::Finish> = claimed
            .iter()
            .map(|job| {
                jobs_core::Finish::new(job.id, job.lease, jobs_core::FinishOutcome::Completed)
            })
            .collect();
        let finish_started = Instant::now();
        store
            .finish(jobs_core::Clock::now(&SystemClock), &batch)
            .await?;
        finish_time += finish_started.elapsed();
        drained += claimed.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let (worker_cpu, other_cpu) = cpu.per_thousand_jobs(n_jobs);
    Ok(serde_json::json!({
        "bench": "jobs-raw-store",
        "worker_cpu_ms_per_1k": worker_cpu,
        "db_cpu_ms_per_1k": other_cpu,
        "store": store_kind,
        "jobs": n_jobs,
        "batch": concurrency,
        "claims": claims,
        "claim_ms": claim_time.as_millis() as u64,
        "finish_ms": finish_time.as_millis() as u64,
        "jobs_per_s": (n_jobs as f64 / seconds).round(),
    }))
}

/// One worker drains the jobs, then single jobs measure pickup latency.
async fn drain_with_worker(
    flags: &Flags,
    store: &Arc<dyn JobStore>,
    store_kind: &str,
    n_jobs: usize,
    concurrency: usize,
    enqueue_seconds: f64,
) -> Result<serde_json::Value> {
    let n_pickups: usize = flags.get("pickups", 500)?;
    let clock = Arc::new(SystemClock);
    // Drain with one worker.
    let handler = Arc::new(RecordingNoop::default());
    let config = bench_worker_config(flags, concurrency)?;
    let timeline = Arc::new(Timeline::default());
    if let Some(signal) = store.job_signal() {
        timeline.watch(signal);
    }
    let timed: Arc<dyn JobStore> = Arc::new(TimedStore {
        inner: store.clone(),
        timeline: timeline.clone(),
    });
    let worker = Worker::new(timed, clock.clone(), config).handler(handler.clone());
    let metrics = worker.metrics();
    let shutdown = CancellationToken::new();
    let drain_started = Instant::now();
    let cpu = CpuTicks::now();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    wait_completed(&metrics, n_jobs as u64).await?;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let (worker_cpu, other_cpu) = cpu.per_thousand_jobs(n_jobs);
    let per_batch = |counter: &std::sync::atomic::AtomicU64| {
        let batches = counter.load(std::sync::atomic::Ordering::Relaxed).max(1);
        (n_jobs as f64 / batches as f64 * 10.0).round() / 10.0
    };
    let claims_per_batch = per_batch(&metrics.claim_batches);
    let finishes_per_batch = per_batch(&metrics.finish_batches);

    // Pickup latency: the same worker, idle now, and jobs enqueued one at a time.
    let lock = LockService::new(store.clone(), clock, RecoveryPolicy::default());
    let pickups = pickup_latencies(&lock, &handler, &timeline, &metrics, n_jobs, n_pickups).await?;
    shutdown.cancel();
    running.await??;
    let ms = |sorted: &[f64], fraction| (percentile(sorted, fraction) * 1000.0).round() / 1000.0;

    Ok(serde_json::json!({
        "bench": "jobs",
        "store": store_kind,
        "jobs": n_jobs,
        "concurrency": concurrency,
        "enqueue_per_s": (n_jobs as f64 / enqueue_seconds).round(),
        "jobs_per_s": (n_jobs as f64 / drain_seconds).round(),
        "jobs_per_claim": claims_per_batch,
        "jobs_per_finish": finishes_per_batch,
        "worker_cpu_ms_per_1k": worker_cpu,
        "db_cpu_ms_per_1k": other_cpu,
        "pickup_p50_ms": ms(&pickups.total, 0.5),
        "pickup_p99_ms": ms(&pickups.total, 0.99),
        // Where a pickup's time goes (medians; the steps need not add up to the total's).
        "pickup_steps_p50_ms": {
            "insert": ms(&pickups.insert, 0.5),
            "notify": ms(&pickups.notify, 0.5),
            "wake": ms(&pickups.wake, 0.5),
            "claim": ms(&pickups.claim, 0.5),
            "start": ms(&pickups.start, 0.5),
        },
    }))
}

/// The drain's worker: `concurrency` slots, and `--claim-batch`, `--finish-batch` and
/// `--claimers` over the defaults.
fn bench_worker_config(flags: &Flags, concurrency: usize) -> Result<WorkerConfig> {
    let defaults = WorkerConfig::default();
    Ok(WorkerConfig {
        concurrency,
        claim_batch: flags.get("claim-batch", defaults.claim_batch)?,
        finish_batch: flags.get("finish-batch", defaults.finish_batch)?,
        claimers: match flags.get("claimers", 0)? {
            0 => None,
            claimers => Some(claimers),
        },
        worker_id: "bench".into(),
        ..defaults
    })
}

/// Pickup latencies in milliseconds, each sorted: enqueue to handler start (`total`), and its
/// steps: the insert's round trip, then on to the store's job signal (`notify`), on to the
/// claim that took the job (`wake`), the claim's round trip, and on to the handler's start.
#[derive(Default)]
struct Pickups {
    total: Vec<f64>,
    insert: Vec<f64>,
    notify: Vec<f64>,
    wake: Vec<f64>,
    claim: Vec<f64>,
    start: Vec<f64>,
}

/// Enqueues `n_pickups` jobs one at a time, each once the one before has completed, to the
/// worker that drained `drained` jobs.
async fn pickup_latencies(
    lock: &LockService,
    handler: &RecordingNoop,
    timeline: &Timeline,
    metrics: &jobs_core::runtime::WorkerMetrics,
    drained: usize,
    n_pickups: usize,
) -> Result<Pickups> {
    handler
        .record
        .store(true, std::sync::atomic::Ordering::Relaxed);
    timeline.record();
    let mut enqueued = Vec::with_capacity(n_pickups);
    for i in 0..n_pickups {
        let before = Instant::now();
        let payload = serde_json::json!({});
        let id = match lock
            .acquire(&format!("pickup-{i}"), app::handlers::BENCH_NOOP, payload)
            .await?
        {
            Acquire::Created(job) => job.id,
            Acquire::Busy(_) => bail!("pickup key {i} busy"),
        };
        enqueued.push((id, before, Instant::now()));
        wait_completed(metrics, (drained + i + 1) as u64).await?;
    }
    let started = handler.started.lock().unwrap();
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1000.0;
    let mut pickups = Pickups::default();
    for (id, before, inserted) in enqueued {
        let handler_start = started[&id];
        pickups.total.push(ms(before, handler_start));
        pickups.insert.push(ms(before, inserted));
        // The steps after the insert, where the marks exist (a store without a signal has
        // none: its worker polls).
        let signalled = timeline.signalled.first_after(before);
        let claim_started = timeline
            .claim_started
            .first_after(signalled.unwrap_or(before));
        let claim_returned = claim_started.and_then(|at| timeline.claim_returned.first_after(at));
        if let Some(signalled) = signalled {
            pickups.notify.push(ms(inserted, signalled));
        }
        if let (Some(signalled), Some(claim_started)) = (signalled, claim_started) {
            pickups.wake.push(ms(signalled, claim_started));
        }
        if let (Some(claim_started), Some(claim_returned)) = (claim_started, claim_returned) {
            pickups.claim.push(ms(claim_started, claim_returned));
            pickups.start.push(ms(claim_returned, handler_start));
        }
    }
    for steps in [
        &mut pickups.total,
        &mut pickups.insert,
        &mut pickups.notify,
        &mut pickups.wake,
        &mut pickups.claim,
        &mut pickups.start,
    ] {
        if steps.is_empty() {
            steps.push(f64::NAN);
        }
        steps.sort_by(f64::total_cmp);
    }
    Ok(pickups)
}
