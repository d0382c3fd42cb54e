//! Turning a directory into blobs plus an fs tree, and back.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use pf_cas::BlobStore;
use pf_registry::manifest::{validate_relative_path, Chunk, EntryKind, FsEntry, FsTree};
use pf_registry::{RegistryError, Result};

/// Files at least this large are split with content-defined chunking.
pub const CDC_THRESHOLD: u64 = 4 << 20;
/// FastCDC minimum / average / maximum chunk sizes.
pub const CDC_MIN: u32 = 256 << 10;
/// Average chunk size.
pub const CDC_AVG: u32 = 1 << 20;
/// Maximum chunk size.
pub const CDC_MAX: u32 = 4 << 20;
/// Chunks cut ahead while the previous batch is hashed and stored.
const CDC_BATCH: usize = 8;

fn io_ctx(ctx: String) -> impl FnOnce(io::Error) -> RegistryError {
    move |e| RegistryError::io(ctx, e)
}

/// Walks `dir` and stores every file's content in `store`, returning the fs
/// tree. Special files (devices, sockets, fifos) are skipped with a warning.
pub fn snapshot_dir(
    dir: &Path,
    store: &dyn BlobStore,
    cache: &mut StatCache,
    warn: &mut dyn FnMut(String),
) -> Result<FsTree> {
    let mut tree = FsTree::default();
    let meta = fs::metadata(dir).map_err(io_ctx(format!("reading {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(RegistryError::invalid(
            dir.display().to_string(),
            "not a directory",
        ));
    }
    let mut todo = Vec::new();
    walk(dir, dir, &mut todo, &mut tree, warn)?;
    // Unchanged files come from the stat cache; the rest are read, chunked
    // and hashed in parallel, largest first so the big files overlap.
    let mut misses = Vec::new();
    for t in todo {
        match cache.lookup(&t.key, &t.md, store) {
            Some(s) => {
                cache.hits += 1;
                fill(&mut tree.entries[t.index], s);
            }
            None => misses.push(t),
        }
    }
    misses.sort_by_key(|t| std::cmp::Reverse(t.md.len()));
    let stored: Vec<Result<Stored>> = {
        use rayon::prelude::*;
        misses
            .par_iter()
            .map(|t| store_file(&t.path, t.md.len(), store))
            .collect()
    };
    for (t, s) in misses.into_iter().zip(stored) {
        let s = s?;
        // Re-stat: only cache what is known not to have changed meanwhile.
        if let Ok(after) = fs::symlink_metadata(&t.path) {
            if after.len() == s.2
                && after.mtime() == t.md.mtime()
                && after.mtime_nsec() == t.md.mtime_nsec()
            {
                cache.insert(t.key, &after, &s);
            }
        }
        fill(&mut tree.entries[t.index], s);
    }
    Ok(tree)
}

/// A regular file found by the walk whose content is still to be stored.
struct PendingFile {
    /// Index of its entry in the tree.
    index: usize,
    path: PathBuf,
    key: String,
    md: fs::Metadata,
}

fn fill(e: &mut FsEntry, (blob, chunks, size): Stored) {
    e.blob = blob;
    e.chunks = chunks;
    e.size = size;
}

/// What a file looked like when its content was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
    blob: Option<pf_digest::Digest>,
    chunks: Vec<Chunk>,
}

impl CacheEntry {
    fn matches(&self, md: &fs::Metadata) -> bool {
        self.size == md.len()
            && self.mtime == (md.mtime(), md.mtime_nsec())
            && self.ctime == (md.ctime(), md.ctime_nsec())
            && self.ino == md.ino()
            && self.dev == md.dev()
    }
}

/// A stat cache (like restic's or git's index): a file whose size, mtime,
/// ctime, inode and device are unchanged since it was stored, and whose
/// blobs are still in the store, is not read or hashed again. Entries for
/// files modified in the last 2 seconds are never reused (racy-clean rule).
#[derive(Debug, Default)]
pub struct StatCache {
    entries: std::collections::HashMap<String, CacheEntry>,
    started: i64,
    /// Files reused from the cache in this run.
    pub hits: u64,
}

