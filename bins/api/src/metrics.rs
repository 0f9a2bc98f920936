//! The API's own request metrics: counts and durations by method, route and status, in
//! Prometheus text. A leaf: the observing middleware records into it, the state holds it,
//! `/metrics` renders it, and it knows none of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::Method;

/// Request counts and durations by method, route and status. Every label is one the
/// server chose, so their number is bounded whatever clients send: the method is one of the
/// standard ones or `OTHER` ([`method_label`]), the route is a route of the router or
/// `unmatched`, the status is a number.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), Counts>>,
}

/// The label of a request's method: the standard methods by name, any other `OTHER` (a
/// client may send any token as its method).
pub(crate) fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    count: u64,
    seconds: f64,
}

impl HttpMetrics {
    /// Counts a request; `route` is a route of the router, or `unmatched`.
    pub(crate) fn record(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counts = requests
            .entry((method_label(method), route.to_owned(), status))
            .or_default();
        counts.count += 1;
        counts.seconds += elapsed.as_secs_f64();
    }

    /// Appends the Prometheus text of the counters to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        out.push_str(
            "# HELP folio_http_requests_total HTTP requests answered, by method, route and status.\n\
             # TYPE folio_http_requests_total counter\n",
        );
        for ((method, route, status), counts) in &requests {
            let _ = writeln!(
                out,
                "folio_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                counts.count
            );
        }
        out.push_str(
            "# HELP folio_http_request_duration_seconds Time to produce the response, by method, route and status.\n\
             # TYPE folio_http_request_duration_seconds summary\n",
        );
        for ((method, route, status), counts) in &requests {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            let _ = writeln!(
                out,
                "folio_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 folio_http_request_duration_seconds_count{{{labels}}} {}",
                counts.seconds, counts.count
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_are_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let junk = Method::from_bytes("X".repeat(10_000).as_bytes()).unwrap();
        assert_eq!(method_label(&junk), "OTHER");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "OTHER");
    }
}
