//! Just enough IPLD to walk an image directory block by block: CIDs
//! (binary, and text in multibase base32), sha2-256 block verification, and
//! the dag-pb / UnixFS nodes Kubo writes for directories and files.
//!
//! Every block is checked against its CID before it is decoded; decoding is
//! bounds-checked and never panics on hostile input.

use pf_digest::Digest;
use pf_registry_core::{RegistryError, Result};

/// Multicodec of a raw block (a file chunk with `raw-leaves`).
pub(super) const RAW: u64 = 0x55;
/// Multicodec of a dag-pb block (UnixFS directories and file roots).
pub(super) const DAG_PB: u64 = 0x70;
const SHA2_256: u64 = 0x12;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A content identifier: codec plus the sha2-256 digest of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Cid {
    /// Multicodec of the block (`RAW`, `DAG_PB`, ...).
    pub codec: u64,
    /// sha2-256 of the block bytes.
    pub hash: [u8; 32],
}

fn bad(what: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::invalid(format!("ipfs {what}"), reason)
}

/// Reads one unsigned LEB128 varint from `buf` at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Cid {
    /// Parses a binary CID (v1, or a v0 bare sha2-256 multihash, which is
    /// read as dag-pb).
    pub fn from_bytes(b: &[u8]) -> Result<Cid> {
        let mut pos = 0;
        let codec = if b.first() == Some(&0x12) && b.get(1) == Some(&0x20) {
            DAG_PB
        } else {
            let version = varint(b, &mut pos).ok_or_else(|| bad("CID", "truncated"))?;
            if version != 1 {
                return Err(bad("CID", format!("version {version} is not supported")));
            }
            varint(b, &mut pos).ok_or_else(|| bad("CID", "truncated codec"))?
        };
        let code = varint(b, &mut pos).ok_or_else(|| bad("CID", "truncated multihash"))?;
        let len = varint(b, &mut pos).ok_or_else(|| bad("CID", "truncated multihash"))?;
        if code != SHA2_256 || len != 32 {
            return Err(bad(
                "CID",
                format!("multihash {code:#x}/{len} is not sha2-256: cannot verify its blocks"),
            ));
        }
        let hash: [u8; 32] = b
            .get(pos..pos + 32)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad("CID", "truncated digest"))?;
        if pos + 32 != b.len() {
            return Err(bad("CID", "trailing bytes"));
        }
        Ok(Cid { codec, hash })
    }

    /// Parses a text CIDv1 in multibase base32 (`b...`, what Kubo prints).
    pub fn parse(s: &str) -> Result<Cid> {
        let Some(rest) = s.strip_prefix('b') else {
            return Err(bad(
                "CID",
                format!("{s:?}: only CIDv1 in base32 (`bafy...`, `bafk...`) is accepted"),
            ));
        };
        let mut out = Vec::with_capacity(rest.len() * 5 / 8);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in rest.bytes() {
            let v = BASE32
                .iter()
                .position(|&a| a == c.to_ascii_lowercase())
                .ok_or_else(|| bad("CID", format!("{s:?}: not base32")))?;
            acc = (acc << 5) | v as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Cid::from_bytes(&out)
    }

    /// The binary CIDv1.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36);
        put_varint(&mut out, 1);
        put_varint(&mut out, self.codec);
        put_varint(&mut out, SHA2_256);
        put_varint(&mut out, 32);
        out.extend_from_slice(&self.hash);
        out
    }

    /// The CID of `block` stored under `codec`.
    pub fn of(codec: u64, block: &[u8]) -> Cid {
        Cid {
            codec,
            hash: *Digest::of(block).as_bytes(),
        }
    }

    /// Checks that `block` is the block this CID names.
    pub fn verify(&self, block: &[u8]) -> Result<()> {
        let actual = Digest::of(block);
        if actual.as_bytes() != &self.hash {
            return Err(RegistryError::Integrity {
                what: format!("ipfs block {self}"),
                expected: Digest::from_bytes(self.hash),
                actual,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Cid {
    /// CIDv1, multibase base32 lower case.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.to_bytes();
        let mut s = String::with_capacity(1 + bytes.len() * 8 / 5 + 1);
        s.push('b');
        let (mut acc, mut bits) = (0u32, 0u32);
        for b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                s.push(BASE32[((acc >> bits) & 31) as usize] as char);
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            s.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
        }
        f.write_str(&s)
    }
}

/// One named link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    /// The linked block.
    pub cid: Cid,
    /// The entry name (empty for file chunks).
    pub name: String,
}

/// What a dag-pb node holds, as far as UnixFS goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// UnixFS type: 1 directory, 2 file, 0 raw, 5 HAMT shard, ...
    pub kind: u64,
    /// Inline file bytes (a file node's own data, before its links).
    pub data: Vec<u8>,
    /// The links, in order.
    pub links: Vec<Link>,
    /// UnixFS `blocksizes`: the file bytes under each link (a file node;
    /// empty when absent).
    pub blocksizes: Vec<u64>,
}