impl StatCache {
    /// Loads the cache at `path`; a missing or unreadable cache is empty.
    pub fn load(path: &Path) -> StatCache {
        let entries = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatCache {
            entries,
            hits: 0,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }

    /// Writes the cache atomically (temp + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(&self.entries).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).map_err(io_ctx(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, path).map_err(io_ctx(format!("renaming {}", path.display())))
    }

    fn lookup(&self, key: &str, md: &fs::Metadata, store: &dyn BlobStore) -> Option<Stored> {
        let e = self.entries.get(key)?;
        if !e.matches(md) || md.mtime() >= self.started - 2 {
            return None;
        }
        let present = match &e.blob {
            Some(b) => store.has(b).ok()?,
            None => e.chunks.iter().all(|c| store.has(&c.blob).unwrap_or(false)),
        };
        present.then(|| (e.blob, e.chunks.clone(), e.size))
    }

    fn insert(&mut self, key: String, md: &fs::Metadata, stored: &Stored) {
        self.entries.insert(
            key,
            CacheEntry {
                size: stored.2,
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                ino: md.ino(),
                dev: md.dev(),
                blob: stored.0,
                chunks: stored.1.clone(),
            },
        );
    }
}

fn rel_string(root: &Path, p: &Path) -> Result<String> {
    let rel = p
        .strip_prefix(root)
        .map_err(|_| RegistryError::invalid(p.display().to_string(), "outside the root"))?;
    let s = rel.to_str().ok_or_else(|| {
        RegistryError::invalid(p.display().to_string(), "path is not valid UTF-8")
    })?;
    validate_relative_path(s).map_err(|r| RegistryError::invalid(p.display().to_string(), r))?;
    Ok(s.to_string())
}

/// Lists `dir` into `tree` (sorted, depth first); regular files get an
/// entry with no content yet and a [`PendingFile`] in `todo`.
fn walk(
    root: &Path,
    dir: &Path,
    todo: &mut Vec<PendingFile>,
    tree: &mut FsTree,
    warn: &mut dyn FnMut(String),
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_ctx(format!("listing {}", dir.display())))?
        .collect::<io::Result<_>>()
        .map_err(io_ctx(format!("listing {}", dir.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let md = fs::symlink_metadata(&path).map_err(io_ctx(format!("stat {}", path.display())))?;
        let ft = md.file_type();
        let rel = match rel_string(root, &path) {
            Ok(r) => r,
            Err(err) => {
                warn(format!("skipping {}: {err}", path.display()));
                continue;
            }
        };
        let mode = md.mode() & 0o7777;
        if ft.is_dir() {
            tree.entries.push(FsEntry {
                path: rel,
                kind: EntryKind::Dir,
                mode,
                size: 0,
                blob: None,
                chunks: vec![],
                target: None,
            });
            walk(root, &path, todo, tree, warn)?;
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&path).map_err(io_ctx(format!("readlink {}", path.display())))?;
            let Some(t) = target.to_str() else {
                warn(format!(
                    "skipping symlink {} with a non-UTF-8 target",
                    path.display()
                ));
                continue;
            };
            tree.entries.push(FsEntry {
                path: rel,
                kind: EntryKind::Symlink,
                mode: 0o777,
                size: 0,
                blob: None,
                chunks: vec![],
                target: Some(t.to_string()),
            });
        } else if ft.is_file() {
            todo.push(PendingFile {
                index: tree.entries.len(),
                key: path.to_string_lossy().into_owned(),
                path,
                md,
            });
            tree.entries.push(FsEntry {
                path: rel,
                kind: EntryKind::File,
                mode,
                size: 0,
                blob: None,
                chunks: vec![],
                target: None,
            });
        } else {
            warn(format!("skipping special file {}", path.display()));
        }
    }
    Ok(())
}

type Stored = (Option<pf_digest::Digest>, Vec<Chunk>, u64);

