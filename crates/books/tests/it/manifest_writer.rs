//! The batching manifest writer: one manifest write per `flush_every` page updates.

use blob_store::conformance::{TestStore, file_test_store, s3_test_store};
use books::{BookId, Books, OcrStatus, Page};

use crate::counting_store::CountingStore;

fn id(text: &str) -> BookId {
    BookId::parse(text).unwrap()
}

/// 20 page updates with a flush interval of 5: 4 manifest writes, and the final flush
/// finds nothing left to write.
async fn twenty_page_updates_with_a_flush_interval_of_five_write_the_manifest_four_times(
    fixture: TestStore,
) {
    let counting = CountingStore::new(fixture.store());
    let books = Books::new(counting.clone());
    books.create(&id("b1"), "T").await.unwrap();
    books
        .update(&id("b1"), |manifest| {
            for number in 1..=20 {
                manifest.upsert_page(Page::new(number, "s.png", 1, 1, 1, "00"));
            }
        })
        .await
        .unwrap();
    let puts_before = counting.manifest_puts();

    let mut writer = books.manifest_writer(&id("b1"), 5);
    let mut flushed_after = Vec::new();
    for number in 1..=20_u32 {
        let flushed = writer
            .push(move |manifest| {
                let page = manifest.page_mut(number).unwrap();
                page.ocr.status = OcrStatus::Done;
                page.ocr.chars = Some(u64::from(number));
            })
            .await
            .unwrap();
        if let Some(manifest) = flushed {
            // What a flush returns is durable: every page so far is done in it.
            assert!(
                manifest.pages[..number as usize]
                    .iter()
                    .all(|page| page.ocr.status == OcrStatus::Done)
            );
            flushed_after.push(number);
        }
        let durable = books.manifest(&id("b1")).await.unwrap();
        let done = durable
            .pages
            .iter()
            .filter(|page| page.ocr.status == OcrStatus::Done)
            .count();
        assert_eq!(
            done as u32,
            number / 5 * 5,
            "nothing is written between flushes"
        );
    }
    assert!(
        writer.flush().await.unwrap().is_none(),
        "nothing left to flush"
    );
    assert_eq!(flushed_after, [5, 10, 15, 20]);
    let manifest_writes = counting.manifest_puts() - puts_before;
    assert!(
        (4..=5).contains(&manifest_writes),
        "20 updates at 5 per flush wrote the manifest {manifest_writes} times"
    );
    assert_eq!(manifest_writes, 4);

    let manifest = books.manifest(&id("b1")).await.unwrap();
    assert!(
        manifest
            .pages
            .iter()
            .all(|page| page.ocr.status == OcrStatus::Done)
    );
    assert_eq!(manifest.page(17).unwrap().ocr.chars, Some(17));
}

#[tokio::test]
async fn twenty_page_updates_with_a_flush_interval_of_five_write_the_manifest_four_times_on_files()
{
    twenty_page_updates_with_a_flush_interval_of_five_write_the_manifest_four_times(
        file_test_store().await,
    )
    .await;
}

#[tokio::test]
async fn twenty_page_updates_with_a_flush_interval_of_five_write_the_manifest_four_times_on_s3() {
    twenty_page_updates_with_a_flush_interval_of_five_write_the_manifest_four_times(
        s3_test_store().await,
    )
    .await;
}

#[tokio::test]
async fn the_final_flush_writes_a_partial_batch_once() {
    let fixture = file_test_store().await;
    let counting = CountingStore::new(fixture.store());
    let books = Books::new(counting.clone());
    books.create(&id("b1"), "T").await.unwrap();
    let before = counting.manifest_puts();
    let mut writer = books.manifest_writer(&id("b1"), 5);
    for number in 1..=7_u32 {
        writer
            .push(move |manifest| manifest.upsert_page(Page::new(number, "s", 1, 1, 1, "00")))
            .await
            .unwrap();
    }
    assert_eq!(writer.pending(), 2);
    let flushed = writer
        .flush()
        .await
        .unwrap()
        .expect("two changes were pending");
    assert_eq!(flushed.pages.len(), 7);
    assert_eq!(writer.pending(), 0);
    assert!(writer.flush().await.unwrap().is_none());
    assert_eq!(
        counting.manifest_puts() - before,
        2,
        "one batch of 5, one final flush of 2"
    );
}

/// Batching writers of 8 concurrent jobs (flush every 5) still lose no page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batching_writers_lose_no_page_update() {
    let fixture = file_test_store().await;
    let books = Books::new(fixture.store());
    books.create(&id("b1"), "T").await.unwrap();
    let jobs: Vec<_> = (0..8_u32)
        .map(|job| {
            let books = books.clone();
            tokio::spawn(async move {
                let mut writer = books.manifest_writer(&id("b1"), 5);
                for index in 0..25_u32 {
                    let number = job * 25 + index + 1;
                    writer
                        .push(move |manifest| {
                            manifest.upsert_page(Page::new(number, "s", 1, 1, 1, "00"));
                        })
                        .await
                        .unwrap();
                }
                writer.flush().await.unwrap();
            })
        })
        .collect();
    for job in jobs {
        job.await.unwrap();
    }
    let manifest = books.manifest(&id("b1")).await.unwrap();
    assert_eq!(manifest.pages.len(), 200);
}
