//! Blob encoding (zstd, streamed, verified) and capped, verified decoding.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use pf_cas::BlobStore;
use pf_digest::{Digest, HashingWriter};

use crate::error::{RegistryError, Result};
use crate::transport::EncodedBlob;

/// Blobs up to this raw size are encoded in memory; larger ones are spooled.
pub const IN_MEMORY_LIMIT: u64 = 1 << 20;
/// Blobs above this raw size use multi-threaded zstd.
pub const MULTITHREAD_THRESHOLD: u64 = 32 << 20;
/// Packs from this raw size on may be spooled with direct writes (see
/// [`write_framed`]); a smaller one is not worth the writer thread.
const DIRECT_SPOOL_MIN: u64 = 4 << 20;

/// Encodes blob `digest` from `store` as one zstd stream. Re-hashes the raw
/// bytes while reading, so a corrupt local store is caught before upload,
/// unless the store vouches for them (see [`BlobStore::open_vouched`]).
pub fn encode(
    store: &dyn BlobStore,
    digest: &Digest,
    level: i32,
    spool_dir: Option<&Path>,
    hash_encoded: bool,
) -> Result<EncodedBlob> {
    let size = store
        .size(digest)?
        .ok_or_else(|| RegistryError::not_found(format!("blob {digest} in the local store")))?;
    let (reader, vouched) = store.open_vouched(digest)?;
    encode_from(
        reader,
        vouched,
        digest,
        size,
        level,
        spool_dir,
        hash_encoded,
    )
}

/// [`encode`] of the `size` bytes of blob `digest` that `reader` yields,
/// re-hashed against `digest` unless `vouched` (so that whoever holds the
/// bytes can encode them ahead, see [`Prepared`]).
pub fn encode_from(
    reader: impl Read,
    vouched: bool,
    digest: &Digest,
    size: u64,
    level: i32,
    spool_dir: Option<&Path>,
    hash_encoded: bool,
) -> Result<EncodedBlob> {
    let mut hashing = Checking::new(reader, vouched, None);
    let blob = if size <= IN_MEMORY_LIMIT {
        let mut raw = Vec::with_capacity(size as usize);
        hashing
            .read_to_end(&mut raw)
            .map_err(|e| RegistryError::io(format!("reading blob {digest}"), e))?;
        hashing.check(digest)?;
        let _slot = CompressSlot::take();
        let enc =
            zstd::bulk::compress(&raw, level).map_err(|e| RegistryError::io("zstd encode", e))?;
        EncodedBlob::in_memory(*digest, raw.len() as u64, Bytes::from(enc))
    } else {
        let tmp = match spool_dir {
            Some(d) => tempfile::NamedTempFile::new_in(d),
            None => tempfile::NamedTempFile::new(),
        }
        .map_err(|e| RegistryError::io("creating spool file", e))?;
        let (file, path) = tmp.into_parts();
        let out = MaybeHashingWriter::new(BufWriter::with_capacity(256 * 1024, file), hash_encoded);
        let mut sample = Vec::with_capacity(SAMPLE_SIZE);
        (&mut hashing)
            .take(SAMPLE_SIZE as u64)
            .read_to_end(&mut sample)
            .map_err(|e| RegistryError::io(format!("reading blob {digest}"), e))?;
        let incompressible = looks_incompressible(&sample, level);
        // The whole blob again: the sample, then the rest of the reader.
        let mut src = io::Cursor::new(&sample).chain(&mut hashing);
        let (out, raw_len) = if incompressible {
            let out = write_raw_frame(out, size, &mut src)
                .map_err(|e| RegistryError::io(format!("encoding blob {digest}"), e))?;
            (out, size)
        } else {
            let _slot = CompressSlot::take();
            let mut enc = zstd::stream::write::Encoder::new(out, level)
                .map_err(|e| RegistryError::io("zstd init", e))?;
            // Held until this function returns: at most one multi-threaded
            // encoder per process (see `MultithreadSlot`).
            let slot = if size > MULTITHREAD_THRESHOLD {
                MultithreadSlot::try_take()
            } else {
                None
            };
            if let Some(slot) = &slot {
                enc.multithread(slot.workers)
                    .map_err(|e| RegistryError::io("zstd multithread", e))?;
            }
            enc.include_checksum(false)
                .map_err(|e| RegistryError::io("zstd init", e))?;
            let raw_len = copy(&mut src, &mut enc)
                .map_err(|e| RegistryError::io(format!("encoding blob {digest}"), e))?;
            let out = enc
                .finish()
                .map_err(|e| RegistryError::io("zstd finish", e))?;
            (out, raw_len)
        };
        hashing.check(digest)?;
        let (buf, enc_digest, enc_len) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| RegistryError::io("flushing spool file", e.into_error()))?;
        drop(file);
        EncodedBlob::spooled(*digest, raw_len, enc_digest, enc_len, path)
    };
    Ok(blob)
}

/// Encodes pack `digest` from `store` as one zstd frame per entry of
/// `plan` (raw frame lengths covering the blob, see
/// [`crate::pack::frame_plans`]) followed by the skippable frame table, so
/// a reader can fetch single frames by range. Frames are compressed
/// independently (in parallel); raw bytes are re-hashed as in [`encode`].
pub fn encode_framed(
    store: &dyn BlobStore,
    digest: &Digest,
    plan: &[u64],
    level: i32,
    spool_dir: Option<&Path>,
    hash_encoded: bool,
) -> Result<EncodedBlob> {
    encode_pack(store, digest, plan, None, level, spool_dir, hash_encoded)
}

