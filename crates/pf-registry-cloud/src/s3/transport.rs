//! The `s3://` transport: the layout's objects read and written through
//! object_store (see the module docs of [`super`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use pf_digest::Digest;
use pf_registry_core::manifest::MAX_MANIFEST_BYTES;
use pf_registry_core::ranges;
use pf_registry_core::{
    layout, ByteStream, CommitRequest, Config, EncodedBlob, FetchedManifest, ImageRef, Location,
    RegistryError, Result, Transport, UploadedBlob,
};
use pf_sign::SignatureEnvelope;
use tokio::sync::Semaphore;

use super::config::{ConnectionFailure, S3Config, ServerStatus, Settings, MIN_PART, OPTIONS};

/// S3's limit on parts per multipart upload (kept below with some margin).
const MAX_PARTS: u64 = 9_000;
/// Concurrent HEAD requests when checking a small batch.
const HEAD_CONCURRENCY: usize = 16;
/// Chunk size when streaming a spooled blob into a multipart upload.
const STREAM_CHUNK: usize = 256 * 1024;

#[path = "lifecycle.rs"]
mod lifecycle;

/// A transport for one `s3://bucket/prefix[:tag]` reference.
pub struct S3Transport {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    tag: Option<String>,
    pin: Option<Digest>,
    display: String,
    settings: Settings,
    /// Upload buffers in KiB units; bounds memory independent of blob size.
    memory: Arc<Semaphore>,
    memory_units: u32,
    /// Blob listing taken by a large `missing` batch; cleared at commit.
    listing: Mutex<Option<Arc<HashSet<Digest>>>>,
    /// Set when LIST was refused (policy without `s3:ListBucket`): HEAD instead.
    list_denied: AtomicBool,
    /// Whether the store honours conditional PUT: the option, or the
    /// probe's answer, taken once per transport at the first commit.
    conditional: tokio::sync::OnceCell<bool>,
    /// The caller's retry policy, for the key operations of `lifecycle`
    /// (markers), which the engine does not retry itself.
    retry: pf_registry_core::RetryPolicy,
}

impl std::fmt::Debug for S3Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the client: it holds the credential provider.
        f.debug_struct("S3Transport")
            .field("location", &self.display)
            .field("pin", &self.pin)
            .field("settings", &self.settings)
            .finish()
    }
}

impl S3Transport {
    /// A transport for `reference`, which must be an `s3://` reference.
    /// Credentials come from the standard AWS env vars (or `s3.*` options).
    pub fn new(reference: &ImageRef, config: &Config) -> Result<S3Transport> {
        let Location::S3 {
            bucket,
            prefix,
            tag,
        } = &reference.location
        else {
            return Err(RegistryError::BadReference {
                input: reference.to_string(),
                reason: "not an s3:// reference".into(),
            });
        };
        config.check_options("s3", OPTIONS)?;
        let S3Config {
            store,
            settings,
            memory_units,
        } = S3Config::from_config(bucket, reference, config)?;
        Ok(S3Transport {
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            tag: tag.clone(),
            pin: reference.digest,
            display: reference.location.to_string(),
            settings,
            memory: Arc::new(Semaphore::new(memory_units as usize)),
            memory_units,
            listing: Mutex::new(None),
            list_denied: AtomicBool::new(false),
            conditional: tokio::sync::OnceCell::new(),
            retry: config.retry,
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Key `rel` under the prefix.
    fn key(&self, rel: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Key of the encoded blob named by `digest`.
    fn blob_path(&self, digest: &Digest) -> Path {
        self.key(&layout::blob(digest))
    }

    /// Key of the tag's manifest object (the commit point).
    fn tag_manifest(&self) -> Path {
        self.key(&layout::tag_manifest(self.tag.as_deref()))
    }

    fn tag_signature(&self) -> Path {
        self.key(&layout::tag_signature(self.tag.as_deref()))
    }

    fn manifest_by_digest(&self, d: &Digest) -> Path {
        self.key(&layout::manifest_by_digest(d))
    }

    fn signature_by_digest(&self, d: &Digest) -> Path {
        self.key(&layout::signature_by_digest(d))
    }

    /// Maps an object_store error by its kind; `what` names the object.
    fn map_err(&self, what: &str, e: object_store::Error) -> RegistryError {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => RegistryError::not_found(format!("{what} at {}", self.display)),
            E::PermissionDenied { .. } => RegistryError::Unauthorized {
                registry: format!("s3://{}", self.bucket),
                detail: format!(
                    "access denied (HTTP 403) to {what}; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / \
                     AWS_SESSION_TOKEN and the bucket policy"
                ),
            },
            E::Unauthenticated { .. } => RegistryError::Unauthorized {
                registry: format!("s3://{}", self.bucket),
                detail: format!(
                    "not authenticated (HTTP 401) for {what}; set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ),
            },
            E::Precondition { .. } | E::AlreadyExists { .. } => {
                RegistryError::Conflict(format!("{what} at {} was changed by a concurrent writer", self.display))
            }
            E::NotImplemented { .. } | E::NotSupported { .. } => RegistryError::permanent(
                self.backend(),
                format!("{what}: operation not supported by this server ({e})"),
            ),
            other => {
                // Connection-level failures, timeouts and 5xx / 429 answers
                // may succeed on retry (object_store retries nothing; see
                // the s3 config).
                let retryable = is_retryable(&other);
                let message = format!("{what}: {other}");
                if retryable {
                    RegistryError::transient(self.backend(), message)
                } else {
                    RegistryError::permanent(self.backend(), message)
                }
            }
        }
    }

    fn backend(&self) -> String {
        format!("s3 {}", self.display)
    }

    /// HEAD `path`: its ETag (`Some(None)` if the server sent none), or `None` if absent.
    async fn head_etag(&self, what: &str, path: &Path) -> Result<Option<Option<String>>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta.e_tag)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.map_err(what, e)),
        }
    }

