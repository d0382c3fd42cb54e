//! Sealing a plaintext format v2 image into an encrypted one, and opening
//! it again.
//!
//! The outer manifest (what the engine pushes, signs and copies) holds:
//! agent `pf-crypt`, `created_at` 1970-01-01, no parents, no annotations,
//! and the layers
//!
//! | role             | media type                                            | content |
//! |------------------|-------------------------------------------------------|---------|
//! | `crypt.envelope` | `application/vnd.processfork.crypt.envelope.v1+json` | [`KeyEnvelope`], clear |
//! | `crypt.index`    | `application/vnd.processfork.crypt.sealed.v1`         | the sealed index: inner manifest, fs trees, [`PackSeal`]s |
//! | `crypt.data` ... | `application/vnd.processfork.crypt.sealed.v1`         | one sealed pack each |
//!
//! None of these media types is an index type, so the engine's closure is
//! exactly these layers and it walks them without keys.

mod index;
mod lazy;
mod open;
mod pool;

use std::collections::HashSet;
use std::sync::Arc;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{AgentInfo, FsTree, FS_TREE_V2_MEDIA_TYPE, MAX_LAYERS};
use pf_registry_core::pack::{name_of_chunks, tiling};
use pf_registry_core::{Descriptor, Manifest};

use index::{by_plain, pieces, Index};
pub use index::{covers, PackSeal};
pub use lazy::{seal_for_push, PushSource};
pub use open::{envelope, open_image, open_index, open_index_with, pick, Opened, OpenedStore};
pub(crate) use open::{AuthFailed, PackReader};
use pool::Pool;

use crate::envelope::KeyEnvelope;
use crate::keys::{DataKey, Recipient};
use crate::seal::Sealer;
use crate::{CryptError, Result};

/// Role of the key envelope layer.
pub const ENVELOPE_ROLE: &str = "crypt.envelope";
/// Media type of the key envelope layer. `v3`: as `v2`, and an inner
/// pack may be named by its chunks ([`name_of_chunks`]), which a `v2`
/// reader would take for a damaged pack. `v2`: chunk ids are keyed hashes
/// of the chunks' SHA-256 and pieces are sealed with AES-256-GCM. Images
/// sealed as `v1` (ChaCha20-Poly1305) are refused with a clear error.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.processfork.crypt.envelope.v3+json";
/// Media type of the key envelope layer of encryption format v2 (every
/// inner pack named by its content), which this version opens.
pub const ENVELOPE_MEDIA_TYPE_V2: &str = "application/vnd.processfork.crypt.envelope.v2+json";
/// Media type of the envelope layer of the first encryption format, which
/// this version does not open.
pub const ENVELOPE_MEDIA_TYPE_V1: &str = "application/vnd.processfork.crypt.envelope.v1+json";
/// Role of the sealed index layer.
pub const INDEX_ROLE: &str = "crypt.index";
/// Role of a sealed pack layer.
pub const DATA_ROLE: &str = "crypt.data";
/// Media type of sealed layers.
pub const SEALED_MEDIA_TYPE: &str = "application/vnd.processfork.crypt.sealed.v2";
/// The fixed creation date of outer manifests (the real one is sealed).
pub const OUTER_CREATED_AT: &str = "1970-01-01T00:00:00Z";
/// Largest key envelope opened (1,024 stanzas fit in well under this).
pub const MAX_ENVELOPE_BYTES: u64 = 1 << 20;
/// Largest pack sealed or opened: each is held in memory once (pf's packs
/// are about 16 MiB).
pub const MAX_PACK_BYTES: u64 = 1 << 30;

/// An encrypted image ready to push.
#[derive(Debug, Clone)]
pub struct SealedImage {
    /// The outer manifest to push (and sign).
    pub manifest: Manifest,
    /// How every pack of the image is sealed (the next push's base).
    pub packs: Vec<PackSeal>,
    /// Digest of the index's plaintext, kept in the output store (see
    /// [`crate::KeyBook::record`]).
    pub index: Digest,
}

/// Whether `manifest` is the outer manifest of an encrypted image.
pub fn is_encrypted(manifest: &Manifest) -> bool {
    manifest.layers.iter().any(|l| l.role == ENVELOPE_ROLE)
}

fn read_verified(store: &dyn BlobStore, d: &Digest) -> Result<Vec<u8>> {
    let bytes = store.get(d)?;
    let actual = Digest::of(&bytes);
    if actual != *d {
        return Err(pf_registry_core::RegistryError::Integrity {
            what: format!("blob {d} in the local store"),
            expected: *d,
            actual,
        }
        .into());
    }
    Ok(bytes)
}

fn layer(role: &str, media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        role: role.into(),
        media_type: media_type.into(),
        digest,
        size,
    }
}

