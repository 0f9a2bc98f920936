//! What the package's process tests share: the process helper, a counting `tesseract`, and
//! small helpers for their figures (polling with a deadline is `jobs_core::testing`). Each test binary includes it
//! (`mod support;`, in `it/main.rs` by its path).

// Each test binary uses part of this module: the rest would warn as unused there.
#![allow(dead_code)]

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use jobs_core::Job;

/// A running binary; killed when dropped.
pub(crate) struct Process {
    pub(crate) name: String,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` (with `RUST_LOG=info` unless it sets one) with its stderr appended to
    /// `dir/NAME.log`: a process started again under the same name keeps the earlier log.
    pub(crate) fn spawn(mut command: Command, name: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|error| panic!("{}: {error}", log.display()));
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("start {name} ({command:?}): {error}"));
        Self {
            name: name.to_owned(),
            child: Mutex::new(child),
            log,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log so far, headed by its name.
    pub(crate) fn labelled_log(&self) -> String {
        format!("--- {} ---\n{}", self.name, self.log())
    }

    /// How it ended, or `None` while it runs.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// Panics, with its log, unless it still runs.
    pub(crate) fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            panic!("{} exited with {status}\n{}", self.name, self.log());
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`, ...).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {} failed", self.name);
    }

    /// Waits up to `limit` for it to end: its exit status, or `None` if it still runs.
    pub(crate) async fn wait_for_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(jobs_core::testing::POLL_INTERVAL).await;
        }
    }

    /// SIGTERM, then its exit status; panics when it still runs after `limit`.
    pub(crate) async fn terminate(&self, limit: Duration) -> ExitStatus {
        self.signal("-TERM");
        self.wait_for_exit(limit).await.unwrap_or_else(|| {
            panic!(
                "{} did not stop within {limit:?} of SIGTERM\n{}",
                self.name,
                self.log()
            )
        })
    }

    /// SIGKILL, and waits for it to end.
    pub(crate) fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The address it logged as `fields.address` in its first JSON log line that has one
    /// (`--log-format json`): the `api`'s listening address, the worker's metrics address.
    pub(crate) fn logged_address(&self) -> Option<String> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|line| Some(line["fields"]["address"].as_str()?.to_owned()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Everyone's logs, each headed by its name, for a failure message.
pub(crate) fn logs<P: Borrow<Process>>(processes: &[P]) -> String {
    processes
        .iter()
        .map(|process| process.borrow().labelled_log())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `worker` binary cargo built for this test.
pub(crate) fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_worker"))
}

/// The `api` binary, built (once per test process) beside this package's `worker`, in the
/// same target folder and profile: cargo gives a test the binaries of its own package only,
/// and one left by an earlier build may be stale.
pub(crate) fn api_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let worker = worker_binary();
            let profile_dir = worker.parent().expect("the profile folder");
            let target_dir = profile_dir.parent().expect("the target folder");
            let mut build = Command::new(env!("CARGO"));
            build
                .args(["build", "--quiet", "--package", "api", "--bin", "api"])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "building the api binary failed: {status}");
            profile_dir.join("api")
        })
        .clone()
}

/// The pages an `ocr` job's checkpoint holds as done.
pub(crate) fn checkpointed_pages(job: &Job) -> usize {
    job.checkpoint
        .as_ref()
        .and_then(|checkpoint| checkpoint["done"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// A folder `dir/bin` with a `tesseract` that appends one line per page it reads to
/// `dir/runs.log` (the worker's id from `$FOLIO_WORKER_ID`, `-` when that is not set), then
/// runs the real one: the count of recognitions, redone ones included. Returns the folder
/// (put it first on a worker's `PATH` with [`path_with`]) and the runs file.
pub(crate) fn counting_tesseract(dir: &Path) -> (PathBuf, PathBuf) {
    let real = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|path| path.join("tesseract"))
                .find(|path| path.is_file())
        })
        .expect("tesseract on PATH (scripts/install-tesseract.sh)");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let runs = dir.join("runs.log");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = stdin ]; then echo \"${{FOLIO_WORKER_ID:--}}\" >> '{}'; fi\nexec '{}' \"$@\"\n",
        runs.display(),
        real.display()
    );
    let shim = bin.join("tesseract");
    fs::write(&shim, script).unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    (bin, runs)
}

/// This process's `PATH` with `dir` first.
pub(crate) fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Recognitions so far in a [`counting_tesseract`]'s runs file, per worker id.
pub(crate) fn recognitions(runs: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in fs::read_to_string(runs).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

/// Every worker's recognitions together.
pub(crate) fn total(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().sum()
}

/// A local TCP port free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `value` to two decimals, for a figure.
pub(crate) fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
