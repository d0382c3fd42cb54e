//! Ranged reads of a stored (encoded) blob against the real server
//! ([`Transport::get_blob_range`] and the grouped
//! [`ranges::read_ranges`]): the conformance case `ranged_reads`, and its
//! parts for backend tests that start their own servers (a gateway, a
//! second registry, a relay that drops `Range`).

use std::sync::Arc;

use futures::TryStreamExt;
use pf_cas::MemoryStore;
use pf_digest::Digest;
use pf_registry_core::ranges::{self, Wanted, DEFAULT_MAX_GAP, MAX_RANGE};
use pf_registry_core::{Config, Registry, RegistryError, SignedImage, Transport};
use rand::{RngExt, SeedableRng};

use crate::image::{ImageSpec, PACKED_MAX};
use crate::{engine, pull_ref, Subject};

/// Raw size of the big incompressible layer: more than two 256 KiB IPFS
/// leaves, so ranges cross block boundaries.
pub const BIG: usize = 600 << 10;

/// The image the case pushes: a [`BIG`]-byte random layer, a small one and
/// a few files; returns it with the big layer's digest.
pub fn image(seed: u64) -> (ImageSpec, Digest) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = |len: usize| -> Vec<u8> { (0..len).map(|_| rng.random()).collect() };
    let big = bytes(BIG);
    let digest = Digest::of(&big);
    let spec = ImageSpec {
        layers: vec![big, bytes(3000)],
        files: vec![("a.bin".into(), bytes(2000)), ("b.bin".into(), bytes(700))],
        kv: Vec::new(),
        chunk_size: 1024,
        pack_max: PACKED_MAX,
    };
    (spec, digest)
}

/// Pushes [`image`] through `registry`; returns the big layer's digest and
/// the resolved reference.
pub async fn push(registry: &dyn Registry, seed: u64) -> (Digest, String) {
    let (spec, digest) = image(seed);
    let src = Arc::new(MemoryStore::new());
    let img = spec.build(&*src, "ranges");
    assert!(
        img.closure.contains(&digest),
        "the big layer is in the closure"
    );
    let rep = registry
        .push(src, &SignedImage::new(&img.manifest, None))
        .await
        .unwrap_or_else(|e| panic!("push for ranged reads: {e}"));
    (digest, rep.resolved)
}

/// The conformance case: push, then read ranges of the big stored blob
/// through a fresh transport ([`check`]).
pub async fn ranged_reads(backend: &Subject) {
    let base = backend.config();
    let r = backend.fresh_ref("ranges");
    let (digest, resolved) = push(&engine(backend, &r, &base), 0x7a9e).await;
    let pr = pull_ref(backend, &r, &resolved);
    let t = backend
        .transport(&pr, &base)
        .unwrap_or_else(|e| panic!("open {pr}: {e}"));
    check(&*t, &digest).await;
}

/// The whole stored (encoded) blob, as `get_blob` streams it.
pub async fn encoded(t: &dyn Transport, digest: &Digest) -> Vec<u8> {
    let parts: Vec<_> = t
        .get_blob(digest)
        .await
        .unwrap_or_else(|e| panic!("get_blob {digest}: {e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("reading blob {digest}: {e}"));
    parts.concat()
}

/// On a transport opened for a pushed image (the manifest is fetched first,
/// as a pull does): ranges of `digest`'s stored blob (start, middle, tail,
/// single bytes, across 256 KiB boundaries, the whole blob) equal the bytes
/// `get_blob` gives; a grouped read returns each range in order; a range
/// past the end, an empty or oversized one is an error that is not
/// retried; a missing digest is `NotFound`.
pub async fn check(t: &dyn Transport, digest: &Digest) {
    t.get_manifest()
        .await
        .unwrap_or_else(|e| panic!("get_manifest: {e}"));
    let whole = encoded(t, digest).await;
    let n = whole.len() as u64;
    assert!(
        n > (BIG as u64),
        "stored blob of {n} bytes is the big layer"
    );
    let cases = [
        (0, 100),
        (n / 2 - 2048, 4096),
        (n - 777, 777),
        (0, 1),
        (n / 3, 1),
        (n - 1, 1),
        ((256 << 10) - 5, 10),
        ((256 << 10) - 100, 300 << 10),
        (0, n),
    ];
    for (offset, len) in cases {
        let got = t
            .get_blob_range(digest, offset, len)
            .await
            .unwrap_or_else(|e| panic!("{}: range {offset}+{len} of {n}: {e}", t.location()));
        assert!(
            got[..] == whole[offset as usize..(offset + len) as usize],
            "{}: range {offset}+{len} of {n} differs from get_blob's bytes",
            t.location()
        );
    }

    // Grouped: two near ranges merge, a far one does not; order is kept.
    let wanted = [
        Wanted::new(n - 50, 50),
        Wanted::new(10, 20),
        Wanted::new(40, 1000),
    ];
    let config = Config::default();
    let got = ranges::read_ranges(t, &config, digest, &wanted, DEFAULT_MAX_GAP.min(n / 4))
        .await
        .unwrap_or_else(|e| panic!("{}: grouped read: {e}", t.location()));
    for (w, b) in wanted.iter().zip(&got) {
        let (o, l) = (w.offset as usize, w.len as usize);
        assert!(b[..] == whole[o..o + l], "grouped range {o}+{l} differs");
    }

    for (offset, len) in [(n - 10, 11), (n, 1), (n + 1000, 5), (0, n + 1)] {
        match t.get_blob_range(digest, offset, len).await {
            Ok(b) => panic!(
                "{}: range {offset}+{len} past the end of {n} bytes gave {} bytes",
                t.location(),
                b.len()
            ),
            Err(e) => {
                assert!(
                    !matches!(e, RegistryError::NotFound { .. }) && !e.is_retryable(),
                    "{}: range {offset}+{len} past the end of {n}: {e:?}",
                    t.location()
                );
            }
        }
    }
    for (offset, len) in [(0, 0), (0, MAX_RANGE + 1)] {
        let e = t.get_blob_range(digest, offset, len).await.unwrap_err();
        assert!(
            matches!(e, RegistryError::InvalidData { .. }),
            "range {offset}+{len}: {e}"
        );
    }
    let absent = Digest::of(b"pf conformance: a blob nobody pushed");
    match t.get_blob_range(&absent, 0, 1).await {
        Err(RegistryError::NotFound { .. }) => {}
        other => panic!("{}: range of a missing blob: {other:?}", t.location()),
    }
}
