//! `api`: Folio's HTTP API; `--with-worker` runs the jobs in the same process. Flags and
//! wiring only: everything else lives in the library (`api::app`, `api::server`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = api::server::Cli::parse();
    if let Err(error) = cli.load_token().and_then(|()| cli.check_listen()) {
        eprintln!("api: {error}");
        return ExitCode::from(2);
    }
    let telemetry = match app::telemetry::init_logging(&cli.common, "folio-api") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("api: {error:#}");
            return ExitCode::from(2);
        }
    };
    let ran = api::server::run(cli).await;
    telemetry.shutdown().await;
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api: {error:#}");
            ExitCode::FAILURE
        }
    }
}