/// UnixFS directory.
pub(super) const DIRECTORY: u64 = 1;

/// A link to write into a directory node: its name, the linked block and
/// `tsize`, the bytes of every block under it (dag-pb `Tsize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirLink {
    /// Entry name.
    pub name: String,
    /// The linked block.
    pub cid: Cid,
    /// Cumulative size of the linked DAG.
    pub tsize: u64,
}

/// A UnixFS directory as the canonical dag-pb block Kubo writes: links
/// sorted by name bytes, each (Hash, Name, Tsize), then `Data` = UnixFS
/// `{Type: Directory}`. The same links give the same block.
pub(super) fn directory(mut links: Vec<DirLink>) -> Vec<u8> {
    links.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut out = Vec::new();
    for l in &links {
        let mut link = Vec::new();
        put_bytes(&mut link, 1, &l.cid.to_bytes());
        put_bytes(&mut link, 2, l.name.as_bytes());
        put_varint(&mut link, 3 << 3);
        put_varint(&mut link, l.tsize);
        put_bytes(&mut out, 2, &link);
    }
    // UnixFS Data: field 1 (Type), varint DIRECTORY.
    put_bytes(&mut out, 1, &[0x08, DIRECTORY as u8]);
    out
}

/// A length-delimited protobuf field.
fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
/// UnixFS HAMT-sharded directory (very large directories).
pub(super) const HAMT_SHARD: u64 = 5;

