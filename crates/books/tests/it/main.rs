//! Integration tests of books: ids, the manifest model, lossless concurrent updates and
//! batching on both storage backends, and page ingestion.

mod book_ids;
mod counting_store;
mod images;
mod ingest;
mod lost_answers;
mod manifest_updates;
mod manifest_writer;
mod pdf;
