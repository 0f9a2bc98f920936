//! Browser tests of the dashboard (SPEC section 7, issue 12): the real `api --with-worker`
//! binary with real tesseract OCR on SQLite and `file://`, driven in headless Chromium
//! through chromedriver (WebDriver, `fantoccini`) as a person would: the create form, the
//! file picker, a real `drop` event, buttons and links. What the page shows is read through
//! the dashboard's DOM contract (ids, classes and data attributes); every wait polls with a
//! deadline.
//!
//! Chromium and chromedriver are Debian's (`scripts/install-chromium.sh`); `cargo xtask ci`
//! passes the driver's path in `FOLIO_CHROMEDRIVER` (else `chromedriver` on `PATH`). Without
//! a driver the tests fail with an install hint; they never skip. Each test starts its own
//! chromedriver and `api` (stopped by guards) and takes the one browser slot, so the
//! browser tests run one at a time. Screenshots of each named state go to
//! `FOLIO_SCREENSHOT_DIR` (default `/var/tmp/folio-dashboard-screenshots`).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// What to do when the browser or its driver is missing.
const INSTALL_HINT: &str = "the dashboard's browser tests need Chromium and chromedriver: \
     run `scripts/install-chromium.sh` (Debian's chromium and chromium-driver; it prints the \
     driver's path) and set FOLIO_CHROMEDRIVER to that path, or run `cargo xtask ci`, which \
     does both";

/// Starting chromedriver, the api, a browser session.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Something the page does by itself soon (render, navigate, answer a click).
const UI_DEADLINE: Duration = Duration::from_secs(20);
/// A real OCR, guidelines or finalize job to finish.
const JOB_DEADLINE: Duration = Duration::from_secs(240);
/// How long "nothing more happens" is watched for.
const QUIET_WINDOW: Duration = Duration::from_secs(3);
/// Between two polls.
const POLL: Duration = Duration::from_millis(50);

