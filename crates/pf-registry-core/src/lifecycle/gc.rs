//! `gc`: deletes blobs no committed manifest references (see the module
//! doc of [`crate::lifecycle`] for the safety argument).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use pf_digest::Digest;
use serde::Serialize;

use super::inventory::Inventory;
use super::markers::{self, GcRecord};
use super::{closure_of, list_blobs};
use crate::error::Result;
use crate::layout;
use crate::transport::Transport;

/// Deletions issued at once right after a renewal of the gc record.
const BATCH: usize = 256;

/// What [`gc`] may do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Blobs modified more recently than this are kept.
    pub grace: Duration,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
    /// After deleting, drop the history that still holds the deleted data
    /// (hf: the Hub's super-squash; every older revision stops resolving).
    /// Refused up front on a backend that keeps no history.
    pub squash_history: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
            squash_history: false,
        }
    }
}

/// What [`gc`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Committed manifests read.
    pub manifests: usize,
    /// Blobs stored before the run.
    pub blobs: usize,
    /// Blobs referenced by a committed manifest.
    pub referenced: usize,
    /// Unreferenced blobs kept because a live push marker names them.
    pub kept_in_progress: usize,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Blobs deleted (or, with `dry_run`, that would be).
    pub deleted: Vec<Digest>,
    /// Their stored bytes.
    pub deleted_bytes: u64,
    /// Unreferenced blobs left for a later run because the gc record's
    /// deadline passed.
    pub deferred: usize,
    /// Expired push markers removed.
    pub expired_markers: usize,
    /// Nothing was deleted on purpose.
    pub dry_run: bool,
    /// Format v2 packs still referenced that hold chunks no kept tree
    /// uses. They are not repacked: a v2 tree addresses a chunk by its
    /// pack and offset, and an image's digest (and signature) covers its
    /// tree, so moving a live chunk would change every image using it.
    pub packs_partly_dead: usize,
    /// The bytes of those unused chunks (raw), kept until every image
    /// referencing their packs is gone.
    pub dead_bytes_in_live_packs: u64,
    /// The history was squashed ([`GcOptions::squash_history`]).
    pub squashed_history: bool,
}

/// Collects garbage in the repository behind `t`. Refuses (deleting
/// nothing) when a manifest, an index blob or a marker cannot be read,
/// or when a manifest was written by a newer format.
pub async fn gc(t: &dyn Transport, opts: &GcOptions) -> Result<GcReport> {
    if t.keys().is_none() {
        let why = if t.location().starts_with("ipfs://") {
            "`pf gc` of one root (collect the node's index: `pf gc ipfs://`)"
        } else if t.location().starts_with("oci://") {
            "`pf gc` (a registry collects its own garbage: after `pf rm`, run its collector, for distribution `registry garbage-collect --delete-untagged <config.yml>`; see the README)"
        } else {
            "`pf gc` (pf does not own this backend's storage)"
        };
        return Err(crate::error::RegistryError::not_supported(
            t.location(),
            why,
        ));
    }
    if opts.squash_history && !t.keeps_history() {
        return Err(crate::error::RegistryError::not_supported(
            t.location(),
            "--squash-history (this backend keeps no history of deleted data)",
        ));
    }
    let mut record = if opts.dry_run {
        None
    } else {
        Some(GcRecord::begin(t).await?)
    };
    let res = run(t, opts, record.as_mut()).await;
    if let Some(r) = record {
        // Whatever happened, the record goes (a stale one only delays pushes
        // until it expires).
        let ended = r.end(t).await;
        if res.is_ok() {
            ended?;
        }
    }
    let mut report = res?;
    // Last, once the gc record is gone too: the history keeps nothing gc
    // deleted.
    if opts.squash_history && !opts.dry_run {
        t.squash_history().await?;
        report.squashed_history = true;
    }
    Ok(report)
}

