//! S3 backend behaviour against a real moto server: layout, request counts on
//! re-push, LIST vs HEAD dedup, conditional commit, concurrent pushers.
#![cfg(feature = "s3")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use pf_cas::{BlobStore, MemoryStore};
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{
    Registry, RegistryError, SignedImage, Transport, TrustPolicy, Verification,
};
use pf_sign::SigningKey;
use pf_testsupport::{S3Server, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn layout_tags_and_pinned_pulls() {
    let server = S3Server::start();
    let c = common::config(&server);
    let key = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let a = ImageSpec::sample(11, 3).build(&*src, "a");
    let b = ImageSpec::sample(12, 3).build(&*src, "b");
    let sa = SignedImage::new(&a.manifest, Some(&key));
    let sb = SignedImage::new(&b.manifest, Some(&key));

    let untagged = common::s3_ref(&server, "team/img");
    let tagged = common::s3_ref(&server, "team/img:v1");
    let ra = common::engine(&untagged, &c)
        .push(src.clone(), &sa)
        .await
        .expect("push a");
    let rb = common::engine(&tagged, &c)
        .push(src.clone(), &sb)
        .await
        .expect("push b");
    assert_eq!(
        ra.resolved,
        format!("s3://{}/team/img@{}", server.bucket, sa.digest())
    );
    assert_eq!(
        rb.resolved,
        format!("s3://{}/team/img:v1@{}", server.bucket, sb.digest())
    );

    let keys = common::all_keys(&server).await;
    let (ha, hb) = (sa.digest().hex().to_string(), sb.digest().hex().to_string());
    for k in [
        "team/img/manifest.json".to_string(),
        "team/img/manifest.json.sig".to_string(),
        "team/img/tags/v1/manifest.json".to_string(),
        "team/img/tags/v1/manifest.json.sig".to_string(),
        format!("team/img/manifests/sha256/{ha}.json"),
        format!("team/img/manifests/sha256/{hb}.json"),
        format!("team/img/signatures/sha256/{ha}.sig"),
        format!("team/img/signatures/sha256/{hb}.sig"),
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:#?}");
    }
    for d in a.closure.iter().chain(&b.closure) {
        let k = format!("team/img/blobs/sha256/{}/{}.zst", d.shard(), d.hex());
        assert!(keys.contains(&k), "missing blob key {k}");
    }

    // Each reference resolves to its own manifest; tags do not clobber each other.
    let trusted = {
        let mut t = c.clone();
        t.trust = TrustPolicy::new(vec![key.public_key()]);
        t
    };
    for (r, img) in [(&untagged, &a), (&tagged, &b)] {
        let rep = common::engine(r, &trusted)
            .pull(Arc::new(MemoryStore::new()))
            .await
            .expect("pull");
        assert_eq!(rep.manifest, img.manifest);
        assert!(matches!(rep.verification, Verification::Verified { .. }));
    }
    // A's resolved ref keeps giving A after the untagged ref moves to B.
    common::engine(&untagged, &c)
        .push(src.clone(), &sb)
        .await
        .expect("push b untagged");
    let pinned = pf_registry_core::ImageRef::parse(&ra.resolved).expect("resolved");
    let rep = common::engine(&pinned, &trusted)
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull pinned a");
    assert_eq!(rep.manifest, a.manifest);
    assert!(matches!(rep.verification, Verification::Verified { .. }));

    // An unsigned push removes the tag's stale signature copy.
    common::engine(&tagged, &c)
        .push(src.clone(), &SignedImage::new(&a.manifest, None))
        .await
        .expect("push unsigned");
    let keys = common::all_keys(&server).await;
    assert!(!keys.contains(&"team/img/tags/v1/manifest.json.sig".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repush_issues_no_blob_put_small_image_uses_head() {
    let server = S3Server::start();
    let c = common::config(&server);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(21, 3).build(&*src, "small");
    assert!(
        img.closure.len() <= 64,
        "small image must take the HEAD path"
    );
    let signed = SignedImage::new(&img.manifest, None);
    let r = common::s3_ref(&server, "repush/small:t");
    common::engine(&r, &c)
        .push(src.clone(), &signed)
        .await
        .expect("push");
    let before = server.log_text().lines().count();
    let blob_puts_before = server.count_requests("PUT", "/blobs/");
    assert_eq!(
        blob_puts_before,
        img.closure.len(),
        "first push PUTs each blob once"
    );

    let rep = common::engine(&r, &c)
        .push(src.clone(), &signed)
        .await
        .expect("re-push");
    assert_eq!(rep.blobs_uploaded, 0);
    let log = server.log_text();
    let new: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("\" "))
        // The gc-safety marker of a push (PUT, LIST, DELETE under locks/).
        .filter(|l| !l.contains("/locks/") && !l.contains("locks%2F"))
        .collect();
    let blob_puts = new
        .iter()
        .filter(|l| l.contains("\"PUT ") && l.contains("/blobs/"))
        .count();
    let heads = new
        .iter()
        .filter(|l| l.contains("\"HEAD ") && l.contains("/blobs/"))
        .count();
    let lists = new.iter().filter(|l| l.contains("list-type=2")).count();
    eprintln!(
        "re-push of {} blobs: {} requests: {new:#?}",
        img.closure.len(),
        new.len()
    );
    assert_eq!(blob_puts, 0, "re-push must not PUT blobs");
    assert_eq!(heads, img.closure.len(), "small batch: one HEAD per blob");
    assert_eq!(lists, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repush_of_a_large_image_lists_instead_of_heads() {
    let server = S3Server::start();
    let c = common::config(&server);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(22, 24).build(&*src, "many");
    assert!(
        img.closure.len() > 64,
        "need more than 64 blobs, got {}",
        img.closure.len()
    );
    let signed = SignedImage::new(&img.manifest, None);
    let r = common::s3_ref(&server, "repush/large");
    let first = common::engine(&r, &c)
        .push(src.clone(), &signed)
        .await
        .expect("push");
    assert_eq!(first.blobs_uploaded as usize, img.closure.len());
    let before = server.log_text().lines().count();
    let rep = common::engine(&r, &c)
        .push(src.clone(), &signed)
        .await
        .expect("re-push");
    assert_eq!(rep.blobs_uploaded, 0);
    let log = server.log_text();
    let new: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("\" "))
        // The gc-safety marker of a push (PUT, LIST, DELETE under locks/).
        .filter(|l| !l.contains("/locks/") && !l.contains("locks%2F"))
        .collect();
    let count = |m: &str, needle: &str| {
        new.iter()
            .filter(|l| l.contains(m) && l.contains(needle))
            .count()
    };
    eprintln!(
        "re-push of {} blobs took {} requests: {new:#?}",
        img.closure.len(),
        new.len()
    );
    assert_eq!(count("\"PUT ", "/blobs/"), 0, "re-push must not PUT blobs");
    assert_eq!(
        count("\"HEAD ", "/blobs/"),
        0,
        "large batch must not HEAD each blob"
    );
    assert_eq!(
        count("\"GET ", "list-type=2"),
        1,
        "one LIST page for < 1000 blobs"
    );
    // object_store 0.14 deletes through bulk DeleteObjects (`POST ?delete`,
    // keys in the body), so the lock release is not filtered out by path:
    // at most two deletes (sig delete + lock release).
    let deletes = count("\"POST ", "?delete");
    assert!(deletes <= 2, "re-push sent {deletes} deletes");
    // LIST + probe GET + manifest HEAD + manifest copy PUT + tag manifest PUT.
    assert!(
        new.len() - deletes <= 5,
        "re-push used {} requests",
        new.len()
    );

    // A second image sharing most blobs uploads only the new ones.
    let mut spec = ImageSpec::sample(22, 24);
    spec.layers.push(b"one more layer".to_vec());
    let b = spec.build(&*src, "many-b");
    let rep = common::engine(&r, &c)
        .push(src.clone(), &SignedImage::new(&b.manifest, None))
        .await
        .expect("push b");
    let new_blobs = b
        .closure
        .iter()
        .filter(|d| !img.closure.contains(d))
        .count();
    assert_eq!(rep.blobs_uploaded as usize, new_blobs);
}

/// moto enforces If-None-Match: * and If-Match on PutObject, which the
/// commit relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_enforces_conditional_puts() {
    let server = S3Server::start();
    let store = common::raw_store(&server);
    let p = object_store::path::Path::from("cond/manifest.json");
    let opts = |mode| PutOptions {
        mode,
        ..PutOptions::default()
    };
    let v1 = store
        .put_opts(
            &p,
            PutPayload::from(Bytes::from_static(b"one")),
            opts(PutMode::Create),
        )
        .await
        .expect("create");
    let again = store
        .put_opts(
            &p,
            PutPayload::from(Bytes::from_static(b"two")),
            opts(PutMode::Create),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let v2 = store
        .put_opts(
            &p,
            PutPayload::from(Bytes::from_static(b"two")),
            opts(PutMode::Update(UpdateVersion::from(v1.clone()))),
        )
        .await
        .expect("update with the current etag");
    assert_ne!(v1.e_tag, v2.e_tag);
    let stale = store
        .put_opts(
            &p,
            PutPayload::from(Bytes::from_static(b"three")),
            opts(PutMode::Update(UpdateVersion::from(v1))),
        )
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{stale:?}"
    );
}

/// Many pushers of different images race for one tag: each ends Ok or
/// Conflict, at least one wins, and the tag holds one complete image whose
/// signature verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushers_never_tear_a_tag() {
    let server = S3Server::start();
    let c = common::config(&server);
    let key = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let images: Vec<_> = (0..6)
        .map(|i| ImageSpec::sample(100 + i, 3).build(&*src, &format!("racer{i}")))
        .collect();
    let signed: Vec<_> = images
        .iter()
        .map(|i| SignedImage::new(&i.manifest, Some(&key)))
        .collect();
    let r = common::s3_ref(&server, "race/img:latest");
    let mut trusted = c.clone();
    trusted.trust = TrustPolicy::new(vec![key.public_key()]);
    let mut conflicts = 0;
    for round in 0..3 {
        let engines: Vec<_> = (0..images.len()).map(|_| common::engine(&r, &c)).collect();
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
                Err(RegistryError::Conflict(msg)) => {
                    assert!(msg.contains("race/img:latest"), "{msg}");
                    conflicts += 1
                }
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
    eprintln!("conflicts over 3 rounds of 6 racers: {conflicts}");
}

/// Pushing the same image twice concurrently is never a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_image_concurrent_pushes_both_succeed() {
    let server = S3Server::start();
    let c = common::config(&server);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(31, 3).build(&*src, "same");
    let s = SignedImage::new(&img.manifest, None);
    let r = common::s3_ref(&server, "same/img");
    for _ in 0..3 {
        let (e1, e2, e3) = (
            common::engine(&r, &c),
            common::engine(&r, &c),
            common::engine(&r, &c),
        );
        let (x, y, z) = tokio::join!(
            e1.push(src.clone(), &s),
            e2.push(src.clone(), &s),
            e3.push(src.clone(), &s)
        );
        for res in [x, y, z] {
            res.expect("pushing an identical image never conflicts");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_blob_and_manifest_are_not_found() {
    let server = S3Server::start();
    let c = common::config(&server);
    let r = common::s3_ref(&server, "nothing/here:v9");
    let t = pf_registry_cloud::s3::S3Transport::new(&r, &c).expect("transport");
    let d = pf_registry_core::Digest::of(b"absent");
    match t.get_blob(&d).await {
        Err(RegistryError::NotFound { what }) => assert!(what.contains(&d.to_string()), "{what}"),
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
    assert!(matches!(
        t.get_manifest().await,
        Err(RegistryError::NotFound { .. })
    ));
    assert!(!t.exists().await.expect("exists"));
    assert_eq!(t.missing(&[d]).await.expect("missing"), vec![d]);
    // A bucket that does not exist is NotFound too, not a transport error.
    let nob = pf_registry_core::ImageRef::parse("s3://no-such-bucket-pf/x").expect("ref");
    let t = pf_registry_cloud::s3::S3Transport::new(&nob, &c).expect("transport");
    let err = t.get_manifest().await.expect_err("no bucket");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

/// Ranged reads on moto (the conformance case runs them on SeaweedFS):
/// each range one `GET` of the blob object with a `Range` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_on_moto() {
    let server = S3Server::start();
    let c = common::config(&server);
    let r = common::s3_ref(&server, "ranges/img:v1");
    let (digest, _) = pf_registry_conformance::ranged::push(&common::engine(&r, &c), 0x5e).await;
    let gets = server.count_requests("GET", "/blobs/");
    let t = pf_registry_cloud::s3::S3Transport::new(&r, &c).expect("transport");
    pf_registry_conformance::ranged::check(&t, &digest).await;
    assert!(
        server.count_requests("GET", "/blobs/") > gets + 10,
        "ranged reads are GETs of the blob object"
    );
}
