//! Wire-level checks of what the hf backend relies on: LFS batch + signed
//! upload + verify + dedup, atomic NDJSON commits, paginated trees, resolve
//! headers/redirects/ranges, and the Hub's auth answers.

use pf_hub_testserver::{HubConfig, HubServer, RepoType, Token};
use reqwest::{header, redirect, Client, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "hf_protocol_write";

async fn hub() -> (HubServer, Client) {
    let cfg = HubConfig::with_token(TOKEN)
        .token(Token::read("hf_ro", "pf-tester"))
        .token(Token::write("hf_other", "other").org("acme"))
        .page_size(3);
    let hub = HubServer::start(cfg).await.expect("start");
    // reqwest is built without a crypto provider: install rustls's ring one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");
    (hub, http)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

async fn create(h: &HubServer, c: &Client, name: &str, private: bool) {
    let body =
        json!({"name": name, "organization": "pf-tester", "type": "dataset", "private": private});
    let r = c
        .post(format!("{}/api/repos/create", h.url()))
        .bearer_auth(TOKEN)
        .json(&body);
    assert_eq!(r.send().await.expect("create").status(), 200);
}

/// Batch-uploads `data` to a dataset repo; returns the batch object.
async fn lfs_put(h: &HubServer, c: &Client, repo: &str, data: &[u8]) -> Value {
    let (oid, size) = (sha256(data), data.len());
    let batch = json!({"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
        "objects": [{"oid": oid, "size": size}], "ref": {"name": "main"}});
    let url = format!("{}/datasets/{repo}.git/info/lfs/objects/batch", h.url());
    let r = c
        .post(url)
        .bearer_auth(TOKEN)
        .json(&batch)
        .send()
        .await
        .expect("batch");
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/vnd.git-lfs+json"
    );
    let obj = r.json::<Value>().await.expect("json")["objects"][0].clone();
    if let Some(up) = obj["actions"]["upload"]["href"].as_str() {
        assert!(
            up.starts_with(h.storage_url()),
            "uploads go to the storage origin"
        );
        let put = c.put(up).body(data.to_vec()).send().await.expect("put");
        assert_eq!(put.status(), 200);
        let verify = obj["actions"]["verify"]["href"]
            .as_str()
            .expect("verify href");
        let v = c
            .post(verify)
            .bearer_auth(TOKEN)
            .json(&json!({"oid": oid, "size": size}));
        assert_eq!(v.send().await.expect("verify").status(), 200);
    }
    obj
}

async fn commit(h: &HubServer, c: &Client, repo: &str, lines: &[Value]) -> reqwest::Response {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let url = format!("{}/api/datasets/{repo}/commit/main", h.url());
    let r = c
        .post(url)
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "application/x-ndjson");
    r.body(body).send().await.expect("commit")
}

fn lfs_line(path: &str, b: &[u8]) -> Value {
    let value = json!({"path": path, "algo": "sha256", "oid": sha256(b), "size": b.len()});
    json!({"key": "lfsFile", "value": value})
}

fn header_line() -> Value {
    json!({"key": "header", "value": {"summary": "push", "description": ""}})
}

#[tokio::test]
async fn lfs_batch_signed_upload_verify_and_per_repo_dedup() {
    let (h, c) = hub().await;
    create(&h, &c, "a", true).await;
    create(&h, &c, "b", true).await;
    let data = b"\x00binary blob".repeat(1000);
    let first = lfs_put(&h, &c, "pf-tester/a", &data).await;
    let up = first["actions"]["upload"]["href"].as_str().expect("href");
    // Tampered signature or wrong bytes are refused; nothing more gets stored.
    let forged = c
        .put(up.replace("sig=", "sig=0"))
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let wrong = c
        .put(up)
        .body(b"x".repeat(data.len()))
        .send()
        .await
        .expect("put");
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    // Stored now: no actions for this repo, upload actions for another one.
    assert!(lfs_put(&h, &c, "pf-tester/a", &data)
        .await
        .get("actions")
        .is_none());
    assert!(lfs_put(&h, &c, "pf-tester/b", &data)
        .await
        .get("actions")
        .is_some());
    let s = h.stats();
    assert_eq!(
        (s.lfs_uploads, s.route("lfs.upload"), s.route("lfs.batch")),
        (2, 4, 3)
    );
}

