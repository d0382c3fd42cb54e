//! A small Hugging Face Hub protocol server for tests: the subset of the Hub
//! HTTP API that the official `huggingface_hub` client (LFS path, Xet
//! disabled) and pf-registry's `hf://` backend use. In memory, per-repo
//! privacy, write tokens, LFS with sha256 verification, atomic NDJSON
//! commits, paginated tree listings, `resolve` downloads with the headers
//! `hf_hub_download` reads, and request counters for tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};

/// Files at least this large (or binary-looking) are LFS in preupload answers.
const LFS_THRESHOLD: u64 = 1 << 20;

#[derive(Clone, Debug)]
enum FileEntry {
    Regular(Bytes),
    Lfs { oid: String, size: u64 },
}

#[derive(Clone, Debug, Default)]
struct Commit {
    oid: String,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Default)]
struct Repo {
    private: bool,
    commits: Vec<Commit>,
    branches: HashMap<String, usize>,
}

/// Counters tests can assert on.
#[derive(Debug, Default)]
pub struct Stats {
    /// LFS objects uploaded (PUT).
    pub lfs_uploads: AtomicU64,
    /// Commits created.
    pub commits: AtomicU64,
    /// Tree listing pages served.
    pub tree_pages: AtomicU64,
    /// All requests.
    pub requests: AtomicU64,
}

struct Hub {
    repos: Mutex<HashMap<(String, String), Repo>>,
    lfs: Mutex<HashMap<String, Bytes>>,
    tokens: Vec<String>,
    page_size: usize,
    base: Mutex<String>,
    stats: Arc<Stats>,
}

