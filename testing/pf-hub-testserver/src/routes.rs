//! Route parsing and the hub origin's JSON API.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::auth::{self, Caller};
use crate::storage::{self, Content, FileRec, Node, Repo, RepoType};
use crate::util::{is_sha256_hex, ok_json, pct_decode, pct_encode, HubError, HubResult};
use crate::Shared;
use crate::{history, lfs};

/// Largest JSON/NDJSON request body accepted (regular files travel base64).
const MAX_BODY: usize = 512 << 20;

type Query = HashMap<String, String>;

pub(crate) fn hub_router(sh: Arc<Shared>) -> Router {
    Router::new().fallback(hub).with_state(sh)
}

pub(crate) fn storage_router(sh: Arc<Shared>) -> Router {
    Router::new().fallback(storage_origin).with_state(sh)
}

enum Route {
    Whoami,
    Create,
    Stats,
    Info(RepoType, String, String),
    Preupload(RepoType, String, String),
    Commit(RepoType, String, String),
    Tree(RepoType, String, String, String),
    Refs(RepoType, String),
    Branch(RepoType, String, String),
    Tag(RepoType, String, String),
    Commits(RepoType, String, String),
    SuperSquash(RepoType, String, String),
    Batch(RepoType, String),
    Verify(RepoType, String),
    Resolve(RepoType, String, String, String),
    Unknown,
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Route::Whoami => "whoami",
            Route::Stats => "stats",
            Route::Create => "repo.create",
            Route::Info(..) => "repo.info",
            Route::Preupload(..) => "preupload",
            Route::Commit(..) => "commit",
            Route::Tree(..) => "tree",
            Route::Refs(..) => "refs",
            Route::Branch(..) => "branch.create",
            Route::Tag(..) => "tag.create",
            Route::Commits(..) => "commits",
            Route::SuperSquash(..) => "super_squash",
            Route::Batch(..) => "lfs.batch",
            Route::Verify(..) => "lfs.verify",
            Route::Resolve(..) => "resolve",
            Route::Unknown => "unknown",
        }
    }
}

