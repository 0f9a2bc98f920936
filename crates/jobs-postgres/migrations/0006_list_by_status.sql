-- Every book's jobs are listed newest first by id (UUID v7, so id order is creation order),
-- optionally of some statuses and one type, a page at a time (`id < before`). Each status
-- is found where it costs least, without adding an index entry to a claim:
-- * no status filter, or `completed` (most of the table): a backward scan of the primary
--   key, which every row version has anyway. The filter rejects few rows, so a page reads
--   about a page of rows (the type filter rides on the same scan: job types are few).
-- * `pending`, `running`: the one-active index, whose predicate is exactly them (at most one
--   job per resource and type), sorted by id.
-- * `failed`, `cancelled`: rare among millions of completed jobs, where a scan of the
--   primary key would read the whole table to fill a page. Each gets a partial index on
--   id, so a page is an ordered range of it. An entry is written once, when a job ends in
--   that status (terminal rows never change again): no claim, heartbeat or successful
--   completion pays for it.
-- An index on (status, id) over every job would serve each filter, but would take an entry
-- on every claim, requeue and end (each one writes a new row version with a new status).
CREATE INDEX folio_jobs_failed ON folio_jobs (id) WHERE status = 'failed';
CREATE INDEX folio_jobs_cancelled ON folio_jobs (id) WHERE status = 'cancelled';
