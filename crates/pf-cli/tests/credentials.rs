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

#[cfg(feature = "hf")]
#[test]
fn hub_token_from_hf_home_and_dataset_reference() {
    use pf_hub_testserver::RepoType;
    const TOKEN: &str = "hf_token_file_secret_9f3c";
    let (_rt, hub) = common::hub_server(TOKEN);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    fs::create_dir_all(h.join("world")).unwrap();
    fs::write(h.join("world/w.txt"), b"hub bytes").unwrap();
    let hf_home = h.join("hfhome");
    fs::create_dir_all(&hf_home).unwrap();
    let token_file = hf_home.join("token");
    let env = vec![
        ("HF_ENDPOINT", hub.url().to_string()),
        ("HF_HOME", hf_home.display().to_string()),
    ];
    let reference = "hf://datasets/pf-tester/tok";

    // No token file yet: exit 3, naming the file pf looked for.
    let o = pf(h, &env, &["push", "world", reference]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&token_file.display().to_string()), "{err}");

    // A wrong token in the file: refused (exit 3), the file named, the token not printed.
    fs::write(&token_file, "hf_wrong_token_value\n").unwrap();
    let o = pf(h, &env, &["push", "world", reference]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&token_file.display().to_string()), "{err}");
    assert!(!err.contains("hf_wrong_token_value"), "{err}");

    // The token `hf auth login` would have written.
    fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let push = pf(h, &env, &["push", "world", reference]);
    assert!(push.status.success(), "{}", text(&push));
    let resolved = String::from_utf8_lossy(&push.stdout).trim().to_string();
    assert!(
        resolved.starts_with("hf://datasets/pf-tester/tok@"),
        "{resolved}"
    );
    assert!(!String::from_utf8_lossy(&push.stderr).contains(TOKEN));
    // HfFileSystem's convention: a dataset repository, no model created.
    assert!(hub
        .resolve(RepoType::Dataset, "pf-tester/tok", "main")
        .is_some());
    assert!(hub
        .resolve(RepoType::Model, "pf-tester/tok", "main")
        .is_none());
    let pull = pf(h, &env, &["pull", &resolved, "--into", "restored"]);
    assert!(pull.status.success(), "{}", text(&pull));
    assert_eq!(fs::read(h.join("restored/w.txt")).unwrap(), b"hub bytes");

    // Offline: no network, a clear error.
    let mut offline = env.clone();
    offline.push(("HF_HUB_OFFLINE", "1".into()));
    let o = pf(h, &offline, &["pull", &resolved, "--into", "restored2"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HF_HUB_OFFLINE"),
        "{}",
        text(&o)
    );
    drop(hub);
}
