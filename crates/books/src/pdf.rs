//! PDF uploads (SPEC 4.6): a PDF becomes one page per PDF page, rendered to PNG at
//! [`RENDER_DPI`] by Debian's poppler-utils, each tool a child process with a time limit
//! (killed when it runs out, and when the upload is dropped) and a memory limit
//! ([`IngestLimits::tool_memory_limit`], see [`crate::child`]).
//!
//! - `pdfinfo -f 1 -l MAX` reads the page count, each page's size and rotation, and whether
//!   the file is encrypted, before anything is rendered: an encrypted PDF (even one that
//!   opens without a password) is refused with `encrypted_pdf`, a PDF poppler cannot open
//!   with `corrupt`, one with more than `max_pdf_pages` pages with `too_many_pages`, and a
//!   page whose size at 300 dpi is over `max_width` x `max_height` with `too_many_pixels`.
//! - `pdftoppm -r 300 -png -cropbox -singlefile -f N -l N -W MAXW -H MAXH` renders one page
//!   into a file of the upload's staging folder (the `-W`/`-H` crop bounds the bitmap even
//!   if `pdfinfo`'s size were wrong). Pages are rendered one per process, a few at a time,
//!   so a large PDF never has more than those pages in memory.
//! - `pdftotext -f N -l N -enc UTF-8 FILE -` reads one page's text layer; a page whose text
//!   has at least [`MIN_TEXT_LAYER_CHARS`] readable characters "has a text layer" (see
//!   [`text_layer`]).
//!
//! The staging folder is a local scratch directory (the system's temp dir), not storage:
//! the upload's PDFs and rendered pages wait there until every file of the request is
//! valid, then go to the blob store, and the folder is removed with the request.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::ingest::{FileRejection, IngestError, IngestLimits};

/// The resolution PDF pages are rendered at, in dots per inch.
pub const RENDER_DPI: u32 = 300;

/// The engine name recorded for a page whose text is its PDF text layer.
pub const PDF_TEXT_ENGINE: &str = "pdf-text";

/// Fewest readable characters (not white space, not a control character, not U+FFFD and
/// not a private-use character, which is what text without a usable font encoding
/// extracts to) for a page's text layer to count: a page number or a lone running header
/// is not the page's text, a line of body text is. A page below it is left for OCR.
pub const MIN_TEXT_LAYER_CHARS: usize = 20;

/// Largest text layer kept for one page; a page with more is left for OCR (no page of a
/// book has a megabyte of text; such a layer is garbage or an attack).
const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// Largest `pdfinfo` output read (about 90 bytes a page, plus the document information).
const MAX_INFO_BYTES: usize = 8 * 1024 * 1024;

/// Standard error kept for the logs (the rest is read and dropped, so that a PDF that
/// makes poppler print thousands of warnings never blocks it on a full pipe).
const STDERR_KEPT: usize = 4 * 1024;

/// Whether `bytes` is a PDF: `%PDF-` within its first 1024 bytes, as PDF readers accept.
pub(crate) fn is_pdf(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)]
        .windows(5)
        .any(|window| window == b"%PDF-")
}

/// The poppler-utils programs ingestion runs (found on `PATH` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfTools {
    /// `pdfinfo`: page count, sizes, encryption.
    pub pdfinfo: PathBuf,
    /// `pdftoppm`: renders a page to PNG.
    pub pdftoppm: PathBuf,
    /// `pdftotext`: a page's text layer.
    pub pdftotext: PathBuf,
}

impl Default for PdfTools {
    fn default() -> Self {
        Self {
            pdfinfo: PathBuf::from("pdfinfo"),
            pdftoppm: PathBuf::from("pdftoppm"),
            pdftotext: PathBuf::from("pdftotext"),
        }
    }
}

