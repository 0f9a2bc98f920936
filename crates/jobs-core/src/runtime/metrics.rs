//! Counters of one worker, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the job duration histogram.
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0,
];

/// What one worker did since it started.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Claims: a job that ran three times counts three times.
    pub claimed: AtomicU64,
    /// Claim statements run (claims are batched: `claimed / claim_batches` per statement).
    pub claim_batches: AtomicU64,
    /// Finish statements run (ends are batched too).
    pub finish_batches: AtomicU64,
    /// Claims that ended completed.
    pub completed: AtomicU64,
    /// Claims that ended failed.
    pub failed: AtomicU64,
    /// Claims that ended cancelled.
    pub cancelled: AtomicU64,
    /// Claims requeued after a retryable error or panic.
    pub retried: AtomicU64,
    /// Claims handed back at shutdown.
    pub interrupted: AtomicU64,
    /// Heartbeat writes that succeeded.
    pub heartbeats: AtomicU64,
    /// Heartbeat writes that failed on a store error.
    pub heartbeat_errors: AtomicU64,
    /// Claims whose lease was lost.
    pub lease_lost: AtomicU64,
    /// Handler panics the runner caught while it held the lease; the claim also counts where
    /// it ended (`retried`, `failed` on its last attempt, or `cancelled` when a cancel was
    /// requested). A panic after the lease was lost counts only in `lease_lost`.
    pub panics: AtomicU64,
    /// Ticks of its schedules this worker enqueued (another worker may enqueue a tick
    /// first: the sum over every worker is one per tick).
    pub scheduled: AtomicU64,
    /// Stale jobs requeued by this worker's rescuer.
    pub rescued_requeued: AtomicU64,
    /// Jobs failed by this worker's rescuer (stale with attempts used, or pending timeout).
    pub rescued_failed: AtomicU64,
    /// Finished jobs this worker deleted past the retention.
    pub retention_deleted: AtomicU64,
    /// Compactions of the store this worker ran ([`crate::JobStore::compact`]).
    pub compactions: AtomicU64,
    /// Jobs running now: a gauge, the only field that also goes down.
    pub running: AtomicU64,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_micros: AtomicU64,
}

impl WorkerMetrics {
    /// Adds one to `counter`, with relaxed ordering: the counters are for reading, never for
    /// synchronizing.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of claims that ended with `status`; `None` for a requeue.
    pub(crate) fn ended(&self, status: crate::JobStatus) -> Option<&AtomicU64> {
        match status {
            crate::JobStatus::Completed => Some(&self.completed),
            crate::JobStatus::Failed => Some(&self.failed),
            crate::JobStatus::Cancelled => Some(&self.cancelled),
            crate::JobStatus::Pending | crate::JobStatus::Running => None,
        }
    }

    /// Records how long one claim ran.
    pub fn observe_duration(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.duration_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the Prometheus text of every metric to `out`.
    pub fn render(&self, out: &mut String) {
        let counters = [
            (
                "folio_worker_jobs_claimed_total",
                "Jobs claimed.",
                &self.claimed,
            ),
            (
                "folio_worker_heartbeats_total",
                "Heartbeat writes.",
                &self.heartbeats,
            ),
            (
                "folio_worker_heartbeat_errors_total",
                "Failed heartbeat writes.",
                &self.heartbeat_errors,
            ),
            (
                "folio_worker_lease_lost_total",
                "Claims whose lease was lost.",
                &self.lease_lost,
            ),
            ("folio_worker_panics_total", "Handler panics.", &self.panics),
            (
                "folio_worker_jobs_deleted_total",
                "Finished jobs deleted past the retention.",
                &self.retention_deleted,
            ),
            (
                "folio_worker_scheduled_total",
                "Ticks of periodic jobs this worker enqueued.",
                &self.scheduled,
            ),
            (
                "folio_worker_compactions_total",
                "Compactions of the job store after the queue ran dry.",
                &self.compactions,
            ),
        ];
        for (name, help, value) in counters {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        labelled_counter(
            out,
            "folio_worker_jobs_finished_total",
            "Claims ended, by outcome.",
            "outcome",
            &[
                ("completed", &self.completed),
                ("failed", &self.failed),
                ("cancelled", &self.cancelled),
                ("retried", &self.retried),
                ("interrupted", &self.interrupted),
            ],
        );
        labelled_counter(
            out,
            "folio_worker_rescues_total",
            "Stuck jobs recovered, by action.",
            "action",
            &[
                ("requeued", &self.rescued_requeued),
                ("failed", &self.rescued_failed),
            ],
        );
        let name = "folio_worker_jobs_running";
        let _ = writeln!(
            out,
            "# HELP {name} Jobs running now.\n# TYPE {name} gauge\n{name} {}",
            self.running.load(Ordering::Relaxed)
        );
        self.render_durations(out);
    }

    /// The claims' durations as a Prometheus histogram (cumulative buckets).
    fn render_durations(&self, out: &mut String) {
        let name = "folio_worker_job_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long claims ran.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let sum = self.duration_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
}

/// One counter with a label: its HELP and TYPE lines, then a line per label value.
fn labelled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, &AtomicU64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value_label, value) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value_label}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let metrics = WorkerMetrics::default();
        WorkerMetrics::inc(&metrics.completed);
        metrics.retention_deleted.fetch_add(3, Ordering::Relaxed);
        metrics.observe_duration(Duration::from_millis(30));
        metrics.observe_duration(Duration::from_secs(2));
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains("folio_worker_jobs_finished_total{outcome=\"completed\"} 1"));
        assert!(text.contains("folio_worker_jobs_deleted_total 3"));
        assert!(text.contains("folio_worker_job_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("folio_worker_job_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("folio_worker_job_duration_seconds_count 2"));
    }
}
