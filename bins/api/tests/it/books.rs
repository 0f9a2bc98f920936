//! Books: create, list, get, and the errors of each.

use api::ApiConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::support::{TestApp, assert_error, into_json};

#[tokio::test]
async fn creating_a_book_answers_201_with_its_manifest() {
    let app = TestApp::sqlite().await;
    let (status, body) = app
        .post(
            "/v1/books",
            json!({"id": "fractions-1", "title": "Fractions"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["book_id"], "fractions-1");
    assert_eq!(body["title"], "Fractions");
    assert_eq!(body["pages"], json!([]));
    assert_eq!(body["guidelines"]["status"], "none");
}

#[tokio::test]
async fn a_book_without_id_gets_one_made_from_its_title() {
    let app = TestApp::sqlite().await;
    let (status, body) = app
        .post("/v1/books", json!({"title": "Adding Fractions, Grade 4!"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["book_id"].as_str().unwrap();
    assert!(id.starts_with("adding-fractions-grade-4-"), "{id}");
    assert!(books::BookId::parse(id).is_ok());
}

#[tokio::test]
async fn creating_an_existing_book_is_409_book_exists() {
    let app = TestApp::sqlite().await;
    app.create_book("dup").await;
    let (status, body) = app
        .post("/v1/books", json!({"id": "dup", "title": "Again"}))
        .await;
    assert_error((status, &body), StatusCode::CONFLICT, "book_exists");
}

#[tokio::test]
async fn invalid_book_ids_and_titles_are_422_invalid_request() {
    let app = TestApp::sqlite().await;
    for id in ["Upper", "-dash-first", "a/b", "", &"x".repeat(65)] {
        let (status, body) = app.post("/v1/books", json!({"id": id, "title": "T"})).await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    // The document's rule: 1-500 characters (as sent), not all white space.
    let padded = format!(" {} ", "x".repeat(499));
    for title in ["", "  ", "\u{3000}\t\u{85}", &"x".repeat(501), &padded] {
        let (status, body) = app
            .post("/v1/books", json!({"id": "ok", "title": title}))
            .await;
        assert_error(
            (status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    let (status, body) = app
        .post(
            "/v1/books",
            json!({"id": "ok", "title": format!(" {} ", "x".repeat(498))}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["title"], "x".repeat(498));
    let (status, body) = app.post("/v1/books", json!({"id": "ok"})).await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let (status, body) = app
        .post(
            "/v1/books",
            json!({"id": "ok", "title": "T", "colour": "red"}),
        )
        .await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn malformed_json_is_400_and_a_missing_content_type_is_415() {
    let app = TestApp::sqlite().await;
    let request = Request::post("/v1/books")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"title\": "))
        .unwrap();
    let (status, body) = into_json(app.send(request).await).await;
    assert_error((status, &body), StatusCode::BAD_REQUEST, "invalid_request");

    let request = Request::post("/v1/books")
        .body(Body::from("{\"title\": \"T\"}"))
        .unwrap();
    let (status, body) = into_json(app.send(request).await).await;
    assert_error(
        (status, &body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}

#[tokio::test]
async fn a_json_body_over_the_limit_is_413_payload_too_large() {
    let app = TestApp::sqlite_with(ApiConfig {
        json_body_limit: 1024,
        ..ApiConfig::default()
    })
    .await;
    let (status, body) = app
        .post("/v1/books", json!({"id": "big", "title": "x".repeat(4096)}))
        .await;
    assert_error(
        (status, &body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test]
async fn books_are_listed_by_id_with_their_page_counts() {
    let app = TestApp::sqlite().await;
    let (status, body) = app.get("/v1/books").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"books": []}));
    app.create_book("b-two").await;
    app.book_with_pages("a-one", 2).await;
    let (status, body) = app.get("/v1/books").await;
    assert_eq!(status, StatusCode::OK);
    let books = body["books"].as_array().unwrap();
    assert_eq!(books.len(), 2);
    assert_eq!(books[0]["book_id"], "a-one");
    assert_eq!(books[0]["pages"], 2);
    assert_eq!(books[0]["pages_ocr_done"], 0);
    assert_eq!(books[1]["book_id"], "b-two");
}

#[tokio::test]
async fn getting_a_book_answers_its_manifest_404_or_422() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("one", 1).await;
    let (status, body) = app.get("/v1/books/one").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pages"][0]["page"], 1);
    assert_eq!(body["pages"][0]["ocr"]["status"], "pending");
    assert_eq!(body["pages"][0]["image_url"], "/v1/books/one/pages/1/image");
    let (status, body) = app.get("/v1/books/missing").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/v1/books/Bad%20Id").await;
    assert_error(
        (status, &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_error_shape() {
    let app = TestApp::sqlite().await;
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_error((status, &body), StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.json("DELETE", "/v1/books", None).await;
    assert_error(
        (status, &body),
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
    );
}
