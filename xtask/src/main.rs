//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask ci`: what CI runs (`ci.rs`): the supply-chain check (`cargo deny`:
//!   licenses, bans and sources of `deny.toml`), format check, clippy with `-D warnings`,
//!   every test on both stores and both blob backends, the embedding example, and the
//!   library crates' docs (`-D warnings`) and packages. Services must be up (`.ci/run`
//!   starts them); a missing one fails the run, it never skips a suite.
//! - `cargo xtask package`: the library crates' docs, packages, and a build of each from
//!   its package (`package.rs`).
//! - `cargo xtask bench ...` and `cargo xtask demo`: run the `bench` crate (`xtask/bench`),
//!   in release and debug mode. This crate depends on nothing of the workspace, so it builds
//!   in seconds on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod ci;
mod package;
mod tidy;

const USAGE: &str = "usage: cargo xtask ci
       cargo xtask bench jobs --store postgres|sqlite [--jobs N] [--concurrency C]
       cargo xtask bench ocr [--pages N] [--parallelism P] [--pdf true]
       cargo xtask bench api [--connections C] [--seconds S] [--max-requests N]
       cargo xtask bench book [--pages N] [--pdf | --photos] [--parallelism P] [--dir DIR]
       cargo xtask bench guidelines [--pages N]
       cargo xtask bench extraction-quality [--seed S] [--books B] [--chapters C] [--pages-per-chapter P] [--parallelism N] [--save-ocr FILE] [--ocr-from FILE]
       cargo xtask bench grid   (the dashboard's 1,000-page grid in headless Chromium: usable within 2 s)
       cargo xtask bench recovery [--pages N] [--stale-after D] [--heartbeat-interval D] [--second at-kill|standby]
       cargo xtask demo [--url URL] [--pages N]
       cargo xtask package   (the library crates' docs, packages, and a build of each from its package)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("package") => package::run(None),
        Some("bench") if args.get(1).is_some_and(|name| name == "grid") => bench_grid(),
        // Benchmarks always run in release mode.
        Some("bench") if args.len() > 1 => run_bench(&["--release"], &args[1..]),
        Some("demo") => run_bench(&[], &args),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// Runs the `bench` crate's binary with `args`.
fn run_bench(profile: &[&str], args: &[String]) -> Result<()> {
    let mut bench = cargo();
    bench
        .args(["run", "--quiet", "--package", "bench"])
        .args(profile)
        .arg("--")
        .args(args);
    exec(bench)
}

/// The dashboard's 1,000-page grid, timed: its browser test, alone, with the 2 s budget
/// for "usable" (the tiles in view showing their previews) that a test run does not check.
fn bench_grid() -> Result<()> {
    let mut test = cargo();
    test.args([
        "test",
        "--package",
        "api",
        "--test",
        "it",
        "--",
        "--exact",
        "dashboard::a_1000_page_book_grid_shows_previews_in_view_and_scrolls_top_to_bottom_in_under_20_mb",
        "--nocapture",
    ])
    .env("FOLIO_GRID_USABLE_WITHIN_MS", "2000");
    exec(test)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn exec(command: Command) -> Result<()> {
    exec_to(command, None)
}

/// Runs `command` to its end with its output into `log` (the terminal's when `None`); an
/// error unless it succeeds.
fn exec_to(mut command: Command, log: Option<&std::fs::File>) -> Result<()> {
    match log {
        Some(log) => {
            use std::io::Write as _;
            writeln!(&mut &*log, "$ {command:?}")?;
            command.stdout(log.try_clone()?).stderr(log.try_clone()?);
        }
        None => eprintln!("$ {command:?}"),
    }
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