fn store_file(path: &Path, len: u64, store: &dyn BlobStore) -> Result<Stored> {
    let mut f = File::open(path).map_err(io_ctx(format!("opening {}", path.display())))?;
    if len < CDC_THRESHOLD {
        let (d, n) = store
            .put_stream(None, &mut f)
            .map_err(RegistryError::from)?;
        return Ok((Some(d), vec![], n));
    }
    // Cut points are found on this thread; each batch of chunks is hashed
    // and stored in parallel while the next batch is read and cut. Memory:
    // two batches of at most `CDC_BATCH` chunks of at most `CDC_MAX` bytes.
    let mut cdc = fastcdc::v2020::StreamCDC::new(f, CDC_MIN, CDC_AVG, CDC_MAX);
    let mut next_batch = || -> Result<Vec<Vec<u8>>> {
        let mut batch = Vec::with_capacity(CDC_BATCH);
        for c in cdc.by_ref().take(CDC_BATCH) {
            let c = c.map_err(|e| {
                RegistryError::io(
                    format!("chunking {}", path.display()),
                    io::Error::other(e.to_string()),
                )
            })?;
            batch.push(c.data);
        }
        Ok(batch)
    };
    let mut chunks = Vec::new();
    let mut total = 0u64;
    let mut batch = next_batch()?;
    while !batch.is_empty() {
        let (stored, next) = rayon::join(
            || {
                use rayon::prelude::*;
                batch
                    .par_iter()
                    .map(|data| store.put(data).map(|d| (d, data.len() as u64)))
                    .collect::<std::result::Result<Vec<_>, _>>()
            },
            &mut next_batch,
        );
        for (d, len) in stored? {
            total += len;
            chunks.push(Chunk { blob: d, size: len });
        }
        batch = next?;
    }
    if chunks.len() == 1 {
        let only = chunks.remove(0);
        return Ok((Some(only.blob), vec![], total));
    }
    Ok((None, chunks, total))
}

/// Checks a symlink at `link_path` (relative) pointing to `target` stays inside the root.
pub fn symlink_stays_inside(link_path: &str, target: &str) -> bool {
    let t = Path::new(target);
    if t.is_absolute() {
        return false;
    }
    // Depth of the directory containing the link.
    let mut depth: i64 = link_path.split('/').count() as i64 - 1;
    for c in t.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Restores `tree` from `store` into `dest`, which must not exist or be empty.
/// Refuses symlinks that point outside `dest` and never writes through a symlink.
pub fn restore(tree: &FsTree, store: &dyn BlobStore, dest: &Path) -> Result<u64> {
    tree.validate()?;
    if dest.exists() {
        let mut it = fs::read_dir(dest).map_err(io_ctx(format!("listing {}", dest.display())))?;
        if it.next().is_some() {
            return Err(RegistryError::invalid(
                dest.display().to_string(),
                "restore directory is not empty",
            ));
        }
    }
    fs::create_dir_all(dest).map_err(io_ctx(format!("creating {}", dest.display())))?;
    for e in tree.entries.iter().filter(|e| e.kind == EntryKind::Symlink) {
        let t = e.target.as_deref().unwrap_or("");
        if !symlink_stays_inside(&e.path, t) {
            return Err(RegistryError::invalid(
                format!("symlink {}", e.path),
                format!("target {t:?} points outside the restore directory"),
            ));
        }
    }
    let mut bytes = 0u64;
    let mut dirs: Vec<&FsEntry> = tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .collect();
    dirs.sort_by_key(|e| e.path.matches('/').count());
    for d in &dirs {
        let p = safe_join(dest, &d.path)?;
        fs::create_dir_all(&p).map_err(io_ctx(format!("creating {}", p.display())))?;
    }
    // Files in parallel (each written whole by one thread).
    let files: Vec<&FsEntry> = tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    let written: Vec<Result<u64>> = {
        use rayon::prelude::*;
        files
            .par_iter()
            .map(|e| restore_file(e, store, dest))
            .collect()
    };
    for w in written {
        bytes += w?;
    }
    for e in tree.entries.iter().filter(|e| e.kind == EntryKind::Symlink) {
        let p = safe_join(dest, &e.path)?;
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_ctx(format!("creating {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &p)
            .map_err(io_ctx(format!("symlink {}", p.display())))?;
    }
    for d in dirs.iter().rev() {
        let p = safe_join(dest, &d.path)?;
        fs::set_permissions(&p, fs::Permissions::from_mode((d.mode & 0o777) | 0o700))
            .map_err(io_ctx(format!("chmod {}", p.display())))?;
    }
    Ok(bytes)
}

/// Writes one regular file of the tree under `dest` (which must not exist yet).
fn restore_file(e: &FsEntry, store: &dyn BlobStore, dest: &Path) -> Result<u64> {
    let p = safe_join(dest, &e.path)?;
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).map_err(io_ctx(format!("creating {}", parent.display())))?;
        safe_join(dest, &e.path)?; // re-check nothing on the way is a symlink
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(io_ctx(format!("creating {}", p.display())))?;
    let mut bytes = 0u64;
    for (d, _) in e.blobs() {
        let mut r = store.open(&d)?;
        bytes += io::copy(&mut r, &mut f).map_err(io_ctx(format!("writing {}", p.display())))?;
    }
    f.flush()
        .map_err(io_ctx(format!("writing {}", p.display())))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o777))
        .map_err(io_ctx(format!("chmod {}", p.display())))?;
    Ok(bytes)
}

