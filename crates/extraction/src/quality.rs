//! Extraction quality against known truth (feature `quality`): generated books, their pages
//! rendered with ImageMagick and read back with tesseract, and a score of what the
//! extractor and finalize made of them.
//!
//! - [`generate`] makes books from a fixed seed: running headers and footers with and
//!   without page numbers, chapter openings (some pages only a heading), sections that
//!   continue over pages and start mid-page, numbered steps, examples, definitions and tips
//!   that carry numbers, sentences wrapped over lines and over a page break, and
//!   two-column pages. Each book knows every guideline it holds: kind, text, topic, pages.
//! - [`render_page`] and [`recognize_page`] make a page's PNG (`convert`, DejaVu Sans) and
//!   read it (`tesseract`, one thread), as the `ocr` job's default engine does.
//! - [`score`] matches extracted guidelines with the truth page by page (same page and
//!   pages, same kind, [`similarity`] of at least [`MATCH_SIMILARITY`]) and reports
//!   precision and recall per kind (guideline kinds and the situations above), topic
//!   assignment accuracy, and each topic's recall in the final document.
//! - [`run`] extracts every book as the `guidelines` job does, with the extractor
//!   [`Measured`], finalizes and scores it. The `openai` extractor goes over HTTP to a real
//!   endpoint, or to [`reader_server`]: a fake model that reads perfectly what it is sent
//!   and does what the prompt asks ([`reader_answer`]), so its figures are those of what
//!   Folio sends and makes of the answers.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chat_client::testing::{FakeAnswer, FakeChatServer, SeenRequest};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::finalize::{merge, normalize_title, similarity};
use crate::{
    ExtractError, Extractor, FinalGuidelines, GuidelineKind, OpenAiExtractor,
    OpenAiExtractorConfig, PageGuidelines, RulesExtractor, Topic,
};

/// An extracted guideline matches a true one from this [`similarity`] up (an OCR slip in a
/// long sentence passes, a different sentence does not).
pub const MATCH_SIMILARITY: f64 = 0.8;
/// Targets: recall and precision of every kind, and each topic of the final document.
pub const RECALL_TARGET: f64 = 0.98;
pub const PRECISION_TARGET: f64 = 0.95;
pub const TOPIC_RECALL_TARGET: f64 = 1.0;

/// The situations a guideline or page is tagged with (besides its guideline kind).
pub mod case {
    pub const RUNNING_WITH_NUMBERS: &str = "running_with_numbers";
    pub const RUNNING_WITHOUT_NUMBERS: &str = "running_without_numbers";
    pub const CHAPTER_OPENING: &str = "chapter_opening";
    pub const HEADING_ONLY: &str = "heading_only_page";
    pub const CONTINUED_SECTION: &str = "continued_section";
    pub const SECTION_MID_PAGE: &str = "section_mid_page";
    pub const NUMBERS: &str = "carries_numbers";
    pub const WRAPPED_LINES: &str = "wrapped_over_lines";
    pub const PAGE_BREAK: &str = "over_a_page_break";
    pub const TWO_COLUMNS: &str = "two_columns";
}

/// How much to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusConfig {
    pub seed: u64,
    pub books: usize,
    pub chapters: usize,
    /// At least 6, so that every situation fits in a chapter.
    pub pages_per_chapter: usize,
}

impl CorpusConfig {
    /// The benchmark's set: 4 books of 4 chapters of 20 pages (320 pages).
    pub fn bench() -> Self {
        Self {
            seed: 25,
            books: 4,
            chapters: 4,
            pages_per_chapter: 20,
        }
    }

    /// The test's set: every book style once, 2 chapters of 6 pages (48 pages).
    pub fn small() -> Self {
        Self {
            seed: 7,
            books: 4,
            chapters: 2,
            pages_per_chapter: 6,
        }
    }
}

/// A generated book.
#[derive(Debug, Clone)]
pub struct Book {
    pub id: String,
    pub pages: Vec<PagePlan>,
    /// Every guideline the book holds, in reading order.
    pub truth: Vec<Truth>,
}

/// What one page shows, top to bottom.
#[derive(Debug, Clone)]
pub struct PagePlan {
    pub page: u32,
    pub header: Vec<String>,
    /// Full-width lines above the columns (all the body on a one-column page).
    pub body: Vec<String>,
    /// Two columns under the body, if any.
    pub columns: Option<(Vec<String>, Vec<String>)>,
    pub footer: Option<String>,
    pub tags: BTreeSet<&'static str>,
}

