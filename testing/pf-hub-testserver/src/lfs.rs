//! Git LFS: the batch API (`basic` and, when configured, the Hub's
//! `multipart` transfer), verify, and the storage origin (a second listener
//! standing in for S3/CloudFront) that takes signed single-PUT or per-part
//! uploads and serves signed, range-capable downloads. Uploads
//! are checked (sha256 and size) while they stream to disk.

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
use crate::routes::json_body;
use crate::storage::{Repo, RepoType};
use crate::util::{is_sha256_hex, ok_json, sha256_hex, HubError, HubResult};
use crate::Shared;

/// Content-addressed LFS bytes in a temp dir owned by the server.
pub(crate) struct ObjectStore {
    dir: tempfile::TempDir,
    sizes: Mutex<HashMap<String, u64>>,
    secret: String,
    seq: AtomicU64,
}

fn io_err(e: io::Error) -> HubError {
    HubError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("storage: {e}"))
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

    fn size(&self, oid: &str) -> Option<u64> {
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(oid)
            .copied()
    }

    /// Streams `body` to disk, checking it hashes to `oid` and has `size` bytes.
    async fn receive(&self, body: Body, oid: &str, size: u64) -> Result<(), HubError> {
        let tmp = self.dir.path().join(format!(
            "upload-{}.tmp",
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let res = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
            let (mut hash, mut got) = (digest::Context::new(&digest::SHA256), 0u64);
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
            let actual = hex::encode(hash.finish());
            if got != size || actual != oid {
                let msg = format!(
                    "got {got} bytes with sha256 {actual}, expected {size} bytes with {oid}"
                );
                return Err(HubError::bad(msg));
            }
            file.sync_all().await.map_err(io_err)?;
            tokio::fs::rename(&tmp, self.path(oid))
                .await
                .map_err(io_err)
        }
        .await;
        if res.is_ok() {
            let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
            sizes.insert(oid.into(), size);
        } else {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res
    }
}

/// `POST /{prefix}{repo}.git/info/lfs/objects/batch`
/// `{operation, transfers?, objects: [{oid, size}], hash_algo?, ref?}`.
/// Objects already stored in this repo get no `actions` (nothing to upload).
pub(crate) fn batch(sh: &Shared, caller: Caller, repo: &Repo, body: &[u8]) -> HubResult {
    let req = json_body(body)?;
    let upload = match req["operation"].as_str() {
        Some("upload") => true,
        Some("download") => false,
        _ => return Err(HubError::bad("operation must be upload or download")),
    };
    if req["transfers"]
        .as_array()
        .is_some_and(|t| !t.iter().any(|t| t == "basic"))
    {
        return Err(HubError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "only basic transfers",
        ));
    }
    if req["hash_algo"].as_str().is_some_and(|a| a != "sha256") {
        return Err(HubError::new(
            StatusCode::CONFLICT,
            "only sha256 is supported",
        ));
    }
    if upload {
        auth::check_write(caller, &repo.id)?;
    }
    let offers_multipart = req["transfers"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "multipart"));
    let multipart = sh.cfg.multipart_chunk.filter(|_| offers_multipart);
    let objects = req["objects"]
        .as_array()
        .ok_or_else(|| HubError::bad("objects must be a list"))?;
    let (kind, id) = (repo.kind.as_str(), &repo.id);
    let out: Vec<Value> = (objects.iter())
        .map(|o| {
            let (oid, size) = (o["oid"].as_str().unwrap_or(""), o["size"].as_u64());
            let err = |code: u16, message: &str| {
                let error = json!({"code": code, "message": message});
                json!({"oid": oid, "size": size.unwrap_or(0), "error": error})
            };
            let Some(size) = size.filter(|_| is_sha256_hex(oid)) else {
                return err(
                    422,
                    "oid must be 64 hex digits and size a non-negative integer",
                );
            };
            let action = |name: &str, href: String| {
                json!({"oid": oid, "size": size, "authenticated": true,
                    "actions": {name: {"href": href, "expires_in": 3600}}})
            };
            match (upload, repo.lfs.get(oid)) {
                (_, Some(&s)) if s != size => err(422, "size does not match the stored object"),
                (true, Some(_)) => json!({"oid": oid, "size": size}),
                (false, Some(_)) => action("download", cdn_url(sh, oid)),
                (false, None) => err(404, "Object does not exist"),
                (true, None) => {
                    let sig = sh.objects.sign(&format!("up {kind} {id} {oid} {size}"));
                    let (hub, prefix) = (&sh.hub_url, repo.kind.url_prefix());
                    if let Some(chunk) = multipart.filter(|c| size > *c) {
                        return multipart_action(sh, kind, id, oid, size, chunk, &sig);
                    }
                    let put = format!("{}/lfs-upload/{kind}/{id}/{oid}", sh.storage_url);
                    let mut a = action("upload", format!("{put}?size={size}&sig={sig}"));
                    let verify = format!("{hub}/{prefix}{id}.git/info/lfs/objects/verify");
                    a["actions"]["verify"] = json!({"href": verify, "expires_in": 3600});
                    a
                }
            }
        })
        .collect();
    let mut r = ok_json(json!({"transfer": "basic", "objects": out, "hash_algo": "sha256"}))?;
    let ct = HeaderValue::from_static("application/vnd.git-lfs+json");
    r.headers_mut().insert(header::CONTENT_TYPE, ct);
    Ok(r)
}

