//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask ci`: what CI runs: the supply-chain check (`cargo deny`: licenses, bans
//!   and sources of `deny.toml`), format check, clippy with `-D warnings`, every test on
//!   both stores and both blob backends, the embedding example, and the library crates'
//!   docs (`-D warnings`) and packages. Services must be up
//!   (`.ci/run` starts them); a missing one fails the run, it never skips a suite.
//! - `cargo xtask bench jobs|ocr|api|guidelines|extraction-quality|recovery ...`: benchmarks
//!   (`bench.rs`, `bench_api.rs`, `bench_guidelines.rs`, `bench_quality.rs`: generated books
//!   with known truth through rendering, OCR, extraction and finalize, `bench_recovery.rs`:
//!   a worker process SIGKILLed mid-book and a second one that takes over).
//! - `cargo xtask demo`: a book from the sample pages through OCR, guidelines and finalize
//!   against a running API.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod bench_api;
mod bench_guidelines;
mod bench_quality;
mod bench_recovery;
mod demo;
mod tidy;

const USAGE: &str = "usage: cargo xtask ci
       cargo xtask bench jobs --store postgres|sqlite [--jobs N] [--concurrency C]
       cargo xtask bench ocr [--pages N] [--parallelism P] [--pdf true]
       cargo xtask bench api [--connections C] [--seconds S] [--max-requests N]
       cargo xtask bench guidelines [--pages N]
       cargo xtask bench extraction-quality [--seed S] [--books B] [--chapters C] [--pages-per-chapter P] [--parallelism N] [--save-ocr FILE] [--ocr-from FILE]
       cargo xtask bench recovery [--pages N] [--stale-after D] [--heartbeat-interval D] [--second at-kill|standby]
       cargo xtask demo [--url URL] [--pages N]
       cargo xtask package   (the library crates' docs, packages, and a build of each from its package)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("package") => package_libraries(),
        Some("bench") => bench(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// Benchmarks run in release mode: a debug build re-runs itself with `--release`.
fn bench(args: &[String]) -> Result<()> {
    if cfg!(debug_assertions) {
        let mut release = cargo();
        release
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "xtask",
                "--",
                "bench",
            ])
            .args(args);
        return run(release);
    }
    let flags = bench::Flags::parse(args.get(1..).unwrap_or_default())?;
    let runtime = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("jobs") => runtime.block_on(bench::jobs(&flags)),
        Some("ocr") => runtime.block_on(bench::ocr(&flags)),
        Some("api") => runtime.block_on(bench_api::run(&flags)),
        Some("guidelines") => runtime.block_on(bench_guidelines::run(&flags)),
        Some("extraction-quality") => runtime.block_on(bench_quality::run(&flags)),
        Some("recovery") => runtime.block_on(bench_recovery::run(&flags)),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
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

fn run(mut command: Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Runs an install script from `scripts/` and returns what it printed (a tool's path).
fn install(script: &str) -> Result<String> {
    install_with(script, &[])
}

/// Runs an install script from `scripts/` with arguments (e.g. the tesseract language packs
/// the tests read: `deu`) and returns what it printed.
fn install_with(script: &str, args: &[&str]) -> Result<String> {
    let output = Command::new("bash")
        .arg(root().join("scripts").join(script))
        .args(args)
        .output()
        .with_context(|| format!("running scripts/{script}"))?;
    if !output.status.success() {
        bail!(
            "scripts/{script} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn ci() -> Result<()> {
    // Tools the tests run for real, installed when missing: the tesseract CLI (OCR tests),
    // poppler-utils and qpdf (PDF uploads, and their tests' encrypted PDFs), ImageMagick
    // and the DejaVu fonts (the extraction quality test's rendered pages), moto (the S3
    // tests start their own server), an OpenAPI validator (API tests),
    // schemathesis (the API's schema fuzzing test), headless Chromium with its WebDriver
    // (dashboard tests), systemd-analyze (the units' test), iproute2 and runuser (the
    // many-host tests' network namespaces and their Postgres).
    eprintln!("{}", install_with("install-tesseract.sh", &["deu"])?);
    eprintln!("{}", install("install-poppler.sh")?);
    eprintln!("{}", install("install-imagemagick.sh")?);
    eprintln!("{}", install("install-host-tools.sh")?);
    let moto_server = install("install-moto.sh")?;
    let openapi_validator = install("install-openapi-validator.sh")?;
    let schemathesis = install("install-schemathesis.sh")?;
    let chromedriver = install("install-chromium.sh")?;
    // cargo-deny, built once (several minutes) into ~/.cache/folio/cargo-deny.
    let cargo_deny = install("install-cargo-deny.sh")?;

    // Supply chain: deny.toml's licenses, bans and sources. Not advisories: they need the
    // RustSec database, which cargo-deny clones from GitHub, and CI cannot reach GitHub
    // (with `--offline` cargo-deny reads only an existing clone, and CI has none); deny.toml
    // says the same. Where GitHub is reachable: `cargo deny check advisories`.
    let mut deny = Command::new(&cargo_deny);
    deny.current_dir(root())
        .args(["deny", "check", "bans", "licenses", "sources"]);
    run(deny)?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--all-features"])
        .env("FOLIO_MOTO_SERVER", &moto_server)
        .env("FOLIO_OPENAPI_VALIDATOR", &openapi_validator)
        .env("FOLIO_SCHEMATHESIS", &schemathesis)
        .env("FOLIO_CHROMEDRIVER", &chromedriver);
    run(test)?;

    let mut example = cargo();
    example.args([
        "run",
        "--quiet",
        "--package",
        "jobs-core",
        "--example",
        "embedded",
    ]);
    run(example)?;
    package_libraries()
}

/// The crates other services embed: their docs build without a warning and each packages
/// (and builds from its package) on its own.
const LIBRARIES: [&str; 4] = ["jobs-core", "jobs-postgres", "jobs-sqlite", "blob-store"];

fn package_libraries() -> Result<()> {
    let mut doc = cargo();
    doc.args(["doc", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    for library in LIBRARIES {
        doc.args(["--package", library]);
    }
    run(doc)?;

    // `--allow-dirty`: CI's clone is clean; locally the check should not need a commit.
    // `--no-verify`: cargo's own verification builds each package alone, resolving and
    // compiling its dependencies anew (sqlx's macros four times: 12 of a fresh CI run's
    // minutes); `check_packages` does the same check in one workspace instead.
    let mut package = cargo();
    package.args(["package", "--allow-dirty", "--no-verify"]);
    for library in LIBRARIES {
        package.args(["--package", library]);
    }
    run(package)?;
    check_packages()
}

/// Each packaged library compiles from its package alone: the `.crate` files unpacked
/// into one workspace (under the target folder) whose `[patch.crates-io]` stands in for
/// the libraries as they would be published, then `cargo check` of each package on its
/// own, so each gets only its own features. The dependencies' builds are shared between
/// the four, and between runs.
fn check_packages() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let packages = target.join("package");
    let workspace = target.join("package-check");
    if workspace.exists() {
        std::fs::remove_dir_all(&workspace)?;
    }
    std::fs::create_dir_all(&workspace)?;
    let mut members = Vec::new();
    let mut patches = String::new();
    for library in LIBRARIES {
        let version = package_version(library)?;
        let name = format!("{library}-{version}");
        let mut unpack = Command::new("tar");
        unpack
            .arg("-xzf")
            .arg(packages.join(format!("{name}.crate")))
            .arg("-C")
            .arg(&workspace);
        run(unpack)?;
        members.push(format!("{name:?}"));
        patches.push_str(&format!("{library} = {{ path = {name:?} }}\n"));
    }
    std::fs::write(
        workspace.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [{}]\n\n[patch.crates-io]\n{patches}",
            members.join(", ")
        ),
    )?;
    // The workspace's versions of every dependency, so the check builds what CI built.
    std::fs::copy(root().join("Cargo.lock"), workspace.join("Cargo.lock"))?;
    for library in LIBRARIES {
        let mut check = cargo();
        check
            .arg("check")
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .args(["--package", library]);
        run(check)?;
    }
    Ok(())
}

/// A workspace crate's version, from its manifest.
fn package_version(library: &str) -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("crates").join(library).join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|line| {
            let value = line
                .strip_prefix("version")?
                .trim_start()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .with_context(|| format!("no version in {library}'s Cargo.toml"))
}
