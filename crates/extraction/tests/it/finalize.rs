//! Finalize: topics merged by normalized title, near-duplicate guidelines merged within their
//! topic with their pages, first-appearance order, stable bytes, and a candidate search
//! that stays far from quadratic on a 1,000-page book.

use std::collections::HashSet;

use extraction::finalize::{
    SIMILARITY_THRESHOLD, merge, merge_with_stats, near_duplicates, normalize_title, similarity,
    to_json, to_markdown,
};
use extraction::{FinalGuideline, Guideline, GuidelineKind, PageGuidelines, RulesExtractor, Topic};

use GuidelineKind::{Definition, Example, Rule, Step, Tip};

fn page(number: u32, topics: &[(&str, &[(GuidelineKind, &str)])]) -> PageGuidelines {
    PageGuidelines {
        page: number,
        topics: topics
            .iter()
            .map(|(title, guidelines)| Topic {
                title: (*title).to_owned(),
                guidelines: guidelines
                    .iter()
                    .map(|(kind, text)| Guideline::new(*kind, *text))
                    .collect(),
            })
            .collect(),
    }
}

fn final_guideline(kind: GuidelineKind, text: &str, pages: &[u32]) -> FinalGuideline {
    FinalGuideline {
        kind,
        text: text.to_owned(),
        pages: pages.to_vec(),
    }
}

#[test]
fn titles_normalize_without_case_punctuation_and_numbering() {
    let table = [
        ("Chapter 2. Adding Fractions", "adding fractions"),
        ("2.3 Adding fractions", "adding fractions"),
        ("Chapter 1: Adding fractions", "adding fractions"),
        ("  ADDING   FRACTIONS! ", "adding fractions"),
        ("3) Ratios", "ratios"),
        ("Section 4: Ratios", "ratios"),
        ("Unit 5 - Ratios", "ratios"),
        ("Unit IV: Ratios", "ratios"),
        ("IV. Ratios", "ratios"),
        ("Chapter Two: Ratios", "ratios"),
        ("Appendix A: Tables", "tables"),
        ("1.2.3. Mixed numbers", "mixed numbers"),
        // Words that only look like numbering stay.
        ("Unit fractions", "unit fractions"),
        ("I Like Fractions", "i like fractions"),
        ("3D shapes", "3d shapes"),
        // A title that is only numbering keeps it.
        ("Chapter 2", "chapter 2"),
        ("Chapter 3.", "chapter 3"),
        ("Untitled", "untitled"),
    ];
    for (title, expected) in table {
        assert_eq!(normalize_title(title), expected, "{title:?}");
    }
}

#[test]
fn topics_merge_across_numbering_and_case_keeping_the_first_title_and_every_page() {
    let pages = [
        page(
            1,
            &[(
                "Chapter 2. Adding Fractions",
                &[(Rule, "Find a common denominator.")],
            )],
        ),
        page(2, &[("Chapter 3: Ratios", &[(Rule, "Write the ratio.")])]),
        page(
            4,
            &[("2.3 Adding fractions", &[(Rule, "Keep the denominator.")])],
        ),
        page(5, &[("ADDING FRACTIONS", &[])]),
    ];
    let merged = merge("book-1", &pages);
    assert_eq!(merged.book_id, "book-1");
    let topics: Vec<(&str, &[u32], usize)> = merged
        .topics
        .iter()
        .map(|topic| {
            (
                topic.title.as_str(),
                topic.pages.as_slice(),
                topic.guidelines.len(),
            )
        })
        .collect();
    assert_eq!(
        topics,
        [
            ("Chapter 2. Adding Fractions", &[1, 4, 5][..], 2),
            ("Chapter 3: Ratios", &[2][..], 1),
        ]
    );
}

