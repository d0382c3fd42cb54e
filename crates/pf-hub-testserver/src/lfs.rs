//! Git LFS: the batch API (`basic` transfer), verify, and the "storage"
//! origin (a second listener standing in for S3/CloudFront) that takes
//! signed single-PUT uploads and serves signed, range-capable downloads.
//! Objects are verified (sha256 and size) while they stream to disk.

use std::collections::HashMap;
use std::io::{self, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ring::digest;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::auth::{self, Caller};
use crate::storage::RepoType;
use crate::util::{is_sha256_hex, sha256_hex, HubError, HubResult};
use crate::Shared;

/// Content-addressed LFS bytes on disk (a temp dir owned by the server).
pub(crate) struct ObjectStore {
    dir: tempfile::TempDir,
    sizes: Mutex<HashMap<String, u64>>,
    secret: String,
    seq: AtomicU64,
}

impl ObjectStore {
    pub fn new() -> io::Result<ObjectStore> {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| io::Error::other("no randomness"))?;
        Ok(ObjectStore {
            dir: tempfile::Builder::new().prefix("pf-hub-lfs").tempdir()?,
            sizes: Mutex::new(HashMap::new()),
            secret: hex::encode(key),
            seq: AtomicU64::new(0),
        })
    }

    /// A URL signature over `msg` (what makes storage URLs unguessable).
    pub fn sign(&self, msg: &str) -> String {
        sha256_hex(format!("{}\n{msg}", self.secret).as_bytes())[..32].to_string()
    }

    fn path(&self, oid: &str) -> PathBuf {
        self.dir.path().join(oid)
    }

    /// Size of a stored object.
    pub fn size(&self, oid: &str) -> Option<u64> {
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(oid)
            .copied()
    }

    /// Streams `body` to disk, checking it hashes to `oid` and has `size` bytes.
    async fn receive(&self, body: Body, oid: &str, size: u64) -> Result<(), HubError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.path().join(format!("upload-{n}.tmp"));
        let res = async {
            let io_err = |e: io::Error| {
                HubError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("storage: {e}"))
            };
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
            let mut hash = digest::Context::new(&digest::SHA256);
            let mut got = 0u64;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| HubError::bad(format!("reading body: {e}")))?;
                got += chunk.len() as u64;
                if got > size {
                    return Err(HubError::bad(format!("body is larger than {size} bytes")));
                }
                hash.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err)?;
            }
            if got != size {
                return Err(HubError::bad(format!("size mismatch: got {got} bytes, expected {size}")));
            }
            let actual = hex::encode(hash.finish());
            if actual != oid {
                return Err(HubError::bad(format!("sha256 mismatch: got {actual}, expected {oid}")));
            }
            file.sync_all().await.map_err(io_err)?;
            tokio::fs::rename(&tmp, self.path(oid)).await.map_err(io_err)
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        } else {
            self.sizes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(oid.to_string(), size);
        }
        res
    }
}

/// `POST /{prefix}{repo}.git/info/lfs/objects/batch`.
pub(crate) fn batch(sh: &Shared, caller: Caller, kind: RepoType, repo_id: &str, body: &[u8]) -> HubResult {
    let req: Value = serde_json::from_slice(body).map_err(|e| HubError::bad(format!("invalid JSON: {e}")))?;
    let upload = match req["operation"].as_str() {
        Some("upload") => true,
        Some("download") => false,
        _ => return Err(HubError::bad("operation must be upload or download")),
    };
    if let Some(t) = req["transfers"].as_array() {
        if !t.iter().any(|t| t == "basic") {
            return Err(HubError::new(StatusCode::UNPROCESSABLE_ENTITY, "only the basic transfer is supported"));
        }
    }
    if req["hash_algo"].as_str().is_some_and(|a| a != "sha256") {
        return Err(HubError::new(StatusCode::CONFLICT, "only sha256 is supported"));
    }
    let repos = sh.repos();
    let repo = repos.get(&(kind, repo_id.to_string()));
    let repo = auth::readable(caller, repo)?;
    if upload {
        auth::check_write(caller, repo_id)?;
    }
    let objects = req["objects"].as_array().ok_or_else(|| HubError::bad("objects must be a list"))?;
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        let (oid, size) = (o["oid"].as_str().unwrap_or(""), o["size"].as_u64());
        let err = |code: u16, msg: &str| json!({"oid": oid, "size": size.unwrap_or(0), "error": {"code": code, "message": msg}});
        let Some(size) = size.filter(|_| is_sha256_hex(oid)) else {
            out.push(err(422, "oid must be 64 hex digits and size a non-negative integer"));
            continue;
        };
        let stored = repo.lfs.get(oid).copied();
        out.push(match (upload, stored) {
            (_, Some(s)) if s != size => err(422, "size does not match the stored object"),
            // Already stored in this repository: no actions = nothing to upload.
            (true, Some(_)) => json!({"oid": oid, "size": size}),
            (true, None) => {
                let sig = sh.objects.sign(&format!("up {} {repo_id} {oid} {size}", kind.as_str()));
                json!({"oid": oid, "size": size, "authenticated": true, "actions": {
                    "upload": {"href": format!("{}/lfs-upload/{}/{repo_id}/{oid}?size={size}&sig={sig}", sh.storage_url, kind.as_str()), "expires_in": 3600},
                    "verify": {"href": format!("{}/{}{repo_id}.git/info/lfs/objects/verify", sh.hub_url, kind.url_prefix()), "expires_in": 3600},
                }})
            }
            (false, Some(_)) => json!({"oid": oid, "size": size, "authenticated": true, "actions": {
                "download": {"href": cdn_url(sh, oid), "expires_in": 3600},
            }}),
            (false, None) => err(404, "Object does not exist"),
        });
    }
    let mut r = axum::Json(json!({"transfer": "basic", "objects": out, "hash_algo": "sha256"})).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.git-lfs+json"));
    Ok(r)
}

