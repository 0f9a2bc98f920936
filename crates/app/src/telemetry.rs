//! Logging setup and the Prometheus text of a worker.

use jobs_core::runtime::WorkerMetrics;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Logs to stderr in `format`; the level comes from `RUST_LOG` (default `info`). Colours
/// only on a terminal: a log file or journald gets plain text.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging already initialised: {error}");
    }
}

/// The Prometheus text of a worker's metrics.
pub fn render_worker_metrics(metrics: &WorkerMetrics) -> String {
    let mut text = String::new();
    metrics.render(&mut text);
    text
}
