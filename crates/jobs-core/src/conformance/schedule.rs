//! Periodic jobs on a real store, on a manual clock: one job per tick across workers, the
//! catch-up policies, no overlap.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runtime::{STEPS, StepsHandler, WAIT, fast_config};
use super::{Fixture, TEST_TYPE};
use crate::runtime::{Worker, WorkerConfig};
use crate::testing::eventually;
use crate::{CatchUp, FinishOutcome, JobQuery, JobStatus, JobStore, Schedule, Tick};

const MINUTE: Duration = Duration::from_secs(60);

fn every_minute(job_type: &str) -> Schedule {
    Schedule::new("every-minute", "* * * * *", job_type).unwrap()
}

/// The jobs of `schedule`, oldest first.
async fn jobs_of(store: &dyn JobStore, schedule: &Schedule) -> Vec<crate::Job> {
    let mut jobs = store
        .list(&JobQuery {
            resource_key: Some(schedule.name().to_owned()),
            limit: 1_000,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    jobs.reverse();
    jobs
}

/// Three workers given one schedule, the clock moved a tick at a time for 100 ticks: each
/// tick's job is enqueued once (the three workers' counts add up to 100) and runs once.
pub async fn schedule_enqueues_each_tick_once_across_three_workers(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store.clone());
    let schedule = every_minute(STEPS).with_payload(serde_json::json!({ "steps": 1 }));
    let handler = Arc::new(StepsHandler::default());
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for index in 0..3 {
        let config = WorkerConfig {
            worker_id: format!("scheduler-{index}"),
            ..fast_config()
        };
        let worker = Worker::new(store.clone(), fx.clock.clone(), config)
            .handler(handler.clone())
            .schedule(schedule.clone());
        workers.push((worker.metrics(), tokio::spawn(worker.run(shutdown.clone()))));
    }
    let mut ticks = Vec::new();
    for round in 0..100 {
        if round > 0 {
            fx.advance(MINUTE);
        }
        let tick = schedule.latest_tick(fx.now()).unwrap();
        assert_eq!(tick, fx.now(), "the clock sits on a tick");
        let id = schedule.job_id(tick);
        eventually(WAIT, &format!("tick {round}'s job to complete"), || {
            let store = store.clone();
            async move {
                store
                    .get(id)
                    .await
                    .ok()
                    .filter(|job| job.status == JobStatus::Completed)
            }
        })
        .await;
        ticks.push(tick);
    }
    shutdown.cancel();
    let mut enqueued = 0;
    for (metrics, task) in workers {
        task.await.unwrap().unwrap();
        enqueued += metrics.scheduled.load(Ordering::Relaxed);
    }
    assert_eq!(enqueued, 100, "ticks enqueued, summed over the workers");
    let jobs = jobs_of(&*store, &schedule).await;
    let ids: Vec<_> = jobs.iter().map(|job| job.id).collect();
    let expected: Vec<_> = ticks.iter().map(|tick| schedule.job_id(*tick)).collect();
    assert_eq!(ids, expected, "one job per tick, in tick order");
    assert!(
        jobs.iter()
            .all(|job| job.attempt == 1 && job.job_type == STEPS)
    );
    assert_eq!(handler.ran.lock().unwrap().len(), 100, "each tick ran once");
}

/// `CatchUp::One` (the default): after ten missed ticks, only the latest one runs, once.
pub async fn schedule_catch_up_runs_the_latest_missed_tick_once(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store.clone());
    let schedule = every_minute(TEST_TYPE);
    let Tick::Enqueued(first) = fx.lock.enqueue_tick(&schedule).await.unwrap() else {
        panic!("the first tick is enqueued");
    };
    assert_eq!(first.created_at, fx.now());
    let claimed = fx.claim_one().await;
    fx.finish(&claimed, FinishOutcome::Completed).await.unwrap();
    fx.advance(MINUTE * 10 + Duration::from_secs(30));
    let Tick::Enqueued(latest) = fx.lock.enqueue_tick(&schedule).await.unwrap() else {
        panic!("the latest missed tick is enqueued");
    };
    assert_eq!(
        latest.id,
        schedule.job_id(schedule.latest_tick(fx.now()).unwrap())
    );
    assert_eq!(
        fx.lock.enqueue_tick(&schedule).await.unwrap(),
        Tick::AlreadyEnqueued
    );
    assert_eq!(jobs_of(&*store, &schedule).await.len(), 2);
}

/// `CatchUp::Skip`: a tick older than the grace is skipped; the next one within it runs.
pub async fn schedule_skip_drops_ticks_older_than_the_grace(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store.clone());
    let schedule = every_minute(TEST_TYPE).with_catch_up(CatchUp::Skip {
        grace: Duration::from_secs(30),
    });
    fx.advance(Duration::from_secs(45));
    assert_eq!(
        fx.lock.enqueue_tick(&schedule).await.unwrap(),
        Tick::Skipped
    );
    assert!(jobs_of(&*store, &schedule).await.is_empty());
    fx.advance(Duration::from_secs(25));
    let Tick::Enqueued(job) = fx.lock.enqueue_tick(&schedule).await.unwrap() else {
        panic!("a tick 10 s old is within the grace");
    };
    assert_eq!(
        job.id,
        schedule.job_id(schedule.latest_tick(fx.now()).unwrap())
    );
}

/// A tick whose previous run is still active waits for it, then runs.
pub async fn schedule_tick_waits_for_the_previous_run_to_end(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store.clone());
    let schedule = every_minute(TEST_TYPE);
    let Tick::Enqueued(first) = fx.lock.enqueue_tick(&schedule).await.unwrap() else {
        panic!("the first tick is enqueued");
    };
    let running = fx.claim_one().await;
    fx.advance(MINUTE);
    match fx.lock.enqueue_tick(&schedule).await.unwrap() {
        Tick::Overlapping(active) => assert_eq!(active.id, first.id),
        other => panic!("expected Overlapping, got {other:?}"),
    }
    fx.finish(&running, FinishOutcome::Completed).await.unwrap();
    let Tick::Enqueued(second) = fx.lock.enqueue_tick(&schedule).await.unwrap() else {
        panic!("the waiting tick runs once the previous run ended");
    };
    assert_eq!(second.id, schedule.job_id(fx.now()));
}
