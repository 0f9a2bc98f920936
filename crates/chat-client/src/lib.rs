//! One client for OpenAI-compatible chat-completions endpoints, shared by the OCR engine and
//! the guidelines extractor.
//!
//! - [`ChatEndpoint`]: where and how to call (base URL, key, model, timeout); its `Debug`
//!   never shows the key.
//! - [`ChatClient`]: one `POST {base_url}/chat/completions` with a JSON body and the bearer
//!   key, cancellable; the answer parsed as a [`ChatCompletion`], whose first choice
//!   carries the message content, refusal and finish reason.
//! - [`ChatError`]: why a call failed, classified by type for the job runtime
//!   ([`ChatError::kind`]): HTTP 408, 429 and 5xx retryable (after the server's
//!   `Retry-After` seconds), other statuses terminal; transport errors retryable unless the
//!   request could not be built, was redirected or could not be decoded.
//! - `testing` (feature `testing`): a fake chat server on 127.0.0.1 for tests, answering
//!   as scripted and recording what it got.
//!
//! What to ask (prompts, schemas) and how to read an answer's text belong to the callers.
//!
//! Architecture Invariant: this crate knows nothing of sqlx, Postgres, SQLite, axum or
//! aws-sdk-s3; it depends on `jobs-core` only for [`ErrorKind`](jobs_core::runtime::ErrorKind).

mod client;
mod completion;
mod error;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{ChatClient, ChatEndpoint};
pub use completion::{ChatChoice, ChatCompletion, ChatMessage, text_of_content};
pub use error::{ChatError, head};
