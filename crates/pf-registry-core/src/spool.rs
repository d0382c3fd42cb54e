//! The output of a pack's spool file: its frames appended as they are made
//! and its table written last at the start, through an aligned buffer.
//!
//! For a large pack on Linux the file is switched to `O_DIRECT`, so the
//! encoded bytes go from this buffer to the disk without a copy into the
//! page cache and a later write-back: on a push of a gigabyte to a local
//! repository that copy (and, in a VM, faulting in fresh page-cache
//! memory) costs more system time than the writes themselves, and the
//! commit's fsyncs find the data already written. Where the filesystem
//! refuses `O_DIRECT` (tmpfs, some network filesystems), or a write is
//! refused for its alignment, the same writes go through the page cache.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

/// File offsets, lengths and buffer addresses of direct writes are
/// multiples of this (the largest logical block size in common use).
const ALIGN: usize = 4096;
/// A buffer's size: bytes per write.
const CAP: usize = 2 << 20;

/// An aligned buffer: `mem[off..off + CAP]`.
struct Buf {
    mem: Vec<u8>,
    off: usize,
}

impl Buf {
    fn new() -> Buf {
        let mem = vec![0u8; CAP + ALIGN];
        let off = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        Buf { mem, off }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.mem[self.off..self.off + CAP]
    }
}

/// A write for the writer thread: `buf.bytes()[from..from + n]` at `at`.
struct Job {
    buf: Buf,
    from: usize,
    n: usize,
    at: u64,
}

/// Appends to a spool file after a reserved head of `head` bytes, which
/// [`SpoolOut::finish`] fills. Full buffers are written by a thread of
/// its own while the caller fills the next one (two buffers, so memory
/// stays `2 * CAP`).
pub(crate) struct SpoolOut {
    cur: Buf,
    /// Bytes in `cur`; they belong at file offset `at` onwards.
    len: usize,
    at: u64,
    /// A free buffer, unless both are in use.
    spare: Option<Buf>,
    inflight: usize,
    jobs: Sender<Job>,
    done: Receiver<(Buf, io::Result<()>)>,
    writer: JoinHandle<File>,
    /// The reserved head's size, and the file's first bytes up to the
    /// aligned end of the head (kept back until the head is known).
    head: usize,
    prefix: Vec<u8>,
}

impl SpoolOut {
    /// A writer of `file` (empty) whose first `head` bytes are left for
    /// [`SpoolOut::finish`]; with `direct`, writes bypass the page cache
    /// where the filesystem allows it.
    pub(crate) fn new(file: File, head: usize, direct: bool) -> io::Result<SpoolOut> {
        let direct = direct && set_direct(&file, true);
        let (jobs, rx) = channel::<Job>();
        let (tx, done) = channel();
        let writer = std::thread::Builder::new()
            .name("pf-spool".into())
            .spawn(move || write_jobs(file, direct, rx, tx))?;
        let mut out = SpoolOut {
            cur: Buf::new(),
            len: 0,
            at: 0,
            spare: Some(Buf::new()),
            inflight: 0,
            jobs,
            done,
            writer,
            head,
            prefix: Vec::new(),
        };
        // The head's place (zeros until `finish`): its full buffers
        // straight into the kept-back prefix, the rest into the buffer.
        let mut left = head;
        while left >= CAP {
            out.prefix.resize(out.prefix.len() + CAP, 0);
            out.at += CAP as u64;
            left -= CAP;
        }
        out.len = left;
        Ok(out)
    }

    /// The end of the kept-back prefix: the head, rounded up to `ALIGN`.
    fn prefix_end(&self) -> u64 {
        self.head.next_multiple_of(ALIGN) as u64
    }

