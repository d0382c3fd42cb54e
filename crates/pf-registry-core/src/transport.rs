//! The thin transport trait each backend implements, and the encoded blob
//! type the engine hands to it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use pf_digest::Digest;

use crate::error::{RegistryError, Result};
use crate::lifecycle::{RmReport, StoredKey};

/// A stream of encoded bytes coming from a backend.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// The body of an encoded blob: in memory when small, a temp file otherwise.
#[derive(Clone)]
enum Body {
    Memory(Bytes),
    File(Arc<tempfile::TempPath>),
}

/// One blob encoded for transfer: a zstd frame of the raw bytes named by the
/// RAW digest. The body can be reopened, so uploads can be retried.
#[derive(Clone)]
pub struct EncodedBlob {
    /// Digest of the raw bytes (the blob's name).
    pub digest: Digest,
    /// Raw size.
    pub raw_size: u64,
    /// Digest of the encoded bytes when computed while encoding (see
    /// [`Transport::wants_encoded_digest`]); [`EncodedBlob::encoded_digest`]
    /// computes it otherwise.
    encoded_digest: Option<Digest>,
    /// Encoded size.
    pub encoded_size: u64,
    body: Body,
}

impl std::fmt::Debug for EncodedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedBlob")
            .field("digest", &self.digest)
            .field("raw_size", &self.raw_size)
            .field("encoded_size", &self.encoded_size)
            .finish()
    }
}

impl EncodedBlob {
    /// An encoded blob held in memory.
    pub fn in_memory(digest: Digest, raw_size: u64, encoded: Bytes) -> Self {
        EncodedBlob {
            digest,
            raw_size,
            encoded_digest: None,
            encoded_size: encoded.len() as u64,
            body: Body::Memory(encoded),
        }
    }

    /// An encoded blob spooled in a temp file (deleted when the last clone drops).
    pub fn spooled(
        digest: Digest,
        raw_size: u64,
        encoded_digest: Option<Digest>,
        encoded_size: u64,
        path: tempfile::TempPath,
    ) -> Self {
        EncodedBlob {
            digest,
            raw_size,
            encoded_digest,
            encoded_size,
            body: Body::File(Arc::new(path)),
        }
    }

    /// Digest of the encoded bytes (OCI blob digest, LFS oid): the one
    /// computed while encoding, or else one read of the body (in memory or
    /// the spool file).
    pub fn encoded_digest(&self) -> Result<Digest> {
        match (&self.encoded_digest, &self.body) {
            (Some(d), _) => Ok(*d),
            (None, Body::Memory(b)) => Ok(Digest::of(b)),
            (None, Body::File(_)) => self
                .open()
                .and_then(Digest::of_reader)
                .map(|(d, _)| d)
                .map_err(|e| RegistryError::io("hashing encoded blob", e)),
        }
    }

    /// Opens the encoded bytes for reading from the start.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.body {
            Body::Memory(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
            Body::File(p) => Ok(Box::new(File::open(p.as_ref() as &Path)?)),
        }
    }

    /// The encoded bytes if they are held in memory.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.body {
            Body::Memory(b) => Some(b),
            Body::File(_) => None,
        }
    }

    /// The spool file path, when spooled.
    pub fn spool_path(&self) -> Option<&Path> {
        match &self.body {
            Body::Memory(_) => None,
            Body::File(p) => Some(p.as_ref()),
        }
    }

    /// Reads the whole encoded body into memory (for small blobs / tests).
    pub fn read_all(&self) -> io::Result<Bytes> {
        match &self.body {
            Body::Memory(b) => Ok(b.clone()),
            Body::File(p) => Ok(Bytes::from(std::fs::read(p.as_ref() as &Path)?)),
        }
    }

    /// Streams the encoded body in `chunk`-sized pieces without loading it whole.
    pub fn stream(&self, chunk: usize) -> ByteStream {
        match &self.body {
            Body::Memory(b) => {
                let b = b.clone();
                let pieces: Vec<Result<Bytes>> = (0..b.len())
                    .step_by(chunk.max(1))
                    .map(|i| Ok(b.slice(i..(i + chunk).min(b.len()))))
                    .collect();
                Box::pin(futures::stream::iter(pieces))
            }
            Body::File(p) => {
                let p = p.clone();
                let fut = async move {
                    let f = tokio::fs::File::open(p.as_ref() as &Path)
                        .await
                        .map_err(|e| RegistryError::io("opening spooled blob", e))?;
                    // Keep the temp path alive as long as the stream.
                    let s = tokio_util::io::ReaderStream::with_capacity(f, chunk);
                    Ok::<_, RegistryError>(futures::StreamExt::map(s, move |r| {
                        let _keep = &p;
                        r.map_err(|e| RegistryError::io("reading spooled blob", e))
                    }))
                };
                Box::pin(futures::TryFutureExt::try_flatten_stream(fut))
            }
        }
    }

    /// Moves (or copies) the encoded body to `dest`, creating it; the caller
    /// is responsible for fsync and final rename.
    pub fn persist_to(&self, dest: &Path) -> io::Result<()> {
        match &self.body {
            Body::Memory(b) => std::fs::write(dest, b),
            Body::File(p) => {
                let src: &Path = p.as_ref();
                std::fs::copy(src, dest).map(|_| ())
            }
        }
    }
}

