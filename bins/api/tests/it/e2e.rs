//! End to end on Postgres and S3 (moto): the API served over TCP with a worker running
//! real tesseract; upload with `?ocr=true`, follow the job's events to `completed`, read
//! the text, retry one page, extract guidelines and finalize them with the `rules`
//! extractor, read them as JSON and as Markdown.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiConfig, AppState};
use app::config::WorkerArgs;
use clap::Parser;
use jobs_core::runtime::Worker;
use jobs_core::{JobStore, SystemClock};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::events::parse_job_events;
use crate::support::eventually;
use crate::support::multipart;

#[derive(Debug, Parser)]
struct WorkerCli {
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Follows a job's event stream to its end over HTTP.
async fn follow(client: &reqwest::Client, base: &str, job_id: &str) -> Vec<Value> {
    let mut response = client
        .get(format!("{base}/v1/jobs/{job_id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    parse_job_events(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocr_runs_end_to_end_on_postgres_and_s3() {
    ocr::testing::require_tesseract().await;
    let database = jobs_postgres::testing::TestDatabase::create().await;
    let job_store: Arc<dyn JobStore> = Arc::new(database.store().await);
    let s3 = blob_store::conformance::s3_test_store().await;
    let blob_store = s3.store();

    let shutdown = CancellationToken::new();
    let args = WorkerCli::try_parse_from([
        "worker",
        "--heartbeat-interval",
        "500ms",
        "--progress-flush",
        "100ms",
        "--manifest-flush-every",
        "1",
    ])
    .unwrap()
    .worker;
    let deps = app::handlers::HandlerDeps::new(blob_store.clone(), &args);
    let mut worker = Worker::new(
        job_store.clone(),
        Arc::new(SystemClock),
        args.worker_config(),
    );
    for handler in app::handlers::select_handlers(&args.types, &deps).unwrap() {
        worker = worker.handler(handler);
    }
    let state = AppState::builder(
        job_store.clone(),
        blob_store.clone(),
        ApiConfig {
            api_token: Some("e2e-token".into()),
            event_poll_interval: Duration::from_millis(50),
            ..ApiConfig::default()
        },
    )
    .shutdown(shutdown.clone())
    .worker_metrics(worker.metrics())
    .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(api::server::serve(listener, state, shutdown.clone()));
    let worker = tokio::spawn(worker.run(shutdown.clone()));

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", "Bearer e2e-token".parse().unwrap());
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();

    let response = client
        .post(format!("{base}/v1/books"))
        .json(&json!({"id": "e2e", "title": "End to end"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let fixtures = ocr::testing::fixture_pages();
    let files: Vec<(String, Vec<u8>)> = fixtures
        .iter()
        .take(3)
        .map(|page| (format!("page-{}.png", page.number), page.png.to_vec()))
        .collect();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let (content_type, body) = multipart(&files);
    let response = client
        .post(format!("{base}/v1/books/e2e/pages?ocr=true"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["upload"]["files"].as_array().unwrap().len(), 3);
    assert_eq!(uploaded["job"]["type"], "ingest");
    let ingest_id = uploaded["job"]["id"].as_str().unwrap().to_owned();
    let ingest = tokio::time::timeout(Duration::from_secs(120), follow(&client, &base, &ingest_id))
        .await
        .expect("the ingest job finishes");
    let ingested = ingest.last().unwrap();
    assert_eq!(ingested["status"], "completed", "{ingest:#?}");
    assert_eq!(ingested["progress"]["completed"], 3);
    let job_id = ingested["next_job_id"]
        .as_str()
        .expect("the ocr job follows")
        .to_owned();

    let events = tokio::time::timeout(Duration::from_secs(120), follow(&client, &base, &job_id))
        .await
        .expect("the ocr job finishes");
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:#?}");
    assert_eq!(events.last().unwrap()["progress"]["completed"], 3);

    for page in &fixtures[..3] {
        let response = client
            .get(format!("{base}/v1/books/e2e/pages/{}/text", page.number))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let error_rate = ocr::testing::character_error_rate(&page.text, &text);
        assert!(
            error_rate < 0.1,
            "page {}: error rate {error_rate}: {text}",
            page.number
        );
    }

    let response = client
        .post(format!("{base}/v1/books/e2e/pages/2/ocr/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let retry: Value = response.json().await.unwrap();
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        follow(&client, &base, retry["id"].as_str().unwrap()),
    )
    .await
    .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed", "{events:#?}");
    assert_eq!(last["progress"]["completed"], 1);

    // Guidelines, then finalize, on the text tesseract read.
    for job_type in ["guidelines", "finalize"] {
        let response = client
            .post(format!("{base}/v1/books/e2e/jobs"))
            .json(&json!({"type": job_type}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{job_type}");
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["type"], job_type);
        let events = tokio::time::timeout(
            Duration::from_secs(60),
            follow(&client, &base, job["id"].as_str().unwrap()),
        )
        .await
        .unwrap();
        let last = events.last().unwrap();
        assert_eq!(last["status"], "completed", "{job_type}: {events:#?}");
        assert_eq!(last["progress"]["total"], 3, "{job_type}: {last}");
    }
    let response = client
        .get(format!("{base}/v1/books/e2e/pages/2/guidelines"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["page"], 2);
    assert_eq!(
        page["topics"][0]["title"], "Chapter 2: Subtracting fractions",
        "{page}"
    );
    let response = client
        .get(format!("{base}/v1/books/e2e/guidelines"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let guidelines: Value = response.json().await.unwrap();
    assert_eq!(guidelines["book_id"], "e2e");
    let titles: Vec<&str> = guidelines["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|topic| topic["title"].as_str().unwrap())
        .collect();
    let headings: Vec<&str> = fixtures[..3]
        .iter()
        .map(|page| page.text.lines().next().unwrap())
        .collect();
    assert_eq!(
        titles, headings,
        "topics follow the pages' headings: {guidelines:#}"
    );
    let response = client
        .get(format!("{base}/v1/books/e2e/guidelines"))
        .header("accept", "text/markdown")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let markdown = response.text().await.unwrap();
    for heading in &headings {
        assert!(markdown.contains(&format!("## {heading}")), "{markdown}");
    }

    // One upload with a chain, then nothing but reading the result: OCR, guidelines and
    // finalize follow each other in the store with no other request.
    let response = client
        .post(format!("{base}/v1/books"))
        .json(&json!({"id": "e2e-chain", "title": "End to end, chained"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (content_type, body) = multipart(&files);
    let response = client
        .post(format!(
            "{base}/v1/books/e2e-chain/pages?ocr=true&then=guidelines,finalize"
        ))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(
        uploaded["job"]["then"],
        json!(["ocr", "guidelines", "finalize"])
    );
    let chained = eventually(
        Duration::from_secs(120),
        "the chained book to be finalized",
        || async {
            let response = client
                .get(format!("{base}/v1/books/e2e-chain/guidelines"))
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                return Some(response.json::<Value>().await.unwrap());
            }
            assert_eq!(response.status(), 404, "not finalized yet is 404");
            None
        },
    )
    .await;
    assert_eq!(
        chained["topics"], guidelines["topics"],
        "the same pages, the same result"
    );

    let ready: Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["live_workers"], 1, "{ready}");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("folio_http_requests_total"), "{metrics}");

    shutdown.cancel();
    server.await.unwrap().unwrap();
    worker.await.unwrap().unwrap();
    database.drop().await;
}