/// One browser at a time: each test runs chromium, the api and tesseract on 2 cores.
static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn a_person_creates_a_book_drops_pages_and_reads_the_final_guidelines() {
    let dashboard = Dashboard::start(None).await;
    let fixtures = ocr::testing::fixture_pages();

    dashboard.goto("/").await;
    dashboard
        .wait_for(
            "the books list",
            UI_DEADLINE,
            "#books",
            "(e) => e.length === 1",
        )
        .await;
    dashboard.screenshot("books-list-empty").await;

    let title = "Fractions for beginners";
    let book = dashboard.create_book_with_form(title).await;

    // Pages 1 and 2 with the file picker, OCR after upload off: they wait as pending.
    dashboard.set_ocr_after_upload(false).await;
    let picked = dashboard.page_files(1..=2);
    dashboard.pick_files(&picked).await;
    dashboard
        .wait_uploads_sent(&["page-001.png", "page-002.png"])
        .await;
    let tiles = dashboard
        .wait_tiles("pages 1 and 2 pending", UI_DEADLINE, |tiles| {
            tiles.len() == 2 && tiles.iter().all(|tile| tile.status == "pending")
        })
        .await;
    assert!(
        tiles.iter().all(|tile| !tile.label.is_empty()),
        "every tile has an accessible label: {tiles:?}"
    );
    for button in ["start-guidelines", "start-finalize"] {
        let reason = dashboard.disabled_reason(button).await;
        assert!(
            reason.is_some_and(|reason| !reason.trim().is_empty()),
            "#{button} is disabled with a reason before OCR is done"
        );
    }

    // Pages 3 and 4 dropped on the drop zone, OCR after upload on: one job for the book.
    dashboard.set_ocr_after_upload(true).await;
    dashboard
        .drop_files(&[
            ("page-003.png", fixtures[2].png.to_vec()),
            ("page-004.png", fixtures[3].png.to_vec()),
        ])
        .await;
    dashboard
        .wait_uploads_sent(&["page-003.png", "page-004.png"])
        .await;
    let job = dashboard
        .wait_job("the OCR job to appear", UI_DEADLINE, |job| {
            job.kind == "ocr"
        })
        .await;
    dashboard.screenshot("book-during-ocr").await;

    let mut seen_statuses = std::collections::BTreeSet::new();
    let tiles = dashboard
        .wait_tiles("every page done", JOB_DEADLINE, |tiles| {
            seen_statuses.extend(tiles.iter().map(|tile| tile.status.clone()));
            tiles.len() == 4 && tiles.iter().all(|tile| tile.status == "done")
        })
        .await;
    assert!(
        seen_statuses.contains("pending"),
        "tiles went from pending to done: {seen_statuses:?}"
    );
    assert_eq!(
        tiles.iter().map(|tile| tile.page).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let job = dashboard
        .wait_job("the OCR bar at its maximum", UI_DEADLINE, |shown| {
            shown.id == job.id && shown.status == "completed"
        })
        .await;
    assert_eq!(
        (job.value_now.as_deref(), job.value_max.as_deref()),
        (Some("4"), Some("4")),
        "the bar of the OCR job reaches the number of pages: {job:?}"
    );
    assert!(
        !job.can_cancel,
        "a completed job has no cancel button: {job:?}"
    );

    // A page opens with its image and the text tesseract read.
    dashboard.click("#pages .page-tile[data-page=\"1\"]").await;
    let text = dashboard
        .wait_for(
            "the page viewer with the text of page 1",
            UI_DEADLINE,
            "dialog#page-viewer[open] #page-text",
            "(elements) => elements.length === 1 && elements[0].textContent.includes('Chapter 1') \
             ? elements[0].textContent : null",
        )
        .await;
    assert!(
        text.as_str().unwrap().contains("common denominator"),
        "{text}"
    );
    dashboard.screenshot("page-viewer").await;
    dashboard.close_page_viewer().await;

    // Guidelines, then finalize, by button.
    dashboard.click("#start-guidelines").await;
    dashboard
        .wait_job("the guidelines job completed", JOB_DEADLINE, |job| {
            job.kind == "guidelines" && job.status == "completed"
        })
        .await;
    // The page cannot know that page 3's guidelines went missing from storage: the
    // button is enabled, the server answers 409 and the page shows why.
    let page_guidelines = dashboard
        .api
        .objects()
        .join(format!("books/{book}/guidelines/pages/0003.json"));
    let page_guidelines_bytes = std::fs::read(&page_guidelines).unwrap();
    std::fs::remove_file(&page_guidelines).unwrap();
    dashboard.click("#start-finalize").await;
    let conflict = dashboard
        .wait_for(
            "the 409 of finalize",
            UI_DEADLINE,
            "#action-error",
            "(e) => e.length === 1 && e[0].textContent.trim() && e[0].getClientRects().length > 0 \
             ? e[0].textContent : null",
        )
        .await;
    assert!(
        conflict
            .as_str()
            .unwrap()
            .contains("guidelines are not extracted for"),
        "{conflict}"
    );
    std::fs::write(&page_guidelines, page_guidelines_bytes).unwrap();
    dashboard.click("#start-finalize").await;
    dashboard
        .wait_job("the finalize job completed", JOB_DEADLINE, |job| {
            job.kind == "finalize" && job.status == "completed"
        })
        .await;
    let topics = dashboard
        .wait_for(
            "the final guidelines",
            UI_DEADLINE,
            "#guidelines .topic h3",
            "(elements) => elements.length > 0 ? elements.map((e) => e.textContent.trim()) : null",
        )
        .await;
    let headings: Vec<&str> = fixtures[..4]
        .iter()
        .map(|page| page.text.lines().next().unwrap())
        .collect();
    assert_eq!(
        topics,
        json!(headings),
        "the topics are the pages' chapter headings"
    );
    let kinds = dashboard
        .js(
            "return [...document.querySelectorAll('#guidelines .guideline[data-kind]')]\
             .map((e) => e.dataset.kind)",
            vec![],
        )
        .await;
    assert!(
        !kinds.as_array().unwrap().is_empty(),
        "guidelines are shown with their kind"
    );
    for download in ["#download-md", "#download-json"] {
        dashboard
            .wait_for(download, UI_DEADLINE, download, "(e) => e.length === 1")
            .await;
    }
    dashboard.scroll_into_view("#guidelines").await;
    dashboard.screenshot("final-guidelines").await;
    let history = dashboard
        .js(
            "return [...document.querySelectorAll('#job-history .history-row')]\
             .map((e) => e.dataset.jobId)",
            vec![],
        )
        .await;
    assert!(
        history.as_array().unwrap().len() >= 3,
        "the history lists the OCR, guidelines and finalize jobs: {history}"
    );

    // The same book at phone width, and the list with the book.
    dashboard.emulate_phone(true).await;
    dashboard.goto(&format!("/books/{book}")).await;
    dashboard
        .wait_tiles("the tiles at phone width", UI_DEADLINE, |tiles| {
            tiles.len() == 4
        })
        .await;
    dashboard.screenshot("book-phone-width").await;
    let layout = dashboard.js(OVERFLOW_SCRIPT, vec![]).await;
    assert_eq!(layout["width"], 390, "{layout}");
    assert!(
        layout["overflow"].as_f64().unwrap() <= 0.0,
        "no sideways scrolling at phone width: {layout}"
    );
    dashboard.emulate_phone(false).await;
    dashboard.click("a[href=\"/\"]").await;
    let row = dashboard
        .wait_for(
            "the book in the list",
            UI_DEADLINE,
            &format!("#books .book-row[data-book-id=\"{book}\"] .book-title"),
            "(elements) => elements.length === 1 ? elements[0].textContent : null",
        )
        .await;
    assert_eq!(row, title);
    dashboard.screenshot("books-list").await;
    dashboard.finish().await;
}

#[tokio::test]
async fn a_followed_job_has_one_live_stream_per_page_load_and_no_requests_after_it_ends() {
    let dashboard = Dashboard::start(None).await;
    let book = "streams";
    let n_pages = 24;
    dashboard.api.create_book(book, "One stream per job").await;
    dashboard
        .api
        .upload_fixture_pages(book, n_pages, false)
        .await;
    dashboard.goto(&format!("/books/{book}")).await;
    dashboard
        .wait_tiles("the pending pages", UI_DEADLINE, |tiles| {
            tiles.len() == n_pages
        })
        .await;

    let started = dashboard.api.log_mark();
    dashboard.click("#start-ocr").await;
    let job = dashboard
        .wait_job("the OCR job running", UI_DEADLINE, |job| {
            job.kind == "ocr" && job.status == "running"
        })
        .await;
    let job_selector = format!("#book-jobs .job[data-job-id=\"{}\"]", job.id);

    // Re-renders within one page load: narrower and wider, a page opened and closed.
    dashboard.client.set_window_size(800, 900).await.unwrap();
    dashboard
        .wait_for(
            "the job at 800 px",
            UI_DEADLINE,
            &job_selector,
            "(e) => e.length === 1",
        )
        .await;
    dashboard.client.set_window_size(1280, 900).await.unwrap();
    dashboard.click("#pages .page-tile[data-page=\"1\"]").await;
    dashboard
        .wait_for(
            "the page viewer",
            UI_DEADLINE,
            "dialog#page-viewer[open]",
            "(e) => e.length === 1",
        )
        .await;
    dashboard.close_page_viewer().await;
    let before_navigation = dashboard.api.log_mark();

    // Away to the books list and back to the book with the app's own links.
    dashboard.mark_document().await;
    dashboard.click("a[href=\"/\"]").await;
    dashboard
        .click(&format!(
            "#books .book-row[data-book-id=\"{book}\"] .book-title"
        ))
        .await;
    dashboard
        .wait_for(
            "the job after coming back",
            UI_DEADLINE,
            &job_selector,
            "(e) => e.length === 1",
        )
        .await;
    let same_document = dashboard.document_is_marked().await;
    let before_reload = dashboard.api.log_mark();

    // A reload of the book view.
    dashboard.client.refresh().await.unwrap();
    let after_reload = dashboard
        .wait_job("the job after the reload", UI_DEADLINE, |shown| {
            shown.id == job.id
        })
        .await;

    let done = dashboard
        .wait_job("the job completed", JOB_DEADLINE, |shown| {
            shown.id == job.id && shown.status == "completed"
        })
        .await;
    let terminal = dashboard.api.log_mark();
    let total = n_pages.to_string();
    assert_eq!(
        (done.value_now.as_deref(), done.value_max.as_deref()),
        (Some(total.as_str()), Some(total.as_str())),
        "{done:?}"
    );

    // Nothing asks about the job once the page showed its terminal status.
    let job_path = format!("/v1/jobs/{}", job.id);
    let quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET_WINDOW {
        let late: Vec<LoggedRequest> = dashboard
            .api
            .requests_since(terminal)
            .into_iter()
            .filter(|request| request.path.starts_with(&job_path))
            .collect();
        assert!(
            late.is_empty(),
            "requests for job {} after the page showed it completed: {late:#?}",
            job.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let requests = dashboard.api.requests_since(started);
    let events_path = format!("{job_path}/events");
    let count = |from: usize, to: usize, path: &str| {
        requests
            .iter()
            .filter(|request| request.line >= from && request.line < to && request.path == path)
            .count()
    };
    let streams_rerendered = count(started, before_navigation, &events_path);
    let streams_navigated = count(before_navigation, before_reload, &events_path);
    // The reloaded document's requests start with its page: a stream the old document
    // opened just before the reload is logged after the mark, but before that page.
    let reloaded_page = requests
        .iter()
        .find(|request| request.line >= before_reload && !request.path.starts_with("/v1/"))
        .map_or(before_reload, |request| request.line);
    let streams_reloaded = count(reloaded_page, terminal, &events_path);
    let polls = count(started, terminal, &job_path);
    println!(
        "request log of job {}: events streams: {streams_rerendered} (one page load with \
         re-renders), {streams_navigated} (books list and back, {}), {streams_reloaded} \
         (reload, job {} when shown); GET {job_path}: {polls}; after terminal: 0 in {QUIET_WINDOW:?}",
        job.id,
        if same_document {
            "same document"
        } else {
            "a new page load"
        },
        after_reload.status,
    );
    assert_eq!(
        streams_rerendered, 1,
        "one live stream for the job however often the view re-renders"
    );
    assert!(
        streams_navigated <= 1,
        "at most one stream after leaving and coming back: {streams_navigated}"
    );
    if after_reload.status == "running" {
        // One stream; under CPU load the browser sometimes drops it within a few hundred
        // ms of opening it (no end of stream in the api's log; why is not known), and
        // live.js resumes it once with `Last-Event-ID`. The log cannot tell that resume
        // from a second follower, so two are allowed and three fail.
        assert!(
            (1..=2).contains(&streams_reloaded),
            "the reloaded page follows the running job with one stream (resumed at most once): {streams_reloaded}"
        );
    } else {
        assert!(streams_reloaded <= 1, "{streams_reloaded}");
    }
    for request in requests
        .iter()
        .filter(|request| request.path == events_path)
    {
        assert_eq!(request.status, 200, "{request:?}");
    }
    dashboard.finish().await;
}

#[tokio::test]
async fn a_page_the_ocr_engine_cannot_read_shows_as_failed_and_its_retry_works() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    let book = dashboard
        .create_book_with_form("A book with a bad page")
        .await;
    dashboard.set_ocr_after_upload(false).await;
    dashboard.pick_files(&dashboard.page_files(1..=3)).await;
    dashboard
        .wait_tiles("three pending pages", UI_DEADLINE, |tiles| {
            tiles.len() == 3 && tiles.iter().all(|tile| tile.status == "pending")
        })
        .await;

    // The engine finds no image for page 2.
    let image = dashboard
        .api
        .objects()
        .join(format!("books/{book}/pages/0002.png"));
    let bytes = std::fs::read(&image)
        .unwrap_or_else(|error| panic!("page 2's image at {}: {error}", image.display()));
    std::fs::remove_file(&image).unwrap();

    dashboard.click("#start-ocr").await;
    let tiles = dashboard
        .wait_tiles("page 2 failed, 1 and 3 done", JOB_DEADLINE, |tiles| {
            tiles
                .iter()
                .map(|tile| tile.status.as_str())
                .collect::<Vec<_>>()
                == ["done", "failed", "done"]
        })
        .await;
    assert!(
        tiles[1].label.to_lowercase().contains("fail"),
        "the failed tile says so to a screen reader: {:?}",
        tiles[1]
    );
    let error = dashboard
        .wait_for(
            "the error of page 2",
            UI_DEADLINE,
            "#pages .page-tile[data-page=\"2\"] .page-error",
            "(e) => e.length === 1 && e[0].textContent.trim() ? e[0].textContent : null",
        )
        .await;
    println!("page 2 shows the error: {error}");
    dashboard
        .wait_job("the OCR job finished", UI_DEADLINE, |job| {
            job.kind == "ocr" && job.status == "completed"
        })
        .await;
    dashboard
        .scroll_into_view("#pages .page-tile[data-page=\"2\"]")
        .await;
    dashboard.screenshot("failed-page").await;

    // Put the image back and retry the page.
    std::fs::write(&image, bytes).unwrap();
    dashboard
        .click("#pages .page-tile[data-page=\"2\"] button.retry-page")
        .await;
    dashboard
        .wait_tiles("page 2 done after its retry", JOB_DEADLINE, |tiles| {
            tiles.iter().all(|tile| tile.status == "done")
        })
        .await;
    let error_left = dashboard
        .js(
            "return document.querySelectorAll('#pages .page-tile[data-page=\"2\"] .page-error').length",
            vec![],
        )
        .await;
    assert_eq!(error_left, 0, "the error goes once the page is done");
    dashboard.finish().await;
}

#[tokio::test]
async fn a_page_read_with_low_confidence_carries_a_review_badge_and_its_own_filter() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    dashboard
        .create_book_with_form("A book with a blurred page")
        .await;
    dashboard.set_ocr_after_upload(true).await;
    let clean = ocr::testing::fixture_pages()[0].png.to_vec();
    let blurred = crate::ocr_quality::degraded(&clean);
    dashboard
        .drop_files(&[("p1-clean.png", clean), ("p2-blurred.png", blurred)])
        .await;
    dashboard
        .wait_tiles("both pages done", JOB_DEADLINE, |tiles| {
            tiles.len() == 2 && tiles.iter().all(|tile| tile.status == "done")
        })
        .await;
    let marked = dashboard
        .wait_for(
            "the review badge of page 2",
            UI_DEADLINE,
            "#pages .page-tile[data-needs-review=\"true\"]",
            "(e) => e.length === 1 ? [e[0].dataset.page, e[0].getAttribute('aria-label'), \
             e[0].querySelectorAll('.review-badge').length] : null",
        )
        .await;
    assert_eq!(marked[0], "2", "{marked}");
    assert!(
        marked[1]
            .as_str()
            .unwrap()
            .contains("needs review: OCR confidence"),
        "a screen reader hears it: {marked}"
    );
    assert_eq!(marked[2], 1);
    let clean_badges = dashboard
        .js(
            "return document.querySelectorAll('#pages .page-tile[data-page=\"1\"] .review-badge').length",
            vec![],
        )
        .await;
    assert_eq!(clean_badges, 0, "the clean page has no badge");
    let shown = dashboard
        .js(
            "const filter = document.querySelector('#page-filter'); \
             filter.value = 'review'; filter.dispatchEvent(new Event('change')); \
             return [...document.querySelectorAll('#pages .page-tile')] \
               .filter((tile) => !tile.hidden).map((tile) => tile.dataset.page);",
            vec![],
        )
        .await;
    assert_eq!(
        shown,
        json!(["2"]),
        "the filter shows the page to review only"
    );
    dashboard.screenshot("needs-review").await;

    // A page scanned upside down reads upright, and the viewer says how it was scanned.
    let upside_down = image::load_from_memory(&ocr::testing::fixture_pages()[0].png)
        .unwrap()
        .rotate180();
    let mut png = Vec::new();
    upside_down
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    dashboard
        .js(
            "const filter = document.querySelector('#page-filter'); \
         filter.value = 'all'; filter.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
    dashboard.drop_files(&[("p3-upside-down.png", png)]).await;
    dashboard
        .wait_tiles("page 3 done", JOB_DEADLINE, |tiles| {
            tiles.len() == 3 && tiles.iter().all(|tile| tile.status == "done")
        })
        .await;
    dashboard.click("#pages .page-tile[data-page=\"3\"]").await;
    let shown = dashboard
        .wait_for(
            "the viewer of page 3 with its text read upright",
            UI_DEADLINE,
            "dialog#page-viewer[open]",
            "(e) => e.length === 1 && e[0].querySelector('#page-text')?.textContent.includes('Chapter 1') \
             ? e[0].querySelector('.viewer-source').textContent : null",
        )
        .await;
    assert_eq!(
        text(&shown),
        "p3-upside-down.png · scanned upside down, read upright"
    );
    let upright = dashboard
        .js(
            "return getComputedStyle(document.querySelector('#page-image')).transform",
            vec![],
        )
        .await;
    assert_ne!(text(&upright), "none", "the image is shown upright too");
    dashboard.screenshot("upside-down-page").await;
    dashboard.finish().await;
}

#[tokio::test]
async fn a_refused_file_is_shown_with_its_reason_and_the_rest_of_its_batch_is_added() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    dashboard.create_book_with_form("Rejections").await;
    let fixtures = ocr::testing::fixture_pages();
    dashboard.set_ocr_after_upload(false).await;
    dashboard
        .drop_files(&[
            ("page-001.png", fixtures[0].png.to_vec()),
            ("notes.txt", b"these are notes, not a page".to_vec()),
        ])
        .await;
    let reason = dashboard
        .wait_for(
            "the refused file with its reason",
            UI_DEADLINE,
            "#uploads .upload.rejected[data-file-name=\"notes.txt\"] .rejection-reason",
            "(e) => e.length === 1 && e[0].textContent.trim() ? e[0].textContent : null",
        )
        .await;
    assert!(
        reason.as_str().unwrap().contains("unsupported format"),
        "{reason}"
    );
    let tiles = dashboard
        .wait_tiles("the other file's page", JOB_DEADLINE, |tiles| {
            tiles.len() == 1
        })
        .await;
    assert_eq!(tiles[0].page, 1, "{tiles:?}");
    let summary = dashboard
        .wait_for(
            "the drop's summary",
            UI_DEADLINE,
            "#uploads .upload-batch.partly .upload-summary",
            "(e) => e.length === 1 ? e[0].textContent : null",
        )
        .await;
    let summary = text(&summary);
    assert!(
        summary.contains("Stored 1 file") && summary.contains("1 file refused"),
        "{summary}"
    );
    dashboard.screenshot("refused-file").await;
    dashboard.finish().await;
}

/// Dropped files wait in natural order of their names, can be reordered by dragging (or
/// with a row's buttons), and become pages in the order shown when sent.
#[tokio::test]
async fn dropped_files_wait_in_natural_order_and_a_drag_changes_their_page_numbers() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    let book = dashboard.create_book_with_form("Reordered").await;
    dashboard.set_ocr_after_upload(false).await;
    let png = small_png();
    dashboard
        .drop_to_stage(&[
            ("p10.png", png.clone()),
            ("p2.png", png.clone()),
            ("p1.png", png.clone()),
        ])
        .await;
    assert_eq!(
        dashboard.staged_names().await,
        ["p1.png", "p2.png", "p10.png"]
    );
    dashboard.screenshot("files-waiting").await;
    dashboard.drag_staged("p10.png", "p1.png").await;
    assert_eq!(
        dashboard.staged_names().await,
        ["p10.png", "p1.png", "p2.png"]
    );
    dashboard
        .click("button[aria-label=\"Move p2.png up\"]")
        .await;
    assert_eq!(
        dashboard.staged_names().await,
        ["p10.png", "p2.png", "p1.png"]
    );
    dashboard.screenshot("files-reordered").await;
    // At phone width the list fits without sideways scrolling.
    dashboard.emulate_phone(true).await;
    dashboard.screenshot("files-waiting-phone-width").await;
    let layout = dashboard.js(OVERFLOW_SCRIPT, vec![]).await;
    assert!(
        layout["overflow"].as_f64().unwrap() <= 0.0,
        "no sideways scrolling at phone width: {layout}"
    );
    dashboard.emulate_phone(false).await;
    dashboard.send_staged().await;
    let names = dashboard.api.page_sources(&book, 3).await;
    assert_eq!(
        names,
        ["p10.png", "p2.png", "p1.png"],
        "pages in the order shown"
    );
    assert!(
        dashboard.staged_names().await.is_empty(),
        "nothing left waiting"
    );
    dashboard.finish().await;
}

