//! The plans of the hot statements on a table without statistics (autovacuum may never
//! have run on it): each must reach its rows through the index it was written for.

use chrono::Utc;
use jobs_core::{ClaimParams, Finish, FinishOutcome, JobQuery, JobStatus, JobStore};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};

use crate::PgJobStore;
use crate::sql::{
    CLAIM, DELETE_FINISHED, FINISH, LIST, LIST_RESOURCE, RESCUE_PENDING_SCOPED,
    RESCUE_STALE_SCOPED, finish_statement, list_before,
};

/// Whether some node of `plan` finds rows by an index condition on `column`.
fn looks_up(plan: &serde_json::Value, column: &str) -> bool {
    match plan {
        serde_json::Value::Object(node) => {
            node.get("Index Cond")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|condition| condition.contains(column))
                || node.values().any(|value| looks_up(value, column))
        }
        serde_json::Value::Array(nodes) => nodes.iter().any(|node| looks_up(node, column)),
        _ => false,
    }
}

async fn explain<'q>(
    store: &PgJobStore,
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> String {
    let row = query.fetch_one(store.pool()).await.expect("explain");
    let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
    plan.0.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_finishes_and_scoped_rescues_reach_their_rows_without_scanning_the_queue() {
    let database = crate::testing::TestDatabase::create().await;
    let store = database.store().await;
    sqlx::query(
        "INSERT INTO folio_jobs (id, resource_key, job_type, status, payload, max_attempts,
                                 run_at, created_at)
         SELECT gen_random_uuid(), 'book-' || i, 'ocr', 'pending', '{}', 3, now(), now()
         FROM generate_series(1, 20000) AS i",
    )
    .execute(store.pool())
    .await
    .expect("enqueue");
    let now = Utc::now();
    let params = ClaimParams {
        worker_id: "w".into(),
        job_types: vec!["ocr".into()],
        limit: 200,
        now,
    };
    let claim = explain(
        &store,
        sqlx::query(AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {CLAIM}")))
            .bind(params.now)
            .bind(params.job_types.clone())
            .bind(i64::from(params.limit))
            .bind(params.worker_id.clone()),
    )
    .await;
    assert!(claim.contains("folio_jobs_claim"), "{claim}");
    assert!(claim.contains("Tid Scan"), "{claim}");

    let claimed = store.claim(&params).await.expect("claim");
    assert_eq!(claimed.len(), 200);
    let batch: Vec<Finish> = claimed
        .iter()
        .map(|job| Finish::new(job.id, job.lease, FinishOutcome::Completed))
        .collect();
    let finish = explain(
        &store,
        finish_statement(
            AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {FINISH}")),
            now,
            &batch,
        ),
    )
    .await;
    // By key, or on a table this small a scan of it; never every active job through the
    // one-active index, which the planner thinks holds a handful of running jobs.
    assert!(!finish.contains("folio_jobs_one_active"), "{finish}");

    // A rescue scoped to one resource looks its jobs up by key, not by scanning the
    // queue, in the generic plan these connections use.
    let mut connection = store.pool().acquire().await.expect("a connection");
    for (name, sql, types, arguments) in [
        (
            "stale",
            RESCUE_STALE_SCOPED,
            "timestamptz, timestamptz, jsonb, jsonb, text, text",
            "now(), now(), '{}', '{}', 'book-1', 'ocr'",
        ),
        (
            "pending",
            RESCUE_PENDING_SCOPED,
            "timestamptz, timestamptz, jsonb, text, text",
            "now(), now(), '{}', 'book-1', 'ocr'",
        ),
    ] {
        sqlx::raw_sql(AssertSqlSafe(format!("PREPARE {name} ({types}) AS {sql}")))
            .execute(&mut *connection)
            .await
            .expect("prepare");
        let row = sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN (FORMAT JSON) EXECUTE {name} ({arguments})"
        )))
        .fetch_one(&mut *connection)
        .await
        .expect("explain");
        let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
        assert!(looks_up(&plan.0, "job_type ="), "{name}: {}", plan.0);
    }
    drop(connection);
    database.drop().await;
}

/// The most rows one node of an `EXPLAIN ANALYZE` plan handled: those it returned and
/// those it read and threw away.
fn most_rows_in_one_node(plan: &serde_json::Value) -> u64 {
    match plan {
        serde_json::Value::Object(node) => {
            let count = |key: &str| node.get(key).and_then(serde_json::Value::as_u64);
            let here = count("Actual Rows").unwrap_or(0) * count("Actual Loops").unwrap_or(1)
                + count("Rows Removed by Filter").unwrap_or(0)
                + count("Rows Removed by Index Recheck").unwrap_or(0);
            node.values()
                .map(most_rows_in_one_node)
                .fold(here, u64::max)
        }
        serde_json::Value::Array(nodes) => {
            nodes.iter().map(most_rows_in_one_node).max().unwrap_or(0)
        }
        _ => 0,
    }
}

