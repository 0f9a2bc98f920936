//! `cargo xtask bench book --pages N [--pdf | --photos] [--parallelism P] [--dir DIR]`: a
//! whole book through the product as a user runs it.
//!
//! The book is generated with known text (`extraction::quality`: chapters, rules, examples,
//! running headers and footers), each page with its own marker line (`Bench page 0042`),
//! rendered by ImageMagick as an A4 scan at 150 dpi. It is uploaded as one PDF (`--pdf`, the
//! default: each scan a page of its own size, which ingest renders back at 300 dpi) or as
//! one JPEG per page (`--photos`), through a raw HTTP/1.1 request to the release `api`
//! binary, with `?ocr=true&then=guidelines,finalize`; a release `worker` process runs the
//! chain (ingest, ocr, guidelines, finalize) on the embedded default (SQLite and a `file://`
//! store), with `--ingest-concurrency` and `--ocr-concurrency` at the parallelism.
//!
//! Figures (one JSON line):
//! - `upload_s`, and `answer_after_last_byte_s`: from the request's last byte written until
//!   the answer (the largest of each upload's: more than 300 photos go as several uploads,
//!   each after the previous one's ingest, the last one with the chain);
//! - each stage's seconds (its job's `finished_at - started_at`) and pages per second;
//! - `end_to_end_s`: from the upload's first byte until the finalize job is seen completed;
//! - `api_peak_rss_mb` and `worker_peak_rss_mb` (`VmHWM`; child processes aside);
//! - `bare_s`: the same pages through a plain loop at the same parallelism: `pdftoppm` of
//!   each page at 300 dpi then `tesseract` (as the `ocr` job runs it) for a PDF, `tesseract`
//!   of each JPEG for photos; and `ratio = end_to_end_s / bare_s`;
//! - `pages_in_order`: pages whose text holds their own marker. The bench fails unless the
//!   chain ended finalized with every page there.
//!
//! The rendered pages are kept in `--dir` (default `target/bench-book`) for the next run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flags::{Flags, report};

/// The resolution the pages are scanned at.
const SCAN_DPI: f64 = 150.0;
/// Longest time the chain may take.
const CHAIN_LIMIT: Duration = Duration::from_secs(4 * 3600);
const BOUNDARY: &str = "folio-bench-book";
/// Files one upload request may carry (the api's default limit): more photos go as
/// several uploads, each after the previous one's ingest, as the dashboard sends them.
const FILES_PER_UPLOAD: usize = 300;

pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let pages: usize = flags.get("pages", 100)?;
    let photos: bool = flags.get("photos", false)?;
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let parallelism: usize = flags.get("parallelism", cpus)?;
    let dir = PathBuf::from(
        flags.text(
            "dir",
            &crate::root()
                .join("target/bench-book")
                .display()
                .to_string(),
        ),
    );
    if pages == 0 {
        bail!("--pages must be at least 1");
    }
    ocr::TesseractEngine::default()
        .version()
        .await
        .context("the tesseract CLI (scripts/install-tesseract.sh)")?;

    let scans = render_pages(&dir, pages, parallelism).await?;
    let (files, input_bytes) = if photos {
        let jpegs = photos_of(&scans, parallelism).await?;
        let bytes = jpegs.iter().map(|path| file_size(path)).sum();
        (jpegs, bytes)
    } else {
        let pdf = pdf_of(&dir, &scans)?;
        let bytes = file_size(&pdf);
        (vec![pdf], bytes)
    };
    let binaries = crate::build_release(&["api", "worker"])?;

    let run_dir = tempfile::tempdir()?;
    let figures = run_product(&binaries, run_dir.path(), &files, pages, parallelism).await?;
    let bare = if photos {
        bare_photos(&files, parallelism).await?
    } else {
        bare_pdf(&files[0], pages, parallelism).await?
    };

    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    let mut result = json!({
        "bench": "book",
        "pages": pages,
        "input": if photos { "photos" } else { "pdf" },
        "input_mb": round(input_bytes as f64 / 1e6),
        "parallelism": parallelism,
    });
    let object = result.as_object_mut().expect("an object");
    for (name, value) in figures.as_object().expect("an object") {
        object.insert(name.clone(), value.clone());
    }
    let end_to_end = figures["end_to_end_s"].as_f64().unwrap_or_default();
    object.insert("bare_s".into(), round(bare).into());
    object.insert("ratio".into(), round(end_to_end / bare).into());
    report(&result);
    if figures["pages_in_order"].as_u64() != Some(pages as u64) {
        bail!("the book came back with pages missing or out of order");
    }
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    path.metadata().map_or(0, |meta| meta.len())
}