/// A running server; stops when dropped.
pub struct HubServer {
    url: String,
    stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubServer {
    /// Starts on 127.0.0.1:<random> accepting `token` for writes, listing
    /// trees `page_size` entries per page.
    pub fn start(token: &str, page_size: usize) -> HubServer {
        Self::start_on(0, token, page_size)
    }

    /// Like [`start`](Self::start) on a given port (0 = random).
    pub fn start_on(port: u16, token: &str, page_size: usize) -> HubServer {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind hub test server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let stats = Arc::new(Stats::default());
        let hub = Arc::new(Hub {
            repos: Mutex::new(HashMap::new()),
            lfs: Mutex::new(HashMap::new()),
            tokens: vec![token.to_string()],
            page_size: page_size.max(1),
            base: Mutex::new(url.clone()),
            stats: stats.clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .fallback(handle)
                    .layer(DefaultBodyLimit::disable())
                    .with_state(hub);
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        HubServer {
            url,
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Base URL (use as `HF_ENDPOINT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Request counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn err(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, axum::Json(json!({"error": msg}))).into_response();
    r.headers_mut().insert(
        "x-error-message",
        HeaderValue::from_str(msg).unwrap_or(HeaderValue::from_static("error")),
    );
    r
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

fn token_of(h: &HeaderMap) -> Option<String> {
    h.get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

impl Hub {
    fn authed(&self, h: &HeaderMap) -> bool {
        token_of(h).is_some_and(|t| self.tokens.contains(&t))
    }
}

/// Splits `<type-prefix><owner>/<name>` off a path; returns (type, repo_id, rest).
fn split_repo(segs: &[&str]) -> Option<(String, String, usize)> {
    match segs.first()? {
        &"datasets" | &"spaces" if segs.len() >= 3 => Some((
            segs[0].trim_end_matches('s').to_string(),
            format!("{}/{}", segs[1], segs[2]),
            3,
        )),
        _ if segs.len() >= 2 => Some(("model".to_string(), format!("{}/{}", segs[0], segs[1]), 2)),
        _ => None,
    }
}

async fn handle(
    State(hub): State<Arc<Hub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hub.stats.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path().to_string();
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), pct_decode(v)))
        })
        .collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["api", "whoami-v2"]) => {
            if !hub.authed(&headers) {
                return err(
                    StatusCode::UNAUTHORIZED,
                    "Invalid credentials in Authorization header",
                );
            }
            axum::Json(json!({"type": "user", "name": "pf-tester", "fullname": "pf tester", "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}))
            .into_response()
        }
        (Method::POST, ["api", "repos", "create"]) => create_repo(&hub, &headers, &body),
        (_, ["api", kind, rest @ ..]) if kind.ends_with('s') && rest.len() >= 2 => {
            let repo_type = kind.trim_end_matches('s').to_string();
            let repo_id = format!("{}/{}", rest[0], rest[1]);
            api_repo(
                &hub,
                &method,
                &headers,
                &query,
                &body,
                &repo_type,
                &repo_id,
                &rest[2..],
            )
            .await
        }
        (Method::PUT, ["lfs-upload", oid]) => lfs_put(&hub, oid, &query, &body),
        (Method::POST, ["lfs-verify", oid]) => {
            if hub
                .lfs
                .lock()
                .map(|l| l.contains_key(*oid))
                .unwrap_or(false)
            {
                axum::Json(json!({"ok": true})).into_response()
            } else {
                err(StatusCode::NOT_FOUND, "object not found")
            }
        }
        _ => {
            // <prefix><owner>/<name>.git/info/lfs/objects/batch  or  <prefix><owner>/<name>/resolve/<rev>/<path>
            let Some((repo_type, mut repo_id, k)) = split_repo(&segs) else {
                return err(StatusCode::NOT_FOUND, "not found");
            };
            let rest = &segs[k..];
            if let Some(stripped) = repo_id.strip_suffix(".git") {
                repo_id = stripped.to_string();
                if method == Method::POST && rest == ["info", "lfs", "objects", "batch"] {
                    return lfs_batch(&hub, &headers, &repo_type, &repo_id, &body);
                }
            }
            if (method == Method::GET || method == Method::HEAD)
                && rest.len() >= 3
                && rest[0] == "resolve"
            {
                let rev = pct_decode(rest[1]);
                let file = rest[2..].join("/");
                return resolve(
                    &hub,
                    &headers,
                    &repo_type,
                    &repo_id,
                    &rev,
                    &file,
                    method == Method::HEAD,
                );
            }
            err(StatusCode::NOT_FOUND, "not found")
        }
    }
}

fn create_repo(hub: &Hub, headers: &HeaderMap, body: &[u8]) -> Response {
    if !hub.authed(headers) {
        return err(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return err(StatusCode::BAD_REQUEST, "invalid json");
    };
    let Some(name) = v["name"].as_str() else {
        return err(StatusCode::BAD_REQUEST, "name is required");
    };
    let owner = v["organization"]
        .as_str()
        .filter(|o| !o.is_empty())
        .unwrap_or("pf-tester");
    let repo_type = v["type"].as_str().unwrap_or("model").to_string();
    let id = if name.contains('/') {
        name.to_string()
    } else {
        format!("{owner}/{name}")
    };
    let mut repos = match hub.repos.lock() {
        Ok(r) => r,
        Err(_) => return err(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"),
    };
    let base = hub.base.lock().map(|b| b.clone()).unwrap_or_default();
    let prefix = match repo_type.as_str() {
        "dataset" => "datasets/",
        "space" => "spaces/",
        _ => "",
    };
    let url = format!("{base}/{prefix}{id}");
    if repos.contains_key(&(repo_type.clone(), id.clone())) {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": "You already created this repo", "url": url})),
        )
            .into_response();
    }
    let mut repo = Repo {
        // Newer clients send `visibility`, older ones `private`.
        private: v["private"].as_bool().unwrap_or(false)
            || v["visibility"].as_str() == Some("private"),
        ..Repo::default()
    };
    let initial = Commit {
        oid: sha256_hex(format!("init {id}").as_bytes())[..40].to_string(),
        files: BTreeMap::new(),
    };
    repo.commits.push(initial);
    repo.branches.insert("main".into(), 0);
    repos.insert((repo_type, id.clone()), repo);
    axum::Json(json!({"url": url, "name": id, "id": id})).into_response()
}

/// Looks a revision (branch or commit id) up.
fn commit_of<'a>(repo: &'a Repo, rev: &str) -> Option<&'a Commit> {
    if let Some(&i) = repo.branches.get(rev) {
        return repo.commits.get(i);
    }
    repo.commits.iter().find(|c| c.oid == rev)
}

#[allow(clippy::too_many_arguments)]
async fn api_repo(
    hub: &Hub,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
    repo_type: &str,
    repo_id: &str,
    rest: &[&str],
) -> Response {
    let authed = hub.authed(headers);
    let mut repos = match hub.repos.lock() {
        Ok(r) => r,
        Err(_) => return err(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"),
    };
    let key = (repo_type.to_string(), repo_id.to_string());
    let Some(repo) = repos.get_mut(&key) else {
        return err(StatusCode::NOT_FOUND, "Repository not found");
    };
    if repo.private && !authed {
        return err(StatusCode::UNAUTHORIZED, "Repository not found");
    }
    match (method.clone(), rest) {
        (Method::GET, []) | (Method::GET, ["revision", _]) => {
            let rev = rest
                .get(1)
                .map(|r| pct_decode(r))
                .unwrap_or_else(|| "main".into());
            let Some(c) = commit_of(repo, &rev) else {
                return err(StatusCode::NOT_FOUND, "Revision not found");
            };
            axum::Json(json!({"id": repo_id, "sha": c.oid, "private": repo.private,
                "siblings": c.files.keys().map(|p| json!({"rfilename": p})).collect::<Vec<_>>()}))
            .into_response()
        }
        (Method::POST, ["preupload", _rev]) => {
            if !authed {
                return err(StatusCode::UNAUTHORIZED, "Invalid credentials");
            }
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return err(StatusCode::BAD_REQUEST, "invalid json");
            };
            let files: Vec<Value> = v["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|f| {
                    let size = f["size"].as_u64().unwrap_or(0);
                    let sample = f["sample"]
                        .as_str()
                        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                        .unwrap_or_default();
                    let binary = sample.contains(&0);
                    let lfs = size >= LFS_THRESHOLD || binary;
                    json!({"path": f["path"], "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false})
                })
                .collect();
            axum::Json(
                json!({"files": files, "commitOid": repo.commits.last().map(|c| c.oid.clone())}),
            )
            .into_response()
        }
        (Method::POST, ["commit", rev]) => {
            if !authed {
                return err(StatusCode::UNAUTHORIZED, "Invalid credentials");
            }
            let rev = pct_decode(rev);
            commit(hub, repo, repo_type, repo_id, &rev, body)
        }
        (Method::GET, ["tree", rev, path @ ..]) => {
            let rev = pct_decode(rev);
            let Some(c) = commit_of(repo, &rev) else {
                return err(StatusCode::NOT_FOUND, "Revision not found");
            };
            hub.stats.tree_pages.fetch_add(1, Ordering::Relaxed);
            let prefix = path.join("/");
            let recursive = query
                .get("recursive")
                .is_some_and(|v| v == "true" || v == "1");
            let mut items: Vec<Value> = Vec::new();
            let mut dirs = std::collections::BTreeSet::new();
            for (p, f) in &c.files {
                let rel = if prefix.is_empty() {
                    p.as_str()
                } else if let Some(r) = p.strip_prefix(&format!("{prefix}/")) {
                    r
                } else {
                    continue;
                };
                // Directories along the way.
                let parts: Vec<&str> = rel.split('/').collect();
                for i in 1..parts.len() {
                    if !recursive && i > 1 {
                        break;
                    }
                    let d = if prefix.is_empty() {
                        parts[..i].join("/")
                    } else {
                        format!("{prefix}/{}", parts[..i].join("/"))
                    };
                    dirs.insert(d);
                }
                if !recursive && parts.len() > 1 {
                    continue;
                }
                items.push(match f {
                    FileEntry::Regular(b) => json!({"type": "file", "path": p, "size": b.len(), "oid": sha256_hex(b)[..40]}),
                    FileEntry::Lfs { oid, size } => json!({"type": "file", "path": p, "size": size,
                        "oid": oid[..40], "lfs": {"oid": oid, "size": size, "pointerSize": 134}}),
                });
            }
            for d in dirs {
                items.push(json!({"type": "directory", "path": d, "size": 0, "oid": sha256_hex(d.as_bytes())[..40]}));
            }
            items.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
            let start: usize = query
                .get("cursor")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let end = (start + hub.page_size).min(items.len());
            let page: Vec<Value> = items
                .get(start..end)
                .map(|s| s.to_vec())
                .unwrap_or_default();
            let mut resp = axum::Json(page).into_response();
            if end < items.len() {
                let base = hub.base.lock().map(|b| b.clone()).unwrap_or_default();
                let path_part = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("/{prefix}")
                };
                let next = format!(
                    "<{base}/api/{repo_type}s/{repo_id}/tree/{rev}{path_part}?recursive={recursive}&cursor={end}>; rel=\"next\""
                );
                if let Ok(v) = HeaderValue::from_str(&next) {
                    resp.headers_mut().insert("link", v);
                }
            }
            resp
        }
        _ => err(StatusCode::NOT_FOUND, "not found"),
    }
}

fn commit(
    hub: &Hub,
    repo: &mut Repo,
    repo_type: &str,
    repo_id: &str,
    rev: &str,
    body: &[u8],
) -> Response {
    let Some(&branch_idx) = repo.branches.get(rev) else {
        return err(StatusCode::NOT_FOUND, "Invalid rev id");
    };
    let mut files = repo.commits[branch_idx].files.clone();
    let lfs = match hub.lfs.lock() {
        Ok(l) => l,
        Err(_) => return err(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"),
    };
    let mut summary = String::new();
    for line in body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return err(StatusCode::BAD_REQUEST, "invalid ndjson line");
        };
        let val = &v["value"];
        match v["key"].as_str() {
            Some("header") => summary = val["summary"].as_str().unwrap_or("").to_string(),
            Some("file") => {
                let (Some(path), Some(content)) = (val["path"].as_str(), val["content"].as_str())
                else {
                    return err(StatusCode::BAD_REQUEST, "file needs path and content");
                };
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(content) else {
                    return err(StatusCode::BAD_REQUEST, "content is not base64");
                };
                files.insert(path.to_string(), FileEntry::Regular(Bytes::from(bytes)));
            }
            Some("lfsFile") => {
                let (Some(path), Some(oid), Some(size)) = (
                    val["path"].as_str(),
                    val["oid"].as_str(),
                    val["size"].as_u64(),
                ) else {
                    return err(StatusCode::BAD_REQUEST, "lfsFile needs path, oid, size");
                };
                match lfs.get(oid) {
                    Some(b) if b.len() as u64 == size => {}
                    _ => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            &format!("LFS object {oid} was not uploaded"),
                        )
                    }
                }
                files.insert(
                    path.to_string(),
                    FileEntry::Lfs {
                        oid: oid.to_string(),
                        size,
                    },
                );
            }
            Some("deletedFile") => {
                if let Some(p) = val["path"].as_str() {
                    files.remove(p);
                }
            }
            Some("deletedFolder") => {
                if let Some(p) = val["path"].as_str() {
                    let pre = format!("{}/", p.trim_end_matches('/'));
                    files.retain(|k, _| !k.starts_with(&pre));
                }
            }
            _ => return err(StatusCode::BAD_REQUEST, "unknown ndjson key"),
        }
    }
    let parent = repo.commits[branch_idx].oid.clone();
    let oid = sha256_hex(
        format!(
            "{parent}\n{summary}\n{}\n{}",
            repo.commits.len(),
            body.len()
        )
        .as_bytes(),
    )[..40]
        .to_string();
    repo.commits.push(Commit {
        oid: oid.clone(),
        files,
    });
    repo.branches
        .insert(rev.to_string(), repo.commits.len() - 1);
    hub.stats.commits.fetch_add(1, Ordering::Relaxed);
    let base = hub.base.lock().map(|b| b.clone()).unwrap_or_default();
    let prefix = if repo_type == "model" {
        String::new()
    } else {
        format!("{repo_type}s/")
    };
    axum::Json(
        json!({"commitUrl": format!("{base}/{prefix}{repo_id}/commit/{oid}"), "commitOid": oid,
        "commitMessage": summary, "pullRequestUrl": null}),
    )
    .into_response()
}

fn lfs_batch(
    hub: &Hub,
    headers: &HeaderMap,
    repo_type: &str,
    repo_id: &str,
    body: &[u8],
) -> Response {
    if !hub.authed(headers) {
        return err(StatusCode::UNAUTHORIZED, "Invalid credentials");
    }
    let exists = hub
        .repos
        .lock()
        .map(|r| r.contains_key(&(repo_type.to_string(), repo_id.to_string())))
        .unwrap_or(false);
    if !exists {
        return err(StatusCode::NOT_FOUND, "Repository not found");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return err(StatusCode::BAD_REQUEST, "invalid json");
    };
    let base = hub.base.lock().map(|b| b.clone()).unwrap_or_default();
    let stored = hub
        .lfs
        .lock()
        .map(|l| l.keys().cloned().collect::<std::collections::HashSet<_>>())
        .unwrap_or_default();
    let objects: Vec<Value> = v["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap_or("").to_string();
            let size = o["size"].as_u64().unwrap_or(0);
            if stored.contains(&oid) {
                json!({"oid": oid, "size": size})
            } else {
                json!({"oid": oid, "size": size, "authenticated": true, "actions": {
                    "upload": {"href": format!("{base}/lfs-upload/{oid}?size={size}"), "header": {}},
                    "verify": {"href": format!("{base}/lfs-verify/{oid}"), "header": {}},
                }})
            }
        })
        .collect();
    let mut r = axum::Json(json!({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}))
        .into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/vnd.git-lfs+json"),
    );
    r
}

fn lfs_put(hub: &Hub, oid: &str, query: &HashMap<String, String>, body: &Bytes) -> Response {
    if sha256_hex(body) != oid {
        return err(
            StatusCode::BAD_REQUEST,
            "sha256 of the body does not match the oid",
        );
    }
    if let Some(sz) = query.get("size").and_then(|s| s.parse::<usize>().ok()) {
        if sz != body.len() {
            return err(StatusCode::BAD_REQUEST, "size mismatch");
        }
    }
    if let Ok(mut l) = hub.lfs.lock() {
        l.insert(oid.to_string(), body.clone());
    }
    hub.stats.lfs_uploads.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK.into_response()
}

fn resolve(
    hub: &Hub,
    headers: &HeaderMap,
    repo_type: &str,
    repo_id: &str,
    rev: &str,
    file: &str,
    head: bool,
) -> Response {
    let repos = match hub.repos.lock() {
        Ok(r) => r,
        Err(_) => return err(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"),
    };
    let Some(repo) = repos.get(&(repo_type.to_string(), repo_id.to_string())) else {
        return err(StatusCode::NOT_FOUND, "Repository not found");
    };
    if repo.private && !hub.authed(headers) {
        return err(StatusCode::UNAUTHORIZED, "Repository not found");
    }
    let Some(c) = commit_of(repo, rev) else {
        return err(StatusCode::NOT_FOUND, "Revision not found");
    };
    let Some(f) = c.files.get(file) else {
        let mut r = err(StatusCode::NOT_FOUND, "Entry not found");
        r.headers_mut()
            .insert("x-error-code", HeaderValue::from_static("EntryNotFound"));
        return r;
    };
    let (bytes, etag, linked) = match f {
        FileEntry::Regular(b) => (b.clone(), sha256_hex(b)[..40].to_string(), None),
        FileEntry::Lfs { oid, size } => {
            let b = hub
                .lfs
                .lock()
                .ok()
                .and_then(|l| l.get(oid).cloned())
                .unwrap_or_default();
            (b, oid.clone(), Some((oid.clone(), *size)))
        }
    };
    let mut h = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set("x-repo-commit", c.oid.clone());
    set("etag", format!("\"{etag}\""));
    set("content-length", bytes.len().to_string());
    set("content-type", "application/octet-stream".into());
    if let Some((oid, size)) = linked {
        set("x-linked-etag", format!("\"{oid}\""));
        set("x-linked-size", size.to_string());
    }
    if head {
        (StatusCode::OK, h).into_response()
    } else {
        (StatusCode::OK, h, bytes).into_response()
    }
}
