//! [`RulesExtractor`]: offline, deterministic guidelines from headings, labels and
//! sentence shapes (SPEC 4.3).
//!
//! A page goes through these passes:
//!
//! 1. **Lines.** Whitespace is collapsed; lines without a letter or digit (OCR specks),
//!    bare page numbers ("12", "- 12 -", "Page 12", "12 / 200", "xii") and running
//!    headers or footers are dropped. A running line is only dropped among the first two
//!    and last two remaining lines of the page, the same places [`running_lines`] looks
//!    at, or further in with only headings and running lines between it and the edge (a
//!    chapter heading above "Page 21 of the book"), so a heading in the middle of a page
//!    that happens to match a running header is kept. Lines are compared with only their
//!    folio numbers ignored ([`crate::normalize_line`]), and a line shaped as content (a
//!    list item, a labelled line, a sentence) is never a running line: "Example: 21 plus
//!    22 equals 43." at the foot of every page is an example each time.
//! 2. **Headings** become topics:
//!    - a keyword and a number: "Chapter 2. Adding Fractions", "Section 3: Ratios",
//!      "Unit IV", "Lesson 1" ("Chapter 2" alone followed by a title line gives
//!      "Chapter 2: Title");
//!    - a dotted section number: "2.2 Unlike Denominators" (a single number, "2. Add ...",
//!      is a step, never a heading);
//!    - a short title line: at most 8 words, starting with an uppercase letter, without
//!      end punctuation, colon, digits or `=`, not starting with a connective ("Then",
//!      "And"), a label word ("Example", "Figure") or, unless in Title Case, an
//!      instruction verb; longer than 4 words only in Title Case. Its context must look
//!      like a heading too: the line before (if any) is a heading, a list item or ends a
//!      sentence, and the line after exists, does not start in lowercase (that would make
//!      the two lines one wrapped sentence) and is body text (a sentence, a list item or a
//!      labelled line), not another short line (table cells and diagram labels come in
//!      runs of short lines).
//!
//!    Precision comes first: a false heading splits a topic, a missed one only leaves a
//!    few guidelines under the topic before.
//! 3. **Items.** A line starting with a list marker ("1.", "2)", "(a)", "-", "*", "•") or
//!    a label ("Tip:", "Note:", "Example:", "Definition:", "Remember:", "Step 3:", ...)
//!    starts an item; other lines are prose. A line starting in lowercase continues the
//!    item before it (OCR wraps sentences), and so does any prose line after prose that
//!    has not ended its sentence; a word hyphenated at the end of a line is joined. The
//!    last item of a page is completed from the next page's first lines when the first of
//!    them starts in lowercase (or the item ends in a comma or a hyphen): the guideline is
//!    the starting page's and lists both pages, and the next page skips those lines.
//! 4. **Guidelines.** A numbered item is one `step`, a labelled item one guideline of the
//!    label's kind, a bullet one `rule` (or its label's kind, "- Tip: ..."); prose is split
//!    into sentences and each sentence is classified:
//!    - starting with `Remember` (text kept): `rule`; "Note that ...": `tip`;
//!      "For example, ...": `example`;
//!    - imperative, i.e. its first word (after "Then", "First", "Always", ... and after an
//!      opening "To add fractions," / "If ...," / "When ...," clause) is an instruction
//!      verb from an explicit list (add, find, write, use, check, multiply, divide, turn,
//!      line up, simplify, do, keep, practise, ...): `rule`;
//!    - a definition, "X is a ...", "X means ...", "X are called ...": a subject of one to
//!      four words (not counting an article; no pronoun, quantifier or relative word such
//!      as "that") before `is`, `are` or `means`; after `is` the predicate starts with an
//!      article or "another", "one", "called", "known", "defined", "like", "when", ...;
//!      after `are`, with "called", "known", "defined", "the", "like" or a plural noun:
//!      `definition` ("A decimal is another way to write a fraction." is one, "A ratio
//!      compares two quantities." is not);
//!    - modal, containing always, never, should, must, "do not", "need to", ...: `rule`;
//!    - anything else is narrative ("Subtraction works the same way as addition.") and is
//!      **dropped**: it carries no instruction, and keeping every sentence of a book would
//!      turn the guidelines into a copy of it.
//!
//!    Labels and list markers are stripped and the first letter is set in uppercase; the
//!    rest of the text is kept as written (whitespace collapsed).
//!
//! Content before the first heading of a page continues `previous_topic`; on the first
//! page of a book without a heading there is none, and it goes under a topic titled
//! "Untitled". A heading with nothing under it still makes a topic, so that the next page
//! continues it.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::numbering::{NUMBER_WORDS, NUMBERING_KEYWORDS, is_roman_numeral, roman_value};
use crate::{
    ExtractError, Extractor, Guideline, GuidelineKind, PageGuidelines, PageInput, Topic,
    normalize_line,
};

/// The topic of content that comes before any heading when the page before ended in none.
const UNTITLED_TOPIC: &str = "Untitled";

/// How many of the first and of the last lines of a page may be running headers/footers.
const EDGE_LINES: usize = 2;

/// A running line appears on at least this many pages (and on at least half of them).
const RUNNING_MIN_PAGES: usize = 3;

/// The words that make a sentence an instruction when it starts with one (base form).
/// "line" only counts as "line up".
const INSTRUCTION_VERBS: &[&str] = &[
    "add",
    "apply",
    "arrange",
    "ask",
    "avoid",
    "be",
    "begin",
    "bring",
    "calculate",
    "cancel",
    "carry",
    "change",
    "check",
    "choose",
    "circle",
    "collect",
    "combine",
    "compare",
    "complete",
    "compute",
    "consider",
    "convert",
    "copy",
    "count",
    "cross",
    "decide",
    "describe",
    "discuss",
    "divide",
    "do",
    "double",
    "draw",
    "encourage",
    "ensure",
    "estimate",
    "evaluate",
    "expand",
    "explain",
    "factorise",
    "factorize",
    "fill",
    "find",
    "flip",
    "follow",
    "give",
    "go",
    "group",
    "halve",
    "highlight",
    "identify",
    "ignore",
    "invert",
    "isolate",
    "keep",
    "label",
    "learn",
    "list",
    "look",
    "make",
    "mark",
    "match",
    "measure",
    "memorise",
    "memorize",
    "move",
    "multiply",
    "note",
    "organise",
    "organize",
    "pick",
    "place",
    "plot",
    "practice",
    "practise",
    "prove",
    "put",
    "read",
    "rearrange",
    "recall",
    "record",
    "reduce",
    "remember",
    "remove",
    "repeat",
    "replace",
    "revise",
    "rewrite",
    "round",
    "show",
    "simplify",
    "sketch",
    "solve",
    "sort",
    "split",
    "start",
    "state",
    "study",
    "substitute",
    "subtract",
    "swap",
    "take",
    "test",
    "think",
    "try",
    "turn",
    "underline",
    "use",
    "verify",
    "work",
    "write",
];

/// Words that may come before the verb of an instruction ("Then add ...").
const LEADING_ADVERBS: &[&str] = &[
    "also",
    "always",
    "and",
    "carefully",
    "finally",
    "first",
    "firstly",
    "just",
    "lastly",
    "never",
    "next",
    "now",
    "please",
    "second",
    "secondly",
    "simply",
    "so",
    "then",
    "third",
    "thirdly",
];

/// Words opening a clause that ends at the first comma before an instruction
/// ("To divide by a fraction, multiply ...", "If the signs differ, subtract ...").
const CLAUSE_OPENERS: &[&str] = &[
    "after", "before", "for", "if", "in", "once", "to", "unless", "when", "whenever", "while",
];

/// Words that follow a verb-looking first word when it is a noun ("Work is ...").
const NOT_AFTER_VERB: &[&str] = &[
    "are", "can", "could", "gives", "had", "has", "have", "helps", "is", "makes", "may", "means",
    "might", "shows", "was", "were", "will", "would",
];

