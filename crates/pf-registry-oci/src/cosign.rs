//! cosign signatures for pushed images, in the tag-based form of cosign's
//! `specs/SIGNATURE_SPEC.md`, so `cosign verify --key` checks a pf image
//! with nothing but the registry and the public key.
//!
//! For the OCI manifest (or index) `sha256:<hex>` a tag points at, the tag
//! `sha256-<hex>.sig` of the same repository holds an OCI image manifest
//! whose layers are simple-signing payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) naming that digest,
//! each with its base64 ECDSA signature in the
//! `dev.cosignproject.cosign/signature` annotation. Signatures other
//! signers put there are kept: a new one is appended, and signing again
//! with a key that already signed the digest writes nothing. The same
//! manifest, with `subject` naming the image, is also written as an OCI 1.1
//! referrer (artifact type [`REFERRER_ARTIFACT_TYPE`]), listed by the
//! registry's referrers API or, where it has none, in the OCI 1.1 referrers
//! tag schema (an image index under the tag `sha256-<hex>`).

use std::collections::BTreeMap;

use bytes::Bytes;
use pf_digest::Digest;
use pf_registry_core::{Config, ImageRef, Location, RegistryError, Result};
use pf_sign::cosign::{PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION};
use pf_sign::SigningKey;
use reqwest::header::ACCEPT;
use reqwest::Method;
use serde::Serialize;

use crate::layout::{Descriptor, OciDoc, INDEX_MT, MANIFEST_MT};
use crate::{headers, OciTransport, NO_BODY};

/// Media type of the `.sig` manifest's config (an OCI image config, as
/// cosign writes it).
pub const CONFIG_MT: &str = "application/vnd.oci.image.config.v1+json";
/// The artifact type of cosign's OCI 1.1 referrer signatures.
pub const REFERRER_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Most signatures kept in one `.sig` manifest.
const MAX_SIGNATURES: usize = 1000;

/// The tag holding the cosign signatures of the OCI manifest `image`.
pub fn signature_tag(image: &Digest) -> String {
    format!("sha256-{}.sig", image.hex())
}

/// What [`sign`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CosignReport {
    /// The OCI manifest (or index) digest signed.
    pub image: Digest,
    /// Where the signature is: `oci://host/repo:sha256-<hex>.sig`.
    pub signature_ref: String,
    /// Signatures now in that manifest (other signers' included).
    pub signatures: usize,
    /// False when this key had already signed `image` (nothing written).
    pub written: bool,
    /// Digest of the OCI 1.1 referrer manifest written (when `written`).
    pub referrer: Option<Digest>,
}

