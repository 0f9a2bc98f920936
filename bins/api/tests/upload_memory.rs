//! The `api` process's peak memory under the largest uploads it takes, measured from
//! `/proc` (`VmHWM`): ten concurrent uploads of a page at the pixel limit stay under the
//! decode budget plus 256 MiB, and one request at the body limit stays under four times
//! that limit. A test binary of its own: its uploads keep both cores busy for a while,
//! which would slow the timing-sensitive tests of the main suite.

use std::io::Cursor;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use books::IngestLimits;

const MIB: u64 = 1024 * 1024;

/// An `api` process on SQLite and local files in a temp dir; killed when dropped.
struct ApiProcess {
    child: Child,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl ApiProcess {
    async fn start(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_api"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                &format!("sqlite://{}/folio.db", dir.path().display()),
                "--storage",
                &format!("file://{}/objects", dir.path().display()),
            ])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the api binary");
        let api = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = api
                .client
                .get(format!("{}/healthz", api.base))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the api did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api
    }

    async fn create_book(&self, id: &str) {
        let response = self
            .client
            .post(format!("{}/v1/books", self.base))
            .json(&serde_json::json!({"id": id, "title": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    /// Uploads `files` as the pages of `book`; the status and the body.
    async fn upload(&self, book: &str, files: &[&[u8]]) -> (u16, String) {
        let boundary = "memory-test-boundary";
        let mut body = Vec::new();
        for (index, file) in files.iter().enumerate() {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; \
                     filename=\"page-{index}.png\"\r\nContent-Type: image/png\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(file);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let response = self
            .client
            .post(format!("{}/v1/books/{book}/pages", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// The process's peak resident memory so far, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PNG of `width` x `height` RGB pixels: white with black lines every 40 rows, small
/// on the wire and `width * height * 3` bytes once decoded.
fn striped_png(width: u32, height: u32) -> Vec<u8> {
    let row = width as usize * 3;
    let mut pixels = vec![255_u8; row * height as usize];
    for line in pixels.chunks_mut(row).step_by(40) {
        line.fill(0);
    }
    let image = image::RgbImage::from_raw(width, height, pixels).unwrap();
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

/// A PNG of noise just under `bytes`: it compresses to about its decoded size.
fn noise_png(bytes: u64) -> Vec<u8> {
    let side = ((bytes as f64 * 0.97 / 3.0).sqrt()) as u32;
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let pixels: Vec<u8> = (0..side as usize * side as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let image = image::RgbImage::from_raw(side, side, pixels).unwrap();
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(png.len() as u64 <= bytes, "{} > {bytes}", png.len());
    png
}

#[tokio::test]
async fn ten_concurrent_uploads_at_the_pixel_limit_stay_under_the_decode_budget() {
    let limits = IngestLimits::default();
    let budget = api::ApiConfig::DEFAULT_DECODE_BUDGET_BYTES;
    let api = ApiProcess::start(&["--decode-wait", "10m"]).await;
    api.create_book("big").await;
    let page = striped_png(limits.max_width, limits.max_height);
    let idle = api.peak_rss();
    let started = Instant::now();
    let files: [&[u8]; 1] = [&page];
    let uploads = (0..10).map(|_| api.upload("big", &files));
    for (status, body) in futures::future::join_all(uploads).await {
        assert_eq!(status, 201, "{body}");
    }
    let peak = api.peak_rss();
    eprintln!(
        "10 concurrent uploads of a {}x{} PNG ({} KB, {} MB decoded): {:.1} s, peak RSS {} MiB \
         (idle {} MiB), budget {} MiB",
        limits.max_width,
        limits.max_height,
        page.len() / 1024,
        u64::from(limits.max_width) * u64::from(limits.max_height) * 3 / 1_000_000,
        started.elapsed().as_secs_f64(),
        peak / MIB,
        idle / MIB,
        budget / MIB,
    );
    assert!(
        peak < budget + 256 * MIB,
        "peak RSS {} MiB is over the budget of {} MiB plus 256 MiB",
        peak / MIB,
        budget / MIB
    );
}

#[tokio::test]
async fn one_request_at_the_body_limit_stays_under_four_times_the_limit() {
    let limits = IngestLimits::default();
    let api = ApiProcess::start(&[]).await;
    api.create_book("heavy").await;
    let file = noise_png(limits.max_file_bytes);
    let count = usize::try_from(limits.max_request_bytes / file.len() as u64).unwrap() - 1;
    let files: Vec<&[u8]> = (0..count).map(|_| &file[..]).collect();
    let started = Instant::now();
    let (status, body) = api.upload("heavy", &files).await;
    assert_eq!(status, 201, "{body}");
    let peak = api.peak_rss();
    eprintln!(
        "one request of {count} noise PNGs of {} MiB ({} MiB, limit {} MiB): {:.1} s, peak RSS \
         {} MiB",
        file.len() as u64 / MIB,
        (count * file.len()) as u64 / MIB,
        limits.max_request_bytes / MIB,
        started.elapsed().as_secs_f64(),
        peak / MIB,
    );
    assert!(
        peak < 4 * limits.max_request_bytes,
        "peak RSS {} MiB is over four times the request limit",
        peak / MIB
    );
}
