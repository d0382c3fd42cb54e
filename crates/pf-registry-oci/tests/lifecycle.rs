//! `pf rm` on real registries (distribution 2.8 and v3): a tag, a shared
//! tag and a pf manifest digest are deleted through the registry API;
//! after each, the deleted reference is gone and every other tag still
//! pulls and verifies. `gc` is the registry's job and says so.

use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_digest::Digest;
use pf_registry_conformance::{ImageSpec, TestImage};
use pf_registry_core::lifecycle::{self, GcOptions, ReadData};
use pf_registry_core::{
    Config, ImageRef, Registry, RegistryError, SignedImage, SigningKey, TrustPolicy, Verification,
};
use pf_registry_oci::OciTransport;
use pf_testsupport::{Distribution, OciRegistry};

struct Pushed {
    img: TestImage,
    signed: SignedImage,
    src: Arc<MemoryStore>,
}

fn reference(host: &str, tail: &str) -> ImageRef {
    ImageRef::parse(&format!("oci://{host}/lc/app{tail}")).expect("ref")
}

fn transport(host: &str, tail: &str) -> OciTransport {
    OciTransport::new(&reference(host, tail), &Config::default()).expect("transport")
}

async fn push(host: &str, tag: &str, p: &Pushed, max_layers: Option<usize>) {
    let mut cfg = Config::default();
    if let Some(n) = max_layers {
        cfg.options.insert("oci.max_layers".into(), n.to_string());
    }
    pf_registry_oci::open(&reference(host, &format!(":{tag}")), &cfg)
        .expect("open")
        .push(p.src.clone(), &p.signed)
        .await
        .unwrap_or_else(|e| panic!("push :{tag}: {e}"));
}

fn image(seed: u64, key: &SigningKey) -> Pushed {
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(seed, 6).build(&*src, "lc");
    let signed = SignedImage::new(&img.manifest, Some(key));
    Pushed { img, signed, src }
}

/// `:tag` pulls `p` (signature verified, every blob equal) and `verify
/// --read-data` finds nothing missing or corrupt.
async fn pulls_and_verifies(host: &str, tag: &str, key: &SigningKey, p: &Pushed) {
    let trust = TrustPolicy::new(vec![key.public_key()]);
    let cfg = Config {
        trust: trust.clone(),
        ..Config::default()
    };
    let dst = Arc::new(MemoryStore::new());
    let pulled = pf_registry_oci::open(&reference(host, &format!(":{tag}")), &cfg)
        .expect("open")
        .pull(dst.clone())
        .await
        .unwrap_or_else(|e| panic!("pull :{tag}: {e}"));
    assert_eq!(pulled.manifest, p.img.manifest);
    assert!(matches!(pulled.verification, Verification::Verified { .. }));
    for d in &p.img.closure {
        assert!(p.src.get(d).ok() == dst.get(d).ok(), ":{tag}: blob {d}");
    }
    let v = lifecycle::verify(&transport(host, &format!(":{tag}")), &trust, ReadData::All)
        .await
        .expect("verify");
    assert!(v.ok(), ":{tag}: {v:?}");
    assert_eq!(v.blobs, p.img.closure.len());
}

