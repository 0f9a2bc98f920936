//! Bearer-token auth: with a token every `/v1` route (taken from the OpenAPI document, so
//! none is forgotten) answers 401 without it; system routes stay open.

use api::ApiConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::support::{TestApp, assert_error, into_json};

fn concrete(path: &str) -> String {
    path.replace("{book_id}", "book")
        .replace("{page}", "1")
        .replace("{job_id}", "0190a000-0000-7000-8000-000000000000")
}

fn operations() -> Vec<(String, String)> {
    let document = serde_json::to_value(api::openapi()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

#[tokio::test]
async fn with_a_token_every_v1_route_answers_401_without_it_or_with_a_wrong_one() {
    let app = TestApp::sqlite_with(ApiConfig {
        api_token: Some("s3cret-token".into()),
        ..ApiConfig::default()
    })
    .await;
    let v1: Vec<_> = operations()
        .into_iter()
        .filter(|(_, path)| path.starts_with("/v1/"))
        .collect();
    assert!(v1.len() >= 15, "{v1:?}");
    for (method, path) in &v1 {
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Basic czNjcmV0LXRva2Vu"),
            Some("Bearer "),
        ] {
            let mut request = Request::builder()
                .method(method.as_str())
                .uri(concrete(path));
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            } else {
                // TestApp adds its token unless the request has one: send an empty one.
                request = request.header(header::AUTHORIZATION, "");
            }
            let response = app.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let (status, body) = into_json(response).await;
            assert_error((status, &body), StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
}

#[tokio::test]
async fn with_the_right_token_v1_routes_work_and_system_routes_need_none() {
    let app = TestApp::sqlite_with(ApiConfig {
        api_token: Some("s3cret-token".into()),
        ..ApiConfig::default()
    })
    .await;
    let (status, body) = app
        .post("/v1/books", json!({"id": "auth", "title": "T"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let request = Request::get("/v1/books/auth")
        .header(header::AUTHORIZATION, "bearer s3cret-token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status(), StatusCode::OK);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, "")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(request).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn without_a_token_v1_routes_are_open() {
    let app = TestApp::sqlite().await;
    let (status, _) = app.get("/v1/books").await;
    assert_eq!(status, StatusCode::OK);
}
