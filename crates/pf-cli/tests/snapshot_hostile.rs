//! `pf push` / `pf pull --into` against a hostile store, repository or
//! neighbour: what pf-snapshot's library tests cannot show end to end.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use pf_registry::manifest::FS_TREE_MEDIA_TYPE;
use pf_registry::manifest::{AgentInfo, Chunk, EntryKind, FsEntry, FsTree, FS_LAYER_ROLE};
use pf_registry::{BlobStore, Config, Descriptor, ImageRef, Manifest, MemoryStore, SignedImage};

mod common;
use common::text;

fn pf(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pf"));
    c.env("PF_STORE", store)
        .env_remove("PF_KEY")
        .env_remove("PF_TRUST")
        .arg("-q");
    c
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn repo(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn world(root: &Path) -> PathBuf {
    let w = root.join("world");
    fs::create_dir_all(w.join("d")).unwrap();
    for i in 0..50 {
        fs::write(w.join(format!("d/f{i}")), format!("file {i}").repeat(100)).unwrap();
    }
    w
}

/// Pushes a hand-made image (an fs tree `tree` plus `blobs`) to a file://
/// repository at `at`, as a hostile repository would hold it.
fn push_raw(at: &Path, tree: FsTree, blobs: &[&[u8]]) {
    let store = Arc::new(MemoryStore::new());
    for b in blobs {
        store.put(b).unwrap();
    }
    let tb = tree.to_bytes();
    let mut m = Manifest::new(
        AgentInfo {
            name: "hostile".into(),
            version: String::new(),
        },
        "2026-01-01T00:00:00Z",
    );
    m.layers.push(Descriptor {
        role: FS_LAYER_ROLE.into(),
        media_type: FS_TREE_MEDIA_TYPE.into(),
        digest: store.put(&tb).unwrap(),
        size: tb.len() as u64,
    });
    let reg = pf_registry::open(&ImageRef::parse(&repo(at)).unwrap(), &Config::default()).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(reg.push(store, &SignedImage::new(&m, None)))
        .unwrap();
}

fn file_entry(path: &str, size: u64, blob: pf_registry::Digest) -> FsEntry {
    FsEntry {
        path: path.into(),
        kind: EntryKind::File,
        mode: 0o644,
        size,
        blob: Some(blob),
        chunks: vec![],
        target: None,
        offset: None,
        parts: vec![],
    }
}

#[test]
fn concurrent_pushes_sharing_one_store_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path());
    let store = tmp.path().join("store");
    for round in 0..4 {
        let kids: Vec<_> = (0..12)
            .map(|i| {
                pf(&store)
                    .args(["push", w.to_str().unwrap()])
                    .arg(repo(&tmp.path().join(format!("repo{round}-{i}"))))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for k in kids {
            let out = k.wait_with_output().unwrap();
            assert_eq!(code(&out), 0, "round {round}: {}", text(&out));
        }
    }
}

#[test]
fn a_symlink_planted_at_the_stat_cache_temp_name_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path());
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, store.join("statcache.tmp")).unwrap();
    let out = pf(&store)
        .args(["push", w.to_str().unwrap()])
        .arg(repo(&tmp.path().join("repo")))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn no_store_in_shared_tmp_when_home_and_xdg_cache_home_are_unset() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path());
    let out = Command::new(env!("CARGO_BIN_EXE_pf"))
        .env_remove("PF_STORE")
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .args(["push", w.to_str().unwrap()])
        .arg(repo(&tmp.path().join("repo")))
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store"), "{}", text(&out));
    assert!(!tmp.path().join("repo/manifest.json").exists());
}

#[test]
fn a_blob_shorter_than_its_file_is_an_integrity_error_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let short: &[u8] = b"only ten b";
    let tree = FsTree {
        entries: vec![file_entry("f", 1000, pf_registry::Digest::of(short))],
        packs: vec![],
        chunk_table: vec![],
    };
    let at = tmp.path().join("repo");
    push_raw(&at, tree, &[short]);
    let store = tmp.path().join("store");
    let out = pf(&store)
        .args(["pull", &repo(&at), "--into"])
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn a_restore_larger_than_max_size_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    // One 1 MiB blob referenced 200 times: 200 MiB from a tiny repository.
    let blob = vec![7u8; 1 << 20];
    let d = pf_registry::Digest::of(&blob);
    let mut big = file_entry("big", 200 << 20, d);
    big.blob = None;
    big.chunks = vec![
        Chunk {
            blob: d,
            size: 1 << 20
        };
        200
    ];
    let at = tmp.path().join("repo");
    push_raw(
        &at,
        FsTree {
            entries: vec![big],
            packs: vec![],
            chunk_table: vec![],
        },
        &[&blob],
    );
    let store = tmp.path().join("store");
    let out = pf(&store)
        .env("PF_MAX_SIZE", "100MiB")
        .args(["pull", &repo(&at), "--into"])
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("above the restore limit"),
        "{}",
        text(&out)
    );
    assert!(!tmp.path().join("out").exists());
    // Within the limit, the total is printed before the files are written.
    let small: &[u8] = b"ten bytes!";
    let at2 = tmp.path().join("repo2");
    push_raw(
        &at2,
        FsTree {
            entries: vec![file_entry("f", 10, pf_registry::Digest::of(small))],
            packs: vec![],
            chunk_table: vec![],
        },
        &[small],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pf"))
        .env("PF_STORE", &store)
        .args(["pull", &repo(&at2), "--max-size", "1KiB", "--into"])
        .arg(tmp.path().join("out2"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restoring 10 bytes into"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read(tmp.path().join("out2/f")).unwrap(), small);
}
