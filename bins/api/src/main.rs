//! `api`: Folio's HTTP API; `--with-worker` runs the jobs in the same process. Flags and
//! wiring only: everything else lives in the library (`api::app`, `api::server`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = api::server::Cli::parse();
    if let Err(error) = cli.check_listen() {
        eprintln!("api: {error}");
        return ExitCode::from(2);
    }
    app::telemetry::init_logging(cli.common.log_format);
    match api::server::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api: {error:#}");
            ExitCode::FAILURE
        }
    }
}