/// Issue 25 (c): near-duplicates merge within their topic only; a guideline that recurs
/// under another topic stays there too, with that topic's pages.
#[test]
fn near_duplicates_merge_within_a_topic_and_recurring_guidelines_stay_under_each_topic() {
    let pages = [
        page(
            1,
            &[(
                "Adding fractions",
                &[
                    (Rule, "Multiply the denominators together."),
                    (Rule, "Find the least common multiple of the denominators."),
                ],
            )],
        ),
        page(
            2,
            &[(
                "Multiplying fractions",
                &[
                    (Step, "Then multiply the denominators together."),
                    (Rule, "find the least common multiple of the denominators"),
                ],
            )],
        ),
        page(
            3,
            &[(
                "Adding fractions",
                &[(Tip, "Multiply the denominators together!")],
            )],
        ),
        // Out of order on purpose: pages end up ascending.
        page(
            2,
            &[(
                "Multiplying fractions",
                &[(Rule, "Multiply the denominators together.")],
            )],
        ),
    ];
    let merged = merge("book", &pages);
    assert_eq!(merged.topics.len(), 2);
    assert_eq!(
        merged.topics[0].guidelines,
        [
            final_guideline(Rule, "Multiply the denominators together.", &[1, 3]),
            final_guideline(
                Rule,
                "Find the least common multiple of the denominators.",
                &[1]
            ),
        ]
    );
    assert_eq!(merged.topics[1].title, "Multiplying fractions");
    assert_eq!(merged.topics[1].pages, [2]);
    assert_eq!(
        merged.topics[1].guidelines,
        [
            final_guideline(Step, "Then multiply the denominators together.", &[2]),
            final_guideline(
                Rule,
                "find the least common multiple of the denominators",
                &[2]
            ),
        ]
    );
}

#[test]
fn distinct_guidelines_never_merge() {
    // (first, second, similarity, merged)
    let table = [
        (
            "Find the least common multiple of the denominators.",
            "find the least common multiple of the denominators",
            1.0,
            true,
        ),
        (
            "Multiply the denominators together.",
            "Then multiply the denominators together.",
            0.8,
            true,
        ),
        (
            "Line up the decimal points when you add or subtract.",
            "Line up the decimal points when yon add or subtract.",
            9.0 / 11.0,
            true,
        ),
        (
            "Multiply the numerators together.",
            "Multiply the denominators together.",
            0.6,
            false,
        ),
        (
            "Add the numerators.",
            "Subtract the numerators.",
            0.5,
            false,
        ),
        (
            "Always simplify the result.",
            "Always simplify the result before you write it down.",
            4.0 / 9.0,
            false,
        ),
        (
            "Find the least common multiple of the numerators.",
            "Find the least common multiple of the denominators.",
            0.75,
            false,
        ),
        (
            "Add the denominators together.",
            "Never add the denominators together.",
            0.8,
            false,
        ),
        (
            "You can cancel common factors first.",
            "You cannot cancel common factors first.",
            5.0 / 7.0,
            false,
        ),
        (
            "Divide both sides by two.",
            "Divide both sides by three.",
            4.0 / 6.0,
            false,
        ),
    ];
    for (first, second, score, merged) in table {
        let actual = similarity(first, second);
        assert!(
            (actual - score).abs() < 1e-9,
            "{first:?} / {second:?}: {actual}"
        );
        assert_eq!(
            near_duplicates(first, second),
            merged,
            "{first:?} / {second:?}"
        );
        let book = merge(
            "book",
            &[
                page(1, &[("Topic", &[(Rule, first)])]),
                page(2, &[("Topic", &[(Rule, second)])]),
            ],
        );
        let expected_count = if merged { 1 } else { 2 };
        assert_eq!(
            book.topics[0].guidelines.len(),
            expected_count,
            "{first:?} / {second:?}"
        );
    }
    assert_eq!(SIMILARITY_THRESHOLD, 0.8);
}

#[test]
fn guidelines_without_words_merge_only_when_equal() {
    let pages = [page(
        1,
        &[(
            "Symbols",
            &[
                (Example, "+ = ?"),
                (Example, "+  =  ?"),
                (Example, "- = ?"),
                (Rule, "Keep the sign."),
            ],
        )],
    )];
    let merged = merge("book", &pages);
    let texts: Vec<&str> = merged.topics[0]
        .guidelines
        .iter()
        .map(|guideline| guideline.text.as_str())
        .collect();
    assert_eq!(texts, ["+ = ?", "- = ?", "Keep the sign."]);
    assert!(!near_duplicates("+ = ?", "Keep the sign."));
}