/// A drop of 1,000 files in shuffled order: sent in bounded batches, stored as pages in the
/// natural order of their names (p2 before p10), the one corrupt file refused with its
/// reason and the 999 others stored.
#[tokio::test]
async fn a_thousand_files_dropped_in_any_order_become_pages_in_natural_name_order() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    let book = dashboard.create_book_with_form("A thousand files").await;
    dashboard.set_ocr_after_upload(false).await;
    let png = small_png();
    let mut files: Vec<(String, Vec<u8>)> = (1..=1000)
        .map(|n| (format!("p{n}.png"), png.clone()))
        .collect();
    // p500.png: a PNG signature, then nothing a decoder can read.
    files[499].1 = b"\x89PNG\r\n\x1a\nthis is no image at all".to_vec();
    // A fixed shuffle (an LCG), so a failure repeats.
    let mut state = 25_u64;
    for index in (1..files.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        files.swap(index, (state >> 33) as usize % (index + 1));
    }
    assert_ne!(files[0].0, "p1.png");
    let dropped: Vec<(&str, Vec<u8>)> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.clone()))
        .collect();
    dashboard.drop_files(&dropped).await;
    let reason = dashboard
        .wait_for(
            "the corrupt file refused with its reason",
            JOB_DEADLINE,
            "#uploads .upload.rejected[data-file-name=\"p500.png\"] .rejection-reason",
            "(e) => e.length === 1 && e[0].textContent.trim() ? e[0].textContent : null",
        )
        .await;
    dashboard.screenshot("thousand-files-sending").await;
    let summary = dashboard
        .wait_for(
            "the drop's summary",
            JOB_DEADLINE,
            "#uploads .upload-batch.partly .upload-summary",
            "(e) => e.length === 1 ? e[0].textContent : null",
        )
        .await;
    let summary = text(&summary);
    assert!(
        summary.contains("Stored 999 files: 999 pages (pp. 1")
            && summary.contains("1 file refused"),
        "{summary}; p500.png: {reason}"
    );
    let names = dashboard.api.page_sources(&book, 999).await;
    let expected: Vec<String> = (1..=1000)
        .filter(|n| *n != 500)
        .map(|n| format!("p{n}.png"))
        .collect();
    assert_eq!(
        names, expected,
        "pages 1-999 in natural order of the file names"
    );
    dashboard.screenshot("thousand-files-stored").await;
    let requests = dashboard
        .api
        .requests_since(0)
        .into_iter()
        // An upload's answers: 202 stored, 422 a file refused, 409 an ingest still running.
        .filter(|request| {
            request.path == format!("/v1/books/{book}/pages")
                && [202, 409, 422].contains(&request.status)
        })
        .count();
    assert!(
        (20..=60).contains(&requests),
        "bounded batches of at most 50 files (a refused batch is sent again without its \
         refused file, and one waiting for the previous ingest is sent again): {requests} \
         uploads"
    );
    dashboard.finish().await;
}

/// A drop of more files than one batch with "OCR after upload": only the last batch starts
/// OCR, so one job reads every page of the drop.
#[tokio::test]
async fn a_drop_of_two_batches_with_ocr_after_upload_starts_one_ocr_job_for_all_its_pages() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    let book = dashboard.create_book_with_form("Two batches").await;
    dashboard.set_ocr_after_upload(true).await;
    let png = small_png();
    let files: Vec<(String, Vec<u8>)> = (1..=60)
        .map(|n| (format!("p{n}.png"), png.clone()))
        .collect();
    let dropped: Vec<(&str, Vec<u8>)> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.clone()))
        .collect();
    dashboard.drop_files(&dropped).await;
    assert_eq!(dashboard.api.page_sources(&book, 60).await.len(), 60);
    let pages = dashboard
        .api
        .eventually_value("every page read", || async {
            let book = dashboard.api.get(&format!("/v1/books/{book}")).await;
            let pages = book["pages"].as_array().cloned().unwrap_or_default();
            (pages.len() == 60 && pages.iter().all(|page| page["ocr"]["status"] == "done"))
                .then_some(pages)
        })
        .await;
    assert_eq!(pages.len(), 60);
    let jobs = dashboard.api.get(&format!("/v1/books/{book}/jobs")).await;
    let ocr_jobs = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["type"] == "ocr")
        .count();
    assert_eq!(ocr_jobs, 1, "{jobs}");
    dashboard.finish().await;
}

/// A 64 x 64 grey PNG.
fn small_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::GrayImage::from_pixel(64, 64, image::Luma([200]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

#[tokio::test]
async fn cancel_stops_the_ocr_job_and_resume_finishes_every_page() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    dashboard.create_book_with_form("Cancel and resume").await;
    let n_pages = 24;
    dashboard.set_ocr_after_upload(true).await;
    dashboard
        .pick_files(&dashboard.page_files(1..=n_pages))
        .await;
    let job = dashboard
        .wait_job("the OCR job under way", JOB_DEADLINE, |job| {
            job.kind == "ocr"
                && job.status == "running"
                && job.can_cancel
                && job.now() >= 1
                && job.now() < n_pages
        })
        .await;
    dashboard
        .click(&format!(
            "#book-jobs .job[data-job-id=\"{}\"] button.cancel-job",
            job.id
        ))
        .await;
    let cancelled = dashboard
        .wait_job("the job cancelled", UI_DEADLINE, |shown| {
            shown.id == job.id && shown.status == "cancelled" && shown.can_resume
        })
        .await;
    assert!(!cancelled.can_cancel, "{cancelled:?}");
    let tiles = dashboard
        .wait_tiles("no page left running", UI_DEADLINE, |tiles| {
            tiles.iter().all(|tile| tile.status != "running")
        })
        .await;
    let done_at_cancel = tiles.iter().filter(|tile| tile.status == "done").count();
    assert!(
        done_at_cancel < n_pages,
        "the cancel came before the end: {tiles:?}"
    );
    dashboard.screenshot("cancelled-job").await;

    dashboard
        .click(&format!(
            "#book-jobs .job[data-job-id=\"{}\"] button.resume-job",
            job.id
        ))
        .await;
    let resumed = dashboard
        .wait_job("the resumed job", UI_DEADLINE, |shown| {
            shown.kind == "ocr" && shown.id != job.id
        })
        .await;
    dashboard
        .wait_tiles("every page done after the resume", JOB_DEADLINE, |tiles| {
            tiles.len() == n_pages && tiles.iter().all(|tile| tile.status == "done")
        })
        .await;
    let finished = dashboard
        .wait_job("the resumed job completed", UI_DEADLINE, |shown| {
            shown.id == resumed.id && shown.status == "completed"
        })
        .await;
    assert_eq!(finished.now(), n_pages, "{finished:?}");
    let resumed_from = dashboard.api.get(&format!("/v1/jobs/{}", resumed.id)).await;
    assert_eq!(resumed_from["resumed_from"], job.id.as_str());
    let history = dashboard
        .js(
            "return [...document.querySelectorAll('#job-history .history-row')]\
             .map((e) => e.dataset.jobId)",
            vec![],
        )
        .await;
    let history: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        history.contains(&job.id.as_str()) && history.contains(&resumed.id.as_str()),
        "the history lists both jobs: {history:?}"
    );
    println!(
        "cancelled with {done_at_cancel} of {n_pages} pages done; the resumed job finished the rest"
    );
    dashboard.finish().await;
}

