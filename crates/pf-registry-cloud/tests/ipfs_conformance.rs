//! The shared conformance suite against a real Kubo node on loopback.
#![cfg(feature = "ipfs")]

use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_cloud::ipfs::IpfsTransport;
use pf_registry_conformance::{run_all, Backend, ImageSpec};
use pf_registry_core::{Config, ImageRef, Registry, SignedImage, Transport};
use pf_testsupport::IpfsServer;

struct IpfsBackend {
    node: IpfsServer,
}

impl Backend for IpfsBackend {
    fn name(&self) -> String {
        format!("ipfs {}", self.node.api)
    }
    fn fresh_ref(&self, _label: &str) -> ImageRef {
        ImageRef::parse("ipfs://").expect("ref")
    }
    fn transport(&self, r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
        Ok(Box::new(IpfsTransport::new(r, c)?))
    }
    fn mutable_refs(&self) -> bool {
        false
    }
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.options.insert("ipfs.api".into(), self.node.api.clone());
        c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipfs_backend_conformance() {
    let b = IpfsBackend {
        node: IpfsServer::start(),
    };
    run_all(&b, pf_registry_conformance::cases(3)).await;

    // Push returns a root CID; re-pushing the same image gives the same root and uploads nothing.
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(50, 3).build(&*src, "cid");
    let signed = SignedImage::new(&img.manifest, None);
    let c = b.config();
    let e = pf_registry_cloud::ipfs::open(&ImageRef::parse("ipfs://").unwrap(), &c).unwrap();
    let a = e.push(src.clone(), &signed).await.expect("push");
    // The root is a dag-pb CIDv1 in base32.
    assert!(
        a.resolved.starts_with("ipfs://bafybei"),
        "root CID expected: {}",
        a.resolved
    );
    let again = e.push(src.clone(), &signed).await.expect("re-push");
    assert_eq!(again.resolved, a.resolved, "same image, same root CID");
    assert_eq!(again.blobs_uploaded, 0);
}
