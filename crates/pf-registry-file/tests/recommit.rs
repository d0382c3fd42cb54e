//! Committing the manifest a repository already has (an unchanged
//! re-push) rewrites nothing; any other manifest, or a current manifest
//! file that no longer holds those bytes, is written as before.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{layout, Config, ImageRef, Registry, SignedImage};

fn file_ref(p: &Path) -> ImageRef {
    ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").ino()
}

#[test]
fn an_unchanged_recommit_rewrites_nothing_and_a_changed_one_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let src = Arc::new(MemoryStore::new());
    let a = ImageSpec::sample(3, 4).build(&*src, "a");
    let b = ImageSpec::sample(4, 4).build(&*src, "b");
    let reg = pf_registry_file::open(&file_ref(&root), &Config::default()).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let signed_a = SignedImage::new(&a.manifest, None);
    rt.block_on(reg.push(src.clone(), &signed_a))
        .expect("push a");
    let current = root.join(layout::MANIFEST);
    let by_digest = root.join(layout::manifest_by_digest(&signed_a.digest()));
    let before = (inode(&current), inode(&by_digest));

    rt.block_on(reg.push(src.clone(), &signed_a))
        .expect("push a again");
    assert_eq!((inode(&current), inode(&by_digest)), before);

    // Same length, other bytes: rewritten with the manifest's.
    let len = std::fs::metadata(&current).expect("stat").len() as usize;
    std::fs::write(&current, vec![b' '; len]).expect("damage");
    rt.block_on(reg.push(src.clone(), &signed_a))
        .expect("push a over damage");
    assert_eq!(std::fs::read(&current).expect("read"), signed_a.manifest);

    let signed_b = SignedImage::new(&b.manifest, None);
    rt.block_on(reg.push(src.clone(), &signed_b))
        .expect("push b");
    assert_eq!(std::fs::read(&current).expect("read"), signed_b.manifest);
    assert_ne!(inode(&current), before.0);
    let out = Arc::new(MemoryStore::new());
    rt.block_on(reg.pull(out.clone())).expect("pull b");
}

/// A manifest whose layers are all the current manifest's is committed
/// without fsyncing its blobs again (the current one's commit did), but
/// never over a missing blob; a push that finds the blob gone sends it
/// again and commits.
#[test]
fn a_commit_the_current_manifest_covers_still_refuses_a_missing_blob() {
    use pf_registry_core::manifest::{self, Manifest};
    use pf_registry_core::transport::{CommitBlob, CommitRequest, Transport};
    use pf_registry_core::RegistryError;

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let src = Arc::new(MemoryStore::new());
    let a = ImageSpec::sample(3, 4).build(&*src, "a");
    let reg = pf_registry_file::open(&file_ref(&root), &Config::default()).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let signed_a = SignedImage::new(&a.manifest, None);
    rt.block_on(reg.push(src.clone(), &signed_a))
        .expect("push a");

    // The same layers under another annotation.
    let mut again: Manifest = a.manifest.clone();
    again
        .annotations
        .insert("org.example.again".into(), "1".into());
    let signed = SignedImage::new(&again, None);
    let closure = manifest::closure(&again, |d| Ok(pf_cas::BlobStore::get(&*src, &d.digest)?))
        .expect("closure");
    assert!(closure.len() > 2, "the sample has children");
    let victim = closure.last().expect("a blob").digest;
    std::fs::remove_file(root.join(layout::blob(&victim))).expect("remove a blob");
    let blobs: Vec<CommitBlob> = closure
        .iter()
        .map(|b| CommitBlob {
            digest: b.digest,
            raw_size: b.size,
            uploaded: None,
        })
        .collect();
    let err = rt
        .block_on(reg.transport().commit(CommitRequest {
            manifest: &signed.manifest,
            manifest_digest: signed.digest(),
            signature: None,
            blobs: &blobs,
        }))
        .expect_err("a missing blob fails the commit");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let current = root.join(layout::MANIFEST);
    assert_eq!(std::fs::read(&current).expect("read"), signed_a.manifest);

    let rep = rt
        .block_on(reg.push(src.clone(), &signed))
        .expect("push again");
    assert_eq!(rep.blobs_uploaded, 1, "only the missing blob is sent");
    assert_eq!(std::fs::read(&current).expect("read"), signed.manifest);
    let out = Arc::new(MemoryStore::new());
    rt.block_on(reg.pull(out.clone())).expect("pull");
    assert!(pf_cas::BlobStore::has(&*out, &victim).expect("has"));
}
