//! Directory <-> ProcessFork image.
//!
//! [`snapshot()`] walks a directory and hashes it into an image: an fs tree
//! index blob (the [`FS_LAYER_ROLE`] layer) whose file contents are blobs
//! recorded as ranges of the files themselves (large files cut with
//! FastCDC, small files packed together, unchanged files taken from a stat
//! cache). Nothing is copied: the returned [`Snapshot::source`] serves
//! those blobs from the directory while a push encodes them, and refuses a
//! file that changed since it was hashed.
//!
//! [`restore::pull_into_dir`] pulls an image and writes its files straight
//! into a new (or empty) directory as the blobs arrive, each byte written
//! once; [`restore::restore_from_store`] does the same from a local store.
//! A failed restore removes what it created.
//!
//! Part of an image: [`restore::RestoreOptions::include`] restores only
//! some paths, [`cat_file`] writes one file, [`pull_tree`] and [`list`]
//! list the tree; each fetches only the blobs it reads. [`select`],
//! [`find`] and [`list`] are the pure path lookups behind them.
//!
//! The directory being snapshotted and the one being restored into are
//! written by an untrusted agent at the same time (DESIGN.md, "Threat
//! model"); see each module for what is checked.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use pf_registry_core::{Config, DirStore, ImageRef, Registry, SignedImage};
//! use pf_snapshot::{restore, snapshot, SnapshotOptions};
//!
//! let tmp = tempfile::tempdir()?;
//! let world = tmp.path().join("world");
//! std::fs::create_dir_all(world.join("notes"))?;
//! std::fs::write(world.join("notes/todo.txt"), "ship it")?;
//!
//! // Snapshot: hash the directory; only the fs tree goes into the store.
//! let store = Arc::new(DirStore::open(tmp.path().join("store"))?);
//! let snap = snapshot(&world, store.clone(), &SnapshotOptions::new("my-agent", "1.0"))?;
//!
//! // Push: file contents are read from `world` while they are encoded.
//! let repo = ImageRef::parse(&format!("file://{}", tmp.path().join("repo").display()))?;
//! let registry = pf_registry_file::open(&repo, &Config::default())?;
//! let rt = tokio::runtime::Runtime::new()?;
//! let image = SignedImage::new(&snap.manifest, None);
//! rt.block_on(registry.push(snap.source.clone(), &image))?;
//!
//! // Pull and restore: files are written into `restored` as they arrive.
//! let pulled_store = Arc::new(DirStore::open(tmp.path().join("store2"))?);
//! let dest = tmp.path().join("restored");
//! let report = rt.block_on(restore::pull_into_dir(
//!     &registry,
//!     pulled_store,
//!     &dest,
//!     &restore::RestoreOptions::default(),
//! ))?;
//! assert_eq!(report.restored_bytes, 7);
//! assert_eq!(std::fs::read_to_string(dest.join("notes/todo.txt"))?, "ship it");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod base;
mod browse;
mod fsat;
mod memo;
mod packjob;
mod pipeline;
mod ranged;
pub mod restore;
mod select;
pub mod snapshot;
pub mod source;
mod statcache;
mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::manifest::{
    AgentInfo, FsTree, KnownIndex, FS_LAYER_ROLE, FS_TREE_V2_MEDIA_TYPE,
};
use pf_registry_core::{Descriptor, Manifest, RegistryError, Result};

pub use base::BaseBook;
pub use browse::{cat_file, cat_from_store, pull_tree, BrowseReport, Selective};
pub use select::{find, kind_name, list, select, tree_path};
pub use snapshot::{snapshot_dir, Chunking, PackNames};
pub use source::SourceStore;
pub use statcache::StatCache;

