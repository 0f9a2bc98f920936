//! The rules extractor on the sample pages of the `ocr` fixtures (each "Chapter N: Title"
//! then four lines), and on a book with running headers, page numbers and a page that
//! continues the topic before it.

use std::collections::HashSet;
use std::sync::Arc;

use extraction::{
    Extractor, GuidelineKind, PageInput, RulesExtractor, Topic, normalize_line, running_lines,
};
use tokio_util::sync::CancellationToken;

use GuidelineKind::{Definition, Example, Rule, Tip};

/// Extracts every page in order, each continuing the topic the one before ended in (as the
/// `guidelines` job does).
fn extract_book(texts: &[String]) -> Vec<Vec<Topic>> {
    let running = Arc::new(running_lines(texts.iter().map(String::as_str)));
    let extractor = RulesExtractor::new();
    let mut previous_topic: Option<String> = None;
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let topics = extractor.extract_page(&PageInput {
                page: index as u32 + 1,
                text: text.clone(),
                previous_topic: previous_topic.clone(),
                running_lines: running.clone(),
            });
            if let Some(last) = topics.last() {
                previous_topic = Some(last.title.clone());
            }
            topics
        })
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
    let input = PageInput {
        page: 1,
        text: sample_texts()[0].clone(),
        previous_topic: None,
        running_lines: Arc::new(HashSet::new()),
    };
    let topics = extractor
        .extract(&input, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(topics, extractor.extract_page(&input));
    // Deterministic: a second run is the same.
    assert_eq!(topics, extractor.extract_page(&input));
}
