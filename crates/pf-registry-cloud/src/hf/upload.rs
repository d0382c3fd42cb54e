//! LFS uploads the way `huggingface_hub` makes them: one batch call for up to
//! [`LFS_BATCH_OBJECTS`] objects, then a single PUT (`basic`) or the Hub's
//! `multipart` transfer (one PUT per `chunk_size` part, then a completion
//! POST) per object the Hub lacks, then `verify`. Storage URLs are
//! pre-signed: the token never goes to them.

use futures::{StreamExt, TryStreamExt};
use pf_digest::Digest;
use pf_registry_core::{EncodedBlob, RegistryError, Result};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Map, Value};

use super::config::LFS_BATCH_OBJECTS;
use super::transport::HfTransport;

/// Uploads running at once inside one batch.
const UPLOAD_CONCURRENCY: usize = 4;

/// An encoded blob waiting for its batch, with its LFS oid.
#[derive(Clone)]
pub(super) struct Pending {
    pub(super) blob: EncodedBlob,
    pub(super) oid: Digest,
}

fn with_headers(mut rb: RequestBuilder, action: &Value) -> RequestBuilder {
    if let Some(h) = action["header"].as_object() {
        for (k, val) in h {
            if let Some(s) = val.as_str() {
                rb = rb.header(k, s);
            }
        }
    }
    rb
}

fn bad(why: impl Into<String>) -> RegistryError {
    RegistryError::invalid("LFS batch response", why.into())
}

/// The part URLs of a multipart action, by part number, checked to be
/// exactly `ceil(size / chunk)` of them.
fn part_urls(header: &Map<String, Value>, size: u64, chunk: u64) -> Result<Vec<String>> {
    let mut parts: Vec<(u64, String)> = header
        .iter()
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
        .collect();
    parts.sort();
    if chunk == 0 || parts.len() as u64 != size.div_ceil(chunk) {
        return Err(bad("multipart part count does not match chunk_size"));
    }
    Ok(parts.into_iter().map(|(_, u)| u).collect())
}

impl HfTransport {
    /// Uploads `batch` (at most [`LFS_BATCH_OBJECTS`]) with ONE batch call.
    pub(super) async fn lfs_batch(&self, batch: &[Pending]) -> Result<()> {
        debug_assert!(batch.len() <= LFS_BATCH_OBJECTS);
        if batch.is_empty() {
            return Ok(());
        }
        let objects: Vec<Value> = batch
            .iter()
            .map(|p| json!({"oid": p.oid.hex(), "size": p.blob.encoded_size}))
            .collect();
        let body = json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": objects,
            "hash_algo": "sha256",
            "ref": {"name": self.revision},
        });
        let url = format!(
            "{}/{}{}.git/info/lfs/objects/batch",
            self.endpoint,
            self.url_prefix(),
            self.repo_id
        );
        let resp = self
            .send(
                self.req(Method::POST, &url)
                    .header("Accept", "application/vnd.git-lfs+json")
                    .header("Content-Type", "application/vnd.git-lfs+json")
                    .body(body.to_string()),
                "LFS batch",
            )
            .await?;
        let v: Value = resp.json().await.map_err(|e| bad(e.to_string()))?;
        let answers = v["objects"].as_array().ok_or_else(|| bad("no objects"))?;
        let mut jobs = Vec::new();
        for p in batch {
            let hex = p.oid.hex();
            let obj = answers
                .iter()
                .find(|o| o["oid"].as_str() == Some(hex.as_str()))
                .ok_or_else(|| bad(format!("no answer for object {hex}")))?;
            if let Some(err) = obj.get("error") {
                return Err(RegistryError::permanent(
                    self.backend(),
                    format!("LFS batch: {err}"),
                ));
            }
            if obj["actions"].get("upload").is_some() {
                jobs.push((p.clone(), obj["actions"].clone()));
            }
        }
        futures::stream::iter(jobs)
            .map(
                |(p, actions): (Pending, Value)| async move { self.upload_one(&p, &actions).await },
            )
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn upload_one(&self, p: &Pending, actions: &Value) -> Result<()> {
        let upload = &actions["upload"];
        let href = upload["href"]
            .as_str()
            .ok_or_else(|| bad("upload action without href"))?;
        let size = p.blob.encoded_size;
        let chunk = upload["header"]["chunk_size"]
            .as_str()
            .map(|c| {
                c.parse::<u64>()
                    .map_err(|_| bad("chunk_size is not a number"))
            })
            .transpose()?;
        match (chunk, upload["header"].as_object()) {
            (Some(chunk), Some(header)) => {
                let urls = part_urls(header, size, chunk)?;
                self.upload_parts(p, href, &urls, chunk).await?;
            }
            _ => {
                let body = match p.blob.as_bytes() {
                    Some(b) => reqwest::Body::from(b.clone()),
                    None => reqwest::Body::wrap_stream(
                        p.blob.stream(1 << 20).map(|r| r.map_err(|e| e.into_io())),
                    ),
                };
                let put = with_headers(self.http.put(href), upload);
                self.send(put.header("Content-Length", size).body(body), "LFS upload")
                    .await?;
            }
        }
        if let Some(vh) = actions["verify"]["href"].as_str() {
            let rb = self
                .req(Method::POST, vh)
                .json(&json!({"oid": p.oid.hex(), "size": size}));
            self.send(with_headers(rb, &actions["verify"]), "LFS verify")
                .await?;
        }
        Ok(())
    }

    /// The `multipart` transfer: each part PUT to its own pre-signed URL
    /// (no token), then the ETags POSTed to `complete`.
    async fn upload_parts(
        &self,
        p: &Pending,
        complete: &str,
        urls: &[String],
        chunk: u64,
    ) -> Result<()> {
        let mut etags = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let start = i as u64 * chunk;
            let len = chunk.min(p.blob.encoded_size - start);
            let bytes = read_range(&p.blob, start, len)?;
            let resp = self
                .send(
                    self.http.put(url).header("Content-Length", len).body(bytes),
                    "LFS part upload",
                )
                .await?;
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .filter(|e| !e.is_empty())
                .ok_or_else(|| bad(format!("part {} answered without an ETag", i + 1)))?;
            etags.push(json!({"partNumber": i + 1, "etag": etag}));
        }
        let body = json!({"oid": p.oid.hex(), "parts": etags});
        self.send(
            self.http
                .post(complete)
                .header("Content-Type", "application/vnd.git-lfs+json")
                .body(body.to_string()),
            "LFS multipart completion",
        )
        .await?;
        Ok(())
    }
}

