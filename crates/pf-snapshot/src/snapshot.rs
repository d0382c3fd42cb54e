//! Turning a directory into a format v2 fs tree whose packs are ranges of
//! its files.
//!
//! Nothing is copied: every file is cut into content-defined chunks
//! (FastCDC, tens of KiB; a small file is one chunk), and each chunk is
//! looked up in the *base* tree (the version this one follows, see
//! [`crate::SnapshotOptions::base`]). A chunk the base holds is referenced
//! where it already lies; the others go, in walk order, into new packs of
//! about [`Chunking::pack_size`] bytes, recorded in a [`SourceStore`] as
//! the file ranges they are made of. So the bytes a push sends follow the
//! bytes changed, and a small file that changes re-sends only itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use pf_digest::Digest;
use pf_registry_core::codec::{EncodeAhead, Prepared};
use pf_registry_core::manifest::{Chunk, FsTree, PackedChunk};
use pf_registry_core::{RegistryError, Result};

use crate::io_ctx;
use crate::packjob::{PackDone, PackSpec};
use crate::pipeline;
use crate::source::{Segment, SourceFile, SourceStore, Stamp};
use crate::statcache::StatCache;
pub(crate) use crate::walk::PendingFile;

/// FastCDC minimum chunk size.
pub const CDC_MIN: u32 = 8 << 10;
/// Average chunk size.
pub const CDC_AVG: u32 = 32 << 10;
/// Maximum chunk size.
pub const CDC_MAX: u32 = 128 << 10;
/// A new pack is closed once it holds this many bytes.
pub const PACK_SIZE: u64 = 16 << 20;

/// How files are cut into chunks and chunks grouped into packs.
/// [`Chunking::default`] is what `pf` uses (the constants of this module);
/// tests use smaller sizes to get many packs from little data. FastCDC
/// bounds apply: `cdc_min` 64..=1 MiB, `cdc_avg` 256..=4 MiB, `cdc_max`
/// 1 KiB..=16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    /// FastCDC minimum chunk size.
    pub cdc_min: u32,
    /// FastCDC average chunk size.
    pub cdc_avg: u32,
    /// FastCDC maximum chunk size (at most 16 MiB).
    pub cdc_max: u32,
    /// A new pack is closed once it holds this many bytes.
    pub pack_size: u64,
}

impl Default for Chunking {
    fn default() -> Chunking {
        Chunking {
            cdc_min: CDC_MIN,
            cdc_avg: CDC_AVG,
            cdc_max: CDC_MAX,
            pack_size: PACK_SIZE,
        }
    }
}

/// How a snapshot names the new packs it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PackNames {
    /// By the SHA-256 of the pack's bytes: the snapshot reads every new
    /// pack back once to hash it. pf before packs were named by their
    /// chunks checks only such packs outside a restore.
    Content,
    /// By [`name_of_chunks`](pf_registry_core::pack::name_of_chunks) of the pack's chunks (the default): no second
    /// SHA-256 pass over new bytes. Every reader (the engine's pull and
    /// push, the local store, `verify`, a restore) checks such a pack
    /// chunk by chunk against the chunk digests its tree lists.
    #[default]
    Chunks,
}

/// A file's content as chunk digests and lengths, in order (what the stat
/// cache keeps).
pub(crate) type Hashed = Vec<Chunk>;

/// Walks `dir` and chunks every file, referencing the chunks `base` (a v2
/// tree of the previous version) already holds and recording the rest as
/// new packs of file ranges in `source`; returns the v2 fs tree. Special
/// files (devices, sockets, fifos) are skipped with a warning.
pub fn snapshot_dir(
    dir: &Path,
    source: &SourceStore,
    cache: &mut StatCache,
    chunking: Chunking,
    base: Option<&FsTree>,
    warn: &mut dyn FnMut(String),
) -> Result<FsTree> {
    let mut tree = FsTree::default();
    let walked = crate::walk::walk(dir, &mut tree, warn)?;
    snapshot_walked(
        tree,
        walked,
        source,
        cache,
        (chunking, PackNames::default()),
        base,
        None,
    )
}

