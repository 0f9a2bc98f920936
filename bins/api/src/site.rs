//! Requests from other sites: no cross-site writes, and without a token no DNS rebinding.
//!
//! - A state-changing request (any method but GET, HEAD and OPTIONS) whose `Sec-Fetch-Site`
//!   says it came from another site, or whose `Origin` is not the host it was sent to, is
//!   403 `cross_site`, with or without a token: a multipart upload or a body-less POST
//!   needs no CORS preflight, so without this any page the operator visits could add
//!   pages and start jobs.
//! - Without a token, a request whose `Host` is neither a loopback name or address nor one
//!   of `--public-host` is 421 `misdirected`: a page whose own name was rebound to this
//!   server's address (DNS rebinding) sends its own name as `Host`, so it can read nothing.
//!
//! A request with neither header (curl, tests, the Rust client) passes: only browsers send
//! them, and a browser always does.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Refuses cross-site writes and, without a token, foreign `Host` names (module docs).
pub(crate) async fn same_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.config();
    let headers = request.headers();
    let host = request_host(&request);
    if config.api_token.is_none()
        && let Some(host) = &host
        && !host_allowed(host, &config.public_hosts)
    {
        return ApiError::Misdirected(host_name(host).to_owned()).into_response();
    }
    if changes_state(request.method()) && !same_origin(headers, host.as_deref()) {
        return ApiError::CrossSite.into_response();
    }
    next.run(request).await
}

/// GET, HEAD and OPTIONS change nothing.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The authority the request was sent to: `Host`, or the URI's (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.to_string())
        })
}

/// Whether the browser says the request comes from this origin (or says nothing).
fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: typed by the user, a bookmark.
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    // `scheme://host[:port]`; "null" (a sandboxed frame, a file) has no authority.
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    host.is_some_and(|host| authority.eq_ignore_ascii_case(host))
}

/// The name of `Host` without its port (`[::1]:8080` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// A loopback name or address, or one of `public_hosts` (names, without port).
fn host_allowed(host: &str, public_hosts: &[String]) -> bool {
    let name = host_name(host);
    let address = name.trim_start_matches('[').trim_end_matches(']');
    let lowercase = name.to_ascii_lowercase();
    lowercase == "localhost"
        || lowercase.ends_with(".localhost")
        || address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || public_hosts
            .iter()
            .any(|public| public.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_public_hosts_are_served() {
        let public = vec!["folio.example.org".to_owned()];
        for host in [
            "localhost",
            "localhost:8080",
            "app.localhost:3000",
            "127.0.0.1:8080",
            "127.5.6.7",
            "[::1]:8080",
            "[::1]",
            "Folio.Example.Org:443",
        ] {
            assert!(host_allowed(host, &public), "{host}");
        }
        for host in [
            "attacker.example:8080",
            "10.0.0.5:8080",
            "[2001:db8::1]:80",
            "localhost.attacker.example",
        ] {
            assert!(!host_allowed(host, &public), "{host}");
        }
    }

    #[test]
    fn an_origin_must_be_the_host_it_was_sent_to() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, value.parse().unwrap());
            }
            headers
        };
        let host = Some("127.0.0.1:8080");
        assert!(same_origin(&headers(&[]), host));
        assert!(same_origin(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            host
        ));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            host
        ));
        assert!(!same_origin(
            &headers(&[("origin", "http://evil.example")]),
            host
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), host));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            host
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "same-site")]),
            host
        ));
        assert!(!same_origin(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            None
        ));
    }
}
