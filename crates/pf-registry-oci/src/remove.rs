//! `pf rm` on a registry: manifests are deleted through the distribution
//! API (`DELETE /v2/<name>/manifests/<digest>`, or `/<tag>` where the
//! registry deletes tags alone, as OCI 1.1 allows). The registry owns its
//! storage: the blobs a deleted manifest referenced go at the registry's
//! own garbage collection (distribution: `registry garbage-collect`).
//!
//! A pf manifest digest is mapped to the OCI manifest (or index) that
//! carries it: the top document's `org.processfork.manifest.digest`
//! annotation, or the config of a plain manifest, over the tag list. An
//! OCI digest is taken as is. Part manifests of an index are left alone: a
//! part may be shared with another image's index, and distribution's
//! `garbage-collect --delete-untagged` removes the unreferenced ones.

use pf_digest::Digest;
use pf_registry_core::lifecycle::RmReport;
use pf_registry_core::{RegistryError, Result, Transport};
use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::layout::{OciDoc, ARTIFACT_TYPE};
use crate::{OciTransport, NO_BODY};

/// The annotation on an image's top document naming its pf manifest.
pub(crate) const MANIFEST_DIGEST: &str = "org.processfork.manifest.digest";

/// The pf manifest digest a top document carries, if any.
fn pf_digest_of(doc: &OciDoc) -> Option<Digest> {
    doc.annotations
        .get(MANIFEST_DIGEST)
        .and_then(|s| Digest::parse(s).ok())
        .or_else(|| {
            doc.config
                .as_ref()
                .filter(|c| c.media_type == ARTIFACT_TYPE)
                .map(|c| c.digest)
        })
}

/// One tag of the repository, resolved.
struct Tagged {
    tag: String,
    /// Digest of the OCI manifest or index the tag points at.
    oci: Digest,
    /// The pf manifest it carries.
    pf: Option<Digest>,
}

impl OciTransport {
    fn delete_scope(&self) -> String {
        format!("repository:{}:delete", self.repo)
    }

    /// Every tag with the OCI and pf digests it points at.
    async fn resolve_tags(&self) -> Result<Vec<Tagged>> {
        let mut out = Vec::new();
        for tag in self.list_tags().await? {
            match self.fetch_doc(&tag).await {
                Ok((bytes, doc)) => out.push(Tagged {
                    oci: Digest::of(&bytes),
                    pf: pf_digest_of(&doc),
                    tag,
                }),
                // Deleted since the listing.
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn delete_manifest(&self, reference: &str) -> Result<()> {
        self.client
            .send(
                Method::DELETE,
                &format!("/v2/{}/manifests/{reference}", self.repo),
                &self.delete_scope(),
                HeaderMap::new(),
                NO_BODY,
            )
            .await
            .map(drop)
    }

    /// See [`Transport::remove_reference`]: `tag` `None` is this
    /// reference's tag.
    pub(crate) async fn remove(
        &self,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<RmReport> {
        let tags = self.resolve_tags().await?;
        let (oci, pf) = match digest {
            Some(d) => match tags.iter().find(|t| t.oci == d || t.pf == Some(d)) {
                Some(t) => (t.oci, t.pf),
                // An untagged OCI manifest, named by its own digest.
                None => {
                    let (bytes, doc) = self.fetch_doc(&d.to_string()).await.map_err(|e| match e {
                        RegistryError::NotFound { .. } | RegistryError::Integrity { .. } => {
                            RegistryError::not_found(format!(
                                "manifest {d} at {} (neither an OCI manifest digest nor the pf manifest of a tag)",
                                self.location()
                            ))
                        }
                        e => e,
                    })?;
                    (Digest::of(&bytes), pf_digest_of(&doc))
                }
            },
            None => {
                let name = tag.unwrap_or(&self.tag);
                let t = tags.iter().find(|t| t.tag == name).ok_or_else(|| {
                    RegistryError::not_found(format!("tag {name} at {}", self.location()))
                })?;
                (t.oci, t.pf)
            }
        };
        let sharing: Vec<&Tagged> = tags.iter().filter(|t| t.oci == oci).collect();
        let mut report = RmReport::default();
        if digest.is_none() && sharing.len() > 1 {
            // Other tags point at the same manifest: delete the tag alone
            // (OCI 1.1), never the manifest they still need.
            let name = tag.unwrap_or(&self.tag);
            match self.delete_manifest(name).await {
                Ok(()) => {
                    report.tags.push(Some(name.to_string()));
                    return Ok(report);
                }
                Err(e @ RegistryError::Unauthorized { .. }) => return Err(e),
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    let others: Vec<&str> = sharing
                        .iter()
                        .map(|t| t.tag.as_str())
                        .filter(|t| *t != name)
                        .collect();
                    return Err(RegistryError::not_supported(
                        self.location(),
                        format!(
                            "deleting tag {name} alone ({e}): tags {} point at the same manifest and this registry deletes tags only with their manifest; `pf rm` by digest removes them all",
                            others.join(", ")
                        ),
                    ));
                }
            }
        }
        self.delete_manifest(&oci.to_string()).await?;
        report.tags = sharing.iter().map(|t| Some(t.tag.clone())).collect();
        report.manifests.push(pf.unwrap_or(oci));
        Ok(report)
    }
}