impl PdfTools {
    /// The poppler version (`22.12.0`) when all three programs run, else
    /// [`IngestError::PdfToolsMissing`] naming the package to install. For startup and
    /// readiness checks.
    pub async fn version(&self) -> Result<String, IngestError> {
        let mut version = String::new();
        for program in [&self.pdfinfo, &self.pdftoppm, &self.pdftotext] {
            let mut command = Command::new(program);
            command.arg("-v");
            let output = run(command, program, Duration::from_secs(10), 64 * 1024)
                .await
                .map_err(|failure| failure.into_ingest_error(program))?;
            // poppler prints its version on standard error; the exit status is 0 or 99.
            let text = String::from_utf8_lossy(&output.stderr);
            version = text
                .lines()
                .next()
                .and_then(|line| line.split_whitespace().last())
                .unwrap_or_default()
                .to_owned();
        }
        Ok(version)
    }
}

/// One page of a PDF as `pdfinfo` describes it, in pixels at [`RENDER_DPI`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PdfPage {
    /// Its number in the PDF, from 1.
    pub(crate) number: u32,
    /// Width of the rendered page (rotation applied).
    pub(crate) width: u32,
    /// Height of the rendered page (rotation applied).
    pub(crate) height: u32,
}

impl PdfPage {
    /// Memory a render of it may take (see `DecodeBudget`): twice its RGB bitmap, for the
    /// renderer's bitmap and the PNG encoded from it.
    pub(crate) fn decode_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * 3 * 2
    }
}

/// Reads a PDF's pages with `pdfinfo` and checks them against the limits, before anything
/// is rendered. The outer error is the server's (tools missing), the inner one the file's.
pub(crate) async fn inspect(
    tools: &PdfTools,
    path: &Path,
    limits: &IngestLimits,
) -> Result<Result<Vec<PdfPage>, FileRejection>, IngestError> {
    let mut command = crate::child::command(&tools.pdfinfo, limits.tool_memory_limit);
    command
        .arg("-f")
        .arg("1")
        .arg("-l")
        .arg(limits.max_pdf_pages.max(1).to_string())
        .arg(path);
    let output = match run(command, &tools.pdfinfo, limits.pdf_timeout, MAX_INFO_BYTES).await {
        Ok(output) => output,
        Err(ToolFailure::TimedOut) => {
            return Ok(Err(FileRejection::RenderTimeout {
                page: None,
                seconds: limits.pdf_timeout.as_secs(),
            }));
        }
        Err(ToolFailure::Failed { .. }) if has_encrypt_entry(path).await => {
            // poppler cannot open it without its password.
            return Ok(Err(FileRejection::EncryptedPdf));
        }
        Err(ToolFailure::Failed { status, stderr }) => {
            tracing::info!(%status, stderr = %String::from_utf8_lossy(&stderr), "pdfinfo cannot read an uploaded PDF");
            return Ok(Err(FileRejection::Corrupt {
                detail: "broken PDF: it cannot be opened (truncated or damaged)".to_owned(),
            }));
        }
        Err(ToolFailure::TooMuchOutput) => {
            return Ok(Err(FileRejection::Corrupt {
                detail: "broken PDF: its description is larger than 8 MiB".to_owned(),
            }));
        }
        Err(failure) => return Err(failure.into_ingest_error(&tools.pdfinfo)),
    };
    Ok(parse_info(&String::from_utf8_lossy(&output.stdout), limits))
}

/// Whether the file names an `/Encrypt` dictionary (in its trailer or cross-reference
/// stream, which are never compressed), read in pieces: the file may be a GiB.
async fn has_encrypt_entry(path: &Path) -> bool {
    use tokio::io::AsyncReadExt as _;
    const NEEDLE: &[u8] = b"/Encrypt";
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return false;
    };
    let mut buffer = vec![0_u8; 1024 * 1024];
    // The last bytes of the previous piece, so a needle across two pieces is found.
    let mut kept = 0;
    loop {
        let Ok(read) = file.read(&mut buffer[kept..]).await else {
            return false;
        };
        if read == 0 {
            return false;
        }
        let filled = kept + read;
        if buffer[..filled]
            .windows(NEEDLE.len())
            .any(|window| window == NEEDLE)
        {
            return true;
        }
        kept = (NEEDLE.len() - 1).min(filled);
        buffer.copy_within(filled - kept..filled, 0);
    }
}

