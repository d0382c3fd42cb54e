//! Opening an encrypted image: the index first ([`open_index`]), then the
//! packs on demand through a store view ([`OpenedStore`]) that restores,
//! `ls` and `cat` read like any store, or all at once into the store
//! ([`open_image`]).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::Arc;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{FsTree, MAX_INDEX_BYTES};
use pf_registry_core::pack::{PackCheck, Tilings};
use pf_registry_core::Manifest;

use super::index::{Index, PackSeal};
use super::{
    read_verified, ENVELOPE_MEDIA_TYPE, ENVELOPE_MEDIA_TYPE_V1, ENVELOPE_MEDIA_TYPE_V2,
    ENVELOPE_ROLE, INDEX_ROLE, MAX_ENVELOPE_BYTES, MAX_PACK_BYTES,
};
use crate::envelope::KeyEnvelope;
use crate::keys::Identity;
use crate::seal::{Sealer, OVERHEAD};
use crate::{CryptError, Result};

/// An encrypted image opened with an identity.
#[derive(Debug)]
pub struct Opened {
    /// The plaintext (inner) manifest.
    pub manifest: Manifest,
    /// The store with the plaintext packs in view.
    pub store: Arc<OpenedStore>,
}

/// A view of a store holding an encrypted image's sealed packs: it serves
/// each plaintext pack the sealed index names by opening its sealed pack
/// piece by piece as it is read (nothing plaintext is written), and passes
/// everything else to the store. Like any store's, its readers do not
/// check the plaintext digest (restores and `cat` hash what they read);
/// every piece is authenticated before a byte of it is served.
pub struct OpenedStore {
    inner: Arc<dyn BlobStore>,
    sealer: Arc<Sealer>,
    seals: HashMap<Digest, PackSeal>,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("packs", &self.seals.len())
            .finish_non_exhaustive()
    }
}

/// The layer of role `role`, refused if it declares more than `max` bytes
/// or the image is sealed in another encryption format than this one.
fn find<'a>(outer: &'a Manifest, role: &str, max: u64) -> Result<&'a pf_registry_core::Descriptor> {
    match outer.layers.iter().find(|l| l.role == ENVELOPE_ROLE) {
        Some(e)
            if [ENVELOPE_MEDIA_TYPE, ENVELOPE_MEDIA_TYPE_V2].contains(&e.media_type.as_str()) => {}
        Some(e) if e.media_type == ENVELOPE_MEDIA_TYPE_V1 => {
            return Err(CryptError::Malformed(
                "sealed in encryption format v1 (ChaCha20-Poly1305) by an earlier pf, \
                 which this pf does not open; push it again from its plaintext"
                    .into(),
            ))
        }
        Some(e) => {
            return Err(CryptError::Malformed(format!(
                "unknown encryption format {:?} (a newer pf?)",
                e.media_type
            )))
        }
        None => return Err(CryptError::Malformed(format!("no {ENVELOPE_ROLE} layer"))),
    }
    let l = outer
        .layers
        .iter()
        .find(|l| l.role == role)
        .ok_or_else(|| CryptError::Malformed(format!("no {role} layer")))?;
    if l.size > max {
        return Err(CryptError::Malformed(format!(
            "the {role} layer declares {} bytes, over {max}",
            l.size
        )));
    }
    Ok(l)
}

/// The key envelope of encrypted image `outer` (its layer must be in
/// `store`): who the image was sealed for.
pub fn envelope(outer: &Manifest, store: &dyn BlobStore) -> Result<KeyEnvelope> {
    let env = find(outer, ENVELOPE_ROLE, MAX_ENVELOPE_BYTES)?;
    KeyEnvelope::from_bytes(&read_verified(store, &env.digest)?)
}

