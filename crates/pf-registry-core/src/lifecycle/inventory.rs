//! Every committed manifest of a repository, read strictly.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use pf_digest::Digest;

use crate::error::{RegistryError, Result};
use crate::layout;
use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::transport::Transport;

/// The manifest `schema_version` this build reads; a repository holding a
/// higher one was written by a newer pf and is never garbage-collected here.
pub const FORMAT_VERSION: u64 = 1;

/// One committed manifest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest (of the exact bytes).
    pub digest: Digest,
    /// The exact bytes.
    pub bytes: Bytes,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Keys that hold it (its by-digest copy, tag pointers).
    pub keys: Vec<String>,
    /// The newest modification time among those keys, when known.
    pub modified: Option<SystemTime>,
}

/// Tags and manifests of a repository.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Tag (`None` for the untagged head) to manifest digest.
    pub tags: BTreeMap<Option<String>, Digest>,
    /// Every manifest, by digest.
    pub manifests: BTreeMap<Digest, StoredManifest>,
}

/// Parses manifest bytes stored at `key`: refuses a newer format
/// ([`RegistryError::NotSupported`]) and anything unparseable
/// (`InvalidData` naming the key).
pub fn parse_stored(key: &str, bytes: &[u8]) -> Result<Manifest> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::invalid(format!("manifest {key}"), format!("unparseable: {e}"))
    })?;
    if let Some(n) = v.get("schema_version").and_then(|n| n.as_u64()) {
        if n > FORMAT_VERSION {
            return Err(RegistryError::not_supported(
                format!("manifest {key}"),
                format!(
                    "a repository written by a newer format (schema_version {n}; this pf reads {FORMAT_VERSION})"
                ),
            ));
        }
    }
    Manifest::from_bytes(bytes)
        .map_err(|e| RegistryError::invalid(format!("manifest {key}"), e.to_string()))
}

impl Inventory {
    /// Reads every tag pointer, the untagged head and every manifest by
    /// digest. Any manifest that cannot be read or parsed is an error naming
    /// its key: callers that delete must not guess.
    pub async fn read(t: &dyn Transport) -> Result<Inventory> {
        let mut keys = t.list_keys(layout::TAGS).await?;
        keys.extend(t.list_keys(layout::MANIFESTS).await?);
        // The untagged head is not under a directory: read it directly.
        keys.push(super::StoredKey {
            key: layout::MANIFEST.into(),
            size: 0,
            modified: None,
        });
        let mut inv = Inventory::default();
        for k in keys {
            let tag = layout::tag_of(&k.key);
            let by_digest = layout::manifest_digest(&k.key);
            if tag.is_none() && by_digest.is_none() {
                continue; // signatures and foreign objects
            }
            let Some(bytes) = t.read_key(&k.key, MAX_MANIFEST_BYTES as u64).await? else {
                continue; // absent, or removed since the listing
            };
            let digest = Digest::of(&bytes);
            if let Some(d) = by_digest {
                if d != digest {
                    return Err(RegistryError::Integrity {
                        what: format!("manifest {}", k.key),
                        expected: d,
                        actual: digest,
                    });
                }
            }
            let entry = match inv.manifests.entry(digest) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let manifest = parse_stored(&k.key, &bytes)?;
                    v.insert(StoredManifest {
                        digest,
                        bytes: Bytes::from(bytes.to_vec()),
                        manifest,
                        keys: Vec::new(),
                        modified: None,
                    })
                }
            };
            entry.keys.push(k.key.clone());
            entry.modified = entry.modified.max(k.modified);
            if let Some(tag) = tag {
                inv.tags.insert(tag, digest);
            }
        }
        Ok(inv)
    }

    /// Manifests newest first: by `created_at`, then modification time,
    /// then digest (a total order).
    pub fn newest_first(&self) -> Vec<&StoredManifest> {
        let mut v: Vec<&StoredManifest> = self.manifests.values().collect();
        v.sort_by(|a, b| {
            let ka = (
                super::parse_rfc3339(&a.manifest.created_at),
                a.modified,
                a.digest,
            );
            let kb = (
                super::parse_rfc3339(&b.manifest.created_at),
                b.modified,
                b.digest,
            );
            kb.cmp(&ka)
        });
        v
    }

    /// Tags pointing at `digest`.
    pub fn tags_of(&self, digest: &Digest) -> Vec<Option<String>> {
        self.tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(t, _)| t.clone())
            .collect()
    }
}