/// The pages `pdfinfo` printed, checked against the limits. The document information
/// (title, author...) comes first and may hold any text, so each key is read from its
/// last line: nothing the PDF controls is printed after `Pages:` and `Encrypted:`.
fn parse_info(info: &str, limits: &IngestLimits) -> Result<Vec<PdfPage>, FileRejection> {
    let corrupt = |detail: &str| FileRejection::Corrupt {
        detail: format!("broken PDF: {detail}"),
    };
    let value = |key: &str| {
        info.lines()
            .rev()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim)
    };
    if value("Encrypted:").is_some_and(|encrypted| encrypted.starts_with("yes")) {
        return Err(FileRejection::EncryptedPdf);
    }
    let count: u64 = value("Pages:")
        .and_then(|pages| pages.parse().ok())
        .ok_or_else(|| corrupt("no page count"))?;
    if count == 0 {
        return Err(corrupt("it has no pages"));
    }
    if count > u64::from(limits.max_pdf_pages) {
        return Err(FileRejection::TooManyPages {
            pages: count,
            max: limits.max_pdf_pages,
        });
    }
    let count = u32::try_from(count).map_err(|_| corrupt("page count out of range"))?;
    // "Page    1 size:  612 x 792 pts (letter)" and "Page    1 rot:   90".
    let mut sizes = vec![None; count as usize];
    let mut rotations = vec![0_u32; count as usize];
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("Page ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(number) = words
            .next()
            .and_then(|word| word.parse::<u32>().ok())
            .filter(|number| (1..=count).contains(number))
        else {
            continue;
        };
        let slot = (number - 1) as usize;
        match words.next() {
            Some("size:") => {
                let width = words.next().and_then(|word| word.parse::<f64>().ok());
                let by = words.next();
                let height = words.next().and_then(|word| word.parse::<f64>().ok());
                if let (Some(width), Some("x"), Some(height)) = (width, by, height) {
                    sizes[slot] = Some((width, height));
                }
            }
            Some("rot:") => {
                rotations[slot] = words
                    .next()
                    .and_then(|word| word.parse::<i64>().ok())
                    .map_or(0, |rotation| rotation.rem_euclid(360) as u32);
            }
            _ => {}
        }
    }
    let mut pages = Vec::with_capacity(count as usize);
    for (index, (size, rotation)) in sizes.into_iter().zip(rotations).enumerate() {
        let number = index as u32 + 1;
        let (width, height) = size.ok_or_else(|| corrupt(&format!("page {number} has no size")))?;
        let (width, height) = if rotation == 90 || rotation == 270 {
            (height, width)
        } else {
            (width, height)
        };
        let (Some(width), Some(height)) = (pixels(width), pixels(height)) else {
            return Err(corrupt(&format!("page {number} has an invalid size")));
        };
        if width > limits.max_width || height > limits.max_height {
            return Err(FileRejection::PdfPageTooLarge {
                page: number,
                width,
                height,
                max_width: limits.max_width,
                max_height: limits.max_height,
            });
        }
        pages.push(PdfPage {
            number,
            width,
            height,
        });
    }
    Ok(pages)
}

/// Pixels of a length in points at [`RENDER_DPI`], rounded up as `pdftoppm` does; `None`
/// for a length that is not a positive number (`u32::MAX` past it: over any limit).
fn pixels(points: f64) -> Option<u32> {
    if !points.is_finite() || points <= 0.0 {
        return None;
    }
    let pixels = (points * f64::from(RENDER_DPI) / 72.0).ceil();
    Some(if pixels >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        pixels as u32
    })
}

