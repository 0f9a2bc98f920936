//! The conformance suite every [`JobStore`] implementation runs.
//!
//! Each case is a `pub async fn(Arc<dyn JobStore>)` that gets a fresh, migrated, empty store.
//! A store crate runs the whole suite with a few lines:
//!
//! ```text
//! macro_rules! conformance_case {
//!     ($name:ident) => {
//!         #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//!         async fn $name() {
//!             let store = fresh_store().await; // a new database for this case
//!             jobs_core::conformance::$name(store).await;
//!         }
//!     };
//! }
//! jobs_core::conformance_cases!(conformance_case);
//! ```
//!
//! A change to any store adds a case here, not a single-store test.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::{
    ClaimParams, Clock, Finish, FinishOutcome, HeartbeatAck, HeartbeatParams, Job, JobStore,
    LockService, ManualClock, Progress, RecoveryPolicy, RescueReport, StoreError,
};

mod acquire;
mod bulk;
mod chain;
mod claim;
mod errors;
mod fencing;
mod finish;
mod heartbeat;
mod keys;
mod list;
mod model;
mod registry;
mod rescue;
mod resume;
mod retention;
mod runtime;
mod schedule;
mod trace;
mod transaction;
mod typed;

pub use acquire::*;
pub use bulk::*;
pub use chain::*;
pub use claim::*;
pub use errors::*;
pub use fencing::*;
pub use finish::*;
pub use heartbeat::*;
pub use keys::*;
pub use list::*;
pub use model::*;
pub use registry::*;
pub use rescue::*;
pub use resume::*;
pub use retention::*;
pub use runtime::*;
pub use schedule::*;
pub use trace::*;
pub use transaction::*;
pub use typed::*;

