//! The servers start and speak their protocols.

use pf_testsupport::{OciAuth, OciRegistry, S3Server};

fn client(reg: &OciRegistry) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder();
    if let Some(ca) = &reg.ca_file {
        let pem = std::fs::read(ca).unwrap();
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[test]
fn anonymous_registry_answers_v2() {
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let r = client(&reg)
        .get(format!("{}/v2/", reg.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn basic_tls_registry_requires_credentials() {
    let reg = OciRegistry::start(OciAuth::BasicTls);
    let c = client(&reg);
    let url = format!("{}/v2/", reg.url());
    assert_eq!(c.get(&url).send().unwrap().status(), 401);
    let ok = c
        .get(&url)
        .basic_auth(reg.username.as_ref().unwrap(), reg.password.as_ref())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn token_registry_does_the_bearer_flow() {
    let reg = OciRegistry::start(OciAuth::Token);
    let c = client(&reg);
    let r = c
        .get(format!("{}/v2/foo/tags/list", reg.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    let realm = challenge
        .split("realm=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let tok: serde_json::Value = c
        .get(realm)
        .query(&[
            ("service", "pf-test-registry"),
            ("scope", "repository:foo:pull,push"),
        ])
        .basic_auth(reg.username.as_ref().unwrap(), reg.password.as_ref())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = tok["token"].as_str().unwrap();
    // Upload a blob with the token.
    let post = c
        .post(format!("{}/v2/foo/blobs/uploads/", reg.url()))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(post.status(), 202, "{}", reg.log_text());
    // Bad credentials get no token.
    let bad = c
        .get(realm)
        .basic_auth("pfuser", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[test]
fn moto_s3_lists_the_created_bucket() {
    let s3 = S3Server::start();
    let body = reqwest::blocking::get(format!("{}/{}", s3.endpoint, s3.bucket))
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("ListBucketResult"), "{body}");
    assert!(body.contains(&s3.bucket), "{body}");
}
