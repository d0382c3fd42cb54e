//! Reading part of an image without restoring it: [`pull_tree`] (the fs
//! tree only, for `pf ls`) and [`cat_file`] (one regular file's bytes, for
//! `pf cat`). Both pull through a [`PullTarget`] whose store reports every
//! blob they do not need as present, so the engine never fetches it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use pf_cas::{BlobStore, CasError};
use pf_digest::Digest;
use pf_registry_core::manifest::{EntryKind, FsEntry, FsTree, Piece};
use pf_registry_core::pack::{PackCheck, Tilings};
use pf_registry_core::{Manifest, PullReport, PullTarget, Registry, RegistryError, Result};

use crate::restore::manifest_tree;
use crate::select::{find, kind_name, tree_path};

/// What [`pull_tree`] or [`cat_file`] pulled.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrowseReport {
    /// The pull: manifest digest, signature verification, blob counts
    /// (blobs not needed count as present there).
    pub pull: PullReport,
    /// Closure blobs not fetched because nothing read needs them.
    pub blobs_skipped: u64,
    /// Bytes written to the output ([`cat_file`]; 0 for [`pull_tree`]).
    pub bytes: u64,
}

/// Whether a blob is needed.
type Wanted = Box<dyn Fn(&Digest) -> bool + Send + Sync>;

/// A store that answers "present" for every blob `wanted` refuses (so a
/// pull does not fetch it) and is `inner` otherwise. Counts the blobs it
/// made the pull skip into `skipped`.
pub struct Selective {
    inner: Arc<dyn BlobStore>,
    wanted: Wanted,
    skipped: Arc<AtomicU64>,
}

impl Selective {
    /// `inner`, with the blobs `wanted` refuses reported present.
    pub fn new(
        inner: Arc<dyn BlobStore>,
        wanted: impl Fn(&Digest) -> bool + Send + Sync + 'static,
        skipped: Arc<AtomicU64>,
    ) -> Selective {
        Selective {
            inner,
            wanted: Box::new(wanted),
            skipped,
        }
    }
}

impl BlobStore for Selective {
    fn has(&self, digest: &Digest) -> pf_cas::Result<bool> {
        if (self.wanted)(digest) {
            return self.inner.has(digest);
        }
        Ok(true)
    }
    /// What a pull asks: a blob not wanted is "present" (and counted as
    /// skipped), a wanted one is `inner`'s answer.
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        if (self.wanted)(digest) {
            return self.inner.has_intact(digest, size);
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
    /// [`has_intact`](Self::has_intact), checking with `namer`.
    fn has_intact_as(
        &self,
        digest: &Digest,
        size: Option<u64>,
        namer: &mut dyn pf_cas::Namer,
    ) -> pf_cas::Result<bool> {
        if (self.wanted)(digest) {
            return self.inner.has_intact_as(digest, size, namer);
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
    pf_cas::forward_to!(inner: size, open, put, put_stream, put_stream_as, list);
}

/// Pulls the fs tree; then, if `path` is given, requires it to be a
/// regular file and wants exactly the blobs its content is read from.
struct BrowseTarget {
    path: Option<String>,
    tree: OnceLock<FsTree>,
    skipped: Arc<AtomicU64>,
}

impl PullTarget for BrowseTarget {
    fn data_store(
        &self,
        manifest: &Manifest,
        store: &Arc<dyn BlobStore>,
    ) -> Result<Arc<dyn BlobStore>> {
        let tree = manifest_tree(manifest, &**store)?;
        let mut wanted = HashSet::new();
        if let Some(p) = &self.path {
            let e = regular_file(&tree, p)?;
            wanted.extend(tree.pieces(e).iter().map(|piece| piece.blob));
        }
        let _ = self.tree.set(tree);
        Ok(Arc::new(Selective::new(
            store.clone(),
            move |d| wanted.contains(d),
            self.skipped.clone(),
        )))
    }
}

/// The entry at `path`, which must be a regular file (exit 1 otherwise; 2
/// if missing).
fn regular_file<'t>(tree: &'t FsTree, path: &str) -> Result<&'t FsEntry> {
    let e = find(tree, path)?;
    if e.kind != EntryKind::File {
        return Err(RegistryError::BadReference {
            input: path.to_string(),
            reason: format!("is a {}, not a regular file", kind_name(e.kind)),
        });
    }
    Ok(e)
}

async fn pull_with(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    path: Option<&str>,
) -> Result<(PullReport, FsTree, u64)> {
    let target = BrowseTarget {
        path: path.map(str::to_string),
        tree: OnceLock::new(),
        skipped: Arc::new(AtomicU64::new(0)),
    };
    let pull = registry.pull_into(store, &target).await?;
    let tree = target.tree.into_inner().ok_or_else(|| {
        RegistryError::io(
            "pull",
            io::Error::other("the pull never reached its data phase"),
        )
    })?;
    Ok((pull, tree, target.skipped.load(Ordering::Relaxed)))
}

/// Pulls the manifest and its index blobs (fs trees, KV page lists) into
/// `store` and returns the merged fs tree. No data blob is fetched.
pub async fn pull_tree(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
) -> Result<(BrowseReport, FsTree)> {
    let (pull, tree, blobs_skipped) = pull_with(registry, store, None).await?;
    let report = BrowseReport {
        pull,
        blobs_skipped,
        bytes: 0,
    };
    Ok((report, tree))
}

/// Writes the content of the regular file at `path` of the image to `out`.
/// Fetches only the blobs that file is read from (its chunks, or the whole
/// pack it sits in) into `store`; each blob is read back and checked
/// against its digest before any byte of it is written, so `out` never
/// gets bytes from a damaged or planted store entry. A missing path is
/// [`RegistryError::NotFound`] (exit 2), a directory, symlink or invalid
/// path [`RegistryError::BadReference`] (exit 1). On an error `out` may
/// hold a prefix of the file.
pub async fn cat_file(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<BrowseReport> {
    tree_path(path)?;
    // The tree first; then a v2 file's chunks by range from the packs not
    // local, or (v1, or a pack stored without a frame table) its blobs whole.
    let (mut pull, tree, mut blobs_skipped) = pull_with(registry, store.clone(), None).await?;
    let entry = regular_file(&tree, path)?;
    let mut fetched = crate::ranged::Fetched::default();
    let mut whole = !tree.is_v2();
    if tree.is_v2() {
        let (f, w) = crate::ranged::fetch(registry, &*store, &tree, &[entry]).await?;
        fetched = f;
        whole = !w.is_empty();
    }
    if whole {
        (pull, _, blobs_skipped) = pull_with(registry, store.clone(), Some(path)).await?;
    }
    pull.wire_bytes_fetched += fetched.wire_bytes;
    let pieces = tree.pieces(entry);
    let by_chunks = pf_registry_core::pack::chunk_named(&tree);
    let mut write = || write_file(&pieces, &fetched, (&*store, &by_chunks), out);
    let bytes = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write)?,
        _ => write()?,
    };
    Ok(BrowseReport {
        pull,
        blobs_skipped,
        bytes,
    })
}

