//! The `hf://` transport: Hub API calls, LFS uploads and the one commit per
//! push (see the module docs of [`super`]).

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::http::{self, Classify, Failure};
use pf_registry_core::{
    layout, ByteStream, CommitRequest, Config, EncodedBlob, FetchedManifest, ImageRef, Location,
    RegistryError, Result, Transport, UploadedBlob,
};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};

use super::config::HfConfig;

const TREE_PAGE_LIMIT: usize = 100_000;

/// Transport for one Hub repository and revision.
pub struct HfTransport {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    /// Where the token came from, or where pf looked (for messages).
    token_source: String,
    repo_id: String,
    repo_type: String,
    revision: String,
    public: bool,
    pin: Option<Digest>,
    /// Blob paths known to be in the tree (from listing or earlier commits).
    present: Mutex<Option<HashSet<Digest>>>,
    /// Encoded (LFS) oid and size of blobs uploaded during this push.
    uploaded: Mutex<std::collections::HashMap<Digest, (Digest, u64)>>,
    /// Set once the repository is known to exist (created if needed).
    repo_ready: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for HfTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTransport")
            .field("endpoint", &self.endpoint)
            .field("repo_id", &self.repo_id)
            .field("revision", &self.revision)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HfTransport {
    /// A transport for an `hf://` reference.
    pub fn new(reference: &ImageRef, config: &Config) -> Result<HfTransport> {
        let Location::Hf {
            repo_type,
            repo_id,
            revision,
        } = &reference.location
        else {
            return Err(RegistryError::BadReference {
                input: reference.to_string(),
                reason: "not an hf:// reference".into(),
            });
        };
        let HfConfig {
            endpoint,
            token,
            token_source,
            repo_type,
            public,
        } = HfConfig::from_config(config, *repo_type)?;
        Ok(HfTransport {
            http: http::client(config, "hf")?,
            endpoint,
            token,
            token_source,
            repo_id: repo_id.clone(),
            repo_type,
            revision: revision.clone().unwrap_or_else(|| "main".into()),
            public,
            pin: reference.digest,
            present: Mutex::new(None),
            uploaded: Mutex::new(Default::default()),
            repo_ready: tokio::sync::OnceCell::new(),
        })
    }

    fn url_prefix(&self) -> &'static str {
        match self.repo_type.as_str() {
            "dataset" => "datasets/",
            "space" => "spaces/",
            _ => "",
        }
    }

    fn api(&self, rest: &str) -> String {
        format!(
            "{}/api/{}s/{}{rest}",
            self.endpoint, self.repo_type, self.repo_id
        )
    }

    fn rev_enc(&self) -> String {
        self.revision.replace('/', "%2F")
    }