/// The `multipart` answer for one object: `header` holds `chunk_size` and
/// one signed part URL per part (`00001`, ...); `href` is the completion URL.
fn multipart_action(
    sh: &Shared,
    kind: &str,
    id: &str,
    oid: &str,
    size: u64,
    chunk: u64,
    sig: &str,
) -> Value {
    let base = format!("{}/lfs-part/{kind}/{id}/{oid}", sh.storage_url);
    let mut header = serde_json::Map::new();
    header.insert("chunk_size".into(), json!(chunk.to_string()));
    for n in 1..=size.div_ceil(chunk) {
        let part_sig = sh.objects.sign(&format!("part {kind} {id} {oid} {n}"));
        header.insert(
            format!("{n:05}"),
            json!(format!("{base}/{n}?sig={part_sig}")),
        );
    }
    let complete = format!(
        "{}/lfs-complete/{kind}/{id}/{oid}?size={size}&sig={sig}",
        sh.storage_url
    );
    let (hub, prefix) = (
        &sh.hub_url,
        RepoType::parse(kind).map_or("", |k| k.url_prefix()),
    );
    json!({"oid": oid, "size": size, "authenticated": true, "actions": {
        "upload": {"href": complete, "header": header, "expires_in": 3600},
        "verify": {"href": format!("{hub}/{prefix}{id}.git/info/lfs/objects/verify"), "expires_in": 3600},
    }})
}

/// `PUT /lfs-part/{type}/{owner}/{name}/{oid}/{n}?sig=` (storage origin,
/// no auth): stores one part; answers with its ETag (the part's sha256).
pub(crate) async fn upload_part(
    sh: &Shared,
    segs: &[&str],
    q: Option<&str>,
    body: Body,
) -> HubResult {
    let [kind, owner, name, oid, n] = segs else {
        return Err(forbidden());
    };
    let sig = sh
        .objects
        .sign(&format!("part {kind} {owner}/{name} {oid} {n}"));
    let n: u64 = n.parse().map_err(|_| forbidden())?;
    if !is_sha256_hex(oid) || query_param(q, "sig") != Some(sig) {
        return Err(forbidden());
    }
    let bytes = axum::body::to_bytes(body, 1 << 30)
        .await
        .map_err(|e| HubError::bad(format!("reading part: {e}")))?;
    let etag = sha256_hex(&bytes);
    let path = sh.objects.dir.path().join(format!("{oid}.part{n}"));
    tokio::fs::write(&path, &bytes).await.map_err(io_err)?;
    let etag = HeaderValue::from_str(&format!("\"{etag}\"")).map_err(|_| forbidden())?;
    Ok(([(header::ETAG, etag)], "").into_response())
}

