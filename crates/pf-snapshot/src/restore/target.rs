//! The [`PullTarget`] through which a pull writes file contents straight
//! into a [`Layout`] as blobs arrive.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{index_children, is_fs_tree_media_type, is_index_media_type};
use pf_registry_core::{Manifest, PullTarget, Result};

use super::{manifest_tree, Layout, RestoreOptions};
use crate::browse::Selective;

/// A [`PullTarget`] that restores the pulled fs tree into a directory:
/// file contents are written straight into place as they are fetched (each
/// byte written once), other blobs go to the caller's store.
#[derive(Debug)]
pub struct RestoreTarget {
    dest: PathBuf,
    options: RestoreOptions,
    layout: OnceLock<Arc<Layout>>,
    /// Blobs a partial restore made the pull skip.
    skipped: Arc<AtomicU64>,
}

impl RestoreTarget {
    /// A target restoring into `dest` (must not exist or be empty).
    pub fn new(dest: &Path, options: RestoreOptions) -> RestoreTarget {
        RestoreTarget {
            dest: dest.to_path_buf(),
            options,
            layout: OnceLock::new(),
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Closure blobs not fetched because a partial restore does not need
    /// them (0 for a full restore).
    pub fn blobs_skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The layout, once the pull has reached its data phase.
    pub fn layout(&self) -> Option<Arc<Layout>> {
        self.layout.get().cloned()
    }
}

impl PullTarget for RestoreTarget {
    fn data_store(
        &self,
        manifest: &Manifest,
        store: &Arc<dyn BlobStore>,
    ) -> Result<Arc<dyn BlobStore>> {
        let mut tree = manifest_tree(manifest, &**store)?;
        // A partial restore ([`RestoreOptions::include`]) lays out only the
        // selection; its sink reports every other blob (KV pages and other
        // layers included) present, so the pull never fetches it. An
        // include naming nothing fails here, before anything is created.
        let partial = !self.options.include.is_empty();
        if partial {
            let include: Vec<&str> = self.options.include.iter().map(String::as_str).collect();
            tree = crate::select(&tree, &include)?;
        }
        // Blobs other index blobs (KV page lists) also reference must land
        // in the store too, even if some file holds the same bytes.
        let mut keep = HashSet::new();
        for l in manifest
            .layers
            .iter()
            .filter(|l| !is_fs_tree_media_type(&l.media_type))
        {
            if is_index_media_type(&l.media_type) {
                let bytes = super::get_verified(&**store, &l.digest)?;
                for c in index_children(&l.media_type, &bytes)? {
                    keep.insert(c.digest);
                }
            }
        }
        let layout = Arc::new(Layout::create(tree, &self.dest, &self.options)?);
        let _ = self.layout.set(layout.clone());
        let sink = Arc::new(RestoreSink {
            layout: layout.clone(),
            inner: store.clone(),
            keep,
        });
        if !partial {
            return Ok(sink);
        }
        Ok(Arc::new(Selective::new(
            sink,
            move |d| layout.wants(d),
            self.skipped.clone(),
        )))
    }

    /// Blobs filling the same file are spread apart ([`Layout::spread`]).
    fn order(&self, blobs: &mut Vec<pf_registry_core::manifest::ClosureBlob>) {
        if let Some(l) = self.layout.get() {
            l.spread(blobs, |b| b.digest);
        }
    }
}

/// A store that writes file-content blobs into a [`Layout`] and everything
/// else into `inner`. Presence is `inner`'s, so blobs already local are not
/// fetched again ([`Layout::finish`] copies them).
struct RestoreSink {
    layout: Arc<Layout>,
    inner: Arc<dyn BlobStore>,
    /// Digests that go to `inner` as well (then copied into the layout).
    keep: HashSet<Digest>,
}

impl RestoreSink {
    /// Whether blob `digest` goes straight into the layout (and not to the
    /// inner store).
    fn takes(&self, digest: &Digest) -> bool {
        self.layout.wants(digest) && !self.keep.contains(digest)
    }
}

impl BlobStore for RestoreSink {
    /// `inner`'s check, so a damaged local copy is fetched again rather
    /// than copied into the restore.
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        self.inner.has_intact(digest, size)
    }
    /// `inner`'s check with `namer`, as [`has_intact`](Self::has_intact).
    fn has_intact_as(
        &self,
        digest: &Digest,
        size: Option<u64>,
        namer: &mut dyn pf_cas::Namer,
    ) -> pf_cas::Result<bool> {
        self.inner.has_intact_as(digest, size, namer)
    }
    /// A pack the layout takes is checked by the layout, which knows the
    /// packs named by their chunks (the namer is for `inner`).
    fn put_stream_as(
        &self,
        name: &Digest,
        namer: &mut dyn pf_cas::Namer,
        reader: &mut dyn Read,
    ) -> pf_cas::Result<u64> {
        if self.takes(name) {
            return Ok(self.layout.write_blob(name, reader)?.1);
        }
        self.inner.put_stream_as(name, namer, reader)
    }
    fn put(&self, bytes: &[u8]) -> pf_cas::Result<Digest> {
        let d = Digest::of(bytes);
        if self.takes(&d) {
            self.layout.write_blob(&d, &mut &bytes[..])?;
            return Ok(d);
        }
        self.inner.put(bytes)
    }
    fn put_stream(
        &self,
        expected: Option<&Digest>,
        reader: &mut dyn Read,
    ) -> pf_cas::Result<(Digest, u64)> {
        match expected {
            Some(d) if self.takes(d) => self.layout.write_blob(d, reader),
            _ => self.inner.put_stream(expected, reader),
        }
    }
    pf_cas::forward_to!(inner: has, size, open, list);
}
