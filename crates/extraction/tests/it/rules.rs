//! The rules extractor on the sample pages of the `ocr` fixtures (each "Chapter N: Title"
//! then four lines), and on a book with running headers, page numbers and a page that
//! continues the topic before it.

use std::collections::HashSet;

use extraction::{
    Extractor, GuidelineKind, PageInput, RulesExtractor, Topic, normalize_line, running_lines,
};
use tokio_util::sync::CancellationToken;

use GuidelineKind::{Definition, Example, Rule, Tip};

/// Extracts every page in order, each continuing the topic the one before ended in (as the
/// `guidelines` job does).
fn extract_book(texts: &[String]) -> Vec<Vec<Topic>> {
    let pages: Vec<(u32, &str)> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| (index as u32 + 1, text.as_str()))
        .collect();
    RulesExtractor::new()
        .extract_book(&pages)
        .into_iter()
        .map(|page| page.topics)
        .collect()
}

fn sample_texts() -> Vec<String> {
    ocr::testing::fixture_pages()
        .into_iter()
        .map(|page| page.text)
        .collect()
}

fn kinds(topic: &Topic) -> Vec<GuidelineKind> {
    topic
        .guidelines
        .iter()
        .map(|guideline| guideline.kind)
        .collect()
}

#[test]
fn each_sample_page_is_one_topic_titled_by_its_chapter_heading() {
    let texts = sample_texts();
    assert_eq!(texts.len(), 12);
    for (index, topics) in extract_book(&texts).iter().enumerate() {
        let heading = texts[index].lines().next().unwrap().trim();
        assert!(heading.starts_with(&format!("Chapter {}:", index + 1)));
        assert_eq!(topics.len(), 1, "page {}: {topics:?}", index + 1);
        assert_eq!(topics[0].title, heading);
        assert!(
            topics[0].guidelines.len() >= 3,
            "page {}: {topics:?}",
            index + 1
        );
    }
}

#[test]
fn sample_pages_get_sensible_kinds() {
    let pages = extract_book(&sample_texts());
    let expected: [&[GuidelineKind]; 12] = [
        &[Rule, Rule, Rule, Example],
        &[Rule, Rule, Tip],
        &[Rule, Rule, Rule, Tip],
        &[Rule, Rule, Rule, Example],
        &[Definition, Rule, Definition],
        &[Definition, Rule, Rule, Example],
        &[Rule, Rule, Tip],
        &[Rule, Rule, Tip],
        &[Definition, Definition, Example],
        &[Rule, Rule, Rule, Rule],
        &[Rule, Rule, Definition],
        &[Rule, Rule, Rule, Tip],
    ];
    for (index, topics) in pages.iter().enumerate() {
        assert_eq!(
            kinds(&topics[0]),
            expected[index],
            "page {}: {:?}",
            index + 1,
            topics[0].guidelines
        );
    }
}

#[test]
fn sample_guidelines_lose_their_labels_and_keep_their_text() {
    let pages = extract_book(&sample_texts());
    let find = |page: usize, text: &str| {
        pages[page - 1][0]
            .guidelines
            .iter()
            .find(|guideline| guideline.text == text)
            .map(|guideline| guideline.kind)
    };
    let table = [
        (1, "One half plus one third equals five sixths.", Example),
        (
            1,
            "To add two fractions, first find a common denominator.",
            Rule,
        ),
        (
            2,
            "Always simplify the result before you write it down.",
            Rule,
        ),
        (2, "A negative result is still a valid fraction.", Tip),
        (3, "Cancel common factors before you multiply.", Tip),
        (3, "You do not need a common denominator here.", Rule),
        (4, "Turn the second fraction upside down.", Rule),
        (
            5,
            "A decimal is another way to write a fraction.",
            Definition,
        ),
        (5, "A tenth is one part of ten equal parts.", Definition),
        (
            6,
            "Students should check their answers with an estimate.",
            Rule,
        ),
        (8, "Use cross multiplication to find a missing value.", Rule),
        (
            9,
            "Numbers below zero are called negative numbers.",
            Definition,
        ),
        (10, "Then evaluate powers and roots.", Rule),
        (11, "A solution makes the equation true.", Definition),
        (12, "Practice a little every day to remember more.", Tip),
    ];
    for (page, text, kind) in table {
        assert_eq!(find(page, text), Some(kind), "page {page}: {text:?}");
    }
    // Narrative without an instruction is left out.
    for (page, text) in [
        (2, "Subtraction works the same way as addition."),
        (7, "A ratio compares two quantities of the same kind."),
    ] {
        assert_eq!(find(page, text), None, "page {page}: {text:?}");
    }
}

#[test]
fn the_sample_book_has_no_running_lines() {
    assert!(running_lines(sample_texts().iter().map(String::as_str)).is_empty());
}

