//! The conformance properties: push/pull/exists behaviour every backend
//! shows against a real server, each run as its own named test case.

use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_digest::Digest;
use pf_registry_core::{
    CommitBlob, CommitRequest, EncodedBlob, ImageRef, Registry, RegistryError, SignedImage,
    Verification,
};
use pf_sign::{SignError, SigningKey};

use crate::image::{self, ImageSpec};
use crate::{assert_same_blobs, engine, pull_ref, trusting, Subject};

/// The properties: (name, needs mutable references).
pub const CASES: &[(&str, bool)] = &[
    ("roundtrip_and_idempotent", false),
    ("incremental", false),
    ("chunked_against_base", false),
    ("missing_is_not_found", true),
    ("tampered_blob_is_integrity_error", false),
    ("signature_checks", false),
    ("pinned_digest", false),
    ("concurrent_pushes", false),
    ("failed_push_keeps_previous", true),
    ("rollback_under_pin", true),
    ("ranged_reads", false),
    ("encrypted_roundtrip", false),
];

/// Runs the property `case` of [`CASES`] on `backend`.
pub async fn run(case: &str, backend: &Subject) {
    match case {
        "roundtrip_and_idempotent" => {
            roundtrip_and_idempotent(backend, crate::cases(backend.generated_cases())).await
        }
        "incremental" => incremental(backend).await,
        "chunked_against_base" => chunked_against_base(backend).await,
        "missing_is_not_found" => missing_is_not_found(backend).await,
        "tampered_blob_is_integrity_error" => tampered_blob_is_integrity_error(backend).await,
        "signature_checks" => signature_checks(backend).await,
        "pinned_digest" => pinned_digest(backend).await,
        "concurrent_pushes" => concurrent_pushes(backend).await,
        "failed_push_keeps_previous" => failed_push_keeps_previous(backend).await,
        "rollback_under_pin" => rollback_under_pin(backend).await,
        "ranged_reads" => crate::ranged::ranged_reads(backend).await,
        "encrypted_roundtrip" => crate::encrypted::encrypted_roundtrip(backend).await,
        other => panic!("no conformance property {other}"),
    }
}

/// Push, exists, pull round trip on `cases` proptest-generated images;
/// re-push uploads nothing.
pub async fn roundtrip_and_idempotent(backend: &Subject, cases: u32) {
    let key = SigningKey::generate().expect("keygen");
    let base = backend.config();
    for (i, spec) in image::generated_specs(cases, 0x5eed)
        .into_iter()
        .enumerate()
    {
        let r = backend.fresh_ref(&format!("rt{i}"));
        let src = Arc::new(MemoryStore::new());
        let img = spec.build(&*src, "roundtrip");
        let signed = SignedImage::new(&img.manifest, Some(&key));
        let reg = engine(backend, &r, &base);
        if backend.mutable_refs() {
            assert!(
                !reg.exists().await.expect("exists before push"),
                "{r} exists before push"
            );
        }
        let rep = reg
            .push(src.clone(), &signed)
            .await
            .unwrap_or_else(|e| panic!("push {r}: {e}"));
        assert_eq!(rep.manifest_digest, signed.digest());
        assert_eq!(rep.blobs_total as usize, img.closure.len());
        assert_eq!(
            rep.blobs_uploaded as usize,
            img.closure.len(),
            "first push uploads every blob"
        );
        let pr = pull_ref(backend, &r, &rep.resolved);
        let reg2 = engine(backend, &pr, &trusting(&base, &key));
        assert!(reg2.exists().await.expect("exists after push"));
        let dst = Arc::new(MemoryStore::new());
        let pulled = reg2
            .pull(dst.clone())
            .await
            .unwrap_or_else(|e| panic!("pull {pr}: {e}"));
        assert_eq!(pulled.manifest, img.manifest);
        assert_eq!(pulled.manifest_digest, signed.digest());
        assert!(matches!(pulled.verification, Verification::Verified { .. }));
        assert_eq!(pulled.blobs_total as usize, img.closure.len());
        assert_eq!(pulled.blobs_fetched as usize, img.closure.len());
        assert_same_blobs(&*src, &*dst, &img.closure);
        assert_eq!(
            dst.list().expect("list").len(),
            img.closure.len(),
            "pull fetched blobs outside the closure"
        );

        // Also pullable through the resolved (immutable) reference.
        let resolved = ImageRef::parse(&rep.resolved)
            .unwrap_or_else(|e| panic!("resolved {}: {e}", rep.resolved));
        let again = engine(backend, &resolved, &base)
            .pull(Arc::new(MemoryStore::new()))
            .await
            .unwrap_or_else(|e| panic!("pull resolved {resolved}: {e}"));
        assert_eq!(again.manifest_digest, signed.digest());

        let rep2 = reg.push(src.clone(), &signed).await.expect("re-push");
        assert_eq!(
            rep2.blobs_uploaded, 0,
            "re-push of an unchanged image uploaded blobs"
        );
        assert_eq!(rep2.wire_bytes_uploaded, 0);
    }
}

