//! The S3 backend against a REAL object store, SeaweedFS (`weed server`
//! with its S3 gateway, built by `cargo xtask servers install`): the
//! conditional-PUT probe, and concurrent pushers to one tag with
//! conditional PUT (probed) and without it (`s3.conditional_put=false`,
//! the fallback commit protocol: last writer wins, never torn).
#![cfg(feature = "s3")]

mod common;

use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_registry_cloud::s3::S3Transport;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, Registry, RegistryError, SignedImage, TrustPolicy, Verification};
use pf_sign::SigningKey;
use pf_testsupport::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_finds_seaweedfs_honours_conditional_put() {
    let server = S3Server::start_seaweedfs();
    let r = common::s3_ref(&server, "probe/img:latest");
    let t = S3Transport::new(&r, &common::config(&server)).expect("transport");
    assert!(t.probe_conditional_put().await.expect("probe"));
    // The probe cleans up after itself.
    let store = common::raw_store(&server);
    let list = |p: &'static str| {
        futures::TryStreamExt::try_collect::<Vec<_>>(object_store::ObjectStore::list(
            &*store,
            Some(&p.into()),
        ))
    };
    let left = list("probe").await.expect("list");
    assert!(left.is_empty(), "probe objects left behind: {left:?}");
    // A push probes once and caches the answer under its prefix.
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(299, 2).build(&*src, "probed");
    common::engine(&r, &common::config(&server))
        .push(src, &SignedImage::new(&img.manifest, None))
        .await
        .expect("push");
    let marker = object_store::path::Path::from("probe/img/.pf-probe/conditional-put");
    let cached = object_store::ObjectStoreExt::get(&*store, &marker)
        .await
        .expect("cached probe result")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(cached.as_ref(), b"true");
    assert_eq!(list("probe/img/.pf-probe").await.expect("list").len(), 1);
}

/// `rounds` rounds of 6 pushers of different signed images to one tag.
/// Returns how many pushes got `Conflict`. Every round the tag pulls,
/// verifies, and holds one of the pushed images complete.
async fn race(server: &S3Server, c: &Config, tag: &str, rounds: usize) -> usize {
    let key = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let images: Vec<_> = (0..6)
        .map(|i| ImageSpec::sample(300 + i, 3).build(&*src, &format!("racer{i}")))
        .collect();
    let signed: Vec<_> = images
        .iter()
        .map(|i| SignedImage::new(&i.manifest, Some(&key)))
        .collect();
    let r = common::s3_ref(server, tag);
    let mut trusted = c.clone();
    trusted.trust = TrustPolicy::new(vec![key.public_key()]);
    let mut conflicts = 0;
    for round in 0..rounds {
        let engines: Vec<_> = (0..images.len()).map(|_| common::engine(&r, c)).collect();
        let results = futures::future::join_all(
            engines
                .iter()
                .zip(&signed)
                .map(|(e, s)| e.push(src.clone() as Arc<dyn BlobStore>, s)),
        )
        .await;
        let mut ok = 0;
        for res in results {
            match res {
                Ok(_) => ok += 1,
                Err(RegistryError::Conflict(_)) => conflicts += 1,
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert!(ok >= 1, "round {round}: nobody won");
        let dst = Arc::new(MemoryStore::new());
        let rep = common::engine(&r, &trusted)
            .pull(dst.clone())
            .await
            .expect("pull after race");
        assert!(matches!(rep.verification, Verification::Verified { .. }));
        let winner = images
            .iter()
            .find(|i| i.manifest == rep.manifest)
            .expect("the tag holds one of the pushed images");
        for d in &winner.closure {
            assert!(dst.has(d).expect("has"), "pulled image lacks {d}");
        }
    }
    conflicts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushers_with_probed_conditional_put() {
    let server = S3Server::start_seaweedfs();
    let conflicts = race(&server, &common::config(&server), "race/probed:latest", 3).await;
    eprintln!("SeaweedFS, conditional PUT probed: {conflicts} conflicts in 3 x 6 pushes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushers_without_conditional_put_last_writer_wins() {
    let server = S3Server::start_seaweedfs();
    let mut c = common::config(&server);
    c.options
        .insert("s3.conditional_put".into(), "false".into());
    let conflicts = race(&server, &c, "race/plain:latest", 3).await;
    assert_eq!(
        conflicts, 0,
        "without conditional PUT nobody is told of a conflict"
    );
}