/// A Hub user/org/repo name: `[A-Za-z0-9._-]{1,96}`, no `--`/`..`, no
/// leading or trailing `-`/`.`.
fn valid_name(s: &str) -> bool {
    (1..=96).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.contains("--")
        && !s.contains("..")
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

/// A file path inside a repo: relative, no empty/`.`/`..`/`.git` segments.
fn valid_path(p: &str) -> bool {
    !p.contains('\0') && p.split('/').all(|s| !["", ".", "..", ".git"].contains(&s))
}

/// Maps method + path to a route; percent-decodes revisions and paths.
fn parse(m: &Method, path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let dec = |s: &[&str]| -> Option<String> {
        let parts: Option<Vec<String>> = s.iter().map(|x| pct_decode(x)).collect();
        parts.map(|p| p.join("/"))
    };
    let (get, post) = (m == Method::GET, m == Method::POST);
    Some(match segs.as_slice() {
        ["api", "whoami-v2"] if get => Route::Whoami,
        ["api", "repos", "create"] if post => Route::Create,
        ["_testserver", "stats"] if get => Route::Stats,
        ["api", plural, owner, name, rest @ ..] => {
            let (k, id) = (RepoType::from_plural(plural)?, format!("{owner}/{name}"));
            match rest {
                [] if get => Route::Info(k, id, "main".into()),
                ["revision", r] if get => Route::Info(k, id, dec(&[r])?),
                ["preupload", r] if post => Route::Preupload(k, id, dec(&[r])?),
                ["commit", r] if post => Route::Commit(k, id, dec(&[r])?),
                ["tree", r, p @ ..] if get => Route::Tree(k, id, dec(&[r])?, dec(p)?),
                ["refs"] if get => Route::Refs(k, id),
                ["branch", b] if post => Route::Branch(k, id, dec(&[b])?),
                ["tag", r] if post => Route::Tag(k, id, dec(&[r])?),
                ["commits", r] if get => Route::Commits(k, id, dec(&[r])?),
                ["super-squash", b] if post => Route::SuperSquash(k, id, dec(&[b])?),
                _ => return None,
            }
        }
        _ => {
            let (k, rest) = match segs.split_first() {
                Some((&"datasets", r)) => (RepoType::Dataset, r),
                Some((&"spaces", r)) => (RepoType::Space, r),
                _ => (RepoType::Model, segs.as_slice()),
            };
            match rest {
                [owner, git, "info", "lfs", "objects", op] if post => {
                    let id = format!("{owner}/{}", git.strip_suffix(".git")?);
                    match *op {
                        "batch" => Route::Batch(k, id),
                        "verify" => Route::Verify(k, id),
                        _ => return None,
                    }
                }
                [owner, name, "resolve", r, p @ ..]
                    if (get || m == Method::HEAD) && !p.is_empty() =>
                {
                    Route::Resolve(k, format!("{owner}/{name}"), dec(&[r])?, dec(p)?)
                }
                _ => return None,
            }
        }
    })
}

async fn hub(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let route = parse(&parts.method, parts.uri.path()).unwrap_or(Route::Unknown);
    if !matches!(route, Route::Stats) {
        sh.count(route.name());
        if let Some(wait) = sh.over_rate_limit() {
            sh.count("rate_limited");
            let mut r =
                HubError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
            return r;
        }
    }
    let q: Query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let res = async {
        let caller = auth::identify(&sh.cfg.tokens, &parts.headers)?;
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| HubError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
        let head = parts.method == Method::HEAD;
        let sh = &*sh;
        let mut repos = sh.repos();
        let get = |k, id: &String| auth::readable(caller, repos.get(&(k, id.clone())));
        match &route {
            Route::Whoami => whoami(caller),
            Route::Create => create(sh, caller, &mut repos, &body),
            Route::Stats => ok_json(json!(sh.stats().clone())),
            Route::Info(k, id, rev) => info(get(*k, id)?, rev, &q),
            Route::Preupload(k, id, rev) => {
                let repo = get(*k, id)?;
                auth::check_write(caller, id)?;
                preupload(repo, rev, &body, sh.cfg.lfs_threshold)
            }
            Route::Tree(k, id, rev, path) => tree(sh, get(*k, id)?, rev, path, &q),
            Route::Refs(k, id) => refs(get(*k, id)?),
            Route::Commits(k, id, rev) => history::commits(get(*k, id)?, rev),
            Route::SuperSquash(k, id, branch) => {
                let repo = auth::writable(caller, repos.get_mut(&(*k, id.clone())))?;
                history::super_squash(sh, caller, repo, branch, &body)
            }
            Route::Resolve(k, id, rev, path) => {
                resolve(sh, get(*k, id)?, rev, path, &parts.headers, head)
            }
            Route::Batch(k, id) => lfs::batch(sh, caller, get(*k, id)?, &body),
            Route::Verify(k, id) => lfs::verify(caller, get(*k, id)?, &body),
            Route::Commit(k, id, rev) | Route::Branch(k, id, rev) | Route::Tag(k, id, rev) => {
                let repo = auth::writable(caller, repos.get_mut(&(*k, id.clone())))?;
                match &route {
                    Route::Commit(..) => commit(sh, caller, repo, rev, &body),
                    _ => create_ref(repo, matches!(route, Route::Tag(..)), rev, &body),
                }
            }
            Route::Unknown => Err(HubError::new(StatusCode::NOT_FOUND, "Not Found")),
        }
    }
    .await;
    res.unwrap_or_else(IntoResponse::into_response)
}

async fn storage_origin(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let segs: Vec<&str> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let (m, q) = (&parts.method, parts.uri.query());
    if parts.headers.contains_key(header::AUTHORIZATION) {
        // S3 refuses a pre-signed URL that also carries an Authorization header.
        sh.count("unknown");
        let msg = "InvalidArgument: Only one auth mechanism allowed";
        return HubError::bad(msg).into_response();
    }
    let res = match segs.as_slice() {
        ["lfs-upload", rest @ ..] if m == Method::PUT => {
            sh.count("lfs.upload");
            lfs::upload(&sh, rest, q, body).await
        }
        ["lfs-part", rest @ ..] if m == Method::PUT => {
            sh.count("lfs.part");
            lfs::upload_part(&sh, rest, q, body).await
        }
        ["lfs-complete", rest @ ..] if m == Method::POST => {
            sh.count("lfs.complete");
            lfs::complete(&sh, rest, q, body).await
        }
        ["lfs-cdn", oid] if m == Method::GET || m == Method::HEAD => {
            sh.count("lfs.download");
            lfs::download(&sh, oid, q, &parts.headers, m == Method::HEAD).await
        }
        _ => {
            sh.count("unknown");
            Err(HubError::new(StatusCode::NOT_FOUND, "NoSuchKey"))
        }
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) fn json_body(body: &[u8]) -> Result<Value, HubError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| HubError::bad(format!("invalid JSON: {e}")))
}