    /// Hands the buffer's bytes to the writer (padded with zeros to
    /// `ALIGN` if `last`), keeping back those before
    /// [`Self::prefix_end`], and takes a free buffer.
    fn drain(&mut self, last: bool) -> io::Result<()> {
        let keep = (self.prefix_end().saturating_sub(self.at) as usize).min(self.len);
        let len = self.len;
        let bytes = self.cur.bytes();
        self.prefix.extend_from_slice(&bytes[..keep]);
        let end = if last {
            len.next_multiple_of(ALIGN)
        } else {
            len
        };
        if len > keep {
            bytes[len..end].fill(0);
            let buf = match self.spare.take() {
                Some(b) => b,
                None => self.returned()?,
            };
            let job = Job {
                buf: std::mem::replace(&mut self.cur, buf),
                from: keep,
                n: end - keep,
                at: self.at + keep as u64,
            };
            self.send(job)?;
        }
        self.at += len as u64;
        self.len = 0;
        Ok(())
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| io::Error::other("the spool writer stopped"))?;
        self.inflight += 1;
        Ok(())
    }

    /// The next buffer the writer is done with (its write's error, if any).
    fn returned(&mut self) -> io::Result<Buf> {
        let (buf, res) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("the spool writer stopped"))?;
        self.inflight -= 1;
        res.map(|()| buf)
    }

    /// Writes `head` (exactly the reserved length) at the start and the
    /// rest of the buffer, and waits for every write; the file's length.
    pub(crate) fn finish(mut self, head: &[u8]) -> io::Result<u64> {
        if head.len() != self.head {
            return Err(io::Error::other("spool head of the wrong length"));
        }
        self.drain(true)?;
        let total = self.at;
        self.prefix[..head.len()].copy_from_slice(head);
        let prefix = std::mem::take(&mut self.prefix);
        for (k, part) in prefix.chunks(CAP).enumerate() {
            let mut buf = match self.spare.take() {
                Some(b) => b,
                None => self.returned()?,
            };
            let n = part.len().next_multiple_of(ALIGN);
            let bytes = buf.bytes();
            bytes[..part.len()].copy_from_slice(part);
            bytes[part.len()..n].fill(0);
            let at = (k * CAP) as u64;
            self.send(Job {
                buf,
                from: 0,
                n,
                at,
            })?;
        }
        while self.inflight > 0 {
            let buf = self.returned()?;
            self.spare = Some(buf);
        }
        let SpoolOut { jobs, writer, .. } = self;
        drop(jobs);
        let file = writer
            .join()
            .map_err(|_| io::Error::other("the spool writer panicked"))?;
        // Drop the zeros the last aligned writes added.
        if file.metadata()?.len() != total {
            file.set_len(total)?;
        }
        Ok(total)
    }
}

impl Write for SpoolOut {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (CAP - self.len).min(buf.len());
            let at = self.len;
            self.cur.bytes()[at..at + take].copy_from_slice(&buf[..take]);
            self.len += take;
            buf = &buf[take..];
            if self.len == CAP {
                self.drain(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: each job's bytes at its offset, directly while the
/// filesystem takes that (then through the page cache), each buffer sent
/// back with the write's result; the file once the jobs end.
fn write_jobs(
    file: File,
    mut direct: bool,
    jobs: Receiver<Job>,
    done: Sender<(Buf, io::Result<()>)>,
) -> File {
    for mut job in jobs {
        let bytes = &job.buf.bytes()[job.from..job.from + job.n];
        let mut res = file.write_all_at(bytes, job.at);
        if direct
            && matches!(&res, Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()))
        {
            direct = false;
            set_direct(&file, false);
            res = file.write_all_at(bytes, job.at);
        }
        if done.send((job.buf, res)).is_err() {
            break;
        }
    }
    file
}

/// Turns `O_DIRECT` on or off for `file`; whether that worked.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use rustix::fs::OFlags;
    let Ok(flags) = rustix::fs::fcntl_getfl(file) else {
        return false;
    };
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags).is_ok()
}

/// No `O_DIRECT` here: every write goes through the page cache.
#[cfg(not(target_os = "linux"))]
fn set_direct(_: &File, _: bool) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Writes `data` after a head of `head` bytes in pieces of `piece`
    /// bytes; the file's bytes.
    fn spooled(data: &[u8], head: usize, piece: usize, direct: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut out = SpoolOut::new(file, head, direct).unwrap();
        for p in data.chunks(piece.max(1)) {
            out.write_all(p).unwrap();
        }
        let h: Vec<u8> = (0..head).map(|i| (i % 251) as u8 ^ 0x5a).collect();
        let total = out.finish(&h).unwrap();
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(total, got.len() as u64);
        got
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// The file is the head and then the bytes written, whatever the
        /// sizes, direct or not.
        #[test]
        fn spool_is_head_then_data(
            len in 0usize..(3 * CAP + 5000),
            head in proptest::prop_oneof![0usize..9000, (CAP - 10)..(CAP + 10), (2 * CAP)..(2 * CAP + 5000)],
            piece in 1usize..300_000,
            direct in proptest::prelude::any::<bool>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let data = pf_testsupport::noise(len, seed);
            let got = spooled(&data, head, piece, direct);
            let h: Vec<u8> = (0..head).map(|i| (i % 251) as u8 ^ 0x5a).collect();
            proptest::prop_assert_eq!(got.len(), head + len);
            proptest::prop_assert!(got[..head] == h[..]);
            proptest::prop_assert!(got[head..] == data[..]);
        }
    }

    #[test]
    fn a_head_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("spool")).unwrap();
        let out = SpoolOut::new(file, 16, true).unwrap();
        assert!(out.finish(&[0u8; 15]).is_err());
    }
}
