//! Child processes of the tools Folio runs (poppler's PDF tools here, tesseract in the `ocr`
//! crate), each with a memory limit as well as the caller's time limit: a hostile file
//! makes the tool fail, never the machine swap or the OOM killer pick a server process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The memory a tool may allocate when no other limit is configured: 2 GiB, room for a
/// 12000 x 12000 page's bitmap several times over.
pub const DEFAULT_MEMORY_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// A command that runs `program` with at most `memory_limit` bytes of data (`RLIMIT_DATA`:
/// heap and private writable mappings; unlimited when `None`).
///
/// The limit is set by util-linux's `prlimit` (essential on Debian), which then executes
/// the program: setting it in the child between fork and exec would take `pre_exec`, which
/// is unsafe code, and this workspace forbids it. An allocation past the limit fails inside
/// the tool, which then exits with an error or dies of a signal; its caller reports that
/// like any other failure of the tool. A program that cannot be found is run as it is, so
/// that its spawn fails with `NotFound` as it would without a limit.
pub fn command(program: &Path, memory_limit: Option<u64>) -> Command {
    match (memory_limit, executable(program)) {
        (Some(bytes), Some(path)) => {
            let mut command = Command::new("prlimit");
            command.arg(format!("--data={bytes}")).arg("--").arg(path);
            command
        }
        _ => Command::new(program),
    }
}

/// `program`'s executable file: the path itself when it names a folder, else the first
/// match on `PATH`.
fn executable(program: &Path) -> Option<PathBuf> {
    let runnable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return runnable(program).then(|| program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|folder| folder.join(program))
        .find(|path| runnable(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_holds_in_the_child_and_a_missing_program_stays_missing() {
        // `sh` reports its own data limit (ulimit -d, in KiB).
        let output = command(Path::new("sh"), Some(64 * 1024 * 1024))
            .args(["-c", "ulimit -d"])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "65536");

        let unlimited = command(Path::new("sh"), None)
            .args(["-c", "ulimit -d"])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&unlimited.stdout).trim(),
            "unlimited"
        );

        let missing = command(Path::new("no-such-tool-here"), Some(1 << 30))
            .output()
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