/// [`encode_framed`] of a pack that may be named by its chunks (`tiling`
/// given, see [`crate::pack::name_of_chunks`]): its raw bytes are then
/// re-checked chunk by chunk.
pub fn encode_pack(
    store: &dyn BlobStore,
    digest: &Digest,
    plan: &[u64],
    tiling: Option<&[(u64, Digest)]>,
    level: i32,
    spool_dir: Option<&Path>,
    hash_encoded: bool,
) -> Result<EncodedBlob> {
    let size = store
        .size(digest)?
        .ok_or_else(|| RegistryError::not_found(format!("blob {digest} in the local store")))?;
    if plan.iter().sum::<u64>() != size {
        return Err(uncovered(&format!("pack {digest}")));
    }
    let (reader, vouched) = store.open_vouched(digest)?;
    let mut checking = Checking::new(reader, vouched, tiling);
    let what = format!("blob {digest}");
    let framed = write_framed(&mut checking, &what, plan, level, spool_dir, hash_encoded)?;
    checking.check(digest)?;
    Ok(framed.into_blob(*digest, size))
}

/// Where and how a push encodes new packs (see
/// [`crate::Registry::encode_ahead`]), so that whoever reads the packs
/// first (a snapshot) can encode them then, with [`write_framed`], and
/// offer them as [`Prepared`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeAhead {
    /// The zstd level of the push.
    pub level: i32,
    /// The spool directory of the destination (on its filesystem).
    pub spool_dir: std::path::PathBuf,
    /// Whether the destination names blobs by their encoded digest.
    pub hash_encoded: bool,
}

impl EncodeAhead {
    /// Encoding at zstd `level` into `spool_dir`, naming blobs by their
    /// encoded digest too when `hash_encoded`.
    pub fn new(level: i32, spool_dir: std::path::PathBuf, hash_encoded: bool) -> EncodeAhead {
        EncodeAhead {
            level,
            spool_dir,
            hash_encoded,
        }
    }
}

/// Asks the kernel to start writing the file at `path` back now
/// (`POSIX_FADV_DONTNEED` starts asynchronous writeback of dirty pages), so
/// that a later fsync finds most of it on disk instead of waiting for all
/// of it. For a file that becomes a blob where it lies (a `file://` spool),
/// not one that is read back soon. Advisory: errors are ignored.
pub fn start_writeback(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// A pack already encoded for the wire, offered by a store through
/// [`BlobStore::prepared`]: the push uploads `blob` instead of encoding
/// the pack again when `plan` (its raw frame lengths) is the push's plan
/// for it; an empty plan stands for a blob the push encodes whole
/// ([`encode`], [`encode_from`]). Whoever made it vouches that `blob`
/// encodes exactly the bytes named by its digest.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The encoded pack.
    pub blob: EncodedBlob,
    /// Its raw frame lengths.
    pub plan: Vec<u64>,
}

impl Prepared {
    /// The prepared encoding of pack `digest` in `store`, if the store
    /// holds one with frame lengths `plan`.
    pub fn lookup(store: &dyn BlobStore, digest: &Digest, plan: &[u64]) -> Option<EncodedBlob> {
        let p = store.prepared(digest)?.downcast::<Prepared>().ok()?;
        (p.blob.digest == *digest && p.plan == plan).then(|| p.blob.clone())
    }
}

/// A pack encoded by [`write_framed`] into a spool file.
#[derive(Debug)]
pub struct Framed {
    path: tempfile::TempPath,
    encoded_size: u64,
    encoded_digest: Option<Digest>,
}

impl Framed {
    /// The spool file holding the encoded pack.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The encoded blob of raw blob `digest` (`raw_size` bytes).
    pub fn into_blob(self, digest: Digest, raw_size: u64) -> EncodedBlob {
        EncodedBlob::spooled(
            digest,
            raw_size,
            self.encoded_digest,
            self.encoded_size,
            self.path,
        )
    }
}