/// Over the v2 fs trees among `index_blobs` (the kept images' index
/// blobs): how many referenced packs hold bytes no file of a tree reads,
/// and how many such bytes.
fn dead_in_live_packs<'a>(index_blobs: impl Iterator<Item = &'a Vec<u8>>) -> (usize, u64) {
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    let mut used: HashMap<Digest, HashSet<(u64, u64)>> = HashMap::new();
    for raw in index_blobs {
        let Ok(tree) = crate::manifest::FsTree::from_bytes(raw) else {
            continue;
        };
        for c in &tree.chunk_table {
            if let Some(p) = tree.packs.get(c.pack as usize) {
                sizes.insert(p.blob, p.size);
            }
        }
        // Used: the chunks some file reads (a table also lists every chunk
        // of a base pack named by its chunks, so that it can be checked).
        for i in tree.entries.iter().flat_map(|e| &e.parts) {
            let Some(c) = tree.chunk_table.get(*i as usize) else {
                continue;
            };
            if let Some(p) = tree.packs.get(c.pack as usize) {
                used.entry(p.blob).or_default().insert((c.offset, c.size));
            }
        }
    }
    let mut partly = 0;
    let mut dead = 0;
    for (pack, size) in sizes {
        // Chunks of one pack never overlap (validated), so distinct
        // ranges add up.
        let live: u64 = used.get(&pack).map_or(0, |r| r.iter().map(|x| x.1).sum());
        if live < size {
            partly += 1;
            dead += size - live;
        }
    }
    (partly, dead)
}

async fn run(
    t: &dyn Transport,
    opts: &GcOptions,
    mut record: Option<&mut GcRecord>,
) -> Result<GcReport> {
    // Order matters: markers, then manifests, then blobs.
    let protected = markers::protected_blobs(t).await?;
    let inv = Inventory::read(t).await?;
    let mut referenced: HashSet<Digest> = HashSet::new();
    let mut cache = HashMap::new();
    for m in inv.manifests.values() {
        let c = closure_of(t, &m.manifest, &mut cache).await.map_err(|e| {
            crate::error::RegistryError::invalid(
                format!(
                    "manifest {}",
                    m.keys.first().map(String::as_str).unwrap_or("?")
                ),
                format!("cannot walk its closure, so nothing is deleted: {e}"),
            )
        })?;
        referenced.extend(c.into_iter().map(|b| b.digest));
    }
    let (partly, dead) = dead_in_live_packs(cache.values());
    let blobs = list_blobs(t).await?;
    let cutoff = SystemTime::now()
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport {
        manifests: inv.manifests.len(),
        blobs: blobs.len(),
        referenced: blobs.keys().filter(|d| referenced.contains(d)).count(),
        dry_run: opts.dry_run,
        packs_partly_dead: partly,
        dead_bytes_in_live_packs: dead,
        ..GcReport::default()
    };
    let mut doomed: Vec<(Digest, String, u64)> = Vec::new();
    for (d, k) in &blobs {
        if referenced.contains(d) {
            continue;
        }
        if protected.contains(d) {
            report.kept_in_progress += 1;
        } else if k.modified.is_none_or(|m| m > cutoff) {
            report.kept_young += 1;
        } else {
            doomed.push((*d, k.key.clone(), k.size));
        }
    }
    doomed.sort();
    if opts.dry_run {
        report.deleted_bytes = doomed.iter().map(|x| x.2).sum();
        report.deleted = doomed.into_iter().map(|x| x.0).collect();
        return Ok(report);
    }
    let mut rest = doomed.as_slice();
    while !rest.is_empty() {
        let Some(r) = record.as_deref_mut() else {
            break;
        };
        r.renew(t).await?;
        let (batch, tail) = rest.split_at(rest.len().min(BATCH));
        rest = tail;
        if !r.may_delete() {
            report.deferred += batch.len();
            continue;
        }
        let keys: Vec<String> = batch.iter().map(|(_, k, _)| k.clone()).collect();
        t.keys_or("deleting keys")?.delete_keys(&keys).await?;
        for (d, _, size) in batch {
            report.deleted.push(*d);
            report.deleted_bytes += size;
        }
    }
    report.expired_markers = markers::remove_expired(t).await?;
    // Signatures of manifests no longer stored (older than the grace: a
    // push writes its signature before its manifest).
    let mut stale = Vec::new();
    for k in t.list_keys("signatures/sha256").await? {
        let Some(hex) = k
            .key
            .strip_prefix("signatures/sha256/")
            .and_then(|f| f.strip_suffix(".sig"))
        else {
            continue;
        };
        let Ok(d) = Digest::parse_hex(hex) else {
            continue;
        };
        let old = k.modified.is_some_and(|m| m < cutoff);
        if old && layout::signature_by_digest(&d) == k.key && !inv.manifests.contains_key(&d) {
            stale.push(k.key);
        }
    }
    if !stale.is_empty() {
        t.keys_or("deleting keys")?.delete_keys(&stale).await?;
    }
    Ok(report)
}
