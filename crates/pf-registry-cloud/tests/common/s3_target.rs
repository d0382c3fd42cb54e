//! S3 on a real object store, SeaweedFS (`S3Server::start_seaweedfs`), as
//! a target of the shared suites (conformance, faults, crash loop).

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_cloud::s3::S3Transport;
use pf_registry_conformance::{Backend, Route, Target};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_testsupport::{S3Server, ServerProcess};

struct S3Backend {
    server: S3Server,
    n: AtomicU32,
    label: &'static str,
}

impl Backend for S3Backend {
    fn name(&self) -> String {
        format!("s3 ({})", self.label)
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        // Alternate untagged and tagged references so both layouts are covered.
        let path = if n & 1 == 0 {
            format!("suite/{label}-{n}")
        } else {
            format!("suite/{label}-{n}:v{n}")
        };
        super::s3_ref(&self.server, &path)
    }
    fn config(&self) -> Config {
        super::config(&self.server)
    }
    fn generated_cases(&self) -> u32 {
        6
    }
    fn route(&self) -> Option<Route> {
        Some(Route::proxy(
            self.server.endpoint.trim_start_matches("http://"),
        ))
    }
    fn endpoint_option(&self) -> Option<&'static str> {
        Some("s3.endpoint")
    }
    fn ports(&self) -> Vec<u16> {
        vec![super::port_of(&self.server.endpoint)]
    }
    fn large_blobs(&self) -> pf_registry_conformance::LargeBlobs {
        // The 1 GiB figure is checked with `PF_S3_BIG_MIB=1024`.
        pf_registry_conformance::LargeBlobs {
            mib: std::env::var("PF_S3_BIG_MIB")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(96),
            ..Default::default()
        }
    }
    fn check_large_push(&self, count: u64, size: u64) {
        let initiated = self.server.count_requests("POST", "?uploads");
        let parts = self.server.count_requests("PUT", "partNumber=");
        eprintln!("s3: {initiated} multipart uploads, {parts} parts");
        assert_eq!(initiated as u64, count, "one multipart upload per blob");
        assert!(
            parts as u64 >= count * (size / (16 << 20)),
            "expected many parts, got {parts}"
        );
        assert_eq!(
            self.server.count_requests("PUT", "/blobs/"),
            parts,
            "no single-shot PUT of a big blob"
        );
    }
}

fn open(r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
    Ok(Box::new(S3Transport::new(r, c)?))
}

/// The `s3` target on SeaweedFS.
pub fn target() -> Target {
    target_on("SeaweedFS", S3Server::start_seaweedfs)
}

/// The `s3` target on moto, whose request log the large-blob check reads
/// (multipart uploads and parts counted per request).
pub fn target_moto() -> Target {
    target_on("moto", S3Server::start)
}

fn target_on(label: &'static str, start: fn() -> S3Server) -> Target {
    Target::new("s3", open, move |_| S3Backend {
        server: start(),
        n: AtomicU32::new(0),
        label,
    })
}
