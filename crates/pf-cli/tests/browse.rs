//! `pf pull --include`, `pf cat` and `pf ls` end to end on a file://
//! repository: each reads only the blobs it needs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::text;

/// Deterministic bytes that do not repeat (so CDC cuts several chunks):
/// the low byte of splitmix64 over the index.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    (0..n as u64)
        .map(|i| {
            let mut z = i
                .wrapping_add(seed << 40)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

struct Env {
    tmp: tempfile::TempDir,
    repo: String,
}

impl Env {
    /// Pushes a directory with small files (packed together) in two
    /// directories, a symlink and a 14 MiB file of several chunks.
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let world = tmp.path().join("world");
        for (i, p) in ["small/a.txt", "small/b.txt", "etc/conf", "etc/sub/deep"]
            .iter()
            .enumerate()
        {
            let p = world.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, noise(1000 + i * 37, i as u64 + 5)).unwrap();
        }
        std::os::unix::fs::symlink("a.txt", world.join("small/link")).unwrap();
        fs::write(world.join("big.bin"), noise(14 << 20, 3)).unwrap();
        let repo = format!("file://{}", tmp.path().join("repo").display());
        let env = Env { tmp, repo };
        let o = env.pf("store", &["push", world.to_str().unwrap(), &env.repo]);
        assert!(o.status.success(), "{}", text(&o));
        env
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn pf(&self, store: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pf"))
            .args(["--quiet"])
            .args(args)
            .env("PF_STORE", self.path(store))
            .env_remove("PF_KEY")
            .env_remove("PF_TRUST")
            .output()
            .expect("run pf")
    }
    /// `pf --json pull REF --into DIR [--include P]...` in a fresh store.
    fn pull(&self, store: &str, dest: &str, include: &[&str]) -> (Output, serde_json::Value) {
        let dest = self.path(dest);
        let mut args = vec![
            "--json",
            "pull",
            &self.repo,
            "--into",
            dest.to_str().unwrap(),
        ];
        for p in include {
            args.extend(["--include", p]);
        }
        let o = self.pf(store, &args);
        let v = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (o, v)
    }
    fn source(&self, p: &str) -> Vec<u8> {
        fs::read(self.path("world").join(p)).unwrap()
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Every path under `root`, relative, with a trailing `/` for directories
/// (as `find` lists them).
fn walk(root: &Path) -> BTreeSet<String> {
    let o = Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-printf", "%P\\t%y\\n"])
        .output()
        .expect("find");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| match l.split_once('\t') {
            Some((p, "d")) => format!("{p}/"),
            Some((p, _)) => p.to_string(),
            None => panic!("find printed {l:?}"),
        })
        .collect()
}

/// Blob files in a local store.
fn stored_blobs(store: &Path) -> usize {
    fs::read_dir(store.join("sha256"))
        .map(|shards| {
            shards
                .map(|s| fs::read_dir(s.unwrap().path()).unwrap().count())
                .sum()
        })
        .unwrap_or(0)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn include_restores_only_the_selection_and_fetches_only_its_blobs() {
    let env = Env::new();
    // The full closure: the fs tree and the pack(s) holding every chunk.
    let (o, full) = env.pull("s0", "full", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let total = full["blobs_total"].as_u64().unwrap();
    assert!(total >= 2, "tree + packs: {full}");
    assert_eq!(full["blobs_fetched"].as_u64(), Some(total));
    let full_wire = full["wire_bytes_fetched"].as_u64().unwrap();
    assert!(full_wire > 14 << 20, "{full}");

    // One small file: the fs tree whole, its one chunk by range.
    let (o, v) = env.pull("s1", "one", &["small/a.txt"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(v["blobs_fetched"], 1, "{v}");
    assert_eq!(v["blobs_skipped"].as_u64(), Some(total - 1), "{v}");
    let wire = v["wire_bytes_fetched"].as_u64().unwrap();
    assert!(
        wire < 200 << 10,
        "{wire} bytes fetched for a 1 KB file: {v}"
    );
    assert_eq!(walk(&env.path("one")), set(&["small/", "small/a.txt"]));
    assert_eq!(
        fs::read(env.path("one/small/a.txt")).unwrap(),
        env.source("small/a.txt")
    );

    // The large file and a subtree.
    let (o, _) = env.pull("s2", "two", &["big.bin", "etc/"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        walk(&env.path("two")),
        set(&["big.bin", "etc/", "etc/conf", "etc/sub/", "etc/sub/deep"])
    );
    assert_eq!(
        fs::read(env.path("two/big.bin")).unwrap(),
        env.source("big.bin")
    );
    assert_eq!(
        fs::read(env.path("two/etc/sub/deep")).unwrap(),
        env.source("etc/sub/deep")
    );

    // The large file alone: about its bytes, not the small files'.
    let (o, v) = env.pull("s3", "three", &["big.bin"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(v["restored_bytes"], 14 << 20);
    assert!(
        v["wire_bytes_fetched"].as_u64().unwrap() <= full_wire,
        "{v}"
    );
}

#[test]
fn bad_includes_are_usage_errors_and_create_nothing() {
    let env = Env::new();
    for inc in ["../x", "/etc/passwd", "small/../../x", "nothere"] {
        let (o, _) = env.pull("s", "out", &[inc]);
        assert_eq!(code(&o), 1, "{inc}: {}", text(&o));
        assert!(!env.path("out").exists(), "{inc}");
    }
    // --include needs --into.
    let o = env.pf("s", &["pull", &env.repo, "--include", "big.bin"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
}

#[test]
fn cat_streams_one_file_and_fetches_only_its_blobs() {
    let env = Env::new();
    let o = env.pf("c1", &["cat", &env.repo, "big.bin"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout == env.source("big.bin"), "big.bin differs");
    let big_blobs = stored_blobs(&env.path("c1"));

    let o = env.pf("c2", &["cat", &env.repo, "etc/sub/deep"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, env.source("etc/sub/deep"));
    // Only the fs tree is stored: the file's chunks were read by range.
    assert_eq!(stored_blobs(&env.path("c2")), 1);
    assert_eq!(big_blobs, 1);

    // A full pull stores the tree and every pack.
    let o = env.pf("c3", &["pull", &env.repo]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stored_blobs(&env.path("c3")) >= 2);

    // A reader that stops early (`| head`) ends pf cat quietly with exit 0.
    let o = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; \"$0\" --quiet cat \"$1\" big.bin | head -c 10 | wc -c",
        ])
        .args([env!("CARGO_BIN_EXE_pf"), &env.repo])
        .env("PF_STORE", env.path("c1"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "10");
    assert!(o.stderr.is_empty(), "{}", text(&o));

    for (p, want) in [("small", 1), ("small/link", 1), ("../x", 1), ("nothere", 2)] {
        let o = env.pf("c4", &["cat", &env.repo, p]);
        assert_eq!(code(&o), want, "{p}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{p}");
    }
}

#[test]
fn ls_lists_what_was_pushed_without_fetching_content() {
    let env = Env::new();
    let o = env.pf("l", &["--json", "ls", &env.repo]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: BTreeSet<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = e["path"].as_str().unwrap();
            match e["kind"].as_str().unwrap() {
                "dir" => format!("{p}/"),
                _ => p.to_string(),
            }
        })
        .collect();
    assert_eq!(listed, walk(&env.path("world")));
    let big = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "big.bin")
        .unwrap();
    assert_eq!(big["size"], 14 << 20);
    assert_eq!(big["kind"], "file");
    assert_eq!(stored_blobs(&env.path("l")), 1, "only the fs tree");

    let o = env.pf("l", &["ls", &env.repo, "small"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("dir ") && lines[0].ends_with("  small"),
        "{out}"
    );
    let mode = fs::metadata(env.path("world/small/a.txt")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777;
    assert!(lines[1].contains(&format!("{mode:04o}")), "{out}");
    assert!(lines[1].ends_with("small/a.txt"), "{out}");
    assert!(lines[3].ends_with("small/link -> a.txt"), "{out}");

    assert_eq!(code(&env.pf("l", &["ls", &env.repo, "nothere"])), 2);
    assert_eq!(code(&env.pf("l", &["ls", &env.repo, "../x"])), 1);
}
