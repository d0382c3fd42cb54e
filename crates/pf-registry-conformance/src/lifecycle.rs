//! Lifecycle cases (tags, log, rm, retain, gc, verify) for the backends
//! that offer the key methods of [`Transport`]; a backend that answers
//! `NotSupported` to `list_keys` skips them (it says so: the skip is the
//! backend's declared capability, not a missing server).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pf_cas::{BlobStore, MemoryStore};
use pf_digest::Digest;
use pf_registry_core::lifecycle::{self, GcOptions, Inventory, ReadData, RetainPolicy};
use pf_registry_core::{layout, ImageRef, Registry, RegistryError, SignedImage, Transport};
use pf_sign::TrustPolicy;

use crate::{engine, ImageSpec, Subject};

/// The cases: (name, needs mutable references).
pub const CASES: &[(&str, bool)] = &[
    ("tags_and_log", true),
    ("rm_version", true),
    ("verify_finds_damage", false),
    ("retain_then_gc", true),
    ("retain_policies", true),
    ("gc_refuses_bad_manifests", true),
    ("concurrent_push_and_gc", true),
];

/// Runs the lifecycle `case` of [`CASES`] on `backend`.
pub async fn run(case: &str, backend: &Subject) {
    match case {
        "tags_and_log" => tags_and_log(backend).await,
        "rm_version" => rm_version(backend).await,
        "verify_finds_damage" => verify_finds_damage(backend).await,
        "retain_then_gc" => {
            if let Some((after, fresh)) = retain_then_gc(backend).await {
                eprintln!(
                    "{}: 20 versions, keep-last 3, gc: {after} B; fresh push of the 3: {fresh} B",
                    backend.name()
                );
            }
        }
        "retain_policies" => retain_policies(backend).await,
        "gc_refuses_bad_manifests" => gc_refuses_bad_manifests(backend).await,
        "concurrent_push_and_gc" => {
            let (rounds, deleted) = concurrent_push_and_gc(backend, 50).await;
            eprintln!(
                "{}: {rounds} rounds of concurrent push + gc; the gcs deleted {deleted} blobs",
                backend.name()
            );
        }
        other => panic!("no lifecycle case {other}"),
    }
}

/// A transport for `r` when the backend supports lifecycle commands.
async fn lifecycle_transport(backend: &Subject, r: &ImageRef) -> Option<Box<dyn Transport>> {
    let t = backend
        .transport(r, &backend.config())
        .unwrap_or_else(|e| panic!("{}: transport: {e}", backend.name()));
    match t.list_keys(layout::BLOBS).await {
        Ok(_) => Some(t),
        Err(RegistryError::NotSupported { .. }) => {
            eprintln!(
                "{}: no lifecycle support; lifecycle cases skipped",
                backend.name()
            );
            None
        }
        Err(e) => panic!("{}: list_keys: {e}", backend.name()),
    }
}

/// Builds version `i` of a history: content from `seed`, distinct
/// `created_at` and annotation, and `parent`.
fn version(
    store: &dyn BlobStore,
    seed: u64,
    i: u32,
    parent: Option<Digest>,
) -> (SignedImage, Vec<Digest>) {
    let mut img = ImageSpec::sample(seed, 4).build(store, "lifecycle");
    img.manifest.created_at = format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        i / 3600 % 24,
        i / 60 % 60,
        i % 60
    );
    img.manifest
        .annotations
        .insert("version".into(), i.to_string());
    img.manifest.parents = parent.into_iter().collect();
    (SignedImage::new(&img.manifest, None), img.closure)
}

async fn push(backend: &Subject, r: &ImageRef, store: &Arc<MemoryStore>, img: &SignedImage) {
    engine(backend, r, &backend.config())
        .push(store.clone(), img)
        .await
        .unwrap_or_else(|e| panic!("{}: push {r}: {e}", backend.name()));
}

/// `r` pinned to `d`.
fn pinned(r: &ImageRef, d: Digest) -> ImageRef {
    let mut p = r.clone();
    p.digest = Some(d);
    p
}

/// Pulls `r@d` and checks it byte for byte against `closure` in `src`.
async fn pull_verifies(
    backend: &Subject,
    r: &ImageRef,
    d: Digest,
    src: &dyn BlobStore,
    closure: &[Digest],
) {
    let pr = pinned(r, d);
    let dst = Arc::new(MemoryStore::new());
    let pulled = engine(backend, &pr, &backend.config())
        .pull(dst.clone())
        .await
        .unwrap_or_else(|e| panic!("{}: pull {pr}: {e}", backend.name()));
    assert_eq!(pulled.manifest_digest, d);
    for b in closure {
        assert!(
            dst.get(b).ok() == src.get(b).ok(),
            "{}: blob {b} of {d} differs after pull",
            backend.name()
        );
    }
}

