//! `pf push` chunks against the last tree it pushed from a directory to a
//! repository: an edit re-sends about the changed chunks, and if the
//! repository lost those packs the push says so and sends every chunk.

use std::fs;

mod common;
use common::{pf_env, text};

fn push(store: &std::path::Path, dir: &std::path::Path, r: &str) -> serde_json::Value {
    let o = pf_env(store, &["--json", "push", dir.to_str().unwrap(), r], &[]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn an_edit_re_sends_about_its_chunks_and_a_lost_base_sends_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, world) = (tmp.path().join("store"), tmp.path().join("world"));
    fs::create_dir_all(world.join("small")).unwrap();
    let mut big = pf_testsupport::noise(8 << 20, 1);
    fs::write(world.join("big.bin"), &big).unwrap();
    for i in 0..50 {
        fs::write(
            world.join(format!("small/{i}.txt")),
            pf_testsupport::noise(2000, i + 10),
        )
        .unwrap();
    }
    let repo = tmp.path().join("repo");
    let r = format!("file://{}", repo.display());
    let first = push(&store, &world, &r);
    let first_bytes = first["wire_bytes_uploaded"].as_u64().unwrap();
    assert!(first_bytes > 8 << 20, "{first}");

    // One byte in the middle of the large file and one small file: about
    // two chunks and the tree, not the 8 MiB.
    big[4 << 20] ^= 0xff;
    fs::write(world.join("big.bin"), &big).unwrap();
    fs::write(world.join("small/7.txt"), b"changed").unwrap();
    let second = push(&store, &world, &r);
    let sent = second["wire_bytes_uploaded"].as_u64().unwrap();
    assert!(
        sent < 1 << 20,
        "{sent} bytes sent for two small edits: {second}"
    );

    // A copy of the directory elsewhere (a restore on another path) starts
    // from the repository's last tree too.
    let copy = tmp.path().join("copy");
    let o = std::process::Command::new("cp")
        .args(["-a", world.to_str().unwrap(), copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    fs::write(copy.join("small/8.txt"), b"changed in the copy").unwrap();
    let third = push(&store, &copy, &r);
    let sent = third["wire_bytes_uploaded"].as_u64().unwrap();
    assert!(sent < 1 << 20, "{sent} bytes sent from a copy: {third}");

    // The packs the book's base lives in disappear (a reset repository):
    // the push notices, sends every chunk and still succeeds.
    fs::remove_dir_all(&repo).unwrap();
    big[1 << 20] ^= 0xff;
    fs::write(world.join("big.bin"), &big).unwrap();
    let o = pf_env(&store, &["push", world.to_str().unwrap(), &r], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sending every chunk"),
        "{}",
        text(&o)
    );
    let out = tmp.path().join("out");
    let o = pf_env(&store, &["pull", &r, "--into", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), big);
    assert_eq!(fs::read(out.join("small/7.txt")).unwrap(), b"changed");
}