/// Opens the envelope and the sealed index of the encrypted image `outer`
/// (both layers must be in `store`; the sealed packs need not be yet):
/// unwraps the data key with `identity`, checks the index against the
/// outer layers, writes the plaintext fs trees into `store` and returns
/// the inner manifest with a view of `store` that opens the packs when
/// read. Sizes are bounded before anything is read or opened: the
/// envelope ([`MAX_ENVELOPE_BYTES`]), the index, each pack
/// ([`MAX_PACK_BYTES`]) and the packs' plaintext total (`max_total`).
/// Without an identity: [`CryptError::NeedIdentity`] naming the key ids;
/// with a wrong one: [`CryptError::WrongIdentity`].
pub fn open_index(
    outer: &Manifest,
    store: Arc<dyn BlobStore>,
    identity: Option<&Identity>,
    max_total: u64,
) -> Result<Opened> {
    let (manifest, sealer, seals, _) = open_parts(outer, &*store, identity, max_total)?;
    Ok(Opened {
        manifest,
        store: Arc::new(OpenedStore {
            inner: store,
            sealer: Arc::new(sealer),
            seals,
        }),
    })
}

/// [`open_index`] with the first of `identities` the image was sealed for
/// (by key id); none given: [`CryptError::NeedIdentity`]; none of them:
/// [`CryptError::WrongIdentity`] for the first.
pub fn open_index_with(
    outer: &Manifest,
    store: Arc<dyn BlobStore>,
    identities: &[Identity],
    max_total: u64,
) -> Result<Opened> {
    let id = pick(&envelope(outer, &*store)?, identities);
    open_index(outer, store, id, max_total)
}

/// The first of `identities` that `env` lists, else the first one (to
/// name in a [`CryptError::WrongIdentity`]).
pub fn pick<'a>(env: &KeyEnvelope, identities: &'a [Identity]) -> Option<&'a Identity> {
    let ids = env.key_ids();
    identities
        .iter()
        .find(|i| ids.contains(&i.key_id()))
        .or(identities.first())
}

/// What [`open_index`] opens: the inner manifest, the sealer, the seals,
/// and the tilings of the packs named by their chunks.
type Parts = (Manifest, Sealer, HashMap<Digest, PackSeal>, Tilings);

fn open_parts(
    outer: &Manifest,
    store: &dyn BlobStore,
    identity: Option<&Identity>,
    max_total: u64,
) -> Result<Parts> {
    let env = envelope(outer, store)?;
    let identity = identity.ok_or_else(|| CryptError::NeedIdentity(env.key_ids()))?;
    let sealer = Sealer::new(&env.unwrap_key(identity)?, 3);
    let sealed_index = read_verified(store, &find(outer, INDEX_ROLE, MAX_INDEX_BYTES)?.digest)?;
    let index = Index::from_bytes(&sealer.open(&sealed_index, MAX_INDEX_BYTES as usize)?)?;
    // Every tree is one of the inner manifest's layers; every pack is in
    // the map and its sealed form is an outer layer of the declared size.
    let layers: HashSet<(Digest, u64)> = outer.layers.iter().map(|l| (l.digest, l.size)).collect();
    let all: HashMap<Digest, &PackSeal> = index.packs.iter().map(|s| (s.plain, s)).collect();
    let mut seals: HashMap<Digest, PackSeal> = HashMap::new();
    let mut by_chunks = Tilings::new();
    let inner_trees: HashSet<Digest> = index.manifest.layers.iter().map(|l| l.digest).collect();
    for text in &index.trees {
        let tree = FsTree::from_bytes(text.as_bytes())?;
        if !inner_trees.contains(&Digest::of(text.as_bytes())) {
            return Err(CryptError::Malformed(
                "a sealed fs tree is not a layer of the sealed manifest".into(),
            ));
        }
        for p in &tree.packs {
            let s = all
                .get(&p.blob)
                .ok_or_else(|| CryptError::Malformed(format!("pack {} has no seal", p.blob)))?;
            if s.plain_size != p.size || !layers.contains(&(s.sealed, s.sealed_size)) {
                return Err(CryptError::Malformed(format!(
                    "pack {} is not an outer layer of its declared size",
                    p.blob
                )));
            }
            if s.plain_size > MAX_PACK_BYTES {
                return Err(CryptError::Malformed(format!(
                    "pack {} is over the {MAX_PACK_BYTES}-byte limit of an encrypted pack",
                    p.blob
                )));
            }
            seals.entry(s.plain).or_insert_with(|| (*s).clone());
        }
        by_chunks.extend(pf_registry_core::pack::chunk_named(&tree));
    }
    let total: u64 = seals.values().map(|s| s.plain_size).sum();
    if total > max_total {
        return Err(CryptError::Malformed(format!(
            "the image's packs hold {total} bytes, over the {max_total}-byte limit"
        )));
    }
    for text in &index.trees {
        store.put(text.as_bytes())?;
    }
    Ok((index.manifest, sealer, seals, by_chunks))
}

