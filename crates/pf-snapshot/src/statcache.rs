//! The stat cache: which files are unchanged since they were last
//! chunked, so a snapshot need not read them again.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use pf_registry_core::{RegistryError, Result};

use crate::io_ctx;
use crate::snapshot::{Chunking, Hashed, PendingFile};
use crate::source::Stamp;

/// A cached file: its stat when chunked, and its chunks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    stamp: Stamp,
    chunks: Hashed,
}

/// On-disk form of the stat cache.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    /// The chunking the entries were hashed with; another empties the cache.
    #[serde(default)]
    chunking: Option<Chunking>,
    /// Keyed by the file's absolute path.
    entries: HashMap<String, CacheEntry>,
}

const CACHE_VERSION: u32 = 4;

/// Largest stat cache file read; a larger one is treated as empty.
const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Reads `path` if it is a regular file (no symlink followed, never
/// blocking on a FIFO) of at most [`MAX_CACHE_BYTES`].
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() || md.len() > MAX_CACHE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file of a sensible size",
        ));
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(MAX_CACHE_BYTES).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Writes `bytes` to `path` through a unique temp file created
/// exclusively beside it (a planted symlink is never followed), renamed
/// over whatever is at `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let ctx = || format!("writing {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".statcache.")
        .tempfile_in(dir)
        .map_err(io_ctx(ctx()))?;
    tmp.write_all(bytes).map_err(io_ctx(ctx()))?;
    tmp.persist(path)
        .map_err(|e| RegistryError::io(ctx(), e.error))?;
    Ok(())
}

/// Seconds since the Unix epoch, now (a run's start for [`racy`]).
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a file was modified or changed too recently (2 s before
/// `started`, or later) for its stat to prove it unchanged.
pub(crate) fn racy(started: i64, st: &Stamp) -> bool {
    st.mtime.0.max(st.ctime.0) >= started - 2
}

/// A stat cache (like restic's or git's index): a file whose size, mtime, ctime, inode and device are all unchanged since
/// it was hashed is not read again. Files whose mtime or ctime is within 2
/// seconds of the run are never cached nor reused (racy-clean rule), since
/// their stamp may predate a write in the same timestamp tick. A hit is
/// trusted like a fresh hash: the push then checks stats, not content.
#[derive(Debug, Default)]
pub struct StatCache {
    file: CacheFile,
    pub(crate) started: i64,
    /// Keys looked up or inserted in this run; `save` keeps only these.
    used: std::collections::HashSet<String>,
    /// Files reused from the cache in this run.
    pub hits: u64,
}

impl StatCache {
    /// Loads the cache at `path`; a missing, unreadable or older cache is empty.
    /// It is opened without following a symlink or blocking, must be a
    /// regular file, and is read up to 1 GiB.
    pub fn load(path: &Path) -> StatCache {
        let file = read_bounded(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.version == CACHE_VERSION)
            .unwrap_or_default();
        StatCache {
            file,
            used: Default::default(),
            hits: 0,
            started: now_secs(),
        }
    }

    /// Writes the cache atomically, keeping only the entries this run
    /// used, so it tracks the directory and never grows without bound.
    /// The temp file has a unique name created exclusively (a planted
    /// symlink is never followed), and the rename replaces whatever is at
    /// `path` without following it; concurrent runs sharing the file each
    /// succeed (the last one's cache stays).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.file.version = CACHE_VERSION;
        let used = &self.used;
        self.file.entries.retain(|k, _| used.contains(k));
        let bytes = serde_json::to_vec(&self.file).unwrap_or_default();
        write_atomic(path, &bytes)
    }

    /// Drops every entry if the cache was made with another chunking (its
    /// shapes would not match what this run cuts).
    pub(crate) fn set_chunking(&mut self, chunking: Chunking) {
        if self.file.chunking != Some(chunking) {
            self.file.entries.clear();
            self.file.chunking = Some(chunking);
        }
    }

    /// Whether a file was modified or changed too recently (2 s before
    /// this run started, or later) for its stat to prove it unchanged.
    pub(crate) fn is_racy(&self, st: &Stamp) -> bool {
        racy(self.started, st)
    }

    /// The cached chunks of `f`, if its stat is unchanged, not racy, and
    /// the cached lengths add up to its size (a damaged cache file is a
    /// miss, never a wrong entry).
    pub(crate) fn lookup(&mut self, f: &PendingFile) -> Option<Hashed> {
        self.used.insert(f.key.clone());
        let e = self.file.entries.get(&f.key)?;
        if e.stamp != f.st || self.is_racy(&f.st) {
            return None;
        }
        let sum = e.chunks.iter().try_fold(0u64, |a, c| a.checked_add(c.size));
        (sum == Some(f.st.size) && e.chunks.iter().all(|c| c.size > 0)).then(|| e.chunks.clone())
    }

    /// Records `f`'s chunks under its current stat.
    pub(crate) fn insert(&mut self, f: &PendingFile, h: &Hashed) {
        self.used.insert(f.key.clone());
        self.file.entries.insert(
            f.key.clone(),
            CacheEntry {
                stamp: f.st.clone(),
                chunks: h.clone(),
            },
        );
    }
}
