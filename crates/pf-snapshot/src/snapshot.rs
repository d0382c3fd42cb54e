//! Turning a directory into an fs tree whose blobs are ranges of its files.
//!
//! Nothing is copied: each blob is hashed and recorded in a [`SourceStore`]
//! as the file ranges it is made of. Large files are split with FastCDC;
//! small files are packed together (restic-style) so a snapshot of many
//! small files is a few blobs, not one per file; pack boundaries depend on
//! paths and sizes only, so a change re-packs one pack, not every later one.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use pf_digest::{Digest, Hasher};
use pf_registry_core::manifest::{Chunk, FsTree};
use pf_registry_core::{RegistryError, Result};

use crate::io_ctx;
use crate::source::{Segment, SourceStore, Stamp};
use crate::statcache::StatCache;
pub(crate) use crate::walk::PendingFile;

/// Files at least this large are split with content-defined chunking.
pub const CDC_THRESHOLD: u64 = 4 << 20;
/// FastCDC minimum chunk size.
pub const CDC_MIN: u32 = 1 << 20;
/// Average chunk size.
pub const CDC_AVG: u32 = 4 << 20;
/// Maximum chunk size.
pub const CDC_MAX: u32 = 16 << 20;
/// Chunks cut ahead while the previous batch is hashed.
const CDC_BATCH: usize = 4;
/// Non-empty files smaller than this are packed with their neighbours.
pub const PACK_FILE_MAX: u64 = 1 << 20;
/// A pack may end after a boundary path once it holds this many bytes...
pub const PACK_MIN: u64 = 4 << 20;
/// ...and always ends before it would exceed this.
pub const PACK_MAX: u64 = 16 << 20;
/// One path in this many is a boundary (FNV-1a of the path).
const PACK_BOUNDARY_EVERY: u64 = 16;

/// How files are cut into blobs. [`Chunking::default`] is what `pf` uses
/// (the constants of this module); tests use smaller sizes to get many
/// blobs from little data. FastCDC bounds apply: `cdc_min` 64..=1 MiB,
/// `cdc_avg` 256..=4 MiB, `cdc_max` 1 KiB..=16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    /// Files at least this large are split with FastCDC.
    pub cdc_threshold: u64,
    /// FastCDC minimum chunk size.
    pub cdc_min: u32,
    /// FastCDC average chunk size.
    pub cdc_avg: u32,
    /// FastCDC maximum chunk size.
    pub cdc_max: u32,
    /// Non-empty files smaller than this are packed (0: never).
    pub pack_file_max: u64,
    /// A pack may end at a boundary path once it holds this many bytes.
    pub pack_min: u64,
    /// A pack always ends before it would exceed this.
    pub pack_max: u64,
}

impl Default for Chunking {
    fn default() -> Chunking {
        Chunking {
            cdc_threshold: CDC_THRESHOLD,
            cdc_min: CDC_MIN,
            cdc_avg: CDC_AVG,
            cdc_max: CDC_MAX,
            pack_file_max: PACK_FILE_MAX,
            pack_min: PACK_MIN,
            pack_max: PACK_MAX,
        }
    }
}

/// Walks `dir` and hashes every file's content, recording each blob's file
/// ranges in `source`, and returns the fs tree. Special files (devices,
/// sockets, fifos) are skipped with a warning.
pub fn snapshot_dir(
    dir: &Path,
    source: &SourceStore,
    cache: &mut StatCache,
    chunking: Chunking,
    warn: &mut dyn FnMut(String),
) -> Result<FsTree> {
    cache.set_chunking(chunking);
    let mut tree = FsTree::default();
    let walked = crate::walk::walk(dir, &mut tree, warn)?;
    let jobs = plan_jobs(walked.todo, &chunking);
    // Unchanged files and packs come from the stat cache; the rest are read
    // and hashed in parallel, largest first so the big files overlap.
    let mut done: Vec<(Job, Hashed)> = Vec::new();
    let mut misses = Vec::new();
    for job in jobs {
        match cache.lookup(&job) {
            Some(h) => {
                cache.hits += job.files().len() as u64;
                done.push((job, h));
            }
            None => misses.push(job),
        }
    }
    misses.sort_by_key(|j| std::cmp::Reverse(j.bytes()));
    let hashed: Vec<Result<(Hashed, bool)>> = {
        use rayon::prelude::*;
        misses.par_iter().map(|j| hash_job(j, &chunking)).collect()
    };
    let mut trusted = vec![true; done.len()];
    for (job, h) in misses.into_iter().zip(hashed) {
        // `unchanged`: the files read still had the walk's stamp once read
        // (fstat of the very handles read). Only cache, and only let the
        // push trust the stat for, what did not change and is not racy.
        let (h, unchanged) = h?;
        let racy = job.files().iter().any(|f| cache.is_racy(&f.st));
        // A racy stamp may have been taken in the same timestamp tick as a
        // write it does not reflect: never cache it (git's racy-clean rule).
        if unchanged && !racy {
            cache.insert(&job, &h);
        }
        trusted.push(unchanged && !racy);
        done.push((job, h));
    }
    // Stamps stand in for a re-hash only on filesystems that keep them
    // exact (checked once per device met by the walk).
    for ((job, h), trust) in done.into_iter().zip(trusted) {
        let trust = trust
            && job
                .files()
                .iter()
                .all(|f| walked.stampable.get(&f.st.dev).copied().unwrap_or(false));
        record(&job, &h, trust, source, &mut tree);
    }
    tree.packs.sort_by_key(|p| p.blob);
    tree.packs.dedup();
    Ok(tree)
}

