//! The tree memo: a directory re-pushed unchanged onto the tree it last
//! produced is not chunked, planned or serialized again.
//!
//! A tree describes what the walk saw (every entry's name, kind, mode and
//! link target, every regular file's content) cut with one chunking. The
//! memo keeps, per source directory, a fingerprint of those (file contents
//! stand in by their stat stamps, exactly as the stat cache trusts them)
//! and the digest of the tree the last snapshot produced. When the walk's
//! fingerprint matches and that tree is the snapshot's base (so it was
//! pushed to this destination: the base book records only pushes that
//! succeeded), that tree describes the directory as it is, and the
//! snapshot ends after the walk: no stat cache read, no tree parsed, built
//! or hashed. The push then checks, as for any base, that its packs are
//! still at the destination.
//!
//! Beside the memo, one small file per remembered tree lists the blobs
//! the tree references, so the push of an unchanged directory does not
//! parse the tree either (see [`KnownIndex`]).
//!
//! A record is written only when every file's stamp is trustworthy (not
//! racy, on a filesystem that keeps exact stamps); otherwise the fingerprint
//! is not taken and the snapshot runs in full. The memo sits beside the
//! stat cache and is trusted like it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pf_digest::Digest;
use pf_registry_core::manifest::{ClosureBlob, EntryKind, FsTree, KnownIndex};
use pf_registry_core::Result;

use crate::snapshot::Chunking;
use crate::walk::Walked;

/// Most directories remembered; the oldest go first.
const MAX_ENTRIES: usize = 256;

/// Bumped when anything a tree depends on changes meaning.
const MEMO_VERSION: u32 = 3;

/// One directory's last snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    fingerprint: Digest,
    result: Digest,
    seq: u64,
}

/// What the memo keeps of a tree it names: its size and children.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TreeFacts {
    tree: Digest,
    size: u64,
    children: Vec<(Digest, u64)>,
}

impl TreeFacts {
    /// The facts of `tree`, stored as `size` bytes under `digest`.
    pub(crate) fn of(digest: Digest, size: u64, tree: &FsTree) -> TreeFacts {
        let children = pf_registry_core::manifest::tree_children(tree)
            .into_iter()
            .filter_map(|c| c.size.map(|s| (c.digest, s)))
            .collect();
        TreeFacts {
            tree: digest,
            size,
            children,
        }
    }

    /// The tree's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The tree as a push takes it without reading it.
    pub(crate) fn known(self) -> KnownIndex {
        KnownIndex::Children(
            self.children
                .into_iter()
                .map(|(digest, size)| ClosureBlob {
                    digest,
                    size: Some(size),
                })
                .collect(),
        )
    }
}

/// The memo file: records keyed by absolute source directory.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Memo {
    version: u32,
    next: u64,
    entries: BTreeMap<String, Record>,
}

/// Where the memo of the stat cache at `stat_cache` lives.
pub(crate) fn path_for(stat_cache: &Path) -> PathBuf {
    let mut name = stat_cache
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".memo");
    stat_cache.with_file_name(name)
}

/// Where the [`TreeFacts`] of `tree` live beside the memo at `memo`.
fn facts_path(memo: &Path, tree: &Digest) -> PathBuf {
    let mut dir = memo.as_os_str().to_os_string();
    dir.push(".d");
    PathBuf::from(dir).join(tree.hex())
}