/// What a backend reports after storing one encoded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedBlob {
    /// Raw digest.
    pub digest: Digest,
    /// Digest of the stored encoded bytes, when the backend needed it.
    pub encoded_digest: Option<Digest>,
    /// Encoded size.
    pub encoded_size: u64,
    /// Backend-specific location handle (e.g. an IPFS CID).
    pub handle: Option<String>,
}

impl UploadedBlob {
    /// The encoded digest a backend that asked for it (see
    /// [`Transport::wants_encoded_digest`]) needs at commit; an error if
    /// the upload did not record one.
    pub fn require_encoded_digest(&self) -> Result<Digest> {
        self.encoded_digest.ok_or_else(|| {
            RegistryError::invalid(
                format!("blob {}", self.digest),
                "uploaded without an encoded digest",
            )
        })
    }
}

/// One blob of the image being committed.
#[derive(Debug, Clone)]
pub struct CommitBlob {
    /// Raw digest.
    pub digest: Digest,
    /// Raw size when known.
    pub raw_size: Option<u64>,
    /// Set when uploaded by this push; `None` when the backend already had it.
    pub uploaded: Option<UploadedBlob>,
}

/// Everything a backend needs to make an image visible, atomically if it can.
#[derive(Debug)]
pub struct CommitRequest<'a> {
    /// The exact manifest bytes.
    pub manifest: &'a [u8],
    /// Their digest.
    pub manifest_digest: Digest,
    /// The signature envelope bytes, if signed.
    pub signature: Option<&'a [u8]>,
    /// Every blob of the closure, in closure order.
    pub blobs: &'a [CommitBlob],
}

/// The manifest and signature as stored by a backend.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Exact manifest bytes.
    pub manifest: Bytes,
    /// Signature envelope bytes, if present.
    pub signature: Option<Bytes>,
    /// True when the backend already verified the reference's digest pin
    /// against its own immutable identifier (e.g. an OCI manifest digest).
    pub pin_verified: bool,
}

/// A transport's offline mode (see [`Transport::local_manifests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalManifests {
    /// `Some(switch)` when the network is barred, naming what barred it
    /// (`HF_HUB_OFFLINE`): a pull then reads the manifest and every blob
    /// from the local store and fails rather than connect.
    pub offline: Option<String>,
    /// A name for the immutable revision the transport reads (a Hub
    /// commit id, with the endpoint and repository), under which a pull
    /// records its manifest; `None` if the revision can move (a branch).
    pub revision: Option<String>,
}

impl LocalManifests {
    /// Online (`offline` `None`) or offline, reading `revision`.
    pub fn new(offline: Option<String>, revision: Option<String>) -> Self {
        LocalManifests { offline, revision }
    }
}

