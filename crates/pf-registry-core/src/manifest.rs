//! Wire format v1: the image manifest, the index blobs it can reference (fs
//! tree, KV page manifest) and the closure walk over them.
//!
//! Every parser here is strict (unknown fields rejected, digests validated,
//! counts and sizes bounded) and returns [`RegistryError::InvalidData`].

use std::collections::{BTreeMap, HashSet};

use pf_digest::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
pub use crate::pack::PackedChunk;

/// Media type of the image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.processfork.image.v1+json";
/// Media type of an fs tree index blob.
pub const FS_TREE_MEDIA_TYPE: &str = "application/vnd.processfork.fs.tree.v1+json";
/// Media type of a format v2 fs tree: files are lists of content-defined
/// chunks stored in pack blobs ([`FsTree::chunk_table`]). A pack is named
/// by the SHA-256 of its bytes or, as pushes now name new packs, by its
/// chunks ([`crate::pack::name_of_chunks`]); readers tell them apart.
pub const FS_TREE_V2_MEDIA_TYPE: &str = "application/vnd.processfork.fs.tree.v2+json";
/// Prefixes of the index media types (blobs that name other blobs): a layer
/// of such a type this pf does not know was written by a newer pf, and
/// its children cannot be found, so the manifest is refused.
const INDEX_MEDIA_TYPE_PREFIXES: [&str; 2] = [
    "application/vnd.processfork.fs.tree.",
    "application/vnd.processfork.kv.pages.",
];
/// Media type of a KV-cache page manifest index blob.
pub const KV_PAGES_MEDIA_TYPE: &str = "application/vnd.processfork.kv.pages.v1+json";
/// Media type for opaque data blobs.
pub const BLOB_MEDIA_TYPE: &str = "application/vnd.processfork.blob.v1";
/// Layer role of a snapshotted directory's fs tree (the agent's world).
pub const FS_LAYER_ROLE: &str = "world.fs";

/// Largest manifest accepted, in bytes (the common OCI manifest limit).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest index blob (fs tree or KV pages) accepted, in bytes.
pub const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;
/// Most layers a manifest may list.
pub const MAX_LAYERS: usize = 10_000;
/// Most entries an fs tree may list.
pub const MAX_FS_ENTRIES: usize = 2_000_000;
/// Most pages a KV page manifest may list.
pub const MAX_KV_PAGES: usize = 2_000_000;
/// Most chunks one file may be split into.
pub const MAX_CHUNKS_PER_FILE: usize = 1_000_000;
/// Largest size any single descriptor may declare (1 TiB).
pub const MAX_DECLARED_SIZE: u64 = 1 << 40;

/// The producer of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// Agent name.
    pub name: String,
    /// Agent version.
    #[serde(default)]
    pub version: String,
}

/// A reference from a manifest to one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// What the blob is for (`model.base`, `world.fs`, …).
    pub role: String,
    /// Its media type; fs tree and KV pages types are expanded by the closure walk.
    pub media_type: String,
    /// Digest of the raw (decoded) bytes.
    pub digest: Digest,
    /// Size of the raw bytes.
    pub size: u64,
}

/// The image manifest (JSON, snake_case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always 1.
    pub schema_version: u32,
    /// Always [`MANIFEST_MEDIA_TYPE`].
    pub media_type: String,
    /// Who produced it.
    pub agent: AgentInfo,
    /// The top-level blobs.
    pub layers: Vec<Descriptor>,
    /// Digests of parent manifests.
    #[serde(default)]
    pub parents: Vec<Digest>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Free-form string annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A new empty manifest for `agent`, created at `created_at`.
    pub fn new(agent: AgentInfo, created_at: impl Into<String>) -> Manifest {
        Manifest {
            schema_version: 1,
            media_type: MANIFEST_MEDIA_TYPE.to_string(),
            agent,
            layers: Vec::new(),
            parents: Vec::new(),
            created_at: created_at.into(),
            annotations: BTreeMap::new(),
        }
    }

    /// Serialises to the canonical wire bytes (pretty JSON plus newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, digests and maps cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Strictly parses and validates manifest bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::invalid(
                "manifest",
                format!(
                    "{} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::invalid("manifest", bounded(&e.to_string())))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the invariants the parser cannot express.
    pub fn validate(&self) -> Result<()> {
        let inv = |r: String| Err(RegistryError::invalid("manifest", r));
        if self.schema_version != 1 {
            return inv(format!(
                "unsupported schema_version {}",
                self.schema_version
            ));
        }
        if self.media_type != MANIFEST_MEDIA_TYPE {
            return inv(format!(
                "unexpected media_type {:?}",
                bounded(&self.media_type)
            ));
        }
        if self.layers.len() > MAX_LAYERS {
            return inv(format!(
                "{} layers exceeds the limit of {MAX_LAYERS}",
                self.layers.len()
            ));
        }
        if self.parents.len() > 1024 || self.annotations.len() > 4096 {
            return inv("too many parents or annotations".into());
        }
        for l in &self.layers {
            if l.role.is_empty()
                || l.role.len() > 128
                || l.media_type.is_empty()
                || l.media_type.len() > 256
            {
                return inv(format!(
                    "layer {} has an empty or oversized role/media_type",
                    l.digest
                ));
            }
            if l.size > MAX_DECLARED_SIZE {
                return inv(format!(
                    "layer {} declares {} bytes (limit {MAX_DECLARED_SIZE})",
                    l.digest, l.size
                ));
            }
            if !is_index_media_type(&l.media_type)
                && INDEX_MEDIA_TYPE_PREFIXES
                    .iter()
                    .any(|p| l.media_type.starts_with(p))
            {
                return inv(format!(
                    "layer {} is {:?}, an index format this pf does not read \
                     (a newer pf wrote it); upgrade pf",
                    l.digest,
                    bounded(&l.media_type)
                ));
            }
            if is_index_media_type(&l.media_type) && l.size > MAX_INDEX_BYTES {
                return inv(format!(
                    "index layer {} declares {} bytes (limit {MAX_INDEX_BYTES})",
                    l.digest, l.size
                ));
            }
        }
        Ok(())
    }
}

