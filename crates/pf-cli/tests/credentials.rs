//! Credentials from the places users keep them: an S3 push to a real
//! S3-compatible server (moto) with the endpoint, region and keys coming
//! only from AWS shared credentials / config files.
#![cfg(feature = "s3")]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::text;
use pf_testsupport::S3Server;

fn pf(home: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(home)
        .output()
        .unwrap()
}

#[test]
fn s3_push_and_pull_with_credentials_only_from_profile_files() {
    let s3 = S3Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    fs::create_dir_all(h.join("world")).unwrap();
    fs::write(h.join("world/data.txt"), b"profile-authenticated bytes").unwrap();
    let creds = h.join("creds.ini");
    let config = h.join("config.ini");
    fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [pftest]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key, s3.secret_key
        ),
    )
    .unwrap();
    fs::write(
        &config,
        format!(
            "[profile pftest]\nregion = {}\nendpoint_url = {}\n",
            s3.region, s3.endpoint
        ),
    )
    .unwrap();
    let env = vec![
        ("AWS_PROFILE", "pftest".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        ("AWS_CONFIG_FILE", config.display().to_string()),
    ];
    let reference = format!("s3://{}/profiled", s3.bucket);

    let push = pf(h, &env, &["push", "world", &reference]);
    assert!(push.status.success(), "{}", text(&push));
    let resolved = String::from_utf8_lossy(&push.stdout).trim().to_string();
    let pull = pf(h, &env, &["pull", &resolved, "--into", "restored"]);
    assert!(pull.status.success(), "{}", text(&pull));
    assert_eq!(
        fs::read(h.join("restored/data.txt")).unwrap(),
        b"profile-authenticated bytes"
    );

    // A profile that is not there: exit 3, naming the profile and both
    // files, no key printed.
    let mut missing = env.clone();
    missing[0].1 = "nosuch".into();
    let o = pf(h, &missing, &["exists", &reference]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`nosuch`"), "{err}");
    assert!(err.contains(&creds.display().to_string()), "{err}");
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(!err.contains(&s3.secret_key), "{err}");
}
