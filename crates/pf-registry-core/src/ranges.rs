//! Ranged reads of stored (encoded) blobs: the bounds every transport
//! applies to [`Transport::get_blob_range`], the skip/take fallback over a
//! whole-blob stream, single reads under the retry policy
//! ([`read_range`]) and grouped reads that merge nearby ranges into few
//! requests ([`read_ranges`]).
//!
//! ```
//! use pf_registry_core::ranges::{plan, Wanted};
//! // Two ranges 10 bytes apart merge under a 16-byte gap; the third does not.
//! let groups = plan(&[Wanted::new(0, 100), Wanted::new(110, 5), Wanted::new(1000, 1)], 16).unwrap();
//! assert_eq!(groups.len(), 2);
//! assert_eq!((groups[0].offset, groups[0].len), (0, 115));
//! ```

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use pf_digest::Digest;

use crate::config::Config;
use crate::error::{RegistryError, Result};
use crate::transport::{ByteStream, Transport};

/// Largest range one request may ask for (64 MiB): a larger `len` is
/// refused before any request, and grouped reads never merge past it.
pub const MAX_RANGE: u64 = 64 << 20;

/// Default gap under which [`read_ranges`] merges two ranges (256 KiB):
/// fetching the bytes between them costs less than another request.
pub const DEFAULT_MAX_GAP: u64 = 256 << 10;

/// One wanted range of an encoded blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// First encoded byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl Wanted {
    /// The range `offset..offset + len`.
    pub fn new(offset: u64, len: u64) -> Wanted {
        Wanted { offset, len }
    }
}

/// Checks a requested range before any request: `len` in `1..=MAX_RANGE`
/// and `offset + len` representable. Returns the end (exclusive).
pub fn check(digest: &Digest, offset: u64, len: u64) -> Result<u64> {
    if len == 0 {
        return Err(RegistryError::invalid(
            format!("range of blob {digest}"),
            "an empty range was asked for",
        ));
    }
    if len > MAX_RANGE {
        return Err(RegistryError::invalid(
            format!("range of blob {digest}"),
            format!("{len} bytes asked for; one ranged read is at most {MAX_RANGE} bytes"),
        ));
    }
    offset.checked_add(len).ok_or_else(|| {
        RegistryError::invalid(
            format!("range of blob {digest}"),
            "offset + length overflows",
        )
    })
}

/// The error for a range that runs past the end of a `size`-byte blob
/// (`size` when known).
pub fn past_end(digest: &Digest, offset: u64, len: u64, size: Option<u64>) -> RegistryError {
    let end = offset.saturating_add(len);
    RegistryError::invalid(
        format!("blob {digest} bytes {offset}..{end}"),
        match size {
            Some(s) => format!("the range runs past the blob's end ({s} bytes)"),
            None => "the range runs past the blob's end".to_string(),
        },
    )
}

/// `got` if it holds exactly `len` bytes; fewer is [`past_end`], more is
/// an error too (a server that sent other bytes than asked).
pub fn exact(digest: &Digest, offset: u64, len: u64, got: Bytes) -> Result<Bytes> {
    match (got.len() as u64).cmp(&len) {
        std::cmp::Ordering::Equal => Ok(got),
        std::cmp::Ordering::Less => Err(past_end(digest, offset, len, None)),
        std::cmp::Ordering::Greater => Err(RegistryError::invalid(
            format!("blob {digest} bytes {offset}..{}", offset + len),
            format!("{} bytes came back for a {len}-byte range", got.len()),
        )),
    }
}

