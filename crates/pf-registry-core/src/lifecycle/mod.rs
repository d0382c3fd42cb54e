//! Repository lifecycle for the backends where pf owns the storage: list
//! tags and history ([`tags`], [`log`], [`diff`]), delete ([`rm`]), keep
//! what a policy names ([`retain`]), collect garbage ([`gc`]) and check
//! stored data without restoring it ([`verify`]).
//!
//! Everything here works on the path layout ([`crate::layout`]) through the
//! optional key methods of [`Transport`] (`list_keys`, `read_key`,
//! `write_key`, `delete_key`); a backend that does not offer them answers
//! [`RegistryError::NotSupported`], except [`rm`], which a registry whose
//! storage pf does not own (OCI) implements with its own API
//! ([`Transport::remove_reference`]).
//!
//! # Garbage collection without a lock
//!
//! Pushes keep running while `gc` runs; neither waits for the other to
//! start, and no exclusive lock exists. Two kinds of marker make it safe,
//! both small objects under `locks/` ([`layout::LOCKS`]):
//!
//! * a **push marker** `locks/push-<id>.json`, written (durably) by every
//!   push BEFORE it asks the backend which blobs it already has, naming
//!   every blob of the image's closure; it is removed only after the push
//!   has committed and settled (below). It expires after
//!   [`PUSH_MARKER_TTL`] so a crashed push cannot pin blobs forever.
//! * a **gc record** `locks/gc-<id>.json`, written by `gc` before it reads
//!   anything, renewed before every batch of deletions and removed when it
//!   is done. It expires [`GC_RECORD_TTL`] after its last renewal; `gc`
//!   starts a batch of deletions (at most 256, issued at once; one commit
//!   on the Hub) only within half that time after a renewal (by its own
//!   clock), and a batch must finish within the other half.
//!
//! `gc` then, in this order: (1) writes its record; (2) lists the live push
//! markers; (3) lists and parses EVERY committed manifest (tags, the
//! untagged head, every manifest by digest) and walks each closure; (4)
//! lists the blobs; (5) deletes a blob only if no manifest of (3) references
//! it, no live marker of (2) names it, and it is older than the grace
//! period. A manifest or index blob it cannot read, or one written by a
//! newer format, stops it before any deletion: a blob may be referenced by
//! what it cannot read.
//!
//! A push, right after writing its marker (and before deduplicating),
//! lists the gc records. After its commit it waits until each one it saw is
//! gone or expired and, if it saw any, asks the backend which closure
//! blobs are missing and uploads those again; only then it removes its
//! marker. A commit the backend refuses for a missing blob (a gc it saw
//! deleted one dedup had found) waits the same way before it uploads what
//! is missing and commits again, so the second commit cannot race the
//! same gc.
//!
//! **Why a finished push never names a deleted blob.** Take a push P whose
//! marker was written at `tm` and which listed the gc records at `t1 > tm`,
//! before asking which blobs the backend has; and any gc G whose record
//! was written at `tg`.
//! * G finished (record removed) before `t1`: every deletion of G happened
//!   before P asked which blobs exist, so P uploads whatever G removed.
//! * G's record is listed at `t1`: P waits until G has finished (or
//!   expired: G then issues no deletion after P's wait ends) and only then
//!   checks its closure, uploading again whatever G removed.
//! * `tg > t1`: G lists the markers after `tg > tm`, so it sees P's marker
//!   unless P already removed it; P removes it only after its commit, and
//!   G lists manifests after markers, so G then sees the committed
//!   manifest. Either way every blob of P's closure is protected.
//!
//! A push costs three small requests for this (write the marker, list
//! `locks/`, delete the marker), plus the closure check when a gc was running.
//!
//! A pusher whose credential may write but not list (an S3 policy without
//! `s3:ListBucket`) cannot see running gcs: it checks its blobs after the
//! commit, which covers a gc finished by then but not one still running.
//! Give it list rights, or do not collect garbage while it pushes. A
//! backend that caches what it has stored must drop that cache when
//! `locks/` is listed (the S3 and Hub backends do).
//!
//! The same argument covers the Hub and IPFS. On the Hub every key write
//! and deletion is a commit; a push's commits name their parent and, when
//! the head moved, commit on the new head only after checking there that
//! every blob of the closure is in its tree, and a blob the settle step
//! uploads again is committed at once. On IPFS the node's MFS index is the
//! repository: its entries are the blobs, each push's record is the
//! committed manifest, and an image's pinned root keeps its blocks
//! whatever gc deletes from the index.
//!
//! The argument needs only read-after-write consistency of writes, deletes
//! and listings (a local filesystem; S3 since 2020) and clocks that agree
//! within half of [`GC_RECORD_TTL`]. A push running longer than
//! [`PUSH_MARKER_TTL`] is not protected. The grace period (blobs younger
//! than it are never deleted) adds a margin for writers that predate markers.
//!
//! `retain` and `rm` delete manifests and tag pointers only; the blobs they
//! free go at the next `gc`.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use pf_digest::Digest;