/// [`snapshot_dir`] after the walk: `tree` holds the walk's entries and
/// `walked` its files. With `ahead`, new packs named by content are also
/// encoded for the push as they are read back (see [`crate::packjob`]).
pub(crate) fn snapshot_walked(
    mut tree: FsTree,
    walked: crate::walk::Walked,
    source: &SourceStore,
    cache: &mut StatCache,
    (chunking, names): (Chunking, PackNames),
    base: Option<&FsTree>,
    ahead: Option<&EncodeAhead>,
) -> Result<FsTree> {
    cache.set_chunking(chunking);
    let files = walked.todo;
    // Unchanged files come from the stat cache; the rest are read and
    // chunked by a few threads, taking files in walk order, while this
    // thread places the chunks of the files read so far (in walk order:
    // pack contents do not depend on timing) and hands each new pack, once
    // full, to the same threads to read back. So packs are read back (and
    // written, when encoded ahead) while later files are still chunked.
    let mut cached: Vec<Option<Hashed>> = files
        .iter()
        .map(|f| {
            let h = cache.lookup(f)?;
            cache.hits += 1;
            Some(h)
        })
        .collect();
    let misses: Vec<usize> = (0..files.len()).filter(|&i| cached[i].is_none()).collect();
    let by_content = names == PackNames::Content;
    // New packs are read back to name them by content, or to encode them
    // ahead; a pack named by its chunks for a push that encodes later is
    // not read back at all.
    let read_back = by_content || ahead.is_some();
    let work = pipeline::Work::new(&files, misses, chunking, ahead, by_content);
    let mut plan = Planner::new(base, chunking.pack_size);
    let done = work.run(|rx, work| {
        let mut fresh: Vec<Option<Result<(Hashed, bool)>>> =
            (0..files.len()).map(|_| None).collect();
        // Chunks of files still being read, in order, not yet placed.
        let mut early: Vec<Hashed> = (0..files.len()).map(|_| Vec::new()).collect();
        let mut done: Vec<Option<PackDone>> = Vec::new();
        let (mut at, mut queued, mut finished) = (0, 0, 0);
        // The file at `at` as placed so far: its chunks, their places.
        let mut open = OpenFile::default();
        loop {
            while at < files.len() {
                let f = &files[at];
                // Stamps stand in for a re-hash only on filesystems that
                // keep them exact (checked once per device met by the walk).
                let stampable = walked.stampable.get(&f.st.dev).copied().unwrap_or(false);
                if let Some(h) = cached[at].take() {
                    let stamp = stampable.then(|| f.st.clone());
                    open.place(&mut plan, f, h, stamp.as_ref());
                } else {
                    // A large file's first chunks are placed as they come,
                    // under the walk's stamp (each batch was read while
                    // the file still had it), unless that stamp is racy;
                    // the pack read back checks it again.
                    let ahead_ok = stampable && !cache.is_racy(&f.st);
                    if ahead_ok && !early[at].is_empty() {
                        let h = std::mem::take(&mut early[at]);
                        open.place(&mut plan, f, h, Some(&f.st));
                    }
                    let Some(r) = fresh[at].take() else {
                        queue_closed(&plan, &mut queued, false, read_back, work);
                        break;
                    };
                    // `unchanged`: the file still had the walk's stamp
                    // once read (fstat of the very handle read). Only
                    // cache, and only let the push trust the stat for,
                    // what did not change and is not racy (git's
                    // racy-clean rule).
                    let (rest, unchanged) = r?;
                    let trusted = unchanged && !cache.is_racy(&f.st);
                    let stamp = (trusted && stampable).then(|| f.st.clone());
                    let mut h = std::mem::take(&mut early[at]);
                    h.extend(rest);
                    open.place(&mut plan, f, h, stamp.as_ref());
                    if trusted {
                        cache.insert(f, &open.chunks);
                    }
                }
                open.finish(f, &mut tree);
                at += 1;
                queue_closed(&plan, &mut queued, at == files.len(), read_back, work);
            }
            if at == files.len() {
                if finished == queued {
                    return Ok(done);
                }
                work.close();
            }
            match rx.recv() {
                Ok(pipeline::Msg::File(i, r)) => fresh[i] = Some(r),
                Ok(pipeline::Msg::Part(i, h)) => early[i].extend(h),
                Ok(pipeline::Msg::Pack(k, r)) => {
                    if done.len() <= k {
                        done.resize_with(k + 1, || None);
                    }
                    done[k] = Some(r?);
                    finished += 1;
                }
                Err(_) => {
                    return Err(RegistryError::invalid(
                        "snapshot",
                        "its reading threads ended early",
                    ))
                }
            }
        }
    })?;
    let named: Vec<(Digest, Option<Prepared>)> = if read_back {
        done.into_iter()
            .map(|d| {
                let d = d.ok_or_else(|| {
                    RegistryError::invalid("snapshot", "a new pack was not read back")
                })?;
                Ok((d.digest, d.prepared))
            })
            .collect::<Result<_>>()?
    } else {
        plan.new
            .iter()
            .map(|p| (p.spec.name_by_chunks(), None))
            .collect()
    };
    plan.finish(source, named, &mut tree)?;
    Ok(tree)
}

