//! Reading part of an encrypted image without restoring it (`pf ls` and
//! `pf cat` with `--identity`): [`pull_tree`] fetches only the key
//! envelope and the sealed index and opens them; [`cat_file`] then fetches
//! only the sealed packs the file is read from and writes it through the
//! opened view. Like the plain ones (pf-snapshot's `pull_tree` and
//! `cat_file`), both pull through a target whose store reports every other
//! blob present, so the engine never fetches it; the signature is checked
//! by the pull, before anything is opened.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{EntryKind, FsTree};
use pf_registry_core::{Manifest, PullReport, PullTarget, Registry};
use pf_snapshot::restore::manifest_tree;
use pf_snapshot::Selective;

use crate::image::{open_index_with, Opened, ENVELOPE_ROLE, INDEX_ROLE};
use crate::keys::Identity;
use crate::Result;

/// An encrypted image's plaintext tree, opened.
#[derive(Debug)]
#[non_exhaustive]
pub struct Browsed {
    /// The pull (of the outer image).
    pub pull: PullReport,
    /// The opened image: inner manifest, and the store view.
    pub opened: Opened,
    /// The inner image's merged fs tree.
    pub tree: FsTree,
}

/// Fetches the envelope, the sealed index and the sealed packs listed in
/// `packs` (digests of sealed packs); reports every other blob present.
struct Only {
    packs: HashSet<Digest>,
    skipped: Arc<AtomicU64>,
}

impl PullTarget for Only {
    fn data_store(
        &self,
        manifest: &Manifest,
        store: &Arc<dyn BlobStore>,
    ) -> pf_registry_core::Result<Arc<dyn BlobStore>> {
        let mut wanted = self.packs.clone();
        wanted.extend(
            manifest
                .layers
                .iter()
                .filter(|l| l.role == ENVELOPE_ROLE || l.role == INDEX_ROLE)
                .map(|l| l.digest),
        );
        Ok(Arc::new(Selective::new(
            store.clone(),
            move |d| wanted.contains(d),
            self.skipped.clone(),
        )))
    }
}

pub(crate) async fn pull_only(
    registry: &dyn Registry,
    store: &Arc<dyn BlobStore>,
    packs: HashSet<Digest>,
) -> Result<PullReport> {
    let target = Only {
        packs,
        skipped: Arc::new(AtomicU64::new(0)),
    };
    Ok(registry.pull_into(store.clone(), &target).await?)
}

/// Pulls the encrypted image `registry` serves into `store`, fetching only
/// its envelope and sealed index, and opens them with the first of
/// `identities` it was sealed for. No identity: [`crate::CryptError::NeedIdentity`]
/// naming the key ids; none of them: [`crate::CryptError::WrongIdentity`].
pub async fn pull_tree(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    identities: &[Identity],
) -> Result<Browsed> {
    let pull = pull_only(registry, &store, HashSet::new()).await?;
    let opened = open_index_with(&pull.manifest, store, identities, u64::MAX)?;
    let tree = manifest_tree(&opened.manifest, &*opened.store)?;
    Ok(Browsed { pull, opened, tree })
}

/// Writes the regular file at `path` of the encrypted image `registry`
/// serves to `out`: the tree as [`pull_tree`] opens it, then only the
/// sealed packs the file is read from, each opened and checked against its
/// plaintext digest before any byte of it is written. Path errors as
/// pf-snapshot's `cat_file` (missing: not found; not a regular file: bad
/// reference). Returns the pull and the bytes written.
pub async fn cat_file(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    identities: &[Identity],
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<(PullReport, u64)> {
    let b = pull_tree(registry, store.clone(), identities).await?;
    let plain: HashSet<Digest> = match pf_snapshot::find(&b.tree, path) {
        Ok(e) if e.kind == EntryKind::File => b.tree.pieces(e).iter().map(|p| p.blob).collect(),
        // The error comes from cat_from_store below, without a fetch.
        _ => HashSet::new(),
    };
    let sealed: HashSet<Digest> = b
        .opened
        .store
        .seals()
        .filter(|s| plain.contains(&s.plain))
        .map(|s| s.sealed)
        .collect();
    let mut pull = b.pull;
    if !sealed.is_empty() {
        let again = pull_only(registry, &store, sealed).await?;
        if again.manifest_digest != pull.manifest_digest {
            return Err(crate::CryptError::Malformed(
                "the reference moved to another image while it was read".into(),
            ));
        }
        pull.blobs_fetched += again.blobs_fetched;
        pull.wire_bytes_fetched += again.wire_bytes_fetched;
    }
    let bytes = pf_snapshot::cat_from_store(&b.tree, &*b.opened.store, path, out)?;
    Ok((pull, bytes))
}
