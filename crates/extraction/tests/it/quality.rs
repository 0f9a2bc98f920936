//! Extraction quality on generated books with known truth: the text a perfect OCR would
//! read (fast), and the pages rendered with ImageMagick and read with tesseract (the real
//! chain). Each figure must meet its target.

use std::collections::BTreeMap;

use extraction::quality::{self, CorpusConfig, Measured, Report};

/// The books' pages (`texts`, by book id) extracted by `measured`, finalized and scored.
fn run_books(
    books: &[quality::Book],
    texts: &BTreeMap<String, Vec<(u32, String)>>,
    measured: Measured,
) -> Report {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(quality::run(books, texts, &measured))
        .expect("every page is extracted")
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
    let report = run_books(&first, &quality::perfect_texts(&first), Measured::Rules);
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
    let texts = quality::perfect_texts(&books);
    assert_targets(&run_books(&books, &texts, Measured::Rules));
}

/// The `openai` extractor over HTTP, with its prompt, schema, answer parsing and page-break
/// handling, against a fake model that reads perfectly: what is lost is Folio's.
#[test]
fn the_openai_extractor_with_a_perfect_reader_meets_every_target() {
    let books = quality::generate(&CorpusConfig::small());
    let texts = quality::perfect_texts(&books);
    assert_targets(&run_books(&books, &texts, Measured::OpenAiReader));
}

/// The real chain: every page rendered with `convert` and read with `tesseract`.
#[test]
fn rendered_and_ocr_read_pages_meet_every_target() {
    let books = quality::generate(&CorpusConfig::small());
    let dir = tempfile::tempdir().unwrap();
    let texts: BTreeMap<String, Vec<(u32, String)>> = books
        .iter()
        .map(|book| {
            let texts = quality::ocr_book(book, dir.path(), 2).expect("convert and tesseract run");
            (book.id.clone(), texts)
        })
        .collect();
    assert_targets(&run_books(&books, &texts, Measured::Rules));
}