/// `len` bytes of the encoded blob from `start` (one part, held in memory).
/// A spooled blob is read from `start` by seeking: reading up to it made
/// the parts of one object cost quadratic reads.
fn read_range(blob: &EncodedBlob, start: u64, len: u64) -> Result<bytes::Bytes> {
    use std::io::{Read as _, Seek as _};
    if let Some(b) = blob.as_bytes() {
        return Ok(b.slice(start as usize..(start + len) as usize));
    }
    let io = |e| RegistryError::io("reading a spooled blob part", e);
    let r: Box<dyn std::io::Read + Send> = match blob.spool_path() {
        Some(p) => {
            let mut f = std::fs::File::open(p).map_err(io)?;
            f.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
            Box::new(f)
        }
        None => {
            let mut r = blob.open().map_err(io)?;
            std::io::copy(&mut (&mut r).take(start), &mut std::io::sink()).map_err(io)?;
            r
        }
    };
    let mut buf = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 != len {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "spooled blob is shorter than its size",
        )));
    }
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_urls_sorted_and_counted() {
        let h: Map<String, Value> = serde_json::from_value(json!({
            "chunk_size": "4", "00002": "b", "00001": "a", "00003": "c"
        }))
        .unwrap();
        assert_eq!(part_urls(&h, 10, 4).unwrap(), vec!["a", "b", "c"]);
        assert!(part_urls(&h, 13, 4).is_err());
        assert!(part_urls(&h, 10, 0).is_err());
    }

    #[test]
    fn read_range_of_spooled_and_memory_blobs() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let d = Digest::of(&data);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), &data).unwrap();
        let spooled = EncodedBlob::spooled(d, 0, None, data.len() as u64, tmp.into_temp_path());
        let memory = EncodedBlob::in_memory(d, 0, bytes::Bytes::from(data.clone()));
        // A spool file shorter than the size: an error, not a short part.
        assert!(read_range(&spooled, 9_995, 10).is_err());
        for blob in [spooled, memory] {
            for (start, len) in [(0, 10), (4096, 4096), (9_990, 10), (123, 0)] {
                let got = read_range(&blob, start, len).unwrap();
                assert_eq!(&got[..], &data[start as usize..(start + len) as usize]);
            }
        }
    }
}
