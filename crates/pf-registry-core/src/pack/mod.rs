//! Format v2 packs: many content-defined chunks in one blob.
//!
//! A pack's raw bytes are its chunks back to back; the fs tree's chunk
//! table ([`PackedChunk`]) says where each chunk lies. Encoded for storage,
//! every chunk (and every gap between the chunks a tree knows of) is its
//! own zstd frame, followed by a zstd *skippable* frame holding the frame
//! table ([`FrameTable`]): any zstd decoder still decodes the whole pack,
//! and a reader that wants one chunk fetches the table from the blob's tail
//! and then only the frames it needs, by range. The table lives in the
//! stored bytes, not in the fs tree, so a backend may hold a pack encoded
//! differently (a copy re-encodes) and every reader still finds its frames.

use std::collections::HashMap;

pub mod chunks;

use pf_digest::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::manifest::{Chunk, FsTree};

/// Largest chunk a v2 tree may list (also the largest frame a ranged read
/// asks for).
pub const MAX_CHUNK_SIZE: u64 = 16 << 20;
/// Most chunks one fs tree's table may hold.
pub const MAX_TABLE_CHUNKS: usize = 4_000_000;
/// Most frames one pack's frame table may list.
pub const MAX_FRAMES: usize = 1 << 20;

/// One content-defined chunk of a v2 fs tree: `size` bytes at `offset` of
/// the tree's pack number `pack`, whose SHA-256 is `digest`. On the wire a
/// JSON array `[digest, pack, offset, size]` (the table is most of a v2
/// tree's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "(Digest, u32, u64, u64)", into = "(Digest, u32, u64, u64)")]
pub struct PackedChunk {
    /// Digest of the chunk's raw bytes.
    pub digest: Digest,
    /// Index into the tree's `packs`.
    pub pack: u32,
    /// Raw offset in the pack.
    pub offset: u64,
    /// Raw length (at least 1).
    pub size: u64,
}

impl From<(Digest, u32, u64, u64)> for PackedChunk {
    fn from((digest, pack, offset, size): (Digest, u32, u64, u64)) -> Self {
        PackedChunk {
            digest,
            pack,
            offset,
            size,
        }
    }
}

impl From<PackedChunk> for (Digest, u32, u64, u64) {
    fn from(c: PackedChunk) -> Self {
        (c.digest, c.pack, c.offset, c.size)
    }
}

/// The chunks that lie back to back in pack `index` of `tree` from offset
/// 0 to `size`, each as `(size, digest)` in pack order (a range listed
/// twice counts once); `None` if they leave a gap, overlap or run past
/// `size`, or the pack has none.
pub fn tiling(tree: &FsTree, index: u32, size: u64) -> Option<Vec<(u64, Digest)>> {
    let spans = tree
        .chunk_table
        .iter()
        .filter(|c| c.pack == index)
        .map(|c| (c.offset, c.size, c.digest))
        .collect();
    tile(spans, size)
}

fn tile(mut spans: Vec<(u64, u64, Digest)>, size: u64) -> Option<Vec<(u64, Digest)>> {
    spans.sort_unstable_by_key(|&(off, len, _)| (off, len));
    spans.dedup_by_key(|s| (s.0, s.1));
    let mut at = 0u64;
    for &(off, len, _) in &spans {
        if off != at || len == 0 {
            return None;
        }
        at = off.checked_add(len)?;
    }
    (at == size && !spans.is_empty()).then(|| spans.into_iter().map(|(_, n, d)| (n, d)).collect())
}

/// The name a pack gets from its chunks alone: the SHA-256 of a domain
/// tag, then each chunk's digest and size (8 bytes, big-endian) in pack
/// order. Naming a pack so costs no pass over its bytes; a reader checks
/// such a pack chunk by chunk ([`PackCheck`]). pf names every new pack
/// this way, plain or the inner pack of an encrypted image.
pub fn name_of_chunks(chunks: &[(u64, Digest)]) -> Digest {
    let mut h = pf_digest::Hasher::new();
    h.update(b"pf pack named by its chunks v1\n");
    for (n, d) in chunks {
        h.update(d.as_bytes());
        h.update(&n.to_be_bytes());
    }
    h.finish()
}

/// Packs named by their chunks, each with its [`tiling`].
pub type Tilings = HashMap<Digest, Vec<(u64, Digest)>>;