/// What [`snapshot()`] records in the manifest besides the fs tree, and how
/// it cuts files.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Who produced the image.
    pub agent: AgentInfo,
    /// Parent manifest digests.
    pub parents: Vec<Digest>,
    /// Free-form annotations.
    pub annotations: BTreeMap<String, String>,
    /// The stat cache file (read, then rewritten with this run's entries);
    /// `None` hashes every file.
    pub stat_cache: Option<PathBuf>,
    /// How files are cut into chunks and packs.
    pub chunking: Chunking,
    /// The fs tree of the version this one follows at the destination
    /// (format v2; others are ignored). Chunks it holds are referenced
    /// where they lie instead of being packed again, so the push sends
    /// only new chunks; its packs must then be at the destination (a push
    /// reports them missing otherwise). Use a tree this program built or
    /// verified: its chunk claims are not re-checked.
    pub base: Option<FsTree>,
    /// The same as [`SnapshotOptions::base`], given as the digest of a v2
    /// fs tree in the snapshot's store (see [`BaseBook::base_digest`]); it
    /// is read and verified only if the snapshot needs it. With a stat
    /// cache, a directory unchanged since its last snapshot, whose tree is
    /// this base, ends right after the walk (the tree memo). Ignored when
    /// `base` is set; a tree it cannot read or verify means no base.
    pub base_stored: Option<Digest>,
    /// How new packs are named ([`PackNames::Chunks`] by default).
    pub pack_names: PackNames,
    /// Encode new packs for the push while reading them back (see
    /// [`pf_registry_core::Registry::encode_ahead`]): the snapshot's
    /// source then offers them ready to upload. `None`: the push encodes.
    pub encode_ahead: Option<pf_registry_core::codec::EncodeAhead>,
}

impl SnapshotOptions {
    /// Options for agent `name` `version`, no parents, annotations nor
    /// stat cache, and `pf`'s chunking.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> SnapshotOptions {
        SnapshotOptions {
            agent: AgentInfo {
                name: name.into(),
                version: version.into(),
            },
            parents: Vec::new(),
            annotations: BTreeMap::new(),
            stat_cache: None,
            chunking: Chunking::default(),
            base: None,
            base_stored: None,
            pack_names: PackNames::default(),
            encode_ahead: None,
        }
    }
}

/// A hashed directory, ready to push.
pub struct Snapshot {
    /// The manifest: one [`FS_LAYER_ROLE`] layer holding the fs tree.
    pub manifest: Manifest,
    /// Serves every blob of the image: file contents from the directory,
    /// the fs tree from the store given to [`snapshot()`]. Push from this.
    pub source: Arc<SourceStore>,
    /// Entries skipped (special files, names that are not UTF-8), one
    /// sentence each.
    pub warnings: Vec<String>,
    /// Files whose hash came from the stat cache.
    pub cache_hits: u64,
    /// The tree memo recognised the directory as unchanged since its last
    /// snapshot, whose tree is [`SnapshotOptions::base_stored`]: the tree
    /// is that base, and nothing but the walk was done.
    pub unchanged: bool,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("manifest", &self.manifest)
            .field("warnings", &self.warnings)
            .field("cache_hits", &self.cache_hits)
            .finish_non_exhaustive()
    }
}

/// Snapshots directory `dir`: hashes its files, writes the fs tree blob
/// into `store` and returns the manifest and the source to push from.
/// Symlinks are recorded, not followed; special files are skipped with a
/// warning.
pub fn snapshot(
    dir: &Path,
    store: Arc<dyn BlobStore>,
    options: &SnapshotOptions,
) -> Result<Snapshot> {
    snapshot_at(dir, store, options, statcache::now_secs())
}