/// A pull of a removed version: `NotFound`, or `Integrity` where the
/// backend falls back to the head, which the pin then refuses.
fn is_gone<T>(res: &pf_registry_core::Result<T>) -> bool {
    matches!(
        res,
        Err(RegistryError::NotFound { .. } | RegistryError::Integrity { .. })
    )
}

/// Total stored bytes of blobs and manifests.
async fn repo_bytes(t: &dyn Transport) -> u64 {
    let mut n = 0;
    for dir in [layout::BLOBS, layout::MANIFESTS, layout::TAGS] {
        n += t
            .list_keys(dir)
            .await
            .expect("list keys")
            .iter()
            .map(|k| k.size)
            .sum::<u64>();
    }
    n
}

/// `tags` shows the head with its digest; `log` walks `parents` newest first.
pub async fn tags_and_log(backend: &Subject) {
    let r = backend.fresh_ref("lc-log");
    let Some(t) = lifecycle_transport(backend, &r).await else {
        return;
    };
    let src = Arc::new(MemoryStore::new());
    let mut parent = None;
    let mut digests = Vec::new();
    for i in 0..3 {
        let (img, _) = version(&*src, 40 + i as u64, i, parent);
        push(backend, &r, &src, &img).await;
        parent = Some(img.digest());
        digests.push(img.digest());
    }
    let tags = lifecycle::tags(&*t, &TrustPolicy::default())
        .await
        .expect("tags");
    let head = tags
        .iter()
        .find(|x| x.digest == digests[2])
        .unwrap_or_else(|| panic!("{}: no tag for the last push: {tags:?}", backend.name()));
    assert_eq!(head.created_at, "2026-01-01T00:00:02Z");
    assert!(head.size > 0);
    let log = lifecycle::log(&*t).await.expect("log");
    let got: Vec<Digest> = log.iter().map(|v| v.digest).collect();
    digests.reverse();
    assert_eq!(got, digests, "log is the parent chain, newest first");
    assert!(log.iter().all(|v| v.missing_parents.is_empty()));
}

/// `rm` by digest removes a version (it no longer pulls) and leaves the
/// head; `rm` of a version's blobs is `gc`'s job.
pub async fn rm_version(backend: &Subject) {
    let r = backend.fresh_ref("lc-rm");
    let Some(t) = lifecycle_transport(backend, &r).await else {
        return;
    };
    let src = Arc::new(MemoryStore::new());
    let (a, ca) = version(&*src, 50, 0, None);
    let (b, cb) = version(&*src, 51, 1, None);
    push(backend, &r, &src, &a).await;
    push(backend, &r, &src, &b).await;
    let rep = lifecycle::rm(&*t, None, Some(a.digest()))
        .await
        .expect("rm by digest");
    assert_eq!(rep.manifests, vec![a.digest()]);
    let gone = engine(backend, &pinned(&r, a.digest()), &backend.config())
        .pull(Arc::new(MemoryStore::new()))
        .await;
    assert!(
        is_gone(&gone),
        "{}: removed version still pulls",
        backend.name()
    );
    pull_verifies(backend, &r, b.digest(), &*src, &cb).await;
    // gc now frees a's own blobs, keeps b's.
    let g = lifecycle::gc(
        &*t,
        &GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
            squash_history: false,
        },
    )
    .await
    .expect("gc");
    let only_a: BTreeSet<Digest> = ca.iter().filter(|d| !cb.contains(d)).copied().collect();
    let deleted: BTreeSet<Digest> = g.deleted.iter().copied().collect();
    assert_eq!(
        deleted, only_a,
        "gc deletes exactly the removed version's own blobs"
    );
    pull_verifies(backend, &r, b.digest(), &*src, &cb).await;
    let again = lifecycle::rm(&*t, None, Some(a.digest())).await;
    assert!(matches!(again, Err(RegistryError::NotFound { .. })));
}