/// The fingerprint of a walk of `dir` (the tree's entries before any
/// content, and every file's stamp), or `None` when some stamp cannot
/// prove its file unchanged: modified within 2 s of `started` (the stat
/// cache's racy-clean rule) or on a filesystem without exact stamps.
pub(crate) fn fingerprint(
    dir: &Path,
    chunking: Chunking,
    skeleton: &FsTree,
    walked: &Walked,
    started: i64,
) -> Option<Digest> {
    let stampable = |dev: &u64| walked.stampable.get(dev).copied().unwrap_or(false);
    if walked
        .todo
        .iter()
        .any(|f| crate::statcache::racy(started, &f.st) || !stampable(&f.st.dev))
    {
        return None;
    }
    let mut h = pf_digest::Hasher::new();
    let mut put = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(format!(
        "pf-snapshot memo {MEMO_VERSION} {}",
        env!("CARGO_PKG_VERSION")
    )
    .as_bytes());
    put(dir.as_os_str().as_encoded_bytes());
    put(&serde_json::to_vec(&chunking).ok()?);
    put(&(skeleton.entries.len() as u64).to_le_bytes());
    for e in &skeleton.entries {
        // Every field the walk fills; the kind by its wire name.
        let kind: &[u8] = match e.kind {
            EntryKind::File => b"file",
            EntryKind::Dir => b"dir",
            EntryKind::Symlink => b"symlink",
            _ => return None,
        };
        put(e.path.as_bytes());
        put(kind);
        put(&e.mode.to_le_bytes());
        put(&e.size.to_le_bytes());
        put(e.target.as_deref().unwrap_or("\0").as_bytes());
        if e.blob.is_some() || !e.chunks.is_empty() || e.offset.is_some() || !e.parts.is_empty() {
            return None;
        }
    }
    put(&(walked.todo.len() as u64).to_le_bytes());
    for f in &walked.todo {
        let st = &f.st;
        let fields = [
            f.index as u64,
            st.size,
            st.mtime.0 as u64,
            st.mtime.1 as u64,
            st.ctime.0 as u64,
            st.ctime.1 as u64,
            st.ino,
            st.dev,
        ];
        for v in fields {
            put(&v.to_le_bytes());
        }
    }
    Some(h.finish())
}

impl Memo {
    /// Loads the memo at `path`; a missing, damaged or older one is empty.
    pub(crate) fn load(path: &Path) -> Memo {
        crate::statcache::read_bounded(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Memo>(&b).ok())
            .filter(|m| m.version == MEMO_VERSION)
            .unwrap_or_default()
    }

    /// Whether the last snapshot of `dir` produced `tree`.
    pub(crate) fn names(&self, dir: &Path, tree: &Digest) -> bool {
        self.entries
            .get(&dir.display().to_string())
            .is_some_and(|r| r.result == *tree)
    }

    /// The facts of `base` (kept beside the memo at `path`) if `base`
    /// describes `dir` as the walk with this `fingerprint` saw it: the last
    /// snapshot of `dir` had this fingerprint and produced `base`.
    pub(crate) fn unchanged(
        &self,
        path: &Path,
        dir: &Path,
        fingerprint: &Digest,
        base: &Digest,
    ) -> Option<TreeFacts> {
        self.entries
            .get(&dir.display().to_string())
            .filter(|r| r.fingerprint == *fingerprint && r.result == *base)?;
        crate::statcache::read_bounded(&facts_path(path, base))
            .ok()
            .and_then(|b| serde_json::from_slice::<TreeFacts>(&b).ok())
            .filter(|f| f.tree == *base)
    }

