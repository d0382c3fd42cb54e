//! `HF_HUB_OFFLINE`: a pull of a commit id or a manifest digest that an
//! earlier pull kept in the local store works with the Hub test server
//! stopped; everything else fails at once with an error naming the switch.
#![cfg(feature = "hf")]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::text;

const TOKEN: &str = "hf_offline_token_7c1d";

/// `pf` in `home` with only `env` (and `PATH`), its store at `home/<store>`.
fn pf(home: &Path, store: &str, env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PF_STORE", home.join(store))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(home)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pinned_pulls_work_offline_from_the_store() {
    let (rt, hub) = common::hub_server(TOKEN);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    fs::create_dir_all(h.join("world/sub")).unwrap();
    fs::write(h.join("world/a.txt"), b"offline bytes").unwrap();
    fs::write(h.join("world/sub/b.bin"), vec![7u8; 300_000]).unwrap();
    let online = vec![
        ("HF_ENDPOINT", hub.url().to_string()),
        ("HF_TOKEN", TOKEN.to_string()),
    ];
    let mut offline = online.clone();
    offline.push(("HF_HUB_OFFLINE", "1".into()));

    let push = pf(h, "s", &online, &["push", "world", "hf://pf-tester/off"]);
    assert!(push.status.success(), "{}", text(&push));
    let at_commit = String::from_utf8_lossy(&push.stdout).trim().to_string();
    let commit = at_commit.rsplit('@').next().unwrap().to_string();
    assert_eq!(commit.len(), 40, "{at_commit}");

    // Online pulls: a full one into store `s`, a restoring one into store
    // `r` (which keeps only the index blobs and the manifest).
    let pull = pf(h, "s", &online, &["pull", &at_commit]);
    assert!(pull.status.success(), "{}", text(&pull));
    let digest = String::from_utf8_lossy(&pull.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let pull = pf(h, "r", &online, &["pull", &at_commit, "--into", "online"]);
    assert!(pull.status.success(), "{}", text(&pull));

    // Stop the Hub: its listeners close with the runtime.
    drop(hub);
    drop(rt);

    // By commit id and by manifest digest: restored from the store.
    let by_digest = format!("hf://pf-tester/off@{digest}");
    for (r, dir) in [(&at_commit, "by-commit"), (&by_digest, "by-digest")] {
        let o = pf(h, "s", &offline, &["pull", r, "--into", dir]);
        assert!(o.status.success(), "{r}: {}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);
        assert_eq!(
            fs::read(h.join(dir).join("a.txt")).unwrap(),
            b"offline bytes"
        );
        assert_eq!(
            fs::read(h.join(dir).join("sub/b.bin")).unwrap(),
            vec![7u8; 300_000]
        );
    }
    // Into the store only (every blob already there): fetched nothing.
    let o = pf(h, "s", &offline, &["--json", "pull", &at_commit]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["blobs_fetched"], 0, "{v}");

    // A branch may have moved: refused as usage (exit 1).
    for r in ["hf://pf-tester/off", "hf://pf-tester/off@main"] {
        let o = pf(h, "s", &offline, &["pull", r, "--into", "nope"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", text(&o));
        assert!(stderr(&o).contains("not pinned"), "{}", text(&o));
    }
    // A commit never pulled, or a store missing the data blobs: exit 2.
    let never = format!("hf://pf-tester/off@{}", "0".repeat(40));
    let o = pf(h, "s", &offline, &["pull", &never]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", text(&o));
    let o = pf(h, "r", &offline, &["pull", &at_commit]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", text(&o));
    assert!(stderr(&o).contains("in the local store"), "{}", text(&o));
    // Commands that need the Hub fail at once (exit 5), naming the switch.
    for args in [
        vec!["push", "world", "hf://pf-tester/off"],
        vec!["inspect", &at_commit],
        vec!["tags", "hf://pf-tester/off"],
    ] {
        let o = pf(h, "s", &offline, &args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", text(&o));
        assert!(!stderr(&o).contains(TOKEN), "{}", text(&o));
    }
}
