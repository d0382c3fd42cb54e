//! Blobs listed by a KV page index declare no size: a tiny hostile
//! repository could make each decode to the old 64 GiB cap. A pull bounds
//! each such blob (`Config::max_blob_size`) and their total
//! (`Config::max_undeclared_total`), stores nothing it refused and leaves
//! no temp file behind.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use pf_cas::{BlobStore, DirStore};
use pf_digest::{Digest, Hasher};
use pf_registry_core::manifest::{AgentInfo, KvPage, KvPages, KV_PAGES_MEDIA_TYPE};
use pf_registry_core::{Config, Descriptor, ImageRef, Manifest, Registry, RegistryError};

/// Writes `raw` (given as `len` bytes from `fill`) as an encoded blob of
/// the repository at `root`; returns its digest.
fn write_blob(root: &Path, len: u64, byte: u8) -> Digest {
    let chunk = vec![byte; 1 << 20];
    let mut h = Hasher::new();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        h.update(&chunk[..n]);
        enc.write_all(&chunk[..n]).expect("encode");
        left -= n as u64;
    }
    let d = h.finish();
    let bytes = enc.finish().expect("finish");
    put_encoded(root, &d, &bytes);
    d
}

fn put_encoded(root: &Path, d: &Digest, bytes: &[u8]) {
    let t = pf_registry_file::FileTransport::new(&file_ref(root)).expect("transport");
    let p = t.blob_path(d);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, bytes).expect("write blob");
}

fn file_ref(p: &Path) -> ImageRef {
    ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
}

/// A repository whose one layer is a KV page index listing `pages`.
fn kv_repo(root: &Path, pages: &[(Digest, Digest)]) {
    let idx = KvPages {
        pages: pages
            .iter()
            .enumerate()
            .map(|(i, (k, v))| KvPage {
                layer: 0,
                page: i as u64,
                k: *k,
                v: *v,
            })
            .collect(),
    }
    .to_bytes();
    let d = Digest::of(&idx);
    put_encoded(root, &d, &zstd::bulk::compress(&idx, 3).expect("compress"));
    let mut m = Manifest::new(
        AgentInfo {
            name: "bomb".into(),
            version: "1".into(),
        },
        "2026-11-30T00:00:00Z",
    );
    m.layers.push(Descriptor {
        role: "cache.manifest".into(),
        media_type: KV_PAGES_MEDIA_TYPE.into(),
        digest: d,
        size: idx.len() as u64,
    });
    std::fs::write(root.join("manifest.json"), m.to_bytes()).expect("manifest");
}

fn repo_size(root: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(root).expect("read_dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("stat");
        n += if m.is_dir() {
            repo_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn pull(root: &Path, store: &Arc<DirStore>, cfg: &Config) -> Result<(), RegistryError> {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let reg = pf_registry_file::open(&file_ref(root), cfg).expect("open");
    rt.block_on(reg.pull(store.clone() as Arc<dyn BlobStore>))
        .map(|_| ())
}

fn assert_no_temp_files(store: &DirStore) {
    let left: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .expect("store tmp")
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

#[test]
fn kv_page_blob_with_no_declared_size_is_capped_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    // 300 MiB of zeros: a few KiB encoded, above the default per-blob cap.
    let bomb = write_blob(&root, 300 << 20, 0);
    let small = write_blob(&root, 1000, 1);
    kv_repo(&root, &[(small, bomb)]);
    assert!(repo_size(&root) < 100 << 10, "the repository is tiny");

    let store = Arc::new(DirStore::open(dir.path().join("store")).expect("store"));
    let err = pull(&root, &store, &Config::default()).expect_err("the bomb must be refused");
    match &err {
        RegistryError::InvalidData { what, reason } => {
            assert!(what.contains(&bomb.to_string()), "{err}");
            assert!(reason.contains("max_blob_size"), "{err}");
        }
        other => panic!("expected InvalidData, got {other}"),
    }
    assert!(!store.has(&bomb).expect("has"));
    assert_no_temp_files(&store);
}

#[test]
fn blobs_with_no_declared_size_share_one_total_per_pull() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    // Six distinct 800 KiB pages: 4.8 MiB undeclared in all.
    let pages: Vec<(Digest, Digest)> = (0..3u8)
        .map(|i| {
            (
                write_blob(&root, 800 << 10, 2 * i + 10),
                write_blob(&root, 800 << 10, 2 * i + 11),
            )
        })
        .collect();
    kv_repo(&root, &pages);
    let cfg = Config {
        max_blob_size: 1 << 20,
        max_undeclared_total: 3 << 20,
        ..Config::default()
    };
    let store = Arc::new(DirStore::open(dir.path().join("store")).expect("store"));
    let err = pull(&root, &store, &cfg).expect_err("over the total");
    assert!(
        matches!(&err, RegistryError::InvalidData { reason, .. } if reason.contains("max_undeclared_total")),
        "{err}"
    );
    assert_no_temp_files(&store);
    let stored: u64 = store
        .list()
        .expect("list")
        .iter()
        .filter_map(|d| store.size(d).ok().flatten())
        .sum();
    assert!(stored <= 3 << 20, "{stored} bytes stored past the total");

    // Within both limits the same image pulls.
    let cfg = Config {
        max_undeclared_total: 5 << 20,
        ..cfg
    };
    pull(&root, &store, &cfg).expect("within the limits");
    for (k, v) in &pages {
        assert_eq!(Digest::of(&store.get(k).expect("k")), *k);
        assert_eq!(Digest::of(&store.get(v).expect("v")), *v);
    }
    assert_no_temp_files(&store);
}
