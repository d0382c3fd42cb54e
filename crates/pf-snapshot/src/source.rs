//! A blob store that serves a snapshot's content from the files themselves.
//!
//! Snapshotting a directory only hashes it: each blob is recorded as the
//! file ranges it is made of, and a push reads those ranges again while it
//! encodes. Nothing is copied into the local store, so a first push writes
//! every byte once (into the destination).
//!
//! A file that changes after it was hashed must never be uploaded under the
//! old digest. Ranges recorded with a `Stamp` (the file's size, mtime,
//! ctime, inode and device when hashed, and not modified in the 2 seconds
//! before the snapshot) are checked against `fstat` when opened and again
//! when fully read, the rule the stat cache and git's index rely on; the
//! store then vouches for the bytes and the engine skips its re-hash. Ranges
//! without a stamp are re-hashed by the engine as it reads them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustix::fs::{FileType, Mode, OFlags};

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::codec::Prepared;
use pf_registry_core::manifest::KnownIndex;

/// The stat fields that say a file is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stamp {
    pub(crate) size: u64,
    pub(crate) mtime: (i64, i64),
    pub(crate) ctime: (i64, i64),
    pub(crate) ino: u64,
    pub(crate) dev: u64,
}

impl Stamp {
    /// The stamp of `md`.
    pub(crate) fn of(md: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }

    /// The stamp of `st` (from `statat` or `fstat`).
    // `Stat`'s field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of_stat(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino,
            dev: st.st_dev,
        }
    }
}

/// A regular file of a snapshotted directory: its path beneath the
/// directory's handle, and the device and inode the walk found there.
#[derive(Debug)]
pub(crate) struct SourceFile {
    root: Arc<OwnedFd>,
    rel: String,
    shown: PathBuf,
    id: (u64, u64),
}

impl SourceFile {
    /// File `rel` beneath `root` (shown as `shown`), found as inode `id`
    /// (device, inode).
    pub(crate) fn new(root: Arc<OwnedFd>, rel: String, shown: PathBuf, id: (u64, u64)) -> Self {
        SourceFile {
            root,
            rel,
            shown,
            id,
        }
    }

    /// Its path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.shown
    }

    /// Opens it for reading beneath the root, following no symlink on the
    /// way and never blocking (a FIFO swapped in is refused, not waited
    /// on); fails unless it is still the regular file the walk found.
    pub(crate) fn open(&self) -> io::Result<File> {
        let ctx = |e: io::Error| {
            io::Error::new(e.kind(), format!("opening {}: {e}", self.shown.display()))
        };
        let fd = crate::fsat::open_beneath(
            self.root.as_fd(),
            &self.rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(ctx)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| ctx(e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || (st.st_dev, st.st_ino) != self.id
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} was replaced while being pushed (changed since it was snapshotted); push again",
                    self.shown.display()
                ),
            ));
        }
        Ok(File::from(fd))
    }
}

/// Local filesystems known to keep mtime and ctime exact on every write
/// (statfs magic numbers): ext2/3/4, XFS, Btrfs, tmpfs, F2FS, ZFS,
/// overlayfs, bcachefs. On others (NFS with attribute caching, FUSE, SMB,
/// 9p…) a stat may miss a change, so their files are always re-hashed.
const STAMPABLE_FS: [u64; 8] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0x794C_7630,
    0xCA45_1A4E,
];

/// Whether stamps of files on the filesystem of `fd` can stand in for a
/// re-hash.
pub(crate) fn stamps_trustworthy(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|st| STAMPABLE_FS.contains(&(st.f_type as u64 & 0xFFFF_FFFF)))
}

/// A byte range of a source file.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// The file.
    pub file: Arc<SourceFile>,
    /// Where the range starts.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The file's stamp when the range was hashed, if it can be trusted.
    pub stamp: Option<Stamp>,
}