/// Words that make a sentence an instruction wherever they are.
const MODAL_WORDS: &[&str] = &[
    "always", "cannot", "dont", "must", "mustnt", "never", "ought", "should", "shouldnt",
];

/// Word pairs that make a sentence an instruction wherever they are.
const MODAL_PAIRS: &[(&str, &str)] = &[
    ("do", "not"),
    ("have", "to"),
    ("make", "sure"),
    ("need", "to"),
    ("be", "sure"),
];

/// Words a definition's subject never contains ("It is ...", "Two ratios that are ...").
const NOT_IN_SUBJECT: &[&str] = &[
    "after", "all", "any", "at", "because", "before", "both", "but", "each", "every", "for",
    "from", "he", "here", "how", "i", "if", "in", "it", "many", "most", "no", "not", "of", "on",
    "or", "she", "so", "some", "that", "then", "there", "these", "they", "this", "those", "to",
    "we", "what", "when", "where", "which", "who", "whom", "whose", "why", "with", "you",
];

/// First words of the predicate that make "X is ..." a definition.
const DEFINING_AFTER_IS: &[&str] = &[
    "a", "an", "another", "any", "called", "defined", "how", "known", "like", "one", "the", "what",
    "when", "where",
];

/// First words of the predicate that make "X are ..." a definition (besides plural nouns).
const DEFINING_AFTER_ARE: &[&str] = &["called", "defined", "known", "like", "the", "what"];

/// Words ending in "s" that are no plural nouns after "are".
const NOT_PLURAL_NOUNS: &[&str] = &[
    "always",
    "as",
    "its",
    "less",
    "perhaps",
    "sometimes",
    "thus",
    "various",
    "was",
    "yes",
];

/// Words of a title that Title Case leaves in lowercase.
const MINOR_WORDS: &[&str] = &[
    "a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "nor", "of", "on", "or",
    "over", "per", "the", "to", "under", "via", "vs", "with",
];

/// First words of a line that continues or connects, never of a title.
const CONNECTIVES: &[&str] = &[
    "also",
    "although",
    "and",
    "because",
    "but",
    "finally",
    "hence",
    "however",
    "if",
    "or",
    "so",
    "then",
    "therefore",
    "thus",
    "when",
    "while",
];

/// First words of a short line that is a caption or a box label, not a topic.
const LABEL_WORDS: &[&str] = &[
    "activity",
    "answer",
    "answers",
    "definition",
    "diagram",
    "example",
    "examples",
    "exercise",
    "exercises",
    "fig",
    "figure",
    "hint",
    "image",
    "key",
    "note",
    "notes",
    "photo",
    "question",
    "questions",
    "remember",
    "solution",
    "solutions",
    "source",
    "step",
    "steps",
    "table",
    "tip",
    "tips",
    "try",
];

/// Words before a period that does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "approx", "cf", "dr", "e.g", "eg", "etc", "fig", "i.e", "ie", "mr", "mrs", "ms", "no", "p",
    "pp", "st", "vs",
];

/// Labels at the start of a line or sentence and their kinds; a number may follow the label
/// ("Step 3:", "Example 2:"). Longer labels first, so "Examples" is not read as "Example".
const LABELS: &[(&str, GuidelineKind)] = &[
    ("worked example", GuidelineKind::Example),
    ("for example", GuidelineKind::Example),
    ("for instance", GuidelineKind::Example),
    ("definition", GuidelineKind::Definition),
    ("important", GuidelineKind::Rule),
    ("remember", GuidelineKind::Rule),
    ("examples", GuidelineKind::Example),
    ("example", GuidelineKind::Example),
    ("warning", GuidelineKind::Rule),
    ("caution", GuidelineKind::Rule),
    ("rule", GuidelineKind::Rule),
    ("hint", GuidelineKind::Tip),
    ("note", GuidelineKind::Tip),
    ("tips", GuidelineKind::Tip),
    ("tip", GuidelineKind::Tip),
    ("step", GuidelineKind::Step),
    ("e.g.", GuidelineKind::Example),
    ("nb", GuidelineKind::Tip),
];

/// Bullet characters a list item may start with.
const BULLETS: &[char] = &[
    '-', '*', '•', '–', '—', '·', '‣', '▪', '◦', '●', '■', '○', '►',
];

/// The `rules` extractor: offline and deterministic, no model (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct RulesExtractor;

impl RulesExtractor {
    pub fn new() -> Self {
        Self
    }

    /// Every page of a book extracted as the `guidelines` job does
    /// ([`crate::extract_book`]), synchronously: the rules extractor never waits.
    pub fn extract_book(&self, pages: &[(u32, &str)]) -> Vec<PageGuidelines> {
        use futures::FutureExt as _;
        crate::extract_book(self, pages, &CancellationToken::new())
            .now_or_never()
            .expect("the rules extractor never waits")
            .expect("the rules extractor never fails")
    }

    /// The topics of one page (pure and synchronous; [`Extractor::extract`] calls it).
    pub fn extract_page(&self, input: &PageInput) -> Vec<Topic> {
        let (mut page, _) = read_page(input);
        if let Some(next) = &input.next_page {
            let next_lines = content_lines(&next.text, &input.running_lines);
            let next_lines: Vec<&str> = next_lines.iter().map(String::as_str).collect();
            page.carry(&next_lines, next.page);
        }
        page.finish(input.page)
    }
}

/// The page's content lines read into a builder, without the top ones that finish the
/// page before's last sentence; and how many those are.
fn read_page(input: &PageInput) -> (PageBuilder<'_>, usize) {
    let lines = content_lines(&input.text, &input.running_lines);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let skip = finished_from_before(input, &lines);
    let mut page = PageBuilder::new(input.previous_topic.as_deref());
    page.lines(&lines[skip..]);
    (page, skip)
}

/// How many of a page's top content `lines` finish the last sentence of the page before:
/// they are extracted with that page.
fn finished_from_before(input: &PageInput, lines: &[&str]) -> usize {
    input.previous_page.as_ref().map_or(0, |previous| {
        let previous_lines = content_lines(&previous.text, &input.running_lines);
        let previous_lines: Vec<&str> = previous_lines.iter().map(String::as_str).collect();
        let mut previous_page = PageBuilder::new(None);
        previous_page.lines(&previous_lines);
        previous_page
            .open_item()
            .map_or(0, |item| carried_lines(item, lines))
    })
}

