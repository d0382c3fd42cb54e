//! The node's index as a repository: the key methods of the lifecycle
//! commands over MFS under `/pf-registry/`, the record of committed images,
//! and pulls from the index (`ipfs://`, `ipfs://@sha256:...`).
//!
//! The keys of [`layout`] live below `/pf-registry/`:
//!
//! ```text
//! blobs/sha256/<aa>/<hex>.zst            the dedup index (one entry per blob)
//! blobs/sha256/<aa>/<hex>.zst.<ms>.time  when a push indexed it (empty file)
//! manifests/sha256/<hex>.json            every committed image's manifest
//! signatures/sha256/<hex>.sig            its signature envelope
//! manifest.json                          the manifest of the last push (head)
//! roots/sha256/<hex>/<root CID>          the pinned root(s) of that image
//! locks/push-<id>.json, locks/gc-<id>.json   markers (`pf_registry_core::lifecycle`)
//! ```
//!
//! A push indexes each blob it uploads, then at commit pins the image's
//! root and writes its record (signature, root, manifest, head). `rm` and
//! `retain` delete records; deleting a manifest record unpins its roots.
//! `gc` deletes index entries no record references, so the shared
//! lock-free argument of `pf_registry_core::lifecycle` holds unchanged:
//! the index entries are the blobs, the records the committed manifests.
//! An image's root stays pinned, so deleting an index entry never breaks
//! a pull of `ipfs://<root>`; `ipfs repo gc` then frees the blocks no pin
//! and no MFS entry holds.
//!
//! **Times.** Kubo's MFS keeps no modification time unless asked
//! (`files/touch`), and a time stored in a UnixFS node changes its CID: a
//! touched raw-leaf blob would become a dag-pb node, so deduplicated
//! images would get other roots than fresh ones, and `files/ls --long`
//! does not show it anyway. So the time of an index entry is the NAME of
//! an empty sibling, `<entry>.<unix ms>.time`, written just BEFORE the
//! entry (it also creates the shard directory): one listing of a shard
//! gives every entry with its time, and a recorded time is never later
//! than the entry's creation by more than that one RPC. An entry with
//! several (indexed again) counts from the newest. One with none (indexed
//! by an older pf, or indexed again while a racing gc removed the old
//! entry's times) counts as old: the grace period is only a margin here.
//! No image depends on an index entry alone (each has its pinned root),
//! and a push's entries are protected by its marker until its record
//! references them. `delete_key` removes an entry with its times.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::lifecycle::{KeyAttempts, StoredKey};
use pf_registry_core::manifest::MAX_MANIFEST_BYTES;
use pf_registry_core::{layout, ByteStream, FetchedManifest, RegistryError, Result};
use serde_json::Value;

use super::transport::{IpfsTransport, INDEX};

/// Suffix of an entry's time sibling.
const TIME: &str = ".time";
/// MFS calls in flight while walking or deleting.
const PARALLEL: usize = 8;

fn mfs(key: &str) -> String {
    format!("{INDEX}/{key}")
}

fn roots_dir(d: &Digest) -> String {
    format!("roots/sha256/{}", d.hex())
}

