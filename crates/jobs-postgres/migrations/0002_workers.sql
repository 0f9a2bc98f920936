-- Workers register themselves so the API can tell whether any worker is alive.
CREATE TABLE folio_workers (
    id         text        PRIMARY KEY,
    host       text        NOT NULL,
    job_types  jsonb       NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
CREATE INDEX folio_workers_last_seen ON folio_workers (last_seen);