impl PagePlan {
    /// The page's text as a perfect OCR would read it.
    pub fn text(&self) -> String {
        let mut lines: Vec<&str> = self.header.iter().map(String::as_str).collect();
        lines.extend(self.body.iter().map(String::as_str));
        if let Some((left, right)) = &self.columns {
            lines.extend(left.iter().map(String::as_str));
            lines.extend(right.iter().map(String::as_str));
        }
        lines.extend(self.footer.as_deref());
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// One guideline of a book as the extractor should give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// The page it starts on.
    pub page: u32,
    /// Both pages when it runs over a page break, else empty.
    pub pages: Vec<u32>,
    pub topic: String,
    pub kind: GuidelineKind,
    pub text: String,
    pub tags: BTreeSet<&'static str>,
}

const CHAPTER_TITLES: [&str; 8] = [
    "Counting",
    "Fractions",
    "Angles",
    "Decimals",
    "Ratios",
    "Measures",
    "Shapes",
    "Graphs",
];
const SECTION_TITLES: [&str; 8] = [
    "Counting On",
    "Unlike Fractions",
    "Right Angles",
    "Rounding Decimals",
    "Equal Ratios",
    "Metric Units",
    "Solid Shapes",
    "Bar Charts",
];

/// Rules on one line (each fits a column too).
const SHORT_RULES: [&str; 10] = [
    "Never divide by zero.",
    "Always show your working.",
    "Check with an estimate.",
    "Write the units every time.",
    "Use a ruler for lines.",
    "Read the question twice.",
    "Never round too early.",
    "Always label each axis.",
    "Draw a picture first.",
    "Keep your digits in columns.",
];

/// Rules rendered over two lines: the break and the whole sentence.
const WRAPPED_RULES: [(&str, &str); 6] = [
    ("Multiply both sides of the", "equation by the same number."),
    (
        "Convert each mixed number to",
        "an improper fraction first.",
    ),
    (
        "Compare the digits from the",
        "left when you order decimals.",
    ),
    ("Always simplify the result", "before you write it down."),
    ("Line up the decimal points", "before you add or subtract."),
    ("Never measure an angle", "without a protractor."),
];

/// Sentences carried over a page break: the end of one page, the start of the next.
const PAGE_BREAK_RULES: [(&str, &str); 4] = [
    (
        "To find the area of a rectangle, multiply its length",
        "by its width and write square units.",
    ),
    (
        "When you subtract decimals, line up the points and fill",
        "the empty places with zeros.",
    ),
    (
        "Before you divide by a fraction, turn the second fraction",
        "upside down and multiply.",
    ),
    (
        "Always check that the angles of a triangle add",
        "up to one hundred and eighty degrees.",
    ),
];

/// Procedures of three numbered steps (each fits a column).
const PROCEDURES: [[&str; 3]; 4] = [
    [
        "Find a common denominator.",
        "Rewrite both fractions.",
        "Add the numerators.",
    ],
    [
        "Place the protractor.",
        "Read the inner scale.",
        "Write the angle in degrees.",
    ],
    [
        "Count the decimal places.",
        "Multiply as whole numbers.",
        "Put the point back.",
    ],
    [
        "Write the ratio.",
        "Divide by the common factor.",
        "Check both parts.",
    ],
];

/// Definitions: (as printed, as extracted).
const DEFINITIONS: [(&str, &str); 6] = [
    (
        "Definition: a ratio compares two amounts.",
        "A ratio compares two amounts.",
    ),
    (
        "A right angle is an angle of 90 degrees.",
        "A right angle is an angle of 90 degrees.",
    ),
    (
        "Definition: a prime has exactly 2 factors.",
        "A prime has exactly 2 factors.",
    ),
    (
        "A decimal is another way to write a fraction.",
        "A decimal is another way to write a fraction.",
    ),
    (
        "Definition: a percent is a part of 100.",
        "A percent is a part of 100.",
    ),
    (
        "A litre is the volume of 1000 cubic centimetres.",
        "A litre is the volume of 1000 cubic centimetres.",
    ),
];

/// A deterministic sequence (a 64-bit LCG).
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % below as u64) as usize
    }

    /// `count` distinct indices below `below`.
    fn distinct(&mut self, count: usize, below: usize) -> Vec<usize> {
        let mut picked = Vec::with_capacity(count);
        while picked.len() < count.min(below) {
            let index = self.next(below);
            if !picked.contains(&index) {
                picked.push(index);
            }
        }
        picked
    }
}

/// The running lines of a book style: header lines and footer of page `page`.
fn running(style: usize, page: u32) -> (Vec<String>, Option<String>, &'static str) {
    match style % 4 {
        // The textbook: a header, a "Page N of the book" line, a bare number.
        0 => (
            vec![
                "Folio Textbook of Mathematics".to_owned(),
                format!("Page {page} of the book"),
            ],
            Some(page.to_string()),
            case::RUNNING_WITH_NUMBERS,
        ),
        1 => (
            vec![format!("Fractions for Everyone - {page}")],
            Some("Maths Press".to_owned()),
            case::RUNNING_WITH_NUMBERS,
        ),
        2 => (
            Vec::new(),
            Some(format!("{page} | Numbers and Shapes")),
            case::RUNNING_WITH_NUMBERS,
        ),
        _ => (
            vec!["Practical Geometry".to_owned()],
            Some("Workbook for Schools".to_owned()),
            case::RUNNING_WITHOUT_NUMBERS,
        ),
    }
}

