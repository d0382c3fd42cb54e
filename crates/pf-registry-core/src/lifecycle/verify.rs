//! `verify`: checks that every blob of an image's closure is stored and,
//! optionally, that the stored bytes still decode to their digests, without
//! restoring anything.

use std::collections::HashMap;

use futures::TryStreamExt;
use pf_digest::Digest;
use pf_sign::TrustPolicy;
use serde::Serialize;

use super::inventory::parse_stored;
use super::read_blob;
use crate::error::{RegistryError, Result};
use crate::manifest::{self, ClosureBlob, MAX_INDEX_BYTES};
use crate::transport::Transport;

/// How much stored data [`verify`] re-reads.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ReadData {
    /// Existence only.
    None,
    /// Every blob.
    All,
    /// This percentage (0–100] of the blobs, from a random starting point.
    Subset(f64),
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// The manifest checked.
    pub manifest: Option<Digest>,
    /// Its signature, as the trust policy sees it.
    pub signer: String,
    /// Blobs in the closure (as far as its index blobs could be read).
    pub blobs: usize,
    /// Blobs whose bytes were re-read and hashed.
    pub data_checked: usize,
    /// Blobs not stored.
    pub missing: Vec<Digest>,
    /// Blobs stored but damaged: digest and why.
    pub corrupt: Vec<(Digest, String)>,
}

impl VerifyReport {
    /// True when nothing is missing or corrupt.
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}

/// Verifies the image at `t`'s reference.
pub async fn verify(
    t: &dyn Transport,
    trust: &TrustPolicy,
    read: ReadData,
) -> Result<VerifyReport> {
    let f = t.get_manifest().await?;
    let signer = trust
        .verify(&f.manifest, f.signature.as_deref())?
        .to_string();
    let m = parse_stored(&t.location(), &f.manifest)?;
    let mut report = VerifyReport {
        manifest: Some(Digest::of(&f.manifest)),
        signer,
        ..VerifyReport::default()
    };
    // Index blobs: read (and so hashed) always; their children follow.
    let mut closure: Vec<ClosureBlob> = Vec::new();
    let mut idx = HashMap::new();
    let layers = m.layers.iter().map(|l| ClosureBlob {
        digest: l.digest,
        size: Some(l.size),
    });
    manifest::merge_unique(&mut closure, &mut idx, layers)?;
    let mut index_read = std::collections::HashSet::new();
    let mut tilings = crate::pack::Tilings::new();
    for l in m
        .layers
        .iter()
        .filter(|l| manifest::is_index_media_type(&l.media_type))
    {
        match read_blob(t, &l.digest, Some(l.size), MAX_INDEX_BYTES).await {
            Ok(raw) => {
                index_read.insert(l.digest);
                let children =
                    manifest::index_children_visiting(&l.media_type, &raw, &mut |tree| {
                        tilings.extend(crate::pack::chunk_named(tree))
                    })?;
                manifest::merge_unique(&mut closure, &mut idx, children)?;
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(e @ (RegistryError::Integrity { .. } | RegistryError::InvalidData { .. })) => {
                report.corrupt.push((l.digest, e.to_string()));
                index_read.insert(l.digest);
            }
            Err(e) => return Err(e),
        }
    }
    report.blobs = closure.len();
    let digests: Vec<Digest> = closure.iter().map(|b| b.digest).collect();
    for chunk in digests.chunks(t.max_batch().max(1)) {
        report.missing.extend(t.missing(chunk).await?);
    }
    let missing: std::collections::HashSet<Digest> = report.missing.iter().copied().collect();
    let candidates: Vec<ClosureBlob> = closure
        .iter()
        .filter(|b| !missing.contains(&b.digest) && !index_read.contains(&b.digest))
        .copied()
        .collect();
    let chosen: Vec<ClosureBlob> = match read {
        ReadData::None => Vec::new(),
        ReadData::All => candidates,
        ReadData::Subset(pct) => {
            let n = candidates.len();
            let take = ((n as f64) * pct.clamp(0.0, 100.0) / 100.0).ceil() as usize;
            let start = if n == 0 {
                0
            } else {
                rand::random::<u64>() as usize % n
            };
            (0..take.min(n))
                .map(|i| candidates[(start + i) % n])
                .collect()
        }
    };
    for b in chosen {
        report.data_checked += 1;
        match check_data(t, &b, tilings.get(&b.digest).cloned()).await {
            Ok(None) => {}
            Ok(Some(why)) => report.corrupt.push((b.digest, why)),
            Err(RegistryError::NotFound { .. }) => report.missing.push(b.digest),
            Err(e) => return Err(e),
        }
    }
    report.data_checked += index_read.len();
    Ok(report)
}

/// Streams blob `b`, decodes and hashes it (chunk by chunk for a pack
/// named by its chunks, given its `tiling`): `Some(reason)` when damaged.
async fn check_data(
    t: &dyn Transport,
    b: &ClosureBlob,
    tiling: Option<Vec<(u64, Digest)>>,
) -> Result<Option<String>> {
    let stream = t.get_blob(&b.digest).await?.map_err(|e| e.into_io());
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let want = *b;
    tokio::task::spawn_blocking(move || {
        let dec = match zstd::stream::read::Decoder::new(reader) {
            Ok(d) => d,
            Err(e) => return Some(format!("zstd: {e}")),
        };
        let mut check = crate::pack::PackCheck::new(tiling.as_deref());
        let named = std::io::copy(&mut { dec }, &mut check).map(|n| (check.finish(), n));
        match named {
            Err(e) => Some(format!("does not decode: {e}")),
            Ok((d, _)) if d != want.digest => Some(format!("decodes to {d}")),
            Ok((_, n)) if want.size.is_some_and(|s| s != n) => Some(format!(
                "decodes to {n} bytes, declared {}",
                want.size.unwrap_or(0)
            )),
            Ok(_) => None,
        }
    })
    .await
    .map_err(|e| RegistryError::io("verify task", std::io::Error::other(e.to_string())))
}
