//! A cheap completeness check for an encoded blob file: walk its zstd frame
//! and block headers (one small read per block, never the block contents)
//! and require that the last frame ends exactly at the end of the file.
//!
//! This is what catches a blob cut short (a power loss between writing the
//! blob and the commit's fsyncs, a copy that stopped half way): such a
//! file is treated as missing so the next push writes it again. It cannot
//! catch bytes flipped inside a block; readers verify every digest after
//! decoding, which does.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use pf_registry_core::pack::FrameTable;

/// zstd frame magic number.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames use magic numbers 0x184D2A50..=0x184D2A5F.
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Largest block a frame may hold (zstd's limit).
const MAX_BLOCK: u64 = 128 << 10;

/// Whether `file` (of `len` bytes) holds one or more complete zstd frames
/// and nothing else. `Ok(false)` for anything truncated, empty or not zstd;
/// `Err` only for read errors other than hitting the end.
pub fn complete(file: &File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    if let Some(whole) = by_table(file, len)? {
        return Ok(whole);
    }
    let mut pos = 0u64;
    while pos < len {
        let Some(next) = frame_end(file, pos, len)? else {
            return Ok(false);
        };
        pos = next;
    }
    Ok(pos == len)
}

/// The check for a format v2 pack, which starts with its frame table
/// ([`FrameTable`]): the table's encoded lengths must add up to `len` and
/// the last frame it names must be a whole zstd frame ending at `len`. A
/// cut anywhere shortens the file below the table's total, so this needs a
/// few reads where walking every block header needs one per block.
/// `None` when the file does not start with a frame table.
fn by_table(file: &File, len: u64) -> io::Result<Option<bool>> {
    let mut first = [0u8; 16];
    if !read_at(file, &mut first, 0, len)? {
        return Ok(None);
    }
    let Some(head_len) = FrameTable::head_len(&first) else {
        return Ok(None);
    };
    let Ok(head_len) = usize::try_from(head_len) else {
        return Ok(Some(false));
    };
    let mut head = vec![0u8; head_len];
    if !read_at(file, &mut head, 0, len)? {
        return Ok(Some(false));
    }
    let Ok(table) = FrameTable::read(&head) else {
        return Ok(Some(false));
    };
    let Some(&(_, last)) = table.frames.last() else {
        return Ok(Some(head_len as u64 == len));
    };
    if table.encoded_size() != len {
        return Ok(Some(false));
    }
    Ok(Some(
        frame_end(file, len - u64::from(last), len)? == Some(len),
    ))
}

/// Reads exactly `buf.len()` bytes at `pos`, or `false` if the file ends first.
fn read_at(file: &File, buf: &mut [u8], pos: u64, len: u64) -> io::Result<bool> {
    if pos.saturating_add(buf.len() as u64) > len {
        return Ok(false);
    }
    match file.read_exact_at(buf, pos) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where the frame starting at `pos` ends, or `None` if it is damaged or
/// runs past `len`.
fn frame_end(file: &File, pos: u64, len: u64) -> io::Result<Option<u64>> {
    let mut magic = [0u8; 4];
    if !read_at(file, &mut magic, pos, len)? {
        return Ok(None);
    }
    let magic = u32::from_le_bytes(magic);
    if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
        let mut size = [0u8; 4];
        if !read_at(file, &mut size, pos + 4, len)? {
            return Ok(None);
        }
        let end = pos + 8 + u64::from(u32::from_le_bytes(size));
        return Ok((end <= len).then_some(end));
    }
    if magic != ZSTD_MAGIC {
        return Ok(None);
    }
    let mut fhd = [0u8; 1];
    if !read_at(file, &mut fhd, pos + 4, len)? {
        return Ok(None);
    }
    let fhd = fhd[0];
    if fhd & 0x08 != 0 {
        return Ok(None); // reserved bit set
    }
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let dict_len = [0u64, 1, 2, 4][usize::from(fhd & 0x03)];
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let window_len = u64::from(!single_segment);
    let mut at = pos + 5 + window_len + dict_len + fcs_len;
    loop {
        let mut h = [0u8; 3];
        if !read_at(file, &mut h, at, len)? {
            return Ok(None);
        }
        let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        let last = h & 1 != 0;
        let size = u64::from(h >> 3);
        let body = match (h >> 1) & 3 {
            0 | 2 if size <= MAX_BLOCK => size, // raw, compressed
            1 => 1,                             // RLE: one byte repeated
            _ => return Ok(None),               // reserved type, oversized
        };
        at += 3 + body;
        if at > len {
            return Ok(None);
        }
        if last {
            break;
        }
    }
    if checksum {
        at += 4;
    }
    Ok((at <= len).then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn check(bytes: &[u8]) -> bool {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(bytes).expect("write");
        complete(&f, bytes.len() as u64).expect("walk")
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'a'
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn whole_frames_pass_and_every_truncation_fails() {
        for raw in [Vec::new(), vec![7u8; 1 << 20], sample(700_000)] {
            let enc = zstd::bulk::compress(&raw, 3).expect("compress");
            assert!(check(&enc));
            // Streamed, with a checksum, and two frames back to back.
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("enc");
            e.include_checksum(true).expect("checksum");
            e.write_all(&raw).expect("write");
            let streamed = e.finish().expect("finish");
            assert!(check(&streamed));
            let two = [enc.clone(), streamed.clone()].concat();
            assert!(check(&two));
            for cut in [0, 1, 4, 5, enc.len() / 2, enc.len() - 1] {
                assert!(!check(&enc[..cut]), "cut at {cut} of {}", enc.len());
            }
            assert!(!check(&streamed[..streamed.len() - 1]));
            assert!(!check(&two[..two.len() - 3]));
            // Trailing garbage is not a frame either.
            assert!(!check(&[enc.clone(), b"junk".to_vec()].concat()));
        }
    }

    /// A format v2 pack: frame table first, then one frame per chunk.
    fn framed(chunks: &[Vec<u8>]) -> Vec<u8> {
        let frames: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| zstd::bulk::compress(c, 3).expect("compress"))
            .collect();
        let table = FrameTable {
            frames: chunks
                .iter()
                .zip(&frames)
                .map(|(c, f)| (c.len() as u32, f.len() as u32))
                .collect(),
        };
        [table.to_bytes(), frames.concat()].concat()
    }

    #[test]
    fn framed_packs_are_checked_by_their_table() {
        let chunks: Vec<Vec<u8>> = (0..12).map(|i| sample(20_000 + i * 997)).collect();
        let pack = framed(&chunks);
        assert!(check(&pack));
        for cut in [1, 16, 40, pack.len() / 2, pack.len() - 9, pack.len() - 1] {
            assert!(!check(&pack[..cut]), "cut at {cut} of {}", pack.len());
        }
        assert!(!check(&[pack.clone(), b"junk".to_vec()].concat()));
        // A table naming a longer last frame than stored is damage.
        let mut lying = pack.clone();
        let last = 16 + 8 * (chunks.len() - 1) + 4;
        let e = u32::from_le_bytes(lying[last..last + 4].try_into().expect("4 bytes"));
        lying[last..last + 4].copy_from_slice(&(e + 1).to_le_bytes());
        assert!(!check(&[lying, vec![0]].concat()));
        // The table's last frame must start with a zstd frame header.
        let mut bad_tail = pack;
        let start = bad_tail.len() - e as usize;
        bad_tail[start..start + 4].copy_from_slice(b"junk");
        assert!(!check(&bad_tail));
    }

    #[test]
    fn garbage_fails() {
        assert!(!check(b""));
        assert!(!check(b"not zstd at all"));
        assert!(!check(&[0u8; 4096]));
    }
}