/// The file being placed: its chunks so far and their chunk-table indices.
#[derive(Default)]
struct OpenFile {
    chunks: Hashed,
    parts: Vec<u32>,
    size: u64,
}

impl OpenFile {
    /// Places `h`, the next chunks of file `f`, under `stamp`.
    fn place(&mut self, plan: &mut Planner<'_>, f: &PendingFile, h: Hashed, stamp: Option<&Stamp>) {
        for c in &h {
            self.parts.push(plan.place(c, &f.file, self.size, stamp));
            self.size += c.size;
        }
        self.chunks.extend(h);
    }

    /// Ends file `f`: its entry in `tree` gets the chunks placed.
    fn finish(&mut self, f: &PendingFile, tree: &mut FsTree) {
        let done = std::mem::take(self);
        let e = &mut tree.entries[f.index];
        e.size = done.size;
        e.parts = done.parts;
    }
}

/// Hands the planner's full new packs not yet queued to the threads (every
/// new pack but the open one; all of them once `last`), if packs are read
/// back at all.
fn queue_closed(
    plan: &Planner<'_>,
    queued: &mut usize,
    last: bool,
    read_back: bool,
    work: &pipeline::Work<'_>,
) {
    let closed = if last {
        plan.new.len()
    } else {
        plan.new.len().saturating_sub(1)
    };
    while read_back && *queued < closed {
        work.queue(*queued, plan.new[*queued].spec.clone());
        *queued += 1;
    }
}

/// A pack this snapshot creates: the file ranges it is made of and the
/// chunks (digest, length) they hold, in order.
struct NewPack {
    /// Its index in the tree's pack list.
    index: u32,
    spec: PackSpec,
    size: u64,
}

/// Where each chunk of the new tree lies: a chunk of the base keeps its
/// place; a new chunk goes into the open new pack, in walk order.
struct Planner<'a> {
    /// Base chunks: digest to (pack, offset).
    base: HashMap<Digest, (&'a Chunk, u64)>,
    /// Chunks placed so far: digest to chunk-table index.
    placed: HashMap<Digest, u32>,
    /// The tree's packs; `None` for a new pack until it is hashed.
    packs: Vec<Option<Chunk>>,
    /// Base packs already listed: digest to pack index.
    pack_at: HashMap<Digest, u32>,
    /// Base packs named by their chunks, with their tilings: listed whole
    /// in the new tree's table, so that the pack is still checked chunk by
    /// chunk (see [`name_of_chunks`](pf_registry_core::pack::name_of_chunks)).
    by_chunks: pf_registry_core::pack::Tilings,
    table: Vec<PackedChunk>,
    new: Vec<NewPack>,
    pack_size: u64,
}