/// `verify` passes on an intact image, names a deleted blob as missing and
/// a rewritten one as corrupt (with `ReadData::All`).
pub async fn verify_finds_damage(backend: &Subject) {
    let r = backend.fresh_ref("lc-verify");
    let Some(t) = lifecycle_transport(backend, &r).await else {
        return;
    };
    let src = Arc::new(MemoryStore::new());
    let (a, ca) = version(&*src, 60, 0, None);
    push(backend, &r, &src, &a).await;
    let trust = TrustPolicy::default();
    let ok = lifecycle::verify(&*t, &trust, ReadData::All)
        .await
        .expect("verify");
    assert!(
        ok.ok(),
        "{}: intact image fails verify: {ok:?}",
        backend.name()
    );
    assert_eq!(ok.blobs, ca.len());
    assert_eq!(ok.data_checked, ca.len());
    // A data blob (not an index) to damage: the first layer.
    let m = pf_registry_core::Manifest::from_bytes(&a.manifest).expect("manifest");
    let (gone, bad) = (m.layers[0].digest, m.layers[1].digest);
    t.delete_key(&layout::blob(&gone))
        .await
        .expect("delete blob");
    let junk = pf_registry_core::codec::zstd_encode_bytes(b"not the blob", 3).expect("zstd");
    t.write_key(&layout::blob(&bad), &junk)
        .await
        .expect("overwrite blob");
    let exist_only = lifecycle::verify(&*t, &trust, ReadData::None)
        .await
        .expect("verify");
    assert_eq!(exist_only.missing, vec![gone]);
    let rep = lifecycle::verify(&*t, &trust, ReadData::All)
        .await
        .expect("verify");
    assert_eq!(rep.missing, vec![gone]);
    assert_eq!(
        rep.corrupt.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![bad]
    );
    let sub = lifecycle::verify(&*t, &trust, ReadData::Subset(100.0))
        .await
        .expect("verify");
    assert_eq!(sub.corrupt.len(), 1);
}

/// 20 versions, `retain --keep-last 3`, `gc`: the repository is within 10%
/// of a fresh push of the 3 kept versions, they pull and verify, the 17
/// others are gone. Returns (size after gc, fresh size).
pub async fn retain_then_gc(backend: &Subject) -> Option<(u64, u64)> {
    let r = backend.fresh_ref("lc-retain");
    let t = lifecycle_transport(backend, &r).await?;
    let src = Arc::new(MemoryStore::new());
    let mut versions = Vec::new();
    for i in 0..20u32 {
        // Content drifts: half the seeds repeat, so versions share blobs.
        let (img, closure) = version(&*src, 70 + (i as u64 / 2), i, None);
        push(backend, &r, &src, &img).await;
        versions.push((img, closure));
    }
    let rep = lifecycle::retain(
        &*t,
        &RetainPolicy {
            keep_last: Some(3),
            ..RetainPolicy::default()
        },
    )
    .await
    .expect("retain");
    let kept: Vec<Digest> = versions[17..].iter().rev().map(|v| v.0.digest()).collect();
    assert_eq!(rep.kept, kept, "keep-last 3 keeps the newest three");
    assert_eq!(rep.removed.len(), 17);
    let g = lifecycle::gc(
        &*t,
        &GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
            squash_history: false,
        },
    )
    .await
    .expect("gc");
    assert!(!g.deleted.is_empty());
    let after = repo_bytes(&*t).await;
    // A fresh repository with only the 3 kept versions.
    let fresh = backend.fresh_ref("lc-fresh");
    let ft = lifecycle_transport(backend, &fresh).await?;
    for (img, _) in &versions[17..] {
        push(backend, &fresh, &src, img).await;
    }
    let fresh_bytes = repo_bytes(&*ft).await;
    let ratio = after as f64 / fresh_bytes as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{}: after gc {after} B vs fresh {fresh_bytes} B",
        backend.name()
    );
    for (img, closure) in &versions[17..] {
        pull_verifies(backend, &r, img.digest(), &*src, closure).await;
    }
    let inv = Inventory::read(&*t).await.expect("inventory");
    for (img, _) in &versions[..17] {
        assert!(
            !inv.manifests.contains_key(&img.digest()),
            "removed version still stored"
        );
        let res = engine(backend, &pinned(&r, img.digest()), &backend.config())
            .pull(Arc::new(MemoryStore::new()))
            .await;
        assert!(is_gone(&res), "removed version still pulls");
    }
    let v = lifecycle::verify(&*t, &TrustPolicy::default(), ReadData::All)
        .await
        .expect("verify");
    assert!(v.ok(), "{v:?}");
    Some((after, fresh_bytes))
}

