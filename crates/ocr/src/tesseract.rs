//! [`TesseractEngine`]: the `tesseract` CLI, one process per page.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::error::tail;
use crate::{OcrEngine, OcrError, PageImage, Recognized};

/// The 8-byte signature every PNG starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// How tesseract runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TesseractConfig {
    /// The program (`tesseract`, found on `PATH`).
    pub program: PathBuf,
    /// Languages, as for `-l` (`eng`, `eng+deu`).
    pub languages: String,
    /// A page taking longer is killed and counts as a retryable failure.
    pub timeout: Duration,
    /// `--psm`, the page segmentation mode; tesseract's default when `None`.
    pub page_segmentation_mode: Option<u8>,
    /// Most memory one tesseract process may allocate ([`books::child`]); a page that
    /// needs more fails (2 GiB; unlimited when `None`).
    pub memory_limit: Option<u64>,
    /// A page read with a mean word confidence under this (or with no word) is read again
    /// with orientation detection (`--psm 1`, with the `osd` model): a page turned upside
    /// down reads as garbage at about 40, upright pages at 85 and more. The better of the
    /// two readings is kept, and a second reading that is kept records the page's
    /// [`Recognized::rotation`]. Checking every page would cost about 0.3 s of CPU a page
    /// (twice the time of a sparse page). `None`: never.
    pub upright_below: Option<f64>,
}

/// [`TesseractConfig::upright_below`]'s default.
pub(crate) const DEFAULT_UPRIGHT_BELOW: f64 = 60.0;

impl Default for TesseractConfig {
    fn default() -> Self {
        Self {
            program: PathBuf::from("tesseract"),
            languages: "eng".to_owned(),
            timeout: Duration::from_secs(120),
            page_segmentation_mode: None,
            memory_limit: Some(books::child::DEFAULT_MEMORY_LIMIT),
            upright_below: Some(DEFAULT_UPRIGHT_BELOW),
        }
    }
}

/// The `tesseract` CLI as an [`OcrEngine`].
///
/// Each page is one process, `tesseract stdin BASE -l LANG txt tsv hocr` (the page's language,
/// else the configured one), with the PNG on standard input, the three outputs in a
/// temporary folder, and `OMP_THREAD_LIMIT=1` (pages run in parallel instead; multi-threaded tesseract
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

    pub fn config(&self) -> &TesseractConfig {
        &self.config
    }

    /// The command that recognizes one PNG given on standard input as `language`, writing
    /// `OUTPUT_BASE.txt`, `.tsv` and `.hocr` in one run: exactly what
    /// [`OcrEngine::recognize_page`] runs (benchmarks run it bare).
    pub fn command(&self, language: &str, output_base: &Path) -> Command {
        self.command_with(language, output_base, self.config.page_segmentation_mode)
    }

    /// [`Self::command`] with page segmentation mode `mode`.
    fn command_with(&self, language: &str, output_base: &Path, mode: Option<u8>) -> Command {
        let mut command = books::child::command(&self.config.program, self.config.memory_limit);
        command
            .arg("stdin")
            .arg(output_base)
            .arg("-l")
            .arg(language);
        if let Some(mode) = mode {
            command.arg("--psm").arg(mode.to_string());
        }
        command
            .args(["txt", "tsv", "hocr"])
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// The language a page is read in: the page's, else the configured one.
    fn language<'a>(&'a self, page: &'a PageImage) -> &'a str {
        page.language.as_deref().unwrap_or(&self.config.languages)
    }

    /// `tesseract --version`'s first line; [`OcrError::EngineUnavailable`] when the program
    /// cannot run. Use it to check the installation at startup.
    pub async fn version(&self) -> Result<String, OcrError> {
        let text = self.run_info("--version").await?;
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    }

    /// The languages installed (`tesseract --list-langs`, without `osd` and script models,
    /// sorted); [`OcrError::EngineUnavailable`] when the program cannot run.
    pub async fn installed_languages(&self) -> Result<Vec<String>, OcrError> {
        Ok(crate::languages::parse_list(
            &self.run_info("--list-langs").await?,
        ))
    }

    /// What `tesseract ARGUMENT` prints (on stdout, or stderr for old versions).
    async fn run_info(&self, argument: &str) -> Result<String, OcrError> {
        let output = Command::new(&self.config.program)
            .arg(argument)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| self.spawn_error(error))?;
        if !output.status.success() {
            return Err(OcrError::EngineUnavailable {
                reason: format!(
                    "`{} {argument}` failed with {}",
                    self.config.program.display(),
                    output.status
                ),
                source: None,
            });
        }
        let text = if output.stdout.is_empty() {
            output.stderr
        } else {
            output.stdout
        };
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn spawn_error(&self, error: std::io::Error) -> OcrError {
        match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                OcrError::EngineUnavailable {
                    reason: format!(
                        "cannot run `{}` (install Debian's tesseract-ocr package: \
                         scripts/install-tesseract.sh)",
                        self.config.program.display()
                    ),
                    source: Some(error),
                }
            }
            _ => OcrError::Spawn { source: error },
        }
    }

    /// Runs tesseract on `page`, writing its outputs next to `base`: killed on timeout and
    /// on cancel; `Ok` only when it exited with status 0.
    async fn run_page(
        &self,
        page: &PageImage,
        base: &Path,
        mode: Option<u8>,
        cancel: &CancellationToken,
    ) -> Result<(), OcrError> {
        let mut child = self
            .command_with(self.language(page), base, mode)
            .spawn()
            .map_err(|error| self.spawn_error(error))?;
        let ended = tokio::select! {
            ended = run_to_end(&mut child, page.png.clone()) => ended,
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
            Ended::Exited { status, stderr } => check_exit(status, &stderr),
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
        Ok(self.recognize_page(page, cancel).await?.text)
    }

    async fn recognize_page(
        &self,
        page: &PageImage,
        cancel: &CancellationToken,
    ) -> Result<Recognized, OcrError> {
        check_png(&page.png)?;
        if cancel.is_cancelled() {
            return Err(OcrError::Cancelled);
        }
        // The three outputs of one run land here; the folder goes when this returns.
        let dir = tempfile::Builder::new()
            .prefix("folio-ocr-")
            .tempdir()
            .map_err(|source| OcrError::Spawn { source })?;
        let base = dir.path().join("page");
        let mode = self.config.page_segmentation_mode;
        self.run_page(page, &base, mode, cancel).await?;
        let first = read_outputs(&base).await?;
        let upright_checked = mode == Some(UPRIGHT_MODE);
        let Some(below) = self.config.upright_below.filter(|_| !upright_checked) else {
            return Ok(first);
        };
        if first
            .confidence
            .is_some_and(|confidence| confidence >= below)
        {
            return Ok(first);
        }
        // Perhaps turned: read again with orientation detection, keep the better reading.
        let base = dir.path().join("upright");
        self.run_page(page, &base, Some(UPRIGHT_MODE), cancel)
            .await?;
        let mut second = read_outputs(&base).await?;
        if second.confidence.unwrap_or(-1.0) > first.confidence.unwrap_or(-1.0) {
            second.rotation = second.hocr.as_deref().and_then(rotation);
            return Ok(second);
        }
        Ok(first)
    }

    async fn check_language(&self, language: Option<&str>) -> Result<(), OcrError> {
        let language = language.unwrap_or(&self.config.languages);
        let installed = self.installed_languages().await?;
        let missing = crate::languages::missing(language, &installed);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(OcrError::LanguageNotInstalled { missing, installed })
        }
    }
}

