//! The `ipfs://` transport: Kubo RPC calls, the MFS dedup index and the
//! image directory (see the module docs of [`super`]).

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::http::{self, Class, Classify, Failure};
use pf_registry_core::ranges;
use pf_registry_core::{
    layout, ByteStream, CommitRequest, Config, EncodedBlob, FetchedManifest, ImageRef, Location,
    RegistryError, Result, Transport, UploadedBlob,
};
use serde_json::Value;

use super::config;
use super::dag::Cid;
use super::gateway::Gateway;

/// MFS directory of the dedup index; the keys of [`layout`] go below it.
pub(super) const INDEX: &str = "/pf-registry";

/// Transport for one IPFS node; `cid` is the image root (pulls).
#[derive(Debug)]
pub struct IpfsTransport {
    http: reqwest::Client,
    api: String,
    cid: Option<String>,
    /// The reference's `@sha256:` pin (an `ipfs://@sha256:...` pull reads
    /// that manifest from the node's index).
    pub(super) pin: Option<Digest>,
    gateway: Option<Gateway>,
    /// The caller's retry policy, for the key operations of `lifecycle`.
    pub(super) retry: pf_registry_core::RetryPolicy,
}

pub(super) fn index_path(d: &Digest) -> String {
    format!("{INDEX}/{}", layout::blob(d))
}

impl IpfsTransport {
    /// A transport for `ipfs://<cid>` (pull) or `ipfs://` (push).
    pub fn new(reference: &ImageRef, config: &Config) -> Result<IpfsTransport> {
        let Location::Ipfs { cid } = &reference.location else {
            return Err(RegistryError::BadReference {
                input: reference.to_string(),
                reason: "not an ipfs:// reference".into(),
            });
        };
        let api = config::api(config)?;
        let http = http::client(config, "ipfs")?;
        let gateway = config::gateway(config)?.map(|url| Gateway::new(http.clone(), url));
        Ok(IpfsTransport {
            http,
            api,
            cid: cid.clone(),
            pin: reference.digest,
            gateway,
            retry: config.retry,
        })
    }

    pub(super) fn backend(&self) -> String {
        format!("ipfs {}", self.api)
    }

