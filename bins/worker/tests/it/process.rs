//! The processes of this suite's tests: a binary run with its stderr in a log file and
//! killed when dropped, and the `api` binary built beside this package's `worker`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running binary; killed when dropped.
pub(crate) struct Process {
    pub(crate) name: String,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` (with `RUST_LOG=info` unless it sets one) with its stderr in
    /// `dir/NAME.log`.
    pub(crate) fn spawn(mut command: Command, name: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
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

    /// Its log so far, headed by its name.
    pub(crate) fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.name,
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// How it ended, or `None` while it runs.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address it logged as `fields.address` in its first JSON log line that has one
    /// (`--log-format json`): the `api`'s listening address, the worker's metrics address.
    pub(crate) fn logged_address(&self) -> Option<String> {
        fs::read_to_string(&self.log)
            .ok()?
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

/// Everyone's logs, for a failure message.
pub(crate) fn logs(processes: &[Process]) -> String {
    processes
        .iter()
        .map(Process::log)
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