/// The signed storage URL serving object `oid`.
pub(crate) fn cdn_url(sh: &Shared, oid: &str) -> String {
    format!("{}/lfs-cdn/{oid}?sig={}", sh.storage_url, sh.objects.sign(&format!("down {oid}")))
}

/// `POST /{prefix}{repo}.git/info/lfs/objects/verify` with `{oid, size}`.
pub(crate) fn verify(sh: &Shared, caller: Caller, kind: RepoType, repo_id: &str, body: &[u8]) -> HubResult {
    let v: Value = serde_json::from_slice(body).map_err(|e| HubError::bad(format!("invalid JSON: {e}")))?;
    let repos = sh.repos();
    let repo = auth::readable(caller, repos.get(&(kind, repo_id.to_string())))?;
    auth::check_write(caller, repo_id)?;
    let oid = v["oid"].as_str().unwrap_or("");
    match repo.lfs.get(oid) {
        Some(&s) if Some(s) == v["size"].as_u64() => Ok(axum::Json(json!({"success": true})).into_response()),
        Some(_) => Err(HubError::new(StatusCode::UNPROCESSABLE_ENTITY, "size mismatch")),
        None => Err(HubError::new(StatusCode::NOT_FOUND, format!("Object {oid} not found"))),
    }
}

fn query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect()
}

fn forbidden() -> HubError {
    HubError::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
}

/// `PUT /lfs-upload/{type}/{owner}/{name}/{oid}?size=&sig=` on the storage origin.
pub(crate) async fn upload(sh: &Shared, segs: &[&str], q: Option<&str>, body: Body) -> HubResult {
    let [kind, owner, name, oid] = segs else {
        return Err(HubError::new(StatusCode::NOT_FOUND, "no such upload"));
    };
    let q = query(q);
    let size: u64 = q.get("size").and_then(|s| s.parse().ok()).ok_or_else(|| HubError::bad("size missing"))?;
    let repo_id = format!("{owner}/{name}");
    let kind = RepoType::parse(kind).ok_or_else(forbidden)?;
    if !is_sha256_hex(oid)
        || q.get("sig") != Some(&sh.objects.sign(&format!("up {} {repo_id} {oid} {size}", kind.as_str())))
    {
        return Err(forbidden());
    }
    sh.objects.receive(body, oid, size).await?;
    if let Some(repo) = sh.repos().get_mut(&(kind, repo_id)) {
        repo.lfs.insert(oid.to_string(), size);
    }
    sh.count_upload(size);
    let mut r = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{oid}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

/// `GET|HEAD /lfs-cdn/{oid}?sig=` on the storage origin (no auth, signed).
pub(crate) async fn download(sh: &Shared, oid: &str, q: Option<&str>, headers: &HeaderMap, head: bool) -> HubResult {
    if !is_sha256_hex(oid) || query(q).get("sig") != Some(&sh.objects.sign(&format!("down {oid}"))) {
        return Err(forbidden());
    }
    let len = sh.objects.size(oid).ok_or_else(|| HubError::new(StatusCode::NOT_FOUND, "NoSuchKey"))?;
    let (status, start, count, mut h) = match span_headers(headers, len, oid) {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if head {
        return Ok((status, h).into_response());
    }
    let io_err = |e: io::Error| HubError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("storage: {e}"));
    let mut f = tokio::fs::File::open(sh.objects.path(oid)).await.map_err(io_err)?;
    f.seek(SeekFrom::Start(start)).await.map_err(io_err)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)));
    Ok((status, h, body).into_response())
}

/// Applies a `Range: bytes=a-b | a- | -n` header to a `len`-byte entity:
/// (status, start, count, headers with Content-Length/Content-Range/ETag).
/// Multi-range requests get the whole entity; unsatisfiable ranges a 416.
pub(crate) fn span_headers(
    h: &HeaderMap,
    len: u64,
    etag: &str,
) -> Result<(StatusCode, u64, u64, HeaderMap), Response> {
    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        out.insert(header::ETAG, v);
    }
    let spec = h
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .filter(|v| !v.contains(','))
        .and_then(|v| v.split_once('-'));
    let last = len.saturating_sub(1);
    // Outer None: no (usable) Range header; inner None: unsatisfiable.
    let span = match spec.map(|(a, b)| (a.trim(), b.trim())) {
        None => None,
        Some((a, "")) => a.parse::<u64>().ok().map(|s| Some((s, last))),
        Some(("", n)) => n
            .parse::<u64>()
            .ok()
            .map(|n| (n > 0).then(|| (len.saturating_sub(n), last))),
        Some((a, b)) => a
            .parse::<u64>()
            .ok()
            .zip(b.parse::<u64>().ok())
            .map(|(s, e)| Some((s, e.min(last)))),
    };
    let Some(span) = span else {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return Ok((StatusCode::OK, 0, len, out));
    };
    match span {
        Some((start, end)) if len > 0 && start <= end && start < len => {
            let count = end - start + 1;
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                out.insert(header::CONTENT_RANGE, v);
            }
            Ok((StatusCode::PARTIAL_CONTENT, start, count, out))
        }
        _ => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Err(r)
        }
    }
}
