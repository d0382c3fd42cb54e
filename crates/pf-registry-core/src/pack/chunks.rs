//! Reading single chunks of a stored pack by range ([`read`]), the way
//! `pf cat` and a partial restore avoid fetching whole packs.

use std::io::Read;

use bytes::Bytes;
use pf_digest::Digest;

use super::FrameTable;
use crate::config::Config;
use crate::error::{RegistryError, Result};
use crate::manifest::Piece;
use crate::ranges::{read_range, read_ranges, Wanted, DEFAULT_MAX_GAP};
use crate::registry::ChunkRead;
use crate::transport::Transport;

/// Reads `pieces` (raw ranges of pack `pack`, each with its chunk digest)
/// through `t`: the frame table from the pack's head, then the frames
/// covering each piece, nearby ones merged into one request. Every piece is
/// decoded (bounded to the frames' declared raw length) and checked against
/// its digest. A pack that does not start with a frame table is
/// `NotSupported`.
pub async fn read(
    t: &dyn Transport,
    config: &Config,
    pack: &Digest,
    pack_size: u64,
    pieces: &[Piece],
) -> Result<ChunkRead> {
    let mut out = ChunkRead::default();
    let head = read_range(t, config, pack, 0, 16).await?;
    out.requests += 1;
    out.wire_bytes += head.len() as u64;
    let Some(head_len) = FrameTable::head_len(&head) else {
        return Err(RegistryError::not_supported(
            t.location(),
            format!("ranged reads of pack {pack} (stored without a frame table)"),
        ));
    };
    let table_bytes = if head_len as usize <= head.len() {
        head.slice(..head_len as usize)
    } else {
        out.requests += 1;
        out.wire_bytes += head_len;
        read_range(t, config, pack, 0, head_len).await?
    };
    let table = FrameTable::parse(&table_bytes, pack_size)?;
    // Each piece: the encoded frames covering it and their first raw byte.
    let mut spans = Vec::with_capacity(pieces.len());
    for p in pieces {
        let Some(span) = table.locate(p.offset, p.len) else {
            return Err(RegistryError::invalid(
                format!("pack {pack}"),
                format!("no frame holds bytes {}+{}", p.offset, p.len),
            ));
        };
        spans.push(span);
    }
    let wanted: Vec<Wanted> = spans
        .iter()
        .map(|&(off, len, _)| Wanted::new(off, len))
        .collect();
    out.requests += crate::ranges::plan(&wanted, DEFAULT_MAX_GAP)?.len() as u64;
    let fetched = read_ranges(t, config, pack, &wanted, DEFAULT_MAX_GAP).await?;
    for ((p, &(_, elen, raw0)), enc) in pieces.iter().zip(&spans).zip(fetched) {
        out.wire_bytes += elen;
        let skip = p.offset - raw0;
        let raw = decode_bounded(&enc, skip + p.len)
            .map_err(|e| RegistryError::invalid(format!("pack {pack}"), e))?;
        let Some(bytes) = raw.get(skip as usize..(skip + p.len) as usize) else {
            return Err(RegistryError::invalid(
                format!("pack {pack}"),
                format!("frames at raw {raw0} decode to fewer bytes than the chunk needs"),
            ));
        };
        if let Some(d) = &p.digest {
            let actual = Digest::of(bytes);
            if actual != *d {
                return Err(RegistryError::Integrity {
                    what: format!("chunk of pack {pack} at {}", p.offset),
                    expected: *d,
                    actual,
                });
            }
        }
        out.chunks.push(Bytes::copy_from_slice(bytes));
    }
    Ok(out)
}

/// Decodes zstd frames `enc`, producing at most `limit` bytes (more is an
/// error: a frame larger than the table said).
fn decode_bounded(enc: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    let dec = zstd::stream::read::Decoder::new(enc).map_err(|e| e.to_string())?;
    let mut raw = Vec::with_capacity(limit.min(64 << 20) as usize);
    dec.take(limit)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot decode frames: {e}"))?;
    Ok(raw)
}
