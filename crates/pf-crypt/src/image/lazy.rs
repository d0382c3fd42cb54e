//! The blobs of an image sealed for a push ([`seal_for_push`]), served to
//! the upload without writing sealed packs to disk where that pays.
//!
//! The outer manifest names every sealed pack by digest, so every pack is
//! sealed once before the upload starts. What happens to the bytes then:
//!
//! - a pack that hardly compressed (its sealed size at least 90% of its
//!   plaintext's) is dropped and sealed again when the upload reads it:
//!   its pieces were sealed raw, so sealing them again is a copy and
//!   AES-GCM, cheaper than writing the pack to disk and reading it back.
//!   The first seal's AEAD tags are kept (16 bytes a piece): the second
//!   seal is vouched for to the upload (not hashed again) only if every
//!   piece's length and tag match, that is if it is the same ciphertext
//!   under the same key and nonce; otherwise the upload re-hashes it, and
//!   a second seal that differed fails the push rather than send a
//!   misnamed blob;
//! - any other pack is held in memory within a budget ([`Staging`]; the
//!   upload reads it vouched for, without hashing it again), and written
//!   to the local store beyond it.
//!
//! For a destination whose spool files become its blobs (`file://`, see
//! [`EncodeAhead`]), every sealed pack over 1 MiB is instead encoded once
//! into that spool as it is sealed and offered to the upload as [`Prepared`] (the
//! upload then only moves it into place); its recipe stays, should the
//! upload read the pack after all.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, PoisonError, RwLock};

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::codec::{EncodeAhead, Prepared};
use pf_registry_core::manifest::FsTree;
use pf_registry_core::Manifest;

use super::pool::{Pool, PooledReader};
use super::{seal_pack, seal_with, tags, PackSeal, SealedImage};
use crate::keys::{DataKey, Recipient};
use crate::seal::Sealer;
use crate::staging::Staging;
use crate::Result;

/// How to seal a dropped pack again.
struct Recipe {
    tree: Arc<FsTree>,
    index: u32,
    plain: Digest,
    plain_size: u64,
    sealed_size: u64,
    pieces: Vec<(u32, u32)>,
    tags: Vec<[u8; 16]>,
}

/// The store a push of a sealed image reads from: packs sealed again on
/// demand, packs held in memory, and `spill` (the local store) for the
/// rest and for everything else put into it.
pub struct PushSource {
    sealer: Sealer,
    pool: Arc<Pool>,
    source: Arc<dyn BlobStore>,
    staging: Staging,
    recipes: RwLock<HashMap<Digest, Recipe>>,
    ahead: Option<EncodeAhead>,
    prepared: RwLock<HashMap<Digest, Arc<Prepared>>>,
}

impl std::fmt::Debug for PushSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSource")
            .field("staging", &self.staging)
            .finish_non_exhaustive()
    }
}

/// [`super::seal_image`] for a push: seals `inner` (whose blobs `source`
/// serves) and returns the image with the store its upload reads from,
/// holding at most `budget` bytes of sealed packs in memory (see the
/// module doc) and writing the rest, the sealed index and the envelope to
/// `spill`, or to memory while the budget lasts (see
/// [`PushSource::persist`]). With `ahead` (the destination's
/// [`pf_registry_core::Registry::encode_ahead`]), sealed packs are encoded
/// into its spool instead (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn seal_for_push(
    inner: &Manifest,
    source: Arc<dyn BlobStore>,
    key: &DataKey,
    recipients: &[Recipient],
    base: &[PackSeal],
    level: i32,
    spill: Arc<dyn BlobStore>,
    budget: u64,
    ahead: Option<EncodeAhead>,
) -> Result<(SealedImage, Arc<PushSource>)> {
    let push = Arc::new(PushSource {
        sealer: Sealer::new(key, level),
        pool: Arc::new(Pool::default()),
        source: source.clone(),
        staging: Staging::new(spill, budget),
        recipes: RwLock::new(HashMap::new()),
        ahead,
        prepared: RwLock::new(HashMap::new()),
    });
    let keep = |tree: &Arc<FsTree>, index: u32, pieces: &[(u32, u32)], bytes: Vec<u8>| {
        push.keep(tree, index, pieces, bytes)
    };
    let image = seal_with(
        inner,
        &*source,
        (&push.sealer, &push.pool),
        key,
        recipients,
        base,
        &*push,
        &keep,
    )?;
    Ok((image, push))
}

