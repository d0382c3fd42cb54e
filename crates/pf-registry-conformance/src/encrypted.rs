//! The conformance case `encrypted_roundtrip`: an image sealed with
//! pf-crypt is an ordinary image to every backend. Pushed signed, it
//! pulls with the signature verified before anything is opened, opens
//! with the recipient's identity and restores byte for byte; the pulled
//! outer manifest names no plaintext digest; another identity is refused
//! naming the recipient; the next version, sealed against the first's
//! seals, sends less than half the bytes.

use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_crypt::{CryptError, DataKey, Identity};
use pf_registry_core::{FsTree, Manifest, Registry, SignedImage, Verification};
use pf_sign::SigningKey;

use crate::image::ImageSpec;
use crate::{engine, pull_ref, trusting, Subject};

fn tree_of(m: &Manifest, store: &dyn BlobStore) -> FsTree {
    let l = m.layers.first().expect("an fs tree layer");
    FsTree::from_bytes(&store.get(&l.digest).expect("tree")).expect("tree")
}

/// Runs the case on `backend`.
pub async fn encrypted_roundtrip(backend: &Subject) {
    let base = backend.config();
    let key = SigningKey::generate().expect("keygen");
    let (alice, mallory) = (
        Identity::generate().expect("identity"),
        Identity::generate().expect("identity"),
    );
    let data_key = DataKey::generate().expect("data key");
    let mut spec = ImageSpec::sample(41, 9);
    spec.kv.clear();
    spec.layers.clear();
    let plain = Arc::new(MemoryStore::new());
    let img = spec.build(&*plain, "crypt-a");
    let sealed_store = Arc::new(MemoryStore::new());
    let sealed = pf_crypt::seal_image(
        &img.manifest,
        &*plain,
        &data_key,
        &[alice.recipient()],
        &[],
        3,
        &*sealed_store,
    )
    .expect("seal a");
    let r = backend.fresh_ref("crypt");
    let ra = engine(backend, &r, &base)
        .push(
            sealed_store.clone(),
            &SignedImage::new(&sealed.manifest, Some(&key)),
        )
        .await
        .unwrap_or_else(|e| panic!("push encrypted: {e}"));

    let dst = Arc::new(MemoryStore::new());
    let pulled = engine(
        backend,
        &pull_ref(backend, &r, &ra.resolved),
        &trusting(&base, &key),
    )
    .pull(dst.clone())
    .await
    .unwrap_or_else(|e| panic!("pull encrypted: {e}"));
    assert!(matches!(pulled.verification, Verification::Verified { .. }));
    assert_eq!(pulled.manifest, sealed.manifest);
    let outer = String::from_utf8_lossy(&pulled.manifest_bytes).into_owned();
    let tree_a = tree_of(&img.manifest, &*plain);
    for d in img
        .closure
        .iter()
        .chain(tree_a.packs.iter().map(|p| &p.blob))
    {
        assert!(
            !outer.contains(&d.hex()),
            "plaintext digest {d} in the outer manifest"
        );
    }
    match pf_crypt::open_image(&pulled.manifest, &*dst, Some(&mallory), u64::MAX) {
        Err(CryptError::WrongIdentity { recipients, .. }) => {
            assert_eq!(recipients, vec![alice.key_id()])
        }
        other => panic!("another identity: {other:?}"),
    }
    let inner =
        pf_crypt::open_image(&pulled.manifest, &*dst, Some(&alice), u64::MAX).expect("open");
    assert_eq!(inner, img.manifest);
    let out = tempfile::tempdir().expect("tempdir");
    pf_snapshot::restore::restore_from_store(
        &inner,
        &*dst,
        &out.path().join("a"),
        &Default::default(),
    )
    .expect("restore");
    for (path, data) in &spec.files {
        assert_eq!(
            &std::fs::read(out.path().join("a").join(path)).expect("file"),
            data,
            "{path}"
        );
    }

    // Version B: one byte changed in the largest file; sealed against A's
    // seals it shares A's unchanged sealed packs.
    let mut spec_b = spec.clone();
    let big = (0..spec_b.files.len())
        .max_by_key(|&i| spec_b.files[i].1.len())
        .expect("files");
    let mid = spec_b.files[big].1.len() / 2;
    spec_b.files[big].1[mid] ^= 0xff;
    let plain_b = Arc::new(MemoryStore::new());
    let b = spec_b.build_on(&*plain_b, "crypt-b", Some(&tree_a));
    let sealed_b = pf_crypt::seal_image(
        &b.manifest,
        &*plain_b,
        &data_key,
        &[alice.recipient()],
        &sealed.packs,
        3,
        &*sealed_store,
    )
    .expect("seal b");
    let rb = engine(backend, &r, &base)
        .push(
            sealed_store.clone(),
            &SignedImage::new(&sealed_b.manifest, Some(&key)),
        )
        .await
        .unwrap_or_else(|e| panic!("push encrypted b: {e}"));
    assert!(
        rb.raw_bytes_uploaded * 2 < ra.raw_bytes_uploaded,
        "B sent {} raw bytes, A {}",
        rb.raw_bytes_uploaded,
        ra.raw_bytes_uploaded
    );
    let dst_b = Arc::new(MemoryStore::new());
    let pulled_b = engine(
        backend,
        &pull_ref(backend, &r, &rb.resolved),
        &trusting(&base, &key),
    )
    .pull(dst_b.clone())
    .await
    .unwrap_or_else(|e| panic!("pull encrypted b: {e}"));
    let inner_b =
        pf_crypt::open_image(&pulled_b.manifest, &*dst_b, Some(&alice), u64::MAX).expect("open b");
    assert_eq!(inner_b, b.manifest);
}