/// Encodes the `plan.iter().sum()` bytes `reader` yields (named `what` in
/// errors) as [`encode_framed`] does, into a spool file in `spool_dir` (or
/// the temp dir); fails if the reader yields more or fewer bytes. Checking
/// the bytes against a name is the caller's part. A large pack spooled in
/// `spool_dir` without `hash_encoded` is written past the page cache
/// (`O_DIRECT`) where the filesystem allows it.
pub fn write_framed(
    reader: &mut dyn Read,
    what: &str,
    plan: &[u64],
    level: i32,
    spool_dir: Option<&Path>,
    hash_encoded: bool,
) -> Result<Framed> {
    use rayon::prelude::*;
    if plan
        .iter()
        .any(|&n| n == 0 || n > crate::pack::MAX_CHUNK_SIZE)
    {
        return Err(uncovered(what));
    }
    // The table's length follows from the frame count, so frames are
    // written after its place as they are made, and the table last, at the
    // start: memory is one batch of about 4 MiB of raw frames (read, then
    // compressed in parallel), and a frame stored raw is written from the
    // read buffer.
    let tmp = match spool_dir {
        Some(d) => tempfile::NamedTempFile::new_in(d),
        None => tempfile::NamedTempFile::new(),
    }
    .map_err(|e| RegistryError::io("creating spool file", e))?;
    let (file, path) = tmp.into_parts();
    let spool_err = |e| RegistryError::io("writing spool file", e);
    // Appended through aligned buffers (one `writev` of a batch's headers
    // and bodies costs far more system time here than copying them through
    // a buffer). A large pack spooled into the destination's own directory
    // (it becomes the blob) and not read back for its encoded digest
    // bypasses the page cache (crate::spool); a spool file in the temp dir
    // is read once for upload and removed, so it stays in the page cache.
    let head = crate::pack::FrameTable::encoded_len(plan.len());
    let direct =
        spool_dir.is_some() && !hash_encoded && plan.iter().sum::<u64>() >= DIRECT_SPOOL_MIN;
    let mut out = crate::spool::SpoolOut::new(file, head as usize, direct).map_err(spool_err)?;
    let mut table = crate::pack::FrameTable::default();
    let mut frames = plan.iter().copied().peekable();
    // One buffer for every batch: zeroed once, not per frame.
    let mut buf: Vec<u8> = Vec::new();
    while frames.peek().is_some() {
        let mut sizes: Vec<usize> = Vec::new();
        let mut bytes = 0usize;
        while let Some(n) = frames.next_if(|_| bytes < 4 << 20) {
            sizes.push(n as usize);
            bytes += n as usize;
        }
        buf.resize(bytes, 0);
        let got = read_full(reader, &mut buf)
            .map_err(|e| RegistryError::io(format!("reading {what}"), e))?;
        if got < bytes {
            return Err(RegistryError::invalid(what, "shorter than its size"));
        }
        let mut batch: Vec<&[u8]> = Vec::with_capacity(sizes.len());
        let mut rest = &buf[..];
        for n in sizes {
            let (raw, tail) = rest.split_at(n);
            batch.push(raw);
            rest = tail;
        }
        let enc: Vec<io::Result<Frame<'_>>> = batch
            .par_iter()
            .map(|raw| encode_frame(raw, level))
            .collect();
        for (raw, e) in batch.iter().zip(enc) {
            let e = e.map_err(|e| RegistryError::io("zstd encode", e))?;
            table.frames.push((raw.len() as u32, e.len() as u32));
            e.write_to(&mut out).map_err(spool_err)?;
        }
    }
    let mut extra = [0u8; 1];
    let more = read_full(reader, &mut extra)
        .map_err(|e| RegistryError::io(format!("reading {what}"), e))?;
    if more != 0 {
        return Err(RegistryError::invalid(what, "longer than its size"));
    }
    let table = table.to_bytes();
    debug_assert_eq!(table.len() as u64, head);
    let enc_len = out.finish(&table).map_err(spool_err)?;
    // OCI and the Hub name blobs by their encoded digest: one read of the
    // spool file (the table comes first but is made last).
    let enc_digest = if hash_encoded {
        let f =
            std::fs::File::open(&path).map_err(|e| RegistryError::io("reading spool file", e))?;
        Some(
            Digest::of_reader(f)
                .map_err(|e| RegistryError::io("hashing spool file", e))?
                .0,
        )
    } else {
        None
    };
    Ok(Framed {
        path,
        encoded_size: enc_len,
        encoded_digest: enc_digest,
    })
}

fn uncovered(what: &str) -> RegistryError {
    RegistryError::invalid(what, "its chunk table does not cover the blob")
}

/// Reads until `buf` is full or the reader ends; the count read. A short
/// count is the end of the reader (`read_exact` would lose it).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One encoded frame of a pack: bytes zstd made, or a frame of raw blocks
/// whose headers are made here and whose bodies are the raw bytes.
enum Frame<'a> {
    Made(Vec<u8>),
    Raw { heads: Vec<u8>, raw: &'a [u8] },
}

impl Frame<'_> {
    fn len(&self) -> usize {
        match self {
            Frame::Made(b) => b.len(),
            Frame::Raw { heads, raw } => heads.len() + raw.len(),
        }
    }

    /// Writes the frame's bytes: for a raw frame, the frame header and
    /// then each block's header and body.
    fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Frame::Made(b) => w.write_all(b),
            Frame::Raw { heads, raw } => {
                w.write_all(&heads[..RAW_FRAME_HEADER])?;
                let blocks = raw.len().div_ceil(RAW_BLOCK).max(1);
                for k in 0..blocks {
                    let at = RAW_FRAME_HEADER + 3 * k;
                    w.write_all(&heads[at..at + 3])?;
                    w.write_all(&raw[k * RAW_BLOCK..raw.len().min((k + 1) * RAW_BLOCK)])?;
                }
                Ok(())
            }
        }
    }
}

/// Encodes one frame of a framed pack at `level`; a frame that
/// [`looks_random`] becomes a frame of raw blocks without a match search.
fn encode_frame(raw: &[u8], level: i32) -> io::Result<Frame<'_>> {
    if looks_random(raw) {
        return Ok(Frame::Raw {
            heads: raw_frame_heads(raw.len()),
            raw,
        });
    }
    compress_frame(raw, level).map(Frame::Made)
}

thread_local! {
    /// One zstd context per thread and level, reused across frames (a
    /// context per 64 KiB frame costs more than some frames' compression).
    static FRAME_CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses one frame of a framed pack at `level`.
fn compress_frame(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    FRAME_CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match c.as_mut() {
            Some((_, cctx)) => cctx.compress(raw),
            None => zstd::bulk::compress(raw, level),
        }
    })
}

