//! The shared conformance suite against a real docker-registry, in each auth flavour.

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_conformance::{run_all, Backend};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_registry_oci::OciTransport;
use pf_testsupport::{OciAuth, OciRegistry};

struct OciBackend {
    reg: OciRegistry,
    n: AtomicU32,
}

impl Backend for OciBackend {
    fn name(&self) -> String {
        format!("oci {}", self.reg.host)
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        ImageRef::parse(&format!("oci://{}/conf/{label}-{n}:v1", self.reg.host)).expect("ref")
    }
    fn transport(&self, r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
        Ok(Box::new(OciTransport::new(r, c)?))
    }
    fn config(&self) -> Config {
        Config {
            ca_file: self.reg.ca_file.clone(),
            ..Config::default()
        }
    }
}

async fn suite(auth: OciAuth) {
    let reg = OciRegistry::start(auth);
    match (&reg.username, &reg.password) {
        (Some(u), Some(p)) => {
            std::env::set_var("PF_OCI_USERNAME", u);
            std::env::set_var("PF_OCI_PASSWORD", p);
        }
        _ => {
            std::env::remove_var("PF_OCI_USERNAME");
            std::env::remove_var("PF_OCI_PASSWORD");
        }
    }
    let b = OciBackend {
        reg,
        n: AtomicU32::new(0),
    };
    run_all(&b, pf_registry_conformance::cases(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_all_flavours() {
    // One test so the credential env vars are never shared between flavours.
    suite(OciAuth::Anonymous).await;
    suite(OciAuth::BasicTls).await;
    suite(OciAuth::Token).await;
}
