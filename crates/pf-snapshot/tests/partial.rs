//! Partial restore, restores from a store that holds the version,
//! `cat_file` and `pull_tree` against a file:// repository built by
//! pushing a real directory, with a transport that records every blob the
//! pull asks for: only the blobs the selected files are read from, or the
//! local store lacks intact, may be fetched.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{EntryKind, FsTree, BLOB_MEDIA_TYPE, FS_TREE_V2_MEDIA_TYPE};
use pf_registry_core::{
    ByteStream, CommitRequest, Config, Descriptor, DirStore, EncodedBlob, Engine, FetchedManifest,
    ImageRef, Registry, RegistryError, Result, SignedImage, Transport, UploadedBlob,
};
use pf_snapshot::{restore, Chunking, SnapshotOptions};

/// The file transport, recording the digest of every blob fetched.
struct Counting {
    inner: pf_registry_file::FileTransport,
    fetched: Arc<Log>,
}

/// What a registry fetched: whole blobs, and ranges (digest, offset, len).
#[derive(Default)]
struct Log {
    whole: Mutex<Vec<Digest>>,
    ranged: Mutex<Vec<(Digest, u64, u64)>>,
}

impl Log {
    /// Bytes read by range from `pack`, its frame table reads (at offset
    /// 0) excluded.
    fn ranged_bytes(&self, pack: &Digest) -> u64 {
        let v = self.ranged.lock().unwrap();
        v.iter()
            .filter(|(d, off, _)| d == pack && *off > 0)
            .map(|r| r.2)
            .sum()
    }

    /// Packs read by range.
    fn ranged_packs(&self) -> BTreeSet<Digest> {
        self.ranged.lock().unwrap().iter().map(|r| r.0).collect()
    }
}

#[async_trait]
impl Transport for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.inner.missing(digests).await
    }
    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        self.inner.put_blob(blob).await
    }
    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        self.inner.commit(req).await
    }
    async fn get_manifest(&self) -> Result<FetchedManifest> {
        self.inner.get_manifest().await
    }
    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        self.fetched.whole.lock().unwrap().push(*digest);
        self.inner.get_blob(digest).await
    }
    async fn get_blob_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<pf_registry_core::Bytes> {
        self.fetched
            .ranged
            .lock()
            .unwrap()
            .push((*digest, offset, len));
        self.inner.get_blob_range(digest, offset, len).await
    }
}