/// `POST /lfs-complete/{type}/{owner}/{name}/{oid}?size=&sig=` with
/// `{oid, parts: [{partNumber, etag}]}`: joins the parts in order (every
/// ETag must match its part) into the object, checked like a single PUT.
pub(crate) async fn complete(sh: &Shared, segs: &[&str], q: Option<&str>, body: Body) -> HubResult {
    let [kind, owner, name, oid] = segs else {
        return Err(forbidden());
    };
    let size: u64 = query_param(q, "size")
        .and_then(|s| s.parse().ok())
        .ok_or_else(forbidden)?;
    let id = format!("{owner}/{name}");
    let sig = sh.objects.sign(&format!("up {kind} {id} {oid} {size}"));
    let kind = RepoType::parse(kind).ok_or_else(forbidden)?;
    if !is_sha256_hex(oid) || query_param(q, "sig") != Some(sig) {
        return Err(forbidden());
    }
    let req = json_body(
        &axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|e| HubError::bad(format!("reading body: {e}")))?,
    )?;
    let parts = req["parts"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| HubError::bad("parts must be a non-empty list"))?;
    let mut joined = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if p["partNumber"].as_u64() != Some(i as u64 + 1) {
            return Err(HubError::bad("parts must be numbered 1, 2, ... in order"));
        }
        let path = sh.objects.dir.path().join(format!("{oid}.part{}", i + 1));
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|_| HubError::bad(format!("part {} was not uploaded", i + 1)))?;
        let etag = p["etag"].as_str().unwrap_or("").trim_matches('"');
        if etag != sha256_hex(&bytes) {
            return Err(HubError::bad(format!(
                "ETag of part {} does not match",
                i + 1
            )));
        }
        joined.extend_from_slice(&bytes);
    }
    sh.objects.receive(Body::from(joined), oid, size).await?;
    for i in 1..=parts.len() {
        let _ = tokio::fs::remove_file(sh.objects.dir.path().join(format!("{oid}.part{i}"))).await;
    }
    if let Some(repo) = sh.repos().get_mut(&(kind, id)) {
        repo.lfs.insert(oid.to_string(), size);
    }
    sh.count_upload(size);
    ok_json(json!({"success": true}))
}

/// The signed storage URL serving object `oid`.
pub(crate) fn cdn_url(sh: &Shared, oid: &str) -> String {
    format!(
        "{}/lfs-cdn/{oid}?sig={}",
        sh.storage_url,
        sh.objects.sign(&format!("down {oid}"))
    )
}

/// `POST /{prefix}{repo}.git/info/lfs/objects/verify` `{oid, size}`.
pub(crate) fn verify(caller: Caller, repo: &Repo, body: &[u8]) -> HubResult {
    let v = json_body(body)?;
    auth::check_write(caller, &repo.id)?;
    let oid = v["oid"].as_str().unwrap_or("");
    match repo.lfs.get(oid) {
        Some(&s) if Some(s) == v["size"].as_u64() => ok_json(json!({"success": true})),
        Some(_) => Err(HubError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "size mismatch",
        )),
        None => Err(HubError::new(
            StatusCode::NOT_FOUND,
            format!("Object {oid} not found"),
        )),
    }
}

