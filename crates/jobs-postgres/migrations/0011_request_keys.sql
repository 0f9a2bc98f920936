-- Request keys (jobs_core::keys): a client's idempotency key with the request it belongs
-- to, the claim of the attempt running it, and its answer once it has one (status NULL
-- until then). Deleted by claimed_at after the service's keep time.
CREATE TABLE folio_request_keys (
    key          text        PRIMARY KEY,
    request      text        NOT NULL,
    fingerprint  text        NOT NULL,
    claim        text        NOT NULL,
    claimed_at   timestamptz NOT NULL,
    status       integer,
    content_type text,
    body         bytea
);
CREATE INDEX folio_request_keys_claimed_at ON folio_request_keys (claimed_at);
