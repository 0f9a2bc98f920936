//! The `ocr` job on a real worker runtime with a scripted engine.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use books::OcrStatus;
use jobs_core::JobStatus;
use jobs_core::testing::{enqueue_new, expect_created};
use ocr::testing::{ScriptStep, ScriptedEngine, done_pages};
use ocr::{OcrCheckpoint, TesseractConfig, TesseractEngine};
use serde_json::json;

use crate::harness::{Harness, job_config};

fn checkpoint_of(job: &jobs_core::Job) -> OcrCheckpoint {
    serde_json::from_value(job.checkpoint.clone().expect("a checkpoint")).unwrap()
}

/// Pages 3 and 7 fail terminally, page 5 twice transiently.
fn flaky_engine() -> Arc<ScriptedEngine> {
    Arc::new(
        ScriptedEngine::new()
            .fail(3, &[ScriptStep::Terminal])
            .fail(7, &[ScriptStep::Terminal])
            .fail(5, &[ScriptStep::Transient, ScriptStep::Transient]),
    )
}

async fn run_flaky_book(harness: &Harness) -> jobs_core::Job {
    let engine = flaky_engine();
    let worker = harness.start_worker(engine.clone(), job_config(3, 5));
    let job = harness.enqueue(json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(engine.calls()[&5], 3, "page 5 is tried three times");
    assert_eq!(engine.calls()[&3], 1, "terminal errors are not retried");
    job
}

#[tokio::test]
async fn failed_pages_are_recorded_with_their_reason_and_transient_failures_are_retried() {
    let harness = Harness::with_pages(12).await;
    let job = run_flaky_book(&harness).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:#?}");
    assert_eq!(job.progress.total, Some(12));
    assert_eq!(job.progress.completed, 10);
    assert_eq!(job.progress.failed, 2);
    assert_eq!(job.progress.last_completed_item.as_deref(), Some("2"));
    let checkpoint = checkpoint_of(&job);
    assert!(!checkpoint.done.contains(&3) && !checkpoint.done.contains(&7));
    assert_eq!(checkpoint.done.len(), 10);

    let manifest = harness.manifest().await;
    for page in &manifest.pages {
        match page.page {
            3 | 7 => {
                assert_eq!(page.ocr.status, OcrStatus::Failed);
                let reason = page.ocr.error.as_deref().unwrap();
                assert!(reason.contains("engine_failed"), "{reason}");
                assert!(reason.contains(&format!("page {}", page.page)), "{reason}");
                assert!(harness.text(page.page).await.is_none());
            }
            number => {
                assert_eq!(page.ocr.status, OcrStatus::Done, "page {number}");
                assert_eq!(page.ocr.engine.as_deref(), Some("scripted"));
                assert_eq!(
                    harness.text(number).await.unwrap(),
                    ScriptedEngine::text_for(number)
                );
            }
        }
    }
    assert_eq!(manifest.page(5).unwrap().ocr.attempts, 3);
}

#[tokio::test]
async fn a_new_job_for_every_page_not_done_recognizes_only_the_failed_pages() {
    let harness = Harness::with_pages(12).await;
    run_flaky_book(&harness).await;

    let engine = Arc::new(ScriptedEngine::new());
    let worker = harness.start_worker(engine.clone(), job_config(3, 5));
    let job = harness.enqueue(json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(
        engine.calls().keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([3, 7])
    );
    assert_eq!(job.progress.total, Some(2));
    assert_eq!(job.progress.failed, 0);
    let manifest = harness.manifest().await;
    assert_eq!(done_pages(&manifest).len(), 12);
    assert_eq!(manifest.page(3).unwrap().ocr.error, None);
    assert_eq!(manifest.page(3).unwrap().ocr.attempts, 2);
}

/// An upload while the book's OCR runs: its chain's ocr step joins the running job, which
/// reads the added pages too before it ends.
#[tokio::test]
async fn pages_added_while_a_job_for_every_page_runs_are_read_before_it_ends() {
    let harness = Harness::with_pages(3).await;
    let engine = Arc::new(ScriptedEngine::new().with_delay(Duration::from_millis(700)));
    let worker = harness.start_worker(engine.clone(), job_config(1, 1));
    let job = harness.enqueue(json!({})).await;
    harness
        .wait_for(job.id, "the job running", |job| {
            job.status == JobStatus::Running
        })
        .await;
    harness
        .books
        .ingest_pages(
            &harness.book_id,
            ocr::testing::fixture_uploads(2),
            &books::IngestLimits::default(),
        )
        .await
        .unwrap();
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let manifest = harness.manifest().await;
    assert_eq!(done_pages(&manifest), BTreeSet::from([1, 2, 3, 4, 5]));
    assert_eq!(
        engine.calls().keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2, 3, 4, 5])
    );
    assert_eq!(job.progress.total, Some(5));
    assert_eq!(checkpoint_of(&job).pages, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_page_retry_recognizes_only_the_page_it_names() {
    let harness = Harness::with_pages(12).await;
    run_flaky_book(&harness).await;

    let engine = Arc::new(ScriptedEngine::new());
    let worker = harness.start_worker(engine.clone(), job_config(3, 5));
    let job = harness.enqueue(json!({"pages": [7]})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(engine.calls().keys().copied().collect::<Vec<_>>(), vec![7]);
    let manifest = harness.manifest().await;
    assert_eq!(manifest.page(7).unwrap().ocr.status, OcrStatus::Done);
    assert_eq!(manifest.page(3).unwrap().ocr.status, OcrStatus::Failed);
}

#[tokio::test]
async fn a_page_retry_of_a_page_the_book_lacks_fails_the_job_terminally() {
    let harness = Harness::with_pages(2).await;
    let worker = harness.start_worker(Arc::new(ScriptedEngine::new()), job_config(2, 5));
    let job = harness.enqueue(json!({"pages": [9]})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "page_not_found");
}

#[tokio::test]
async fn the_checkpoint_never_names_a_page_the_manifest_does_not_hold_as_done() {
    let harness = Harness::with_pages(12).await;
    let engine = Arc::new(ScriptedEngine::new().with_delay(Duration::from_millis(40)));
    let worker = harness.start_worker(engine, job_config(2, 3));
    let job = harness.enqueue(json!({})).await;
    let mut observed = 0;
    loop {
        // The job first, then the manifest: what the checkpoint names must already be there.
        let current = harness.jobs.get(job.id).await.unwrap();
        let manifest = harness.manifest().await;
        if let Some(value) = current.checkpoint.clone() {
            let checkpoint: OcrCheckpoint = serde_json::from_value(value).unwrap();
            let done = done_pages(&manifest);
            for page in &checkpoint.done {
                assert!(
                    done.contains(page),
                    "checkpoint names page {page} before the manifest"
                );
            }
            observed += usize::from(!checkpoint.done.is_empty());
        }
        if current.status.is_terminal() {
            assert_eq!(current.status, JobStatus::Completed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.stop().await;
    assert!(observed > 0, "never saw a checkpoint mid-run");
}

#[tokio::test]
async fn cancel_stops_at_a_page_boundary_and_resume_redoes_only_unrecorded_pages() {
    let harness = Harness::with_pages(12).await;
    let first = Arc::new(ScriptedEngine::new().with_delay(Duration::from_millis(250)));
    let worker = harness.start_worker(first.clone(), job_config(2, 3));
    let job = harness.enqueue(json!({})).await;
    harness
        .wait_for(job.id, "three pages recorded", |job| {
            job.checkpoint
                .as_ref()
                .is_some_and(|value| value["done"].as_array().is_some_and(|done| done.len() >= 3))
        })
        .await;
    harness.lock.cancel(job.id).await.unwrap();
    let cancelled = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let checkpoint = checkpoint_of(&cancelled);
    let manifest = harness.manifest().await;
    // The final flush on cancel recorded every finished page, in both.
    assert_eq!(
        checkpoint.done.iter().copied().collect::<BTreeSet<_>>(),
        done_pages(&manifest)
    );
    assert!(
        checkpoint.done.len() < 12,
        "cancel came too late to test anything"
    );
    for page in &checkpoint.done {
        assert!(harness.text(*page).await.is_some());
    }

    let resumed = expect_created(
        harness.lock.resume(cancelled.id).await.unwrap(),
        "test-book",
    );
    let second = Arc::new(ScriptedEngine::new());
    let worker = harness.start_worker(second.clone(), job_config(2, 3));
    let finished = harness.wait_terminal(resumed.id).await;
    worker.stop().await;
    assert_eq!(finished.status, JobStatus::Completed);
    assert_eq!(finished.progress.total, Some(12));
    assert_eq!(finished.progress.completed, 12);
    assert_eq!(finished.progress.last_completed_item.as_deref(), Some("12"));
    let redone: BTreeSet<u32> = second.calls().keys().copied().collect();
    let expected: BTreeSet<u32> = (1..=12)
        .filter(|page| !checkpoint.done.contains(page))
        .collect();
    assert_eq!(redone, expected);
    assert_eq!(done_pages(&harness.manifest().await).len(), 12);
}

#[tokio::test]
async fn shutdown_finishes_the_pages_in_flight_and_hands_the_job_back() {
    let harness = Harness::with_pages(12).await;
    let first = Arc::new(ScriptedEngine::new().with_delay(Duration::from_millis(250)));
    let worker = harness.start_worker(first.clone(), job_config(2, 5));
    let job = harness.enqueue(json!({})).await;
    harness
        .wait_for(job.id, "two pages completed", |job| {
            job.progress.completed >= 2
        })
        .await;
    worker.stop().await;
    let interrupted = harness.jobs.get(job.id).await.unwrap();
    assert_eq!(interrupted.status, JobStatus::Pending);
    assert_eq!(interrupted.error.as_ref().unwrap().code, "interrupted");
    let checkpoint = checkpoint_of(&interrupted);
    assert_eq!(
        checkpoint.done.iter().copied().collect::<BTreeSet<_>>(),
        done_pages(&harness.manifest().await)
    );
    assert!(!checkpoint.done.is_empty());
    // The pages in flight at the shutdown finished: every page the first worker started
    // is recorded, so none is read twice.
    let started: BTreeSet<u32> = first.calls().keys().copied().collect();
    assert_eq!(
        checkpoint.done.iter().copied().collect::<BTreeSet<_>>(),
        started
    );

    let second = Arc::new(ScriptedEngine::new());
    let worker = harness.start_worker(second.clone(), job_config(2, 5));
    let finished = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(finished.status, JobStatus::Completed);
    for page in &checkpoint.done {
        assert!(!second.calls().contains_key(page), "page {page} was redone");
    }
    assert_eq!(done_pages(&harness.manifest().await).len(), 12);
}

#[tokio::test]
async fn a_missing_book_fails_the_job_terminally() {
    let harness = Harness::with_pages(1).await;
    let worker = harness.start_worker(Arc::new(ScriptedEngine::new()), job_config(2, 5));
    let job = enqueue_new(&harness.lock, "no-such-book", ocr::OCR_JOB_TYPE, json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "book_not_found");
}

#[tokio::test]
async fn an_engine_that_cannot_run_fails_the_job_as_a_whole_and_leaves_pages_pending() {
    let harness = Harness::with_pages(4).await;
    let engine = Arc::new(TesseractEngine::new(TesseractConfig {
        program: "/nonexistent/tesseract".into(),
        ..TesseractConfig::default()
    }));
    let worker = harness.start_worker(engine, job_config(2, 5));
    let job = harness.enqueue(json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert_eq!(error.code, "engine_unavailable");
    assert!(error.message.contains("tesseract-ocr"), "{}", error.message);
    let manifest = harness.manifest().await;
    assert!(
        manifest
            .pages
            .iter()
            .all(|page| page.ocr.status == OcrStatus::Pending)
    );
}

#[tokio::test]
async fn tesseract_pages_record_their_hocr_confidence_and_words_in_the_book_language() {
    ocr::testing::require_tesseract().await;
    let harness = Harness::with_pages(2).await;
    harness
        .books
        .update(&harness.book_id, |manifest| {
            manifest.language = Some("eng".to_owned());
        })
        .await
        .unwrap();
    let worker = harness.start_worker(Arc::new(TesseractEngine::default()), job_config(2, 5));
    let job = harness.enqueue(json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Completed, "{job:#?}");
    let manifest = harness.manifest().await;
    for page in &manifest.pages {
        let ocr = &page.ocr;
        assert_eq!(
            ocr.hocr.as_deref(),
            Some(books::layout::ocr_hocr_path(page.page).as_str())
        );
        assert!(ocr.confidence.unwrap() > 85.0, "{ocr:?}");
        assert!(ocr.words.unwrap() > 20, "{ocr:?}");
        assert!(!ocr.needs_review, "{ocr:?}");
        let key = books::layout::book_key(&harness.book_id, ocr.hocr.as_deref().unwrap());
        let hocr = harness.books.store().get(&key).await.unwrap().bytes;
        assert!(String::from_utf8_lossy(&hocr).contains("ocrx_word"));
    }
}

#[tokio::test]
async fn a_book_language_the_worker_lacks_fails_the_job_before_any_page() {
    ocr::testing::require_tesseract().await;
    let harness = Harness::with_pages(2).await;
    harness
        .books
        .update(&harness.book_id, |manifest| {
            manifest.language = Some("eng+zzz_test".to_owned());
        })
        .await
        .unwrap();
    let worker = harness.start_worker(Arc::new(TesseractEngine::default()), job_config(2, 5));
    let job = harness.enqueue(json!({})).await;
    let job = harness.wait_terminal(job.id).await;
    worker.stop().await;
    assert_eq!(job.status, JobStatus::Failed, "{job:#?}");
    let error = job.error.unwrap();
    assert_eq!(error.code, "language_not_installed");
    assert!(
        error.message.contains("tesseract-ocr-zzz-test"),
        "{}",
        error.message
    );
    assert!(!error.retryable);
    let manifest = harness.manifest().await;
    assert!(
        manifest
            .pages
            .iter()
            .all(|page| page.ocr.status == OcrStatus::Pending)
    );
}