/// Builds one book page by page, with its truth.
struct BookWriter {
    sequence: Sequence,
    pages: Vec<PagePlan>,
    truth: Vec<Truth>,
    topic: String,
    /// The end of a sentence the page before left unfinished: (its truth index, line).
    carried: Option<(usize, &'static str)>,
}

impl BookWriter {
    fn add(&mut self, page: &PagePlan, kind: GuidelineKind, text: &str, tags: &[&'static str]) {
        let mut all = page.tags.clone();
        all.extend(tags.iter().copied());
        all.insert(kind_tag(kind));
        if text.chars().any(|c| c.is_ascii_digit()) {
            all.insert(case::NUMBERS);
        }
        self.truth.push(Truth {
            page: page.page,
            pages: Vec::new(),
            topic: self.topic.clone(),
            kind,
            text: text.to_owned(),
            tags: all,
        });
    }
}

fn kind_tag(kind: GuidelineKind) -> &'static str {
    match kind {
        GuidelineKind::Rule => "rule",
        GuidelineKind::Step => "step",
        GuidelineKind::Tip => "tip",
        GuidelineKind::Definition => "definition",
        GuidelineKind::Example => "example",
    }
}

/// The books of `config`, the same for the same config.
pub fn generate(config: &CorpusConfig) -> Vec<Book> {
    assert!(
        config.pages_per_chapter >= 6,
        "at least 6 pages per chapter"
    );
    (0..config.books)
        .map(|book| generate_book(config, book))
        .collect()
}

fn generate_book(config: &CorpusConfig, style: usize) -> Book {
    let mut writer = BookWriter {
        sequence: Sequence(
            config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(style as u64),
        ),
        pages: Vec::new(),
        truth: Vec::new(),
        topic: String::new(),
        carried: None,
    };
    let per_chapter = config.pages_per_chapter;
    for chapter in 0..config.chapters {
        for index in 0..per_chapter {
            let page = (chapter * per_chapter + index + 1) as u32;
            let last_of_chapter = index + 1 == per_chapter;
            write_page(&mut writer, style, chapter, index, page, last_of_chapter);
        }
    }
    Book {
        id: format!("quality-{}", style + 1),
        pages: writer.pages,
        truth: writer.truth,
    }
}

fn write_page(
    writer: &mut BookWriter,
    style: usize,
    chapter: usize,
    index: usize,
    page: u32,
    last_of_chapter: bool,
) {
    let (header, footer, running_tag) = running(style, page);
    let mut plan = PagePlan {
        page,
        header,
        body: Vec::new(),
        columns: None,
        footer,
        tags: BTreeSet::from([running_tag]),
    };
    let heading_only = index == 0 && chapter % 2 == 1;
    if index == 0 {
        let title = format!(
            "Chapter {}. {}",
            chapter + 1,
            CHAPTER_TITLES[(style * 2 + chapter) % CHAPTER_TITLES.len()]
        );
        writer.topic = title.clone();
        plan.tags.insert(case::CHAPTER_OPENING);
        if heading_only {
            plan.tags.insert(case::HEADING_ONLY);
        }
        // The textbook puts the heading between its two header lines.
        if style.is_multiple_of(4) {
            plan.header.insert(1, title);
        } else {
            plan.body.push(title);
        }
    } else {
        plan.tags.insert(case::CONTINUED_SECTION);
        if index == 1 && chapter % 2 == 1 {
            plan.tags.insert(case::HEADING_ONLY);
        }
    }
    if let Some((truth, line)) = writer.carried.take() {
        plan.body.push(line.to_owned());
        writer.truth[truth].pages = vec![page - 1, page];
    }
    if heading_only {
        writer.pages.push(plan);
        return;
    }
    if index == 3 {
        write_columns(writer, &mut plan);
    } else {
        write_body(writer, &mut plan, chapter, index, style);
    }
    // Sentences over a page break, never into a chapter opening.
    if (index == 1 || index == 4) && !last_of_chapter {
        let (start, end) = PAGE_BREAK_RULES[writer.sequence.next(PAGE_BREAK_RULES.len())];
        plan.body.push(start.to_owned());
        writer.add(
            &plan,
            GuidelineKind::Rule,
            &format!("{start} {end}"),
            &[case::PAGE_BREAK],
        );
        writer.carried = Some((writer.truth.len() - 1, end));
    }
    writer.pages.push(plan);
}

/// A one-column page: rules (one wrapped), steps, a definition, a tip and an example; a
/// section heading mid-page halfway through the chapter.
fn write_body(
    writer: &mut BookWriter,
    plan: &mut PagePlan,
    chapter: usize,
    index: usize,
    style: usize,
) {
    let page = plan.page;
    let rules = writer.sequence.distinct(3, SHORT_RULES.len());
    for (position, rule) in rules.iter().enumerate() {
        if position == 1 && index == 2 {
            let title = format!(
                "{}.2 {}",
                chapter + 1,
                SECTION_TITLES[(style * 2 + chapter) % SECTION_TITLES.len()]
            );
            plan.body.push(title.clone());
            writer.topic = title;
            plan.tags.insert(case::SECTION_MID_PAGE);
        }
        plan.body.push(SHORT_RULES[*rule].to_owned());
        writer.add(plan, GuidelineKind::Rule, SHORT_RULES[*rule], &[]);
    }
    let (first, second) = WRAPPED_RULES[writer.sequence.next(WRAPPED_RULES.len())];
    plan.body.push(first.to_owned());
    plan.body.push(second.to_owned());
    writer.add(
        plan,
        GuidelineKind::Rule,
        &format!("{first} {second}"),
        &[case::WRAPPED_LINES],
    );
    if index % 3 == 1 {
        let procedure = PROCEDURES[writer.sequence.next(PROCEDURES.len())];
        for (step, text) in procedure.iter().enumerate() {
            plan.body.push(format!("{}. {text}", step + 1));
            writer.add(plan, GuidelineKind::Step, text, &[]);
        }
    }
    if index.is_multiple_of(2) {
        let (printed, text) = DEFINITIONS[writer.sequence.next(DEFINITIONS.len())];
        plan.body.push(printed.to_owned());
        writer.add(plan, GuidelineKind::Definition, text, &[]);
    }
    let (a, b) = (writer.sequence.next(9) + 2, writer.sequence.next(9) + 2);
    let tip = format!("Check that {a} times {b} is {} with a quick count.", a * b);
    plan.body.push(format!("Tip: {}", lowercase_first(&tip)));
    writer.add(plan, GuidelineKind::Tip, &tip, &[]);
    let example = format!("{page} plus {} equals {}.", page + 1, 2 * page + 1);
    plan.body.push(format!("Example: {example}"));
    writer.add(plan, GuidelineKind::Example, &example, &[]);
}

/// A full two-column page (tesseract tells short columns from one wide line of text less
/// reliably): each column with every short rule, two wrapped rules and a procedure; a tip
/// on the left, an example on the right.
fn write_columns(writer: &mut BookWriter, plan: &mut PagePlan) {
    plan.tags.insert(case::TWO_COLUMNS);
    let mut columns: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut added: Vec<(GuidelineKind, String, Vec<&'static str>)> = Vec::new();
    for column in &mut columns {
        for index in writer
            .sequence
            .distinct(SHORT_RULES.len(), SHORT_RULES.len())
        {
            column.push(SHORT_RULES[index].to_owned());
            added.push((GuidelineKind::Rule, SHORT_RULES[index].to_owned(), vec![]));
        }
        for index in writer.sequence.distinct(2, WRAPPED_RULES.len()) {
            let (first, second) = WRAPPED_RULES[index];
            column.extend([first.to_owned(), second.to_owned()]);
            added.push((
                GuidelineKind::Rule,
                format!("{first} {second}"),
                vec![case::WRAPPED_LINES],
            ));
        }
    }
    let (a, b) = (writer.sequence.next(9) + 2, writer.sequence.next(9) + 2);
    columns[0].push(format!("Tip: {a} times {b} is {}.", a * b));
    added.push((
        GuidelineKind::Tip,
        format!("{a} times {b} is {}.", a * b),
        vec![],
    ));
    for column in &mut columns {
        let procedure = PROCEDURES[writer.sequence.next(PROCEDURES.len())];
        for (step, text) in procedure.iter().enumerate() {
            column.push(format!("{}. {text}", step + 1));
            added.push((GuidelineKind::Step, (*text).to_owned(), vec![]));
        }
    }
    let (a, b) = (writer.sequence.next(20) + 10, writer.sequence.next(9) + 2);
    columns[1].push(format!("Example: {a} times {b} is {}.", a * b));
    added.push((
        GuidelineKind::Example,
        format!("{a} times {b} is {}.", a * b),
        vec![],
    ));
    for (kind, text, tags) in added {
        writer.add(plan, kind, &text, &tags);
    }
    let [left, right] = columns;
    plan.columns = Some((left, right));
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The font pages are set in.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Renders a page as an A4 page at 150 dpi (1240 x 1754): header at the top, body below,
/// columns side by side, footer centred at the foot. Needs ImageMagick's `convert`.
pub fn render_page(page: &PagePlan, png: &Path) -> io::Result<()> {
    let mut command = Command::new("convert");
    // `+size` so that each label is only as big as its text.
    command.args(["-size", "1240x1754", "xc:white", "+size", "-font", FONT]);
    command.args([
        "-pointsize",
        "26",
        "-interline-spacing",
        "12",
        "-fill",
        "black",
    ]);
    let mut y = 60;
    let place = |command: &mut Command, lines: &[String], x: u32, y: u32, gravity: &str| {
        command.args(["(", "-background", "white"]);
        command.arg(format!("label:{}", lines.join("\n")));
        command.args([")", "-gravity", gravity, "-geometry"]);
        command.arg(format!("+{x}+{y}"));
        command.arg("-composite");
    };
    let line_height = 44;
    if !page.header.is_empty() {
        place(&mut command, &page.header, 80, y, "NorthWest");
        y += page.header.len() as u32 * line_height + 50;
    }
    if !page.body.is_empty() {
        place(&mut command, &page.body, 80, y, "NorthWest");
        y += page.body.len() as u32 * line_height + 40;
    }
    if let Some((left, right)) = &page.columns {
        place(&mut command, left, 80, y, "NorthWest");
        place(&mut command, right, 700, y, "NorthWest");
    }
    if let Some(footer) = &page.footer {
        place(&mut command, std::slice::from_ref(footer), 0, 60, "South");
    }
    command.args(["-colorspace", "Gray", "-depth", "1", "-strip"]);
    command.arg(png);
    run_tool(&mut command).map(drop)
}

/// The page's text as the `ocr` job reads it: tesseract with one thread and its `txt` and
/// `tsv` outputs, made into the page's text by [`ocr::page_text`].
pub fn recognize_page(png: &Path) -> io::Result<String> {
    let base = png.with_extension("");
    let mut command = Command::new("tesseract");
    command
        .arg(png)
        .arg(&base)
        .args(["-l", "eng", "txt", "tsv"]);
    command.env("OMP_THREAD_LIMIT", "1");
    run_tool(&mut command)?;
    let txt = std::fs::read_to_string(base.with_extension("txt"))?;
    let tsv = std::fs::read_to_string(base.with_extension("tsv"))?;
    Ok(ocr::page_text(&txt, &tsv))
}

fn run_tool(command: &mut Command) -> io::Result<String> {
    let output = command.output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Renders and reads every page of `book` in `dir`, `parallelism` pages at a time; the
/// OCR text of each page in order.
pub fn ocr_book(book: &Book, dir: &Path, parallelism: usize) -> io::Result<Vec<(u32, String)>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(book.pages.len()));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallelism.max(1))
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(page) = book.pages.get(index) else {
                            return Ok(());
                        };
                        let png: PathBuf = dir.join(format!("{}-{:04}.png", book.id, page.page));
                        render_page(page, &png)?;
                        let text = recognize_page(&png)?;
                        results.lock().expect("results").push((page.page, text));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("OCR worker panicked"))
    })?;
    let mut texts = results.into_inner().expect("results");
    texts.sort_by_key(|(page, _)| *page);
    Ok(texts)
}

