-- Tracing across the queue: the W3C `traceparent` of the span that enqueued a job; see
-- migrations/postgres for the column. NULL when the job was enqueued outside a trace.
ALTER TABLE folio_jobs ADD COLUMN trace_parent TEXT;
