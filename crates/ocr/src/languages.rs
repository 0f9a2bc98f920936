//! Tesseract language codes: what a book's `language` may be, and which Debian package
//! installs each one.
//!
//! A language is one code (`eng`, `deu`, `chi_sim`) or several joined by `+` (`eng+fra`), as
//! `tesseract -l` takes them; each code needs its `CODE.traineddata`, installed by Debian's
//! `tesseract-ocr-CODE` package (`_` written `-`). Script models (`script/Latin`) are not
//! accepted as book languages.

/// Codes `tesseract --list-langs` lists that read no text of a language: orientation and
/// script detection, and the old equation model.
pub const NOT_BOOK_LANGUAGES: [&str; 2] = ["osd", "equ"];

/// The most codes one language may join.
pub const MAX_CODES: usize = 8;

/// The longest code, in characters (a lowercase letter and up to 31 more).
pub const MAX_CODE_CHARS: usize = 32;

/// A regular expression of every syntactically valid language (whether installed or not).
pub const LANGUAGE_PATTERN: &str = "^[a-z][a-z0-9_]{0,31}(\\+[a-z][a-z0-9_]{0,31}){0,7}$";

/// The codes of `language`, in order.
pub fn codes(language: &str) -> impl Iterator<Item = &str> {
    language.split('+')
}

/// Whether `code` is one code: a lowercase letter, then up to 31 of `a-z`, `0-9` and `_`.
pub fn valid_code(code: &str) -> bool {
    let mut chars = code.chars();
    code.len() <= MAX_CODE_CHARS
        && chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|rest| rest.is_ascii_lowercase() || rest.is_ascii_digit() || rest == '_')
}

/// Whether `language` is 1 to [`MAX_CODES`] valid codes joined by `+` (see
/// [`LANGUAGE_PATTERN`]).
pub fn valid(language: &str) -> bool {
    codes(language).count() <= MAX_CODES && codes(language).all(valid_code)
}

/// The codes of `language` that `installed` lacks, in order, each once.
pub fn missing(language: &str, installed: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for code in codes(language) {
        if !installed.iter().any(|have| have == code) && !missing.iter().any(|m| m == code) {
            missing.push(code.to_owned());
        }
    }
    missing
}

/// The Debian package of `code`: `tesseract-ocr-deu`, `tesseract-ocr-chi-sim`.
pub fn package(code: &str) -> String {
    format!("tesseract-ocr-{}", code.replace('_', "-"))
}

/// The languages of `tesseract --list-langs` output (its first line is a heading), sorted,
/// without [`NOT_BOOK_LANGUAGES`] and script models.
pub fn parse_list(output: &str) -> Vec<String> {
    let mut languages: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("List of available languages"))
        .filter(|line| valid_code(line) && !NOT_BOOK_LANGUAGES.contains(line))
        .map(str::to_owned)
        .collect();
    languages.sort();
    languages.dedup();
    languages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_codes_joined_by_plus() {
        for good in ["eng", "deu", "eng+fra", "chi_sim", "deu_latf+eng"] {
            assert!(valid(good), "{good}");
        }
        for bad in [
            "",
            "Eng",
            "eng+",
            "+eng",
            "eng fra",
            "script/Latin",
            "../x",
            "1eng",
            "eng++fra",
        ] {
            assert!(!valid(bad), "{bad}");
        }
        assert!(!valid(&["eng"; 9].join("+")));
        assert!(valid(&["eng"; 8].join("+")));
    }

    #[test]
    fn the_pattern_says_what_valid_accepts() {
        // The pattern's shape, checked by hand: a code, then up to 7 more after `+`.
        assert!(LANGUAGE_PATTERN.contains("{0,31}") && LANGUAGE_PATTERN.contains("{0,7}"));
        assert_eq!(MAX_CODE_CHARS, 32);
        assert_eq!(MAX_CODES, 8);
    }

    #[test]
    fn the_list_drops_its_heading_osd_and_scripts() {
        let output = "List of available languages in \"/usr/share/tesseract-ocr/5/tessdata/\" (4):\n\
                      eng\nosd\ndeu\nscript/Latin\n";
        assert_eq!(parse_list(output), ["deu", "eng"]);
        let installed = parse_list(output);
        assert_eq!(missing("eng+fra+fra+deu", &installed), ["fra"]);
        assert!(missing("deu", &installed).is_empty());
        assert_eq!(package("chi_sim"), "tesseract-ocr-chi-sim");
    }
}
