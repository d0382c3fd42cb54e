//! Fidelity: the official `huggingface_hub` client can use the test server.

use std::sync::atomic::Ordering;

use pf_hub_testserver::HubServer;

#[test]
fn official_huggingface_hub_client_works_against_the_test_server() {
    let token = "hf_fidelity_token_123";
    let s = HubServer::start(token, 7);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/official_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .env("HF_ENDPOINT", s.url())
        .env("HF_TOKEN", token)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_OFFLINE", "0")
        .output()
        .expect("python3 is required");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "official client failed (install it with `pip install huggingface_hub`):\n{stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("json from the client script");
    assert_eq!(v["files"], 33, "{v}");
    assert!(v["tree_entries"].as_u64().unwrap() >= 35, "{v}");
    assert_eq!(v["lfs_in_tree"], 3, "{v}");
    assert_eq!(v["regular_ok"], true);
    assert_eq!(v["lfs_ok"], true);
    assert_eq!(v["private_hidden"], true);
    // Three LFS objects; the second upload of the same folder uploaded none.
    assert_eq!(s.stats().lfs_uploads.load(Ordering::SeqCst), 3);
    assert!(
        s.stats().tree_pages.load(Ordering::SeqCst) >= 5,
        "pagination must be exercised"
    );
}
