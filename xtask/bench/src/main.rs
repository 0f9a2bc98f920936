//! The benchmarks and the demo, run through `cargo xtask bench ...` and `cargo xtask demo`
//! (which build this crate in release and debug mode).
//!
//! - `jobs`: no-op jobs through the job stores (`jobs.rs`);
//! - `ocr`: the `ocr` job against bare tesseract (`ocr.rs`);
//! - `api`: HTTP load on the api (`api.rs`);
//! - `book`: a whole book uploaded through the api, its chain run by a worker process, against
//!   bare pdftoppm and tesseract (`book.rs`);
//! - `guidelines`: the `guidelines` and `finalize` jobs (`guidelines.rs`);
//! - `extraction-quality`: generated books with known truth through rendering, OCR,
//!   extraction and finalize (`quality.rs`);
//! - `recovery`: a worker process SIGKILLed mid-book and a second one that takes over
//!   (`recovery.rs`);
//! - `demo`: a book from the sample pages through the whole chain against a running API
//!   (`demo.rs`).
//!
//! Each benchmark prints one JSON object per result on stdout and a Markdown table on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod api;
mod book;
mod demo;
mod flags;
mod guidelines;
mod jobs;
mod ocr;
mod pickup;
mod quality;
mod recovery;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first().map(String::as_str) else {
        usage()
    };
    if name == "demo" {
        return demo::run(&args[1..]);
    }
    let flags = flags::Flags::parse(&args[1..])?;
    let runtime = tokio::runtime::Runtime::new()?;
    match name {
        "jobs" => runtime.block_on(jobs::run(&flags)),
        "ocr" => runtime.block_on(ocr::run(&flags)),
        "api" => runtime.block_on(api::run(&flags)),
        "book" => runtime.block_on(book::run(&flags)),
        "guidelines" => runtime.block_on(guidelines::run(&flags)),
        "extraction-quality" => runtime.block_on(quality::run(&flags)),
        "recovery" => runtime.block_on(recovery::run(&flags)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: cargo xtask bench jobs|ocr|api|book|guidelines|extraction-quality|recovery [--flag value ...]
       cargo xtask demo [--url URL] [--pages N]
(`cargo xtask` prints every flag)");
    std::process::exit(2);
}

/// The workspace's root folder.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask/bench sits in the workspace")
        .to_owned()
}

/// `cargo`, run in the workspace.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Builds the release binaries of `packages` (each package's binary of its own name); their
/// paths, in order.
fn build_release(packages: &[&str]) -> Result<Vec<PathBuf>> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--message-format",
        "json-render-diagnostics",
    ]);
    for package in packages {
        build.args(["--package", package, "--bin", package]);
    }
    let output = build
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("building {packages:?} failed: {}", output.status);
    }
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    packages
        .iter()
        .map(|package| {
            messages
                .iter()
                .filter(|message| {
                    message["reason"] == "compiler-artifact"
                        && message["target"]["name"] == *package
                })
                .find_map(|message| message["executable"].as_str().map(PathBuf::from))
                .with_context(|| format!("cargo build named no {package} executable"))
        })
        .collect()
}
