//! The Hub test server (whose fidelity is proven with the official client in
//! pf-hub-testserver's tests) as a target of the shared suites.
//!
//! The Hub has two origins (the API and an LFS storage origin reached
//! through absolute URLs the API hands out), so the fault route puts a
//! proxy in front of each and a rewriting relay behind the API proxy that
//! points those absolute URLs at the proxies: every byte of an HF push or
//! pull crosses a proxy.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use pf_hub_testserver::{HubConfig, HubServer};
use pf_registry_cloud::hf::HfTransport;
use pf_registry_conformance::{Backend, Route, Target};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_testsupport::rewrite::{proxy_as_long_as, Rewriter};

const TOKEN: &str = "hf_conformance_token_abc";

struct HfBackend {
    hub: HubServer,
    n: AtomicU32,
}

impl Backend for HfBackend {
    fn name(&self) -> String {
        format!("hf {}", self.hub.url())
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        ImageRef::parse(&format!("hf://pf-tester/{label}-{n}")).expect("ref")
    }
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.options
            .insert("hf.endpoint".into(), self.hub.url().to_string());
        c.options.insert("hf.token".into(), TOKEN.into());
        c
    }
    /// client -> proxy A -> rewriter -> hub API; client -> proxy B -> LFS
    /// storage. The rewriter points the absolute URLs in the hub's answers
    /// (LFS upload/verify hrefs, download redirects, pagination links) at
    /// A and B.
    fn route(&self) -> Option<Route> {
        let hub = self.hub.url().trim_start_matches("http://").to_string();
        let storage = self
            .hub
            .storage_url()
            .trim_start_matches("http://")
            .to_string();
        let storage_proxy = proxy_as_long_as(&storage, &storage);
        let relay = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let relay_addr = relay.local_addr().expect("relay addr").to_string();
        let hub_proxy = proxy_as_long_as(&relay_addr, &hub);
        let rewriter = Rewriter::start(
            relay,
            hub.clone(),
            vec![
                (hub, hub_proxy.addr.clone()),
                (storage, storage_proxy.addr.clone()),
            ],
        );
        Some(Route {
            endpoint: hub_proxy.addr.clone(),
            proxies: vec![hub_proxy, storage_proxy],
            blob_proxy: 1,
            keep: Some(Box::new(rewriter)),
        })
    }
    fn endpoint_option(&self) -> Option<&'static str> {
        Some("hf.endpoint")
    }
    fn ports(&self) -> Vec<u16> {
        vec![
            super::port_of(self.hub.url()),
            super::port_of(self.hub.storage_url()),
        ]
    }
}

fn open(r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
    Ok(Box::new(HfTransport::new(r, c)?))
}

/// The `hf` target: one Hub test server on the harness's runtime.
pub fn target() -> Target {
    Target::new("hf", open, |rt| HfBackend {
        hub: rt
            .block_on(HubServer::start(HubConfig::with_token(TOKEN).page_size(10)))
            .expect("start the Hub test server"),
        n: AtomicU32::new(0),
    })
}