#[tokio::test]
async fn commits_are_atomic_and_checked() {
    let (h, c) = hub().await;
    create(&h, &c, "repo", false).await;
    let head = |h: &HubServer| h.resolve(RepoType::Dataset, "pf-tester/repo", "main");
    let before = head(&h).expect("initial commit");
    let file = |p: &str, b: &[u8]| {
        use base64::Engine as _;
        let content = base64::engine::general_purpose::STANDARD.encode(b);
        json!({"key": "file", "value": {"path": p, "content": content, "encoding": "base64"}})
    };
    let blob = b"\x00\x01 blob bytes".repeat(50);
    // An lfsFile whose object was never uploaded fails the whole commit.
    let r = commit(
        &h,
        &c,
        "pf-tester/repo",
        &[header_line(), file("m.json", b"{}"), lfs_line("b/x", &blob)],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("LFS pointer pointed to a file that does not exist"));
    // Binary bytes in a regular file are refused too; a missing delete is 404.
    let r = commit(
        &h,
        &c,
        "pf-tester/repo",
        &[header_line(), file("bin", b"\x00\x01")],
    )
    .await;
    assert_eq!(r.status(), 400);
    let del = json!({"key": "deletedFile", "value": {"path": "nope"}});
    let r = commit(&h, &c, "pf-tester/repo", &[header_line(), del]).await;
    assert_eq!(
        (r.status(), r.headers()["x-error-code"].to_str().ok()),
        (StatusCode::NOT_FOUND, Some("EntryNotFound"))
    );
    assert_eq!(
        head(&h).as_deref(),
        Some(before.as_str()),
        "failed commits changed main"
    );
    assert_eq!(h.stats().commits, 0);

    lfs_put(&h, &c, "pf-tester/repo", &blob).await;
    let r = commit(
        &h,
        &c,
        "pf-tester/repo",
        &[header_line(), file("m.json", b"{}"), lfs_line("b/x", &blob)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let oid = v["commitOid"].as_str().expect("commitOid");
    assert!(oid.len() == 40 && oid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(head(&h).as_deref(), Some(oid));
    assert!(v["commitUrl"]
        .as_str()
        .expect("url")
        .ends_with(&format!("/datasets/pf-tester/repo/commit/{oid}")));
    assert!(v["pullRequestUrl"].is_null());
    // A stale parentCommit is a 412.
    let stale = json!({"key": "header", "value": {"summary": "s", "parentCommit": before}});
    assert_eq!(
        commit(&h, &c, "pf-tester/repo", &[stale, file("z", b"z")])
            .await
            .status(),
        412
    );
}

#[tokio::test]
async fn tree_pages_follow_link_headers() {
    let (h, c) = hub().await;
    create(&h, &c, "t", true).await;
    let mut lines = vec![header_line()];
    for i in 0..8 {
        let content = format!("{i}");
        let value = json!({"path": format!("d/f{i}"), "content": content, "encoding": "utf-8"});
        lines.push(json!({"key": "file", "value": value}));
    }
    assert_eq!(commit(&h, &c, "pf-tester/t", &lines).await.status(), 200);
    let mut url = Some(format!(
        "{}/api/datasets/pf-tester/t/tree/main/d?recursive=true",
        h.url()
    ));
    let (mut paths, mut pages) = (Vec::new(), 0);
    while let Some(u) = url.take() {
        let r = c.get(&u).bearer_auth(TOKEN).send().await.expect("tree");
        url = r.headers().get(header::LINK).and_then(|l| {
            let l = l.to_str().ok()?;
            Some(
                l.strip_prefix('<')?
                    .split_once(">; rel=\"next\"")?
                    .0
                    .to_string(),
            )
        });
        let items: Vec<Value> = r.json().await.expect("json");
        paths.extend(
            items
                .iter()
                .map(|i| i["path"].as_str().unwrap_or_default().to_string()),
        );
        pages += 1;
    }
    assert_eq!((pages, paths.len()), (3, 8));
    assert_eq!(paths[0], "d/f0");
    let missing = c
        .get(format!(
            "{}/api/datasets/pf-tester/t/tree/main/nope",
            h.url()
        ))
        .bearer_auth(TOKEN);
    assert_eq!(missing.send().await.expect("tree").status(), 404);
}

#[tokio::test]
async fn resolve_serves_headers_redirects_and_ranges() {
    let (h, c) = hub().await;
    create(&h, &c, "r", true).await;
    let blob = b"\x00LFS!".repeat(100);
    lfs_put(&h, &c, "pf-tester/r", &blob).await;
    let lfs = lfs_line("x.bin", &blob);
    let value = json!({"path": "a b.txt", "content": "hello world", "encoding": "utf-8"});
    let txt = json!({"key": "file", "value": value});
    assert_eq!(
        commit(&h, &c, "pf-tester/r", &[header_line(), lfs, txt])
            .await
            .status(),
        200
    );
    let main = h
        .resolve(RepoType::Dataset, "pf-tester/r", "main")
        .expect("main");
    let get = |p: &str| {
        c.get(format!("{}/datasets/pf-tester/r/resolve/main/{p}", h.url()))
            .bearer_auth(TOKEN)
    };

    let r = get("a%20b.txt").send().await.expect("get");
    assert_eq!(r.headers()["x-repo-commit"], main.as_str());
    assert_eq!(
        r.headers()[header::ETAG],
        "\"95d09f2b10159347eece71399a7e2e907ea3df4f\""
    ); // git hash-object
    assert_eq!(r.text().await.expect("text"), "hello world");
    let r = get("a%20b.txt")
        .header(header::RANGE, "bytes=6-")
        .send()
        .await
        .expect("get");
    assert_eq!(
        (r.status(), r.headers()[header::CONTENT_RANGE].to_str().ok()),
        (StatusCode::PARTIAL_CONTENT, Some("bytes 6-10/11"))
    );
    assert_eq!(
        get("a%20b.txt")
            .header(header::RANGE, "bytes=50-")
            .send()
            .await
            .expect("get")
            .status(),
        416
    );

    let r = c
        .head(format!(
            "{}/datasets/pf-tester/r/resolve/{main}/x.bin",
            h.url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["x-linked-etag"].to_str().ok(),
        Some(format!("\"{}\"", sha256(&blob)).as_str())
    );
    assert_eq!(
        r.headers()["x-linked-size"].to_str().ok(),
        Some(blob.len().to_string().as_str())
    );
    let loc = r.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        loc.starts_with(h.storage_url()),
        "LFS bytes come from another origin"
    );
    let part = c
        .get(&loc)
        .header(header::RANGE, "bytes=-5")
        .send()
        .await
        .expect("cdn");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        &part.bytes().await.expect("bytes")[..],
        &blob[blob.len() - 5..]
    );
    assert_eq!(
        &c.get(&loc)
            .send()
            .await
            .expect("cdn")
            .bytes()
            .await
            .expect("bytes")[..],
        &blob[..]
    );
    assert_eq!(
        c.get(loc.replace("sig=", "sig=1"))
            .send()
            .await
            .expect("cdn")
            .status(),
        403
    );
    let r = get("missing").send().await.expect("get");
    assert_eq!(
        (r.status(), r.headers()["x-error-code"].to_str().ok()),
        (StatusCode::NOT_FOUND, Some("EntryNotFound"))
    );
}

#[tokio::test]
async fn auth_answers_like_the_hub() {
    let (h, c) = hub().await;
    create(&h, &c, "secret", true).await;
    let info = format!("{}/api/datasets/pf-tester/secret", h.url());
    let code = |r: &reqwest::Response| {
        r.headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let r = c.get(&info).send().await.expect("anon");
    assert_eq!(
        (r.status(), code(&r).as_deref()),
        (StatusCode::UNAUTHORIZED, Some("RepoNotFound"))
    );
    let r = c
        .get(&info)
        .bearer_auth("hf_other")
        .send()
        .await
        .expect("other");
    assert_eq!(
        (r.status(), code(&r).as_deref()),
        (StatusCode::NOT_FOUND, Some("RepoNotFound"))
    );
    let missing = c
        .get(format!("{}/api/datasets/pf-tester/none", h.url()))
        .bearer_auth(TOKEN);
    assert_eq!(
        missing.send().await.expect("missing").status(),
        404,
        "hidden == missing"
    );
    let r = c
        .get(&info)
        .bearer_auth("hf_bogus")
        .send()
        .await
        .expect("bogus");
    assert_eq!(
        r.headers()["x-error-message"],
        "Invalid credentials in Authorization header"
    );
    assert_eq!(
        c.get(&info)
            .bearer_auth("hf_ro")
            .send()
            .await
            .expect("ro")
            .status(),
        200
    );
    let ndjson = format!("{}\n", header_line());
    let w = |t: &str| {
        c.post(format!("{info}/commit/main"))
            .bearer_auth(t)
            .body(ndjson.clone())
    };
    assert_eq!(w("hf_ro").send().await.expect("ro write").status(), 403);
    assert_eq!(
        w("hf_other").send().await.expect("other write").status(),
        404
    );
    let create_in = |org: &str| json!({"name": "x", "organization": org, "type": "model"});
    let mk = |t: &str, org: &str| {
        c.post(format!("{}/api/repos/create", h.url()))
            .bearer_auth(t)
            .json(&create_in(org))
    };
    assert_eq!(
        mk("hf_other", "pf-tester")
            .send()
            .await
            .expect("foreign")
            .status(),
        403
    );
    assert_eq!(
        mk("hf_other", "acme").send().await.expect("org").status(),
        200
    );
    let dup = mk("hf_other", "acme").send().await.expect("dup");
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let v: Value = dup.json().await.expect("json");
    assert_eq!(v["error"], "You already created this model repo");
    assert_eq!(v["url"], format!("{}/acme/x", h.url()));
}

#[tokio::test]
async fn dropping_the_server_closes_kept_alive_connections() {
    let (h, c) = hub().await;
    let url = format!("{}/api/whoami-v2", h.url());
    assert_eq!(
        c.get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("whoami")
            .status(),
        200
    );
    drop(h);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(c.get(&url).bearer_auth(TOKEN).send().await.is_err());
}
