//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask ci`: what CI runs: format check, clippy with `-D warnings`, every test on
//!   both stores and both blob backends, and the embedding example. Services must be up
//!   (`.ci/run` starts them); a missing one fails the run, it never skips a suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod tidy;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        _ => {
            eprintln!("usage: cargo xtask ci");
            std::process::exit(2);
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn run(mut command: Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn ci() -> Result<()> {
    // The S3 tests start moto themselves; make sure it is installed.
    let moto = Command::new("bash")
        .arg(root().join("scripts/install-moto.sh"))
        .output()
        .context("running scripts/install-moto.sh")?;
    if !moto.status.success() {
        bail!("installing moto failed:\n{}", String::from_utf8_lossy(&moto.stderr));
    }
    let moto_server = String::from_utf8(moto.stdout)?.trim().to_owned();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]);
    run(clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--all-features"]).env("FOLIO_MOTO_SERVER", &moto_server);
    run(test)?;
    Ok(())
}
