//! Page uploads (all or nothing), page, image and text, and single-page OCR retry.

use api::ApiConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use blob_store::PutMode;
use books::{BookId, IngestLimits, OcrStatus, layout};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{TestApp, assert_error, into_bytes, into_json};

fn fixture(number: usize) -> Vec<u8> {
    ocr::testing::fixture_pages()[number - 1].png.to_vec()
}

async fn storage_keys(app: &TestApp, book: &str) -> Vec<String> {
    app.blob_store
        .list(&format!("books/{book}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect()
}

#[tokio::test]
async fn uploading_pages_numbers_them_in_order_after_the_last_page() {
    let app = TestApp::sqlite().await;
    app.create_book("up").await;
    let (one, two, three) = (fixture(1), fixture(2), fixture(3));
    let (status, body) = app
        .upload("up", "", &[("a.png", &one), ("b.png", &two)])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The upload as stored: each file with its size, hash, kind and page numbers.
    let files = body["upload"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["name"], "a.png");
    assert_eq!(files[0]["bytes"], one.len());
    assert_eq!(files[0]["sha256"], hex_sha256(&one));
    assert_eq!(files[0]["kind"], "image");
    assert_eq!(
        (&files[0]["pages"], &files[0]["first_page"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(files[1]["first_page"], 2);
    // Its ingest job, with no chain: the pages come when it runs.
    assert_eq!(body["job"]["type"], "ingest");
    assert_eq!(body["job"]["status"], "pending");
    assert_eq!(body["job"]["then"], json!([]));
    assert_eq!(app.get("/v1/books/up").await.1["pages"], json!([]));
    let job = app.ingest(&body).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"]["completed"], 2, "{job}");
    let (_, book) = app.get("/v1/books/up").await;
    let pages = book["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0]["page"], 1);
    assert_eq!(pages[0]["source_name"], "a.png");
    assert_eq!(pages[1]["page"], 2);
    assert_eq!(pages[1]["ocr"]["status"], "pending");
    // The upload's files are gone once its pages are made.
    assert!(
        storage_keys(&app, "up")
            .await
            .iter()
            .all(|key| !key.contains("/uploads/")),
        "{:?}",
        storage_keys(&app, "up").await
    );
    let (answer, _) = app.upload_and_ingest("up", "", &[("c.png", &three)]).await;
    assert_eq!(answer["upload"]["files"][0]["first_page"], 3);
    assert_eq!(
        app.get("/v1/books/up/pages/3").await.1["source_name"],
        "c.png"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn an_upload_while_the_books_ingest_is_active_is_409_and_keeps_nothing() {
    let app = TestApp::sqlite().await;
    app.create_book("busy-ingest").await;
    let one = fixture(1);
    let (status, first) = app.upload("busy-ingest", "", &[("a.png", &one)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let keys = storage_keys(&app, "busy-ingest").await;
    let (status, body) = app.upload("busy-ingest", "", &[("b.png", &one)]).await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_active");
    assert_eq!(body["error"]["details"]["job"]["id"], first["job"]["id"]);
    assert_eq!(storage_keys(&app, "busy-ingest").await, keys);
    app.ingest(&first).await;
    let (answer, job) = app
        .upload_and_ingest("busy-ingest", "", &[("b.png", &one)])
        .await;
    assert_eq!(job["status"], "completed");
    assert_eq!(
        answer["upload"]["files"][0]["first_page"], 2,
        "no gap: {answer}"
    );
}

#[tokio::test]
async fn uploading_with_ocr_true_starts_an_ocr_job() {
    let app = TestApp::sqlite().await;
    app.create_book("ocr-up").await;
    let one = fixture(1);
    let (body, ingest) = app
        .upload_and_ingest("ocr-up", "?ocr=true", &[("a.png", &one)])
        .await;
    assert_eq!(body["job"]["type"], "ingest");
    assert_eq!(body["job"]["book_id"], "ocr-up");
    assert_eq!(body["job"]["then"], json!(["ocr"]));
    assert_eq!(ingest["status"], "completed");
    let (status, ocr) = app
        .get(&format!("/v1/jobs/{}", text(&ingest["next_job_id"])))
        .await;
    assert_eq!(status, StatusCode::OK, "{ingest}");
    assert_eq!(
        (&ocr["type"], &ocr["status"]),
        (&json!("ocr"), &json!("pending"))
    );
    assert_eq!(app.stored_job(&ocr["id"]).await.payload, json!({}));

    // A second upload's ingest links to the ocr job already active.
    let (_, again) = app
        .upload_and_ingest("ocr-up", "?ocr=true", &[("b.png", &one)])
        .await;
    assert_eq!(again["next_job_id"], ocr["id"], "{again}");
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_rejected_upload_lists_the_bad_file_and_changes_nothing() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("strict", 1).await;
    let manifest_before = app.get("/v1/books/strict").await.1;
    let keys_before = storage_keys(&app, "strict").await;
    let (_, latest_before) = app.get("/v1/books/strict/jobs/latest").await;
    let (one, two) = (fixture(1), fixture(2));
    let (status, body) = app
        .upload(
            "strict",
            "?ocr=true",
            &[
                ("good-1.png", &one),
                ("notes.txt", b"this is not an image"),
                ("good-2.png", &two),
            ],
        )
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let rejected = body["error"]["details"]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["name"], "notes.txt");
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["code"], "unsupported_format");

    assert_eq!(app.get("/v1/books/strict").await.1, manifest_before);
    assert_eq!(storage_keys(&app, "strict").await, keys_before);
    let (_, latest) = app.get("/v1/books/strict/jobs/latest").await;
    assert_eq!(latest, latest_before, "no job was started");
}

#[tokio::test]
async fn an_image_whose_header_is_fine_but_whose_pixels_are_cut_fails_its_ingest_naming_it() {
    let app = TestApp::sqlite().await;
    app.create_book("corrupt").await;
    let one = fixture(1);
    // The header (format, dimensions) is whole: the upload takes it; the pixels are not,
    // and the ingest finds it when it decodes them.
    let truncated = &one[..one.len() / 2];
    let (answer, job) = app
        .upload_and_ingest("corrupt", "", &[("ok.png", &one), ("cut.png", truncated)])
        .await;
    assert_eq!(answer["upload"]["files"][1]["name"], "cut.png");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "corrupt", "{job}");
    let message = text(&job["error"]["message"]);
    assert!(
        message.contains("page 2") && message.contains("file 2 (cut.png), page 1 of the file"),
        "{message}"
    );
    // The page made before stays; resuming the job would go on from the cut file.
    let (_, book) = app.get("/v1/books/corrupt").await;
    assert_eq!(book["pages"].as_array().unwrap().len(), 1, "{book}");
    assert_eq!(book["pages"][0]["source_name"], "ok.png");
    assert!(
        storage_keys(&app, "corrupt")
            .await
            .iter()
            .any(|key| key.contains("/uploads/")),
        "a failed ingest keeps its upload for a resume"
    );
}

#[tokio::test]
async fn uploads_that_are_not_multipart_or_empty_or_odd_are_refused() {
    let app = TestApp::sqlite().await;
    app.create_book("odd").await;
    let request = Request::post("/v1/books/odd/pages")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = into_json(app.send(request).await).await;
    assert_error(
        (status, &body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let (status, body) = app.upload("odd", "", &[]).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );

    let boundary = "b0";
    let request = Request::post("/v1/books/odd/pages")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"picture\"; filename=\"a.png\"\r\n\r\nxx\r\n--{boundary}--\r\n"
        )))
        .unwrap();
    let (status, body) = into_json(app.send(request).await).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );

    let request = Request::post("/v1/books/odd/pages")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from("--b0\r\nbroken"))
        .unwrap();
    let (status, body) = into_json(app.send(request).await).await;
    assert_error((status, &body), StatusCode::BAD_REQUEST, "invalid_request");

    let (status, body) = app.upload("ghost", "", &[("a.png", &fixture(1))]).await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.upload("Ghost!", "", &[("a.png", &fixture(1))]).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let (status, body) = app
        .upload("odd", "?ocr=maybe", &[("a.png", &fixture(1))])
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn uploads_over_the_file_count_or_byte_limits_are_413() {
    let app = TestApp::sqlite_with(ApiConfig {
        ingest_limits: IngestLimits {
            max_files: 2,
            max_request_bytes: 30_000,
            ..IngestLimits::default()
        },
        ..ApiConfig::default()
    })
    .await;
    app.create_book("limits").await;
    let one = fixture(1);
    let (status, body) = app
        .upload(
            "limits",
            "",
            &[("a.png", &one), ("b.png", &one), ("c.png", &one)],
        )
        .await;
    assert_error(
        (status, &body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let big = vec![0_u8; 40_000];
    let (status, body) = app.upload("limits", "", &[("big.png", &big)]).await;
    assert_error(
        (status, &body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(
        storage_keys(&app, "limits").await,
        ["books/limits/metadata.json"]
    );
}

#[tokio::test]
async fn a_page_answers_with_its_ocr_status_and_its_png() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("pg", 2).await;
    let (status, body) = app.get("/v1/books/pg/pages/2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["page"], 2);
    assert_eq!(body["ocr"]["status"], "pending");
    assert_eq!(body["ocr"]["text_url"], Value::Null);

    let response = app
        .send(
            Request::get("/v1/books/pg/pages/2/image")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    let (status, bytes) = into_bytes(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));

    for uri in [
        "/v1/books/pg/pages/3",
        "/v1/books/pg/pages/3/image",
        "/v1/books/nope/pages/1",
    ] {
        let (status, body) = app.get(uri).await;
        assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    }
    for uri in [
        "/v1/books/pg/pages/0",
        "/v1/books/pg/pages/x/image",
        "/v1/books/PG/pages/1/text",
    ] {
        let (status, body) = app.get(uri).await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
}

#[tokio::test]
async fn a_page_preview_is_a_small_jpeg_revalidated_by_its_etag() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("thumbs", 2).await;
    let (status, body) = app.get("/v1/books/thumbs/pages/2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["thumbnail_url"], "/v1/books/thumbs/pages/2/thumbnail");
    let thumbnail = |etag: Option<&str>| {
        let mut request = Request::get("/v1/books/thumbs/pages/2/thumbnail");
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        app.send(request.body(Body::empty()).unwrap())
    };
    let response = thumbnail(None).await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "private, max-age=86400"
    );
    let etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, bytes) = into_bytes(response).await;
    assert_eq!(status, StatusCode::OK);
    let preview = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
    assert!(preview.width() <= books::THUMBNAIL_WIDTH);

    let response = thumbnail(Some(&etag)).await;
    assert_eq!(response.headers()[header::ETAG], etag.as_str());
    let (status, bytes) = into_bytes(response).await;
    assert_eq!((status, bytes.len()), (StatusCode::NOT_MODIFIED, 0));
    let (status, _) = into_bytes(thumbnail(Some("\"other\"")).await).await;
    assert_eq!(status, StatusCode::OK, "a stale ETag gets the preview");

    // A page stored before previews existed has none: 404, and a null URL.
    let book = BookId::parse("thumbs").unwrap();
    app.state
        .books()
        .update(&book, |manifest| {
            manifest.page_mut(1).unwrap().thumbnail = None;
        })
        .await
        .unwrap();
    app.blob_store
        .delete(&layout::book_key(&book, &layout::page_thumbnail_path(1)))
        .await
        .unwrap();
    let (status, body) = app.get("/v1/books/thumbs/pages/1").await;
    assert_eq!(
        (status, &body["thumbnail_url"]),
        (StatusCode::OK, &Value::Null)
    );
    for uri in [
        "/v1/books/thumbs/pages/1/thumbnail",
        "/v1/books/thumbs/pages/3/thumbnail",
        "/v1/books/nope/pages/1/thumbnail",
    ] {
        let (status, body) = app.get(uri).await;
        assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = app.get("/v1/books/thumbs/pages/0/thumbnail").await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn page_text_is_404_until_ocr_is_done_then_plain_text() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("txt", 1).await;
    let (status, body) = app.get("/v1/books/txt/pages/1/text").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");

    let book = BookId::parse("txt").unwrap();
    let text_path = layout::ocr_text_path(1);
    app.blob_store
        .put(
            &layout::book_key(&book, &text_path),
            Bytes::from_static(b"Adding fractions\n"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    app.state
        .books()
        .update(&book, |manifest| {
            let page = manifest.page_mut(1).unwrap();
            page.ocr.status = OcrStatus::Done;
            page.ocr.text = Some(text_path.clone());
        })
        .await
        .unwrap();
    let response = app
        .send(
            Request::get("/v1/books/txt/pages/1/text")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let (status, bytes) = into_bytes(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"Adding fractions\n");
    let (_, page) = app.get("/v1/books/txt/pages/1").await;
    assert_eq!(page["ocr"]["text_url"], "/v1/books/txt/pages/1/text");
}

#[tokio::test]
async fn retrying_one_page_starts_an_ocr_job_for_that_page_only() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("retry", 3).await;
    let (status, job) = app
        .post("/v1/books/retry/pages/2/ocr/retry", json!(null))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["type"], "ocr");
    assert_eq!(job["book_id"], "retry");
    assert_eq!(job["status"], "pending");
    assert_eq!(
        app.stored_job(&job["id"]).await.payload,
        json!({"pages": [2]})
    );
}

#[tokio::test]
async fn retrying_a_page_while_an_ocr_job_is_active_is_409_job_active_with_that_job() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("busy", 2).await;
    let (_, active) = app
        .post("/v1/books/busy/jobs", json!({"type": "ocr"}))
        .await;
    let (status, body) = app
        .post("/v1/books/busy/pages/1/ocr/retry", json!(null))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "job_active");
    assert_eq!(body["error"]["details"]["job"]["id"], active["id"]);
}

#[tokio::test]
async fn retrying_an_unknown_page_or_book_is_404_and_a_bad_page_422() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("few", 1).await;
    let (status, body) = app
        .post("/v1/books/few/pages/9/ocr/retry", json!(null))
        .await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post("/v1/books/none/pages/1/ocr/retry", json!(null))
        .await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post("/v1/books/few/pages/-1/ocr/retry", json!(null))
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let (_, latest) = app.get("/v1/books/few/jobs/latest?type=ocr").await;
    assert_eq!(latest, Value::Null, "no ocr job was started");
}

#[tokio::test]
async fn an_upload_past_the_uploads_in_flight_is_503_server_busy_with_retry_after() {
    let app = TestApp::sqlite_with(ApiConfig {
        max_uploads_in_flight: 1,
        ..ApiConfig::default()
    })
    .await;
    app.create_book("slow").await;
    app.create_book("busy").await;
    // One upload in flight: its body arrives in two pieces, the second held back.
    let (content_type, body) = crate::support::multipart(&[("a.png", &fixture(1))]);
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let (first_half, second_half) = (first_half.to_vec(), second_half.to_vec());
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    // The handler reads the body only once it holds its slot.
    let (reading, read_started) = tokio::sync::oneshot::channel::<()>();
    let stream = futures::stream::once(async move {
        reading.send(()).ok();
        Ok::<_, std::io::Error>(first_half)
    })
    .chain(futures::stream::once(async move {
        released.await.ok();
        Ok(second_half)
    }));
    let slow = Request::post("/v1/books/slow/pages")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .unwrap();
    let router = app.router();
    let in_flight =
        tokio::spawn(async move { into_json(router.oneshot(slow).await.unwrap()).await });
    read_started.await.unwrap();
    let (content_type, body) = crate::support::multipart(&[("a.png", &fixture(1))]);
    let response = app
        .send(
            Request::post("/v1/books/busy/pages")
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let (status, answer) = into_json(response).await;
    assert_error(
        (status, &answer),
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
    );
    assert_eq!(retry_after.unwrap(), "5");
    assert_eq!(
        storage_keys(&app, "busy").await,
        ["books/busy/metadata.json"]
    );
    // Once the first upload is in, the same upload goes through.
    release.send(()).unwrap();
    let (status, first) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, answer) = app.upload("busy", "", &[("a.png", &fixture(1))]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}
