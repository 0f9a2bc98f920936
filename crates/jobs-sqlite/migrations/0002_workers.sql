-- Workers register themselves so the API can tell whether any worker is alive.
CREATE TABLE folio_workers (
    id         TEXT    PRIMARY KEY NOT NULL,
    host       TEXT    NOT NULL,
    job_types  TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
) STRICT;
CREATE INDEX folio_workers_last_seen ON folio_workers (last_seen);
