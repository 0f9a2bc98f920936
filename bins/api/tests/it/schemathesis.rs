//! Schema fuzzing (issue 14, SPEC section 5: "a schema fuzzer finds no request the document
//! allows that the server rejects"): schemathesis, pinned, runs every one of its checks
//! against `/openapi.json` of the real `api` binary (SQLite and `file://` storage in a temp
//! dir, a bearer token) and must end with 0 failures and 0 errors.
//!
//! Schemathesis is installed by `scripts/install-schemathesis.sh`; `cargo xtask ci` passes its
//! path in `FOLIO_SCHEMATHESIS`. Outside CI the test also finds it at the script's default
//! venv; without it the test fails with the install hint, and under CI (`CI` set) it fails
//! when the variable is missing. It never skips.
//!
//! The run is bounded and repeatable: a new random seed each run (printed; set
//! `FOLIO_SCHEMATHESIS_SEED` to run one again), [`MAX_EXAMPLES`] per operation, one worker,
//! no example database. Its settings besides the command line are in
//! `tests/schemathesis/`: `schemathesis.toml` (every check on, and what is per operation, each
//! with its reason) and `hooks.py` (real images for the upload's `files`, which the document
//! names by media type). Its summary lines are printed even when the test passes.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::eventually;

/// The version `scripts/install-schemathesis.sh` pins. A new version may add or change
/// checks: raise both together, on purpose.
const VERSION: &str = "4.32.5";

/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "100";

/// The seed of this run: `FOLIO_SCHEMATHESIS_SEED`, else a new one from the clock, so that
/// each run explores other cases; printed either way.
fn seed() -> String {
    std::env::var("FOLIO_SCHEMATHESIS_SEED")
        .ok()
        .filter(|seed| !seed.is_empty())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            (nanos ^ std::process::id()).to_string()
        })
}

const TOKEN: &str = "schemathesis-token";

/// A run takes under a minute on 2 cores; this bounds a hung one.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

const INSTALL_HINT: &str = "run scripts/install-schemathesis.sh (it prints the path; export it \
     as FOLIO_SCHEMATHESIS), or `cargo xtask ci`, which does both";

/// The schemathesis binary: `FOLIO_SCHEMATHESIS`, else (outside CI) the script's default venv.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("FOLIO_SCHEMATHESIS").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FOLIO_SCHEMATHESIS={} is not a file: {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "FOLIO_SCHEMATHESIS is not set under CI: the schema fuzzing test must run there; \
         {INSTALL_HINT}"
    );
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let path = PathBuf::from(home).join(format!(
        ".cache/folio/schemathesis-{VERSION}-venv/bin/schemathesis"
    ));
    assert!(
        path.is_file(),
        "this test needs schemathesis {VERSION} at {}: {INSTALL_HINT}",
        path.display()
    );
    path
}

/// The `api` binary serving on a free loopback port; killed on drop.
struct Api {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_api"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api-token",
                TOKEN,
                "--database-url",
                &format!("sqlite://{}/folio.db", dir.path().display()),
                "--storage",
                &format!("file://{}/objects", dir.path().display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let api = Self {
            child,
            port,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let url = api.url("/healthz");
        eventually(Duration::from_secs(60), "the api to answer", || {
            let request = client.get(&url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        api
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

/// Lines of `output` that start (after decoration) with one of `prefixes`, or the closing
/// `=== ... ===` line.
fn summary_lines(output: &str) -> Vec<&str> {
    let lines: Vec<&str> = output.lines().collect();
    let mut summary: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| {
            let line = line.trim();
            line.starts_with("Selected:")
                || line.starts_with("Tested:")
                || line.contains(" generated, ")
                || line.starts_with("Seed:")
        })
        .collect();
    if let Some(last) = lines.iter().rev().find(|line| line.starts_with('=')) {
        summary.push(last);
    }
    summary
}

fn version(binary: &Path) -> String {
    let output = Command::new(binary).arg("--version").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_with_every_check() {
    let binary = schemathesis();
    let version = version(&binary);
    assert!(
        version.contains(VERSION),
        "{} is `{version}`, not schemathesis {VERSION}: {INSTALL_HINT}",
        binary.display()
    );
    let api = Api::start().await;
    let settings = settings_dir();
    let seed = seed();
    eprintln!("schemathesis: seed {seed} (FOLIO_SCHEMATHESIS_SEED={seed} runs it again)");
    // Its working directory is a temp dir: nothing it writes lands in the checkout.
    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new(&binary);
    command
        .current_dir(work.path())
        .env("SCHEMATHESIS_HOOKS", settings.join("hooks.py"))
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .args([
            "run",
            &api.url("/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--seed",
            &seed,
            "--max-examples",
            MAX_EXAMPLES,
            // One worker: the run is repeatable, and CPython 3.11 before 3.11.8 can fail
            // `ast.parse` in a thread (gh-106905), which Hypothesis calls to describe filters.
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            // Hypothesis's own check that generating data is fast enough: on a machine
            // busy with the other tests it says nothing about the API.
            "--suppress-health-check",
            "too_slow",
            "--no-color",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id().to_string();
    let output = match tokio::time::timeout(
        RUN_DEADLINE,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    {
        Ok(output) => output.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("schemathesis ran longer than {RUN_DEADLINE:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = summary_lines(&stdout);
    // Straight to the process's stderr, past the test harness's capture, so the summary is
    // in the output of a passing run too.
    let mut visible = std::io::stderr().lock();
    for line in &summary {
        let _ = writeln!(visible, "schemathesis: {}", line.trim());
    }
    drop(visible);
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Every documented operation but `GET /openapi.json`: schemathesis leaves out the
    // operation that serves the document it reads (the openapi tests cover that one).
    let documented = api::operations(&api::openapi())
        .iter()
        .filter(|(method, path)| (method.as_str(), path.as_str()) != ("get", "/openapi.json"))
        .count();
    let tested = summary
        .iter()
        .find_map(|line| line.trim().strip_prefix("Tested:"))
        .and_then(|count| count.trim().parse::<usize>().ok());
    assert_eq!(
        tested,
        Some(documented),
        "schemathesis must test every documented operation:\n{stdout}"
    );
    let cases = summary
        .iter()
        .find(|line| line.contains(" generated, "))
        .unwrap_or_else(|| panic!("no test case summary:\n{stdout}"));
    assert!(
        cases.contains(" passed") && !cases.contains("fail") && !cases.contains("error"),
        "{cases}\n{stdout}"
    );
}
