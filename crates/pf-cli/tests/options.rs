//! `-o key=value` backend options are checked against the keys the backend
//! takes: a mistyped key, or one for another backend, is a usage error
//! (exit code 1) that lists the valid keys.

mod common;
use common::{pf_env, text};

#[test]
fn an_option_the_backend_does_not_take_is_exit_1_listing_the_valid_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let repo = format!("file://{}", tmp.path().join("repo").display());
    let out = pf_env(&store, &["exists", &repo, "-o", "hf.public=true"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("\"hf.public\"") && err.contains("file://"),
        "{err}"
    );
    assert!(err.contains("valid options: none"), "{err}");

    // The same key from the environment serves the backends that take it
    // and is ignored by the others.
    let out = pf_env(
        &store,
        &["exists", &repo],
        &[("PF_OPTION_HF_PUBLIC", "true")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A copy takes the options of either end, and still refuses others.
    let other = format!("file://{}", tmp.path().join("other").display());
    let out = pf_env(&store, &["copy", &repo, &other, "-o", "s3.regoin=x"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3.regoin"));
}
