//! Integration tests of the extraction crate: the rules extractor on the sample pages, the
//! openai extractor on the wire against a local server, finalize, and both jobs on SQLite
//! and `file://` with a real worker.

mod finalize;
mod jobs;
mod openai;
mod quality;
mod rules;
mod whole_book;
