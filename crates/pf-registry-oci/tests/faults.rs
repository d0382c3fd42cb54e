//! Fault injection between the client and a REAL registry: transient faults
//! are retried and the push/pull succeeds; corrupted bytes are never
//! accepted; the image stays readable at its previous version.

use std::sync::Arc;
use std::time::Duration;

use pf_cas::{BlobStore, MemoryStore};
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{
    Config, Digest, ImageRef, Registry, RegistryError, RetryPolicy, SignedImage,
};
use pf_testsupport::{Fault, FaultProxy, OciAuth, OciRegistry};

fn open(r: &str, cfg: &Config) -> pf_registry_core::Engine<pf_registry_oci::OciTransport> {
    pf_registry_oci::open(&ImageRef::parse(r).expect("ref"), cfg).expect("open")
}

fn fast_retries() -> Config {
    Config {
        retry: RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
        },
        concurrency: 2,
        ..Config::default()
    }
}

fn all_blobs_verify(store: &MemoryStore) {
    for d in store.list().expect("list") {
        assert_eq!(
            Digest::of(&store.get(&d).expect("get")),
            d,
            "store holds a corrupt blob {d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_are_retried() {
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let script = vec![
        Fault::Status(503),
        Fault::Status(502),
        Fault::TooManyRequests(1),
        Fault::CutAfter(60),
        Fault::Status(500),
        Fault::Stall(Duration::from_secs(3)),
        Fault::Status(503),
    ];
    let proxy = FaultProxy::start(&reg.host, script.clone());
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(61, 4).build(&*src, "faulty");
    let signed = SignedImage::new(&img.manifest, None);
    let mut cfg = fast_retries();
    cfg.timeout = Duration::from_secs(1);
    let r = format!("oci://{}/faults/img:v1", proxy.addr);
    let rep = open(&r, &cfg)
        .push(src.clone(), &signed)
        .await
        .expect("push through faults");
    assert_eq!(rep.manifest_digest, signed.digest());
    // The same faults again for the pull.
    proxy.push(script);
    let dst = Arc::new(MemoryStore::new());
    let pulled = open(&r, &cfg)
        .pull(dst.clone())
        .await
        .expect("pull through faults");
    assert_eq!(pulled.manifest, img.manifest);
    all_blobs_verify(&dst);
    assert!(
        proxy.injected() >= 10,
        "only {} faults were injected",
        proxy.injected()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_bytes_are_never_accepted() {
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(62, 4).build(&*src, "flip");
    let signed = SignedImage::new(&img.manifest, None);
    let direct = format!("oci://{}/flip/img:v1", reg.host);
    open(&direct, &Config::default())
        .push(src.clone(), &signed)
        .await
        .expect("clean push");

    // Every connection through the proxy gets one byte flipped in its first response body.
    let proxy = FaultProxy::start(&reg.host, vec![Fault::FlipAt(700); 200]);
    let via = format!("oci://{}/flip/img:v1", proxy.addr);
    let dst = Arc::new(MemoryStore::new());
    let cfg = Config {
        retry: RetryPolicy::none(),
        ..Config::default()
    };
    match open(&via, &cfg).pull(dst.clone()).await {
        Err(RegistryError::Integrity { .. }) | Err(RegistryError::InvalidData { .. }) => {}
        Err(RegistryError::Signature(_)) => {}
        Err(e) => panic!("corruption must be an integrity/invalid-data error, got {e}"),
        Ok(_) => panic!("a pull with flipped bytes succeeded"),
    }
    all_blobs_verify(&dst);
    assert!(proxy.injected() > 0);
    // The image stays readable directly.
    let ok = open(&direct, &Config::default())
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("clean pull");
    assert_eq!(ok.manifest, img.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_failure_is_typed_and_previous_version_survives() {
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let src = Arc::new(MemoryStore::new());
    let v1 = ImageSpec::sample(63, 3).build(&*src, "v1");
    let v2 = ImageSpec::sample(64, 3).build(&*src, "v2");
    let direct = format!("oci://{}/keep/img:v1", reg.host);
    open(&direct, &Config::default())
        .push(src.clone(), &SignedImage::new(&v1.manifest, None))
        .await
        .expect("push v1");
    // A server that keeps failing: retries run out, the error says so.
    let proxy = FaultProxy::start(&reg.host, vec![Fault::Status(503); 500]);
    let via = format!("oci://{}/keep/img:v1", proxy.addr);
    let err = open(&via, &fast_retries())
        .push(src.clone(), &SignedImage::new(&v2.manifest, None))
        .await
        .expect_err("push against a failing server");
    match err {
        RegistryError::Transport { attempts, .. } => assert!(attempts > 1, "attempts {attempts}"),
        other => panic!("expected Transport after retries, got {other}"),
    }
    let still = open(&direct, &Config::default())
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull v1");
    assert_eq!(
        still.manifest, v1.manifest,
        "previous version must stay readable"
    );
}
