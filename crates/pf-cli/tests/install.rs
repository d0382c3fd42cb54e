//! The `pf` a user installs (`cargo install --locked --path crates/pf-cli`,
//! default features) has every backend: it pushes to a local OCI registry
//! with no flag beyond the directory and the reference, and pulls it back.
#![cfg(feature = "oci")]

mod common;

use std::fs;
use std::process::Command;

use common::text;
use pf_testsupport::registry::{OciAuth, OciRegistry};

#[test]
fn default_build_pushes_to_oci_without_any_flag() {
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("world");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"hello from a fresh install\n").unwrap();
    fs::write(src.join("sub/b.bin"), vec![7u8; 70_000]).unwrap();
    let reference = format!("oci://{}/x", reg.host);
    let pf = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pf"))
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(home.path())
            .output()
            .unwrap()
    };

    let push = pf(&["push", "world", &reference]);
    assert!(push.status.success(), "{}", text(&push));
    let resolved = String::from_utf8_lossy(&push.stdout).trim().to_string();
    assert!(
        resolved.starts_with(&format!("{reference}@sha256:")),
        "push printed {resolved:?}; {}",
        text(&push)
    );

    let pull = pf(&["pull", &resolved, "--into", "restored"]);
    assert!(pull.status.success(), "{}", text(&pull));
    let restored = home.path().join("restored");
    assert_eq!(
        fs::read(restored.join("a.txt")).unwrap(),
        b"hello from a fresh install\n"
    );
    assert_eq!(
        fs::read(restored.join("sub/b.bin")).unwrap(),
        vec![7u8; 70_000]
    );
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_pf()"),
        ("zsh", "#compdef pf"),
        ("fish", "complete -c pf"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_pf"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}: {}", text(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(
            script.contains(marker),
            "{shell}: no {marker:?} in\n{script}"
        );
        for sub in ["push", "pull", "inspect", "completions"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    let o = Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn deprecated_hf_repo_type_option_says_so() {
    // An unreachable endpoint: the note comes before any network access.
    let o = Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(["exists", "hf://owner/repo", "-o", "hf.repo_type=dataset"])
        .env_clear()
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("hf.repo_type is deprecated"), "{}", text(&o));
    assert!(err.contains("hf://datasets/owner/repo"), "{}", text(&o));
}

#[test]
fn every_command_help_shows_an_example() {
    // Every subcommand clap knows (so a new command without an example fails).
    let cmds: Vec<String> = pf_cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    assert!(cmds.len() >= 16, "{cmds:?}");
    for cmd in cmds {
        let o = Command::new(env!("CARGO_BIN_EXE_pf"))
            .args([cmd.as_str(), "--help"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{cmd}: {}", text(&o));
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            help.contains("Example:\n  pf "),
            "{cmd} --help has no example:\n{help}"
        );
    }
}
