//! Finalization (SPEC 4.4): per-page guidelines merged into one document.
//!
//! - Topics merge by [`normalize_title`]: "Chapter 2. Adding Fractions" and "2.3 Adding
//!   fractions" are one topic, titled as first seen, with every page it appears on.
//! - A guideline merges into an earlier one of the same topic when the two are
//!   [`near_duplicates`]: token-set similarity ([`similarity`]) at or above
//!   [`SIMILARITY_THRESHOLD`] and the same polarity (both negated or neither). The earlier
//!   one keeps its kind and text and gains the pages of the later one, which does not
//!   appear again in that topic. A guideline is only compared with the guidelines kept so
//!   far (the first of each group), so merges never chain away from what the kept text
//!   says. Merging stays within a topic so that every topic is whole on its own: a
//!   guideline that recurs in three chapters is listed under each of them with that
//!   chapter's pages (merging across the book emptied every chapter after the first).
//! - Candidate search is not quadratic: prefix filtering over an inverted index (see
//!   [`merge_with_stats`]).
//! - Order is first appearance for topics and guidelines; pages are ascending. The same
//!   input always gives the same bytes from [`to_json`] and [`to_markdown`].

use std::collections::HashMap;

use crate::numbering::{NUMBER_WORDS, NUMBERING_KEYWORDS, is_roman_numeral};
use crate::{FinalGuideline, FinalGuidelines, FinalTopic, Guideline, PageGuidelines};

/// Two guidelines at or above this [`similarity`] (and of the same polarity) are one.
///
/// Jaccard similarity over the sets of normalized words, with every word counted (no stop
/// words dropped: "do", "not" and "no" are short words that flip a guideline's meaning,
/// and the short sentences of guidelines have few words to spare). At 0.8 one extra word
/// merges from four words up, and one changed word only from nine distinct words up, so a
/// long sentence survives an OCR misread while two short guidelines that differ in their
/// one content word stay apart:
///
/// | first | second | similarity | merged |
/// |---|---|---|---|
/// | Find the least common multiple of the denominators. | find the least common multiple of the denominators | 1.0 | yes |
/// | Multiply the denominators together. | Then multiply the denominators together. | 0.8 | yes |
/// | Line up the decimal points when you add or subtract. | Line up the decimal points when yon add or subtract. | 0.82 | yes |
/// | Multiply the numerators together. | Multiply the denominators together. | 0.6 | no |
/// | Add the numerators. | Subtract the numerators. | 0.5 | no |
/// | Always simplify the result. | Always simplify the result before you write it down. | 0.44 | no |
/// | Find the least common multiple of the numerators. | Find the least common multiple of the denominators. | 0.75 | no |
/// | Add the denominators together. | Never add the denominators together. | 0.8 | no: polarity |
pub const SIMILARITY_THRESHOLD: f64 = 0.8;

/// Words that negate a guideline: two guidelines merge only if both or neither contain one.
const NEGATIONS: &[&str] = &[
    "cannot", "cant", "didnt", "doesnt", "dont", "isnt", "mustnt", "neednt", "never", "no", "none",
    "nor", "not", "shouldnt", "without", "wont",
];

/// A title as compared for merging topics: lowercase, punctuation and extra whitespace
/// dropped, and a leading numbering removed: "Chapter 2.", "Section 4:", "Unit IV -",
/// "Chapter Two", "2.1", "3)", "IV." (a roman numeral only with its dot, colon or
/// parenthesis, so "I" and "Mix" as first words stay). A title that is nothing but its
/// numbering ("Chapter 2") keeps it, so that chapters 2 and 3 stay apart.
///
/// "Chapter 2. Adding Fractions" and "2.3 Adding fractions" both give "adding fractions".
pub fn normalize_title(title: &str) -> String {
    let trimmed = title.trim_start();
    // A roman numeral with its separator, read before punctuation goes.
    let roman_len = trimmed
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (roman, after_roman) = trimmed.split_at(roman_len);
    let unnumbered = if is_roman_numeral(roman) && after_roman.starts_with(['.', ')', ':']) {
        after_roman
    } else {
        title
    };
    let words = words(unnumbered);
    let mut start = 0;
    if words.len() >= 2
        && NUMBERING_KEYWORDS.contains(&words[0].as_str())
        && is_number_word(&words[1])
    {
        start = 2;
    }
    while words
        .get(start)
        .is_some_and(|word| word.bytes().all(|byte| byte.is_ascii_digit()))
    {
        start += 1;
    }
    if start == words.len() {
        // Nothing but numbering: keep it all.
        return self::words(title).join(" ");
    }
    words[start..].join(" ")
}

