//! A large blob goes through a streamed multipart upload with bounded memory,
//! and comes back through a streamed download. Alone in its own test binary so
//! the peak-RSS figure is this test's.
//!
//! Size: `PF_S3_BIG_MIB` (default 96). The 1 GiB figure is checked by
//! running with `PF_S3_BIG_MIB=1024`.
#![cfg(feature = "s3")]

mod common;

use std::sync::Arc;

use pf_cas::{BlobStore, DirStore};
use pf_registry_core::manifest::{AgentInfo, BLOB_MEDIA_TYPE};
use pf_registry_core::{Descriptor, Manifest, Registry, SignedImage};
use pf_testsupport::memory::{reset_peak, status_kib, Noise};
use pf_testsupport::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_blob_multipart_bounded_memory() {
    let mib: u64 = std::env::var("PF_S3_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let size = mib << 20;
    let server = S3Server::start();
    let c = common::config(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(DirStore::open(dir.path().join("src")).expect("store"));
    let (digest, n) = store
        .put_stream(None, &mut Noise::new(0x9e37_79b9_7f4a_7c15, size))
        .expect("write big blob");
    assert_eq!(n, size);
    let mut m = Manifest::new(
        AgentInfo {
            name: "big".into(),
            version: "test".into(),
        },
        "2026-01-01T00:00:00Z",
    );
    m.layers.push(Descriptor {
        role: "model.base".into(),
        media_type: BLOB_MEDIA_TYPE.into(),
        digest,
        size,
    });
    let signed = SignedImage::new(&m, None);
    let r = common::s3_ref(&server, "big/img:v1");

    let base = status_kib("VmRSS:");
    reset_peak();
    let t0 = std::time::Instant::now();
    let rep = common::engine(&r, &c)
        .push(store.clone(), &signed)
        .await
        .expect("push big");
    let push_secs = t0.elapsed().as_secs_f64();
    let peak_push = status_kib("VmHWM:");
    assert_eq!(rep.blobs_uploaded, 1);

    let initiated = server.count_requests("POST", "?uploads");
    let parts = server.count_requests("PUT", "partNumber=");
    eprintln!(
        "{mib} MiB blob: push {push_secs:.1}s, {parts} parts, RSS before {} MiB, peak during push {} MiB",
        base / 1024,
        peak_push / 1024
    );
    assert_eq!(initiated, 1, "one multipart upload");
    assert!(
        parts as u64 >= size / (16 << 20),
        "expected many parts, got {parts}"
    );
    assert_eq!(
        server.count_requests("PUT", "/blobs/"),
        parts,
        "no single-shot PUT of the big blob"
    );
    // Bounded memory: peak growth far below the blob size (the encode spools to
    // disk; upload buffers are parallelism x part size).
    let growth_mib = peak_push.saturating_sub(base) / 1024;
    assert!(
        growth_mib < 200,
        "push grew RSS by {growth_mib} MiB for a {mib} MiB blob"
    );

    // Streamed download into a DirStore, verified by the engine.
    let dst = Arc::new(DirStore::open(dir.path().join("dst")).expect("dst"));
    reset_peak();
    let base = status_kib("VmRSS:");
    let pulled = common::engine(&r, &c)
        .pull(dst.clone())
        .await
        .expect("pull big");
    let peak_pull = status_kib("VmHWM:");
    assert_eq!(pulled.blobs_fetched, 1);
    assert_eq!(dst.size(&digest).expect("size"), Some(size));
    let growth_mib = peak_pull.saturating_sub(base) / 1024;
    eprintln!("pull peak RSS growth {growth_mib} MiB");
    assert!(
        growth_mib < 200,
        "pull grew RSS by {growth_mib} MiB for a {mib} MiB blob"
    );
}