impl<'a> Planner<'a> {
    fn new(base: Option<&'a FsTree>, pack_size: u64) -> Planner<'a> {
        let mut map = HashMap::new();
        if let Some(b) = base {
            for c in &b.chunk_table {
                if let Some(p) = b.packs.get(c.pack as usize) {
                    map.insert(c.digest, (p, c.offset));
                }
            }
        }
        Planner {
            base: map,
            placed: HashMap::new(),
            packs: Vec::new(),
            pack_at: HashMap::new(),
            // Whatever this snapshot's naming, a base pack named by its
            // chunks must stay checkable in the new tree.
            by_chunks: base
                .map(pf_registry_core::pack::chunk_named)
                .unwrap_or_default(),
            table: Vec::new(),
            new: Vec::new(),
            pack_size: pack_size.max(1),
        }
    }

    /// The chunk-table index of chunk `c`, which lies at `off` in `file`.
    fn place(&mut self, c: &Chunk, file: &Arc<SourceFile>, off: u64, stamp: Option<&Stamp>) -> u32 {
        if let Some(&i) = self.placed.get(&c.blob) {
            return i;
        }
        let (pack, offset) = match self.base.get(&c.blob) {
            Some(&(p, at)) => {
                let n = self.packs.len() as u32;
                let i = *self.pack_at.entry(p.blob).or_insert(n);
                if i == n {
                    self.packs.push(Some(p.clone()));
                    if let Some(t) = self.by_chunks.remove(&p.blob) {
                        self.list_whole(i, &t);
                        if let Some(&k) = self.placed.get(&c.blob) {
                            return k;
                        }
                    }
                }
                (i, at)
            }
            None => {
                let full = self.new.last().is_none_or(|p| p.size >= self.pack_size);
                if full {
                    self.new.push(NewPack {
                        index: self.packs.len() as u32,
                        spec: PackSpec::default(),
                        size: 0,
                    });
                    self.packs.push(None);
                }
                let Some(p) = self.new.last_mut() else {
                    unreachable!("a new pack was just opened")
                };
                let at = p.size;
                let stamp = stamp.cloned();
                match p.spec.segments.last_mut() {
                    // The next range of the same file extends the segment.
                    Some(s)
                        if Arc::ptr_eq(&s.file, file)
                            && s.offset + s.len == off
                            && s.stamp == stamp =>
                    {
                        s.len += c.size
                    }
                    _ => p.spec.segments.push(Segment {
                        file: file.clone(),
                        offset: off,
                        len: c.size,
                        stamp,
                    }),
                }
                p.spec.chunks.push((c.blob, c.size));
                p.size += c.size;
                (p.index, at)
            }
        };
        let i = self.table.len() as u32;
        self.table.push(PackedChunk {
            digest: c.blob,
            pack,
            offset,
            size: c.size,
        });
        self.placed.insert(c.blob, i);
        i
    }

    /// Lists every chunk of base pack `pack` (tiled by `tiling`) in the
    /// table, so that the new tree tiles it too; a chunk not placed yet is
    /// placed there.
    fn list_whole(&mut self, pack: u32, tiling: &[(u64, Digest)]) {
        let mut offset = 0;
        for &(size, digest) in tiling {
            let i = self.table.len() as u32;
            self.table.push(PackedChunk {
                digest,
                pack,
                offset,
                size,
            });
            self.placed.entry(digest).or_insert(i);
            offset += size;
        }
    }

    /// Records the new packs, named `named` (in order, with their wire
    /// encodings when made ahead), in `source` and fills the tree's pack
    /// list and chunk table.
    fn finish(
        self,
        source: &SourceStore,
        named: Vec<(Digest, Option<Prepared>)>,
        tree: &mut FsTree,
    ) -> Result<()> {
        if named.len() != self.new.len() {
            return Err(RegistryError::invalid(
                "snapshot",
                "new packs and names disagree",
            ));
        }
        let mut packs = self.packs;
        for (p, (d, prepared)) in self.new.into_iter().zip(named) {
            packs[p.index as usize] = Some(Chunk {
                blob: d,
                size: p.size,
            });
            source.add(d, p.spec.segments);
            if let Some(prep) = prepared {
                source.add_prepared(d, prep);
            }
        }
        // A new pack identical to a listed one (a base pack whose chunks the
        // base did not list) is listed once.
        let mut first: HashMap<Digest, u32> = HashMap::new();
        let mut remap = Vec::with_capacity(packs.len());
        for p in packs.into_iter().flatten() {
            let n = tree.packs.len() as u32;
            let i = *first.entry(p.blob).or_insert(n);
            if i == n {
                tree.packs.push(p);
            }
            remap.push(i);
        }
        tree.chunk_table = self.table;
        for c in &mut tree.chunk_table {
            c.pack = remap[c.pack as usize];
        }
        Ok(())
    }
}

/// Reads and chunks file `f` (opened beneath the root, no symlink
/// followed, and checked to be the inode the walk found); also says
/// whether it still had the walk's stamp once read. A large file's first
/// chunks go to `part` in order, about two packs' worth at a time, each
/// batch only while the file still has the walk's stamp; the rest are
/// returned.
pub(crate) fn chunk_file(
    f: &PendingFile,
    c: &Chunking,
    part: &mut dyn FnMut(Hashed),
) -> Result<(Hashed, bool)> {
    let shown = || f.file.path().display().to_string();
    let r = f
        .file
        .open()
        .map_err(io_ctx(format!("reading {}", shown())))?;
    let unchanged = |r: &File| r.metadata().is_ok_and(|after| Stamp::of(&after) == f.st);
    if f.st.size <= u64::from(c.cdc_min) {
        // One chunk (or none): bounded, a file that grew is read up to
        // its walk size plus one byte and then is a different chunk.
        // Read into a buffer of the file's size (plus the byte that shows
        // growth), not a large zeroed one: small files are most files.
        let mut buf = Vec::with_capacity(f.st.size as usize + 1);
        (&r).take(u64::from(c.cdc_max))
            .read_to_end(&mut buf)
            .map_err(io_ctx(format!("reading {}", shown())))?;
        let (d, n) = (Digest::of(&buf), buf.len() as u64);
        let chunks = if n == 0 {
            vec![]
        } else {
            vec![Chunk { blob: d, size: n }]
        };
        let same = unchanged(&r) && n == f.st.size;
        return Ok((chunks, same));
    }
    // The file is read in windows of a few MiB. Cut points are found on
    // this thread; the chunks of one window are hashed in parallel while
    // the next window is read and cut. A chunk is a slice of its window:
    // no copy per chunk.
    let cutter = Cutter::new(c);
    let shown_err = |e: io::Error| RegistryError::io(format!("reading {}", shown()), e);
    let mut cur = Window::new(cutter.window);
    let mut spare = Window::new(cutter.window);
    cur.refill(&[], &r, &cutter).map_err(shown_err)?;
    let mut chunks = Vec::new();
    while !cur.cuts.is_empty() {
        let (hashed, next) = rayon::join(
            || {
                use rayon::prelude::*;
                cur.cuts
                    .par_iter()
                    .map(|&(at, n)| Chunk {
                        blob: Digest::of(&cur.buf[at..at + n]),
                        size: n as u64,
                    })
                    .collect::<Vec<_>>()
            },
            || spare.refill(cur.tail(), &r, &cutter),
        );
        chunks.extend(hashed);
        next.map_err(shown_err)?;
        std::mem::swap(&mut cur, &mut spare);
        if chunks.iter().map(|c| c.size).sum::<u64>() >= 2 * c.pack_size && unchanged(&r) {
            part(std::mem::take(&mut chunks));
        }
    }
    Ok((chunks, unchanged(&r)))
}

/// FastCDC v2020 (normalization level 1, the default gear table) with
/// [`Chunking`]'s sizes: the cut points of `fastcdc::v2020::StreamCDC`,
/// found in a caller's buffer.
struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    /// Bytes a window holds: at least two maximal chunks.
    window: usize,
}