/// Frames at least this large are tested by [`looks_random`]; smaller
/// ones are always compressed (cheap either way).
pub const PROBE_MIN: usize = 16 << 10;
/// Bytes [`looks_random`] counts: four pieces of this size, spread over
/// the frame.
const PROBE_PIECE: usize = 1 << 10;

/// Whether `raw` (a chunk) looks like random bytes: random, encrypted or
/// already compressed data, which zstd would store as raw blocks after a
/// match search, so encoders store it raw without trying. Always `false`
/// below [`PROBE_MIN`] bytes. The test: chi-square of the byte counts in
/// four 1 KiB pieces spread over `raw` against the uniform distribution
/// (about 255 ± 23 for uniform bytes; text, JSON and tensors are far
/// above the bound of 330). It sees byte frequencies only, so random
/// bytes repeated within one chunk are stored raw. It depends on the bytes
/// alone: equal chunks always encode the same way.
pub fn looks_random(raw: &[u8]) -> bool {
    if raw.len() < PROBE_MIN {
        return false;
    }
    let mut hist = [0u32; 256];
    let step = raw.len() / 4;
    for k in 0..4 {
        for &b in &raw[k * step..k * step + PROBE_PIECE] {
            hist[usize::from(b)] += 1;
        }
    }
    let expected = (4 * PROBE_PIECE / 256) as i64;
    let chi2: i64 = hist
        .iter()
        .map(|&c| (i64::from(c) - expected).pow(2))
        .sum::<i64>()
        / expected;
    chi2 < 330
}

/// Bytes from the start of a spooled blob test-compressed to decide how to
/// encode it.
const SAMPLE_SIZE: usize = 128 << 10;
/// Raw blocks are at most this large (zstd's block size limit).
const RAW_BLOCK: usize = 128 << 10;

/// Whether `sample` saves less than 2% at `level` (random, encrypted or
/// already compressed data). Like borg's `auto` compression: such blobs are
/// stored as a zstd frame of raw blocks, which costs a copy instead of zstd's
/// match search. Short samples are never judged.
fn looks_incompressible(sample: &[u8], level: i32) -> bool {
    if sample.len() < SAMPLE_SIZE {
        return false;
    }
    zstd::bulk::compress(sample, level)
        .map(|c| c.len() as u64 * 100 >= sample.len() as u64 * 98)
        .unwrap_or(false)
}

/// Writes `size` bytes of `src` as one standard zstd frame made of raw
/// (stored) blocks: magic, a frame header with a 128 KiB window and the
/// 8-byte content size, then blocks of at most 128 KiB, the last one
/// flagged. Any zstd decoder reads it; decoding needs a 128 KiB window.
/// Fails if `src` holds fewer or more than `size` bytes.
fn write_raw_frame<W: Write>(mut out: W, size: u64, src: &mut impl Read) -> io::Result<W> {
    out.write_all(&raw_frame_header(size))?;
    let mut buf = vec![0u8; RAW_BLOCK];
    let mut left = size;
    loop {
        let n = left.min(RAW_BLOCK as u64) as usize;
        src.read_exact(&mut buf[..n])?;
        left -= n as u64;
        out.write_all(&raw_block_header(n, left == 0))?;
        out.write_all(&buf[..n])?;
        if left == 0 {
            break;
        }
    }
    let mut extra = [0u8; 1];
    if src.read(&mut extra)? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "blob is longer than its declared size",
        ));
    }
    Ok(out)
}

/// Bytes of a raw-block frame's header ([`raw_frame_header`]).
const RAW_FRAME_HEADER: usize = 14;

