//! Which blobs a push can skip: blobs already in the repository (from its
//! current tag, re-checked with HEAD so blobs lost to GC are uploaded again)
//! and blobs seen in another repository of the same registry during this
//! process, which are cross-repository mounted instead of uploaded.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use pf_digest::Digest;
use pf_registry_core::{RegistryError, Result};
use reqwest::header::{HeaderMap, CONTENT_LENGTH};
use reqwest::Method;

use crate::layout::{self, StoredBlob};
use crate::{headers, OciTransport, NO_BODY};

/// Blobs seen in any repository of a registry during this process, for
/// cross-repository mounts: (host, raw digest) -> (stored blob, repository).
static SEEN: LazyLock<Mutex<SeenBlobs>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// (host, raw digest) -> (stored blob, repository it is in).
type SeenBlobs = HashMap<(String, Digest), (StoredBlob, String)>;

impl OciTransport {
    pub(crate) fn remember(&self, b: StoredBlob) {
        if let Ok(mut k) = self.known.lock() {
            k.insert(b.raw, b);
        }
        if let Ok(mut s) = SEEN.lock() {
            s.insert(
                (self.client.host().to_string(), b.raw),
                (b, self.repo.clone()),
            );
        }
    }

    pub(crate) fn lookup(&self, raw: &Digest) -> Option<StoredBlob> {
        self.known.lock().ok().and_then(|k| k.get(raw).copied())
    }

    pub(crate) async fn ensure_loaded(&self) -> Result<()> {
        self.loaded
            .get_or_try_init(|| async {
                match self.load_image(&self.tag).await {
                    Ok((_, layers)) => {
                        for l in layers.iter().filter_map(layout::stored_from_layer) {
                            self.remember(l);
                        }
                    }
                    Err(RegistryError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                if let Some(src) = &self.mount_from {
                    let other = OciTransport {
                        client: self.client.clone(),
                        repo: src.clone(),
                        tag: "latest".into(),
                        pin: None,
                        max_layers: self.max_layers,
                        mount_from: None,
                        concurrency: 1,
                        known: Mutex::new(HashMap::new()),
                        loaded: tokio::sync::OnceCell::new(),
                    };
                    // Registers the source's blobs in SEEN for mounting.
                    if let Ok((_, layers)) = other.load_image("latest").await {
                        for l in layers.iter().filter_map(layout::stored_from_layer) {
                            other.remember(l);
                        }
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether raw blob `d` is in this repository (HEAD on its known encoded
    /// digest, so blobs lost to GC or deletion are re-uploaded) or could be
    /// mounted from another repository of the registry. Unknown raw digests
    /// are missing: the registry only knows encoded digests.
    pub(crate) async fn present_or_mounted(&self, d: Digest) -> Result<bool> {
        if let Some(b) = self.lookup(&d) {
            if self.blob_exists(&b.encoded).await? {
                return Ok(true);
            }
        }
        let seen = SEEN
            .lock()
            .ok()
            .and_then(|s| s.get(&(self.client.host().to_string(), d)).cloned());
        let Some((b, from)) = seen else {
            return Ok(false);
        };
        let here = if from == self.repo {
            // Pushed to this repository earlier in this process (another tag).
            self.lookup(&d).is_none() && self.blob_exists(&b.encoded).await?
        } else {
            self.try_mount(&b, &from).await.unwrap_or(false)
        };
        if here {
            self.remember(b);
        }
        Ok(here)
    }

    /// Tries a cross-repository mount of `b` from `from`; true on success.
    pub(crate) async fn try_mount(&self, b: &StoredBlob, from: &str) -> Result<bool> {
        let scope = format!("{} repository:{from}:pull", self.push_scope());
        let resp = self
            .client
            .send(
                Method::POST,
                &format!(
                    "/v2/{}/blobs/uploads/?mount={}&from={from}",
                    self.repo, b.encoded
                ),
                &scope,
                headers(&[(CONTENT_LENGTH, "0".into())]),
                NO_BODY,
            )
            .await?;
        Ok(resp.status() == reqwest::StatusCode::CREATED)
    }

    pub(crate) async fn blob_exists(&self, encoded: &Digest) -> Result<bool> {
        match self
            .client
            .send(
                Method::HEAD,
                &format!("/v2/{}/blobs/{encoded}", self.repo),
                &self.push_scope(),
                HeaderMap::new(),
                NO_BODY,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