/// Tesseract's automatic page segmentation with orientation and script detection.
const UPRIGHT_MODE: u8 = 1;

/// How far the page of `hocr` is turned, counter-clockwise: the `textangle` most of its
/// lines carry (a line without one is upright, 0); `None` without lines.
pub(crate) fn rotation(hocr: &str) -> Option<u16> {
    const LINES: [&str; 4] = ["ocr_line", "ocr_header", "ocr_caption", "ocr_textfloat"];
    let mut counts = [0_usize; 4];
    for element in hocr.split("class='").skip(1) {
        if !LINES
            .iter()
            .any(|line| element.starts_with(&format!("{line}'")))
        {
            continue;
        }
        let title = element
            .split_once("title=")
            .and_then(|(_, rest)| {
                let quote = rest.chars().next()?;
                rest[1..].split_once(quote).map(|(title, _)| title)
            })
            .unwrap_or_default();
        let angle = title
            .split(';')
            .find_map(|part| part.trim().strip_prefix("textangle "))
            .and_then(|angle| angle.trim().parse::<u16>().ok())
            .unwrap_or(0);
        if let Some(count) = counts.get_mut(usize::from(angle / 90)) {
            *count += 1;
        }
    }
    let (quarter, count) = counts
        .iter()
        .enumerate()
        .max_by_key(|(quarter, count)| (**count, std::cmp::Reverse(*quarter)))?;
    (*count > 0).then_some(quarter as u16 * 90)
}

/// Refuses bytes that are not a PNG.
fn check_png(png: &[u8]) -> Result<(), OcrError> {
    // tesseract reads a non-image standard input as a list of file names: only ever
    // hand it a PNG.
    if png.starts_with(PNG_SIGNATURE) {
        Ok(())
    } else {
        Err(OcrError::InvalidImage {
            reason: "not a PNG (bad signature)".to_owned(),
        })
    }
}

