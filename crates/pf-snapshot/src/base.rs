//! Which fs tree a snapshot of a directory chunks against.
//!
//! A push sends only chunks its base tree does not hold (see
//! [`crate::SnapshotOptions::base`]). The base must be a tree this program
//! built itself, since a tree's claim that a chunk lies at some pack
//! offset is not re-checked when it is reused: so the book records, per
//! (source directory, destination), the fs tree of the last push that
//! succeeded, and the tree is read back from the local store, where the
//! snapshot wrote it, and re-hashed.

use std::collections::BTreeMap;
use std::path::Path;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{is_fs_tree_media_type, FsTree};
use pf_registry_core::{Manifest, Result};

/// Most (directory, destination) pairs kept; the oldest go first.
const MAX_ENTRIES: usize = 4096;

/// The last pushed fs tree per (source directory, destination).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BaseBook {
    /// Key to (sequence number, tree digest).
    entries: BTreeMap<String, (u64, Digest)>,
    next: u64,
}

impl BaseBook {
    /// Loads the book at `path`; a missing or unreadable one is empty (the
    /// next push then sends every chunk).
    pub fn load(path: &Path) -> BaseBook {
        crate::statcache::read_bounded(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the book atomically (a unique temp file renamed over `path`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        crate::statcache::write_atomic(path, &bytes)
    }

    fn key(dir: &Path, destination: &str) -> String {
        format!("{}\n{destination}", dir.display())
    }

    /// The tree last pushed from `dir` to `destination`, or else the tree
    /// last pushed to `destination` from any directory (a copy of the
    /// directory, a restore elsewhere: its chunks are still the repository's),
    /// read from `store` and verified against its digest; `None` if unknown
    /// or gone.
    pub fn base(&self, store: &dyn BlobStore, dir: &Path, destination: &str) -> Option<FsTree> {
        load_tree(store, &self.base_digest(dir, destination)?)
    }

    /// The digest of the tree [`BaseBook::base`] reads, without reading it
    /// (for [`crate::SnapshotOptions::base_stored`]).
    pub fn base_digest(&self, dir: &Path, destination: &str) -> Option<Digest> {
        let suffix = format!("\n{destination}");
        let (_, d) = self.entries.get(&Self::key(dir, destination)).or_else(|| {
            self.entries
                .iter()
                .filter(|(k, _)| k.ends_with(&suffix))
                .map(|(_, v)| v)
                .max_by_key(|(n, _)| *n)
        })?;
        Some(*d)
    }

    /// Records that `manifest` (made from `dir`) was pushed to `destination`.
    pub fn record(&mut self, dir: &Path, destination: &str, manifest: &Manifest) {
        let Some(l) = manifest
            .layers
            .iter()
            .find(|l| is_fs_tree_media_type(&l.media_type))
        else {
            return;
        };
        self.next += 1;
        self.entries
            .insert(Self::key(dir, destination), (self.next, l.digest));
        while self.entries.len() > MAX_ENTRIES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }
}

/// The v2 fs tree `digest` from `store`, verified against its digest;
/// `None` if absent, damaged, unparseable or not v2.
pub(crate) fn load_tree(store: &dyn BlobStore, digest: &Digest) -> Option<FsTree> {
    let bytes = crate::restore::get_verified(store, digest).ok()?;
    FsTree::from_bytes(&bytes).ok().filter(FsTree::is_v2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_book_returns_the_last_pushed_tree_per_destination_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let world = dir.path().join("world");
        std::fs::create_dir(&world).unwrap();
        std::fs::write(world.join("f"), vec![5u8; 100_000]).unwrap();
        let store: Arc<dyn BlobStore> =
            Arc::new(pf_cas::DirStore::open(dir.path().join("store")).unwrap());
        let snap = crate::snapshot(
            &world,
            store.clone(),
            &crate::SnapshotOptions::new("t", "1"),
        )
        .unwrap();
        let path = dir.path().join("bases.json");
        let mut book = BaseBook::load(&path);
        assert!(book.base(&*store, &world, "file:///a").is_none());
        book.record(&world, "file:///a", &snap.manifest);
        book.save(&path).unwrap();
        let book = BaseBook::load(&path);
        let tree = book.base(&*store, &world, "file:///a").unwrap();
        assert_eq!(tree.entries.len(), 1);
        assert!(book.base(&*store, &world, "file:///b").is_none());
        // Another directory pushing to the same repository starts from the
        // repository's last tree.
        let copy = dir.path().join("copy");
        assert_eq!(book.base(&*store, &copy, "file:///a"), Some(tree));
        assert!(book.base(&*store, &copy, "file:///ab").is_none());
        // A damaged book is an empty one, never an error.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(BaseBook::load(&path)
            .base(&*store, &world, "file:///a")
            .is_none());
    }
}
