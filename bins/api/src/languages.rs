//! The tesseract languages installed on this host, read once (`tesseract --list-langs`), and
//! the check of a book's `language` against them.
//!
//! The list is read the first time it is needed (the server asks at start) and kept for the
//! life of the process: a language pack installed later needs a restart of the API. When
//! tesseract does not run on the API's host (workers on other machines), the list is
//! unknown: every language of valid syntax is accepted, and a worker that lacks it fails
//! the book's `ocr` job with `language_not_installed`.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The installed languages (sorted, without `osd`), or `None` when tesseract does not run.
pub fn installed() -> Option<&'static [String]> {
    static INSTALLED: OnceLock<Option<Vec<String>>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let output = std::process::Command::new("tesseract")
                .arg("--list-langs")
                .output()
                .ok()
                .filter(|output| output.status.success())?;
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            Some(ocr::languages::parse_list(&String::from_utf8_lossy(&text)))
                .filter(|languages| !languages.is_empty())
        })
        .as_deref()
}

/// The regular expression of the languages a book may have: the installed codes joined by
/// `+` (at most [`ocr::languages::MAX_CODES`]), or every valid language when the list is
/// unknown.
pub fn pattern() -> String {
    match installed() {
        Some(codes) => {
            let code = format!("(?:{})", codes.join("|"));
            format!(
                "^{code}(?:\\+{code}){{0,{}}}$",
                ocr::languages::MAX_CODES - 1
            )
        }
        None => ocr::languages::LANGUAGE_PATTERN.to_owned(),
    }
}

/// Why a book's language is refused; the API answers it 422 `invalid_request`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LanguageRefused {
    pub(crate) message: String,
    /// The missing codes and the installed ones, when the language is not installed.
    pub(crate) details: Option<Value>,
}

/// Refused unless `language` is valid and (when the list is known) installed; the details
/// name the missing codes and the installed ones.
pub(crate) fn check(language: &str) -> Result<(), LanguageRefused> {
    if !ocr::languages::valid(language) {
        return Err(LanguageRefused {
            message: format!(
                "language {language:?} is not a tesseract language: codes such as eng, deu or \
                 chi_sim, joined by + (eng+deu), at most {}",
                ocr::languages::MAX_CODES
            ),
            details: None,
        });
    }
    let Some(installed) = installed() else {
        return Ok(());
    };
    let missing = ocr::languages::missing(language, installed);
    if missing.is_empty() {
        return Ok(());
    }
    Err(LanguageRefused {
        message: format!(
            "tesseract language {} is not installed (Debian {}); installed: {}",
            missing.join(", "),
            missing
                .iter()
                .map(|code| ocr::languages::package(code))
                .collect::<Vec<_>>()
                .join(" "),
            installed.join(", ")
        ),
        details: Some(json!({
            "language": language,
            "missing": missing,
            "installed": installed,
        })),
    })
}