/// Small chunking so a test directory has several packs and a file of
/// several chunks.
fn chunking() -> Chunking {
    Chunking {
        cdc_min: 8 << 10,
        cdc_avg: 16 << 10,
        cdc_max: 32 << 10,
        pack_size: 7000,
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    world: PathBuf,
    repo: ImageRef,
    tree: FsTree,
    /// The manifest's layers: the fs tree and a model blob.
    tree_digest: Digest,
    model_digest: Digest,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    /// Pushes a directory with packed small files in two directories, a
    /// whole-blob file, a multi-chunk file and a symlink, plus a non-index
    /// "model" layer.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let world = tmp.path().join("world");
        for (i, name) in [
            "small/a.txt",
            "small/b.txt",
            "small/c.txt",
            "other/x.txt",
            "other/y.txt",
        ]
        .iter()
        .enumerate()
        {
            let p = world.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, pf_testsupport::noise(3000 + i * 100, i as u64 + 1)).unwrap();
        }
        fs::create_dir_all(world.join("big/deep")).unwrap();
        fs::write(
            world.join("big/deep/data.bin"),
            pf_testsupport::noise(300 << 10, 99),
        )
        .unwrap();
        fs::write(world.join("mid.bin"), pf_testsupport::noise(20 << 10, 7)).unwrap();
        std::os::unix::fs::symlink("a.txt", world.join("small/link")).unwrap();

        let store = Arc::new(DirStore::open(tmp.path().join("store")).unwrap());
        let mut opts = SnapshotOptions::new("t", "1");
        opts.chunking = chunking();
        let mut snap = pf_snapshot::snapshot(&world, store.clone(), &opts).unwrap();
        let model = pf_testsupport::noise(50 << 10, 1234);
        let model_digest = store.put(&model).unwrap();
        snap.manifest.layers.push(Descriptor {
            role: "model.base".into(),
            media_type: BLOB_MEDIA_TYPE.into(),
            digest: model_digest,
            size: model.len() as u64,
        });
        let tree_layer = &snap.manifest.layers[0];
        assert_eq!(tree_layer.media_type, FS_TREE_V2_MEDIA_TYPE);
        let tree_digest = tree_layer.digest;
        let tree = FsTree::from_bytes(&store.get(&tree_digest).unwrap()).unwrap();
        let repo =
            ImageRef::parse(&format!("file://{}", tmp.path().join("repo").display())).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let reg = pf_registry_file::open(&repo, &Config::default()).unwrap();
        rt.block_on(reg.push(snap.source.clone(), &SignedImage::new(&snap.manifest, None)))
            .unwrap();
        let f = Fixture {
            tmp,
            world,
            repo,
            tree,
            tree_digest,
            model_digest,
            rt,
        };
        // The fixture has what the tests rely on.
        let big = f.entry("big/deep/data.bin");
        assert!(big.parts.len() >= 3, "{} chunks", big.parts.len());
        assert!(f.tree.packs.len() >= 4, "{} packs", f.tree.packs.len());
        let packs: HashSet<_> = ["small/a.txt", "small/c.txt"]
            .iter()
            .map(|p| f.tree.pieces(f.entry(p))[0].blob)
            .collect();
        assert_eq!(packs.len(), 2, "small/a and small/c lie in two packs");
        assert_eq!(f.entry("small/a.txt").parts.len(), 1);
        f
    }

    fn entry(&self, path: &str) -> &pf_registry_core::FsEntry {
        self.tree.entries.iter().find(|e| e.path == path).unwrap()
    }

    /// A registry on the repository whose fetches land in the returned log.
    fn registry(&self) -> (impl Registry, Arc<Log>) {
        let fetched = Arc::new(Log::default());
        let t = Counting {
            inner: pf_registry_file::FileTransport::new(&self.repo).unwrap(),
            fetched: fetched.clone(),
        };
        (Engine::new(t, Config::default(), None), fetched)
    }

    /// A fresh, empty local store.
    fn store(&self, name: &str) -> Arc<DirStore> {
        Arc::new(DirStore::open(self.tmp.path().join(name)).unwrap())
    }

    /// The blobs the files at or under `paths` are read from, and the fs tree.
    fn needed(&self, paths: &[&str]) -> BTreeSet<Digest> {
        let under = |p: &str| {
            paths
                .iter()
                .any(|inc| p == *inc || p.starts_with(&format!("{inc}/")))
        };
        let mut need: BTreeSet<Digest> = self
            .tree
            .entries
            .iter()
            .filter(|e| under(&e.path))
            .flat_map(|e| self.tree.pieces(e))
            .map(|p| p.blob)
            .collect();
        need.insert(self.tree_digest);
        need
    }
}

/// Every path under `root`, relative, with a trailing `/` for directories.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                stack.push(e.path());
            } else {
                out.insert(rel);
            }
        }
    }
    out
}

/// The whole blobs fetched (each once).
fn log(fetched: &Log) -> BTreeSet<Digest> {
    let v = fetched.whole.lock().unwrap();
    let set: BTreeSet<Digest> = v.iter().copied().collect();
    assert_eq!(set.len(), v.len(), "a blob was fetched twice");
    set
}