/// The extractor a run measures.
#[derive(Debug, Clone)]
pub enum Measured {
    /// The `rules` extractor.
    Rules,
    /// The `openai` extractor against a local fake model of each book that reads
    /// perfectly ([`reader_answer`], served by [`reader_server`]).
    OpenAiReader,
    /// The `openai` extractor against a real endpoint.
    OpenAi(OpenAiExtractorConfig),
}

impl Measured {
    /// Its name in reports: `rules`, `openai:reader`, `openai:MODEL`.
    pub fn name(&self) -> String {
        match self {
            Self::Rules => "rules".to_owned(),
            Self::OpenAiReader => "openai:reader".to_owned(),
            Self::OpenAi(config) => format!("openai:{}", config.model),
        }
    }
}

/// The page texts of `books` as a perfect OCR reads them, by book id.
pub fn perfect_texts(books: &[Book]) -> BTreeMap<String, Vec<(u32, String)>> {
    books
        .iter()
        .map(|book| {
            let texts = book.pages.iter().map(|page| (page.page, page.text()));
            (book.id.clone(), texts.collect())
        })
        .collect()
}

/// Every book's pages (`texts`, by book id) extracted in order by `measured` as the
/// `guidelines` job does ([`crate::extract_book`]), finalized, and scored.
pub async fn run(
    books: &[Book],
    texts: &BTreeMap<String, Vec<(u32, String)>>,
    measured: &Measured,
) -> Result<Report, ExtractError> {
    let mut extracted = Vec::with_capacity(books.len());
    for book in books {
        let pages: Vec<(u32, &str)> = texts
            .get(&book.id)
            .into_iter()
            .flatten()
            .map(|(page, text)| (*page, text.as_str()))
            .collect();
        // A reader lives as long as its book's extraction.
        let (extractor, _reader): (Box<dyn Extractor>, _) = match measured {
            Measured::Rules => (Box::new(RulesExtractor::new()), None),
            Measured::OpenAi(config) => (Box::new(OpenAiExtractor::new(config.clone())?), None),
            Measured::OpenAiReader => {
                let reader = reader_server(book.clone()).await;
                let config = OpenAiExtractorConfig::new(reader.base_url(), None, "reader");
                (Box::new(OpenAiExtractor::new(config)?), Some(reader))
            }
        };
        let pages = crate::extract_book(&*extractor, &pages, &CancellationToken::new()).await?;
        let document = merge(&book.id, &pages);
        extracted.push((pages, document));
    }
    let runs: Vec<BookRun<'_>> = books
        .iter()
        .zip(&extracted)
        .map(|(book, (pages, document))| BookRun {
            book,
            pages,
            document,
        })
        .collect();
    Ok(score(&runs))
}