/// The marker line of page `number`.
fn marker(number: usize) -> String {
    format!("Bench page {number:04}")
}

/// Renders the book's pages as PNG scans (kept between runs); their paths in order.
async fn render_pages(dir: &Path, pages: usize, parallelism: usize) -> Result<Vec<PathBuf>> {
    let per_chapter = 20;
    let config = extraction::quality::CorpusConfig {
        seed: 24,
        books: 1,
        chapters: pages.div_ceil(per_chapter),
        pages_per_chapter: per_chapter,
    };
    let book = extraction::quality::generate(&config)
        .into_iter()
        .next()
        .context("a generated book")?;
    let scans = dir.join("scans");
    std::fs::create_dir_all(&scans)?;
    let started = Instant::now();
    let paths: Vec<PathBuf> = stream::iter(book.pages.into_iter().take(pages).enumerate())
        .map(|(index, mut plan)| {
            let path = scans.join(format!("{:04}.png", index + 1));
            async move {
                if path.is_file() {
                    return Ok(path);
                }
                plan.header.push(marker(index + 1));
                let partial = path.with_extension("part.png");
                tokio::task::spawn_blocking(move || {
                    extraction::quality::render_page(&plan, &partial)?;
                    std::fs::rename(&partial, &path)?;
                    anyhow::Ok(path)
                })
                .await?
            }
        })
        .buffered(parallelism.max(1))
        .try_collect()
        .await?;
    eprintln!(
        "{} pages ready in {} ({:.0} s)",
        paths.len(),
        scans.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(paths)
}

/// The scans as one PDF, each a page of its own size.
fn pdf_of(dir: &Path, scans: &[PathBuf]) -> Result<PathBuf> {
    let mut builder = books::testing::PdfBuilder::new();
    for scan in scans {
        builder = builder.scanned_page_at(&std::fs::read(scan)?, SCAN_DPI);
    }
    let pdf = dir.join(format!("book-{}.pdf", scans.len()));
    std::fs::write(&pdf, builder.build())?;
    Ok(pdf)
}

/// The scans as JPEG photos (kept between runs).
async fn photos_of(scans: &[PathBuf], parallelism: usize) -> Result<Vec<PathBuf>> {
    stream::iter(scans.iter().cloned())
        .map(|scan| async move {
            let jpeg = scan.with_extension("jpg");
            if !jpeg.is_file() {
                let status = tokio::process::Command::new("convert")
                    .arg(&scan)
                    .args(["-quality", "90"])
                    .arg(&jpeg)
                    .status()
                    .await?;
                if !status.success() {
                    bail!("convert {} failed: {status}", scan.display());
                }
            }
            Ok(jpeg)
        })
        .buffered(parallelism.max(1))
        .try_collect()
        .await
}

/// A process of the bench, killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(binary: &Path, args: &[String], log: PathBuf) -> Result<Self> {
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, log })
    }

    /// Its peak resident memory so far, in MB (`VmHWM`).
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| (kb * 1024.0 / 1e6 * 10.0).round() / 10.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uploads the files to a fresh api and worker, follows the chain to its end, and checks
/// the book; the figures.
async fn run_product(
    binaries: &[PathBuf],
    dir: &Path,
    files: &[PathBuf],
    pages: usize,
    parallelism: usize,
) -> Result<Value> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    drop(listener);
    let common = vec![
        format!("--database-url=sqlite://{}/folio.db", dir.display()),
        format!("--storage=file://{}/objects", dir.display()),
        format!("--staging-dir={}", dir.display()),
        format!("--ingest-concurrency={parallelism}"),
        format!("--ocr-concurrency={parallelism}"),
    ];
    let mut api_args = common.clone();
    api_args.push(format!("--listen={address}"));
    api_args.push("--max-pdf-bytes=1GiB".into());
    let api = Process::start(&binaries[0], &api_args, dir.join("api.log"))?;
    let client = Client {
        address,
        http: reqwest::Client::new(),
    };
    client.wait_ready(&api).await?;
    // The worker starts once the api has migrated the database.
    let worker = Process::start(&binaries[1], &common, dir.join("worker.log"))?;

    let (status, _) = client
        .send_json(
            "POST",
            "/v1/books",
            &json!({"id": "bench", "title": "Bench book"}),
        )
        .await?;
    if status != 201 {
        bail!("creating the book: {status}");
    }
    let started = Instant::now();
    let mut uploading = Duration::ZERO;
    let mut answer_after_last_byte = Duration::ZERO;
    let batches: Vec<&[PathBuf]> = files.chunks(FILES_PER_UPLOAD).collect();
    for (index, batch) in batches.iter().enumerate() {
        // The chain starts with the last upload; the earlier ones only make their pages.
        let last = index + 1 == batches.len();
        let query = if last {
            "?ocr=true&then=guidelines,finalize"
        } else {
            ""
        };
        let sent = Instant::now();
        let (answer, last_byte) = client.upload(batch, query).await?;
        uploading += sent.elapsed();
        answer_after_last_byte = answer_after_last_byte.max(sent.elapsed() - last_byte);
        if answer["job"]["type"] != "ingest" {
            bail!("the upload's answer: {answer}");
        }
        if !last {
            let path = format!(
                "/v1/jobs/{}",
                answer["job"]["id"].as_str().unwrap_or_default()
            );
            loop {
                let (_, job) = client.get(&path).await?;
                match job["status"].as_str() {
                    Some("completed") => break,
                    Some("failed" | "cancelled") => bail!("an upload's ingest ended: {job}"),
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
    }

    let deadline = Instant::now() + CHAIN_LIMIT;
    let jobs = loop {
        let (_, list) = client.get("/v1/books/bench/jobs?limit=50").await?;
        let jobs = list["jobs"].as_array().cloned().unwrap_or_default();
        let finalize = jobs.iter().find(|job| job["type"] == "finalize");
        if let Some(failed) = jobs
            .iter()
            .find(|job| job["status"] == "failed" || job["status"] == "cancelled")
        {
            bail!(
                "a job of the chain ended {}: {failed}\napi:\n{}\nworker:\n{}",
                failed["status"],
                api.log(),
                worker.log()
            );
        }
        if finalize.is_some_and(|job| job["status"] == "completed") {
            break jobs;
        }
        if Instant::now() > deadline {
            bail!("the chain did not end: {jobs:?}\nworker:\n{}", worker.log());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let end_to_end = started.elapsed();
    let (api_rss, worker_rss) = (api.peak_rss_mb(), worker.peak_rss_mb());

    let mut in_order = 0;
    for number in 1..=pages {
        let (status, text) = client
            .get_text(&format!("/v1/books/bench/pages/{number}/text"))
            .await?;
        if status == 200 && text.contains(&marker(number)) {
            in_order += 1;
        }
    }

    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    let mut figures = json!({
        "uploads": batches.len(),
        "upload_s": round(uploading.as_secs_f64()),
        "answer_after_last_byte_s": round(answer_after_last_byte.as_secs_f64()),
    });
    let object = figures.as_object_mut().expect("an object");
    for stage in ["ingest", "ocr", "guidelines", "finalize"] {
        // Every upload has its ingest: their times add up.
        let mut seconds = 0.0;
        for job in jobs.iter().filter(|job| job["type"] == stage) {
            seconds += seconds_between(&job["started_at"], &job["finished_at"])?;
        }
        if seconds == 0.0 {
            bail!("no {stage} job in the chain");
        }
        object.insert(format!("{stage}_s"), round(seconds).into());
        object.insert(
            format!("{stage}_pages_per_s"),
            round(pages as f64 / seconds).into(),
        );
    }
    object.insert(
        "end_to_end_s".into(),
        round(end_to_end.as_secs_f64()).into(),
    );
    object.insert("api_peak_rss_mb".into(), api_rss.into());
    object.insert("worker_peak_rss_mb".into(), worker_rss.into());
    object.insert("pages_in_order".into(), in_order.into());
    drop(worker);
    drop(api);
    Ok(figures)
}

fn seconds_between(start: &Value, end: &Value) -> Result<f64> {
    let parse = |value: &Value| {
        value
            .as_str()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .with_context(|| format!("not a time: {value}"))
    };
    Ok((parse(end)? - parse(start)?).as_seconds_f64())
}

/// The api over HTTP/1.1.
struct Client {
    address: std::net::SocketAddr,
    http: reqwest::Client,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn wait_ready(&self, api: &Process) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.http.get(self.url("/healthz")).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the api did not start:\n{}", api.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let response = self.http.get(self.url(path)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let response = self.http.get(self.url(path)).send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    async fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .request(method.parse()?, self.url(path))
            .json(body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// The multipart upload of `files` with `query`, streamed from disk over a raw
    /// connection; the answer, and when the last byte was written (from the start).
    async fn upload(&self, files: &[PathBuf], query: &str) -> Result<(Value, Duration)> {
        let started = Instant::now();
        let parts: Vec<(Vec<u8>, &PathBuf)> = files
            .iter()
            .map(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let head = format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; \
                     filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                );
                (head.into_bytes(), path)
            })
            .collect();
        let tail = format!("--{BOUNDARY}--\r\n");
        let length: u64 = parts
            .iter()
            .map(|(head, path)| head.len() as u64 + file_size(path) + 2)
            .sum::<u64>()
            + tail.len() as u64;
        let mut stream = TcpStream::connect(self.address).await?;
        stream
            .write_all(
                format!(
                    "POST /v1/books/bench/pages{query} HTTP/1.1\r\n\
                     Host: localhost\r\nConnection: close\r\n\
                     Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
                     Content-Length: {length}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut buffer = vec![0_u8; 1 << 20];
        for (head, path) in &parts {
            stream.write_all(head).await?;
            let mut file = tokio::fs::File::open(path).await?;
            loop {
                let read = file.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                stream.write_all(&buffer[..read]).await?;
            }
            stream.write_all(b"\r\n").await?;
        }
        stream.write_all(tail.as_bytes()).await?;
        stream.flush().await?;
        let last_byte = started.elapsed();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        let status = text.split(' ').nth(1).unwrap_or_default();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        if status != "202" {
            bail!("the upload was answered {status}: {body}");
        }
        Ok((serde_json::from_str(body)?, last_byte))
    }
}

/// Seconds a plain loop takes to render (pdftoppm, 300 dpi) and read (tesseract) every page
/// of the PDF, `parallelism` pages at a time.
async fn bare_pdf(pdf: &Path, pages: usize, parallelism: usize) -> Result<f64> {
    let work = tempfile::tempdir()?;
    let work = Arc::new(work.path().to_owned());
    let engine = Arc::new(ocr::TesseractEngine::default());
    let started = Instant::now();
    stream::iter(1..=pages)
        .map(|number| {
            let (work, engine, pdf) = (work.clone(), engine.clone(), pdf.to_owned());
            async move {
                let base = work.join(format!("{number:04}"));
                let status = tokio::process::Command::new("pdftoppm")
                    .args(["-r", "300", "-png", "-singlefile", "-f"])
                    .arg(number.to_string())
                    .arg("-l")
                    .arg(number.to_string())
                    .arg(&pdf)
                    .arg(&base)
                    .status()
                    .await?;
                if !status.success() {
                    bail!("pdftoppm of page {number} failed: {status}");
                }
                tesseract(&engine, &base.with_extension("png"), &base).await
            }
        })
        .buffer_unordered(parallelism.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds a plain loop takes to read (tesseract) every photo, `parallelism` at a time.
async fn bare_photos(photos: &[PathBuf], parallelism: usize) -> Result<f64> {
    let work = tempfile::tempdir()?;
    let engine = ocr::TesseractEngine::default();
    let started = Instant::now();
    stream::iter(photos.iter().enumerate())
        .map(|(index, photo)| {
            let base = work.path().join(format!("{:04}", index + 1));
            let engine = &engine;
            async move { tesseract(engine, photo, &base).await }
        })
        .buffer_unordered(parallelism.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The `ocr` job's tesseract command (txt, tsv and hOCR out) on one image.
async fn tesseract(engine: &ocr::TesseractEngine, image: &Path, base: &Path) -> Result<()> {
    let mut command = engine.command("eng", base);
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().context("tesseract's stdin")?;
    let bytes = tokio::fs::read(image).await?;
    stdin.write_all(&bytes).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "tesseract of {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
