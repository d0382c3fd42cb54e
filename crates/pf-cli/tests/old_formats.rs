//! Images written in older formats still pull, restore and list: format
//! v1 (by pf before format v2) and format v2 with packs named by the
//! SHA-256 of their bytes (by pf before packs were named by their
//! chunks). Each fixture under `tests/fixtures/` is a file://
//! repository pushed by that pf from the directory [`expected`]
//! describes; a fresh copy of it is used by each run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;
use common::{pf_env, text};

/// The directory the fixture was pushed from: path, content, mode.
fn expected() -> Vec<(String, Vec<u8>, u32)> {
    let mut v: Vec<(String, Vec<u8>, u32)> = (0..40)
        .map(|i| {
            let body = format!("small file {i}\n").repeat(i * 7 + 1);
            let mode = if i == 1 { 0o600 } else { 0o644 };
            (format!("small/f{i:02}.txt"), body.into_bytes(), mode)
        })
        .collect();
    let medium: String = (0..80000)
        .map(|i| format!("line {i} of the medium file\n"))
        .collect();
    v.push(("dir/sub/medium.txt".into(), medium.into_bytes(), 0o644));
    v.push(("empty".into(), Vec::new(), 0o644));
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Every blob file of the file:// repository `repo` whose decoded bytes
/// hash to its name, and every one whose bytes do not.
fn named_by_content(repo: &Path) -> (usize, usize) {
    let (mut yes, mut no) = (0, 0);
    let mut dirs = vec![repo.join("blobs")];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let raw = zstd::decode_all(fs::File::open(&p).unwrap()).unwrap();
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            if pf_registry::Digest::of(&raw).hex() == name {
                yes += 1;
            } else {
                no += 1;
            }
        }
    }
    (yes, no)
}

/// Pulls, cats and lists fixture `name`, then re-pushes the restored
/// directory, which names its new packs by their chunks, and restores that.
fn an_old_image_pulls_restores_and_lists(name: &str, tree_type: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join(name);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
        &repo,
    );
    let store = tmp.path().join("store");
    let r = format!("file://{}", repo.display());
    let o = pf_env(&store, &["inspect", &r], &[]);
    assert!(text(&o).contains(tree_type), "{}", text(&o));
    let out = tmp.path().join("out");
    let o = pf_env(&store, &["pull", &r, "--into", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    check_restored(&out);
    let o = pf_env(&store, &["cat", &r, "small/f03.txt"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, "small file 3\n".repeat(22).into_bytes());
    let o = pf_env(&store, &["ls", &r, "small"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        listed.lines().filter(|l| l.contains(".txt")).count(),
        40,
        "{listed}"
    );
    // Re-pushing the restored directory writes format v2 with new packs
    // named by their chunks; it restores to the same bytes.
    let now = tmp.path().join("repushed");
    let rn = format!("file://{}", now.display());
    let o = pf_env(&store, &["push", out.to_str().unwrap(), &rn], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = pf_env(&store, &["inspect", &rn], &[]);
    assert!(text(&o).contains("fs.tree.v2"), "{}", text(&o));
    let (_, by_chunks) = named_by_content(&now);
    assert!(by_chunks > 0, "the re-push names its packs by their chunks");
    let again = tmp.path().join("again");
    let o = pf_env(
        &tmp.path().join("store2"),
        &["pull", &rn, "--into", again.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    check_restored(&again);
}

/// The fixture's directory, restored at `out`.
fn check_restored(out: &Path) {
    for (path, body, mode) in expected() {
        let p = out.join(&path);
        assert_eq!(fs::read(&p).unwrap(), body, "{path}");
        let m = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, mode, "{path}");
    }
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        Path::new("dir/sub/medium.txt")
    );
}

#[test]
fn a_v1_image_pulls_restores_and_lists() {
    an_old_image_pulls_restores_and_lists("v1-repo", "fs.tree.v1");
}

#[test]
fn a_v2_image_with_packs_named_by_their_bytes_pulls_restores_and_lists() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-repo");
    // The fixture holds what that pf wrote: every blob named by its bytes.
    assert_eq!(named_by_content(&fixture), (2, 0));
    an_old_image_pulls_restores_and_lists("v2-repo", "fs.tree.v2");
}

#[test]
fn a_tree_type_of_a_newer_pf_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("newer");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-repo"),
        &repo,
    );
    let m = repo.join("manifest.json");
    let text_of = fs::read_to_string(&m).unwrap();
    fs::write(&m, text_of.replace("fs.tree.v2+json", "fs.tree.v3+json")).unwrap();
    let out = tmp.path().join("out");
    let o = pf_env(
        &tmp.path().join("store"),
        &[
            "pull",
            &format!("file://{}", repo.display()),
            "--into",
            out.to_str().unwrap(),
        ],
        &[],
    );
    // Not an empty restore that exits 0: the tree's packs are unknown.
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("newer pf"), "{}", text(&o));
    assert!(!out.join("small").exists());
}
