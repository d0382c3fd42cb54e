//! The `oci://` backend: pf images as OCI 1.1 artifacts in any registry that
//! speaks the distribution spec (see [`layout`] for the artifact layout).
//!
//! A thin [`Transport`]: HEAD dedup, monolithic uploads for small blobs and
//! chunked PATCH uploads for large ones (memory bounded by one chunk),
//! cross-repo mounts, manifests PUT last, pulls by tag or digest.
//!
//! Modules: `client` (one registry host: scheme choice, auth challenges,
//! the registry's error codes on top of the shared `pf_registry_core::http`
//! classifier), `auth` (credentials from env and docker config), `layout`
//! (the artifact and image-index layout), `dedup` (HEAD checks and
//! cross-repository mounts), `upload` (monolithic and chunked uploads),
//! `cosign` (cosign-verifiable signatures of pushed images).
//!
//! Opening makes no request (the first push or pull does), so options and
//! references are checked offline:
//!
//! ```
//! use pf_registry_core::{Config, ImageRef, RegistryError};
//! let r = ImageRef::parse("oci://registry.example.com/team/app:v1").unwrap();
//! let mut config = Config::default();
//! config.options.insert("oci.max_layers".into(), "500".into());
//! let _registry = pf_registry_oci::open(&r, &config).unwrap();
//! config.options.insert("oci.max_layer".into(), "500".into());
//! let Err(err) = pf_registry_oci::open(&r, &config) else {
//!     panic!("a mistyped option was accepted");
//! };
//! assert!(matches!(err, RegistryError::BadOption { .. }), "{err}");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod cosign;
mod dedup;
pub mod layout;
mod ranged;
mod remove;
mod upload;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use pf_digest::Digest;
use pf_registry_core::{
    ByteStream, CommitRequest, Config, EncodedBlob, Engine, FetchedManifest, ImageRef, Location,
    RegistryError, Result, Transport, UploadedBlob,
};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;

use crate::client::Client;
use crate::layout::{
    Descriptor, OciDoc, StoredBlob, ARTIFACT_TYPE, INDEX_MT, MANIFEST_MT, SIGNATURE_MT,
};

/// Every option key the `oci://` backend takes: `oci.max_layers` (layers
/// per manifest before the image becomes an index of part manifests,
/// default 1000), `oci.mount_from` (a repository of the same registry to
/// mount blobs from).
pub const OPTIONS: &[&str] = &["oci.max_layers", "oci.mount_from"];

/// Encoded blobs up to this size are uploaded in one PUT.
pub const MONOLITHIC_LIMIT: u64 = 16 << 20;
/// Chunk size for PATCH uploads of larger blobs.
pub const CHUNK_SIZE: usize = 8 << 20;
const MAX_SIGNATURE: usize = 64 * 1024;
/// Read size when streaming a spooled blob into a PUT body.
const STREAM_CHUNK: usize = 256 << 10;

/// Opens the `oci://` reference as a registry on the shared engine.
pub fn open(reference: &ImageRef, config: &Config) -> Result<Engine<OciTransport>> {
    Ok(Engine::new(
        OciTransport::new(reference, config)?,
        config.clone(),
        reference.digest,
    ))
}

/// Transport for one repository (and tag) of an OCI registry.
pub struct OciTransport {
    client: Arc<Client>,
    repo: String,
    tag: String,
    pin: Option<Digest>,
    max_layers: usize,
    mount_from: Option<String>,
    concurrency: usize,
    known: Mutex<HashMap<Digest, StoredBlob>>,
    loaded: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for OciTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciTransport")
            .field("client", &self.client)
            .field("repo", &self.repo)
            .field("tag", &self.tag)
            .finish()
    }
}

fn headers(pairs: &[(reqwest::header::HeaderName, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k.clone(), v);
        }
    }
    h
}

const NO_BODY: &(dyn Fn() -> Option<reqwest::Body> + Send + Sync) = &|| None;

