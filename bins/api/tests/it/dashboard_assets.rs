//! The dashboard's static serving (SPEC section 7): the app's page on every client-side
//! route, assets with validators, the security headers, and checks of the files
//! themselves (no inline script or style, no `innerHTML`, every module import served).

use std::path::PathBuf;

use api::ApiConfig;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use crate::support::{TestApp, into_bytes};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

async fn get(app: &TestApp, uri: &str) -> axum::http::Response<Body> {
    app.send(Request::get(uri).body(Body::empty()).unwrap())
        .await
}

fn header_of(response: &axum::http::Response<Body>, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Every file under `bins/api/assets`, with its text.
fn asset_files() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.iter().any(|(name, _)| name == "index.html"));
    files
}

fn assert_security_headers(response: &axum::http::Response<Body>, uri: &str) {
    assert_eq!(
        header_of(response, header::CONTENT_SECURITY_POLICY),
        CSP,
        "{uri}"
    );
    assert_eq!(
        header_of(response, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{uri}"
    );
    assert_eq!(
        header_of(response, header::REFERRER_POLICY),
        "no-referrer",
        "{uri}"
    );
}

#[tokio::test]
async fn every_client_route_serves_the_app_page_with_the_security_headers() {
    let app = TestApp::sqlite().await;
    let index =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/index.html")).unwrap();
    for uri in ["/", "/books/x", "/books/fractions-5", "/jobs"] {
        let response = get(&app, uri).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{uri}"
        );
        assert_security_headers(&response, uri);
        let (_, body) = into_bytes(response).await;
        assert_eq!(body, index, "{uri}");
    }
}

#[tokio::test]
async fn the_dashboard_needs_no_token_but_the_api_still_does() {
    let app = TestApp::sqlite_with(ApiConfig {
        api_token: Some("s3cret".to_owned()),
        ..ApiConfig::default()
    })
    .await;
    // `send` adds the token; build the requests by hand without it.
    let router = app.router();
    for uri in [
        "/",
        "/books/x",
        "/jobs",
        "/assets/app.js",
        "/assets/app.css",
    ] {
        let response = tower::ServiceExt::oneshot(
            router.clone(),
            Request::get(uri).body(Body::empty()).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
    }
    let response = tower::ServiceExt::oneshot(
        router,
        Request::get("/v1/books").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_have_their_content_type_a_strong_etag_and_answer_304_when_unchanged() {
    let app = TestApp::sqlite().await;
    for (uri, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/live.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
        ("/", "text/html; charset=utf-8"),
    ] {
        let response = get(&app, uri).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            content_type,
            "{uri}"
        );
        assert_eq!(
            header_of(&response, header::CACHE_CONTROL),
            "no-cache",
            "{uri}"
        );
        assert_security_headers(&response, uri);
        let etag = header_of(&response, header::ETAG).to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
            "a strong etag: {etag}"
        );

        let again = get(&app, uri).await;
        assert_eq!(header_of(&again, header::ETAG), etag, "the etag is stable");

        let conditional = app
            .send(
                Request::get(uri)
                    .header(header::IF_NONE_MATCH, &etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(conditional.status(), StatusCode::NOT_MODIFIED, "{uri}");
        assert_eq!(header_of(&conditional, header::ETAG), etag);
        assert_security_headers(&conditional, uri);
        let (_, body) = into_bytes(conditional).await;
        assert!(body.is_empty());

        let changed = app
            .send(
                Request::get(uri)
                    .header(header::IF_NONE_MATCH, "\"something-else\"")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(changed.status(), StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn unknown_assets_are_404() {
    let app = TestApp::sqlite().await;
    for uri in [
        "/assets/nope.js",
        "/assets/index.htm",
        "/assets/..%2Fsrc%2Flib.rs",
        "/assets/",
    ] {
        let response = get(&app, uri).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn every_file_in_the_assets_folder_is_served_and_every_module_import_resolves() {
    let app = TestApp::sqlite().await;
    let files = asset_files();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let (_, html) = files.iter().find(|(name, _)| name == "index.html").unwrap();
    for (position, _) in html.match_indices("/assets/") {
        let rest = &html[position + "/assets/".len()..];
        let target = &rest[..rest.find('"').unwrap()];
        assert!(
            names.contains(&target),
            "index.html refers to /assets/{target}, which is not an asset"
        );
    }
    for (name, text) in &files {
        if name != "index.html" {
            let response = get(&app, &format!("/assets/{name}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{name} is not embedded");
            let (_, body) = into_bytes(response).await;
            assert_eq!(body, text.as_bytes(), "{name}");
        }
        if name.ends_with(".js") {
            for line in text.lines() {
                let line = line.trim();
                if !(line.starts_with("import ") || line.starts_with("} from ")) {
                    continue;
                }
                let Some(start) = line.find("'./") else {
                    continue;
                };
                let target = &line[start + 3..];
                let target = &target[..target.find('\'').unwrap()];
                assert!(
                    names.contains(&target),
                    "{name} imports ./{target}, which is not an asset"
                );
            }
        }
    }
}

#[test]
fn the_page_has_no_inline_script_style_or_handler() {
    let files = asset_files();
    let (_, html) = files.iter().find(|(name, _)| name == "index.html").unwrap();
    let lower = html.to_ascii_lowercase();
    let mut scripts = 0;
    for (position, _) in lower.match_indices("<script") {
        scripts += 1;
        let tag = &lower[position..position + lower[position..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
        assert!(tag.contains("type=\"module\""), "not a module: {tag}");
        let after = &lower[position + tag.len() + 1..];
        assert!(
            after.trim_start().starts_with("</script>"),
            "a script with a body: {tag}"
        );
    }
    assert!(scripts > 0, "the page loads its modules");
    assert!(!lower.contains("<style"), "inline stylesheet");
    assert!(!lower.contains(" style="), "inline style attribute");
    assert!(!lower.contains("javascript:"), "javascript: URL");
    for handler in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onchange=",
        " onerror=",
    ] {
        assert!(!lower.contains(handler), "inline handler {handler}");
    }
}

#[test]
fn no_asset_renders_markup_from_strings() {
    // Untrusted text (titles, file names, OCR text, guidelines, errors) goes through
    // textContent and text nodes only; the CSP forbids inline styles as well.
    for (name, text) in asset_files() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "createContextualFragment",
            "DOMParser",
            "eval(",
            "new Function",
            "setAttribute('style'",
            "setAttribute(\"style\"",
            "cssText",
        ] {
            assert!(!text.contains(forbidden), "{name} uses {forbidden}");
        }
    }
}

#[test]
fn the_dashboard_is_not_part_of_the_api_document() {
    let document = serde_json::to_value(api::openapi()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in ["/", "/books/{book_id}", "/jobs", "/assets/{file}"] {
        assert!(!paths.contains_key(path), "{path} is in the API document");
    }
}
