//! The key methods of the lifecycle commands on the Hub: list (the tree
//! API, recursive, with each file's last commit date as its modification
//! time), read (`resolve`), write and delete (commits). pf owns the layout
//! of the repository's files, so `rm`, `retain` and `gc` work as on
//! `file://`.
//!
//! Writes and deletions are commits WITHOUT `parentCommit`: the Hub applies
//! them on its current head, so they never conflict with each other. A
//! push's own commits still name their parent (its marker commit included):
//! a push that sees a gc or another push commit meanwhile re-checks its
//! blobs on the new head and commits on it (see `commit`), never a half
//! image.
//! A batch of deletions is one commit of `deletedFile` operations (at most
//! `hf.commit_files` per commit). Deleted files stay in the repository's
//! git history: `gc --squash-history` then calls the Hub's super-squash.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use pf_digest::Digest;
use pf_registry_core::lifecycle::{parse_rfc3339, KeyAttempts, StoredKey};
use pf_registry_core::{layout, EncodedBlob, RegistryError, Result};
use reqwest::Method;
use serde_json::{json, Value};

use super::transport::HfTransport;
use super::upload::Pending;

/// Files up to this size that look like text are committed inline; others
/// go through LFS (as the Hub requires for binary and large files).
const INLINE_MAX: usize = 1 << 20;

fn time_of(v: &Value) -> Option<SystemTime> {
    let secs = parse_rfc3339(v["lastCommit"]["date"].as_str()?)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

fn inline(key: &str, bytes: &[u8]) -> bool {
    bytes.len() <= INLINE_MAX
        && layout::blob_digest(key).is_none()
        && std::str::from_utf8(bytes).is_ok_and(|s| !s.contains('\0'))
}

impl HfTransport {
    /// Drops the cached blob listing when `key` is a marker: a push reads
    /// the gc records before it deduplicates and again before it checks
    /// its closure, and both must see the blobs as they are now.
    fn forget_blobs_at(&self, key: &str) {
        if key == layout::LOCKS || key.starts_with("locks/") {
            if let Ok(mut g) = self.present.lock() {
                *g = None;
            }
        }
    }

    /// The Hub's super-squash of the revision (a branch): one commit with
    /// its current files; older commits stop resolving and LFS objects only
    /// they named stop counting as the repository's storage.
    pub(super) async fn super_squash(&self) -> Result<()> {
        self.need_token()?;
        let url = self.api(&format!("/super-squash/{}", self.rev_enc()));
        let body = json!({"message": "pf gc: squash history"});
        self.send(self.req(Method::POST, &url).json(&body), "super-squash")
            .await
            .map(drop)
    }

    async fn delete_commit(&self, keys: &[String]) -> Result<()> {
        let lines: Vec<Value> = keys
            .iter()
            .map(|k| json!({"key": "deletedFile", "value": {"path": k}}))
            .collect();
        let summary = match keys {
            [one] => format!("pf: delete {one}"),
            _ => format!("pf: delete {} files", keys.len()),
        };
        self.key_commit(&summary, &lines).await
    }

    /// Uploads `p` and commits it at its blob path at once, on the current
    /// head (the settle step of a push: its manifest already names it).
    pub(super) async fn recommit_blob(&self, p: Pending) -> Result<()> {
        let (digest, oid, size) = (p.blob.digest, p.oid, p.blob.encoded_size);
        self.lfs_batch(&[p]).await?;
        let line = json!({"key": "lfsFile", "value": {"path": layout::blob(&digest), "algo": "sha256", "oid": oid.hex(), "size": size}});
        let key = layout::blob(&digest);
        self.key_commit(&format!("pf: write {key} again"), &[line])
            .await
    }

    /// A commit without `parentCommit`. When a push on this transport
    /// tracks the revision's head (its marker was just written, or it
    /// committed and now removes its marker), the head is now this commit:
    /// the push's next commit names it.
    async fn key_commit(&self, summary: &str, lines: &[Value]) -> Result<()> {
        let oid = self.commit_lines(summary, lines, None).await?;
        // What this transport knew of the blobs may have just changed.
        if let Ok(mut g) = self.present.lock() {
            *g = None;
        }
        if let Ok(mut p) = self.parent.lock() {
            if p.is_some() {
                *p = Some(oid);
            }
        }
        Ok(())
    }
}

// The engine does not retry key operations (push markers, gc): they run
// under the caller's retry policy ([`KeyAttempts`]). A retried commit whose
// first attempt landed writes the same content again, or deletes what is
// already gone.
#[async_trait]
impl KeyAttempts for HfTransport {
    fn key_retry(&self) -> &pf_registry_core::RetryPolicy {
        &self.retry
    }

    async fn list_keys_once(&self, dir: &str) -> Result<Vec<StoredKey>> {
        layout::check_key(dir)?;
        self.forget_blobs_at(dir);
        let items = self
            .tree_items(&format!("{dir}?recursive=true&expand=true"))
            .await?;
        let out = items
            .iter()
            .filter(|it| it["type"] == "file")
            .filter_map(|it| {
                let path = it["path"].as_str()?;
                let size = it["lfs"]["size"]
                    .as_u64()
                    .or_else(|| it["size"].as_u64())
                    .unwrap_or(0);
                Some(StoredKey {
                    key: path.to_string(),
                    size,
                    modified: time_of(it),
                })
            })
            .collect();
        Ok(out)
    }

    async fn read_key_once(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        layout::check_key(key)?;
        self.forget_blobs_at(key);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.fetch_file(key, limit).await
    }

    async fn write_key_once(&self, key: &str, bytes: &[u8]) -> Result<()> {
        layout::check_key(key)?;
        self.need_token()?;
        // A push writes its marker first: its repository may not exist yet.
        // Nothing else creates one (a gc of a mistyped name fails).
        if key.starts_with("locks/push-") {
            self.ensure_repo().await?;
            // A new push: its blobs go in its own commits until it commits.
            self.committed
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        let line = if inline(key, bytes) {
            json!({"key": "file", "value": {"path": key, "content": STANDARD.encode(bytes), "encoding": "base64"}})
        } else {
            let oid = Digest::of(bytes);
            let blob =
                EncodedBlob::in_memory(oid, bytes.len() as u64, Bytes::copy_from_slice(bytes));
            self.lfs_batch(&[Pending { blob, oid }]).await?;
            json!({"key": "lfsFile", "value": {"path": key, "algo": "sha256", "oid": oid.hex(), "size": bytes.len()}})
        };
        self.key_commit(&format!("pf: write {key}"), &[line]).await
    }

    /// One commit per `hf.commit_files` keys. When one of them is gone
    /// already (the Hub refuses the whole commit), the keys go one by one.
    async fn delete_keys_once(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            layout::check_key(k)?;
        }
        self.need_token()?;
        for chunk in keys.chunks(self.commit_files.max(1)) {
            match self.delete_commit(chunk).await {
                Ok(()) => {}
                Err(RegistryError::NotFound { .. }) if chunk.len() > 1 => {
                    for k in chunk {
                        match self.delete_commit(std::slice::from_ref(k)).await {
                            Ok(()) | Err(RegistryError::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
