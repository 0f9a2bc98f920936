-- Claims scan due pending jobs in (run_at, id) order whatever their type; the type filter
-- is applied on the way, so the scan stops after `limit` matches instead of sorting every
-- pending job of several types. The rescuer finds running jobs through the one-active index
-- (its predicate covers them), so the heartbeat index was one more write per claim for
-- nothing.
DROP INDEX folio_jobs_claim;
DROP INDEX folio_jobs_heartbeat;
CREATE INDEX folio_jobs_due ON folio_jobs (run_at, id) WHERE status = 'pending';
