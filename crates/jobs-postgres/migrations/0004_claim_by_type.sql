-- Claims look up due jobs type by type: (job_type, run_at, id) serves each type's scan in
-- order with an equality on the leading column, a plan the planner picks even before the
-- table has statistics (with the (run_at, id) index and no statistics yet it could sort
-- every pending job on each claim).
DROP INDEX folio_jobs_due;
CREATE INDEX folio_jobs_claim ON folio_jobs (job_type, run_at, id) WHERE status = 'pending';
