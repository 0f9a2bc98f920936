//! Integration tests of the ocr crate: the real tesseract engine on the fixtures, the
//! `ocr` job on a real worker runtime (SQLite job store, file blob store), and the openai
//! engine against a local server speaking the chat-completions wire format.

mod bench;
mod harness;
mod job;
mod openai;
mod tesseract;
