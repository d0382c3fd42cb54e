//! End-to-end tests of `pf tags`, `log`, `diff`, `rm`, `retain`, `gc` and
//! `verify` on the file backend.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::text;

fn pf(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(args)
        .env("PF_STORE", store)
        .env_remove("PF_KEY")
        .env_remove("PF_TRUST")
        .output()
        .expect("run pf")
}

fn ok(o: Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("json: {e}: {}", text(&o)))
}

#[test]
fn history_retention_gc_and_verify_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let world = tmp.path().join("world");
    let repo = format!("file://{}", tmp.path().join("repo").display());
    fs::create_dir_all(world.join("d")).unwrap();
    fs::write(world.join("d/keep.txt"), b"unchanged").unwrap();
    fs::write(world.join("gone.txt"), b"removed in v2").unwrap();
    fs::write(world.join("edit.bin"), vec![7u8; 50_000]).unwrap();
    let v1 = ok(pf(
        &store,
        &["--json", "push", world.to_str().unwrap(), &repo],
    ));
    let d1 = v1["manifest_digest"].as_str().unwrap().to_string();

    fs::remove_file(world.join("gone.txt")).unwrap();
    fs::write(world.join("new.txt"), b"added in v2").unwrap();
    fs::write(world.join("edit.bin"), vec![9u8; 60_000]).unwrap();
    let v2 = ok(pf(
        &store,
        &[
            "--json",
            "push",
            world.to_str().unwrap(),
            &repo,
            "--parent",
            &d1,
        ],
    ));
    let d2 = v2["manifest_digest"].as_str().unwrap().to_string();
    let at = |d: &str| format!("{repo}@{d}");

    let tags = ok(pf(&store, &["--json", "tags", &repo]));
    assert_eq!(tags[0]["digest"], d2.as_str());
    assert!(tags[0]["signer"].as_str().unwrap().contains("unsigned"));

    let log = ok(pf(&store, &["--json", "log", &repo]));
    let chain: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["digest"].as_str().unwrap())
        .collect();
    assert_eq!(chain, [d2.as_str(), d1.as_str()]);

    let diff = ok(pf(&store, &["--json", "diff", &at(&d1), &at(&d2)]));
    let paths = |k: &str| -> Vec<String> {
        diff[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths("added"), ["new.txt"]);
    assert_eq!(paths("removed"), ["gone.txt"]);
    assert_eq!(paths("changed"), ["edit.bin"]);
    // Format v2 compares files exactly by their chunk digests.
    assert!(paths("maybe_changed").is_empty());
    assert!(diff["bytes_to_transfer"].as_u64().unwrap() >= 60_000);

    let v = ok(pf(&store, &["--json", "verify", &repo, "--read-data"]));
    assert_eq!(v["ok"], true);

    // Retain the newest version only; gc (dry run first) frees v1's blobs.
    let r = ok(pf(&store, &["--json", "retain", &repo, "--keep-last", "1"]));
    assert_eq!(r["removed"][0], d1.as_str());
    let dry = ok(pf(
        &store,
        &["--json", "gc", &repo, "--grace", "0s", "--dry-run"],
    ));
    let would = dry["deleted"].as_array().unwrap().len();
    assert!(would > 0);
    let g = ok(pf(&store, &["--json", "gc", &repo, "--grace", "0s"]));
    assert_eq!(g["deleted"].as_array().unwrap().len(), would);
    // v2 chunked against v1: v1's pack still holds d/keep.txt, and also
    // gone.txt and the old edit.bin, which no kept image uses.
    assert_eq!(g["packs_partly_dead"], 1, "{g}");
    assert!(
        g["dead_bytes_in_live_packs"].as_u64().unwrap() >= 50_000,
        "{g}"
    );
    let again = ok(pf(&store, &["--json", "gc", &repo, "--grace", "0s"]));
    assert_eq!(again["deleted"].as_array().unwrap().len(), 0);
    // A directory keeps no history to squash: refused before any deletion.
    let squash = pf(&store, &["gc", &repo, "--squash-history"]);
    assert_eq!(squash.status.code(), Some(1), "{}", text(&squash));
    assert!(
        text(&squash).contains("keeps no history"),
        "{}",
        text(&squash)
    );
    let gone = pf(&store, &["pull", &at(&d1)]);
    assert_ne!(gone.status.code(), Some(0), "removed version still pulls");
    ok(pf(
        &store,
        &[
            "--json",
            "verify",
            "--all",
            &repo,
            "--read-data-subset",
            "50%",
        ],
    ));

    // Damage one blob: verify names it and exits 4.
    let blobs = tmp.path().join("repo/blobs/sha256");
    let blob = fs::read_dir(&blobs)
        .unwrap()
        .flat_map(|s| fs::read_dir(s.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .expect("a stored blob");
    fs::write(&blob, b"garbage").unwrap();
    let bad = pf(&store, &["verify", &repo, "--read-data"]);
    assert_eq!(bad.status.code(), Some(4), "{}", text(&bad));
    let hex = blob.file_stem().unwrap().to_str().unwrap();
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains(hex),
        "{}",
        text(&bad)
    );

    // A corrupt manifest: gc refuses (exit 4) and names it.
    let junk = tmp
        .path()
        .join("repo/manifests/sha256")
        .join(format!("{}.json", "ab".repeat(32)));
    fs::write(&junk, b"{").unwrap();
    let refused = pf(&store, &["gc", &repo, "--grace", "0s"]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(
        text(&refused).contains(&"ab".repeat(32)),
        "{}",
        text(&refused)
    );

    fs::remove_file(&junk).unwrap();
    // rm by digest removes the version and its head.
    let rm = ok(pf(&store, &["--json", "rm", &at(&d2)]));
    assert_eq!(rm["manifests"][0], d2.as_str());
}

/// On oci, `pf rm` deletes through the registry API (the other tag still
/// pulls and verifies) and `pf gc` says the registry collects its garbage.
#[test]
fn rm_and_gc_on_a_registry() {
    use pf_testsupport::registry::{OciAuth, OciRegistry};
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let world = tmp.path().join("world");
    fs::create_dir_all(&world).unwrap();
    let repo = format!("oci://{}/cli/app", reg.host);
    for (tag, content) in [("a", "first"), ("b", "second")] {
        fs::write(world.join("f.txt"), content).unwrap();
        ok(pf(
            &store,
            &[
                "--json",
                "push",
                world.to_str().unwrap(),
                &format!("{repo}:{tag}"),
            ],
        ));
    }
    let rm = ok(pf(&store, &["--json", "rm", &format!("{repo}:a")]));
    assert_eq!(rm["tags"][0], "a");
    assert_eq!(rm["manifests"].as_array().unwrap().len(), 1);
    let gone = pf(&store, &["pull", &format!("{repo}:a")]);
    assert_eq!(gone.status.code(), Some(2), "{}", text(&gone));
    let v = ok(pf(
        &store,
        &["--json", "verify", &format!("{repo}:b"), "--read-data"],
    ));
    assert_eq!(v["ok"], true);
    let gc = pf(&store, &["gc", &repo]);
    assert_eq!(gc.status.code(), Some(1), "{}", text(&gc));
    assert!(
        text(&gc).contains("registry garbage-collect"),
        "{}",
        text(&gc)
    );
}
