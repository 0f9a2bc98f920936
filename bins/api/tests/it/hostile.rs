//! Hostile uploads and requests, sent as raw bytes over TCP to a served API: each gets a
//! clear 4xx with a stable code, and nothing is stored (the book's objects, its manifest,
//! the list of books and the jobs are the same after every one).

use std::io::Cursor;
use std::time::{Duration, Instant};

use api::ApiConfig;
use books::IngestLimits;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::TestApp;

const BOOK: &str = "target";
const BOUNDARY: &str = "hostile-boundary";

/// One hostile input and what it must get.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    code: &'static str,
    /// For a rejected file: the code of the file's rejection.
    file_code: Option<&'static str>,
}

/// A served API over its own stores, with small body limits and a short request timeout.
struct Served {
    app: TestApp,
    address: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl Served {
    async fn start() -> Self {
        Self::start_with(ApiConfig {
            ingest_limits: IngestLimits {
                max_request_bytes: 2 * 1024 * 1024,
                ..IngestLimits::default()
            },
            request_timeout: Duration::from_secs(1),
            upload_timeout: Duration::from_secs(2),
            ..ApiConfig::default()
        })
        .await
    }

    async fn start_with(config: ApiConfig) -> Self {
        let app = TestApp::sqlite_with(config).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(api::server::serve(
            listener,
            app.state.clone(),
            shutdown.clone(),
        ));
        Self {
            app,
            address,
            shutdown,
        }
    }

    /// Sends raw request bytes, then reads the answer until the server closes.
    async fn send(&self, request: &[u8]) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.address).await.unwrap();
        // The server may answer (and close) before it has read the whole body.
        let _ = stream.write_all(request).await;
        read_answer(&mut stream).await
    }

    /// What the API has stored: every object of the book, the book list and every job.
    async fn stored(&self) -> (Vec<(String, u64)>, Value, Value) {
        let objects = self
            .app
            .blob_store
            .list("books/")
            .await
            .unwrap()
            .into_iter()
            .map(|entry| (entry.key, entry.size))
            .collect();
        let (_, books) = self.app.get("/v1/books").await;
        let (_, jobs) = self.app.get("/v1/jobs").await;
        (objects, books, jobs)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn request(method: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A multipart upload to the book of `files` (raw file name bytes, content).
fn upload(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"")
                .as_bytes(),
        );
        body.extend_from_slice(name);
        body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    request(
        "POST",
        &format!("/v1/books/{BOOK}/pages"),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &body,
    )
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// A valid PNG header declaring `width` x `height` RGB pixels, with almost no data.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &header);
    // A zlib stream of one empty stored block.
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0, 0, 0, 1],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A real JPEG of a page, cut after half its bytes: its header claims more data than
/// the file has.
fn truncated_jpeg() -> Vec<u8> {
    let page = &ocr::testing::fixture_pages()[0];
    let image = image::load_from_memory(&page.png).unwrap();
    let mut jpeg = Vec::new();
    image
        .to_rgb8()
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    jpeg.truncate(jpeg.len() / 2);
    jpeg
}