/// A second image sharing blobs with the first uploads only the new ones;
/// a pull into a store that has the first image fetches only the rest.
pub async fn incremental(backend: &Subject) {
    let base = backend.config();
    let spec_a = ImageSpec::sample(1, 6);
    let mut spec_b = spec_a.clone();
    spec_b.layers.push(b"a brand new layer".to_vec());
    spec_b
        .files
        .push(("new/file.txt".into(), b"new content here".to_vec()));
    let src = Arc::new(MemoryStore::new());
    let a = spec_a.build(&*src, "inc-a");
    let b = spec_b.build(&*src, "inc-b");
    let new_blobs = b.closure.iter().filter(|d| !a.closure.contains(d)).count();
    assert!(
        new_blobs >= 3,
        "test image B must add blobs (layer, file, fs tree)"
    );

    let r = backend.fresh_ref("inc");
    let reg = engine(backend, &r, &base);
    let ra = reg
        .push(src.clone(), &SignedImage::new(&a.manifest, None))
        .await
        .expect("push a");
    let rb = engine(backend, &r, &base)
        .push(src.clone(), &SignedImage::new(&b.manifest, None))
        .await
        .expect("push b");
    assert_eq!(
        rb.blobs_uploaded as usize, new_blobs,
        "second image must upload only its new blobs"
    );

    // Pull A (by its resolved ref) into a fresh store, then B: only B's new blobs are fetched.
    let dst = Arc::new(MemoryStore::new());
    let pa = engine(
        backend,
        &ImageRef::parse(&ra.resolved).expect("resolved parses"),
        &base,
    );
    let rep_a = pa.pull(dst.clone()).await.expect("pull a");
    assert_eq!(
        rep_a.manifest.layers, a.manifest.layers,
        "resolved ref of A still gives A"
    );
    let pb = engine(backend, &pull_ref(backend, &r, &rb.resolved), &base);
    let rep_b = pb.pull(dst.clone()).await.expect("pull b");
    assert_eq!(rep_b.manifest, b.manifest);
    assert_eq!(
        rep_b.blobs_fetched as usize, new_blobs,
        "pull fetched blobs the store already had"
    );
    assert_eq!(rep_b.blobs_present as usize, b.closure.len() - new_blobs);
    assert_same_blobs(&*src, &*dst, &b.closure);
}

