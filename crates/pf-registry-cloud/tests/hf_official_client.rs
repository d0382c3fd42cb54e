//! Interop with the OFFICIAL `huggingface_hub` client (PyPI) through the Hub
//! test server, both ways: the client lists, downloads and reads what pf
//! pushed, and pf pulls a repository the client wrote with `upload_folder`.
//! Needs `python3` with `huggingface_hub`; fails (never skips) without it.
#![cfg(feature = "hf")]

use std::sync::Arc;

use pf_cas::BlobStore;
use pf_cas::MemoryStore;
use pf_hub_testserver::{HubConfig, HubServer};
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, ImageRef, Registry, SignedImage};

const TOKEN: &str = "hf_interop_token_abc";

/// Lists the pushed repository, downloads one blob and the manifest (and
/// checks the blob's sha256 is its LFS oid), then snapshots the repository
/// and writes it again to `pf-tester/copied` with `upload_folder`.
const SCRIPT: &str = r#"
import hashlib, json, os, sys
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
ep, src, dst = os.environ["HF_ENDPOINT"], sys.argv[1], sys.argv[2]
api = HfApi(endpoint=ep, token=os.environ["HF_TOKEN"])
files = api.list_repo_files(src, repo_type="dataset")
blobs = sorted(f for f in files if f.startswith("blobs/sha256/"))
manifest = json.load(open(hf_hub_download(src, "manifest.json", repo_type="dataset")))
blob = open(hf_hub_download(src, blobs[0], repo_type="dataset"), "rb").read()
info = [e for e in api.list_repo_tree(src, repo_type="dataset", recursive=True) if e.path == blobs[0]][0]
assert info.lfs is not None and info.lfs.sha256 == hashlib.sha256(blob).hexdigest(), info
folder = snapshot_download(src, repo_type="dataset")
api.create_repo(dst, repo_type="dataset", private=True)
api.upload_folder(folder_path=folder, repo_id=dst, repo_type="dataset",
                  ignore_patterns=[".gitattributes", ".cache/**"])
print(json.dumps({"files": len(files), "blobs": len(blobs),
                  "agent": manifest["agent"]["name"], "blob_bytes": len(blob)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_reads_pf_pushes_and_pf_reads_upload_folder() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN))
        .await
        .expect("start hub");
    let mut cfg = Config::default();
    cfg.options
        .insert("hf.endpoint".into(), hub.url().to_string());
    cfg.options.insert("hf.token".into(), TOKEN.into());
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(21, 8).build(&*src, "interop-agent");
    let signed = SignedImage::new(&img.manifest, None);
    pf_registry_cloud::hf::open(
        &ImageRef::parse("hf://datasets/pf-tester/pushed").unwrap(),
        &cfg,
    )
    .unwrap()
    .push(src, &signed)
    .await
    .expect("pf push");

    let home = tempfile::tempdir().expect("temp HF_HOME");
    let out = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT, "pf-tester/pushed", "pf-tester/copied"])
        .env("HF_ENDPOINT", hub.url())
        .env("HF_TOKEN", TOKEN)
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .await
        .expect("run python3 (pip install huggingface_hub)");
    assert!(
        out.status.success(),
        "huggingface_hub failed on what pf pushed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
    assert_eq!(v["blobs"], img.closure.len(), "{v}");
    assert_eq!(v["agent"], "interop-agent", "{v}");

    // pf pulls the repository the official client wrote.
    let copied = ImageRef::parse("hf://datasets/pf-tester/copied").unwrap();
    let dst = Arc::new(MemoryStore::new());
    let pulled = pf_registry_cloud::hf::open(&copied, &cfg)
        .unwrap()
        .pull(dst.clone())
        .await
        .expect("pf pulls the upload_folder repository");
    assert_eq!(pulled.manifest, img.manifest);
    for d in &img.closure {
        assert!(dst.has(d).unwrap(), "blob {d} missing after the pull");
    }
}
