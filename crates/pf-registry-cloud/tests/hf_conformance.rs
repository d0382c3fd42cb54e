//! The shared conformance suite on the hf backend against the Hub test
//! server (whose fidelity is proven with the official client in
//! pf-hub-testserver's tests), plus HF-specific behaviour.
#![cfg(feature = "hf")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_hub_testserver::{HubConfig, HubServer};
use pf_registry_cloud::hf::HfTransport;
use pf_registry_conformance::{run_all, Backend, ImageSpec};
use pf_registry_core::{Config, ImageRef, Registry, RegistryError, SignedImage, Transport};

const TOKEN: &str = "hf_conformance_token_abc";

async fn start_hub(page_size: usize) -> HubServer {
    HubServer::start(HubConfig::with_token(TOKEN).page_size(page_size))
        .await
        .expect("start the Hub test server")
}

struct HfBackend {
    hub: HubServer,
    n: AtomicU32,
}

fn config_for(hub: &HubServer) -> Config {
    let mut c = Config::default();
    c.options
        .insert("hf.endpoint".into(), hub.url().to_string());
    c.options.insert("hf.token".into(), TOKEN.into());
    c
}

impl Backend for HfBackend {
    fn name(&self) -> String {
        format!("hf {}", self.hub.url())
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        ImageRef::parse(&format!("hf://pf-tester/{label}-{n}")).expect("ref")
    }
    fn transport(&self, r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
        Ok(Box::new(HfTransport::new(r, c)?))
    }
    fn config(&self) -> Config {
        config_for(&self.hub)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hf_backend_conformance() {
    let b = HfBackend {
        hub: start_hub(25).await,
        n: AtomicU32::new(0),
    };
    run_all(&b, pf_registry_conformance::cases(4)).await;
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
    // One commit of blobs (fewer than 100), then the manifest's commit.
    assert_eq!(hub.stats().commits, 2, "blobs commit + manifest commit");
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
    assert_eq!(pulled.manifest, img.manifest);
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