/// Calls `$callback!(case_name);` for every case of the suite.
#[macro_export]
macro_rules! conformance_cases {
    ($callback:ident) => {
        // acquire and Busy
        $callback!(acquire_creates_a_pending_job_with_its_payload);
        $callback!(acquire_answers_busy_with_the_active_job);
        $callback!(acquire_allows_other_job_types_and_resources);
        $callback!(acquire_creates_a_new_job_once_the_previous_one_ended);
        $callback!(concurrent_acquires_for_one_key_create_exactly_one_job);
        $callback!(acquire_rescues_a_stale_running_job_before_answering_busy);
        $callback!(acquire_fails_an_expired_pending_job_before_answering_busy);
        // bulk enqueue
        $callback!(acquire_many_answers_created_or_busy_per_item_in_order);
        $callback!(acquire_many_gives_duplicates_in_a_batch_the_first_ones_job);
        $callback!(acquire_many_answers_busy_with_an_already_active_job);
        $callback!(acquire_many_of_an_empty_batch_does_nothing);
        $callback!(acquire_many_creates_a_batch_of_5000);
        $callback!(concurrent_acquire_many_batches_never_create_two_active_jobs);
        $callback!(acquire_many_racing_single_acquires_never_create_two_active_jobs);
        $callback!(acquire_many_rescues_stuck_active_jobs_before_answering_busy);
        $callback!(enqueue_many_stores_typed_jobs_in_order);
        // claim
        $callback!(claim_takes_due_jobs_oldest_first);
        $callback!(claim_skips_jobs_that_are_not_due_yet);
        $callback!(claim_takes_only_the_requested_job_types);
        $callback!(claim_sets_running_fields_and_a_new_lease);
        $callback!(claim_changes_the_lease_on_every_claim);
        $callback!(concurrent_claimers_take_every_job_exactly_once);
        // heartbeat, progress, checkpoint
        $callback!(heartbeat_renews_heartbeat_at);
        $callback!(heartbeat_writes_progress_and_checkpoint_together);
        $callback!(heartbeat_reports_a_cancel_request);
        $callback!(checkpoint_survives_a_requeue_and_the_next_claim);
        $callback!(finish_flushes_the_last_progress_and_checkpoint);
        // fencing
        $callback!(stale_lease_gets_lease_lost_for_every_worker_write_and_changes_nothing);
        $callback!(old_lease_is_lost_as_soon_as_the_job_is_requeued);
        $callback!(batch_finish_fences_each_job_on_its_own);
        // complete, fail, cancel, requeue
        $callback!(complete_marks_the_job_completed_and_finished);
        $callback!(fail_keeps_the_original_error);
        $callback!(requeue_with_backoff_consumes_an_attempt_and_keeps_the_checkpoint);
        $callback!(interrupted_requeue_gives_the_attempt_back);
        $callback!(requeue_of_a_job_with_a_cancel_request_cancels_it);
        $callback!(cancel_of_a_pending_job_cancels_it_at_once);
        $callback!(cancel_of_a_running_job_flags_it_until_the_runner_acknowledges);
        $callback!(cancel_of_a_terminal_job_is_an_illegal_transition);
        $callback!(terminal_jobs_are_absorbing);
        // stale recovery
        $callback!(rescue_requeues_a_stale_job_with_attempts_left);
        $callback!(rescue_fails_a_stale_job_with_attempts_used_as_lease_expired);
        $callback!(rescue_leaves_fresh_heartbeats_alone);
        $callback!(rescue_cancels_a_stale_job_whose_cancel_was_requested);
        $callback!(pending_timeout_fails_a_job_never_claimed);
        $callback!(pending_timeout_counts_from_when_the_job_became_due);
        $callback!(scoped_rescue_touches_only_its_resource);
        // resume
        $callback!(resume_copies_payload_and_checkpoint_and_links_the_old_job);
        $callback!(resume_refuses_completed_and_active_jobs);
        $callback!(resume_answers_busy_when_another_job_is_active);
        // chains
        $callback!(chained_completion_inserts_the_next_job_linked_both_ways);
        $callback!(chain_step_of_the_completed_jobs_own_type_is_inserted);
        $callback!(chained_completion_links_to_the_active_job_of_the_next_type);
        $callback!(failure_and_cancel_stop_the_chain);
        $callback!(resume_of_a_chained_job_carries_its_chain);
        $callback!(refused_next_job_rolls_the_completion_back);
        // trace parents
        $callback!(trace_parent_is_stored_and_an_invalid_one_dropped);
        $callback!(chained_and_resumed_jobs_inherit_the_trace_parent);
        // retention
        $callback!(retention_deletes_only_finished_jobs_older_than_the_cutoff);
        $callback!(retention_deletes_at_most_limit_jobs_oldest_first);
        $callback!(retention_clears_links_to_deleted_jobs);
        $callback!(retention_deletes_chains_whose_jobs_name_each_other);
        $callback!(concurrent_retention_deletes_take_each_job_once);
        $callback!(runtime_deletes_finished_jobs_past_the_retention);
        $callback!(compact_changes_no_job);
        $callback!(runtime_compacts_the_store_when_its_queue_runs_dry_after_compact_after_claims);
        // errors, listing, schema
        $callback!(unknown_job_is_not_found_for_every_operation);
        $callback!(list_returns_newest_first_with_filters);
        $callback!(job_fields_round_trip_exactly);
        $callback!(active_index_matches_job_status_active);
        $callback!(a_link_to_a_job_that_does_not_exist_is_refused);
        // listing every resource: status and type filters, keyset pages, limit
        $callback!(list_of_every_resource_is_newest_first);
        $callback!(list_filters_by_one_status_several_statuses_and_type);
        $callback!(list_pages_with_before_return_every_job_exactly_once);
        $callback!(list_returns_at_most_limit_jobs_the_newest_ones);
        // worker registry and job signal
        $callback!(workers_register_touch_and_leave);
        $callback!(job_signal_fires_on_insert_and_requeue);
        // the worker runtime on the store
        $callback!(runtime_completes_a_job_with_progress_and_checkpoint);
        $callback!(runtime_retries_a_retryable_error_then_succeeds);
        $callback!(runtime_fails_a_terminal_error_at_once_with_its_message);
        $callback!(runtime_fails_a_job_whose_error_message_has_nul_and_no_end);
        $callback!(runtime_turns_a_panic_into_a_failed_attempt);
        $callback!(runtime_cancels_a_running_job_on_request);
        $callback!(runtime_resume_continues_after_the_checkpoint);
        $callback!(runtime_hands_jobs_back_on_shutdown_without_using_an_attempt);
        $callback!(runtime_stops_a_handler_whose_lease_was_lost);
        $callback!(runtime_drops_a_handler_that_ignores_its_lost_lease);
        $callback!(runtime_heartbeats_while_a_handler_holds_its_thread);
        $callback!(runtime_runs_a_chain_job_after_job);
        $callback!(runtime_retries_a_completion_whose_next_job_is_refused);
        // periodic jobs
        $callback!(schedule_enqueues_each_tick_once_across_three_workers);
        $callback!(schedule_catch_up_runs_the_latest_missed_tick_once);
        $callback!(schedule_skip_drops_ticks_older_than_the_grace);
        $callback!(schedule_tick_waits_for_the_previous_run_to_end);
        // typed jobs
        $callback!(typed_job_resumes_from_its_typed_checkpoint);
        $callback!(typed_job_with_a_payload_that_does_not_decode_fails_at_once);
        // request keys
        $callback!(a_new_key_is_claimed_and_a_repeat_while_it_runs_is_told_so);
        $callback!(an_answered_key_gives_its_answer_to_a_repeat_of_the_same_request);
        $callback!(a_used_key_with_another_body_or_path_is_a_mismatch);
        $callback!(a_released_key_runs_again_and_only_its_claim_releases_or_answers_it);
        $callback!(a_stale_claim_is_taken_over_and_can_no_longer_answer);
        $callback!(concurrent_claims_of_one_key_give_it_to_exactly_one);
        $callback!(keys_claimed_before_a_time_are_deleted_and_later_ones_kept);
        // model
        $callback!(random_operations_match_the_reference_model);
    };
}