#[tokio::test]
async fn a_title_made_of_html_is_shown_as_text() {
    let dashboard = Dashboard::start(None).await;
    dashboard.goto("/").await;
    let title = "<img src=x onerror=alert(1)><b>bold</b>";
    let book = dashboard.create_book_with_form(title).await;
    let shown = dashboard
        .js(
            "const title = document.querySelector('h1#book-title');\
             return {text: title.textContent, elements: title.querySelectorAll('*').length,\
             images: document.querySelectorAll('#app img[src=\"x\"]').length}",
            vec![],
        )
        .await;
    assert_eq!(
        shown,
        json!({"text": title, "elements": 0, "images": 0}),
        "the book view"
    );
    let long_title = "A very long title that goes on and on: Fractions, decimals, percentages, \
                      ratios and proportion for the second year of secondary school, revised";
    dashboard.api.create_book("long-title", long_title).await;
    dashboard.click("a[href=\"/\"]").await;
    let shown = dashboard
        .wait_for(
            "the book in the list",
            UI_DEADLINE,
            &format!("#books .book-row[data-book-id=\"{book}\"] .book-title"),
            "(e) => e.length === 1 ? {text: e[0].textContent, elements: e[0].querySelectorAll('*').length} : null",
        )
        .await;
    assert_eq!(
        shown,
        json!({"text": title, "elements": 0}),
        "the books list"
    );
    dashboard
        .wait_for(
            "the long title in the list",
            UI_DEADLINE,
            "#books .book-row[data-book-id=\"long-title\"]",
            "(e) => e.length === 1",
        )
        .await;
    let images = dashboard
        .js(
            "return document.querySelectorAll('#app img[src=\"x\"]').length",
            vec![],
        )
        .await;
    assert_eq!(images, 0);
    assert!(
        dashboard.client.get_alert_text().await.is_err(),
        "no script of the title ran"
    );
    dashboard
        .screenshot("books-list-html-and-long-titles")
        .await;
    dashboard.finish().await;
}

#[tokio::test]
async fn with_a_token_the_page_asks_once_and_every_call_carries_it_outside_urls() {
    let token = "dashboard-secret-token";
    let dashboard = Dashboard::start(Some(token)).await;
    dashboard.goto("/").await;
    dashboard
        .wait_for(
            "the token prompt",
            UI_DEADLINE,
            "dialog#token-dialog[open] input#token-input",
            "(e) => e.length === 1",
        )
        .await;
    dashboard.screenshot("token-prompt").await;
    dashboard.enter_token(token).await;
    dashboard
        .wait_for(
            "the books list after the token",
            UI_DEADLINE,
            "#books",
            "(e) => e.length === 1 && !document.querySelector('dialog#token-dialog[open]')",
        )
        .await;

    // Create, upload with OCR after upload, follow the job live.
    let book = dashboard.create_book_with_form("Behind a token").await;
    dashboard.set_ocr_after_upload(true).await;
    dashboard.pick_files(&dashboard.page_files(1..=2)).await;
    let job = dashboard
        .wait_job("the OCR job completed", JOB_DEADLINE, |job| {
            job.kind == "ocr" && job.status == "completed"
        })
        .await;
    assert_eq!(
        (job.value_now.as_deref(), job.value_max.as_deref()),
        (Some("2"), Some("2")),
        "{job:?}"
    );
    dashboard
        .wait_tiles("both pages done", UI_DEADLINE, |tiles| {
            tiles.len() == 2 && tiles.iter().all(|tile| tile.status == "done")
        })
        .await;

    // A reload in the same browser session does not ask again.
    dashboard.client.refresh().await.unwrap();
    dashboard
        .wait_tiles("the book after a reload", UI_DEADLINE, |tiles| {
            tiles.len() == 2
        })
        .await;
    let prompt_open = dashboard
        .js(
            "return !!document.querySelector('dialog#token-dialog[open]')",
            vec![],
        )
        .await;
    assert_eq!(
        prompt_open,
        json!(false),
        "the token is asked for once per session"
    );

    // No URL the browser fetched has the token.
    let urls = dashboard
        .js(
            "return [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]",
            vec![],
        )
        .await;
    for url in urls.as_array().unwrap() {
        assert!(
            !url.as_str().unwrap().contains(token),
            "a URL with the token: {url}"
        );
    }

    // The api's log: no request path has the token, the streams were authorized.
    let log = std::fs::read_to_string(dashboard.api.log_path()).unwrap();
    assert!(!log.contains(token), "the token is in the api's log");
    let requests = dashboard.api.requests_since(0);
    let streams: Vec<&LoggedRequest> = requests
        .iter()
        .filter(|request| {
            request.path.starts_with("/v1/jobs/") && request.path.ends_with("/events")
        })
        .collect();
    assert!(!streams.is_empty(), "the job was followed live");
    assert!(
        streams.iter().all(|request| request.status == 200),
        "every live stream carried the token: {streams:#?}"
    );
    let unauthorized = requests
        .iter()
        .filter(|request| request.status == 401)
        .count();
    println!(
        "token: {} requests, {unauthorized} answered 401 (before the token was entered), {} live streams, none with the token in a URL",
        requests.len(),
        streams.len()
    );

    // A token that stops working brings the prompt back.
    dashboard
        .js("sessionStorage.clear(); return null", vec![])
        .await;
    dashboard.goto(&format!("/books/{book}")).await;
    dashboard
        .wait_for(
            "the token prompt again",
            UI_DEADLINE,
            "dialog#token-dialog[open]",
            "(e) => e.length === 1",
        )
        .await;
    dashboard.enter_token(token).await;
    dashboard
        .wait_tiles("the book after the token again", UI_DEADLINE, |tiles| {
            tiles.len() == 2
        })
        .await;
    dashboard.finish().await;
}

#[tokio::test]
async fn the_jobs_view_counts_live_filters_by_status_and_type_and_groups_failures() {
    let dashboard = Dashboard::start(None).await;
    let api = &dashboard.api;

    // A completed OCR job, then a guidelines job that fails: page 1's text is gone.
    api.create_book("jobs-a", "Jobs A").await;
    let ocr_a = api.upload_fixture_pages("jobs-a", 2, true).await;
    let ocr_a = ocr_a["job"]["id"].as_str().unwrap().to_owned();
    api.wait_job_status(&ocr_a, "completed").await;
    std::fs::remove_file(api.objects().join("books/jobs-a/ocr/0001.txt")).unwrap();
    let guidelines_a = api
        .post("/v1/books/jobs-a/jobs", json!({"type": "guidelines"}))
        .await;
    let guidelines_a = guidelines_a["id"].as_str().unwrap().to_owned();
    let failed = api.wait_job_status(&guidelines_a, "failed").await;
    let failure_code = failed["error"]["code"].as_str().unwrap().to_owned();

    // A cancelled OCR job.
    api.create_book("jobs-b", "Jobs B").await;
    let ocr_b = api.upload_fixture_pages("jobs-b", 12, true).await;
    let ocr_b = ocr_b["job"]["id"].as_str().unwrap().to_owned();
    api.post(&format!("/v1/jobs/{ocr_b}/cancel"), json!(null))
        .await;
    api.wait_job_status(&ocr_b, "cancelled").await;

    dashboard.goto("/jobs").await;
    // Completed: the OCR job of jobs-a and the ingest jobs of both uploads.
    for (status, count) in [("completed", 3), ("failed", 1), ("cancelled", 1)] {
        dashboard.wait_tab_count(status, count).await;
    }
    dashboard.mark_document().await;

    dashboard
        .click("#status-tabs [data-status=\"failed\"]")
        .await;
    let rows = dashboard
        .wait_job_rows("the failed jobs", |rows| {
            rows.len() == 1 && rows[0].status == "failed"
        })
        .await;
    assert_eq!(rows[0].id, guidelines_a);
    assert_eq!(rows[0].status, "failed");
    assert!(rows[0].can_resume, "{rows:?}");
    dashboard
        .wait_for(
            "the failures grouped by code",
            UI_DEADLINE,
            &format!("#failed-groups .failed-group[data-code=\"{failure_code}\"]"),
            "(e) => e.length === 1",
        )
        .await;
    dashboard.screenshot("jobs-view").await;

    dashboard
        .click("#status-tabs [data-status=\"completed\"]")
        .await;
    let rows = dashboard
        .wait_job_rows("the completed jobs", |rows| {
            rows.len() == 3 && rows.iter().all(|row| row.status == "completed")
        })
        .await;
    assert!(rows.iter().any(|row| row.id == ocr_a), "{rows:?}");
    dashboard.select_type("guidelines").await;
    dashboard
        .wait_job_rows("no completed guidelines job", Vec::is_empty)
        .await;
    dashboard.select_type("ocr").await;
    let rows = dashboard
        .wait_job_rows("the completed OCR job", |rows| {
            rows.len() == 1 && rows[0].status == "completed"
        })
        .await;
    assert_eq!(rows[0].id, ocr_a);
    dashboard.select_type("all").await;

    // Counts follow new jobs without a reload.
    api.create_book("jobs-c", "Jobs C").await;
    let ocr_c = api.upload_fixture_pages("jobs-c", 1, true).await;
    let ocr_c = ocr_c["job"]["id"].as_str().unwrap().to_owned();
    api.wait_job_status(&ocr_c, "completed").await;
    dashboard.wait_tab_count("completed", 5).await;
    dashboard
        .wait_job_rows("the new job in the list", |rows| {
            rows.iter().any(|row| row.id == ocr_c)
        })
        .await;

    // Resume and cancel from the list.
    dashboard
        .click("#status-tabs [data-status=\"cancelled\"]")
        .await;
    let rows = dashboard
        .wait_job_rows("the cancelled job", |rows| {
            rows.len() == 1 && rows[0].status == "cancelled"
        })
        .await;
    assert_eq!(rows[0].id, ocr_b);
    dashboard
        .click(&format!(
            "#all-jobs .job-row[data-job-id=\"{ocr_b}\"] button.resume-job"
        ))
        .await;
    let resumed = api
        .eventually_value("the resumed job", || async {
            let jobs = api.get("/v1/books/jobs-b/jobs?type=ocr").await;
            jobs["jobs"]
                .as_array()?
                .iter()
                .find(|job| job["resumed_from"] == ocr_b.as_str())
                .map(|job| job["id"].as_str().unwrap().to_owned())
        })
        .await;
    dashboard
        .click("#status-tabs [data-status=\"running\"]")
        .await;
    dashboard
        .click(&format!(
            "#all-jobs .job-row[data-job-id=\"{resumed}\"] button.cancel-job"
        ))
        .await;
    api.wait_job_status(&resumed, "cancelled").await;
    dashboard.wait_tab_count("cancelled", 2).await;
    assert!(
        dashboard.document_is_marked().await,
        "all of it happened without a page load"
    );
    dashboard.finish().await;
}

