-- Jobs: one row per job; see migrations/postgres for the same schema on Postgres.
-- Ids are UUID text, times are integer microseconds since the Unix epoch (so comparisons
-- in SQL are exact), JSON is text.
CREATE TABLE folio_jobs (
    id               TEXT    PRIMARY KEY NOT NULL,
    resource_key     TEXT    NOT NULL,
    job_type         TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    payload          TEXT    NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    progress         TEXT    NOT NULL DEFAULT '{}',
    checkpoint       TEXT,
    error            TEXT,
    resumed_from     TEXT    REFERENCES folio_jobs (id),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease            INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    heartbeat_at     INTEGER,
    finished_at      INTEGER,
    CONSTRAINT attempts_within_bounds CHECK (attempt >= 0 AND max_attempts >= 1 AND attempt <= max_attempts),
    CONSTRAINT finished_exactly_when_terminal
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT failed_has_error CHECK (status <> 'failed' OR error IS NOT NULL),
    CONSTRAINT running_has_owner
        CHECK (status <> 'running' OR (worker_id IS NOT NULL AND started_at IS NOT NULL AND heartbeat_at IS NOT NULL))
) STRICT;

-- One active job per (resource, job type). Must name exactly JobStatus::ACTIVE; the
-- conformance suite reads this definition back and compares.
CREATE UNIQUE INDEX folio_jobs_one_active ON folio_jobs (resource_key, job_type)
    WHERE status IN ('pending', 'running');

CREATE INDEX folio_jobs_claim ON folio_jobs (job_type, run_at, id) WHERE status = 'pending';
CREATE INDEX folio_jobs_heartbeat ON folio_jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX folio_jobs_by_resource ON folio_jobs (resource_key, job_type, created_at DESC);