/// `gc` refuses, deleting nothing, on an unparseable manifest (named) and
/// on a manifest of a newer format.
pub async fn gc_refuses_bad_manifests(backend: &Subject) {
    let r = backend.fresh_ref("lc-bad");
    let Some(t) = lifecycle_transport(backend, &r).await else {
        return;
    };
    let src = Arc::new(MemoryStore::new());
    let (a, _) = version(&*src, 80, 0, None);
    let (b, _) = version(&*src, 81, 1, None);
    push(backend, &r, &src, &a).await;
    push(backend, &r, &src, &b).await;
    lifecycle::rm(&*t, None, Some(a.digest()))
        .await
        .expect("rm");
    let before = t.list_keys(layout::BLOBS).await.expect("list").len();
    let opts = GcOptions {
        grace: Duration::ZERO,
        dry_run: false,
        squash_history: false,
    };
    let junk_key = layout::manifest_by_digest(&Digest::of(b"{not json"));
    t.write_key(&junk_key, b"{not json")
        .await
        .expect("write junk");
    match lifecycle::gc(&*t, &opts).await {
        Err(RegistryError::InvalidData { what, .. }) => assert!(what.contains(&junk_key), "{what}"),
        other => panic!("gc over an unparseable manifest: {other:?}"),
    }
    t.delete_key(&junk_key).await.expect("delete junk");
    let newer = a.manifest.to_vec();
    let text = String::from_utf8(newer).expect("utf8").replacen(
        "\"schema_version\": 1",
        "\"schema_version\": 2",
        1,
    );
    let nd = Digest::of(text.as_bytes());
    t.write_key(&layout::manifest_by_digest(&nd), text.as_bytes())
        .await
        .expect("write newer");
    match lifecycle::gc(&*t, &opts).await {
        Err(RegistryError::NotSupported { .. }) => {}
        other => panic!("gc over a newer-format manifest: {other:?}"),
    }
    assert_eq!(
        t.list_keys(layout::BLOBS).await.expect("list").len(),
        before,
        "a refused gc deleted blobs"
    );
    t.delete_key(&layout::manifest_by_digest(&nd))
        .await
        .expect("delete newer");
    let g = lifecycle::gc(&*t, &opts)
        .await
        .expect("gc once the repository is sound");
    assert!(!g.deleted.is_empty());
}