/// The packs of `tree` named by their chunks ([`name_of_chunks`] of their
/// [`tiling`] is their digest), each with that tiling. One pass over the
/// chunk table.
pub fn chunk_named(tree: &FsTree) -> Tilings {
    let mut spans: Vec<Vec<(u64, u64, Digest)>> = vec![Vec::new(); tree.packs.len()];
    for c in &tree.chunk_table {
        if let Some(v) = spans.get_mut(c.pack as usize) {
            v.push((c.offset, c.size, c.digest));
        }
    }
    tree.packs
        .iter()
        .zip(spans)
        .filter_map(|(p, s)| {
            let t = tile(s, p.size)?;
            (name_of_chunks(&t) == p.blob).then_some((p.blob, t))
        })
        .collect()
}

/// Checks a pack's bytes as they stream by against its name: the SHA-256
/// of the bytes, or, for a pack named by its chunks (given its tiling),
/// [`name_of_chunks`] of the chunks the bytes cut into at the tiling's
/// lengths (so every chunk is checked by its own digest).
pub struct PackCheck<'a> {
    tiling: Option<&'a [(u64, Digest)]>,
    h: pf_digest::Hasher,
    at: u64,
    seen: Vec<(u64, Digest)>,
    len: u64,
}

impl std::fmt::Debug for PackCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackCheck")
            .field("by_chunks", &self.tiling.is_some())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Writing feeds the check ([`PackCheck::update`]), so a reader can be
/// checked with [`std::io::copy`].
impl std::io::Write for PackCheck<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> PackCheck<'a> {
    /// A check of a pack named by its content (`None`) or by the chunks of
    /// `tiling`.
    pub fn new(tiling: Option<&'a [(u64, Digest)]>) -> PackCheck<'a> {
        PackCheck {
            tiling,
            h: pf_digest::Hasher::new(),
            at: 0,
            seen: Vec::new(),
            len: 0,
        }
    }

    /// Feeds the next bytes of the pack.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        let Some(t) = self.tiling else {
            self.h.update(bytes);
            return;
        };
        while !bytes.is_empty() {
            let want = t.get(self.seen.len()).map_or(u64::MAX, |c| c.0);
            let k = (want - self.at).min(bytes.len() as u64) as usize;
            self.h.update(&bytes[..k]);
            self.at += k as u64;
            bytes = &bytes[k..];
            if self.at == want {
                let h = std::mem::take(&mut self.h);
                self.seen.push((self.at, h.finish()));
                self.at = 0;
            }
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name the bytes fed give the pack, in its naming scheme: equal to
    /// the pack's digest if and only if they are its bytes.
    pub fn finish(mut self) -> Digest {
        if self.tiling.is_none() {
            return self.h.finish();
        }
        if self.at > 0 {
            let h = std::mem::take(&mut self.h);
            self.seen.push((self.at, h.finish()));
        }
        name_of_chunks(&self.seen)
    }
}

/// Copies blob `digest` from `from` into `to`, checked on the way: chunk
/// by chunk if `tilings` names it (a pack named by its chunks, stored
/// under that name), else by its SHA-256. Returns the bytes copied.
pub fn copy_blob(
    from: &dyn pf_cas::BlobStore,
    to: &dyn pf_cas::BlobStore,
    digest: &Digest,
    tilings: &Tilings,
) -> Result<u64> {
    let mut r = from.open(digest)?;
    Ok(match tilings.get(digest) {
        Some(t) => to.put_stream_as(digest, &mut PackCheck::new(Some(t)), &mut r)?,
        None => to.put_stream(Some(digest), &mut r)?.1,
    })
}

/// A store checks a blob named by its chunks with a [`PackCheck`] of its
/// tiling ([`pf_cas::BlobStore::put_stream_as`]).
impl pf_cas::Namer for PackCheck<'_> {
    fn update(&mut self, bytes: &[u8]) {
        PackCheck::update(self, bytes);
    }
    fn finish(&mut self) -> Digest {
        let fresh = PackCheck::new(self.tiling);
        std::mem::replace(self, fresh).finish()
    }
}

