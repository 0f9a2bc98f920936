-- Request keys (jobs_core::keys): a client's idempotency key with the request it belongs
-- to, the claim of the attempt running it, and its answer once it has one (status NULL
-- until then). Deleted by claimed_at after the service's keep time.
CREATE TABLE folio_request_keys (
    key          TEXT    PRIMARY KEY NOT NULL,
    request      TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    claim        TEXT    NOT NULL,
    claimed_at   INTEGER NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB
) STRICT;
CREATE INDEX folio_request_keys_claimed_at ON folio_request_keys (claimed_at);
