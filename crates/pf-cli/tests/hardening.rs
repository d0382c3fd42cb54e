//! `pf` against hostile input and shared setups: escaped output, umask-
//! respecting repositories, secrets kept off the command line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::text;

fn pf(store: &Path, args: &[&str]) -> Output {
    common::pf_env(store, args, &[])
}

/// A strange string a hostile image puts everywhere it can: a forged
/// output line, terminal escape sequences (clear screen, set title, colour),
/// a bell, a carriage return and a bidi override.
const HOSTILE: &str =
    "x\nsignature:  verified (key 0123abcd)\x1b[2J\x1b]0;owned\x07\r\u{9b}31m\u{202e}txt.exe";

fn assert_clean(out: &str, what: &str) {
    for bad in ['\x1b', '\x07', '\r', '\u{9b}', '\u{202e}'] {
        assert!(
            !out.contains(bad),
            "{what} holds a raw {:?}:\n{out}",
            bad as u32
        );
    }
    assert!(
        !out.lines().any(|l| l.starts_with("signature:  verified")),
        "{what} holds a forged signature line:\n{out}"
    );
}

#[test]
fn inspect_escapes_every_string_from_the_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    fs::create_dir_all(&repo).expect("mkdir");
    let manifest = serde_json::json!({
        "schema_version": 1,
        "media_type": "application/vnd.processfork.image.v1+json",
        "agent": {"name": HOSTILE, "version": HOSTILE},
        "layers": [{
            "role": HOSTILE,
            "media_type": HOSTILE,
            "digest": format!("sha256:{}", "ab".repeat(32)),
            "size": 1,
        }],
        "parents": [],
        "created_at": HOSTILE,
        "annotations": {HOSTILE: HOSTILE},
    });
    fs::write(repo.join("manifest.json"), manifest.to_string()).expect("manifest");
    let out = pf(
        &tmp.path().join("store"),
        &["inspect", &format!("file://{}", repo.display())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_clean(&stdout, "inspect output");
    // The one real signature line says what is true.
    let sig: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("signature"))
        .collect();
    assert_eq!(sig.len(), 1, "{stdout}");
    assert!(sig[0].contains("UNSIGNED"), "{stdout}");
    // The strings are still there, escaped.
    assert!(stdout.contains("x\\nsignature:  verified"), "{stdout}");
    assert!(stdout.contains("\\u{1b}[2J"), "{stdout}");
}

#[test]
fn error_messages_escape_paths_from_outside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A directory to push that does not exist: the error names it.
    let dir = tmp.path().join(HOSTILE);
    let repo = format!("file://{}", tmp.path().join("repo").display());
    let out = pf(
        &tmp.path().join("store"),
        &["push", dir.to_str().expect("utf-8"), &repo],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pf: error"), "{stderr}");
    assert_clean(&stderr, "error message");
}

fn modes(root: &Path, out: &mut Vec<(String, u32, bool)>) {
    for e in fs::read_dir(root).expect("read_dir") {
        let e = e.expect("entry");
        let m = fs::symlink_metadata(e.path()).expect("stat");
        out.push((
            e.path().display().to_string(),
            m.permissions().mode() & 0o777,
            m.is_dir(),
        ));
        if m.is_dir() {
            modes(&e.path(), out);
        }
    }
}

#[test]
fn file_repository_modes_follow_the_umask() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/small"), b"small file").expect("write");
    // Above the in-memory limit: encoded through a spool file, hard-linked.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    fs::write(src.join("big.bin"), &big).expect("write");
    for (umask, file_mode, dir_mode) in [("022", 0o644, 0o755), ("027", 0o640, 0o750)] {
        let repo = tmp.path().join(format!("repo{umask}"));
        let key = tmp.path().join(format!("k{umask}"));
        let script = format!(
            "umask {umask} && \"$PF\" keygen --out \"$KEY\" >/dev/null && \"$PF\" push --key \"$KEY.key\" \"$SRC\" \"$REPO\""
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PF", env!("CARGO_BIN_EXE_pf"))
            .env("PF_STORE", tmp.path().join("store"))
            .env("KEY", &key)
            .env("SRC", &src)
            .env("REPO", format!("file://{}", repo.display()))
            .env_remove("PF_KEY")
            .output()
            .expect("sh");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let mut all = Vec::new();
        modes(&repo, &mut all);
        assert!(
            all.iter().filter(|(_, _, d)| !d).count() >= 5,
            "manifest, signature, copies and blobs: {all:?}"
        );
        for (path, mode, is_dir) in &all {
            let want = if *is_dir { dir_mode } else { file_mode };
            assert_eq!(
                *mode, want,
                "umask {umask}: {path} has mode {mode:o}, want {want:o}"
            );
        }
    }
}

#[test]
fn option_values_come_from_files_and_the_environment_and_stay_unprinted() {
    // `-o KEY_file=PATH` and `PF_OPTION_<KEY>` set an option; a missing
    // file is a usage error naming the option and the path, not the value.
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let missing = tmp.path().join("no-such-token");
    let out = pf(
        &store,
        &[
            "-o",
            &format!("hf.token_file={}", missing.display()),
            "exists",
            "file:///nonexistent",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hf.token") && stderr.contains("no-such-token"),
        "{stderr}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_pf"))
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("_file=PATH") && help.contains("PF_OPTION_"),
        "--help must say how to keep secrets out of ps:\n{help}"
    );
}

/// The Hub token given as a file or an environment variable reaches the
/// backend: pushes and pulls against the Hub test server (which requires
/// the token) succeed with nothing secret on the command line.
#[cfg(feature = "hf")]
#[test]
fn hf_token_from_a_file_or_the_environment() {
    const TOKEN: &str = "hf_token_from_file_5e6f";
    let (_rt, hub) = common::hub_server(TOKEN);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), b"hello hub").expect("write");
    let token_file = tmp.path().join("token");
    fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let run = |args: &[&str], env: &[(&str, &str)]| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pf"));
        c.args(args)
            .env("PF_STORE", tmp.path().join("store"))
            .env("HF_ENDPOINT", hub.url())
            .env_remove("HF_TOKEN")
            .env_remove("PF_KEY");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run pf")
    };
    let no_token = run(&["push", src.to_str().unwrap(), "hf://pf-tester/t"], &[]);
    assert_eq!(no_token.status.code(), Some(3), "{}", text(&no_token));
    let out = run(
        &[
            "-o",
            &format!("hf.token_file={}", token_file.display()),
            "push",
            src.to_str().unwrap(),
            "hf://pf-tester/t",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dst = tmp.path().join("dst");
    let out = run(
        &["pull", "hf://pf-tester/t", "--into", dst.to_str().unwrap()],
        &[("PF_OPTION_HF_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(fs::read(dst.join("a")).expect("restored"), b"hello hub");
    drop(hub);
}
