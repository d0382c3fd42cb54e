//! Restoring an image's fs tree into a directory.
//!
//! [`pull_into_dir`] is the whole lifecycle of `pf pull --into`: the pull
//! writes file contents straight into place through a [`RestoreTarget`]
//! (each byte written once), the rest is copied from the local store and
//! modes and symlinks are set ([`Layout::finish`]); on any failure what the
//! restore created is removed ([`Layout::abandon`]), leaving the target as
//! it was found (absent or empty). [`restore_from_store`] restores an image
//! already in a local store.

mod layout;
mod target;

use std::path::Path;
use std::sync::Arc;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{is_fs_tree_media_type, EntryKind, FsEntry};
use pf_registry_core::{FsTree, Manifest, PullReport, Registry, RegistryError, Result};

pub use layout::{symlink_stays_inside, Layout};
pub use target::RestoreTarget;

/// The default [`RestoreOptions::max_size`]: 64 GiB of file content.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// How a restore runs.
#[derive(Clone)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Largest total of file content restored. The total is computed from
    /// the fs tree before anything is written; a larger image, or one larger
    /// than the free space of the target's filesystem, is refused as
    /// [`RegistryError::InvalidData`] (a repository's sizes are bounded
    /// before anything is written). Default [`DEFAULT_MAX_SIZE`].
    pub max_size: u64,
    /// Called once with the total, after the checks, before any file is
    /// written (the CLI prints it).
    pub on_total: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Restore only these paths of the fs tree (each a file or a whole
    /// subtree, with their parent directories) and fetch only the blobs
    /// they need; empty: restore everything. See [`crate::select`].
    pub include: Vec<String>,
}

impl RestoreOptions {
    /// These options, restoring only `include` (see [`RestoreOptions::include`]).
    pub fn with_include(mut self, include: Vec<String>) -> RestoreOptions {
        self.include = include;
        self
    }
}

impl Default for RestoreOptions {
    fn default() -> RestoreOptions {
        RestoreOptions {
            max_size: DEFAULT_MAX_SIZE,
            on_total: None,
            include: Vec::new(),
        }
    }
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("max_size", &self.max_size)
            .field("on_total", &self.on_total.is_some())
            .field("include", &self.include)
            .finish()
    }
}

/// What [`pull_into_dir`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The pull: manifest digest, signature verification, blob counts.
    pub pull: PullReport,
    /// Bytes of file content restored.
    pub restored_bytes: u64,
    /// Closure blobs not fetched because a partial restore
    /// ([`RestoreOptions::include`]) does not need them.
    pub blobs_skipped: u64,
}

/// Pulls the image `registry` points at and restores its fs tree into
/// `dest` (which must not exist or be empty). Index blobs (and blobs other
/// index blobs reference) go into `store`; file contents are written into
/// `dest` as they arrive, and those already in `store` are copied from it.
/// On failure, what the restore created is removed and the error returned.
pub async fn pull_into_dir(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    dest: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    // Refuse a bad include before anything is fetched.
    for p in &options.include {
        crate::select::tree_path(p)?;
    }
    if !options.include.is_empty() {
        if let Some(r) = pull_selection_ranged(registry, store.clone(), dest, options).await? {
            return Ok(r);
        }
    }
    let target = RestoreTarget::new(dest, options.clone());
    let pulled = registry.pull_into(store.clone(), &target).await;
    let finished = match (&pulled, target.layout()) {
        (Ok(_), Some(layout)) => tokio::task::spawn_blocking(move || layout.finish(&*store))
            .await
            .unwrap_or_else(|e| {
                Err(RegistryError::io(
                    "restore",
                    std::io::Error::other(format!("restore task failed: {e}")),
                ))
            }),
        _ => Ok(0),
    };
    if pulled.is_err() || finished.is_err() {
        if let Some(layout) = target.layout() {
            layout.abandon();
        }
    }
    Ok(RestoreReport {
        pull: pulled?,
        restored_bytes: finished?,
        blobs_skipped: target.blobs_skipped(),
    })
}

