//! Page ingestion (SPEC 4.1): formats, limits, all-or-nothing, typed rejections.

use std::sync::Arc;

use blob_store::BlobStore;
use blob_store::conformance::file_test_store;
use books::{BookId, Books, FileRejection, IngestError, IngestLimits, UploadedFile, layout};
use bytes::Bytes;
use image::ImageFormat;
use sha2::{Digest, Sha256};

use crate::counting_store::CountingStore;
use crate::images::{encoded, png_bomb};

fn id(text: &str) -> BookId {
    BookId::parse(text).unwrap()
}

fn file(name: &str, bytes: Vec<u8>) -> UploadedFile {
    UploadedFile {
        name: name.to_owned(),
        bytes: Bytes::from(bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn png_jpeg_webp_tiff_bmp_and_gif_are_stored_as_png_with_size_and_sha256() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let uploads = [
        ("a.png", ImageFormat::Png),
        ("b.jpg", ImageFormat::Jpeg),
        ("c.webp", ImageFormat::WebP),
        ("d.tiff", ImageFormat::Tiff),
        ("e.bmp", ImageFormat::Bmp),
        ("f.gif", ImageFormat::Gif),
    ];
    let files = uploads
        .iter()
        .map(|(name, format)| file(name, encoded(*format, 40, 30)))
        .collect();
    let pages = books
        .ingest_pages(&id("b1"), files, &IngestLimits::default())
        .await
        .unwrap();
    assert_eq!(
        pages.iter().map(|page| page.page).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let manifest = books.manifest(&id("b1")).await.unwrap();
    assert_eq!(manifest.pages, pages);
    for (page, (name, _)) in pages.iter().zip(uploads) {
        assert_eq!(page.source_name, name);
        assert_eq!((page.width, page.height), (40, 30));
        let stored = fixture
            .store()
            .get(&layout::book_key(&id("b1"), &page.image))
            .await
            .unwrap()
            .bytes;
        assert_eq!(
            image::guess_format(&stored).unwrap(),
            ImageFormat::Png,
            "{name}"
        );
        assert_eq!(page.bytes, stored.len() as u64);
        assert_eq!(page.sha256, hex(&stored));
        let decoded = image::load_from_memory(&stored).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (40, 30));
    }
}

/// A page's preview: its manifest path, and the stored JPEG decoded.
async fn preview(
    store: &Arc<dyn BlobStore>,
    book: &str,
    page: &books::Page,
) -> image::DynamicImage {
    let path = page.thumbnail.as_deref().expect("a new page has a preview");
    assert_eq!(path, layout::page_thumbnail_path(page.page));
    let bytes = store
        .get(&layout::book_key(&id(book), path))
        .await
        .unwrap()
        .bytes;
    assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::Jpeg);
    image::load_from_memory(&bytes).unwrap()
}

#[tokio::test]
async fn every_page_gets_a_jpeg_preview_at_most_200_pixels_wide_in_its_aspect_never_enlarged() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let mut gray = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(1000, 1300, |x, y| {
        image::Luma([((x + y) % 256) as u8])
    }))
    .write_to(std::io::Cursor::new(&mut gray), ImageFormat::Png)
    .unwrap();
    let files = vec![
        file("wide.png", encoded(ImageFormat::Png, 2000, 1000)),
        file("small.jpg", encoded(ImageFormat::Jpeg, 100, 60)),
        file("gray.png", gray),
    ];
    let pages = books
        .ingest_pages(&id("b1"), files, &IngestLimits::default())
        .await
        .unwrap();
    let store = fixture.store();
    let wide = preview(&store, "b1", &pages[0]).await;
    let width = books::THUMBNAIL_WIDTH;
    assert_eq!((wide.width(), wide.height()), (width, width / 2));
    assert!(wide.color().has_color(), "a color page's preview has color");
    let small = preview(&store, "b1", &pages[1]).await;
    assert_eq!((small.width(), small.height()), (100, 60), "never enlarged");
    let gray = preview(&store, "b1", &pages[2]).await;
    assert_eq!((gray.width(), gray.height()), (width, width * 13 / 10));
    assert_eq!(
        gray.color(),
        image::ColorType::L8,
        "a gray page's preview is gray"
    );
}

