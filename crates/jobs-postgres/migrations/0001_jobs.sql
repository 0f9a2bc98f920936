-- Jobs: one row per job. The state machine is enforced here as well as in code:
-- transitions are guarded UPDATEs, and these constraints reject any row that breaks it.
CREATE TABLE folio_jobs (
    id               uuid        PRIMARY KEY,
    resource_key     text        NOT NULL,
    job_type         text        NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    payload          jsonb       NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    progress         jsonb       NOT NULL DEFAULT '{}',
    checkpoint       jsonb,
    error            jsonb,
    resumed_from     uuid        REFERENCES folio_jobs (id),
    cancel_requested boolean     NOT NULL DEFAULT false,
    worker_id        text,
    lease            bigint      NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    finished_at      timestamptz,
    CONSTRAINT attempts_within_bounds CHECK (attempt >= 0 AND max_attempts >= 1 AND attempt <= max_attempts),
    CONSTRAINT finished_exactly_when_terminal
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT failed_has_error CHECK (status <> 'failed' OR error IS NOT NULL),
    CONSTRAINT running_has_owner
        CHECK (status <> 'running' OR (worker_id IS NOT NULL AND started_at IS NOT NULL AND heartbeat_at IS NOT NULL))
);

-- One active job per (resource, job type). Must name exactly JobStatus::ACTIVE; the
-- conformance suite reads this definition back and compares.
CREATE UNIQUE INDEX folio_jobs_one_active ON folio_jobs (resource_key, job_type)
    WHERE status IN ('pending', 'running');

-- Claim: due pending jobs by type, oldest first.
CREATE INDEX folio_jobs_claim ON folio_jobs (job_type, run_at, id) WHERE status = 'pending';
-- Rescue: stale heartbeats.
CREATE INDEX folio_jobs_heartbeat ON folio_jobs (heartbeat_at) WHERE status = 'running';
-- Listing a resource's jobs, newest first.
CREATE INDEX folio_jobs_by_resource ON folio_jobs (resource_key, job_type, created_at DESC);