#[test]
fn topics_and_guidelines_keep_first_appearance_order() {
    let pages = [
        page(
            1,
            &[
                ("Ratios", &[(Rule, "Write the ratio in its simplest form.")]),
                (
                    "Decimals",
                    &[(Definition, "A decimal is another way to write a fraction.")],
                ),
            ],
        ),
        page(
            2,
            &[
                (
                    "Percentages",
                    &[(Example, "Twenty percent of fifty is ten.")],
                ),
                (
                    "Ratios",
                    &[(Tip, "The order of the parts in a ratio matters.")],
                ),
                ("Decimals", &[(Rule, "Line up the decimal points.")]),
            ],
        ),
    ];
    let merged = merge("book", &pages);
    let order: Vec<(&str, Vec<&str>)> = merged
        .topics
        .iter()
        .map(|topic| {
            let texts = topic
                .guidelines
                .iter()
                .map(|guideline| guideline.text.as_str());
            (topic.title.as_str(), texts.collect())
        })
        .collect();
    assert_eq!(
        order,
        [
            (
                "Ratios",
                vec![
                    "Write the ratio in its simplest form.",
                    "The order of the parts in a ratio matters."
                ]
            ),
            (
                "Decimals",
                vec![
                    "A decimal is another way to write a fraction.",
                    "Line up the decimal points."
                ]
            ),
            ("Percentages", vec!["Twenty percent of fifty is ten."]),
        ]
    );
}

#[test]
fn markdown_has_a_heading_per_topic_and_a_bullet_per_guideline() {
    let pages = [
        page(
            1,
            &[(
                "Chapter 1: Adding fractions",
                &[
                    (Rule, "Find a common denominator."),
                    (Example, "One half plus one third equals five sixths."),
                ],
            )],
        ),
        page(2, &[("Chapter 2: Empty", &[])]),
        page(
            3,
            &[(
                "Adding fractions",
                &[(Example, "One half plus one third equals five sixths.")],
            )],
        ),
    ];
    let markdown = to_markdown(&merge("book", &pages), "Fractions for Everyone");
    assert_eq!(
        markdown,
        "# Fractions for Everyone\n\
         \n\
         ## Chapter 1: Adding fractions\n\
         \n\
         _Pages: 1, 3_\n\
         \n\
         - **rule** Find a common denominator. _(p. 1)_\n\
         - **example** One half plus one third equals five sixths. _(pp. 1, 3)_\n\
         \n\
         ## Chapter 2: Empty\n\
         \n\
         _Page: 2_\n"
    );
}

#[test]
fn markdown_text_cannot_break_the_structure() {
    let pages = [page(
        1,
        &[(
            "Fractions\n## Not a heading *really*",
            &[(Rule, "Use a_b and [links](x) and `code`\n- not a bullet")],
        )],
    )];
    let markdown = to_markdown(&merge("book", &pages), "My\n# Book");
    assert_eq!(
        markdown,
        "# My \\# Book\n\
         \n\
         ## Fractions \\#\\# Not a heading \\*really\\*\n\
         \n\
         _Page: 1_\n\
         \n\
         - **rule** Use a\\_b and \\[links\\](x) and \\`code\\` - not a bullet _(p. 1)_\n"
    );
    assert_eq!(
        markdown
            .lines()
            .filter(|line| line.starts_with('#'))
            .count(),
        2
    );
}

/// The sample pages through the rules extractor, as the `guidelines` job writes them.
fn sample_book() -> Vec<PageGuidelines> {
    let fixtures = ocr::testing::fixture_pages();
    let pages: Vec<(u32, &str)> = fixtures
        .iter()
        .map(|fixture| (fixture.number, fixture.text.as_str()))
        .collect();
    RulesExtractor::new().extract_book(&pages)
}

#[test]
fn a_second_run_writes_identical_bytes() {
    let mut pages = sample_book();
    // The same guidelines again on a later page: merged, with both pages.
    let mut repeat = pages[0].clone();
    repeat.page = 13;
    pages.push(repeat);
    let first = merge("book", &pages);
    let second = merge("book", &pages);
    assert_eq!(to_json(&first), to_json(&second));
    assert_eq!(
        to_markdown(&first, "Fractions"),
        to_markdown(&second, "Fractions")
    );
    assert_eq!(first.topics.len(), 12);
    assert_eq!(first.topics[0].pages, [1, 13]);
    assert!(
        first.topics[0]
            .guidelines
            .iter()
            .all(|guideline| guideline.pages == [1, 13])
    );
    let json = to_json(&first);
    assert!(json.ends_with(b"}\n"));
    let parsed: extraction::FinalGuidelines = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed, first);
}

/// A deterministic pseudo-random sequence (a 64-bit LCG), so the big book is the same on
/// every run.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

/// A pronounceable made-up word per index ("bakelo").
fn made_up_word(mut index: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ba", "ke", "lo", "mi", "nu", "ra", "se", "ti", "vo", "zu", "pa", "de", "fi", "go", "hu",
        "je",
    ];
    let mut word = String::new();
    for _ in 0..3 {
        word.push_str(SYLLABLES[index % SYLLABLES.len()]);
        index /= SYLLABLES.len();
    }
    word
}