impl Cutter {
    fn new(c: &Chunking) -> Cutter {
        let (avg, max) = (c.cdc_avg as usize, c.cdc_max as usize);
        Cutter {
            min: c.cdc_min as usize,
            avg,
            max,
            masks: fastcdc::v2020::select_masks(avg, fastcdc::v2020::Normalization::Level1),
            window: (2 << 20).max(2 * max),
        }
    }

    /// The chunks `(start, length)` cut in `buf`, in order. Unless `eof`,
    /// a chunk is only cut where at least a maximal chunk's bytes follow
    /// its start (as `StreamCDC`, which sees `max` bytes at a time), so the
    /// bytes after the last chunk are less than `max` and go to the next
    /// window.
    fn cuts(&self, buf: &[u8], eof: bool) -> Vec<(usize, usize)> {
        let (s, l) = self.masks;
        let mut out = Vec::with_capacity(buf.len() / self.avg + 1);
        let mut at = 0;
        while at < buf.len() && (eof || buf.len() - at >= self.max) {
            let (_, n) = fastcdc::v2020::cut(
                &buf[at..],
                self.min,
                self.avg,
                self.max,
                s,
                l,
                s << 1,
                l << 1,
            );
            if n == 0 {
                break;
            }
            out.push((at, n));
            at += n;
        }
        out
    }
}

/// Bytes of a file being chunked and the chunks cut in them.
struct Window {
    buf: Vec<u8>,
    cuts: Vec<(usize, usize)>,
}

impl Window {
    fn new(size: usize) -> Window {
        Window {
            buf: Vec::with_capacity(size),
            cuts: Vec::new(),
        }
    }

    /// The bytes after the last chunk (carried into the next window).
    fn tail(&self) -> &[u8] {
        let end = self.cuts.last().map_or(0, |&(at, n)| at + n);
        &self.buf[end..]
    }

