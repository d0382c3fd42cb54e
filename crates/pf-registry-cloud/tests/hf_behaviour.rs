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