/// Writes the regular file at `path` of `tree` to `out`, every blob read
/// from `store` and checked against its digest before any byte of it is
/// written (what [`cat_file`] does once the blobs are local; for a store
/// that is a view, such as an encrypted image opened). Errors as
/// [`cat_file`]'s. Returns the bytes written.
pub fn cat_from_store(
    tree: &FsTree,
    store: &dyn BlobStore,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    tree_path(path)?;
    let entry = regular_file(tree, path)?;
    write_file(
        &tree.pieces(entry),
        &crate::ranged::Fetched::default(),
        (store, &pf_registry_core::pack::chunk_named(tree)),
        out,
    )
}

/// Writes `pieces` in order: chunks read by range from `fetched`, the rest
/// from verified copies of their blobs in `store` (one copy per run of
/// pieces from the same blob; a pack named by its chunks, listed in
/// `by_chunks`, is verified chunk by chunk).
fn write_file(
    pieces: &[Piece],
    fetched: &crate::ranged::Fetched,
    (store, by_chunks): (&dyn BlobStore, &Tilings),
    out: &mut dyn Write,
) -> Result<u64> {
    let mut written = 0;
    let mut current: Option<(Digest, Verified)> = None;
    for piece in pieces {
        if let Some(b) = fetched
            .packs
            .get(&piece.blob)
            .and_then(|m| m.get(&piece.offset))
        {
            out.write_all(b)
                .map_err(|e| RegistryError::io("writing output", e))?;
            written += piece.len;
            continue;
        }
        let blob = match &mut current {
            Some((d, v)) if *d == piece.blob => v,
            _ => {
                &mut current
                    .insert((
                        piece.blob,
                        Verified::read(
                            store,
                            &piece.blob,
                            by_chunks.get(&piece.blob).map(Vec::as_slice),
                        )?,
                    ))
                    .1
            }
        };
        blob.copy_range(piece.offset, piece.len, out)?;
        written += piece.len;
    }
    out.flush()
        .map_err(|e| RegistryError::io("writing output", e))?;
    Ok(written)
}

/// Blobs up to this size are verified in memory; larger ones are spooled
/// to an unnamed temporary file.
const IN_MEMORY_MAX: usize = 64 << 20;

/// Hashes what is written and keeps it: in memory up to
/// [`IN_MEMORY_MAX`], then in an unnamed temporary file.
struct Spool<'a> {
    hasher: PackCheck<'a>,
    mem: Vec<u8>,
    file: Option<File>,
}

