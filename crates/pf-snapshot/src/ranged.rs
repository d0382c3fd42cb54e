//! Fetching only the chunks a selection needs from format v2 packs that
//! are not local ([`Registry::read_chunks`]), for `pf cat` and a partial
//! restore: a one-file read of a 16 MiB pack fetches that file's frames,
//! not the pack.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{FsTree, Piece};
use pf_registry_core::{Registry, Result};

/// Chunks read by range, by pack: raw offset to verified bytes.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub(crate) packs: HashMap<Digest, BTreeMap<u64, Bytes>>,
    /// Encoded bytes received.
    pub(crate) wire_bytes: u64,
    /// Requests made.
    pub(crate) requests: u64,
}

/// Reads by range every v2 piece of `files` (entries of `tree`) whose pack
/// `store` lacks. Packs stored without a frame table come back in
/// `whole`: the caller fetches them entirely.
pub(crate) async fn fetch(
    registry: &dyn Registry,
    store: &dyn BlobStore,
    tree: &FsTree,
    files: &[&pf_registry_core::FsEntry],
) -> Result<(Fetched, Vec<Digest>)> {
    let sizes: HashMap<Digest, u64> = tree.packs.iter().map(|p| (p.blob, p.size)).collect();
    let mut by_pack: BTreeMap<Digest, BTreeMap<u64, Piece>> = BTreeMap::new();
    for e in files {
        for p in tree.pieces(e) {
            if p.digest.is_some() {
                by_pack.entry(p.blob).or_default().insert(p.offset, p);
            }
        }
    }
    let mut out = Fetched::default();
    let mut whole = Vec::new();
    let tilings = pf_registry_core::pack::chunk_named(tree);
    for (pack, pieces) in by_pack {
        let size = sizes.get(&pack).copied();
        let intact = match tilings.get(&pack) {
            Some(t) => store.has_intact_as(
                &pack,
                size,
                &mut pf_registry_core::pack::PackCheck::new(Some(t)),
            )?,
            None => store.has_intact(&pack, size)?,
        };
        if intact {
            continue;
        }
        let pieces: Vec<Piece> = pieces.into_values().collect();
        match registry
            .read_chunks(&pack, size.unwrap_or(0), &pieces)
            .await
        {
            Ok(read) => {
                out.wire_bytes += read.wire_bytes;
                out.requests += read.requests;
                let m = out.packs.entry(pack).or_default();
                for (p, b) in pieces.iter().zip(read.chunks) {
                    m.insert(p.offset, b);
                }
            }
            Err(pf_registry_core::RegistryError::NotSupported { .. }) => whole.push(pack),
            Err(e) => return Err(e),
        }
    }
    Ok((out, whole))
}
