-- Retention (`--job-retention`): workers delete finished jobs older than the retention, a
-- batch at a time, oldest first; see migrations/postgres for the reasoning. Links to a
-- deleted job (`resumed_from`, `previous_job_id`, `next_job_id` of the jobs that remain)
-- become NULL, as on Postgres.
--
-- Postgres says so in its constraints (`ON DELETE SET NULL`). SQLite cannot alter a
-- constraint: it would take a rebuild of the whole table (a copy of every job, with foreign
-- keys switched off on a pooled connection while it runs). Instead the store clears the links
-- to a batch in the batch's own write transaction, just before it deletes it
-- (`SqliteJobStore::delete_finished`); SQLite has one writer at a time, so no job can name
-- the batch in between. The constraints stay as they are and still refuse a link to a job
-- that does not exist.
--
-- Clearing the links finds the jobs that name a batch, and every delete makes SQLite look
-- for the jobs still naming it (the constraints' check): without an index on each link
-- column, each is a scan of the table. Partial indexes hold only the jobs with a link.
CREATE INDEX folio_jobs_resumed_from ON folio_jobs (resumed_from) WHERE resumed_from IS NOT NULL;
CREATE INDEX folio_jobs_previous_job_id ON folio_jobs (previous_job_id)
    WHERE previous_job_id IS NOT NULL;
CREATE INDEX folio_jobs_next_job_id ON folio_jobs (next_job_id) WHERE next_job_id IS NOT NULL;

-- The jobs retention may delete, oldest first: a range of this index that ends where the
-- young ones begin. SQLite has no autovacuum settings to tune: the pages of deleted jobs go
-- to the file's free list, and new jobs reuse them.
CREATE INDEX folio_jobs_finished ON folio_jobs (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