/// True for media types the closure walk expands.
pub fn is_index_media_type(mt: &str) -> bool {
    is_fs_tree_media_type(mt) || mt == KV_PAGES_MEDIA_TYPE
}

/// Whether `mt` is an fs tree of a format version this pf reads (v1 or
/// v2).
pub fn is_fs_tree_media_type(mt: &str) -> bool {
    mt == FS_TREE_MEDIA_TYPE || mt == FS_TREE_V2_MEDIA_TYPE
}

fn bounded(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Kind of an fs tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

/// One piece of a file split into several blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Digest of the chunk's bytes.
    pub blob: Digest,
    /// Its length.
    pub size: u64,
}

/// One entry of an fs tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsEntry {
    /// Relative `/`-separated path; no `.`/`..`/empty components.
    pub path: String,
    /// File, dir or symlink.
    pub kind: EntryKind,
    /// Permission bits (at most 0o7777).
    pub mode: u32,
    /// File size in bytes (0 for dirs and symlinks).
    pub size: u64,
    /// The file's single blob, when not chunked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Digest>,
    /// The file's chunk list, when split; concatenated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// With `blob`: the file is `size` bytes of that blob starting here. The
    /// blob must then be one of the tree's `packs` (small files packed
    /// together). Absent: the file is the whole blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Format v2: the file's content as indices into the tree's
    /// [`FsTree::chunk_table`], concatenated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u32>,
}

/// A byte range of one blob that makes up part of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The blob holding the bytes.
    pub blob: Digest,
    /// Where the range starts in the blob.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Format v2: the digest of exactly these bytes (a chunk), checked by
    /// readers that fetch or restore the range alone.
    pub digest: Option<Digest>,
}

impl FsEntry {
    /// The byte ranges of a format v1 entry, in file order (see
    /// [`FsTree::pieces`] for either format).
    fn v1_pieces(&self) -> Vec<Piece> {
        match (&self.blob, self.chunks.is_empty()) {
            (Some(b), _) => vec![Piece {
                blob: *b,
                offset: self.offset.unwrap_or(0),
                len: self.size,
                digest: None,
            }],
            (None, false) => self
                .chunks
                .iter()
                .map(|c| Piece {
                    blob: c.blob,
                    offset: 0,
                    len: c.size,
                    digest: None,
                })
                .collect(),
            (None, true) => Vec::new(),
        }
    }

    /// Whole blobs this entry references with their sizes (packed ranges
    /// excluded: their blob's size is in [`FsTree::packs`]).
    fn whole_blobs(&self) -> Vec<(Digest, u64)> {
        if self.offset.is_some() {
            return Vec::new();
        }
        self.v1_pieces().iter().map(|p| (p.blob, p.len)).collect()
    }
}

/// The fs tree index blob (`fs.tree.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FsTree {
    /// Entries; parents before children is conventional but not required.
    pub entries: Vec<FsEntry>,
    /// Pack blobs: small files concatenated, referenced by entries with an
    /// `offset`. Each pack's full size is declared here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<Chunk>,
    /// Format v2: every chunk the entries use, each a range of one of
    /// `packs` (see [`crate::pack`]).
    #[serde(default, rename = "chunks", skip_serializing_if = "Vec::is_empty")]
    pub chunk_table: Vec<PackedChunk>,
}

/// Checks a relative path from an fs tree is safe to join under a directory.
pub fn validate_relative_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() || p.len() > 4096 {
        return Err("empty or over-long path".into());
    }
    if p.starts_with('/') || p.contains('\\') || p.contains('\0') {
        return Err(format!(
            "path {:?} is absolute or contains '\\' or NUL",
            bounded(p)
        ));
    }
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "path {:?} has an empty, '.' or '..' component",
                bounded(p)
            ));
        }
    }
    Ok(())
}

