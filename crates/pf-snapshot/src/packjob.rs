//! Reading a new pack back from the file ranges it is made of: to name it
//! by its content (unless it is named by its chunks) and, for a push to a
//! destination on a local filesystem, to encode it for the wire on the way
//! (see
//! [`pf_registry_core::Registry::encode_ahead`]), while the snapshot goes on
//! chunking the files after it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use pf_digest::{Digest, Hasher};
use pf_registry_core::codec::{write_framed, EncodeAhead, Prepared};
use pf_registry_core::pack::name_of_chunks;
use pf_registry_core::{RegistryError, Result};

use crate::source::{Segment, Stamp};

/// A closed new pack: the file ranges it is made of and the chunks
/// (digest, length) they hold, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct PackSpec {
    pub(crate) segments: Vec<Segment>,
    pub(crate) chunks: Vec<(Digest, u64)>,
}

impl PackSpec {
    /// The pack's name from its chunks alone ([`name_of_chunks`]).
    pub(crate) fn name_by_chunks(&self) -> Digest {
        let list: Vec<(u64, Digest)> = self.chunks.iter().map(|&(d, n)| (n, d)).collect();
        name_of_chunks(&list)
    }
}

/// A new pack read back: its name, and its wire encoding when made ahead.
#[derive(Debug)]
pub(crate) struct PackDone {
    pub(crate) digest: Digest,
    pub(crate) prepared: Option<Prepared>,
}

/// Reads pack `spec` back: names it by content (`by_content`; else by its
/// chunks, with no hashing of the whole pack) and, with `ahead`, encodes
/// it into the destination's spool directory. A pack that fails under its
/// files' stamps is read once more checking every chunk by its digest: a
/// file whose stamp changed after it was chunked (an append after the
/// planner placed its first chunks) may still hold the chunks. A file
/// whose chunks changed fails it (see [`PackReader`]).
pub(crate) fn run(
    spec: &PackSpec,
    ahead: Option<&EncodeAhead>,
    by_content: bool,
) -> Result<PackDone> {
    match run_once(spec, ahead, by_content) {
        Err(_) if spec.segments.iter().any(|s| s.stamp.is_some()) => {
            let mut checked = spec.clone();
            for s in &mut checked.segments {
                s.stamp = None;
            }
            run_once(&checked, ahead, by_content)
        }
        done => done,
    }
}

/// [`run`], once.
fn run_once(spec: &PackSpec, ahead: Option<&EncodeAhead>, by_content: bool) -> Result<PackDone> {
    let mut r = PackReader::new(spec, by_content);
    let read_err = |e| RegistryError::io("reading a new pack", e);
    let Some(a) = ahead else {
        let mut buf = vec![0u8; 256 << 10];
        while r.read(&mut buf).map_err(read_err)? > 0 {}
        return Ok(PackDone {
            digest: r.digest(),
            prepared: None,
        });
    };
    let plan: Vec<u64> = spec.chunks.iter().map(|c| c.1).collect();
    let framed = write_framed(
        &mut r,
        "a new pack",
        &plan,
        a.level,
        Some(&a.spool_dir),
        a.hash_encoded,
    )?;
    // Written without an fsync (the push's commit makes blobs durable):
    // start the writeback now, while the snapshot still reads and hashes.
    pf_registry_core::codec::start_writeback(framed.path());
    let digest = r.digest();
    let size = plan.iter().sum();
    Ok(PackDone {
        digest,
        prepared: Some(Prepared {
            blob: framed.into_blob(digest, size),
            plan,
        }),
    })
}

/// The bytes of a new pack, read from its file ranges and hashed on the
/// way. A range whose file has a trusted stamp (unchanged since it was
/// chunked, by the stat cache's rule) is checked by that stamp once read;
/// any other range's chunks must each still hash to what the chunking saw.
/// A file that changed meanwhile, or ranges that do not hold the chunks,
/// are an `InvalidData` error; the end of the pack is only reported once
/// every check passed.
pub(crate) struct PackReader<'a> {
    segments: std::slice::Iter<'a, Segment>,
    chunks: std::slice::Iter<'a, (Digest, u64)>,
    /// The open range: its file, segment and bytes left.
    file: Option<(File, &'a Segment, u64)>,
    /// The chunk being read: its digest, bytes left and running hash.
    chunk: Option<(Digest, u64, Hasher)>,
    /// The whole pack's running hash, for a pack named by its content.
    pack: Option<Hasher>,
    spec: &'a PackSpec,
}