/// What to hash: one file, or several small files as one pack.
pub(crate) enum Job {
    File(Box<PendingFile>),
    Pack(Vec<PendingFile>),
}

impl Job {
    pub(crate) fn files(&self) -> &[PendingFile] {
        match self {
            Job::File(f) => std::slice::from_ref(f),
            Job::Pack(v) => v,
        }
    }
    fn bytes(&self) -> u64 {
        self.files().iter().map(|f| f.st.size).sum()
    }
}

/// The content of a job: for a file its blob or chunk list; for a pack its
/// digest and each member's length, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Hashed {
    File {
        blob: Option<Digest>,
        chunks: Vec<Chunk>,
        size: u64,
    },
    Pack {
        blob: Digest,
        sizes: Vec<u64>,
    },
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Groups small files into packs (walk order; boundaries from paths and
/// sizes only), the rest into single-file jobs.
fn plan_jobs(todo: Vec<PendingFile>, c: &Chunking) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut pack: Vec<PendingFile> = Vec::new();
    let mut pack_bytes = 0u64;
    for f in todo {
        let len = f.st.size;
        if len == 0 || len >= c.pack_file_max {
            jobs.push(Job::File(Box::new(f)));
            continue;
        }
        if pack_bytes + len > c.pack_max && !pack.is_empty() {
            jobs.push(Job::Pack(std::mem::take(&mut pack)));
            pack_bytes = 0;
        }
        // The relative path, so the same tree packs alike wherever it lives.
        let boundary = fnv1a(&f.rel).is_multiple_of(PACK_BOUNDARY_EVERY);
        pack_bytes += len;
        pack.push(f);
        if pack_bytes >= c.pack_min && boundary {
            jobs.push(Job::Pack(std::mem::take(&mut pack)));
            pack_bytes = 0;
        }
    }
    if !pack.is_empty() {
        jobs.push(Job::Pack(pack));
    }
    jobs
}

/// Hashes `job`'s files, each opened beneath the root (no symlink
/// followed) and checked to be the inode the walk found; also says whether
/// every file still had the walk's stamp once read.
fn hash_job(job: &Job, c: &Chunking) -> Result<(Hashed, bool)> {
    let open = |f: &PendingFile| {
        f.file
            .open()
            .map_err(io_ctx(format!("reading {}", f.file.path().display())))
    };
    let unchanged =
        |f: &PendingFile, r: &File| r.metadata().is_ok_and(|after| Stamp::of(&after) == f.st);
    match job {
        Job::File(f) => {
            let r = open(f)?;
            let h = hash_file(&r, f.file.path(), f.st.size, c)?;
            Ok((h, unchanged(f, &r)))
        }
        Job::Pack(files) => {
            let mut h = Hasher::new();
            let mut sizes = Vec::with_capacity(files.len());
            let mut buf = Vec::new();
            let mut same = true;
            for f in files {
                buf.clear();
                // Bounded: a member that grew meanwhile is not read whole
                // (its stamp no longer matches, so the push re-hashes it).
                let r = open(f)?;
                (&r).take(c.pack_max)
                    .read_to_end(&mut buf)
                    .map_err(io_ctx(format!("reading {}", f.file.path().display())))?;
                same &= unchanged(f, &r);
                h.update(&buf);
                sizes.push(buf.len() as u64);
            }
            let blob = h.finish();
            Ok((Hashed::Pack { blob, sizes }, same))
        }
    }
}