/// A partial restore of a v2 image: the fs tree, then only the chunks the
/// selection reads, by range, from packs that are not local. `None` for a
/// v1 image or a pack stored without a frame table (the caller then
/// fetches whole blobs).
async fn pull_selection_ranged(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    dest: &Path,
    options: &RestoreOptions,
) -> Result<Option<RestoreReport>> {
    let (browse, tree) = crate::pull_tree(registry, store.clone()).await?;
    if !tree.is_v2() {
        return Ok(None);
    }
    let include: Vec<&str> = options.include.iter().map(String::as_str).collect();
    let sel = crate::select(&tree, &include)?;
    let files: Vec<&FsEntry> = sel
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    let (fetched, whole) = crate::ranged::fetch(registry, &*store, &sel, &files).await?;
    if !whole.is_empty() {
        return Ok(None);
    }
    let (dest, options) = (dest.to_path_buf(), options.clone());
    let restored = tokio::task::spawn_blocking(move || {
        let layout = Layout::create(sel, &dest, &options)?;
        let res = fetched
            .packs
            .iter()
            .try_for_each(|(pack, chunks)| layout.write_ranges(pack, chunks))
            .and_then(|()| layout.finish(&*store));
        res.inspect_err(|_| layout.abandon())
    })
    .await
    .map_err(|e| {
        RegistryError::io(
            "restore",
            std::io::Error::other(format!("restore task failed: {e}")),
        )
    })??;
    let mut pull = browse.pull;
    pull.wire_bytes_fetched += fetched.wire_bytes;
    Ok(Some(RestoreReport {
        pull,
        restored_bytes: restored,
        blobs_skipped: browse.blobs_skipped,
    }))
}

/// Restores the fs tree of `manifest` (or the part
/// [`RestoreOptions::include`] names), whose closure is in `store`, into
/// `dest` (which must not exist or be empty). Returns the bytes of file
/// content restored; on failure what it created is removed.
pub fn restore_from_store(
    manifest: &Manifest,
    store: &dyn BlobStore,
    dest: &Path,
    options: &RestoreOptions,
) -> Result<u64> {
    let mut tree = manifest_tree(manifest, store)?;
    if !options.include.is_empty() {
        let include: Vec<&str> = options.include.iter().map(String::as_str).collect();
        tree = crate::select(&tree, &include)?;
    }
    let layout = Layout::create(tree, dest, options)?;
    layout.finish(store).inspect_err(|_| layout.abandon())
}

/// Reads index blob `digest` from `store` and checks it hashes to its
/// digest: the local store may sit on a shared disk, and an index blob
/// decides what is restored (DESIGN.md, "Threat model").
pub(crate) fn get_verified(store: &dyn BlobStore, digest: &Digest) -> Result<Vec<u8>> {
    let bytes = store.get(digest)?;
    check_local(digest, Digest::of(&bytes))?;
    Ok(bytes)
}

/// The size of index blob `digest` in `store`, re-hashed as it is read
/// (streamed: the bytes are not kept).
pub(crate) fn verified_size(store: &dyn BlobStore, digest: &Digest) -> Result<u64> {
    let (actual, size) = Digest::of_reader(store.open(digest)?).map_err(crate::io_ctx(format!(
        "reading blob {digest} in the local store"
    )))?;
    check_local(digest, actual)?;
    Ok(size)
}

/// An integrity error unless index blob `digest` in the local store
/// hashed to it (`actual`).
fn check_local(digest: &Digest, actual: Digest) -> Result<()> {
    if actual != *digest {
        return Err(RegistryError::Integrity {
            what: format!("index blob {digest} in the local store"),
            expected: *digest,
            actual,
        });
    }
    Ok(())
}