impl<'a> PackReader<'a> {
    /// A reader of pack `spec` from its start, hashing the whole pack if
    /// `whole` (a pack named by its content).
    pub(crate) fn new(spec: &'a PackSpec, whole: bool) -> PackReader<'a> {
        PackReader {
            segments: spec.segments.iter(),
            chunks: spec.chunks.iter(),
            file: None,
            chunk: None,
            pack: whole.then(Hasher::new),
            spec,
        }
    }

    /// The pack's name once read to its end: the digest of the bytes read,
    /// or, for a pack not hashed whole, [`name_of_chunks`] of its chunks
    /// (the read checked each chunk, or its file's stamp).
    pub(crate) fn digest(self) -> Digest {
        match self.pack {
            Some(h) => h.finish(),
            None => self.spec.name_by_chunks(),
        }
    }
}

impl Read for PackReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some((f, s, left)) = &mut self.file else {
                let Some(s) = self.segments.next() else {
                    if self.chunk.is_some() || self.chunks.next().is_some() {
                        return Err(invalid("pack ranges and chunks disagree".into()));
                    }
                    return Ok(0);
                };
                let mut f = s.file.open()?;
                f.seek(SeekFrom::Start(s.offset))?;
                self.file = Some((f, s, s.len));
                continue;
            };
            let s: &Segment = s;
            if *left == 0 {
                if let Some(st) = &s.stamp {
                    if Stamp::of(&f.metadata()?) != *st {
                        return Err(changed(s));
                    }
                }
                self.file = None;
                continue;
            }
            let (want, n, h) = match &mut self.chunk {
                Some(c) => c,
                None => {
                    let Some(&(d, n)) = self.chunks.next() else {
                        return Err(invalid("pack ranges and chunks disagree".into()));
                    };
                    self.chunk.insert((d, n, Hasher::new()))
                }
            };
            let k = (*n).min(*left).min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..k]).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    changed(s)
                } else {
                    e
                }
            })?;
            if s.stamp.is_none() {
                h.update(&buf[..k]);
            }
            if let Some(p) = &mut self.pack {
                p.update(&buf[..k]);
            }
            *n -= k as u64;
            *left -= k as u64;
            if *n == 0 {
                let want = *want;
                if let Some((_, _, h)) = self.chunk.take() {
                    if s.stamp.is_none() && h.finish() != want {
                        return Err(changed(s));
                    }
                }
            }
            return Ok(k);
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn changed(s: &Segment) -> io::Error {
    invalid(format!(
        "{} changed while being snapshotted; push again",
        s.file.path().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tests::source_file;
    use pf_cas::{BlobStore, MemoryStore};
    use std::path::Path;

    /// A pack of all of `a` (two chunks, unstamped) and all of `b` (one
    /// chunk, stamped), and its bytes.
    fn pack(dir: &Path) -> (PackSpec, Vec<u8>) {
        let a = pf_testsupport::noise(300 << 10, 5);
        let b = b"a small file".to_vec();
        std::fs::write(dir.join("a"), &a).unwrap();
        std::fs::write(dir.join("b"), &b).unwrap();
        let cut = 100 << 10;
        let spec = PackSpec {
            segments: vec![
                Segment {
                    file: source_file(dir, "a"),
                    offset: 0,
                    len: a.len() as u64,
                    stamp: None,
                },
                Segment {
                    file: source_file(dir, "b"),
                    offset: 0,
                    len: b.len() as u64,
                    stamp: Some(Stamp::of(&std::fs::metadata(dir.join("b")).unwrap())),
                },
            ],
            chunks: vec![
                (Digest::of(&a[..cut]), cut as u64),
                (Digest::of(&a[cut..]), (a.len() - cut) as u64),
                (Digest::of(&b), b.len() as u64),
            ],
        };
        (spec, [a, b].concat())
    }

    fn err(spec: &PackSpec) -> String {
        run(spec, None, true).unwrap_err().to_string()
    }

    #[test]
    fn names_the_pack_and_encodes_it_ahead_into_the_spool_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, bytes) = pack(dir.path());
        let want = Digest::of(&bytes);
        let plain = run(&spec, None, true).unwrap();
        assert_eq!(plain.digest, want);
        assert!(plain.prepared.is_none());
        let spool = tempfile::tempdir().unwrap();
        let ahead = EncodeAhead::new(3, spool.path().to_path_buf(), false);
        let done = run(&spec, Some(&ahead), true).unwrap();
        assert_eq!(done.digest, want);
        let p = done.prepared.unwrap();
        assert_eq!(p.plan, vec![100 << 10, 200 << 10, 12]);
        assert_eq!(p.blob.digest, want);
        assert_eq!(p.blob.spool_path().unwrap().parent(), Some(spool.path()));
        // The encoding decodes (frame by frame) to the pack's bytes.
        let mem = MemoryStore::new();
        let n = pf_registry_core::codec::decode_into(
            p.blob.open().unwrap(),
            &want,
            Some(bytes.len() as u64),
            u64::MAX,
            &mem,
        )
        .unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(mem.get(&want).unwrap(), bytes);
    }

    #[test]
    fn a_pack_named_by_its_chunks_is_encoded_ahead_and_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, bytes) = pack(dir.path());
        let tiling: Vec<(u64, Digest)> = spec.chunks.iter().map(|&(d, n)| (n, d)).collect();
        let want = name_of_chunks(&tiling);
        assert_ne!(want, Digest::of(&bytes));
        let spool = tempfile::tempdir().unwrap();
        let ahead = EncodeAhead::new(3, spool.path().to_path_buf(), false);
        let done = run(&spec, Some(&ahead), false).unwrap();
        assert_eq!(done.digest, want);
        let p = done.prepared.unwrap();
        assert_eq!(p.blob.digest, want);
        // A store takes it under its name, checked chunk by chunk.
        let mem = MemoryStore::new();
        let n = pf_registry_core::codec::decode_pack_into(
            p.blob.open().unwrap(),
            &want,
            Some(bytes.len() as u64),
            u64::MAX,
            None,
            Some(&tiling),
            &mem,
        )
        .unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(mem.get(&want).unwrap(), bytes);
        // Not hashed whole, but an unstamped file that changed still fails it.
        let a = dir.path().join("a");
        let mut changed = std::fs::read(&a).unwrap();
        changed[10] ^= 1;
        std::fs::write(&a, &changed).unwrap();
        let e = run(&spec, Some(&ahead), false).unwrap_err().to_string();
        assert!(e.contains("changed while being snapshotted"), "{e}");
    }

    #[test]
    fn a_file_changed_since_it_was_chunked_fails_the_pack() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, _) = pack(dir.path());
        // Unstamped: caught by the chunk digests, same size or not.
        let a = dir.path().join("a");
        let mut changed = std::fs::read(&a).unwrap();
        changed[150 << 10] ^= 1;
        std::fs::write(&a, &changed).unwrap();
        assert!(err(&spec).contains("changed while being snapshotted"));
        changed.truncate(250 << 10);
        std::fs::write(&a, &changed).unwrap();
        assert!(err(&spec).contains("changed while being snapshotted"));
        // Stamped: the stamp no longer matches, and the chunk digest
        // then catches the change.
        let (spec, _) = pack(dir.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("b"), b"a smell file").unwrap();
        assert!(err(&spec).contains("changed while being snapshotted"));
    }

    #[test]
    fn a_stamped_file_whose_chunks_are_still_there_is_read_again_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, bytes) = pack(dir.path());
        // The same bytes back (or an append after the chunks): the stamp
        // changed, the chunks did not.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = dir.path().join("b");
        std::fs::write(&b, b"a small file").unwrap();
        assert_ne!(
            Some(Stamp::of(&std::fs::metadata(&b).unwrap())),
            spec.segments[1].stamp
        );
        let done = run(&spec, None, true).unwrap();
        assert_eq!(done.digest, Digest::of(&bytes));
        let spool = tempfile::tempdir().unwrap();
        let ahead = EncodeAhead::new(3, spool.path().to_path_buf(), false);
        let done = run(&spec, Some(&ahead), false).unwrap();
        assert_eq!(done.digest, spec.name_by_chunks());
    }

    #[test]
    fn ranges_and_chunks_that_disagree_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spec, _) = pack(dir.path());
        let last = spec.chunks.pop().unwrap();
        assert!(err(&spec).contains("disagree"));
        spec.chunks.push(last);
        spec.chunks.push(last);
        assert!(err(&spec).contains("disagree"));
    }
}