/// A page's text as the `openai` extractor sends it, with the rules extractor's reading of
/// page breaks: without the book's running lines ([`without_running_lines`]) and without
/// the top lines that finish the page before's last sentence, and with the lines of the
/// next page that finish its own last sentence appended. Returns the text and the lines
/// appended.
pub(crate) fn text_over_page_breaks(input: &PageInput) -> (String, Vec<String>) {
    let running = &input.running_lines;
    let (page, skip) = read_page(input);
    let carried: Vec<String> = match (&input.next_page, page.open_item()) {
        (Some(next), Some(item)) => {
            let next_lines = content_lines(&next.text, running);
            let refs: Vec<&str> = next_lines.iter().map(String::as_str).collect();
            let count = carried_lines(item, &refs);
            next_lines.into_iter().take(count).collect()
        }
        _ => Vec::new(),
    };
    let mut text = without_running_lines(&input.text, running);
    if skip > 0 {
        // The content lines are the meaningful lines left in `text`.
        let mut dropped = 0;
        text = text
            .lines()
            .filter(|line| {
                let meaningful = is_meaningful(&collapse_whitespace(line));
                let drop = meaningful && dropped < skip;
                dropped += usize::from(drop);
                !drop
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    if !carried.is_empty() {
        // After the last content line: a page number or blank lines at the foot would
        // split the sentence.
        let mut lines: Vec<&str> = text.lines().collect();
        while lines
            .last()
            .is_some_and(|line| !is_meaningful(&collapse_whitespace(line)))
        {
            lines.pop();
        }
        lines.extend(carried.iter().map(String::as_str));
        text = lines.join("\n");
    }
    (text, carried)
}

/// How many of `lines` (the top of a page) continue `item`, which ended the page before. A
/// sentence crosses a page break only into a line that starts in lowercase, or after a
/// comma or a hyphen: an unfinished line at the foot of a page is as often a caption or an
/// unknown footer as half a sentence. After the first line, the lines continue as on one
/// page, up to a heading or the start of another item.
fn carried_lines(item: &Item, lines: &[&str]) -> usize {
    let mut probe = Item {
        origin: item.origin,
        text: item.text.clone(),
        carried_at: None,
    };
    let mut count = 0;
    for (index, line) in lines.iter().enumerate() {
        if heading_at(lines, index).is_some() || item_start(line).is_some() {
            break;
        }
        let continues = if count == 0 {
            !probe.text.is_empty() && (starts_lowercase(line) || probe.text.ends_with([',', '-']))
        } else {
            probe.continued_by(line)
        };
        if !continues {
            break;
        }
        probe.push_line(line);
        count += 1;
    }
    count
}

#[async_trait]
impl Extractor for RulesExtractor {
    fn name(&self) -> &str {
        "rules"
    }

    async fn extract(
        &self,
        page: &PageInput,
        _cancel: &CancellationToken,
    ) -> Result<Vec<Topic>, ExtractError> {
        Ok(self.extract_page(page))
    }
}

/// The running headers and footers of a book: lines (normalized with
/// [`crate::normalize_line`], so only folio numbers are ignored) among the first two or last
/// two lines of a page (not counting bare page numbers and lines without letters or digits)
/// that appear on at least half of the pages and on at least three pages. A line shaped as
/// content never counts, however often it repeats: a list item, a labelled line ("Example:
/// ...", "Tip: ...") or a line that ends a sentence.
pub fn running_lines<'a>(texts: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    let mut pages = 0_usize;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for text in texts {
        pages += 1;
        let lines = meaningful_lines(text);
        // A line twice on one page counts once.
        let edges: BTreeSet<String> = edge_indices(lines.len())
            .map(|index| lines[index].as_str())
            .filter(|line| may_run(line))
            .map(normalize_line)
            .collect();
        for line in edges {
            *counts.entry(line).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, count)| *count >= RUNNING_MIN_PAGES && count * 2 >= pages)
        .map(|(line, _)| line)
        .collect()
}

/// Whether a line may be a running header or footer: it has a letter or digit and is not
/// shaped as content (a list item, a labelled line, a line ending a sentence).
fn may_run(line: &str) -> bool {
    line.chars().any(char::is_alphanumeric)
        && list_marker(line).is_none()
        && label(line).is_none()
        && !trim_closers(line).ends_with(['.', '!', '?'])
}

/// The lines of a page with whitespace collapsed, without empty lines, OCR specks and bare
/// page numbers.
fn meaningful_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(collapse_whitespace)
        .filter(|line| is_meaningful(line))
        .collect()
}

/// A line with a letter or digit that is not a bare page number.
fn is_meaningful(line: &str) -> bool {
    line.chars().any(char::is_alphanumeric) && !is_page_number(line)
}

/// The indices of the first and last [`EDGE_LINES`] of `len` lines.
fn edge_indices(len: usize) -> impl Iterator<Item = usize> {
    (0..len).filter(move |index| *index < EDGE_LINES || *index + EDGE_LINES >= len)
}

/// The lines of a page that carry content: [`meaningful_lines`] without running lines.
///
/// A running line is dropped among the first and last [`EDGE_LINES`] lines, the places
/// [`running_lines`] looks at, and further in when only headings and other running lines
/// stand between it and the edge: a chapter heading above "Page 21 of the book" does not
/// make that line content. A line after body text is never dropped.
pub(crate) fn content_lines(text: &str, running: &HashSet<String>) -> Vec<String> {
    let lines = meaningful_lines(text);
    let drop = running_at(&lines, running);
    lines
        .into_iter()
        .zip(drop)
        .filter(|(_, drop)| !drop)
        .map(|(line, _)| line)
        .collect()
}

/// `text` as written without the lines [`content_lines`] drops as running lines (blank
/// lines and page numbers stay): what the `openai` extractor sends.
pub(crate) fn without_running_lines(text: &str, running: &HashSet<String>) -> String {
    let lines = meaningful_lines(text);
    let drop = running_at(&lines, running);
    let mut index = 0;
    let mut kept = Vec::new();
    for line in text.lines() {
        if is_meaningful(&collapse_whitespace(line)) {
            index += 1;
            if drop[index - 1] {
                continue;
            }
        }
        kept.push(line);
    }
    kept.join("\n")
}

/// Which of a page's meaningful lines are running lines to drop (see [`content_lines`]).
fn running_at(lines: &[String], running: &HashSet<String>) -> Vec<bool> {
    let mut drop = vec![false; lines.len()];
    if running.is_empty() {
        return drop;
    }
    let is_running: Vec<bool> = lines
        .iter()
        .map(|line| may_run(line) && running.contains(&normalize_line(line)))
        .collect();
    let mut mark = |indices: &mut dyn Iterator<Item = usize>| {
        let mut only_headings = true;
        for (from_edge, index) in indices.enumerate() {
            if is_running[index] && (from_edge < EDGE_LINES || only_headings) {
                drop[index] = true;
            } else if !is_running[index] && !looks_like_heading(&lines[index]) {
                only_headings = false;
                if from_edge >= EDGE_LINES {
                    break;
                }
            }
        }
    };
    mark(&mut (0..lines.len()));
    mark(&mut (0..lines.len()).rev());
    drop_displaced_running_lines(lines, &is_running, &mut drop);
    drop
}

/// Drops a running line that OCR read away from the page's edges when the page has it at
/// no edge: tesseract reads a footer under a page's left column before the right column.
/// Only when it is on the page once and is no numbered heading; a running line at an edge
/// makes its twin in the body a body line.
fn drop_displaced_running_lines(lines: &[String], is_running: &[bool], drop: &mut [bool]) {
    let mut seen: HashMap<String, (usize, usize, bool)> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        if !is_running[index] {
            continue;
        }
        let entry = seen
            .entry(normalize_line(line))
            .or_insert((0, index, false));
        entry.0 += 1;
        entry.2 |= drop[index];
    }
    for (count, index, at_edge) in seen.into_values() {
        let line = &lines[index];
        if count == 1
            && !at_edge
            && keyword_heading_rest(line).is_none()
            && !is_numbered_heading(line)
        {
            drop[index] = true;
        }
    }
}

/// Whether a line has the shape of a heading on its own (its context unknown).
fn looks_like_heading(line: &str) -> bool {
    keyword_heading_rest(line).is_some() || is_numbered_heading(line) || title_shape(line)
}

/// Whether a line is only a page number: "12", "- 12 -", "[12]", "Page 12", "p. 12",
/// "12 / 200", "12 of 200", "xii".
fn is_page_number(line: &str) -> bool {
    const DECORATION: &[char] = &[
        '-', '–', '—', '_', '|', '[', ']', '(', ')', '{', '}', '<', '>', '·', '•', '*', '~', ' ',
    ];
    let core = line.trim_matches(DECORATION).to_lowercase();
    let core = ["page ", "page", "pg. ", "pg.", "pg ", "p. ", "p.", "p "]
        .iter()
        .find_map(|prefix| core.strip_prefix(prefix))
        .unwrap_or(&core)
        .trim();
    let number_then_total = |separator: &str| {
        core.split_once(separator)
            .is_some_and(|(page, total)| is_digits(page.trim()) && is_digits(total.trim()))
    };
    is_digits(core)
        || number_then_total("/")
        || number_then_total(" of ")
        || is_roman_numeral(line.trim_matches(DECORATION))
}