fn whoami(caller: Caller) -> HubResult {
    let t = caller.ok_or_else(auth::invalid_credentials)?;
    let orgs: Vec<Value> = t
        .orgs
        .iter()
        .map(|o| json!({"type": "org", "name": o}))
        .collect();
    let role = if t.write { "write" } else { "read" };
    ok_json(json!({
        "type": "user", "name": t.user, "fullname": t.user, "orgs": orgs,
        "auth": {"type": "access_token",
            "accessToken": {"displayName": "pf-hub-testserver", "role": role}},
    }))
}

fn repo_url(sh: &Shared, kind: RepoType, id: &str) -> String {
    format!("{}/{}{id}", sh.hub_url, kind.url_prefix())
}

/// `POST /api/repos/create` `{name, organization?, type?, private? | visibility?}`.
fn create(sh: &Shared, caller: Caller, repos: &mut crate::RepoMap, body: &[u8]) -> HubResult {
    let v = json_body(body)?;
    let user = caller.map(|t| t.user.as_str()).unwrap_or_default();
    let name = v["name"]
        .as_str()
        .ok_or_else(|| HubError::bad("name is required"))?;
    let org = v["organization"].as_str().filter(|o| !o.is_empty());
    let (ns, name) = name.split_once('/').unwrap_or((org.unwrap_or(user), name));
    let type_str = v["type"].as_str().unwrap_or("model");
    let kind = RepoType::parse(type_str).ok_or_else(|| HubError::bad("invalid repo type"))?;
    let id = format!("{ns}/{name}");
    auth::check_write(caller, &id)?;
    if kind == RepoType::Space && v["sdk"].as_str().is_none_or(str::is_empty) {
        return Err(HubError::bad(
            "sdk is required for a Space: gradio, streamlit, docker or static",
        ));
    }
    if !valid_name(ns) || !valid_name(name) {
        return Err(HubError::bad(format!("invalid repo name {id}")));
    }
    let url = repo_url(sh, kind, &id);
    if repos.contains_key(&(kind, id.clone())) {
        let msg = format!("You already created this {type_str} repo");
        let mut r = HubError::new(StatusCode::CONFLICT, &msg).into_response();
        *r.body_mut() = json!({"error": msg, "url": url}).to_string().into();
        return Ok(r);
    }
    let private = v["private"].as_bool().unwrap_or(false) || v["visibility"] == "private";
    let seq = sh.seq.fetch_add(1, Ordering::Relaxed);
    repos.insert(
        (kind, id.clone()),
        Repo::new(kind, id.clone(), private, user, seq),
    );
    ok_json(json!({"url": url, "name": id, "id": id}))
}

