//! Lifecycle cases on the S3 backend against a real moto server, including
//! the concurrent push + gc loop (`PF_GC_ROUNDS` raises its 50 rounds).
#![cfg(feature = "s3")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_cloud::s3::S3Transport;
use pf_registry_conformance::{lifecycle, Backend};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_testsupport::S3Server;

struct S3Backend {
    server: S3Server,
    n: AtomicU32,
}

impl Backend for S3Backend {
    fn name(&self) -> String {
        "s3 (moto)".into()
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        common::s3_ref(&self.server, &format!("lifecycle/{label}-{n}:v{n}"))
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

fn backend() -> S3Backend {
    S3Backend {
        server: S3Server::start(),
        n: AtomicU32::new(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_lifecycle_cases() {
    let b = backend();
    lifecycle::tags_and_log(&b).await;
    lifecycle::rm_version(&b).await;
    lifecycle::verify_finds_damage(&b).await;
    lifecycle::gc_refuses_bad_manifests(&b).await;
    lifecycle::retain_policies(&b).await;
    let (after, fresh) = lifecycle::retain_then_gc(&b)
        .await
        .expect("s3 supports lifecycle");
    eprintln!("s3: 20 versions, keep-last 3, gc: {after} B; fresh push of the 3: {fresh} B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_concurrent_push_and_gc() {
    let rounds = lifecycle::concurrent_push_and_gc(&backend(), 50).await;
    eprintln!("s3: {rounds} rounds of concurrent push + gc");
    assert!(rounds >= 1);
}
