//! The `ipfs://` transport: Kubo RPC calls, the MFS dedup index and the
//! image directory (see the module docs of [`super`]).

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::http::{self, Class, Classify, Failure};
use pf_registry_core::ranges;
use pf_registry_core::{
    layout, ByteStream, CommitBlob, CommitRequest, Config, EncodedBlob, FetchedManifest, ImageRef,
    Location, RegistryError, Result, Transport, UploadedBlob,
};
use serde_json::Value;

use super::config;
use super::dag::Cid;
use super::gateway::Gateway;
use super::image_dir::{self, Placed};

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
    /// An index pull's image roots, as its record lists them (set when
    /// the manifest is read): its blobs are read from there first.
    pub(super) index_roots: std::sync::OnceLock<Vec<String>>,
}

/// Kubo's MFS loses entries when calls change it concurrently, even in
/// different directories (a push's parallel uploads each add an index
/// entry): this process sends its MFS changes one at a time.
static MFS_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether RPC `cmd` changes MFS.
fn changes_mfs(cmd: &str) -> bool {
    matches!(
        cmd,
        "files/write" | "files/cp" | "files/rm" | "files/mkdir" | "files/mv" | "files/touch"
    )
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
            index_roots: std::sync::OnceLock::new(),
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
        let one_at_a_time = match changes_mfs(cmd) {
            true => Some(MFS_CHANGES.lock().await),
            false => None,
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| http::send_error(self.backend(), cmd, e))?;
        drop(one_at_a_time);
        if resp.status().is_success() {
            return Ok(resp);
        }
        let what = match args.first() {
            Some((_, arg)) => format!("{cmd} {arg:?}"),
            None => cmd.to_string(),
        };
        Err(http::classify(&Failure::read(resp).await, &what, self))
    }

    /// `add` of one file (raw-leaf CIDv1, not pinned): where it landed.
    pub(super) async fn add(&self, name: &str, body: reqwest::Body, len: u64) -> Result<Placed> {
        let form = self.file_form("add", name, body, len)?;
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
        // One JSON object per line; the last names the added file, with
        // its cumulative size as a string.
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| {
                let tsize = match &v["Size"] {
                    Value::String(s) => s.parse().ok()?,
                    n => n.as_u64()?,
                };
                Some(Placed {
                    cid: Cid::parse(v["Hash"].as_str()?).ok()?,
                    tsize,
                })
            })
            .ok_or_else(|| RegistryError::invalid("ipfs add response", "no Hash and Size"))
    }

    /// The multipart body of RPC `cmd` that sends one file.
    fn file_form(
        &self,
        cmd: &str,
        name: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<reqwest::multipart::Form> {
        let part = reqwest::multipart::Part::stream_with_length(body, len)
            .file_name(name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| RegistryError::permanent(self.backend(), format!("{cmd}: {e}")))?;
        Ok(reqwest::multipart::Form::new().part("file", part))
    }

    /// Where MFS `path` (or an `/ipfs/` path) points: `files/stat`.
    async fn stat_placed(&self, path: &str) -> Result<Placed> {
        let v: Value = self
            .rpc("files/stat", &[("arg", path)], None)
            .await?
            .json()
            .await
            .map_err(|e| RegistryError::invalid("ipfs files/stat", e.to_string()))?;
        let cid = v["Hash"]
            .as_str()
            .ok_or_else(|| RegistryError::invalid("ipfs files/stat", "no Hash"))?;
        Ok(Placed {
            cid: Cid::parse(cid)?,
            tsize: v["CumulativeSize"]
                .as_u64()
                .ok_or_else(|| RegistryError::invalid("ipfs files/stat", "no CumulativeSize"))?,
        })
    }

    /// A blob's path in the image directory and where it is on the node:
    /// this push's upload, or the index entry a previous push made.
    async fn place(&self, b: &CommitBlob) -> Result<(String, Placed)> {
        let placed = match b.uploaded.as_ref().and_then(|u| u.handle.as_deref()) {
            Some(h) => Placed::from_handle(h)
                .ok_or_else(|| RegistryError::invalid("ipfs upload handle", h.to_string()))?,
            None => self.stat_placed(&index_path(&b.digest)).await?,
        };
        Ok((layout::blob(&b.digest), placed))
    }

    /// `block/put` of one dag-pb block whose CID the caller computed; the
    /// node must name it the same.
    async fn put_dir_block(&self, block: Vec<u8>, cid: Cid) -> Result<()> {
        let len = block.len() as u64;
        let form = self.file_form("block/put", "block", reqwest::Body::from(block), len)?;
        let v: Value = self
            .rpc(
                "block/put",
                &[("cid-codec", "dag-pb"), ("mhtype", "sha2-256")],
                Some(form),
            )
            .await?
            .json()
            .await
            .map_err(|e| RegistryError::invalid("ipfs block/put", e.to_string()))?;
        match v["Key"].as_str().map(Cid::parse) {
            Some(Ok(got)) if got == cid => Ok(()),
            _ => Err(RegistryError::invalid(
                "ipfs block/put",
                format!("the node named the block {}, not {cid}", v["Key"]),
            )),
        }
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
        Ok(self.stat_placed(path).await?.cid.to_string())
    }

    fn root(&self) -> Result<&str> {
        self.cid.as_deref().ok_or_else(|| {
            RegistryError::not_found(
                "image: ipfs:// without a CID can only be pushed to (pull ipfs://<cid>)",
            )
        })
    }

    /// `cat` of `path` (`offset`, `length` of it), streamed.
    pub(super) async fn cat_stream(
        &self,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream> {
        self.read_stream("cat", "length", path, range).await
    }

    /// RPC `cmd` (`cat` or `files/read`) of `path`, streamed; a range is
    /// sent as `offset` and `len_arg` (what `cmd` calls the byte count).
    pub(super) async fn read_stream(
        &self,
        cmd: &'static str,
        len_arg: &str,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream> {
        let (o, l) = range.map_or((String::new(), String::new()), |(o, l)| {
            (o.to_string(), l.to_string())
        });
        let mut args = vec![("arg", path)];
        if range.is_some() {
            args.extend([("offset", o.as_str()), (len_arg, l.as_str())]);
        }
        let resp = self.rpc(cmd, &args, None).await?;
        let backend = self.backend();
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| http::send_error(backend.clone(), cmd, e))
        })))
    }

    /// `cat` of `path` whole, at most `limit` bytes; `None` when absent.
    async fn cat_small(&self, path: &str, limit: u64) -> Result<Option<Bytes>> {
        self.read_small_with("cat", "length", path, limit).await
    }

    /// [`read_stream`](Self::read_stream) of `path` whole, at most `limit`
    /// bytes (more is `InvalidData`); `None` when absent.
    pub(super) async fn read_small_with(
        &self,
        cmd: &'static str,
        len_arg: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<Bytes>> {
        let mut s = match self.read_stream(cmd, len_arg, path, None).await {
            Ok(s) => s,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            let c = c?;
            if (out.len() + c.len()) as u64 > limit {
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
        let placed = self
            .add(
                &format!("{}.zst", blob.digest.hex()),
                body,
                blob.encoded_size,
            )
            .await?;
        let cid = placed.cid;
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
            handle: Some(placed.handle()),
        })
    }

    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        let places: Vec<_> = req.blobs.iter().map(|b| self.place(b)).collect();
        let mut files = futures::stream::iter(places)
            .buffered(16)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        if let Some(sig) = req.signature {
            let body = reqwest::Body::from(sig.to_vec());
            let placed = self.add(layout::SIGNATURE, body, sig.len() as u64).await?;
            files.push((layout::SIGNATURE.to_string(), placed));
        }
        let body = reqwest::Body::from(req.manifest.to_vec());
        let placed = self
            .add(layout::MANIFEST, body, req.manifest.len() as u64)
            .await?;
        files.push((layout::MANIFEST.to_string(), placed));
        let (blocks, root) = image_dir::build(&files)?;
        for (cid, block) in blocks {
            self.put_dir_block(block, cid).await?;
        }
        let root = root.cid.to_string();
        self.rpc("pin/add", &[("arg", &format!("/ipfs/{root}"))], None)
            .await?;
        // The node's record of the image, which gc reads (see `keys`).
        self.record_commit(&req.manifest_digest, req.manifest, req.signature, &root)
            .await?;
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
                pf_registry_core::manifest::MAX_MANIFEST_BYTES as u64,
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
        self.cat_stream(&format!("/ipfs/{root}/{}", layout::blob(digest)), None)
            .await
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
        let path = format!("/ipfs/{root}/{}", layout::blob(digest));
        let body = self.cat_stream(&path, Some((offset, len))).await?;
        ranges::collect(body, digest, offset, len).await
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
