//! Server-sent events of a job: progress events, then `completed`, then the stream ends.

use std::sync::Arc;
use std::time::Duration;

use api::ApiConfig;
use app::handlers::{BENCH_STEPS, StepsHandler};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::StreamExt;
use jobs_core::runtime::{Worker, WorkerConfig};
use jobs_core::{Acquire, SystemClock};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, assert_error};

/// Reads an event stream to its end; returns the `data` of each `job` event.
pub(crate) async fn read_job_events(body: Body) -> Vec<Value> {
    let mut text = String::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    parse_job_events(&text)
}

pub(crate) fn parse_job_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|line| line == "event: job"))
        .map(|block| {
            let data: String = block
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            serde_json::from_str(&data).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_shows_progress_then_completed_and_ends() {
    let app = TestApp::sqlite_with(ApiConfig {
        event_poll_interval: Duration::from_millis(10),
        ..ApiConfig::default()
    })
    .await;
    let Acquire::Created(job) = app
        .state
        .lock()
        .acquire("book", BENCH_STEPS, json!({"steps": 5, "step_ms": 60}))
        .await
        .unwrap()
    else {
        panic!("a new job")
    };
    let request = Request::get(format!("/v1/jobs/{}/events", job.id))
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );

    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        app.job_store.clone(),
        Arc::new(SystemClock),
        WorkerConfig {
            heartbeat_interval: Duration::from_millis(100),
            progress_flush: Duration::from_millis(10),
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
    )
    .handler(Arc::new(StepsHandler));
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let events = tokio::time::timeout(
        Duration::from_secs(30),
        read_job_events(response.into_body()),
    )
    .await
    .expect("the stream ends once the job completes");
    shutdown.cancel();
    running.await.unwrap().unwrap();

    assert!(events.len() >= 3, "{events:#?}");
    assert_eq!(events[0]["status"], "pending");
    assert!(
        events.iter().any(|event| event["status"] == "running"
            && event["progress"]["completed"].as_u64().unwrap() > 0),
        "a progress event: {events:#?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(last["progress"]["completed"], 5);
    assert_eq!(
        events
            .iter()
            .filter(|event| event["status"] == "completed")
            .count(),
        1,
        "nothing after the terminal event"
    );
}

#[tokio::test]
async fn the_stream_of_a_finished_job_sends_it_once_and_ends() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("done", 1).await;
    let (_, job) = app
        .post("/v1/books/done/jobs", json!({"type": "ocr"}))
        .await;
    let id = job["id"].as_str().unwrap();
    app.post(&format!("/v1/jobs/{id}/cancel"), json!(null))
        .await;
    let response = app
        .send(
            Request::get(format!("/v1/jobs/{id}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let events = tokio::time::timeout(
        Duration::from_secs(10),
        read_job_events(response.into_body()),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], "cancelled");
}

#[tokio::test]
async fn events_of_an_unknown_job_are_404_and_of_a_bad_id_422() {
    let app = TestApp::sqlite().await;
    let (status, body) = app
        .get(&format!("/v1/jobs/{}/events", uuid::Uuid::now_v7()))
        .await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/jobs/nope/events").await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn open_streams_end_when_the_server_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.path().display());
    let job_store: Arc<dyn jobs_core::JobStore> =
        Arc::new(jobs_sqlite::SqliteJobStore::connect(&url).await.unwrap());
    let blob_store = blob_store::open(&format!("file://{}/objects", dir.path().display()))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let state = api::AppState::builder(job_store, blob_store, ApiConfig::default())
        .shutdown(shutdown.clone())
        .build();
    let Acquire::Created(job) = state
        .lock()
        .acquire("b", BENCH_STEPS, json!({}))
        .await
        .unwrap()
    else {
        panic!("a new job")
    };
    let response = tower::ServiceExt::oneshot(
        api::app(state),
        Request::get(format!("/v1/jobs/{}/events", job.id))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    shutdown.cancel();
    let events = tokio::time::timeout(
        Duration::from_secs(10),
        read_job_events(response.into_body()),
    )
    .await
    .expect("the stream ends on shutdown");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], "pending");
}

/// `folio_event_feed_reads_total` from `/metrics`.
async fn feed_reads(app: &TestApp) -> u64 {
    let response = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    let (_, bytes) = crate::support::into_bytes(response).await;
    let text = String::from_utf8(bytes).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("folio_event_feed_reads_total "))
        .unwrap_or_else(|| panic!("no feed reads in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_followers_of_one_job_cost_one_read_per_poll_and_one_more_is_503() {
    const FOLLOWERS: usize = 500;
    let poll = Duration::from_millis(100);
    let app = TestApp::sqlite_with(ApiConfig {
        event_poll_interval: poll,
        max_event_streams: FOLLOWERS,
        ..ApiConfig::default()
    })
    .await;
    let Acquire::Created(job) = app
        .state
        .lock()
        .acquire("book", BENCH_STEPS, json!({}))
        .await
        .unwrap()
    else {
        panic!("a new job")
    };
    let events = format!("/v1/jobs/{}/events", job.id);
    let before = feed_reads(&app).await;
    let started = std::time::Instant::now();
    let mut streams = Vec::with_capacity(FOLLOWERS);
    for _ in 0..FOLLOWERS {
        let response = app
            .send(Request::get(&events).body(Body::empty()).unwrap())
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body().into_data_stream();
        // The first event arrives at once for each.
        let first = body.next().await.unwrap().unwrap();
        assert!(std::str::from_utf8(&first).unwrap().contains("event: job"));
        streams.push(body);
    }
    // One more is refused while they are open.
    let (status, body) = app.get(&events).await;
    assert_error(
        (status, &body),
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
    );

    // Followed for a while: one read per poll interval for the job, whoever follows it.
    tokio::time::sleep(poll * 10).await;
    let reads = feed_reads(&app).await - before;
    let polls = started.elapsed().as_secs_f64() / poll.as_secs_f64();
    assert!(
        reads as f64 <= polls + 2.0,
        "{reads} reads for {FOLLOWERS} followers in {polls:.1} poll intervals"
    );
    eprintln!("{FOLLOWERS} followers: {reads} reads in {polls:.1} poll intervals");

    // Their places are given back when they go.
    drop(streams);
    crate::support::eventually(Duration::from_secs(10), "a free stream place", || async {
        let response = app
            .send(Request::get(&events).body(Body::empty()).unwrap())
            .await;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_lifetime_is_resumed_with_last_event_id_and_misses_nothing() {
    let app = TestApp::sqlite_with(ApiConfig {
        event_poll_interval: Duration::from_millis(10),
        event_stream_lifetime: Duration::from_millis(150),
        ..ApiConfig::default()
    })
    .await;
    let Acquire::Created(job) = app
        .state
        .lock()
        .acquire("book", BENCH_STEPS, json!({"steps": 8, "step_ms": 80}))
        .await
        .unwrap()
    else {
        panic!("a new job")
    };
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        app.job_store.clone(),
        Arc::new(SystemClock),
        WorkerConfig {
            heartbeat_interval: Duration::from_secs(10),
            progress_flush: Duration::from_millis(10),
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
    )
    .handler(Arc::new(StepsHandler));
    let running = tokio::spawn(worker.run(shutdown.clone()));

    // A client as EventSource is: reconnect when the stream ends, with the last id.
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut connections = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen
        .last()
        .is_none_or(|(_, job)| job["status"] != "completed")
    {
        assert!(std::time::Instant::now() < deadline, "no end: {seen:?}");
        let mut request = Request::get(format!("/v1/jobs/{}/events", job.id));
        if let Some((id, _)) = seen.last() {
            request = request.header("last-event-id", id.as_str());
        }
        let response = app.send(request.body(Body::empty()).unwrap()).await;
        connections += 1;
        let mut text = String::new();
        let mut body = response.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        for block in text
            .split("\n\n")
            .filter(|block| block.contains("event: job"))
        {
            let id = block
                .lines()
                .find_map(|line| line.strip_prefix("id: "))
                .expect("every event has an id")
                .to_owned();
            seen.push((id, parse_job_events(block).remove(0)));
        }
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert!(
        connections >= 3,
        "the lifetime ended streams: {connections}"
    );
    // Each change once: no event repeated over a reconnection, progress never back.
    for pair in seen.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "{seen:?}");
        let done = |job: &Value| job["progress"]["completed"].as_u64().unwrap_or(0);
        assert!(done(&pair[1].1) >= done(&pair[0].1), "{seen:?}");
    }
    let done_values: std::collections::BTreeSet<u64> = seen
        .iter()
        .filter_map(|(_, job)| job["progress"]["completed"].as_u64())
        .collect();
    assert!(
        done_values.len() >= 4,
        "the steps were seen as they came: {done_values:?}"
    );
}
