//! The API's own request metrics: counts and durations by method, route and status, in
//! Prometheus text. A leaf: the observing middleware records into it, the state holds it,
//! `/metrics` renders it, and it knows none of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Request counts and durations by method, route and status.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), Counts>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    count: u64,
    seconds: f64,
}

impl HttpMetrics {
    pub(crate) fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counts = requests
            .entry((method.to_owned(), route.to_owned(), status))
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
