//! [`TesseractEngine`]: the `tesseract` CLI, one process per page.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::error::tail;
use crate::{OcrEngine, OcrError, PageImage};

/// The 8-byte signature every PNG starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// How tesseract runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TesseractConfig {
    /// The program (`tesseract`, found on `PATH`).
    pub program: PathBuf,
    /// Languages, as for `-l` (`eng`, `eng+deu`).
    pub languages: String,
    /// A page taking longer is killed and counts as a retryable failure.
    pub timeout: Duration,
    /// `--psm`, the page segmentation mode; tesseract's default when `None`.
    pub page_segmentation_mode: Option<u8>,
}

impl Default for TesseractConfig {
    fn default() -> Self {
        Self {
            program: PathBuf::from("tesseract"),
            languages: "eng".to_owned(),
            timeout: Duration::from_secs(120),
            page_segmentation_mode: None,
        }
    }
}

/// The `tesseract` CLI as an [`OcrEngine`].
///
/// Each page is one process, `tesseract stdin stdout -l LANG`, with the PNG on standard
/// input and `OMP_THREAD_LIMIT=1` (pages run in parallel instead; multi-threaded tesseract
/// on few cores is several times slower per page). The process is killed on timeout, on
/// cancel, and when the future is dropped. Failures are classified by how the process
/// ended: a non-zero exit status is terminal for the page (it cannot read this image), a
/// signal (OOM killer, crash) and a timeout are retryable, and a missing program fails the
/// whole job.
#[derive(Debug, Clone, Default)]
pub struct TesseractEngine {
    config: TesseractConfig,
}

/// How a tesseract process ended.
enum Ended {
    Exited {
        status: std::io::Result<ExitStatus>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    TimedOut,
    Cancelled,
}

impl TesseractEngine {
    /// An engine with `config`.
    pub fn new(config: TesseractConfig) -> Self {
        Self { config }
    }

    /// Its configuration.
    pub fn config(&self) -> &TesseractConfig {
        &self.config
    }

    /// The command that recognizes one PNG given on standard input, printing its text:
    /// exactly what [`OcrEngine::recognize`] runs (benchmarks run it bare).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.config.program);
        command
            .arg("stdin")
            .arg("stdout")
            .arg("-l")
            .arg(&self.config.languages);
        if let Some(mode) = self.config.page_segmentation_mode {
            command.arg("--psm").arg(mode.to_string());
        }
        command
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// `tesseract --version`'s first line; [`OcrError::EngineUnavailable`] when the program
    /// cannot run. Use it to check the installation at startup.
    pub async fn version(&self) -> Result<String, OcrError> {
        let output = Command::new(&self.config.program)
            .arg("--version")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| self.spawn_error(error))?;
        if !output.status.success() {
            return Err(OcrError::EngineUnavailable {
                reason: format!(
                    "`{} --version` failed with {}",
                    self.config.program.display(),
                    output.status
                ),
                source: None,
            });
        }
        // Old versions print the version on stderr.
        let text = if output.stdout.is_empty() {
            output.stderr
        } else {
            output.stdout
        };
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    fn spawn_error(&self, error: std::io::Error) -> OcrError {
        match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                OcrError::EngineUnavailable {
                    reason: format!(
                        "cannot run `{}` (install Debian's tesseract-ocr package)",
                        self.config.program.display()
                    ),
                    source: Some(error),
                }
            }
            _ => OcrError::Spawn { source: error },
        }
    }
}

#[async_trait]
impl OcrEngine for TesseractEngine {
    fn name(&self) -> &str {
        "tesseract"
    }

    async fn recognize(
        &self,
        page: &PageImage,
        cancel: &CancellationToken,
    ) -> Result<String, OcrError> {
        let png = page.png.clone();
        // tesseract reads a non-image standard input as a list of file names: only ever
        // hand it a PNG.
        if !png.starts_with(PNG_SIGNATURE) {
            return Err(OcrError::InvalidImage {
                reason: "not a PNG (bad signature)".to_owned(),
            });
        }
        if cancel.is_cancelled() {
            return Err(OcrError::Cancelled);
        }
        let mut child = self
            .command()
            .spawn()
            .map_err(|error| self.spawn_error(error))?;
        let ended = tokio::select! {
            ended = run_to_end(&mut child, png) => ended,
            () = tokio::time::sleep(self.config.timeout) => Ended::TimedOut,
            () = cancel.cancelled() => Ended::Cancelled,
        };
        match ended {
            Ended::TimedOut => {
                let _ = child.kill().await;
                Err(OcrError::Timeout {
                    after: self.config.timeout,
                })
            }
            Ended::Cancelled => {
                let _ = child.kill().await;
                Err(OcrError::Cancelled)
            }
            Ended::Exited {
                status,
                stdout,
                stderr,
            } => {
                let status = status.map_err(|source| OcrError::Spawn { source })?;
                let stderr = tail(&String::from_utf8_lossy(&stderr), 500);
                if let Some(signal) = status.signal() {
                    return Err(OcrError::Killed { signal, stderr });
                }
                match status.code() {
                    Some(0) => Ok(clean_text(&String::from_utf8_lossy(&stdout))),
                    Some(code) => Err(OcrError::ExitStatus { code, stderr }),
                    None => Err(OcrError::Killed { signal: 0, stderr }),
                }
            }
        }
    }
}

/// Feeds the PNG, reads both outputs and waits for the exit.
async fn run_to_end(child: &mut Child, png: Bytes) -> Ended {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A process that exits early closes the pipe; its exit status tells why.
            let _ = stdin.write_all(&png).await;
            let _ = stdin.shutdown().await;
        }
    };
    let ((), stdout, stderr) = tokio::join!(feed, read_all(stdout), read_all(stderr));
    let status = child.wait().await;
    Ended::Exited {
        status,
        stdout,
        stderr,
    }
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes).await;
    }
    bytes
}

/// Tesseract's text without the form feed it ends pages with, and without trailing
/// whitespace on lines and at the end.
fn clean_text(raw: &str) -> String {
    let lines: Vec<&str> = raw
        .split('\n')
        .map(|line| line.trim_end_matches(['\x0c', ' ', '\t', '\r']))
        .collect();
    lines.join("\n").trim_matches('\n').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_drops_form_feeds_and_trailing_space() {
        assert_eq!(clean_text("Title \n\nBody\n\x0c"), "Title\n\nBody");
    }

    #[tokio::test]
    async fn a_missing_program_makes_the_engine_unavailable() {
        let engine = TesseractEngine::new(TesseractConfig {
            program: PathBuf::from("/nonexistent/tesseract"),
            ..TesseractConfig::default()
        });
        let error = engine
            .recognize(
                &PageImage {
                    page: 1,
                    png: Bytes::from_static(PNG_SIGNATURE),
                },
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(error.affects_every_page(), "{error:?}");
        assert!(engine.version().await.is_err());
    }

    #[tokio::test]
    async fn bytes_that_are_not_a_png_are_refused_before_running_anything() {
        let engine = TesseractEngine::default();
        let error = engine
            .recognize(
                &PageImage {
                    page: 1,
                    png: Bytes::from_static(b"/etc/passwd\n"),
                },
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, OcrError::InvalidImage { .. }), "{error:?}");
    }
}