/// Tags `from`'s manifest, byte for byte, as `to` too.
async fn retag(host: &str, from: &str, to: &str) {
    let mt = pf_registry_oci::layout::MANIFEST_MT;
    let http = reqwest::Client::new();
    let url = |t: &str| format!("http://{host}/v2/lc/app/manifests/{t}");
    let body = http
        .get(url(from))
        .header("accept", mt)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("get manifest")
        .bytes()
        .await
        .expect("manifest body");
    http.put(url(to))
        .header("content-type", mt)
        .body(body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("put manifest");
}

async fn is_gone(host: &str, tag: &str) -> bool {
    let res = pf_registry_oci::open(&reference(host, &format!(":{tag}")), &Config::default())
        .expect("open")
        .pull(Arc::new(MemoryStore::new()))
        .await;
    matches!(res, Err(RegistryError::NotFound { .. }))
}

async fn tags(host: &str) -> Vec<String> {
    let mut t = transport(host, "").list_tags().await.expect("tags");
    t.sort();
    t
}

async fn rm_deletes_through_the_registry_api(flavour: Distribution) {
    let reg = OciRegistry::start_distribution(flavour);
    let host = reg.host.as_str();
    let key = SigningKey::generate().expect("keygen");
    let (a, b, d) = (image(1, &key), image(2, &key), image(3, &key));
    push(host, "a", &a, None).await;
    retag(host, "a", "c").await; // the same OCI manifest as :a
    push(host, "b", &b, None).await;
    push(host, "d", &d, Some(3)).await; // an index of part manifests
    assert_eq!(tags(host).await, ["a", "b", "c", "d"]);

    // A tag no other tag shares: its manifest goes with it.
    let rep = lifecycle::rm(&transport(host, ":b"), None, None)
        .await
        .expect("rm :b");
    assert_eq!(rep.tags, vec![Some("b".to_string())]);
    assert_eq!(rep.manifests, vec![b.signed.digest()]);
    assert!(is_gone(host, "b").await, ":b still pulls");
    assert_eq!(tags(host).await, ["a", "c", "d"]);
    for (t, p) in [("a", &a), ("c", &a), ("d", &d)] {
        pulls_and_verifies(host, t, &key, p).await;
    }

    // By pf manifest digest (the image is an index): mapped to the index.
    let pinned = format!("@{}", d.signed.digest());
    let rep = lifecycle::rm(&transport(host, &pinned), None, Some(d.signed.digest()))
        .await
        .expect("rm by pf digest");
    assert_eq!(rep.tags, vec![Some("d".to_string())]);
    assert_eq!(rep.manifests, vec![d.signed.digest()]);
    assert!(is_gone(host, "d").await, ":d still pulls");
    assert_eq!(tags(host).await, ["a", "c"]);

    // A tag sharing its manifest with :c: only the tag may go.
    let shared = lifecycle::rm(&transport(host, ":a"), None, None).await;
    match flavour {
        // distribution v3 deletes a tag alone (OCI 1.1).
        Distribution::V3 => {
            let rep = shared.expect("rm :a");
            assert_eq!(rep.tags, vec![Some("a".to_string())]);
            assert!(rep.manifests.is_empty(), "{rep:?}");
            assert!(is_gone(host, "a").await, ":a still pulls");
            assert_eq!(tags(host).await, ["c"]);
        }
        // 2.8 deletes manifests only: refused, nothing deleted.
        _ => {
            let err = shared.expect_err("2.8 cannot delete a tag alone");
            assert!(
                matches!(&err, RegistryError::NotSupported { operation, .. } if operation.contains("tags c point at the same manifest")),
                "{err}"
            );
            assert_eq!(tags(host).await, ["a", "c"]);
            pulls_and_verifies(host, "a", &key, &a).await;
        }
    }
    pulls_and_verifies(host, "c", &key, &a).await;

    // Nothing left to match.
    let missing = lifecycle::rm(&transport(host, ":nope"), None, None).await;
    assert!(matches!(missing, Err(RegistryError::NotFound { .. })));
    let unknown = Digest::of(b"no such manifest");
    let missing = lifecycle::rm(&transport(host, ""), None, Some(unknown)).await;
    assert!(matches!(missing, Err(RegistryError::NotFound { .. })));

    // Storage is the registry's own.
    let gc = lifecycle::gc(&transport(host, ""), &GcOptions::default()).await;
    assert!(
        matches!(&gc, Err(RegistryError::NotSupported { operation, .. }) if operation.contains("garbage-collect")),
        "{gc:?}"
    );
}

#[tokio::test]
async fn rm_on_distribution_2_8() {
    rm_deletes_through_the_registry_api(Distribution::Debian).await;
}

#[tokio::test]
async fn rm_on_distribution_v3() {
    rm_deletes_through_the_registry_api(Distribution::V3).await;
}
