//! Request keys: what a service that enqueues jobs needs to make a request idempotent (an
//! HTTP `Idempotency-Key`, say). The first request with a key runs and its answer is kept
//! with the key; a repeat of that request gets the kept answer, another request under the
//! same key is refused, and a repeat while the first still runs is told so. The keys live
//! in the job store's database beside the jobs those requests create
//! ([`JobStore::claim_key`](crate::JobStore::claim_key) and the methods after it).

/// One request under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedRequest<'a> {
    /// The client's key.
    pub key: &'a str,
    /// What the request asks for, as the service names it (`POST /v1/books?x=1`).
    pub request: &'a str,
    /// A digest of the request's body: a repeat has the same one.
    pub fingerprint: &'a str,
    /// This attempt's own token (a random id): only the holder of the claim answers or
    /// releases it, so a request taken over after it went stale cannot write over the
    /// one that took it over.
    pub claim: &'a str,
}

/// The answer kept for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    /// The HTTP status (or whatever code the service keeps).
    pub status: u16,
    /// The body's media type.
    pub content_type: String,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

impl KeptAnswer {
    /// The answer a store keeps in a key's columns: `None` while its request runs (no
    /// status yet).
    pub fn from_columns(
        status: Option<i64>,
        content_type: Option<String>,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Self>, crate::StoreError> {
        let Some(status) = status else {
            return Ok(None);
        };
        let status = u16::try_from(status)
            .map_err(|_| crate::StoreError::Corrupt(format!("request key status {status}")))?;
        Ok(Some(Self {
            status,
            content_type: content_type.unwrap_or_default(),
            body: body.unwrap_or_default(),
        }))
    }
}

/// What [`JobStore::claim_key`](crate::JobStore::claim_key) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is this request's now: run it, then answer or release the key.
    Claimed,
    /// The same request holds the key and has no answer yet.
    Running,
    /// The same request ran and this is its answer.
    Answered(KeptAnswer),
    /// The key belongs to another request (another body, or another path).
    Mismatch,
}

impl KeyedRequest<'_> {
    /// What a claim of this request makes of a key another claim holds, with the request,
    /// fingerprint and answer kept with it: the one rule of every store.
    pub fn meets(&self, request: &str, fingerprint: &str, answer: Option<KeptAnswer>) -> KeyClaim {
        if request != self.request || fingerprint != self.fingerprint {
            return KeyClaim::Mismatch;
        }
        match answer {
            Some(answer) => KeyClaim::Answered(answer),
            None => KeyClaim::Running,
        }
    }
}