/// Protobuf fields of `buf`: (field number, varint value or bytes).
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos).ok_or_else(|| bad("dag-pb", "truncated key"))?;
        let field = match key & 7 {
            0 => Field::Int(varint(buf, &mut pos).ok_or_else(|| bad("dag-pb", "truncated"))?),
            2 => {
                let len = varint(buf, &mut pos).ok_or_else(|| bad("dag-pb", "truncated"))?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= buf.len())
                    .ok_or_else(|| bad("dag-pb", "length past the end"))?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            t => return Err(bad("dag-pb", format!("wire type {t}"))),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

enum Field<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

impl Node {
    /// Decodes a dag-pb block (PBNode with UnixFS `Data`).
    pub fn decode(block: &[u8]) -> Result<Node> {
        let mut node = Node {
            kind: 0,
            data: Vec::new(),
            links: Vec::new(),
            blocksizes: Vec::new(),
        };
        for (num, f) in fields(block)? {
            match (num, f) {
                (2, Field::Bytes(link)) => {
                    let (mut cid, mut name) = (None, String::new());
                    for (n, lf) in fields(link)? {
                        match (n, lf) {
                            (1, Field::Bytes(h)) => cid = Some(Cid::from_bytes(h)?),
                            (2, Field::Bytes(s)) => {
                                name = String::from_utf8(s.to_vec())
                                    .map_err(|_| bad("dag-pb", "link name is not UTF-8"))?
                            }
                            _ => {}
                        }
                    }
                    let cid = cid.ok_or_else(|| bad("dag-pb", "link without a hash"))?;
                    node.links.push(Link { cid, name });
                }
                (1, Field::Bytes(unixfs)) => {
                    for (n, uf) in fields(unixfs)? {
                        match (n, uf) {
                            (1, Field::Int(k)) => node.kind = k,
                            (2, Field::Bytes(d)) => node.data = d.to_vec(),
                            (4, Field::Int(n)) => node.blocksizes.push(n),
                            // Packed encoding of the same repeated field.
                            (4, Field::Bytes(packed)) => {
                                let mut pos = 0;
                                while pos < packed.len() {
                                    let n = varint(packed, &mut pos)
                                        .ok_or_else(|| bad("dag-pb", "truncated blocksizes"))?;
                                    node.blocksizes.push(n);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubo's CID of the empty raw block (`ipfs add --raw-leaves --cid-version 1` of nothing).
    const EMPTY_RAW: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

    #[test]
    fn cids_round_trip_and_verify_their_block() {
        let c = Cid::parse(EMPTY_RAW).expect("parse");
        assert_eq!(c.codec, RAW);
        assert_eq!(c.to_string(), EMPTY_RAW);
        assert_eq!(Cid::from_bytes(&c.to_bytes()).expect("bytes"), c);
        c.verify(b"").expect("the empty block");
        let e = c.verify(b"x").unwrap_err();
        assert!(matches!(e, RegistryError::Integrity { .. }), "{e}");
    }

    #[test]
    fn an_encoded_directory_decodes_to_its_links_in_name_order() {
        let file = |b: &[u8]| Cid::of(RAW, b);
        let links = vec![
            DirLink {
                name: "manifest.json".into(),
                cid: file(b"m"),
                tsize: 1,
            },
            DirLink {
                name: "blobs".into(),
                cid: file(b"b"),
                tsize: 300,
            },
        ];
        let block = directory(links.clone());
        let node = Node::decode(&block).expect("decode");
        assert_eq!(node.kind, DIRECTORY);
        let names: Vec<_> = node.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["blobs", "manifest.json"]);
        assert_eq!(node.links[0].cid, file(b"b"));
        // Order of the input does not matter.
        assert_eq!(directory(links.into_iter().rev().collect()), block);
    }

    #[test]
    fn the_empty_directory_is_kubos() {
        // `ipfs files mkdir --cid-version 1` of an empty directory.
        let empty = Cid::of(DAG_PB, &directory(Vec::new()));
        assert_eq!(
            empty.to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
    }

    #[test]
    fn other_bases_versions_and_hashes_are_refused() {
        assert!(Cid::parse("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR").is_err());
        assert!(Cid::parse("bafk!").is_err());
        // identity multihash (0x00): nothing to verify a block against
        assert!(Cid::from_bytes(&[1, 0x55, 0, 3, 1, 2, 3]).is_err());
        assert!(Cid::from_bytes(&[]).is_err());
    }

    #[test]
    fn a_directory_node_decodes_its_named_links() {
        let child = Cid {
            codec: RAW,
            hash: *Digest::of(b"hi").as_bytes(),
        };
        let mut link = vec![0x0a, 36];
        link.extend(child.to_bytes());
        link.extend([0x12, 4]);
        link.extend(b"a.js");
        let mut block = vec![0x12, link.len() as u8];
        block.extend(&link);
        block.extend([0x0a, 2, 0x08, 1]); // Data { Type: Directory }
        let n = Node::decode(&block).expect("decode");
        assert_eq!(n.kind, DIRECTORY);
        assert_eq!(
            n.links,
            vec![Link {
                cid: child,
                name: "a.js".into()
            }]
        );
    }

    #[test]
    fn a_file_node_decodes_its_blocksizes_plain_or_packed() {
        // Data { Type: File, filesize: 300, blocksizes: 256, 44 }
        let block = [
            0x0a, 10, 0x08, 2, 0x18, 0xac, 0x02, 0x20, 0x80, 0x02, 0x20, 44,
        ];
        let n = Node::decode(&block).expect("decode");
        assert_eq!((n.kind, n.blocksizes.clone()), (2, vec![256, 44]));
        // blocksizes packed: field 4, wire type 2, 3 bytes.
        let packed = [0x0a, 7, 0x08, 2, 0x22, 3, 0x80, 0x02, 44];
        assert_eq!(
            Node::decode(&packed).expect("decode").blocksizes,
            vec![256, 44]
        );
        assert!(Node::decode(&[0x0a, 5, 0x08, 2, 0x22, 1, 0x80]).is_err());
    }

    #[test]
    fn truncated_or_garbage_nodes_are_errors_not_panics() {
        for b in [&[0x12, 40, 1][..], &[0xff; 12], &[0x0a], &[0x13]] {
            assert!(Node::decode(b).is_err(), "{b:?}");
        }
    }
}
