//! Another service embedding jobs-core with SQLite: a typed job, a batch of them enqueued
//! in one call (one active job per team: the batch's second job for a team is busy), one
//! enqueued in the same transaction as the service's own row (a rolled-back one leaves no
//! job), and a periodic one (a cron schedule in a time zone), run to the end.
//!
//! `cargo run -p jobs-core --example embedded`

use std::sync::Arc;
use std::time::Duration;

use jobs_core::runtime::{HandlerError, Worker, WorkerConfig};
use jobs_core::typed::{self, Context, Job};
use jobs_core::{
    Acquire, Clock, JobStatus, LockService, RecoveryPolicy, Schedule, StoreError, SystemClock,
    async_trait,
};
use jobs_sqlite::SqliteJobStore;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Greets every name, one item at a time, checkpointing as it goes: a typed job, so the
/// payload and the checkpoint are Rust types, never JSON by hand.
#[derive(Serialize, Deserialize)]
struct Greet {
    names: Vec<String>,
}

#[async_trait]
impl Job for Greet {
    const TYPE: &'static str = "greet";
    /// Names greeted so far.
    type Checkpoint = usize;
    /// Nothing shared between runs.
    type State = ();

    async fn run(self, _state: &(), context: Context<Self>) -> Result<(), HandlerError> {
        let done = context.checkpoint().copied().unwrap_or(0);
        context.update_progress(|progress| progress.total = Some(self.names.len() as u64));
        for (index, name) in self.names.iter().enumerate().skip(done) {
            context.check_cancelled()?; // a safe point: stop here on cancel or shutdown
            println!("hello, {name}");
            context.set_checkpoint(&(index + 1));
            context.update_progress(|progress| progress.completed = index as u64 + 1);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let store = Arc::new(SqliteJobStore::connect(&url).await?);
    let clock = Arc::new(SystemClock);

    // Run a worker in the background until `shutdown` fires.
    let shutdown = CancellationToken::new();
    // A periodic job too: every second, a greeting for the night shift, enqueued once per
    // tick however many workers are given the schedule.
    let night_shift = Schedule::new("night-shift", "* * * * * *", Greet::TYPE)?
        .in_timezone("Europe/Berlin")?
        .with_payload(serde_json::json!({ "names": ["Margaret"] }));
    let worker = Worker::new(store.clone(), clock.clone(), WorkerConfig::default())
        .handler(typed::handler::<Greet>(()))
        .schedule(night_shift.clone());
    let running = tokio::spawn(worker.run(shutdown.clone()));

    // Enqueue a batch in one round trip: one active "greet" job per team at a time, so
    // the batch's second job for team-1 is answered busy with the first one's job.
    let lock = LockService::new(store.clone(), clock.clone(), RecoveryPolicy::default());
    let greet = |names: &[&str]| Greet {
        names: names.iter().map(|name| name.to_string()).collect(),
    };
    let batch = [
        ("team-1", greet(&["Ada", "Grace", "Barbara"])),
        ("team-2", greet(&["Edsger", "Tony"])),
        ("team-1", greet(&["Alan"])),
    ];
    let answers = lock
        .enqueue_many(batch.iter().map(|(team, job)| (*team, job)))
        .await?;
    let mut created = Vec::new();
    for ((team, _), answer) in batch.iter().zip(&answers) {
        match answer {
            Acquire::Created(job) => {
                println!("{team}: created job {}", job.id);
                created.push(job.id);
            }
            Acquire::Busy(active) => println!("{team}: busy with job {}", active.id),
        }
    }

    // The service's own row and its job in one transaction: both or neither.
    jobs_sqlite::sqlx::query("CREATE TABLE teams (name TEXT PRIMARY KEY)")
        .execute(store.pool())
        .await?;
    for (team, commit) in [("team-3", true), ("team-4", false)] {
        let mut tx = store.pool().begin().await?;
        jobs_sqlite::sqlx::query("INSERT INTO teams (name) VALUES (?)")
            .bind(team)
            .execute(&mut *tx)
            .await?;
        let welcome = greet(&["Katherine"]);
        let answer = lock
            .enqueue_in(&mut jobs_sqlite::in_transaction(&mut tx), team, &welcome)
            .await?;
        let Acquire::Created(job) = answer else {
            return Err(format!("{team} is new, yet busy").into());
        };
        if commit {
            tx.commit().await?;
            println!("{team}: added with job {}", job.id);
            created.push(job.id);
        } else {
            tx.rollback().await?;
            let gone = jobs_core::JobStore::get(&*store, job.id).await.is_err();
            println!("{team}: rolled back, job {} gone: {gone}", job.id);
            if !gone {
                return Err("a rolled-back job exists".into());
            }
        }
    }

    // The schedule's next tick, which the worker enqueues when it comes.
    let tick = night_shift
        .next_tick(clock.now())
        .ok_or("the schedule has a next tick")?;
    created.push(night_shift.job_id(tick));

    // Follow the created jobs until they end.
    for id in created {
        let job = loop {
            match jobs_core::JobStore::get(&*store, id).await {
                Ok(job) if job.status.is_terminal() => break job,
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "job {} of {} is {} after {} greetings",
            job.id, job.resource_key, job.status, job.progress.completed
        );
        if job.status != JobStatus::Completed {
            return Err(format!("job ended {}", job.status).into());
        }
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}