/// Blobs backed by source-file ranges, over an inner store for the rest
/// (index blobs written by the snapshot, blobs already local).
pub struct SourceStore {
    inner: Arc<dyn BlobStore>,
    blobs: RwLock<HashMap<Digest, Arc<[Segment]>>>,
    /// Wire encodings of blobs made while the snapshot read them, and
    /// what the snapshot knows of its fs tree ([`KnownIndex`]).
    prepared: RwLock<HashMap<Digest, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl SourceStore {
    /// An empty source map over `inner`.
    pub fn new(inner: Arc<dyn BlobStore>) -> SourceStore {
        SourceStore {
            inner,
            blobs: RwLock::new(HashMap::new()),
            prepared: RwLock::new(HashMap::new()),
        }
    }

    /// Records that blob `digest` is the concatenation of `segments`. The
    /// first record for a digest wins (identical content elsewhere).
    pub(crate) fn add(&self, digest: Digest, segments: Vec<Segment>) {
        if let Ok(mut m) = self.blobs.write() {
            m.entry(digest).or_insert_with(|| segments.into());
        }
    }

    /// Records the wire encoding of blob `digest`, made from the bytes
    /// its segments held when read and checked (see [`Prepared`]).
    pub(crate) fn add_prepared(&self, digest: Digest, prepared: Prepared) {
        if let Ok(mut m) = self.prepared.write() {
            m.entry(digest).or_insert_with(|| Arc::new(prepared));
        }
    }

    /// Offers fs tree `digest` to the push as `known` (see [`KnownIndex`]).
    pub(crate) fn add_known(&self, digest: Digest, known: KnownIndex) {
        if let Ok(mut m) = self.prepared.write() {
            m.insert(digest, Arc::new(known));
        }
    }

    fn segments(&self, digest: &Digest) -> Option<Arc<[Segment]>> {
        self.blobs.read().ok()?.get(digest).cloned()
    }
}

impl BlobStore for SourceStore {
    fn has(&self, digest: &Digest) -> pf_cas::Result<bool> {
        if self.segments(digest).is_some() {
            return Ok(true);
        }
        self.inner.has(digest)
    }

    fn size(&self, digest: &Digest) -> pf_cas::Result<Option<u64>> {
        match self.segments(digest) {
            Some(s) => Ok(Some(s.iter().map(|s| s.len).sum())),
            None => self.inner.size(digest),
        }
    }

    fn open(&self, digest: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
        Ok(self.open_vouched(digest)?.0)
    }

    fn open_vouched(&self, digest: &Digest) -> pf_cas::Result<(Box<dyn Read + Send>, bool)> {
        match self.segments(digest) {
            Some(segments) => {
                let vouched = segments.iter().all(|s| s.stamp.is_some());
                let r = SegmentReader {
                    segments,
                    next: 0,
                    current: None,
                };
                Ok((Box::new(r), vouched))
            }
            None => self.inner.open_vouched(digest),
        }
    }

    fn prepared(&self, digest: &Digest) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let p = self.prepared.read().ok()?.get(digest).cloned()?;
        Some(p)
    }

    fn list(&self) -> pf_cas::Result<Vec<Digest>> {
        let mut all = self.inner.list()?;
        if let Ok(m) = self.blobs.read() {
            all.extend(m.keys().copied());
        }
        all.sort();
        all.dedup();
        Ok(all)
    }
    pf_cas::forward_to!(inner: put, put_stream, put_stream_as);
}

/// Reads segments one after the other; a file that has become shorter than
/// its recorded range is an error naming it.
struct SegmentReader {
    segments: Arc<[Segment]>,
    next: usize,
    current: Option<(io::Take<File>, usize)>,
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((r, idx)) = &mut self.current {
                let n = r.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let s = &self.segments[*idx];
                if r.limit() > 0 {
                    return Err(changed(s, "shrank"));
                }
                check_stamp(r.get_ref(), s)?;
                self.current = None;
            }
            let Some(s) = self.segments.get(self.next) else {
                return Ok(0);
            };
            let idx = self.next;
            self.next += 1;
            let mut f = s.file.open()?;
            check_stamp(&f, s)?;
            if s.offset > 0 {
                f.seek(SeekFrom::Start(s.offset))?;
            }
            self.current = Some((f.take(s.len), idx));
        }
    }
}

