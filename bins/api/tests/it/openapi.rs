//! The OpenAPI document: every route of SPEC section 5 is in it, the router serves exactly
//! its operations (both ways), `latest` is nullable, and a real validator accepts it.

use std::path::PathBuf;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, into_json};

/// Routes of SPEC section 5 that must be in the document (a floor, not the whole list: new
/// routes are checked against the router below, both ways).
const SPEC_ROUTES: [(&str, &str); 22] = [
    ("post", "/v1/books"),
    ("get", "/v1/books"),
    ("get", "/v1/books/{book_id}"),
    ("post", "/v1/books/{book_id}/pages"),
    ("get", "/v1/books/{book_id}/pages/{page}"),
    ("get", "/v1/books/{book_id}/pages/{page}/image"),
    ("get", "/v1/books/{book_id}/pages/{page}/text"),
    ("post", "/v1/books/{book_id}/pages/{page}/ocr/retry"),
    ("get", "/v1/books/{book_id}/pages/{page}/guidelines"),
    ("get", "/v1/books/{book_id}/guidelines"),
    ("post", "/v1/books/{book_id}/jobs"),
    ("get", "/v1/books/{book_id}/jobs"),
    ("get", "/v1/books/{book_id}/jobs/latest"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("get", "/v1/jobs/{job_id}/events"),
    ("post", "/v1/jobs/{job_id}/cancel"),
    ("post", "/v1/jobs/{job_id}/resume"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

fn document() -> Value {
    serde_json::to_value(api::openapi()).unwrap()
}

#[tokio::test]
async fn the_document_served_is_openapi_3_1_and_lists_every_route_of_the_specification() {
    let app = TestApp::sqlite().await;
    let (status, served) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, document());
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        served["openapi"]
    );
    for (method, path) in SPEC_ROUTES {
        assert!(
            served["paths"][path][method].is_object(),
            "{method} {path} is missing from /openapi.json"
        );
    }
}

#[tokio::test]
async fn the_router_serves_exactly_the_operations_of_the_document() {
    let app = TestApp::sqlite().await;
    let routed = api::routed_operations(app.state.clone());
    let documented = api::operations(&api::openapi());
    for operation in &routed {
        assert!(
            documented.contains(operation),
            "{operation:?} is routed but not documented"
        );
    }
    for operation in &documented {
        assert!(
            routed.contains(operation),
            "{operation:?} is documented but not routed"
        );
    }
    let served: Vec<(String, String)> = document()["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(served.len(), documented.len(), "{served:?}");
}

#[tokio::test]
async fn every_operation_of_the_document_is_routed_by_the_router() {
    let app = TestApp::sqlite().await;
    let document = document();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let uri = path
                .replace("{book_id}", "no-such-book")
                .replace("{page}", "1")
                .replace("{job_id}", "0190a000-0000-7000-8000-000000000000");
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let (status, body) = into_json(app.send(request).await).await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert_ne!(
                body["error"]["message"], "no such route",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[test]
fn every_route_is_registered_through_the_documented_router() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("lib.rs"), src.join("server.rs")];
    for entry in std::fs::read_dir(src.join("routes")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for forbidden in [".route(", ".route_service(", ".nest("] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: register routes with utoipa_axum::routes! so the \
                 OpenAPI document lists them",
                file.display()
            );
        }
    }
}

#[test]
fn latest_is_documented_as_nullable() {
    let document = document();
    let schema = &document["paths"]["/v1/books/{book_id}/jobs/latest"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let alternatives = schema["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema}"));
    assert!(
        alternatives
            .iter()
            .any(|alternative| alternative["type"] == "null"),
        "{schema}"
    );
    assert!(
        alternatives
            .iter()
            .any(|alternative| alternative["$ref"] == "#/components/schemas/Job"),
        "{schema}"
    );
}

#[test]
fn v1_operations_require_the_bearer_scheme_and_system_ones_do_not() {
    let document = document();
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, item) in document["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            assert_eq!(
                operation["security"].is_array(),
                path.starts_with("/v1/"),
                "{path}"
            );
        }
    }
}

#[test]
fn path_parameters_state_the_rules_the_server_enforces() {
    let document = document();
    for (path, item) in document["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let schema = &parameter["schema"];
                match parameter["name"].as_str().unwrap() {
                    "book_id" => {
                        assert_eq!(schema["pattern"], "^[a-z0-9][a-z0-9_-]{0,63}$", "{path}");
                    }
                    "page" => {
                        assert_eq!(schema["minimum"], 1, "{path}");
                        assert_eq!(schema["maximum"], u32::MAX, "{path}");
                    }
                    "job_id" => assert_eq!(schema["format"], "uuid", "{path}"),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn the_event_stream_is_documented_event_by_event() {
    let document = document();
    let schema = &document["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    let reference = schema["$ref"].as_str().unwrap();
    let event = &document["components"]["schemas"][reference.rsplit('/').next().unwrap()];
    assert_eq!(
        event["properties"]["event"]["enum"],
        json!(["job"]),
        "{event}"
    );
    let data = &event["properties"]["data"];
    assert_eq!(data["type"], "string", "{event}");
    assert_eq!(data["contentMediaType"], "application/json", "{event}");
    assert_eq!(
        data["contentSchema"]["$ref"], "#/components/schemas/Job",
        "{event}"
    );
}

fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("FOLIO_OPENAPI_VALIDATOR").filter(|path| !path.is_empty())
    {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/folio/openapi-validator-venv/bin/openapi-spec-validator")
}

#[test]
fn a_real_openapi_validator_accepts_the_document() {
    let validator = validator();
    assert!(
        validator.is_file(),
        "this test needs openapi-spec-validator at {}: run scripts/install-openapi-validator.sh \
         (it prints the path; export it as FOLIO_OPENAPI_VALIDATOR)",
        validator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, api::openapi().to_pretty_json().unwrap()).unwrap();
    let output = Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
