-- Chains: see migrations/postgres for the columns. SQLite cannot add a table constraint to
-- an existing table, but a column added with CHECK constraints is checked on every row
-- like a table's: `job_type_is_named` rides on the new `then` column.
ALTER TABLE folio_jobs ADD COLUMN "then" TEXT NOT NULL DEFAULT '[]'
    CONSTRAINT then_is_a_list CHECK (json_type("then") = 'array')
    CONSTRAINT job_type_is_named CHECK (job_type <> '');
ALTER TABLE folio_jobs ADD COLUMN previous_job_id TEXT REFERENCES folio_jobs (id);
ALTER TABLE folio_jobs ADD COLUMN next_job_id TEXT REFERENCES folio_jobs (id);
