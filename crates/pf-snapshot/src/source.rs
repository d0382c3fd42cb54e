//! A blob store that serves a snapshot's content from the files themselves.
//!
//! Snapshotting a directory only hashes it: each blob is recorded as the
//! file ranges it is made of, and a push reads those ranges again while it
//! encodes. Nothing is copied into the local store, so a first push writes
//! every byte once (into the destination).
//!
//! A file that changes after it was hashed must never be uploaded under the
//! old digest. Ranges recorded with a [`Stamp`] (the file's size, mtime,
//! ctime, inode and device when hashed, and not modified in the 2 seconds
//! before the snapshot) are checked against `fstat` when opened and again
//! when fully read, the rule the stat cache and git's index rely on; the
//! store then vouches for the bytes and the engine skips its re-hash. Ranges
//! without a stamp are re-hashed by the engine as it reads them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use pf_cas::BlobStore;
use pf_digest::Digest;

/// The stat fields that say a file is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    /// The stamp of `md`.
    pub fn of(md: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
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

/// Whether stamps of files at `path` can stand in for a re-hash.
pub fn stamps_trustworthy(path: &std::path::Path) -> bool {
    rustix::fs::statfs(path)
        .is_ok_and(|st| STAMPABLE_FS.contains(&(st.f_type as u64 & 0xFFFF_FFFF)))
}

/// A byte range of a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The file.
    pub path: Arc<PathBuf>,
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
}

impl SourceStore {
    /// An empty source map over `inner`.
    pub fn new(inner: Arc<dyn BlobStore>) -> SourceStore {
        SourceStore {
            inner,
            blobs: RwLock::new(HashMap::new()),
        }
    }

    /// Records that blob `digest` is the concatenation of `segments`. The
    /// first record for a digest wins (identical content elsewhere).
    pub fn add(&self, digest: Digest, segments: Vec<Segment>) {
        if let Ok(mut m) = self.blobs.write() {
            m.entry(digest).or_insert_with(|| segments.into());
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

    fn put(&self, bytes: &[u8]) -> pf_cas::Result<Digest> {
        self.inner.put(bytes)
    }

    fn put_stream(
        &self,
        expected: Option<&Digest>,
        reader: &mut dyn Read,
    ) -> pf_cas::Result<(Digest, u64)> {
        self.inner.put_stream(expected, reader)
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
            let mut f = File::open(&*s.path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening {}: {e}", s.path.display()))
            })?;
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
            s.path.display()
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
mod tests {
    use super::*;
    use pf_cas::MemoryStore;

    #[test]
    fn serves_concatenated_ranges_and_falls_back_to_inner() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(dir.path().join("a"));
        let b = Arc::new(dir.path().join("b"));
        std::fs::write(&*a, b"0123456789").unwrap();
        std::fs::write(&*b, b"abcdef").unwrap();
        let inner = Arc::new(MemoryStore::new());
        let kept = inner.put(b"index").unwrap();
        let s = SourceStore::new(inner);
        let d = Digest::of(b"3456cde");
        s.add(
            d,
            vec![
                Segment {
                    path: a.clone(),
                    offset: 3,
                    len: 4,
                    stamp: None,
                },
                Segment {
                    path: b.clone(),
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
                path: a.clone(),
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
}