/// Checks a chunk table against its packs: bounded count, every chunk
/// non-empty, at most [`MAX_CHUNK_SIZE`], inside a listed pack, and no two
/// chunks of a pack overlapping (the same range listed twice is allowed: a
/// merged tree can name one chunk twice).
pub fn validate_table(packs: &[Chunk], table: &[PackedChunk]) -> Result<()> {
    let inv = |r: String| Err(RegistryError::invalid("fs tree chunk table", r));
    if table.len() > MAX_TABLE_CHUNKS {
        return inv(format!(
            "{} chunks exceeds the limit {MAX_TABLE_CHUNKS}",
            table.len()
        ));
    }
    let mut ranges: Vec<(u32, u64, u64)> = Vec::with_capacity(table.len());
    for c in table {
        let Some(p) = packs.get(c.pack as usize) else {
            return inv(format!(
                "chunk {} names pack {} (not listed)",
                c.digest, c.pack
            ));
        };
        if c.size == 0 || c.size > MAX_CHUNK_SIZE {
            return inv(format!("chunk {} declares {} bytes", c.digest, c.size));
        }
        match c.offset.checked_add(c.size) {
            Some(end) if end <= p.size => {}
            _ => {
                return inv(format!(
                    "chunk {} lies outside pack {} ({} bytes)",
                    c.digest, p.blob, p.size
                ))
            }
        }
        ranges.push((c.pack, c.offset, c.size));
    }
    ranges.sort_unstable();
    ranges.dedup();
    for w in ranges.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.0 == b.0 && a.1 + a.2 > b.1 {
            return inv(format!(
                "two chunks of pack {} overlap (at {} and {})",
                packs[a.0 as usize].blob, a.1, b.1
            ));
        }
    }
    Ok(())
}

/// The frame plan of every pack a v2 tree uses: the raw lengths of the
/// frames to encode it as, in order, covering the whole pack (a frame per
/// chunk the tree lists, one per gap between them).
pub fn frame_plans(tree: &FsTree) -> HashMap<Digest, Vec<u64>> {
    let mut by_pack: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    for c in &tree.chunk_table {
        by_pack.entry(c.pack).or_default().push((c.offset, c.size));
    }
    let mut out = HashMap::with_capacity(by_pack.len());
    for (i, mut ranges) in by_pack {
        let Some(pack) = tree.packs.get(i as usize) else {
            continue;
        };
        ranges.sort_unstable();
        ranges.dedup();
        let mut plan = Vec::with_capacity(ranges.len() + 1);
        let mut at = 0u64;
        for (off, len) in ranges {
            if off < at {
                // Overlap: refused by validation; never plan it.
                continue;
            }
            if off > at {
                plan.push(off - at);
            }
            plan.push(len);
            at = off + len;
        }
        if pack.size > at {
            plan.push(pack.size - at);
        }
        out.insert(pack.blob, plan);
    }
    out
}

/// Magic of the skippable frame holding a pack's frame table.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Tag opening the table's payload, so a reader knows the frame is one.
const TABLE_TAG: &[u8; 4] = b"PFT2";
/// Bytes of the table's fixed parts: skippable header (8), tag and count (8).
const TABLE_FIXED: u64 = 16;

/// Where each frame of an encoded pack lies: raw and encoded lengths, in
/// order. It is stored first in the pack, so frame `i` starts at the
/// table's length plus the encoded lengths before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameTable {
    /// `(raw_len, encoded_len)` of each frame.
    pub frames: Vec<(u32, u32)>,
}

impl FrameTable {
    /// Bytes the table of a pack of `frames` frames takes.
    pub fn encoded_len(frames: usize) -> u64 {
        TABLE_FIXED + 8 * frames as u64
    }