/// Classifies how an exited process ended: a signal is [`OcrError::Killed`], a non-zero
/// status [`OcrError::ExitStatus`], each with the tail of its standard error.
fn check_exit(status: std::io::Result<ExitStatus>, stderr: &[u8]) -> Result<(), OcrError> {
    let status = status.map_err(|source| OcrError::Spawn { source })?;
    let stderr = tail(&String::from_utf8_lossy(stderr), 500);
    if let Some(signal) = status.signal() {
        return Err(OcrError::Killed { signal, stderr });
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(OcrError::ExitStatus { code, stderr }),
        None => Err(OcrError::Killed { signal: 0, stderr }),
    }
}

/// Reads the txt, tsv and hocr outputs of a successful run at `base`.
async fn read_outputs(base: &Path) -> Result<Recognized, OcrError> {
    let text = read_output(base, "txt").await?;
    let tsv = read_output(base, "tsv").await?;
    let hocr = read_output(base, "hocr").await?;
    let tsv = String::from_utf8_lossy(&tsv);
    let (confidence, words) = word_quality(&tsv);
    Ok(Recognized {
        text: page_text(&String::from_utf8_lossy(&text), &tsv),
        hocr: Some(String::from_utf8_lossy(&hocr).into_owned()),
        confidence,
        words: Some(words),
        rotation: None,
    })
}

/// A page's text from the `txt` and `tsv` outputs of one tesseract run: the `txt`, unless
/// tesseract read rows of two columns straight across their gutter, then the TSV's words
/// column by column ([`crate::columns`]).
pub fn page_text(txt: &str, tsv: &str) -> String {
    clean_text(&crate::columns::reflow(tsv).unwrap_or_else(|| txt.to_owned()))
}

/// `base` with `extension`; a missing file is an [`OcrError::ExitStatus`] of 0.
async fn read_output(base: &Path, extension: &'static str) -> Result<Vec<u8>, OcrError> {
    tokio::fs::read(base.with_extension(extension))
        .await
        .map_err(|_| OcrError::ExitStatus {
            code: 0,
            stderr: format!("tesseract wrote no {extension} output"),
        })
}

/// The mean confidence of the words of tesseract's TSV output (rows of level 5 with text
/// and a confidence of 0 or more), and their number. `None` without words.
pub fn word_quality(tsv: &str) -> (Option<f64>, u64) {
    let mut sum = 0.0;
    let mut words = 0_u64;
    for row in tsv.lines().skip(1) {
        let fields: Vec<&str> = row.split('\t').collect();
        if fields.len() < 12 || fields[0] != "5" || fields[11].trim().is_empty() {
            continue;
        }
        let Ok(confidence) = fields[10].parse::<f64>() else {
            continue;
        };
        if confidence >= 0.0 {
            sum += confidence;
            words += 1;
        }
    }
    let mean = (words > 0).then(|| (sum / words as f64 * 100.0).round() / 100.0);
    (mean, words)
}

/// Feeds the PNG, reads its standard error and waits for the exit.
async fn run_to_end(child: &mut Child, png: Bytes) -> Ended {
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A process that exits early closes the pipe; its exit status tells why.
            let _ = stdin.write_all(&png).await;
            let _ = stdin.shutdown().await;
        }
    };
    let ((), stderr) = tokio::join!(feed, read_all(stderr));
    let status = child.wait().await;
    Ended::Exited { status, stderr }
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
    fn word_quality_is_the_mean_confidence_of_words_with_text() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t10\t10\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90.5\tHallo\n\
                   5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t60.5\tWelt\n\
                   5\t1\t1\t1\t1\t3\t0\t0\t1\t1\t95\t \n\
                   5\t1\t1\t1\t1\t4\t0\t0\t1\t1\t-1\tx\n";
        assert_eq!(word_quality(tsv), (Some(75.5), 2));
        assert_eq!(word_quality("level\tconf\n"), (None, 0));
    }

    #[test]
    fn rotation_is_the_text_angle_of_most_lines() {
        let line = |angle: Option<u16>| {
            let angle = angle
                .map(|a| format!("; textangle {a}"))
                .unwrap_or_default();
            format!("<span class='ocr_line' id='l' title=\"bbox 1 2 3 4{angle}; x_size 26\">")
        };
        let page = [line(Some(180)), line(Some(180)), line(None)].concat();
        assert_eq!(rotation(&page), Some(180));
        assert_eq!(rotation(&[line(None), line(None)].concat()), Some(0));
        let header = "<span class='ocr_header' id='h' title='bbox 1 2 3 4; textangle 270'>";
        assert_eq!(rotation(&[header, &line(Some(270))].concat()), Some(270));
        assert_eq!(
            rotation("<div class='ocr_page' title='bbox 0 0 9 9'></div>"),
            None
        );
    }

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
                &PageImage::new(1, Bytes::from_static(PNG_SIGNATURE)),
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
                &PageImage::new(1, Bytes::from_static(b"/etc/passwd\n")),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, OcrError::InvalidImage { .. }), "{error:?}");
    }
}
