//! A real Kubo node as a target of the shared suites.

use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_cloud::ipfs::IpfsTransport;
use pf_registry_conformance::{Backend, ImageSpec, Route, Subject, Target};
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
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.options.insert("ipfs.api".into(), self.node.api.clone());
        c
    }
    fn generated_cases(&self) -> u32 {
        3
    }
    fn route(&self) -> Option<Route> {
        Some(Route::proxy(self.node.api.trim_start_matches("http://")))
    }
    fn endpoint_option(&self) -> Option<&'static str> {
        Some("ipfs.api")
    }
    fn ports(&self) -> Vec<u16> {
        vec![super::port_of(&self.node.api)]
    }
}

fn open(r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
    Ok(Box::new(IpfsTransport::new(r, c)?))
}

/// Push returns a root CID; re-pushing the same image gives the same root
/// and uploads nothing.
fn push_returns_a_stable_root_cid(s: &Subject, rt: &tokio::runtime::Handle) {
    rt.block_on(async {
        let src = Arc::new(MemoryStore::new());
        let img = ImageSpec::sample(50, 3).build(&*src, "cid");
        let signed = SignedImage::new(&img.manifest, None);
        let c = s.config();
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
    });
}

/// A target named `name` whose repository is the node's index (`ipfs://`
/// names it and moves with every push, like an untagged reference).
pub fn index_target(name: &str) -> Target {
    Target::new(name, open, |_| IpfsBackend {
        node: IpfsServer::start(),
    })
}

/// The `ipfs` target (immutable references).
pub fn target() -> Target {
    Target::new("ipfs", open, |_| IpfsBackend {
        node: IpfsServer::start(),
    })
    .immutable_refs()
    .extra(
        "push_returns_a_stable_root_cid",
        push_returns_a_stable_root_cid,
    )
}