/// Joins a validated relative path under `root`, refusing if any existing
/// component on the way is a symlink.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    validate_relative_path(rel).map_err(|r| RegistryError::invalid("fs tree", r))?;
    let mut p = root.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
        if let Ok(md) = fs::symlink_metadata(&p) {
            if md.file_type().is_symlink() {
                return Err(RegistryError::invalid(
                    format!("path {rel}"),
                    "would be written through a symlink",
                ));
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::MemoryStore;

    #[test]
    fn stat_cache_skips_unchanged_files_and_catches_changes() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..5 {
            let p = dir.path().join(format!("f{i}"));
            fs::write(&p, format!("content {i}")).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let store = MemoryStore::new();
        let cache_file = dir.path().join("cache.json");
        let root = dir.path().join("..").join(dir.path().file_name().unwrap());
        let root = fs::canonicalize(root).unwrap();
        let mut c = StatCache::load(&cache_file);
        let t1 = snapshot_dir(&root, &store, &mut c, &mut |_| {}).unwrap();
        assert_eq!(c.hits, 0);
        c.save(&cache_file).unwrap();
        let mut c = StatCache::load(&cache_file);
        let t2 = snapshot_dir(&root, &store, &mut c, &mut |_| {}).unwrap();
        assert_eq!(c.hits, 5, "unchanged files must come from the cache");
        assert_eq!(
            t1.entries
                .iter()
                .filter(|e| e.path.starts_with('f'))
                .count(),
            5
        );
        assert_eq!(
            t1.entries
                .iter()
                .filter(|e| e.path.starts_with('f'))
                .collect::<Vec<_>>(),
            t2.entries
                .iter()
                .filter(|e| e.path.starts_with('f'))
                .collect::<Vec<_>>()
        );
        c.save(&cache_file).unwrap();
        // Same size, same mtime, new content: ctime differs, so it is re-read.
        let p = dir.path().join("f2");
        fs::write(&p, "CONTENT 2").unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut c = StatCache::load(&cache_file);
        let t3 = snapshot_dir(&root, &store, &mut c, &mut |_| {}).unwrap();
        assert_eq!(c.hits, 4);
        let f2 = t3.entries.iter().find(|e| e.path == "f2").unwrap();
        assert_eq!(f2.blob, Some(pf_digest::Digest::of(b"CONTENT 2")));
    }

    #[test]
    fn symlink_containment() {
        assert!(symlink_stays_inside("a/link", "../b"));
        assert!(symlink_stays_inside("link", "b/c"));
        assert!(!symlink_stays_inside("link", "../x"));
        assert!(!symlink_stays_inside("a/link", "../../x"));
        assert!(!symlink_stays_inside("link", "/etc/passwd"));
        assert!(!symlink_stays_inside("a/link", "b/../../../x"));
    }
}
