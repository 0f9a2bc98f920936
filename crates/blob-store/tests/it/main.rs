//! Integration tests of blob-store: the conformance suite on both backends, backend
//! specifics, S3 through the fault proxy, and the workspace dependency rule for the AWS SDK.

mod file_backend;
mod memory;
mod s3_backend;
mod s3_faults;
mod tidy;
