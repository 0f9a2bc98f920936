//! Checks at start that what a worker's jobs need is installed, so a worker that cannot run
//! them exits at once with what to install, instead of failing jobs later.
//!
//! - `ocr` with `--ocr-engine tesseract`: the `tesseract` program runs (Debian
//!   `tesseract-ocr`), and every language of `--tesseract-languages` is installed (Debian
//!   `tesseract-ocr-CODE`, `scripts/install-tesseract.sh CODE`).
//! - The PDF renderer (`pdftoppm`, Debian `poppler-utils`) is not checked here: uploads are
//!   rendered to PNG pages by the process that takes the upload (`api`), never by a
//!   worker, whose `ocr` jobs read PNGs only.

use anyhow::{Result, bail};
use ocr::{TesseractConfig, TesseractEngine};
use serde::Serialize;

use crate::config::{OcrArgs, OcrEngineKind, WorkerArgs};

/// What the check found of the OCR engine (`/readyz` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OcrEngineInfo {
    /// The engine: `tesseract`, or `openai` (not checked: a remote endpoint).
    pub engine: String,
    /// The engine's version (`tesseract 5.3.0`), when it has one.
    pub version: Option<String>,
    /// The languages installed for it, sorted (tesseract), without `osd`.
    pub languages: Vec<String>,
    /// The languages `ocr` jobs read books without a language of their own in.
    pub default_language: String,
}

/// Checks the OCR engine when the worker's job types include `ocr`: `Ok(None)` when they do
/// not, the engine's details when it can run, else an error that names the packages to
/// install.
pub async fn check_ocr(worker: &WorkerArgs) -> Result<Option<OcrEngineInfo>> {
    let types = crate::handlers::selected_types(&worker.types)?;
    if !types.contains(&ocr::OCR_JOB_TYPE) {
        return Ok(None);
    }
    check_engine(&worker.ocr).await.map(Some)
}

/// Checks the engine `args` select (see [`check_ocr`]).
pub async fn check_engine(args: &OcrArgs) -> Result<OcrEngineInfo> {
    match args.ocr_engine {
        OcrEngineKind::Openai => Ok(OcrEngineInfo {
            engine: "openai".to_owned(),
            version: None,
            languages: Vec::new(),
            default_language: args.tesseract_languages.clone(),
        }),
        OcrEngineKind::Tesseract => {
            let engine = TesseractEngine::new(TesseractConfig::default());
            let (version, languages) =
                match tokio::try_join!(engine.version(), engine.installed_languages()) {
                    Ok(found) => found,
                    Err(error) => bail!(
                        "this worker runs ocr jobs with tesseract, which cannot run ({error}): \
                         install Debian's tesseract-ocr and tesseract-ocr-eng \
                         (scripts/install-tesseract.sh), or start the worker with --types \
                         that leave out ocr"
                    ),
                };
            let missing = ocr::languages::missing(&args.tesseract_languages, &languages);
            if !missing.is_empty() {
                let packages: Vec<String> = missing
                    .iter()
                    .map(|code| ocr::languages::package(code))
                    .collect();
                bail!(
                    "this worker reads pages in {} (--tesseract-languages), but tesseract lacks \
                     {}: install {} (scripts/install-tesseract.sh {}); installed: {}",
                    args.tesseract_languages,
                    missing.join(", "),
                    packages.join(" "),
                    missing.join(" "),
                    languages.join(", ")
                );
            }
            Ok(OcrEngineInfo {
                engine: "tesseract".to_owned(),
                version: Some(version),
                languages,
                default_language: args.tesseract_languages.clone(),
            })
        }
    }
}
