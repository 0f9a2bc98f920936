//! Extraction quality on generated books with known truth: the text a perfect OCR would
//! read (fast), and the pages rendered with ImageMagick and read with tesseract (the real
//! chain). Each figure must meet its target.

use extraction::finalize::merge;
use extraction::quality::{self, BookRun, CorpusConfig, Report};
use extraction::{FinalGuidelines, PageGuidelines, RulesExtractor};

fn run_books(books: &[quality::Book], texts: &[Vec<(u32, String)>]) -> Report {
    let extracted: Vec<(Vec<PageGuidelines>, FinalGuidelines)> = books
        .iter()
        .zip(texts)
        .map(|(book, texts)| {
            let pages: Vec<(u32, &str)> = texts
                .iter()
                .map(|(page, text)| (*page, text.as_str()))
                .collect();
            let pages = RulesExtractor::new().extract_book(&pages);
            let document = merge(&book.id, &pages);
            (pages, document)
        })
        .collect();
    let runs: Vec<BookRun<'_>> = books
        .iter()
        .zip(&extracted)
        .map(|(book, (pages, document))| BookRun {
            book,
            pages,
            document,
        })
        .collect();
    quality::score(&runs)
}

fn assert_targets(report: &Report) {
    let shortfalls = report.shortfalls();
    assert!(
        shortfalls.is_empty(),
        "below target: {shortfalls:#?}\n{}\nmisses: {:#?}",
        report.markdown(),
        report.misses
    );
    assert!(
        report.topic_accuracy() >= quality::PRECISION_TARGET,
        "{}",
        report.markdown()
    );
}

#[test]
fn the_generator_is_fixed_by_its_seed_and_covers_every_situation() {
    let config = CorpusConfig::small();
    let first = quality::generate(&config);
    let second = quality::generate(&config);
    let texts = |books: &[quality::Book]| -> Vec<String> {
        books
            .iter()
            .flat_map(|book| book.pages.iter().map(quality::PagePlan::text))
            .collect()
    };
    assert_eq!(texts(&first), texts(&second));
    let report = run_books(
        &first,
        &first
            .iter()
            .map(|book| {
                book.pages
                    .iter()
                    .map(|page| (page.page, page.text()))
                    .collect()
            })
            .collect::<Vec<_>>(),
    );
    for kind in [
        "rule",
        "step",
        "tip",
        "definition",
        "example",
        quality::case::RUNNING_WITH_NUMBERS,
        quality::case::RUNNING_WITHOUT_NUMBERS,
        quality::case::CHAPTER_OPENING,
        quality::case::HEADING_ONLY,
        quality::case::CONTINUED_SECTION,
        quality::case::SECTION_MID_PAGE,
        quality::case::NUMBERS,
        quality::case::WRAPPED_LINES,
        quality::case::PAGE_BREAK,
        quality::case::TWO_COLUMNS,
    ] {
        let figures = report.kinds.get(kind).copied().unwrap_or_default();
        assert!(figures.truth >= 2, "{kind}: {figures:?}");
    }
}

#[test]
fn perfect_ocr_text_meets_every_target() {
    let books = quality::generate(&CorpusConfig::small());
    let texts: Vec<Vec<(u32, String)>> = books
        .iter()
        .map(|book| {
            book.pages
                .iter()
                .map(|page| (page.page, page.text()))
                .collect()
        })
        .collect();
    assert_targets(&run_books(&books, &texts));
}

/// The real chain: every page rendered with `convert` and read with `tesseract`.
#[test]
fn rendered_and_ocr_read_pages_meet_every_target() {
    let books = quality::generate(&CorpusConfig::small());
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<(u32, String)>> = books
        .iter()
        .map(|book| quality::ocr_book(book, dir.path(), 2).expect("convert and tesseract run"))
        .collect();
    assert_targets(&run_books(&books, &texts));
}
