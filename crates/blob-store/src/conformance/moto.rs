//! A local S3-compatible server for tests: moto's server mode, started on demand.
//!
//! Resolution, in order:
//! 1. `FOLIO_TEST_S3_ENDPOINT` set: use that server (nothing is started).
//! 2. `FOLIO_MOTO_SERVER` set: start that `moto_server` binary.
//! 3. `moto_server` on `PATH`.
//!
//! Otherwise tests panic with how to install it (`scripts/install-moto.sh`): the S3 suite
//! fails, never skips, when its server is missing.
//!
//! One server per test process is started lazily on a free loopback port and shared by
//! every test (each test uses its own bucket). It runs under a small `sh` watchdog that
//! kills it when its stdin closes, so the server dies with the test process even when
//! the process is killed; dropping a [`MotoServer`] stops it at once.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::S3Credentials;

/// How long a starting server may take to answer (Python imports are slow on 2 cores).
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// Attempts with fresh ports, in case another process takes the probed port first.
const START_ATTEMPTS: u32 = 3;

/// The dummy credentials moto accepts (and every test S3 server is configured with).
pub fn test_credentials() -> S3Credentials {
    S3Credentials {
        access_key_id: std::env::var("FOLIO_TEST_S3_ACCESS_KEY_ID")
            .unwrap_or_else(|_| "folio-test".to_owned()),
        secret_access_key: std::env::var("FOLIO_TEST_S3_SECRET_ACCESS_KEY")
            .unwrap_or_else(|_| "folio-test-secret".to_owned()),
    }
}

/// The S3 endpoint tests talk to, keeping its server alive while held.
#[derive(Debug, Clone)]
pub struct TestEndpoint {
    url: String,
    _server: Option<Arc<MotoServer>>,
}

impl TestEndpoint {
    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The endpoint for S3 tests: `FOLIO_TEST_S3_ENDPOINT`, else the shared moto server.
///
/// # Panics
/// When no endpoint is configured and no `moto_server` can be found or started.
pub fn test_endpoint() -> TestEndpoint {
    if let Ok(url) = std::env::var("FOLIO_TEST_S3_ENDPOINT")
        && !url.is_empty()
    {
        return TestEndpoint { url, _server: None };
    }
    let server = shared_server();
    TestEndpoint {
        url: server.url(),
        _server: Some(server),
    }
}

/// The moto server shared by this test process, started on first use.
///
/// # Panics
/// When `moto_server` cannot be found or does not come up.
pub fn shared_server() -> Arc<MotoServer> {
    static SHARED: Mutex<Option<Arc<MotoServer>>> = Mutex::new(None);
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(server) = shared.as_ref() {
        return Arc::clone(server);
    }
    let server = Arc::new(MotoServer::start(&find_moto_server()));
    *shared = Some(Arc::clone(&server));
    server
}

/// Finds the `moto_server` binary, or panics with install instructions.
pub fn find_moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("FOLIO_MOTO_SERVER").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FOLIO_MOTO_SERVER={} does not exist; run scripts/install-moto.sh, which prints \
             the path to use",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join("moto_server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need an S3-compatible server and found none. Install moto's \
                 server with `scripts/install-moto.sh` (python3 -m venv \
                 ~/.cache/folio/moto-venv && ~/.cache/folio/moto-venv/bin/pip install \
                 \"moto[server]\") and set FOLIO_MOTO_SERVER=~/.cache/folio/moto-venv/bin/moto_server, \
                 put moto_server on PATH, or point FOLIO_TEST_S3_ENDPOINT at a running server"
            )
        })
}

/// A running `moto_server` child process; stopped on drop.
#[derive(Debug)]
pub struct MotoServer {
    address: SocketAddr,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    log_path: PathBuf,
}

impl MotoServer {
    /// Starts `binary` on a free 127.0.0.1 port and waits (polling, with a deadline)
    /// until it answers HTTP.
    ///
    /// # Panics
    /// When the server does not come up.
    pub fn start(binary: &std::path::Path) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(binary) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "moto_server ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n---\n")
        );
    }

    fn try_start(binary: &std::path::Path) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("finding a free port: {error}"))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path =
            std::env::temp_dir().join(format!("folio-moto-{}-{port}.log", std::process::id()));
        let log = File::create(&log_path).map_err(|error| format!("creating log: {error}"))?;
        let log_err = log
            .try_clone()
            .map_err(|error| format!("cloning log: {error}"))?;
        // The watchdog: runs the server and exits with it; a reader kills the server when
        // our end of the watchdog's stdin closes (on drop, or when this process exits
        // however it exits, since the kernel closes the pipe).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                r#"exec 3<&0
                   "$1" -H 127.0.0.1 -p "$2" </dev/null 3<&- &
                   server=$!
                   (while read -r _ <&3; do :; done; kill $server 2>/dev/null) &
                   wait $server"#,
            )
            .arg("folio-moto-watchdog")
            .arg(binary)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| format!("spawning sh for {}: {error}", binary.display()))?;
        let stdin = child.stdin.take();
        let server = Self {
            address,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            log_path,
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if server.answers_http() {
                return Ok(server);
            }
            if let Some(status) = server.exited() {
                return Err(format!(
                    "moto_server exited with {status} on port {port}; log:\n{}",
                    server.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server did not answer on port {port} within {STARTUP_DEADLINE:?}; log:\n{}",
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn answers_http(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address, Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream
            .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        child.try_wait().ok().flatten()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing stdin makes the watchdog kill the server and exit.
        drop(
            self.stdin
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = std::fs::remove_file(&self.log_path);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
