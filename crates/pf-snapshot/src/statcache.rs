//! The stat cache: which files (and packs of small files) are unchanged
//! since they were last hashed, so a snapshot need not read them again.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use pf_registry_core::Result;

use crate::io_ctx;
use crate::snapshot::{Chunking, Hashed, Job};
use crate::source::Stamp;

/// A cached job: its files' paths and stats when hashed, and the result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    files: Vec<(String, Stamp)>,
    hashed: Hashed,
}

/// On-disk form of the stat cache.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    /// The chunking the entries were hashed with; another empties the cache.
    #[serde(default)]
    chunking: Option<Chunking>,
    /// Keyed by the job's first file path.
    entries: HashMap<String, CacheEntry>,
}

const CACHE_VERSION: u32 = 3;

/// A stat cache (like restic's or git's index): a file, or a pack of small
/// files, whose size, mtime, ctime, inode and device are all unchanged since
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
    pub fn load(path: &Path) -> StatCache {
        let file = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.version == CACHE_VERSION)
            .unwrap_or_default();
        StatCache {
            file,
            used: Default::default(),
            hits: 0,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }

    /// Writes the cache atomically (temp + rename), keeping only the
    /// entries this run used, so it tracks the directory and never grows
    /// without bound.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.file.version = CACHE_VERSION;
        let used = &self.used;
        self.file.entries.retain(|k, _| used.contains(k));
        let bytes = serde_json::to_vec(&self.file).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).map_err(io_ctx(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, path).map_err(io_ctx(format!("renaming {}", path.display())))
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
    pub(crate) fn is_racy(&self, md: &fs::Metadata) -> bool {
        md.mtime().max(md.ctime()) >= self.started - 2
    }

    pub(crate) fn lookup(&mut self, job: &Job) -> Option<Hashed> {
        let files = job.files();
        let first = &files.first()?.key;
        self.used.insert(first.clone());
        let e = self.file.entries.get(first)?;
        if e.files.len() != files.len() {
            return None;
        }
        for (f, (key, st)) in files.iter().zip(&e.files) {
            if *key != f.key || *st != Stamp::of(&f.md) || self.is_racy(&f.md) {
                return None;
            }
        }
        // The cached shape and sizes must agree with the files' stats (a
        // damaged cache file is a miss, never a wrong entry).
        let consistent = match (job, &e.hashed) {
            (Job::File(f), Hashed::File { blob, chunks, size }) => {
                *size == f.md.len()
                    && match (blob, chunks.is_empty()) {
                        (Some(_), true) => true,
                        (None, true) => *size == 0,
                        (None, false) => chunks.iter().map(|c| c.size).sum::<u64>() == *size,
                        (Some(_), false) => false,
                    }
            }
            (Job::Pack(fs), Hashed::Pack { sizes, .. }) => {
                sizes.len() == fs.len() && fs.iter().zip(sizes).all(|(f, n)| f.md.len() == *n)
            }
            _ => false,
        };
        consistent.then(|| e.hashed.clone())
    }

    pub(crate) fn insert(&mut self, job: &Job, h: &Hashed) {
        let files = job.files();
        let Some(first) = files.first() else { return };
        self.used.insert(first.key.clone());
        self.file.entries.insert(
            first.key.clone(),
            CacheEntry {
                files: files
                    .iter()
                    .map(|f| (f.key.clone(), Stamp::of(&f.md)))
                    .collect(),
                hashed: h.clone(),
            },
        );
    }
}
