//! `Idempotency-Key` on POSTs: a repeat gets the first answer and nothing is done twice; a
//! repeat while the first runs is 409, another request under a used key 422.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, into_json, multipart_with_boundary};

/// Uploads `files` to `book` with `key`, the form drawn with `boundary`; status, answer,
/// and whether the answer says it was replayed.
async fn upload(
    app: &TestApp,
    book: &str,
    key: &str,
    files: &[(&str, &[u8])],
    boundary: &str,
) -> (StatusCode, Value, bool) {
    let (content_type, body) = multipart_with_boundary(files, boundary);
    let request = Request::post(format!("/v1/books/{book}/pages?ocr=false"))
        .header(header::CONTENT_TYPE, content_type)
        .header("idempotency-key", key)
        .body(Body::from(body))
        .unwrap();
    let response = app.send(request).await;
    let replayed = response.headers().get("idempotency-replayed").is_some();
    let (status, answer) = into_json(response).await;
    (status, answer, replayed)
}

async fn post_with_key(app: &TestApp, uri: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    into_json(app.send(request).await).await
}

fn page_files() -> Vec<(String, Vec<u8>)> {
    ocr::testing::fixture_pages()
        .into_iter()
        .take(2)
        .map(|page| (format!("page-{}.png", page.number), page.png.to_vec()))
        .collect()
}

#[tokio::test]
async fn an_upload_sent_twice_with_one_key_stores_its_pages_once() {
    let app = TestApp::sqlite().await;
    app.create_book("once").await;
    let files = page_files();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let (status, first, replayed) = upload(&app, "once", "upload-1", &files, "boundary-a").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(!replayed);
    // Sent again, as a client's retry would: a new boundary, the same files.
    let (status, again, replayed) = upload(&app, "once", "upload-1", &files, "boundary-b").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert!(replayed, "the kept answer, not a second run");
    assert_eq!(again, first);
    app.ingest(&first).await;
    let (_, book) = app.get("/v1/books/once").await;
    assert_eq!(book["pages"].as_array().unwrap().len(), 2, "{book}");
    let (_, jobs) = app.get("/v1/books/once/jobs").await;
    let ingests = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["type"] == "ingest")
        .count();
    assert_eq!(ingests, 1, "{jobs}");

    // The same key with other files is refused; so is the same key on another path.
    let other = [("other.png", files[0].1)];
    let (status, answer, _) = upload(&app, "once", "upload-1", &other, "boundary-c").await;
    assert_error(
        (status, &answer),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_mismatch",
    );
    let (status, answer) = post_with_key(
        &app,
        "/v1/books",
        "upload-1",
        &json!({"id": "another", "title": "Another"}),
    )
    .await;
    assert_error(
        (status, &answer),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_mismatch",
    );
}

#[tokio::test]
async fn two_concurrent_uploads_with_one_key_store_the_pages_once() {
    let app = TestApp::sqlite().await;
    app.create_book("race").await;
    let files = page_files();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let (a, b) = tokio::join!(
        upload(&app, "race", "same-key", &files, "boundary-a"),
        upload(&app, "race", "same-key", &files, "boundary-b"),
    );
    let mut uploads = Vec::new();
    for (status, answer, _) in [a, b] {
        match status {
            StatusCode::ACCEPTED => uploads.push(answer["upload"]["id"].clone()),
            StatusCode::CONFLICT => assert_error(
                (status, &answer),
                StatusCode::CONFLICT,
                "idempotency_in_flight",
            ),
            other => panic!("{other}: {answer}"),
        }
    }
    uploads.dedup();
    assert_eq!(uploads.len(), 1, "one upload stored: {uploads:?}");
    let (status, answer, replayed) = upload(&app, "race", "same-key", &files, "boundary-c").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(replayed);
    app.ingest(&answer).await;
    let (_, book) = app.get("/v1/books/race").await;
    assert_eq!(book["pages"].as_array().unwrap().len(), 2, "{book}");
}

#[tokio::test]
async fn a_json_post_sent_twice_gets_its_first_answer_and_a_conflict_is_not_kept() {
    let app = TestApp::sqlite().await;
    let body = json!({"id": "keyed", "title": "Keyed"});
    let (status, first) = post_with_key(&app, "/v1/books", "create-1", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = post_with_key(&app, "/v1/books", "create-1", &body).await;
    assert_eq!(
        (status, &again),
        (StatusCode::CREATED, &first),
        "not 409 book_exists"
    );
    // Without the key, the same request is a second one.
    let (status, answer) = app.post("/v1/books", body.clone()).await;
    assert_error((status, &answer), StatusCode::CONFLICT, "book_exists");
    // A 409 is not kept: the key is free for the request once the conflict is gone.
    let taken = json!({"id": "taken", "title": "Taken"});
    app.create_book("taken").await;
    let (status, answer) = post_with_key(&app, "/v1/books", "create-2", &taken).await;
    assert_error((status, &answer), StatusCode::CONFLICT, "book_exists");
    let other = json!({"id": "free", "title": "Free"});
    let (status, answer) = post_with_key(&app, "/v1/books", "create-2", &other).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a released key takes a new request: {answer}"
    );
}

#[tokio::test]
async fn a_key_that_is_empty_too_long_or_not_visible_ascii_is_refused() {
    let app = TestApp::sqlite().await;
    let body = json!({"id": "k", "title": "K"});
    for key in ["", &"x".repeat(256), "two words"] {
        let (status, answer) = post_with_key(&app, "/v1/books", key, &body).await;
        assert_error(
            (status, &answer),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    let (_, books) = app.get("/v1/books").await;
    assert_eq!(books["books"].as_array().unwrap().len(), 0, "{books}");
}
