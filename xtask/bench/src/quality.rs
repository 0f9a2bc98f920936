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
//!
//! `--extractor openai` measures the `openai` extractor instead of `rules`: each page is a
//! real chat-completions request over HTTP, with the prompt, schema and answer parsing of
//! the `guidelines` job. By default the endpoint is a local fake model that reads perfectly
//! and does what the prompt says ([`quality::reader_answer`]), so the figures are those of
//! what Folio sends and does with the answers. `--endpoint URL --model NAME` (key in
//! `OPENAI_API_KEY`) measures a real model instead.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use extraction::OpenAiExtractorConfig;
use extraction::quality::{self, CorpusConfig, Measured};

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
    let measured = match (
        flags.text("extractor", "rules").as_str(),
        flags.text("endpoint", ""),
    ) {
        ("rules", _) => Measured::Rules,
        ("openai", endpoint) if endpoint.is_empty() => Measured::OpenAiReader,
        ("openai", endpoint) => Measured::OpenAi(OpenAiExtractorConfig::new(
            endpoint,
            std::env::var("OPENAI_API_KEY").ok(),
            flags.text("model", "gpt-4o-mini"),
        )),
        (other, _) => bail!("--extractor {other}: rules or openai"),
    };
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
    let perfect = quality::perfect_texts(&books);
    let mut shortfalls = Vec::new();
    for (source, texts) in [("perfect_text", &perfect), ("ocr", &texts)] {
        let started = Instant::now();
        let report = quality::run(&books, texts, &measured)
            .await
            .with_context(|| format!("extracting with {}", measured.name()))?;
        let extract_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut json = report.to_json("extraction-quality", &measured.name());
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