impl Write for Spool<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None if self.mem.len() + buf.len() <= IN_MEMORY_MAX => self.mem.extend_from_slice(buf),
            None => {
                let mut f = tempfile::tempfile()?;
                f.write_all(&self.mem)?;
                f.write_all(buf)?;
                self.mem = Vec::new();
                self.file = Some(f);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blob read whole from a store and checked against its digest.
enum Verified {
    Memory(Vec<u8>),
    Spooled(File, u64),
}

impl Verified {
    /// Blob `digest` of `store`, checked whole, or by the chunks of
    /// `tiling` if it is a pack named by its chunks.
    fn read(
        store: &dyn BlobStore,
        digest: &Digest,
        tiling: Option<&[(u64, Digest)]>,
    ) -> Result<Verified> {
        let mut spool = Spool {
            hasher: PackCheck::new(tiling),
            mem: Vec::new(),
            file: None,
        };
        io::copy(&mut store.open(digest)?, &mut spool)
            .map_err(|e| RegistryError::io(format!("reading blob {digest}"), e))?;
        let len = spool.hasher.len();
        let actual = spool.hasher.finish();
        if actual != *digest {
            return Err(CasError::Integrity {
                expected: *digest,
                actual,
            }
            .into());
        }
        Ok(match spool.file {
            Some(f) => Verified::Spooled(f, len),
            None => Verified::Memory(spool.mem),
        })
    }

    fn len(&self) -> u64 {
        match self {
            Verified::Memory(v) => v.len() as u64,
            Verified::Spooled(_, n) => *n,
        }
    }

    /// Writes bytes `offset..offset + len` of the blob to `out`.
    fn copy_range(&mut self, offset: u64, len: u64, out: &mut dyn Write) -> Result<()> {
        let end = offset.checked_add(len).filter(|e| *e <= self.len());
        let Some(end) = end else {
            return Err(RegistryError::invalid(
                "fs tree",
                format!(
                    "reads bytes {offset}..+{len} of a blob of {} bytes",
                    self.len()
                ),
            ));
        };
        let out_err = |e| RegistryError::io("writing output", e);
        match self {
            Verified::Memory(v) => out
                .write_all(&v[offset as usize..end as usize])
                .map_err(out_err),
            Verified::Spooled(f, _) => {
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| RegistryError::io("reading spooled blob", e))?;
                let n = io::copy(&mut (&*f).take(len), out).map_err(out_err)?;
                if n != len {
                    return Err(RegistryError::io(
                        "reading spooled blob",
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::MemoryStore;

    #[test]
    fn a_planted_store_entry_is_refused_before_any_byte_is_written() {
        /// A store whose blobs all read as other bytes.
        struct Lying(MemoryStore);
        impl BlobStore for Lying {
            fn has(&self, d: &Digest) -> pf_cas::Result<bool> {
                self.0.has(d)
            }
            fn size(&self, d: &Digest) -> pf_cas::Result<Option<u64>> {
                self.0.size(d)
            }
            fn open(&self, _: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
                Ok(Box::new(&b"planted!"[..]))
            }
            fn put(&self, b: &[u8]) -> pf_cas::Result<Digest> {
                self.0.put(b)
            }
            fn put_stream(
                &self,
                e: Option<&Digest>,
                r: &mut dyn Read,
            ) -> pf_cas::Result<(Digest, u64)> {
                self.0.put_stream(e, r)
            }
            fn list(&self) -> pf_cas::Result<Vec<Digest>> {
                self.0.list()
            }
        }
        let store = Lying(MemoryStore::new());
        let d = store.put(b"original").unwrap();
        let entry = FsEntry {
            path: "f".into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: 8,
            blob: Some(d),
            chunks: vec![],
            target: None,
            offset: None,
            parts: vec![],
        };
        let mut out = Vec::new();
        let e = write_file(
            &FsTree::default().pieces(&entry),
            &Default::default(),
            (&store, &Tilings::new()),
            &mut out,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::Integrity { .. } | RegistryError::InvalidData { .. }
            ),
            "{e}"
        );
        assert!(out.is_empty());
        // The honest store gives the file.
        write_file(
            &FsTree::default().pieces(&entry),
            &Default::default(),
            (&store.0, &Tilings::new()),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"original");
    }

    #[test]
    fn a_range_past_the_blob_end_is_invalid_data() {
        let store = MemoryStore::new();
        let d = store.put(b"short").unwrap();
        let mut v = Verified::read(&store, &d, None).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            v.copy_range(3, 5, &mut out).unwrap_err(),
            RegistryError::Integrity { .. } | RegistryError::InvalidData { .. }
        ));
        v.copy_range(1, 3, &mut out).unwrap();
        assert_eq!(out, b"hor");
    }
}
