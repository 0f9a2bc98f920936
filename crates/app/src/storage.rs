//! The blob store picked from `--storage`.

use std::sync::Arc;

use anyhow::{Context, Result};
use blob_store::BlobStore;

/// Opens the blob store a storage URL names: `file://DIR` or `s3://BUCKET/PREFIX`.
pub async fn open_blob_store(url: &str) -> Result<Arc<dyn BlobStore>> {
    blob_store::open(url)
        .await
        .with_context(|| format!("opening object storage {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_urls_open_a_directory_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_blob_store(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        assert!(store.list("books/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        assert!(open_blob_store("ftp://x").await.is_err());
    }
}
