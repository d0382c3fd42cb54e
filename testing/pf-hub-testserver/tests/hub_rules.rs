//! The Hub's limits as the test server enforces them: files per commit,
//! entries per folder, `sdk` for Spaces, storage URLs that refuse an
//! `Authorization` header, and 429 + `Retry-After` rate limiting.

use std::time::Duration;

use pf_hub_testserver::{HubConfig, HubServer};
use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "hf_rules_write";

/// A reqwest client on rustls's ring provider (reqwest is built without one).
fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

async fn create(
    h: &HubServer,
    c: &Client,
    name: &str,
    kind: &str,
    sdk: Option<&str>,
) -> StatusCode {
    let mut body = json!({"name": name, "organization": "pf-tester", "type": kind});
    if let Some(s) = sdk {
        body["sdk"] = json!(s);
    }
    let r = c
        .post(format!("{}/api/repos/create", h.url()))
        .bearer_auth(TOKEN)
        .json(&body);
    r.send().await.expect("create").status()
}

fn file(path: &str) -> Value {
    json!({"key": "file", "value": {"path": path, "content": "aGk=", "encoding": "base64"}})
}

async fn commit(h: &HubServer, c: &Client, repo: &str, files: Vec<Value>) -> (StatusCode, String) {
    let mut body = format!("{}\n", json!({"key": "header", "value": {"summary": "t"}}));
    for f in files {
        body.push_str(&format!("{f}\n"));
    }
    let r = c
        .post(format!("{}/api/datasets/{repo}/commit/main", h.url()))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("commit");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn commit_file_and_folder_limits() {
    let cfg = HubConfig::with_token(TOKEN)
        .commit_file_limit(5)
        .folder_entry_limit(4);
    let h = HubServer::start(cfg).await.expect("start");
    let c = client();
    assert_eq!(create(&h, &c, "lim", "dataset", None).await, 200);
    let files = |n: usize, dir: &str| (0..n).map(|i| file(&format!("{dir}/f{i}.txt"))).collect();
    let (s, body) = commit(&h, &c, "pf-tester/lim", files(6, "a")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("Too many files"), "{body}");
    assert_eq!(commit(&h, &c, "pf-tester/lim", files(4, "a")).await.0, 200);
    // A fifth entry in folder `a` goes over its limit of 4.
    let (s, body) = commit(&h, &c, "pf-tester/lim", vec![file("a/extra.txt")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("entries"), "{body}");
    assert_eq!(h.stats().commits, 1);
}

#[tokio::test]
async fn spaces_need_an_sdk() {
    let h = HubServer::start(HubConfig::with_token(TOKEN))
        .await
        .expect("start");
    let c = client();
    assert_eq!(create(&h, &c, "s1", "space", None).await, 400);
    assert_eq!(create(&h, &c, "s1", "space", Some("static")).await, 200);
}

#[tokio::test]
async fn storage_urls_refuse_an_authorization_header() {
    let h = HubServer::start(HubConfig::with_token(TOKEN))
        .await
        .expect("start");
    let c = client();
    assert_eq!(create(&h, &c, "st", "dataset", None).await, 200);
    let data = b"stored bytes";
    let oid = hex::encode(ring::digest::digest(&ring::digest::SHA256, data));
    let batch = json!({"operation": "upload", "transfers": ["basic"],
        "objects": [{"oid": oid, "size": data.len()}]});
    let v: Value = c
        .post(format!(
            "{}/datasets/pf-tester/st.git/info/lfs/objects/batch",
            h.url()
        ))
        .bearer_auth(TOKEN)
        .json(&batch)
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    let href = v["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .expect("href");
    let with_auth = c
        .put(href)
        .bearer_auth(TOKEN)
        .body(data.to_vec())
        .send()
        .await;
    assert_eq!(with_auth.expect("put").status(), StatusCode::BAD_REQUEST);
    let plain = c.put(href).body(data.to_vec()).send().await.expect("put");
    assert_eq!(plain.status(), 200);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let cfg = HubConfig::with_token(TOKEN).rate_limit(3, Duration::from_secs(60));
    let h = HubServer::start(cfg).await.expect("start");
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = c
            .get(format!("{}/api/whoami-v2", h.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("whoami");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let ra: u64 = r.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&ra), "Retry-After {ra}");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(h.stats().route("rate_limited"), 2);
}