impl FsTree {
    /// Canonical wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Strictly parses and validates an fs tree blob.
    pub fn from_bytes(bytes: &[u8]) -> Result<FsTree> {
        let what = "fs tree";
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(RegistryError::invalid(what, "index blob too large"));
        }
        let t: FsTree = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::invalid(what, bounded(&e.to_string())))?;
        t.validate()?;
        Ok(t)
    }

    /// Checks paths are safe and unique and each entry is consistent.
    pub fn validate(&self) -> Result<()> {
        let inv = |r: String| Err(RegistryError::invalid("fs tree", r));
        if self.entries.len() > MAX_FS_ENTRIES {
            return inv(format!(
                "{} entries exceeds the limit {MAX_FS_ENTRIES}",
                self.entries.len()
            ));
        }
        if self.packs.len() > MAX_FS_ENTRIES {
            return inv(format!("{} packs exceeds the limit", self.packs.len()));
        }
        let mut packs = std::collections::HashMap::with_capacity(self.packs.len());
        for p in &self.packs {
            if p.size > MAX_DECLARED_SIZE {
                return inv(format!("pack {} declares {} bytes", p.blob, p.size));
            }
            if packs.insert(p.blob, p.size).is_some() {
                return inv(format!("pack {} listed twice", p.blob));
            }
        }
        crate::pack::validate_table(&self.packs, &self.chunk_table)?;
        let v2 = !self.chunk_table.is_empty();
        let mut seen = HashSet::with_capacity(self.entries.len());
        for e in &self.entries {
            let v2_file = !e.parts.is_empty() || (v2 && (e.blob.is_some() || !e.chunks.is_empty()));
            if v2_file {
                self.validate_parts(e)?;
            } else if let Some(off) = e.offset {
                let fits = match (e.kind, &e.blob, e.chunks.is_empty()) {
                    (EntryKind::File, Some(b), true) => packs
                        .get(b)
                        .is_some_and(|n| off.checked_add(e.size).is_some_and(|end| end <= *n)),
                    _ => false,
                };
                if !fits {
                    return inv(format!(
                        "{:?}: an offset needs a file whose blob is a listed pack holding the range",
                        bounded(&e.path)
                    ));
                }
            }
            if let Err(r) = validate_relative_path(&e.path) {
                return inv(r);
            }
            if !seen.insert(e.path.as_str()) {
                return inv(format!("duplicate path {:?}", bounded(&e.path)));
            }
            if e.mode > 0o7777 {
                return inv(format!(
                    "{:?}: mode {:o} has bits beyond 0o7777",
                    bounded(&e.path),
                    e.mode
                ));
            }
            if v2_file {
                continue;
            }
            match e.kind {
                EntryKind::File => {
                    if e.target.is_some() {
                        return inv(format!("file {:?} has a symlink target", bounded(&e.path)));
                    }
                    if e.size > MAX_DECLARED_SIZE {
                        return inv(format!(
                            "file {:?} declares {} bytes",
                            bounded(&e.path),
                            e.size
                        ));
                    }
                    match (&e.blob, e.chunks.len()) {
                        (Some(_), 0) => {}
                        (None, 0) if e.size == 0 => {}
                        (None, n) if n > 0 => {
                            if n > MAX_CHUNKS_PER_FILE {
                                return inv(format!(
                                    "file {:?} has too many chunks",
                                    bounded(&e.path)
                                ));
                            }
                            let sum = e
                                .chunks
                                .iter()
                                .try_fold(0u64, |acc, c| acc.checked_add(c.size));
                            if sum != Some(e.size) {
                                return inv(format!(
                                    "file {:?}: chunk sizes do not add up to {}",
                                    bounded(&e.path),
                                    e.size
                                ));
                            }
                        }
                        _ => {
                            return inv(format!(
                                "file {:?} must have exactly one of blob or chunks",
                                bounded(&e.path)
                            ))
                        }
                    }
                }
                EntryKind::Dir | EntryKind::Symlink => {
                    if e.blob.is_some() || !e.chunks.is_empty() || e.size != 0 {
                        return inv(format!("{:?}: only files carry content", bounded(&e.path)));
                    }
                    match (e.kind, &e.target) {
                        (EntryKind::Symlink, Some(t))
                            if !t.is_empty() && t.len() <= 4096 && !t.contains('\0') => {}
                        (EntryKind::Symlink, _) => {
                            return inv(format!(
                                "symlink {:?} needs a non-empty target",
                                bounded(&e.path)
                            ))
                        }
                        (_, Some(_)) => {
                            return inv(format!("dir {:?} has a target", bounded(&e.path)))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

impl FsTree {
    /// Whether this tree uses format v2 (a chunk table).
    pub fn is_v2(&self) -> bool {
        !self.chunk_table.is_empty() || self.entries.iter().any(|e| !e.parts.is_empty())
    }

    /// The byte ranges `e` (an entry of this tree) is made of, in file
    /// order; v2 pieces carry their chunk digest.
    pub fn pieces(&self, e: &FsEntry) -> Vec<Piece> {
        if e.parts.is_empty() {
            return e.v1_pieces();
        }
        e.parts
            .iter()
            .filter_map(|&i| self.chunk_table.get(i as usize))
            .filter_map(|c| {
                self.packs.get(c.pack as usize).map(|p| Piece {
                    blob: p.blob,
                    offset: c.offset,
                    len: c.size,
                    digest: Some(c.digest),
                })
            })
            .collect()
    }

    /// Checks a v2 file entry: a file made only of valid chunk-table
    /// indices whose sizes add up to its size.
    fn validate_parts(&self, e: &FsEntry) -> Result<()> {
        let inv = |r: String| Err(RegistryError::invalid("fs tree", r));
        if e.kind != EntryKind::File
            || e.blob.is_some()
            || !e.chunks.is_empty()
            || e.offset.is_some()
            || e.target.is_some()
        {
            return inv(format!(
                "{:?}: a v2 entry's content is only `parts` of a file",
                bounded(&e.path)
            ));
        }
        if e.parts.len() > MAX_CHUNKS_PER_FILE {
            return inv(format!("file {:?} has too many parts", bounded(&e.path)));
        }
        let mut sum = 0u64;
        for &i in &e.parts {
            let Some(c) = self.chunk_table.get(i as usize) else {
                return inv(format!(
                    "file {:?}: part {i} is not in the chunk table",
                    bounded(&e.path)
                ));
            };
            sum = match sum.checked_add(c.size) {
                Some(s) => s,
                None => return inv(format!("file {:?}: parts overflow", bounded(&e.path))),
            };
        }
        if sum != e.size {
            return inv(format!(
                "file {:?}: parts add up to {sum} bytes, not {}",
                bounded(&e.path),
                e.size
            ));
        }
        Ok(())
    }

    /// Appends `other`'s entries, packs and chunks, renumbering its
    /// indices; a pack both list appears once. Paths are not checked here
    /// (call [`FsTree::validate`] after).
    pub fn merge(&mut self, other: FsTree) {
        let mut pack_at: std::collections::HashMap<Digest, u32> = self
            .packs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.blob, i as u32))
            .collect();
        let mut remap = Vec::with_capacity(other.packs.len());
        for p in other.packs {
            let i = *pack_at.entry(p.blob).or_insert_with(|| {
                self.packs.push(p.clone());
                (self.packs.len() - 1) as u32
            });
            remap.push(i);
        }
        let base = self.chunk_table.len() as u32;
        for mut c in other.chunk_table {
            c.pack = remap.get(c.pack as usize).copied().unwrap_or(u32::MAX);
            self.chunk_table.push(c);
        }
        for mut e in other.entries {
            for p in &mut e.parts {
                *p = p.saturating_add(base);
            }
            self.entries.push(e);
        }
    }
}

/// One KV-cache page: a key blob and a value blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvPage {
    /// Transformer layer index.
    #[serde(default)]
    pub layer: u32,
    /// Page index within the layer.
    #[serde(default)]
    pub page: u64,
    /// Key blob.
    pub k: Digest,
    /// Value blob.
    pub v: Digest,
}

/// The KV page manifest index blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KvPages {
    /// Pages.
    pub pages: Vec<KvPage>,
}

impl KvPages {
    /// Canonical wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Strictly parses a KV page manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<KvPages> {
        let what = "kv page manifest";
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(RegistryError::invalid(what, "index blob too large"));
        }
        let p: KvPages = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::invalid(what, bounded(&e.to_string())))?;
        if p.pages.len() > MAX_KV_PAGES {
            return Err(RegistryError::invalid(what, "too many pages"));
        }
        Ok(p)
    }
}

