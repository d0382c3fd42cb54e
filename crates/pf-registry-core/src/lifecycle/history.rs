//! `tags`, `log` and `diff`: what a repository holds, read-only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use pf_digest::Digest;
use pf_sign::TrustPolicy;
use serde::Serialize;

use super::inventory::{parse_stored, Inventory};
use super::{closure_of, read_blob};
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::manifest::{
    is_fs_tree_media_type, FsEntry, FsTree, Manifest, MAX_INDEX_BYTES, MAX_MANIFEST_BYTES,
};
use crate::transport::Transport;

/// One tag of a repository.
#[derive(Debug, Clone, Serialize)]
pub struct TagInfo {
    /// The tag; `None` is the untagged head.
    pub tag: Option<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// The manifest's `created_at`.
    pub created_at: String,
    /// Sum of the layers' declared sizes (the fs tree counts as its index).
    pub size: u64,
    /// Who signed it, checked against the trust policy given.
    pub signer: String,
}

/// Every tag of the repository behind `t` with its manifest, newest first.
pub async fn tags(t: &dyn Transport, trust: &TrustPolicy) -> Result<Vec<TagInfo>> {
    let inv = Inventory::read(t).await?;
    let mut out = Vec::new();
    for (tag, d) in &inv.tags {
        let Some(m) = inv.manifests.get(d) else {
            continue;
        };
        let sig = match t
            .read_key(
                &layout::signature_by_digest(d),
                pf_sign::SignatureEnvelope::MAX_LEN as u64,
            )
            .await?
        {
            Some(s) => Some(s),
            None => {
                t.read_key(
                    &layout::tag_signature(tag.as_deref()),
                    pf_sign::SignatureEnvelope::MAX_LEN as u64,
                )
                .await?
            }
        };
        let signer = match trust.verify(&m.bytes, sig.as_deref()) {
            Ok(v) => v.to_string(),
            Err(e) => format!("NOT VERIFIED: {e}"),
        };
        out.push(TagInfo {
            tag: tag.clone(),
            digest: *d,
            created_at: m.manifest.created_at.clone(),
            size: m.manifest.layers.iter().map(|l| l.size).sum(),
            signer,
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.tag.cmp(&b.tag)));
    Ok(out)
}

/// One version in a history.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// Manifest digest.
    pub digest: Digest,
    /// The manifest's `created_at`.
    pub created_at: String,
    /// Its parents (digests), as recorded.
    pub parents: Vec<Digest>,
    /// Parents not stored in the repository (removed, or never pushed here).
    pub missing_parents: Vec<Digest>,
}