/// Calls `$callback!(case_name);` for every case of enqueueing in a caller's transaction:
/// each is a `pub async fn(Arc<dyn JobStore>, Arc<dyn Transactions>)`, the second argument
/// opening transactions on the store's database (see [`Transactions`]).
#[macro_export]
macro_rules! conformance_transaction_cases {
    ($callback:ident) => {
        $callback!(acquire_in_a_transaction_exists_once_it_commits);
        $callback!(acquire_in_a_transaction_rolled_back_leaves_nothing);
        $callback!(acquire_in_a_transaction_answers_busy_as_outside_it);
        $callback!(acquire_in_a_transaction_races_a_plain_acquire_to_one_job);
    };
}

/// The job type the suite uses unless a case needs several.
pub const TEST_TYPE: &str = "conformance.test";
/// The worker id the suite claims with.
pub const WORKER: &str = "conformance-worker";

/// A store with a manual clock and a lock service over both.
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn JobStore>,
    /// The clock every write takes its time from.
    pub clock: Arc<ManualClock>,
    /// A lock service with the default policy (stale after 30 s, pending timeout 10 min).
    pub lock: LockService,
}

impl Fixture {
    /// A fixture over a fresh store.
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        let start: DateTime<Utc> = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let lock = LockService::new(store.clone(), clock.clone(), RecoveryPolicy::default());
        Self { store, clock, lock }
    }

    /// The clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Moves the clock past `stale_after`.
    pub fn advance_past_stale(&self) {
        self.advance(self.lock.policy().stale_after + Duration::from_secs(1));
    }

    /// Acquires a job of [`TEST_TYPE`] for `key`, which must be free.
    pub async fn create(&self, key: &str) -> Job {
        self.create_typed(key, TEST_TYPE).await
    }

    /// Acquires a job of `job_type` for `key`, which must be free.
    pub async fn create_typed(&self, key: &str, job_type: &str) -> Job {
        let payload = serde_json::json!({ "key": key });
        crate::testing::enqueue_new(&self.lock, key, job_type, payload).await
    }

    /// Claims up to `limit` jobs of [`TEST_TYPE`].
    pub async fn claim(&self, limit: u32) -> Vec<Job> {
        self.store
            .claim(&ClaimParams {
                worker_id: WORKER.to_owned(),
                job_types: vec![TEST_TYPE.to_owned()],
                limit,
                now: self.now(),
            })
            .await
            .unwrap()
    }

    /// Claims exactly one job of [`TEST_TYPE`].
    pub async fn claim_one(&self) -> Job {
        let mut claimed = self.claim(1).await;
        assert_eq!(claimed.len(), 1, "expected one claimed job: {claimed:?}");
        claimed.pop().unwrap()
    }

    /// Creates and claims a job for `key`.
    pub async fn running(&self, key: &str) -> Job {
        let created = self.create(key).await;
        let claimed = self.claim_one().await;
        assert_eq!(claimed.id, created.id);
        claimed
    }

    /// Reads a job back.
    pub async fn get(&self, job: &Job) -> Job {
        self.store.get(job.id).await.unwrap()
    }

    /// A heartbeat under `job`'s lease.
    pub async fn heartbeat(
        &self,
        job: &Job,
        progress: Option<Progress>,
        checkpoint: Option<serde_json::Value>,
    ) -> Result<HeartbeatAck, StoreError> {
        self.store
            .heartbeat(&HeartbeatParams {
                id: job.id,
                lease: job.lease,
                now: self.now(),
                progress,
                checkpoint,
            })
            .await
    }

    /// Ends `job`'s claim under its lease, and reads it back.
    pub async fn finish(&self, job: &Job, outcome: FinishOutcome) -> Result<Job, StoreError> {
        let finish = Finish::new(job.id, job.lease, outcome);
        let status = self.store.finish_one(self.now(), finish).await?;
        let ended = self.get(job).await;
        assert_eq!(ended.status, status, "finish reports the status it wrote");
        Ok(ended)
    }

    /// Requeues `job` (as a retryable error would) to run after `delay`.
    pub async fn requeue(&self, job: &Job, delay: Duration) -> Job {
        let outcome = FinishOutcome::Requeue {
            error: crate::JobError::new("flaky", "try again", true),
            run_at: self.now() + chrono::Duration::from_std(delay).unwrap(),
            consume_attempt: true,
        };
        self.finish(job, outcome).await.unwrap()
    }

    /// Runs the rescue over every job.
    pub async fn rescue_all(&self) -> RescueReport {
        self.lock.rescue().await.unwrap()
    }
}

