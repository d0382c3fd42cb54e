//! The key methods of [`Transport`] for the lifecycle commands on S3: list
//! (paginated by object_store), bounded read, write, delete of layout keys
//! under the prefix. A child of `transport` so it can use its helpers.

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};
use pf_registry_core::lifecycle::StoredKey;
use pf_registry_core::{layout, KeyStore, NoProgress, Result};

use super::S3Transport;

impl S3Transport {
    /// `path` relative to the prefix, or `None` if it is not under it.
    fn relative(&self, path: &Path) -> Option<String> {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')
            .map(str::to_string)
    }
}

impl S3Transport {
    async fn list_keys_once(&self, dir: &str) -> Result<Vec<StoredKey>> {
        layout::check_key(dir)?;
        if dir == layout::LOCKS {
            // A push lists the gc records before it deduplicates: what this
            // transport cached of the blobs may predate a gc's deletions,
            // so the dedup that follows lists afresh.
            if let Ok(mut g) = self.listing.lock() {
                *g = None;
            }
        }
        let root = self.key(dir);
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&root));
        while let Some(meta) = s.try_next().await.map_err(|e| self.map_err("listing", e))? {
            if let Some(key) = self.relative(&meta.location) {
                out.push(StoredKey {
                    key,
                    size: meta.size,
                    modified: Some(meta.last_modified.into()),
                });
            }
        }
        Ok(out)
    }

    async fn read_key_once(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        layout::check_key(key)?;
        self.get_bounded(key, &self.key(key), limit).await
    }

    async fn write_key_once(&self, key: &str, bytes: &[u8]) -> Result<()> {
        layout::check_key(key)?;
        self.put_small(
            key,
            &self.key(key),
            Bytes::copy_from_slice(bytes),
            PutMode::Overwrite,
        )
        .await
    }

    async fn delete_key_once(&self, key: &str) -> Result<()> {
        layout::check_key(key)?;
        match self.store.delete(&self.key(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }
}

// object_store retries nothing (see the s3 config), and the engine does not
// retry these, so they run under the caller's retry policy here.
#[async_trait]
impl KeyStore for S3Transport {
    async fn list_keys(&self, dir: &str) -> Result<Vec<StoredKey>> {
        self.retry
            .run("list keys", &NoProgress, || self.list_keys_once(dir))
            .await
    }

    async fn read_key(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        self.retry
            .run("read key", &NoProgress, || self.read_key_once(key, limit))
            .await
    }

    async fn write_key(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.retry
            .run("write key", &NoProgress, || self.write_key_once(key, bytes))
            .await
    }

    async fn delete_key(&self, key: &str) -> Result<()> {
        self.retry
            .run("delete key", &NoProgress, || self.delete_key_once(key))
            .await
    }
}
