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
async fn with_a_metrics_token_only_it_opens_the_metrics_and_probes_stay_open() {
    let app = TestApp::sqlite_with(ApiConfig {
        api_token: Some("the-api-token-0123".into()),
        metrics_token: Some("the-metrics-token-0123".into()),
        ..ApiConfig::default()
    })
    .await;
    let get = |path: &str, authorization: &str| {
        Request::get(path)
            .header(header::AUTHORIZATION, authorization)
            .body(Body::empty())
            .unwrap()
    };
    for authorization in ["", "Bearer the-api-token-0123", "Bearer wrong"] {
        let response = app.send(get("/metrics", authorization)).await;
        let (status, body) = into_json(response).await;
        assert_error((status, &body), StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let response = app
        .send(get("/metrics", "Bearer the-metrics-token-0123"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // The metrics token opens nothing of the API.
    let response = app
        .send(get("/v1/books", "Bearer the-metrics-token-0123"))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            app.send(get(path, "")).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn without_a_token_v1_routes_are_open() {
    let app = TestApp::sqlite().await;
    let (status, _) = app.get("/v1/books").await;
    assert_eq!(status, StatusCode::OK);
}

/// The request of a page on another site: a body-less POST needs no CORS preflight.
fn cross_site_post(origin: &str, fetch_site: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/v1/books/b1/pages/1/ocr/retry")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, origin);
    if let Some(site) = fetch_site {
        request = request.header("sec-fetch-site", site);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_write_from_another_site_is_403_with_or_without_a_token() {
    for token in [None, Some("s3cret-token".to_owned())] {
        let app = TestApp::sqlite_with(ApiConfig {
            api_token: token.clone(),
            ..ApiConfig::default()
        })
        .await;
        for (origin, site) in [
            ("http://evil.example", None),
            ("http://evil.example", Some("cross-site")),
            ("null", None),
            ("http://127.0.0.1:8080", Some("same-site")),
        ] {
            let (status, body) = into_json(app.send(cross_site_post(origin, site)).await).await;
            assert_error((status, &body), StatusCode::FORBIDDEN, "cross_site");
        }
        // A multipart upload from another site, too.
        let (content_type, body) = crate::support::multipart(&[("p.png", b"x")]);
        let request = Request::post("/v1/books/b1/pages")
            .header(header::HOST, "localhost:8080")
            .header(header::ORIGIN, "https://evil.example")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let (status, body) = into_json(app.send(request).await).await;
        assert_error((status, &body), StatusCode::FORBIDDEN, "cross_site");
        // Reads from another origin are the browser's to withhold (no CORS headers).
        let request = Request::get("/v1/books")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ORIGIN, "http://evil.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.send(request).await.status(),
            StatusCode::OK,
            "{token:?}"
        );
    }
}

#[tokio::test]
async fn the_dashboards_own_writes_pass() {
    let app = TestApp::sqlite().await;
    let request = Request::post("/v1/books")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"id": "own-site", "title": "Own site"}).to_string(),
        ))
        .unwrap();
    assert_eq!(app.send(request).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn without_a_token_a_foreign_host_is_421_and_public_hosts_are_served() {
    let app = TestApp::sqlite_with(ApiConfig {
        public_hosts: vec!["folio.example.org".to_owned()],
        ..ApiConfig::default()
    })
    .await;
    let get = |host: &str| {
        Request::get("/v1/books")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    for host in ["attacker.example:8080", "10.1.2.3:8080"] {
        let (status, body) = into_json(app.send(get(host)).await).await;
        assert_error(
            (status, &body),
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
        );
        let dashboard = app
            .send(
                Request::get("/")
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            dashboard.status(),
            StatusCode::MISDIRECTED_REQUEST,
            "{host}"
        );
    }
    for host in [
        "127.0.0.1:8080",
        "localhost",
        "[::1]:8080",
        "folio.example.org",
    ] {
        assert_eq!(app.send(get(host)).await.status(), StatusCode::OK, "{host}");
    }
    // With a token, any name: the token is what keeps others out.
    let app = TestApp::sqlite_with(ApiConfig {
        api_token: Some("s3cret-token".into()),
        ..ApiConfig::default()
    })
    .await;
    assert_eq!(
        app.send(get("attacker.example:8080")).await.status(),
        StatusCode::OK
    );
}
