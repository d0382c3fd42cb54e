//! `rm` and `retain`: delete tag pointers and manifests (their blobs go at
//! the next [`super::gc`]).

use std::collections::BTreeSet;
use std::time::Duration;

use pf_digest::Digest;
use serde::Serialize;

use super::inventory::Inventory;
use super::parse_rfc3339;
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::transport::Transport;

/// What [`rm`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RmReport {
    /// Tags removed (`None` is the untagged head).
    pub tags: Vec<Option<String>>,
    /// Manifests removed (by digest).
    pub manifests: Vec<Digest>,
}

/// Deletes the tag `tag` (`None`: the untagged head), or with `digest` the
/// manifest and every tag pointing at it. A manifest no remaining tag points
/// at is removed with its tag. `NotFound` when nothing matches. On a
/// backend without key access (OCI) the backend deletes through its own
/// API ([`Transport::remove_reference`]).
pub async fn rm(t: &dyn Transport, tag: Option<&str>, digest: Option<Digest>) -> Result<RmReport> {
    if t.keys().is_none() {
        return t.remove_reference(tag, digest).await;
    }
    let inv = Inventory::read(t).await?;
    let target = match digest {
        Some(d) => d,
        None => *inv.tags.get(&tag.map(str::to_string)).ok_or_else(|| {
            RegistryError::not_found(format!(
                "tag {} at {}",
                tag.unwrap_or("(untagged)"),
                t.location()
            ))
        })?,
    };
    if !inv.manifests.contains_key(&target) {
        return Err(RegistryError::not_found(format!(
            "manifest {target} at {}",
            t.location()
        )));
    }
    let mut report = RmReport::default();
    let doomed_tags: Vec<Option<String>> = match digest {
        Some(d) => inv.tags_of(&d),
        None => vec![tag.map(str::to_string)],
    };
    let mut doomed = Doomed::default();
    for tg in &doomed_tags {
        doomed.tag(tg.as_deref());
        report.tags.push(tg.clone());
    }
    let still_tagged = inv
        .tags
        .iter()
        .any(|(tg, d)| *d == target && !doomed_tags.contains(tg));
    if !still_tagged {
        doomed.manifest(&target);
        report.manifests.push(target);
    }
    doomed.delete(t).await?;
    Ok(report)
}

/// Keys to delete, in two phases: every manifest (tag pointer or by
/// digest) first, then the signatures, so a reader never sees a signature
/// without its manifest. Each phase is one [`KeyStore::delete_keys`] call
/// (one commit on the Hub).
///
/// [`KeyStore::delete_keys`]: crate::transport::KeyStore::delete_keys
#[derive(Default)]
struct Doomed {
    manifests: Vec<String>,
    signatures: Vec<String>,
}

impl Doomed {
    fn tag(&mut self, tag: Option<&str>) {
        self.manifests.push(layout::tag_manifest(tag));
        self.signatures.push(layout::tag_signature(tag));
    }

    fn manifest(&mut self, d: &Digest) {
        self.manifests.push(layout::manifest_by_digest(d));
        self.signatures.push(layout::signature_by_digest(d));
    }

    async fn delete(self, t: &dyn Transport) -> Result<()> {
        let keys = t.keys_or("deleting keys")?;
        for phase in [self.manifests, self.signatures] {
            if !phase.is_empty() {
                keys.delete_keys(&phase).await?;
            }
        }
        Ok(())
    }
}

/// Which versions [`retain`] keeps; a version kept by any rule is kept.
#[derive(Debug, Clone, Default)]
pub struct RetainPolicy {
    /// Keep the newest N versions (by `created_at`).
    pub keep_last: Option<usize>,
    /// Keep versions created within this long of now.
    pub keep_within: Option<Duration>,
    /// Keep the versions these tags point at (and the tags).
    pub keep_tags: Vec<String>,
    /// Report only; delete nothing.
    pub dry_run: bool,
}

/// What [`retain`] kept and removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetainReport {
    /// Versions kept, newest first.
    pub kept: Vec<Digest>,
    /// Versions removed.
    pub removed: Vec<Digest>,
    /// Tags removed (they pointed at removed versions).
    pub removed_tags: Vec<Option<String>>,
    /// Nothing was deleted on purpose.
    pub dry_run: bool,
}

/// Keeps the versions `policy` names and removes every other manifest and
/// the tags pointing at them. A policy that keeps nothing is refused.
pub async fn retain(t: &dyn Transport, policy: &RetainPolicy) -> Result<RetainReport> {
    if policy.keep_last.unwrap_or(0) == 0
        && policy.keep_within.is_none()
        && policy.keep_tags.is_empty()
    {
        return Err(RegistryError::invalid(
            "retention policy",
            "keeps nothing; give --keep-last, --keep-within or --keep-tag",
        ));
    }
    let inv = Inventory::read(t).await?;
    let newest = inv.newest_first();
    let now = super::now_ms() as i64 / 1000;
    let mut keep: BTreeSet<Digest> = BTreeSet::new();
    for (i, m) in newest.iter().enumerate() {
        let by_count = policy.keep_last.is_some_and(|n| i < n);
        let by_age = policy.keep_within.is_some_and(|w| {
            parse_rfc3339(&m.manifest.created_at).is_some_and(|c| c >= now - w.as_secs() as i64)
        });
        if by_count || by_age {
            keep.insert(m.digest);
        }
    }
    for tag in &policy.keep_tags {
        let d = inv.tags.get(&Some(tag.clone())).ok_or_else(|| {
            RegistryError::not_found(format!(
                "tag {tag} at {} (named by --keep-tag)",
                t.location()
            ))
        })?;
        keep.insert(*d);
    }
    let mut report = RetainReport {
        dry_run: policy.dry_run,
        ..RetainReport::default()
    };
    let mut doomed = Doomed::default();
    for m in newest {
        if keep.contains(&m.digest) {
            report.kept.push(m.digest);
            continue;
        }
        for tg in inv.tags_of(&m.digest) {
            doomed.tag(tg.as_deref());
            report.removed_tags.push(tg);
        }
        doomed.manifest(&m.digest);
        report.removed.push(m.digest);
    }
    if !policy.dry_run {
        doomed.delete(t).await?;
    }
    Ok(report)
}