/// A chat-completions server that answers each request about a page of `book` as
/// [`reader_answer`] reads the page text in its user message.
pub async fn reader_server(book: Book) -> FakeChatServer {
    FakeChatServer::respond(Arc::new(move |request: &SeenRequest, _| {
        let message = request.message("user");
        let previous = message
            .strip_prefix("The previous page ended in the topic \"")
            .and_then(|rest| rest.split_once("\". "))
            .map(|(topic, _)| topic);
        let sent = message
            .split_once("\"\"\"\n")
            .and_then(|(_, rest)| rest.rsplit_once("\n\"\"\""))
            .map_or("", |(text, _)| text);
        // A reader never says `pages`: the answer is as the schema has it.
        let topics = reader_answer(&book, sent, previous);
        FakeAnswer::completion(&serde_json::json!({ "topics": topics }).to_string())
    }))
    .await
}

/// What a model that reads perfectly, and does just what the openai extractor's prompt
/// asks, answers for a page of `book` sent as `sent` (the text in the request): the fake
/// model of the benchmark's `openai` runs, so that they measure what Folio sends, how it
/// carries topics over pages and what it makes of the answers, not a model.
///
/// It knows the book's truth but says only what `sent` shows: each true guideline of the
/// page whose whole text is in `sent` (labels and list markers left out, as the prompt
/// says), and of a sentence that runs over a page break, the part on this page. A
/// guideline goes under its topic's heading when that heading is in `sent`, else under
/// `previous_topic` (as the prompt tells the model), else under "Untitled"; a heading in
/// `sent` with nothing under it is a topic without guidelines (as the prompt says too).
pub fn reader_answer(book: &Book, sent: &str, previous_topic: Option<&str>) -> Vec<Topic> {
    let seen = squash(sent);
    let Some(plan) = book.pages.iter().max_by_key(|plan| {
        // The page sent: the one with the largest share of its lines in `sent`, then the
        // most lines (the first on a tie).
        let lines: Vec<&String> = plan
            .body
            .iter()
            .chain(
                plan.columns
                    .iter()
                    .flat_map(|(left, right)| left.iter().chain(right)),
            )
            .collect();
        let present = lines
            .iter()
            .filter(|line| seen.contains(&squash(line)))
            .count();
        (
            present * 1_000 / lines.len().max(1),
            present,
            std::cmp::Reverse(plan.page),
        )
    }) else {
        return Vec::new();
    };
    // A part of a sentence over a page break is whole lines of `sent` (a word of it may
    // well stand anywhere else on the page).
    let lines: Vec<&str> = sent.lines().collect();
    let whole_lines = |part: &str| {
        let part = squash(part);
        (0..lines.len()).any(|start| {
            (start..lines.len()).any(|end| squash(&lines[start..=end].join(" ")) == part)
        })
    };
    let mut topics: Vec<Topic> = Vec::new();
    let mut push = |title: &str, text: &str, kind: GuidelineKind| {
        let title = if seen.contains(&squash(title)) {
            title
        } else {
            previous_topic.unwrap_or("Untitled")
        };
        let guideline = crate::Guideline::new(kind, text);
        match topics.last_mut() {
            Some(last) if last.title == title => last.guidelines.push(guideline),
            _ => topics.push(Topic {
                title: title.to_owned(),
                guidelines: vec![guideline],
            }),
        }
    };
    for truth in &book.truth {
        let words: Vec<&str> = truth.text.split_whitespace().collect();
        if truth.page == plan.page {
            if seen.contains(&squash(&truth.text)) {
                push(&truth.topic, &truth.text, truth.kind);
            } else if !truth.pages.is_empty() {
                // The start of a sentence the next page ends: the longest start on this page.
                if let Some(part) = (1..words.len())
                    .rev()
                    .map(|count| words[..count].join(" "))
                    .find(|part| whole_lines(part))
                {
                    push(&truth.topic, &part, truth.kind);
                }
            }
        } else if truth.pages.last() == Some(&plan.page) {
            // The end of a sentence the page before started.
            if let Some(part) = (1..words.len())
                .map(|from| words[from..].join(" "))
                .find(|part| whole_lines(part))
            {
                push(&truth.topic, &part, truth.kind);
            }
        }
    }
    // Headings on the page with nothing under it, and every topic in page order.
    let mut titles: Vec<&str> = book
        .truth
        .iter()
        .map(|truth| truth.topic.as_str())
        .collect();
    titles.dedup();
    for title in titles {
        if seen.contains(&squash(title)) && !topics.iter().any(|topic| topic.title == title) {
            topics.push(Topic {
                title: title.to_owned(),
                guidelines: Vec::new(),
            });
        }
    }
    topics.sort_by_key(|topic| seen.find(&squash(&topic.title)).unwrap_or(0));
    topics
}