    /// Records that a snapshot of `dir` with `fingerprint` produced the
    /// tree `facts` describe, and writes its facts and the memo to `path`
    /// atomically.
    pub(crate) fn record(
        mut self,
        path: &Path,
        dir: &Path,
        fingerprint: Digest,
        facts: &TreeFacts,
    ) -> Result<()> {
        let result = facts.tree;
        let before = self.results();
        let fpath = facts_path(path, &result);
        if let Some(d) = fpath.parent() {
            std::fs::create_dir_all(d)
                .map_err(crate::io_ctx(format!("creating {}", d.display())))?;
        }
        let bytes = serde_json::to_vec(facts).unwrap_or_default();
        crate::statcache::write_atomic(&fpath, &bytes)?;
        self.version = MEMO_VERSION;
        self.next += 1;
        let seq = self.next;
        self.entries.insert(
            dir.display().to_string(),
            Record {
                fingerprint,
                result,
                seq,
            },
        );
        while self.entries.len() > MAX_ENTRIES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, r)| r.seq)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
        self.save(path, before)
    }

    /// Forgets `dir` (its last snapshot could not be fingerprinted) and
    /// writes the memo to `path` if it changed.
    pub(crate) fn forget(mut self, path: &Path, dir: &Path) -> Result<()> {
        let before = self.results();
        if self.entries.remove(&dir.display().to_string()).is_some() {
            self.save(path, before)?;
        }
        Ok(())
    }

    /// The trees the records name.
    fn results(&self) -> std::collections::HashSet<Digest> {
        self.entries.values().map(|r| r.result).collect()
    }

    /// Writes the memo to `path`, then removes the facts of trees in
    /// `before` that no record names any more.
    fn save(self, path: &Path, before: std::collections::HashSet<Digest>) -> Result<()> {
        let bytes = serde_json::to_vec(&self).unwrap_or_default();
        crate::statcache::write_atomic(path, &bytes)?;
        let now = self.results();
        for gone in before.difference(&now) {
            // A left-over file is only a few bytes, and never read unless
            // a record names its tree again (then it is rewritten first).
            let _ = std::fs::remove_file(facts_path(path, gone));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use pf_cas::{BlobStore, DirStore};

    use crate::{snapshot_at, statcache, Snapshot, SnapshotOptions};

    struct World {
        _tmp: tempfile::TempDir,
        dir: std::path::PathBuf,
        store: Arc<dyn BlobStore>,
        opts: SnapshotOptions,
    }

    fn world() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("world");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.txt"), b"alpha").unwrap();
        fs::write(dir.join("sub/b.bin"), vec![9u8; 300_000]).unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(DirStore::open(tmp.path().join("store")).unwrap());
        let mut opts = SnapshotOptions::new("t", "1");
        opts.stat_cache = Some(tmp.path().join("statcache.json"));
        World {
            _tmp: tmp,
            dir,
            store,
            opts,
        }
    }

    impl World {
        /// A snapshot onto the tree of `prev` (as the CLI's base book
        /// gives it), run `secs` after now so nothing is racy.
        fn snap(&mut self, prev: Option<&Snapshot>, secs: i64) -> Snapshot {
            self.opts.base_stored = prev.map(tree_of);
            snapshot_at(
                &self.dir,
                self.store.clone(),
                &self.opts,
                statcache::now_secs() + secs,
            )
            .unwrap()
        }
    }

    fn tree_of(s: &Snapshot) -> pf_digest::Digest {
        s.manifest.layers[0].digest
    }

    #[test]
    fn an_unchanged_directory_is_its_last_tree_and_any_change_is_seen() {
        let mut w = world();
        let first = w.snap(None, 10);
        assert!(!first.unchanged);
        // Without a base (another destination): a full run.
        assert!(!w.snap(None, 10).unchanged);
        let second = w.snap(Some(&first), 10);
        assert!(second.unchanged, "the memo skips an unchanged directory");
        assert_eq!(tree_of(&second), tree_of(&first));
        assert_eq!(second.cache_hits, 2);
        let third = w.snap(Some(&second), 10);
        assert!(third.unchanged);
        // Each kind of change defeats the memo and shows in the tree.
        type Change = Box<dyn Fn(&std::path::Path)>;
        let changes: Vec<Change> = vec![
            Box::new(|d| fs::write(d.join("a.txt"), b"alphb").unwrap()),
            Box::new(|d| fs::rename(d.join("a.txt"), d.join("c.txt")).unwrap()),
            Box::new(|d| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o750)).unwrap()
            }),
            Box::new(|d| fs::create_dir(d.join("empty")).unwrap()),
            Box::new(|d| std::os::unix::fs::symlink("c.txt", d.join("link")).unwrap()),
            Box::new(|d| {
                fs::remove_file(d.join("link")).unwrap();
                std::os::unix::fs::symlink("sub", d.join("link")).unwrap()
            }),
        ];
        let mut last = third;
        for (i, change) in changes.iter().enumerate() {
            change(&w.dir);
            let next = w.snap(Some(&last), 10);
            assert!(!next.unchanged, "change {i} went unseen");
            assert_ne!(tree_of(&next), tree_of(&last), "change {i}");
            // Onto the old tree (the push of `next` failed): a full run.
            assert!(!w.snap(Some(&last), 10).unchanged, "change {i}");
            let settled = w.snap(Some(&next), 10);
            assert!(settled.unchanged, "change {i}: settles again");
            assert_eq!(tree_of(&settled), tree_of(&next));
            last = settled;
        }
    }

    #[test]
    fn the_memo_needs_its_tree_as_base_its_chunking_and_settled_files() {
        let mut w = world();
        let first = w.snap(None, 10);
        let second = w.snap(Some(&first), 10);
        assert!(w.snap(Some(&second), 10).unchanged);
        // Files changed within 2 s of the run prove nothing: full runs,
        // and no record, so the next settled run is full too.
        assert!(!w.snap(Some(&second), 0).unchanged);
        assert!(!w.snap(Some(&second), 10).unchanged);
        assert!(w.snap(Some(&second), 10).unchanged);
        // Another base (say, a different destination's last tree).
        let other = {
            fs::write(w.dir.join("a.txt"), b"other").unwrap();
            let o = w.snap(None, 10);
            fs::write(w.dir.join("a.txt"), b"alpha").unwrap();
            o
        };
        assert!(!w.snap(Some(&other), 10).unchanged);
        // That run's tree differs from `second`'s (its new chunk went into
        // a pack of its own), so onto `second`: one full run, then settled.
        assert!(!w.snap(Some(&second), 10).unchanged);
        assert!(w.snap(Some(&second), 10).unchanged);
        // Another chunking.
        w.opts.chunking.cdc_avg *= 2;
        assert!(!w.snap(Some(&second), 10).unchanged);
        // A base tree gone from the store: a full run, never a dangling tree.
        w.opts.chunking = crate::Chunking::default();
        let s = w.snap(Some(&second), 10);
        assert!(!s.unchanged);
        assert!(w.snap(Some(&s), 10).unchanged);
        let gone = tree_of(&s);
        let path = DirStore::open(w._tmp.path().join("store"))
            .unwrap()
            .blob_path(&gone);
        fs::remove_file(path).unwrap();
        let after = w.snap(Some(&s), 10);
        assert!(!after.unchanged);
        assert!(w.store.size(&tree_of(&after)).unwrap().is_some());
        // A damaged stored tree is never named again either.
        let settled = w.snap(Some(&after), 10);
        assert!(settled.unchanged);
        let path = DirStore::open(w._tmp.path().join("store"))
            .unwrap()
            .blob_path(&tree_of(&after));
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::remove_file(&path).unwrap();
        fs::write(&path, bytes).unwrap();
        assert!(!w.snap(Some(&after), 10).unchanged);
    }

    /// The facts files beside the memo at `w`'s stat cache.
    fn facts_files(w: &World) -> Vec<String> {
        let dir = w._tmp.path().join("statcache.json.memo.d");
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn an_unchanged_snapshot_offers_its_trees_children_kept_beside_the_memo() {
        use pf_registry_core::manifest::{index_children, KnownIndex, FS_TREE_V2_MEDIA_TYPE};
        let mut w = world();
        let first = w.snap(None, 10);
        // A full run offers the tree it built.
        let offered = first.source.prepared(&tree_of(&first)).unwrap();
        assert!(matches!(
            offered.downcast_ref::<KnownIndex>(),
            Some(KnownIndex::Tree(_))
        ));
        assert_eq!(facts_files(&w), vec![tree_of(&first).hex()]);
        let second = w.snap(Some(&first), 10);
        assert!(second.unchanged);
        let bytes = w.store.get(&tree_of(&first)).unwrap();
        assert_eq!(second.manifest.layers[0].size, bytes.len() as u64);
        let offered = second.source.prepared(&tree_of(&second)).unwrap();
        let Some(KnownIndex::Children(children)) = offered.downcast_ref::<KnownIndex>() else {
            panic!("children offered");
        };
        assert_eq!(
            *children,
            index_children(FS_TREE_V2_MEDIA_TYPE, &bytes).unwrap()
        );
        // A new tree replaces the old one's facts.
        fs::write(w.dir.join("a.txt"), b"changed").unwrap();
        let third = w.snap(Some(&second), 10);
        assert!(!third.unchanged);
        assert_eq!(facts_files(&w), vec![tree_of(&third).hex()]);
        // Facts gone or naming another tree: a full run, which writes them.
        let path = w
            ._tmp
            .path()
            .join("statcache.json.memo.d")
            .join(tree_of(&third).hex());
        fs::remove_file(&path).unwrap();
        assert!(!w.snap(Some(&third), 10).unchanged);
        assert!(w.snap(Some(&third), 10).unchanged);
        let other = crate::memo::TreeFacts::of(tree_of(&first), 1, &Default::default());
        fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(!w.snap(Some(&third), 10).unchanged);
        assert!(w.snap(Some(&third), 10).unchanged);
    }
}
