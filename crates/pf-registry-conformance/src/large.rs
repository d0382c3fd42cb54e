//! Large blobs go up streamed (chunked / multipart where the backend has
//! it) and come back streamed, with bounded memory: the process's peak RSS
//! grows far less than the image size. The peak is process-wide, so the
//! binary running this suite runs nothing else, one case at a time.

use std::sync::Arc;

use pf_cas::{BlobStore, DirStore};
use pf_registry_core::manifest::{AgentInfo, BLOB_MEDIA_TYPE};
use pf_registry_core::{Config, Descriptor, Manifest, Registry, SignedImage};
use pf_testsupport::memory::{reset_peak, status_kib, Noise};

use crate::{engine, pull_ref, Subject};

/// The scenario: (name, needs mutable references).
pub const CASES: &[(&str, bool)] = &[("large_blobs_stream_with_bounded_memory", false)];

/// Size of the scenario for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeBlobs {
    /// Blobs in the image, pushed concurrently.
    pub count: u64,
    /// Size of each blob in MiB.
    pub mib: u64,
    /// Largest peak-RSS growth allowed during the push, and the pull, in MiB.
    pub budget_mib: u64,
}

impl Default for LargeBlobs {
    /// One 96 MiB blob within 200 MiB of growth.
    fn default() -> Self {
        LargeBlobs {
            count: 1,
            mib: 96,
            budget_mib: 200,
        }
    }
}

/// Runs the scenario `case` of [`CASES`] on `backend`.
pub async fn run(case: &str, backend: &Subject) {
    match case {
        "large_blobs_stream_with_bounded_memory" => large_blobs(backend).await,
        other => panic!("no large-blob scenario {other}"),
    }
}

async fn large_blobs(fx: &Subject) {
    let LargeBlobs {
        count,
        mib,
        budget_mib,
    } = fx.backend().large_blobs();
    let name = fx.name();
    let size = mib << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(DirStore::open(dir.path().join("src")).expect("store"));
    let mut m = Manifest::new(
        AgentInfo {
            name: "big".into(),
            version: "test".into(),
        },
        "2026-01-01T00:00:00Z",
    );
    let mut digests = Vec::new();
    for i in 0..count {
        let (digest, n) = store
            .put_stream(None, &mut Noise::new(0x9e37_79b9_7f4a_7c15 ^ (i + 1), size))
            .expect("write big blob");
        assert_eq!(n, size);
        m.layers.push(Descriptor {
            role: "model.base".into(),
            media_type: BLOB_MEDIA_TYPE.into(),
            digest,
            size,
        });
        digests.push(digest);
    }
    let signed = SignedImage::new(&m, None);
    let r = fx.fresh_ref("big");
    let cfg = Config {
        spool_dir: Some(dir.path().to_path_buf()),
        ..fx.config()
    };

    let base = status_kib("VmRSS:");
    reset_peak();
    let t0 = std::time::Instant::now();
    let rep = engine(fx, &r, &cfg)
        .push(store.clone(), &signed)
        .await
        .expect("push big");
    let push_secs = t0.elapsed().as_secs_f64();
    let peak_push = status_kib("VmHWM:");
    assert_eq!(rep.blobs_uploaded, count);
    eprintln!(
        "{name}: {count} x {mib} MiB: push {push_secs:.1}s, RSS before {} MiB, peak during push {} MiB",
        base / 1024,
        peak_push / 1024
    );
    fx.backend().check_large_push(count, size);
    // Bounded memory: the encode spools to disk; upload buffers are
    // parallelism x chunk size.
    let growth_mib = peak_push.saturating_sub(base) / 1024;
    assert!(
        growth_mib < budget_mib,
        "{name}: push grew RSS by {growth_mib} MiB for {count} x {mib} MiB"
    );

    // Streamed download into a DirStore, verified by the engine.
    let dst = Arc::new(DirStore::open(dir.path().join("dst")).expect("dst"));
    let base = status_kib("VmRSS:");
    reset_peak();
    let pulled = engine(fx, &pull_ref(fx, &r, &rep.resolved), &cfg)
        .pull(dst.clone())
        .await
        .expect("pull big");
    let peak_pull = status_kib("VmHWM:");
    assert_eq!(pulled.blobs_fetched, count);
    for d in &digests {
        assert_eq!(dst.size(d).expect("size"), Some(size));
    }
    let growth_mib = peak_pull.saturating_sub(base) / 1024;
    eprintln!("{name}: pull peak RSS growth {growth_mib} MiB");
    assert!(
        growth_mib < budget_mib,
        "{name}: pull grew RSS by {growth_mib} MiB for {count} x {mib} MiB"
    );
}