fn commit_at<'r>(repo: &'r Repo, rev: &str) -> Result<(usize, &'r storage::Commit), HubError> {
    repo.resolve(rev)
        .and_then(|i| Some((i, repo.commits.get(i)?)))
        .ok_or_else(|| HubError::revision_not_found(rev))
}

fn flag(q: &Query, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn lfs_json(oid: &str, size: u64, oid_key: &str) -> Value {
    let ptr = storage::lfs_pointer(oid, size).len();
    json!({"size": size, oid_key: oid, "pointerSize": ptr})
}

/// `GET /api/{type}s/{id}[/revision/{rev}][?blobs=true]`: repo info + siblings.
fn info(repo: &Repo, rev: &str, q: &Query) -> HubResult {
    let (_, c) = commit_at(repo, rev)?;
    let blobs = flag(q, "blobs");
    let siblings: Vec<Value> = (c.files.iter())
        .map(|(p, f)| match (&f.content, blobs) {
            (_, false) => json!({ "rfilename": p }),
            (Content::Regular(_), true) => {
                json!({"rfilename": p, "size": f.content.size(), "blobId": f.content.git_oid()})
            }
            (Content::Lfs { oid, size }, true) => json!({"rfilename": p, "size": size,
                "blobId": f.content.git_oid(), "lfs": lfs_json(oid, *size, "sha256")}),
        })
        .collect();
    let used: u64 = c.files.values().map(|f| f.content.size()).sum();
    ok_json(json!({
        "id": repo.id, "author": repo.id.split('/').next(), "sha": c.id, "private": repo.private,
        "gated": false, "disabled": false, "downloads": 0, "likes": 0, "tags": [],
        "createdAt": repo.created_at, "lastModified": c.date, "siblings": siblings,
        "usedStorage": used,
    }))
}

/// `POST /api/{type}s/{id}/preupload/{rev}` `{files: [{path, sample, size}]}`:
/// `lfs` for files over the threshold, matching an LFS `.gitattributes`
/// pattern or with a binary-looking sample; `oid` for paths already there.
fn preupload(repo: &Repo, rev: &str, body: &[u8], threshold: u64) -> HubResult {
    let v = json_body(body)?;
    let (idx, c) = commit_at(repo, rev)?;
    let attrs = repo.text_at(idx, ".gitattributes").unwrap_or_default();
    let files = v["files"]
        .as_array()
        .ok_or_else(|| HubError::bad("files must be a list"))?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (Some(path), Some(size)) = (f["path"].as_str(), f["size"].as_u64()) else {
            return Err(HubError::bad("each file needs path and size"));
        };
        let sample = base64::engine::general_purpose::STANDARD
            .decode(f["sample"].as_str().unwrap_or(""))
            .map_err(|_| HubError::bad("sample must be base64"))?;
        let lfs = size > threshold
            || storage::is_lfs_path(&attrs, path)
            || storage::looks_binary(&sample);
        let mode = if lfs { "lfs" } else { "regular" };
        let mut e = json!({"path": path, "uploadMode": mode, "shouldIgnore": false});
        if let Some(existing) = c.files.get(path) {
            e["oid"] = json!(existing.content.remote_oid());
        }
        out.push(e);
    }
    ok_json(json!({"files": out, "commitOid": c.id}))
}