use crate::error::{RegistryError, Result};
use crate::layout;
use crate::manifest::{self, ClosureBlob, Manifest};
use crate::transport::Transport;

mod attempts;
mod gc;
mod history;
mod inventory;
mod markers;
mod retain;
mod verify;

pub use attempts::KeyAttempts;
pub use gc::{gc, GcOptions, GcReport};
pub use history::{diff, log, tags, DiffReport, FileChange, TagInfo, VersionInfo};
pub use inventory::{Inventory, StoredManifest, FORMAT_VERSION};
pub use markers::{PushGuard, GC_RECORD_TTL, PUSH_MARKER_TTL};
pub use retain::{retain, rm, RetainPolicy, RetainReport, RmReport};
pub use verify::{verify, ReadData, VerifyReport};

/// One stored object of the path layout, as listed by
/// [`Transport::list_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key relative to the repository root (see [`crate::layout`]).
    pub key: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Last modification time, when the backend knows it.
    pub modified: Option<SystemTime>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.f]Z`
/// (the form manifests carry); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Parses a duration such as `90s`, `15m`, `1h`, `7d`, `2w` (a bare number
/// is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 15m, 1h, 7d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        u => return Err(format!("unknown duration unit {u:?} (use s, m, h, d or w)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Fetches blob `digest` and decodes it in memory: at most `cap` raw bytes
/// (and `expected` exactly, when given), hashing to `digest`.
pub(crate) async fn read_blob(
    t: &dyn Transport,
    digest: &Digest,
    expected: Option<u64>,
    cap: u64,
) -> Result<Vec<u8>> {
    let encoded: Vec<Bytes> = t.get_blob(digest).await?.try_collect().await?;
    let what = || format!("blob {digest}");
    let reader = std::io::Cursor::new(encoded.concat());
    let dec = zstd::stream::read::Decoder::new(reader)
        .map_err(|e| RegistryError::invalid(what(), format!("zstd: {e}")))?;
    let limit = expected.unwrap_or(cap).min(cap);
    let mut raw = Vec::new();
    dec.take(limit.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| RegistryError::invalid(what(), format!("zstd: {e}")))?;
    if raw.len() as u64 > limit {
        return Err(RegistryError::invalid(
            what(),
            format!("decodes to more than {limit} bytes"),
        ));
    }
    if let Some(n) = expected {
        if raw.len() as u64 != n {
            return Err(RegistryError::invalid(
                what(),
                format!("decodes to {} bytes, declared {n}", raw.len()),
            ));
        }
    }
    let actual = Digest::of(&raw);
    if actual != *digest {
        return Err(RegistryError::Integrity {
            what: what(),
            expected: *digest,
            actual,
        });
    }
    Ok(raw)
}

/// Walks `m`'s closure, fetching its index blobs through `t`; `cache`
/// keeps the children of index blobs already read (many versions share them).
pub(crate) async fn closure_of(
    t: &dyn Transport,
    m: &Manifest,
    cache: &mut HashMap<Digest, Vec<u8>>,
) -> Result<Vec<ClosureBlob>> {
    for l in m
        .layers
        .iter()
        .filter(|l| manifest::is_index_media_type(&l.media_type))
    {
        if let std::collections::hash_map::Entry::Vacant(v) = cache.entry(l.digest) {
            let raw = read_blob(t, &l.digest, Some(l.size), manifest::MAX_INDEX_BYTES).await?;
            v.insert(raw);
        }
    }
    manifest::closure(m, |d| {
        cache
            .get(&d.digest)
            .cloned()
            .ok_or_else(|| RegistryError::not_found(format!("index blob {}", d.digest)))
    })
}

/// The blobs stored in the repository (keys under [`layout::BLOBS`] that
/// [`layout::blob_digest`] accepts), with size and age.
pub(crate) async fn list_blobs(
    t: &dyn Transport,
) -> Result<HashMap<Digest, crate::lifecycle::StoredKey>> {
    Ok(t.list_keys(layout::BLOBS)
        .await?
        .into_iter()
        .filter_map(|k| Some((layout::blob_digest(&k.key)?, k)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_the_manifest_form() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-23T00:00:00Z"), Some(1_795_392_000));
        assert_eq!(parse_rfc3339("2000-03-01T12:30:05.25Z"), Some(951_913_805));
        for bad in ["", "2026-13-01T00:00:00Z", "2026-11-23 00:00:00Z", "x"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
