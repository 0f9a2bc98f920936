-- Nothing changes on SQLite: an UPDATE there rewrites only the index entries whose columns
-- change, so folio_jobs_by_resource costs nothing per claim. This file keeps the version
-- numbers of both folders equal.
SELECT 1;
