-- Nothing changes on SQLite: its claim reads folio_jobs_due (run_at, id) in order and
-- filters the types on the way. This file keeps the version numbers of both folders equal.
SELECT 1;