/// Renders one page to `{out_root}.png`. The outer error is the server's, the inner one the
/// file's.
pub(crate) async fn render(
    tools: &PdfTools,
    path: &Path,
    page: &PdfPage,
    out_root: &Path,
    limits: &IngestLimits,
) -> Result<Result<PathBuf, FileRejection>, IngestError> {
    let mut command = crate::child::command(&tools.pdftoppm, limits.tool_memory_limit);
    command
        .arg("-r")
        .arg(RENDER_DPI.to_string())
        .arg("-png")
        .arg("-cropbox")
        .arg("-singlefile")
        .arg("-f")
        .arg(page.number.to_string())
        .arg("-l")
        .arg(page.number.to_string())
        .arg("-W")
        .arg(limits.max_width.to_string())
        .arg("-H")
        .arg(limits.max_height.to_string())
        .arg(path)
        .arg(out_root);
    match run(command, &tools.pdftoppm, limits.pdf_timeout, 64 * 1024).await {
        Ok(_) => {
            let mut png = out_root.as_os_str().to_owned();
            png.push(".png");
            Ok(Ok(PathBuf::from(png)))
        }
        Err(ToolFailure::TimedOut) => Ok(Err(FileRejection::RenderTimeout {
            page: Some(page.number),
            seconds: limits.pdf_timeout.as_secs(),
        })),
        Err(ToolFailure::TooMuchOutput) => Ok(Err(FileRejection::Corrupt {
            detail: format!("broken PDF: page {} cannot be rendered", page.number),
        })),
        Err(ToolFailure::Failed { status, stderr }) => {
            tracing::info!(page = page.number, %status, stderr = %String::from_utf8_lossy(&stderr), "pdftoppm cannot render a page of an uploaded PDF");
            Ok(Err(FileRejection::Corrupt {
                detail: format!("broken PDF: page {} cannot be rendered", page.number),
            }))
        }
        Err(failure) => Err(failure.into_ingest_error(&tools.pdftoppm)),
    }
}

/// The text layer of one page (see [`text_layer`]), or `None` when it has none. The outer
/// error is the server's, the inner one the file's.
pub(crate) async fn page_text(
    tools: &PdfTools,
    path: &Path,
    page: u32,
    limits: &IngestLimits,
) -> Result<Result<Option<String>, FileRejection>, IngestError> {
    let mut command = crate::child::command(&tools.pdftotext, limits.tool_memory_limit);
    command
        .arg("-f")
        .arg(page.to_string())
        .arg("-l")
        .arg(page.to_string())
        .arg("-enc")
        .arg("UTF-8")
        .arg(path)
        .arg("-");
    match run(
        command,
        &tools.pdftotext,
        limits.pdf_timeout,
        MAX_TEXT_BYTES,
    )
    .await
    {
        Ok(output) => Ok(Ok(text_layer(&String::from_utf8_lossy(&output.stdout)))),
        Err(ToolFailure::TooMuchOutput) => {
            tracing::info!(page, "a PDF page's text layer is over 1 MiB: left for OCR");
            Ok(Ok(None))
        }
        Err(ToolFailure::TimedOut) => Ok(Err(FileRejection::RenderTimeout {
            page: Some(page),
            seconds: limits.pdf_timeout.as_secs(),
        })),
        Err(ToolFailure::Failed { status, stderr }) => {
            tracing::info!(page, %status, stderr = %String::from_utf8_lossy(&stderr), "pdftotext cannot read a page of an uploaded PDF");
            Ok(Err(FileRejection::Corrupt {
                detail: format!("broken PDF: the text of page {page} cannot be read"),
            }))
        }
        Err(failure) => Err(failure.into_ingest_error(&tools.pdftotext)),
    }
}

/// A page's text as `pdftotext` printed it, cleaned like OCR text (no form feed, no
/// trailing white space on lines, no blank lines around it), or `None` when it is not a
/// text layer: fewer than [`MIN_TEXT_LAYER_CHARS`] readable characters, or more
/// unreadable characters (U+FFFD, private use, control) than a tenth of the readable ones.
pub fn text_layer(raw: &str) -> Option<String> {
    let lines: Vec<&str> = raw
        .split('\n')
        .map(|line| line.trim_end_matches(['\x0c', ' ', '\t', '\r']))
        .collect();
    let text = lines.join("\n").trim_matches(['\n', '\x0c']).to_owned();
    let unreadable = |character: char| {
        character == '\u{FFFD}'
            || ('\u{E000}'..='\u{F8FF}').contains(&character)
            || (character.is_control() && !character.is_whitespace())
    };
    let (readable, bad) = text
        .chars()
        .filter(|character| !character.is_whitespace())
        .fold((0_usize, 0_usize), |(readable, bad), character| {
            if unreadable(character) {
                (readable, bad + 1)
            } else {
                (readable + 1, bad)
            }
        });
    (readable >= MIN_TEXT_LAYER_CHARS && bad * 10 <= readable).then_some(text)
}