/// The fs tree layers of `manifest`, read from `store` and merged into one
/// tree (their paths must not collide).
pub fn manifest_tree(manifest: &Manifest, store: &dyn BlobStore) -> Result<FsTree> {
    let mut tree = FsTree::default();
    for l in manifest
        .layers
        .iter()
        .filter(|l| is_fs_tree_media_type(&l.media_type))
    {
        // A pack listed by several layers is listed once.
        tree.merge(FsTree::from_bytes(&get_verified(store, &l.digest)?)?);
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::MemoryStore;
    use pf_registry_core::manifest::FS_TREE_MEDIA_TYPE;
    use pf_registry_core::manifest::{Chunk, EntryKind, FsEntry, FS_LAYER_ROLE};

    /// A file entry of mode 0640.
    pub(crate) fn file(path: &str, size: u64, blob: Digest, offset: Option<u64>) -> FsEntry {
        FsEntry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o640,
            size,
            blob: Some(blob),
            chunks: vec![],
            target: None,
            offset,
            parts: vec![],
        }
    }

    #[test]
    fn manifest_tree_merges_layers_and_lists_a_shared_pack_once() {
        use pf_registry_core::manifest::{AgentInfo, Descriptor};
        let store = MemoryStore::new();
        let shared = store.put(b"sharedpack").unwrap();
        let own = store.put(b"ownpack").unwrap();
        let pack = |blob, size| Chunk { blob, size };
        let layer = |entries: Vec<FsEntry>, packs: Vec<Chunk>| {
            let bytes = FsTree {
                entries,
                packs,
                chunk_table: vec![],
            }
            .to_bytes();
            Descriptor {
                role: FS_LAYER_ROLE.into(),
                media_type: FS_TREE_MEDIA_TYPE.into(),
                digest: store.put(&bytes).unwrap(),
                size: bytes.len() as u64,
            }
        };
        let mut m = Manifest::new(
            AgentInfo {
                name: "t".into(),
                version: String::new(),
            },
            "2026-01-01T00:00:00Z",
        );
        m.layers.push(layer(
            vec![file("a", 6, shared, Some(0))],
            vec![pack(shared, 10)],
        ));
        m.layers.push(layer(
            vec![file("b", 4, shared, Some(6)), file("c", 7, own, Some(0))],
            vec![pack(own, 7), pack(shared, 10)],
        ));
        let tree = manifest_tree(&m, &store).unwrap();
        let paths: Vec<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "b", "c"]);
        let mut want = vec![pack(shared, 10), pack(own, 7)];
        want.sort_by_key(|p| p.blob);
        assert_eq!(tree.packs, want);
        tree.validate().unwrap();
    }

    /// A store that answers one digest with other bytes (a planted blob).
    struct Lying(MemoryStore, Digest, Vec<u8>);

    impl BlobStore for Lying {
        fn has(&self, d: &Digest) -> pf_cas::Result<bool> {
            Ok(*d == self.1 || self.0.has(d)?)
        }
        fn size(&self, d: &Digest) -> pf_cas::Result<Option<u64>> {
            self.0.size(d)
        }
        fn open(&self, d: &Digest) -> pf_cas::Result<Box<dyn std::io::Read + Send>> {
            if *d == self.1 {
                return Ok(Box::new(std::io::Cursor::new(self.2.clone())));
            }
            self.0.open(d)
        }
        fn put(&self, b: &[u8]) -> pf_cas::Result<Digest> {
            self.0.put(b)
        }
        fn put_stream(
            &self,
            e: Option<&Digest>,
            r: &mut dyn std::io::Read,
        ) -> pf_cas::Result<(Digest, u64)> {
            self.0.put_stream(e, r)
        }
        fn list(&self) -> pf_cas::Result<Vec<Digest>> {
            self.0.list()
        }
    }

    #[test]
    fn an_fs_tree_planted_in_the_local_store_is_refused() {
        use pf_registry_core::manifest::{AgentInfo, Descriptor};
        let mem = MemoryStore::new();
        let real = FsTree::default().to_bytes();
        let digest = Digest::of(&real);
        let evil = mem.put(b"planted").unwrap();
        let planted = FsTree {
            entries: vec![file("evil", 7, evil, None)],
            packs: vec![],
            chunk_table: vec![],
        }
        .to_bytes();
        let store = Lying(mem, digest, planted);
        let mut m = Manifest::new(
            AgentInfo {
                name: "t".into(),
                version: String::new(),
            },
            "2026-01-01T00:00:00Z",
        );
        m.layers.push(Descriptor {
            role: FS_LAYER_ROLE.into(),
            media_type: FS_TREE_MEDIA_TYPE.into(),
            digest,
            size: real.len() as u64,
        });
        let err = manifest_tree(&m, &store).unwrap_err();
        assert!(matches!(err, RegistryError::Integrity { .. }), "{err}");
    }
}
