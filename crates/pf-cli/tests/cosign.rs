//! cosign verifies what `pf push --key` signs with a `pf keygen --cosign`
//! key: the real `cosign` (built by `cargo xtask servers install`) against
//! images on real registries on loopback, with no transparency log.
#![cfg(feature = "oci")]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{pf_env, text};
use pf_registry::{Config, ImageRef, SigningKey};
use pf_testsupport::go::go_tool;
use pf_testsupport::registry::{Distribution, OciRegistry};

const EMPTY_TRUSTED_ROOT: &str =
    r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#;

/// `cosign` with an empty HOME.
fn cosign(home: &Path, args: &[&str]) -> Output {
    Command::new(go_tool("cosign"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run cosign")
}

/// `cosign verify --key KEY` of `image` on a plain-HTTP loopback registry,
/// with no transparency log and an empty trusted root in `home`.
fn verify(home: &Path, key: &Path, image: &str) -> Output {
    cosign(
        home,
        &[
            "verify",
            "--key",
            &key.to_string_lossy(),
            "--insecure-ignore-tlog=true",
            "--trusted-root",
            &home.join("trusted_root.json").to_string_lossy(),
            "--allow-insecure-registry",
            "--output",
            "json",
            image,
        ],
    )
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// The digests cosign reports as verified (one per signature it accepted).
fn verified_digests(o: &Output) -> Vec<String> {
    let v = json(o);
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            assert_eq!(
                s["critical"]["type"], "cosign container image signature",
                "{s}"
            );
            s["critical"]["image"]["docker-manifest-digest"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn scenario(reg: &OciRegistry) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    let cosign_home = t.join("cosign-home");
    fs::create_dir_all(&cosign_home).unwrap();
    // An empty trusted root: nothing but the key is trusted, and cosign
    // does not try to fetch sigstore's public one.
    fs::write(cosign_home.join("trusted_root.json"), EMPTY_TRUSTED_ROOT).unwrap();
    let world = t.join("world");
    fs::create_dir_all(world.join("etc")).unwrap();
    fs::write(world.join("etc/app.toml"), b"signed = true\n").unwrap();
    fs::write(world.join("big.bin"), vec![3u8; 90_000]).unwrap();
    let pf = |args: &[&str]| pf_env(&store, args, &[]);

    // Keys: PKCS#8 private, SPKI public, ECDSA P-256.
    let out = pf(&[
        "--json",
        "keygen",
        "--cosign",
        "--out",
        &t.join("cosign").to_string_lossy(),
    ]);
    let k = json(&out);
    assert!(
        k["key_id"].as_str().unwrap().starts_with("ecdsa-p256:"),
        "{k}"
    );
    let (key, public) = (t.join("cosign.key"), t.join("cosign.pub"));
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let out = pf(&[
        "keygen",
        "--cosign",
        "--out",
        &t.join("other").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let other_public = t.join("other.pub");

    // Push signed: pf's envelope and a cosign signature.
    let repo = format!("{}/agents/demo", reg.host);
    let out = pf(&[
        "--json",
        "push",
        &world.to_string_lossy(),
        &format!("oci://{repo}:v1"),
        "--key",
        &key.to_string_lossy(),
    ]);
    let rep = json(&out);
    assert_eq!(rep["signed"], true, "{rep}");
    let resolved = rep["resolved"].as_str().unwrap().to_string();
    let (_, digest) = resolved.split_once('@').unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        rep["cosign"]["signature_ref"],
        format!("oci://{repo}:sha256-{hex}.sig"),
        "{rep}"
    );
    assert_eq!(rep["cosign"]["written"], true);
    let referrer = rep["cosign"]["referrer"].as_str().unwrap().to_string();

    // cosign verifies it, by digest and by tag.
    let by_digest = format!("{repo}@{digest}");
    assert_eq!(
        verified_digests(&verify(&cosign_home, &public, &by_digest)),
        vec![digest.to_string()]
    );
    assert_eq!(
        verified_digests(&verify(&cosign_home, &public, &format!("{repo}:v1"))),
        vec![digest.to_string()]
    );

    // The OCI 1.1 referrer form (both registries lack the referrers API:
    // listed through the referrers tag schema).
    let out = Command::new(go_tool("oras"))
        .args(["discover", "--plain-http", "--format", "json", &by_digest])
        .env("HOME", &cosign_home)
        .output()
        .unwrap();
    let listed = json(&out);
    let found = listed["referrers"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .any(|r| {
            r["digest"] == referrer.as_str()
                && r["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
        });
    assert!(found, "oras discover: {listed}");
    let out = cosign(
        &cosign_home,
        &[
            "verify",
            "--experimental-oci11",
            "--key",
            &public.to_string_lossy(),
            "--insecure-ignore-tlog=true",
            "--trusted-root",
            &cosign_home.join("trusted_root.json").to_string_lossy(),
            "--allow-insecure-registry",
            &by_digest,
        ],
    );
    assert_eq!(verified_digests(&out), vec![digest.to_string()]);

    // Another key: cosign refuses.
    let out = verify(&cosign_home, &other_public, &by_digest);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("no matching signatures"),
        "another key verified: {}",
        text(&out)
    );

    // The signature replayed onto another image: cosign refuses (the
    // payload names v1's digest).
    let out = pf(&[
        "--json",
        "push",
        &world.to_string_lossy(),
        &format!("oci://{repo}:v2"),
        "--annotation",
        "build=2",
    ]);
    let v2 = json(&out)["resolved"].as_str().unwrap().to_string();
    let (_, digest2) = v2.split_once('@').unwrap();
    assert_ne!(digest2, digest);
    let copy = Command::new(go_tool("crane"))
        .args([
            "copy",
            "--insecure",
            &format!("{repo}:sha256-{hex}.sig"),
            &format!(
                "{repo}:sha256-{}.sig",
                digest2.strip_prefix("sha256:").unwrap()
            ),
        ])
        .env("HOME", &cosign_home)
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let out = verify(&cosign_home, &public, &format!("{repo}@{digest2}"));
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("invalid or missing digest in claim"),
        "a replayed signature verified: {}",
        text(&out)
    );

    // pf's own pull trusts the same public key file.
    let restored = t.join("restored");
    let out = pf(&[
        "pull",
        &resolved,
        "--into",
        &restored.to_string_lossy(),
        "--trust",
        &public.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("verified (key {})", k["key_id"].as_str().unwrap())),
        "{stderr}"
    );
    assert_eq!(
        fs::read(restored.join("etc/app.toml")).unwrap(),
        b"signed = true\n"
    );
    let out = pf(&[
        "pull",
        &resolved,
        "--trust",
        &other_public.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // A second signer is added beside the first; signing again is a no-op.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let other = SigningKey::load(&t.join("other.key")).unwrap();
    let mine = SigningKey::load(&key).unwrap();
    let dst = ImageRef::parse(&format!("oci://{repo}:v1")).unwrap();
    let image = pf_registry::Digest::parse(digest).unwrap();
    let added = rt
        .block_on(pf_registry::cosign::sign(
            &dst,
            &Config::default(),
            image,
            &other,
        ))
        .unwrap();
    assert!(added.written && added.signatures == 2, "{added:?}");
    let again = rt
        .block_on(pf_registry::cosign::sign(
            &dst,
            &Config::default(),
            image,
            &mine,
        ))
        .unwrap();
    assert!(!again.written && again.signatures == 2, "{again:?}");
    for k in [&public, &other_public] {
        assert_eq!(
            verified_digests(&verify(&cosign_home, k, &by_digest)),
            vec![digest.to_string()],
            "{}",
            k.display()
        );
    }
}

#[test]
fn cosign_verifies_signed_pushes_on_distribution_2() {
    scenario(&OciRegistry::start_distribution(Distribution::Debian));
}

#[test]
fn cosign_verifies_signed_pushes_on_distribution_3() {
    scenario(&OciRegistry::start_distribution(Distribution::V3));
}