impl PushSource {
    fn keep(
        &self,
        tree: &Arc<FsTree>,
        index: u32,
        pieces: &[(u32, u32)],
        bytes: Vec<u8>,
    ) -> Result<Digest> {
        let plain_size: u64 = pieces.iter().map(|p| u64::from(p.0)).sum();
        let sealed_size = bytes.len() as u64;
        let digest = Digest::of(&bytes);
        // A small pack would be encoded in memory: it is served as below.
        let ahead = self
            .ahead
            .as_ref()
            .filter(|_| sealed_size > pf_registry_core::codec::IN_MEMORY_LIMIT);
        if let Some(a) = ahead {
            // Hashed from these very bytes just above: vouched for.
            let blob = pf_registry_core::codec::encode_from(
                &bytes[..],
                true,
                &digest,
                sealed_size,
                a.level,
                Some(&a.spool_dir),
                a.hash_encoded,
            )?;
            // It stays where it lies and becomes the blob: its writeback
            // can start while later packs are sealed.
            if let Some(p) = blob.spool_path() {
                pf_registry_core::codec::start_writeback(p);
            }
            self.prepared
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    digest,
                    Arc::new(Prepared {
                        blob,
                        plan: Vec::new(),
                    }),
                );
        }
        if ahead.is_some() || sealed_size * 10 >= plain_size * 9 {
            let plain = tree.packs[index as usize].blob;
            self.recipes
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    digest,
                    Recipe {
                        tree: tree.clone(),
                        index,
                        plain,
                        plain_size,
                        sealed_size,
                        pieces: pieces.to_vec(),
                        tags: tags(&bytes, pieces),
                    },
                );
        } else {
            self.staging.put_known(digest, &bytes)?;
        }
        self.pool.give(bytes);
        Ok(digest)
    }

    /// Writes blob `digest` to the local store if it is only held in
    /// memory (for what must outlive the push, such as the plaintext index
    /// the key book names).
    pub fn persist(&self, digest: &Digest) -> pf_cas::Result<()> {
        self.staging.persist(digest)
    }

    fn recipe_size(&self, digest: &Digest) -> Option<u64> {
        self.recipes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .map(|r| r.sealed_size)
    }

    /// Seals the pack of `digest` again, if it has a recipe; and whether
    /// it is the ciphertext sealed first (same pieces, same tags).
    fn reseal(&self, digest: &Digest) -> Option<pf_cas::Result<(Vec<u8>, bool)>> {
        let recipes = self.recipes.read().unwrap_or_else(PoisonError::into_inner);
        let r = recipes.get(digest)?;
        let res = seal_pack(
            (&self.sealer, &self.pool),
            &*self.source,
            &r.tree,
            r.index,
            r.plain,
            r.plain_size,
            Some(&r.pieces),
        );
        Some(
            res.map(|(bytes, pieces)| {
                let same = pieces == r.pieces && tags(&bytes, &pieces) == r.tags;
                (bytes, same)
            })
            .map_err(|e| pf_cas::CasError::Io {
                context: format!("sealing pack {digest} again"),
                source: std::io::Error::other(e.to_string()),
            }),
        )
    }
}

impl BlobStore for PushSource {
    fn has(&self, digest: &Digest) -> pf_cas::Result<bool> {
        Ok(self.recipe_size(digest).is_some() || self.staging.has(digest)?)
    }
    fn size(&self, digest: &Digest) -> pf_cas::Result<Option<u64>> {
        match self.recipe_size(digest) {
            Some(n) => Ok(Some(n)),
            None => self.staging.size(digest),
        }
    }
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        match self.recipe_size(digest) {
            Some(n) => Ok(size.is_none_or(|s| s == n)),
            None => self.staging.has_intact(digest, size),
        }
    }
    fn open(&self, digest: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
        Ok(self.open_vouched(digest)?.0)
    }
    /// A pack sealed again is vouched for if it matches the first seal
    /// piece by piece (see the module doc); one held in memory is (see
    /// [`Staging`]).
    fn open_vouched(&self, digest: &Digest) -> pf_cas::Result<(Box<dyn Read + Send>, bool)> {
        match self.reseal(digest) {
            Some(res) => {
                let (bytes, same) = res?;
                let reader = PooledReader::new(bytes, self.pool.clone());
                Ok((Box::new(reader), same))
            }
            None => self.staging.open_vouched(digest),
        }
    }
    fn list(&self) -> pf_cas::Result<Vec<Digest>> {
        Ok(crate::staging::listed(self.staging.list()?, &self.recipes))
    }
    /// A sealed pack encoded ahead into the destination's spool.
    fn prepared(&self, digest: &Digest) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let p = self
            .prepared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)?
            .clone();
        Some(p)
    }
    pf_cas::forward_to!(staging: put, put_stream, put_stream_as, get_named, put_named);
}
