//! How a pf image is laid out as an OCI 1.1 artifact.
//!
//! - The pf manifest bytes are the artifact's **config** blob
//!   (`application/vnd.processfork.image.v1+json`), so its OCI digest is the
//!   pf manifest digest and the exact bytes round-trip.
//! - The signature envelope, if any, is the first layer
//!   (`application/vnd.processfork.signature.v1+json`).
//! - Every pf blob is a layer (`application/vnd.processfork.blob.v1+zstd`)
//!   whose OCI digest is that of the zstd bytes; the raw digest and size are
//!   annotations (`org.processfork.raw.digest`, `org.processfork.raw.size`);
//!   every layer has an `org.opencontainers.image.title` so `oras pull`
//!   writes it out (`<raw hex>.zst`, `manifest.json.sig`).
//! - Up to `max_layers` blobs fit in one image manifest. Larger images become
//!   an OCI image index of part manifests (part 0 carries config and
//!   signature; the others use the empty config), so each manifest stays far
//!   below the common 4 MiB limit and every blob stays reachable from the tag
//!   (safe from registry garbage collection).

use std::collections::BTreeMap;

use pf_digest::Digest;
use serde::{Deserialize, Serialize};

/// OCI image manifest media type.
pub const MANIFEST_MT: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const INDEX_MT: &str = "application/vnd.oci.image.index.v1+json";
/// The artifact type and config media type of a pf image.
pub const ARTIFACT_TYPE: &str = "application/vnd.processfork.image.v1+json";
/// Media type of the signature layer.
pub const SIGNATURE_MT: &str = "application/vnd.processfork.signature.v1+json";
/// Media type of an encoded pf blob layer.
pub const BLOB_MT: &str = "application/vnd.processfork.blob.v1+zstd";
/// The OCI empty descriptor's media type.
pub const EMPTY_MT: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's content.
pub const EMPTY_JSON: &[u8] = b"{}";
/// Annotation holding a layer's raw digest.
pub const RAW_DIGEST: &str = "org.processfork.raw.digest";
/// Annotation holding a layer's raw size.
pub const RAW_SIZE: &str = "org.processfork.raw.size";
/// The OCI annotation naming a layer's file (what `oras pull` writes it as):
/// `<raw hex>.zst` for blobs, [`SIGNATURE_TITLE`] for the signature.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The signature layer's file name.
pub const SIGNATURE_TITLE: &str = "manifest.json.sig";
/// Annotation numbering part manifests in an index.
pub const PART: &str = "org.processfork.part";
/// Default maximum layers in one manifest.
pub const DEFAULT_MAX_LAYERS: usize = 1000;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size of the content.
    pub size: u64,
    /// Artifact type (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A plain descriptor.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI image manifest or image index (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciDoc {
    /// Always 2.
    pub schema_version: u32,
    /// Manifest or index media type.
    pub media_type: String,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Config (manifests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    /// Layers (manifests only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    /// Part manifests (indexes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl OciDoc {
    /// Serialises to bytes (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One encoded pf blob as stored in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    /// Raw digest (pf name).
    pub raw: Digest,
    /// Raw size, when known.
    pub raw_size: Option<u64>,
    /// OCI (encoded) digest.
    pub encoded: Digest,
    /// Encoded size.
    pub encoded_size: u64,
}

/// A layer descriptor for a stored blob.
pub fn blob_layer(b: &StoredBlob) -> Descriptor {
    let mut d = Descriptor::new(BLOB_MT, b.encoded, b.encoded_size);
    d.annotations.insert(RAW_DIGEST.into(), b.raw.to_string());
    d.annotations
        .insert(TITLE.into(), format!("{}.zst", b.raw.hex()));
    if let Some(s) = b.raw_size {
        d.annotations.insert(RAW_SIZE.into(), s.to_string());
    }
    d
}

/// Reads a blob layer back; `None` for non-blob layers or bad annotations.
pub fn stored_from_layer(d: &Descriptor) -> Option<StoredBlob> {
    if d.media_type != BLOB_MT {
        return None;
    }
    Some(StoredBlob {
        raw: Digest::parse(d.annotations.get(RAW_DIGEST)?).ok()?,
        raw_size: d.annotations.get(RAW_SIZE).and_then(|s| s.parse().ok()),
        encoded: d.digest,
        encoded_size: d.size,
    })
}

