//! The key methods of [`Transport`] for the lifecycle commands on S3: list
//! (paginated by object_store), bounded read, write, delete of layout keys
//! under the prefix. A child of `transport` so it can use its helpers.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};
use pf_registry_core::lifecycle::StoredKey;
use pf_registry_core::{layout, RegistryError, Result};

use super::S3Transport;

/// Checks that `key` is a relative layout key: `/`-separated, no empty,
/// `.` or `..` component.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            format!("key {key:?}"),
            "not a repository key",
        ))
    }
}

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

    pub(super) async fn list_keys_impl(&self, dir: &str) -> Result<Vec<StoredKey>> {
        check_key(dir)?;
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

    pub(super) async fn read_key_impl(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        check_key(key)?;
        self.get_bounded(key, &self.key(key), limit).await
    }

    pub(super) async fn write_key_impl(&self, key: &str, bytes: &[u8]) -> Result<()> {
        check_key(key)?;
        self.put_small(
            key,
            &self.key(key),
            Bytes::copy_from_slice(bytes),
            PutMode::Overwrite,
        )
        .await
    }

    pub(super) async fn delete_key_impl(&self, key: &str) -> Result<()> {
        check_key(key)?;
        match self.store.delete(&self.key(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn keys_must_be_plain_relative_paths() {
        assert!(check_key("tags/v1/manifest.json").is_ok());
        for bad in ["", "/x", "a/../b", "a//b", "a/"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