/// A number after a numbering keyword: digits, a roman numeral, a spelled-out number up to
/// twenty or a single letter ("Appendix A").
fn is_number_word(word: &str) -> bool {
    word.bytes().all(|byte| byte.is_ascii_digit())
        || is_roman_numeral(word)
        || NUMBER_WORDS.contains(&word)
        || word.chars().count() == 1
}

/// The normalized words of a text: lowercase, split at anything but letters, digits and
/// apostrophes, apostrophes dropped ("Don't" -> "dont").
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|word| {
            word.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

/// The set of normalized words of a text, sorted.
fn token_set(text: &str) -> Vec<String> {
    let mut tokens = words(text);
    tokens.sort();
    tokens.dedup();
    tokens
}

/// Jaccard similarity of the sets of normalized words of `a` and `b` (lowercase,
/// punctuation dropped): shared words over all words, from 0.0 to 1.0. Two texts without
/// any word are 1.0 (the same empty set); one without words and one with are 0.0.
pub fn similarity(a: &str, b: &str) -> f64 {
    let a = token_set(a);
    let b = token_set(b);
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a
        .iter()
        .filter(|token| b.binary_search(token).is_ok())
        .count();
    jaccard(shared, a.len(), b.len())
}

fn jaccard(shared: usize, a_len: usize, b_len: usize) -> f64 {
    shared as f64 / (a_len + b_len - shared) as f64
}

/// Whether `later` merges into `earlier` (see [`SIMILARITY_THRESHOLD`]): the same polarity,
/// and [`similarity`] at or above the threshold; texts without words only merge when
/// equal (after collapsing whitespace).
pub fn near_duplicates(earlier: &str, later: &str) -> bool {
    let (a, b) = (token_set(earlier), token_set(later));
    if a.is_empty() || b.is_empty() {
        return a.is_empty() && b.is_empty() && collapsed(earlier) == collapsed(later);
    }
    is_negated(&a) == is_negated(&b) && similarity(earlier, later) >= SIMILARITY_THRESHOLD
}

fn is_negated(tokens: &[String]) -> bool {
    tokens
        .iter()
        .any(|token| NEGATIONS.contains(&token.as_str()))
}

fn collapsed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The least number of shared tokens that lets a set of `len` tokens reach the threshold
/// with any other set: `ceil(t * len)`, rounded down a hair so that float error can only
/// make the prefix longer (never unsound).
fn min_shared(len: usize) -> usize {
    ((SIMILARITY_THRESHOLD * len as f64 - 1e-9).ceil() as usize).max(1)
}

/// How [`merge_with_stats`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MergeStats {
    /// Guidelines read from the pages.
    pub guidelines: usize,
    /// Guidelines kept (the rest merged into them).
    pub kept: usize,
    /// Distinct (new guideline, kept guideline) pairs the inverted index proposed.
    pub candidates: u64,
    /// Pairs whose similarity was computed (candidates that passed the size and polarity
    /// filters).
    pub comparisons: u64,
}

/// Merges the pages' guidelines (in page order) into the book's final guidelines.
pub fn merge(book_id: &str, pages: &[PageGuidelines]) -> FinalGuidelines {
    merge_with_stats(book_id, pages).0
}

/// One guideline read from a page.
struct Entry<'a> {
    topic: usize,
    /// The page it was read from, or every page its text runs over.
    pages: Vec<u32>,
    kind: crate::GuidelineKind,
    text: &'a str,
    /// Token ids, rarest first (the global order of the prefix filter).
    tokens: Vec<u32>,
    negated: bool,
}

impl<'a> Entry<'a> {
    /// The entry of a guideline in topic `topic` on page `page`, its tokens numbered by `ids`.
    fn new(topic: usize, page: u32, guideline: &'a Guideline, ids: &mut TokenIds) -> Self {
        let pages = if guideline.pages.is_empty() {
            vec![page]
        } else {
            guideline.pages.clone()
        };
        let tokens = token_set(&guideline.text);
        let negated = is_negated(&tokens);
        Entry {
            topic,
            pages,
            kind: guideline.kind,
            text: &guideline.text,
            tokens: tokens.into_iter().map(|token| ids.id(token)).collect(),
            negated,
        }
    }
}