/// The header of a zstd frame of `size` content bytes: magic, frame
/// header descriptor (8-byte content size, not single-segment, no
/// checksum, no dictionary) and window descriptor (2^17 bytes).
fn raw_frame_header(size: u64) -> [u8; RAW_FRAME_HEADER] {
    let mut h = [0u8; RAW_FRAME_HEADER];
    h[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
    h[4] = 0xC0;
    h[5] = (17 - 10) << 3;
    h[6..].copy_from_slice(&size.to_le_bytes());
    h
}

/// The 3-byte header of a raw block of `n` bytes (block type 0).
fn raw_block_header(n: usize, last: bool) -> [u8; 3] {
    let h = u32::from(last) | ((n as u32) << 3);
    let b = h.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// The headers of a raw-block frame of `size` bytes, as [`Frame::write_to`]
/// writes them: the frame header, then one 3-byte header per block (an
/// empty frame has one empty block).
fn raw_frame_heads(size: usize) -> Vec<u8> {
    let blocks = size.div_ceil(RAW_BLOCK).max(1);
    let mut heads = Vec::with_capacity(RAW_FRAME_HEADER + 3 * blocks);
    heads.extend_from_slice(&raw_frame_header(size as u64));
    for k in 0..blocks {
        let n = (size - k * RAW_BLOCK).min(RAW_BLOCK);
        heads.extend_from_slice(&raw_block_header(n, k + 1 == blocks));
    }
    heads
}

/// A reader that checks what passes through against a blob's name (a
/// [`crate::pack::PackCheck`]: SHA-256, or chunk by chunk for a pack named
/// by its chunks), unless the store vouched for the bytes (`None`).
struct Checking<'a, R> {
    inner: R,
    check: Option<crate::pack::PackCheck<'a>>,
}

impl<'a, R: Read> Checking<'a, R> {
    /// Checks unless `vouched`; `tiling` for a pack named by its chunks.
    fn new(inner: R, vouched: bool, tiling: Option<&'a [(u64, Digest)]>) -> Self {
        Checking {
            inner,
            check: (!vouched).then(|| crate::pack::PackCheck::new(tiling)),
        }
    }

    /// Checks the bytes read give the name `expected` (a vouched read passes).
    fn check(self, expected: &Digest) -> Result<()> {
        match self.check {
            Some(c) => check(expected, c.finish()),
            None => Ok(()),
        }
    }
}

impl<R: Read> Read for Checking<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &mut self.check {
            c.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A writer that hashes what passes through, or only counts it.
enum MaybeHashingWriter<W> {
    Hashing(Box<HashingWriter<W>>),
    Counting(W, u64),
}

impl<W: Write> MaybeHashingWriter<W> {
    fn new(inner: W, hash: bool) -> Self {
        if hash {
            MaybeHashingWriter::Hashing(Box::new(HashingWriter::new(inner)))
        } else {
            MaybeHashingWriter::Counting(inner, 0)
        }
    }

    /// The inner writer, the digest (if hashing) and the byte count.
    fn finish(self) -> (W, Option<Digest>, u64) {
        match self {
            MaybeHashingWriter::Hashing(h) => {
                let (w, d, n) = h.finish();
                (w, Some(d), n)
            }
            MaybeHashingWriter::Counting(w, n) => (w, None, n),
        }
    }
}

impl<W: Write> Write for MaybeHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeHashingWriter::Hashing(h) => h.write(buf),
            MaybeHashingWriter::Counting(w, n) => {
                let k = w.write(buf)?;
                *n += k as u64;
                Ok(k)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeHashingWriter::Hashing(h) => h.flush(),
            MaybeHashingWriter::Counting(w, _) => w.flush(),
        }
    }
}

/// CPUs this process may use (read once: it is a few system calls).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Encoders running zstd's match search in this process, and the signal
/// that one of them finished.
static COMPRESSING: Mutex<usize> = Mutex::new(0);
static COMPRESS_DONE: Condvar = Condvar::new();

/// The right to run zstd's match search. That work is CPU-bound, so more
/// encoders than cores gain nothing, and each holds its level's state
/// (about 90 MiB at level 19): at most one per core runs at once, which
/// bounds memory at high levels. Raw-block copies, hashing and uploads
/// keep the engine's full concurrency.
struct CompressSlot;

impl CompressSlot {
    /// Waits until fewer encoders than cores are compressing.
    fn take() -> CompressSlot {
        let cores = cores();
        let mut running = COMPRESSING.lock().unwrap_or_else(PoisonError::into_inner);
        while *running >= cores {
            running = COMPRESS_DONE
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
        CompressSlot
    }
}

impl Drop for CompressSlot {
    fn drop(&mut self) {
        let mut running = COMPRESSING.lock().unwrap_or_else(PoisonError::into_inner);
        *running -= 1;
        COMPRESS_DONE.notify_one();
    }
}

/// Encoders currently running multi-threaded in this process.
static MULTITHREAD_ENCODERS: AtomicUsize = AtomicUsize::new(0);

/// The right to run one multi-threaded zstd encoder. A multi-threaded
/// encoder buffers several jobs per worker (about 100 MiB at level 3), so
/// with the engine encoding `concurrency` blobs at once only one of them
/// gets it; the others run single-threaded, which already keeps the cores
/// busy. This bounds peak memory whatever the concurrency.
struct MultithreadSlot {
    workers: u32,
}

impl MultithreadSlot {
    /// Takes the slot if it is free and the machine has more than one core.
    fn try_take() -> Option<MultithreadSlot> {
        let workers = cores() as u32;
        if workers < 2 {
            return None;
        }
        MULTITHREAD_ENCODERS
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| MultithreadSlot { workers })
    }
}

impl Drop for MultithreadSlot {
    fn drop(&mut self) {
        MULTITHREAD_ENCODERS.fetch_sub(1, Ordering::AcqRel);
    }
}