    /// POSTs an RPC call; RPC errors (HTTP 500 with a JSON `Message`) map to
    /// NotFound when the node says a path does not exist.
    pub(super) async fn rpc(
        &self,
        cmd: &str,
        args: &[(&str, &str)],
        body: Option<reqwest::multipart::Form>,
    ) -> Result<reqwest::Response> {
        let mut rb = self
            .http
            .post(format!("{}/api/v0/{cmd}", self.api))
            .query(args);
        if let Some(f) = body {
            rb = rb.multipart(f);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| http::send_error(self.backend(), cmd, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let what = match args.first() {
            Some((_, arg)) => format!("{cmd} {arg:?}"),
            None => cmd.to_string(),
        };
        Err(http::classify(&Failure::read(resp).await, &what, self))
    }

    pub(super) async fn add(&self, name: &str, body: reqwest::Body, len: u64) -> Result<String> {
        let part = reqwest::multipart::Part::stream_with_length(body, len)
            .file_name(name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| RegistryError::permanent(self.backend(), format!("add: {e}")))?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = self
            .rpc(
                "add",
                &[
                    ("cid-version", "1"),
                    ("raw-leaves", "true"),
                    ("pin", "false"),
                    ("quieter", "true"),
                ],
                Some(form),
            )
            .await?;
        let text = resp
            .text()
            .await
            .map_err(|e| http::send_error(self.backend(), "add", e))?;
        // One JSON object per line; the last names the added file.
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v["Hash"].as_str().map(str::to_string))
            .ok_or_else(|| RegistryError::invalid("ipfs add response", "no Hash"))
    }

    async fn mkdir(&self, path: &str) -> Result<()> {
        self.rpc(
            "files/mkdir",
            &[("arg", path), ("parents", "true"), ("cid-version", "1")],
            None,
        )
        .await
        .map(|_| ())
    }

    /// `files/cp` onto `to`. An entry already at `to` (Kubo answers HTTP 500
    /// "directory already has entry by that name": two pushes raced on one
    /// blob) is success when it holds the same CID, and a
    /// [`RegistryError::Conflict`] when it holds other content; never a
    /// transient error to retry.
    pub(super) async fn cp(&self, from: &str, to: &str) -> Result<()> {
        if let Some((parent, _)) = to.rsplit_once('/') {
            if !parent.is_empty() {
                self.mkdir(parent).await?;
            }
        }
        self.cp_into(from, to).await
    }

    /// [`cp`](Self::cp) into a directory that exists.
    async fn cp_into(&self, from: &str, to: &str) -> Result<()> {
        match self
            .rpc("files/cp", &[("arg", from), ("arg", to)], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(RegistryError::Conflict(msg)) => {
                let (have, want) = (self.stat_hash(to).await?, self.stat_hash(from).await?);
                if have == want {
                    Ok(())
                } else {
                    Err(RegistryError::Conflict(format!(
                        "{msg}: {to} holds {have}, not {want}"
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn stat_hash(&self, path: &str) -> Result<String> {
        let v: Value = self
            .rpc("files/stat", &[("arg", path)], None)
            .await?
            .json()
            .await
            .map_err(|e| RegistryError::invalid("ipfs files/stat", e.to_string()))?;
        v["Hash"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RegistryError::invalid("ipfs files/stat", "no Hash"))
    }

    fn root(&self) -> Result<&str> {
        self.cid.as_deref().ok_or_else(|| {
            RegistryError::not_found(
                "image: ipfs:// without a CID can only be pushed to (pull ipfs://<cid>)",
            )
        })
    }

    async fn cat(&self, path: &str) -> Result<reqwest::Response> {
        self.rpc("cat", &[("arg", path)], None).await
    }

    async fn cat_small(&self, path: &str, limit: usize) -> Result<Option<Bytes>> {
        let resp = match self.cat(path).await {
            Ok(r) => r,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut s = resp.bytes_stream();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| http::send_error(self.backend(), "cat", e))?;
            if out.len() + c.len() > limit {
                return Err(RegistryError::invalid(
                    path,
                    format!("larger than {limit} bytes"),
                ));
            }
            out.extend_from_slice(&c);
        }
        Ok(Some(Bytes::from(out)))
    }
}

/// RPC errors come as HTTP 500 with a JSON `Message`; its text says what
/// happened (Kubo has no error codes).
impl Classify for IpfsTransport {
    fn backend(&self) -> String {
        IpfsTransport::backend(self)
    }

    /// The node has no auth of its own; a proxy in front of it may.
    fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.backend(),
            detail:
                "the IPFS API refused the request (a proxy in front of the node wants credentials)"
                    .into(),
        }
    }

    fn detail(&self, failure: &Failure) -> String {
        serde_json::from_str::<Value>(&failure.body)
            .ok()
            .and_then(|v| v["Message"].as_str().map(str::to_string))
            .unwrap_or_else(|| failure.body.chars().take(200).collect())
    }

    /// Kubo's message says which path is missing (the argument or the
    /// destination of a copy).
    fn not_found(&self, what: &str, detail: &str) -> RegistryError {
        RegistryError::not_found(format!("{what} on {} ({detail})", self.backend()))
    }

    fn refine(&self, failure: &Failure, message: &str) -> Option<Class> {
        let lower = message.to_ascii_lowercase();
        if ["does not exist", "no link named", "not found", "not pinned"]
            .iter()
            .any(|m| lower.contains(m))
        {
            Some(Class::NotFound)
        } else if lower.contains("already exists") || lower.contains("already has entry") {
            // Kubo's MFS answers a copy onto an existing name with HTTP 500
            // "directory already has entry by that name"; not transient.
            Some(Class::Conflict)
        } else if failure.status.is_server_error() && lower.contains("invalid") {
            // A rejected argument: another attempt gets the same answer.
            Some(Class::Permanent)
        } else {
            None
        }
    }
}

#[async_trait]
impl Transport for IpfsTransport {
    /// Blobs are named by their raw digest; no need to hash the encoding.
    fn wants_encoded_digest(&self) -> bool {
        false
    }

    fn location(&self) -> String {
        format!("ipfs://{}", self.cid.as_deref().unwrap_or(""))
    }

    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let found = futures::stream::iter(digests.iter().copied())
            .map(|d| async move {
                match self
                    .rpc("files/stat", &[("arg", &index_path(&d))], None)
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(RegistryError::NotFound { .. }) => Ok(Some(d)),
                    Err(e) => Err(e),
                }
            })
            .buffered(8)
            .collect::<Vec<_>>()
            .await;
        found.into_iter().filter_map(|r| r.transpose()).collect()
    }

    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        let body = match blob.as_bytes() {
            Some(b) => reqwest::Body::from(b.clone()),
            None => {
                reqwest::Body::wrap_stream(blob.stream(1 << 20).map(|r| r.map_err(|e| e.into_io())))
            }
        };
        let cid = self
            .add(
                &format!("{}.zst", blob.digest.hex()),
                body,
                blob.encoded_size,
            )
            .await?;
        // The index is a dedup hint keyed by the raw digest: another pusher
        // may have indexed a different (equally valid) encoding first; this
        // push keeps its own CID for the image directory either way, and
        // pulls verify every blob by its digest. A racing gc may remove the
        // entry as it is made (Kubo: "cannot flush the created file"): the
        // push's settle step indexes it again (see `pf_registry_core::lifecycle`).
        // The entry's time first (it creates the shard directory): gc's
        // grace period reads it (see `keys`).
        let entry = index_path(&blob.digest);
        self.write_time(&entry).await?;
        match self.cp_into(&format!("/ipfs/{cid}"), &entry).await {
            Ok(()) | Err(RegistryError::Conflict(_)) => {}
            Err(RegistryError::NotFound { .. })
                if self.stat_hash(&format!("/ipfs/{cid}")).await.is_ok() => {}
            Err(e) => return Err(e),
        }
        Ok(UploadedBlob {
            digest: blob.digest,
            encoded_digest: None,
            encoded_size: blob.encoded_size,
            handle: Some(cid),
        })
    }

    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        let staging = format!(
            "/pf-registry/staging/{}-{:016x}",
            req.manifest_digest.hex(),
            rand_u64()
        );
        self.mkdir(&format!("{staging}/{}", layout::BLOBS)).await?;
        for b in req.blobs {
            let from = match b.uploaded.as_ref().and_then(|u| u.handle.clone()) {
                Some(cid) => format!("/ipfs/{cid}"),
                None => index_path(&b.digest),
            };
            self.cp(&from, &format!("{staging}/{}", layout::blob(&b.digest)))
                .await?;
        }
        if let Some(sig) = req.signature {
            let cid = self
                .add(
                    layout::SIGNATURE,
                    reqwest::Body::from(sig.to_vec()),
                    sig.len() as u64,
                )
                .await?;
            self.cp(
                &format!("/ipfs/{cid}"),
                &format!("{staging}/{}", layout::SIGNATURE),
            )
            .await?;
        }
        let cid = self
            .add(
                layout::MANIFEST,
                reqwest::Body::from(req.manifest.to_vec()),
                req.manifest.len() as u64,
            )
            .await?;
        self.cp(
            &format!("/ipfs/{cid}"),
            &format!("{staging}/{}", layout::MANIFEST),
        )
        .await?;
        let root = self.stat_hash(&staging).await?;
        self.rpc("pin/add", &[("arg", &format!("/ipfs/{root}"))], None)
            .await?;
        // The node's record of the image, which gc reads (see `keys`).
        self.record_commit(&req.manifest_digest, req.manifest, req.signature, &root)
            .await?;
        // The pinned root keeps the content; the staging directory can go.
        let _ = self
            .rpc(
                "files/rm",
                &[("arg", &staging), ("recursive", "true")],
                None,
            )
            .await;
        Ok(format!("ipfs://{root}"))
    }

    async fn get_manifest(&self) -> Result<FetchedManifest> {
        if self.cid.is_none() {
            return self.index_manifest().await;
        }
        let root = self.root()?;
        if let Some(gw) = &self.gateway {
            let root = Cid::parse(root)?;
            let manifest = gw
                .small(
                    root,
                    layout::MANIFEST,
                    pf_registry_core::manifest::MAX_MANIFEST_BYTES,
                )
                .await?
                .ok_or_else(|| RegistryError::not_found(format!("manifest at ipfs://{root}")))?;
            let signature = gw.small(root, layout::SIGNATURE, 64 * 1024).await?;
            return Ok(FetchedManifest {
                manifest,
                signature,
                pin_verified: false,
            });
        }
        let manifest = self
            .cat_small(
                &format!("/ipfs/{root}/{}", layout::MANIFEST),
                pf_registry_core::manifest::MAX_MANIFEST_BYTES,
            )
            .await?
            .ok_or_else(|| RegistryError::not_found(format!("manifest at ipfs://{root}")))?;
        let signature = self
            .cat_small(&format!("/ipfs/{root}/{}", layout::SIGNATURE), 64 * 1024)
            .await?;
        Ok(FetchedManifest {
            manifest,
            signature,
            pin_verified: false,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        if self.cid.is_none() {
            return self.index_blob(digest, None).await;
        }
        let root = self.root()?;
        if let Some(gw) = &self.gateway {
            let cid = gw.resolve(Cid::parse(root)?, &layout::blob(digest)).await?;
            return Ok(gw.file(cid));
        }
        let resp = self
            .cat(&format!("/ipfs/{root}/{}", layout::blob(digest)))
            .await?;
        let backend = self.backend();
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| http::send_error(backend.clone(), "cat", e))
        })))
    }

    /// RPC: `cat` with `offset` and `length`. Gateway: only the file's
    /// blocks that hold the range, each checked against its CID as every
    /// gateway read is.
    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        ranges::check(digest, offset, len)?;
        if self.cid.is_none() {
            let body = self.index_blob(digest, Some((offset, len))).await?;
            return ranges::collect(body, digest, offset, len).await;
        }
        let root = self.root()?;
        if let Some(gw) = &self.gateway {
            let cid = gw.resolve(Cid::parse(root)?, &layout::blob(digest)).await?;
            return gw.range(digest, cid, offset, len).await;
        }
        let (o, l) = (offset.to_string(), len.to_string());
        let path = format!("/ipfs/{root}/{}", layout::blob(digest));
        let resp = self
            .rpc(
                "cat",
                &[("arg", &path), ("offset", &o), ("length", &l)],
                None,
            )
            .await?;
        let backend = self.backend();
        let body = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| http::send_error(backend.clone(), "cat", e)));
        ranges::collect(Box::pin(body), digest, offset, len).await
    }

    /// The node's index as a repository (`ipfs://`, `ipfs://@sha256:...`):
    /// see `keys`. A root (`ipfs://<cid>`) is one image, not a repository.
    fn keys(&self) -> Option<&dyn pf_registry_core::KeyStore> {
        match self.cid {
            None => Some(self),
            Some(_) => None,
        }
    }

    /// `pf rm ipfs://<root>`: unpins the image's root (`pin/rm`) and drops
    /// it from the node's record of the image (the record goes with its
    /// last root). A root this node has not pinned is `NotFound`. The
    /// blobs go at the next `pf gc ipfs://` (see the README).
    async fn remove_reference(
        &self,
        _tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<pf_registry_core::lifecycle::RmReport> {
        let root = self.root()?.to_string();
        let manifest = Digest::of(&self.get_manifest().await?.manifest);
        if let Some(d) = digest.filter(|d| *d != manifest) {
            return Err(RegistryError::not_found(format!(
                "manifest {d} at ipfs://{root} (it holds {manifest})"
            )));
        }
        self.rpc("pin/rm", &[("arg", &format!("/ipfs/{root}"))], None)
            .await?;
        self.forget_root(&manifest, &root).await?;
        Ok(pf_registry_core::lifecycle::RmReport {
            tags: Vec::new(),
            manifests: vec![manifest],
        })
    }

    async fn exists(&self) -> Result<bool> {
        match self.get_manifest().await {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A staging-directory suffix unique per push: time, process id and a
/// per-process counter (concurrent pushes of one image in one process must
/// not share a staging directory).
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    t ^ (std::process::id() as u64).rotate_left(32) ^ n.rotate_left(48)
}