/// `<entry>.<ms>.time` as (entry name, ms).
fn time_of(name: &str) -> Option<(&str, u64)> {
    let (entry, ms) = name.strip_suffix(TIME)?.rsplit_once('.')?;
    Some((entry, ms.parse().ok()?))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One entry of an MFS directory listing.
struct Entry {
    name: String,
    dir: bool,
    size: u64,
}

impl IpfsTransport {
    /// The entries of MFS directory `path`; `None` when it does not exist.
    async fn ls(&self, path: &str) -> Result<Option<Vec<Entry>>> {
        let resp = match self
            .rpc(
                "files/ls",
                &[("arg", path), ("long", "true"), ("U", "true")],
                None,
            )
            .await
        {
            Ok(r) => r,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let v: Value = resp
            .json()
            .await
            .map_err(|e| RegistryError::invalid("ipfs files/ls", e.to_string()))?;
        let entries = v["Entries"].as_array().cloned().unwrap_or_default();
        Ok(Some(
            entries
                .iter()
                .filter_map(|e| {
                    Some(Entry {
                        name: e["Name"].as_str()?.to_string(),
                        dir: e["Type"].as_u64() == Some(1),
                        size: e["Size"].as_u64().unwrap_or(0),
                    })
                })
                .collect(),
        ))
    }

    /// Writes `bytes` at MFS `path` (parents created, replacing what is
    /// there) so that readers see all or nothing: `files/write` creates an
    /// empty file before it writes, so a new file is added whole
    /// (`add`, then `files/cp` onto the path), and an existing one is
    /// rewritten in place (`files/write --truncate`, under the file's
    /// lock, which readers wait for).
    async fn write_mfs(&self, path: &str, bytes: &[u8]) -> Result<()> {
        match self.rewrite(path, bytes).await {
            Err(RegistryError::NotFound { .. }) => {}
            done => return done,
        }
        let body = reqwest::Body::from(bytes.to_vec());
        let cid = self.add("key", body, bytes.len() as u64).await?.cid;
        match self.cp(&format!("/ipfs/{cid}"), path).await {
            // Created meanwhile with other bytes: rewrite it.
            Err(RegistryError::Conflict(_)) => self.rewrite(path, bytes).await,
            done => done,
        }
    }

    /// `files/write --truncate` of an existing file; `NotFound` when absent.
    async fn rewrite(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.write_file(path, bytes, false).await
    }

    /// One `files/write` (creating the file and its parents when `create`).
    async fn write_file(&self, path: &str, bytes: &[u8], create: bool) -> Result<()> {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name("key")
            .mime_str("application/octet-stream")
            .map_err(|e| RegistryError::permanent(self.backend(), format!("write: {e}")))?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let create = if create { "true" } else { "false" };
        let args = [
            ("arg", path),
            ("create", create),
            ("parents", create),
            ("truncate", "true"),
            ("raw-leaves", "true"),
            ("cid-version", "1"),
        ];
        self.rpc("files/write", &args, Some(form)).await.map(drop)
    }

    /// Records now as the time of the index entry at MFS `entry`.
    pub(super) async fn write_time(&self, entry: &str) -> Result<()> {
        // Empty: only its name matters, so it need not appear whole.
        let path = format!("{entry}.{}{TIME}", now_ms());
        self.write_empty(&path).await
    }

    /// Creates the empty file `path` (and its parents); one made meanwhile
    /// by a racing push is as good. Kubo answers "file does not exist" to a
    /// `files/write --parents` whose parent another call is creating (or a
    /// gc removing) at the same time: that is tried again, a few times.
    async fn write_empty(&self, path: &str) -> Result<()> {
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match self.write_file(path, b"", true).await {
                Err(RegistryError::Conflict(_)) => return Ok(()),
                Err(RegistryError::NotFound { .. }) if attempt < 4 => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                done => return done,
            }
        }
    }

    /// `files/read` of MFS `path` (a range of it), streamed.
    async fn read_mfs(&self, path: &str, range: Option<(u64, u64)>) -> Result<ByteStream> {
        self.read_stream("files/read", "count", path, range).await
    }

    /// MFS `path` whole, at most `limit` bytes; `None` when absent.
    async fn read_small(&self, path: &str, limit: u64) -> Result<Option<Bytes>> {
        self.read_small_with("files/read", "count", path, limit)
            .await
    }

    /// A blob from the index (a pull of `ipfs://` or `ipfs://@sha256:...`,
    /// or `verify`, which checks the index); one whose entry is gone
    /// (deleted, or lost by MFS) is read from the image's pinned root,
    /// which gc never touches.
    pub(super) async fn index_blob(
        &self,
        d: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream> {
        let entry = self.read_mfs(&super::transport::index_path(d), range).await;
        let Err(RegistryError::NotFound { .. }) = entry else {
            return entry;
        };
        for root in self.index_roots.get().into_iter().flatten() {
            let path = format!("/ipfs/{root}/{}", layout::blob(d));
            match self.cat_stream(&path, range).await {
                Err(RegistryError::NotFound { .. }) => continue,
                done => return done,
            }
        }
        entry
    }

    /// The manifest the reference names in the index: by its `@sha256:`
    /// pin, else the head (the last push); its signature by digest.
    pub(super) async fn index_manifest(&self) -> Result<FetchedManifest> {
        let key = match &self.pin {
            Some(d) => layout::manifest_by_digest(d),
            None => layout::MANIFEST.to_string(),
        };
        let manifest = self
            .read_small(&mfs(&key), MAX_MANIFEST_BYTES as u64)
            .await?
            .ok_or_else(|| {
                RegistryError::not_found(format!(
                    "manifest {key} in the index of {} (pull ipfs://<root> for an image it does not hold)",
                    self.backend()
                ))
            })?;
        let d = Digest::of(&manifest);
        let roots = self.ls(&mfs(&roots_dir(&d))).await?.unwrap_or_default();
        let _ = self.index_roots.set(
            roots
                .into_iter()
                .filter(|e| !e.dir && super::dag::Cid::parse(&e.name).is_ok())
                .map(|e| e.name)
                .collect(),
        );
        let signature = self
            .read_small(
                &mfs(&layout::signature_by_digest(&d)),
                pf_sign::SignatureEnvelope::MAX_LEN as u64,
            )
            .await?;
        Ok(FetchedManifest {
            manifest,
            signature,
            pin_verified: false,
        })
    }

    /// After the root is pinned: the image's record (signature, root,
    /// manifest by digest, then the head).
    pub(super) async fn record_commit(
        &self,
        d: &Digest,
        manifest: &[u8],
        signature: Option<&[u8]>,
        root: &str,
    ) -> Result<()> {
        if let Some(sig) = signature {
            self.write_mfs(&mfs(&layout::signature_by_digest(d)), sig)
                .await?;
        }
        self.write_empty(&mfs(&format!("{}/{root}", roots_dir(d))))
            .await?;
        self.write_mfs(&mfs(&layout::manifest_by_digest(d)), manifest)
            .await?;
        self.write_mfs(&mfs(layout::MANIFEST), manifest).await
    }

    /// `pf rm ipfs://<root>` after the unpin: drops the root from the
    /// record of manifest `d`, and the record with its last root.
    pub(super) async fn forget_root(&self, d: &Digest, root: &str) -> Result<()> {
        let dir = roots_dir(d);
        self.rm_paths(&[mfs(&format!("{dir}/{root}"))]).await?;
        let left = self.ls(&mfs(&dir)).await?.unwrap_or_default();
        if !left.is_empty() {
            return Ok(());
        }
        let mut doomed = vec![
            layout::manifest_by_digest(d),
            layout::signature_by_digest(d),
        ];
        let head = self
            .read_small(&mfs(layout::MANIFEST), MAX_MANIFEST_BYTES as u64)
            .await?;
        if head.is_some_and(|h| Digest::of(&h) == *d) {
            doomed.push(layout::MANIFEST.to_string());
        }
        self.delete_keys_now(&doomed).await
    }

    /// Unpins every root recorded for manifest `d` and drops them.
    async fn unpin_roots(&self, d: &Digest) -> Result<()> {
        let dir = mfs(&roots_dir(d));
        for e in self.ls(&dir).await?.unwrap_or_default() {
            match self
                .rpc("pin/rm", &[("arg", &format!("/ipfs/{}", e.name))], None)
                .await
            {
                // Unpinned already (by `pf rm ipfs://<root>` or by hand).
                Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.rm_paths(&[dir]).await
    }

    /// `files/rm` of `paths` (recursive), absent ones ignored: one call,
    /// or one per path when one of them is gone.
    async fn rm_paths(&self, paths: &[String]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut args: Vec<(&str, &str)> = vec![("recursive", "true")];
        args.extend(paths.iter().map(|p| ("arg", p.as_str())));
        match self.rpc("files/rm", &args, None).await {
            Ok(_) => Ok(()),
            Err(RegistryError::NotFound { .. }) if paths.len() > 1 => {
                for p in paths {
                    let one = [("recursive", "true"), ("arg", p.as_str())];
                    match self.rpc("files/rm", &one, None).await {
                        Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(RegistryError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `keys` with their time siblings (one listing and one
    /// `files/rm` per directory), then unpins the roots of the manifest
    /// records among them.
    async fn delete_keys_now(&self, keys: &[String]) -> Result<()> {
        let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in keys {
            layout::check_key(k)?;
            let (dir, name) = k.rsplit_once('/').unwrap_or(("", k));
            by_dir
                .entry(dir.to_string())
                .or_default()
                .push(name.to_string());
        }
        let results = futures::stream::iter(by_dir)
            .map(|(dir, names)| async move {
                let path = if dir.is_empty() {
                    INDEX.to_string()
                } else {
                    mfs(&dir)
                };
                let Some(entries) = self.ls(&path).await? else {
                    return Ok(());
                };
                let doomed: Vec<String> = entries
                    .iter()
                    .filter(|e| {
                        let entry = time_of(&e.name).map_or(e.name.as_str(), |t| t.0);
                        names.iter().any(|n| n == entry)
                    })
                    .map(|e| format!("{path}/{}", e.name))
                    .collect();
                self.rm_paths(&doomed).await
            })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<Result<()>>>()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        for k in keys {
            if let Some(d) = layout::manifest_digest(k) {
                self.unpin_roots(&d).await?;
            }
        }
        Ok(())
    }

    async fn list_now(&self, dir: &str) -> Result<Vec<StoredKey>> {
        let mut out = Vec::new();
        let mut times: HashMap<String, u64> = HashMap::new();
        let mut frontier = vec![dir.to_string()];
        while !frontier.is_empty() {
            let listed = futures::stream::iter(frontier.drain(..))
                .map(|d| async move { (self.ls(&mfs(&d)).await, d) })
                .buffer_unordered(PARALLEL)
                .collect::<Vec<_>>()
                .await;
            for (entries, d) in listed {
                for e in entries?.unwrap_or_default() {
                    let key = format!("{d}/{}", e.name);
                    if e.dir {
                        frontier.push(key);
                    } else if let Some((entry, ms)) = time_of(&e.name) {
                        let t = times.entry(format!("{d}/{entry}")).or_default();
                        *t = (*t).max(ms);
                    } else {
                        out.push((key, e.size));
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(key, size)| {
                let modified = match times.get(&key) {
                    Some(ms) => UNIX_EPOCH.checked_add(Duration::from_millis(*ms)),
                    // An index entry without a time counts as old (module doc).
                    None => layout::blob_digest(&key).map(|_| UNIX_EPOCH),
                };
                StoredKey {
                    key,
                    size,
                    modified,
                }
            })
            .collect())
    }
}

/// The repository is the node's index (see the module doc). Only an
/// `ipfs://` reference without a root offers it (`Transport::keys`). Each
/// operation is idempotent and runs under the caller's retry policy
/// ([`KeyAttempts`]).
#[async_trait]
impl KeyAttempts for IpfsTransport {
    fn key_retry(&self) -> &pf_registry_core::RetryPolicy {
        &self.retry
    }

    async fn list_keys_once(&self, dir: &str) -> Result<Vec<StoredKey>> {
        layout::check_key(dir)?;
        self.list_now(dir).await
    }

    async fn read_key_once(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        layout::check_key(key)?;
        self.read_small(&mfs(key), limit).await
    }

    async fn write_key_once(&self, key: &str, bytes: &[u8]) -> Result<()> {
        layout::check_key(key)?;
        self.write_mfs(&mfs(key), bytes).await
    }

    async fn delete_keys_once(&self, keys: &[String]) -> Result<()> {
        self.delete_keys_now(keys).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_siblings_parse_and_nothing_else_does() {
        assert_eq!(
            super::time_of("ab.zst.1700000000123.time"),
            Some(("ab.zst", 1_700_000_000_123))
        );
        for other in ["ab.zst", "ab.zst.time", "ab.zst.x.time", "manifest.json"] {
            assert_eq!(super::time_of(other), None, "{other}");
        }
    }
}
