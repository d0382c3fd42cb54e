//! OCI-specific behaviour against a real docker-registry: request counts on
//! re-push, cross-repo mounts, auth failures, 20,000-blob images, interop with
//! an independent OCI client.

use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, ImageRef, Registry, RegistryError, SignedImage};
use pf_testsupport::{OciAuth, OciRegistry, ServerProcess};

/// Serialises tests that set the process-global credential env vars.
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn clear_env() {
    for k in ["PF_OCI_USERNAME", "PF_OCI_PASSWORD", "PF_OCI_TOKEN"] {
        std::env::remove_var(k);
    }
}

fn open(r: &str, cfg: &Config) -> pf_registry_core::Engine<pf_registry_oci::OciTransport> {
    pf_registry_oci::open(&ImageRef::parse(r).expect("ref"), cfg).expect("open")
}

#[tokio::test(flavor = "multi_thread")]
async fn repush_makes_no_blob_upload_requests() {
    let _g = ENV_LOCK.lock().await;
    clear_env();
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(11, 8).build(&*src, "repush");
    let signed = SignedImage::new(&img.manifest, None);
    let r = format!("oci://{}/team/repush:v1", reg.host);
    let first = open(&r, &Config::default())
        .push(src.clone(), &signed)
        .await
        .expect("push");
    assert_eq!(first.blobs_uploaded as usize, img.closure.len());
    let uploads = reg.count_requests("POST", "/blobs/uploads/");
    let puts = reg.count_requests("PUT", "/blobs/uploads/");
    assert!(
        uploads >= img.closure.len(),
        "{uploads} upload sessions for {} blobs",
        img.closure.len()
    );
    // A fresh handle (no in-process cache of this repo's tag) re-pushes.
    let again = open(&r, &Config::default())
        .push(src.clone(), &signed)
        .await
        .expect("re-push");
    assert_eq!(again.blobs_uploaded, 0);
    // Only the small config/signature checks may happen: no new blob upload sessions.
    assert_eq!(
        reg.count_requests("POST", "/blobs/uploads/"),
        uploads,
        "re-push started blob uploads"
    );
    assert_eq!(
        reg.count_requests("PUT", "/blobs/uploads/"),
        puts,
        "re-push uploaded blobs"
    );

    // A new tag in the same repository: known blobs are HEAD-checked, not re-sent.
    let r_v2 = format!("oci://{}/team/repush:v2", reg.host);
    let tagged = open(&r_v2, &Config::default())
        .push(src.clone(), &signed)
        .await
        .expect("push second tag");
    assert_eq!(tagged.blobs_uploaded, 0);
    assert_eq!(reg.count_requests("PUT", "/blobs/uploads/"), puts);
    let mut tags = open(&r, &Config::default())
        .transport()
        .list_tags()
        .await
        .expect("list tags");
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);

    // A second repository on the same registry gets blobs by cross-repo mount.
    let r2 = format!("oci://{}/team/other:v1", reg.host);
    let mounted = open(&r2, &Config::default())
        .push(src.clone(), &signed)
        .await
        .expect("push other");
    assert_eq!(
        mounted.blobs_uploaded, 0,
        "blobs should be mounted, not uploaded"
    );
    assert!(reg.count_requests("POST", "mount=") >= img.closure.len());
    assert_eq!(
        reg.count_requests("PUT", "/blobs/uploads/"),
        puts + 1,
        "only the (deduplicated) config may be uploaded"
    );
    let pulled = open(&r2, &Config::default())
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull mounted");
    assert_eq!(pulled.manifest, img.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_unauthorized_and_secret_free() {
    let _g = ENV_LOCK.lock().await;
    let reg = OciRegistry::start(OciAuth::BasicTls);
    let secret = "correct-horse-battery-staple-wrong";
    std::env::set_var("PF_OCI_USERNAME", "pfuser");
    std::env::set_var("PF_OCI_PASSWORD", secret);
    let cfg = Config {
        ca_file: reg.ca_file.clone(),
        ..Config::default()
    };
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(13, 1).build(&*src, "auth");
    let r = format!("oci://{}/auth/img:v1", reg.host);
    let err = open(&r, &cfg)
        .push(src, &SignedImage::new(&img.manifest, None))
        .await
        .expect_err("push with a wrong password");
    clear_env();
    match &err {
        RegistryError::Unauthorized { registry, .. } => assert_eq!(registry, &reg.host),
        other => panic!("expected Unauthorized, got {other}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(&reg.host), "{shown}");
    assert!(!shown.contains(secret), "secret leaked: {shown}");

    // Without TLS trust configured, HTTPS to the test registry is refused (no silent downgrade).
    let err = open(&r, &Config::default())
        .exists()
        .await
        .expect_err("untrusted certificate accepted");
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_blobs_round_trip() {
    let _g = ENV_LOCK.lock().await;
    clear_env();
    let reg = OciRegistry::start_with(OciAuth::Anonymous, true);
    let src = Arc::new(MemoryStore::new());
    let spec = ImageSpec {
        layers: vec![b"base".to_vec()],
        files: (0..20_000)
            .map(|i| {
                (
                    format!("d{}/f{i}", i % 100),
                    format!("file {i}").into_bytes(),
                )
            })
            .collect(),
        kv: vec![],
        chunk_size: 1 << 20,
        pack_max: 0, // one blob per file: this test is about blob count
    };
    let img = spec.build(&*src, "many");
    assert!(img.closure.len() > 20_000);
    let cfg = Config {
        concurrency: 32,
        ..Config::default()
    };
    let r = format!("oci://{}/many/blobs:v1", reg.host);
    let t = std::time::Instant::now();
    let rep = open(&r, &cfg)
        .push(src.clone(), &SignedImage::new(&img.manifest, None))
        .await
        .expect("push 20k");
    assert_eq!(rep.blobs_uploaded as usize, img.closure.len());
    eprintln!("20k push: {:?}", t.elapsed());
    // The tag points at an index of part manifests, each under the 4 MiB limit.
    pf_registry_core::http::install_crypto_provider();
    let body = reqwest::Client::new()
        .get(format!("{}/v2/many/blobs/manifests/v1", reg.url()))
        .header("Accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let parts = index["manifests"].as_array().unwrap();
    assert!(parts.len() >= 21, "{} parts", parts.len());
    for p in parts {
        assert!(p["size"].as_u64().unwrap() < 4 << 20);
    }
    let dst = Arc::new(MemoryStore::new());
    let t = std::time::Instant::now();
    let pulled = open(&r, &cfg).pull(dst.clone()).await.expect("pull 20k");
    eprintln!("20k pull: {:?}", t.elapsed());
    assert_eq!(pulled.blobs_total as usize, img.closure.len());
    assert_eq!(
        pf_cas::BlobStore::list(&*dst).unwrap().len(),
        img.closure.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn independent_oci_client_can_read_our_artifact() {
    let _g = ENV_LOCK.lock().await;
    clear_env();
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(14, 3).build(&*src, "interop");
    let signed = SignedImage::new(&img.manifest, None);
    let r = format!("oci://{}/interop/img:v1", reg.host);
    open(&r, &Config::default())
        .push(src, &signed)
        .await
        .expect("push");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oras_interop.py");
    let out = std::process::Command::new("python3")
        .args([script, &format!("{}/interop/img:v1", reg.host)])
        .output()
        .expect("python3 is required for the interop test");
    let v = pf_testsupport::script_json(&out, "oras-py (install it with `pip install oras`)");
    assert_eq!(
        v["artifactType"],
        "application/vnd.processfork.image.v1+json"
    );
    assert_eq!(
        v["configMediaType"],
        "application/vnd.processfork.image.v1+json"
    );
    assert_eq!(
        v["config_sha256"],
        signed.digest().to_string(),
        "config blob must be the exact pf manifest"
    );
    assert_eq!(v["layers"].as_u64().unwrap() as usize, img.closure.len());
    assert_eq!(v["layers_ok"], true);
    assert!(
        v["tags"].to_string().contains("\"v1\""),
        "tags: {}",
        v["tags"]
    );
}