/// Format v2 across versions: an image chunked against the pushed one's
/// fs tree references that image's packs without holding them locally; its
/// push sends only the new chunks, and it pulls and restores byte for
/// byte. Pushed where those packs are not, it is refused as NotFound.
pub async fn chunked_against_base(backend: &Subject) {
    let base = backend.config();
    let mut spec_a = ImageSpec::sample(21, 9);
    spec_a.kv.clear();
    spec_a.layers.truncate(1);
    let src_a = Arc::new(MemoryStore::new());
    let a = spec_a.build(&*src_a, "base-a");
    let r = backend.fresh_ref("cab");
    let ra = engine(backend, &r, &base)
        .push(src_a.clone(), &SignedImage::new(&a.manifest, None))
        .await
        .expect("push a");
    let tree_of = |m: &pf_registry_core::Manifest, store: &dyn BlobStore| {
        let l = m
            .layers
            .iter()
            .find(|l| pf_registry_core::manifest::is_fs_tree_media_type(&l.media_type))
            .expect("an fs layer");
        pf_registry_core::FsTree::from_bytes(&store.get(&l.digest).expect("tree")).expect("tree")
    };
    let tree_a = tree_of(&a.manifest, &*src_a);
    assert!(tree_a.is_v2());

    // B: one byte changed in the largest file, one small file appended to.
    let mut spec_b = spec_a.clone();
    let big = (0..spec_b.files.len())
        .max_by_key(|&i| spec_b.files[i].1.len())
        .expect("files");
    let mid = spec_b.files[big].1.len() / 2;
    spec_b.files[big].1[mid] ^= 0xff;
    spec_b.files[0].1.extend_from_slice(b"appended");
    let src_b = Arc::new(MemoryStore::new());
    let b = spec_b.build_on(&*src_b, "base-b", Some(&tree_a));
    let tree_b = tree_of(&b.manifest, &*src_b);
    let reused = tree_b
        .packs
        .iter()
        .filter(|p| tree_a.packs.contains(p))
        .count();
    assert!(reused > 0, "B references A's packs");
    let rb = engine(backend, &r, &base)
        .push(src_b.clone(), &SignedImage::new(&b.manifest, None))
        .await
        .unwrap_or_else(|e| panic!("push b on a's packs: {e}"));
    assert!(
        rb.raw_bytes_uploaded * 2 < ra.raw_bytes_uploaded,
        "B sent {} raw bytes, A {}",
        rb.raw_bytes_uploaded,
        ra.raw_bytes_uploaded
    );

    // B pulls (every pack, A's included) and restores to spec B's files.
    let dst = Arc::new(MemoryStore::new());
    let pulled = engine(backend, &pull_ref(backend, &r, &rb.resolved), &base)
        .pull(dst.clone())
        .await
        .expect("pull b");
    assert_eq!(pulled.manifest, b.manifest);
    let out = tempfile::tempdir().expect("tempdir");
    let restored = out.path().join("b");
    pf_snapshot::restore::restore_from_store(&b.manifest, &*dst, &restored, &Default::default())
        .expect("restore b");
    for (path, data) in &spec_b.files {
        assert_eq!(
            &std::fs::read(restored.join(path)).expect("restored file"),
            data,
            "{path}"
        );
    }

    // Pushed to a fresh reference, B either finds A's packs there (IPFS
    // has one blob space per node, OCI mounts across repositories) and then
    // pulls whole, or is refused as NotFound with nothing committed.
    let elsewhere = backend.fresh_ref("cab-empty");
    match engine(backend, &elsewhere, &base)
        .push(src_b.clone(), &SignedImage::new(&b.manifest, None))
        .await
    {
        Ok(rep) => {
            engine(
                backend,
                &pull_ref(backend, &elsewhere, &rep.resolved),
                &base,
            )
            .pull(Arc::new(MemoryStore::new()))
            .await
            .unwrap_or_else(|e| panic!("b pushed elsewhere must pull whole: {e}"));
        }
        Err(RegistryError::NotFound { .. }) => {
            if backend.mutable_refs() {
                let gone = engine(backend, &elsewhere, &base).exists().await;
                assert!(!gone.expect("exists"), "a refused push committed");
            }
        }
        Err(e) => panic!("push b elsewhere: {e}"),
    }
}