/// [`merge`], and how many candidate pairs it looked at.
///
/// Near-duplicate search uses prefix filtering: with every token set sorted in one global
/// order (rarest token in the book first, ties by the token), two sets with Jaccard
/// similarity `>= t` share at least `o = ceil(t * max(|A|, |B|))` tokens, and then the first
/// `|A| - ceil(t * |A|) + 1` tokens of `A` and the first `|B| - ceil(t * |B|) + 1` of `B`
/// share a token. So each kept guideline indexes only its prefix tokens (keyed by its
/// topic too: merges stay within a topic), and a new guideline is compared only with the
/// kept guidelines of its topic found under its own prefix tokens (rare tokens, short lists), then filtered by size (`t * |A| <= |B| <= |A| / t`) and
/// polarity before the exact similarity. Among those at or above the threshold the earliest
/// kept guideline wins. Guidelines without any word are matched by exact text instead.
pub fn merge_with_stats(book_id: &str, pages: &[PageGuidelines]) -> (FinalGuidelines, MergeStats) {
    let (mut topics, mut entries, token_names) = read_pages(pages);
    order_tokens_rarest_first(&mut entries, &token_names);
    let (groups, stats) = group_near_duplicates(&entries);
    add_kept_guidelines(&mut topics, &entries, groups);
    for topic in &mut topics {
        topic.pages.sort_unstable();
        topic.pages.dedup();
    }
    let merged = FinalGuidelines {
        book_id: book_id.to_owned(),
        topics,
    };
    (merged, stats)
}

/// The book's topics (with their pages, no guidelines yet), its guidelines in page order,
/// and the token of each token id.
fn read_pages(pages: &[PageGuidelines]) -> (Vec<FinalTopic>, Vec<Entry<'_>>, Vec<String>) {
    let mut topics = Topics::default();
    let mut token_ids = TokenIds::default();
    let mut entries = Vec::new();
    for page in pages {
        for topic in &page.topics {
            let topic_at = topics.add_page(&topic.title, page.page);
            for guideline in &topic.guidelines {
                // A topic is on every page its guidelines' text comes from.
                topics.topics[topic_at]
                    .pages
                    .extend(guideline.pages.iter().copied());
                entries.push(Entry::new(topic_at, page.page, guideline, &mut token_ids));
            }
        }
    }
    (topics.topics, entries, token_ids.names)
}

/// Topics merged by [`normalize_title`], in first-appearance order.
#[derive(Default)]
struct Topics {
    topics: Vec<FinalTopic>,
    by_key: HashMap<String, usize>,
}

impl Topics {
    /// The topic of `title` (a new one titled so if none matches yet), with `page` added.
    fn add_page(&mut self, title: &str, page: u32) -> usize {
        let topics = &mut self.topics;
        let topic_at = *self
            .by_key
            .entry(normalize_title(title))
            .or_insert_with(|| {
                topics.push(FinalTopic {
                    title: title.to_owned(),
                    pages: Vec::new(),
                    guidelines: Vec::new(),
                });
                topics.len() - 1
            });
        self.topics[topic_at].pages.push(page);
        topic_at
    }
}

/// Token ids in first-seen order.
#[derive(Default)]
struct TokenIds {
    ids: HashMap<String, u32>,
    /// The token of each id.
    names: Vec<String>,
}

impl TokenIds {
    fn id(&mut self, token: String) -> u32 {
        let next_id = self.names.len() as u32;
        let names = &mut self.names;
        *self.ids.entry(token).or_insert_with_key(|token| {
            names.push(token.clone());
            next_id
        })
    }
}

