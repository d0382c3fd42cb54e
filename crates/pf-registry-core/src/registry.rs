//! The user-facing [`Registry`] trait and its inputs and reports.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_sign::{SignatureEnvelope, SigningKey, Verification};
use serde::Serialize;

use crate::error::Result;
use crate::manifest::Manifest;

/// An image ready to push: exact manifest bytes plus an optional signature.
#[derive(Debug, Clone)]
pub struct SignedImage {
    /// Exact manifest bytes (what is hashed and signed).
    pub manifest: Bytes,
    /// Signature envelope bytes over `manifest`.
    pub signature: Option<Bytes>,
}

impl SignedImage {
    /// Serialises `manifest` canonically and signs it with `key` if given.
    pub fn new(manifest: &Manifest, key: Option<&SigningKey>) -> SignedImage {
        let bytes = manifest.to_bytes();
        let signature = key.map(|k| Bytes::from(k.sign_manifest(&bytes).to_json_bytes()));
        SignedImage {
            manifest: Bytes::from(bytes),
            signature,
        }
    }

    /// Digest of the manifest bytes.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    /// The parsed signature envelope, if any and well-formed.
    pub fn envelope(&self) -> Option<SignatureEnvelope> {
        self.signature
            .as_ref()
            .and_then(|s| SignatureEnvelope::from_json_bytes(s).ok())
    }
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PushReport {
    /// Digest of the pushed manifest bytes.
    pub manifest_digest: Digest,
    /// The resolved immutable reference (pinned ref, IPFS CID, HF commit…).
    pub resolved: String,
    /// Blobs in the image's closure.
    pub blobs_total: u64,
    /// Blobs uploaded by this push (the rest were already there).
    pub blobs_uploaded: u64,
    /// Raw bytes of the uploaded blobs.
    pub raw_bytes_uploaded: u64,
    /// Encoded bytes sent for blobs.
    pub wire_bytes_uploaded: u64,
    /// Whether the pushed image carries a signature.
    pub signed: bool,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PullReport {
    /// The verified, parsed manifest.
    pub manifest: Manifest,
    /// Digest of the manifest bytes.
    pub manifest_digest: Digest,
    /// Exact manifest bytes (for re-pushing elsewhere).
    #[serde(skip)]
    pub manifest_bytes: Bytes,
    /// Exact signature bytes, if any (for re-pushing elsewhere).
    #[serde(skip)]
    pub signature_bytes: Option<Bytes>,
    /// Signature verification outcome.
    pub verification: Verification,
    /// Blobs in the closure.
    pub blobs_total: u64,
    /// Blobs fetched from the backend.
    pub blobs_fetched: u64,
    /// Blobs the local store already had.
    pub blobs_present: u64,
    /// Encoded bytes received.
    pub wire_bytes_fetched: u64,
    /// Raw bytes written to the local store.
    pub raw_bytes_fetched: u64,
}

impl PullReport {
    /// The pulled image as a pushable [`SignedImage`] (signature preserved).
    pub fn signed_image(&self) -> SignedImage {
        SignedImage {
            manifest: self.manifest_bytes.clone(),
            signature: self.signature_bytes.clone(),
        }
    }
}

/// A manifest fetched and verified without pulling blobs (for `inspect`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspection {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its digest.
    pub manifest_digest: Digest,
    /// Signature outcome.
    pub verification: Verification,
    /// Raw manifest size.
    pub manifest_size: u64,
}

/// What [`Registry::read_chunks`] read.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ChunkRead {
    /// Each piece's verified raw bytes, in the order asked.
    pub chunks: Vec<Bytes>,
    /// Encoded bytes received (frame table and frames).
    pub wire_bytes: u64,
    /// Requests made.
    pub requests: u64,
}

/// Where a pull writes the blobs that are not index blobs.
pub trait PullTarget: Send + Sync {
    /// Called once per pull, after the manifest is verified and its index
    /// blobs (fs trees, KV page lists) are in `store`. Returns the store the
    /// remaining closure blobs (index children and the layers that are not
    /// index blobs) are checked against and decoded into: a blob it says it
    /// `has` is not fetched, so a target that needs only part of the image
    /// reports the rest present. Every blob it is given has been
    /// digest-verified by the engine's codec.
    fn data_store(
        &self,
        manifest: &Manifest,
        store: &Arc<dyn BlobStore>,
    ) -> Result<Arc<dyn BlobStore>>;

    /// Reorders `blobs`, which are about to be fetched into the store
    /// [`PullTarget::data_store`] returned; the engine fetches them in
    /// this order, several at a time. The default keeps the closure's
    /// order.
    fn order(&self, blobs: &mut Vec<crate::manifest::ClosureBlob>) {
        let _ = blobs;
    }
}

/// The default [`PullTarget`]: every blob goes into the caller's store.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepInStore;

impl PullTarget for KeepInStore {
    fn data_store(
        &self,
        _manifest: &Manifest,
        store: &Arc<dyn BlobStore>,
    ) -> Result<Arc<dyn BlobStore>> {
        Ok(store.clone())
    }
}

/// A place images can be pushed to and pulled from. Implemented once, by the
/// engine, for every backend.
#[async_trait]
pub trait Registry: Send + Sync {
    /// The reference this registry handle points at (no credentials).
    fn location(&self) -> String;

    /// Uploads the blobs the backend lacks, then commits signature and
    /// manifest last. Every closure blob must be in `store`.
    async fn push(&self, store: Arc<dyn BlobStore>, image: &SignedImage) -> Result<PushReport>;

    /// Fetches and verifies the manifest, then fetches the closure blobs
    /// `store` lacks, verifying each.
    async fn pull(&self, store: Arc<dyn BlobStore>) -> Result<PullReport> {
        self.pull_into(store, &KeepInStore).await
    }

    /// Like [`Registry::pull`], but once the manifest is verified and its
    /// index blobs are in `store`, `target` picks the store the other blobs
    /// are checked against and written into (e.g. one that writes file
    /// contents straight into a restore directory).
    async fn pull_into(
        &self,
        store: Arc<dyn BlobStore>,
        target: &dyn PullTarget,
    ) -> Result<PullReport>;

    /// Fetches and verifies the manifest only.
    async fn inspect(&self) -> Result<Inspection>;

    /// Reads some chunks of format v2 pack `pack` (`pack_size` raw bytes)
    /// by range, without fetching the whole pack: each piece (raw offset,
    /// length, chunk digest) comes back verified against its digest, in
    /// order. The pack's frame table is read first; nearby frames are
    /// fetched in one request. A pack without a frame table is
    /// `NotSupported` (fetch it whole instead).
    async fn read_chunks(
        &self,
        pack: &Digest,
        pack_size: u64,
        pieces: &[crate::manifest::Piece],
    ) -> Result<ChunkRead> {
        let _ = (pack, pack_size, pieces);
        Err(crate::RegistryError::not_supported(
            self.location(),
            "ranged chunk reads",
        ))
    }

    /// Whether an image exists at the reference.
    async fn exists(&self) -> Result<bool>;

    /// How this destination's pushes encode packs, when a snapshot should
    /// encode its new packs ahead (while it reads them) and offer them as
    /// [`crate::codec::Prepared`]: for a destination on a local
    /// filesystem, whose spool files become its blobs. `None` (the
    /// default): encoding ahead would only spool a copy.
    fn encode_ahead(&self) -> Option<crate::codec::EncodeAhead> {
        None
    }
}