/// One to four ASCII digits.
fn is_digits(text: &str) -> bool {
    (1..=4).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// `text` with runs of whitespace collapsed into one space and trimmed.
fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A word lowercased without the punctuation around it ("Then," -> "then", "don't" ->
/// "dont").
fn bare_word(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The lowercased words of a text, punctuation dropped, empty words skipped.
fn bare_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(bare_word)
        .filter(|word| !word.is_empty())
        .collect()
}

fn starts_lowercase(text: &str) -> bool {
    text.chars().next().is_some_and(char::is_lowercase)
}

fn starts_uppercase(text: &str) -> bool {
    text.chars().next().is_some_and(char::is_uppercase)
}

/// The text without closing quotes and brackets at its end.
fn trim_closers(text: &str) -> &str {
    text.trim_end_matches(['"', '\'', '”', '’', ')', ']', '»'])
}

/// Whether the text ends a sentence (or introduces what follows, with a colon).
fn ends_sentence(text: &str) -> bool {
    trim_closers(text).ends_with(['.', '!', '?', ':', ';', '…'])
}

/// The heading at `lines[index]`, if that line (with the next one, for "Chapter 2" then
/// "Adding Fractions") is one: its title and the number of lines it takes.
fn heading_at(lines: &[&str], index: usize) -> Option<(String, usize)> {
    let line = lines[index];
    let next = lines.get(index + 1).copied();
    if let Some(rest) = keyword_heading_rest(line) {
        if rest.is_empty()
            && let Some(title) = next.filter(|next| title_shape(next))
        {
            let separator = if ends_sentence(line) || line.ends_with(['-', '–', '—']) {
                " "
            } else {
                ": "
            };
            return Some((format!("{line}{separator}{title}"), 2));
        }
        return Some((line.to_owned(), 1));
    }
    if is_numbered_heading(line) {
        return Some((line.to_owned(), 1));
    }
    let previous = index.checked_sub(1).map(|before| lines[before]);
    let previous_allows = previous.is_none_or(|previous| {
        ends_sentence(previous)
            || list_marker(previous).is_some()
            || label(previous).is_some()
            || keyword_heading_rest(previous).is_some()
            || is_numbered_heading(previous)
    });
    let next_is_body = next.is_some_and(|next| {
        !starts_lowercase(next)
            && keyword_heading_rest(next).is_none()
            && !is_numbered_heading(next)
            && (list_marker(next).is_some()
                || label(next).is_some()
                || ends_sentence(next)
                || next.split_whitespace().count() > 8)
    });
    (previous_allows && next_is_body && title_shape(line)).then(|| (line.to_owned(), 1))
}

/// The title after "Chapter 2." / "Section 3:" / "Unit IV -" ("" for none), if the line is
/// such a heading. The keyword is capitalized; without a separator after the number the
/// title must start in uppercase ("Section 3 explains ..." is a sentence).
fn keyword_heading_rest(line: &str) -> Option<&str> {
    let (keyword, after_keyword) = line.split_once(' ')?;
    if !starts_uppercase(keyword) || !NUMBERING_KEYWORDS.contains(&keyword.to_lowercase().as_str())
    {
        return None;
    }
    let after_keyword = after_keyword.trim_start();
    let number_len = after_keyword
        .find(|c: char| c.is_whitespace() || matches!(c, ':' | ')' | '-' | '–' | '—' | '|'))
        .unwrap_or(after_keyword.len());
    let number_with_dot = &after_keyword[..number_len];
    let number = number_with_dot.trim_end_matches('.');
    let single_case = number.chars().all(|c| c.is_ascii_uppercase())
        || number.chars().all(|c| c.is_ascii_lowercase());
    let arabic = number.starts_with(|c: char| c.is_ascii_digit())
        && number
            .split('.')
            .all(|part| part.is_empty() || is_digits(part));
    let roman = single_case && roman_value(number).is_some();
    let spelled = NUMBER_WORDS.contains(&number.to_lowercase().as_str());
    let letter = number.len() == 1 && number.chars().all(|c| c.is_ascii_uppercase());
    if !(arabic || roman || spelled || letter) {
        return None;
    }
    let after_number = &after_keyword[number_len..];
    let rest = after_number.trim_start_matches([' ', ':', ')', '-', '–', '—', '|', '.']);
    let skipped = &after_number[..after_number.len() - rest.len()];
    let had_separator = number_with_dot.ends_with('.') || skipped.chars().any(|c| c != ' ');
    if rest.is_empty() {
        return Some(rest);
    }
    let fits = title_words_fit(rest, 12)
        && (had_separator || starts_uppercase(rest))
        && rest.chars().next().is_some_and(char::is_alphanumeric);
    fits.then_some(rest)
}

/// Whether a title has at most `max_words` words, no end punctuation and no `=`.
fn title_words_fit(title: &str, max_words: usize) -> bool {
    let words = title.split_whitespace().count();
    (1..=max_words).contains(&words)
        && !trim_closers(title).ends_with(['.', '!', '?', ';', ',', ':', '-'])
        && !title.contains('=')
}

/// "2.2 Unlike Denominators", "1.2.3. Ratios": a dotted section number, then a title
/// starting in uppercase.
fn is_numbered_heading(line: &str) -> bool {
    let Some((number, title)) = line.split_once(' ') else {
        return false;
    };
    let number = number.strip_suffix('.').unwrap_or(number);
    let parts: Vec<&str> = number.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|part| (1..=3).contains(&part.len()) && is_digits(part))
        && starts_uppercase(title)
        && title_words_fit(title, 10)
}

/// Whether a line looks like a title on its own (see the module doc): the shape, not the
/// context.
fn title_shape(line: &str) -> bool {
    // Raw words paired with their bare form; "&" and other symbols are no words.
    let pairs: Vec<(&str, String)> = line
        .split_whitespace()
        .map(|raw| (raw, bare_word(raw)))
        .filter(|(_, word)| !word.is_empty())
        .collect();
    if pairs.is_empty()
        || pairs.len() > 8
        || !starts_uppercase(line)
        || !title_words_fit(line, 8)
        || line.contains([':', '+', '×', '÷', '<', '>', '%', '$'])
        || line.chars().any(|c| c.is_ascii_digit())
        || list_marker(line).is_some()
    {
        return false;
    }
    let first = pairs[0].1.as_str();
    let last = pairs[pairs.len() - 1].1.as_str();
    if CONNECTIVES.contains(&first) || LABEL_WORDS.contains(&first) || MINOR_WORDS.contains(&last) {
        return false;
    }
    let significant: Vec<&str> = pairs
        .iter()
        .filter(|(_, word)| !MINOR_WORDS.contains(&word.as_str()))
        .map(|(raw, _)| *raw)
        .collect();
    let capitalized = significant
        .iter()
        .filter(|raw| starts_uppercase(raw))
        .count();
    let title_case = pairs.len() >= 2 && capitalized * 3 >= significant.len() * 2;
    if pairs.len() >= 2 && !title_case && INSTRUCTION_VERBS.contains(&first) {
        return false;
    }
    pairs.len() <= 4 || title_case
}

/// What kind of list item a line starts, and its text without the marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// "1.", "2)", "(3)", "a)", "(ii)".
    Numbered,
    /// "-", "*", "•".
    Bullet,
}

/// The list marker a line starts with, and the text after it.
fn list_marker(line: &str) -> Option<(Marker, &str)> {
    let (first, rest) = match line.split_once(' ') {
        Some((first, rest)) => (first, rest.trim_start()),
        None => (line, ""),
    };
    if first.chars().count() == 1 && first.starts_with(BULLETS) {
        return Some((Marker::Bullet, rest));
    }
    let inner = first.strip_prefix('(').unwrap_or(first);
    let (label, closer) = match inner.char_indices().last() {
        Some((last, _)) => inner.split_at(last),
        None => return None,
    };
    let closes = closer == ")" || (closer == "." && !first.starts_with('('));
    let numbered = closes
        && (is_digits(label) && label.len() <= 3
            || (label.len() == 1
                && label.chars().all(|c| c.is_ascii_lowercase())
                && closer == ")")
            || (label.chars().all(|c| c.is_ascii_lowercase())
                && closer == ")"
                && roman_value(label).is_some_and(|value| value <= 20)));
    numbered.then_some((Marker::Numbered, rest))
}