fn check(expected: &Digest, actual: Digest) -> Result<()> {
    if *expected != actual {
        return Err(RegistryError::Integrity {
            what: format!("local blob {expected}"),
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// A reader that fails once more than `left` bytes would be produced, or
/// once a shared budget (blobs with no declared size) runs out.
struct Capped<R> {
    inner: R,
    left: u64,
    digest: Digest,
    /// Whether `left` is the declared size (else the undeclared cap).
    declared: bool,
    budget: Option<Arc<AtomicU64>>,
    /// Bytes taken from `budget` so far (given back on failure).
    charged: u64,
}

impl<R: Read> Capped<R> {
    fn refuse(&self, reason: String) -> io::Error {
        RegistryError::invalid(format!("blob {}", self.digest), reason).into_io()
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte beyond the cap so an oversized stream is detected.
        let want = buf
            .len()
            .min(self.left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(self.refuse(if self.declared {
                "decodes to more bytes than declared (possible decompression bomb); rejected".into()
            } else {
                "has no declared size and decodes to more than the per-blob limit \
                 (Config::max_blob_size); rejected"
                    .into()
            }));
        }
        if let Some(budget) = &self.budget {
            let took = budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n as u64)
            });
            if took.is_err() {
                return Err(self.refuse(
                    "the blobs with no declared size in this image decode to more than \
                     the total limit (Config::max_undeclared_total); rejected"
                        .into(),
                ));
            }
            self.charged += n as u64;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Decodes the zstd stream `encoded` into `store`, refusing to produce more
/// than `expected_size` (or `cap` when undeclared) bytes and verifying the
/// raw digest. Returns the raw size written. Nothing is stored on failure.
pub fn decode_into(
    encoded: impl Read,
    digest: &Digest,
    expected_size: Option<u64>,
    cap: u64,
    store: &dyn BlobStore,
) -> Result<u64> {
    decode_into_budget(encoded, digest, expected_size, cap, None, store)
}

/// [`decode_into`], and when `expected_size` is `None` also takes every
/// decoded byte from `budget` (shared by the blobs of one pull), failing
/// with `InvalidData` when it runs out. A failed decode gives back what it
/// took. Nothing is stored on failure (the store's temp file is removed).
pub fn decode_into_budget(
    encoded: impl Read,
    digest: &Digest,
    expected_size: Option<u64>,
    cap: u64,
    budget: Option<Arc<AtomicU64>>,
    store: &dyn BlobStore,
) -> Result<u64> {
    decode_pack_into(encoded, digest, expected_size, cap, budget, None, store)
}

/// [`decode_into_budget`] of a blob that may be a pack named by its chunks
/// (`tiling` given, see [`crate::pack::name_of_chunks`]): such a pack is
/// checked chunk by chunk and stored under its name
/// ([`BlobStore::put_stream_as`]).
pub fn decode_pack_into(
    encoded: impl Read,
    digest: &Digest,
    expected_size: Option<u64>,
    cap: u64,
    budget: Option<Arc<AtomicU64>>,
    tiling: Option<&[(u64, Digest)]>,
    store: &dyn BlobStore,
) -> Result<u64> {
    let dec =
        zstd::stream::read::Decoder::new(encoded).map_err(|e| RegistryError::io("zstd init", e))?;
    let mut capped = Capped {
        inner: dec,
        left: expected_size.unwrap_or(cap),
        digest: *digest,
        declared: expected_size.is_some(),
        budget: if expected_size.is_none() {
            budget
        } else {
            None
        },
        charged: 0,
    };
    let res = decode_capped(&mut capped, digest, expected_size, tiling, store);
    if res.is_err() {
        if let Some(b) = &capped.budget {
            b.fetch_add(capped.charged, Ordering::AcqRel);
        }
    }
    res
}

fn decode_capped<R: Read>(
    capped: &mut Capped<R>,
    digest: &Digest,
    expected_size: Option<u64>,
    tiling: Option<&[(u64, Digest)]>,
    store: &dyn BlobStore,
) -> Result<u64> {
    let put = match tiling {
        Some(t) => store.put_stream_as(digest, &mut crate::pack::PackCheck::new(Some(t)), capped),
        None => store.put_stream(Some(digest), capped).map(|(_, n)| n),
    };
    let n = put.map_err(|e| match e {
        pf_cas::CasError::Io { context, source } => {
            let err = RegistryError::from_io(&context, source);
            match err {
                RegistryError::Io { context, source } if source.kind() != io::ErrorKind::Other => {
                    RegistryError::Io { context, source }
                }
                RegistryError::Io { source, .. } => RegistryError::invalid(
                    format!("blob {digest}"),
                    format!("cannot decode: {source}"),
                ),
                other => other,
            }
        }
        other => other.into(),
    })?;
    if let Some(sz) = expected_size {
        if n != sz {
            return Err(RegistryError::invalid(
                format!("blob {digest}"),
                format!("decoded {n} bytes, manifest declares {sz}"),
            ));
        }
    }
    Ok(n)
}

/// Encodes `raw` as one zstd frame in memory (small blobs, tests).
pub fn zstd_encode_bytes(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::MemoryStore;

    #[test]
    fn at_most_one_compressing_encoder_per_core() {
        let cores = cores();
        let now = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..cores * 3 + 2 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _slot = CompressSlot::take();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        let most = most.into_inner();
        assert!(
            most <= cores,
            "{most} encoders compressed at once on {cores} cores"
        );
        assert!(most >= 1);
    }

    #[test]
    fn framed_packs_decode_whole_and_frame_by_frame() {
        use crate::pack::FrameTable;
        let store = pf_cas::MemoryStore::new();
        let chunks: Vec<Vec<u8>> = (0..20u8)
            .map(|i| {
                let mut v = vec![i; 1000 + usize::from(i) * 300];
                v[0] = i.wrapping_mul(7);
                v
            })
            .collect();
        let raw: Vec<u8> = chunks.concat();
        let d = store.put(&raw).unwrap();
        let plan: Vec<u64> = chunks.iter().map(|c| c.len() as u64).collect();
        let enc = encode_framed(&store, &d, &plan, 3, None, true).unwrap();
        let bytes = enc.read_all().unwrap();
        assert_eq!(enc.encoded_digest().unwrap(), Digest::of(&bytes));
        // Any zstd decoder reads the whole pack (the table is skipped).
        let out = pf_cas::MemoryStore::new();
        decode_into(&bytes[..], &d, Some(raw.len() as u64), u64::MAX, &out).unwrap();
        assert_eq!(out.get(&d).unwrap(), raw);
        // A reader with the head finds and decodes one chunk alone.
        let head_len = FrameTable::head_len(&bytes[..16]).unwrap() as usize;
        let table = FrameTable::parse(&bytes[..head_len], raw.len() as u64).unwrap();
        assert_eq!(table.encoded_size(), bytes.len() as u64);
        assert_eq!(table.frames.len(), chunks.len());
        let off: u64 = plan[..7].iter().sum();
        let (e0, elen, r0) = table.locate(off, plan[7]).unwrap();
        assert_eq!(r0, off);
        let one =
            zstd::bulk::decompress(&bytes[e0 as usize..(e0 + elen) as usize], 1 << 20).unwrap();
        assert_eq!(one, chunks[7]);
        // A plan that does not cover the blob is refused.
        assert!(encode_framed(&store, &d, &plan[1..], 3, None, false).is_err());
    }

    #[test]
    fn roundtrip_small_and_large() {
        let store = MemoryStore::new();
        for size in [0usize, 10, (IN_MEMORY_LIMIT as usize) + 12345] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let d = store.put(&data).unwrap();
            // With and without hashing while encoding: the same digest.
            let lazy = encode(&store, &d, 3, None, false).unwrap();
            let enc = encode(&store, &d, 3, None, true).unwrap();
            assert_eq!(enc.raw_size, size as u64);
            let want = Digest::of(&enc.read_all().unwrap());
            assert_eq!(enc.encoded_digest().unwrap(), want);
            assert_eq!(lazy.encoded_digest().unwrap(), want);
            let out = MemoryStore::new();
            let n =
                decode_into(enc.open().unwrap(), &d, Some(size as u64), u64::MAX, &out).unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(out.get(&d).unwrap(), data);
        }
    }

    #[test]
    fn incompressible_blobs_become_raw_block_frames_any_decoder_reads() {
        let store = MemoryStore::new();
        // Spooled sizes (in-memory blobs always use zstd proper).
        let min = IN_MEMORY_LIMIT as usize;
        for size in [
            min + 1,
            min + 3 * RAW_BLOCK,
            min + 3 * RAW_BLOCK + 17,
            5 << 20,
        ] {
            let data = pf_testsupport::noise(size, size as u64);
            let d = store.put(&data).unwrap();
            let enc = encode(&store, &d, 3, None, true).unwrap();
            let bytes = enc.read_all().unwrap();
            // Raw: header (14 bytes) plus 3 bytes per block, nothing saved.
            let blocks = size.div_ceil(RAW_BLOCK);
            assert_eq!(bytes.len(), 14 + 3 * blocks + size, "size {size}");
            assert_eq!(zstd::stream::decode_all(&bytes[..]).unwrap(), data);
            let out = MemoryStore::new();
            let n = decode_into(&bytes[..], &d, Some(size as u64), u64::MAX, &out).unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(out.get(&d).unwrap(), data);
        }
        // Compressible data of the same size is still compressed.
        let text: Vec<u8> = b"token ".iter().copied().cycle().take(5 << 20).collect();
        let d = store.put(&text).unwrap();
        let enc = encode(&store, &d, 3, None, false).unwrap();
        assert!(enc.encoded_size < (text.len() / 10) as u64);
    }

    #[test]
    fn random_frames_of_a_pack_are_stored_raw_and_the_rest_compressed() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut random = |n: usize| {
            seed += 2;
            pf_testsupport::noise(n, seed)
        };
        // Half-precision-like values: random mantissas, clustered exponents.
        let tensor: Vec<u8> = random(40 << 10)
            .chunks(2)
            .flat_map(|p| [p[0], 0x38 | (p[1] & 0x07)])
            .collect();
        // The bench's messages: text with a random 64-byte run in four.
        let mut messages = random(24 << 10);
        for (i, b) in messages.iter_mut().enumerate() {
            if (i / 64) % 4 != 0 {
                *b = b"token "[i % 6];
            }
        }
        let frames: Vec<(Vec<u8>, bool)> = vec![
            (random(32 << 10), true),
            (b"{\"role\":\"tool\"}\n".repeat(2000), false),
            (random(PROBE_MIN), true),
            (tensor, false),
            (random(PROBE_MIN - 1), false),
            (messages, false),
            (random(200 << 10), true),
        ];
        for (f, raw) in &frames {
            assert_eq!(looks_random(f), *raw, "frame of {} bytes", f.len());
        }
        let raw: Vec<u8> = frames.iter().flat_map(|(f, _)| f.clone()).collect();
        let store = MemoryStore::new();
        let d = store.put(&raw).unwrap();
        let plan: Vec<u64> = frames.iter().map(|(f, _)| f.len() as u64).collect();
        let enc = encode_framed(&store, &d, &plan, 3, None, true).unwrap();
        let bytes = enc.read_all().unwrap();
        let head = crate::pack::FrameTable::head_len(&bytes[..16]).unwrap() as usize;
        let table = crate::pack::FrameTable::parse(&bytes[..head], raw.len() as u64).unwrap();
        for ((f, random), &(r, e)) in frames.iter().zip(&table.frames) {
            assert_eq!(r as usize, f.len());
            let stored_raw = e as usize == f.len() + 14 + 3 * f.len().div_ceil(RAW_BLOCK);
            if *random {
                assert!(stored_raw, "random frame of {} bytes: {e} encoded", f.len());
            } else if f.len() >= PROBE_MIN {
                assert!((e as usize) < f.len() * 9 / 10, "{} bytes: {e}", f.len());
            }
        }
        assert_eq!(zstd::stream::decode_all(&bytes[..]).unwrap(), raw);
        let out = MemoryStore::new();
        decode_into(&bytes[..], &d, Some(raw.len() as u64), u64::MAX, &out).unwrap();
        assert_eq!(out.get(&d).unwrap(), raw);
    }

    #[test]
    fn raw_frame_refuses_a_source_of_the_wrong_length() {
        let data = vec![7u8; 1000];
        assert!(write_raw_frame(Vec::new(), 1001, &mut &data[..]).is_err());
        assert!(write_raw_frame(Vec::new(), 999, &mut &data[..]).is_err());
        let ok = write_raw_frame(Vec::new(), 1000, &mut &data[..]).unwrap();
        assert_eq!(zstd::stream::decode_all(&ok[..]).unwrap(), data);
        let empty = write_raw_frame(Vec::new(), 0, &mut &[][..]).unwrap();
        assert!(zstd::stream::decode_all(&empty[..]).unwrap().is_empty());
    }

    #[test]
    fn bomb_is_capped_and_nothing_stored() {
        let raw = vec![0u8; 50 << 20];
        let d = Digest::of(&raw);
        let enc = zstd::bulk::compress(&raw, 3).unwrap();
        assert!(enc.len() < 10_000);
        let out = MemoryStore::new();
        let err = decode_into(&enc[..], &d, Some(1000), u64::MAX, &out).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidData { .. }), "{err}");
        let err = decode_into(&enc[..], &d, None, 4096, &out).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidData { .. }), "{err}");
        assert!(!out.has(&d).unwrap());
    }

    /// A pack named by its chunks encodes from a local store that checks
    /// it chunk by chunk, decodes back under its name, and a damaged local
    /// copy is refused before upload.
    #[test]
    fn packs_named_by_their_chunks_encode_checked_chunk_by_chunk() {
        let raw = pf_testsupport::noise(300 << 10, 9);
        let plan = [100u64 << 10, 200 << 10];
        let tiling = vec![
            (plan[0], Digest::of(&raw[..100 << 10])),
            (plan[1], Digest::of(&raw[100 << 10..])),
        ];
        let name = crate::pack::name_of_chunks(&tiling);
        let dir = tempfile::tempdir().unwrap();
        let store = pf_cas::DirStore::open(dir.path()).unwrap();
        let mut check = crate::pack::PackCheck::new(Some(&tiling));
        store
            .put_stream_as(&name, &mut check, &mut &raw[..])
            .unwrap();
        let enc = encode_pack(&store, &name, &plan, Some(&tiling), 3, None, false).unwrap();
        let out = MemoryStore::new();
        let n = decode_pack_into(
            enc.open().unwrap(),
            &name,
            Some(raw.len() as u64),
            u64::MAX,
            None,
            Some(&tiling),
            &out,
        )
        .unwrap();
        assert_eq!(n, raw.len() as u64);
        assert_eq!(out.get(&name).unwrap(), raw);
        // Checked by SHA-256 of its bytes instead, it is not its name.
        let err = encode_pack(&store, &name, &plan, None, 3, None, false).unwrap_err();
        assert!(matches!(err, RegistryError::Integrity { .. }), "{err}");
        // One byte flipped in the local copy: refused.
        let mut bad = raw.clone();
        bad[150 << 10] ^= 1;
        std::fs::write(store.blob_path(&name), &bad).unwrap();
        let err = encode_pack(&store, &name, &plan, Some(&tiling), 3, None, false).unwrap_err();
        assert!(matches!(err, RegistryError::Integrity { .. }), "{err}");
    }

    #[test]
    fn wrong_content_is_integrity_error() {
        let enc = zstd::bulk::compress(b"evil", 3).unwrap();
        let d = Digest::of(b"good");
        let out = MemoryStore::new();
        let err = decode_into(&enc[..], &d, Some(4), u64::MAX, &out).unwrap_err();
        assert!(matches!(err, RegistryError::Integrity { .. }), "{err}");
        assert!(!out.has(&d).unwrap());
    }

    #[test]
    fn frame_declaring_a_huge_window_is_refused_without_allocating() {
        // Frame header: magic, descriptor with a window descriptor asking for a 2^41 window.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8];
        frame.extend_from_slice(&[0u8; 16]);
        let out = MemoryStore::new();
        let err = decode_into(&frame[..], &Digest::of(b"x"), None, 1 << 30, &out).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidData { .. }), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics_and_never_stores_mismatches(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let out = MemoryStore::new();
            let d = Digest::of(b"expected");
            let _ = decode_into(&b[..], &d, None, 1 << 20, &out);
            proptest::prop_assert!(out.list().unwrap().is_empty());
        }
    }

    #[test]
    fn garbage_is_invalid_data() {
        let out = MemoryStore::new();
        let err = decode_into(
            &b"not zstd at all"[..],
            &Digest::of(b"x"),
            Some(1),
            u64::MAX,
            &out,
        )
        .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidData { .. }), "{err}");
    }
}
