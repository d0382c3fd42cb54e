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
mod open;

use std::collections::HashSet;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{AgentInfo, FsTree, FS_TREE_V2_MEDIA_TYPE, MAX_LAYERS};
use pf_registry_core::{Descriptor, Manifest};

use index::{by_plain, pieces, Index};
pub use index::{covers, PackSeal};
pub use open::{open_image, open_index, Opened, OpenedStore};

use crate::envelope::KeyEnvelope;
use crate::keys::{DataKey, Recipient};
use crate::seal::Sealer;
use crate::{CryptError, Result};

/// Role of the key envelope layer.
pub const ENVELOPE_ROLE: &str = "crypt.envelope";
/// Media type of the key envelope layer.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.processfork.crypt.envelope.v1+json";
/// Role of the sealed index layer.
pub const INDEX_ROLE: &str = "crypt.index";
/// Role of a sealed pack layer.
pub const DATA_ROLE: &str = "crypt.data";
/// Media type of sealed layers.
pub const SEALED_MEDIA_TYPE: &str = "application/vnd.processfork.crypt.sealed.v1";
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
    inner.validate()?;
    let sealer = Sealer::new(key, level);
    let mut trees = Vec::new();
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
        trees.push((text, tree));
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
            .map(|&(t, i, d, size)| seal_pack(&sealer, source, out, &trees[t].1, i, d, size))
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

/// Reads plaintext pack `plain` (pack `index` of `tree`) from `source`,
/// checks its digest (unless the source vouches for the bytes, see
/// [`BlobStore::open_vouched`]), seals each piece and writes the sealed
/// pack to `out`.
fn seal_pack(
    sealer: &Sealer,
    source: &dyn BlobStore,
    out: &dyn BlobStore,
    tree: &FsTree,
    index: u32,
    plain: Digest,
    size: u64,
) -> Result<PackSeal> {
    let (mut r, vouched) = source.open_vouched(&plain)?;
    let mut bytes = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(&mut r, &mut bytes)
        .map_err(|e| CryptError::io(format!("reading pack {plain}"), e))?;
    if !vouched {
        let actual = Digest::of(&bytes);
        if actual != plain {
            return Err(pf_registry_core::RegistryError::Integrity {
                what: format!("pack {plain} read to seal"),
                expected: plain,
                actual,
            }
            .into());
        }
    }
    if bytes.len() as u64 != size {
        return Err(CryptError::Malformed(format!(
            "pack {plain} is {} bytes, its tree says {size}",
            bytes.len()
        )));
    }
    let mut sealed = Vec::with_capacity(bytes.len() + bytes.len() / 64 + 64);
    let mut lens = Vec::new();
    let mut at = 0usize;
    for (len, digest) in pieces(tree, index, size) {
        let piece = &bytes[at..at + len as usize];
        // The tree's chunk digest spares a hash pass when the source
        // vouched for these bytes (so they are what was chunked).
        let digest = match digest {
            Some(d) if vouched => d,
            _ => Digest::of(piece),
        };
        let n = sealer.seal_into(piece, &digest, &mut sealed);
        lens.push((len as u32, n as u32));
        at += len as usize;
    }
    let d = out.put(&sealed)?;
    Ok(PackSeal {
        plain,
        plain_size: size,
        sealed: d,
        sealed_size: sealed.len() as u64,
        pieces: lens,
    })
}

/// The seals recorded in plaintext index blob `index` of `store` (see
/// [`SealedImage::index`]); `None` if gone or damaged.
pub fn recorded_seals(store: &dyn BlobStore, index: &Digest) -> Option<Vec<PackSeal>> {
    let bytes = read_verified(store, index).ok()?;
    Index::from_bytes(&bytes).ok().map(|i| i.packs)
}

#[cfg(test)]
mod tests;
