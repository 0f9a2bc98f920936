-- Tracing across the queue: the W3C `traceparent` (`00-<trace id>-<span id>-<flags>`, 55
-- characters) of the span that enqueued a job, so the worker's span of the job joins the
-- trace of the request that started it (the parent of the first attempt, a link of retries).
-- A chain's next job and a resumed job inherit it. Stores write only a valid value (checked
-- in code: an invalid one is dropped, never an error), NULL when the job was enqueued
-- outside a trace.
-- A nullable column without a default changes only the catalog: no row is rewritten, and no
-- index changes.
ALTER TABLE folio_jobs ADD COLUMN trace_parent text;