    /// Fills the window with `carry` and then bytes of `r` up to its size
    /// (or the end of `r`), and cuts it.
    fn refill(&mut self, carry: &[u8], mut r: &File, cutter: &Cutter) -> io::Result<()> {
        let size = cutter.window;
        self.buf.clear();
        self.buf.extend_from_slice(carry);
        let mut eof = false;
        while self.buf.len() < size {
            let n = (&mut r)
                .take((size - self.buf.len()) as u64)
                .read_to_end(&mut self.buf)?;
            if n == 0 {
                eof = true;
                break;
            }
        }
        self.cuts = cutter.cuts(&self.buf, eof);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::{BlobStore, MemoryStore};
    use pf_registry_core::codec::EncodeAhead;
    use std::fs;
    use std::io::{Seek, SeekFrom};

    /// The chunk lengths the windowed cutter finds in `data`, windows of
    /// `window` bytes.
    fn windowed(data: &[u8], c: &Chunking, window: usize) -> Vec<usize> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, data).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut cutter = Cutter::new(c);
        cutter.window = window.max(2 * cutter.max);
        let (mut cur, mut spare) = (Window::new(cutter.window), Window::new(cutter.window));
        cur.refill(&[], &f, &cutter).unwrap();
        let mut out = Vec::new();
        while !cur.cuts.is_empty() {
            out.extend(cur.cuts.iter().map(|&(_, n)| n));
            spare.refill(cur.tail(), &f, &cutter).unwrap();
            std::mem::swap(&mut cur, &mut spare);
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// The windowed cutter cuts where `StreamCDC` cuts, whatever the
        /// window size and wherever its edges fall.
        #[test]
        fn windows_cut_where_streamcdc_cuts(
            len in 0usize..200_000,
            seed in proptest::prelude::any::<u64>(),
            window in 0usize..40_000,
            runs in proptest::prelude::any::<bool>(),
        ) {
            let mut data = pf_testsupport::noise(len, seed);
            if runs {
                // Runs of one byte value give maximal chunks too.
                for (i, b) in data.iter_mut().enumerate() {
                    if (i / 5000) % 3 == 0 {
                        *b = 7;
                    }
                }
            }
            let c = Chunking { cdc_min: 256, cdc_avg: 1024, cdc_max: 4096, pack_size: 1 << 20 };
            let want: Vec<usize> = fastcdc::v2020::StreamCDC::new(&data[..], 256, 1024, 4096)
                .map(|ch| ch.unwrap().length)
                .collect();
            proptest::prop_assert_eq!(windowed(&data, &c, window), want);
        }
    }

    #[test]
    fn default_windows_cut_where_streamcdc_cuts() {
        let data = pf_testsupport::noise((5 << 20) + 12_345, 0x9E37_79B9_7F4A_7C15);
        let c = Chunking::default();
        let want: Vec<usize> = fastcdc::v2020::StreamCDC::new(
            &data[..],
            c.cdc_min as usize,
            c.cdc_avg as usize,
            c.cdc_max as usize,
        )
        .map(|ch| ch.unwrap().length)
        .collect();
        assert!(want.len() > 100);
        assert_eq!(windowed(&data, &c, 0), want);
    }

