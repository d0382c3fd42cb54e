//! Interop with the OCI clients people run, both directions, against
//! distribution 2.8 (Debian's docker-registry) and distribution v3: the oras
//! CLI and crane (built by `cargo xtask servers install`) read what pf
//! pushed, signature layer and image index included; pf pulls, signature
//! verified, images those tools copied to another repository; skopeo copies
//! every manifest of an image to an OCI layout directory (skopeo 1.9 from
//! Debian rewrites the index itself: it drops `artifactType`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_digest::Digest;
use pf_registry_conformance::{ImageSpec, TestImage};
use pf_registry_core::Verification;
use pf_registry_core::{Config, ImageRef, Registry, SignedImage, SigningKey, TrustPolicy};
use pf_registry_oci::layout::{ARTIFACT_TYPE, INDEX_MT, MANIFEST_MT, SIGNATURE_MT};
use pf_testsupport::{go_tool, Distribution, OciRegistry};
use serde_json::Value;

/// Runs `bin args`, failing the test with its stderr unless it succeeds.
fn run(bin: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(bin)
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn oras(args: &[&str]) -> Vec<u8> {
    run(&go_tool("oras"), args)
}

fn crane(args: &[&str]) -> Vec<u8> {
    run(&go_tool("crane"), args)
}

fn open(r: &str, cfg: &Config) -> pf_registry_core::Engine<pf_registry_oci::OciTransport> {
    pf_registry_oci::open(&ImageRef::parse(r).expect("ref"), cfg).expect("open")
}

struct Pushed {
    img: TestImage,
    signed: SignedImage,
    src: Arc<MemoryStore>,
}

async fn push(
    host: &str,
    repo: &str,
    seed: u64,
    max_layers: Option<usize>,
    key: &SigningKey,
) -> Pushed {
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(seed, 6).build(&*src, repo);
    let signed = SignedImage::new(&img.manifest, Some(key));
    let mut cfg = Config::default();
    if let Some(n) = max_layers {
        cfg.options.insert("oci.max_layers".into(), n.to_string());
    }
    open(&format!("oci://{host}/{repo}:v1"), &cfg)
        .push(src.clone(), &signed)
        .await
        .unwrap_or_else(|e| panic!("push {repo}: {e}"));
    Pushed { img, signed, src }
}

/// pf pulls `reference` trusting `key` and gets `p`'s image, signature verified.
async fn pf_pulls(reference: &str, key: &SigningKey, p: &Pushed) {
    let cfg = Config {
        trust: TrustPolicy::new(vec![key.public_key()]),
        ..Config::default()
    };
    let dst = Arc::new(MemoryStore::new());
    let pulled = open(reference, &cfg)
        .pull(dst.clone())
        .await
        .unwrap_or_else(|e| panic!("pf pull {reference}: {e}"));
    assert_eq!(pulled.manifest, p.img.manifest);
    assert!(
        matches!(pulled.verification, Verification::Verified { .. }),
        "{reference}: signature not verified"
    );
    for d in &p.img.closure {
        assert!(
            p.src.get(d).expect("source") == dst.get(d).expect("pulled"),
            "{d}"
        );
    }
}

async fn interop(flavour: Distribution) {
    let reg = OciRegistry::start_distribution(flavour);
    let host = reg.host.clone();
    let key = SigningKey::generate().expect("keygen");
    // One manifest; and an index of part manifests (3 blobs a part).
    let single = push(&host, "interop/single", 31, None, &key).await;
    let indexed = push(&host, "interop/indexed", 32, Some(3), &key).await;
    let (single_ref, index_ref) = (
        format!("{host}/interop/single:v1"),
        format!("{host}/interop/indexed:v1"),
    );

    // oras manifest fetch: the artifact, its config is the exact pf manifest,
    // the signature is the first layer.
    let raw = oras(&["manifest", "fetch", "--plain-http", &single_ref]);
    let m = json(&raw);
    assert_eq!(m["mediaType"], MANIFEST_MT);
    assert_eq!(m["artifactType"], ARTIFACT_TYPE);
    assert_eq!(m["config"]["digest"], single.signed.digest().to_string());
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), single.img.closure.len() + 1);
    assert_eq!(layers[0]["mediaType"], SIGNATURE_MT);
    let single_digest = Digest::of(&raw).to_string();

    // crane manifest returns the same bytes, for the index too.
    assert_eq!(crane(&["manifest", "--insecure", &single_ref]), raw);
    let index_raw = oras(&["manifest", "fetch", "--plain-http", &index_ref]);
    assert_eq!(crane(&["manifest", "--insecure", &index_ref]), index_raw);
    let index = json(&index_raw);
    assert_eq!(index["mediaType"], INDEX_MT);
    let parts = index["manifests"].as_array().expect("manifests");
    assert_eq!(parts.len(), indexed.img.closure.len().div_ceil(3));
    // Every part manifest is readable by digest, with crane too.
    let mut layer_count = 0;
    for p in parts {
        let d = p["digest"].as_str().expect("digest");
        let part = json(&crane(&[
            "manifest",
            "--insecure",
            &format!("{host}/interop/indexed@{d}"),
        ]));
        layer_count += part["layers"].as_array().expect("layers").len();
    }
    assert_eq!(
        layer_count,
        indexed.img.closure.len() + 1,
        "every blob and the signature"
    );

    // oras pull writes every layer under its title: the signature and each blob.
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_str().expect("utf-8 path");
    oras(&["pull", "--plain-http", &single_ref, "-o", dir]);
    assert_eq!(
        std::fs::read(out.path().join("manifest.json.sig")).expect("signature file"),
        single.signed.signature.as_ref().expect("signed").to_vec()
    );
    for d in &single.img.closure {
        assert!(
            out.path().join(format!("{}.zst", d.hex())).is_file(),
            "{d} not pulled"
        );
    }

    // oras discover walks the referrers of what pf pushed (none: the
    // signature travels inside the artifact).
    let disc = json(&oras(&[
        "discover",
        "--plain-http",
        "--format",
        "json",
        &single_ref,
    ]));
    assert_eq!(disc["digest"], single_digest.as_str(), "{disc}");

    // The other direction: crane and oras copy to another repository; pf
    // pulls the copies with the signature verified.
    crane(&[
        "copy",
        "--insecure",
        &index_ref,
        &format!("{host}/copied/by-crane:v1"),
    ]);
    pf_pulls(&format!("oci://{host}/copied/by-crane:v1"), &key, &indexed).await;
    oras(&[
        "cp",
        "--from-plain-http",
        "--to-plain-http",
        &single_ref,
        &format!("{host}/copied/by-oras:v1"),
    ]);
    pf_pulls(&format!("oci://{host}/copied/by-oras:v1"), &key, &single).await;
    crane(&[
        "copy",
        "--insecure",
        &single_ref,
        &format!("{host}/copied/single-by-crane:v1"),
    ]);
    pf_pulls(
        &format!("oci://{host}/copied/single-by-crane:v1"),
        &key,
        &single,
    )
    .await;

    // skopeo copy --all puts the index, its parts and every blob into an OCI
    // layout; the pf manifest is there byte for byte.
    let layout = tempfile::tempdir().expect("tempdir");
    let dest = format!("oci:{}:v1", layout.path().display());
    run(
        Path::new("skopeo"),
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{index_ref}"),
            &dest,
        ],
    );
    let blob = |d: &Digest| layout.path().join("blobs/sha256").join(d.hex());
    assert_eq!(
        std::fs::read(blob(&indexed.signed.digest())).expect("pf manifest in the layout"),
        indexed.signed.manifest.to_vec()
    );
    for p in parts {
        let d = Digest::parse(p["digest"].as_str().expect("digest")).expect("part digest");
        assert!(blob(&d).is_file(), "part {d} missing from the layout");
    }
    // skopeo 1.9 re-serialises the index (it drops `artifactType`, which it
    // does not know), so compare what the copied index lists, not its digest.
    let top = json(&std::fs::read(layout.path().join("index.json")).expect("index.json"));
    assert_eq!(top["manifests"][0]["mediaType"], INDEX_MT);
    let copied = Digest::parse(top["manifests"][0]["digest"].as_str().expect("digest"))
        .expect("index digest");
    let copied = json(&std::fs::read(blob(&copied)).expect("copied index"));
    let digests = |v: &Value| -> Vec<Value> {
        v["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| m["digest"].clone())
            .collect()
    };
    assert_eq!(digests(&copied), digests(&index));
}

#[tokio::test(flavor = "multi_thread")]
async fn oras_crane_and_skopeo_interoperate_on_distribution_2_8() {
    interop(Distribution::Debian).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oras_crane_and_skopeo_interoperate_on_distribution_v3() {
    interop(Distribution::V3).await;
}
