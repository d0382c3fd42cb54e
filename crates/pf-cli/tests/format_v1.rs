//! Images written in format v1 (by pf before format v2) still pull,
//! restore and list. The fixture under `tests/fixtures/v1-repo` is a
//! file:// repository pushed by that pf from the directory
//! [`expected`] describes; a fresh copy of it is used by each run.

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

#[test]
fn a_v1_image_pulls_restores_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("v1-repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-repo"),
        &repo,
    );
    let store = tmp.path().join("store");
    let r = format!("file://{}", repo.display());
    let out = tmp.path().join("out");
    let o = pf_env(&store, &["pull", &r, "--into", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
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
    // Re-pushing the restored directory writes format v2, and it restores
    // to the same bytes.
    let o = pf_env(
        &store,
        &[
            "push",
            out.to_str().unwrap(),
            &format!("file://{}", tmp.path().join("v2").display()),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = pf_env(
        &store,
        &[
            "inspect",
            &format!("file://{}", tmp.path().join("v2").display()),
        ],
        &[],
    );
    assert!(text(&o).contains("fs.tree.v2"), "{}", text(&o));
}