/// The documents to PUT for an image: parts first (by digest), then the
/// top document, which goes under the tag.
pub struct Plan {
    /// Part manifests (empty when the top document is a single manifest).
    pub parts: Vec<Vec<u8>>,
    /// The top document (manifest or index) bytes and media type.
    pub top: (Vec<u8>, &'static str),
    /// Whether the empty config blob is referenced.
    pub needs_empty: bool,
}

/// Lays out an image: `config` = pf manifest descriptor, `signature` = its
/// envelope descriptor, `blobs` = every closure blob.
pub fn plan(
    config: Descriptor,
    signature: Option<Descriptor>,
    blobs: &[StoredBlob],
    max_layers: usize,
    annotations: BTreeMap<String, String>,
) -> Plan {
    let max = max_layers.max(1);
    let manifest =
        |config: Descriptor, layers: Vec<Descriptor>, ann: BTreeMap<String, String>| OciDoc {
            schema_version: 2,
            media_type: MANIFEST_MT.into(),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: Some(config),
            layers,
            manifests: vec![],
            annotations: ann,
        };
    let mut head_layers: Vec<Descriptor> = signature.into_iter().collect();
    if blobs.len() <= max {
        head_layers.extend(blobs.iter().map(blob_layer));
        return Plan {
            parts: vec![],
            top: (
                manifest(config, head_layers, annotations).to_bytes(),
                MANIFEST_MT,
            ),
            needs_empty: false,
        };
    }
    let empty = Descriptor::new(EMPTY_MT, Digest::of(EMPTY_JSON), EMPTY_JSON.len() as u64);
    let mut parts = Vec::new();
    let mut entries = Vec::new();
    for (i, chunk) in blobs.chunks(max).enumerate() {
        let mut layers = if i == 0 {
            std::mem::take(&mut head_layers)
        } else {
            vec![]
        };
        layers.extend(chunk.iter().map(blob_layer));
        let cfg = if i == 0 {
            config.clone()
        } else {
            empty.clone()
        };
        let mut ann = BTreeMap::new();
        ann.insert(PART.to_string(), i.to_string());
        let bytes = manifest(cfg, layers, ann.clone()).to_bytes();
        let mut d = Descriptor::new(MANIFEST_MT, Digest::of(&bytes), bytes.len() as u64);
        d.artifact_type = Some(ARTIFACT_TYPE.into());
        d.annotations = ann;
        entries.push(d);
        parts.push(bytes);
    }
    let index = OciDoc {
        schema_version: 2,
        media_type: INDEX_MT.into(),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: None,
        layers: vec![],
        manifests: entries,
        annotations,
    };
    Plan {
        parts,
        top: (index.to_bytes(), INDEX_MT),
        needs_empty: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize) -> Vec<StoredBlob> {
        (0..n)
            .map(|i| StoredBlob {
                raw: Digest::of(format!("raw{i}").as_bytes()),
                raw_size: Some(i as u64),
                encoded: Digest::of(format!("enc{i}").as_bytes()),
                encoded_size: i as u64 + 9,
            })
            .collect()
    }

    #[test]
    fn small_images_are_one_manifest() {
        let cfg = Descriptor::new(ARTIFACT_TYPE, Digest::of(b"m"), 1);
        let p = plan(cfg, None, &blobs(3), 10, BTreeMap::new());
        assert!(p.parts.is_empty());
        let doc: OciDoc = serde_json::from_slice(&p.top.0).unwrap();
        assert_eq!(doc.layers.len(), 3);
        assert_eq!(stored_from_layer(&doc.layers[1]), Some(blobs(3)[1]));
    }

    #[test]
    fn twenty_thousand_blobs_stay_under_the_manifest_limit() {
        let cfg = Descriptor::new(ARTIFACT_TYPE, Digest::of(b"m"), 1);
        let sig = Descriptor::new(SIGNATURE_MT, Digest::of(b"s"), 1);
        let p = plan(
            cfg,
            Some(sig),
            &blobs(20_000),
            DEFAULT_MAX_LAYERS,
            BTreeMap::new(),
        );
        assert_eq!(p.parts.len(), 20);
        let biggest = p.parts.iter().map(Vec::len).max().unwrap();
        assert!(biggest < 1 << 20, "part manifest of {biggest} bytes");
        assert!(p.top.0.len() < 1 << 20);
        let n: usize = p
            .parts
            .iter()
            .map(|b| {
                serde_json::from_slice::<OciDoc>(b)
                    .unwrap()
                    .layers
                    .iter()
                    .filter_map(stored_from_layer)
                    .count()
            })
            .sum();
        assert_eq!(n, 20_000);
    }
}
