-- Every book's jobs, newest first by id, optionally of some statuses: see
-- migrations/postgres for the reasoning. No status filter and `completed` scan the primary
-- key's index backward; `pending` and `running` come from folio_jobs_one_active; `failed`
-- and `cancelled`, rare among completed jobs, from these partial indexes on id. An UPDATE
-- that moves a row between statuses outside their predicates writes no entry here.
CREATE INDEX folio_jobs_failed ON folio_jobs (id) WHERE status = 'failed';
CREATE INDEX folio_jobs_cancelled ON folio_jobs (id) WHERE status = 'cancelled';