/// Seals the plaintext image `inner` (format v2 fs tree layers only),
/// whose blobs `source` serves, for `recipients` under data key `key`.
/// Packs listed in `base` (the previous version's seals) are referenced,
/// not read; every other pack is read from `source`, sealed chunk by chunk
/// and written to `out` with the envelope and the sealed index.
pub fn seal_image(
    inner: &Manifest,
    source: &dyn BlobStore,
    key: &DataKey,
    recipients: &[Recipient],
    base: &[PackSeal],
    level: i32,
    out: &dyn BlobStore,
) -> Result<SealedImage> {
    let sealer = Sealer::new(key, level);
    let pool = Pool::default();
    let keep = |_: &Arc<FsTree>, _: u32, _: &[(u32, u32)], bytes: Vec<u8>| {
        let d = out.put(&bytes)?;
        pool.give(bytes);
        Ok(d)
    };
    let sealing = (&sealer, &pool);
    seal_with(inner, source, sealing, key, recipients, base, out, &keep)
}

/// What becomes of a sealed pack: given its tree, its index there, its
/// pieces and its bytes, stores it (or not) and returns its digest.
pub(crate) type Keep<'a> =
    dyn Fn(&Arc<FsTree>, u32, &[(u32, u32)], Vec<u8>) -> Result<Digest> + Sync + 'a;

/// [`seal_image`], each new sealed pack handed to `keep`; packs are sealed
/// into buffers of `pool`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_with(
    inner: &Manifest,
    source: &dyn BlobStore,
    (sealer, pool): (&Sealer, &Pool),
    key: &DataKey,
    recipients: &[Recipient],
    base: &[PackSeal],
    out: &dyn BlobStore,
    keep: &Keep<'_>,
) -> Result<SealedImage> {
    inner.validate()?;
    let mut trees: Vec<(String, Arc<FsTree>)> = Vec::new();
    // (tree index, pack index, pack) of every pack not in `base`, once.
    let mut todo: Vec<(usize, u32, Digest, u64)> = Vec::new();
    let mut seen = HashSet::new();
    let base = by_plain(base);
    let mut reused = Vec::new();
    for l in &inner.layers {
        if l.media_type != FS_TREE_V2_MEDIA_TYPE {
            return Err(CryptError::Malformed(format!(
                "only format v2 fs tree images can be encrypted (layer {} is {})",
                l.role, l.media_type
            )));
        }
        let bytes = read_verified(source, &l.digest)?;
        let tree = FsTree::from_bytes(&bytes)?;
        for (i, p) in tree.packs.iter().enumerate() {
            if !seen.insert(p.blob) {
                continue;
            }
            if p.size > MAX_PACK_BYTES {
                return Err(CryptError::Malformed(format!(
                    "pack {} is over the {MAX_PACK_BYTES}-byte limit of an encrypted pack",
                    p.blob
                )));
            }
            match base.get(&p.blob) {
                Some(s) if s.plain_size == p.size => reused.push((*s).clone()),
                _ => todo.push((trees.len(), i as u32, p.blob, p.size)),
            }
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| CryptError::Malformed("an fs tree is not UTF-8 JSON".into()))?;
        trees.push((text, Arc::new(tree)));
    }
    if reused.len() + todo.len() + 2 > MAX_LAYERS {
        return Err(CryptError::Malformed(format!(
            "{} packs exceed the {MAX_LAYERS}-layer limit of an encrypted image",
            reused.len() + todo.len()
        )));
    }
    let sealed: Vec<Result<PackSeal>> = {
        use rayon::prelude::*;
        todo.par_iter()
            .map(|&(t, i, d, size)| {
                let tree = &trees[t].1;
                let (bytes, pieces) = seal_pack((sealer, pool), source, tree, i, d, size, None)?;
                let sealed_size = bytes.len() as u64;
                let sealed = keep(tree, i, &pieces, bytes)?;
                Ok(PackSeal {
                    plain: d,
                    plain_size: size,
                    sealed,
                    sealed_size,
                    pieces,
                })
            })
            .collect()
    };
    let mut packs = reused;
    for s in sealed {
        packs.push(s?);
    }
    let index = Index {
        version: 1,
        manifest: inner.clone(),
        trees: trees.into_iter().map(|(text, _)| text).collect(),
        packs,
    };
    let index_bytes = index.to_bytes();
    let index_digest = out.put(&index_bytes)?;
    let sealed_index = sealer.seal(&index_bytes);
    let sealed_index_digest = out.put(&sealed_index)?;
    let envelope = KeyEnvelope::wrap(key, recipients)?.to_bytes();
    let envelope_digest = out.put(&envelope)?;
    let mut m = Manifest::new(
        AgentInfo {
            name: "pf-crypt".into(),
            version: String::new(),
        },
        OUTER_CREATED_AT,
    );
    m.layers.push(layer(
        ENVELOPE_ROLE,
        ENVELOPE_MEDIA_TYPE,
        envelope_digest,
        envelope.len() as u64,
    ));
    m.layers.push(layer(
        INDEX_ROLE,
        SEALED_MEDIA_TYPE,
        sealed_index_digest,
        sealed_index.len() as u64,
    ));
    let mut listed = HashSet::new();
    for p in &index.packs {
        if listed.insert(p.sealed) {
            m.layers
                .push(layer(DATA_ROLE, SEALED_MEDIA_TYPE, p.sealed, p.sealed_size));
        }
    }
    Ok(SealedImage {
        manifest: m,
        packs: index.packs,
        index: index_digest,
    })
}