/// Lowercase words of letters and digits, one space apart: text compared whatever its
/// punctuation and line breaks.
fn squash(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    let mut squashed = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    // Padded, so that a contained text starts and ends on word boundaries.
    squashed.insert(0, ' ');
    squashed.push(' ');
    squashed
}

/// Counts of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    /// True guidelines of the kind.
    pub truth: usize,
    /// Of those, found.
    pub found: usize,
    /// Extracted guidelines counted for the kind.
    pub extracted: usize,
    /// Of those, right.
    pub right: usize,
}

impl Figures {
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.truth)
    }

    pub fn precision(&self) -> f64 {
        ratio(self.right, self.extracted)
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// One topic of a book's final document against the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicRecall {
    pub book: String,
    pub topic: String,
    /// Distinct true guidelines of the topic.
    pub expected: usize,
    /// Of those, in the topic with every page they are on.
    pub found: usize,
}

impl TopicRecall {
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.expected)
    }
}

/// A book's run: its truth, the extractor's pages and the final document.
pub struct BookRun<'a> {
    pub book: &'a Book,
    pub pages: &'a [PageGuidelines],
    pub document: &'a FinalGuidelines,
}

/// The quality of a set of runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub pages: usize,
    /// Per guideline kind and per situation.
    pub kinds: BTreeMap<&'static str, Figures>,
    /// Found guidelines under their true topic, of all found.
    pub topics_right: usize,
    pub topics_found: usize,
    pub final_topics: Vec<TopicRecall>,
    /// Some of what was missed and what was extracted wrongly, for people.
    pub misses: Vec<String>,
}

