//! Damaged copies are repaired, never trusted: a blob cut short in a
//! `file://` repository (a power loss before the commit's fsyncs) is
//! written again by the next push, and a damaged blob in the local
//! `DirStore` is fetched again by the next pull.

use std::path::Path;
use std::sync::Arc;

use pf_cas::{BlobStore, DirStore, MemoryStore};
use pf_registry_conformance::{ImageSpec, TestImage};
use pf_registry_core::{Config, ImageRef, Registry, SignedImage};

fn file_ref(p: &Path) -> ImageRef {
    ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
}

fn image(store: &dyn BlobStore) -> TestImage {
    ImageSpec::sample(11, 6).build(store, "repair")
}

fn assert_pulls(root: &Path, img: &TestImage, src: &dyn BlobStore) {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let reg = pf_registry_file::open(&file_ref(root), &Config::default()).expect("open");
    let out = Arc::new(MemoryStore::new());
    rt.block_on(reg.pull(out.clone()))
        .expect("pull after repair");
    for d in &img.closure {
        assert_eq!(out.get(d).expect("pulled"), src.get(d).expect("source"));
    }
}

#[test]
fn push_rewrites_a_blob_cut_short_or_replaced_in_the_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let src = Arc::new(MemoryStore::new());
    let img = image(&*src);
    let reg = pf_registry_file::open(&file_ref(&root), &Config::default()).expect("open");
    let signed = SignedImage::new(&img.manifest, None);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(reg.push(src.clone(), &signed)).expect("push");

    // What a power loss before the sync leaves: one blob cut in half, one
    // empty; and a third swapped for a link to a file that is whole.
    let paths: Vec<_> = img
        .closure
        .iter()
        .take(3)
        .map(|d| reg.transport().blob_path(d))
        .collect();
    let half = std::fs::metadata(&paths[0]).expect("stat").len() / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[0])
        .and_then(|f| f.set_len(half))
        .expect("truncate");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[1])
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    let elsewhere = dir.path().join("elsewhere.zst");
    std::fs::rename(&paths[2], &elsewhere).expect("mv");
    std::os::unix::fs::symlink(&elsewhere, &paths[2]).expect("symlink");

    let rep = rt
        .block_on(reg.push(src.clone(), &signed))
        .expect("push again");
    assert_eq!(
        rep.blobs_uploaded, 3,
        "the damaged blobs must be written again"
    );
    for p in &paths {
        let m = std::fs::symlink_metadata(p).expect("stat");
        assert!(m.is_file(), "{} is not a regular file", p.display());
    }
    assert_pulls(&root, &img, &*src);
    // A third push finds everything whole.
    let rep = rt.block_on(reg.push(src.clone(), &signed)).expect("push");
    assert_eq!(rep.blobs_uploaded, 0);
}

#[test]
fn pull_fetches_again_a_damaged_blob_of_the_local_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let src = Arc::new(MemoryStore::new());
    let img = image(&*src);
    let reg = pf_registry_file::open(&file_ref(&root), &Config::default()).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(reg.push(src.clone(), &SignedImage::new(&img.manifest, None)))
        .expect("push");

    let store = Arc::new(DirStore::open(dir.path().join("store")).expect("store"));
    rt.block_on(reg.pull(store.clone())).expect("pull");
    // One byte flipped (same size) in a top-level layer and in an fs tree
    // child, one child cut short, one KV page (no declared size) flipped.
    let kv_child = img
        .closure
        .iter()
        .rev()
        .find(|d| !img.manifest.layers.iter().any(|l| l.digest == **d))
        .copied()
        .expect("an index child");
    let damaged = [img.closure[0], img.closure[img.closure.len() / 2], kv_child];
    for (i, d) in damaged.iter().enumerate() {
        let p = store.blob_path(d);
        let mut b = std::fs::read(&p).expect("read");
        if i == 1 {
            b.truncate(b.len() / 2);
        } else {
            b[0] ^= 0xff;
        }
        std::fs::write(&p, b).expect("write");
    }
    let rep = rt.block_on(reg.pull(store.clone())).expect("pull again");
    assert!(
        rep.blobs_fetched >= damaged.len() as u64,
        "fetched {} blobs, {} were damaged",
        rep.blobs_fetched,
        damaged.len()
    );
    for d in &img.closure {
        assert_eq!(
            store.get(d).expect("in store"),
            src.get(d).expect("source"),
            "blob {d} still damaged in the local store"
        );
    }
    // Intact blobs are not fetched again.
    let rep = rt.block_on(reg.pull(store.clone())).expect("pull");
    assert_eq!(rep.blobs_fetched, 0);
}