fn changed(s: &Segment, how: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} {how} while being pushed (changed since it was snapshotted); push again",
            s.file.path().display()
        ),
    )
}

/// Fails if the open file `f` no longer matches the segment's stamp.
fn check_stamp(f: &File, s: &Segment) -> io::Result<()> {
    match &s.stamp {
        Some(st) if Stamp::of(&f.metadata()?) != *st => Err(changed(s, "was modified")),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pf_cas::MemoryStore;

    /// `dir/name` as the walk would record it.
    pub(crate) fn source_file(dir: &Path, name: &str) -> Arc<SourceFile> {
        let md = std::fs::symlink_metadata(dir.join(name)).unwrap();
        let root = Arc::new(crate::fsat::open_dir(dir).unwrap());
        Arc::new(SourceFile::new(
            root,
            name.into(),
            dir.join(name),
            (md.dev(), md.ino()),
        ))
    }

    #[test]
    fn serves_concatenated_ranges_and_falls_back_to_inner() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(dir.path().join("a"));
        let b = Arc::new(dir.path().join("b"));
        std::fs::write(&*a, b"0123456789").unwrap();
        std::fs::write(&*b, b"abcdef").unwrap();
        let (fa, fb) = (source_file(dir.path(), "a"), source_file(dir.path(), "b"));
        let inner = Arc::new(MemoryStore::new());
        let kept = inner.put(b"index").unwrap();
        let s = SourceStore::new(inner);
        let d = Digest::of(b"3456cde");
        s.add(
            d,
            vec![
                Segment {
                    file: fa,
                    offset: 3,
                    len: 4,
                    stamp: None,
                },
                Segment {
                    file: fb,
                    offset: 2,
                    len: 3,
                    stamp: None,
                },
            ],
        );
        assert_eq!(s.get(&d).unwrap(), b"3456cde");
        assert_eq!(s.size(&d).unwrap(), Some(7));
        assert!(s.has(&kept).unwrap());
        assert_eq!(s.get(&kept).unwrap(), b"index");
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(
            !s.open_vouched(&d).unwrap().1,
            "no stamps: the engine re-hashes"
        );
        // A source file that shrank is an error naming it, not short data.
        std::fs::write(&*b, b"ab").unwrap();
        let err = s.get(&d).unwrap_err().to_string();
        assert!(err.contains("shrank"), "{err}");
    }

    #[test]
    fn stamped_ranges_are_vouched_for_and_refused_once_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(dir.path().join("a"));
        std::fs::write(&*a, b"0123456789").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&*a).unwrap());
        let s = SourceStore::new(Arc::new(MemoryStore::new()));
        let d = Digest::of(b"0123456789");
        s.add(
            d,
            vec![Segment {
                file: source_file(dir.path(), "a"),
                offset: 0,
                len: 10,
                stamp: Some(stamp),
            }],
        );
        let (mut r, vouched) = s.open_vouched(&d).unwrap();
        assert!(vouched);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"0123456789");
        // Same size, new content: the stamp (ctime at least) differs.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&*a, b"9876543210").unwrap();
        let err = s.get(&d).unwrap_err().to_string();
        assert!(err.contains("was modified"), "{err}");
    }

    #[test]
    fn a_range_re_read_never_follows_a_symlink_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"0123456789").unwrap();
        let a = Arc::new(dir.path().join("a"));
        std::fs::write(&*a, b"abcdefghij").unwrap();
        let s = SourceStore::new(Arc::new(MemoryStore::new()));
        // Unstamped (racy): the engine would re-hash what it reads, so the
        // outside file's bytes must never be served under any digest.
        let d = Digest::of(b"0123456789");
        s.add(
            d,
            vec![Segment {
                file: source_file(dir.path(), "a"),
                offset: 0,
                len: 10,
                stamp: None,
            }],
        );
        std::fs::remove_file(&*a).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), &*a).unwrap();
        assert!(s.get(&d).is_err(), "read through a symlink swapped in");
    }
}