/// What a tool printed.
struct ToolOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Why a tool did not succeed.
enum ToolFailure {
    /// The program is not installed (or not executable).
    Missing(std::io::Error),
    /// It could not be started for another reason (no processes left, ...).
    Spawn(std::io::Error),
    /// It ran longer than the time limit and was killed.
    TimedOut,
    /// It printed more than the output limit and was killed.
    TooMuchOutput,
    /// It ended with a failure status (or a signal).
    Failed { status: ExitStatus, stderr: Vec<u8> },
}

impl ToolFailure {
    fn into_ingest_error(self, program: &Path) -> IngestError {
        match self {
            Self::Missing(source) => IngestError::PdfToolsMissing {
                reason: format!(
                    "cannot run `{}` (install Debian's poppler-utils package): {source}",
                    program.display()
                ),
            },
            Self::Spawn(source) => IngestError::Local {
                what: "starting a PDF tool",
                source,
            },
            Self::TimedOut => IngestError::PdfToolsMissing {
                reason: format!("`{}` did not answer in time", program.display()),
            },
            Self::TooMuchOutput | Self::Failed { .. } => IngestError::PdfToolsMissing {
                reason: format!("`{} -v` failed", program.display()),
            },
        }
    }
}

/// Runs a tool with no input, reading at most `max_stdout` bytes of its output (more
/// kills it: [`ToolFailure::TooMuchOutput`]), killed after `timeout`. Exit status 0 is
/// success, and so is 99 for `-v` (poppler's "printed the version").
async fn run(
    mut command: Command,
    program: &Path,
    timeout: Duration,
    max_stdout: usize,
) -> Result<ToolOutput, ToolFailure> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            ToolFailure::Missing(error)
        }
        _ => ToolFailure::Spawn(error),
    })?;
    let ended = tokio::time::timeout(timeout, run_to_end(&mut child, max_stdout)).await;
    let (status, stdout, stderr) = match ended {
        Ok(Ok(ended)) => ended,
        Ok(Err(failure)) => {
            let _ = child.kill().await;
            return Err(failure);
        }
        Err(_) => {
            let _ = child.kill().await;
            tracing::debug!(program = %program.display(), ?timeout, "a PDF tool ran out of time");
            return Err(ToolFailure::TimedOut);
        }
    };
    let version = command.as_std().get_args().any(|argument| argument == "-v");
    if status.success() || (version && status.code() == Some(99)) {
        Ok(ToolOutput { stdout, stderr })
    } else {
        Err(ToolFailure::Failed { status, stderr })
    }
}

/// Reads both outputs (standard output up to `max_stdout` bytes) and waits for the exit.
async fn run_to_end(
    child: &mut Child,
    max_stdout: usize,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), ToolFailure> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (stdout, stderr) = tokio::join!(read_capped(stdout, max_stdout), drain(stderr));
    let stdout = stdout.ok_or(ToolFailure::TooMuchOutput)?;
    let status = child.wait().await.map_err(ToolFailure::Spawn)?;
    Ok((status, stdout, stderr))
}

/// Everything from `pipe`, or `None` as soon as it passes `max` bytes.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, max: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(pipe) = pipe {
        let mut limited = pipe.take(max as u64 + 1);
        if limited.read_to_end(&mut bytes).await.is_err() {
            return Some(Vec::new());
        }
    }
    (bytes.len() <= max).then_some(bytes)
}