#[tokio::test]
async fn one_upload_with_process_everything_ends_with_the_books_guidelines_final_and_the_pipeline_shows_four_completed_steps()
 {
    let dashboard = Dashboard::start(None).await;
    let book = "chained";
    dashboard
        .api
        .create_book(book, "One upload, the whole pipeline")
        .await;
    dashboard.goto(&format!("/books/{book}")).await;
    let options = dashboard
        .wait_for(
            "the upload options",
            UI_DEADLINE,
            "#process-everything",
            "(e) => e.length === 1 ? {everything: e[0].checked, \
             ocr: document.querySelector('#ocr-after-upload').checked} : null",
        )
        .await;
    assert_eq!(
        options,
        json!({"everything": false, "ocr": true}),
        "OCR after upload on, the whole pipeline one click away"
    );
    // Unchecking OCR unchecks the pipeline; checking the pipeline checks OCR again.
    dashboard.click("#process-everything").await;
    dashboard.set_ocr_after_upload(false).await;
    dashboard.click("#process-everything").await;
    let options = dashboard
        .js(
            "return {everything: document.querySelector('#process-everything').checked, \
             ocr: document.querySelector('#ocr-after-upload').checked}",
            vec![],
        )
        .await;
    assert_eq!(options, json!({"everything": true, "ocr": true}));

    let picked = dashboard.page_files(1..=3);
    dashboard.pick_files(&picked).await;
    dashboard
        .wait_uploads_sent(&["page-001.png", "page-002.png", "page-003.png"])
        .await;

    // The OCR job is shown first with the two steps to come.
    dashboard
        .wait_job("the chained OCR job", UI_DEADLINE, |job| job.kind == "ocr")
        .await;
    dashboard.screenshot("pipeline-running").await;

    let steps = dashboard
        .wait_for(
            "four completed steps in one pipeline",
            JOB_DEADLINE,
            "#book-jobs .pipeline .pipeline-step",
            "(steps) => steps.length === 4 && steps.every((step) => {\
               const job = step.querySelector('.job');\
               const bar = job && job.querySelector('[role=progressbar]');\
               return step.dataset.state === 'completed' && job.dataset.status === 'completed'\
                 && bar && bar.getAttribute('aria-valuemax') !== '0'\
                 && bar.getAttribute('aria-valuenow') === bar.getAttribute('aria-valuemax');\
             }) ? steps.map((step) => ({type: step.dataset.step, \
               id: step.querySelector('.job').dataset.jobId})) : null",
        )
        .await;
    let steps = steps.as_array().unwrap().clone();
    assert_eq!(
        steps
            .iter()
            .map(|step| text(&step["type"]))
            .collect::<Vec<_>>(),
        ["ingest", "ocr", "guidelines", "finalize"],
        "{steps:?}"
    );
    let pipelines = dashboard
        .js(
            "return document.querySelectorAll('#book-jobs .pipeline').length",
            vec![],
        )
        .await;
    assert_eq!(pipelines, 1, "the chain is one pipeline");

    // The chain as the API has it: each step started by the completion of the one before.
    for pair in steps.windows(2) {
        let (before, after) = (text(&pair[0]["id"]), text(&pair[1]["id"]));
        let job = dashboard.api.get(&format!("/v1/jobs/{before}")).await;
        assert_eq!(text(&job["next_job_id"]), after, "{job}");
        let next = dashboard.api.get(&format!("/v1/jobs/{after}")).await;
        assert_eq!(text(&next["previous_job_id"]), before, "{next}");
    }
    let state = dashboard.api.get(&format!("/v1/books/{book}")).await;
    assert_eq!(state["guidelines"]["status"], "final", "{state}");
    let topics = dashboard
        .wait_for(
            "the final guidelines",
            UI_DEADLINE,
            "#guidelines .topic h3",
            "(elements) => elements.length === 3 ? elements.length : null",
        )
        .await;
    assert_eq!(topics, 3);
    let chain = dashboard
        .js(
            &format!(
                "return document.querySelector('#history-{} .history-chain').textContent",
                text(&steps[1]["id"])
            ),
            vec![],
        )
        .await;
    assert!(
        text(&chain).contains("then: guidelines → finalize"),
        "the OCR job's history row shows its chain: {chain}"
    );
    dashboard.screenshot("pipeline-completed").await;
    dashboard.finish().await;
}

#[tokio::test]
async fn a_300_page_book_view_loads_in_under_a_second_and_stays_responsive_during_ocr() {
    let dashboard = Dashboard::start(None).await;
    let book = "three-hundred";
    let n_pages = 300;
    dashboard.api.create_book(book, "Three hundred pages").await;
    dashboard
        .api
        .upload_fixture_pages(book, n_pages, false)
        .await;

    // The book view from navigation start until its 300 tiles are in the DOM, in browser
    // time (`performance.now()` counts from the navigation's start). The first frame that
    // sees the tiles ends the measure, so it is an upper bound.
    let mut loads = Vec::new();
    for _ in 0..3 {
        dashboard.goto(&format!("/books/{book}")).await;
        let load = dashboard
            .js(
                "const [count] = arguments;\
                 const begun = performance.now();\
                 return new Promise((resolve) => {\
                   const check = () => {\
                     const tiles = document.querySelectorAll('#pages .page-tile').length;\
                     const now = performance.now();\
                     if (tiles >= count || now - begun > 15000) {\
                       const nav = performance.getEntriesByType('navigation')[0];\
                       resolve({tiles, at: now, checked_from: begun,\
                                dom_content_loaded: nav.domContentLoadedEventEnd,\
                                load_event: nav.loadEventEnd});\
                       return;\
                     }\
                     requestAnimationFrame(check);\
                   };\
                   check();\
                 });",
                vec![json!(n_pages)],
            )
            .await;
        assert_eq!(load["tiles"], n_pages, "{load}");
        loads.push(load);
    }
    let load_times: Vec<f64> = loads
        .iter()
        .map(|load| load["at"].as_f64().unwrap())
        .collect();
    println!(
        "300-page book view, navigation start to 300 tiles (ms): {load_times:?}; details: {loads:?}"
    );
    dashboard.screenshot("300-page-book").await;
    // The median of three loads: one load may share its core with another test of the
    // suite, which says nothing of the view.
    let mut sorted = load_times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        median < 1000.0,
        "the book view took {median} ms (median): {load_times:?}"
    );

    // The longest gap between animation frames: the view at rest, then during OCR while
    // tiles turn done (still, then scrolled as a person would).
    let idle = dashboard.frames(3000, true).await;
    dashboard
        .client
        .execute("window.scrollTo(0, 0); return null", vec![])
        .await
        .unwrap();
    dashboard.click("#start-ocr").await;
    let job = dashboard
        .wait_job("the OCR job running", JOB_DEADLINE, |job| {
            job.kind == "ocr" && job.status == "running" && job.now() >= 1
        })
        .await;
    let busy_still = dashboard.frames(6000, false).await;
    let busy = dashboard.frames(6000, true).await;
    dashboard.screenshot("300-page-book-during-ocr").await;
    // The same measure on an empty page during the same OCR: what the machine alone (2
    // cores shared by tesseract, the api and Chromium) costs.
    dashboard.client.goto("about:blank").await.unwrap();
    let blank = dashboard.frames(4000, false).await;
    println!(
        "frames of the 300-page book view at rest (scrolled): {idle}\nduring OCR, not scrolling: \
         {busy_still}\nduring OCR, scrolling: {busy}\nan empty page during the same OCR: {blank}"
    );
    assert!(
        busy["done_after"].as_u64() > busy_still["done_before"].as_u64(),
        "tiles turned done while measured: {busy_still} {busy}"
    );
    // While tiles update the view keeps its frames under 300 ms (measured: 50 ms alone on
    // the machine; the margin is for another test of the suite on the second core);
    // scrolling brings in new thumbnails (fetched, decoded, scaled on 2 busy cores with
    // software rendering), which may cost more, but never a freeze a person notices.
    for (what, frames, limit) in [("still", &busy_still, 300.0), ("scrolled", &busy, 750.0)] {
        let longest_gap = frames["longest_gap"].as_f64().unwrap();
        assert!(
            longest_gap < limit,
            "the page ({what}) froze for {longest_gap} ms during OCR: {frames}"
        );
    }
    dashboard.goto(&format!("/books/{book}")).await;

    // OCR of 300 pages is too slow for the suite: cancel.
    dashboard.scroll_into_view("#book-jobs").await;
    dashboard
        .click(&format!(
            "#book-jobs .job[data-job-id=\"{}\"] button.cancel-job",
            job.id
        ))
        .await;
    dashboard
        .wait_job("the job cancelled", UI_DEADLINE, |shown| {
            shown.id == job.id && shown.status == "cancelled"
        })
        .await;
    dashboard.finish().await;
}