    /// The skippable zstd frame that starts an encoded pack.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.frames.len();
        let mut out = Vec::with_capacity(Self::encoded_len(n) as usize);
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&((8 * n + 8) as u32).to_le_bytes());
        out.extend_from_slice(TABLE_TAG);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for (r, e) in &self.frames {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        out
    }

    /// How many bytes at the blob's start hold the table, given its first
    /// 16 bytes; `None` if the blob does not start with a frame table (a
    /// pack encoded as one stream, or not a pack).
    pub fn head_len(first16: &[u8]) -> Option<u64> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(first16.get(i..i + 4)?.try_into().ok()?))
        };
        if word(0)? != SKIPPABLE_MAGIC || first16.get(8..12)? != TABLE_TAG {
            return None;
        }
        let n = word(12)? as usize;
        (n <= MAX_FRAMES && word(4)? as usize == 8 * n + 8).then_some(Self::encoded_len(n))
    }

    /// Parses the table from the blob's first [`FrameTable::head_len`]
    /// bytes, checking its raw lengths add up to the pack's raw size.
    pub fn parse(head: &[u8], raw_size: u64) -> Result<FrameTable> {
        let table = Self::read(head)?;
        let raw: u64 = table.frames.iter().map(|f| u64::from(f.0)).sum();
        if raw != raw_size {
            return Err(RegistryError::invalid(
                "pack frame table",
                "frame lengths do not add up to the pack's size",
            ));
        }
        Ok(table)
    }

    /// Parses the table from the blob's first [`FrameTable::head_len`]
    /// bytes when the pack's raw size is not known: the structure is
    /// checked (length, no empty frame), the sum of raw lengths is not.
    pub fn read(head: &[u8]) -> Result<FrameTable> {
        let inv = |r: &str| Err(RegistryError::invalid("pack frame table", r.to_string()));
        match Self::head_len(head) {
            Some(len) if len == head.len() as u64 => {}
            _ => return inv("missing or of the wrong length"),
        }
        let n = (head.len() - TABLE_FIXED as usize) / 8;
        let mut frames = Vec::with_capacity(n);
        for c in head[TABLE_FIXED as usize..].chunks_exact(8) {
            let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let e = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            if r == 0 || e == 0 {
                return inv("an empty frame");
            }
            frames.push((r, e));
        }
        Ok(FrameTable { frames })
    }

    /// Encoded length of the whole blob this table describes.
    pub fn encoded_size(&self) -> u64 {
        self.start() + self.frames.iter().map(|f| u64::from(f.1)).sum::<u64>()
    }

    fn start(&self) -> u64 {
        Self::encoded_len(self.frames.len())
    }

    /// The frames covering raw range `offset..offset + len`: the encoded
    /// range to fetch (offset, length) and the raw offset of its first
    /// frame.
    pub fn locate(&self, offset: u64, len: u64) -> Option<(u64, u64, u64)> {
        let end = offset.checked_add(len)?;
        let (mut raw, mut enc) = (0u64, self.start());
        let mut start: Option<(u64, u64)> = None;
        for &(r, e) in &self.frames {
            let (r, e) = (u64::from(r), u64::from(e));
            if start.is_none() && offset < raw + r {
                start = Some((enc, raw));
            }
            raw += r;
            enc += e;
            if let Some((enc0, raw0)) = start {
                if end <= raw {
                    return Some((enc0, enc - enc0, raw0));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(n: u64) -> Chunk {
        Chunk {
            blob: Digest::of(&n.to_le_bytes()),
            size: n,
        }
    }

    fn chunk(pack: u32, offset: u64, size: u64) -> PackedChunk {
        PackedChunk {
            digest: Digest::of(&[pack as u8, offset as u8, size as u8]),
            pack,
            offset,
            size,
        }
    }

    /// A tree of one pack cut into chunks of `lens`, named by its chunks.
    fn named_tree(bytes: &[u8], lens: &[usize]) -> FsTree {
        let mut t = FsTree::default();
        let mut at = 0usize;
        let mut list = Vec::new();
        for &n in lens {
            let d = Digest::of(&bytes[at..at + n]);
            t.chunk_table.push(PackedChunk {
                digest: d,
                pack: 0,
                offset: at as u64,
                size: n as u64,
            });
            list.push((n as u64, d));
            at += n;
        }
        t.packs.push(Chunk {
            blob: name_of_chunks(&list),
            size: at as u64,
        });
        t
    }

    proptest! {
        /// A pack named by its chunks checks out whatever the read sizes,
        /// and one flipped bit, a byte short or a byte more never does.
        #[test]
        fn packs_named_by_their_chunks_check_chunk_by_chunk(
            lens in proptest::collection::vec(1usize..300, 1..12),
            reads in proptest::collection::vec(1usize..500, 1..40),
            flip in any::<proptest::sample::Index>(),
        ) {
            let total: usize = lens.iter().sum();
            let bytes: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
            let tree = named_tree(&bytes, &lens);
            let named = chunk_named(&tree);
            let name = tree.packs[0].blob;
            let tiling = named.get(&name).map(Vec::as_slice);
            prop_assert!(tiling.is_some());
            let feed = |b: &[u8]| {
                let mut c = PackCheck::new(tiling);
                let mut rest = b;
                for &r in reads.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let k = r.min(rest.len());
                    c.update(&rest[..k]);
                    rest = &rest[k..];
                }
                (c.len(), c.finish())
            };
            prop_assert_eq!(feed(&bytes), (total as u64, name));
            let mut bad = bytes.clone();
            bad[flip.index(total)] ^= 1;
            prop_assert_ne!(feed(&bad).1, name);
            prop_assert_ne!(feed(&bytes[..total - 1]).1, name);
            let mut more = bytes.clone();
            more.push(0);
            prop_assert_ne!(feed(&more).1, name);
            // Named by content, the same bytes are another pack.
            prop_assert_ne!(Digest::of(&bytes), name);
            let mut whole = PackCheck::new(None);
            whole.update(&bytes);
            prop_assert_eq!(whole.finish(), Digest::of(&bytes));
        }
    }

    #[test]
    fn only_an_exact_tiling_under_its_name_is_named_by_chunks() {
        let bytes = vec![5u8; 100];
        let tree = named_tree(&bytes, &[40, 60]);
        assert_eq!(chunk_named(&tree).len(), 1);
        // Named by content: not named by chunks.
        let mut content = tree.clone();
        content.packs[0].blob = Digest::of(&bytes);
        assert!(chunk_named(&content).is_empty());
        // A gap, or a size past the chunks: no tiling.
        let mut gap = tree.clone();
        gap.chunk_table[1].offset = 41;
        assert!(tiling(&gap, 0, 100).is_none());
        assert!(tiling(&tree, 0, 101).is_none());
        assert_eq!(tiling(&tree, 0, 100).map(|t| t.len()), Some(2));
    }

    #[test]
    fn table_limits_are_enforced() {
        let packs = [pack(100)];
        assert!(validate_table(&packs, &[chunk(0, 0, 50), chunk(0, 50, 50)]).is_ok());
        assert!(validate_table(&packs, &[chunk(0, 0, 50), chunk(0, 0, 50)]).is_ok());
        for bad in [
            vec![chunk(1, 0, 10)],                   // unlisted pack
            vec![chunk(0, 95, 10)],                  // past the end
            vec![chunk(0, u64::MAX, 2)],             // overflow
            vec![chunk(0, 0, 0)],                    // empty
            vec![chunk(0, 0, 60), chunk(0, 50, 10)], // overlap
        ] {
            assert!(validate_table(&packs, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plans_cover_the_pack_with_gaps_as_frames() {
        let tree = FsTree {
            packs: vec![pack(100)],
            chunk_table: vec![chunk(0, 60, 30), chunk(0, 10, 20)],
            ..FsTree::default()
        };
        let plans = frame_plans(&tree);
        assert_eq!(plans[&tree.packs[0].blob], vec![10, 20, 30, 30, 10]);
    }

    /// The name of a pack named by its chunks is wire format: plain
    /// images name every new pack so.
    #[test]
    fn name_of_chunks_wire_format() {
        let chunks = [(40, Digest::of(b"first")), (60, Digest::of(b"second"))];
        insta::assert_snapshot!("pack_name_of_chunks", name_of_chunks(&chunks).to_string());
    }

    #[test]
    fn frame_table_wire_format() {
        let t = FrameTable {
            frames: vec![(5, 3), (7, 9)],
        };
        insta::assert_snapshot!(
            "pack_frame_table",
            t.to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
    }

    proptest! {
        #[test]
        fn frame_tables_round_trip_and_locate(
            frames in proptest::collection::vec((1u32..5000, 1u32..5000), 1..50),
            a in 0u64..1_000_000, l in 1u64..100_000,
        ) {
            let t = FrameTable { frames };
            let bytes = t.to_bytes();
            let raw: u64 = t.frames.iter().map(|f| u64::from(f.0)).sum();
            prop_assert_eq!(FrameTable::head_len(&bytes[..16]), Some(bytes.len() as u64));
            let back = FrameTable::parse(&bytes, raw).unwrap();
            prop_assert_eq!(&back, &t);
            prop_assert!(FrameTable::parse(&bytes, raw + 1).is_err());
            let off = a % raw;
            let len = l.min(raw - off);
            let (e0, elen, r0) = t.locate(off, len).unwrap();
            prop_assert!(r0 <= off);
            prop_assert!(e0 >= bytes.len() as u64);
            prop_assert!(elen > 0 && e0 + elen <= t.encoded_size());
            prop_assert!(t.locate(raw, 1).is_none());
        }

        #[test]
        fn frame_table_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256), e in 0u64..1000, r in 0u64..1000) {
            let _ = FrameTable::parse(&b, e.wrapping_add(r));
            let _ = FrameTable::head_len(&b);
        }
    }
}
