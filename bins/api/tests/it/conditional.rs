//! Conditional GETs: every document a client reads again carries a strong ETag, and
//! `If-None-Match` naming it is answered 304 without a body.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use blob_store::PutMode;
use books::{BookId, layout};
use bytes::Bytes;
use serde_json::json;

use crate::chains::{follow_chain, handlers};
use crate::support::{TestApp, into_bytes};

/// A GET of `uri` with `Accept` and `If-None-Match` when given: status, ETag, the other
/// headers, body.
async fn get(
    app: &TestApp,
    uri: &str,
    accept: Option<&str>,
    if_none_match: Option<&str>,
) -> (StatusCode, String, header::HeaderMap, Vec<u8>) {
    let mut request = Request::get(uri);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    if let Some(etag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = app.send(request.body(Body::empty()).unwrap()).await;
    let headers = response.headers().clone();
    let etag = headers
        .get(header::ETAG)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (status, body) = into_bytes(response).await;
    (status, etag, headers, body)
}

#[tokio::test]
async fn every_document_a_client_reads_again_answers_304_to_its_etag() {
    let app = TestApp::sqlite().await;
    app.book_with_pages("cond", 2).await;
    app.ocr_done_with_fixture_text("cond").await;
    let book = BookId::parse("cond").unwrap();
    app.blob_store
        .put(
            &layout::book_key(&book, &layout::ocr_hocr_path(1)),
            Bytes::from_static(b"<html><body><span class='ocrx_word'>Add</span></body></html>"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    app.state
        .books()
        .update(&book, |manifest| {
            manifest.page_mut(1).unwrap().ocr.hocr = Some(layout::ocr_hocr_path(1));
        })
        .await
        .unwrap();
    let worker = app.start_worker(handlers(&app));
    let (status, job) = app
        .post(
            "/v1/books/cond/jobs",
            json!({"type": "guidelines", "then": ["finalize"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    follow_chain(&app, &job).await;
    worker.stop().await;

    let documents = [
        ("/v1/books/cond", None),
        ("/v1/books/cond/pages/1", None),
        ("/v1/books/cond/pages/1/image", None),
        ("/v1/books/cond/pages/1/thumbnail", None),
        ("/v1/books/cond/pages/1/text", None),
        ("/v1/books/cond/pages/1/hocr", None),
        ("/v1/books/cond/pages/1/guidelines", None),
        ("/v1/books/cond/guidelines", None),
        ("/v1/books/cond/guidelines", Some("text/markdown")),
        ("/", None),
    ];
    for (uri, accept) in documents {
        let (status, etag, headers, body) = get(&app, uri, accept, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(!body.is_empty(), "{uri}");
        assert!(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "{uri}: a strong ETag, not {etag:?}"
        );
        assert!(headers.contains_key(header::CACHE_CONTROL), "{uri}");

        for current in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
        ] {
            let (status, again, not_modified, body) = get(&app, uri, accept, Some(&current)).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri} with {current}");
            assert_eq!(again, etag, "{uri}: the 304 names the validator");
            assert!(body.is_empty(), "{uri}: a 304 has no body");
            assert_eq!(
                not_modified.get(header::CACHE_CONTROL),
                headers.get(header::CACHE_CONTROL),
                "{uri}: a 304 carries the 200's Cache-Control"
            );
            assert_eq!(
                not_modified.get(header::VARY),
                headers.get(header::VARY),
                "{uri}"
            );
        }
        let (status, again, _, second) = get(&app, uri, accept, Some("\"other\"")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: a stale ETag gets the document"
        );
        assert_eq!(
            (again, second),
            (etag, body),
            "{uri}: same bytes, same ETag"
        );
    }

    // The final document's two forms have their own validators, and say they vary.
    let (_, json_etag, json_headers, _) = get(&app, "/v1/books/cond/guidelines", None, None).await;
    let (_, markdown_etag, _, _) = get(
        &app,
        "/v1/books/cond/guidelines",
        Some("text/markdown"),
        None,
    )
    .await;
    assert_ne!(json_etag, markdown_etag);
    assert_eq!(json_headers[header::VARY], "accept");
    let (status, _, _, _) = get(
        &app,
        "/v1/books/cond/guidelines",
        Some("text/markdown"),
        Some(&json_etag),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the JSON's ETag is not the Markdown's"
    );

    // A changed book has a new validator: the old one gets the new manifest.
    let (_, before, _, _) = get(&app, "/v1/books/cond", None, None).await;
    app.state
        .books()
        .update(&book, |manifest| manifest.title = "Changed".to_owned())
        .await
        .unwrap();
    let (status, after, _, body) = get(&app, "/v1/books/cond", None, Some(&before)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(after, before);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["title"], "Changed");
}
