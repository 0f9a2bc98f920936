-- Retention (`--job-retention`): workers delete finished jobs (completed, failed, cancelled)
-- whose `finished_at` is older than the retention, a batch at a time, oldest first
-- (`JobStore::delete_finished`).
--
-- Links to a deleted job become NULL. A job names others in `resumed_from`,
-- `previous_job_id` and `next_job_id`; the job it names may be older than the retention while
-- it is not (a book resumed today from a job that failed long ago, a chain whose first job
-- ended long before its last). Keeping every job that another one names would keep a chain
-- whole as long as any of it is young, and never delete a pair that name each other
-- (`previous_job_id` one way, `next_job_id` the other); refusing the delete would stop
-- retention at the first link. So each link now says `ON DELETE SET NULL`: a link names an
-- existing job or nothing, never a deleted one, and readers already treat NULL as "none".
-- The constraints are the same otherwise, so every row meets them and validating them is a
-- scan the table passes.
ALTER TABLE folio_jobs
    DROP CONSTRAINT folio_jobs_resumed_from_fkey,
    DROP CONSTRAINT folio_jobs_previous_job_id_fkey,
    DROP CONSTRAINT folio_jobs_next_job_id_fkey,
    ADD CONSTRAINT folio_jobs_resumed_from_fkey
        FOREIGN KEY (resumed_from) REFERENCES folio_jobs (id) ON DELETE SET NULL,
    ADD CONSTRAINT folio_jobs_previous_job_id_fkey
        FOREIGN KEY (previous_job_id) REFERENCES folio_jobs (id) ON DELETE SET NULL,
    ADD CONSTRAINT folio_jobs_next_job_id_fkey
        FOREIGN KEY (next_job_id) REFERENCES folio_jobs (id) ON DELETE SET NULL;

-- Every deleted job makes the database look for the jobs that name it, once per link column:
-- without an index on each, that is three scans of the table per deleted row. Partial indexes
-- hold only the jobs that have a link: `resumed_from` (resumed jobs, few), `previous_job_id`
-- (jobs a chain inserted; an entry per row version that is not a HOT update, so heartbeats,
-- which change no indexed column, add none), `next_job_id` (set when a chained job completes,
-- which it never leaves).
CREATE INDEX folio_jobs_resumed_from ON folio_jobs (resumed_from) WHERE resumed_from IS NOT NULL;
CREATE INDEX folio_jobs_previous_job_id ON folio_jobs (previous_job_id)
    WHERE previous_job_id IS NOT NULL;
CREATE INDEX folio_jobs_next_job_id ON folio_jobs (next_job_id) WHERE next_job_id IS NOT NULL;

-- The jobs retention may delete, oldest first: a range of this index, which ends where the
-- young ones begin, so a round with nothing to delete reads one index page, not the table.
-- An entry is written once per finished job (terminal rows do not change again).
CREATE INDEX folio_jobs_finished ON folio_jobs (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Autovacuum for an update-heavy table (a storage parameter: no rewrite, no long lock).
-- Every claim, heartbeat and end leaves a dead row version, and every retention batch dead
-- rows. At the default (20 % of the table plus 50) a table of a million jobs would carry
-- 200,000 dead versions before a vacuum, bloating the indexes claims and listings walk; at
-- 2 % plus 1,000 it is vacuumed after about 21,000, in small vacuums that end quickly. The
-- 1,000 keeps a small, busy table from being vacuumed on every autovacuum round. Analyze
-- follows the same rule, so statistics follow the moving mix of statuses.
--
-- fillfactor stays at 100. Room kept free on each page would let more heartbeats be HOT
-- updates (a heartbeat changes no indexed column), but on-access pruning already makes that
-- room: a job's older versions are dead as soon as the next one commits. Measured on 2,000
-- jobs (claim, 12 heartbeats with progress and checkpoint, end): 94.0 % of heartbeats HOT at
-- fillfactor 100, 94.6 % at 80, for a heap 32 % larger, and pages of finished jobs, which
-- never change again, would keep the room unused. A lower fillfactor also makes the planner
-- expect fewer rows per page on a table without statistics, and it then reads the primary key
-- beside the one-active index to list active jobs (the plan test of the listings).
ALTER TABLE folio_jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);