#[test]
fn running_headers_and_page_numbers_are_ignored_and_a_page_without_heading_continues() {
    let mut texts: Vec<String> = sample_texts()
        .iter()
        .enumerate()
        .map(|(index, text)| {
            format!(
                "Fractions for Everyone\n{}\n\n- {} -\n",
                text.trim_end(),
                index + 1
            )
        })
        .collect();
    texts.push(
        "Fractions for Everyone\nCheck each answer with an estimate.\nKeep your working tidy and\nlabel every step.\n\n- 13 -\n"
            .to_owned(),
    );
    let running = running_lines(texts.iter().map(String::as_str));
    assert_eq!(
        running,
        HashSet::from([normalize_line("Fractions for Everyone")])
    );
    let pages = extract_book(&texts);
    for (index, topics) in pages.iter().take(12).enumerate() {
        assert_eq!(topics.len(), 1, "page {}: {topics:?}", index + 1);
        assert!(
            topics[0]
                .title
                .starts_with(&format!("Chapter {}:", index + 1))
        );
    }
    let last = &pages[12];
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].title, "Chapter 12: Review");
    let texts: Vec<(GuidelineKind, &str)> = last[0]
        .guidelines
        .iter()
        .map(|guideline| (guideline.kind, guideline.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (Rule, "Check each answer with an estimate."),
            (Rule, "Keep your working tidy and label every step."),
        ]
    );
}

#[test]
fn a_heading_less_first_page_is_untitled() {
    let pages = extract_book(&["Always check your answer.\n12".to_owned()]);
    assert_eq!(pages[0].len(), 1);
    assert_eq!(pages[0][0].title, "Untitled");
    assert_eq!(kinds(&pages[0][0]), [Rule]);
}

#[tokio::test]
async fn the_extractor_trait_gives_the_same_topics_offline() {
    let extractor = RulesExtractor::new();
    assert_eq!(extractor.name(), "rules");
    let input = PageInput::new(1, sample_texts()[0].clone());
    let topics = extractor
        .extract(&input, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(topics, extractor.extract_page(&input));
    // Deterministic: a second run is the same.
    assert_eq!(topics, extractor.extract_page(&input));
}

/// Issue 25 (a): "Example: 21 plus 22 equals 43." at the foot of every page differs from
/// page to page by more than a page number, so it is content, not a running footer.
#[test]
fn numbered_examples_at_the_foot_of_every_page_are_no_running_footer() {
    let texts: Vec<String> = (1..=10)
        .map(|page| {
            let heading = if page == 1 { "Chapter 1. Adding\n" } else { "" };
            format!(
                "Fractions for Everyone - {page}\n{heading}Always simplify.\nExample: {page} plus {} equals {}.\n{page}\n",
                page + 1,
                2 * page + 1
            )
        })
        .collect();
    assert_eq!(
        running_lines(texts.iter().map(String::as_str)),
        HashSet::from([normalize_line("Fractions for Everyone - 1")])
    );
    for (index, topics) in extract_book(&texts).iter().enumerate() {
        let page = index + 1;
        let texts: Vec<(GuidelineKind, &str)> = topics[0]
            .guidelines
            .iter()
            .map(|guideline| (guideline.kind, guideline.text.as_str()))
            .collect();
        let example = format!("{page} plus {} equals {}.", page + 1, 2 * page + 1);
        assert_eq!(
            texts,
            [(Rule, "Always simplify."), (Example, example.as_str())],
            "page {page}"
        );
    }
}

#[test]
fn only_folio_numbers_are_ignored_when_lines_are_compared() {
    let same = [
        ("Fractions - 12", "Fractions - 13"),
        ("Fractions for Everyone-14", "Fractions for Everyone - 15"),
        ("12 | Fractions for Everyone", "13 | Fractions for Everyone"),
        ("Page 21 of the book", "Page 22 of the book"),
        ("Maths Press - page 4 of 200", "Maths Press - page 5 of 200"),
        ("p. 7 Fractions", "p. 8 Fractions"),
    ];
    for (a, b) in same {
        assert_eq!(normalize_line(a), normalize_line(b), "{a:?} vs {b:?}");
    }
    let different = [
        (
            "Example: 21 plus 22 equals 43.",
            "Example: 22 plus 23 equals 45.",
        ),
        ("Tip: 3 times 4 is 12.", "Tip: 3 times 5 is 15."),
        ("Step 1: Add the numbers.", "Step 2: Add the numbers."),
    ];
    for (a, b) in different {
        assert_ne!(normalize_line(a), normalize_line(b), "{a:?} vs {b:?}");
    }
}

/// Issue 25 (b): a chapter heading above the "Page N of the book" line pushes it off the
/// first two lines; it is still a running line, and the first rule after it is kept whole.
#[test]
fn a_chapter_opening_page_keeps_the_first_rule_after_its_heading() {
    let texts: Vec<String> = (1..=8)
        .map(|page| {
            let heading = if page % 4 == 1 {
                format!("Chapter {}. Part {}\n", page / 4 + 1, ["One", "Two"][page / 4])
            } else {
                String::new()
            };
            format!(
                "Folio Textbook of Mathematics\n{heading}Page {page} of the book\nCheck your answer with an estimate.\nNever divide by zero.\n{page}\n"
            )
        })
        .collect();
    for (index, topics) in extract_book(&texts).iter().enumerate() {
        let rules: Vec<&str> = topics
            .iter()
            .flat_map(|topic| &topic.guidelines)
            .map(|guideline| guideline.text.as_str())
            .collect();
        assert_eq!(
            rules,
            [
                "Check your answer with an estimate.",
                "Never divide by zero."
            ],
            "page {}: {topics:?}",
            index + 1
        );
    }
}

/// A sentence carried over a page break is one guideline on the page where it starts,
/// listing both pages; the next page does not repeat its end.
#[test]
fn a_sentence_carried_over_a_page_break_is_one_guideline_on_its_first_page() {
    let texts = [
        "Maths for All\nChapter 1. Adding\nAlways write the units.\nTo add two fractions, first find the least common\n1\n",
        "Maths for All\nmultiple of the denominators.\nNever divide by zero.\n2\n",
        "Maths for All\n1. Add the numerators of the two\n3\n",
        "Maths for All\nfractions, then simplify.\n2. Check the result.\n4\n",
    ];
    let pages: Vec<(u32, &str)> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| (index as u32 + 1, *text))
        .collect();
    let book = RulesExtractor::new().extract_book(&pages);
    let summary: Vec<Vec<(GuidelineKind, &str, Vec<u32>)>> = book
        .iter()
        .map(|page| {
            page.topics
                .iter()
                .flat_map(|topic| &topic.guidelines)
                .map(|guideline| {
                    (
                        guideline.kind,
                        guideline.text.as_str(),
                        guideline.pages.clone(),
                    )
                })
                .collect()
        })
        .collect();
    use GuidelineKind::Step;
    assert_eq!(
        summary,
        [
            vec![
                (Rule, "Always write the units.", vec![]),
                (
                    Rule,
                    "To add two fractions, first find the least common multiple of the denominators.",
                    vec![1, 2]
                ),
            ],
            vec![(Rule, "Never divide by zero.", vec![])],
            vec![(
                Step,
                "Add the numerators of the two fractions, then simplify.",
                vec![3, 4]
            )],
            vec![(Step, "Check the result.", vec![])],
        ]
    );
    // A page whose last sentence ended keeps the next page's first line to that page.
    let ended = [
        (1, "Chapter 1. Adding\nAlways write the units.\n"),
        (2, "Never divide by zero.\n"),
    ];
    let book = RulesExtractor::new().extract_book(&ended);
    assert_eq!(book[0].topics[0].guidelines.len(), 1);
    assert!(book[0].topics[0].guidelines[0].pages.is_empty());
    assert_eq!(
        book[1].topics[0].guidelines[0].text,
        "Never divide by zero."
    );
}