#[test]
fn a_thousand_page_book_merges_with_far_fewer_comparisons_than_pairs() {
    const PAGES: u32 = 1_000;
    const PER_PAGE: usize = 10;
    const VERBS: [&str; 12] = [
        "Add", "Find", "Write", "Check", "Multiply", "Divide", "Draw", "Compare", "Round",
        "Simplify", "Measure", "Count",
    ];
    const COMMON: [&str; 10] = [
        "numbers",
        "fractions",
        "answer",
        "result",
        "table",
        "values",
        "sides",
        "units",
        "parts",
        "steps",
    ];
    let vocabulary: Vec<String> = (0..4_000).map(made_up_word).collect();
    let mut sequence = Sequence(42);
    // The guidelines written so far in the current chapter (a topic of 20 pages).
    let mut written: Vec<String> = Vec::new();
    let mut repeats = 0;
    let pages: Vec<PageGuidelines> = (1..=PAGES)
        .map(|number| {
            if number % 20 == 1 {
                written.clear();
            }
            let guidelines: Vec<Guideline> = (0..PER_PAGE)
                .map(|slot| {
                    // One guideline in five repeats an earlier one of its topic, as books do.
                    let text = if slot % 5 == 4 && written.len() > 20 {
                        repeats += 1;
                        let earlier = &written[sequence.next(written.len())];
                        if repeats % 2 == 0 {
                            format!("Then {}", earlier.to_lowercase())
                        } else {
                            earlier.clone()
                        }
                    } else {
                        let text = format!(
                            "{} the {} {} of the {} before you {} the {} {}.",
                            VERBS[sequence.next(VERBS.len())],
                            vocabulary[sequence.next(vocabulary.len())],
                            COMMON[sequence.next(COMMON.len())],
                            vocabulary[sequence.next(vocabulary.len())],
                            VERBS[sequence.next(VERBS.len())].to_lowercase(),
                            COMMON[sequence.next(COMMON.len())],
                            vocabulary[sequence.next(vocabulary.len())],
                        );
                        written.push(text.clone());
                        text
                    };
                    Guideline::new(Rule, text)
                })
                .collect();
            PageGuidelines {
                page: number,
                topics: vec![Topic {
                    title: format!(
                        "Chapter {}: {}",
                        (number - 1) / 20 + 1,
                        made_up_word((number as usize - 1) / 20)
                    ),
                    guidelines,
                }],
            }
        })
        .collect();

    let started = std::time::Instant::now();
    let (merged, stats) = merge_with_stats("big", &pages);
    let elapsed = started.elapsed();

    let n = (PAGES as usize * PER_PAGE) as u64;
    assert_eq!(stats.guidelines as u64, n);
    assert_eq!(merged.topics.len(), 50);
    // Every repeat merged into what it repeats.
    assert_eq!(stats.kept, stats.guidelines - repeats);
    let kept: usize = merged
        .topics
        .iter()
        .map(|topic| topic.guidelines.len())
        .sum();
    assert_eq!(kept, stats.kept);
    let texts: HashSet<&str> = merged
        .topics
        .iter()
        .flat_map(|topic| &topic.guidelines)
        .map(|guideline| guideline.text.as_str())
        .collect();
    assert_eq!(texts.len(), kept);
    // Far below the n^2 / 2 pairs a plain search would compare.
    assert!(
        stats.candidates < 20 * n,
        "{} candidates for {n} guidelines",
        stats.candidates
    );
    assert!(stats.comparisons <= stats.candidates);
    eprintln!("merged {n} guidelines in {elapsed:?}: {stats:?}");
}

#[test]
fn a_guideline_over_a_page_break_keeps_both_pages_in_the_final_document() {
    let mut pages = vec![
        page(4, &[("Adding fractions", &[(Rule, "Always simplify.")])]),
        page(5, &[("Ratios", &[(Rule, "Write the ratio.")])]),
    ];
    pages[0].topics[0].guidelines.push(Guideline {
        pages: vec![4, 5],
        ..Guideline::new(Rule, "Find the least common multiple of the denominators.")
    });
    let merged = merge("book", &pages);
    assert_eq!(merged.topics[0].pages, [4, 5]);
    assert_eq!(
        merged.topics[0].guidelines[1],
        final_guideline(
            Rule,
            "Find the least common multiple of the denominators.",
            &[4, 5]
        )
    );
}