/// Fills the tree entries of `job` and records its blobs' ranges, stamped
/// (so the push checks stats instead of re-hashing) when `trusted`.
fn record(job: &Job, h: &Hashed, trusted: bool, source: &SourceStore, tree: &mut FsTree) {
    let stamp = |f: &PendingFile| trusted.then(|| f.st.clone());
    match (job, h) {
        (Job::File(f), Hashed::File { blob, chunks, size }) => {
            let e = &mut tree.entries[f.index];
            e.size = *size;
            e.blob = *blob;
            e.chunks = chunks.clone();
            let seg = |offset, len| Segment {
                file: f.file.clone(),
                offset,
                len,
                stamp: stamp(f),
            };
            if let Some(b) = blob {
                source.add(*b, vec![seg(0, *size)]);
            }
            let mut off = 0;
            for c in chunks {
                source.add(c.blob, vec![seg(off, c.size)]);
                off += c.size;
            }
        }
        (Job::Pack(files), Hashed::Pack { blob, sizes }) => {
            let mut off = 0;
            let mut segments = Vec::with_capacity(files.len());
            for (f, &len) in files.iter().zip(sizes) {
                let e = &mut tree.entries[f.index];
                e.size = len;
                e.blob = Some(*blob);
                e.offset = Some(off);
                segments.push(Segment {
                    file: f.file.clone(),
                    offset: 0,
                    len,
                    stamp: stamp(f),
                });
                off += len;
            }
            tree.packs.push(Chunk {
                blob: *blob,
                size: off,
            });
            source.add(*blob, segments);
        }
        // A cache entry of the other shape never matches (see lookup).
        _ => {}
    }
}