    /// GET `path` whole, refusing objects larger than `limit`; `None` if absent.
    async fn get_bounded(&self, what: &str, path: &Path, limit: u64) -> Result<Option<Bytes>> {
        let res = match self.store.get(path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.map_err(what, e)),
        };
        if res.meta.size > limit {
            return Err(RegistryError::invalid(
                format!("{what} at {}", self.display),
                format!("{} bytes exceeds the limit {limit}", res.meta.size),
            ));
        }
        let mut buf = BytesMut::with_capacity(res.meta.size as usize);
        let mut s = res.into_stream();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| self.map_err(what, e))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(RegistryError::invalid(
                    format!("{what} at {}", self.display),
                    format!("more than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Some(buf.freeze()))
    }

    async fn put_small(&self, what: &str, path: &Path, bytes: Bytes, mode: PutMode) -> Result<()> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(what, e))
    }

    async fn reserve(&self, bytes: u64) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let units = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.memory_units);
        self.memory
            .acquire_many(units.max(1))
            .await
            .map_err(|_| RegistryError::permanent(self.backend(), "upload memory budget closed"))
    }

    /// Streams a spooled blob into a multipart upload, `upload_parallelism`
    /// parts in flight; aborts the upload on failure.
    async fn put_multipart(&self, what: &str, path: &Path, blob: &EncodedBlob) -> Result<()> {
        let part = self
            .settings
            .part_size
            .max(blob.encoded_size.div_ceil(MAX_PARTS))
            .max(MIN_PART);
        let par = self.settings.upload_parallelism;
        let _permit = self
            .reserve(part * (par as u64 + 1) + STREAM_CHUNK as u64)
            .await?;
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| self.map_err(what, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part as usize);
        let mut stream = blob.stream(STREAM_CHUNK);
        let fed: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                w.wait_for_capacity(par)
                    .await
                    .map_err(|e| self.map_err(what, e))?;
                w.put(chunk);
            }
            Ok(())
        }
        .await;
        match fed {
            Ok(()) => w
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.map_err(what, e)),
            Err(e) => {
                // Best effort: the original error matters more than the abort's.
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// One LIST of `blobs/sha256/` (paginated by object_store), cached until commit.
    async fn listing(&self) -> Result<Arc<HashSet<Digest>>> {
        if let Some(l) = self.listing.lock().ok().and_then(|g| g.clone()) {
            return Ok(l);
        }
        let root = self.key(layout::BLOBS);
        let mut set = HashSet::new();
        let mut s = self.store.list(Some(&root));
        while let Some(meta) = s
            .try_next()
            .await
            .map_err(|e| self.map_err("blob listing", e))?
        {
            // Foreign objects under the prefix are ignored, never trusted.
            let Some(hex) = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".zst"))
            else {
                continue;
            };
            if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
                if meta.location == self.blob_path(&d) {
                    set.insert(d);
                }
            }
        }
        let set = Arc::new(set);
        if let Ok(mut g) = self.listing.lock() {
            *g = Some(set.clone());
        }
        Ok(set)
    }

    /// HEADs each blob, [`HEAD_CONCURRENCY`] at a time; returns the absent ones.
    async fn missing_by_head(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let found: Vec<Option<Digest>> = futures::stream::iter(digests.iter().copied())
            .map(|d| async move {
                match self
                    .head_etag(&format!("blob {d}"), &self.blob_path(&d))
                    .await?
                {
                    Some(_) => Ok::<_, RegistryError>(None),
                    None => Ok(Some(d)),
                }
            })
            .buffered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Whether to write the tag conditionally: `s3.conditional_put` when
    /// given, else what [`probe_conditional_put`](Self::probe_conditional_put)
    /// found (once per transport).
    async fn conditional_put(&self) -> Result<bool> {
        if let Some(b) = self.settings.conditional_put {
            return Ok(b);
        }
        self.conditional
            .get_or_try_init(|| self.cached_probe())
            .await
            .copied()
    }

    /// The probe's answer, cached under the prefix in
    /// `.pf-probe/conditional-put` (`true` / `false`) so later pushes pay
    /// one GET instead of four requests. Delete it to probe again.
    async fn cached_probe(&self) -> Result<bool> {
        let marker = self.key(".pf-probe/conditional-put");
        match self.get_bounded("probe result", &marker, 16).await? {
            Some(b) if b.as_ref() == b"true" => return Ok(true),
            Some(b) if b.as_ref() == b"false" => return Ok(false),
            _ => {}
        }
        let honoured = self.probe_conditional_put().await?;
        let body = Bytes::from(if honoured { "true" } else { "false" });
        self.put_small("probe result", &marker, body, PutMode::Overwrite)
            .await?;
        Ok(honoured)
    }

    /// Some S3-compatible stores accept `If-None-Match` / `If-Match` on
    /// PutObject and ignore them (both writes land). The probe writes a
    /// scratch object under the prefix with `If-None-Match: *` twice and
    /// then with `If-Match` on a made-up ETag: the store honours conditional
    /// PUT only if the second and third writes are refused. The scratch
    /// object is deleted afterwards.
    pub async fn probe_conditional_put(&self) -> Result<bool> {
        let nonce = Digest::of(
            format!(
                "{:?} {} {:p}",
                std::time::SystemTime::now(),
                std::process::id(),
                self
            )
            .as_bytes(),
        );
        let path = self.key(&format!(".pf-probe/scratch-{}", nonce.hex()));
        let body = Bytes::from_static(b"pf conditional-put probe");
        let what = "conditional-put probe";
        self.put_small(what, &path, body.clone(), PutMode::Create)
            .await?;
        let again = self
            .put_small(what, &path, body.clone(), PutMode::Create)
            .await;
        let stale = self
            .put_small(
                what,
                &path,
                body,
                PutMode::Update(UpdateVersion {
                    e_tag: Some("\"00000000000000000000000000000000\"".into()),
                    version: None,
                }),
            )
            .await;
        let _ = self.store.delete(&path).await;
        // A refusal is a Conflict; any other failure is the store's answer.
        let refused = |r: Result<()>| match r {
            Ok(()) => Ok(false),
            Err(RegistryError::Conflict(_)) => Ok(true),
            Err(e) => Err(e),
        };
        Ok(refused(again)? & refused(stale)?)
    }

    /// Reads the tag manifest after a lost conditional write: `Ok` if it is ours.
    async fn resolve_conflict(&self, ours: &Digest, err: RegistryError) -> Result<()> {
        let current = self
            .get_bounded("manifest", &self.tag_manifest(), MAX_MANIFEST_BYTES as u64)
            .await?;
        match current {
            Some(m) if Digest::of(&m) == *ours => Ok(()),
            _ => Err(err),
        }
    }
}