    fn age(p: &Path) {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    /// The cache as a run `secs` from now sees it.
    fn later(mut c: StatCache, secs: i64) -> StatCache {
        c.started += secs;
        c
    }

    fn source() -> SourceStore {
        SourceStore::new(Arc::new(MemoryStore::new()))
    }

    fn snap(root: &Path, src: &SourceStore, base: Option<&FsTree>) -> FsTree {
        let t = snapshot_dir(
            root,
            src,
            &mut StatCache::default(),
            Chunking::default(),
            base,
            &mut |_| {},
        )
        .unwrap();
        t.validate().unwrap();
        t
    }

    /// Every file's bytes, read back through the tree from `src`.
    fn read_back(t: &FsTree, src: &SourceStore, root: &Path) {
        for e in t.entries.iter().filter(|e| e.size > 0) {
            let mut got = Vec::new();
            for p in t.pieces(e) {
                let pack = src.get(&p.blob).unwrap();
                let bytes = &pack[p.offset as usize..(p.offset + p.len) as usize];
                assert_eq!(Some(Digest::of(bytes)), p.digest);
                got.extend_from_slice(bytes);
            }
            assert_eq!(got, fs::read(root.join(&e.path)).unwrap(), "{}", e.path);
        }
    }

    /// Bytes of the packs `after` lists that `before` did not.
    fn new_pack_bytes(before: &FsTree, after: &FsTree) -> u64 {
        let old: std::collections::HashSet<_> = before.packs.iter().map(|p| p.blob).collect();
        after
            .packs
            .iter()
            .filter(|p| !old.contains(&p.blob))
            .map(|p| p.size)
            .sum()
    }

    #[test]
    fn stat_cache_skips_unchanged_files_and_catches_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        for i in 0..5 {
            let p = root.join(format!("f{i}"));
            fs::write(&p, format!("content {i}")).unwrap();
            age(&p);
        }
        let big = root.join("big");
        fs::write(&big, pf_testsupport::noise(1 << 20, 1)).unwrap();
        age(&big);
        // Modified "now" as the runs see it: racy, so never cached.
        let fresh = root.join("fresh");
        fs::write(&fresh, pf_testsupport::noise(1 << 20, 2)).unwrap();
        fs::File::options()
            .write(true)
            .open(&fresh)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
            .unwrap();
        let cache_file = dir.path().join("cache.json");
        let run = |c: &mut StatCache, src: &SourceStore| {
            snapshot_dir(&root, src, c, Chunking::default(), None, &mut |_| {}).unwrap()
        };
        let mut c = later(StatCache::load(&cache_file), 10);
        let t1 = run(&mut c, &source());
        assert_eq!(c.hits, 0);
        c.save(&cache_file).unwrap();
        let mut c = later(StatCache::load(&cache_file), 1000);
        let t2 = run(&mut c, &source());
        assert_eq!(c.hits, 6, "unchanged files must come from the cache");
        assert_eq!(t1, t2);
        c.save(&cache_file).unwrap();
        // Same size, same mtime, new content: ctime differs, so it is read
        // again; the others come from the cache.
        let p = root.join("f2");
        fs::write(&p, "CONTENT 2").unwrap();
        age(&p);
        let mut c = later(StatCache::load(&cache_file), 1000);
        let src = source();
        let t3 = run(&mut c, &src);
        assert_eq!(c.hits, 6);
        read_back(&t3, &src, &root);
    }