/// The first [`STDERR_KEPT`] bytes of `pipe`, read to its end.
async fn drain(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buffer = [0_u8; 8192];
    while let Ok(read) = pipe.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..read.min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> IngestLimits {
        IngestLimits::default()
    }

    #[test]
    fn pdfs_are_recognized_by_their_header_within_the_first_kilobyte() {
        assert!(is_pdf(b"%PDF-1.4\n"));
        assert!(is_pdf(b"junk before it %PDF-1.7\n"));
        assert!(!is_pdf(b"\x89PNG\r\n\x1a\n"));
        let mut late = vec![b' '; 1100];
        late.extend_from_slice(b"%PDF-1.4");
        assert!(!is_pdf(&late));
    }

    #[test]
    fn page_sizes_become_pixels_at_300_dpi_with_rotation() {
        let info = "Title:  Pages: 1\nPages:           2\nEncrypted:       no\n\
                    Page    1 size:  612 x 792 pts (letter)\nPage    1 rot:   0\n\
                    Page    2 size:  612 x 792 pts (letter)\nPage    2 rot:   90\n";
        let pages = parse_info(info, &limits()).unwrap();
        assert_eq!(
            pages,
            [
                PdfPage {
                    number: 1,
                    width: 2550,
                    height: 3300
                },
                PdfPage {
                    number: 2,
                    width: 3300,
                    height: 2550
                },
            ]
        );
    }

    #[test]
    fn too_many_pages_too_large_pages_encryption_and_nonsense_are_refused() {
        let info = |pages: u32, size: &str| {
            let mut text = format!("Pages: {pages}\nEncrypted: no\n");
            for page in 1..=pages {
                text.push_str(&format!("Page {page:4} size: {size} pts\n"));
            }
            text
        };
        let few = IngestLimits {
            max_pdf_pages: 3,
            ..limits()
        };
        assert_eq!(
            parse_info(&info(4, "612 x 792"), &few),
            Err(FileRejection::TooManyPages { pages: 4, max: 3 })
        );
        assert!(parse_info(&info(3, "612 x 792"), &few).is_ok());
        // 2880 pt is 12000 px at 300 dpi: the limit itself passes, a point more does not.
        assert!(parse_info(&info(1, "2880 x 2880"), &limits()).is_ok());
        assert_eq!(
            parse_info(&info(1, "2881 x 100"), &limits()),
            Err(FileRejection::PdfPageTooLarge {
                page: 1,
                width: 12005,
                height: 417,
                max_width: 12_000,
                max_height: 12_000
            })
        );
        assert_eq!(
            parse_info("Pages: 1\nEncrypted: yes (print:yes)\n", &limits()),
            Err(FileRejection::EncryptedPdf)
        );
        for nonsense in [
            "",
            "Pages: 0\n",
            "Pages: 1\n",
            "Pages: 1\nPage    1 size: -5 x 3 pts\n",
            "Pages: 1\nPage    1 size: nan x 3 pts\n",
        ] {
            assert!(
                matches!(
                    parse_info(nonsense, &limits()),
                    Err(FileRejection::Corrupt { .. })
                ),
                "{nonsense:?}"
            );
        }
        // A title cannot hide the real page count: the last `Pages:` line counts.
        assert_eq!(
            parse_info(
                &format!("Title: x\nPages: 1\n{}", info(4, "612 x 792")),
                &few
            ),
            Err(FileRejection::TooManyPages { pages: 4, max: 3 })
        );
    }

    #[test]
    fn a_text_layer_needs_enough_readable_characters() {
        assert_eq!(text_layer("\x0c"), None);
        assert_eq!(text_layer("  12 \n\x0c"), None);
        assert_eq!(text_layer("Chapter 1\n\x0c"), None);
        assert_eq!(
            text_layer("Chapter 1: Adding fractions  \n\nTo add\n\n\x0c").as_deref(),
            Some("Chapter 1: Adding fractions\n\nTo add")
        );
        let garbage: String = std::iter::repeat_n('\u{E01F}', 30).collect();
        assert_eq!(
            text_layer(&format!("{garbage} Chapter 1: Adding fractions")),
            None
        );
    }
}
