//! The real tesseract engine on the fixture pages.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ocr::testing::{
    character_error_rate, fixture_pages, german_page, require_tesseract,
    require_tesseract_languages, two_column_page,
};
use ocr::{OcrEngine, OcrError, PageImage, TesseractConfig, TesseractEngine};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn tesseract_reads_every_fixture_page_with_under_three_percent_character_errors() {
    require_tesseract().await;
    let engine = TesseractEngine::default();
    let cancel = CancellationToken::new();
    for page in fixture_pages() {
        let image = PageImage::new(page.number, page.png.clone());
        let text = engine.recognize(&image, &cancel).await.unwrap();
        let rate = character_error_rate(&page.text, &text);
        assert!(
            rate < 0.03,
            "page {}: error rate {rate:.3}\nexpected: {}\nactual: {text}",
            page.number,
            page.text
        );
        assert!(!text.contains('\x0c'), "form feed left in {text:?}");
    }
}

#[tokio::test]
async fn a_cancelled_recognition_kills_tesseract_at_once() {
    require_tesseract().await;
    // A large blank page keeps tesseract busy long enough to cancel it mid-run.
    let engine = TesseractEngine::default();
    let cancel = CancellationToken::new();
    let page = PageImage::new(1, large_page());
    let started = Instant::now();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        })
    };
    let error = engine.recognize(&page, &cancel).await.unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(error, OcrError::Cancelled), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_page_over_the_timeout_is_killed_and_retryable() {
    require_tesseract().await;
    let engine = TesseractEngine::new(TesseractConfig {
        timeout: Duration::from_millis(50),
        ..TesseractConfig::default()
    });
    let page = PageImage::new(1, large_page());
    let error = engine
        .recognize(&page, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(error, OcrError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_png_tesseract_cannot_read_fails_the_page_by_exit_status() {
    require_tesseract().await;
    // A PNG signature followed by garbage: tesseract exits non-zero.
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[0_u8; 64]);
    let error = TesseractEngine::default()
        .recognize(
            &PageImage::new(1, Bytes::from(bytes)),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, OcrError::ExitStatus { .. }), "{error:?}");
    assert!(!error.is_retryable());
    assert!(!error.affects_every_page());
}

#[tokio::test]
async fn a_process_killed_by_a_signal_is_retryable() {
    // A stand-in program that kills itself with SIGKILL, as the OOM killer would.
    let dir = tempfile::tempdir().unwrap();
    let program: PathBuf = dir.path().join("tesseract");
    std::fs::write(&program, "#!/bin/sh\nkill -9 $$\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let engine = TesseractEngine::new(TesseractConfig {
        program,
        ..TesseractConfig::default()
    });
    let error = engine
        .recognize(
            &PageImage::new(1, fixture_pages()[0].png.clone()),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, OcrError::Killed { signal: 9, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

/// A large page of noise: seconds of tesseract work.
fn large_page() -> Bytes {
    noisy_png(2400, 3600)
}

/// An uncompressed (stored deflate blocks) 8-bit grayscale PNG of random noise.
fn noisy_png(width: u32, height: u32) -> Bytes {
    let mut raw = Vec::with_capacity(((width + 1) * height) as usize);
    let mut state: u32 = 0x1234_5678;
    for _ in 0..height {
        // Each row starts with its filter type, 0 (none).
        raw.extend(std::iter::once(0).chain((0..width).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if state.is_multiple_of(7) { 0 } else { 255 }
        })));
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    Bytes::from(png)
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    png.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (index, block) in blocks.iter().enumerate() {
        out.push(u8::from(index + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1_u32, 0_u32);
    for byte in data {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn one_run_gives_the_text_its_hocr_and_its_word_confidence() {
    require_tesseract().await;
    let page = &fixture_pages()[0];
    let recognized = TesseractEngine::default()
        .recognize_page(
            &PageImage::new(1, page.png.clone()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(character_error_rate(&page.text, &recognized.text) < 0.03);
    let hocr = recognized.hocr.as_deref().unwrap();
    assert!(
        hocr.contains("ocrx_word") && hocr.contains("x_wconf"),
        "{hocr}"
    );
    assert_eq!(
        recognized.words,
        Some(page.text.split_whitespace().count() as u64)
    );
    let confidence = recognized.confidence.unwrap();
    assert!(confidence > 85.0, "{confidence}");
    assert!(!recognized.needs_review(60.0));
}

#[tokio::test]
async fn a_two_column_page_reads_column_by_column_where_tesseract_reads_rows_across() {
    require_tesseract().await;
    let page = two_column_page();
    let recognized = TesseractEngine::default()
        .recognize_page(
            &PageImage::new(page.number, page.png.clone()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    // Read straight across, a row of both columns is one line ("1. Write the ratio.
    // 2. Multiply as whole numbers."): most of the lower half lands out of order.
    let rate = character_error_rate(&page.text, &recognized.text);
    assert!(
        rate < 0.03,
        "CER {rate:.4}
{}",
        recognized.text
    );
    assert!(
        recognized
            .text
            .lines()
            .all(|line| !line.contains("ratio. 2.")),
        "{}",
        recognized.text
    );
}

/// `png` turned clockwise by `quarters` quarter turns.
fn turned(png: &[u8], quarters: u8) -> Bytes {
    let image = image::load_from_memory(png).unwrap();
    let image = match quarters {
        1 => image.rotate90(),
        2 => image.rotate180(),
        _ => image.rotate270(),
    };
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    Bytes::from(out)
}

#[tokio::test]
async fn a_page_turned_upside_down_is_read_upright_with_its_rotation_and_boxes_on_the_image() {
    require_tesseract().await;
    let page = &fixture_pages()[0];
    let engine = TesseractEngine::default();
    let cancel = CancellationToken::new();
    let upside_down = turned(&page.png, 2);
    let recognized = engine
        .recognize_page(&PageImage::new(1, upside_down.clone()), &cancel)
        .await
        .unwrap();
    let rate = character_error_rate(&page.text, &recognized.text);
    assert!(rate < 0.03, "CER {rate:.4}\n{}", recognized.text);
    assert_eq!(recognized.rotation, Some(180));
    assert!(recognized.confidence.unwrap() > 85.0, "{recognized:?}");
    // Read upright without the second look, the page is garbage.
    let plain = TesseractEngine::new(TesseractConfig {
        upright_below: None,
        ..TesseractConfig::default()
    })
    .recognize_page(&PageImage::new(1, upside_down.clone()), &cancel)
    .await
    .unwrap();
    assert!(
        character_error_rate(&page.text, &plain.text) > 0.5,
        "{}",
        plain.text
    );
    assert_eq!(plain.rotation, None);
    // The boxes are on the image as uploaded: the first word is at its lower right.
    let hocr = recognized.hocr.unwrap();
    let image = image::load_from_memory(&upside_down).unwrap();
    let first_word = hocr.split("class='ocrx_word'").nth(1).unwrap();
    let bbox: Vec<u32> = first_word
        .split("bbox ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(first_word.contains(">Chapter<"), "{first_word}");
    assert!(
        bbox[0] > image.width() / 2 && bbox[1] > image.height() / 2,
        "{bbox:?} on {}x{}",
        image.width(),
        image.height()
    );

    // A page turned a quarter is read right as it comes; one read upright is not looked at.
    for quarters in [1, 3] {
        let recognized = engine
            .recognize_page(&PageImage::new(1, turned(&page.png, quarters)), &cancel)
            .await
            .unwrap();
        let rate = character_error_rate(&page.text, &recognized.text);
        assert!(
            rate < 0.03,
            "{quarters}: CER {rate:.4}\n{}",
            recognized.text
        );
    }
    let upright = engine
        .recognize_page(&PageImage::new(1, page.png.clone()), &cancel)
        .await
        .unwrap();
    assert_eq!(upright.rotation, None);
}

#[tokio::test]
async fn a_german_page_read_with_deu_has_under_three_percent_character_errors() {
    require_tesseract_languages(&["deu"]).await;
    let page = german_page();
    let engine = TesseractEngine::default();
    let cancel = CancellationToken::new();
    let german = engine
        .recognize_page(
            &PageImage::new(1, page.png.clone()).with_language("deu"),
            &cancel,
        )
        .await
        .unwrap();
    let rate = character_error_rate(&page.text, &german.text);
    println!(
        "deu: CER {rate:.4}, confidence {:?}, words {:?}",
        german.confidence, german.words
    );
    assert!(rate < 0.03, "CER {rate:.4}\n{}", german.text);
    // The same page read as English loses the umlauts and the ß.
    let english = engine
        .recognize_page(&PageImage::new(1, page.png.clone()), &cancel)
        .await
        .unwrap();
    let english_rate = character_error_rate(&page.text, &english.text);
    println!(
        "eng: CER {english_rate:.4}, confidence {:?}",
        english.confidence
    );
    assert!(english_rate > rate, "eng {english_rate} vs deu {rate}");
}

#[tokio::test]
async fn a_language_that_is_not_installed_is_named_with_its_package() {
    require_tesseract().await;
    let engine = TesseractEngine::default();
    engine.check_language(None).await.unwrap();
    engine.check_language(Some("eng")).await.unwrap();
    let error = engine
        .check_language(Some("eng+zzz_test"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OcrError::LanguageNotInstalled { missing, .. } if missing == &["zzz_test"]),
        "{error:?}"
    );
    assert!(error.affects_every_page());
    assert_eq!(error.code(), "language_not_installed");
    let message = error.to_string();
    assert!(
        message.contains("tesseract-ocr-zzz-test") && message.contains("eng"),
        "{message}"
    );
}

#[tokio::test]
async fn full_pages_are_letter_size_and_read_back() {
    require_tesseract().await;
    let pages = ocr::testing::full_pages(2);
    let first = image_size(&pages[0].png);
    assert_eq!(first, ocr::testing::FULL_PAGE_SIZE);
    assert_ne!(pages[0].text, pages[1].text);
    let recognized = TesseractEngine::default()
        .recognize_page(
            &PageImage::new(1, pages[0].png.clone()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let rate = character_error_rate(&pages[0].text, &recognized.text);
    assert!(rate < 0.03, "CER {rate}\n{}", recognized.text);
}

/// Width and height from a PNG's header.
fn image_size(png: &[u8]) -> (u32, u32) {
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (width, height)
}