/// Opens the encrypted image `outer`, whose closure is in `store`, and
/// writes its plaintext trees and packs into `store` (see [`open_index`]
/// for the checks). A pack is stored only once all its pieces passed
/// authentication and it hashes to the digest the index names; a pack
/// named by its chunks (what `pf push --encrypt-to` writes) is checked
/// chunk by chunk and stored under that name
/// ([`BlobStore::put_stream_as`]). A
/// tampered piece fails with [`CryptError::Authentication`]. Returns the
/// inner (plaintext) manifest.
pub fn open_image(
    outer: &Manifest,
    store: &dyn BlobStore,
    identity: Option<&Identity>,
    max_total: u64,
) -> Result<Manifest> {
    let (manifest, sealer, seals, by_chunks) = open_parts(outer, store, identity, max_total)?;
    let sealer = Arc::new(sealer);
    let todo: Vec<&PackSeal> = seals.values().collect();
    let done: Vec<Result<()>> = {
        use rayon::prelude::*;
        todo.par_iter()
            .map(|s| {
                let mut r = pack_reader(&sealer, store, s)?;
                let size = Some(s.plain_size);
                match by_chunks.get(&s.plain) {
                    // Named by its chunks: checked chunk by chunk, and
                    // stored under that name.
                    Some(t) => {
                        if !store.has_intact_as(&s.plain, size, &mut PackCheck::new(Some(t)))? {
                            store
                                .put_stream_as(&s.plain, &mut PackCheck::new(Some(t)), &mut r)
                                .map_err(|e| unwrap_auth(e, s))?;
                        }
                        Ok(())
                    }
                    None if store.has_intact(&s.plain, size)? => Ok(()),
                    None => {
                        store
                            .put_stream(Some(&s.plain), &mut r)
                            .map_err(|e| unwrap_auth(e, s))?;
                        Ok(())
                    }
                }
            })
            .collect()
    };
    done.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(manifest)
}

/// The error a store returned while reading an opened pack: an
/// authentication failure travels through `io::Error`; a digest mismatch
/// is the decrypted pack's.
fn unwrap_auth(e: pf_cas::CasError, s: &PackSeal) -> CryptError {
    if let pf_cas::CasError::Io { source, .. } = &e {
        if source.get_ref().is_some_and(|i| i.is::<AuthFailed>()) {
            return CryptError::Authentication;
        }
    }
    match e {
        pf_cas::CasError::Integrity { expected, actual } => {
            pf_registry_core::RegistryError::Integrity {
                what: format!("decrypted pack {}", s.plain),
                expected,
                actual,
            }
            .into()
        }
        e => e.into(),
    }
}

/// The `io::Error` payload of a piece that failed authentication.
#[derive(Debug)]
pub(crate) struct AuthFailed;

impl std::fmt::Display for AuthFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sealed piece failed authentication")
    }
}

impl std::error::Error for AuthFailed {}

impl OpenedStore {
    /// The plaintext packs in view and how each is sealed.
    pub fn seals(&self) -> impl Iterator<Item = &PackSeal> {
        self.seals.values()
    }

    /// The store the sealed packs are in.
    pub(crate) fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// The sealer of the image's data key.
    pub(crate) fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }
}

/// A reader of plaintext pack `s`, opened from its sealed pack in `store`
/// piece by piece.
fn pack_reader(
    sealer: &Arc<Sealer>,
    store: &dyn BlobStore,
    s: &PackSeal,
) -> pf_cas::Result<PackReader> {
    let sealed = store.open(&s.sealed).map_err(|e| match e {
        pf_cas::CasError::NotFound(_) => pf_cas::CasError::NotFound(s.plain),
        e => e,
    })?;
    Ok(PackReader {
        sealed,
        sealer: sealer.clone(),
        pieces: s.pieces.clone().into_iter(),
        ct: Vec::new(),
        plain: Vec::new(),
        span: (false, 0, 0),
        at: 0,
    })
}