/// Whether `e`'s source chain shows a failure worth retrying: an I/O
/// error, a request that failed before an answer ([`ConnectionFailure`]:
/// connect, send, timeout, interrupted), or a 5xx / 429 answer.
fn is_retryable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if x.is::<std::io::Error>() || x.is::<ServerStatus>() || x.is::<ConnectionFailure>() {
            return true;
        }
        cur = x.source();
    }
    false
}

#[async_trait]
impl Transport for S3Transport {
    /// Blobs are named by their raw digest; no need to hash the encoding.
    fn wants_encoded_digest(&self) -> bool {
        false
    }

    fn location(&self) -> String {
        self.display.clone()
    }

    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let cached = self.listing.lock().ok().and_then(|g| g.clone());
        let head = digests.len() <= self.settings.head_threshold
            || self.list_denied.load(Ordering::Relaxed);
        let present = match cached {
            Some(l) => l,
            None if head => return self.missing_by_head(digests).await,
            None => match self.listing().await {
                Ok(l) => l,
                Err(e) if e.is_retryable() => return Err(e),
                Err(_) => {
                    // object_store reports LIST failures as `Generic`, without
                    // the status kind. A HEAD (whose errors are typed) tells a
                    // credential problem (-> Unauthorized) from a policy that
                    // only lacks s3:ListBucket (-> HEAD each blob instead).
                    self.head_etag("manifest", &self.tag_manifest()).await?;
                    self.list_denied.store(true, Ordering::Relaxed);
                    return self.missing_by_head(digests).await;
                }
            },
        };
        Ok(digests
            .iter()
            .filter(|d| !present.contains(d))
            .copied()
            .collect())
    }

    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        let path = self.blob_path(&blob.digest);
        let what = format!("blob {}", blob.digest);
        if let Some(bytes) = blob.as_bytes() {
            // Already in memory (small): one PUT, no extra buffer.
            self.put_small(&what, &path, bytes.clone(), PutMode::Overwrite)
                .await?;
        } else if blob.encoded_size <= self.settings.multipart_threshold {
            let _permit = self.reserve(blob.encoded_size).await?;
            let mut buf = BytesMut::with_capacity(blob.encoded_size as usize);
            let mut s = blob.stream(STREAM_CHUNK);
            while let Some(chunk) = s.next().await {
                buf.extend_from_slice(&chunk?);
            }
            self.put_small(&what, &path, buf.freeze(), PutMode::Overwrite)
                .await?;
        } else {
            self.put_multipart(&what, &path, blob).await?;
        }
        Ok(UploadedBlob {
            digest: blob.digest,
            encoded_digest: None,
            encoded_size: blob.encoded_size,
            handle: None,
        })
    }

    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        // The listing snapshot served this push; the next one lists afresh.
        if let Ok(mut g) = self.listing.lock() {
            *g = None;
        }
        let digest = req.manifest_digest;
        let tag_manifest = self.tag_manifest();
        // 1. The version we are replacing (for the conditional write).
        let conditional = self.conditional_put().await?;
        let base = if conditional {
            self.head_etag("manifest", &tag_manifest).await?
        } else {
            None
        };
        // 2. Immutable copies by digest.
        let manifest = Bytes::copy_from_slice(req.manifest);
        self.put_small(
            "manifest copy",
            &self.manifest_by_digest(&digest),
            manifest.clone(),
            PutMode::Overwrite,
        )
        .await?;
        let tag_sig = self.tag_signature();
        match req.signature {
            Some(sig) => {
                let sig = Bytes::copy_from_slice(sig);
                self.put_small(
                    "signature",
                    &self.signature_by_digest(&digest),
                    sig.clone(),
                    PutMode::Overwrite,
                )
                .await?;
                // 3. The tag's signature (readers prefer the by-digest copy).
                self.put_small("tag signature", &tag_sig, sig, PutMode::Overwrite)
                    .await?;
            }
            None => match self.store.delete(&tag_sig).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.map_err("stale tag signature", e)),
            },
        }
        // 4. The commit point: the tag manifest, LAST, conditionally.
        let mode = match (conditional, base) {
            (false, _) => PutMode::Overwrite,
            (true, None) => PutMode::Create,
            (true, Some(Some(etag))) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag),
                version: None,
            }),
            // The server gave no ETag: nothing to condition on.
            (true, Some(None)) => PutMode::Overwrite,
        };
        match self
            .put_small("manifest", &tag_manifest, manifest, mode)
            .await
        {
            Ok(()) => {}
            Err(e @ RegistryError::Conflict(_)) => self.resolve_conflict(&digest, e).await?,
            Err(e) => return Err(e),
        }
        Ok(format!("{}@{digest}", self.display))
    }

    async fn get_manifest(&self) -> Result<FetchedManifest> {
        let limit = MAX_MANIFEST_BYTES as u64;
        let mut manifest = None;
        if let Some(pin) = self.pin {
            manifest = self
                .get_bounded("manifest", &self.manifest_by_digest(&pin), limit)
                .await?;
        }
        if manifest.is_none() {
            manifest = self
                .get_bounded("manifest", &self.tag_manifest(), limit)
                .await?;
        }
        let Some(manifest) = manifest else {
            return Err(RegistryError::not_found(format!(
                "manifest at {}",
                self.display
            )));
        };
        let digest = Digest::of(&manifest);
        let sig_limit = SignatureEnvelope::MAX_LEN as u64 + 1;
        let mut signature = self
            .get_bounded("signature", &self.signature_by_digest(&digest), sig_limit)
            .await?;
        if signature.is_none() {
            // Foreign writers: the tag's copy, only if it names this manifest.
            signature = self
                .get_bounded("tag signature", &self.tag_signature(), sig_limit)
                .await?
                .filter(|s| {
                    SignatureEnvelope::from_json_bytes(s)
                        .is_ok_and(|env| env.manifest_digest == digest)
                });
        }
        Ok(FetchedManifest {
            manifest,
            signature,
            pin_verified: false,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        let what = format!("blob {digest}");
        let res = self
            .store
            .get(&self.blob_path(digest))
            .await
            .map_err(|e| self.map_err(&what, e))?;
        let backend = self.backend();
        let s = res.into_stream().map(move |r| {
            r.map_err(|e| {
                let retryable = is_retryable(&e);
                let message = format!("reading {what}: {e}");
                if retryable {
                    RegistryError::transient(backend.clone(), message)
                } else {
                    RegistryError::permanent(backend.clone(), message)
                }
            })
        });
        Ok(Box::pin(s))
    }

    /// A ranged GET (`Range: bytes=a-b`), read bounded by `len`.
    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        let end = ranges::check(digest, offset, len)?;
        let what = format!("blob {digest}");
        let opts = object_store::GetOptions::new().with_range(Some(offset..end));
        let res = self
            .store
            .get_opts(&self.blob_path(digest), opts)
            .await
            .map_err(|e| self.map_err(&what, e))?;
        let backend = self.backend();
        let s = res.into_stream().map(move |r| {
            r.map_err(|e| {
                let message = format!("reading {what}: {e}");
                if is_retryable(&e) {
                    RegistryError::transient(backend.clone(), message)
                } else {
                    RegistryError::permanent(backend.clone(), message)
                }
            })
        });
        ranges::collect(Box::pin(s), digest, offset, len).await
    }

    async fn exists(&self) -> Result<bool> {
        if let Some(pin) = self.pin {
            if self
                .head_etag("manifest", &self.manifest_by_digest(&pin))
                .await?
                .is_some()
            {
                return Ok(true);
            }
            return match self.get_manifest().await {
                Ok(m) => Ok(Digest::of(&m.manifest) == pin),
                Err(RegistryError::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Ok(self
            .head_etag("manifest", &self.tag_manifest())
            .await?
            .is_some())
    }

    fn keys(&self) -> Option<&dyn pf_registry_core::KeyStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_loopback_or_insecure() {
        let r = ImageRef::parse("s3://bucket/p:t").expect("ref");
        let mut c = Config::default();
        c.options.insert(
            "s3.endpoint".into(),
            "http://user:hunter2@s3.example.com".into(),
        );
        c.options.insert("s3.access_key_id".into(), "k".into());
        c.options.insert("s3.secret_access_key".into(), "s".into());
        let err = S3Transport::new(&r, &c).expect_err("plain http to a remote host");
        assert!(matches!(err, RegistryError::BadReference { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        c.insecure = true;
        S3Transport::new(&r, &c).expect("insecure allows it");
        c.insecure = false;
        c.options
            .insert("s3.endpoint".into(), "http://127.0.0.1:9".into());
        S3Transport::new(&r, &c).expect("loopback allowed");
    }

    #[test]
    fn keys_follow_the_layout() {
        let mut c = Config::default();
        c.options
            .insert("s3.endpoint".into(), "http://127.0.0.1:9".into());
        let d = Digest::of(b"x");
        let t = S3Transport::new(&ImageRef::parse("s3://bucket/a/b:v1").expect("ref"), &c)
            .expect("transport");
        assert_eq!(t.tag_manifest().to_string(), "a/b/tags/v1/manifest.json");
        assert_eq!(
            t.tag_signature().to_string(),
            "a/b/tags/v1/manifest.json.sig"
        );
        assert_eq!(
            t.blob_path(&d).to_string(),
            format!("a/b/blobs/sha256/{}/{}.zst", d.shard(), d.hex())
        );
        assert_eq!(
            t.manifest_by_digest(&d).to_string(),
            format!("a/b/manifests/sha256/{}.json", d.hex())
        );
        let t =
            S3Transport::new(&ImageRef::parse("s3://bucket").expect("ref"), &c).expect("transport");
        assert_eq!(t.tag_manifest().to_string(), "manifest.json");
        assert_eq!(
            t.signature_by_digest(&d).to_string(),
            format!("signatures/sha256/{}.sig", d.hex())
        );
        assert_eq!(t.location(), "s3://bucket");
    }
}