/// Rounds of two concurrent pushes (one of content that earlier rounds
/// pushed and `retain` since dropped, one new) racing a gc with no grace;
/// after every round every committed version pulls and verifies.
/// `PF_GC_ROUNDS` sets the rounds (default `default`). Returns the rounds
/// run and the blobs the gcs deleted.
pub async fn concurrent_push_and_gc(backend: &Subject, default: u32) -> (u32, usize) {
    let rounds = std::env::var("PF_GC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let r = backend.fresh_ref("lc-race");
    let Some(t) = lifecycle_transport(backend, &r).await else {
        return (0, 0);
    };
    let src = Arc::new(MemoryStore::new());
    let mut closures = std::collections::HashMap::new();
    let opts = GcOptions {
        grace: Duration::ZERO,
        dry_run: false,
        squash_history: false,
    };
    // The repository exists before the first gc (on the Hub, a gc of a
    // repository no push created yet is `NotFound`).
    let (first, cf) = version(&*src, 89, 0, None);
    push(backend, &r, &src, &first).await;
    closures.insert(first.digest(), cf);
    let mut deleted_total = 0;
    for round in 0..rounds {
        let (shared, cs) = version(&*src, 90 + (round as u64 % 4), 2 * round, None);
        let (new, cn) = version(&*src, 1000 + round as u64, 2 * round + 1, None);
        closures.insert(shared.digest(), cs);
        closures.insert(new.digest(), cn);
        let (e1, e2) = (
            engine(backend, &sibling(&r, "a"), &backend.config()),
            engine(backend, &sibling(&r, "b"), &backend.config()),
        );
        let gt = backend.transport(&r, &backend.config()).expect("transport");
        let (p1, p2, g) = tokio::join!(
            e1.push(src.clone(), &shared),
            e2.push(src.clone(), &new),
            async { lifecycle::gc(&*gt, &opts).await }
        );
        p1.unwrap_or_else(|e| panic!("round {round}: push shared: {e}"));
        p2.unwrap_or_else(|e| panic!("round {round}: push new: {e}"));
        deleted_total += g
            .unwrap_or_else(|e| panic!("round {round}: gc: {e}"))
            .deleted
            .len();
        let inv = Inventory::read(&*t).await.expect("inventory");
        for d in [shared.digest(), new.digest()] {
            assert!(
                inv.manifests.contains_key(&d),
                "round {round}: pushed version not committed"
            );
        }
        for d in inv.manifests.keys() {
            let closure = &closures[d];
            pull_verifies(backend, &r, *d, &*src, closure).await;
            let v = lifecycle::verify(
                &*pinned_transport(backend, &r, *d),
                &TrustPolicy::default(),
                ReadData::None,
            )
            .await
            .expect("verify");
            assert!(v.ok(), "round {round}: {d}: {v:?}");
        }
        // Drop all but the last 4 versions: their blobs become garbage the
        // next rounds' gc races the pushes of the same content over.
        lifecycle::retain(
            &*t,
            &RetainPolicy {
                keep_last: Some(4),
                ..RetainPolicy::default()
            },
        )
        .await
        .expect("retain");
    }
    assert!(
        deleted_total > 0,
        "{}: the gc rounds never deleted anything",
        backend.name()
    );
    (rounds, deleted_total)
}

/// `r` with tag `tag` where the backend has tags (same repository), so
/// concurrent pushes do not race for one tag; `r` itself otherwise.
fn sibling(r: &ImageRef, tag: &str) -> ImageRef {
    let mut s = r.clone();
    match &mut s.location {
        pf_registry_core::Location::S3 { tag: t, .. }
        | pf_registry_core::Location::Oci { tag: t, .. } => *t = Some(tag.to_string()),
        _ => {}
    }
    s
}

fn pinned_transport(backend: &Subject, r: &ImageRef, d: Digest) -> Box<dyn Transport> {
    backend
        .transport(&pinned(r, d), &backend.config())
        .expect("transport")
}

/// `retain --keep-within` keeps versions created recently (by their
/// `created_at`), `--keep-tag` the version a tag names (where the backend
/// has tags), and a policy that keeps nothing is refused.
pub async fn retain_policies(backend: &Subject) {
    let r = backend.fresh_ref("lc-policy");
    let Some(t) = lifecycle_transport(backend, &r).await else {
        return;
    };
    let src = Arc::new(MemoryStore::new());
    let mut made = Vec::new();
    for (i, created) in [
        "2001-01-01T00:00:00Z",
        "2002-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let (img, _) = version(&*src, 110 + i as u64, i as u32, None);
        let mut m = pf_registry_core::Manifest::from_bytes(&img.manifest).expect("manifest");
        m.created_at = created.to_string();
        let img = SignedImage::new(&m, None);
        push(backend, &r, &src, &img).await;
        made.push(img.digest());
    }
    let tagged = sibling(&r, "pinned");
    let has_tags = tagged != r;
    if has_tags {
        let (img, _) = version(&*src, 110, 0, None);
        let mut m = pf_registry_core::Manifest::from_bytes(&img.manifest).expect("manifest");
        m.created_at = "2001-01-01T00:00:00Z".into();
        push(backend, &tagged, &src, &SignedImage::new(&m, None)).await;
    }
    let none = lifecycle::retain(&*t, &RetainPolicy::default()).await;
    assert!(
        matches!(none, Err(RegistryError::InvalidData { .. })),
        "{none:?}"
    );
    let policy = RetainPolicy {
        keep_within: Some(Duration::from_secs(7 * 86_400)),
        keep_tags: if has_tags {
            vec!["pinned".into()]
        } else {
            Vec::new()
        },
        dry_run: true,
        ..RetainPolicy::default()
    };
    let dry = lifecycle::retain(&*t, &policy)
        .await
        .expect("retain dry run");
    let inv = Inventory::read(&*t).await.expect("inventory");
    assert_eq!(inv.manifests.len(), 3, "a dry run removed something");
    let rep = lifecycle::retain(
        &*t,
        &RetainPolicy {
            dry_run: false,
            ..policy
        },
    )
    .await
    .expect("retain");
    assert_eq!(rep.kept, dry.kept);
    let mut want = vec![made[2]];
    if has_tags {
        want.push(made[0]);
    }
    assert_eq!(
        rep.kept, want,
        "keep-within keeps the recent one, keep-tag the tagged one"
    );
    let inv = Inventory::read(&*t).await.expect("inventory");
    let left: BTreeSet<Digest> = inv.manifests.keys().copied().collect();
    assert_eq!(left, want.iter().copied().collect());
}