/// The label a line or sentence starts with ("Tip:", "Step 3:", "Example 2."), its kind, and
/// the text after it. A label is followed by a colon; "Step N" also by "." or ")", and
/// "For example" and "e.g." by a comma.
fn label(text: &str) -> Option<(GuidelineKind, &str)> {
    for (name, kind) in LABELS {
        let Some(head) = text.get(..name.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(name) {
            continue;
        }
        let mut after = &text[name.len()..];
        let mut numbered = false;
        // "Step 3", "Example 2.1": a number between the label and its colon.
        let trimmed = after.trim_start();
        let digits_len = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        if digits_len > 0 && trimmed.starts_with(|c: char| c.is_ascii_digit()) {
            numbered = true;
            after = &trimmed[digits_len..];
            // The number's own trailing dot is its separator ("Step 3.").
            if trimmed[..digits_len].ends_with('.') {
                let text_after = after.trim_start();
                return (*kind == GuidelineKind::Step || *kind == GuidelineKind::Example)
                    .then_some((*kind, text_after));
            }
        }
        let after_space = after.trim_start();
        let separator = after_space.chars().next();
        let accepted = match separator {
            Some(':') => true,
            Some(')' | '-' | '–' | '—') => numbered,
            Some(',') => matches!(*name, "for example" | "for instance" | "e.g."),
            None => numbered && *kind == GuidelineKind::Step,
            _ => *name == "e.g." && after.starts_with(' '),
        };
        if accepted {
            let skip = separator.map_or(0, char::len_utf8);
            return Some((*kind, after_space[skip..].trim_start()));
        }
    }
    None
}

/// How an item of a page started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Running text, split into sentences.
    Prose,
    /// A numbered list item: one step.
    Numbered,
    /// A bulleted list item: one rule (or its label's kind).
    Bullet,
    /// A labelled line: one guideline of the label's kind.
    Labelled(GuidelineKind),
}

/// One item of a page: a list item, a labelled line or a run of prose, wrapped lines
/// joined.
#[derive(Debug)]
struct Item {
    origin: Origin,
    text: String,
    /// Where the text carried over from the next page starts (a byte offset into `text`),
    /// and that page.
    carried_at: Option<(usize, u32)>,
}

impl Item {
    /// Whether `line` (not starting an item of its own) continues this item.
    fn continued_by(&self, line: &str) -> bool {
        self.text.is_empty()
            || starts_lowercase(line)
            || self.text.ends_with([',', '-'])
            || (self.origin == Origin::Prose && !ends_sentence(&self.text))
    }

    fn push_line(&mut self, line: &str) {
        let hyphenated = self.text.len() > 1
            && self.text.ends_with('-')
            && self.text[..self.text.len() - 1].ends_with(char::is_alphabetic)
            && starts_lowercase(line);
        if hyphenated {
            self.text.pop();
        } else if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(line);
    }

    /// The item's guidelines on `page`; a guideline whose text reaches into the carried
    /// lines lists both pages.
    fn guidelines(&self, page: u32) -> Vec<Guideline> {
        let text = self.text.trim();
        let pages_of = |part: &str| match self.carried_at {
            Some((offset, next)) if end_offset(&self.text, part) > offset => vec![page, next],
            _ => Vec::new(),
        };
        let (kind, text) = match self.origin {
            Origin::Prose => {
                return split_sentences(text)
                    .into_iter()
                    .filter_map(|sentence| {
                        let (kind, text) = classify_sentence(sentence)?;
                        Some(Guideline {
                            pages: pages_of(sentence),
                            ..guideline(kind, text)
                        })
                    })
                    .collect();
            }
            Origin::Numbered => (GuidelineKind::Step, text),
            Origin::Labelled(kind) => (kind, text),
            Origin::Bullet => label(text).unwrap_or((GuidelineKind::Rule, text)),
        };
        if text.chars().any(char::is_alphanumeric) {
            vec![Guideline {
                pages: pages_of(text),
                ..guideline(kind, text)
            }]
        } else {
            Vec::new()
        }
    }
}

/// Where `part`, a slice of `whole`, ends in it (a byte offset).
fn end_offset(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize + part.len()
}

/// The item a line starts, if any: a list item or a labelled line, and its text.
fn item_start(line: &str) -> Option<(Origin, &str)> {
    if let Some((marker, rest)) = list_marker(line) {
        let origin = match marker {
            Marker::Numbered => Origin::Numbered,
            Marker::Bullet => Origin::Bullet,
        };
        Some((origin, rest))
    } else {
        label(line).map(|(kind, rest)| (Origin::Labelled(kind), rest))
    }
}

/// A guideline reads as a sentence: whitespace collapsed and, once a label ("Tip:") is
/// stripped, its first letter in uppercase ("Tip: cancel ..." -> "Cancel ...").
fn guideline(kind: GuidelineKind, text: &str) -> Guideline {
    let text = collapse_whitespace(text);
    let mut chars = text.chars();
    let text = match chars.next() {
        Some(first) if first.is_lowercase() => first.to_uppercase().chain(chars).collect(),
        _ => text,
    };
    Guideline::new(kind, text)
}

/// The topics of a page as its lines come in.
struct PageBuilder<'a> {
    previous_topic: Option<&'a str>,
    /// Topics with the items under them.
    topics: Vec<(String, Vec<Item>)>,
}

impl<'a> PageBuilder<'a> {
    fn new(previous_topic: Option<&'a str>) -> Self {
        Self {
            previous_topic,
            topics: Vec::new(),
        }
    }

    fn heading(&mut self, title: String) {
        self.topics.push((collapse_whitespace(&title), Vec::new()));
    }

    fn line(&mut self, line: &str) {
        if self.topics.is_empty() {
            let title = self
                .previous_topic
                .filter(|title| !title.trim().is_empty())
                .unwrap_or(UNTITLED_TOPIC);
            self.topics.push((title.to_owned(), Vec::new()));
        }
        let items = &mut self
            .topics
            .last_mut()
            .unwrap_or_else(|| unreachable!("a topic was just pushed"))
            .1;
        match (item_start(line), items.last_mut()) {
            (Some((origin, rest)), _) => items.push(Item {
                origin,
                text: rest.to_owned(),
                carried_at: None,
            }),
            (None, Some(item)) if item.continued_by(line) => {
                item.push_line(line);
            }
            (None, _) => items.push(Item {
                origin: Origin::Prose,
                text: line.to_owned(),
                carried_at: None,
            }),
        }
    }

    /// Every line of a page (or what is left of it), headings found.
    fn lines(&mut self, lines: &[&str]) {
        let mut index = 0;
        while index < lines.len() {
            if let Some((title, used)) = heading_at(lines, index) {
                self.heading(title);
                index += used;
                continue;
            }
            self.line(lines[index]);
            index += 1;
        }
    }

    /// The item the page ends in, unless a heading came after it.
    fn open_item(&self) -> Option<&Item> {
        self.topics.last().and_then(|(_, items)| items.last())
    }

    /// Completes the item the page ends in with the lines of `next_page` that continue it.
    fn carry(&mut self, next_lines: &[&str], next_page: u32) {
        let Some(item) = self
            .topics
            .last_mut()
            .and_then(|(_, items)| items.last_mut())
        else {
            return;
        };
        let count = carried_lines(item, next_lines);
        if count == 0 {
            return;
        }
        item.carried_at = Some((item.text.len(), next_page));
        for line in &next_lines[..count] {
            item.push_line(line);
        }
    }

    fn finish(self, page: u32) -> Vec<Topic> {
        self.topics
            .into_iter()
            .map(|(title, items)| Topic {
                title,
                guidelines: items
                    .iter()
                    .flat_map(|item| item.guidelines(page))
                    .collect(),
            })
            .collect()
    }
}