/// The thin per-backend transport the shared engine drives.
///
/// Implementations move bytes; they never decide what to move. All methods
/// must be safe to call concurrently.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Human-readable location for messages (never contains credentials).
    fn location(&self) -> String;

    /// Of `digests`, those the backend does not have. Called in batches of at
    /// most [`max_batch`](Self::max_batch).
    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>>;

    /// Largest batch for [`missing`](Self::missing).
    fn max_batch(&self) -> usize {
        1000
    }

    /// Directory where the engine should spool encoded blobs so that
    /// [`put_blob`](Self::put_blob) can rename instead of copy.
    fn spool_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether pulls through this transport keep their manifest in the
    /// local store for a later pull without the network, and whether this
    /// one is such a pull (see [`crate::offline`]). `None` (the default):
    /// the backend has no offline mode and nothing is recorded.
    fn local_manifests(&self) -> Option<LocalManifests> {
        None
    }

    /// Whether [`put_blob`](Self::put_blob) needs
    /// [`EncodedBlob::encoded_digest`] (OCI and LFS address blobs by it).
    /// When true the engine hashes the encoded bytes as it writes them;
    /// backends that name blobs by their raw digest say false and save a
    /// SHA-256 pass over every uploaded byte.
    fn wants_encoded_digest(&self) -> bool {
        true
    }

    /// Stores one encoded blob. Must be idempotent.
    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob>;

    /// Makes the image visible: signature and manifest LAST, after every blob
    /// is durable. Returns the resolved immutable reference as a string.
    async fn commit(&self, req: CommitRequest<'_>) -> Result<String>;

    /// Fetches the manifest and signature; `NotFound` if absent.
    async fn get_manifest(&self) -> Result<FetchedManifest>;

    /// Streams one encoded blob (named by its raw digest); `NotFound` if absent.
    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream>;

    /// Reads `len` bytes of one stored (encoded) blob starting at
    /// encoded-byte `offset`. `NotFound` if the blob is absent; an error
    /// (not short data) if the range runs past the blob's end; `len` of 0
    /// or above [`MAX_RANGE`](crate::ranges::MAX_RANGE) is refused. The
    /// default streams [`get_blob`](Self::get_blob) and skips to the range
    /// ([`ranges::via_stream`](crate::ranges::via_stream)); backends with
    /// native ranged reads override it. Callers retry through
    /// [`ranges::read_range`](crate::ranges::read_range).
    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        crate::ranges::via_stream(self, digest, offset, len).await
    }

    /// Whether a manifest exists at the reference.
    async fn exists(&self) -> Result<bool> {
        match self.get_manifest().await {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The repository's raw keys ([`crate::layout`]) for lifecycle work
    /// ([`crate::lifecycle`]), on the backends where pf owns the storage;
    /// `None` (the default) elsewhere.
    fn keys(&self) -> Option<&dyn KeyStore> {
        None
    }

    /// [`KeyStore::list_keys`], or `NotSupported` without [`Transport::keys`].
    async fn list_keys(&self, dir: &str) -> Result<Vec<StoredKey>> {
        self.keys_or("listing keys")?.list_keys(dir).await
    }

    /// [`KeyStore::read_key`], or `NotSupported` without [`Transport::keys`].
    async fn read_key(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        self.keys_or("reading keys")?.read_key(key, limit).await
    }

    /// [`KeyStore::write_key`], or `NotSupported` without [`Transport::keys`].
    async fn write_key(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.keys_or("writing keys")?.write_key(key, bytes).await
    }

    /// [`KeyStore::delete_key`], or `NotSupported` without [`Transport::keys`].
    async fn delete_key(&self, key: &str) -> Result<()> {
        self.keys_or("deleting keys")?.delete_key(key).await
    }

    /// Deletes a tag (`digest` `None`; `tag` `None` is the reference's own
    /// or the untagged head) or, with `digest`, a manifest and the tags
    /// pointing at it, through the backend's own API: for a backend whose
    /// storage pf does not own ([`Transport::keys`] is `None`, e.g. an OCI
    /// registry). [`crate::lifecycle::rm`] calls it there. `NotSupported`
    /// by default.
    async fn remove_reference(
        &self,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<RmReport> {
        let _ = (tag, digest);
        Err(RegistryError::not_supported(
            self.location(),
            "deleting tags or manifests",
        ))
    }

    /// Whether the backend keeps what `gc` deletes in a history that
    /// [`Transport::squash_history`] can drop (the Hub's git history).
    fn keeps_history(&self) -> bool {
        false
    }

    /// Drops the history of the reference's branch, keeping its current
    /// files (the Hub's super-squash): deleted files stop taking storage,
    /// and every older revision stops resolving. `NotSupported` by default.
    async fn squash_history(&self) -> Result<()> {
        Err(RegistryError::not_supported(
            self.location(),
            "squashing history",
        ))
    }

    /// [`Transport::keys`], or `NotSupported` naming `what`.
    fn keys_or(&self, what: &str) -> Result<&dyn KeyStore> {
        self.keys()
            .ok_or_else(|| RegistryError::not_supported(self.location(), what))
    }
}

/// Raw access to a repository's keys ([`crate::layout`]), for lifecycle
/// work on backends where pf owns the storage (see [`Transport::keys`]).
/// A backend whose key operations are single requests nothing else
/// retries implements [`crate::lifecycle::KeyAttempts`] instead and gets
/// this trait with each operation under a retry policy.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored object under the directory `dir` (a layout key prefix
    /// such as `blobs/sha256` or `tags`), recursively, with keys relative to
    /// the repository root. An absent directory lists as empty.
    async fn list_keys(&self, dir: &str) -> Result<Vec<StoredKey>>;

    /// The object at `key`, at most `limit` bytes (more is `InvalidData`);
    /// `None` when absent.
    async fn read_key(&self, key: &str, limit: u64) -> Result<Option<Bytes>>;

    /// Writes `bytes` at `key` atomically (readers see all or nothing),
    /// visible to every reader once this returns. Durability across a
    /// crash is not required: keys hold the markers of running pushes and
    /// gcs (see [`crate::lifecycle`]), which matter only while their
    /// writer runs.
    async fn write_key(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Deletes the object at `key`; an absent key is not an error.
    async fn delete_key(&self, key: &str) -> Result<()>;

    /// Deletes every key of `keys` (absent ones are not an error), issued
    /// at once: by default [`delete_key`](Self::delete_key) calls 8 at a
    /// time; a backend that deletes many keys in one request (a Hub
    /// commit) overrides it.
    async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        delete_each(self, keys).await
    }
}

/// [`KeyStore::delete_key`] of every key of `keys`, 8 at a time.
pub(crate) async fn delete_each<S: KeyStore + ?Sized>(store: &S, keys: &[String]) -> Result<()> {
    for chunk in keys.chunks(8) {
        futures::future::try_join_all(chunk.iter().map(|k| store.delete_key(k))).await?;
    }
    Ok(())
}

/// Boxed transports are transports, so tests and facades can erase types.
#[async_trait]
impl Transport for Box<dyn Transport> {
    fn location(&self) -> String {
        (**self).location()
    }
    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        (**self).missing(digests).await
    }
    fn max_batch(&self) -> usize {
        (**self).max_batch()
    }
    fn spool_dir(&self) -> Option<std::path::PathBuf> {
        (**self).spool_dir()
    }
    fn wants_encoded_digest(&self) -> bool {
        (**self).wants_encoded_digest()
    }
    fn local_manifests(&self) -> Option<LocalManifests> {
        (**self).local_manifests()
    }
    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        (**self).put_blob(blob).await
    }
    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        (**self).commit(req).await
    }
    async fn get_manifest(&self) -> Result<FetchedManifest> {
        (**self).get_manifest().await
    }
    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        (**self).get_blob(digest).await
    }
    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        (**self).get_blob_range(digest, offset, len).await
    }
    async fn exists(&self) -> Result<bool> {
        (**self).exists().await
    }
    fn keys(&self) -> Option<&dyn KeyStore> {
        (**self).keys()
    }
    async fn remove_reference(
        &self,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<RmReport> {
        (**self).remove_reference(tag, digest).await
    }
    fn keeps_history(&self) -> bool {
        (**self).keeps_history()
    }
    async fn squash_history(&self) -> Result<()> {
        (**self).squash_history().await
    }
}