impl OciTransport {
    /// A transport for an `oci://` reference. Options: `oci.max_layers`
    /// (layers per manifest, default 1000), `oci.mount_from` (a repository
    /// of the same registry to mount blobs from).
    pub fn new(reference: &ImageRef, config: &Config) -> Result<OciTransport> {
        let Location::Oci {
            registry,
            repository,
            tag,
        } = &reference.location
        else {
            return Err(RegistryError::BadReference {
                input: reference.to_string(),
                reason: "not an oci:// reference".into(),
            });
        };
        config.check_options("oci", OPTIONS)?;
        let max_layers = config
            .option("oci.max_layers")
            .and_then(|v| v.parse().ok())
            .unwrap_or(layout::DEFAULT_MAX_LAYERS);
        Ok(OciTransport {
            client: Arc::new(Client::new(registry, config)?),
            repo: repository.clone(),
            tag: tag.clone().unwrap_or_else(|| "latest".into()),
            pin: reference.digest,
            max_layers,
            mount_from: config.option("oci.mount_from").cloned(),
            concurrency: config.concurrency.clamp(1, 64),
            known: Mutex::new(HashMap::new()),
            loaded: tokio::sync::OnceCell::new(),
        })
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repo)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repo)
    }

    /// Tags of the repository (follows `Link: <...>; rel="next"` pagination).
    pub async fn list_tags(&self) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        let mut next = Some(format!("/v2/{}/tags/list", self.repo));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(RegistryError::invalid("tag list", "too many pages"));
            }
            let resp = self
                .client
                .send(
                    Method::GET,
                    &path,
                    &self.pull_scope(),
                    HeaderMap::new(),
                    NO_BODY,
                )
                .await?;
            next = next_link(&resp)?;
            let v: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| RegistryError::invalid("tag list", e.to_string()))?;
            if let Some(a) = v["tags"].as_array() {
                tags.extend(a.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
        }
        Ok(tags)
    }

    async fn read_limited(
        &self,
        resp: reqwest::Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes> {
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(RegistryError::invalid(
                what,
                format!("larger than {limit} bytes"),
            ));
        }
        let mut out = BytesMut::new();
        let mut s = resp.bytes_stream();
        while let Some(chunk) = s.next().await {
            let chunk =
                chunk.map_err(|e| RegistryError::transient(self.location(), e.to_string()))?;
            if out.len() + chunk.len() > limit {
                return Err(RegistryError::invalid(
                    what,
                    format!("larger than {limit} bytes"),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Fetches a manifest or index by tag or digest; verifies digest references.
    async fn fetch_doc(&self, reference: &str) -> Result<(Bytes, OciDoc)> {
        let h = headers(&[(ACCEPT, format!("{MANIFEST_MT}, {INDEX_MT}"))]);
        let resp = self
            .client
            .send(
                Method::GET,
                &format!("/v2/{}/manifests/{reference}", self.repo),
                &self.pull_scope(),
                h,
                NO_BODY,
            )
            .await?;
        // Registries name the manifest they send; check it (tags are not content-addressed).
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v.trim()).ok());
        let bytes = self
            .read_limited(
                resp,
                pf_registry_core::manifest::MAX_MANIFEST_BYTES,
                "OCI manifest",
            )
            .await?;
        if let Some(d) = announced {
            let actual = Digest::of(&bytes);
            if actual != d {
                return Err(RegistryError::Integrity {
                    what: format!(
                        "OCI manifest {}/{}:{reference} (Docker-Content-Digest)",
                        self.client.host(),
                        self.repo
                    ),
                    expected: d,
                    actual,
                });
            }
        }
        if let Ok(d) = Digest::parse(reference) {
            let actual = Digest::of(&bytes);
            if actual != d {
                return Err(RegistryError::Integrity {
                    what: format!("OCI manifest {}/{}", self.client.host(), self.repo),
                    expected: d,
                    actual,
                });
            }
        }
        let doc: OciDoc = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::invalid("OCI manifest", e.to_string()))?;
        Ok((bytes, doc))
    }

    async fn fetch_small_blob(&self, d: &Descriptor, limit: usize, what: &str) -> Result<Bytes> {
        let resp = self
            .client
            .send(
                Method::GET,
                &format!("/v2/{}/blobs/{}", self.repo, d.digest),
                &self.pull_scope(),
                HeaderMap::new(),
                NO_BODY,
            )
            .await?;
        let b = self.read_limited(resp, limit, what).await?;
        let actual = Digest::of(&b);
        if actual != d.digest {
            return Err(RegistryError::Integrity {
                what: what.into(),
                expected: d.digest,
                actual,
            });
        }
        Ok(b)
    }

    /// Loads a tag's (or digest's) image: all part manifests flattened into
    /// (head manifest, every layer).
    async fn load_image(&self, reference: &str) -> Result<(OciDoc, Vec<Descriptor>)> {
        let (_, top) = self.fetch_doc(reference).await?;
        if top.media_type == INDEX_MT || !top.manifests.is_empty() {
            if top.manifests.len() > 100_000 {
                return Err(RegistryError::invalid("OCI index", "too many manifests"));
            }
            let refs: Vec<String> = top.manifests.iter().map(|m| m.digest.to_string()).collect();
            let parts: Vec<OciDoc> = futures::stream::iter(refs)
                .map(|r| async move { self.fetch_doc(&r).await.map(|(_, d)| d) })
                .buffered(8)
                .try_collect()
                .await?;
            let head = parts
                .iter()
                .find(|p| {
                    p.config
                        .as_ref()
                        .is_some_and(|c| c.media_type == ARTIFACT_TYPE)
                })
                .cloned()
                .ok_or_else(|| {
                    RegistryError::invalid("OCI index", "no part carries the pf manifest")
                })?;
            let layers = parts.into_iter().flat_map(|p| p.layers).collect();
            Ok((head, layers))
        } else {
            let layers = top.layers.clone();
            Ok((top, layers))
        }
    }

    async fn put_manifest(&self, reference: &str, bytes: Vec<u8>, media_type: &str) -> Result<()> {
        let bytes = Bytes::from(bytes);
        let body = move || Some(reqwest::Body::from(bytes.clone()));
        self.client
            .send(
                Method::PUT,
                &format!("/v2/{}/manifests/{reference}", self.repo),
                &self.push_scope(),
                headers(&[(CONTENT_TYPE, media_type.into())]),
                &body,
            )
            .await?;
        Ok(())
    }
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(resp: &reqwest::Response) -> Result<Option<String>> {
    let Some(link) = resp.headers().get("link").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    for part in link.split(',') {
        let (target, params) = part.split_once(';').unwrap_or((part, ""));
        if !params.replace(' ', "").contains("rel=\"next\"") {
            continue;
        }
        let target = target.trim().trim_start_matches('<').trim_end_matches('>');
        let url = resp
            .url()
            .join(target)
            .map_err(|e| RegistryError::invalid("tag list Link header", e.to_string()))?;
        return Ok(Some(url.to_string()));
    }
    Ok(None)
}

#[async_trait]
impl Transport for OciTransport {
    fn location(&self) -> String {
        format!("oci://{}/{}:{}", self.client.host(), self.repo, self.tag)
    }

    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.ensure_loaded().await?;
        let answers: Vec<Option<Digest>> = futures::stream::iter(digests.iter().copied())
            .map(|d| async move {
                self.present_or_mounted(d)
                    .await
                    .map(|ok| (!ok).then_some(d))
            })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        let encoded = blob.encoded_digest()?;
        match blob.as_bytes() {
            // Small: two requests; a HEAD would cost as much as the upload.
            Some(b) => self.upload_bytes(&encoded, b.clone()).await?,
            None if self.blob_exists(&encoded).await? => {}
            // Spooled but not huge: one PUT streamed from the spool file.
            None if blob.encoded_size <= MONOLITHIC_LIMIT => {
                let body = || Some(reqwest::Body::wrap_stream(blob.stream(STREAM_CHUNK)));
                self.upload_monolithic(&encoded, blob.encoded_size, &body)
                    .await?
            }
            None => self.put_chunked(blob, &encoded).await?,
        }
        self.remember(StoredBlob {
            raw: blob.digest,
            raw_size: Some(blob.raw_size),
            encoded,
            encoded_size: blob.encoded_size,
        });
        Ok(UploadedBlob {
            digest: blob.digest,
            encoded_digest: Some(encoded),
            encoded_size: blob.encoded_size,
            handle: None,
        })
    }

    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        let mut stored = Vec::with_capacity(req.blobs.len());
        for b in req.blobs {
            let s = match &b.uploaded {
                Some(u) => StoredBlob {
                    raw: b.digest,
                    raw_size: b.raw_size,
                    encoded: u.require_encoded_digest()?,
                    encoded_size: u.encoded_size,
                },
                None => self.lookup(&b.digest).ok_or_else(|| {
                    RegistryError::not_found(format!(
                        "blob {} in {} (not uploaded, not in the current tag)",
                        b.digest,
                        self.location()
                    ))
                })?,
            };
            stored.push(s);
        }
        let manifest = Bytes::copy_from_slice(req.manifest);
        self.put_bytes(&req.manifest_digest, manifest.clone())
            .await?;
        let config = Descriptor::new(ARTIFACT_TYPE, req.manifest_digest, manifest.len() as u64);
        let signature = match req.signature {
            Some(s) => {
                let d = Digest::of(s);
                self.put_bytes(&d, Bytes::copy_from_slice(s)).await?;
                let mut desc = Descriptor::new(SIGNATURE_MT, d, s.len() as u64);
                desc.annotations
                    .insert(layout::TITLE.into(), layout::SIGNATURE_TITLE.into());
                Some(desc)
            }
            None => None,
        };
        let mut ann = BTreeMap::new();
        ann.insert(
            remove::MANIFEST_DIGEST.to_string(),
            req.manifest_digest.to_string(),
        );
        let plan = layout::plan(config, signature, &stored, self.max_layers, ann);
        if plan.needs_empty {
            self.put_bytes(
                &Digest::of(layout::EMPTY_JSON),
                Bytes::from_static(layout::EMPTY_JSON),
            )
            .await?;
        }
        for p in plan.parts {
            let d = Digest::of(&p);
            self.put_manifest(&d.to_string(), p, MANIFEST_MT).await?;
        }
        let (top, mt) = plan.top;
        let top_digest = Digest::of(&top);
        // The commit point: the tag moves last.
        self.put_manifest(&self.tag, top, mt).await?;
        Ok(format!(
            "oci://{}/{}@{top_digest}",
            self.client.host(),
            self.repo
        ))
    }

    async fn get_manifest(&self) -> Result<FetchedManifest> {
        let (loaded, pin_verified) = match self.pin {
            None => (self.load_image(&self.tag).await?, false),
            Some(pin) => {
                // A pin may be a pf manifest digest (the config of the tagged
                // image) or an OCI manifest/index digest.
                let by_tag = self.load_image(&self.tag).await;
                match by_tag {
                    Ok(x) if x.0.config.as_ref().is_some_and(|c| c.digest == pin) => (x, false),
                    by_tag => match self.load_image(&pin.to_string()).await {
                        Ok(x) => (x, true),
                        Err(e @ RegistryError::Unauthorized { .. })
                        | Err(e @ RegistryError::Integrity { .. }) => return Err(e),
                        // Not an OCI digest here (registries answer 404 or, when the digest
                        // names a blob, 500): use the tag and let the engine report the mismatch.
                        Err(_) => (by_tag?, false),
                    },
                }
            }
        };
        let (head, layers) = loaded;
        let config = head
            .config
            .as_ref()
            .filter(|c| c.media_type == ARTIFACT_TYPE)
            .ok_or_else(|| {
                RegistryError::invalid(
                    self.location(),
                    "not a ProcessFork artifact (config media type)",
                )
            })?;
        let manifest = self
            .fetch_small_blob(
                config,
                pf_registry_core::manifest::MAX_MANIFEST_BYTES,
                "pf manifest",
            )
            .await?;
        let signature = match layers.iter().find(|l| l.media_type == SIGNATURE_MT) {
            Some(s) => Some(
                self.fetch_small_blob(s, MAX_SIGNATURE, "signature envelope")
                    .await?,
            ),
            None => None,
        };
        for l in layers.iter().filter(|l| l.media_type == layout::BLOB_MT) {
            let b = layout::stored_from_layer(l).ok_or_else(|| {
                RegistryError::invalid(
                    self.location(),
                    format!(
                        "blob layer {} lacks a valid raw digest annotation",
                        l.digest
                    ),
                )
            })?;
            self.remember(b);
        }
        Ok(FetchedManifest {
            manifest,
            signature,
            pin_verified,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        let b = self.lookup(digest).ok_or_else(|| {
            RegistryError::not_found(format!("blob {digest} in {}", self.location()))
        })?;
        let resp = self
            .client
            .send(
                Method::GET,
                &format!("/v2/{}/blobs/{}", self.repo, b.encoded),
                &self.pull_scope(),
                HeaderMap::new(),
                NO_BODY,
            )
            .await?;
        let backend = self.location();
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| {
                RegistryError::transient(backend.clone(), format!("reading blob body: {e}"))
            })
        })))
    }

    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        self.blob_range(digest, offset, len).await
    }

    async fn remove_reference(
        &self,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<pf_registry_core::lifecycle::RmReport> {
        self.remove(tag, digest).await
    }

    async fn exists(&self) -> Result<bool> {
        if self.pin.is_some() {
            return match self.get_manifest().await {
                Ok(_) => Ok(true),
                Err(RegistryError::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        }
        let h = headers(&[(ACCEPT, format!("{MANIFEST_MT}, {INDEX_MT}"))]);
        match self
            .client
            .send(
                Method::HEAD,
                &format!("/v2/{}/manifests/{}", self.repo, self.tag),
                &self.pull_scope(),
                h,
                NO_BODY,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