/// The history of the image at `t`'s reference through `parents`, newest
/// first. Parents that are not stored are reported, not followed.
pub async fn log(t: &dyn Transport) -> Result<Vec<VersionInfo>> {
    let head = t.get_manifest().await?;
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut queue: VecDeque<(Digest, Manifest)> = VecDeque::new();
    let d0 = Digest::of(&head.manifest);
    queue.push_back((d0, parse_stored("head", &head.manifest)?));
    seen.insert(d0);
    let mut out = Vec::new();
    while let Some((d, m)) = queue.pop_front() {
        let mut missing = Vec::new();
        for p in &m.parents {
            if !seen.insert(*p) {
                continue;
            }
            let key = layout::manifest_by_digest(p);
            match t.read_key(&key, MAX_MANIFEST_BYTES as u64).await? {
                Some(b) if Digest::of(&b) == *p => queue.push_back((*p, parse_stored(&key, &b)?)),
                Some(b) => {
                    return Err(RegistryError::Integrity {
                        what: format!("manifest {key}"),
                        expected: *p,
                        actual: Digest::of(&b),
                    })
                }
                None => missing.push(*p),
            }
        }
        out.push(VersionInfo {
            digest: d,
            created_at: m.created_at.clone(),
            parents: m.parents.clone(),
            missing_parents: missing,
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(out)
}

/// One file that differs between two images.
#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    /// Path in the fs tree.
    pub path: String,
    /// Size in A (`None`: absent).
    pub size_a: Option<u64>,
    /// Size in B (`None`: absent).
    pub size_b: Option<u64>,
}

/// How image B differs from image A.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// Manifest digest of A.
    pub a: Option<Digest>,
    /// Manifest digest of B.
    pub b: Option<Digest>,
    /// In B, not in A.
    pub added: Vec<FileChange>,
    /// In A, not in B.
    pub removed: Vec<FileChange>,
    /// In both, with other content, mode, kind or target.
    pub changed: Vec<FileChange>,
    /// Small files packed with others, equal in size and mode, stored in a
    /// different pack or place: their content cannot be compared without
    /// reading the packs, which `diff` never does.
    pub maybe_changed: Vec<FileChange>,
    /// Blobs of B's closure that A's lacks.
    pub blobs_to_transfer: usize,
    /// Their raw bytes (declared sizes): what moving from A to B fetches.
    pub bytes_to_transfer: u64,
}

/// An fs entry and, in a v2 tree, its content as chunk digests (an exact
/// identity, unlike v1 pack ranges).
type Entry = (FsEntry, Option<Vec<Digest>>);

async fn tree_and_closure(
    t: &dyn Transport,
) -> Result<(Digest, BTreeMap<String, Entry>, HashMap<Digest, u64>)> {
    let f = t.get_manifest().await?;
    let d = Digest::of(&f.manifest);
    let m = parse_stored(&t.location(), &f.manifest)?;
    let mut cache = HashMap::new();
    let closure = closure_of(t, &m, &mut cache).await?;
    let mut files = BTreeMap::new();
    for l in m
        .layers
        .iter()
        .filter(|l| is_fs_tree_media_type(&l.media_type))
    {
        let raw = match cache.get(&l.digest) {
            Some(r) => r.clone(),
            None => read_blob(t, &l.digest, Some(l.size), MAX_INDEX_BYTES).await?,
        };
        let tree = FsTree::from_bytes(&raw)?;
        for e in &tree.entries {
            let chunks = tree.is_v2().then(|| {
                tree.pieces(e)
                    .iter()
                    .filter_map(|p| p.digest)
                    .collect::<Vec<_>>()
            });
            let mut e = e.clone();
            // Chunk-table indices differ between trees; the digests compare.
            e.parts.clear();
            files.insert(e.path.clone(), (e, chunks));
        }
    }
    let sizes = closure
        .into_iter()
        .map(|b| (b.digest, b.size.unwrap_or(0)))
        .collect();
    Ok((d, files, sizes))
}

/// Files added, removed and changed from A to B, read from the fs trees
/// (no data blob is downloaded), and the bytes a holder of A would fetch.
pub async fn diff(a: &dyn Transport, b: &dyn Transport) -> Result<DiffReport> {
    let (da, fa, ca) = tree_and_closure(a).await?;
    let (db, fb, cb) = tree_and_closure(b).await?;
    let mut r = DiffReport {
        a: Some(da),
        b: Some(db),
        ..DiffReport::default()
    };
    for (p, (e, chunks_b)) in &fb {
        match fa.get(p).map(|(old, chunks_a)| (old, chunks_a, chunks_b)) {
            None => r.added.push(FileChange {
                path: p.clone(),
                size_a: None,
                size_b: Some(e.size),
            }),
            Some((old, Some(a), Some(b))) if old != e || a != b => r.changed.push(FileChange {
                path: p.clone(),
                size_a: Some(old.size),
                size_b: Some(e.size),
            }),
            Some((_, Some(_), Some(_))) => {}
            Some((old, _, _)) if old != e => {
                let change = FileChange {
                    path: p.clone(),
                    size_a: Some(old.size),
                    size_b: Some(e.size),
                };
                let packed_alike = old.offset.is_some()
                    && e.offset.is_some()
                    && FsEntry {
                        blob: None,
                        offset: None,
                        ..old.clone()
                    } == FsEntry {
                        blob: None,
                        offset: None,
                        ..e.clone()
                    };
                if packed_alike {
                    r.maybe_changed.push(change);
                } else {
                    r.changed.push(change);
                }
            }
            Some(_) => {}
        }
    }
    for (p, (e, _)) in &fa {
        if !fb.contains_key(p) {
            r.removed.push(FileChange {
                path: p.clone(),
                size_a: Some(e.size),
                size_b: None,
            });
        }
    }
    for (d, size) in &cb {
        if !ca.contains_key(d) {
            r.blobs_to_transfer += 1;
            r.bytes_to_transfer += size;
        }
    }
    Ok(r)
}
