//! The key methods of [`Transport`] for the lifecycle commands on S3: list
//! (paginated by object_store), bounded read, write, delete of layout keys
//! under the prefix. A child of `transport` so it can use its helpers.

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};
use pf_registry_core::lifecycle::{KeyAttempts, StoredKey};
use pf_registry_core::{layout, Result};

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

// object_store retries nothing (see the s3 config), and the engine does not
// retry key operations: they run under the caller's retry policy
// ([`KeyAttempts`]), one key at a time.
#[async_trait]
impl KeyAttempts for S3Transport {
    fn key_retry(&self) -> &pf_registry_core::RetryPolicy {
        &self.retry
    }

    fn deletes_in_one_request(&self) -> bool {
        false
    }

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

    async fn delete_keys_once(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            layout::check_key(key)?;
            match self.store.delete(&self.key(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.map_err(key, e)),
            }
        }
        Ok(())
    }
}