/// A reference with nothing pushed: exists is false and pull is NotFound.
pub async fn missing_is_not_found(backend: &Subject) {
    assert!(backend.mutable_refs(), "a property for mutable references");
    let r = backend.fresh_ref("missing");
    let reg = engine(backend, &r, &backend.config());
    assert!(!reg.exists().await.expect("exists on missing ref"));
    match reg.pull(Arc::new(MemoryStore::new())).await {
        Err(RegistryError::NotFound { .. }) => {}
        other => panic!(
            "pull of missing {r}: expected NotFound, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// Pushes `manifest`/`signature` with blobs, where blob `evil_for` is stored
/// with the content `evil` instead, bypassing the engine's checks.
async fn push_raw(
    backend: &Subject,
    r: &ImageRef,
    src: &dyn BlobStore,
    closure: &[Digest],
    manifest: &[u8],
    signature: Option<&[u8]>,
    evil: Option<(Digest, &[u8])>,
) -> String {
    let t = backend.transport(r, &backend.config()).expect("transport");
    let mut blobs = Vec::new();
    for d in closure {
        let raw = match evil {
            Some((e, bytes)) if e == *d => bytes.to_vec(),
            _ => src.get(d).expect("blob"),
        };
        let enc = zstd_frame(&raw);
        let blob = EncodedBlob::in_memory(*d, raw.len() as u64, enc.into());
        let up = t.put_blob(&blob).await.expect("raw put_blob");
        blobs.push(CommitBlob {
            digest: *d,
            raw_size: Some(raw.len() as u64),
            uploaded: Some(up),
        });
    }
    t.commit(CommitRequest {
        manifest,
        manifest_digest: Digest::of(manifest),
        signature,
        blobs: &blobs,
    })
    .await
    .expect("raw commit")
}

fn zstd_frame(raw: &[u8]) -> Vec<u8> {
    pf_registry_core::codec::zstd_encode_bytes(raw, 1).expect("zstd encode")
}

/// A blob whose stored bytes do not hash to its name fails the pull with
/// Integrity and the store does not keep it.
pub async fn tampered_blob_is_integrity_error(backend: &Subject) {
    let src = MemoryStore::new();
    let img = ImageSpec::sample(2, 3).build(&src, "tamper");
    let victim = img.manifest.layers[0].digest;
    let size = img.manifest.layers[0].size as usize;
    let mut evil = src.get(&victim).expect("victim");
    evil[size / 2] ^= 0xff;
    let r = backend.fresh_ref("tampered-blob");
    let manifest = img.manifest.to_bytes();
    let resolved = push_raw(
        backend,
        &r,
        &src,
        &img.closure,
        &manifest,
        None,
        Some((victim, &evil)),
    )
    .await;
    let dst = Arc::new(MemoryStore::new());
    let err = engine(
        backend,
        &pull_ref(backend, &r, &resolved),
        &backend.config(),
    )
    .pull(dst.clone())
    .await
    .expect_err("tampered blob accepted");
    match err {
        RegistryError::Integrity { expected, .. } => assert_eq!(expected, victim),
        other => panic!("expected Integrity naming {victim}, got {other}"),
    }
    assert!(!dst.has(&victim).expect("has"), "corrupt blob was stored");
}

/// A manifest changed after signing, and an image signed by an untrusted key,
/// are rejected with a Signature error when keys are trusted.
pub async fn signature_checks(backend: &Subject) {
    let key = SigningKey::generate().expect("keygen");
    let other = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(3, 2).build(&*src, "sig");
    let good = SignedImage::new(&img.manifest, Some(&key));

    // Tampered manifest: same blobs, one annotation changed, old signature kept.
    let mut m2 = img.manifest.clone();
    m2.annotations.insert("evil".into(), "yes".into());
    let r = backend.fresh_ref("tampered-manifest");
    let sig = good.signature.clone().expect("signed");
    let resolved = push_raw(
        backend,
        &r,
        &*src,
        &img.closure,
        &m2.to_bytes(),
        Some(&sig),
        None,
    )
    .await;
    let err = engine(
        backend,
        &pull_ref(backend, &r, &resolved),
        &trusting(&backend.config(), &key),
    )
    .pull(Arc::new(MemoryStore::new()))
    .await
    .expect_err("tampered manifest accepted");
    assert!(
        matches!(
            err,
            RegistryError::Signature(SignError::DigestMismatch { .. })
        ),
        "{err}"
    );
    // Even without trusted keys a mismatched envelope is an error.
    let err = engine(
        backend,
        &pull_ref(backend, &r, &resolved),
        &backend.config(),
    )
    .pull(Arc::new(MemoryStore::new()))
    .await
    .expect_err("mismatched envelope accepted without trust");
    assert!(matches!(err, RegistryError::Signature(_)), "{err}");

    // Untrusted key.
    let r2 = backend.fresh_ref("wrong-key");
    let rep = engine(backend, &r2, &backend.config())
        .push(src.clone(), &good)
        .await
        .expect("push signed");
    let pr = pull_ref(backend, &r2, &rep.resolved);
    let err = engine(backend, &pr, &trusting(&backend.config(), &other))
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect_err("untrusted key accepted");
    assert!(
        matches!(err, RegistryError::Signature(SignError::Untrusted { .. })),
        "{err}"
    );
    // Without trust configured it is reported, not rejected.
    let rep = engine(backend, &pr, &backend.config())
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull with no trust configured");
    assert_eq!(
        rep.verification,
        Verification::UnknownKey {
            key_id: key.key_id()
        }
    );

    // Unsigned image: reported as such, rejected when keys are trusted.
    let r3 = backend.fresh_ref("unsigned");
    let rep = engine(backend, &r3, &backend.config())
        .push(src.clone(), &SignedImage::new(&img.manifest, None))
        .await
        .expect("push unsigned");
    let pr = pull_ref(backend, &r3, &rep.resolved);
    let pulled = engine(backend, &pr, &backend.config())
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull unsigned");
    assert_eq!(pulled.verification, Verification::Unsigned);
    let err = engine(backend, &pr, &trusting(&backend.config(), &key))
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect_err("unsigned accepted with trust");
    assert!(
        matches!(err, RegistryError::Signature(SignError::Unsigned)),
        "{err}"
    );
}

/// A pull pinned to another digest fails; pinned to the right one succeeds.
pub async fn pinned_digest(backend: &Subject) {
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(4, 2).build(&*src, "pin");
    let signed = SignedImage::new(&img.manifest, None);
    let r = backend.fresh_ref("pinned");
    let rep = engine(backend, &r, &backend.config())
        .push(src.clone(), &signed)
        .await
        .expect("push");
    let resolved = ImageRef::parse(&rep.resolved).expect("resolved parses");
    let ok = engine(backend, &resolved, &backend.config())
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull by resolved ref");
    assert_eq!(ok.manifest_digest, signed.digest());
    if backend.mutable_refs() {
        let pinned_ok = r.with_digest(signed.digest());
        let rep = engine(backend, &pinned_ok, &backend.config())
            .pull(Arc::new(MemoryStore::new()))
            .await
            .unwrap_or_else(|e| panic!("pull pinned to the right digest {pinned_ok}: {e}"));
        assert_eq!(rep.manifest_digest, signed.digest());
    }
    let wrong =
        pull_ref(backend, &r, &rep.resolved).with_digest(Digest::of(b"some other manifest"));
    match engine(backend, &wrong, &backend.config())
        .pull(Arc::new(MemoryStore::new()))
        .await
    {
        Err(RegistryError::Integrity { .. }) | Err(RegistryError::NotFound { .. }) => {}
        other => panic!(
            "pinned mismatch: expected Integrity or NotFound, got {:?}",
            other.map(|r| r.manifest_digest)
        ),
    }
}

/// Two images pushed concurrently to two references both land intact.
pub async fn concurrent_pushes(backend: &Subject) {
    let src = Arc::new(MemoryStore::new());
    let a = ImageSpec::sample(5, 4).build(&*src, "conc-a");
    let b = ImageSpec::sample(6, 4).build(&*src, "conc-b");
    let (ra, rb) = (backend.fresh_ref("conc-a"), backend.fresh_ref("conc-b"));
    let base = backend.config();
    let (ea, eb) = (engine(backend, &ra, &base), engine(backend, &rb, &base));
    let (sa, sb) = (
        SignedImage::new(&a.manifest, None),
        SignedImage::new(&b.manifest, None),
    );
    let (x, y) = tokio::join!(ea.push(src.clone(), &sa), eb.push(src.clone(), &sb));
    let (x, y) = (x.expect("push a"), y.expect("push b"));
    for (r, rep, img) in [(&ra, &x, &a), (&rb, &y, &b)] {
        let dst = Arc::new(MemoryStore::new());
        let pulled = engine(backend, &pull_ref(backend, r, &rep.resolved), &base)
            .pull(dst.clone())
            .await
            .expect("pull after concurrent push");
        assert_eq!(pulled.manifest, img.manifest);
        assert_same_blobs(&*src, &*dst, &img.closure);
    }
}

/// A push that fails (a blob missing locally) leaves the previous version readable.
pub async fn failed_push_keeps_previous(backend: &Subject) {
    assert!(backend.mutable_refs(), "a property for mutable references");
    let src = Arc::new(MemoryStore::new());
    let a = ImageSpec::sample(7, 3).build(&*src, "prev");
    let r = backend.fresh_ref("failed-push");
    let reg = engine(backend, &r, &backend.config());
    reg.push(src.clone(), &SignedImage::new(&a.manifest, None))
        .await
        .expect("push a");
    // B references a blob the local store does not have.
    let partial = Arc::new(MemoryStore::new());
    let mut spec_b = ImageSpec::sample(8, 3);
    spec_b.layers.push(b"only in the other store".to_vec());
    let b = spec_b.build(&*partial, "broken");
    let missing_blob = b.manifest.layers.last().expect("layer").digest;
    let broken = Arc::new(MemoryStore::new());
    for d in b.closure.iter().filter(|d| **d != missing_blob) {
        broken.put(&partial.get(d).expect("blob")).expect("put");
    }
    let err = reg
        .push(broken, &SignedImage::new(&b.manifest, None))
        .await
        .expect_err("push with a missing local blob succeeded");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing_blob.to_string()),
        "error must name the digest: {err}"
    );
    let pulled = reg
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull previous");
    assert_eq!(
        pulled.manifest, a.manifest,
        "previous version must stay readable"
    );
}

/// Rollback: after v2 is pushed, an attacker re-publishes the older, validly
/// signed v1 under the same reference. A pull pinned to v2's digest never
/// yields v1 (it gets v2 by digest, or fails with Integrity / NotFound); an
/// unpinned pull sees v1 with a valid signature, which is why pins exist.
pub async fn rollback_under_pin(backend: &Subject) {
    assert!(backend.mutable_refs(), "a property for mutable references");
    let key = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let v1 = ImageSpec::sample(9, 2).build(&*src, "rollback-v1");
    let v2 = ImageSpec::sample(10, 2).build(&*src, "rollback-v2");
    let (s1, s2) = (
        SignedImage::new(&v1.manifest, Some(&key)),
        SignedImage::new(&v2.manifest, Some(&key)),
    );
    let r = backend.fresh_ref("rollback");
    let trust = trusting(&backend.config(), &key);
    for s in [&s1, &s2] {
        engine(backend, &r, &trust)
            .push(src.clone(), s)
            .await
            .expect("push signed version");
    }
    // The attacker replays v1's exact bytes and signature under the tag.
    let sig1 = s1.signature.clone().expect("signed");
    push_raw(
        backend,
        &r,
        &*src,
        &v1.closure,
        &v1.manifest.to_bytes(),
        Some(&sig1),
        None,
    )
    .await;
    let pinned = r.with_digest(s2.digest());
    match engine(backend, &pinned, &trust)
        .pull(Arc::new(MemoryStore::new()))
        .await
    {
        Ok(rep) => assert_eq!(
            rep.manifest_digest,
            s2.digest(),
            "a pull pinned to v2 returned another manifest (rollback accepted)"
        ),
        Err(RegistryError::Integrity { .. }) | Err(RegistryError::NotFound { .. }) => {}
        Err(e) => panic!("pinned pull after rollback: unexpected error {e}"),
    }
    let unpinned = engine(backend, &r, &trust)
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("unpinned pull of the replayed v1");
    assert_eq!(unpinned.manifest_digest, s1.digest());
}