#[tokio::test]
async fn a_1000_page_book_grid_shows_previews_in_view_and_scrolls_top_to_bottom_in_under_20_mb() {
    let dashboard = Dashboard::start(None).await;
    let book = "thousand";
    dashboard.api.create_book(book, "A thousand pages").await;
    // One real full-size page (a letter page of prose rendered at 300 dpi, with its
    // preview), uploaded through the api; then 999 more pages with the same image and a
    // copy of its preview, written into the api's storage: a 1,000-page book without
    // 1,000 renders.
    let line = "Add the numerators and keep the denominator when the denominators match. ";
    let prose: Vec<String> = (0..42).map(|row| line[row % 9..].to_owned()).collect();
    let pdf = books::testing::PdfBuilder::new()
        .text_page(&prose.join("\n"))
        .build();
    let (content_type, body) = crate::support::multipart(&[("prose.pdf", &pdf)]);
    let response = dashboard
        .api
        .request(
            reqwest::Method::POST,
            &format!("/v1/books/{book}/pages?ocr=false"),
        )
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    dashboard
        .api
        .wait_job_status(&text(&answer["job"]["id"]), "completed")
        .await;
    let store: std::sync::Arc<dyn blob_store::BlobStore> = std::sync::Arc::new(
        blob_store::FileBlobStore::open(dashboard.api.objects())
            .await
            .unwrap(),
    );
    let books = books::Books::new(store.clone());
    let book_id = books::BookId::parse(book).unwrap();
    let preview =
        |page| books::layout::book_key(&book_id, &books::layout::page_thumbnail_path(page));
    let first_preview = store.get(&preview(1)).await.unwrap().bytes;
    futures::stream::iter(2..=1000)
        .for_each_concurrent(16, |page| {
            let (store, key, bytes) = (store.clone(), preview(page), first_preview.clone());
            async move {
                store
                    .put(&key, bytes, blob_store::PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        })
        .await;
    let manifest = books
        .update(&book_id, |manifest| {
            let first = manifest.page(1).unwrap().clone();
            for number in 2..=1000 {
                manifest.upsert_page(books::Page {
                    page: number,
                    ..first.clone()
                });
            }
        })
        .await
        .unwrap();
    let page = manifest.page(1).unwrap();
    assert!(
        page.width >= 2500,
        "a full-size page: {}x{}",
        page.width,
        page.height
    );

    // Usable: the 1,000 tiles are in the DOM and the tiles in view show their previews,
    // counted from the navigation's start.
    dashboard.goto(&format!("/books/{book}")).await;
    dashboard
        .js(
            "performance.setResourceTimingBufferSize(100000); return null",
            vec![],
        )
        .await;
    let usable = dashboard
        .wait_for(
            "the grid's tiles in view with their previews",
            UI_DEADLINE,
            "#pages .page-tile",
            "(tiles) => { if (tiles.length < 1000) return false;\
               const inView = tiles.filter((tile) => { const box = tile.getBoundingClientRect();\
                 return box.bottom > 0 && box.top < window.innerHeight; });\
               return inView.length > 0 && inView.every((tile) => tile.classList.contains('has-image'))\
                 ? { at: performance.now(), in_view: inView.length, requests: performance.getEntriesByType('resource')\
                   .map((entry) => `${entry.name.replace(location.origin, '')} ${Math.round(entry.startTime)}+${Math.round(entry.duration)}`) } : false; }",
        )
        .await;
    dashboard.screenshot("1000-page-book").await;

    // Top to bottom, a screen at a time, each screen's previews shown before the next.
    let mut screens = 0;
    loop {
        let at_end = dashboard
            .wait_for(
                "the previews of the tiles in view",
                UI_DEADLINE,
                "#pages .page-tile",
                "(tiles) => tiles.filter((tile) => { const box = tile.getBoundingClientRect();\
                   return box.bottom > 0 && box.top < window.innerHeight; })\
                   .every((tile) => tile.classList.contains('has-image'))\
                   && { end: window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2 }",
            )
            .await;
        if at_end["end"] == true {
            break;
        }
        dashboard
            .js(
                "window.scrollBy(0, window.innerHeight); return null",
                vec![],
            )
            .await;
        screens += 1;
    }
    let transfer = dashboard
        .js(
            "const entries = performance.getEntriesByType('resource');\
             const sum = (list) => list.reduce((total, entry) => total + entry.encodedBodySize, 0);\
             const previews = entries.filter((entry) => entry.name.endsWith('/thumbnail'));\
             const images = entries.filter((entry) => entry.name.endsWith('/image'));\
             return { bytes: sum(entries), requests: entries.length, previews: previews.length,\
                      preview_bytes: sum(previews), images: images.length,\
                      loaded: document.querySelectorAll('#pages .page-tile.has-image').length };",
            vec![],
        )
        .await;
    dashboard.screenshot("1000-page-book-bottom").await;
    println!(
        "1,000-page grid: usable at {} ms, {screens} screens scrolled, transfer {transfer}; \
         the full images would be {} bytes",
        usable["at"],
        1000 * page.bytes
    );
    // How soon is a speed target, checked on an idle machine by `cargo xtask bench grid`
    // (which runs this test with the budget set), not under the load of a test run.
    if let Some(budget) = std::env::var("FOLIO_GRID_USABLE_WITHIN_MS")
        .ok()
        .and_then(|ms| ms.parse::<f64>().ok())
    {
        assert!(
            usable["at"].as_f64().unwrap() < budget,
            "the grid was usable only after {usable}"
        );
    }
    assert_eq!(transfer["loaded"], 1000, "every tile was seen: {transfer}");
    assert_eq!(
        transfer["images"], 0,
        "no full image for the grid: {transfer}"
    );
    assert_eq!(
        transfer["previews"], 1000,
        "one preview per tile: {transfer}"
    );
    assert!(
        transfer["bytes"].as_u64().unwrap() < 20_000_000,
        "top to bottom transferred {transfer}"
    );
    dashboard.finish().await;
}

// ---------------------------------------------------------------------------------------
// The harness: chromedriver, the api binary, a browser session on the dashboard.

/// A browser session on a running `api --with-worker`, with its driver.
struct Dashboard {
    client: Client,
    api: ApiProcess,
    driver: Chromedriver,
    /// Page files for the file picker.
    files: tempfile::TempDir,
    started: Instant,
    _one_browser: MutexGuard<'static, ()>,
}

/// One page tile as shown.
#[derive(Debug, Clone)]
struct Tile {
    page: u64,
    status: String,
    label: String,
}

/// One job of the book view as shown.
#[derive(Debug, Clone)]
struct ShownJob {
    id: String,
    kind: String,
    status: String,
    value_now: Option<String>,
    value_max: Option<String>,
    can_cancel: bool,
    can_resume: bool,
}

impl ShownJob {
    fn now(&self) -> usize {
        self.value_now
            .as_deref()
            .and_then(|now| now.parse::<f64>().ok())
            .map_or(0, |now| now as usize)
    }
}

/// One row of the jobs view.
#[derive(Debug, Clone)]
struct JobRow {
    id: String,
    status: String,
    can_resume: bool,
}

impl Dashboard {
    /// Chromedriver, the api (with `token`, if any) and a browser session.
    async fn start(token: Option<&str>) -> Self {
        let one_browser = ONE_BROWSER_AT_A_TIME.lock().await;
        let started = Instant::now();
        assert!(
            Path::new(CHROMIUM).is_file(),
            "no Chromium at {CHROMIUM}: {INSTALL_HINT}"
        );
        let api = ApiProcess::start(token).await;
        let driver = Chromedriver::start(api.dir.path()).await;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 120_000, "pageLoad": 60_000, "implicit": 0},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "no browser session from chromedriver at {}: {error}. {INSTALL_HINT}",
                    driver.url
                )
            });
        let files = tempfile::tempdir().unwrap();
        Self {
            client,
            api,
            driver,
            files,
            started,
            _one_browser: one_browser,
        }
    }

    /// Ends the session after checking the browser's console: no script errors and no
    /// Content-Security-Policy violations (failed loads, such as a 401 before the token,
    /// are listed only).
    async fn finish(self) {
        let entries = self.console().await;
        let mut errors = Vec::new();
        for entry in &entries {
            let level = entry["level"].as_str().unwrap_or_default();
            let message = entry["message"].as_str().unwrap_or_default();
            if level != "SEVERE" {
                continue;
            }
            if message.contains("Failed to load resource") {
                println!("browser console (a failed load): {message}");
            } else {
                errors.push(message.to_owned());
            }
        }
        assert!(
            errors.is_empty(),
            "errors in the browser console: {errors:#?}"
        );
        self.client.clone().close().await.unwrap();
        println!(
            "browser test done in {:.1} s (chromedriver, api and browser included)",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// The browser's console messages since the last call.
    async fn console(&self) -> Vec<Value> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver.url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["value"].as_array().cloned().unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.base)
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&self.url(path)).await.unwrap();
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Polls `predicate` (a JavaScript function of the array of elements matching `css`)
    /// until it returns something other than `null`, `undefined` or `false`; returns that.
    /// On timeout: a screenshot, the page and the api's log in the panic.
    async fn wait_for(&self, what: &str, deadline: Duration, css: &str, predicate: &str) -> Value {
        let script = format!(
            "const elements = [...document.querySelectorAll(arguments[0])];\
             const value = ({predicate})(elements);\
             return value === undefined || value === false ? null : value;"
        );
        let fetch = || async {
            // Mid-navigation the script can fail: poll again.
            self.client
                .execute(&script, vec![json!(css)])
                .await
                .map_err(|error| format!("last script error: {error}"))
        };
        self.poll(what, deadline, fetch, |value| match value {
            Value::Null => Err(String::new()),
            value => Ok(value),
        })
        .await
    }

    /// Runs `script` (without arguments) until `check` accepts what it returned; after
    /// `deadline` panics with [`Self::failure`] and what `check` saw last (a script that
    /// failed mid-navigation is tried again).
    async fn poll_script<T>(
        &self,
        what: &str,
        deadline: Duration,
        script: &str,
        check: impl FnMut(Value) -> Result<T, String>,
    ) -> T {
        let fetch = || async {
            self.client
                .execute(script, vec![])
                .await
                .map_err(|_| String::new())
        };
        self.poll(what, deadline, fetch, check).await
    }

    /// The page's one polling loop: `fetch` every [`POLL`] until `check` accepts what it
    /// gave; after `deadline` panics with [`Self::failure`] (a screenshot, the page, the
    /// api's log) and what was seen last.
    async fn poll<X, T, F: std::future::Future<Output = Result<X, String>>>(
        &self,
        what: &str,
        deadline: Duration,
        fetch: impl Fn() -> F,
        mut check: impl FnMut(X) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            let seen = match fetch().await.and_then(&mut check) {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            if start.elapsed() >= deadline {
                panic!("{}", self.failure(what, &seen).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics with what was awaited, a screenshot, the page's main element and the end
    /// of the api's log.
    async fn failure(&self, what: &str, detail: &str) -> String {
        let name: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.screenshot(&format!("timeout-{name}")).await;
        let url = self.client.current_url().await.map(|url| url.to_string());
        let html = self
            .client
            .execute(
                "const app = document.querySelector('#app') || document.body;\
                 return app ? app.outerHTML.slice(0, 6000) : ''",
                vec![],
            )
            .await
            .unwrap_or_default();
        let log = std::fs::read_to_string(self.api.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let console = self.console().await;
        format!(
            "timed out waiting for {what} {detail}\nurl: {url:?}\nconsole: {console:#?}\npage: {}\n\
             api log (newest first):\n{}",
            html.as_str().unwrap_or_default(),
            tail.join("\n")
        )
    }

    /// Polls the page tiles until `done` holds; returns them.
    async fn wait_tiles(
        &self,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&[Tile]) -> bool,
    ) -> Vec<Tile> {
        self.poll_script(what, deadline, TILES_SCRIPT, |value| {
            let tiles = tiles_of(&value);
            if done(&tiles) {
                return Ok(tiles);
            }
            let summary: Vec<String> = tiles
                .iter()
                .map(|tile| format!("{}:{}", tile.page, tile.status))
                .collect();
            Err(format!("(tiles: {summary:?})"))
        })
        .await
    }

    /// Polls the jobs of the book view until one satisfies `matches`; returns it.
    async fn wait_job(
        &self,
        what: &str,
        deadline: Duration,
        matches: impl Fn(&ShownJob) -> bool,
    ) -> ShownJob {
        self.poll_script(what, deadline, JOBS_SCRIPT, |value| {
            let jobs = jobs_of(&value);
            match jobs.iter().find(|job| matches(job)) {
                Some(job) => Ok(job.clone()),
                None => Err(format!("(jobs shown: {jobs:#?})")),
            }
        })
        .await
    }

    /// Polls the rows of the jobs view until `done` holds; returns them.
    async fn wait_job_rows(&self, what: &str, done: impl Fn(&Vec<JobRow>) -> bool) -> Vec<JobRow> {
        let script = "return [...document.querySelectorAll('#all-jobs .job-row')].map((row) => ({\
                      id: row.dataset.jobId, status: row.dataset.status,\
                      resume: !!row.querySelector('button.resume-job')}))";
        self.poll_script(what, UI_DEADLINE, script, |value| {
            let rows: Vec<JobRow> = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|row| JobRow {
                    id: text(&row["id"]),
                    status: text(&row["status"]),
                    can_resume: row["resume"] == true,
                })
                .collect();
            if done(&rows) {
                Ok(rows)
            } else {
                Err(format!("(rows: {rows:?})"))
            }
        })
        .await
    }

    /// Waits until the jobs view's tab of `status` counts `count`.
    async fn wait_tab_count(&self, status: &str, count: u64) {
        self.wait_for(
            &format!("the {status} tab to count {count}"),
            JOB_DEADLINE,
            &format!("#status-tabs [data-status=\"{status}\"] .count"),
            &format!(
                "(e) => e.length === 1 && Number.parseInt(e[0].textContent.replace(/\\D/g, ''), 10) === {count}"
            ),
        )
        .await;
    }

    async fn select_type(&self, job_type: &str) {
        let select = self
            .client
            .find(Locator::Css("select#type-filter"))
            .await
            .unwrap();
        select.select_by_value(job_type).await.unwrap();
    }

    /// Clicks the element once it is there, enabled and visible; retries a click that
    /// something else intercepted (an animation, a re-render) until the deadline.
    async fn click(&self, css: &str) {
        self.wait_for(
            &format!("{css} to be clickable"),
            UI_DEADLINE,
            css,
            "(e) => e.length > 0 && !e[0].disabled && e[0].getClientRects().length > 0",
        )
        .await;
        let start = Instant::now();
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(error) => Err(error),
            };
            match clicked {
                Ok(()) => return,
                Err(error) if start.elapsed() >= UI_DEADLINE => {
                    panic!(
                        "{}",
                        self.failure(&format!("a click on {css}"), &error.to_string())
                            .await
                    );
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Whether `#id` is disabled, and the text of `#id-reason` then.
    async fn disabled_reason(&self, id: &str) -> Option<String> {
        let value = self
            .wait_for(
                &format!("#{id}"),
                UI_DEADLINE,
                &format!("#{id}"),
                &format!(
                    "(e) => e.length === 1 ? {{disabled: e[0].disabled, \
                     reason: (document.getElementById('{id}-reason') || {{}}).textContent || ''}} : null"
                ),
            )
            .await;
        (value["disabled"] == true).then(|| text(&value["reason"]))
    }

    /// Fills and submits the create form; waits for the book view. The book's id.
    async fn create_book_with_form(&self, title: &str) -> String {
        self.wait_for(
            "the create form",
            UI_DEADLINE,
            "form#create-book input[name=title]",
            "(e) => e.length === 1",
        )
        .await;
        let input = self
            .client
            .find(Locator::Css("form#create-book input[name=title]"))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(title).await.unwrap();
        self.click("form#create-book button[type=submit], form#create-book button:not([type])")
            .await;
        // The heading shows the id until the book is read, then its title.
        self.wait_for(
            "the new book's view with its title",
            UI_DEADLINE,
            "h1#book-title",
            &format!(
                "(e) => e.length === 1 && location.pathname.startsWith('/books/') && \
                 e[0].textContent === {}",
                json!(title)
            ),
        )
        .await;
        let title_shown = self
            .js(
                "return document.querySelector('h1#book-title').textContent",
                vec![],
            )
            .await;
        assert_eq!(title_shown, title, "the book view shows the title");
        let url = self.client.current_url().await.unwrap();
        let id = url.path().strip_prefix("/books/").unwrap().to_owned();
        assert!(!id.is_empty(), "{url}");
        id
    }

    /// Sets the "OCR after upload" checkbox by clicking it when it is not as wanted.
    async fn set_ocr_after_upload(&self, wanted: bool) {
        let checked = self
            .wait_for(
                "the OCR after upload checkbox",
                UI_DEADLINE,
                "#ocr-after-upload",
                "(e) => e.length === 1 ? {checked: e[0].checked} : null",
            )
            .await;
        if checked["checked"] != wanted {
            self.click("#ocr-after-upload").await;
        }
        let checked = self
            .js(
                "return document.querySelector('#ocr-after-upload').checked",
                vec![],
            )
            .await;
        assert_eq!(checked, wanted);
    }

    /// Fixture page files `page-NNN.png` (the twelve fixture pages over and over).
    fn page_files(&self, pages: std::ops::RangeInclusive<usize>) -> Vec<PathBuf> {
        let fixtures = ocr::testing::fixture_pages();
        pages
            .map(|page| {
                let path = self.files.path().join(format!("page-{page:03}.png"));
                if !path.exists() {
                    std::fs::write(&path, &fixtures[(page - 1) % fixtures.len()].png).unwrap();
                }
                path
            })
            .collect()
    }

    /// Chooses files in the file picker (`input#file-input`).
    async fn pick_files(&self, paths: &[PathBuf]) {
        self.wait_for(
            "the file input",
            UI_DEADLINE,
            "input#file-input[type=file][multiple]",
            "(e) => e.length === 1",
        )
        .await;
        let input = self
            .client
            .find(Locator::Css("input#file-input"))
            .await
            .unwrap();
        let paths: Vec<String> = paths
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        input.send_keys(&paths.join("\n")).await.unwrap();
        self.send_staged().await;
    }

    /// Clicks "Upload" under the list of files waiting to be sent.
    async fn send_staged(&self) {
        self.wait_for(
            "the upload button",
            UI_DEADLINE,
            "button#upload-send",
            "(e) => e.length === 1 && e[0].offsetParent !== null",
        )
        .await;
        self.click("button#upload-send").await;
    }

    /// The names of the files waiting to be sent, in page order.
    async fn staged_names(&self) -> Vec<String> {
        let names = self
            .js(
                "return [...document.querySelectorAll('#staged-files li.staged-file')]\
                   .map((row) => row.dataset.fileName);",
                vec![],
            )
            .await;
        names.as_array().unwrap().iter().map(text).collect()
    }

    /// Drags the waiting file `name` onto the upper half of the waiting file `onto` (so it
    /// goes before it), as a person's drag and drop fires its events.
    async fn drag_staged(&self, name: &str, onto: &str) {
        let moved = self
            .js(
                "const [name, onto] = arguments;\
                 const row = (file) => document.querySelector(`#staged-files li[data-file-name=\"${file}\"]`);\
                 const from = row(name);\
                 const to = row(onto);\
                 const transfer = new DataTransfer();\
                 const box = to.getBoundingClientRect();\
                 const at = {clientX: box.left + 20, clientY: box.top + 2};\
                 from.dispatchEvent(new DragEvent('dragstart', {bubbles: true, cancelable: true, dataTransfer: transfer}));\
                 const over = new DragEvent('dragover', {bubbles: true, cancelable: true, dataTransfer: transfer, ...at});\
                 to.dispatchEvent(over);\
                 const drop = new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer, ...at});\
                 to.dispatchEvent(drop);\
                 from.dispatchEvent(new DragEvent('dragend', {bubbles: true, dataTransfer: transfer}));\
                 return [over.defaultPrevented, drop.defaultPrevented];",
                vec![json!(name), json!(onto)],
            )
            .await;
        assert_eq!(
            moved,
            json!([true, true]),
            "the list takes the drag of {name}"
        );
    }

    /// Drops files on `#dropzone` (see [`Self::drop_to_stage`]) and sends them.
    async fn drop_files(&self, files: &[(&str, Vec<u8>)]) {
        self.drop_to_stage(files).await;
        self.send_staged().await;
    }

    /// Drops files on `#dropzone`: `dragenter`, `dragover` and `drop` with a
    /// `DataTransfer` of `File`s made in the page from the bytes. They wait in the list of
    /// files to upload.
    async fn drop_to_stage(&self, files: &[(&str, Vec<u8>)]) {
        self.wait_for(
            "the drop zone",
            UI_DEADLINE,
            "#dropzone",
            "(e) => e.length === 1",
        )
        .await;
        let files: Vec<Value> = files
            .iter()
            .map(|(name, bytes)| {
                json!({
                    "name": name,
                    "type": if name.ends_with(".png") { "image/png" } else { "text/plain" },
                    "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
                })
            })
            .collect();
        let dropped = self
            .js(
                "const [files] = arguments;\
                 const transfer = new DataTransfer();\
                 for (const file of files) {\
                   const binary = atob(file.base64);\
                   const bytes = new Uint8Array(binary.length);\
                   for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);\
                   transfer.items.add(new File([bytes], file.name, {type: file.type}));\
                 }\
                 const zone = document.querySelector('#dropzone');\
                 const box = zone.getBoundingClientRect();\
                 const at = {clientX: box.left + box.width / 2, clientY: box.top + box.height / 2};\
                 const results = [];\
                 for (const type of ['dragenter', 'dragover', 'drop']) {\
                   const event = new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer, ...at});\
                   zone.dispatchEvent(event);\
                   results.push(event.defaultPrevented);\
                 }\
                 return results;",
                vec![json!(files)],
            )
            .await;
        assert_eq!(
            dropped,
            json!([true, true, true]),
            "the drop zone takes dragenter, dragover and drop (preventDefault) so the browser does not open the files"
        );
    }

    /// Waits until each named upload shows its progress at the end.
    async fn wait_uploads_sent(&self, names: &[&str]) {
        for name in names {
            self.wait_for(
                &format!("the upload of {name} sent"),
                UI_DEADLINE,
                &format!("#uploads .upload[data-file-name=\"{name}\"] progress"),
                "(e) => e.length === 1 && e[0].max > 0 && e[0].value === e[0].max",
            )
            .await;
        }
    }

    /// Opens the token prompt's input, types the token and submits.
    async fn enter_token(&self, token: &str) {
        let input = self
            .client
            .find(Locator::Css("input#token-input"))
            .await
            .unwrap();
        input.send_keys(token).await.unwrap();
        self.click("button#token-submit").await;
    }

    /// Closes the page viewer as a person would: Escape, or its close button.
    async fn close_page_viewer(&self) {
        let focused = self.client.active_element().await.unwrap();
        focused.send_keys("\u{e00c}").await.unwrap();
        let start = Instant::now();
        loop {
            let open = self
                .js(
                    "return document.querySelector('dialog#page-viewer').open",
                    vec![],
                )
                .await;
            if open == false {
                return;
            }
            if start.elapsed() >= UI_DEADLINE {
                panic!(
                    "{}",
                    self.failure("the page viewer to close on Escape", "").await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn scroll_into_view(&self, css: &str) {
        self.js(
            "document.querySelector(arguments[0])?.scrollIntoView({block: 'center'}); return null",
            vec![json!(css)],
        )
        .await;
    }

    /// Runs animation frames in the page for `duration_ms` and returns the longest gap
    /// between two frames, how many gaps passed 50/100/200 ms, the long tasks seen, and
    /// (on the book view) the done tiles before and after and the tile status changes.
    async fn frames(&self, duration_ms: u64, scroll: bool) -> Value {
        self.js(FRAMES_SCRIPT, vec![json!(duration_ms), json!(scroll)])
            .await
    }

    /// Emulates a phone's screen (390 x 844 CSS pixels, mobile viewport and overlay
    /// scrollbars) through the DevTools protocol, or stops emulating.
    async fn emulate_phone(&self, on: bool) {
        let (cmd, params) = if on {
            (
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
            )
        } else {
            ("Emulation.clearDeviceMetricsOverride", json!({}))
        };
        let session = self.client.session_id().await.unwrap().unwrap();
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver.url
            ))
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{cmd}: {}",
            response.status()
        );
    }

    /// Marks the current document, to tell later whether a page load happened.
    async fn mark_document(&self) {
        self.js("window.folioTestMark = true; return null", vec![])
            .await;
    }

    async fn document_is_marked(&self) -> bool {
        self.js("return window.folioTestMark === true", vec![])
            .await
            == true
    }

    /// Saves a screenshot of the viewport as `NAME.png` in the screenshot folder.
    async fn screenshot(&self, name: &str) {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(dir.join(format!("{name}.png")), png).unwrap(),
            Err(error) => println!("no screenshot {name}: {error}"),
        }
    }
}

/// Animation frames for `duration` ms (scrolling the grid by 200 px every 30 frames when
/// `scroll`): the longest gap, gaps over 50/100/200 ms, long tasks, and what happened just
/// before each gap over 100 ms (tile status changes, finished fetches, a scroll).
const FRAMES_SCRIPT: &str = r#"
const [duration, scroll] = arguments;
const grid = document.querySelector('#pages');
const done = () => document.querySelectorAll('#pages .page-tile[data-ocr-status="done"]').length;
const longTasks = [];
let observer = null;
try {
  observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longTasks.push([Math.round(entry.startTime), Math.round(entry.duration)]);
  });
  observer.observe({type: 'longtask'});
} catch (error) { observer = null; }
let changes = 0;
let changesInFrame = 0;
const mutations = new MutationObserver((records) => { changes += records.length; changesInFrame += records.length; });
if (grid) mutations.observe(grid, {subtree: true, attributes: true, attributeFilter: ['data-ocr-status']});
const doneBefore = done();
const fetchedBefore = performance.getEntriesByType('resource').length;
let fetchedSeen = fetchedBefore;
const begun = performance.now();
return new Promise((resolve) => {
  let last = begun;
  let longestGap = 0;
  let frames = 0;
  let scrolled = false;
  const gapsOver = {50: 0, 100: 0, 200: 0};
  const slowFrames = [];
  const frame = (now) => {
    frames += 1;
    const gap = now - last;
    longestGap = Math.max(longestGap, gap);
    for (const limit of [50, 100, 200]) if (gap > limit) gapsOver[limit] += 1;
    const resources = performance.getEntriesByType('resource');
    if (gap > 100 && slowFrames.length < 12) {
      slowFrames.push({at: Math.round(now - begun), gap: Math.round(gap), status_changes: changesInFrame, scrolled,
        fetched: resources.slice(fetchedSeen).map((r) => new URL(r.name).pathname.replace(/^\/v1\/books\/[^/]+/, ''))});
    }
    fetchedSeen = resources.length;
    changesInFrame = 0;
    scrolled = false;
    last = now;
    if (grid && scroll && frames % 30 === 0) { window.scrollBy(0, 200); scrolled = true; }
    if (now - begun < duration) { requestAnimationFrame(frame); return; }
    mutations.disconnect();
    if (observer) observer.disconnect();
    resolve({frames, measured_ms: Math.round(now - begun), longest_gap: Math.round(longestGap),
      gaps_over: gapsOver, done_before: doneBefore, done_after: done(), status_changes: changes,
      resources_fetched: resources.length - fetchedBefore,
      long_tasks: longTasks.length, longest_task: longTasks.reduce((a, [, d]) => Math.max(a, d), 0),
      slow_frames: slowFrames});
  };
  requestAnimationFrame(frame);
});
"#;

/// How much wider than the viewport the page is, and the widest elements sticking out.
const OVERFLOW_SCRIPT: &str = "const width = window.innerWidth;\
     const out = [...document.querySelectorAll('#app *')]\
       .map((e) => ({e, right: e.getBoundingClientRect().right}))\
       .filter(({right}) => right > width + 0.5)\
       .sort((a, b) => b.right - a.right).slice(0, 5)\
       .map(({e, right}) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : ''} right=${Math.round(right)}`);\
     return {width, overflow: document.documentElement.scrollWidth - width, sticking_out: out};";

const TILES_SCRIPT: &str = "return [...document.querySelectorAll('#pages .page-tile')].map((tile) => ({\
     page: Number(tile.dataset.page), status: tile.dataset.ocrStatus || '',\
     label: tile.getAttribute('aria-label') || ''}))";

const JOBS_SCRIPT: &str = "return [...document.querySelectorAll('#book-jobs .job')].map((job) => {\
     const bar = job.querySelector('[role=progressbar]');\
     return {id: job.dataset.jobId, type: job.dataset.jobType, status: job.dataset.status,\
       now: bar ? bar.getAttribute('aria-valuenow') : null,\
       max: bar ? bar.getAttribute('aria-valuemax') : null,\
       cancel: !!job.querySelector('button.cancel-job'),\
       resume: !!job.querySelector('button.resume-job')};\
     })";

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn tiles_of(value: &Value) -> Vec<Tile> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|tile| Tile {
            page: tile["page"].as_u64().unwrap_or_default(),
            status: text(&tile["status"]),
            label: text(&tile["label"]),
        })
        .collect()
}