impl Report {
    pub fn topic_accuracy(&self) -> f64 {
        ratio(self.topics_right, self.topics_found)
    }

    /// Topics of the final documents with every true guideline.
    pub fn complete_topics(&self) -> usize {
        self.final_topics
            .iter()
            .filter(|topic| topic.recall() >= TOPIC_RECALL_TARGET)
            .count()
    }

    /// Every figure below its target, named.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut below = Vec::new();
        for (kind, figures) in &self.kinds {
            if figures.recall() < RECALL_TARGET {
                below.push(format!("{kind} recall {:.3}", figures.recall()));
            }
            if figures.precision() < PRECISION_TARGET {
                below.push(format!("{kind} precision {:.3}", figures.precision()));
            }
        }
        for topic in &self.final_topics {
            if topic.recall() < TOPIC_RECALL_TARGET {
                below.push(format!(
                    "{} / {}: {} of {} in the final document",
                    topic.book, topic.topic, topic.found, topic.expected
                ));
            }
        }
        below
    }

    /// The report as one JSON object (`bench` named by the caller).
    pub fn to_json(&self, bench: &str, extractor: &str) -> serde_json::Value {
        let round = |value: f64| (value * 10_000.0).round() / 10_000.0;
        let kinds: serde_json::Map<String, serde_json::Value> = self
            .kinds
            .iter()
            .map(|(kind, figures)| {
                (
                    (*kind).to_owned(),
                    serde_json::json!({
                        "truth": figures.truth,
                        "extracted": figures.extracted,
                        "recall": round(figures.recall()),
                        "precision": round(figures.precision()),
                    }),
                )
            })
            .collect();
        let topics: Vec<serde_json::Value> = self
            .final_topics
            .iter()
            .map(|topic| {
                serde_json::json!({
                    "book": topic.book,
                    "topic": topic.topic,
                    "expected": topic.expected,
                    "found": topic.found,
                    "recall": round(topic.recall()),
                })
            })
            .collect();
        serde_json::json!({
            "bench": bench,
            "extractor": extractor,
            "pages": self.pages,
            "kinds": kinds,
            "topic_accuracy": round(self.topic_accuracy()),
            "final_topics_complete": self.complete_topics(),
            "final_topics": self.final_topics.len(),
            "final_topic_recall": topics,
            "targets_met": self.shortfalls().is_empty(),
        })
    }

    /// The report as Markdown tables: per kind, then per topic of the final documents.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{} pages; topic assignment accuracy {:.4}; final topics complete {} of {}\n\n",
            self.pages,
            self.topic_accuracy(),
            self.complete_topics(),
            self.final_topics.len()
        );
        out.push_str("| kind | truth | extracted | recall | precision |\n|---|---|---|---|---|\n");
        for (kind, figures) in &self.kinds {
            out.push_str(&format!(
                "| {kind} | {} | {} | {:.4} | {:.4} |\n",
                figures.truth,
                figures.extracted,
                figures.recall(),
                figures.precision()
            ));
        }
        out.push_str("\n| book | topic | expected | found | recall |\n|---|---|---|---|---|\n");
        for topic in &self.final_topics {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.4} |\n",
                topic.book,
                topic.topic,
                topic.expected,
                topic.found,
                topic.recall()
            ));
        }
        out
    }
}

/// One extracted guideline, flattened.
struct Extracted<'a> {
    topic: &'a str,
    kind: GuidelineKind,
    text: &'a str,
    pages: Vec<u32>,
}