fn cases() -> Vec<Case> {
    let page = ocr::testing::fixture_pages()[0].png.to_vec();
    let tiny: &[u8] = b"x";
    let many: Vec<(&[u8], &[u8])> = (0..301).map(|_| (&b"p.png"[..], tiny)).collect();
    let big = vec![7_u8; 3 * 1024 * 1024];
    let huge_json = format!("{{\"title\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let case = |name, request, status, code, file_code| Case {
        name,
        request,
        status,
        code,
        file_code,
    };
    vec![
        case(
            "PNG of 300 bytes declaring 50,000 x 50,000 pixels",
            upload(&[(b"bomb.png", &png_declaring(50_000, 50_000))]),
            422,
            "invalid_request",
            Some("too_many_pixels"),
        ),
        case(
            "JPEG that claims more data than it has",
            upload(&[(b"cut.jpg", &truncated_jpeg())]),
            422,
            "invalid_request",
            Some("corrupt"),
        ),
        case(
            "0-byte file",
            upload(&[(b"empty.png", b"")]),
            422,
            "invalid_request",
            Some("empty"),
        ),
        case("301 files", upload(&many), 413, "payload_too_large", None),
        case(
            "body over the request limit (3 MiB, limit 2 MiB)",
            upload(&[(b"big.png", &big)]),
            413,
            "payload_too_large",
            None,
        ),
        case(
            "wrong content type (text/plain upload)",
            request(
                "POST",
                &format!("/v1/books/{BOOK}/pages"),
                "text/plain",
                &page,
            ),
            415,
            "unsupported_media_type",
            None,
        ),
        case(
            "file name with a path (../../etc/passwd.png)",
            upload(&[(b"../../etc/passwd.png", &page)]),
            422,
            "invalid_request",
            Some("invalid_name"),
        ),
        case(
            "file name with a backslash path (C:\\pages\\1.png)",
            upload(&[(b"C:\\pages\\1.png", &page)]),
            422,
            "invalid_request",
            Some("invalid_name"),
        ),
        case(
            "file name with a NUL byte",
            upload(&[(b"page\0.png", &page)]),
            400,
            "invalid_request",
            None,
        ),
        case(
            "file name of invalid UTF-8",
            upload(&[(b"page-\xff\xfe.png", &page)]),
            422,
            "invalid_request",
            None,
        ),
        case(
            "book id with traversal (..%2F..%2Fetc)",
            upload_to("/v1/books/..%2F..%2Fetc/pages", &page),
            422,
            "invalid_request",
            None,
        ),
        case(
            "book id with a Unicode look-alike (Cyrillic о in t\u{430}rget)",
            upload_to("/v1/books/t%D0%B0rget/pages", &page),
            422,
            "invalid_request",
            None,
        ),
        case(
            "job id with traversal (..%2F..%2Fbooks)",
            request("GET", "/v1/jobs/..%2F..%2Fbooks", "application/json", b""),
            422,
            "invalid_request",
            None,
        ),
        case(
            "huge JSON body (2 MiB title)",
            request(
                "POST",
                "/v1/books",
                "application/json",
                huge_json.as_bytes(),
            ),
            413,
            "payload_too_large",
            None,
        ),
    ]
}

/// The upload of one page to `path`.
fn upload_to(path: &str, page: &[u8]) -> Vec<u8> {
    let good = upload(&[(b"p.png", page)]);
    let text_end = good.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(good[..text_end].to_vec())
        .unwrap()
        .replacen(&format!("/v1/books/{BOOK}/pages"), path, 1);
    let mut request = head.into_bytes();
    request.extend_from_slice(&good[text_end..]);
    request
}