impl BlobStore for OpenedStore {
    fn has(&self, digest: &Digest) -> pf_cas::Result<bool> {
        match self.seals.get(digest) {
            Some(s) => self.inner.has(&s.sealed),
            None => self.inner.has(digest),
        }
    }
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        match self.seals.get(digest) {
            Some(s) if size.is_none_or(|n| n == s.plain_size) => {
                self.inner.has_intact(&s.sealed, Some(s.sealed_size))
            }
            Some(_) => Ok(false),
            None => self.inner.has_intact(digest, size),
        }
    }
    fn size(&self, digest: &Digest) -> pf_cas::Result<Option<u64>> {
        match self.seals.get(digest) {
            Some(s) => Ok(self.inner.has(&s.sealed)?.then_some(s.plain_size)),
            None => self.inner.size(digest),
        }
    }
    /// A plaintext pack is opened from its sealed pack, or read as is if
    /// only a plaintext copy is local (an earlier pull without `--into`).
    fn open(&self, digest: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
        match self.seals.get(digest) {
            Some(s) if self.inner.has(&s.sealed)? || !self.inner.has(digest)? => {
                Ok(Box::new(pack_reader(&self.sealer, &*self.inner, s)?))
            }
            _ => self.inner.open(digest),
        }
    }
    pf_cas::forward_to!(inner: put, put_stream, put_stream_as, list, get_named, put_named);
}

/// Streams a plaintext pack: reads each sealed piece, opens it (failing
/// with [`AuthFailed`] unless it authenticates), serves its plaintext.
/// Memory is one piece.
pub(crate) struct PackReader<R = Box<dyn Read + Send>> {
    pub(crate) sealed: R,
    sealer: Arc<Sealer>,
    pieces: std::vec::IntoIter<(u32, u32)>,
    ct: Vec<u8>,
    plain: Vec<u8>,
    /// Where the current piece's plaintext lies: in `ct` (or `plain`),
    /// from, to.
    span: (bool, usize, usize),
    at: usize,
}

impl<R: Read> PackReader<R> {
    /// Opens the plaintext of a sealed pack read from `sealed`, whose
    /// pieces are `pieces`.
    pub(crate) fn new(sealed: R, sealer: Arc<Sealer>, pieces: Vec<(u32, u32)>) -> PackReader<R> {
        PackReader {
            sealed,
            sealer,
            pieces: pieces.into_iter(),
            ct: Vec::new(),
            plain: Vec::new(),
            span: (false, 0, 0),
            at: 0,
        }
    }

    fn next_piece(&mut self) -> io::Result<bool> {
        let Some((p, c)) = self.pieces.next() else {
            // Nothing may follow the last piece.
            let mut extra = [0u8; 1];
            return match self.sealed.read(&mut extra)? {
                0 => Ok(false),
                _ => Err(io::Error::other(AuthFailed)),
            };
        };
        if (c as usize) < OVERHEAD {
            return Err(io::Error::other(AuthFailed));
        }
        self.ct.resize(c as usize, 0);
        self.sealed.read_exact(&mut self.ct).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::other(AuthFailed)
            } else {
                e
            }
        })?;
        // A raw piece is served from where it was decrypted, a compressed
        // one from `plain`.
        let at = self
            .sealer
            .open_in_place(&mut self.ct, p as usize, &mut self.plain)
            .map_err(|_| io::Error::other(AuthFailed))?;
        self.span = match at {
            Some(r) => (true, r.start, r.end),
            None => (false, 0, self.plain.len()),
        };
        if self.span.2 - self.span.1 != p as usize {
            return Err(io::Error::other(AuthFailed));
        }
        self.at = self.span.1;
        Ok(true)
    }
}

impl<R: Read> Read for PackReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.span.2 {
            if !self.next_piece()? {
                return Ok(0);
            }
        }
        let (in_ct, _, end) = self.span;
        let from = if in_ct { &self.ct } else { &self.plain };
        let n = buf.len().min(end - self.at);
        buf[..n].copy_from_slice(&from[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