/// The image config of a `.sig` manifest: what go-containerregistry writes
/// for cosign (empty image, one uncompressed layer per payload).
fn config_blob(layers: &[Descriptor]) -> Vec<u8> {
    let zero = "0001-01-01T00:00:00Z";
    let cfg = serde_json::json!({
        "architecture": "",
        "created": zero,
        "history": layers.iter().map(|_| serde_json::json!({"created": zero})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
        "config": {},
    });
    serde_json::to_vec(&cfg).unwrap_or_default()
}

/// Writes a cosign signature by `key` (ECDSA P-256) for the OCI manifest
/// `image` of the repository `reference` names (its tag or digest is
/// ignored): the payload and config blobs, then the `.sig` manifest.
pub async fn sign(
    reference: &ImageRef,
    config: &Config,
    image: Digest,
    key: &SigningKey,
) -> Result<CosignReport> {
    let Location::Oci {
        registry,
        repository,
        ..
    } = &reference.location
    else {
        return Err(RegistryError::BadReference {
            input: reference.to_string(),
            reason: "cosign signatures go to oci:// references only".into(),
        });
    };
    let tag = signature_tag(&image);
    let sig_ref = ImageRef {
        location: Location::Oci {
            registry: registry.clone(),
            repository: repository.clone(),
            tag: Some(tag.clone()),
        },
        digest: None,
    };
    let t = OciTransport::new(&sig_ref, config)?;
    let signature = pf_sign::cosign::sign(key, &format!("{registry}/{repository}"), &image)?;
    let payload_digest = Digest::of(&signature.payload);
    let signature_ref = format!("oci://{registry}/{repository}:{tag}");

    let mut layers = match t.fetch_doc(&tag).await {
        Ok((_, doc)) if doc.media_type == MANIFEST_MT && doc.manifests.is_empty() => doc.layers,
        Ok((_, doc)) => {
            return Err(RegistryError::invalid(
                &signature_ref,
                format!("not a cosign signature manifest ({})", doc.media_type),
            ))
        }
        Err(RegistryError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let public = key.public_key();
    let already = layers.iter().any(|l| {
        l.media_type == PAYLOAD_MEDIA_TYPE
            && l.digest == payload_digest
            && l.annotations.get(SIGNATURE_ANNOTATION).is_some_and(|s| {
                pf_sign::cosign::verify(&public, &signature.payload, s, &image).is_ok()
            })
    });
    if already {
        return Ok(CosignReport {
            image,
            signature_ref,
            signatures: layers.len(),
            written: false,
            referrer: None,
        });
    }
    if layers.len() >= MAX_SIGNATURES {
        return Err(RegistryError::invalid(
            &signature_ref,
            format!("already holds {} signatures", layers.len()),
        ));
    }
    t.put_bytes(&payload_digest, Bytes::from(signature.payload.clone()))
        .await?;
    let mut layer = Descriptor::new(
        PAYLOAD_MEDIA_TYPE,
        payload_digest,
        signature.payload.len() as u64,
    );
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), signature.signature);
    layers.push(layer);
    let cfg = config_blob(&layers);
    let cfg_digest = Digest::of(&cfg);
    let cfg_len = cfg.len() as u64;
    t.put_bytes(&cfg_digest, Bytes::from(cfg)).await?;
    let doc = OciDoc {
        schema_version: 2,
        media_type: MANIFEST_MT.into(),
        artifact_type: None,
        config: Some(Descriptor::new(CONFIG_MT, cfg_digest, cfg_len)),
        layers,
        manifests: vec![],
        annotations: BTreeMap::new(),
    };
    let signatures = doc.layers.len();
    t.put_manifest(&tag, doc.to_bytes(), MANIFEST_MT).await?;
    let referrer = write_referrer(&t, &doc, image).await?;
    Ok(CosignReport {
        image,
        signature_ref,
        signatures,
        written: true,
        referrer: Some(referrer),
    })
}

/// The same signatures as an OCI 1.1 referrer of `image` (`subject` set,
/// `artifactType` cosign's experimental OCI 1.1 mode looks for), PUT by
/// digest: `oras discover` lists it and `cosign verify
/// --experimental-oci11` reads it where the registry has the referrers API.
async fn write_referrer(t: &OciTransport, doc: &OciDoc, image: Digest) -> Result<Digest> {
    let (bytes, subject) = t.fetch_doc(&image.to_string()).await?;
    let mut v = serde_json::to_value(doc)
        .map_err(|e| RegistryError::invalid("cosign referrer", e.to_string()))?;
    v["artifactType"] = REFERRER_ARTIFACT_TYPE.into();
    v["config"]["mediaType"] = REFERRER_ARTIFACT_TYPE.into();
    v["subject"] = serde_json::json!({
        "mediaType": subject.media_type,
        "digest": image.to_string(),
        "size": bytes.len(),
    });
    let body = serde_json::to_vec(&v)
        .map_err(|e| RegistryError::invalid("cosign referrer", e.to_string()))?;
    let d = Digest::of(&body);
    let size = body.len() as u64;
    t.put_manifest(&d.to_string(), body, MANIFEST_MT).await?;
    let api = t
        .client
        .send(
            Method::GET,
            &format!("/v2/{}/referrers/{image}", t.repo),
            &t.pull_scope(),
            headers(&[(ACCEPT, INDEX_MT.into())]),
            NO_BODY,
        )
        .await;
    match api {
        Ok(_) => return Ok(d),
        Err(RegistryError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    // No referrers API (distribution 2.8 and 3.x): the OCI 1.1 referrers
    // tag schema, an index of the referrers under `sha256-<hex>`.
    let tag = format!("sha256-{}", image.hex());
    let mut manifests = match t.fetch_doc(&tag).await {
        Ok((_, doc)) if doc.media_type == INDEX_MT => doc.manifests,
        Ok((_, doc)) => {
            return Err(RegistryError::invalid(
                format!("referrers tag {tag}"),
                format!("not an image index ({})", doc.media_type),
            ))
        }
        Err(RegistryError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    if manifests.len() >= MAX_SIGNATURES {
        return Err(RegistryError::invalid(
            format!("referrers tag {tag}"),
            format!("already lists {} referrers", manifests.len()),
        ));
    }
    let mut entry = Descriptor::new(MANIFEST_MT, d, size);
    entry.artifact_type = Some(REFERRER_ARTIFACT_TYPE.into());
    manifests.push(entry);
    let index = OciDoc {
        schema_version: 2,
        media_type: INDEX_MT.into(),
        artifact_type: None,
        config: None,
        layers: vec![],
        manifests,
        annotations: BTreeMap::new(),
    };
    t.put_manifest(&tag, index.to_bytes(), INDEX_MT).await?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_and_config_follow_cosign() {
        let d = Digest::of(b"m");
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
        let l = Descriptor::new(PAYLOAD_MEDIA_TYPE, Digest::of(b"p"), 1);
        let cfg: serde_json::Value =
            serde_json::from_slice(&config_blob(std::slice::from_ref(&l))).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], l.digest.to_string());
        assert_eq!(cfg["history"].as_array().unwrap().len(), 1);
    }
}