/// A Postgres array literal of `items`, for an `EXECUTE` argument.
fn array(items: &[&str]) -> String {
    format!("'{{{}}}'", items.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_read_each_status_from_its_index_and_never_scan_the_table() {
    let database = crate::testing::TestDatabase::create().await;
    let store = database.store().await;
    // 20,000 jobs in id order over 2,000 books: the newest 100 active, one in 200 failed,
    // one in 200 cancelled, the rest completed.
    sqlx::query(concat!(
        "INSERT INTO folio_jobs (id, resource_key, job_type, status, payload, max_attempts,
                                 attempt, error, worker_id, started_at, heartbeat_at,
                                 run_at, created_at, finished_at)
         SELECT (lpad(to_hex(i), 12, '0') || '70008000' || lpad(to_hex(i), 12, '0'))::uuid,
                'book-' || (i % 2000), (ARRAY['ocr', 'guidelines', 'finalize'])[1 + i % 3],
                status, '{}', 3, CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
                CASE WHEN status = 'failed' THEN '{}'::jsonb END,
                CASE WHEN status <> 'pending' THEN 'w' END,
                CASE WHEN status <> 'pending' THEN now() END,
                CASE WHEN status <> 'pending' THEN now() END,
                now(), now(),
                CASE WHEN status NOT IN ",
        jobs_core::active_statuses_sql!(),
        " THEN now() END
         FROM (SELECT i, CASE WHEN i > 19900 THEN (ARRAY[",
        jobs_core::active_status_names_sql!(),
        "])[1 + i % 2]
                              WHEN i % 200 = 0 THEN 'failed'
                              WHEN i % 200 = 1 THEN 'cancelled'
                              ELSE 'completed' END AS status
               FROM generate_series(1, 20000) AS i) AS jobs"
    ))
    .execute(store.pool())
    .await
    .expect("20,000 jobs");
    let mut connection = store.pool().acquire().await.expect("a connection");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PREPARE list (text[], text[], uuid, text, int8) AS {LIST};
         PREPARE list_resource (text, text, text[], uuid, int8) AS {LIST_RESOURCE};"
    )))
    .execute(&mut *connection)
    .await
    .expect("prepare");
    let top = format!("'{}'", list_before(None));
    let middle = "'00000000-3a98-7000-8000-000000003a98'"; // the 15,000th job
    let cases: [(&[JobStatus], Option<&str>, &str, &str); 8] = [
        (&[], None, &top, "folio_jobs_pkey"),
        (&[], Some("'finalize'"), middle, "folio_jobs_pkey"),
        (&[JobStatus::Completed], None, middle, "folio_jobs_pkey"),
        (&[JobStatus::Failed], None, &top, "folio_jobs_failed"),
        (
            &[JobStatus::Cancelled],
            Some("'ocr'"),
            middle,
            "folio_jobs_cancelled",
        ),
        (&[JobStatus::Running], None, &top, "folio_jobs_one_active"),
        (&JobStatus::ACTIVE, None, &top, "folio_jobs_one_active"),
        (
            &[JobStatus::Failed, JobStatus::Completed],
            None,
            middle,
            "folio_jobs_failed",
        ),
    ];
    for (statuses, job_type, before, index) in cases {
        let (scanned, indexed) = JobQuery::listing_branches(statuses);
        let arguments = format!(
            "{}, {}, {before}, {}, 50",
            array(&scanned),
            array(&indexed),
            job_type.unwrap_or("NULL")
        );
        let row = sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE list ({arguments})"
        )))
        .fetch_one(&mut *connection)
        .await
        .expect("explain");
        let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
        let text = plan.0.to_string();
        assert!(text.contains(index), "{statuses:?}: {text}");
        assert!(
            !text.contains("Seq Scan") && !text.contains("folio_jobs_ended_by_resource"),
            "{statuses:?}: {text}"
        );
        let most = most_rows_in_one_node(&plan.0);
        assert!(
            most <= 500,
            "{statuses:?} read {most} rows in one node: {text}"
        );
    }

    // A resource's jobs come from its own entries in the one-active and ended indexes.
    let every_status = array(&JobStatus::ALL.map(JobStatus::as_str));
    let row = sqlx::query(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE list_resource \
         ('book-1', NULL, {every_status}, {top}, 50)"
    )))
    .fetch_one(&mut *connection)
    .await
    .expect("explain");
    let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
    assert!(looks_up(&plan.0, "resource_key ="), "{}", plan.0);
    assert!(most_rows_in_one_node(&plan.0) <= 50, "{}", plan.0);
    drop(connection);
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_read_a_batch_and_the_links_into_it_from_indexes() {
    let database = crate::testing::TestDatabase::create().await;
    let store = database.store().await;
    // 20,000 jobs in id order, job i ending i minutes after a start 60 days ago: the
    // newest 100 active, the rest finished. Jobs link to the one before them as chains do
    // (two of three `previous_job_id`, the finished one before it `next_job_id`), and one
    // in 50 was resumed from the job seven before it.
    let mut connection = store.pool().acquire().await.expect("a connection");
    sqlx::raw_sql(concat!(
        "CREATE FUNCTION pg_temp.job(i int) RETURNS uuid LANGUAGE sql IMMUTABLE
         AS $$ SELECT (lpad(to_hex(i), 12, '0') || '70008000' || lpad(to_hex(i), 12, '0'))::uuid $$;
         INSERT INTO folio_jobs (id, resource_key, job_type, status, payload, max_attempts,
                                 attempt, error, worker_id, started_at, heartbeat_at,
                                 run_at, created_at, finished_at,
                                 previous_job_id, next_job_id, resumed_from)
         SELECT pg_temp.job(i), 'book-' || i, 'ocr', status, '{}', 3,
                CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
                CASE WHEN status = 'failed' THEN '{}'::jsonb END,
                CASE WHEN status <> 'pending' THEN 'w' END,
                CASE WHEN status <> 'pending' THEN now() END,
                CASE WHEN status <> 'pending' THEN now() END,
                now(), now(),
                CASE WHEN status NOT IN ",
        jobs_core::active_statuses_sql!(),
        "
                     THEN now() - interval '60 days' + i * interval '1 minute' END,
                CASE WHEN i % 3 <> 1 THEN pg_temp.job(i - 1) END,
                CASE WHEN i % 3 <> 0 AND status NOT IN ",
        jobs_core::active_statuses_sql!(),
        "
                     THEN pg_temp.job(i + 1) END,
                CASE WHEN i % 50 = 0 THEN pg_temp.job(i - 7) END
         FROM (SELECT i, CASE WHEN i > 19900 THEN (ARRAY[",
        jobs_core::active_status_names_sql!(),
        "])[1 + i % 2]
                              WHEN i % 200 = 0 THEN 'failed'
                              WHEN i % 200 = 1 THEN 'cancelled'
                              ELSE 'completed' END AS status
               FROM generate_series(1, 20000) AS i) AS jobs"
    ))
    .execute(&mut *connection)
    .await
    .expect("20,000 linked jobs");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PREPARE retention (timestamptz, int8) AS {DELETE_FINISHED}"
    )))
    .execute(&mut *connection)
    .await
    .expect("prepare");
    // A batch reads its rows from the finished-jobs index and deletes them by key; a
    // round with nothing old enough reads no row.
    for (before, deleted) in [("now() - interval '90 days'", 0), ("now()", 500)] {
        let row = sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE retention ({before}, 500)"
        )))
        .fetch_one(&mut *connection)
        .await
        .expect("explain");
        let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
        let text = plan.0.to_string();
        assert!(looks_up(&plan.0, "finished_at <"), "{text}");
        assert!(text.contains("folio_jobs_finished"), "{text}");
        assert!(!text.contains("Seq Scan"), "{text}");
        assert!(most_rows_in_one_node(&plan.0) <= deleted, "{text}");
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM folio_jobs")
        .fetch_one(&mut *connection)
        .await
        .expect("count");
    assert_eq!(left, 19_500);
    let dangling: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM folio_jobs j
         WHERE EXISTS (SELECT 1 FROM unnest(ARRAY[j.previous_job_id, j.next_job_id,
                                                  j.resumed_from]) AS link (id)
                       WHERE link.id IS NOT NULL
                         AND NOT EXISTS (SELECT 1 FROM folio_jobs k WHERE k.id = link.id))",
    )
    .fetch_one(&mut *connection)
    .await
    .expect("links");
    assert_eq!(dangling, 0);
    let cleared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM folio_jobs WHERE id = pg_temp.job(501) AND previous_job_id IS NULL",
    )
    .fetch_one(&mut *connection)
    .await
    .expect("the job after the batch");
    assert_eq!(
        cleared, 1,
        "the first job left no longer names the last one deleted"
    );

    // After a delete, its trigger clears the links into the deleted jobs with these
    // statements (`migrations/0010_link_triggers.sql`): each must find them through its
    // column's partial index, not a scan of the table.
    for column in ["resumed_from", "previous_job_id", "next_job_id"] {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "PREPARE unlink_{column} (uuid[]) AS UPDATE folio_jobs SET {column} = NULL \
             WHERE {column} = ANY ($1)"
        )))
        .execute(&mut *connection)
        .await
        .expect("prepare");
        let row = sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN (FORMAT JSON) EXECUTE unlink_{column} \
             (ARRAY[pg_temp.job(9000), pg_temp.job(9001)])"
        )))
        .fetch_one(&mut *connection)
        .await
        .expect("explain");
        let plan: Json<serde_json::Value> = row.try_get(0).expect("a JSON plan");
        let text = plan.0.to_string();
        assert!(text.contains(&format!("folio_jobs_{column}")), "{text}");
        assert!(!text.contains("Seq Scan"), "{column}: {text}");
    }
    drop(connection);
    database.drop().await;
}
