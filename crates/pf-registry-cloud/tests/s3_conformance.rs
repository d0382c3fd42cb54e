//! The shared conformance suite on the S3 backend against a real object
//! store: SeaweedFS (see `pf_testsupport::S3Server::start_seaweedfs`).
#![cfg(feature = "s3")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_cloud::s3::S3Transport;
use pf_registry_conformance::{run_all, Backend};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_testsupport::S3Server;

struct S3Backend {
    server: S3Server,
    n: AtomicU32,
}

impl Backend for S3Backend {
    fn name(&self) -> String {
        "s3 (SeaweedFS)".into()
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        // Alternate untagged and tagged references so both layouts are covered.
        let path = if n & 1 == 0 {
            format!("suite/{label}-{n}")
        } else {
            format!("suite/{label}-{n}:v{n}")
        };
        common::s3_ref(&self.server, &path)
    }
    fn transport(&self, r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
        let mut c = c.clone();
        for (k, v) in common::config(&self.server).options {
            c.options.entry(k).or_insert(v);
        }
        Ok(Box::new(S3Transport::new(r, &c)?))
    }
    fn config(&self) -> Config {
        common::config(&self.server)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend_conformance() {
    let b = S3Backend {
        server: S3Server::start_seaweedfs(),
        n: AtomicU32::new(0),
    };
    run_all(&b, pf_registry_conformance::cases(6)).await;
}
