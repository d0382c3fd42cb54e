//! HF-specific behaviour against the Hub test server: blob and manifest commits,
//! LFS uploads, paginated listings, a missing token. (The shared suites run
//! in hf_conformance.rs.)
#![cfg(feature = "hf")]

use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_hub_testserver::{HubConfig, HubServer};
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, ImageRef, Registry, RegistryError, SignedImage};

const TOKEN: &str = "hf_behaviour_token_abc";

async fn start_hub(page_size: usize) -> HubServer {
    HubServer::start(HubConfig::with_token(TOKEN).page_size(page_size))
        .await
        .expect("start the Hub test server")
}

fn config_for(hub: &HubServer) -> Config {
    let mut c = Config::default();
    c.options
        .insert("hf.endpoint".into(), hub.url().to_string());
    c.options.insert("hf.token".into(), TOKEN.into());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_and_manifest_commits_and_no_reupload() {
    let hub = start_hub(10).await;
    let cfg = config_for(&hub);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(71, 12).build(&*src, "hf");
    let signed = SignedImage::new(&img.manifest, None);
    let r = ImageRef::parse("hf://pf-tester/snap").unwrap();
    let rep = pf_registry_cloud::hf::open(&r, &cfg)
        .unwrap()
        .push(src.clone(), &signed)
        .await
        .expect("push");
    assert!(
        rep.resolved.starts_with("hf://pf-tester/snap@"),
        "{}",
        rep.resolved
    );
    // The push marker (see pf_registry_core::lifecycle), one commit of
    // blobs (fewer than 100), the manifest's commit, the marker's removal.
    assert_eq!(
        hub.stats().commits,
        4,
        "marker + blobs commit + manifest commit + marker removal"
    );
    let uploads = hub.stats().lfs_uploads;
    assert_eq!(
        uploads,
        img.closure.len() as u64,
        "every blob went through LFS"
    );
    let again = pf_registry_cloud::hf::open(&r, &cfg)
        .unwrap()
        .push(src.clone(), &signed)
        .await
        .expect("re-push");
    assert_eq!(again.blobs_uploaded, 0);
    assert_eq!(
        hub.stats().lfs_uploads,
        uploads,
        "re-push uploaded LFS objects"
    );
    assert!(hub.stats().tree_pages >= 2, "tree listing must paginate");
    // Pull by the commit id the push returned.
    let pinned = ImageRef::parse(&rep.resolved).unwrap();
    let pulled = pf_registry_cloud::hf::open(&pinned, &cfg)
        .unwrap()
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull");
    assert_eq!(pulled.manifest, img.manifest, "pulled by the commit id");
}

#[tokio::test(flavor = "multi_thread")]
async fn push_without_token_fails_fast_naming_hf_token() {
    let hub = start_hub(10).await;
    let mut cfg = Config::default();
    cfg.options
        .insert("hf.endpoint".into(), hub.url().to_string());
    std::env::remove_var("HF_TOKEN");
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(72, 1).build(&*src, "hf");
    let r = ImageRef::parse("hf://pf-tester/notoken").unwrap();
    let err = pf_registry_cloud::hf::open(&r, &cfg)
        .unwrap()
        .push(src, &SignedImage::new(&img.manifest, None))
        .await
        .expect_err("push without a token");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert_eq!(hub.stats().requests, 0, "must fail before any request");
}

/// Lifecycle commands on the Hub: `gc` of a repository that does not exist
/// fails and creates nothing; `retain` removes the dropped versions in two
/// commits (manifests, then signatures) and `gc` their blobs in one.
#[tokio::test(flavor = "multi_thread")]
async fn gc_creates_no_repository_and_deletes_in_few_commits() {
    use pf_registry_core::lifecycle::{self, GcOptions, RetainPolicy};
    let hub = start_hub(10).await;
    let cfg = config_for(&hub);
    let missing = ImageRef::parse("hf://pf-tester/never-pushed").unwrap();
    let t = pf_registry_cloud::hf::HfTransport::new(&missing, &cfg).unwrap();
    let opts = GcOptions {
        grace: std::time::Duration::ZERO,
        dry_run: false,
        squash_history: false,
    };
    let res = lifecycle::gc(&t, &opts).await;
    assert!(
        matches!(res, Err(RegistryError::NotFound { .. })),
        "{res:?}"
    );
    let kind = pf_hub_testserver::RepoType::Model;
    assert_eq!(hub.resolve(kind, "pf-tester/never-pushed", "main"), None);

    let r = ImageRef::parse("hf://pf-tester/kept").unwrap();
    let src = Arc::new(MemoryStore::new());
    let key = pf_registry_core::SigningKey::generate().expect("keygen");
    let mut first = String::new();
    for seed in 0..4 {
        let img = ImageSpec::sample(80 + seed, 5).build(&*src, "hf");
        let rep = pf_registry_cloud::hf::open(&r, &cfg)
            .unwrap()
            .push(src.clone(), &SignedImage::new(&img.manifest, Some(&key)))
            .await
            .expect("push");
        if seed == 0 {
            first = rep.resolved;
        }
    }
    let t = pf_registry_cloud::hf::HfTransport::new(&r, &cfg).unwrap();
    hub.reset_stats();
    let policy = RetainPolicy {
        keep_last: Some(1),
        ..RetainPolicy::default()
    };
    let kept = lifecycle::retain(&t, &policy).await.expect("retain");
    assert_eq!(kept.removed.len(), 3);
    assert_eq!(hub.stats().commits, 2, "manifests, then signatures");
    hub.reset_stats();
    let g = lifecycle::gc(&t, &opts).await.expect("gc");
    assert!(!g.deleted.is_empty());
    // The gc record's write and renewal, one deletion commit, the record's
    // removal.
    assert_eq!(hub.stats().commits, 4);

    // The deleted blobs are still in the history (and its LFS storage)
    // until the history is squashed; then only the kept version remains.
    let (id, head) = ("pf-tester/kept", "main");
    let before = hub.lfs_bytes(kind, id).expect("repo");
    assert!(hub.history_len(kind, id, head).expect("history") > 10);
    let squash = GcOptions {
        squash_history: true,
        ..opts
    };
    let g = lifecycle::gc(&t, &squash)
        .await
        .expect("gc --squash-history");
    assert!(g.squashed_history && g.deleted.is_empty());
    assert_eq!(hub.history_len(kind, id, head), Some(1));
    let after = hub.lfs_bytes(kind, id).expect("repo");
    assert!(after < before, "squash freed nothing: {after} vs {before}");
    let mut pinned = r.clone();
    pinned.digest = Some(kept.kept[0]);
    let pt = pf_registry_cloud::hf::HfTransport::new(&pinned, &cfg).unwrap();
    let v = lifecycle::verify(
        &pt,
        &pf_registry_core::TrustPolicy::new(vec![key.public_key()]),
        lifecycle::ReadData::All,
    )
    .await
    .expect("verify");
    assert!(v.ok() && v.blobs > 0, "{v:?}");
    let old = ImageRef::parse(&first).unwrap();
    let gone = pf_registry_cloud::hf::open(&old, &cfg)
        .unwrap()
        .pull(Arc::new(MemoryStore::new()))
        .await;
    assert!(gone.is_err(), "a squashed revision still pulls");
}

/// `d` from `src`, encoded as a push uploads it.
fn encoded(src: &MemoryStore, d: &pf_registry_core::Digest) -> pf_registry_core::EncodedBlob {
    use pf_registry_core::BlobStore;
    let raw = src.get(d).expect("blob");
    let enc = pf_registry_core::codec::zstd_encode_bytes(&raw, 3).expect("zstd");
    pf_registry_core::EncodedBlob::in_memory(*d, raw.len() as u64, enc.into())
}

/// A push whose parent commit moved (a gc deleted a blob it had found
/// present) commits its new blobs on the new head, but not its manifest
/// over a tree missing a blob: `NotFound` names it; uploaded again, the
/// image commits and pulls. A blob uploaded after the manifest commit (the
/// settle step) is committed into the tree at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_on_a_moved_head_rechecks_its_blobs() {
    use pf_registry_cloud::hf::HfTransport;
    use pf_registry_core::{layout, CommitBlob, Transport};
    let hub = start_hub(100).await;
    let cfg = config_for(&hub);
    let src = Arc::new(MemoryStore::new());
    let spec = ImageSpec::sample(81, 4);
    let a = spec.build(&*src, "a");
    let mut spec_b = spec.clone();
    spec_b.layers.push(b"only in b ".repeat(300));
    let b = spec_b.build(&*src, "b");
    let shared = a.manifest.layers[0].digest;
    assert!(b.closure.contains(&shared));
    let r = ImageRef::parse("hf://pf-tester/moved").unwrap();
    pf_registry_cloud::hf::open(&r, &cfg)
        .unwrap()
        .push(src.clone(), &SignedImage::new(&a.manifest, None))
        .await
        .expect("push a");

    let t = HfTransport::new(&r, &cfg).expect("transport");
    let other = HfTransport::new(&r, &cfg).expect("transport");
    let missing = t.missing(&b.closure).await.expect("missing");
    assert!(!missing.is_empty() && !missing.contains(&shared));
    other
        .delete_key(&layout::blob(&shared))
        .await
        .expect("a gc deletes the shared blob");
    let mut blobs = Vec::new();
    for d in &b.closure {
        let uploaded = match missing.contains(d) {
            true => Some(t.put_blob(&encoded(&src, d)).await.expect("put")),
            false => None,
        };
        blobs.push(CommitBlob {
            digest: *d,
            raw_size: None,
            uploaded,
        });
    }
    let signed = SignedImage::new(&b.manifest, None);
    match t.commit(request(&signed, &blobs)).await {
        Err(RegistryError::NotFound { what }) => {
            assert!(what.contains(&shared.hex()), "{what}")
        }
        other => panic!("manifest committed over a tree without {shared}: {other:?}"),
    }
    assert_eq!(t.missing(&b.closure).await.expect("missing"), vec![shared]);
    let again = t.put_blob(&encoded(&src, &shared)).await.expect("put");
    if let Some(x) = blobs.iter_mut().find(|x| x.digest == shared) {
        x.uploaded = Some(again);
    }
    t.commit(request(&signed, &blobs))
        .await
        .expect("commit on the new head");
    let pinned = {
        let mut p = r.clone();
        p.digest = Some(signed.digest());
        p
    };
    pull(&cfg, &pinned).await.expect("b pulls");

    // The settle step: a gc removed the blob after the manifest commit.
    other
        .delete_key(&layout::blob(&shared))
        .await
        .expect("delete");
    assert!(is_gone(pull(&cfg, &pinned).await));
    t.put_blob(&encoded(&src, &shared))
        .await
        .expect("put again");
    let keys = other.list_keys(layout::BLOBS).await.expect("list");
    assert!(keys.iter().any(|k| k.key == layout::blob(&shared)));
    pull(&cfg, &pinned).await.expect("b pulls again");
}

fn request<'a>(
    s: &'a SignedImage,
    blobs: &'a [pf_registry_core::CommitBlob],
) -> pf_registry_core::CommitRequest<'a> {
    pf_registry_core::CommitRequest {
        manifest: &s.manifest,
        manifest_digest: s.digest(),
        signature: None,
        blobs,
    }
}

async fn pull(
    cfg: &Config,
    r: &ImageRef,
) -> pf_registry_core::Result<pf_registry_core::PullReport> {
    pf_registry_cloud::hf::open(r, cfg)
        .unwrap()
        .pull(Arc::new(MemoryStore::new()))
        .await
}

fn is_gone<T>(r: pf_registry_core::Result<T>) -> bool {
    matches!(r, Err(RegistryError::NotFound { .. }))
}
