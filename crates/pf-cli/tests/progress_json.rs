//! `--progress=json`: every stderr line of a push and a pull is a JSON
//! object, and the last one reports all planned bytes done.

use std::fs;
use std::process::Output;

mod common;
use common::{pf_env, text};

/// Parses every stderr line as JSON; fails on any other line.
fn events(o: &Output) -> Vec<serde_json::Value> {
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line {l:?} is not JSON ({e}): {}", text(o)))
        })
        .collect()
}

fn check_stream(op: &str, ev: &[serde_json::Value]) {
    assert!(
        ev.iter().any(|e| e["kind"] == "plan" && e["op"] == op),
        "{ev:?}"
    );
    let done: Vec<_> = ev.iter().filter(|e| e["kind"] == "blob_done").collect();
    assert!(!done.is_empty(), "{ev:?}");
    for d in &done {
        assert!(
            d["digest"]
                .as_str()
                .is_some_and(|s| s.starts_with("sha256:")),
            "{d}"
        );
    }
    let last = done.last().expect("a blob_done event");
    assert!(
        last["bytes_total"].as_u64().unwrap_or(0) > 1_000_000,
        "{last}"
    );
    assert_eq!(last["bytes_done"], last["bytes_total"], "{last}");
    assert_eq!(last["blobs_done"], last["blobs_total"], "{last}");
    let sum: u64 = done.iter().filter_map(|d| d["bytes"].as_u64()).sum();
    assert_eq!(Some(sum), last["bytes_total"].as_u64(), "{last}");
}

#[test]
fn push_and_pull_stream_json_progress_on_stderr() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("d/small"), b"hello").unwrap();
    let repo = format!("file://{}", tmp.path().join("repo").display());

    let out = pf_env(
        &tmp.path().join("s1"),
        &["--progress=json", "push", src.to_str().unwrap(), &repo],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    check_stream("push", &ev);
    assert!(ev.iter().any(|e| e["kind"] == "manifest"), "{ev:?}");

    let dst = tmp.path().join("dst");
    let out = pf_env(
        &tmp.path().join("s2"),
        &[
            "pull",
            &repo,
            "--into",
            dst.to_str().unwrap(),
            "--progress",
            "json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    check_stream("pull", &events(&out));
    assert_eq!(fs::read(dst.join("big.bin")).unwrap(), big);

    // A failure is a JSON line too.
    let out = pf_env(
        &tmp.path().join("s3"),
        &["--progress=json", "pull", "file:///nonexistent/pf-none:x"],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let ev = events(&out);
    assert_eq!(
        ev.last().map(|e| e["kind"].clone()),
        Some("error".into()),
        "{ev:?}"
    );
}
