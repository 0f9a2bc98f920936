//! `cargo xtask bench extraction-quality`: extraction quality on generated books with known
//! truth (`extraction::quality`): every page rendered with ImageMagick and read with
//! tesseract, then extracted in order as the `guidelines` job does and finalized. Reports
//! precision and recall per kind (guideline kinds and situations), topic-assignment
//! accuracy and each topic's recall in the final document: a JSON line on stdout, the
//! tables on stderr. It reports the same books as a perfect OCR would read them first
//! (`"source": "perfect_text"`: the extractor alone), then as tesseract read them
//! (`"source": "ocr"`). Fails when a figure of either is below its target.
//!
//! Flags: `--seed` (25), `--books` (4), `--chapters` (4), `--pages-per-chapter` (20): 320
//! pages by default; `--parallelism` (2) pages rendered and read at a time;
//! `--save-ocr FILE` writes the OCR texts as JSON, `--ocr-from FILE` reads them instead of
//! running OCR (same seed and sizes), so the extractor alone can be measured again.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use extraction::RulesExtractor;
use extraction::finalize::merge;
use extraction::quality::{self, BookRun, CorpusConfig};

use crate::flags::Flags;

pub(crate) async fn run(flags: &Flags) -> Result<()> {
    let defaults = CorpusConfig::bench();
    let config = CorpusConfig {
        seed: flags.get("seed", defaults.seed)?,
        books: flags.get("books", defaults.books)?,
        chapters: flags.get("chapters", defaults.chapters)?,
        pages_per_chapter: flags.get("pages-per-chapter", defaults.pages_per_chapter)?,
    };
    if config.pages_per_chapter < 6 || config.books == 0 || config.chapters == 0 {
        bail!("at least 1 book of 1 chapter of 6 pages");
    }
    let parallelism: usize = flags.get("parallelism", 2)?;
    let books = quality::generate(&config);

    let started = Instant::now();
    let texts: BTreeMap<String, Vec<(u32, String)>> = match flags.text("ocr-from", "").as_str() {
        "" => {
            let dir = tempfile::tempdir()?;
            let mut texts = BTreeMap::new();
            for book in &books {
                let read = tokio::task::block_in_place(|| {
                    quality::ocr_book(book, dir.path(), parallelism)
                })
                .with_context(|| {
                    format!("rendering and reading {} (convert, tesseract)", book.id)
                })?;
                texts.insert(book.id.clone(), read);
            }
            texts
        }
        path => serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("reading OCR texts from {path}"))?,
    };
    let ocr_s = started.elapsed().as_secs_f64();
    let save = flags.text("save-ocr", "");
    if !save.is_empty() {
        std::fs::write(&save, serde_json::to_vec(&texts)?)?;
    }

    // The same books as a perfect OCR would read them: what is left is the extractor's.
    let perfect: BTreeMap<String, Vec<(u32, String)>> = books
        .iter()
        .map(|book| {
            let texts = book.pages.iter().map(|page| (page.page, page.text()));
            (book.id.clone(), texts.collect())
        })
        .collect();
    let mut shortfalls = Vec::new();
    for (source, texts) in [("perfect_text", &perfect), ("ocr", &texts)] {
        let started = Instant::now();
        let report = score(&books, texts)?;
        let extract_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut json = report.to_json("extraction-quality", "rules");
        json["source"] = source.into();
        json["seed"] = config.seed.into();
        if source == "ocr" {
            json["ocr_s"] = ((ocr_s * 10.0).round() / 10.0).into();
        }
        json["extract_and_score_ms"] = ((extract_ms * 10.0).round() / 10.0).into();
        println!("{json}");
        eprintln!("## {source}\n\n{}", report.markdown());
        for miss in &report.misses {
            eprintln!("  {miss}");
        }
        shortfalls.extend(
            report
                .shortfalls()
                .into_iter()
                .map(|shortfall| format!("{source}: {shortfall}")),
        );
    }
    if !shortfalls.is_empty() {
        bail!("below target: {}", shortfalls.join("; "));
    }
    Ok(())
}

/// Every book extracted in order as the `guidelines` job does, finalized, and scored.
fn score(
    books: &[quality::Book],
    texts: &BTreeMap<String, Vec<(u32, String)>>,
) -> Result<quality::Report> {
    let extractor = RulesExtractor::new();
    let mut extracted = Vec::with_capacity(books.len());
    for book in books {
        let Some(book_texts) = texts.get(&book.id) else {
            bail!("no OCR texts for {}", book.id);
        };
        let pages: Vec<(u32, &str)> = book_texts
            .iter()
            .map(|(page, text)| (*page, text.as_str()))
            .collect();
        let pages = extractor.extract_book(&pages);
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
    Ok(quality::score(&runs))
}
