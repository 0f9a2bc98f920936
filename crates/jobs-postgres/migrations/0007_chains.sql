-- Chains (SPEC 4.5): a job may carry the jobs to run after it on the same resource. When the
-- runner completes it, the store inserts the next job in the same transaction and links the
-- two both ways.
-- * `then`: the chain, a JSON array of steps `{"job_type", "payload"}`; the first step is
--   the next job, which carries the rest. Written once, at the insert.
-- * `previous_job_id`: the job whose completion inserted this one.
-- * `next_job_id`: the job this one's completion inserted, or the job of that type that was
--   already active (set in the completion's transaction, never after).
-- A constant default rewrites no row, and no index changes: claims and finishes of jobs
-- without a chain write what they wrote before.
-- A job's type is never empty (no worker could claim it). The insert of a chain step with
-- an empty type is refused, which rolls back the completion that tried it: the conformance
-- suite shows the all-or-nothing rule with it.
ALTER TABLE folio_jobs
    ADD COLUMN "then" jsonb NOT NULL DEFAULT '[]'
        CONSTRAINT then_is_a_list CHECK (jsonb_typeof("then") = 'array'),
    ADD COLUMN previous_job_id uuid REFERENCES folio_jobs (id),
    ADD COLUMN next_job_id uuid REFERENCES folio_jobs (id),
    ADD CONSTRAINT job_type_is_named CHECK (job_type <> '');