/// A sealed pack's bytes and its pieces' (plain, sealed) lengths.
pub(crate) type SealedPack = (Vec<u8>, Vec<(u32, u32)>);

/// Reads plaintext pack `plain` (pack `index` of `tree`) from `source`
/// piece by piece, checks each chunk and the pack against their digests
/// (unless the source vouches for the bytes, see
/// [`BlobStore::open_vouched`]; a pack named by its chunks, see
/// [`name_of_chunks`], is checked by its chunks) and seals each piece. Returns
/// the sealed pack and its pieces' (plain, sealed) lengths. With `again`
/// (the pieces of an earlier seal of this pack), a piece sealed raw then
/// is sealed raw without trying zstd: the same bytes, cheaper.
pub(crate) fn seal_pack(
    (sealer, pool): (&Sealer, &Pool),
    source: &dyn BlobStore,
    tree: &FsTree,
    index: u32,
    plain: Digest,
    size: u64,
    again: Option<&[(u32, u32)]>,
) -> Result<SealedPack> {
    use std::io::Read;
    let io = |e| CryptError::io(format!("reading pack {plain}"), e);
    let (mut r, vouched) = source.open_vouched(&plain)?;
    let mut whole = (!vouched).then(pf_digest::Hasher::new);
    let mut piece = Vec::new();
    let mut sealed = pool.take(size as usize + size as usize / 64 + 64);
    let mut lens = Vec::new();
    for (k, (len, digest)) in pieces(tree, index, size).into_iter().enumerate() {
        piece.resize(len as usize, 0);
        r.read_exact(&mut piece).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                CryptError::Malformed(format!("pack {plain} is shorter than its tree says"))
            } else {
                io(e)
            }
        })?;
        if let Some(h) = &mut whole {
            h.update(&piece);
        }
        // The tree's chunk digest spares a hash pass when the source
        // vouched for these bytes (so they are what was chunked); else a
        // chunk that is not what the tree names fails the seal.
        let digest = match digest {
            Some(d) if vouched => d,
            Some(d) => {
                let actual = Digest::of(&piece);
                if actual != d {
                    return Err(pf_registry_core::RegistryError::Integrity {
                        what: format!("chunk {k} of pack {plain} read to seal"),
                        expected: d,
                        actual,
                    }
                    .into());
                }
                d
            }
            None => Digest::of(&piece),
        };
        let raw = again
            .and_then(|a| a.get(k))
            .is_some_and(|&(p, c)| c as usize == p as usize + crate::seal::OVERHEAD);
        let n = if raw {
            sealer.seal_raw_into(&piece, &digest, &mut sealed)
        } else {
            sealer.seal_into(&piece, &digest, &mut sealed)
        };
        lens.push((len as u32, n as u32));
    }
    if r.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(CryptError::Malformed(format!(
            "pack {plain} is longer than its tree says"
        )));
    }
    // Unvouched bytes are the pack named: its SHA-256, or each chunk
    // checked above when the pack is named by its chunks.
    if let Some(h) = whole {
        let actual = h.finish();
        if actual != plain && tiling(tree, index, size).is_none_or(|t| name_of_chunks(&t) != plain)
        {
            return Err(pf_registry_core::RegistryError::Integrity {
                what: format!("pack {plain} read to seal"),
                expected: plain,
                actual,
            }
            .into());
        }
    }
    Ok((sealed, lens))
}

/// The AEAD tag of each sealed piece of a sealed pack (its last 16
/// bytes): equal tags under one key and nonce mean equal ciphertexts.
pub(crate) fn tags(sealed: &[u8], pieces: &[(u32, u32)]) -> Vec<[u8; 16]> {
    let mut at = 0usize;
    pieces
        .iter()
        .map(|&(_, c)| {
            at += c as usize;
            let mut t = [0u8; 16];
            if let Some(s) = sealed.get(at.saturating_sub(16)..at) {
                t.copy_from_slice(s);
            }
            t
        })
        .collect()
}

/// The seals recorded in plaintext index blob `index` of `store` (see
/// [`SealedImage::index`]); `None` if gone or damaged.
pub fn recorded_seals(store: &dyn BlobStore, index: &Digest) -> Option<Vec<PackSeal>> {
    let bytes = read_verified(store, index).ok()?;
    Index::from_bytes(&bytes).ok().map(|i| i.packs)
}

#[cfg(test)]
mod tests;