/// The sentences of a run of prose. A period ends a sentence when a space and an uppercase
/// letter, a digit or a quote follow, and the word before it is no abbreviation ("e.g.",
/// "Fig.") or initial ("J.").
fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (position, (offset, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        // Closing quotes and brackets belong to the sentence they end.
        let mut end = position + 1;
        while end < chars.len() && matches!(chars[end].1, '"' | '\'' | '”' | '’' | ')') {
            end += 1;
        }
        let Some((_, space)) = chars.get(end) else {
            continue;
        };
        let next = chars.get(end + 1).map(|(_, c)| *c);
        let opens_sentence = next.is_some_and(|next| {
            next.is_uppercase() || next.is_ascii_digit() || matches!(next, '"' | '“' | '(')
        });
        if !space.is_whitespace() || !opens_sentence {
            continue;
        }
        if *c == '.' {
            let word_before = text[start..*offset]
                .rsplit(char::is_whitespace)
                .next()
                .unwrap_or("");
            let bare = word_before
                .trim_start_matches(['(', '"', '“'])
                .to_lowercase();
            let initial =
                word_before.chars().count() == 1 && word_before.chars().all(char::is_uppercase);
            if ABBREVIATIONS.contains(&bare.as_str()) || initial {
                continue;
            }
        }
        let end_offset = chars.get(end).map_or(text.len(), |(offset, _)| *offset);
        sentences.push(text[start..end_offset].trim());
        start = end_offset;
    }
    sentences.push(text[start..].trim());
    sentences.retain(|sentence| !sentence.is_empty());
    sentences
}

/// The kind of a prose sentence and its text (labels stripped), or `None` for narrative.
fn classify_sentence(sentence: &str) -> Option<(GuidelineKind, &str)> {
    if let Some((kind, rest)) = label(sentence) {
        return Some((kind, rest));
    }
    let words = bare_words(sentence);
    let first = words.first()?.as_str();
    let second = words.get(1).map(String::as_str);
    if first == "remember" {
        return Some((GuidelineKind::Rule, sentence));
    }
    if matches!(first, "note" | "notice") && second == Some("that") {
        return Some((GuidelineKind::Tip, sentence));
    }
    if is_imperative(sentence) {
        return Some((GuidelineKind::Rule, sentence));
    }
    if is_definition(&words) {
        return Some((GuidelineKind::Definition, sentence));
    }
    if is_modal(&words) {
        return Some((GuidelineKind::Rule, sentence));
    }
    None
}

/// Whether a sentence is an instruction: its first word, after an opening clause ("To add
/// fractions,") and adverbs ("Then", "First"), is an instruction verb not followed by a
/// copula ("Work is ...") and not asking a question.
fn is_imperative(sentence: &str) -> bool {
    if trim_closers(sentence).ends_with('?') {
        return false;
    }
    let mut words = bare_words(sentence);
    if words
        .first()
        .is_some_and(|first| CLAUSE_OPENERS.contains(&first.as_str()))
    {
        let Some((_, after_clause)) = sentence.split_once(',') else {
            return false;
        };
        words = bare_words(after_clause);
    }
    let skipped = words
        .iter()
        .take_while(|word| LEADING_ADVERBS.contains(&word.as_str()))
        .count();
    let words = &words[skipped..];
    let Some(verb) = words.first() else {
        return false;
    };
    if verb == "line" {
        return words.get(1).is_some_and(|word| word == "up");
    }
    INSTRUCTION_VERBS.contains(&verb.as_str())
        && !words
            .iter()
            .skip(1)
            .take(2)
            .any(|word| NOT_AFTER_VERB.contains(&word.as_str()))
}

/// Whether a sentence defines a term: "X is a ...", "X means ...", "X are called ...".
fn is_definition(words: &[String]) -> bool {
    let Some(verb_at) = words
        .iter()
        .position(|word| matches!(word.as_str(), "is" | "are" | "means"))
    else {
        return false;
    };
    let subject = &words[..verb_at];
    let subject = match subject.first().map(String::as_str) {
        Some("a" | "an" | "the") => &subject[1..],
        _ => subject,
    };
    if subject.is_empty()
        || subject.len() > 4
        || subject
            .iter()
            .any(|word| NOT_IN_SUBJECT.contains(&word.as_str()))
    {
        return false;
    }
    let Some(predicate) = words.get(verb_at + 1).map(String::as_str) else {
        return false;
    };
    match words[verb_at].as_str() {
        "means" => true,
        "is" => DEFINING_AFTER_IS.contains(&predicate),
        _ => DEFINING_AFTER_ARE.contains(&predicate) || looks_like_plural_noun(predicate),
    }
}

/// "numbers", "fractions"; not "always", "less", "various", "famous".
fn looks_like_plural_noun(word: &str) -> bool {
    word.len() > 3
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("ous")
        && !NOT_PLURAL_NOUNS.contains(&word)
}

