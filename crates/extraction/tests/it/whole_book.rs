//! The 100-page textbook of issue 25, as clean OCR text: 5 chapters of 20 pages, each page
//! with a running header, a "Page N of the book" line, 4 rules drawn from 10, one numbered
//! example and a page number. Every example and every rule must come through extraction,
//! and finalize must keep each chapter's rules under that chapter.

use std::collections::BTreeMap;

use extraction::finalize::{merge, to_json, to_markdown};
use extraction::{GuidelineKind, PageGuidelines, RulesExtractor};

const CHAPTERS: [&str; 5] = ["Counting", "Fractions", "Angles", "Decimals", "Ratios"];

const RULES: [&str; 10] = [
    "Always simplify the result before you write it down.",
    "Never divide by zero.",
    "Check your answer with an estimate.",
    "Write the units after every measurement.",
    "Line up the decimal points before you add.",
    "Draw a picture when a problem has many parts.",
    "Use a ruler for every straight line.",
    "Read the question twice before you start.",
    "Keep the denominator when you add like fractions.",
    "Always show your working.",
];

/// The page's 4 rules: indices into [`RULES`], distinct, in a page-dependent order.
fn rules_of(page: u32) -> Vec<usize> {
    let mut state = u64::from(page) * 2_654_435_761 + 12_345;
    let mut picked = Vec::new();
    while picked.len() < 4 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let rule = ((state >> 33) % RULES.len() as u64) as usize;
        if !picked.contains(&rule) {
            picked.push(rule);
        }
    }
    picked
}

fn example_of(page: u32) -> String {
    format!("Example: {page} plus {} equals {}.", page + 1, 2 * page + 1)
}

fn chapter_of(page: u32) -> usize {
    (page as usize - 1) / 20
}

/// The OCR text of `page` (1-based).
fn page_text(page: u32) -> String {
    let mut text = String::from("Folio Textbook of Mathematics\n");
    if (page - 1).is_multiple_of(20) {
        let chapter = chapter_of(page);
        text.push_str(&format!(
            "\nChapter {}. {}\n\n",
            chapter + 1,
            CHAPTERS[chapter]
        ));
    }
    text.push_str(&format!("Page {page} of the book\n\n"));
    for rule in rules_of(page) {
        text.push_str(RULES[rule]);
        text.push('\n');
    }
    text.push_str(&format!("\n{}\n\n{page}\n", example_of(page)));
    text
}

/// Every page through the rules extractor, in order, as the `guidelines` job runs them.
fn extract_book(texts: &[String]) -> Vec<PageGuidelines> {
    let pages: Vec<(u32, &str)> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| (index as u32 + 1, text.as_str()))
        .collect();
    RulesExtractor::new().extract_book(&pages)
}

fn book() -> (Vec<String>, Vec<PageGuidelines>) {
    let texts: Vec<String> = (1..=100).map(page_text).collect();
    let pages = extract_book(&texts);
    (texts, pages)
}

fn texts_of(page: &PageGuidelines, kind: GuidelineKind) -> Vec<&str> {
    page.topics
        .iter()
        .flat_map(|topic| &topic.guidelines)
        .filter(|guideline| guideline.kind == kind)
        .map(|guideline| guideline.text.as_str())
        .collect()
}

#[test]
fn every_numbered_example_at_the_foot_of_a_page_is_kept() {
    let (_, pages) = book();
    let kept = pages
        .iter()
        .filter(|page| {
            let expected = example_of(page.page);
            let expected = expected.strip_prefix("Example: ").unwrap();
            texts_of(page, GuidelineKind::Example) == [expected]
        })
        .count();
    assert_eq!(kept, 100, "examples kept of 100");
}

#[test]
fn every_rule_of_every_page_is_kept_chapter_openings_included() {
    let (_, pages) = book();
    let mut lost = Vec::new();
    for page in &pages {
        let expected: Vec<&str> = rules_of(page.page)
            .iter()
            .map(|rule| RULES[*rule])
            .collect();
        if texts_of(page, GuidelineKind::Rule) != expected {
            lost.push(page.page);
        }
    }
    assert!(lost.is_empty(), "pages with rules lost or wrong: {lost:?}");
}

#[test]
fn each_chapter_of_the_final_document_lists_the_rules_of_its_pages() {
    let (_, pages) = book();
    let merged = merge("textbook", &pages);
    let titles: Vec<&str> = merged
        .topics
        .iter()
        .map(|topic| topic.title.as_str())
        .collect();
    let expected_titles: Vec<String> = CHAPTERS
        .iter()
        .enumerate()
        .map(|(index, title)| format!("Chapter {}. {title}", index + 1))
        .collect();
    assert_eq!(titles, expected_titles);
    for (chapter, topic) in merged.topics.iter().enumerate() {
        // Each rule of the chapter with the chapter's pages it is on, and nothing else.
        let mut expected: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for page in (chapter as u32 * 20 + 1)..=(chapter as u32 * 20 + 20) {
            for rule in rules_of(page) {
                expected.entry(RULES[rule]).or_default().push(page);
            }
        }
        let actual: BTreeMap<&str, Vec<u32>> = topic
            .guidelines
            .iter()
            .filter(|guideline| guideline.kind == GuidelineKind::Rule)
            .map(|guideline| (guideline.text.as_str(), guideline.pages.clone()))
            .collect();
        assert_eq!(actual, expected, "chapter {}", chapter + 1);
        let examples = topic
            .guidelines
            .iter()
            .filter(|guideline| guideline.kind == GuidelineKind::Example)
            .count();
        assert_eq!(
            examples,
            20,
            "chapter {}: one example per page",
            chapter + 1
        );
    }
    // The same pages give the same bytes.
    let again = merge("textbook", &pages);
    assert_eq!(to_json(&merged), to_json(&again));
    assert_eq!(
        to_markdown(&merged, "Textbook"),
        to_markdown(&again, "Textbook")
    );
}
