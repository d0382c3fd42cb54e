//! Credential and policy errors against moto with IAM enforcement switched on.
//!
//! moto accepts any credentials by default. It enforces SigV4 + IAM once its
//! request counter reaches `INITIAL_NO_AUTH_ACTION_COUNT` (env var, default
//! infinity); `POST /moto-api/reset-auth` with body `N` changes it at run time
//! and resets the counter. With enforcement on, an unknown key id gives 403
//! InvalidAccessKeyId, a wrong secret 403 SignatureDoesNotMatch and a user
//! without an allowing policy 403 AccessDenied. So the test creates IAM users
//! first (unauthenticated), then sets the count to 0.
#![cfg(feature = "s3")]

mod common;

use std::process::Command;
use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Registry, RegistryError, SignedImage};
use pf_testsupport::{S3Server, ServerProcess};

const WRONG_SECRET: &str = "WrongSecret/0123456789abcdefDoNotPrintMe";

/// One IAM Query API call (routed to IAM by the credential scope of a dummy
/// Authorization header, accepted while enforcement is off). Returns the body.
fn iam(server: &S3Server, params: &[(&str, &str)]) -> String {
    let mut args = vec![
        "-sS".to_string(),
        "-f".into(),
        "-X".into(),
        "POST".into(),
        format!("{}/", server.endpoint),
        "-H".into(),
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/iam/aws4_request, \
         SignedHeaders=host, Signature=0"
            .into(),
        "--data-urlencode".into(),
        "Version=2010-05-08".into(),
    ];
    for (k, v) in params {
        args.push("--data-urlencode".into());
        args.push(format!("{k}={v}"));
    }
    let out = Command::new("curl").args(&args).output().expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "IAM {params:?} failed: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    body
}

fn xml_field(body: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = body
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {body}"))
        + open.len();
    let end = body[start..]
        .find(&format!("</{tag}>"))
        .expect("closing tag")
        + start;
    body[start..end].to_string()
}

const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
const NO_LIST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],"Resource":"*"}]}"#;

/// Creates an IAM user with an access key and, if given, an inline policy.
fn user(server: &S3Server, name: &str, policy: Option<&str>) -> (String, String) {
    iam(server, &[("Action", "CreateUser"), ("UserName", name)]);
    if let Some(policy) = policy {
        iam(
            server,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", name),
                ("PolicyName", "s3all"),
                ("PolicyDocument", policy),
            ],
        );
    }
    let body = iam(server, &[("Action", "CreateAccessKey"), ("UserName", name)]);
    (
        xml_field(&body, "AccessKeyId"),
        xml_field(&body, "SecretAccessKey"),
    )
}

fn enforce_auth(server: &S3Server) {
    let status = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "--data",
            "0",
        ])
        .arg(format!("{}/moto-api/reset-auth", server.endpoint))
        .status()
        .expect("curl");
    assert!(status.success(), "enabling moto auth failed");
}

fn assert_unauthorized(err: &RegistryError, bucket: &str, secrets: &[&str]) {
    assert!(
        matches!(err, RegistryError::Unauthorized { .. }),
        "expected Unauthorized, got {err}"
    );
    let (display, debug) = (err.to_string(), format!("{err:?}"));
    assert!(
        display.contains(&format!("s3://{bucket}")),
        "bucket not named: {display}"
    );
    for s in secrets {
        assert!(!display.contains(s), "secret in Display: {display}");
        assert!(!debug.contains(s), "secret in Debug: {debug}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_policy_errors_are_unauthorized_without_secrets() {
    let server = S3Server::start();
    let (good_key, good_secret) = user(&server, "pusher", Some(ALLOW_ALL));
    let (weak_key, weak_secret) = user(&server, "nobody", None);
    let (nolist_key, nolist_secret) = user(&server, "nolist", Some(NO_LIST));
    enforce_auth(&server);

    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(41, 2).build(&*src, "auth");
    let signed = SignedImage::new(&img.manifest, None);
    let r = common::s3_ref(&server, "auth/img:v1");

    // Valid credentials with an allowing policy work under enforcement.
    let ok = common::config_with(&server, &good_key, &good_secret);
    common::engine(&r, &ok)
        .push(src.clone(), &signed)
        .await
        .expect("push with valid credentials");
    common::engine(&r, &ok)
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull with valid credentials");

    // Right key id, wrong secret (SignatureDoesNotMatch): push and pull.
    let wrong = common::config_with(&server, &good_key, WRONG_SECRET);
    let err = common::engine(&r, &wrong)
        .push(src.clone(), &signed)
        .await
        .expect_err("wrong secret push");
    assert_unauthorized(&err, &server.bucket, &[WRONG_SECRET, &good_secret]);
    let err = common::engine(&r, &wrong)
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect_err("wrong secret pull");
    assert_unauthorized(&err, &server.bucket, &[WRONG_SECRET, &good_secret]);
    eprintln!("wrong secret: {err}");

    // Unknown key id (InvalidAccessKeyId).
    let unknown = common::config_with(&server, "AKIAUNKNOWNKEY000000", WRONG_SECRET);
    let err = common::engine(&r, &unknown)
        .exists()
        .await
        .expect_err("unknown key");
    assert_unauthorized(&err, &server.bucket, &[WRONG_SECRET]);

    // Valid credentials, no policy allowing S3 (AccessDenied).
    let denied = common::config_with(&server, &weak_key, &weak_secret);
    let err = common::engine(&r, &denied)
        .push(src.clone(), &signed)
        .await
        .expect_err("no policy");
    assert_unauthorized(&err, &server.bucket, &[&weak_secret]);
    eprintln!("policy denial: {err}");

    // A policy without s3:ListBucket: a large batch falls back from LIST to HEADs.
    let nolist = common::config_with(&server, &nolist_key, &nolist_secret);
    let many = ImageSpec::sample(42, 24).build(&*src, "nolist");
    assert!(many.closure.len() > 64);
    let many = SignedImage::new(&many.manifest, None);
    let r2 = common::s3_ref(&server, "auth/many:v1");
    common::engine(&r2, &nolist)
        .push(src.clone(), &many)
        .await
        .expect("push without ListBucket");
    let rep = common::engine(&r2, &nolist)
        .push(src.clone(), &many)
        .await
        .expect("re-push without ListBucket");
    assert_eq!(rep.blobs_uploaded, 0);
    assert!(
        server.count_requests("GET", "list-type=2") >= 1,
        "LIST was tried first"
    );

    // A large image with a wrong secret: the LIST failure is untyped in
    // object_store, the HEAD probe makes it Unauthorized.
    let err = common::engine(&r2, &wrong)
        .push(src.clone(), &many)
        .await
        .expect_err("wrong secret, large image");
    assert_unauthorized(&err, &server.bucket, &[WRONG_SECRET, &good_secret]);
}