fn jobs_of(value: &Value) -> Vec<ShownJob> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| ShownJob {
            id: text(&job["id"]),
            kind: text(&job["type"]),
            status: text(&job["status"]),
            value_now: job["now"].as_str().map(str::to_owned),
            value_max: job["max"].as_str().map(str::to_owned),
            can_cancel: job["cancel"] == true,
            can_resume: job["resume"] == true,
        })
        .collect()
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("FOLIO_SCREENSHOT_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(
            || PathBuf::from("/var/tmp/folio-dashboard-screenshots"),
            PathBuf::from,
        )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a loopback port, in its own process group: dropping it kills the
/// group (the driver and the browsers it started).
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start(dir: &Path) -> Self {
        let path = chromedriver_path();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let port = free_port();
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}. {INSTALL_HINT}", path.display()));
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{}/status", driver.url)).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return driver;
            }
            if let Some(exit) = driver.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
                panic!("chromedriver exited ({exit}): {log}");
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "chromedriver did not answer on {} within {START_DEADLINE:?}",
                driver.url
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The driver from `FOLIO_CHROMEDRIVER`, else `chromedriver` on `PATH`; a failure with
/// the install hint when there is none.
fn chromedriver_path() -> PathBuf {
    if let Some(path) = std::env::var_os("FOLIO_CHROMEDRIVER").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FOLIO_CHROMEDRIVER={} is not a file: {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromedriver"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "no chromedriver: FOLIO_CHROMEDRIVER is unset and none is on PATH: {INSTALL_HINT}"
            )
        })
}