/// Panics unless `result` is `LeaseLost` naming `status`.
#[track_caller]
pub fn assert_lease_lost<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    status: crate::JobStatus,
) {
    match result {
        Err(StoreError::LeaseLost { status: seen, .. }) => assert_eq!(seen, status),
        other => panic!("expected LeaseLost ({status}), got {other:?}"),
    }
}

/// The 1-based lines of `source` that write the active set by hand: a quoted active status
/// followed, across whitespace, an optional `::type` cast and one comma, by another one, as
/// in `IN ('pending', 'running')` or `ARRAY['running','pending']`. Store queries take that
/// list from [`active_statuses_sql!`](crate::active_statuses_sql) instead.
pub fn hand_written_active_sets(source: &str) -> Vec<usize> {
    let quoted: Vec<String> = crate::JobStatus::ACTIVE
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    // The rest of `text` after a quoted active status at its start, if there is one.
    let active_literal = |text: &str| -> Option<(usize, usize)> {
        quoted.iter().enumerate().find_map(|(which, literal)| {
            text.starts_with(literal.as_str())
                .then_some((which, literal.len()))
        })
    };
    let mut lines = Vec::new();
    for (at, _) in source.match_indices('\'') {
        let Some((first, length)) = active_literal(&source[at..]) else {
            continue;
        };
        let mut rest = &source[at + length..];
        if let Some(cast) = rest.strip_prefix("::") {
            rest = cast.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_' || c == ' ');
        }
        let Some(rest) = rest.trim_start().strip_prefix(',') else {
            continue;
        };
        if active_literal(rest.trim_start()).is_some_and(|(second, _)| second != first) {
            lines.push(source[..at].matches('\n').count() + 1);
        }
    }
    lines.dedup();
    lines
}

/// Panics naming every place in the Rust sources under `dir` (a store crate's `src`) that
/// writes the active set by hand (see [`hand_written_active_sets`]).
#[track_caller]
pub fn assert_no_hand_written_active_set(dir: &std::path::Path) {
    fn rust_files(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, files);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    assert!(!files.is_empty(), "no Rust sources under {}", dir.display());
    let found: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let source = std::fs::read_to_string(file).expect("a readable source");
            hand_written_active_sets(&source)
                .into_iter()
                .map(move |line| format!("{}:{line}", file.display()))
        })
        .collect();
    assert!(
        found.is_empty(),
        "SQL that spells the active statuses by hand (use jobs_core::active_statuses_sql!() \
         or active_status_names_sql!(), which follow JobStatus::ACTIVE): {found:?}"
    );
}

#[cfg(test)]
mod source_tests {
    use super::hand_written_active_sets;

    #[test]
    fn finds_active_sets_written_by_hand_in_any_spelling() {
        let source = "a\nWHERE status IN ('pending', 'running')\n\
                      ARRAY['running','pending'::text]\n\
                      x IN ('pending'::text,\n   'running'::text)\n\
                      status = 'pending' OR status = 'running'\n\
                      IN ('pending', 'failed'), ('completed', 'running')\n";
        assert_eq!(hand_written_active_sets(source), [2, 3, 4]);
    }
}
