//! The `api` process's peak memory (`VmHWM`, read from `/proc`) under the largest uploads
//! it takes: ten concurrent uploads of a page at the pixel limit stay under the decode
//! budget plus 256 MiB; one request at the body limit stays under four times that limit;
//! one large scanned PDF (its pages rendered one per `pdftoppm` process into a staging
//! folder and stored one by one) holds the request and a few pages, never every rendered
//! page. A test binary of its own: these uploads keep both cores busy for a while, which
//! would slow the timing-sensitive tests of the main suite.
//!
//! `FOLIO_PDF_MEMORY_PAGES` sets the PDF's page count (default 20, a few seconds of
//! rendering per page on a busy 2-core machine); the figures are printed. With 200 pages
//! (a 19 MiB PDF of full-page 300 dpi scans) on 2 cores shared with other builds (load
//! 7-8): 348 s (0.57 pages/s), api peak RSS 72 MiB (idle 31 MiB), each `pdftoppm` 72 MiB at
//! most.

use std::io::Cursor;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use books::IngestLimits;
use books::testing::{LETTER, PdfBuilder, require_poppler};
use jobs_core::testing::eventually;

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
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(900))
                .build()
                .unwrap(),
            _dir: dir,
        };
        eventually(Duration::from_secs(60), "the api to start", || async {
            let health = api.client.get(format!("{}/healthz", api.base)).send().await;
            health
                .is_ok_and(|response| response.status().is_success())
                .then_some(())
        })
        .await;
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

    /// Uploads `files` (name, content type, content) as the pages of `book`; the status and
    /// the body.
    async fn upload(&self, book: &str, files: &[(&str, &str, &[u8])]) -> (u16, String) {
        let boundary = "memory-test-boundary";
        let mut body = Vec::new();
        for (name, content_type, content) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; \
                     filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(content);
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
        peak_rss_of(self.child.id()).expect("VmHWM of the api process")
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of a process, in bytes (`None` once it is gone).
fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib * 1024)
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
    let files: [(&str, &str, &[u8]); 1] = [("page.png", "image/png", &page)];
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
    let files: Vec<(&str, &str, &[u8])> = (0..count)
        .map(|_| ("noise.png", "image/png", &file[..]))
        .collect();
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

/// A full letter page at 300 dpi (2550 x 3300, 8-bit gray) of the fixture pages' text
/// tiled down the page: what a scanner gives for a page of a book.
fn full_page_scan() -> Vec<u8> {
    let (width, height) = (2550_u32, 3300_u32);
    let mut page = image::GrayImage::from_pixel(width, height, image::Luma([255]));
    let mut y = 150;
    for fixture in ocr::testing::fixture_pages().iter().cycle() {
        let strip = image::load_from_memory(&fixture.png).unwrap().to_luma8();
        if y + strip.height() > height - 150 {
            break;
        }
        image::imageops::overlay(&mut page, &strip, 150, i64::from(y));
        y += strip.height();
    }
    let mut png = Vec::new();
    page.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_scanned_pdf_is_ingested_with_bounded_memory() {
    require_poppler().await;
    let pages: usize = std::env::var("FOLIO_PDF_MEMORY_PAGES")
        .ok()
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(20);
    let scan = full_page_scan();
    let pdf = (0..pages)
        .fold(PdfBuilder::new(), |pdf, _| {
            pdf.scanned_page_of_size(&scan, LETTER)
        })
        .build();
    let api = ApiProcess::start(&[]).await;
    api.create_book("scanned").await;
    let idle = api.peak_rss();

    // Sample the PDF tools' peak memory while the upload runs.
    let sampling = tokio::sync::watch::channel(false);
    let children_peak = {
        let api_id = api.child.id();
        let mut stop = sampling.1.clone();
        tokio::spawn(async move {
            let api = ApiChildren(api_id);
            let mut peak = 0;
            while !*stop.borrow() {
                for child in api.children() {
                    peak = peak_rss_of(child).unwrap_or(0).max(peak);
                }
                let _ = tokio::time::timeout(Duration::from_millis(10), stop.changed()).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let (status, answer) = api
        .upload("scanned", &[("book.pdf", "application/pdf", &pdf)])
        .await;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    let elapsed = started.elapsed();
    sampling.0.send(true).unwrap();
    let children_peak = children_peak.await.unwrap();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["pages"].as_array().unwrap().len(), pages);
    let peak = api.peak_rss();
    eprintln!(
        "one PDF of {pages} scanned letter pages ({} MiB, each a {} KiB 2550x3300 gray PNG \
         scan) rendered at 300 dpi: {:.1} s ({:.2} pages/s), api peak RSS {} MiB (idle {} \
         MiB), PDF tools' peak RSS {} MiB",
        pdf.len() as u64 / MIB,
        scan.len() / 1024,
        elapsed.as_secs_f64(),
        pages as f64 / elapsed.as_secs_f64(),
        peak / MIB,
        idle / MIB,
        children_peak / MIB,
    );
    // The request itself (held by the multipart reader, then written to the staging
    // folder) and a few pages: never every rendered page (200 of them are over 1 GiB as
    // bitmaps, and tens of MiB as PNGs).
    let bound = idle + 3 * pdf.len() as u64 + 128 * MIB;
    assert!(
        peak < bound,
        "peak RSS {} MiB is over {} MiB",
        peak / MIB,
        bound / MIB
    );
}

/// The children of a process, read from `/proc` (for the sampling task).
struct ApiChildren(u32);

impl ApiChildren {
    fn children(&self) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.0)) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|children| {
                children
                    .split_whitespace()
                    .filter_map(|id| id.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }
}