/// Collects a stream that should hold exactly the `len` bytes of the
/// range at `offset` (a server's answer to a ranged request): more bytes
/// than `len` are refused as they arrive (memory bounded by `len`), fewer
/// are [`past_end`].
pub async fn collect(
    mut stream: ByteStream,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(len.min(MAX_RANGE) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() as u64 + chunk.len() as u64 > len {
            return Err(RegistryError::invalid(
                format!(
                    "blob {digest} bytes {offset}..{}",
                    offset.saturating_add(len)
                ),
                format!("more than {len} bytes came back for a {len}-byte range"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    exact(digest, offset, len, out.freeze())
}

/// The bytes of the range `offset..offset + len` from a successful HTTP
/// answer to a `Range: bytes=a-b` request: a 206 must start at `offset`
/// (`Content-Range`) and hold exactly `len` bytes ([`collect`]); any other
/// success is taken as the whole blob (a server that ignores `Range`) and
/// skipped through ([`take`]). Memory is bounded by `len` either way;
/// `backend` names the server in body errors.
#[cfg(feature = "http")]
pub async fn from_http(
    resp: reqwest::Response,
    backend: String,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    let partial = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    let start = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(content_range_start);
    let body: ByteStream = Box::pin(resp.bytes_stream().map(move |r| {
        r.map_err(|e| crate::http::send_error(backend.clone(), "reading a blob range", e))
    }));
    if !partial {
        return take(body, digest, offset, len).await;
    }
    if start != Some(offset) {
        return Err(RegistryError::invalid(
            format!(
                "blob {digest} bytes {offset}..{}",
                offset.saturating_add(len)
            ),
            "the server answered with another range",
        ));
    }
    collect(body, digest, offset, len).await
}

/// The `Range` header value for `offset..offset + len` (`len` > 0).
pub fn header_value(offset: u64, len: u64) -> String {
    format!(
        "bytes={offset}-{}",
        offset.saturating_add(len).saturating_sub(1)
    )
}

/// The first byte of `Content-Range: bytes a-b/n`.
pub fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    rest.trim_start().split('-').next()?.trim().parse().ok()
}

/// Skips to `offset` in a stream of the whole encoded blob and takes `len`
/// bytes (memory bounded by `len`), stopping the stream there. A stream
/// that ends first is [`past_end`].
pub async fn take(mut stream: ByteStream, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
    let end = check(digest, offset, len)?;
    let mut pos = 0u64;
    let mut out = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let start = pos;
        pos += chunk.len() as u64;
        if pos <= offset {
            continue;
        }
        let from = offset.saturating_sub(start) as usize;
        let to = (end.min(pos) - start) as usize;
        out.extend_from_slice(&chunk[from..to]);
        if pos >= end {
            return Ok(out.freeze());
        }
    }
    Err(past_end(digest, offset, len, Some(pos)))
}

/// The default [`Transport::get_blob_range`]: [`take`] over
/// [`Transport::get_blob`].
pub async fn via_stream<T: Transport + ?Sized>(
    t: &T,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    check(digest, offset, len)?;
    take(t.get_blob(digest).await?, digest, offset, len).await
}

/// One ranged read under `config.retry` (transient failures retried the
/// way the engine retries [`Transport::get_blob`]).
pub async fn read_range(
    t: &dyn Transport,
    config: &Config,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    check(digest, offset, len)?;
    let what = format!("fetch blob {} bytes {offset}+{len}", digest.short());
    config
        .retry
        .run(&what, &*config.progress, || {
            t.get_blob_range(digest, offset, len)
        })
        .await
}

/// A merged request: one range covering the wanted ranges `members`
/// (indices into the caller's list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// First encoded byte requested.
    pub offset: u64,
    /// Bytes requested.
    pub len: u64,
    /// Indices of the wanted ranges this request serves.
    pub members: Vec<usize>,
}

/// Merges `wanted` (any order, overlaps allowed) into requests: sorted by
/// offset, a range joins the current group when it starts at most
/// `max_gap` bytes after the group's end and the group stays within
/// [`MAX_RANGE`]. Empty ranges belong to no group; a range above
/// [`MAX_RANGE`] or overflowing is refused.
pub fn plan(wanted: &[Wanted], max_gap: u64) -> Result<Vec<Group>> {
    let mut order: Vec<usize> = (0..wanted.len()).filter(|&i| wanted[i].len > 0).collect();
    order.sort_by_key(|&i| (wanted[i].offset, wanted[i].len));
    let mut groups: Vec<Group> = Vec::new();
    for i in order {
        let w = wanted[i];
        let end = w
            .offset
            .checked_add(w.len)
            .filter(|_| w.len <= MAX_RANGE)
            .ok_or_else(|| {
                RegistryError::invalid(
                    format!("wanted range {}+{}", w.offset, w.len),
                    format!("over {MAX_RANGE} bytes or overflowing"),
                )
            })?;
        if let Some(g) = groups.last_mut() {
            let g_end = g.offset + g.len;
            let new_end = g_end.max(end);
            if w.offset <= g_end.saturating_add(max_gap) && new_end - g.offset <= MAX_RANGE {
                g.len = new_end - g.offset;
                g.members.push(i);
                continue;
            }
        }
        groups.push(Group {
            offset: w.offset,
            len: w.len,
            members: vec![i],
        });
    }
    Ok(groups)
}

/// Reads every `wanted` range of the encoded blob `digest`: merges them
/// ([`plan`] with `max_gap`, e.g. [`DEFAULT_MAX_GAP`]), fetches the groups
/// `config.concurrency` at a time, each through [`read_range`] (so under
/// the retry policy), and returns each wanted range's bytes in the order
/// asked (an empty range gives empty bytes).
pub async fn read_ranges(
    t: &dyn Transport,
    config: &Config,
    digest: &Digest,
    wanted: &[Wanted],
    max_gap: u64,
) -> Result<Vec<Bytes>> {
    let groups = plan(wanted, max_gap)?;
    // Owned request tuples: the future stays `Send` for any caller (an
    // `async_trait` method borrowing `groups` would not be).
    let jobs: Vec<(usize, u64, u64)> = groups
        .iter()
        .enumerate()
        .map(|(gi, g)| (gi, g.offset, g.len))
        .collect();
    let fetched: Vec<(usize, Bytes)> = futures::stream::iter(jobs)
        .map(|(gi, offset, len)| async move {
            let b = read_range(t, config, digest, offset, len).await?;
            Ok::<_, RegistryError>((gi, b))
        })
        .buffer_unordered(config.concurrency.max(1))
        .try_collect()
        .await?;
    let mut out = vec![Bytes::new(); wanted.len()];
    for (gi, bytes) in fetched {
        let g = &groups[gi];
        for &i in &g.members {
            let from = (wanted[i].offset - g.offset) as usize;
            out[i] = bytes.slice(from..from + wanted[i].len as usize);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
