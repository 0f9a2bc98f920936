//! The `api` process's peak memory (`VmHWM`, read from `/proc`) under the largest uploads
//! it takes (issue 24): four concurrent uploads of a large PDF, then one of 100 large
//! JPEGs, are streamed to local files and stored as they came, so the api stays under
//! 200 MiB whatever their size; a large scanned PDF's ingest (`--with-worker`: its pages
//! rendered one per `pdftoppm` process, stored one by one) holds a few pages, never every
//! rendered page. A test binary of its own: these uploads keep both cores busy for a while,
//! which would slow the timing-sensitive tests of the main suite.
//!
//! `FOLIO_UPLOAD_MEMORY_PDF_MIB` sets the size of each of the four PDFs (default 128; the
//! issue's figure is 500) and `FOLIO_PDF_MEMORY_PAGES` the scanned PDF's page count
//! (default 20); the figures are printed.

use std::io::Cursor;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// `width` x `height` RGB pixels of xorshift noise: nothing for an encoder to compress.
fn noise(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    (0..width as usize * height as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A PNG of noise just under `bytes`: it compresses to about its decoded size.
fn noise_png(bytes: u64) -> Vec<u8> {
    let side = ((bytes as f64 * 0.97 / 3.0).sqrt()) as u32;
    let image = image::RgbImage::from_raw(side, side, noise(side, side)).unwrap();
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(png.len() as u64 <= bytes, "{} > {bytes}", png.len());
    png
}

/// A JPEG photo of `width` x `height` noise (a phone photo's size on the wire: noise does
/// not compress).
fn noise_jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_raw(width, height, noise(width, height)).unwrap();
    let mut jpeg = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    jpeg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_large_pdf_uploads_then_100_large_jpegs_keep_the_api_under_200_mib() {
    require_poppler().await;
    let pdf_mib: u64 = std::env::var("FOLIO_UPLOAD_MEMORY_PDF_MIB")
        .ok()
        .and_then(|mib| mib.parse().ok())
        .unwrap_or(128);
    // Pages of incompressible noise: the PDF is as large on the wire as it says.
    let page = noise_png(8 * MIB);
    let pdf = (0..pdf_mib.div_ceil(8))
        .fold(PdfBuilder::new(), |pdf, _| {
            pdf.scanned_page_of_size(&page, LETTER)
        })
        .build();
    let photo = noise_jpeg(2000, 1500);
    // The upload alone: no worker, so no page is made in this process.
    let api = ApiProcess::start(&[]).await;
    for book in ["pdf-0", "pdf-1", "pdf-2", "pdf-3", "photos"] {
        api.create_book(book).await;
    }
    let idle = api.peak_rss();
    let started = Instant::now();
    let files: [(&str, &str, &[u8]); 1] = [("book.pdf", "application/pdf", &pdf)];
    let books: Vec<String> = (0..4).map(|index| format!("pdf-{index}")).collect();
    let api = &api;
    let files = &files;
    let uploads = books.iter().map(|book| api.upload(book, files));
    for (status, body) in futures::future::join_all(uploads).await {
        assert_eq!(status, 202, "{body}");
    }
    let pdfs_s = started.elapsed().as_secs_f64();
    let after_pdfs = api.peak_rss();
    let photos: Vec<(&str, &str, &[u8])> = (0..100)
        .map(|_| ("photo.jpg", "image/jpeg", &photo[..]))
        .collect();
    let started = Instant::now();
    let (status, body) = api.upload("photos", &photos).await;
    assert_eq!(status, 202, "{body}");
    let photos_s = started.elapsed().as_secs_f64();
    let peak = api.peak_rss();
    eprintln!(
        "4 concurrent uploads of a {} MiB PDF: {pdfs_s:.1} s, api peak RSS {} MiB; then 100 \
         JPEGs of {} KiB (2000x1500) in one request: {photos_s:.1} s; api peak RSS {} MiB \
         (idle {} MiB)",
        pdf.len() as u64 / MIB,
        after_pdfs / MIB,
        photo.len() / 1024,
        peak / MIB,
        idle / MIB,
    );
    assert!(
        peak < 200 * MIB,
        "the api's peak RSS {} MiB is over 200 MiB",
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
    let api = ApiProcess::start(&["--with-worker", "--poll-interval", "100ms"]).await;
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
    assert_eq!(status, 202, "{answer}");
    let job = format!(
        "{}/v1/jobs/{}",
        api.base,
        answer["job"]["id"].as_str().unwrap()
    );
    let ingest: serde_json::Value = eventually(Duration::from_secs(900), "the ingest", || async {
        let job: serde_json::Value = api.client.get(&job).send().await.ok()?.json().await.ok()?;
        (job["status"] != "pending" && job["status"] != "running").then_some(job)
    })
    .await;
    let elapsed = started.elapsed();
    sampling.0.send(true).unwrap();
    let children_peak = children_peak.await.unwrap();
    assert_eq!(ingest["status"], "completed", "{ingest}");
    assert_eq!(ingest["progress"]["completed"], pages);
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
    // A few pages at a time: never every rendered page (200 of them are over 1 GiB as
    // bitmaps, and tens of MiB as PNGs), nor the PDF's bytes (streamed to and from files).
    let bound = idle + 128 * MIB;
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