    #[test]
    fn small_files_are_chunks_in_few_packs_read_back_from_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..300 {
            fs::create_dir_all(root.join(format!("d{}", i % 7))).unwrap();
            let body = format!("{i}:").repeat(20 + i * 40);
            fs::write(root.join(format!("d{}/f{i:03}", i % 7)), &body).unwrap();
        }
        fs::write(root.join("big"), pf_testsupport::noise(3 << 20, 9)).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        let src = source();
        let tree = snap(root, &src, None);
        // ~10 MB: one or two packs, none far over PACK_SIZE.
        assert!((1..=2).contains(&tree.packs.len()), "{:?}", tree.packs);
        read_back(&tree, &src, root);
        let big = tree.entries.iter().find(|e| e.path == "big").unwrap();
        assert!(big.parts.len() >= 12, "{} chunks", big.parts.len());
        let empty = tree.entries.iter().find(|e| e.path == "empty").unwrap();
        assert_eq!((empty.size, empty.parts.len()), (0, 0));
        // The same content snapshotted again gives the same tree.
        assert_eq!(tree, snap(root, &source(), None));
    }

    #[test]
    fn with_a_base_only_changed_chunks_go_into_new_packs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..200 {
            fs::write(
                root.join(format!("s{i:03}")),
                pf_testsupport::noise(2000 + i * 10, i as u64),
            )
            .unwrap();
        }
        let mut big = pf_testsupport::noise(8 << 20, 77);
        fs::write(root.join("big"), &big).unwrap();
        // The first version's packs, as the destination keeps them.
        let kept = Arc::new(MemoryStore::new());
        let src1 = SourceStore::new(kept.clone());
        let v1 = snap(root, &src1, None);
        let tilings = pf_registry_core::pack::chunk_named(&v1);
        for p in &v1.packs {
            pf_registry_core::pack::copy_blob(&src1, &*kept, &p.blob, &tilings).unwrap();
        }
        // Unchanged: nothing new.
        let same = snap(root, &source(), Some(&v1));
        assert_eq!(new_pack_bytes(&v1, &same), 0);
        assert_eq!(same.packs.len(), v1.packs.len());
        // Scattered 4 KiB edits in the big file, one small file appended
        // to, one new small file: new packs hold about the changed chunks.
        for k in 0..4 {
            let at = (k * 2 + 1) << 20;
            big[at..at + 4096].copy_from_slice(&pf_testsupport::noise(4096, 1000 + k as u64));
        }
        fs::write(root.join("big"), &big).unwrap();
        let mut s = fs::read(root.join("s010")).unwrap();
        s.extend_from_slice(b"appended");
        fs::write(root.join("s010"), &s).unwrap();
        fs::write(root.join("new"), b"a new small file").unwrap();
        let src = SourceStore::new(kept);
        let v2 = snap(root, &src, Some(&v1));
        read_back(&v2, &src, root);
        let sent = new_pack_bytes(&v1, &v2);
        // Each edit re-sends at most two chunks (CDC_MAX each); in practice
        // about one average chunk.
        assert!(
            sent > 0 && sent <= 4 * 2 * u64::from(CDC_MAX) + 4096,
            "{sent}"
        );
        assert!(sent < 2 << 20, "{sent} bytes for 16 KiB of edits");
        // Only chunks the tree uses are listed, and packs of the base that
        // still hold them are referenced where they are.
        assert!(v2.packs.iter().filter(|p| v1.packs.contains(p)).count() >= 1);
    }

    /// Small chunks and packs, so a file of a few MiB comes in many parts.
    fn small() -> Chunking {
        Chunking {
            cdc_min: 4 << 10,
            cdc_avg: 8 << 10,
            cdc_max: 16 << 10,
            pack_size: 64 << 10,
        }
    }

    #[test]
    fn a_large_file_is_handed_on_in_parts_while_it_keeps_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), pf_testsupport::noise(7 << 20, 41)).unwrap();
        let mut tree = FsTree::default();
        let mut todo = crate::walk::walk(dir.path(), &mut tree, &mut |_| {})
            .unwrap()
            .todo;
        let whole = Chunking {
            pack_size: 1 << 40,
            ..small()
        };
        let (want, same) = chunk_file(&todo[0], &whole, &mut |_| panic!("no parts")).unwrap();
        assert!(same);
        let mut parts: Vec<Hashed> = Vec::new();
        let (rest, same) = chunk_file(&todo[0], &small(), &mut |h| parts.push(h)).unwrap();
        assert!(same);
        // A part per window read (2 MiB), here larger than two packs.
        assert!(parts.len() >= 3, "{} parts", parts.len());
        for p in &parts {
            let n: u64 = p.iter().map(|c| c.size).sum();
            assert!(n >= 2 * small().pack_size, "a part of {n} bytes");
        }
        let got: Hashed = parts.into_iter().flatten().chain(rest).collect();
        assert_eq!(got, want);
        // A file whose stamp is not the walk's is never handed on early.
        todo[0].st.mtime.1 += 1;
        let (rest, same) = chunk_file(&todo[0], &small(), &mut |_| panic!("a part")).unwrap();
        assert!(!same);
        assert_eq!(rest, want);
    }

    #[test]
    fn packs_placed_from_parts_are_the_packs_of_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a"), pf_testsupport::noise(5 << 20, 1)).unwrap();
        fs::write(root.join("b"), pf_testsupport::noise(3000, 2)).unwrap();
        fs::write(root.join("c"), pf_testsupport::noise(6 << 20, 3)).unwrap();
        let spool = tempfile::tempdir().unwrap();
        for names in [PackNames::Chunks, PackNames::Content] {
            let ahead = EncodeAhead::new(3, spool.path().to_path_buf(), false);
            let run = |cache: StatCache| {
                let mut tree = FsTree::default();
                let walked = crate::walk::walk(root, &mut tree, &mut |_| {}).unwrap();
                let src = source();
                let t = snapshot_walked(
                    tree,
                    walked,
                    &src,
                    &mut { cache },
                    (small(), names),
                    None,
                    Some(&ahead),
                )
                .unwrap();
                t.validate().unwrap();
                t
            };
            // Racy stamps: every file placed whole once read. Ten seconds
            // on: not racy, so large files are placed part by part, under
            // their stamps.
            let whole = run(StatCache::default());
            let parts = run(later(StatCache::default(), 10));
            assert!(whole.packs.len() >= 40, "{} packs", whole.packs.len());
            assert_eq!(parts.packs, whole.packs);
            assert_eq!(parts.chunk_table, whole.chunk_table);
            for (p, w) in parts.entries.iter().zip(&whole.entries) {
                assert_eq!((&p.path, p.size, &p.parts), (&w.path, w.size, &w.parts));
            }
        }
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
        fs::write(root.join("big"), vec![1u8; 1 << 20]).unwrap();
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
        for f in &todo {
            assert!(
                chunk_file(f, &Chunking::default(), &mut |_| {}).is_err(),
                "{} was read through a symlink",
                f.file.path().display()
            );
        }
    }
}
