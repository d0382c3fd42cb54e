//! Fidelity: the OFFICIAL `huggingface_hub` Python client (from PyPI) works
//! against the test server. Needs `python3` with `pip install huggingface_hub`;
//! fails (never skips) without them. Xet is disabled (`HF_HUB_DISABLE_XET=1`):
//! with `hf_xet` installed, client 2.x picks Xet for uploads on its own,
//! without asking the server, and this server speaks only LFS.

use pf_hub_testserver::{HubConfig, HubServer, Token};

const WRITE: &str = "hf_fidelity_write_token";
const READ: &str = "hf_fidelity_read_token";
const OTHER: &str = "hf_fidelity_other_token";
const THRESHOLD: u64 = 64 << 10;

fn client_version() -> String {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import huggingface_hub; print(huggingface_hub.__version__)",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is required ({e}); then `pip install huggingface_hub`")
        });
    assert!(
        probe.status.success(),
        "the official client is missing: `pip install huggingface_hub`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    String::from_utf8_lossy(&probe.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_huggingface_hub_client_works_against_the_test_server() {
    let version = client_version();
    let cfg = HubConfig::with_token(WRITE)
        .token(Token::read(READ, "pf-tester"))
        .token(Token::write(OTHER, "someone-else"))
        .page_size(7)
        .lfs_threshold(THRESHOLD);
    let hub = HubServer::start(cfg).await.expect("start hub");
    let home = tempfile::tempdir().expect("temp HF_HOME");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/official_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("HF_ENDPOINT", hub.url())
        .env("HF_TOKEN", WRITE)
        .env("PF_READ_TOKEN", READ)
        .env("PF_OTHER_TOKEN", OTHER)
        .env("PF_LFS_THRESHOLD", THRESHOLD.to_string())
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .await
        .expect("run python3");
    let v = pf_testsupport::script_json(
        &out,
        &format!("huggingface_hub {version} against the test server"),
    );
    assert_eq!(v["client_version"], version.as_str());
    assert_eq!(v["lfs_in_tree"], 6, "{v}");
    assert_eq!(v["reupload_lfs_puts"], 0, "{v}");
    assert_eq!(v["private_hidden"], true, "{v}");
    let s = hub.stats();
    // 6 LFS files in the folder + the model's safetensors (twice: it is
    // replaced before the squash); nothing twice.
    assert_eq!(s.lfs_uploads, 8, "{s:?}");
    assert_eq!(s.route("lfs.upload"), 8, "{s:?}");
    assert_eq!(v["super_squash_commits"], 1, "{v}");
    assert!(s.tree_pages >= 5, "pagination must be exercised: {s:?}");
    assert_eq!(
        hub.resolve(
            pf_hub_testserver::RepoType::Dataset,
            "pf-tester/fidelity-ds",
            "v1"
        ),
        v["first_commit"].as_str().map(String::from)
    );
    eprintln!("huggingface_hub {version}: ok ({} requests)", s.requests);
}
