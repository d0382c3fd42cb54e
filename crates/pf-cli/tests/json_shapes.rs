//! Snapshots of the `--json` output of each command on a `file://`
//! repository: the shapes the README documents. Digests, times, paths, key
//! ids and numbers are redacted so only the shape (keys, types, fixed
//! strings) is compared.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{pf_env, text};

/// Redacts what varies between runs, keeping keys, types and fixed values.
struct Redact {
    tmp: String,
    key_id: String,
}

impl Redact {
    fn value(&self, key: &str, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.value(k, v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.value(key, v)).collect()),
            Value::Number(_) => Value::String("[number]".into()),
            Value::String(s) => Value::String(self.string(key, s)),
            other => other.clone(),
        }
    }

    fn string(&self, key: &str, s: &str) -> String {
        let k = key.to_ascii_lowercase();
        if k.contains("time") || k.contains("created") || k.ends_with("_at") || is_time(s) {
            return "[time]".into();
        }
        let mut s = s.replace(&self.tmp, "[tmp]");
        if !self.key_id.is_empty() {
            s = s.replace(&self.key_id, "[key_id]");
        }
        redact_hex(&s)
    }
}

/// An RFC 3339 timestamp such as `2026-01-02T03:04:05Z`.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
}

/// Replaces each run of 16 or more hex digits with `[hex]`.
fn redact_hex(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 16 {
            out.push_str("[hex]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn json(store: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = pf_env(store, &all, &[]);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

#[test]
fn every_command_json_shape() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = |p: &str| tmp.path().join(p).to_str().expect("utf-8 path").to_string();
    let store = tmp.path().join("store");
    let world = tmp.path().join("world");
    fs::create_dir_all(world.join("d")).unwrap();
    fs::write(world.join("a.txt"), b"alpha").unwrap();
    fs::write(world.join("d/b.bin"), vec![7u8; 70_000]).unwrap();
    // Modes are part of `ls`'s output: fix them rather than rely on the umask.
    for (p, mode) in [
        ("", 0o755),
        ("d", 0o755),
        ("a.txt", 0o644),
        ("d/b.bin", 0o644),
    ] {
        fs::set_permissions(world.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    let repo = format!("file://{}", t("repo"));
    let copy = format!("file://{}", t("copy"));

    let mut r = Redact {
        tmp: tmp.path().to_str().expect("utf-8 path").to_string(),
        key_id: String::new(),
    };
    let keygen = json(&store, &["keygen", "--out", &t("k")]);
    r.key_id = keygen["key_id"].as_str().expect("key_id").to_string();
    let snap = |name: &str, v: &Value| {
        insta::assert_json_snapshot!(name, r.value("", v));
    };
    snap("keygen", &keygen);

    let push = json(&store, &["push", &t("world"), &repo, "--key", &t("k.key")]);
    snap("push", &push);
    let d1 = push["manifest_digest"]
        .as_str()
        .expect("digest")
        .to_string();
    fs::write(world.join("a.txt"), b"alpha v2").unwrap();
    let push2 = json(
        &store,
        &[
            "push",
            &t("world"),
            &repo,
            "--key",
            &t("k.key"),
            "--parent",
            &d1,
        ],
    );
    let d2 = push2["manifest_digest"]
        .as_str()
        .expect("digest")
        .to_string();

    let trust = t("k.pub");
    let s2 = tmp.path().join("store2");
    snap(
        "pull",
        &json(
            &s2,
            &["pull", &repo, "--into", &t("dst"), "--trust", &trust],
        ),
    );
    snap("exists", &json(&store, &["exists", &repo]));
    snap(
        "inspect",
        &json(&store, &["inspect", &repo, "--trust", &trust]),
    );
    snap("ls", &json(&store, &["ls", &repo]));
    snap("copy", &json(&store, &["copy", &repo, &copy]));
    snap("tags", &json(&store, &["tags", &repo, "--trust", &trust]));
    snap("log", &json(&store, &["log", &repo]));
    snap(
        "diff",
        &json(
            &store,
            &["diff", &format!("{repo}@{d1}"), &format!("{repo}@{d2}")],
        ),
    );
    snap(
        "verify",
        &json(&store, &["verify", &repo, "--read-data", "--trust", &trust]),
    );
}