    fn req(&self, m: Method, url: &str) -> RequestBuilder {
        let r = self.http.request(m, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn backend(&self) -> String {
        format!("hf {}", self.repo_id)
    }

    fn need_token(&self) -> Result<()> {
        if self.token.is_none() {
            return Err(RegistryError::Unauthorized {
                registry: format!("hf://{}{}", self.url_prefix(), self.repo_id),
                detail: format!(
                    "pushing to the Hugging Face Hub needs a write token: set HF_TOKEN or run \
                     `hf auth login` (pf looked in {})",
                    self.token_source
                ),
            });
        }
        Ok(())
    }

    /// Sends `rb`; a non-success answer becomes a typed error through the
    /// shared classifier (see the [`Classify`] impl below).
    async fn send(&self, rb: RequestBuilder, what: &str) -> Result<Response> {
        let resp = rb
            .send()
            .await
            .map_err(|e| http::send_error(self.backend(), what, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(http::classify(&Failure::read(resp).await, what, self))
    }

    async fn ensure_repo(&self) -> Result<()> {
        self.need_token()?;
        self.repo_ready
            .get_or_try_init(|| self.create_repo())
            .await
            .map(|_| ())
    }

    async fn create_repo(&self) -> Result<()> {
        let (org, name) = self.repo_id.split_once('/').unwrap_or(("", &self.repo_id));
        let body = json!({"name": name, "organization": org, "type": self.repo_type, "private": !self.public,
            "visibility": if self.public { "public" } else { "private" }});
        let create = self
            .req(Method::POST, &format!("{}/api/repos/create", self.endpoint))
            .json(&body);
        match self.send(create, "create repo").await {
            // 409: the repository exists already.
            Ok(_) | Err(RegistryError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists every blob in the revision's tree (paginated).
    async fn list_blobs(&self) -> Result<HashSet<Digest>> {
        let mut out = HashSet::new();
        let mut url = Some(self.api(&format!("/tree/{}/blobs?recursive=true", self.rev_enc())));
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            if pages > TREE_PAGE_LIMIT {
                return Err(RegistryError::invalid("hf tree listing", "too many pages"));
            }
            let resp = match self.send(self.req(Method::GET, &u), "tree listing").await {
                Ok(r) => r,
                Err(RegistryError::NotFound { .. }) => return Ok(out),
                Err(e) => return Err(e),
            };
            url = next_link(resp.headers());
            let items: Vec<Value> = resp
                .json()
                .await
                .map_err(|e| RegistryError::invalid("hf tree listing", e.to_string()))?;
            for it in items {
                if let Some(d) = it["path"].as_str().and_then(layout::blob_digest) {
                    out.insert(d);
                }
            }
        }
        Ok(out)
    }

    /// LFS upload of an encoded blob; no-op if the Hub already has the object.
    async fn lfs_upload(&self, blob: &EncodedBlob, oid: Digest) -> Result<()> {
        let oid = oid.hex();
        let batch = json!({
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": blob.encoded_size}],
            "hash_algo": "sha256",
            "ref": {"name": self.revision},
        });
        let url = format!(
            "{}/{}{}.git/info/lfs/objects/batch",
            self.endpoint,
            self.url_prefix(),
            self.repo_id
        );
        let resp = self
            .send(
                self.req(Method::POST, &url)
                    .header("Accept", "application/vnd.git-lfs+json")
                    .header("Content-Type", "application/vnd.git-lfs+json")
                    .body(batch.to_string()),
                "LFS batch",
            )
            .await?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| RegistryError::invalid("LFS batch response", e.to_string()))?;
        let obj = &v["objects"][0];
        if let Some(err) = obj.get("error") {
            return Err(RegistryError::permanent(
                self.backend(),
                format!("LFS batch: {err}"),
            ));
        }
        let Some(upload) = obj["actions"].get("upload") else {
            return Ok(()); // already stored
        };
        let href = upload["href"].as_str().ok_or_else(|| {
            RegistryError::invalid("LFS batch response", "upload action without href")
        })?;
        // The upload URL is pre-signed: never send our token to it.
        let mut put = self.http.put(href);
        if let Some(h) = upload["header"].as_object() {
            for (k, val) in h {
                if let Some(s) = val.as_str() {
                    put = put.header(k, s);
                }
            }
        }
        let body = match blob.as_bytes() {
            Some(b) => reqwest::Body::from(b.clone()),
            None => {
                reqwest::Body::wrap_stream(blob.stream(1 << 20).map(|r| r.map_err(|e| e.into_io())))
            }
        };
        self.send(
            put.header("Content-Length", blob.encoded_size).body(body),
            "LFS upload",
        )
        .await?;
        if let Some(verify) = obj["actions"].get("verify") {
            if let Some(vh) = verify["href"].as_str() {
                let mut rb = self
                    .req(Method::POST, vh)
                    .json(&json!({"oid": oid, "size": blob.encoded_size}));
                if let Some(h) = verify["header"].as_object() {
                    for (k, val) in h {
                        if let Some(s) = val.as_str() {
                            rb = rb.header(k, s);
                        }
                    }
                }
                self.send(rb, "LFS verify").await?;
            }
        }
        Ok(())
    }

    async fn fetch_file(&self, path: &str, limit: usize) -> Result<Option<Bytes>> {
        let rev = self.rev_enc();
        let url = format!(
            "{}/{}{}/resolve/{rev}/{path}",
            self.endpoint,
            self.url_prefix(),
            self.repo_id
        );
        let resp = match self.send(self.req(Method::GET, &url), path).await {
            Ok(r) => r,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(RegistryError::invalid(
                path,
                format!("larger than {limit} bytes"),
            ));
        }
        let b = resp
            .bytes()
            .await
            .map_err(|e| http::send_error(self.backend(), path, e))?;
        if b.len() > limit {
            return Err(RegistryError::invalid(
                path,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(Some(b))
    }
}

impl Classify for HfTransport {
    fn backend(&self) -> String {
        HfTransport::backend(self)
    }

    fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            registry: format!("hf://{}{}", self.url_prefix(), self.repo_id),
            detail: if self.token.is_none() {
                format!(
                    "authentication required: set HF_TOKEN or run `hf auth login` (pf looked in {})",
                    self.token_source
                )
            } else {
                format!(
                    "the token from {} was rejected or lacks access to this repository",
                    self.token_source
                )
            },
        }
    }

    /// The Hub's `X-Error-Message` header when it sent one, else the body's start.
    fn detail(&self, failure: &Failure) -> String {
        match failure.header("x-error-message") {
            Some(m) => m.chars().take(300).collect(),
            None => failure.body.chars().take(300).collect(),
        }
    }

    fn not_found(&self, what: &str, _: &str) -> RegistryError {
        RegistryError::not_found(format!(
            "{what} in hf://{}{}@{}",
            self.url_prefix(),
            self.repo_id,
            self.revision
        ))
    }
}

fn next_link(h: &reqwest::header::HeaderMap) -> Option<String> {
    let link = h.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[async_trait]
impl Transport for HfTransport {
    fn location(&self) -> String {
        format!(
            "hf://{}{}@{}",
            self.url_prefix(),
            self.repo_id,
            self.revision
        )
    }

    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.ensure_repo().await?;
        let cached = self.present.lock().ok().and_then(|g| g.clone());
        let present = match cached {
            Some(p) => p,
            None => {
                let p = self.list_blobs().await?;
                if let Ok(mut g) = self.present.lock() {
                    *g = Some(p.clone());
                }
                p
            }
        };
        Ok(digests
            .iter()
            .filter(|d| !present.contains(d))
            .copied()
            .collect())
    }

    fn max_batch(&self) -> usize {
        usize::MAX
    }

    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        self.ensure_repo().await?;
        let oid = blob.encoded_digest()?;
        self.lfs_upload(blob, oid).await?;
        if let Ok(mut u) = self.uploaded.lock() {
            u.insert(blob.digest, (oid, blob.encoded_size));
        }
        Ok(UploadedBlob {
            digest: blob.digest,
            encoded_digest: Some(oid),
            encoded_size: blob.encoded_size,
            handle: None,
        })
    }

    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        self.ensure_repo().await?;
        let d = req.manifest_digest;
        let file = |path: String, content: &[u8]| json!({"key": "file", "value": {"path": path, "content": STANDARD.encode(content), "encoding": "base64"}});
        let mut lines = vec![json!({"key": "header", "value": {
            "summary": format!("pf push {d}"),
            "description": "ProcessFork snapshot pushed by pf-registry",
        }})];
        for b in req.blobs {
            if let Some(u) = &b.uploaded {
                let oid = u.require_encoded_digest()?;
                lines.push(json!({"key": "lfsFile", "value": {
                    "path": layout::blob(&b.digest), "algo": "sha256",
                    "oid": oid.hex(), "size": u.encoded_size,
                }}));
            }
        }
        lines.push(file(layout::manifest_by_digest(&d), req.manifest));
        if let Some(sig) = req.signature {
            lines.push(file(layout::signature_by_digest(&d), sig));
            lines.push(file(layout::SIGNATURE.into(), sig));
        }
        // An older manifest.json.sig may stay after an unsigned push; readers
        // use it only when its envelope names the manifest they fetched.
        lines.push(file(layout::MANIFEST.into(), req.manifest));
        let mut body = String::new();
        for l in &lines {
            body.push_str(&l.to_string());
            body.push('\n');
        }
        let resp = self
            .send(
                self.req(
                    Method::POST,
                    &self.api(&format!("/commit/{}", self.rev_enc())),
                )
                .header("Content-Type", "application/x-ndjson")
                .body(body),
                "commit",
            )
            .await?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| RegistryError::invalid("commit response", e.to_string()))?;
        let oid = v["commitOid"]
            .as_str()
            .ok_or_else(|| RegistryError::invalid("commit response", "no commitOid"))?;
        if let Ok(mut g) = self.present.lock() {
            if let Some(p) = g.as_mut() {
                p.extend(req.blobs.iter().map(|b| b.digest));
            }
        }
        Ok(format!("hf://{}{}@{oid}", self.url_prefix(), self.repo_id))
    }

    async fn get_manifest(&self) -> Result<FetchedManifest> {
        let limit = pf_registry_core::manifest::MAX_MANIFEST_BYTES;
        let manifest = match self.pin {
            Some(pin) => match self
                .fetch_file(&layout::manifest_by_digest(&pin), limit)
                .await?
            {
                Some(m) => Some(m),
                None => self.fetch_file(layout::MANIFEST, limit).await?,
            },
            None => self.fetch_file(layout::MANIFEST, limit).await?,
        };
        let manifest = manifest
            .ok_or_else(|| RegistryError::not_found(format!("manifest at {}", self.location())))?;
        let d = Digest::of(&manifest);
        let signature = match self
            .fetch_file(&layout::signature_by_digest(&d), 64 * 1024)
            .await?
        {
            Some(s) => Some(s),
            // The fixed-name copy counts only if it was made for this manifest.
            None => self
                .fetch_file(layout::SIGNATURE, 64 * 1024)
                .await?
                .filter(|s| {
                    pf_sign::SignatureEnvelope::from_json_bytes(s)
                        .is_ok_and(|e| e.manifest_digest == d)
                }),
        };
        Ok(FetchedManifest {
            manifest,
            signature,
            pin_verified: false,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        let url = format!(
            "{}/{}{}/resolve/{}/{}",
            self.endpoint,
            self.url_prefix(),
            self.repo_id,
            self.rev_enc(),
            layout::blob(digest)
        );
        let resp = self
            .send(self.req(Method::GET, &url), &format!("blob {digest}"))
            .await?;
        let backend = self.backend();
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| http::send_error(backend.clone(), "reading blob", e))
        })))
    }
}
