//! Pulls through a trustless HTTP gateway (`ipfs.gateway=URL`), with no RPC
//! access: every block is fetched with `GET /ipfs/<cid>?format=raw`, checked
//! against its CID (sha2-256) and only then decoded; paths are resolved by
//! walking the image's UnixFS directories, files are streamed leaf by leaf,
//! and a byte range of a file fetches only the blocks that hold it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::http::{self, Classify, Failure};
use pf_registry_core::{ranges, ByteStream, RegistryError, Result};

use super::dag::{Cid, Link, Node, DAG_PB, DIRECTORY, HAMT_SHARD, RAW};

/// Largest block accepted (Kubo's chunks are 256 KiB; bitswap's limit is 2 MiB).
const MAX_BLOCK: usize = 4 << 20;

/// A trustless gateway; caches directory listings (small, immutable).
#[derive(Debug, Clone)]
pub(super) struct Gateway {
    http: reqwest::Client,
    base: String,
    dirs: Arc<Mutex<HashMap<Cid, Arc<Vec<Link>>>>>,
}

impl Classify for Gateway {
    fn backend(&self) -> String {
        format!("ipfs gateway {}", self.base)
    }

    fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.backend(),
            detail: "the IPFS gateway refused the request".into(),
        }
    }
}

impl Gateway {
    /// A gateway at `base` (no trailing `/`).
    pub fn new(http: reqwest::Client, base: String) -> Gateway {
        Gateway {
            http,
            base,
            dirs: Arc::default(),
        }
    }

