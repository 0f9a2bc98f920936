//! The `api` process against clients that hold connections: thousands of connections that
//! send half a request line are closed by the header-read timeout, while `/healthz`
//! answers and a real OCR job runs to the end.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{eventually, multipart};

/// Connections opened; each sends half a request line and then nothing.
const HELD: usize = 2_000;
/// The api's header-read timeout in this test.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

struct Api {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    async fn start() -> Self {
        ocr::testing::require_tesseract().await;
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_api"))
            .args([
                "--with-worker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--header-read-timeout",
                &format!("{}s", HEADER_TIMEOUT.as_secs()),
                "--poll-interval",
                "200ms",
                "--database-url",
                &format!("sqlite://{}/folio.db", dir.path().display()),
                "--storage",
                &format!("file://{}/objects", dir.path().display()),
            ])
            .env_remove("FOLIO_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let api = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(60), "the api to be ready", || {
            let url = format!("{}/readyz", api.base);
            let client = client.clone();
            async move {
                let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
                (body["live_workers"] == 1).then_some(())
            }
        })
        .await;
        api
    }
}

/// Opens a connection and sends half a request line.
async fn hold(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /v1/bo").await.unwrap();
    stream
}

/// Waits until the server closes `stream` (end of stream or a reset).
async fn closed_by_server(mut stream: TcpStream) {
    let mut buffer = [0_u8; 256];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_by_the_header_timeout_while_the_api_serves() {
    let api = Api::start().await;
    let address = api.base.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();

    let opened_at = Instant::now();
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(hold(&address).await);
    }
    let all_open = opened_at.elapsed();
    let closes: Vec<_> = held
        .into_iter()
        .map(|stream| tokio::spawn(closed_by_server(stream)))
        .collect();

    // While they are held: health answers at once, and a real OCR job runs to the end.
    let asked = Instant::now();
    let health = client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    let health_ms = asked.elapsed().as_secs_f64() * 1000.0;
    assert!(health.status().is_success());
    let created = client
        .post(format!("{}/v1/books", api.base))
        .json(&json!({"id": "held", "title": "Held"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let page = ocr::testing::fixture_pages().remove(0);
    let (content_type, body) = multipart(&[("page-1.png", &page.png[..])]);
    let upload = client
        .post(format!("{}/v1/books/held/pages?ocr=true", api.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 202, "{:?}", upload.text().await);
    let ocr = eventually(Duration::from_secs(60), "the ocr job to complete", || {
        let url = format!("{}/v1/books/held/jobs/latest?type=ocr", api.base);
        let client = client.clone();
        async move {
            let job: Value = client.get(url).send().await.ok()?.json().await.ok()?;
            (job["status"] == "completed").then_some(job)
        }
    })
    .await;
    let ocr_done = opened_at.elapsed();

    // Every held connection is closed by the server within the header timeout plus 2 s.
    let deadline = HEADER_TIMEOUT + all_open + Duration::from_secs(2);
    let waited = tokio::time::timeout(
        deadline.saturating_sub(opened_at.elapsed()),
        futures::future::join_all(closes),
    )
    .await;
    let closed_after = opened_at.elapsed();
    assert!(
        waited.is_ok(),
        "not every held connection was closed {:.1} s after they were opened",
        closed_after.as_secs_f64()
    );
    assert!(
        ocr_done < HEADER_TIMEOUT,
        "the ocr job ended after the held connections were closed ({ocr_done:?}): {ocr}"
    );
    eprintln!(
        "{}",
        json!({
            "held_connections": HELD,
            "opened_in_s": all_open.as_secs_f64(),
            "healthz_ms": health_ms,
            "ocr_job_done_s": ocr_done.as_secs_f64(),
            "all_closed_by_s": closed_after.as_secs_f64(),
            "header_read_timeout_s": HEADER_TIMEOUT.as_secs(),
        })
    );
}