#[tokio::test]
async fn every_hostile_input_gets_a_clear_4xx_and_nothing_is_stored() {
    let served = Served::start().await;
    served.app.create_book(BOOK).await;
    let before = served.stored().await;
    let mut table = vec![
        "| hostile input | status | code | file rejection | stored after |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    let mut failures = Vec::new();
    for case in cases() {
        let (status, body) = served.send(&case.request).await;
        let code = body["error"]["code"].as_str().unwrap_or("-").to_owned();
        let file_code = body["error"]["details"]["rejected"][0]["code"]
            .as_str()
            .map(str::to_owned);
        let unchanged = served.stored().await == before;
        table.push(format!(
            "| {} | {status} | `{code}` | {} | {} |",
            case.name,
            file_code
                .as_deref()
                .map_or("-".to_owned(), |c| format!("`{c}`")),
            if unchanged { "nothing" } else { "CHANGED" }
        ));
        if status != case.status
            || code != case.code
            || file_code.as_deref() != case.file_code
            || !unchanged
            || !body["error"]["message"].is_string()
        {
            failures.push(format!("{}: {status} {body}", case.name));
        }
    }

    // A client that sends its body very slowly: the request timeout (1 s) ends it.
    let started = Instant::now();
    let mut stream = TcpStream::connect(served.address).await.unwrap();
    let body = br#"{"id": "slow", "title": "Slow"}"#;
    let head = format!(
        "POST /v1/books HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A few bytes, slowly, then nothing: the answer must come from the timeout.
    for byte in &body[..3] {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, answer) = read_answer(&mut stream).await;
    let took = started.elapsed();
    let unchanged = served.stored().await == before;
    table.push(format!(
        "| body sent 1 byte per 300 ms (request timeout 1 s), answered after {} ms | {status} | `{}` | - | {} |",
        took.as_millis(),
        answer["error"]["code"].as_str().unwrap_or("-"),
        if unchanged { "nothing" } else { "CHANGED" }
    ));
    if status != 408
        || answer["error"]["code"] != "request_timeout"
        || !unchanged
        || took > Duration::from_secs(5)
    {
        failures.push(format!("slow body: {status} {answer} after {took:?}"));
    }

    eprintln!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (objects, _, _) = served.stored().await;
    assert_eq!(
        objects
            .iter()
            .map(|(key, _)| key.as_str())
            .collect::<Vec<_>>(),
        [format!("books/{BOOK}/metadata.json")],
        "only the book's manifest is stored"
    );
}

/// The entries of a local folder.
fn entries(folder: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Hostile files on the path of whole books (issue 24): each is refused by the upload
/// with a clear code, or taken and then failed by its `ingest` job with a clear code that
/// names the file and the page. Nothing is left behind: no page, no local folder, and no
/// stored file once the sweeper has run.
#[tokio::test]
async fn hostile_files_are_refused_or_fail_their_ingest_and_leave_nothing_behind() {
    books::testing::require_poppler().await;
    let staging = tempfile::tempdir().unwrap();
    let limits = IngestLimits {
        max_file_bytes: 1024 * 1024,
        max_pdf_bytes: 4 * 1024 * 1024,
        max_request_bytes: 8 * 1024 * 1024,
        max_book_pages: 3,
        ..IngestLimits::default()
    };
    let served = Served::start_with(ApiConfig {
        ingest_limits: limits,
        upload_timeout: Duration::from_secs(60),
        staging_dir: staging.path().to_owned(),
        ..ApiConfig::default()
    })
    .await;
    served.app.create_book(BOOK).await;
    let before = served.stored().await;

    let page = ocr::testing::fixture_pages()[0].png.to_vec();
    let pdf_of = |size_mib: usize| {
        // A real one-page PDF, then a comment that pads it (PDF readers skip it).
        let mut pdf = books::testing::PdfBuilder::new()
            .scanned_page(&page)
            .build();
        pdf.extend_from_slice(b"%");
        pdf.resize(size_mib * 1024 * 1024, b' ');
        pdf
    };
    let claims = books::testing::PdfBuilder::new()
        .scanned_page(&page)
        .claiming_pages(1_000_000)
        .build();
    let wide = books::testing::PdfBuilder::new()
        .scanned_page_of_size(&page, (200.0 * 72.0, 200.0 * 72.0))
        .build();
    let (big_pdf, three_mib) = (pdf_of(5), pdf_of(3));
    let big_image = vec![7_u8; 1536 * 1024];
    let case = |name, request, status, code, file_code| Case {
        name,
        request,
        status,
        code,
        file_code,
    };
    let cases = vec![
        case(
            // poppler will not open a page tree that lies about its size.
            "PDF whose page tree claims 1,000,000 pages",
            upload(&[(b"claims.pdf", &claims)]),
            422,
            "invalid_request",
            Some("corrupt"),
        ),
        case(
            "PDF page of 200 x 200 inches",
            upload(&[(b"wide.pdf", &wide)]),
            422,
            "invalid_request",
            Some("too_many_pixels"),
        ),
        case(
            "image over --max-image-bytes (1.5 MiB, limit 1 MiB)",
            upload(&[(b"big.png", &big_image)]),
            422,
            "invalid_request",
            Some("too_large"),
        ),
        case(
            "PDF over --max-pdf-bytes (5 MiB, limit 4 MiB)",
            upload(&[(b"big.pdf", &big_pdf)]),
            422,
            "invalid_request",
            Some("too_large"),
        ),
        case(
            "upload over --max-upload-bytes (3 PDFs of 3 MiB, limit 8 MiB)",
            upload(&[
                (b"a.pdf", &three_mib),
                (b"b.pdf", &three_mib),
                (b"c.pdf", &three_mib),
            ]),
            413,
            "payload_too_large",
            None,
        ),
        case(
            "upload past --max-book-pages (4 pages, limit 3)",
            upload(&[
                (b"1.png", &page),
                (b"2.png", &page),
                (b"3.png", &page),
                (b"4.png", &page),
            ]),
            413,
            "payload_too_large",
            None,
        ),
    ];
    let mut table = vec![
        "| hostile file | answer | code | file rejection | left behind |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    let mut failures = Vec::new();
    for case in cases {
        let (status, body) = served.send(&case.request).await;
        let code = body["error"]["code"].as_str().unwrap_or("-").to_owned();
        let file_code = body["error"]["details"]["rejected"][0]["code"]
            .as_str()
            .map(str::to_owned);
        let clean = served.stored().await == before && entries(staging.path()).is_empty();
        table.push(format!(
            "| {} | {status} | `{code}` | {} | {} |",
            case.name,
            file_code
                .as_deref()
                .map_or("-".to_owned(), |c| format!("`{c}`")),
            if clean { "nothing" } else { "SOMETHING" }
        ));
        if status != case.status
            || code != case.code
            || file_code.as_deref() != case.file_code
            || !clean
        {
            failures.push(format!("{}: {status} {body}", case.name));
        }
    }

    // A connection closed half way through a 3 MiB PDF: once the server has seen the
    // request go, nothing is stored and its staging folder is gone.
    let request = upload(&[(b"cut.pdf", &three_mib)]);
    let mut stream = TcpStream::connect(served.address).await.unwrap();
    stream
        .write_all(&request[..request.len() / 2])
        .await
        .unwrap();
    jobs_core::testing::eventually(
        Duration::from_secs(20),
        "the cut upload to be received into the staging folder",
        || async { (!entries(staging.path()).is_empty()).then_some(()) },
    )
    .await;
    drop(stream);
    jobs_core::testing::eventually(
        Duration::from_secs(20),
        "the cut upload's staging folder to be removed",
        || async { entries(staging.path()).is_empty().then_some(()) },
    )
    .await;
    let clean = served.stored().await == before;
    table.push(format!(
        "| connection closed half way through a 3 MiB PDF | - | - | - | {} |",
        if clean { "nothing" } else { "SOMETHING" }
    ));
    if !clean {
        failures.push("the cut upload left something stored".to_owned());
    }

    // A PDF whose one page inflates to 2.1 GB: pdfinfo sees a plain letter page, so the
    // upload takes it; rendering meets the bomb under the tools' time and memory limits.
    let bomb = books::testing::PdfBuilder::new()
        .inflate_bomb_page(46_000, 46_000)
        .build();
    let (status, answer) = served.send(&upload(&[(b"bomb.pdf", &bomb)])).await;
    assert_eq!(status, 202, "{answer}");
    let worker = served
        .app
        .start_worker(vec![std::sync::Arc::new(ingest::IngestHandler::new(
            served.app.state.books().clone(),
            ingest::IngestJobConfig {
                limits: IngestLimits {
                    // A render of the bomb takes poppler several seconds of CPU.
                    pdf_timeout: Duration::from_secs(2),
                    tool_memory_limit: Some(512 * 1024 * 1024),
                    ..IngestLimits::default()
                },
                local_dir: staging.path().to_owned(),
                ..ingest::IngestJobConfig::default()
            },
        ))]);
    let id: jobs_core::JobId = answer["job"]["id"].as_str().unwrap().parse().unwrap();
    let ended = jobs_core::testing::wait_for_job(
        served.app.job_store.as_ref(),
        id,
        Duration::from_secs(120),
        "the bomb's ingest to end",
        |job| job.status.is_terminal(),
    )
    .await;
    worker.stop().await;
    let (code, message) = ended
        .error
        .clone()
        .map(|error| (error.code, error.message))
        .unwrap_or_default();
    let (_, book) = served.app.get(&format!("/v1/books/{BOOK}")).await;
    let pages = book["pages"].as_array().map_or(0, Vec::len);
    let folders = entries(staging.path());
    let sweep = ingest::Sweeper::new(
        served.app.state.books().clone(),
        served.app.job_store.clone(),
        std::sync::Arc::new(jobs_core::SystemClock),
        Duration::ZERO,
    )
    .with_local_dir(staging.path().to_owned())
    .sweep()
    .await
    .unwrap();
    let (objects, _, _) = served.stored().await;
    let clean = pages == 0
        && folders.is_empty()
        && objects
            .iter()
            .map(|(key, _)| key.as_str())
            .collect::<Vec<_>>()
            == [format!("books/{BOOK}/metadata.json")];
    table.push(format!(
        "| PDF of {} KB whose page inflates to 2.1 GB | 202, then the ingest job {} | `{}` | {} | {} (the staged file until the sweep: {:?}) |",
        bomb.len() / 1024,
        ended.status,
        code,
        message,
        if clean { "nothing" } else { "SOMETHING" },
        sweep.uploads,
    ));
    if ended.status != jobs_core::JobStatus::Failed
        || code != "render_timeout"
        || !message.contains("bomb.pdf")
        || !message.contains("page 1")
        || !clean
    {
        failures.push(format!(
            "bomb: {} {code} {message}, {pages} pages, folders {folders:?}, objects {objects:?}",
            ended.status
        ));
    }

    eprintln!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
