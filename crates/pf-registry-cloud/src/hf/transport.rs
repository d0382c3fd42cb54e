//! The `hf://` transport: Hub API calls, tree listing and reads (see the
//! module docs of [`super`]; uploads in `upload`, commits in `commit`).

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::http::{self, Classify, Failure};
use pf_registry_core::ranges;
use pf_registry_core::{
    layout, ByteStream, CommitRequest, Config, EncodedBlob, FetchedManifest, ImageRef,
    LocalManifests, Location, RegistryError, Result, Transport, UploadedBlob,
};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use super::config::HfConfig;
use super::upload::Pending;

const TREE_PAGE_LIMIT: usize = 100_000;

/// Transport for one Hub repository and revision.
pub struct HfTransport {
    pub(super) http: reqwest::Client,
    pub(super) endpoint: String,
    token: Option<String>,
    /// Where the token came from, or where pf looked (for messages).
    token_source: String,
    pub(super) repo_id: String,
    pub(super) repo_type: String,
    pub(super) revision: String,
    pub(super) public: bool,
    pin: Option<Digest>,
    /// Most files per commit (`hf.commit_files`).
    pub(super) commit_files: usize,
    /// SDK of a created Space (`hf.space_sdk`).
    pub(super) space_sdk: String,
    /// Blob paths known to be in the tree (from listing or earlier commits).
    pub(super) present: Mutex<Option<HashSet<Digest>>>,
    /// Encoded blobs waiting for a full LFS batch (flushed at 256 or at commit).
    pub(super) pending: Mutex<Vec<Pending>>,
    /// The commit the next commit names as `parentCommit`: the revision's
    /// head when the push began, then each commit this push made.
    pub(super) parent: Mutex<Option<String>>,
    /// Set once this push's manifest commit landed: a blob uploaded after
    /// it (the engine's settle step) is committed at once. Cleared when a
    /// push writes its marker.
    pub(super) committed: std::sync::atomic::AtomicBool,
    /// Set once the repository is known to exist (created if needed).
    pub(super) repo_ready: tokio::sync::OnceCell<()>,
    /// The caller's retry policy, for the key operations of `lifecycle`.
    pub(super) retry: pf_registry_core::RetryPolicy,
    /// `HF_HUB_OFFLINE`: every request fails before it is sent.
    offline: bool,
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
            commit_files,
            space_sdk,
            offline,
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
            commit_files,
            space_sdk,
            present: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            parent: Mutex::new(None),
            committed: std::sync::atomic::AtomicBool::new(false),
            repo_ready: tokio::sync::OnceCell::new(),
            retry: config.retry,
            offline,
        })
    }

    pub(super) fn url_prefix(&self) -> &'static str {
        match self.repo_type.as_str() {
            "dataset" => "datasets/",
            "space" => "spaces/",
            _ => "",
        }
    }

    pub(super) fn api(&self, rest: &str) -> String {
        format!(
            "{}/api/{}s/{}{rest}",
            self.endpoint, self.repo_type, self.repo_id
        )
    }

    pub(super) fn rev_enc(&self) -> String {
        self.revision.replace('/', "%2F")
    }

    pub(super) fn req(&self, m: Method, url: &str) -> RequestBuilder {
        let r = self.http.request(m, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// The resolve URL of a stored blob at the revision.
    fn blob_url(&self, digest: &Digest) -> String {
        format!(
            "{}/{}{}/resolve/{}/{}",
            self.endpoint,
            self.url_prefix(),
            self.repo_id,
            self.rev_enc(),
            layout::blob(digest)
        )
    }

    pub(super) fn backend(&self) -> String {
        format!("hf {}", self.repo_id)
    }

    pub(super) fn need_token(&self) -> Result<()> {
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
    pub(super) async fn send(&self, rb: RequestBuilder, what: &str) -> Result<Response> {
        if self.offline {
            return Err(RegistryError::permanent(
                self.backend(),
                format!(
                    "{what}: HF_HUB_OFFLINE is set, so pf does not contact {} (only a pull \
                     of a commit id or @sha256: digest pulled before works offline, from the \
                     local store)",
                    self.endpoint
                ),
            ));
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| http::send_error(self.backend(), what, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(http::classify(&Failure::read(resp).await, what, self))
    }

    /// Lists every blob in the revision's tree (paginated).
    async fn list_blobs(&self) -> Result<HashSet<Digest>> {
        Ok(self
            .tree_items("blobs?recursive=true")
            .await?
            .iter()
            .filter_map(|it| it["path"].as_str().and_then(layout::blob_digest))
            .collect())
    }

    /// Every item of the revision's tree listing at `path_query` (a path
    /// plus query string), following the pagination links up to
    /// [`TREE_PAGE_LIMIT`] pages; a missing folder or revision is empty.
    pub(super) async fn tree_items(&self, path_query: &str) -> Result<Vec<Value>> {
        self.tree_items_at(&self.rev_enc(), path_query).await
    }

    /// [`tree_items`](Self::tree_items) at revision `rev` (percent-encoded).
    pub(super) async fn tree_items_at(&self, rev: &str, path_query: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut url = Some(self.api(&format!("/tree/{rev}/{path_query}")));
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
            out.extend(items);
        }
        Ok(out)
    }

    pub(super) async fn fetch_file(&self, path: &str, limit: usize) -> Result<Option<Bytes>> {
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

    /// Pulls keep their manifest locally; a commit id is an immutable revision.
    fn local_manifests(&self) -> Option<LocalManifests> {
        let r = &self.revision;
        let commit = r.len() == 40 && r.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        Some(LocalManifests::new(
            self.offline.then(|| "HF_HUB_OFFLINE".to_string()),
            commit.then(|| format!("hf {} {}", self.endpoint, self.location())),
        ))
    }

    fn keys(&self) -> Option<&dyn pf_registry_core::KeyStore> {
        Some(self)
    }

    fn keeps_history(&self) -> bool {
        true
    }

    async fn squash_history(&self) -> Result<()> {
        self.super_squash().await
    }

    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        self.ensure_repo().await?;
        let oid = blob.encoded_digest()?;
        let p = Pending {
            blob: blob.clone(),
            oid,
        };
        if self.committed.load(std::sync::atomic::Ordering::SeqCst) {
            // The settle step: the manifest already names this blob.
            self.recommit_blob(p).await?;
        } else {
            self.enqueue(p).await?;
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
        self.flush_pending().await?;
        self.commit_push(&req).await
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
        let resp = self
            .send(
                self.req(Method::GET, &self.blob_url(digest)),
                &format!("blob {digest}"),
            )
            .await?;
        let backend = self.backend();
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| http::send_error(backend.clone(), "reading blob", e))
        })))
    }

    /// `Range` on the resolve URL; the redirect to LFS storage is followed
    /// with the header kept (reqwest drops only credentials across hosts).
    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        ranges::check(digest, offset, len)?;
        let rb = self
            .req(Method::GET, &self.blob_url(digest))
            .header(reqwest::header::RANGE, ranges::header_value(offset, len));
        let resp = self.send(rb, &format!("blob {digest}")).await?;
        ranges::from_http(resp, self.backend(), digest, offset, len).await
    }
}
