//! `cargo xtask ci`: every check of the project, arranged to fit a fresh machine of 2 cores.
//!
//! On a fresh machine the builds are the long pole, and the tests wait on processes,
//! databases and sockets far more than on the CPU. So:
//! 1. The tools the tests run for real are installed in the background (apt and
//!    virtualenvs: network and dpkg, little CPU) while the workspace builds.
//! 2. The workspace builds once, every target, with clippy as the workspace's compiler
//!    wrapper and `-D warnings`: the lints and the test build share one compilation of
//!    every dependency, where `cargo clippy` and then `cargo test` compile each twice
//!    (metadata, then code). `cargo test` later finds everything built.
//! 3. The test binaries run, one lane per two cores (one here: the tests that start
//!    tesseract, workers and servers keep both cores busy, and running two binaries at once
//!    on 2 cores took longer than one after the other), the slowest first; each one's
//!    output is printed whole when it ends, with its time. Beside them, one lane runs in
//!    turn the doctests, the embedding example, cargo-deny (built on a fresh machine) and
//!    the library crates' docs and packages, in the CPU the tests leave idle, and then test
//!    binaries from the quick end of the queue.
//!
//! Every step runs; a failure fails the run at the end, with every failure named.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, exec, root};

/// Test binaries run at once, beside the cargo lane: one per two cores.
fn test_lanes() -> usize {
    (std::thread::available_parallelism().map_or(2, usize::from) / 2).max(1)
}

/// The slowest test binaries on the machine this was measured on (2 cores, fresh), started
/// first when no run of this target folder recorded its own times.
const SLOW_FIRST: [&str; 6] = [
    "worker/hosts",
    "api/it",
    "worker/it",
    "worker/storage_faults",
    "api/memory",
    "blob-store/it",
];

/// Where the recorded test times are kept between runs (in the target folder), to start the
/// slowest binaries first next time.
const TIMES_FILE: &str = "ci-test-times.json";

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    let tools = thread::spawn(install_tools);

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    exec(fmt)?;

    let lint = Lint::new()?;
    let mut build = lint.cargo();
    build.args(["build", "--workspace", "--all-features", "--all-targets"]);
    exec(build)?;
    let built = started.elapsed();

    let tools = tools
        .join()
        .map_err(|_| anyhow::anyhow!("installing the tools panicked"))??;
    let (tests, example) = test_binaries(&lint)?;
    let times = Times::load();
    let mut queue: Vec<Task> = tests
        .into_iter()
        .map(|binary| Task::Test(binary, tools.clone()))
        .collect();
    queue.sort_by(|a, b| times.expected(b).total_cmp(&times.expected(a)));
    let cargo_lane = vec![
        Task::Cargo("doctests", doctests(&lint, &tools)),
        Task::Test(example, tools.clone()),
        Task::Deny,
        Task::Package,
    ];

    let outcomes = run_lanes(queue, cargo_lane);
    times.save(&outcomes);
    eprintln!(
        "\nci: built in {:.0} s, all done in {:.0} s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|outcome| !outcome.passed)
        .map(|outcome| outcome.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Clippy as the compiler wrapper of the workspace's own crates (as `cargo clippy` runs
/// it), so a build is also the lint pass. Every cargo command of the run carries the same
/// wrapper: it is part of the workspace crates' fingerprints, so a command without it
/// would compile them again.
struct Lint {
    driver: PathBuf,
}

impl Lint {
    fn new() -> Result<Self> {
        let output = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .context("running rustc --print sysroot")?;
        let sysroot = String::from_utf8(output.stdout)?;
        let driver = Path::new(sysroot.trim()).join("bin").join("clippy-driver");
        if !driver.is_file() {
            bail!(
                "{} is missing: `rustup component add clippy`",
                driver.display()
            );
        }
        Ok(Self { driver })
    }

    fn cargo(&self) -> Command {
        let mut command = cargo();
        command
            .env("RUSTC_WORKSPACE_WRAPPER", &self.driver)
            // cargo-clippy's encoding of `-- -D warnings`.
            .env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            );
        command
    }
}

/// Paths of the tools the tests run, passed to them as `FOLIO_*` variables.
#[derive(Clone)]
struct Tools {
    env: Vec<(&'static str, String)>,
}

/// Installs what the tests run for real when it is missing: the tesseract CLI (OCR tests),
/// poppler-utils and qpdf (PDF uploads, and their tests' encrypted PDFs), ImageMagick and
/// the DejaVu fonts (the extraction quality test's rendered pages), systemd-analyze (the
/// units' test), iproute2 and runuser (the many-host tests' network namespaces and their
/// Postgres), headless Chromium with its WebDriver (dashboard tests), and in virtualenvs:
/// moto (the S3 tests start their own server), an OpenAPI validator (API tests) and
/// schemathesis (the API's schema fuzzing test). The apt installs take turns (dpkg's
/// lock); the virtualenvs are made beside them.
fn install_tools() -> Result<Tools> {
    let python = thread::spawn(|| -> Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("FOLIO_MOTO_SERVER", install("install-moto.sh", &[])?),
            (
                "FOLIO_OPENAPI_VALIDATOR",
                install("install-openapi-validator.sh", &[])?,
            ),
            (
                "FOLIO_SCHEMATHESIS",
                install("install-schemathesis.sh", &[])?,
            ),
        ])
    });
    eprintln!("{}", install("install-tesseract.sh", &["deu"])?);
    eprintln!("{}", install("install-poppler.sh", &[])?);
    eprintln!("{}", install("install-imagemagick.sh", &[])?);
    eprintln!("{}", install("install-host-tools.sh", &[])?);
    let mut env = vec![("FOLIO_CHROMEDRIVER", install("install-chromium.sh", &[])?)];
    env.extend(
        python
            .join()
            .map_err(|_| anyhow::anyhow!("installing the Python tools panicked"))??,
    );
    Ok(Tools { env })
}

