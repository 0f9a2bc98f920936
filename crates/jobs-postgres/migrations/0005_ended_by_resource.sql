-- A resource's jobs are listed from two indexes: its active jobs (at most one per type)
-- through folio_jobs_one_active, its ended jobs through this one. An index over every job
-- took one more entry per claim (each claim writes a new row version); this one takes an
-- entry only when a job ends.
DROP INDEX folio_jobs_by_resource;
CREATE INDEX folio_jobs_ended_by_resource ON folio_jobs (resource_key, job_type, created_at DESC)
    WHERE status IN ('completed', 'failed', 'cancelled');