/// Renumbers every entry's tokens by their rank in the global order and sorts them.
fn order_tokens_rarest_first(entries: &mut [Entry<'_>], token_names: &[String]) {
    let rank = rarest_first_ranks(entries, token_names);
    for entry in entries {
        for token in &mut entry.tokens {
            *token = rank[*token as usize];
        }
        entry.tokens.sort_unstable();
    }
}

/// The rank of each token id in the global order.
fn rarest_first_ranks(entries: &[Entry<'_>], token_names: &[String]) -> Vec<u32> {
    // The global order: rarest first, ties by the token itself (deterministic, whatever the
    // hash maps did).
    let mut frequency = vec![0_u32; token_names.len()];
    for entry in entries {
        for token in &entry.tokens {
            frequency[*token as usize] += 1;
        }
    }
    let mut order: Vec<u32> = (0..token_names.len() as u32).collect();
    order.sort_by(|a, b| {
        (frequency[*a as usize], &token_names[*a as usize])
            .cmp(&(frequency[*b as usize], &token_names[*b as usize]))
    });
    let mut rank = vec![0_u32; token_names.len()];
    for (position, token) in order.iter().enumerate() {
        rank[*token as usize] = position as u32;
    }
    rank
}

/// A kept guideline: the entry it comes from, and the pages of its group.
struct Group {
    entry: usize,
    pages: Vec<u32>,
}

/// Each entry merged into the earliest kept guideline it near-duplicates, or kept.
fn group_near_duplicates(entries: &[Entry<'_>]) -> (Vec<Group>, MergeStats) {
    let mut kept = Kept::default();
    kept.stats.guidelines = entries.len();
    for (entry_at, entry) in entries.iter().enumerate() {
        match kept.find(entries, entry_at) {
            Some(kept_at) => kept.groups[kept_at]
                .pages
                .extend(entry.pages.iter().copied()),
            None => kept.keep(entry_at, entry),
        }
    }
    kept.stats.kept = kept.groups.len();
    (kept.groups, kept.stats)
}

/// The guidelines kept so far, and the indexes that find them.
#[derive(Default)]
struct Kept {
    groups: Vec<Group>,
    /// (Topic, prefix token rank) -> kept guidelines of that topic (ascending ids).
    index: HashMap<(usize, u32), Vec<usize>>,
    /// (Topic, collapsed text) -> the kept guideline without words.
    without_words: HashMap<(usize, String), usize>,
    /// The last entry that proposed each kept guideline (so each pair counts once).
    seen_by: Vec<usize>,
    stats: MergeStats,
}

impl Kept {
    /// The kept guideline that entry `entry_at` merges into, if any.
    fn find(&mut self, entries: &[Entry<'_>], entry_at: usize) -> Option<usize> {
        let entry = &entries[entry_at];
        if entry.tokens.is_empty() {
            self.without_words
                .get(&(entry.topic, collapsed(entry.text)))
                .copied()
        } else {
            self.earliest_similar(entries, entry_at)
        }
    }

    /// The earliest kept guideline under the entry's prefix tokens that reaches the threshold.
    fn earliest_similar(&mut self, entries: &[Entry<'_>], entry_at: usize) -> Option<usize> {
        let entry = &entries[entry_at];
        let mut best: Option<usize> = None;
        for token in prefix(&entry.tokens) {
            let key = (entry.topic, *token);
            for &kept_at in self.index.get(&key).map_or(&[][..], Vec::as_slice) {
                if self.seen_by[kept_at] == entry_at + 1 {
                    continue;
                }
                self.seen_by[kept_at] = entry_at + 1;
                self.stats.candidates += 1;
                if best.is_some_and(|best| best < kept_at) {
                    continue;
                }
                let other = &entries[self.groups[kept_at].entry];
                if !sizes_and_polarity_allow(entry, other) {
                    continue;
                }
                self.stats.comparisons += 1;
                let shared = shared_sorted(&entry.tokens, &other.tokens);
                if jaccard(shared, entry.tokens.len(), other.tokens.len()) >= SIMILARITY_THRESHOLD {
                    best = Some(kept_at);
                }
            }
        }
        best
    }

    /// Keeps entry `entry_at` as a new group, indexed by its prefix tokens (or its text).
    fn keep(&mut self, entry_at: usize, entry: &Entry<'_>) {
        let kept_at = self.groups.len();
        self.groups.push(Group {
            entry: entry_at,
            pages: entry.pages.clone(),
        });
        self.seen_by.push(0);
        if entry.tokens.is_empty() {
            self.without_words
                .insert((entry.topic, collapsed(entry.text)), kept_at);
        } else {
            for token in prefix(&entry.tokens) {
                self.index
                    .entry((entry.topic, *token))
                    .or_default()
                    .push(kept_at);
            }
        }
    }
}

/// The prefix tokens of a non-empty token list (see [`merge_with_stats`]).
fn prefix(tokens: &[u32]) -> &[u32] {
    let len = tokens.len();
    &tokens[..len - min_shared(len) + 1]
}

/// Whether two entries' sizes (`t * |A| <= |B| <= |A| / t`) and polarity let them merge.
fn sizes_and_polarity_allow(entry: &Entry<'_>, other: &Entry<'_>) -> bool {
    let (len, other_len) = (entry.tokens.len(), other.tokens.len());
    let (small, large) = (len.min(other_len), len.max(other_len));
    (large as f64) * SIMILARITY_THRESHOLD <= small as f64 + 1e-9 && other.negated == entry.negated
}

/// Each kept guideline into its topic, in the order kept, with its pages ascending.
fn add_kept_guidelines(topics: &mut [FinalTopic], entries: &[Entry<'_>], groups: Vec<Group>) {
    for Group { entry, mut pages } in groups {
        let entry = &entries[entry];
        pages.sort_unstable();
        pages.dedup();
        topics[entry.topic].guidelines.push(FinalGuideline {
            kind: entry.kind,
            text: entry.text.to_owned(),
            pages,
        });
    }
}

/// The number of tokens two ascending lists share.
fn shared_sorted(a: &[u32], b: &[u32]) -> usize {
    let (mut i, mut j, mut shared) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    shared
}

/// `final.json`: pretty JSON with a trailing newline; the same input gives the same bytes.
pub fn to_json(guidelines: &FinalGuidelines) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(guidelines)
        .unwrap_or_else(|error| unreachable!("guidelines always serialize: {error}"));
    json.push(b'\n');
    json
}

/// `final.md`: a heading per topic, one bullet per guideline with its kind and pages.
///
/// ```text
/// # Fractions for Everyone
///
/// ## Chapter 1: Adding fractions
///
/// _Pages: 1, 3_
///
/// - **rule** Find a common denominator. _(p. 1)_
/// - **example** One half plus one third equals five sixths. _(pp. 1, 3)_
///
/// ## Chapter 2: Subtracting fractions
/// ...
/// ```
///
/// Titles and texts have their whitespace (newlines included) collapsed and the characters
/// that Markdown would read as markup (backslash, backtick, `*`, `_`, `[`, `]`, `<`, `>`
/// and `#`) escaped with a backslash, so no text can break the structure. An empty title shows as "Untitled". The output ends with
/// one newline.
pub fn to_markdown(guidelines: &FinalGuidelines, book_title: &str) -> String {
    let mut markdown = format!("# {}\n", markdown_title(book_title));
    for topic in &guidelines.topics {
        markdown.push_str(&format!(
            "\n## {}\n\n_{}_\n",
            markdown_title(&topic.title),
            page_list("Page", "Pages", &topic.pages, ": ")
        ));
        if !topic.guidelines.is_empty() {
            markdown.push('\n');
        }
        for guideline in &topic.guidelines {
            markdown.push_str(&format!(
                "- **{}** {} _({})_\n",
                guideline.kind,
                markdown_text(&guideline.text),
                page_list("p.", "pp.", &guideline.pages, " ")
            ));
        }
    }
    markdown
}

/// "Pages: 1, 3" / "p. 1".
fn page_list(singular: &str, plural: &str, pages: &[u32], separator: &str) -> String {
    let label = if pages.len() == 1 { singular } else { plural };
    let pages: Vec<String> = pages.iter().map(u32::to_string).collect();
    format!("{label}{separator}{}", pages.join(", "))
}

fn markdown_title(title: &str) -> String {
    let title = markdown_text(title);
    if title.is_empty() {
        "Untitled".to_owned()
    } else {
        title
    }
}

/// Text on one line with Markdown's markup characters escaped.
fn markdown_text(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for (index, word) in text.split_whitespace().enumerate() {
        if index > 0 {
            escaped.push(' ');
        }
        for c in word.chars() {
            if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_shared_is_the_ceiling_of_the_threshold_times_the_size() {
        for (len, expected) in [(1, 1), (2, 2), (4, 4), (5, 4), (9, 8), (10, 8), (11, 9)] {
            assert_eq!(min_shared(len), expected, "{len}");
        }
    }
}
