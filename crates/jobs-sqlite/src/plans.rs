//! The query plans of the listings: each status comes from the index written for it,
//! and no listing scans the table.

use jobs_core::{JobQuery, JobStatus};
use sqlx::Row;

use crate::SqliteJobStore;
use crate::rows::json_text;
use crate::sql::*;

/// The `detail` lines of `EXPLAIN QUERY PLAN` for `sql` with `arguments` bound.
async fn plan(store: &SqliteJobStore, sql: &str, arguments: &[Option<&str>]) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(explain));
    for argument in arguments {
        query = query.bind(*argument);
    }
    let rows = query.fetch_all(store.pool()).await.expect("explain");
    rows.iter()
        .map(|row| row.try_get::<String, _>("detail").expect("a detail"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn listings_read_each_status_from_its_index_and_never_scan_the_table() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteJobStore::connect(&url).await.expect("open");
    let (scanned, indexed) = JobQuery::listing_branches(&JobStatus::ALL);
    let (scanned, indexed) = (json_text(&scanned), json_text(&indexed));
    let every_book = plan(
        &store,
        LIST,
        &[
            Some(&scanned),
            Some(&indexed),
            Some(ID_ABOVE_ALL),
            None,
            Some("50"),
        ],
    )
    .await;
    for index in [
        "SEARCH folio_jobs USING INDEX sqlite_autoindex_folio_jobs_1 (id<?)",
        "SCAN folio_jobs USING INDEX folio_jobs_one_active",
        "SEARCH folio_jobs USING INDEX folio_jobs_failed (id<?)",
        "SEARCH folio_jobs USING INDEX folio_jobs_cancelled (id<?)",
    ] {
        assert!(every_book.contains(index), "{index}:\n{every_book}");
    }
    let statuses = json_text(&JobQuery::wanted_statuses(&[]));
    let one_book = plan(
        &store,
        LIST_RESOURCE,
        &[
            Some("book-1"),
            None,
            Some(&statuses),
            Some(ID_ABOVE_ALL),
            Some("50"),
        ],
    )
    .await;
    assert!(
        one_book.contains("USING INDEX folio_jobs_by_resource (resource_key=?)"),
        "{one_book}"
    );
    for listing in [every_book, one_book] {
        assert!(
            !listing.lines().any(|line| line.trim() == "SCAN folio_jobs"),
            "{listing}"
        );
    }
}

/// A bulk insert's busy jobs find their active job through the one-active index.
#[tokio::test]
async fn bulk_inserts_find_the_active_jobs_they_met_through_the_one_active_index() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteJobStore::connect(&url).await.expect("open");
    let busy = plan(&store, SELECT_ACTIVE_MANY, &[Some(r#"[["book-1","ocr"]]"#)]).await;
    assert!(
        busy.contains(
            "SEARCH folio_jobs USING INDEX folio_jobs_one_active (resource_key=? AND job_type=?)"
        ),
        "{busy}"
    );
    assert!(
        !busy.lines().any(|line| line.trim() == "SCAN folio_jobs"),
        "{busy}"
    );
}

/// A batch of finishes reads each job by its primary key, never the whole table.
#[tokio::test]
async fn finishes_find_their_jobs_by_primary_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteJobStore::connect(&url).await.expect("open");
    let batch =
        r#"[{"id":"a","lease":1,"kind":"completed"},{"id":"b","lease":1,"kind":"completed"}]"#;
    let finish = plan(&store, FINISH, &[Some(batch), Some("1")]).await;
    assert!(
        finish.contains("SEARCH folio_jobs USING INDEX sqlite_autoindex_folio_jobs_1 (id=?)"),
        "{finish}"
    );
    assert!(
        !finish.lines().any(|line| line.trim() == "SCAN folio_jobs"),
        "{finish}"
    );
}

/// Retention reads a batch from the finished-jobs index, and finds the jobs that name it
/// (to clear their links, and in the foreign keys' check as it deletes) through the
/// partial index of each link column: no statement scans the table.
#[tokio::test]
async fn retention_reads_a_batch_and_the_links_into_it_from_indexes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteJobStore::connect(&url).await.expect("open");
    let batch = Some(r#"["00000000-0000-7000-8000-000000000001"]"#);
    let cases = [
        (
            SELECT_FINISHED,
            vec![Some("0"), Some("500")],
            vec!["SEARCH folio_jobs USING INDEX folio_jobs_finished (finished_at<?)"],
        ),
        (
            UNLINK_RESUMED_FROM,
            vec![batch],
            vec!["folio_jobs_resumed_from (resumed_from=?)"],
        ),
        (
            UNLINK_PREVIOUS,
            vec![batch],
            vec!["folio_jobs_previous_job_id (previous_job_id=?)"],
        ),
        (
            UNLINK_NEXT,
            vec![batch],
            vec!["folio_jobs_next_job_id (next_job_id=?)"],
        ),
        (
            DELETE_JOBS,
            vec![batch],
            vec![
                "sqlite_autoindex_folio_jobs_1 (id=?)",
                "folio_jobs_resumed_from (resumed_from=?)",
                "folio_jobs_previous_job_id (previous_job_id=?)",
                "folio_jobs_next_job_id (next_job_id=?)",
            ],
        ),
    ];
    for (sql, arguments, indexes) in cases {
        let plan = plan(&store, sql, &arguments).await;
        for index in indexes {
            assert!(plan.contains(index), "{index}:\n{plan}");
        }
        assert!(
            !plan.lines().any(|line| line.trim() == "SCAN folio_jobs"),
            "{plan}"
        );
    }
}
