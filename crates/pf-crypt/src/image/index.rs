//! The sealed index of an encrypted image: the inner manifest, its fs
//! trees and the pack map, one JSON document sealed as one piece.

use std::collections::HashMap;

use pf_digest::Digest;
use pf_registry_core::manifest::FsTree;
use pf_registry_core::Manifest;
use serde::{Deserialize, Serialize};

use crate::{CryptError, Result};

/// How one plaintext pack is stored sealed: the concatenation of its
/// pieces (chunks), each sealed alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSeal {
    /// Digest of the plaintext pack (what the fs tree names).
    pub plain: Digest,
    /// Its size.
    pub plain_size: u64,
    /// Digest of the sealed pack (what storage sees).
    pub sealed: Digest,
    /// Its size.
    pub sealed_size: u64,
    /// Each piece's (plaintext length, sealed length), in order.
    pub pieces: Vec<(u32, u32)>,
}

impl PackSeal {
    /// Checks the pieces add up to both sizes.
    pub(crate) fn validate(&self) -> Result<()> {
        let plain: u64 = self.pieces.iter().map(|p| u64::from(p.0)).sum();
        let sealed: u64 = self.pieces.iter().map(|p| u64::from(p.1)).sum();
        if plain != self.plain_size || sealed != self.sealed_size {
            return Err(CryptError::Malformed(format!(
                "pack {}: pieces do not add up to its sizes",
                self.plain
            )));
        }
        Ok(())
    }
}

/// The sealed index's plaintext.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Index {
    pub version: u32,
    /// The plaintext image's manifest.
    pub manifest: Manifest,
    /// The raw bytes (JSON text) of its fs tree layers, in layer order.
    pub trees: Vec<String>,
    /// How each of its packs is sealed.
    pub packs: Vec<PackSeal>,
}

impl Index {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Index> {
        let i: Index = serde_json::from_slice(bytes)
            .map_err(|e| CryptError::Malformed(format!("sealed index: {e}")))?;
        if i.version != 1 {
            return Err(CryptError::Malformed(format!(
                "sealed index version {} is not supported",
                i.version
            )));
        }
        i.manifest.validate()?;
        for p in &i.packs {
            p.validate()?;
        }
        Ok(i)
    }
}

/// Whether `seals` says how every pack of `tree` is sealed (a base tree
/// can then be chunked against: its packs need no plaintext).
pub fn covers(seals: &[PackSeal], tree: &FsTree) -> bool {
    let have: std::collections::HashSet<Digest> = seals.iter().map(|s| s.plain).collect();
    tree.packs.iter().all(|p| have.contains(&p.blob))
}

/// The pieces plaintext pack `index` of `tree` (of `size` bytes) is cut
/// into, each with its digest when the tree names it: its chunks when the
/// chunk table tiles it exactly, else the whole pack as one piece (no
/// digest). Pieces are at most `u32::MAX` bytes.
pub(crate) fn pieces(tree: &FsTree, index: u32, size: u64) -> Vec<(u64, Option<Digest>)> {
    let tiled = pf_registry_core::pack::tiling(tree, index, size)
        .filter(|t| t.iter().all(|&(n, _)| n <= u64::from(u32::MAX)));
    if let Some(t) = tiled {
        return t.into_iter().map(|(n, d)| (n, Some(d))).collect();
    }
    // Not tiled (or empty): whole-pack pieces of at most 1 GiB.
    let step = 1u64 << 30;
    let mut out = Vec::new();
    let mut left = size;
    while left > 0 {
        out.push((left.min(step), None));
        left -= left.min(step);
    }
    out
}

/// Seals by plaintext digest, for lookups.
pub(crate) fn by_plain(seals: &[PackSeal]) -> HashMap<Digest, &PackSeal> {
    seals.iter().map(|s| (s.plain, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The index parser never panics on arbitrary bytes, and a parsed
        /// pack map always adds up.
        #[test]
        fn arbitrary_indexes_are_refused_or_consistent(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            if let Ok(i) = Index::from_bytes(&bytes) {
                for p in &i.packs {
                    prop_assert!(p.validate().is_ok());
                }
            }
        }
    }
    use pf_registry_core::manifest::{Chunk, PackedChunk};

    #[test]
    fn pieces_follow_the_chunk_table_only_when_it_tiles_the_pack() {
        let d = Digest::of(b"x");
        let mut t = FsTree {
            packs: vec![Chunk { blob: d, size: 10 }],
            ..FsTree::default()
        };
        let chunk = |offset, size| PackedChunk {
            digest: d,
            pack: 0,
            offset,
            size,
        };
        let lens = |t: &FsTree| -> Vec<u64> { pieces(t, 0, 10).iter().map(|p| p.0).collect() };
        t.chunk_table = vec![chunk(4, 6), chunk(0, 4), chunk(0, 4)];
        assert_eq!(lens(&t), vec![4, 6]);
        assert!(pieces(&t, 0, 10).iter().all(|p| p.1 == Some(d)));
        t.chunk_table = vec![chunk(0, 4)];
        assert_eq!(pieces(&t, 0, 10), vec![(10, None)], "a gap: one piece");
        t.chunk_table = vec![chunk(0, 4), chunk(2, 8)];
        assert_eq!(lens(&t), vec![10], "an overlap: one piece");
        assert!(pieces(&t, 0, 0).is_empty());
    }
}