/// [`snapshot()`] for a run that started at `started` (seconds since the
/// epoch; the racy-clean rule measures from it).
pub(crate) fn snapshot_at(
    dir: &Path,
    store: Arc<dyn BlobStore>,
    options: &SnapshotOptions,
    started: i64,
) -> Result<Snapshot> {
    let mut m = Manifest::new(options.agent.clone(), now_rfc3339());
    m.parents.clone_from(&options.parents);
    m.annotations.clone_from(&options.annotations);
    let source = Arc::new(SourceStore::new(store.clone()));
    let dir_abs =
        std::fs::canonicalize(dir).map_err(io_ctx(format!("resolving {}", dir.display())))?;
    let mut warnings = Vec::new();
    let mut skeleton = FsTree::default();
    // The tree memo: an unchanged directory onto its own last tree. Its
    // stored tree, if the memo names it, is re-hashed beside the walk
    // (the push uploads it as it is stored, should the destination lack it).
    let stored_base = options.base_stored.filter(|_| options.base.is_none());
    let memo = options.stat_cache.as_ref().map(|p| {
        let path = memo::path_for(p);
        let memo = memo::Memo::load(&path);
        (path, memo)
    });
    let check = stored_base.filter(|b| memo.as_ref().is_some_and(|(_, m)| m.names(&dir_abs, b)));
    let (walked, checked) = std::thread::scope(|s| {
        let checking = check.map(|b| {
            let st = store.clone();
            s.spawn(move || restore::verified_size(&*st, &b))
        });
        let walked = walk::walk(&dir_abs, &mut skeleton, &mut |w| warnings.push(w));
        (walked, checking.and_then(|h| h.join().ok()))
    });
    let walked = walked?;
    let memo = match memo {
        Some((path, memo)) => {
            let fp = memo::fingerprint(&dir_abs, options.chunking, &skeleton, &walked, started);
            if let (Some(fp), Some(b), Some(Ok(size))) = (&fp, check, checked) {
                match memo.unchanged(&path, &dir_abs, fp, &b) {
                    Some(facts) if facts.size() == size => {
                        m.layers.push(fs_layer(b, size));
                        source.add_known(b, facts.known());
                        return Ok(Snapshot {
                            manifest: m,
                            source,
                            warnings,
                            cache_hits: walked.todo.len() as u64,
                            unchanged: true,
                        });
                    }
                    _ => {}
                }
            }
            Some((path, fp, memo))
        }
        None => None,
    };
    let mut cache = match &options.stat_cache {
        Some(p) => {
            let mut c = StatCache::load(p);
            c.started = started;
            c
        }
        None => StatCache::default(),
    };
    let loaded;
    let base = match &options.base {
        Some(b) => Some(b).filter(|b| b.is_v2()),
        None => {
            loaded = stored_base.and_then(|d| base::load_tree(&*store, &d));
            loaded.as_ref()
        }
    };
    let tree = snapshot::snapshot_walked(
        skeleton,
        walked,
        &source,
        &mut cache,
        (options.chunking, options.pack_names),
        base,
        options.encode_ahead.as_ref(),
    )?;
    if let Some(p) = &options.stat_cache {
        cache.save(p)?;
    }
    let bytes = tree.to_bytes();
    let digest = store.put(&bytes)?;
    match memo {
        Some((path, Some(fp), memo)) => {
            let facts = memo::TreeFacts::of(digest, bytes.len() as u64, &tree);
            memo.record(&path, &dir_abs, fp, &facts)?
        }
        Some((path, None, memo)) => memo.forget(&path, &dir_abs)?,
        None => {}
    }
    m.layers.push(fs_layer(digest, bytes.len() as u64));
    source.add_known(digest, KnownIndex::Tree(Arc::new(tree)));
    Ok(Snapshot {
        manifest: m,
        source,
        warnings,
        cache_hits: cache.hits,
        unchanged: false,
    })
}

/// The manifest layer of fs tree `digest` of `size` bytes.
fn fs_layer(digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        role: FS_LAYER_ROLE.into(),
        media_type: FS_TREE_V2_MEDIA_TYPE.into(),
        digest,
        size,
    }
}

/// Maps an I/O error to a [`RegistryError`] saying what was being done.
pub(crate) fn io_ctx(ctx: String) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |e| RegistryError::io(ctx, e)
}

/// Current UTC time as RFC 3339 (seconds), without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_snapshot_restores_from_a_store_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let world = tmp.path().join("world");
        std::fs::create_dir_all(world.join("a/b")).unwrap();
        std::fs::write(world.join("a/b/small"), "small file").unwrap();
        std::fs::write(world.join("big"), vec![9u8; 3 << 20]).unwrap();
        std::fs::write(world.join("empty"), "").unwrap();
        std::fs::set_permissions(world.join("empty"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("a/b/small", world.join("link")).unwrap();
        let store = Arc::new(pf_cas::MemoryStore::new());
        let snap = snapshot(&world, store.clone(), &SnapshotOptions::new("t", "1")).unwrap();
        let tree = restore::manifest_tree(&snap.manifest, &*snap.source).unwrap();
        let tilings = pf_registry_core::pack::chunk_named(&tree);
        for d in snap.source.list().unwrap() {
            pf_registry_core::pack::copy_blob(&*snap.source, &*store, &d, &tilings).unwrap();
        }
        let dest = tmp.path().join("out");
        let opts = restore::RestoreOptions::default();
        let n = restore::restore_from_store(&snap.manifest, &*store, &dest, &opts).unwrap();
        assert_eq!(n, 10 + (3 << 20));
        assert_eq!(
            std::fs::read(dest.join("a/b/small")).unwrap(),
            b"small file"
        );
        assert_eq!(std::fs::read(dest.join("big")).unwrap(), vec![9u8; 3 << 20]);
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("a/b/small")
        );
        let mode = std::fs::metadata(dest.join("empty"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second restore into the now non-empty directory is refused.
        assert!(restore::restore_from_store(&snap.manifest, &*store, &dest, &opts).is_err());
    }

    #[test]
    fn now_is_rfc3339_seconds() {
        let s = super::now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
    }
}