/// One blob of an image's closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClosureBlob {
    /// Raw digest.
    pub digest: Digest,
    /// Expected raw size when the referrer declares it.
    pub size: Option<u64>,
}

/// Children of one index blob, given its media type and raw bytes.
/// Non-index media types have no children.
pub fn index_children(media_type: &str, bytes: &[u8]) -> Result<Vec<ClosureBlob>> {
    index_children_visiting(media_type, bytes, &mut |_| {})
}

/// [`index_children`], also handing a parsed fs tree to `visit` (so a
/// caller that needs the tree does not parse it a second time).
pub fn index_children_visiting(
    media_type: &str,
    bytes: &[u8],
    visit: &mut dyn FnMut(&FsTree),
) -> Result<Vec<ClosureBlob>> {
    match media_type {
        FS_TREE_MEDIA_TYPE | FS_TREE_V2_MEDIA_TYPE => {
            let t = FsTree::from_bytes(bytes)?;
            visit(&t);
            let v1_content = t
                .entries
                .iter()
                .any(|e| e.blob.is_some() || !e.chunks.is_empty());
            if (media_type == FS_TREE_MEDIA_TYPE && t.is_v2())
                || (media_type == FS_TREE_V2_MEDIA_TYPE && v1_content)
            {
                return Err(RegistryError::invalid(
                    "fs tree",
                    format!("its content does not match its media type {media_type}"),
                ));
            }
            Ok(tree_children(&t))
        }
        KV_PAGES_MEDIA_TYPE => {
            let p = KvPages::from_bytes(bytes)?;
            Ok(p.pages
                .iter()
                .flat_map(|pg| [pg.k, pg.v])
                .map(|digest| ClosureBlob { digest, size: None })
                .collect())
        }
        _ => Ok(Vec::new()),
    }
}

/// The blobs fs tree `tree` references (its index children, as
/// [`index_children`] finds them in the tree's bytes).
pub fn tree_children(tree: &FsTree) -> Vec<ClosureBlob> {
    tree.entries
        .iter()
        .flat_map(|e| e.whole_blobs())
        .chain(tree.packs.iter().map(|p| (p.blob, p.size)))
        .map(|(digest, size)| ClosureBlob {
            digest,
            size: Some(size),
        })
        .collect()
}

/// What a layer that made or checked an index blob knows of it, offered
/// to a push through [`BlobStore::prepared`](pf_cas::BlobStore::prepared)
/// under the blob's digest so the push neither reads nor parses the blob.
/// Whoever offers one vouches that it describes exactly that blob.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KnownIndex {
    /// The parsed fs tree itself.
    Tree(std::sync::Arc<FsTree>),
    /// Only its children ([`index_children`] of its bytes).
    Children(Vec<ClosureBlob>),
}

/// Adds `blobs` to `out` unless already present, keeping first-seen order.
/// Conflicting declared sizes for one digest are an error.
pub fn merge_unique(
    out: &mut Vec<ClosureBlob>,
    index: &mut std::collections::HashMap<Digest, usize>,
    blobs: impl IntoIterator<Item = ClosureBlob>,
) -> Result<()> {
    for b in blobs {
        match index.get(&b.digest) {
            Some(&i) => {
                let prev = &mut out[i];
                match (prev.size, b.size) {
                    (Some(a), Some(c)) if a != c => {
                        return Err(RegistryError::invalid(
                            format!("blob {}", b.digest),
                            format!("declared with two different sizes ({a} and {c})"),
                        ))
                    }
                    (None, Some(c)) => prev.size = Some(c),
                    _ => {}
                }
            }
            None => {
                index.insert(b.digest, out.len());
                out.push(b);
            }
        }
    }
    Ok(())
}

