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
/// fetched again; a local copy of a blob that fills file ranges is laid out
/// when the pull asks whether it is intact ([`RestoreSink::lay_out_local`]),
/// and [`Layout::finish`] copies what is left.
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

    /// Lays out `inner`'s copy of file-content blob `digest`, checked as it
    /// is written (chunk by chunk for a pack named by its chunks): one read
    /// of the copy, where a check now and a copy in [`Layout::finish`] read
    /// and hashed it twice. `Some(true)`: laid out (of `size`, if given);
    /// `Some(false)`: no local copy; `None`: the copy could not be read or
    /// is not the blob (the ranges it reached hold bad bytes until the
    /// blob is fetched and written again, and `inner`'s own check decides).
    /// A failure to write the restore is an error.
    fn lay_out_local(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<Option<bool>> {
        let reader = match self.inner.open(digest) {
            Ok(r) => r,
            Err(pf_cas::CasError::NotFound(_)) => return Ok(Some(false)),
            Err(_) => return Ok(None),
        };
        let mut r = NoteFailure {
            inner: reader,
            failed: false,
        };
        match self.layout.write_blob(digest, &mut r) {
            Ok((_, n)) => Ok(Some(size.is_none_or(|s| s == n))),
            Err(pf_cas::CasError::Integrity { .. }) => Ok(None),
            Err(_) if r.failed => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A reader that remembers whether a read failed (so a failure of the
/// local copy is told from a failure to write the restore).
struct NoteFailure<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for NoteFailure<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed |= r
            .as_ref()
            .is_err_and(|e| e.kind() != std::io::ErrorKind::Interrupted);
        r
    }
}

impl BlobStore for RestoreSink {
    /// A blob that fills file ranges is laid out from `inner`'s copy and
    /// checked as it is ([`RestoreSink::lay_out_local`]); a damaged copy is
    /// then `inner`'s to judge (a store that re-hashes removes it), so it
    /// is fetched again rather than copied into the restore.
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        if self.layout.wants(digest) {
            if let Some(done) = self.lay_out_local(digest, size)? {
                return Ok(done);
            }
        }
        self.inner.has_intact(digest, size)
    }
    /// [`has_intact`](Self::has_intact); the layout checks a pack named by
    /// its chunks by the tilings it knows, `inner` with `namer`.
    fn has_intact_as(
        &self,
        digest: &Digest,
        size: Option<u64>,
        namer: &mut dyn pf_cas::Namer,
    ) -> pf_cas::Result<bool> {
        if self.layout.wants(digest) {
            if let Some(done) = self.lay_out_local(digest, size)? {
                return Ok(done);
            }
        }
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