    /// One block, verified against `cid`.
    pub async fn block(&self, cid: Cid) -> Result<Bytes> {
        let what = format!("block {cid}");
        let resp = self
            .http
            .get(format!("{}/ipfs/{cid}?format=raw", self.base))
            .header(reqwest::header::ACCEPT, "application/vnd.ipld.raw")
            .send()
            .await
            .map_err(|e| http::send_error(self.backend(), &what, e))?;
        if !resp.status().is_success() {
            return Err(http::classify(&Failure::read(resp).await, &what, self));
        }
        let mut out = Vec::new();
        let mut s = resp.bytes_stream();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| http::send_error(self.backend(), &what, e))?;
            if out.len() + c.len() > MAX_BLOCK {
                return Err(RegistryError::invalid(
                    format!("ipfs {what}"),
                    format!("larger than {MAX_BLOCK} bytes"),
                ));
            }
            out.extend_from_slice(&c);
        }
        cid.verify(&out)?;
        Ok(Bytes::from(out))
    }

    async fn dir(&self, cid: Cid) -> Result<Arc<Vec<Link>>> {
        if let Some(d) = self.dirs.lock().ok().and_then(|m| m.get(&cid).cloned()) {
            return Ok(d);
        }
        if cid.codec != DAG_PB {
            return Err(RegistryError::not_found(format!(
                "{cid} is not a directory"
            )));
        }
        let node = Node::decode(&self.block(cid).await?)?;
        match node.kind {
            DIRECTORY => {}
            HAMT_SHARD => return Err(RegistryError::invalid(
                format!("ipfs {cid}"),
                "HAMT-sharded directories are not read through a gateway (pull over the RPC API)",
            )),
            _ => {
                return Err(RegistryError::not_found(format!(
                    "{cid} is not a directory"
                )))
            }
        }
        let links = Arc::new(node.links);
        if let Ok(mut m) = self.dirs.lock() {
            m.insert(cid, links.clone());
        }
        Ok(links)
    }

    /// The CID at `path` (`a/b/c`) below `root`; `NotFound` if an entry is missing.
    pub async fn resolve(&self, root: Cid, path: &str) -> Result<Cid> {
        let mut cur = root;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let links = self.dir(cur).await?;
            cur = links
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.cid)
                .ok_or_else(|| RegistryError::not_found(format!("{path} under ipfs://{root}")))?;
        }
        Ok(cur)
    }

    /// The bytes of the UnixFS file `cid`, streamed leaf by leaf in order.
    pub fn file(&self, cid: Cid) -> ByteStream {
        let gw = self.clone();
        Box::pin(futures::stream::try_unfold(vec![cid], move |mut stack| {
            let gw = gw.clone();
            async move {
                while let Some(c) = stack.pop() {
                    let block = gw.block(c).await?;
                    match c.codec {
                        RAW => return Ok(Some((block, stack))),
                        DAG_PB => {
                            let node = Node::decode(&block)?;
                            if node.kind == DIRECTORY || node.kind == HAMT_SHARD {
                                return Err(RegistryError::invalid(
                                    format!("ipfs {c}"),
                                    "a directory where a file was expected",
                                ));
                            }
                            stack.extend(node.links.iter().rev().map(|l| l.cid));
                            if !node.data.is_empty() {
                                return Ok(Some((Bytes::from(node.data), stack)));
                            }
                        }
                        other => {
                            return Err(RegistryError::invalid(
                                format!("ipfs {c}"),
                                format!("codec {other:#x} is not a UnixFS file"),
                            ))
                        }
                    }
                }
                Ok(None)
            }
        }))
    }

    /// Bytes `offset..offset + len` (`len` checked by the caller) of the
    /// UnixFS file `cid`, fetching only the blocks that hold them: a link
    /// whose `blocksizes` entry ends before the range is skipped, a node
    /// without sizes has every link read. Every block is checked against
    /// its CID; a subtree that holds other than its declared size is an
    /// error, and so is a range past the file's end.
    pub async fn range(&self, digest: &Digest, cid: Cid, offset: u64, len: u64) -> Result<Bytes> {
        enum Step {
            /// A block, with the file bytes its parent says it holds.
            Block(Cid, Option<u64>),
            /// The cursor a declared subtree must end at.
            End(u64, Cid),
        }
        let end = offset.saturating_add(len);
        let mut out = BytesMut::with_capacity(len as usize);
        // `pos`: file offset of the next byte in traversal order.
        let (mut pos, mut next) = (0u64, offset);
        let mut take = |piece: &[u8], pos: &mut u64, next: &mut u64| {
            let start = *pos;
            *pos += piece.len() as u64;
            if *pos > *next {
                let from = (*next - start) as usize;
                let to = (end.min(*pos) - start) as usize;
                out.extend_from_slice(&piece[from..to]);
                *next = start + to as u64;
            }
        };
        let mut stack = vec![Step::Block(cid, None)];
        while next < end {
            let Some(step) = stack.pop() else {
                return Err(ranges::past_end(digest, offset, len, Some(pos)));
            };
            let (c, size) = match step {
                Step::End(want, c) if want != pos => {
                    return Err(RegistryError::invalid(
                        format!("ipfs {c}"),
                        format!(
                        "its bytes end at file offset {pos}; its parent's blocksizes say {want}"
                    ),
                    ))
                }
                Step::End(..) => continue,
                Step::Block(_, Some(n)) if pos.saturating_add(n) <= next => {
                    pos += n;
                    continue;
                }
                Step::Block(c, size) => (c, size),
            };
            if let Some(n) = size {
                stack.push(Step::End(pos.saturating_add(n), c));
            }
            let block = self.block(c).await?;
            match c.codec {
                RAW => take(&block, &mut pos, &mut next),
                DAG_PB => {
                    let node = Node::decode(&block)?;
                    if node.kind == DIRECTORY || node.kind == HAMT_SHARD {
                        return Err(RegistryError::invalid(
                            format!("ipfs {c}"),
                            "a directory where a file was expected",
                        ));
                    }
                    take(&node.data, &mut pos, &mut next);
                    let sizes =
                        (node.blocksizes.len() == node.links.len()).then_some(&node.blocksizes);
                    for (i, l) in node.links.iter().enumerate().rev() {
                        stack.push(Step::Block(l.cid, sizes.map(|s| s[i])));
                    }
                }
                other => {
                    return Err(RegistryError::invalid(
                        format!("ipfs {c}"),
                        format!("codec {other:#x} is not a UnixFS file"),
                    ))
                }
            }
        }
        Ok(out.freeze())
    }

    /// The whole file at `path` below `root`, at most `limit` bytes; `None`
    /// when there is no such entry.
    pub async fn small(&self, root: Cid, path: &str, limit: usize) -> Result<Option<Bytes>> {
        let cid = match self.resolve(root, path).await {
            Ok(c) => c,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut s = self.file(cid);
        while let Some(c) = s.next().await {
            let c = c?;
            if out.len() + c.len() > limit {
                return Err(RegistryError::invalid(
                    path,
                    format!("larger than {limit} bytes"),
                ));
            }
            out.extend_from_slice(&c);
        }
        Ok(Some(Bytes::from(out)))
    }
}