#[test]
fn the_page_json_lists_pages_only_for_a_guideline_over_a_page_break() {
    let on_its_page = extraction::Guideline::new(Rule, "Always simplify.");
    assert_eq!(
        serde_json::to_value(&on_its_page).unwrap(),
        serde_json::json!({"kind": "rule", "text": "Always simplify."})
    );
    // Pages written before the field read the same.
    let parsed: extraction::Guideline =
        serde_json::from_str(r#"{"kind": "rule", "text": "Always simplify."}"#).unwrap();
    assert_eq!(parsed, on_its_page);
    let over_a_break = extraction::Guideline {
        pages: vec![4, 5],
        ..extraction::Guideline::new(Rule, "Always simplify.")
    };
    assert_eq!(
        serde_json::to_value(&over_a_break).unwrap(),
        serde_json::json!({"kind": "rule", "text": "Always simplify.", "pages": [4, 5]})
    );
}

/// Tesseract reads a two-column page's footer under the left column, before the right
/// one: a running line the page has at no edge is dropped where OCR put it; one the page
/// has at an edge keeps its twin in the body (a heading).
#[test]
fn a_footer_read_between_two_columns_is_still_a_running_line() {
    let mut texts: Vec<String> = (1..=6)
        .map(|page| format!("Fractions for Everyone - {page}\nAlways simplify.\nNever divide by zero.\nMaths Press\n"))
        .collect();
    texts.push(
        "Fractions for Everyone - 7\nAlways simplify.\nNever divide by zero.\nMaths Press\nCheck the result.\nAlways show your working.\n"
            .to_owned(),
    );
    texts.push(
        "Fractions for Everyone - 8\nAlways simplify.\nMaths Press\nCheck the result.\nAlways show your working.\nMaths Press\n"
            .to_owned(),
    );
    let pages = extract_book(&texts);
    let titles = |page: usize| -> Vec<&str> {
        pages[page]
            .iter()
            .map(|topic| topic.title.as_str())
            .collect()
    };
    assert_eq!(titles(6), ["Untitled"], "{:?}", pages[6]);
    assert_eq!(pages[6][0].guidelines.len(), 4);
    // At the foot of page 8 too: the one after "Always simplify." is a heading.
    assert_eq!(titles(7), ["Untitled", "Maths Press"], "{:?}", pages[7]);
}
