//! `cargo xtask demo [--url URL] [--pages N]`: against a running API (`api --with-worker`),
//! the whole product flow on the sample pages shipped in the repo
//! (`crates/ocr/tests/fixtures`): create a book, upload the pages with
//! `?ocr=true&then=guidelines,finalize` (one request runs the whole pipeline as a chain),
//! follow each job of the chain (`next_job_id` of the one before) with a progress bar, and
//! print the final guidelines as Markdown. The token comes from `FOLIO_API_TOKEN` when set.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::flags::Flags;

/// Width of the progress bar in characters.
const BAR_WIDTH: usize = 30;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let flags = Flags::parse(args)?;
    let url = flags.text("url", "http://127.0.0.1:8080");
    let n_pages: usize = flags.get("pages", ocr::testing::FIXTURE_PAGES as usize)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo(url.trim_end_matches('/'), n_pages))
}

async fn demo(base: &str, n_pages: usize) -> Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("FOLIO_API_TOKEN")
        && !token.is_empty()
    {
        headers.insert("authorization", format!("Bearer {token}").parse()?);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .with_context(|| {
            format!(
                "no Folio API answers at {base}; start one with \
                 `cargo run --release -p api -- --with-worker` (or pass --url)"
            )
        })?;

    let response = client
        .post(format!("{base}/v1/books"))
        .json(&json!({"title": "Folio demo"}))
        .send()
        .await?;
    let book = expect(response, 201, "creating the book").await?;
    let book_id = book["book_id"].as_str().context("book_id")?.to_owned();
    eprintln!("created book {book_id}");

    let pages: Vec<_> = ocr::testing::fixture_pages()
        .into_iter()
        .cycle()
        .take(n_pages)
        .collect();
    let mut form = Vec::new();
    let boundary = format!("folio-demo-{}", std::process::id());
    for (index, page) in pages.iter().enumerate() {
        form.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; \
                 filename=\"sample-{:02}.png\"\r\nContent-Type: image/png\r\n\r\n",
                index + 1
            )
            .as_bytes(),
        );
        form.extend_from_slice(&page.png);
        form.extend_from_slice(b"\r\n");
    }
    form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let response = client
        .post(format!(
            "{base}/v1/books/{book_id}/pages?ocr=true&then=guidelines,finalize"
        ))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await?;
    let uploaded = expect(response, 202, "uploading the pages").await?;
    let job = &uploaded["job"];
    eprintln!(
        "uploaded {} files; ingest job {}, then {}",
        uploaded["upload"]["files"].as_array().map_or(0, Vec::len),
        job["id"].as_str().context("job id")?,
        job["then"]
    );

    // Each job of the chain, until one has nothing after it: the completion of a job
    // created the next one, whose id the completed job shows as `next_job_id`.
    let mut job_id = job["id"].as_str().context("job id")?.to_owned();
    let mut job_type = job["type"].as_str().context("job type")?.to_owned();
    loop {
        finish(&client, base, &job_type, &job_id).await?;
        let response = client
            .get(format!("{base}/v1/jobs/{job_id}"))
            .send()
            .await?;
        let completed = expect(response, 200, "reading the completed job").await?;
        let Some(next_id) = completed["next_job_id"].as_str() else {
            if completed["then"]
                .as_array()
                .is_some_and(|then| !then.is_empty())
            {
                bail!("job {job_id} completed without starting its chain: {completed}");
            }
            break;
        };
        job_id = next_id.to_owned();
        job_type = completed["then"][0]
            .as_str()
            .context("next job type")?
            .to_owned();
    }
    let markdown = client
        .get(format!("{base}/v1/books/{book_id}/guidelines"))
        .header("accept", "text/markdown")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    println!("{}", markdown.trim_end());
    println!("\nthe book: {base}/v1/books/{book_id}");
    println!("as JSON:  {base}/v1/books/{book_id}/guidelines");
    Ok(())
}

/// Follows a job to its end with a progress bar; an error unless it completed.
async fn finish(client: &reqwest::Client, base: &str, job_type: &str, job_id: &str) -> Result<()> {
    eprintln!("{job_type} job {job_id}");
    let last = follow(client, base, job_id).await?;
    eprintln!();
    let status = last["status"].as_str().unwrap_or("unknown");
    if status != "completed" {
        bail!("the {job_type} job ended {status}: {}", last["error"]);
    }
    Ok(())
}

async fn expect(response: reqwest::Response, status: u16, what: &str) -> Result<Value> {
    let actual = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if actual != status {
        bail!("{what}: HTTP {actual}: {body}");
    }
    Ok(body)
}

/// Follows the job's event stream, drawing a progress bar; returns the last job seen.
async fn follow(client: &reqwest::Client, base: &str, job_id: &str) -> Result<Value> {
    let mut response = client
        .get(format!("{base}/v1/jobs/{job_id}/events"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("following job {job_id}: HTTP {}", response.status());
    }
    let mut buffer = String::new();
    let mut last = Value::Null;
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.lines().any(|line| line == "event: job") {
                continue;
            }
            let data: String = block
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            last = serde_json::from_str(&data)?;
            draw(&last);
        }
    }
    Ok(last)
}

fn draw(job: &Value) {
    let progress = &job["progress"];
    let done = progress["completed"].as_u64().unwrap_or(0);
    let failed = progress["failed"].as_u64().unwrap_or(0);
    let total = progress["total"].as_u64();
    let filled = total.map_or(0, |total| {
        (((done + failed) as f64 / total.max(1) as f64) * BAR_WIDTH as f64) as usize
    });
    let bar: String =
        "#".repeat(filled.min(BAR_WIDTH)) + &".".repeat(BAR_WIDTH - filled.min(BAR_WIDTH));
    let total = total.map_or_else(|| "?".to_owned(), |total| total.to_string());
    eprint!(
        "\r[{bar}] {done}/{total} pages done, {failed} failed  {:<10}",
        job["status"].as_str().unwrap_or("")
    );
    let _ = std::io::stderr().flush();
}