fn query_param(q: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn forbidden() -> HubError {
    HubError::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
}

/// `PUT /lfs-upload/{type}/{owner}/{name}/{oid}?size=&sig=` (storage origin,
/// no auth: the signature is the credential). Answers with an `ETag`.
pub(crate) async fn upload(sh: &Shared, segs: &[&str], q: Option<&str>, body: Body) -> HubResult {
    let [kind, owner, name, oid] = segs else {
        return Err(forbidden());
    };
    let size: u64 = query_param(q, "size")
        .and_then(|s| s.parse().ok())
        .ok_or_else(forbidden)?;
    let (kind, id) = (
        RepoType::parse(kind).ok_or_else(forbidden)?,
        format!("{owner}/{name}"),
    );
    let sig = sh
        .objects
        .sign(&format!("up {} {id} {oid} {size}", kind.as_str()));
    if !is_sha256_hex(oid) || query_param(q, "sig") != Some(sig) {
        return Err(forbidden());
    }
    sh.objects.receive(body, oid, size).await?;
    if let Some(repo) = sh.repos().get_mut(&(kind, id)) {
        repo.lfs.insert(oid.to_string(), size);
    }
    sh.count_upload(size);
    let etag = HeaderValue::from_str(&format!("\"{oid}\"")).map_err(|_| forbidden())?;
    Ok(([(header::ETAG, etag)], "").into_response())
}

/// `GET|HEAD /lfs-cdn/{oid}?sig=` (storage origin, no auth, signed).
pub(crate) async fn download(
    sh: &Shared,
    oid: &str,
    q: Option<&str>,
    req: &HeaderMap,
    head: bool,
) -> HubResult {
    if !is_sha256_hex(oid) || query_param(q, "sig") != Some(sh.objects.sign(&format!("down {oid}")))
    {
        return Err(forbidden());
    }
    let len = sh
        .objects
        .size(oid)
        .ok_or_else(|| HubError::new(StatusCode::NOT_FOUND, "NoSuchKey"))?;
    let Some((status, start, count, h)) = span(req, len, oid) else {
        return Ok(unsatisfiable(len));
    };
    if head {
        return Ok((status, h).into_response());
    }
    let mut f = tokio::fs::File::open(sh.objects.path(oid))
        .await
        .map_err(io_err)?;
    f.seek(SeekFrom::Start(start)).await.map_err(io_err)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)));
    Ok((status, h, body).into_response())
}

/// Applies `Range: bytes=a-b | a- | -n` to a `len`-byte entity: (status,
/// start, count, headers with Content-Length, Content-Range, ETag,
/// Accept-Ranges); `None` if unsatisfiable. Multi-ranges get everything.
pub(crate) fn span(
    req: &HeaderMap,
    len: u64,
    etag: &str,
) -> Option<(StatusCode, u64, u64, HeaderMap)> {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    let spec = (req.get(header::RANGE).and_then(|v| v.to_str().ok()))
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .filter(|v| !v.contains(','))
        .and_then(|v| v.split_once('-'));
    let last = len.saturating_sub(1);
    let num = |s: &str| s.trim().parse::<u64>().ok();
    // None: serve everything; Some(None): unsatisfiable.
    let range = match spec.map(|(a, b)| (a.trim(), b.trim())) {
        None => None,
        Some(("", n)) => num(n).map(|n| (n > 0).then(|| (len.saturating_sub(n), last))),
        Some((a, "")) => num(a).map(|a| Some((a, last))),
        Some((a, b)) => num(a).zip(num(b)).map(|(a, b)| Some((a, b.min(last)))),
    };
    let Some(range) = range else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return Some((StatusCode::OK, 0, len, h));
    };
    let (start, end) = range.filter(|&(s, e)| s <= e && s < len)?;
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    Some((StatusCode::PARTIAL_CONTENT, start, end - start + 1, h))
}

/// `416` with `Content-Range: bytes */len`.
pub(crate) fn unsatisfiable(len: u64) -> Response {
    let cr =
        HeaderValue::from_str(&format!("bytes */{len}")).unwrap_or(HeaderValue::from_static("*"));
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(header::CONTENT_RANGE, cr)],
    )
        .into_response()
}