#[tokio::test]
async fn pages_are_numbered_in_upload_order_after_the_last_page() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let png = || file("p.png", encoded(ImageFormat::Png, 8, 8));
    let limits = IngestLimits::default();
    books
        .ingest_pages(&id("b1"), vec![png(), png()], &limits)
        .await
        .unwrap();
    let second = books
        .ingest_pages(&id("b1"), vec![png(), png(), png()], &limits)
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|page| page.page).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(second[0].image, "pages/0003.png");
    let stored: Vec<String> = fixture
        .store()
        .list("books/b1/pages/")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect();
    let images: Vec<&String> = stored.iter().filter(|key| key.ends_with(".png")).collect();
    assert_eq!(images.len(), 5);
    assert_eq!(images[4], "books/b1/pages/0005.png");
    assert_eq!(
        stored.len(),
        10,
        "each page has its preview beside it: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_to_one_book_never_share_a_page_number() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let uploads: Vec<_> = (0..4_u32)
        .map(|upload| {
            let books = books.clone();
            tokio::spawn(async move {
                let files = (0..3)
                    .map(|_| {
                        file(
                            &format!("upload-{upload}.png"),
                            encoded(ImageFormat::Png, 8 + upload, 8),
                        )
                    })
                    .collect();
                books
                    .ingest_pages(&id("b1"), files, &IngestLimits::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    for upload in uploads {
        upload.await.unwrap();
    }
    let manifest = books.manifest(&id("b1")).await.unwrap();
    assert_eq!(
        manifest
            .pages
            .iter()
            .map(|page| page.page)
            .collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    for page in &manifest.pages {
        let stored = fixture
            .store()
            .get(&layout::book_key(&id("b1"), &page.image))
            .await
            .unwrap()
            .bytes;
        assert_eq!(
            page.sha256,
            hex(&stored),
            "page {} holds its own image",
            page.page
        );
        let width = image::load_from_memory(&stored).unwrap().width();
        assert_eq!(page.source_name, format!("upload-{}.png", width - 8));
    }
}

/// Ingests `bad` between two good files and returns the rejection, asserting that
/// storage saw no write at all.
async fn rejected(bad: UploadedFile) -> (IngestError, Arc<CountingStore>) {
    let fixture = file_test_store().await;
    let counting = CountingStore::new(fixture.store());
    let books = Books::new(counting.clone());
    books.create(&id("b1"), "T").await.unwrap();
    let before = books.manifest(&id("b1")).await.unwrap();
    let puts_before = counting.puts();
    let calls_before = counting.calls();
    let files = vec![
        file("good-1.png", encoded(ImageFormat::Png, 8, 8)),
        bad,
        file("good-2.jpg", encoded(ImageFormat::Jpeg, 8, 8)),
    ];
    let error = books
        .ingest_pages(&id("b1"), files, &IngestLimits::default())
        .await
        .unwrap_err();
    assert_eq!(counting.puts(), puts_before, "nothing was written");
    assert_eq!(counting.calls(), calls_before, "storage was not even read");
    assert_eq!(books.manifest(&id("b1")).await.unwrap(), before);
    assert_eq!(counting.list("books/b1/pages/").await.unwrap(), []);
    (error, counting)
}

fn only_rejection(error: IngestError) -> (usize, String, FileRejection) {
    match error {
        IngestError::InvalidFiles { rejected } => {
            assert_eq!(rejected.len(), 1, "{rejected:?}");
            let file = rejected.into_iter().next().unwrap();
            (file.index, file.name, file.reason)
        }
        other => panic!("expected InvalidFiles, got {other:?}"),
    }
}

#[tokio::test]
async fn a_text_file_renamed_png_is_rejected_as_unsupported_and_nothing_is_written() {
    let (error, _) = rejected(file(
        "notes.png",
        b"just some text, not an image\n".to_vec(),
    ))
    .await;
    let (index, name, reason) = only_rejection(error);
    assert_eq!((index, name.as_str()), (1, "notes.png"));
    assert_eq!(reason, FileRejection::UnsupportedFormat);
    assert_eq!(reason.code(), "unsupported_format");
}

#[tokio::test]
async fn a_truncated_jpeg_is_rejected_as_corrupt_and_nothing_is_written() {
    let mut jpeg = encoded(ImageFormat::Jpeg, 256, 256);
    jpeg.truncate(jpeg.len() / 3);
    let (error, _) = rejected(file("cut.jpg", jpeg)).await;
    let (index, _, reason) = only_rejection(error);
    assert_eq!(index, 1);
    assert!(
        matches!(reason, FileRejection::Corrupt { .. }),
        "{reason:?}"
    );
    assert_eq!(reason.code(), "corrupt");
}

#[tokio::test]
async fn a_truncated_png_is_rejected_as_corrupt() {
    let mut png = encoded(ImageFormat::Png, 256, 256);
    png.truncate(png.len() / 2);
    let (error, _) = rejected(file("cut.png", png)).await;
    let (_, _, reason) = only_rejection(error);
    assert!(
        matches!(reason, FileRejection::Corrupt { .. }),
        "{reason:?}"
    );
}

#[tokio::test]
async fn a_20000_by_20000_decompression_bomb_is_rejected_as_too_many_pixels() {
    let (error, _) = rejected(file("bomb.png", png_bomb(20_000, 20_000))).await;
    let (_, _, reason) = only_rejection(error);
    assert_eq!(
        reason,
        FileRejection::TooManyPixels {
            width: 20_000,
            height: 20_000,
            max_width: 12_000,
            max_height: 12_000
        }
    );
    assert_eq!(reason.code(), "too_many_pixels");
}

#[tokio::test]
async fn an_image_wider_than_the_limit_is_rejected_even_when_small_in_bytes() {
    let (error, _) = rejected(file("wide.png", encoded(ImageFormat::Png, 12_001, 1))).await;
    let (_, _, reason) = only_rejection(error);
    assert!(
        matches!(
            reason,
            FileRejection::TooManyPixels {
                width: 12_001,
                height: 1,
                ..
            }
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn a_file_over_the_byte_limit_is_rejected_as_too_large() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let png = encoded(ImageFormat::Png, 64, 64);
    let limits = IngestLimits {
        max_file_bytes: png.len() as u64 - 1,
        ..IngestLimits::default()
    };
    let error = books
        .ingest_pages(&id("b1"), vec![file("big.png", png.clone())], &limits)
        .await
        .unwrap_err();
    let (_, _, reason) = only_rejection(error);
    assert_eq!(
        reason,
        FileRejection::TooLarge {
            bytes: png.len() as u64,
            max: png.len() as u64 - 1
        }
    );
    assert_eq!(fixture.store().list("books/b1/pages/").await.unwrap(), []);
}

#[tokio::test]
async fn every_bad_file_of_a_request_is_listed_with_its_own_reason() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let mut jpeg = encoded(ImageFormat::Jpeg, 256, 256);
    jpeg.truncate(jpeg.len() / 3);
    let files = vec![
        file("text.png", b"hello".to_vec()),
        file("ok.png", encoded(ImageFormat::Png, 8, 8)),
        file("cut.jpg", jpeg),
        file("bomb.png", png_bomb(20_000, 20_000)),
    ];
    let error = books
        .ingest_pages(&id("b1"), files, &IngestLimits::default())
        .await
        .unwrap_err();
    let IngestError::InvalidFiles { rejected } = error else {
        panic!("{error:?}");
    };
    let summary: Vec<(usize, &str, &str)> = rejected
        .iter()
        .map(|file| (file.index, file.name.as_str(), file.reason.code()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "text.png", "unsupported_format"),
            (2, "cut.jpg", "corrupt"),
            (3, "bomb.png", "too_many_pixels"),
        ]
    );
    assert_eq!(fixture.store().list("books/b1/pages/").await.unwrap(), []);
}

#[tokio::test]
async fn request_limits_and_an_empty_request_are_refused_before_decoding() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let png = || file("p.png", encoded(ImageFormat::Png, 8, 8));
    let error = books
        .ingest_pages(&id("b1"), vec![], &IngestLimits::default())
        .await
        .unwrap_err();
    assert!(matches!(error, IngestError::NoFiles), "{error:?}");
    let few = IngestLimits {
        max_files: 2,
        ..IngestLimits::default()
    };
    let error = books
        .ingest_pages(&id("b1"), vec![png(), png(), png()], &few)
        .await
        .unwrap_err();
    assert!(
        matches!(error, IngestError::TooManyFiles { count: 3, max: 2 }),
        "{error:?}"
    );
    let small = IngestLimits {
        max_request_bytes: 10,
        ..IngestLimits::default()
    };
    let error = books
        .ingest_pages(&id("b1"), vec![png()], &small)
        .await
        .unwrap_err();
    assert!(
        matches!(error, IngestError::RequestTooLarge { max: 10, .. }),
        "{error:?}"
    );
    assert_eq!(fixture.store().list("books/b1/pages/").await.unwrap(), []);
}

#[tokio::test]
async fn ingesting_into_a_missing_book_stores_nothing() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    let error = books
        .ingest_pages(
            &id("ghost"),
            vec![file("p.png", encoded(ImageFormat::Png, 8, 8))],
            &IngestLimits::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            IngestError::Books(books::BooksError::BookNotFound { .. })
        ),
        "{error:?}"
    );
    assert!(fixture.store().list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn book_ids_like_dot_dot_slash_x_or_a_slash_b_never_reach_storage() {
    let fixture = file_test_store().await;
    let counting = CountingStore::new(fixture.store());
    let books = Books::new(counting.clone());
    for raw in ["../x", "a/b", "..", "A", ""] {
        // Every entry point takes a `BookId`, so a raw id must parse first, and fails.
        let parsed = raw.parse::<BookId>();
        assert!(parsed.is_err(), "{raw:?}");
        if let Ok(book_id) = parsed {
            let _ = books.manifest(&book_id).await;
        }
    }
    assert_eq!(counting.calls(), 0);
}
