//! `-o key=value` backend options are checked against the keys the backend
//! takes: a mistyped key, or one for another backend, is a usage error
//! (exit code 1) that lists the valid keys.

use std::process::{Command, Output};

fn pf(store: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(args)
        .env("PF_STORE", store)
        .env_remove("PF_KEY")
        .env_remove("PF_TRUST")
        .output()
        .expect("run pf")
}

#[test]
fn an_option_the_backend_does_not_take_is_exit_1_listing_the_valid_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let repo = format!("file://{}", tmp.path().join("repo").display());
    let out = pf(&store, &["exists", &repo, "-o", "hf.public=true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"hf.public\"") && err.contains("file://"),
        "{err}"
    );
    assert!(err.contains("valid options: none"), "{err}");

    // The same key from the environment serves the backends that take it
    // and is ignored by the others.
    let out = Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(["exists", &repo])
        .env("PF_STORE", &store)
        .env("PF_OPTION_HF_PUBLIC", "true")
        .output()
        .expect("run pf");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A copy takes the options of either end, and still refuses others.
    let other = format!("file://{}", tmp.path().join("other").display());
    let out = pf(&store, &["copy", &repo, &other, "-o", "s3.regoin=x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("s3.regoin"), "{err}");
}