#[test]
fn include_restores_exactly_the_selection_and_fetches_only_its_blobs() {
    let f = Fixture::new();
    let (reg, fetched) = f.registry();
    let dest = f.tmp.path().join("out");
    let include = vec!["small/a.txt".to_string(), "big/".to_string()];
    let opts = restore::RestoreOptions::default().with_include(include);
    let rep =
        f.rt.block_on(restore::pull_into_dir(&reg, f.store("s1"), &dest, &opts))
            .unwrap();
    let want: BTreeSet<String> = [
        "small/",
        "small/a.txt",
        "big/",
        "big/deep/",
        "big/deep/data.bin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(walk(&dest), want);
    for p in ["small/a.txt", "big/deep/data.bin"] {
        assert_eq!(
            fs::read(dest.join(p)).unwrap(),
            fs::read(f.world.join(p)).unwrap()
        );
    }
    // The tree whole; the selection's chunks by range from their packs,
    // nothing else.
    let got = log(&fetched);
    assert_eq!(got, f.needed(&[]));
    assert_eq!(rep.pull.blobs_fetched, got.len() as u64);
    let mut packs = f.needed(&["small/a.txt", "big"]);
    packs.remove(&f.tree_digest);
    assert_eq!(fetched.ranged_packs(), packs);
    let a_pack = f.tree.pieces(f.entry("small/a.txt"))[0].blob;
    let a_pack_size = f.tree.packs.iter().find(|p| p.blob == a_pack).unwrap().size;
    assert!(
        fetched.ranged_bytes(&a_pack) < a_pack_size,
        "small/a.txt alone is read from its pack"
    );
    assert!(rep.blobs_skipped > 0);
    let size = |p: &str| f.entry(p).size;
    assert_eq!(
        rep.restored_bytes,
        size("small/a.txt") + size("big/deep/data.bin")
    );

    // A symlink inside an included subtree is restored; its target
    // (outside the selection) is fetched only if included too.
    let (reg, fetched) = f.registry();
    let dest = f.tmp.path().join("out2");
    let opts = restore::RestoreOptions::default().with_include(vec!["small/link".into()]);
    f.rt.block_on(restore::pull_into_dir(&reg, f.store("s2"), &dest, &opts))
        .unwrap();
    assert_eq!(
        fs::read_link(dest.join("small/link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(log(&fetched), f.needed(&[]));
}

#[test]
fn a_full_restore_still_fetches_everything() {
    let f = Fixture::new();
    let (reg, fetched) = f.registry();
    let dest = f.tmp.path().join("out");
    let rep =
        f.rt.block_on(restore::pull_into_dir(
            &reg,
            f.store("s"),
            &dest,
            &restore::RestoreOptions::default(),
        ))
        .unwrap();
    let mut all = f.needed(&["small", "other", "big", "mid.bin"]);
    all.insert(f.model_digest);
    assert_eq!(log(&fetched), all);
    assert_eq!(rep.blobs_skipped, 0);
    assert_eq!(walk(&dest).len(), walk(&f.world).len(), "{:?}", walk(&dest));
}

/// `b` holds the same paths as `a`, each file with the same bytes and each
/// symlink with the same target.
fn same_files(a: &Path, b: &Path) {
    assert_eq!(walk(a), walk(b));
    for rel in walk(a).iter().filter(|r| !r.ends_with('/')) {
        let (x, y) = (a.join(rel), b.join(rel));
        if x.is_symlink() {
            assert_eq!(fs::read_link(&x).unwrap(), fs::read_link(&y).unwrap());
        } else {
            assert!(
                fs::read(&x).unwrap() == fs::read(&y).unwrap(),
                "{rel} differs"
            );
        }
    }
}

#[test]
fn a_restore_lays_out_local_packs_and_fetches_damaged_ones_again() {
    let f = Fixture::new();
    let (reg, fetched) = f.registry();
    let store = f.store("have");
    f.rt.block_on(reg.pull(store.clone())).unwrap();
    fetched.whole.lock().unwrap().clear();
    // Every pack is local and whole: nothing is fetched, every byte is
    // restored (from the copies checked as they are laid out).
    let opts = restore::RestoreOptions::default();
    let dest = f.tmp.path().join("out");
    f.rt.block_on(restore::pull_into_dir(&reg, store.clone(), &dest, &opts))
        .unwrap();
    assert_eq!(log(&fetched), BTreeSet::new());
    same_files(&f.world, &dest);
    // One local pack with a byte flipped, one cut short: each is fetched
    // again, and the restore holds the pushed bytes, not the damaged ones.
    let packs: Vec<Digest> = f.tree.packs.iter().map(|p| p.blob).collect();
    assert!(packs.len() >= 3, "{} packs", packs.len());
    let (flipped, cut) = (packs[1], packs[packs.len() - 1]);
    let p = store.blob_path(&flipped);
    let mut b = fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x5a;
    fs::write(&p, b).unwrap();
    let p = store.blob_path(&cut);
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() / 2]).unwrap();
    let dest = f.tmp.path().join("out2");
    f.rt.block_on(restore::pull_into_dir(&reg, store.clone(), &dest, &opts))
        .unwrap();
    assert_eq!(log(&fetched), BTreeSet::from([flipped, cut]));
    same_files(&f.world, &dest);
}

#[test]
fn bad_or_unknown_includes_fail_before_anything_is_created() {
    let f = Fixture::new();
    for (inc, fetches_tree) in [("../x", false), ("/etc", false), ("small/nothere", true)] {
        let (reg, fetched) = f.registry();
        let dest = f.tmp.path().join("out");
        let opts = restore::RestoreOptions::default().with_include(vec![inc.into()]);
        let err =
            f.rt.block_on(restore::pull_into_dir(&reg, f.store("s"), &dest, &opts))
                .unwrap_err();
        assert!(
            matches!(err, RegistryError::BadReference { .. }),
            "{inc}: {err}"
        );
        assert!(!dest.exists(), "{inc}");
        let want = if fetches_tree {
            f.needed(&[])
        } else {
            BTreeSet::new()
        };
        assert_eq!(log(&fetched), want, "{inc}");
    }
}

#[test]
fn cat_writes_one_file_and_fetches_only_its_blobs() {
    let f = Fixture::new();
    for path in ["big/deep/data.bin", "other/y.txt", "mid.bin"] {
        let (reg, fetched) = f.registry();
        let mut out = Vec::new();
        let rep =
            f.rt.block_on(pf_snapshot::cat_file(&reg, f.store(path), path, &mut out))
                .unwrap();
        assert_eq!(out, fs::read(f.world.join(path)).unwrap(), "{path}");
        assert_eq!(rep.bytes, out.len() as u64);
        assert_eq!(log(&fetched), f.needed(&[]), "{path}: the tree whole");
        let mut packs = f.needed(&[path]);
        packs.remove(&f.tree_digest);
        assert_eq!(fetched.ranged_packs(), packs, "{path}: its packs by range");
    }
    let (reg, _) = f.registry();
    let code = |p: &str| {
        f.rt.block_on(pf_snapshot::cat_file(
            &reg,
            f.store("e"),
            p,
            &mut Vec::new(),
        ))
        .unwrap_err()
    };
    // The pf exit codes: 1 bad input, 2 not found.
    let code = |p: &str| match code(p) {
        RegistryError::BadReference { .. } => 1,
        RegistryError::NotFound { .. } => 2,
        other => panic!("{p}: {other}"),
    };
    assert_eq!(code("small"), 1, "a directory");
    assert_eq!(code("small/link"), 1, "a symlink");
    assert_eq!(code("../etc/passwd"), 1, "an invalid path");
    assert_eq!(code("small/nothere"), 2, "a missing path");
}

#[test]
fn pull_tree_fetches_only_the_tree_and_lists_what_was_pushed() {
    let f = Fixture::new();
    let (reg, fetched) = f.registry();
    let (rep, tree) =
        f.rt.block_on(pf_snapshot::pull_tree(&reg, f.store("s")))
            .unwrap();
    assert_eq!(log(&fetched), f.needed(&[]));
    assert_eq!(rep.pull.blobs_fetched, 1);
    let listed: BTreeSet<String> = pf_snapshot::list(&tree, None)
        .unwrap()
        .iter()
        .map(|e| match e.kind {
            EntryKind::Dir => format!("{}/", e.path),
            _ => e.path.clone(),
        })
        .collect();
    assert_eq!(listed, walk(&f.world));
    let big = pf_snapshot::list(&tree, Some("big/deep")).unwrap();
    assert_eq!(big.len(), 2);
    assert_eq!(big[1].size, 300 << 10);
}