/// Runs an install script from `scripts/` and returns what it printed (a tool's path).
fn install(script: &str, args: &[&str]) -> Result<String> {
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

/// A test binary of the workspace, as `cargo test` would run it.
struct TestBinary {
    /// `package/target`, e.g. `worker/hosts` or `jobs-core/lib`.
    name: String,
    executable: PathBuf,
    package: String,
    manifest_dir: PathBuf,
}

/// The test binaries `cargo test --workspace --all-features` runs (already built), and
/// the embedding example (`jobs-core`'s `embedded`, built by the same command).
fn test_binaries(lint: &Lint) -> Result<(Vec<TestBinary>, TestBinary)> {
    let output = lint
        .cargo()
        .args([
            "test",
            "--workspace",
            "--all-features",
            "--no-run",
            "--message-format",
            "json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("listing the test binaries")?;
    if !output.status.success() {
        bail!("cargo test --no-run failed with {}", output.status);
    }
    let mut binaries = Vec::new();
    let mut example = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let is_test = message["profile"]["test"].as_bool() == Some(true);
        let is_example =
            message["target"]["kind"][0] == "example" && message["target"]["name"] == "embedded";
        if !is_test && !is_example {
            continue;
        }
        let manifest = PathBuf::from(message["manifest_path"].as_str().unwrap_or_default());
        let package = message["package_id"]
            .as_str()
            .and_then(package_name)
            .context("a test binary without its package")?;
        let target = &message["target"];
        let kind = target["kind"][0].as_str().unwrap_or_default();
        let target_name = target["name"].as_str().unwrap_or_default();
        let name = match kind {
            "lib" => format!("{package}/lib"),
            "bin" => format!("{package}/bin {target_name}"),
            "example" => format!("{package}/example {target_name}"),
            _ => format!("{package}/{target_name}"),
        };
        let binary = TestBinary {
            name,
            executable: executable.into(),
            package,
            manifest_dir: manifest.parent().context("a manifest's folder")?.to_owned(),
        };
        if is_test {
            binaries.push(binary);
        } else {
            example = Some(binary);
        }
    }
    if binaries.is_empty() {
        bail!("cargo test --no-run listed no test binary");
    }
    let example = example.context("cargo test --no-run built no `embedded` example")?;
    Ok((binaries, example))
}

/// The package's name from a package id: `path+file:///.../books#0.0.0` or
/// `path+file:///.../xtask/bench#bench@0.0.0` or `registry+...#name@1.0.0`.
fn package_name(id: &str) -> Option<String> {
    let (location, fragment) = id.rsplit_once('#')?;
    Some(match fragment.split_once('@') {
        Some((name, _)) => name.to_owned(),
        // Only a version: the name is the folder's.
        None => location.rsplit('/').next()?.to_owned(),
    })
}

fn doctests(lint: &Lint, tools: &Tools) -> Command {
    let mut command = lint.cargo();
    command.args(["test", "--workspace", "--all-features", "--doc"]);
    for (name, value) in &tools.env {
        command.env(name, value);
    }
    command
}

enum Task {
    Test(TestBinary, Tools),
    Cargo(&'static str, Command),
    /// cargo-deny: deny.toml's licenses, bans and sources. Not advisories: they need the
    /// RustSec database, which cargo-deny clones from GitHub, and CI cannot reach GitHub
    /// (with `--offline` cargo-deny reads only an existing clone, and CI has none); deny.toml
    /// says the same. Where GitHub is reachable: `cargo deny check advisories`.
    Deny,
    /// The library crates' docs and packages (`package.rs`), run here: the xtask binary
    /// on disk is the one the build replaced.
    Package,
}

impl Task {
    fn name(&self) -> String {
        match self {
            Task::Test(binary, _) => binary.name.clone(),
            Task::Cargo(name, _) => (*name).to_owned(),
            Task::Deny => "cargo deny".to_owned(),
            Task::Package => "docs and packages".to_owned(),
        }
    }

    /// Runs the task with its output into `log`.
    fn run(self, log: &Path) -> Result<bool> {
        let output = fs::File::create(log)?;
        if let Task::Package = self {
            return Ok(crate::package::run(Some(&output)).is_ok());
        }
        let mut command = match self {
            Task::Test(binary, tools) => {
                let mut command = Command::new(&binary.executable);
                // What `cargo test` sets for a test binary it runs.
                command
                    .current_dir(&binary.manifest_dir)
                    .env(
                        "CARGO",
                        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
                    )
                    .env("CARGO_MANIFEST_DIR", &binary.manifest_dir)
                    .env("CARGO_PKG_NAME", &binary.package);
                for (name, value) in &tools.env {
                    command.env(name, value);
                }
                command
            }
            Task::Cargo(_, command) => command,
            Task::Deny => {
                let cargo_deny = install("install-cargo-deny.sh", &[])?;
                let mut command = Command::new(cargo_deny);
                command
                    .current_dir(root())
                    .args(["deny", "check", "bans", "licenses", "sources"]);
                command
            }
            Task::Package => unreachable!("run above"),
        };
        let status = command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .status()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(status.success())
    }
}

struct Outcome {
    name: String,
    passed: bool,
    took: Duration,
}

/// Runs the test binaries [`test_lanes`] at a time and the cargo lane's tasks one after
/// another beside them (then quick test binaries); prints each task's output when it ends.
fn run_lanes(tests: Vec<Task>, cargo_lane: Vec<Task>) -> Vec<Outcome> {
    let logs = target_dir().join("ci-logs");
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs).expect("the target folder is writable");
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let print = Arc::new(Mutex::new(()));
    let run_queue = |next: Box<dyn Fn() -> Option<Task> + Send>| {
        let outcomes = outcomes.clone();
        let print = print.clone();
        let logs = logs.clone();
        move || {
            while let Some(task) = next() {
                let name = task.name();
                let log = logs.join(format!("{}.log", name.replace(['/', ' '], "-")));
                let started = Instant::now();
                let passed = match task.run(&log) {
                    Ok(passed) => passed,
                    Err(error) => {
                        let _ = fs::write(&log, format!("{error:#}\n"));
                        false
                    }
                };
                let took = started.elapsed();
                let _guard = print.lock().unwrap();
                let text = fs::read_to_string(&log).unwrap_or_default();
                eprintln!(
                    "\n==== {} {name} ({:.1} s) ====\n{}",
                    if passed { "ok" } else { "FAILED" },
                    took.as_secs_f64(),
                    text.trim_end()
                );
                outcomes
                    .lock()
                    .unwrap()
                    .push(Outcome { name, passed, took });
            }
        }
    };
    let tests = Arc::new(Mutex::new(VecDeque::from(tests)));
    let cargo_lane = Mutex::new(VecDeque::from(cargo_lane));
    // Its own tasks done, the cargo lane takes test binaries from the quick end of the
    // queue, while the test lanes work down from the slow end.
    let quick_tests = tests.clone();
    let mut lanes = vec![thread::spawn(run_queue(Box::new(move || {
        let own = cargo_lane.lock().unwrap().pop_front();
        own.or_else(|| quick_tests.lock().unwrap().pop_back())
    })))];
    for _ in 0..test_lanes() {
        let tests = tests.clone();
        lanes.push(thread::spawn(run_queue(Box::new(move || {
            tests.lock().unwrap().pop_front()
        }))));
    }
    for lane in lanes {
        lane.join().expect("a lane panicked");
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    outcomes.sort_by_key(|outcome| std::cmp::Reverse(outcome.took));
    eprintln!("\n==== times ====");
    for outcome in &outcomes {
        eprintln!(
            "{:>7.1} s  {}  {}",
            outcome.took.as_secs_f64(),
            if outcome.passed { "ok    " } else { "FAILED" },
            outcome.name
        );
    }
    outcomes
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The last run's time of each task, to start the slowest first.
struct Times(BTreeMap<String, f64>);

impl Times {
    fn load() -> Self {
        let recorded = fs::read(target_dir().join(TIMES_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self(recorded)
    }

    /// A binary never timed goes by [`SLOW_FIRST`], then integration tests before unit
    /// tests, which are quick.
    fn expected(&self, task: &Task) -> f64 {
        let name = task.name();
        self.0.get(&name).copied().unwrap_or_else(|| {
            if let Some(rank) = SLOW_FIRST.iter().position(|slow| *slow == name) {
                100_000.0 - rank as f64
            } else if name.ends_with("/lib") || name.contains("/bin ") {
                1_000.0
            } else {
                10_000.0
            }
        })
    }

    fn save(mut self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            self.0
                .insert(outcome.name.clone(), outcome.took.as_secs_f64());
        }
        if let Ok(json) = serde_json::to_vec_pretty(&self.0) {
            let _ = fs::write(target_dir().join(TIMES_FILE), json);
        }
    }
}