/// Walks the full closure of `manifest`, reading index blobs with `read_index`
/// (which receives the descriptor and must return the raw bytes).
/// Returns unique blobs: the layers first, then index children.
pub fn closure(
    manifest: &Manifest,
    read_index: impl FnMut(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Vec<ClosureBlob>> {
    closure_visiting(manifest, read_index, |_| {})
}

/// [`closure`], handing each fs tree it parses to `visit` (the push engine
/// takes the v2 packs' frame plans from there, parsing each tree once).
pub fn closure_visiting(
    manifest: &Manifest,
    read_index: impl FnMut(&Descriptor) -> Result<Vec<u8>>,
    visit: impl FnMut(&FsTree),
) -> Result<Vec<ClosureBlob>> {
    closure_known(manifest, |_| None, read_index, visit)
}

/// [`closure_visiting`], taking an index blob's children from `known`
/// when it answers (that blob is then neither read nor visited).
pub fn closure_known(
    manifest: &Manifest,
    mut known: impl FnMut(&Descriptor) -> Option<Vec<ClosureBlob>>,
    mut read_index: impl FnMut(&Descriptor) -> Result<Vec<u8>>,
    mut visit: impl FnMut(&FsTree),
) -> Result<Vec<ClosureBlob>> {
    let mut out = Vec::new();
    let mut idx = std::collections::HashMap::new();
    merge_unique(
        &mut out,
        &mut idx,
        manifest.layers.iter().map(|l| ClosureBlob {
            digest: l.digest,
            size: Some(l.size),
        }),
    )?;
    for l in manifest
        .layers
        .iter()
        .filter(|l| is_index_media_type(&l.media_type))
    {
        let children = match known(l) {
            Some(c) => c,
            None => index_children_visiting(&l.media_type, &read_index(l)?, &mut visit)?,
        };
        merge_unique(&mut out, &mut idx, children)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prop_oneof;

    pub(crate) fn sample_manifest() -> Manifest {
        let mut m = Manifest::new(
            AgentInfo {
                name: "agent-x".into(),
                version: "1.2.3".into(),
            },
            "2026-11-23T00:00:00Z",
        );
        m.layers.push(Descriptor {
            role: "model.base".into(),
            media_type: BLOB_MEDIA_TYPE.into(),
            digest: Digest::of(b"weights"),
            size: 7,
        });
        m.layers.push(Descriptor {
            role: FS_LAYER_ROLE.into(),
            media_type: FS_TREE_MEDIA_TYPE.into(),
            digest: Digest::of(b"tree"),
            size: 4,
        });
        m.parents.push(Digest::of(b"parent"));
        m.annotations
            .insert("org.example.note".into(), "hello".into());
        m
    }

    fn sample_tree() -> FsTree {
        FsTree {
            entries: vec![
                FsEntry {
                    path: "etc".into(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    size: 0,
                    blob: None,
                    chunks: vec![],
                    target: None,
                    offset: None,
                    parts: vec![],
                },
                FsEntry {
                    path: "etc/config.json".into(),
                    kind: EntryKind::File,
                    mode: 0o644,
                    size: 5,
                    blob: Some(Digest::of(b"hello")),
                    chunks: vec![],
                    target: None,
                    offset: None,
                    parts: vec![],
                },
                FsEntry {
                    path: "big.bin".into(),
                    kind: EntryKind::File,
                    mode: 0o600,
                    size: 6,
                    blob: None,
                    chunks: vec![
                        Chunk {
                            blob: Digest::of(b"abc"),
                            size: 3,
                        },
                        Chunk {
                            blob: Digest::of(b"def"),
                            size: 3,
                        },
                    ],
                    target: None,
                    offset: None,
                    parts: vec![],
                },
                FsEntry {
                    path: "link".into(),
                    kind: EntryKind::Symlink,
                    mode: 0o777,
                    size: 0,
                    blob: None,
                    chunks: vec![],
                    target: Some("etc/config.json".into()),
                    offset: None,
                    parts: vec![],
                },
            ],
            packs: vec![],
            chunk_table: vec![],
        }
    }

    /// Two small files packed into one blob.
    fn packed_tree() -> FsTree {
        let pack = Digest::of(b"helloworld!");
        let file = |path: &str, offset, size| FsEntry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            size,
            blob: Some(pack),
            chunks: vec![],
            target: None,
            offset: Some(offset),
            parts: vec![],
        };
        FsTree {
            entries: vec![file("a.txt", 0, 5), file("b.txt", 5, 6)],
            packs: vec![Chunk {
                blob: pack,
                size: 11,
            }],
            chunk_table: vec![],
        }
    }

    #[test]
    fn packed_tree_wire_format_and_closure() {
        let t = packed_tree();
        let bytes = t.to_bytes();
        insta::assert_snapshot!("fs_tree_packed", String::from_utf8_lossy(&bytes));
        assert_eq!(FsTree::from_bytes(&bytes).unwrap(), t);
        let kids = index_children(FS_TREE_MEDIA_TYPE, &bytes).unwrap();
        // The pack once (entries' ranges merge into it), with its full size.
        let mut out = Vec::new();
        merge_unique(&mut out, &mut std::collections::HashMap::new(), kids).unwrap();
        assert_eq!(
            out,
            vec![ClosureBlob {
                digest: Digest::of(b"helloworld!"),
                size: Some(11)
            }]
        );
        assert_eq!(
            t.pieces(&t.entries[1]),
            vec![Piece {
                blob: Digest::of(b"helloworld!"),
                offset: 5,
                len: 6,
                digest: None,
            }]
        );
    }

    /// A v2 tree: two files sharing a chunk, in one pack.
    fn v2_tree() -> FsTree {
        let pack = Digest::of(b"helloworld!");
        let file = |path: &str, size, parts: Vec<u32>| FsEntry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            size,
            blob: None,
            chunks: vec![],
            target: None,
            offset: None,
            parts,
        };
        FsTree {
            entries: vec![file("a.txt", 5, vec![0]), file("b.txt", 11, vec![0, 1])],
            packs: vec![Chunk {
                blob: pack,
                size: 11,
            }],
            chunk_table: vec![
                PackedChunk {
                    digest: Digest::of(b"hello"),
                    pack: 0,
                    offset: 0,
                    size: 5,
                },
                PackedChunk {
                    digest: Digest::of(b"world!"),
                    pack: 0,
                    offset: 5,
                    size: 6,
                },
            ],
        }
    }

    #[test]
    fn v2_tree_wire_format_pieces_and_closure() {
        let t = v2_tree();
        let bytes = t.to_bytes();
        insta::assert_snapshot!("fs_tree_v2", String::from_utf8_lossy(&bytes));
        assert_eq!(FsTree::from_bytes(&bytes).unwrap(), t);
        assert_eq!(
            t.pieces(&t.entries[1]),
            vec![
                Piece {
                    blob: Digest::of(b"helloworld!"),
                    offset: 0,
                    len: 5,
                    digest: Some(Digest::of(b"hello")),
                },
                Piece {
                    blob: Digest::of(b"helloworld!"),
                    offset: 5,
                    len: 6,
                    digest: Some(Digest::of(b"world!")),
                },
            ]
        );
        let kids = index_children(FS_TREE_V2_MEDIA_TYPE, &bytes).unwrap();
        assert_eq!(
            kids,
            vec![ClosureBlob {
                digest: Digest::of(b"helloworld!"),
                size: Some(11)
            }]
        );
        // The media type must match the content, both ways.
        assert!(index_children(FS_TREE_MEDIA_TYPE, &bytes).is_err());
        assert!(index_children(FS_TREE_V2_MEDIA_TYPE, &packed_tree().to_bytes()).is_err());
    }

    #[test]
    fn a_manifest_with_an_index_format_of_a_newer_pf_is_refused_by_name() {
        for known in [FS_TREE_MEDIA_TYPE, FS_TREE_V2_MEDIA_TYPE] {
            let mut m = sample_manifest();
            m.layers[1].media_type = known.into();
            assert!(Manifest::from_bytes(&m.to_bytes()).is_ok(), "{known}");
        }
        // Unknown opaque types are leaves, as before.
        let mut m = sample_manifest();
        m.layers[0].media_type = "application/vnd.example.weights".into();
        assert!(Manifest::from_bytes(&m.to_bytes()).is_ok());
        // An index type of a newer pf may name blobs this pf cannot find:
        // pulling it would restore nothing, and gc would collect them.
        for newer in [
            "application/vnd.processfork.fs.tree.v3+json",
            "application/vnd.processfork.kv.pages.v2+json",
        ] {
            let mut m = sample_manifest();
            m.layers[1].media_type = newer.into();
            let e = Manifest::from_bytes(&m.to_bytes()).unwrap_err().to_string();
            assert!(e.contains(newer) && e.contains("newer pf"), "{e}");
            assert!(
                matches!(m.validate(), Err(RegistryError::InvalidData { .. })),
                "{newer}"
            );
        }
    }

    #[test]
    fn hostile_v2_trees_are_rejected() {
        type Edit = Box<dyn Fn(&mut FsTree)>;
        let bad: Vec<(&str, Edit)> = vec![
            (
                "part out of the table",
                Box::new(|t| t.entries[0].parts = vec![7]),
            ),
            ("sizes do not add up", Box::new(|t| t.entries[0].size = 6)),
            (
                "chunk past its pack",
                Box::new(|t| t.chunk_table[1].offset = 6),
            ),
            (
                "chunk in an unlisted pack",
                Box::new(|t| t.chunk_table[1].pack = 1),
            ),
            (
                "overlapping chunks",
                Box::new(|t| t.chunk_table[1].offset = 4),
            ),
            ("empty chunk", Box::new(|t| t.chunk_table[0].size = 0)),
            (
                "v1 blob in a v2 tree",
                Box::new(|t| {
                    t.entries[0].parts.clear();
                    t.entries[0].blob = Some(Digest::of(b"hello"));
                }),
            ),
            (
                "parts on a dir",
                Box::new(|t| t.entries[0].kind = EntryKind::Dir),
            ),
            (
                "parts with an offset",
                Box::new(|t| t.entries[0].offset = Some(0)),
            ),
        ];
        for (what, f) in bad {
            let mut t = v2_tree();
            f(&mut t);
            assert!(FsTree::from_bytes(&t.to_bytes()).is_err(), "{what}");
        }
        // Overflowing sizes in JSON never panic.
        let evil = r#"{"entries":[{"path":"a","kind":"file","mode":420,"size":0,"parts":[0,0]}],
            "packs":[{"blob":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":18446744073709551615}],
            "chunks":[["sha256:0000000000000000000000000000000000000000000000000000000000000000",0,0,18446744073709551615]]}"#;
        assert!(FsTree::from_bytes(evil.as_bytes()).is_err());
    }

    #[test]
    fn merged_v2_trees_renumber_packs_and_chunks() {
        let a = v2_tree();
        let mut b = v2_tree();
        for e in &mut b.entries {
            e.path = format!("other/{}", e.path);
        }
        b.packs.insert(
            0,
            Chunk {
                blob: Digest::of(b"x"),
                size: 1,
            },
        );
        for c in &mut b.chunk_table {
            c.pack += 1;
        }
        let mut m = a.clone();
        m.merge(b.clone());
        m.validate().unwrap();
        assert_eq!(m.packs.len(), 2, "the shared pack is listed once");
        for (i, e) in b.entries.iter().enumerate() {
            assert_eq!(m.pieces(&m.entries[a.entries.len() + i]), b.pieces(e));
        }
    }

    #[test]
    fn packed_ranges_are_checked() {
        let mut t = packed_tree();
        t.entries[1].offset = Some(6); // 6 + 6 > 11
        assert!(t.validate().is_err());
        let mut t = packed_tree();
        t.packs.clear(); // offset into an unlisted blob
        assert!(t.validate().is_err());
        let mut t = packed_tree();
        t.entries[0].offset = Some(u64::MAX); // overflow
        assert!(t.validate().is_err());
        let mut t = packed_tree();
        t.packs.push(t.packs[0].clone());
        assert!(t.validate().is_err(), "a pack listed twice");
        let mut t = packed_tree();
        t.entries[0].blob = None;
        t.entries[0].chunks = vec![Chunk {
            blob: t.packs[0].blob,
            size: 5,
        }];
        assert!(t.validate().is_err(), "offset on a chunked file");
        // An old reader's view: a v1 tree without packs parses unchanged.
        assert!(FsTree::from_bytes(&sample_tree().to_bytes()).is_ok());
    }

    #[test]
    fn manifest_wire_format_snapshot() {
        let m = sample_manifest();
        let bytes = m.to_bytes();
        insta::assert_snapshot!("manifest_v1", String::from_utf8_lossy(&bytes));
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn fs_tree_wire_format_snapshot() {
        let t = sample_tree();
        let bytes = t.to_bytes();
        insta::assert_snapshot!("fs_tree_v1", String::from_utf8_lossy(&bytes));
        assert_eq!(FsTree::from_bytes(&bytes).unwrap(), t);
    }

    #[test]
    fn hostile_manifests_are_rejected() {
        let good = String::from_utf8(sample_manifest().to_bytes()).unwrap();
        let cases = [
            good.replace("\"schema_version\": 1", "\"schema_version\": 2"),
            good.replace("image.v1", "image.v9"),
            good.replace("\"size\": 7", "\"size\": 99999999999999999"),
            good.replace("\"size\": 7", "\"size\": -1"),
            good.replace("\"role\": \"model.base\"", "\"role\": \"\""),
            good.replacen("{", "{\"extra\": 1,", 1),
            good.replacen("{", "{\"schema_version\": 1,", 1),
            good.replace(
                &Digest::of(b"weights").to_string(),
                "sha256:../../etc/passwd",
            ),
            "[".repeat(10_000),
            "null".into(),
            String::new(),
        ];
        for (i, c) in cases.iter().enumerate() {
            let err = Manifest::from_bytes(c.as_bytes()).expect_err(&format!("case {i} accepted"));
            assert!(
                matches!(err, RegistryError::InvalidData { .. }),
                "case {i}: {err}"
            );
        }
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(Manifest::from_bytes(&huge).is_err());
    }

    #[test]
    fn hostile_fs_trees_are_rejected() {
        let mut bad_paths = vec![
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "a\0b",
            "a\\..\\b",
            "",
        ];
        bad_paths.push("a/.");
        for p in bad_paths {
            let mut t = sample_tree();
            t.entries[1].path = p.into();
            assert!(FsTree::from_bytes(&t.to_bytes()).is_err(), "{p:?} accepted");
        }
        let mut dup = sample_tree();
        dup.entries[2].path = "etc/config.json".into();
        assert!(FsTree::from_bytes(&dup.to_bytes()).is_err());
        let mut badsum = sample_tree();
        badsum.entries[2].size = 7;
        assert!(FsTree::from_bytes(&badsum.to_bytes()).is_err());
        let mut both = sample_tree();
        both.entries[2].blob = Some(Digest::of(b"x"));
        assert!(FsTree::from_bytes(&both.to_bytes()).is_err());
        let mut mode = sample_tree();
        mode.entries[0].mode = 0o170000;
        assert!(FsTree::from_bytes(&mode.to_bytes()).is_err());
        // Device files, fifos and sockets have no kind: a tree naming one
        // (or a setuid/device mode smuggled into a file) is refused.
        for kind in ["char_device", "block_device", "fifo", "socket", "hardlink"] {
            let json = String::from_utf8(sample_tree().to_bytes())
                .expect("utf-8")
                .replacen("\"kind\":\"file\"", &format!("\"kind\":\"{kind}\""), 1);
            assert!(
                FsTree::from_bytes(json.as_bytes()).is_err(),
                "{kind} accepted"
            );
        }
        // Invalid UTF-8 in a name can not even be represented: the bytes are refused.
        let mut raw = sample_tree().to_bytes();
        let at = raw
            .windows(b"config".len())
            .position(|w| w == b"config")
            .expect("a name to corrupt");
        raw[at] = 0xff;
        assert!(FsTree::from_bytes(&raw).is_err(), "invalid UTF-8 accepted");
    }

    #[test]
    fn closure_expands_index_blobs_and_dedups() {
        let tree = sample_tree();
        let tree_bytes = tree.to_bytes();
        let mut m = sample_manifest();
        m.layers[1].digest = Digest::of(&tree_bytes);
        m.layers[1].size = tree_bytes.len() as u64;
        let kv = KvPages {
            pages: vec![
                KvPage {
                    layer: 0,
                    page: 0,
                    k: Digest::of(b"k0"),
                    v: Digest::of(b"v0"),
                },
                KvPage {
                    layer: 0,
                    page: 1,
                    k: Digest::of(b"k0"),
                    v: Digest::of(b"hello"),
                },
            ],
        };
        let kv_bytes = kv.to_bytes();
        m.layers.push(Descriptor {
            role: "cache.manifest".into(),
            media_type: KV_PAGES_MEDIA_TYPE.into(),
            digest: Digest::of(&kv_bytes),
            size: kv_bytes.len() as u64,
        });
        let c = closure(&m, |d| {
            if d.media_type == FS_TREE_MEDIA_TYPE {
                Ok(tree_bytes.clone())
            } else {
                Ok(kv_bytes.clone())
            }
        })
        .unwrap();
        let digests: Vec<_> = c.iter().map(|b| b.digest).collect();
        // 3 layers + hello, abc, def + k0, v0 (hello and k0 deduplicated)
        assert_eq!(digests.len(), 8, "{digests:?}");
        assert_eq!(digests[0], Digest::of(b"weights"));
        let hello = c.iter().find(|b| b.digest == Digest::of(b"hello")).unwrap();
        assert_eq!(hello.size, Some(5));
    }

    proptest::proptest! {
        #[test]
        fn v2_trees_round_trip(sizes in proptest::collection::vec(1u64..5000, 1..40), files in 1usize..10) {
            // Chunks back to back in one pack; file i takes every
            // `files`-th chunk starting at i.
            let total: u64 = sizes.iter().sum();
            let pack = Chunk { blob: Digest::of(&total.to_le_bytes()), size: total };
            let mut at = 0;
            let chunk_table: Vec<PackedChunk> = sizes.iter().enumerate().map(|(i, &n)| {
                let c = PackedChunk { digest: Digest::of(&(i as u64).to_le_bytes()), pack: 0, offset: at, size: n };
                at += n;
                c
            }).collect();
            let entries = (0..files).map(|f| {
                let parts: Vec<u32> = (f..sizes.len()).step_by(files).map(|i| i as u32).collect();
                FsEntry {
                    path: format!("f{f}"), kind: EntryKind::File, mode: 0o600,
                    size: parts.iter().map(|&i| sizes[i as usize]).sum(),
                    blob: None, chunks: vec![], target: None, offset: None, parts,
                }
            }).collect();
            let t = FsTree { entries, packs: vec![pack], chunk_table };
            let back = FsTree::from_bytes(&t.to_bytes()).unwrap();
            proptest::prop_assert_eq!(&back, &t);
            for e in &t.entries {
                let pieces = back.pieces(e);
                proptest::prop_assert_eq!(pieces.len(), e.parts.len());
                proptest::prop_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), e.size);
            }
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = Manifest::from_bytes(&b);
            let _ = FsTree::from_bytes(&b);
            let _ = KvPages::from_bytes(&b);
        }

        #[test]
        fn structure_aware_manifests_parse_or_fail_cleanly(
            sizes in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..20),
            roles in proptest::collection::vec("[a-z.]{0,140}", 0..20),
            version in 0u32..4,
        ) {
            let layers: Vec<String> = sizes.iter().zip(roles.iter()).enumerate().map(|(i, (s, r))| format!(
                "{{\"role\":{r:?},\"media_type\":\"{}\",\"digest\":\"{}\",\"size\":{s}}}",
                if i % 2 == 0 { FS_TREE_MEDIA_TYPE } else { BLOB_MEDIA_TYPE },
                Digest::of(&i.to_le_bytes()),
            )).collect();
            let json = format!(
                "{{\"schema_version\":{version},\"media_type\":\"{MANIFEST_MEDIA_TYPE}\",\"agent\":{{\"name\":\"a\"}},\"layers\":[{}],\"created_at\":\"t\"}}",
                layers.join(",")
            );
            match Manifest::from_bytes(json.as_bytes()) {
                Ok(m) => {
                    proptest::prop_assert_eq!(m.schema_version, 1);
                    proptest::prop_assert!(m.layers.iter().all(|l| l.size <= MAX_DECLARED_SIZE && !l.role.is_empty()));
                    proptest::prop_assert_eq!(Manifest::from_bytes(&m.to_bytes()).ok(), Some(m));
                }
                Err(e) => {
                    let invalid = matches!(e, RegistryError::InvalidData { .. });
                    proptest::prop_assert!(invalid, "unexpected error {}", e);
                }
            }
        }

        #[test]
        fn hostile_fs_tree_paths_never_validate(
            parts in proptest::collection::vec(prop_oneof!["\\.\\.", "\\.", "", "[a-z]{1,4}", "/", "\\\\"], 1..6),
        ) {
            let p = parts.join("/");
            let ok = validate_relative_path(&p).is_ok();
            let bad = p.is_empty() || p.starts_with('/') || p.contains('\\')
                || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
            proptest::prop_assert_eq!(ok, !bad, "path {:?}", p);
        }
    }

    #[test]
    fn deep_nesting_and_duplicate_keys_are_rejected() {
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(Manifest::from_bytes(deep.as_bytes()).is_err());
        let good = String::from_utf8(sample_manifest().to_bytes()).unwrap();
        let dup = good.replacen("\"created_at\"", "\"created_at\": \"x\", \"created_at\"", 1);
        assert!(
            Manifest::from_bytes(dup.as_bytes()).is_err(),
            "duplicate keys must be rejected"
        );
        let many: Vec<String> = (0..MAX_LAYERS + 1)
            .map(|i| {
                format!(
                    "{{\"role\":\"r\",\"media_type\":\"m\",\"digest\":\"{}\",\"size\":1}}",
                    Digest::of(&i.to_le_bytes())
                )
            })
            .collect();
        let huge = good.replace(
            "\"layers\": [",
            &format!("\"layers\": [{},", many.join(",")),
        );
        assert!(
            Manifest::from_bytes(huge.as_bytes()).is_err(),
            "too many layers accepted"
        );
    }

    #[test]
    fn malformed_index_blob_is_an_error_not_skipped() {
        let m = sample_manifest();
        let err = closure(&m, |_| Ok(b"{not json".to_vec())).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidData { .. }));
    }
}