/// A request as the api logged it (tower-http's `finished processing request`, in the
/// `request` span with `http.path`).
#[derive(Debug, Clone)]
struct LoggedRequest {
    /// Line of the log.
    line: usize,
    path: String,
    status: u64,
}

/// `api --with-worker` on SQLite and `file://` in a temp dir, logging JSON (every request
/// with its path) to `api.log`; dropping it kills the process.
struct ApiProcess {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiProcess {
    async fn start(token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("api.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
        command
            .args([
                "--with-worker",
                "--log-format",
                "json",
                "--listen",
                "127.0.0.1:0",
                "--poll-interval",
                "200ms",
                "--database-url",
                &format!("sqlite://{}/folio.db", dir.path().display()),
                "--storage",
                &format!("file://{}/objects", dir.path().display()),
            ])
            .env("RUST_LOG", "info,tower_http=debug")
            .env_remove("FOLIO_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(token) = token {
            command.args(["--api-token", token]);
        }
        let child = command.spawn().unwrap();
        let mut api = Self {
            child,
            dir,
            base: String::new(),
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        };
        let start = Instant::now();
        let address = loop {
            let listening = api.log_lines().into_iter().find_map(|line| {
                (line["fields"]["message"] == "api listening")
                    .then(|| text(&line["fields"]["address"]))
            });
            if let Some(address) = listening {
                break address;
            }
            if let Some(exit) = api.child.try_wait().unwrap() {
                panic!(
                    "the api exited ({exit}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "the api did not log its address: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(POLL).await;
        };
        api.base = format!("http://{address}");
        loop {
            let healthy = api
                .http
                .get(format!("{}/healthz", api.base))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                return api;
            }
            assert!(start.elapsed() < START_DEADLINE, "the api is not healthy");
            tokio::time::sleep(POLL).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("api.log")
    }

    /// The object store's folder.
    fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Every JSON line of the log (a line not yet complete is skipped).
    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or(Value::Null))
            .collect()
    }

    /// The number of log lines now: requests logged later have `line >= mark`.
    fn log_mark(&self) -> usize {
        self.log_lines().len()
    }

    /// The requests logged from line `mark` on.
    fn requests_since(&self, mark: usize) -> Vec<LoggedRequest> {
        self.log_lines()
            .into_iter()
            .enumerate()
            .skip(mark)
            .filter(|(_, line)| line["fields"]["message"] == "finished processing request")
            .map(|(line_number, line)| LoggedRequest {
                line: line_number,
                path: text(&line["span"]["http.path"]),
                status: line["fields"]["status"].as_u64().unwrap_or_default(),
            })
            .collect()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let mut request = self.request(reqwest::Method::POST, path);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn create_book(&self, id: &str, title: &str) {
        self.post("/v1/books", json!({"id": id, "title": title}))
            .await;
    }

    /// Uploads `n_pages` fixture pages (cycled) in one request and waits for its ingest; the
    /// answer, with the ended ingest job as `ingest` and the ocr job (with `ocr`) as `job`.
    async fn upload_fixture_pages(&self, book: &str, n_pages: usize, ocr: bool) -> Value {
        let fixtures = ocr::testing::fixture_pages();
        let files: Vec<(String, &[u8])> = (1..=n_pages)
            .map(|page| {
                let png: &[u8] = &fixtures[(page - 1) % fixtures.len()].png;
                (format!("page-{page:03}.png"), png)
            })
            .collect();
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(name, png)| (name.as_str(), *png))
            .collect();
        let (content_type, body) = crate::support::multipart(&files);
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/books/{book}/pages?ocr={ocr}"),
            )
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let mut body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        // The pages are in once the upload's ingest completed; with `ocr`, `job` is then
        // the ocr job its chain started.
        let ingest = self
            .wait_job_status(body["job"]["id"].as_str().unwrap(), "completed")
            .await;
        body["job"] = if ocr {
            self.get(&format!("/v1/jobs/{}", text(&ingest["next_job_id"])))
                .await
        } else {
            Value::Null
        };
        body["ingest"] = ingest;
        body
    }

    /// Polls `check` until it gives a value.
    async fn eventually_value<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        crate::support::eventually(JOB_DEADLINE, what, check).await
    }

    /// Waits until book `id` has `count` pages; the file each came from, in page order.
    async fn page_sources(&self, id: &str, count: usize) -> Vec<String> {
        let path = format!("/v1/books/{id}");
        let manifest = self
            .eventually_value(&format!("{count} pages in book {id}"), || async {
                let manifest = self.get(&path).await;
                (manifest["pages"].as_array().map_or(0, Vec::len) == count).then_some(manifest)
            })
            .await;
        manifest["pages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|page| text(&page["source_name"]))
            .collect()
    }

    /// Polls the job until it has `status`; its JSON.
    async fn wait_job_status(&self, id: &str, status: &str) -> Value {
        let path = format!("/v1/jobs/{id}");
        self.eventually_value(&format!("job {id} {status}"), || async {
            let job = self.get(&path).await;
            (job["status"] == status).then_some(job)
        })
        .await
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