/// Scores runs against their truth (see the module docs).
pub fn score(runs: &[BookRun<'_>]) -> Report {
    let mut report = Report::default();
    for run in runs {
        report.pages += run.book.pages.len();
        score_pages(run, &mut report);
        score_final(run, &mut report);
    }
    report
}

fn score_pages(run: &BookRun<'_>, report: &mut Report) {
    let page_tags: BTreeMap<u32, BTreeSet<&'static str>> = run
        .book
        .pages
        .iter()
        .map(|page| {
            let mut tags = page.tags.clone();
            for truth in run
                .book
                .truth
                .iter()
                .filter(|truth| truth.page == page.page)
            {
                tags.extend(truth.tags.iter().copied());
            }
            (page.page, tags)
        })
        .collect();
    for page in run.pages {
        let truths: Vec<&Truth> = run
            .book
            .truth
            .iter()
            .filter(|truth| truth.page == page.page)
            .collect();
        let extracted: Vec<Extracted<'_>> = page
            .topics
            .iter()
            .flat_map(|topic| {
                topic.guidelines.iter().map(|guideline| Extracted {
                    topic: &topic.title,
                    kind: guideline.kind,
                    text: &guideline.text,
                    pages: guideline.pages.clone(),
                })
            })
            .collect();
        let matches = match_page(&truths, &extracted);
        for (index, truth) in truths.iter().enumerate() {
            let found = matches[index].is_some();
            for tag in &truth.tags {
                let figures = report.kinds.entry(tag).or_default();
                figures.truth += 1;
                figures.found += usize::from(found);
            }
            if let Some(extracted_at) = matches[index] {
                report.topics_found += 1;
                let right_topic =
                    normalize_title(extracted[extracted_at].topic) == normalize_title(&truth.topic);
                report.topics_right += usize::from(right_topic);
                if !right_topic && report.misses.len() < 40 {
                    report.misses.push(format!(
                        "{} p.{}: {:?} under {:?}, not {:?}",
                        run.book.id,
                        page.page,
                        truth.text,
                        extracted[extracted_at].topic,
                        truth.topic
                    ));
                }
            } else if report.misses.len() < 40 {
                report.misses.push(format!(
                    "{} p.{}: missed {} {:?}",
                    run.book.id, page.page, truth.kind, truth.text
                ));
            }
        }
        let empty = BTreeSet::new();
        let tags = page_tags.get(&page.page).unwrap_or(&empty);
        for (index, guideline) in extracted.iter().enumerate() {
            let right = matches.contains(&Some(index));
            // Precision of a situation: the guidelines extracted from its pages; of a
            // guideline kind: the guidelines extracted with that kind.
            let kinds = tags
                .iter()
                .copied()
                .filter(|tag| {
                    !GuidelineKind::ALL
                        .iter()
                        .any(|kind| kind_tag(*kind) == *tag)
                })
                .chain([kind_tag(guideline.kind)]);
            for tag in kinds {
                let figures = report.kinds.entry(tag).or_default();
                figures.extracted += 1;
                figures.right += usize::from(right);
            }
            if !right && report.misses.len() < 40 {
                report.misses.push(format!(
                    "{} p.{}: extra {} {:?}",
                    run.book.id, page.page, guideline.kind, guideline.text
                ));
            }
        }
    }
}

/// For each truth, the extracted guideline it matches (one-to-one, best similarity first).
fn match_page(truths: &[&Truth], extracted: &[Extracted<'_>]) -> Vec<Option<usize>> {
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (truth_at, truth) in truths.iter().enumerate() {
        for (extracted_at, guideline) in extracted.iter().enumerate() {
            if guideline.kind != truth.kind || guideline.pages != truth.pages {
                continue;
            }
            let similar = similarity(&truth.text, guideline.text);
            if similar >= MATCH_SIMILARITY {
                pairs.push((similar, truth_at, extracted_at));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut matches = vec![None; truths.len()];
    let mut taken = vec![false; extracted.len()];
    for (_, truth_at, extracted_at) in pairs {
        if matches[truth_at].is_none() && !taken[extracted_at] {
            matches[truth_at] = Some(extracted_at);
            taken[extracted_at] = true;
        }
    }
    matches
}

/// A topic's distinct true guidelines (kind, text) and every page each is on.
type TopicTruth<'a> = BTreeMap<(GuidelineKind, &'a str), BTreeSet<u32>>;

/// Each true topic's distinct guidelines (by kind and text), with every page they are on,
/// looked up in the final topic of the same normalized title.
fn score_final(run: &BookRun<'_>, report: &mut Report) {
    let mut expected: BTreeMap<String, (String, TopicTruth<'_>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for truth in &run.book.truth {
        let key = normalize_title(&truth.topic);
        if !expected.contains_key(&key) {
            order.push(key.clone());
        }
        let (_, guidelines) = expected
            .entry(key)
            .or_insert_with(|| (truth.topic.clone(), BTreeMap::new()));
        let pages = guidelines.entry((truth.kind, &truth.text)).or_default();
        pages.insert(truth.page);
        pages.extend(truth.pages.iter().copied());
    }
    for key in order {
        let (title, guidelines) = &expected[&key];
        let topic = run
            .document
            .topics
            .iter()
            .find(|topic| normalize_title(&topic.title) == key);
        let found = guidelines
            .iter()
            .filter(|((kind, text), pages)| {
                topic.is_some_and(|topic| {
                    topic.guidelines.iter().any(|guideline| {
                        guideline.kind == *kind
                            && similarity(text, &guideline.text) >= MATCH_SIMILARITY
                            && pages.iter().all(|page| guideline.pages.contains(page))
                    })
                })
            })
            .count();
        report.final_topics.push(TopicRecall {
            book: run.book.id.clone(),
            topic: title.clone(),
            expected: guidelines.len(),
            found,
        });
    }
}