/// `POST /api/{type}s/{id}/commit/{branch}`, NDJSON: a `header` line, then
/// `file` / `lfsFile` / `deletedFile` / `deletedFolder` lines. All-or-nothing.
fn commit(sh: &Shared, caller: Caller, repo: &mut Repo, rev: &str, body: &[u8]) -> HubResult {
    let branch = rev.strip_prefix("refs/heads/").unwrap_or(rev);
    let Some(&base) = repo.branches.get(branch) else {
        return Err(match repo.resolve(rev) {
            Some(_) => HubError::bad(format!("{rev} is not a branch")),
            None => HubError::revision_not_found(rev),
        });
    };
    let last_commit = repo.commits.len();
    let mut files = (*repo.commits[base].files).clone();
    let mut header: Option<&Value> = None;
    let lines: Vec<Value> = (body.split(|&b| b == b'\n'))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| HubError::bad(format!("invalid NDJSON line: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let ops = lines.iter().filter(|l| l["key"] != "header").count();
    if ops > sh.cfg.commit_file_limit {
        return Err(HubError::bad(format!(
            "Too many files in one commit: {ops} (at most {}); split it into several commits",
            sh.cfg.commit_file_limit
        )));
    }
    for (n, line) in lines.iter().enumerate() {
        let (key, val) = (line["key"].as_str().unwrap_or_default(), &line["value"]);
        let path = val["path"].as_str().unwrap_or_default();
        if key != "header" && !valid_path(path.trim_end_matches('/')) {
            return Err(HubError::bad(format!("invalid path {path:?}")));
        }
        let reject = |why: &str| {
            HubError::bad(format!(
                "Your push was rejected because {why}. Offending file: - {path}"
            ))
        };
        let content = match key {
            "header" if n == 0 => {
                header = Some(val);
                continue;
            }
            "file" => {
                let text = val["content"]
                    .as_str()
                    .ok_or_else(|| HubError::bad("file needs content"))?;
                let bytes = match val["encoding"].as_str().unwrap_or("base64") {
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|_| HubError::bad(format!("{path}: content is not base64")))?,
                    "utf-8" => text.as_bytes().to_vec(),
                    e => return Err(HubError::bad(format!("unknown encoding {e}"))),
                };
                if storage::looks_binary(&bytes[..bytes.len().min(512)]) {
                    return Err(reject("it contains binary files; use LFS for them"));
                }
                if bytes.len() as u64 > sh.cfg.lfs_threshold {
                    return Err(reject(
                        "it contains files over the size limit; use LFS for them",
                    ));
                }
                Content::Regular(Bytes::from(bytes))
            }
            "lfsFile" => {
                let oid = val["oid"]
                    .as_str()
                    .filter(|o| is_sha256_hex(o))
                    .unwrap_or_default();
                let size = repo.lfs.get(oid).copied();
                let algo_ok = val["algo"].as_str().filter(|a| *a != "sha256").is_none();
                match size {
                    Some(s) if algo_ok && val["size"].as_u64().filter(|v| *v != s).is_none() => {
                        Content::Lfs {
                            oid: oid.into(),
                            size: s,
                        }
                    }
                    _ => {
                        return Err(reject(
                            "an LFS pointer pointed to a file that does not exist",
                        ))
                    }
                }
            }
            "deletedFile" => {
                files
                    .remove(path)
                    .ok_or_else(|| entry_missing("file", path))?;
                continue;
            }
            "deletedFolder" => {
                let (prefix, before) = (format!("{}/", path.trim_end_matches('/')), files.len());
                files.retain(|k, _| !k.starts_with(&prefix));
                if files.len() == before {
                    return Err(entry_missing("folder", path));
                }
                continue;
            }
            k => return Err(HubError::bad(format!("unexpected line key {k:?}"))),
        };
        files.insert(
            path.into(),
            FileRec {
                content,
                last_commit,
            },
        );
    }
    let header = header.ok_or_else(|| HubError::bad("the first line must be the header"))?;
    check_folders(&files, sh.cfg.folder_entry_limit)?;
    let title = (header["summary"].as_str().filter(|s| !s.is_empty()))
        .ok_or_else(|| HubError::bad("summary is required"))?;
    if let Some(parent) = header["parentCommit"].as_str() {
        if repo.resolve(parent) != Some(base) {
            let msg = "A commit has happened since. Please refresh and try again.";
            return Err(HubError::new(StatusCode::PRECONDITION_FAILED, msg));
        }
    }
    let (author, seq) = (
        caller.map_or("", |t| t.user.as_str()),
        sh.seq.fetch_add(1, Ordering::Relaxed),
    );
    let message = header["description"].as_str().unwrap_or("");
    let c = repo.make_commit(Some(base), files, title, message, author, seq);
    let oid = c.id.clone();
    repo.commits.push(c);
    repo.branches.insert(branch.to_string(), last_commit);
    sh.stats().commits += 1;
    ok_json(json!({
        "success": true, "commitOid": oid, "commitMessage": title, "hookOutput": "",
        "pullRequestUrl": null,
        "commitUrl": format!("{}/commit/{oid}", repo_url(sh, repo.kind, &repo.id)),
    }))
}

/// Fails when a folder of the tree would hold more than `limit` entries
/// (files and subfolders directly inside it).
fn check_folders<V>(
    files: &std::collections::BTreeMap<String, V>,
    limit: usize,
) -> Result<(), HubError> {
    let mut entries: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for path in files.keys() {
        let mut rest = path.as_str();
        while let Some((dir, _)) = rest.rsplit_once('/') {
            entries.entry(dir).or_default().insert(rest);
            rest = dir;
        }
        entries.entry("").or_default().insert(rest);
    }
    match entries.iter().find(|(_, e)| e.len() > limit) {
        Some((dir, e)) => Err(HubError::bad(format!(
            "Your push was rejected because folder {dir:?} would hold {} entries (at most {limit})",
            e.len()
        ))),
        None => Ok(()),
    }
}

fn entry_missing(what: &str, path: &str) -> HubError {
    let msg = format!("A {what} with this name doesn't exist: {path}");
    HubError::coded(StatusCode::NOT_FOUND, "EntryNotFound", msg)
}

fn node_json(repo: &Repo, n: &Node, expand: bool) -> Value {
    let (mut v, last) = match n {
        Node::File(path, f) => {
            let (oid, size) = (f.content.git_oid(), f.content.size());
            let mut v = json!({"type": "file", "oid": oid, "size": size, "path": path});
            if let Content::Lfs { oid, size } = &f.content {
                v["lfs"] = lfs_json(oid, *size, "oid");
            }
            (v, f.last_commit)
        }
        Node::Dir {
            path,
            oid,
            last_commit,
        } => (
            json!({"type": "directory", "oid": oid, "size": 0, "path": path}),
            *last_commit,
        ),
    };
    if let Some(c) = repo.commits.get(last).filter(|_| expand) {
        v["lastCommit"] = json!({"id": c.id, "title": c.title, "date": c.date});
    }
    v
}

/// `GET /api/{type}s/{id}/tree/{rev}[/{path}]?recursive=&expand=&cursor=`,
/// `page_size` entries per page, `Link: <next>; rel="next"` while more remain.
fn tree(sh: &Shared, repo: &Repo, rev: &str, path: &str, q: &Query) -> HubResult {
    let (_, c) = commit_at(repo, rev)?;
    let nodes = storage::list_tree(&c.files, path, flag(q, "recursive"))
        .ok_or_else(|| HubError::entry_not_found(path))?;
    let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let end = start.saturating_add(sh.cfg.page_size).min(nodes.len());
    let items: Vec<Value> = (nodes.iter().skip(start).take(end.saturating_sub(start)))
        .map(|n| node_json(repo, n, flag(q, "expand")))
        .collect();
    sh.stats().tree_pages += 1;
    let mut r = axum::Json(items).into_response();
    if end < nodes.len() {
        let mut query: Vec<(&String, &String)> = q.iter().filter(|(k, _)| *k != "cursor").collect();
        query.sort();
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .append_pair("cursor", &end.to_string())
            .finish();
        let (kind, rev) = (repo.kind.as_str(), pct_encode(rev, false));
        let path = if path.is_empty() {
            String::new()
        } else {
            format!("/{}", pct_encode(path, true))
        };
        let link = format!(
            "<{}/api/{kind}s/{}/tree/{rev}{path}?{qs}>; rel=\"next\"",
            sh.hub_url, repo.id
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(r)
}

/// `GET /api/{type}s/{id}/refs`: branches and tags.
fn refs(repo: &Repo) -> HubResult {
    let list = |m: &std::collections::BTreeMap<String, usize>, kind: &str| -> Vec<Value> {
        let id = |i: usize| repo.commits.get(i).map(|c| c.id.clone());
        (m.iter())
            .map(|(n, &i)| {
                json!({"name": n, "ref": format!("refs/{kind}/{n}"), "targetCommit": id(i)})
            })
            .collect()
    };
    ok_json(
        json!({"branches": list(&repo.branches, "heads"), "converts": [],
        "tags": list(&repo.tags, "tags"), "pullRequests": []}),
    )
}

/// `POST /api/{type}s/{id}/branch/{name}` `{startingPoint?}` and
/// `POST /api/{type}s/{id}/tag/{rev}` `{tag, message?}`; 409 if it exists.
fn create_ref(repo: &mut Repo, is_tag: bool, arg: &str, body: &[u8]) -> HubResult {
    let v = json_body(body)?;
    let (name, start) = match is_tag {
        true => (v["tag"].as_str().unwrap_or_default(), arg),
        false => (arg, v["startingPoint"].as_str().unwrap_or("main")),
    };
    let bad = |c: char| c.is_whitespace() || "~^:?*[\\".contains(c);
    if name.is_empty() || name.starts_with("refs/") || name.contains(bad) || !valid_path(name) {
        return Err(HubError::bad(format!("invalid reference name {name:?}")));
    }
    let (idx, _) = commit_at(repo, start)?;
    let refs = if is_tag {
        &mut repo.tags
    } else {
        &mut repo.branches
    };
    if refs.contains_key(name) {
        return Err(HubError::new(
            StatusCode::CONFLICT,
            "Reference already exists",
        ));
    }
    refs.insert(name.to_string(), idx);
    ok_json(json!({}))
}

/// `GET|HEAD /{prefix}{id}/resolve/{rev}/{path}`: regular files inline (with
/// Range), LFS files as a 302 to the signed storage URL; both carry
/// `X-Repo-Commit` and an ETag, LFS adds `X-Linked-Etag`/`X-Linked-Size`.
fn resolve(
    sh: &Shared,
    repo: &Repo,
    rev: &str,
    path: &str,
    req: &HeaderMap,
    head: bool,
) -> HubResult {
    let (_, c) = commit_at(repo, rev)?;
    let commit = HeaderValue::from_str(&c.id).map_err(|_| HubError::bad("bad commit id"))?;
    let Some(f) = c.files.get(path) else {
        let mut r = HubError::entry_not_found(path).into_response();
        r.headers_mut().insert("x-repo-commit", commit);
        return Ok(r);
    };
    let bytes = match &f.content {
        Content::Regular(bytes) => bytes,
        Content::Lfs { oid, size } => {
            let mut h = HeaderMap::new();
            let pairs = [
                ("x-repo-commit", c.id.clone()),
                ("location", lfs::cdn_url(sh, oid)),
                ("x-linked-etag", format!("\"{oid}\"")),
                ("x-linked-size", size.to_string()),
                ("etag", format!("\"{}\"", f.content.git_oid())),
            ];
            for (k, v) in pairs {
                h.insert(
                    k,
                    HeaderValue::from_str(&v).map_err(|_| HubError::bad("bad header"))?,
                );
            }
            return Ok((StatusCode::FOUND, h).into_response());
        }
    };
    let len = bytes.len() as u64;
    let Some((status, start, count, mut h)) = lfs::span(req, len, &f.content.git_oid()) else {
        return Ok(lfs::unsatisfiable(len));
    };
    h.insert("x-repo-commit", commit);
    if head {
        return Ok((status, h).into_response());
    }
    Ok((
        status,
        h,
        bytes.slice(start as usize..(start + count) as usize),
    )
        .into_response())
}