fn hash_file(mut f: &File, path: &Path, len: u64, c: &Chunking) -> Result<Hashed> {
    if len < c.cdc_threshold {
        let (d, n) =
            Digest::of_reader(&mut f).map_err(io_ctx(format!("reading {}", path.display())))?;
        return Ok(Hashed::File {
            blob: (n > 0).then_some(d),
            chunks: vec![],
            size: n,
        });
    }
    // Cut points are found on this thread; each batch of chunks is hashed
    // in parallel while the next batch is read and cut. Memory: two batches
    // of at most `CDC_BATCH` chunks of at most `CDC_MAX` bytes.
    let mut cdc = fastcdc::v2020::StreamCDC::new(
        f,
        c.cdc_min as usize,
        c.cdc_avg as usize,
        c.cdc_max as usize,
    );
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
        let (hashed, next) = rayon::join(
            || {
                use rayon::prelude::*;
                batch
                    .par_iter()
                    .map(|data| (Digest::of(data), data.len() as u64))
                    .collect::<Vec<_>>()
            },
            &mut next_batch,
        );
        for (d, len) in hashed {
            total += len;
            chunks.push(Chunk { blob: d, size: len });
        }
        batch = next?;
    }
    if chunks.len() <= 1 {
        return Ok(Hashed::File {
            blob: chunks.pop().map(|c| c.blob),
            chunks: vec![],
            size: total,
        });
    }
    Ok(Hashed::File {
        blob: None,
        chunks,
        size: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::{BlobStore, MemoryStore};
    use std::fs;
    use std::sync::Arc;

    fn age(p: &Path) {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    /// The cache as a run 10 s from now sees it: files written by the test
    /// (whose ctime is now) are then old enough to be trusted.
    fn later(mut c: StatCache, secs: i64) -> StatCache {
        c.started += secs;
        c
    }

    fn source() -> SourceStore {
        SourceStore::new(Arc::new(MemoryStore::new()))
    }

    #[test]
    fn stat_cache_skips_unchanged_files_and_catches_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        // Two packs of small files and one file on its own.
        for i in 0..5 {
            let p = root.join(format!("f{i}"));
            fs::write(&p, format!("content {i}")).unwrap();
            age(&p);
        }
        let big = root.join("big");
        fs::write(&big, vec![7u8; PACK_FILE_MAX as usize]).unwrap();
        age(&big);
        // Modified "now" as the runs see it: racy, so never cached.
        let fresh = root.join("fresh");
        fs::write(&fresh, vec![1u8; PACK_FILE_MAX as usize]).unwrap();
        fs::File::options()
            .write(true)
            .open(&fresh)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
            .unwrap();
        let cache_file = dir.path().join("cache.json");
        let mut c = later(StatCache::load(&cache_file), 10);
        let t1 = snapshot_dir(&root, &source(), &mut c, Chunking::default(), &mut |_| {}).unwrap();
        assert_eq!(c.hits, 0);
        c.save(&cache_file).unwrap();
        let mut c = later(StatCache::load(&cache_file), 1000);
        let t2 = snapshot_dir(&root, &source(), &mut c, Chunking::default(), &mut |_| {}).unwrap();
        // Not "fresh": it was racy when hashed, so it was never cached, even
        // though a run this much later would no longer find it racy.
        assert_eq!(c.hits, 6, "unchanged files must come from the cache");
        assert_eq!(t1, t2);
        c.save(&cache_file).unwrap();
        // Same size, same mtime, new content: ctime differs, so its pack is
        // read again; the big file still comes from the cache, and so does
        // "fresh", cached by the second run once it was no longer racy.
        let p = root.join("f2");
        fs::write(&p, "CONTENT 2").unwrap();
        age(&p);
        let mut c = later(StatCache::load(&cache_file), 1000);
        let src = source();
        let t3 = snapshot_dir(&root, &src, &mut c, Chunking::default(), &mut |_| {}).unwrap();
        assert_eq!(c.hits, 2);
        let f2 = t3.entries.iter().find(|e| e.path == "f2").unwrap();
        let pack = src.get(&f2.blob.unwrap()).unwrap();
        let off = f2.offset.unwrap() as usize;
        assert_eq!(&pack[off..off + f2.size as usize], b"CONTENT 2");
    }

    #[test]
    fn small_files_are_packed_and_served_from_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut want = Vec::new();
        for i in 0..300 {
            let p = format!("d{}/f{i:03}", i % 7);
            fs::create_dir_all(root.join(format!("d{}", i % 7))).unwrap();
            let body = format!("{i}:").repeat(20 + i * 40);
            fs::write(root.join(&p), &body).unwrap();
            want.push((p, body));
        }
        fs::write(root.join("empty"), b"").unwrap();
        let src = source();
        let mut c = StatCache::default();
        let tree = snapshot_dir(root, &src, &mut c, Chunking::default(), &mut |_| {}).unwrap();
        tree.validate().unwrap();
        // ~7 MB of small files: a few packs, none over PACK_MAX.
        assert!((1..=4).contains(&tree.packs.len()), "{:?}", tree.packs);
        assert!(tree.packs.iter().all(|p| p.size <= PACK_MAX));
        for (p, body) in want {
            let e = tree.entries.iter().find(|e| e.path == p).unwrap();
            let pack = src.get(&e.blob.unwrap()).unwrap();
            let off = e.offset.unwrap() as usize;
            assert_eq!(&pack[off..off + e.size as usize], body.as_bytes(), "{p}");
        }
        let empty = tree.entries.iter().find(|e| e.path == "empty").unwrap();
        assert_eq!((empty.size, empty.blob), (0, None));
        // The same content snapshotted again packs identically.
        let again = snapshot_dir(
            root,
            &source(),
            &mut StatCache::default(),
            Chunking::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(tree, again);
    }

    #[test]
    fn a_new_small_file_repacks_only_its_pack() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..400 {
            fs::write(root.join(format!("f{i:04}")), vec![(i % 251) as u8; 40_000]).unwrap();
        }
        let snap = || {
            snapshot_dir(
                root,
                &source(),
                &mut StatCache::default(),
                Chunking::default(),
                &mut |_| {},
            )
            .unwrap()
        };
        let before = snap();
        fs::write(root.join("f0200x"), b"new file in the middle").unwrap();
        let after = snap();
        let old: std::collections::HashSet<_> = before.packs.iter().map(|p| p.blob).collect();
        let changed = after
            .packs
            .iter()
            .filter(|p| !old.contains(&p.blob))
            .count();
        assert!(before.packs.len() >= 3, "{}", before.packs.len());
        assert!(
            changed <= 2,
            "{changed} of {} packs changed",
            after.packs.len()
        );
    }

    #[test]
    fn a_file_swapped_for_a_symlink_after_the_walk_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        fs::write(&secret, "outside secret").unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/small"), "inside").unwrap();
        fs::write(root.join("big"), vec![1u8; PACK_FILE_MAX as usize]).unwrap();
        let mut tree = FsTree::default();
        let todo = crate::walk::walk(root, &mut tree, &mut |_| {})
            .unwrap()
            .todo;
        // The agent swaps a file for a symlink, and a directory for a
        // symlink to a directory holding a file of the same name.
        fs::remove_file(root.join("big")).unwrap();
        std::os::unix::fs::symlink(&secret, root.join("big")).unwrap();
        fs::create_dir(outside.path().join("d")).unwrap();
        fs::write(outside.path().join("d/small"), "outside").unwrap();
        fs::rename(root.join("d"), root.join("d.old")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("d"), root.join("d")).unwrap();
        let c = Chunking::default();
        for job in plan_jobs(todo, &c) {
            let names: Vec<String> = job.files().iter().map(|f| f.rel.clone()).collect();
            assert!(
                hash_job(&job, &c).is_err(),
                "{names:?} was read through a symlink"
            );
        }
    }
}