/// Whether a sentence says what to always or never do (always, never, should, must, do not,
/// need to, ...).
fn is_modal(words: &[String]) -> bool {
    words
        .iter()
        .any(|word| MODAL_WORDS.contains(&word.as_str()))
        || words.windows(2).any(|pair| {
            MODAL_PAIRS
                .iter()
                .any(|(first, second)| pair[0] == *first && pair[1] == *second)
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn input(text: &str, previous_topic: Option<&str>, running: &[&str]) -> PageInput {
        PageInput {
            page: 1,
            text: text.to_owned(),
            previous_topic: previous_topic.map(str::to_owned),
            running_lines: Arc::new(running.iter().map(|line| normalize_line(line)).collect()),
            ..PageInput::new(1, "")
        }
    }

    fn extract(text: &str) -> Vec<Topic> {
        RulesExtractor::new().extract_page(&input(text, None, &[]))
    }

    /// The guidelines of a heading then `body`, as (kind, text).
    fn guidelines_of(body: &str) -> Vec<(GuidelineKind, String)> {
        let topics = extract(&format!("Chapter 1: Fractions\n{body}"));
        assert_eq!(topics.len(), 1, "one topic for {body:?}: {topics:?}");
        topics[0]
            .guidelines
            .iter()
            .map(|guideline| (guideline.kind, guideline.text.clone()))
            .collect()
    }

    #[test]
    fn lines_get_the_kind_of_their_shape_and_lose_their_labels() {
        use GuidelineKind::{Definition, Example, Rule, Step, Tip};
        let table: &[(&str, Option<(GuidelineKind, &str)>)] = &[
            // Numbered items are steps.
            (
                "1. Find a common denominator.",
                Some((Step, "Find a common denominator.")),
            ),
            ("2) Add the numerators", Some((Step, "Add the numerators"))),
            (
                "(3) Simplify the result.",
                Some((Step, "Simplify the result.")),
            ),
            ("a) Write the ratio.", Some((Step, "Write the ratio."))),
            (
                "Step 3: Add the numerators.",
                Some((Step, "Add the numerators.")),
            ),
            (
                "Step 4. Check the answer.",
                Some((Step, "Check the answer.")),
            ),
            // Labels.
            (
                "Example: one half plus one third equals five sixths.",
                Some((Example, "One half plus one third equals five sixths.")),
            ),
            (
                "Example 2: 1/2 + 1/4 = 3/4",
                Some((Example, "1/2 + 1/4 = 3/4")),
            ),
            (
                "For example, 3/6 simplifies to 1/2.",
                Some((Example, "3/6 simplifies to 1/2.")),
            ),
            (
                "Definition: a tenth is one part of ten equal parts.",
                Some((Definition, "A tenth is one part of ten equal parts.")),
            ),
            (
                "Tip: cancel common factors before you multiply.",
                Some((Tip, "Cancel common factors before you multiply.")),
            ),
            (
                "NOTE: a negative result is still a valid fraction.",
                Some((Tip, "A negative result is still a valid fraction.")),
            ),
            ("Hint: draw a picture.", Some((Tip, "Draw a picture."))),
            (
                "Note that the order matters.",
                Some((Tip, "Note that the order matters.")),
            ),
            (
                "Remember: the denominator stays the same.",
                Some((Rule, "The denominator stays the same.")),
            ),
            (
                "Remember that the denominator stays the same.",
                Some((Rule, "Remember that the denominator stays the same.")),
            ),
            // Bullets are rules, or their label's kind.
            (
                "- Keep the denominator.",
                Some((Rule, "Keep the denominator.")),
            ),
            ("• the bottom number", Some((Rule, "The bottom number"))),
            (
                "* Tip: check with an estimate.",
                Some((Tip, "Check with an estimate.")),
            ),
            // Imperatives.
            (
                "Turn the second fraction upside down.",
                Some((Rule, "Turn the second fraction upside down.")),
            ),
            (
                "To add two fractions, first find a common denominator.",
                Some((
                    Rule,
                    "To add two fractions, first find a common denominator.",
                )),
            ),
            (
                "Then evaluate powers and roots.",
                Some((Rule, "Then evaluate powers and roots.")),
            ),
            (
                "Line up the decimal points when you add or subtract.",
                Some((Rule, "Line up the decimal points when you add or subtract.")),
            ),
            (
                "If the signs differ, subtract the smaller number.",
                Some((Rule, "If the signs differ, subtract the smaller number.")),
            ),
            (
                "Practise a little every day.",
                Some((Rule, "Practise a little every day.")),
            ),
            // Modal sentences.
            (
                "Always simplify the result before you write it down.",
                Some((Rule, "Always simplify the result before you write it down.")),
            ),
            (
                "Students should check their answers with an estimate.",
                Some((
                    Rule,
                    "Students should check their answers with an estimate.",
                )),
            ),
            (
                "You do not need a common denominator here.",
                Some((Rule, "You do not need a common denominator here.")),
            ),
            (
                "A fraction must never have zero below the line.",
                Some((Rule, "A fraction must never have zero below the line.")),
            ),
            // Definitions.
            (
                "A decimal is another way to write a fraction.",
                Some((Definition, "A decimal is another way to write a fraction.")),
            ),
            (
                "A percentage is a fraction of one hundred.",
                Some((Definition, "A percentage is a fraction of one hundred.")),
            ),
            (
                "Numbers below zero are called negative numbers.",
                Some((
                    Definition,
                    "Numbers below zero are called negative numbers.",
                )),
            ),
            (
                "Perimeter means the distance around a shape.",
                Some((Definition, "Perimeter means the distance around a shape.")),
            ),
            (
                "Like fractions are fractions with the same denominator.",
                Some((
                    Definition,
                    "Like fractions are fractions with the same denominator.",
                )),
            ),
            ("Work is force times distance.", None),
            // Narrative: dropped.
            ("A ratio compares two quantities of the same kind.", None),
            ("Subtraction works the same way as addition.", None),
            ("Each place to the right is ten times smaller.", None),
            ("Two ratios that are equal form a proportion.", None),
            ("It is a good idea to estimate first.", None),
            ("Fractions are useful.", None),
            ("What is a fraction?", None),
        ];
        for (line, expected) in table {
            let actual = guidelines_of(line);
            let expected: Vec<(GuidelineKind, String)> = expected
                .iter()
                .map(|(kind, text)| (*kind, (*text).to_owned()))
                .collect();
            assert_eq!(actual, expected, "line {line:?}");
        }
    }

    #[test]
    fn wrapped_sentences_are_joined_and_prose_is_split_into_sentences() {
        use GuidelineKind::{Rule, Step, Tip};
        let cases: &[(&str, &[(GuidelineKind, &str)])] = &[
            (
                "Find the least common multiple of\nthe denominators.",
                &[(Rule, "Find the least common multiple of the denominators.")],
            ),
            (
                "Rewrite each fraction so that it uses this denomi-\nnator. Then add.",
                &[
                    (
                        Rule,
                        "Rewrite each fraction so that it uses this denominator.",
                    ),
                    (Rule, "Then add."),
                ],
            ),
            (
                "Tip: cancel common factors\nbefore you multiply.",
                &[(Tip, "Cancel common factors before you multiply.")],
            ),
            ("Tip:\nCancel first.", &[(Tip, "Cancel first.")]),
            ("1.\nAdd the numerators.", &[(Step, "Add the numerators.")]),
            (
                "1. Add the numerators\n2. Keep the denominator",
                &[(Step, "Add the numerators"), (Step, "Keep the denominator")],
            ),
            (
                "Multiply the numerators. Multiply the denominators, e.g. 2 by 3. Simplify.",
                &[
                    (Rule, "Multiply the numerators."),
                    (Rule, "Multiply the denominators, e.g. 2 by 3."),
                    (Rule, "Simplify."),
                ],
            ),
            (
                "Subtraction works like addition. Always simplify.",
                &[(Rule, "Always simplify.")],
            ),
        ];
        for (body, expected) in cases {
            let expected: Vec<(GuidelineKind, String)> = expected
                .iter()
                .map(|(kind, text)| (*kind, (*text).to_owned()))
                .collect();
            assert_eq!(guidelines_of(body), expected, "body {body:?}");
        }
    }

    #[test]
    fn headings_become_topics_and_sentences_do_not() {
        let body = "Add the numerators.";
        let headings: &[(&str, Option<&str>)] = &[
            (
                "Chapter 2. Adding Fractions",
                Some("Chapter 2. Adding Fractions"),
            ),
            (
                "Chapter 1: Adding fractions",
                Some("Chapter 1: Adding fractions"),
            ),
            ("CHAPTER 3 - Ratios", Some("CHAPTER 3 - Ratios")),
            (
                "Section 3 Ratios and Rates",
                Some("Section 3 Ratios and Rates"),
            ),
            ("Unit IV: Decimals", Some("Unit IV: Decimals")),
            ("Lesson 5", Some("Lesson 5")),
            ("Chapter Two: Decimals", Some("Chapter Two: Decimals")),
            ("2.2 Unlike Denominators", Some("2.2 Unlike Denominators")),
            ("1.2.3. Mixed numbers", Some("1.2.3. Mixed numbers")),
            ("Adding Fractions", Some("Adding Fractions")),
            ("Adding fractions", Some("Adding fractions")),
            ("Order of Operations", Some("Order of Operations")),
            ("Review", Some("Review")),
            (
                "Adding and Subtracting Mixed Numbers",
                Some("Adding and Subtracting Mixed Numbers"),
            ),
            // Not headings.
            ("Turn the second fraction upside down.", None),
            ("Section 3 explains how to add fractions.", None),
            ("Part of the answer is missing.", None),
            ("Unit fractions have a numerator of one.", None),
            ("2.5 is half of five.", None),
            ("2. Adding fractions", None),
            ("Tip: cancel first", None),
            ("Example", None),
            ("Figure 3", None),
            ("Then multiply", None),
            ("Find the common denominator", None),
            ("Adding fractions with unlike denominators is easy", None),
            ("Numerator = 3", None),
            ("- Keep the denominator", None),
        ];
        for (line, expected) in headings {
            let topics = extract(&format!("Chapter 1: Start\n{line}\n{body}"));
            let titles: Vec<&str> = topics.iter().map(|topic| topic.title.as_str()).collect();
            match expected {
                Some(title) => assert_eq!(titles, ["Chapter 1: Start", title], "line {line:?}"),
                None => assert_eq!(titles, ["Chapter 1: Start"], "line {line:?}"),
            }
        }
    }

    #[test]
    fn a_textbook_page_reads_as_topics_of_steps_rules_and_definitions() {
        use GuidelineKind::{Definition, Example, Rule, Step, Tip};
        let text = "Fractions for Everyone
2.2 Unlike Denominators
When the denominators are different, we cannot add the
fractions straight away. First we rewrite them.
Steps
1. Find the least common multiple of the
denominators.
2. Rewrite each fraction with that denominator.
3. Add the numerators.
Example: 1/3 + 1/4 = 4/12 + 3/12 = 7/12.
Mixed Numbers
A mixed number is a whole number and a fraction together.
- Convert mixed numbers to improper fractions first.
\u{2022} Never add the whole numbers and the fractions separately
  without checking.
Tip: estimate the answer before you start.

14
";
        let topics = RulesExtractor::new().extract_page(&input(
            text,
            Some("2.1 Like Denominators"),
            &["Fractions for Everyone"],
        ));
        let summary: Vec<(&str, Vec<(GuidelineKind, &str)>)> = topics
            .iter()
            .map(|topic| {
                let guidelines = topic.guidelines.iter();
                let guidelines =
                    guidelines.map(|guideline| (guideline.kind, guideline.text.as_str()));
                (topic.title.as_str(), guidelines.collect())
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "2.2 Unlike Denominators",
                    vec![
                        (
                            Rule,
                            "When the denominators are different, we cannot add the fractions straight away."
                        ),
                        (Step, "Find the least common multiple of the denominators."),
                        (Step, "Rewrite each fraction with that denominator."),
                        (Step, "Add the numerators."),
                        (Example, "1/3 + 1/4 = 4/12 + 3/12 = 7/12."),
                    ]
                ),
                (
                    "Mixed Numbers",
                    vec![
                        (
                            Definition,
                            "A mixed number is a whole number and a fraction together."
                        ),
                        (Rule, "Convert mixed numbers to improper fractions first."),
                        (
                            Rule,
                            "Never add the whole numbers and the fractions separately without checking."
                        ),
                        (Tip, "Estimate the answer before you start."),
                    ]
                ),
            ]
        );
    }

    #[test]
    fn short_title_lines_need_a_heading_context() {
        let not_headings = [
            // Follows a sentence that has not ended.
            "Multiply the numerators and then\nThe Denominators\nCheck the result.",
            // The next line continues it.
            "Adding fractions\nis easy when the denominators match.",
            // Table cells come in runs.
            "Numerator\nDenominator\nCheck the result.",
            // Nothing after it on the page.
            "Check the result.\nAdding Fractions",
        ];
        for text in not_headings {
            let topics = extract(&format!("Chapter 1: Start\n{text}"));
            let titles: Vec<&str> = topics.iter().map(|topic| topic.title.as_str()).collect();
            assert_eq!(titles, ["Chapter 1: Start"], "text {text:?}");
        }
    }

    #[test]
    fn a_bare_chapter_number_takes_the_title_on_the_next_line() {
        let topics = extract("Chapter 2\nAdding Fractions\nAdd the numerators.");
        assert_eq!(topics.len(), 1);
        assert_eq!(topics[0].title, "Chapter 2: Adding Fractions");
        assert_eq!(topics[0].guidelines.len(), 1);
    }

    #[test]
    fn a_heading_with_nothing_under_it_is_still_a_topic() {
        let topics = extract("Chapter 1: Fractions\n1.1 Adding Fractions\nAdd the numerators.");
        let titles: Vec<&str> = topics.iter().map(|topic| topic.title.as_str()).collect();
        assert_eq!(titles, ["Chapter 1: Fractions", "1.1 Adding Fractions"]);
        assert!(topics[0].guidelines.is_empty());
        let topics = extract("Add the numerators.\nChapter 2: Ratios");
        assert_eq!(topics.last().unwrap().title, "Chapter 2: Ratios");
    }

    #[test]
    fn bare_page_numbers_are_not_content() {
        for line in [
            "12",
            "- 12 -",
            "— 12 —",
            "[12]",
            "Page 12",
            "page 12 of 200",
            "p. 12",
            "12 / 200",
            "12/200",
            "xii",
            "IV",
        ] {
            assert!(is_page_number(line), "{line:?}");
            let topics = extract(&format!(
                "{line}\nChapter 1: Fractions\nAdd the numerators.\n{line}"
            ));
            assert_eq!(topics.len(), 1, "{line:?}: {topics:?}");
            assert_eq!(topics[0].guidelines.len(), 1, "{line:?}: {topics:?}");
        }
        for line in [
            "12 apples",
            "Page 12 shows a picture.",
            "Mix",
            "mix",
            "Li",
            "1.5",
            "2025 -- 2026 x",
        ] {
            assert!(!is_page_number(line), "{line:?}");
        }
    }

    #[test]
    fn a_page_without_a_heading_continues_the_previous_topic() {
        let extractor = RulesExtractor::new();
        let topics = extractor.extract_page(&input(
            "the denominators stay the same.\nAlways simplify.\nChapter 3: Ratios\nWrite the ratio.",
            Some("Chapter 2: Subtracting fractions"),
            &[],
        ));
        let titles: Vec<&str> = topics.iter().map(|topic| topic.title.as_str()).collect();
        assert_eq!(
            titles,
            ["Chapter 2: Subtracting fractions", "Chapter 3: Ratios"]
        );
        // The first line ends the previous page's sentence: narrative, dropped.
        assert_eq!(topics[0].guidelines.len(), 1, "{topics:?}");
        assert_eq!(topics[0].guidelines[0].text, "Always simplify.");
    }

    #[test]
    fn content_before_any_heading_of_the_book_is_untitled() {
        let topics = extract("Always simplify.");
        assert_eq!(topics.len(), 1);
        assert_eq!(topics[0].title, UNTITLED_TOPIC);
        assert!(extract("").is_empty());
        assert!(extract("12\n\n  \n").is_empty());
    }

    #[test]
    fn running_headers_and_footers_are_ignored_at_the_edges_only() {
        let extractor = RulesExtractor::new();
        let text = "Fractions for Everyone\n14\nAdd the numerators.\nFractions for Everyone\nWrite the ratio.\nAlways simplify.\nMaths Press 2024";
        let running = ["Fractions for Everyone", "Maths Press 2025"];
        let topics = extractor.extract_page(&input(text, Some("Adding"), &running));
        let summary: Vec<(&str, Vec<&str>)> = topics
            .iter()
            .map(|topic| {
                let texts = topic
                    .guidelines
                    .iter()
                    .map(|guideline| guideline.text.as_str());
                (topic.title.as_str(), texts.collect())
            })
            .collect();
        // The header on the page's fourth line is no edge line: kept, and as a short title
        // line between sentences it is a heading.
        assert_eq!(
            summary,
            [
                ("Adding", vec!["Add the numerators."]),
                (
                    "Fractions for Everyone",
                    vec!["Write the ratio.", "Always simplify."]
                ),
            ]
        );
        let without_running = extractor.extract_page(&input(text, Some("Adding"), &[]));
        assert_eq!(without_running[0].title, "Fractions for Everyone");
    }

    #[test]
    fn running_lines_are_edge_lines_on_half_of_the_pages_and_at_least_three() {
        let titles = [
            "Adding",
            "Subtracting",
            "Multiplying",
            "Dividing",
            "Decimals",
            "Ratios",
        ];
        let pages: Vec<String> = titles
            .iter()
            .enumerate()
            .map(|(index, title)| {
                let page = index + 1;
                format!(
                    "Fractions for Everyone\nChapter {page}: {title}\nAdd the numerators.\nMiddle line\nWrite the ratio.\n{page}\nMaths Press - page {page}"
                )
            })
            .collect();
        let mut running: Vec<String> = running_lines(pages.iter().map(String::as_str))
            .into_iter()
            .collect();
        running.sort();
        // "Add the numerators." is on every page but never among the first two or last two
        // lines (the bare page number does not count as a line); "Write the ratio." is, but
        // a sentence is content wherever it stands. The folio number is ignored.
        assert_eq!(running, ["fractions for everyone", "maths press - page #"]);
        // Two pages are too few, even if every page has it.
        assert!(running_lines(["Header\nA.\nB.", "Header\nC.\nD."]).is_empty());
        // Three of seven pages are fewer than half; four are enough.
        let words = ["one", "two", "three", "four", "five", "six", "seven"];
        let texts: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(page, word)| {
                let header = if page < 3 { "Header" } else { "Other" };
                format!("{header}\nLine {word} a.\nLine {word} b.")
            })
            .collect();
        assert_eq!(
            running_lines(texts.iter().map(String::as_str)),
            HashSet::from(["other".to_owned()])
        );
    }
}
